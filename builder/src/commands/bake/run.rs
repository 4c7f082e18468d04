//! Runs resolved bake targets: each becomes a [`BuildRequest`] (named after
//! the target) and all of them go to ONE `commands::build::build` call, which
//! lowers every (target, platform) into one merged graph and solves it once:
//! a stage several targets share (same inputs) runs once, and independent
//! work of different targets runs side by side within `--jobs`.
//!
//! `target:NAME` contexts are part of the same solve: the linking request
//! names the dependency's request ([`ContextSource::Request`]), whose graph
//! for the same platform is lowered into the linking one. A dependency that
//! was not asked for itself is a request without outputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use rbuild::bake::Resolved;
use rbuild::bake::entitlements::{self, Grants};
use rbuild::bake::inputs::{BuildInputs, build_inputs};
use rbuild::bake::resolve::is_remote;
use rbuild::bake::target::Target;
use rbuild_solver::graph::NetworkMode;
use rbuild_solver::sandbox::IdMapping;
use rbuild_solver::solve::Entitlements;

use crate::cli::BakeArgs;
use crate::progress::Mode;
use crate::request::{
    self, BuildRequest, CacheDirection, CacheSpec, ContextSource, DockerfileSource, Output, RunLimits, SecretSpec,
    SshSpec,
};

/// How deep `name` sits in the `target:` graph: 0 without links, else one
/// more than its deepest dependency (resolve already refused cycles).
fn depth(r: &Resolved, name: &str, memo: &mut BTreeMap<String, usize>) -> usize {
    if let Some(d) = memo.get(name) {
        return *d;
    }
    let d = r.targets.get(name).map(|t| links(t).iter().map(|dep| depth(r, dep, memo) + 1).max().unwrap_or(0));
    let d = d.unwrap_or(0);
    memo.insert(name.to_string(), d);
    d
}

/// The targets by depth in the `target:` graph: every dependency in a level
/// before its users' (a request is lowered after the ones it builds on).
fn levels(r: &Resolved) -> Vec<Vec<String>> {
    let mut memo = BTreeMap::new();
    let mut out: Vec<Vec<String>> = Vec::new();
    for name in r.targets.keys() {
        let d = depth(r, name, &mut memo);
        if out.len() <= d {
            out.resize_with(d + 1, Vec::new);
        }
        out[d].push(name.clone());
    }
    out
}

/// Whether some target that links to `dep` really builds (rather than
/// running a `--call` method), directly or through another link.
fn users_build(r: &Resolved, dep: &str) -> bool {
    r.targets.iter().any(|(name, t)| {
        links(t).iter().any(|l| l == dep) && (t.call.as_deref().is_none_or(|c| c == "build") || users_build(r, name))
    })
}

fn links(t: &Target) -> Vec<String> {
    t.contexts.iter().flatten().filter_map(|(_, v)| v.strip_prefix("target:").map(str::to_string)).collect()
}

/// bake's `network` attribute as a RUN default.
fn network_mode(name: &str, value: Option<&str>) -> Result<NetworkMode> {
    Ok(match value.unwrap_or("") {
        "" | "default" => NetworkMode::Default,
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        other => bail!("target `{name}`: unknown network mode `{other}`: use `default`, `none` or `host`"),
    })
}

/// The build request of one target.
fn build_request(name: &str, t: &Target, inputs: &BuildInputs, args: &BakeArgs, tmp: &Path) -> Result<BuildRequest> {
    let what = || format!("target `{name}`");
    // Said before anything runs rather than building without the limits.
    if t.resources.as_ref().is_some_and(|r| !r.json().is_empty()) {
        bail!(
            "target `{name}`: `resources` (cgroup memory and CPU limits) are not supported by rbuild: \
             remove them (RUN steps get a `pids` limit, `ulimits` and `shm-size` only)"
        );
    }
    if is_remote(&inputs.context_path) {
        bail!("target `{name}`: remote build contexts (`{}`) are not supported by rbuild yet", inputs.context_path);
    }
    let dockerfile = match &inputs.dockerfile_inline {
        Some(inline) => {
            let p = tmp.join(format!("{name}.Dockerfile"));
            std::fs::write(&p, inline).with_context(|| format!("writing `{}`", p.display()))?;
            DockerfileSource::Path(p)
        }
        None => DockerfileSource::Path(PathBuf::from(&inputs.dockerfile_path)),
    };
    let pairs = |m: &Option<BTreeMap<String, Option<String>>>| -> BTreeMap<String, String> {
        m.iter().flatten().filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone()))).collect()
    };
    let mut contexts = BTreeMap::new();
    for (k, v) in &inputs.named_contexts {
        let source = match v.strip_prefix("target:") {
            Some(dep) => ContextSource::Request(dep.to_string()),
            None => request::parse_build_context(&format!("{k}={v}")).with_context(what)?.1,
        };
        contexts.insert(k.clone(), source);
    }
    // The long `type=...,ref=...` form, as `--cache-from` parses it.
    let mut cache_from = Vec::new();
    for c in t.cache_from.iter().flatten() {
        cache_from.extend(CacheSpec::parse(&c.canonical(), CacheDirection::Import).with_context(what)?);
    }
    let mut cache_to = Vec::new();
    for c in t.cache_to.iter().flatten() {
        cache_to.extend(CacheSpec::parse(&c.canonical(), CacheDirection::Export).with_context(what)?);
    }
    let mut outputs = Vec::new();
    for o in t.output.iter().flatten().filter(|o| o.kind != "cacheonly") {
        // `--load` is `type=docker` without a file: into the local engine.
        let output = if o.kind == "docker" && o.dest.is_empty() {
            Output::Load { image: Default::default() }
        } else {
            request::output::parse(&o.canonical()).with_context(what)?
        };
        outputs.push(output);
    }
    if outputs.is_empty() {
        outputs.push(Output::Image { image: Default::default(), push: false });
    }
    let secrets = t.secret.iter().flatten().map(|s| SecretSpec::parse(&s.canonical())).collect::<Result<_, _>>();
    // `SshSpec` takes `ID[=PATHS]` unquoted.
    let ssh = t
        .ssh
        .iter()
        .flatten()
        .map(|s| {
            SshSpec::parse(&if s.paths.is_empty() { s.id.clone() } else { format!("{}={}", s.id, s.paths.join(",")) })
        })
        .collect::<Result<_, _>>();
    let ulimits = t
        .ulimits
        .iter()
        .flatten()
        .map(|u| u.parse().map_err(|e| anyhow::anyhow!("target `{name}`: invalid ulimit `{u}`: {e}")))
        .collect::<Result<_>>()?;
    let shm_size = match &t.shm_size {
        Some(s) => Some(crate::cli::parse_bytes(s).map_err(|e| anyhow::anyhow!("target `{name}`: `shm-size`: {e}"))?),
        None => None,
    };
    let annotations = request::collect_annotations(t.annotations.iter().flatten().map(String::as_str), &outputs)
        .with_context(what)?;
    // buildx's order: sorted by name (a BTreeMap); a value `a,b` gives one
    // line per address.
    let mut extra_hosts = Vec::new();
    for (host, ip) in t.extra_hosts.iter().flatten() {
        let Some(ip) = ip else { continue };
        extra_hosts.extend(
            rbuild_solver::graph::HostEntry::parse_all(&format!("{host}={ip}"))
                .map_err(|e| anyhow::anyhow!("target `{name}`: `extra-hosts`: {e}"))?,
        );
    }
    let mut attestations = crate::export::attest::Attestations::default();
    for a in inputs.attests.values().flatten() {
        attestations.add(a).with_context(what)?;
    }
    Ok(BuildRequest {
        attestations,
        annotations,
        name: name.to_string(),
        context: PathBuf::from(&inputs.context_path),
        dockerfile,
        target: t.target.clone(),
        args: pairs(&t.args),
        platforms: request::parse_platforms(t.platforms.iter().flatten().map(String::as_str)).with_context(what)?,
        contexts,
        secrets: secrets.with_context(what)?,
        ssh: ssh.with_context(what)?,
        tags: t.tags.clone().unwrap_or_default(),
        outputs,
        cache_from,
        cache_to,
        labels: pairs(&t.labels),
        no_cache: t.no_cache.unwrap_or(false),
        no_cache_filter: t.no_cache_filter.clone().unwrap_or_default(),
        pull: t.pull.unwrap_or(false),
        // Checked against `--allow` before anything runs (`build_all`).
        entitlements: Entitlements {
            network_host: inputs.allow.iter().any(|a| a == "network.host"),
            security_insecure: inputs.allow.iter().any(|a| a == "security.insecure"),
        },
        run_limits: RunLimits {
            network: network_mode(name, t.network.as_deref())?,
            ulimits,
            shm_size,
            cgroup_parent: None,
            extra_hosts,
        },
        progress: Mode::parse(&args.progress, false)?,
        call: t.call.clone().unwrap_or_else(|| "build".into()),
        jobs: args.jobs,
        iidfile: None,
        metadata_file: Some(tmp.join(format!("{name}.metadata.json"))),
        insecure_registries: args.insecure_registry.clone(),
        registry_ca: None,
    })
}

/// A fresh directory only we can use: created (never reused, so a symlink
/// planted under a guessable name in `/tmp` is refused) with mode 0700.
fn private_temp_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    let base = std::env::temp_dir();
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    for attempt in 0..100u32 {
        let dir = base.join(format!("rbuild-bake-{}-{nanos:x}-{attempt}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating `{}`", dir.display())),
        }
    }
    bail!("could not create a private directory in `{}`", base.display())
}

/// Builds every resolved target; writes one metadata entry per target.
pub fn build_all(r: &Resolved, args: &BakeArgs, root: PathBuf, mapping: IdMapping) -> Result<i32> {
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let grants = Grants::parse(&args.allow, &cwd)?;
    let inputs = r
        .targets
        .iter()
        .map(|(name, t)| build_inputs(t, &cwd).map(|b| (name.clone(), b)).with_context(|| format!("target `{name}`")))
        .collect::<Result<BTreeMap<_, _>>>()?;
    let fs_checks =
        std::env::var("BUILDX_BAKE_ENTITLEMENTS_FS").map(|v| !matches!(v.as_str(), "0" | "false")).unwrap_or(true);
    entitlements::check(r.targets.iter().map(|(name, t)| (t, &inputs[name])), &grants, &cwd, fs_checks)?;
    let tmp = private_temp_dir()?;
    let result = build_in(r, &inputs, args, &root, &mapping, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// The requests of a bake run, dependencies before their users: the targets
/// that build, the `--call` ones, and a request without outputs for each
/// `target:` dependency that is not built for itself.
#[derive(Default)]
struct Plan {
    builds: Vec<BuildRequest>,
    calls: Vec<BuildRequest>,
}

fn plan(r: &Resolved, inputs: &BTreeMap<String, BuildInputs>, args: &BakeArgs, tmp: &Path) -> Result<Plan> {
    let needed: Vec<String> = r.targets.values().flat_map(links).collect();
    let mut plan = Plan::default();
    for name in levels(r).iter().flatten() {
        let t = &r.targets[name];
        let mut builds_itself = false;
        if !t.linked {
            let request = build_request(name, t, &inputs[name], args, tmp)?;
            builds_itself = request.call == "build";
            if builds_itself { plan.builds.push(request) } else { plan.calls.push(request) }
        }
        // A `--call check|outline|targets` user only reads its Dockerfile:
        // the dependency need not be built for it.
        if needed.contains(name) && !builds_itself && users_build(r, name) {
            let mut request = build_request(name, t, &inputs[name], args, tmp)?;
            request.outputs.clear();
            request.tags.clear();
            request.call = "build".into();
            request.metadata_file = None;
            plan.builds.push(request);
        }
    }
    Ok(plan)
}

fn build_in(
    r: &Resolved,
    inputs: &BTreeMap<String, BuildInputs>,
    args: &BakeArgs,
    root: &Path,
    mapping: &IdMapping,
    tmp: &Path,
) -> Result<i32> {
    let plan = plan(r, inputs, args, tmp)?;
    if !plan.builds.is_empty() {
        let pairs: usize = plan.builds.iter().map(|b| b.platforms.len()).sum();
        // rawjson is nothing but SolveStatus lines, for the tools that read it.
        if matches!(plan.builds[0].progress, Mode::Plain | Mode::Tty) {
            eprintln!("#bake {} build(s), {pairs} (target, platform) pair(s), one solve", plan.builds.len());
        }
        let code = crate::commands::build::build(&plan.builds, root, mapping)?;
        if code != 0 {
            return Ok(code);
        }
    }
    for request in &plan.calls {
        let input = crate::frontend_input::load(request)?;
        let code = super::super::call::run(&request.call, &input)?;
        if code != 0 {
            return Ok(code);
        }
    }
    let mut metadata = serde_json::Map::new();
    for request in &plan.builds {
        if let Some(meta) = &request.metadata_file
            && let Ok(text) = std::fs::read_to_string(meta)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            metadata.insert(request.name.clone(), v);
        }
    }
    if let Some(path) = &args.metadata_file {
        let json = serde_json::to_vec_pretty(&serde_json::Value::Object(metadata))?;
        std::fs::write(path, json).with_context(|| format!("writing `{}`", path.display()))?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use rbuild::bake::{BakeFile, ParseOptions, parse_files, read_targets};
    use rbuild_solver::graph::Platform;

    fn bake_args() -> BakeArgs {
        #[derive(Parser)]
        struct W {
            #[command(flatten)]
            bake: BakeArgs,
        }
        W::parse_from(["rbuild", "--progress", "plain"]).bake
    }

    fn resolve(hcl: &str, targets: &[&str]) -> Resolved {
        let files = [BakeFile { name: "docker-bake.hcl".into(), data: hcl.as_bytes().to_vec() }];
        let config = parse_files(&files, &ParseOptions::default()).unwrap();
        let names: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        read_targets(&config, &names, &[], &BTreeMap::new()).unwrap()
    }

    #[test]
    fn a_target_becomes_a_build_request() {
        let hcl = r#"
target "dep" {}
target "default" {
  context    = "."
  dockerfile = "Dockerfile.prod"
  target     = "runtime"
  args       = { A = "1" }
  labels     = { team = "x" }
  tags       = ["r/app:1"]
  platforms  = ["linux/amd64", "linux/arm64"]
  contexts   = { dep = "target:dep", img = "docker-image://alpine" }
  cache-from = ["r/app:cache"]
  output     = ["type=docker"]
  no-cache   = true
  network    = "none"
  shm-size   = "128m"
  ulimits    = ["nofile=1024:2048"]
  entitlements = ["network.host"]
}
"#;
        let r = resolve(hcl, &["default"]);
        let cwd = std::env::current_dir().unwrap();
        let t = &r.targets["default"];
        let inputs = build_inputs(t, &cwd).unwrap();
        let b = build_request("default", t, &inputs, &bake_args(), Path::new("/tmp")).unwrap();
        assert_eq!(b.name, "default");
        assert_eq!(b.context, PathBuf::from("."));
        assert_eq!(b.dockerfile, DockerfileSource::Path(PathBuf::from("Dockerfile.prod")));
        assert_eq!(b.target.as_deref(), Some("runtime"));
        assert_eq!(b.args, BTreeMap::from([("A".to_string(), "1".to_string())]));
        assert_eq!(b.labels, BTreeMap::from([("team".to_string(), "x".to_string())]));
        assert_eq!(b.tags, ["r/app:1"]);
        assert_eq!(b.platforms, [Platform::parse("linux/amd64").unwrap(), Platform::parse("linux/arm64").unwrap()]);
        assert_eq!(b.contexts["dep"], ContextSource::Request("dep".into()));
        assert_eq!(b.contexts["img"], ContextSource::Image("alpine".into()));
        assert_eq!(b.cache_from.len(), 1);
        // `type=docker` without a file loads into the local engine (`--load`).
        assert!(matches!(&b.outputs[..], [Output::Load { .. }]));
        assert!(b.no_cache);
        assert_eq!(b.progress, Mode::Plain);
        assert_eq!(b.run_limits.network, NetworkMode::None);
        assert_eq!(b.run_limits.shm_size, Some(128 << 20));
        assert_eq!(b.run_limits.ulimits.iter().map(|u| u.to_string()).collect::<Vec<_>>(), ["nofile=1024:2048"]);
        assert!(b.entitlements.network_host && !b.entitlements.security_insecure);
        // A dependency with no outputs of its own goes to the local store.
        let d = &r.targets["dep"];
        let d = build_request("dep", d, &build_inputs(d, &cwd).unwrap(), &bake_args(), Path::new("/tmp")).unwrap();
        assert!(matches!(&d.outputs[..], [Output::Image { push: false, .. }]));
        let bad = resolve("target \"default\" {\n  network = \"bridge\"\n}\n", &["default"]);
        let t = &bad.targets["default"];
        let e =
            build_request("default", t, &build_inputs(t, &cwd).unwrap(), &bake_args(), Path::new("/tmp")).unwrap_err();
        assert!(e.to_string().contains("unknown network mode `bridge`"), "{e}");
    }

    #[test]
    fn temp_dirs_are_private_and_fresh() {
        use std::os::unix::fs::PermissionsExt as _;
        let a = private_temp_dir().unwrap();
        let b = private_temp_dir().unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::metadata(&a).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::remove_dir(&a).unwrap();
        std::fs::remove_dir(&b).unwrap();
    }

    #[test]
    fn targets_without_links_share_one_level_and_dependencies_come_first() {
        let hcl = "group \"default\" {\n  targets = [\"c\", \"x\", \"y\"]\n}\ntarget \"c\" {\n  contexts = { b = \"target:b\" }\n}\ntarget \"b\" {\n  contexts = { a = \"target:a\" }\n}\ntarget \"a\" {}\ntarget \"x\" {}\ntarget \"y\" {\n  contexts = { a = \"target:a\" }\n}\n";
        let r = resolve(hcl, &["default"]);
        assert_eq!(levels(&r), [vec!["a", "x"], vec!["b", "y"], vec!["c"]]);
        let flat = resolve(
            "target \"p\" {}\ntarget \"q\" {}\ngroup \"default\" {\n  targets = [\"p\", \"q\"]\n}\n",
            &["default"],
        );
        assert_eq!(levels(&flat), [vec!["p", "q"]]);
    }

    #[test]
    fn a_dependency_not_asked_for_is_a_request_without_outputs_before_its_user() {
        let dir = tempfile::tempdir().unwrap();
        let hcl = "target \"gen\" {}\ntarget \"app\" {\n  contexts = { g = \"target:gen\" }\n}\ntarget \"lint\" {\n  call = \"check\"\n  contexts = { g = \"target:gen\" }\n}\n";
        let cwd = std::env::current_dir().unwrap();
        let plan_of = |targets: &[&str]| {
            let r = resolve(hcl, targets);
            let inputs = r.targets.iter().map(|(n, t)| (n.clone(), build_inputs(t, &cwd).unwrap())).collect();
            plan(&r, &inputs, &bake_args(), dir.path()).unwrap()
        };
        let p = plan_of(&["app"]);
        let names: Vec<&str> = p.builds.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["gen", "app"]);
        assert!(p.builds[0].outputs.is_empty() && p.builds[0].metadata_file.is_none());
        assert_eq!(p.builds[1].contexts["g"], ContextSource::Request("gen".into()));
        // Asked for too: one request, with its outputs, feeds the user.
        let p = plan_of(&["app", "gen"]);
        assert_eq!(p.builds.len(), 2);
        assert!(p.builds.iter().all(|b| !b.outputs.is_empty()));
        // Only a `--call check` reads it: nothing is built.
        let p = plan_of(&["lint"]);
        assert!(p.builds.is_empty());
        assert_eq!(p.calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["lint"]);
    }
}
