//! `rbuild build`: load, lower, solve, assemble, export.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use rbuild_frontend::dockerignore::PatternMatcher;
use rbuild_frontend::lower;
use rbuild_solver::graph::{NetworkMode, Op};
use rbuild_solver::sandbox::{CgroupRoot, IdMapping};
use rbuild_solver::solve::{self, ContextDir, RunLimits, Secret, SolveOptions};

use super::image::{self, BuiltImage};
use super::output;
use crate::cli::BuildArgs;
use crate::frontend_input::{self, FrontendInput};
use crate::progress::{Mode, Printer};
use crate::sources::Sources;

/// Options that later work will implement answer clearly instead of being
/// silently ignored.
fn reject_unavailable(args: &BuildArgs) -> Result<()> {
    if !args.cache_from.is_empty() || !args.cache_to.is_empty() {
        bail!("`--cache-from`/`--cache-to` (registry cache) are not available yet in this rbuild version");
    }
    Ok(())
}

pub fn run(args: BuildArgs, root: PathBuf, mapping: IdMapping) -> Result<i32> {
    let input = frontend_input::load(&args)?;
    let call = if args.check { "check" } else { args.call.as_str() };
    if call != "build" {
        return super::call::run(call, &input);
    }
    reject_unavailable(&args)?;
    if args.network == NetworkMode::Host && !args.entitlements().network_host {
        bail!("`--network=host` needs the `network.host` entitlement: pass `--allow network.host` as well");
    }
    let outputs = output::parse_outputs(&args)?;
    let mode = Mode::parse(&args.progress, args.quiet)?;
    let printer = Printer::new(mode);

    let (runtime, sources) = Sources::open(&root, &args, &mapping)?;
    let (store, registry) = (sources.store.clone(), sources.registry.clone());
    if let IdMapping::Single { .. } = mapping {
        printer.message(&format!("warning: {}", mapping.describe()));
    }

    let solve_opts = solve_options(&args, &input, &mapping)?;
    let epoch = source_date_epoch()?;
    let compression = image::compression_from_outputs(&outputs)?;

    let mut solve_opts = solve_opts;
    // Every platform is lowered before anything runs, so that a step
    // needing an entitlement is refused first whichever platform it is in.
    let mut lowered_all = Vec::new();
    for platform in &input.platforms {
        let mut lower_opts = input.lower.clone();
        lower_opts.target_platform = platform.clone();
        lower_opts.entitlements = Some(args.entitlements());
        let lowered =
            lower::parse_and_lower(&input.dockerfile, &lower_opts, &sources).map_err(|d| anyhow::anyhow!("{d}"))?;
        for unused in &lowered.unused_build_args {
            printer.message(&format!("warning: build arg `{unused}` was not consumed by any ARG"));
        }
        lowered_all.push((platform, lowered));
    }
    if lowered_all.iter().any(|(_, l)| l.definition.vertices.iter().any(|v| matches!(v.op, Op::Exec(_)))) {
        match CgroupRoot::create(args.cgroup_parent.as_deref()) {
            Ok(root) => solve_opts.limits.cgroups = Some(Arc::new(root)),
            // Asked for explicitly: not silently dropped.
            Err(e) if args.cgroup_parent.is_some() => bail!("`--cgroup-parent`: {e}"),
            // Said once per build; RUN steps still get their rlimits.
            Err(e) => printer.message(&format!("note: no per-RUN cgroups: {e}; RUN steps get rlimits only")),
        }
    }
    let mut images: Vec<BuiltImage> = Vec::new();
    for (platform, lowered) in &lowered_all {
        let solved = solve::solve(&lowered.definition, &store, &sources, &solve_opts, &printer)?;
        printer.message(&format!("exporting layers for {platform}"));
        let built = image::assemble(&store, lowered, &solved, &compression, epoch)?;
        images.push(built);
    }
    let result = output::export_all(&store, &runtime, &registry, &images, &outputs, &args, &printer)?;
    if let Some(path) = &args.iidfile {
        std::fs::write(path, &result.image_id).with_context(|| format!("writing `{}`", path.display()))?;
    }
    if let Some(path) = &args.metadata_file {
        let json = serde_json::to_vec_pretty(&result.metadata)?;
        std::fs::write(path, json).with_context(|| format!("writing `{}`", path.display()))?;
    }
    if mode == Mode::Quiet {
        println!("{}", result.image_id);
    }
    Ok(0)
}

fn solve_options(args: &BuildArgs, input: &FrontendInput, mapping: &IdMapping) -> Result<SolveOptions> {
    let mut contexts = BTreeMap::new();
    let main_ignore =
        PatternMatcher::new(&input.dockerignore).map_err(|e| anyhow::anyhow!("invalid .dockerignore: {e}"))?;
    let main_ignore = Arc::new(main_ignore);
    let root = input.context_dir.clone();
    contexts.insert(
        "context".to_string(),
        ContextDir {
            root: input.context_dir.clone(),
            // An excluded directory is still walked when a `!` pattern may
            // re-include something inside it.
            ignore: Arc::new(move |p: &str| {
                main_ignore.matches(p)
                    && !(main_ignore.has_exclusions()
                        && main_ignore.dir_may_contain_included(p)
                        && root.join(p).is_dir())
            }),
        },
    );
    for (name, dir) in &input.local_contexts {
        contexts.insert(name.clone(), ContextDir { root: dir.clone(), ignore: Arc::new(|_: &str| false) });
    }
    let mut secrets = BTreeMap::new();
    for s in &args.secret {
        let (id, secret) = parse_secret(s)?;
        secrets.insert(id, secret);
    }
    let mut ssh = BTreeMap::new();
    for s in &args.ssh {
        let (id, value) = s.split_once('=').unwrap_or((s.as_str(), ""));
        let sock = if value.is_empty() {
            std::env::var_os("SSH_AUTH_SOCK")
                .map(PathBuf::from)
                .with_context(|| format!("`--ssh {id}`: $SSH_AUTH_SOCK is not set"))?
        } else {
            PathBuf::from(value)
        };
        ssh.insert(id.to_string(), sock);
    }
    let mapping = mapping.clone();
    Ok(SolveOptions {
        jobs: args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)),
        contexts,
        secrets,
        ssh,
        can_chown: Arc::new(move |u, g| mapping.can_chown(u, g)),
        entitlements: args.entitlements(),
        limits: RunLimits { cgroups: None },
    })
}

/// `id=ID,src=PATH` | `id=ID,env=VAR` | `id=ID` (env var ID), as buildx.
fn parse_secret(spec: &str) -> Result<(String, Secret)> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k {
            "id" => id = Some(v.to_string()),
            "src" | "source" => src = Some(v.to_string()),
            "env" => env = Some(v.to_string()),
            "type" => {}
            other => bail!("invalid `--secret {}`: unknown key `{other}`", redact_secret_spec(spec)),
        }
    }
    let id = id.or_else(|| env.clone()).context("`--secret` needs `id=`")?;
    let value = match (src, env) {
        (Some(path), _) => std::fs::read(&path).with_context(|| format!("reading secret `{id}` from `{path}`"))?,
        (None, Some(var)) => std::env::var(&var)
            .with_context(|| format!("secret `{id}`: environment variable `{var}` is not set"))?
            .into_bytes(),
        (None, None) => match std::env::var(&id) {
            Ok(v) => v.into_bytes(),
            Err(_) => bail!("secret `{id}`: give `src=PATH` or `env=VAR`"),
        },
    };
    Ok((id, Secret(value)))
}

fn redact_secret_spec(spec: &str) -> String {
    spec.split(',').map(|p| p.split('=').next().unwrap_or("")).collect::<Vec<_>>().join(",")
}

/// `SOURCE_DATE_EPOCH` as seconds, if set.
fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Ok(Some(v.parse().with_context(|| format!("invalid SOURCE_DATE_EPOCH `{v}`"))?)),
        _ => Ok(None),
    }
}
