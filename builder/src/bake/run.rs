//! Runs resolved bake targets: each becomes the `BuildArgs` of an
//! `rbuild build` and runs through `commands::build::run`, one after another
//! in this process. A target that another reaches through a `target:NAME`
//! context builds first, into a directory (`type=local`) that the linking
//! build gets as a named local context.
//!
//! This is the interim path until all targets are lowered into one solve;
//! everything that maps a bake target onto a build lives here so it can be
//! replaced in one place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use rbuild::bake::Resolved;
use rbuild::bake::entitlements::{self, Grants};
use rbuild::bake::inputs::build_inputs;
use rbuild::bake::resolve::is_remote;
use rbuild::bake::target::Target;
use rbuild_solver::sandbox::IdMapping;

use crate::cli::{BakeArgs, BuildArgs};

/// `BuildArgs` with every flag at its default, however many flags the build
/// command grows.
#[derive(Parser)]
struct DefaultBuild {
    #[command(flatten)]
    build: BuildArgs,
}

fn default_build_args() -> BuildArgs {
    DefaultBuild::parse_from(["rbuild"]).build
}

/// The order to build in: every `target:` dependency before its user.
fn build_order(r: &Resolved) -> Vec<String> {
    fn visit(name: &str, r: &Resolved, seen: &mut Vec<String>, out: &mut Vec<String>) {
        if seen.iter().any(|s| s == name) {
            return;
        }
        seen.push(name.to_string());
        if let Some(t) = r.targets.get(name) {
            for dep in links(t) {
                visit(&dep, r, seen, out);
            }
        }
        out.push(name.to_string());
    }
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for name in r.targets.keys() {
        visit(name, r, &mut seen, &mut out);
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

/// Target attributes `rbuild build` has no flag for yet: said out loud
/// rather than dropped silently.
fn warn_unapplied(name: &str, t: &Target) {
    let mut unapplied = Vec::new();
    if t.annotations.as_ref().is_some_and(|a| !a.is_empty()) {
        unapplied.push("annotations");
    }
    if t.attest.as_ref().is_some_and(|a| !a.is_empty()) {
        unapplied.push("attest");
    }
    if t.shm_size.is_some() {
        unapplied.push("shm-size");
    }
    if t.ulimits.as_ref().is_some_and(|a| !a.is_empty()) {
        unapplied.push("ulimits");
    }
    if t.resources.is_some() {
        unapplied.push("resources");
    }
    if t.extra_hosts.as_ref().is_some_and(|a| !a.is_empty()) {
        unapplied.push("extra-hosts");
    }
    if t.network.as_deref().is_some_and(|n| n != "default") {
        unapplied.push("network");
    }
    if !unapplied.is_empty() {
        eprintln!(
            "warning: target `{name}`: {} not applied by this rbuild version",
            unapplied.iter().map(|u| format!("`{u}`")).collect::<Vec<_>>().join(", ")
        );
    }
}

/// The `rbuild build` flags for one target.
fn build_args(
    name: &str,
    t: &Target,
    args: &BakeArgs,
    linked: &BTreeMap<String, PathBuf>,
    tmp: &Path,
) -> Result<BuildArgs> {
    warn_unapplied(name, t);
    let mut b = default_build_args();
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let inputs = build_inputs(t, &cwd).with_context(|| format!("target `{name}`"))?;
    if is_remote(&inputs.context_path) {
        bail!("target `{name}`: remote build contexts (`{}`) are not supported by rbuild yet", inputs.context_path);
    }
    b.context = PathBuf::from(&inputs.context_path);
    if let Some(inline) = &inputs.dockerfile_inline {
        let p = tmp.join(format!("{name}.Dockerfile"));
        std::fs::write(&p, inline).with_context(|| format!("writing `{}`", p.display()))?;
        b.file = Some(p);
    } else {
        b.file = Some(PathBuf::from(&inputs.dockerfile_path));
    }
    b.target = t.target.clone();
    b.tags = t.tags.clone().unwrap_or_default();
    b.platform = t.platforms.clone().unwrap_or_default();
    b.build_args = t.args.iter().flatten().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}"))).collect();
    b.label = t.labels.iter().flatten().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}"))).collect();
    b.secret = t.secret.iter().flatten().map(|s| s.canonical()).collect();
    // `rbuild build --ssh` takes `ID[=PATHS]` unquoted.
    b.ssh = t
        .ssh
        .iter()
        .flatten()
        .map(|s| if s.paths.is_empty() { s.id.clone() } else { format!("{}={}", s.id, s.paths.join(",")) })
        .collect();
    // The long `type=...,ref=...` form, not the bare-ref short one.
    let cache = |c: &rbuild::bake::entries::CacheEntry| {
        std::iter::once(format!("type={}", c.kind))
            .chain(c.attrs.iter().map(|(k, v)| format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join(",")
    };
    b.cache_from = t.cache_from.iter().flatten().map(cache).collect();
    b.cache_to = t.cache_to.iter().flatten().map(cache).collect();
    b.output = t
        .output
        .iter()
        .flatten()
        .filter(|o| o.kind != "cacheonly")
        .map(|o| {
            // `--load` (`type=docker` without a file) means "into the local
            // store" for a daemonless builder.
            if o.kind == "docker" && o.dest.is_empty() { "type=image".to_string() } else { o.canonical() }
        })
        .collect();
    b.no_cache = t.no_cache.unwrap_or(false);
    b.no_cache_filter = t.no_cache_filter.clone().unwrap_or_default();
    b.pull = t.pull.unwrap_or(false);
    if let Some(call) = &t.call {
        b.call = call.clone();
    }
    b.progress = args.progress.clone();
    b.jobs = args.jobs;
    b.insecure_registry = args.insecure_registry.clone();
    for (k, v) in &inputs.named_contexts {
        let value = match v.strip_prefix("target:") {
            Some(dep) => linked
                .get(dep)
                .with_context(|| format!("target `{name}`: `target:{dep}` was not built"))?
                .display()
                .to_string(),
            None => v.clone(),
        };
        b.build_context.push(format!("{k}={value}"));
    }
    Ok(b)
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
        .map(|(name, t)| build_inputs(t, &cwd).map(|b| (t, b)).with_context(|| format!("target `{name}`")))
        .collect::<Result<Vec<_>>>()?;
    let fs_checks =
        std::env::var("BUILDX_BAKE_ENTITLEMENTS_FS").map(|v| !matches!(v.as_str(), "0" | "false")).unwrap_or(true);
    entitlements::check(inputs.iter().map(|(t, b)| (*t, b)), &grants, &cwd, fs_checks)?;
    let tmp = private_temp_dir()?;
    let result = build_in(r, args, root, mapping, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn build_in(r: &Resolved, args: &BakeArgs, root: PathBuf, mapping: IdMapping, tmp: &Path) -> Result<i32> {
    let needed: Vec<String> = r.targets.values().flat_map(links).collect();
    let mut linked: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut metadata = serde_json::Map::new();
    for name in build_order(r) {
        let t = &r.targets[&name];
        if !t.linked {
            let mut b = build_args(&name, t, args, &linked, tmp)?;
            let meta = tmp.join(format!("{name}.metadata.json"));
            b.metadata_file = Some(meta.clone());
            eprintln!("#bake target `{name}`");
            let code = crate::commands::build::run(b, root.clone(), mapping.clone())?;
            if code != 0 {
                return Ok(code);
            }
            if let Ok(text) = std::fs::read_to_string(&meta)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            {
                metadata.insert(name.clone(), v);
            }
        }
        if needed.contains(&name) {
            let dir = tmp.join(format!("{name}.rootfs"));
            if users_build(r, &name) {
                let mut b = build_args(&name, t, args, &linked, tmp)?;
                b.output = vec![format!("type=local,dest={}", dir.display())];
                b.tags.clear();
                b.call = "build".into();
                eprintln!("#bake target `{name}` (for target: contexts)");
                let code = crate::commands::build::run(b, root.clone(), mapping.clone())?;
                if code != 0 {
                    return Ok(code);
                }
            } else {
                // Only `--call check|outline|targets` reads it: the
                // Dockerfile is inspected, the dependency need not be built.
                std::fs::create_dir_all(&dir).with_context(|| format!("creating `{}`", dir.display()))?;
            }
            linked.insert(name.clone(), dir);
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
    use rbuild::bake::{BakeFile, ParseOptions, parse_files, read_targets};

    fn bake_args() -> BakeArgs {
        #[derive(Parser)]
        struct W {
            #[command(flatten)]
            bake: BakeArgs,
        }
        W::parse_from(["rbuild", "--progress", "plain"]).bake
    }

    #[test]
    fn a_target_becomes_build_flags() {
        let hcl = r#"
target "dep" {}
target "default" {
  context    = "app"
  dockerfile = "Dockerfile.prod"
  target     = "runtime"
  args       = { A = "1" }
  labels     = { team = "x" }
  tags       = ["r/app:1"]
  platforms  = ["linux/amd64", "linux/arm64"]
  contexts   = { dep = "target:dep", img = "docker-image://alpine" }
  ssh        = ["default", "k=/a,/b"]
  cache-from = ["r/app:cache"]
  output     = ["type=docker"]
  no-cache   = true
}
"#;
        let files = [BakeFile { name: "docker-bake.hcl".into(), data: hcl.as_bytes().to_vec() }];
        let config = parse_files(&files, &ParseOptions::default()).unwrap();
        let r = read_targets(&config, &["default".into()], &[], &BTreeMap::new()).unwrap();
        let linked = BTreeMap::from([("dep".to_string(), PathBuf::from("/tmp/dep.rootfs"))]);
        let b = build_args("default", &r.targets["default"], &bake_args(), &linked, Path::new("/tmp")).unwrap();
        assert_eq!(b.context, PathBuf::from("app"));
        assert_eq!(b.file, Some(PathBuf::from("app/Dockerfile.prod")));
        assert_eq!(b.target.as_deref(), Some("runtime"));
        assert_eq!(b.build_args, ["A=1"]);
        assert_eq!(b.label, ["team=x"]);
        assert_eq!(b.tags, ["r/app:1"]);
        assert_eq!(b.platform, ["linux/amd64", "linux/arm64"]);
        assert_eq!(b.build_context, ["dep=/tmp/dep.rootfs", "img=docker-image://alpine"]);
        assert_eq!(b.ssh, ["default", "k=/a,/b"]);
        assert_eq!(b.cache_from, ["type=registry,ref=r/app:cache"]);
        // `type=docker` without a file is the local store here.
        assert_eq!(b.output, ["type=image"]);
        assert!(b.no_cache);
        assert_eq!(b.progress, "plain");
        // The linked target itself has no outputs of its own (cacheonly).
        let d = build_args("dep", &r.targets["dep"], &bake_args(), &linked, Path::new("/tmp")).unwrap();
        assert!(d.output.is_empty());
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
    fn dependencies_build_first() {
        let hcl = "target \"c\" {\n  contexts = { b = \"target:b\" }\n}\ntarget \"b\" {\n  contexts = { a = \"target:a\" }\n}\ntarget \"a\" {}\n";
        let files = [BakeFile { name: "docker-bake.hcl".into(), data: hcl.as_bytes().to_vec() }];
        let config = parse_files(&files, &ParseOptions::default()).unwrap();
        let r = read_targets(&config, &["c".into()], &[], &BTreeMap::new()).unwrap();
        assert_eq!(build_order(&r), ["a", "b", "c"]);
    }
}
