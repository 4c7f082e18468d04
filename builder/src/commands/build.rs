//! `rbuild build`: command line -> [`BuildRequest`] -> lower every
//! (target, platform) -> merge into one graph -> one solve -> assemble and
//! export per request.
//!
//! One solve for everything means a vertex that several platforms (or
//! targets) share — a `FROM --platform=$BUILDPLATFORM` stage, a common base —
//! runs once, and independent work of different platforms runs at the same
//! time within `--jobs`. Written for several requests (bake targets); the
//! command line gives one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use rbuild_cache::layer::LayerOptions;
use rbuild_frontend::lower::{self, BuiltContext, LoweredBuild, NamedContext};
use rbuild_solver::dockerignore::{ContextFilter, PatternMatcher};
use rbuild_solver::graph::{Definition, NetworkMode, Op, Platform};
use rbuild_solver::sandbox::{CgroupRoot, IdMapping};
use rbuild_solver::solve::{self, ContextDir, ContextKey, RunLimits, SolveOptions};
use sha2::Digest as _;

use super::store_cmds::human_size;
use crate::cli::BuildArgs;
use crate::export::{self, BuiltImage, ExportResult, Output};
use crate::frontend_input::{self, FrontendInput};
use crate::progress::{Mode, Printer};
use crate::registry::ImageRef;
use crate::request::cache::{CacheBackend, CacheMode};
use crate::request::{BuildRequest, ContextSource, DockerfileSource};
use crate::sources::Sources;

/// Options that later work will implement answer clearly instead of being
/// silently ignored.
fn reject_unavailable(request: &BuildRequest) -> Result<()> {
    crate::remote_cache::check_exports(&request.cache_to)
}

pub fn run(args: BuildArgs, root: PathBuf, mapping: IdMapping) -> Result<i32> {
    let request = BuildRequest::from_cli(&args)?;
    if request.call != "build" {
        let input = frontend_input::load(&request)?;
        return super::call::run(&request.call, &input);
    }
    build(&[request], &root, &mapping)
}

/// One request, loaded and lowered for each of its platforms.
struct Planned<'a> {
    request: &'a BuildRequest,
    input: FrontendInput,
    /// Where its local contexts come from, by name.
    origins: BTreeMap<String, String>,
    /// (output name in the merged graph, lowering), in platform order.
    lowered: Vec<(String, LoweredBuild)>,
}

/// Builds every request in one solve and writes each one's outputs.
pub fn build(requests: &[BuildRequest], root: &Path, mapping: &IdMapping) -> Result<i32> {
    let Some(first) = requests.first() else { return Ok(0) };
    for request in requests {
        reject_unavailable(request)?;
        // Before anything runs (bake targets come here without `from_cli`).
        if request.platforms.len() > 1 && request.outputs.iter().any(|o| matches!(o, export::Output::Load { .. })) {
            bail!(crate::request::RequestError::LoadSeveralPlatforms);
        }
        // Annotations that cannot be written are refused before anything
        // runs (the export checks again, against what was built).
        if !request.outputs.is_empty() {
            let has_index = request.platforms.len() > 1 || request.attestations.provenance.is_some();
            let checked = request.annotations.check(&request.platforms, has_index, false);
            match checked {
                Err(e) if requests.len() > 1 => return Err(e).with_context(|| format!("target `{}`", request.name)),
                other => other?,
            }
        }
        if request.run_limits.network == NetworkMode::Host && !request.entitlements.network_host {
            bail!("`--network=host` needs the `network.host` entitlement: pass `--allow network.host` as well");
        }
    }
    let mode = first.progress;
    let printer = Printer::new(mode);
    let insecure: Vec<String> = requests.iter().flat_map(|r| r.insecure_registries.iter().cloned()).collect();
    let pull = requests.iter().any(|r| r.pull);
    let (runtime, sources) = Sources::open(root, &insecure, first.registry_ca.as_deref(), pull, mapping)?;
    let (store, registry) = (sources.store.clone(), sources.registry.clone());
    if let IdMapping::Single { .. } = mapping {
        printer.warn(&mapping.describe());
    }

    let mut planned = Vec::new();
    let mut merged = Definition::default();
    for request in requests {
        let file = match &request.dockerfile {
            DockerfileSource::Path(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
            DockerfileSource::Stdin => None,
        };
        // BuildKit's first step; reading and lowering the Dockerfile is ours.
        let phase = printer.phase(&format!("[internal] load build definition from {}", file.as_deref().unwrap_or("-")));
        let input = frontend_input::load(request)?;
        printer.message(&format!("transferring dockerfile: {}B", input.dockerfile.len()));
        let origins = context_origins(&input)?;
        let mut lowered = Vec::new();
        let mut unused = BTreeSet::new();
        for platform in &input.platforms {
            let mut lower_opts = input.lower.clone();
            lower_opts.target_platform = platform.clone();
            lower_opts.context_origins = origins.clone();
            for (name, source) in &request.contexts {
                if let ContextSource::Request(dep) = source {
                    let graph = request_result(&planned, dep, platform)
                        .with_context(|| format!("`{}`: context `{name}`", request.name))?;
                    lower_opts.named_contexts.insert(name.clone(), NamedContext::Graph(graph));
                }
            }
            // Every platform of every request is lowered before anything
            // runs, so a step needing an entitlement is refused first.
            lower_opts.entitlements = Some(request.entitlements);
            let l =
                lower::parse_and_lower(&input.dockerfile, &lower_opts, &sources).map_err(|d| anyhow::anyhow!("{d}"))?;
            unused.extend(l.unused_build_args.iter().cloned());
            let name = output_name(request, platform);
            merged.merge_as(&name, &l.definition)?;
            lowered.push((name, l));
        }
        phase.done();
        for arg in unused {
            printer.warn(&format!("build arg `{arg}` was not consumed by any ARG"));
        }
        planned.push(Planned { request, input, origins, lowered });
    }

    let mut solve_opts = solve_options(&planned, mapping)?;
    let cache_from: Vec<_> = requests.iter().flat_map(|r| r.cache_from.iter().cloned()).collect();
    let chown = !matches!(mapping, IdMapping::Single { .. });
    solve_opts.imported = crate::remote_cache::import(&cache_from, &registry, &runtime.handle().clone(), chown)?;
    let cache_mounts = crate::remote_cache::cache_mounts_of(&merged);
    if let Some(imported) = &solve_opts.imported {
        printer.message(&format!("importing cache: {} record(s)", imported.len()));
        // Before the solve, so the first RUN using a mount finds the files.
        let ids: Vec<String> = cache_mounts.iter().map(|m| m.id.clone()).collect();
        for id in imported.seed_mounts(&store, &ids).context("seeding cache mounts")? {
            printer.message(&format!("seeded cache mount `{id}` from the imported cache"));
        }
    }
    let cgroup_parent = requests.iter().find_map(|r| r.run_limits.cgroup_parent.as_deref());
    if merged.vertices.iter().any(|v| matches!(v.op, Op::Exec(_))) {
        match CgroupRoot::create(cgroup_parent) {
            Ok(root) => solve_opts.limits.cgroups = Some(Arc::new(root)),
            // Asked for explicitly: not silently dropped.
            Err(e) if cgroup_parent.is_some() => bail!("`--cgroup-parent`: {e}"),
            // Said once per build; RUN steps still get their rlimits.
            Err(e) => printer.warn(&format!("no per-RUN cgroups: {e}; RUN steps get rlimits only")),
        }
    }
    let started = unix_now();
    let epoch = source_date_epoch()?;
    let uploads = if export::BackgroundPlan::enabled() && crate::remote_cache::CacheUploads::enabled() {
        crate::remote_cache::CacheUploads::new(
            requests.iter().flat_map(|r| r.cache_to.iter()),
            &registry,
            runtime.handle(),
        )?
    } else {
        crate::remote_cache::CacheUploads::default()
    };
    if export::BackgroundPlan::enabled() {
        solve_opts.on_commit = background_plan(&planned, &merged, epoch, &uploads)?.into_hook(&store);
    }
    let solution = solve::solve(&merged, &store, &sources, &solve_opts, &printer)?;

    // The cache keys of every platform of every request, so each
    // `--cache-to` gets one artifact with all of them.
    let mut cache_keys = Vec::new();
    for plan in planned.iter().filter(|p| !p.request.outputs.is_empty() && !p.request.cache_to.is_empty()) {
        for (name, lowered) in &plan.lowered {
            let solved = solution.output(name).with_context(|| format!("the solve returned no `{name}`"))?;
            cache_keys.push(crate::remote_cache::PlatformKeys {
                platform: lowered.platform.to_string(),
                all: solved.keys.values().map(|k| k.to_string()).collect(),
                image: solved.image_keys.iter().map(|k| k.to_string()).collect(),
            });
        }
    }
    // One export per `--cache-to`, written on a thread of its own while the
    // images are: it waits for the layer uploads (mostly done in the
    // background during the build), writes config and manifest, and once
    // the images are written reads the manifest back (the wait that
    // detects a concurrent writer overlaps the image export). What the
    // build waits for after its images is the cache's own cost.
    let mut specs = Vec::new();
    let mut seen = BTreeSet::new();
    for spec in requests.iter().flat_map(|r| r.cache_to.iter()) {
        if seen.insert(crate::remote_cache::spec_key(spec)) && !matches!(spec.backend, CacheBackend::Inline) {
            specs.push((spec.clone(), uploads.queue(spec))); // inline records are written into the image config
        }
    }
    let cache_exports = crate::remote_cache::CacheExports::start(crate::remote_cache::CacheExportJob {
        specs,
        store: store.clone(),
        registry: registry.clone(),
        runtime: runtime.handle().clone(),
        keys: cache_keys,
        imported: solve_opts.imported.clone(),
        mounts: cache_mounts.clone(),
        epoch,
    })?;

    for plan in &planned {
        let request = plan.request;
        let outputs = &request.outputs;
        if outputs.is_empty() {
            continue; // built only as another request's context
        }
        let form = export::LayerForm::for_outputs(
            outputs,
            !request.cache_to.is_empty(),
            request.attestations.provenance.is_some(),
        );
        let phase = printer.phase(export_phase_name(outputs));
        let mut images: Vec<BuiltImage> = Vec::new();
        let mut lazy = crate::remote_cache::LazyLayers::new(&store, solve_opts.imported.clone());
        for (name, lowered) in &plan.lowered {
            let solved = solution.output(name).with_context(|| format!("the solve returned no `{name}`"))?;
            let solved =
                &crate::remote_cache::fetch_output(&store, solve_opts.imported.as_deref(), solved, outputs, &mut lazy)?;
            printer.message(&format!("exporting layers for {}", lowered.platform));
            let inline = if crate::remote_cache::wants_inline(&request.cache_to) {
                Some(crate::remote_cache::inline_keys(&store, solve_opts.imported.as_deref(), solved)?)
            } else {
                None
            };
            let annotations = request.annotations.manifest(&lowered.platform);
            images.push(export::assemble(&store, lowered, solved, &form, epoch, inline.as_deref(), annotations)?);
        }
        let provenance = match request.attestations.provenance {
            Some(mode) => {
                let req = provenance_request(plan, started);
                plan.lowered.iter().map(|(_, l)| export::attest::provenance_predicate(&req, mode, &bases(l))).collect()
            }
            None => Vec::new(),
        };
        let result = export::export_all(
            &store,
            &runtime,
            &registry,
            &images,
            &export::ExportSpec {
                outputs,
                tags: &request.tags,
                annotations: &request.annotations,
                provenance: &provenance,
            },
            &printer,
            Some(&lazy),
        )?;
        summarize(request, &images, &result, &printer)?;
        phase.done();
        if let Some(path) = &request.iidfile {
            std::fs::write(path, &result.image_id).with_context(|| format!("writing `{}`", path.display()))?;
        }
        if let Some(path) = &request.metadata_file {
            let json = serde_json::to_vec_pretty(&result.metadata)?;
            std::fs::write(path, json).with_context(|| format!("writing `{}`", path.display()))?;
        }
        if mode == Mode::Quiet {
            println!("{}", result.image_id);
        }
    }
    let images_done = std::time::Instant::now();
    if !cache_exports.is_empty() {
        let phase = printer.phase("exporting cache");
        for (spec, result, ended) in cache_exports.finish()? {
            match result {
                Ok(stats) => printer.message(&format!(
                    "exported cache: {} record(s), {} layer(s) ({} new), {} cache mount(s), manifest {} in {:.2}s",
                    stats.records,
                    stats.layers,
                    stats.layers_written,
                    stats.mounts,
                    stats.manifest_digest,
                    ended.saturating_duration_since(images_done).as_secs_f64()
                )),
                Err(e) if spec.ignore_error => printer.warn(&format!("cache export failed: {e:#}")),
                Err(e) => return Err(e),
            }
        }
        phase.done();
    }
    auto_gc(&store, &crate::config::current().gc, &printer)?;
    Ok(0)
}

/// The config file's GC policy, applied once the build's outputs are
/// written: when the store holds more than `keep-storage` (or, with only
/// `keep-duration`, after every build). Prune keeps tagged images and
/// whatever a live process's lease holds, so running builds (and this
/// one's own results) are never touched.
fn auto_gc(store: &rbuild_cache::store::Store, policy: &crate::config::GcPolicy, printer: &Printer) -> Result<()> {
    let over = match policy.keep_storage {
        Some(limit) => {
            let du = store.disk_usage()?;
            let used = du.blobs_bytes + du.snapshots_bytes + du.mounts_bytes;
            (used > limit).then_some(used)
        }
        None if policy.keep_duration.is_some() => Some(0),
        None => None,
    };
    let Some(used) = over else { return Ok(()) };
    let report = store.prune(&rbuild_cache::store::PruneOptions {
        all: false,
        keep_storage: policy.keep_storage,
        keep_duration: policy.keep_duration,
    })?;
    let why = match policy.keep_storage {
        Some(limit) => format!("store at {} > keep-storage {}", human_size(used), human_size(limit)),
        None => "keep-duration".to_string(),
    };
    printer.message(&format!(
        "automatic GC ({why}): reclaimed {} ({} blobs, {} snapshots, {} cache records)",
        human_size(report.bytes_freed),
        report.blobs_removed,
        report.snapshots_removed,
        report.records_removed
    ));
    Ok(())
}

/// The layers to write while the build runs (see [`export::BackgroundPlan`]):
/// each image's chain with its compression, and what each `--cache-to`
/// exports with the cache's.
fn background_plan(
    planned: &[Planned<'_>],
    merged: &Definition,
    epoch: Option<i64>,
    uploads: &crate::remote_cache::CacheUploads,
) -> Result<export::BackgroundPlan> {
    let mut plan = export::BackgroundPlan::default();
    let threads = export::threads();
    for p in planned {
        let images = p.request.outputs.iter().any(|o| !matches!(o, Output::Local { .. } | Output::Tar { .. }));
        let image_opts = LayerOptions {
            compression: export::compression_from_outputs(&p.request.outputs),
            source_date_epoch: epoch,
            threads,
        };
        for spec in &p.request.cache_to {
            if matches!(spec.backend, CacheBackend::Inline) {
                continue;
            }
            let opts = LayerOptions {
                compression: crate::remote_cache::layer_compression(spec)?,
                source_date_epoch: epoch,
                threads,
            };
            let queue = uploads.queue(spec);
            match spec.mode {
                CacheMode::Max => {
                    plan.add_every(opts);
                    if let Some(queue) = queue {
                        plan.add_upload(queue, opts, None);
                    }
                }
                CacheMode::Min => {
                    let mut chain = std::collections::HashSet::new();
                    for (name, _) in &p.lowered {
                        if let Some(Some(out)) = merged.outputs.get(name) {
                            plan.add_image(merged, *out, opts);
                            chain.extend(export::image_vertices(merged, *out));
                        }
                    }
                    if let Some(queue) = queue {
                        plan.add_upload(queue, opts, Some(chain));
                    }
                }
            }
        }
        if !images {
            continue;
        }
        let form = export::LayerForm::for_outputs(
            &p.request.outputs,
            !p.request.cache_to.is_empty(),
            p.request.attestations.provenance.is_some(),
        );
        for (name, _) in &p.lowered {
            if let Some(Some(out)) = merged.outputs.get(name) {
                match form {
                    export::LayerForm::Deferred { .. } => plan.add_image_deferred(merged, *out, epoch),
                    export::LayerForm::Compressed(_) => plan.add_image(merged, *out, image_opts),
                }
            }
        }
    }
    Ok(plan)
}

/// The lowered result (graph, image config, history) of the request named
/// `dep` for `platform` (or for its
/// only platform, which then serves every platform of the user, as buildx
/// does), to be taken into another request's graph.
fn request_result(planned: &[Planned<'_>], dep: &str, platform: &Platform) -> Result<Arc<BuiltContext>> {
    let Some(plan) = planned.iter().find(|p| p.request.name == dep) else {
        bail!("the build `{dep}` it names is not part of this build, or comes after it");
    };
    let found = match &plan.lowered[..] {
        [(_, only)] => Some(only),
        all => all.iter().map(|(_, l)| l).find(|l| &l.platform == platform),
    };
    match found {
        Some(l) => Ok(Arc::new(BuiltContext::of(l))),
        None => bail!("`{dep}` is not built for {platform}"),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// What the provenance says about `plan`'s request: ids of secrets and SSH
/// agents only, never their values.
fn provenance_request(plan: &Planned<'_>, started: i64) -> export::attest::ProvenanceRequest {
    let request = plan.request;
    let dockerfile = Path::new(&plan.input.dockerfile_name)
        .strip_prefix(&plan.input.context_dir)
        .ok()
        .or_else(|| Path::new(&plan.input.dockerfile_name).file_name().map(Path::new))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "Dockerfile".into());
    let mut locals = vec!["context".to_string(), "dockerfile".to_string()];
    locals.extend(plan.input.local_contexts.keys().cloned());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let id = sha2::Sha256::digest(format!("{}-{nanos}-{}", std::process::id(), request.name).as_bytes());
    export::attest::ProvenanceRequest {
        dockerfile,
        build_args: request.args.clone(),
        labels: request.labels.clone(),
        target: request.target.clone(),
        secret_ids: request.secrets.iter().map(|s| s.id.clone()).collect(),
        ssh_ids: request.ssh.iter().map(|s| s.id.clone()).collect(),
        locals,
        started: export::rfc3339(started),
        finished: export::rfc3339(unix_now()),
        invocation_id: hex::encode(&id[..13]),
    }
}

/// The base images a lowering pulls, pinned, with their platforms.
fn bases(lowered: &LoweredBuild) -> Vec<(String, Platform)> {
    lowered
        .definition
        .vertices
        .iter()
        .filter_map(|v| match &v.op {
            Op::Source(rbuild_solver::graph::SourceOp::Image { reference, platform }) => {
                Some((reference.clone(), platform.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The name of one (request, platform) result in the merged graph.
fn output_name(request: &BuildRequest, platform: &Platform) -> String {
    format!("{}/{platform}", request.name)
}

/// Where each local context of `input` comes from: its canonical directory,
/// and for the main context a digest of its ignore rules too — the solver
/// finds a context's directory and ignore predicate by (name, origin).
fn context_origins(input: &FrontendInput) -> Result<BTreeMap<String, String>> {
    let canonical = |dir: &Path| {
        std::fs::canonicalize(dir)
            .with_context(|| format!("resolving build context `{}`", dir.display()))
            .map(|p| p.display().to_string())
    };
    let mut origins = BTreeMap::new();
    let mut main = canonical(&input.context_dir)?;
    if !input.dockerignore.is_empty() {
        let rules = sha2::Sha256::digest(input.dockerignore.join("\n").as_bytes());
        main.push_str(&format!("#dockerignore={}", &hex::encode(rules)[..16]));
    }
    origins.insert("context".to_string(), main);
    for (name, dir) in &input.local_contexts {
        origins.insert(name.clone(), canonical(dir)?);
    }
    Ok(origins)
}

/// The solver's options for all planned requests: their contexts by (name,
/// origin), secrets and agents by id (the same id with two different sources
/// is an error, as a RUN could not tell which it gets).
fn solve_options(planned: &[Planned<'_>], mapping: &IdMapping) -> Result<SolveOptions> {
    let mut contexts = BTreeMap::new();
    let mut secret_specs = BTreeMap::new();
    let mut ssh_specs = BTreeMap::new();
    for plan in planned {
        let (input, origins) = (&plan.input, &plan.origins);
        let main_ignore =
            PatternMatcher::new(&input.dockerignore).map_err(|e| anyhow::anyhow!("invalid .dockerignore: {e}"))?;
        // Exactly the paths BuildKit's context transfer (fsutil's filtered
        // walk) would send.
        let filter = ContextFilter::new(main_ignore, input.context_dir.clone());
        contexts.insert(
            ContextKey { name: "context".into(), origin: origins["context"].clone() },
            ContextDir { root: input.context_dir.clone(), ignore: Arc::new(move |p: &str| filter.ignored(p)) },
        );
        for (name, dir) in &input.local_contexts {
            contexts.insert(
                ContextKey { name: name.clone(), origin: origins[name].clone() },
                ContextDir { root: dir.clone(), ignore: Arc::new(|_: &str| false) },
            );
        }
        for s in &plan.request.secrets {
            if let Some(prev) = secret_specs.insert(s.id.clone(), s.clone())
                && prev != *s
            {
                bail!("secret `{}` is given twice with different sources", s.id);
            }
        }
        for s in &plan.request.ssh {
            if let Some(prev) = ssh_specs.insert(s.id.clone(), s.clone())
                && prev != *s
            {
                bail!("ssh agent `{}` is given twice with different sockets", s.id);
            }
        }
    }
    let secrets = secret_specs.iter().map(|(id, s)| Ok((id.clone(), s.load()?))).collect::<Result<_>>()?;
    let ssh = ssh_specs.iter().map(|(id, s)| Ok((id.clone(), s.resolve()?))).collect::<Result<_>>()?;
    let jobs = planned.iter().find_map(|p| p.request.jobs).or(crate::config::current().jobs);
    let mapping = mapping.clone();
    Ok(SolveOptions {
        jobs: jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)),
        contexts,
        secrets,
        ssh,
        can_chown: Arc::new(move |u, g| mapping.can_chown(u, g)),
        // Lowering checked each request against its own `--allow`; the
        // solver's check of the merged graph is against what any granted.
        entitlements: planned.iter().fold(Default::default(), |a: rbuild_solver::solve::Entitlements, p| {
            let e = p.request.entitlements;
            rbuild_solver::solve::Entitlements {
                network_host: a.network_host || e.network_host,
                security_insecure: a.security_insecure || e.security_insecure,
            }
        }),
        limits: RunLimits { cgroups: None },
        imported: None,
        on_commit: None,
    })
}

/// What buildx prints at the end of a build that wrote an image: each
/// manifest, the manifest list, the image id and the names it was given.
fn summarize(request: &BuildRequest, images: &[BuiltImage], result: &ExportResult, printer: &Printer) -> Result<()> {
    let writes_image = request.outputs.iter().any(|o| o.image_attrs().is_some());
    if !writes_image {
        return Ok(());
    }
    for image in images {
        printer.message(&format!("exporting manifest {} for {}", image.manifest_digest, image.platform));
    }
    if images.len() > 1 {
        let list = result.metadata["containerimage.digest"].as_str().unwrap_or_default();
        printer.message(&format!("exporting manifest list {list}"));
    }
    printer.message(&format!("writing image {}", result.image_id));
    let mut names: Vec<String> = request.tags.clone();
    for o in &request.outputs {
        if let Some(image) = o.image_attrs() {
            names.extend(image.names.iter().cloned());
        }
    }
    let mut seen = BTreeSet::new();
    for name in names {
        let full =
            ImageRef::parse(&name).map(|r| r.to_string()).map_err(|e| anyhow::anyhow!("invalid tag `{name}`: {e}"))?;
        if seen.insert(full.clone()) {
            printer.message(&format!("naming to {full}"));
        }
    }
    let digest = result.metadata["containerimage.digest"].as_str().unwrap_or(&result.image_id);
    printer.summary(&seen.into_iter().collect::<Vec<_>>(), digest);
    Ok(())
}

/// The export step's name, as BuildKit's exporters call theirs.
fn export_phase_name(outputs: &[export::Output]) -> &'static str {
    if outputs.iter().any(|o| o.image_attrs().is_some()) { "exporting to image" } else { "exporting to client" }
}

/// `SOURCE_DATE_EPOCH` as seconds, if set.
fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Ok(Some(v.parse().with_context(|| format!("invalid SOURCE_DATE_EPOCH `{v}`"))?)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        build: BuildArgs,
    }

    fn request(name: &str, ctx: &Path, private: &Path, dest: &Path) -> BuildRequest {
        let dest = format!("type=local,dest={}", dest.display());
        let private = format!("private={}", private.display());
        let ctx = ctx.display().to_string();
        let args =
            Wrap::parse_from(["rbuild", "--progress", "quiet", "--build-context", &private, "-o", &dest, &ctx]).build;
        BuildRequest { name: name.to_string(), ..BuildRequest::from_cli(&args).unwrap() }
    }

    /// Two requests (bake targets) whose contexts share names (`context`,
    /// `private`) but not directories are solved in one graph without mixing
    /// them up, although their Dockerfiles are identical: one target's
    /// Dockerfile cannot read the other's context by naming it.
    #[test]
    fn same_named_contexts_of_two_requests_never_collide() {
        if !rustix::process::geteuid().is_root() {
            return; // the store's snapshot and overlay work needs root here
        }
        let tmp = tempfile::tempdir().unwrap();
        let mut requests = Vec::new();
        for name in ["one", "two"] {
            let ctx = tmp.path().join(name);
            std::fs::create_dir_all(&ctx).unwrap();
            std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY f /f\nCOPY --from=private p /p\n").unwrap();
            std::fs::write(ctx.join("f"), name).unwrap();
            let private = tmp.path().join(format!("private-{name}"));
            std::fs::create_dir_all(&private).unwrap();
            std::fs::write(private.join("p"), format!("private of {name}")).unwrap();
            requests.push(request(name, &ctx, &private, &tmp.path().join(format!("out-{name}"))));
        }
        let store = tmp.path().join("store");
        assert_eq!(build(&requests, &store, &IdMapping::Full).unwrap(), 0);
        for name in ["one", "two"] {
            let out = tmp.path().join(format!("out-{name}"));
            assert_eq!(std::fs::read_to_string(out.join("f")).unwrap(), name);
            assert_eq!(std::fs::read_to_string(out.join("p")).unwrap(), format!("private of {name}"));
        }
    }
}
