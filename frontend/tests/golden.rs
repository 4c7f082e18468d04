//! Golden graph tests: every `testdata/frontend/<case>/Dockerfile` is
//! lowered with an in-memory resolver (fixed configs, digest-pinned
//! references) and compared with `graph.json` beside it, a dump of every
//! vertex (digest, op, inputs, description), the output digest, the image
//! config and the history. Vertex digests are cache keys, so an accidental
//! change to how anything is encoded or lowered fails here.
//!
//! Per case, optional files: `args` (`KEY=VALUE` lines, like `--build-arg`),
//! `target` (the `--target` stage), `platform` (`--platform`, default
//! `linux/amd64`), `dockerignore` (the context's `.dockerignore`).
//!
//! `testdata/frontend-negative/<case>/{Dockerfile,error}`: lowering must
//! fail with exactly the rendered diagnostic in `error` (optional `target`).
//!
//! `UPDATE_GOLDEN=1 cargo test -p rbuild-frontend --test golden` rewrites
//! the expected files from the current output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rbuild_cache::oci::{History, ImageConfig};
use rbuild_frontend::lower::{
    ImageConfigResolver, LowerOptions, LoweredBuild, ResolveError, ResolvedBase, parse_and_lower,
};
use rbuild_solver::graph::Platform;
use serde_json::{Value, json};

/// Fixed base images. Every reference resolves (except names containing
/// `missing`) to a config that depends only on the name and platform.
struct Images;

impl ImageConfigResolver for Images {
    fn resolve_all(&self, requests: &[(String, Platform)]) -> Vec<Result<ResolvedBase, ResolveError>> {
        requests.iter().map(|(r, p)| resolve(r, p)).collect()
    }
}

fn resolve(reference: &str, platform: &Platform) -> Result<ResolvedBase, ResolveError> {
    if reference.contains("missing") {
        return Err(ResolveError::new(format!("docker.io/library/{reference}: not found")));
    }
    let mut config = ImageConfig {
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        ..Default::default()
    };
    config.config.env = vec!["PATH=/usr/local/bin:/usr/bin:/bin".into(), format!("BASE_IMAGE={reference}")];
    config.config.cmd = Some(vec!["sh".into()]);
    config.history =
        vec![History { created_by: format!("/bin/sh -c #(nop) ADD file:{reference} in / "), ..Default::default() }];
    if reference.starts_with("onbuild-base") {
        config.config.working_dir = "/app".into();
        config.config.on_build =
            vec!["COPY . /app/src".into(), "RUN make -C /app/src".into(), "ENV BUILT_BY=onbuild".into()];
    }
    // A fixed, name-derived digest, like a registry manifest digest.
    let digest = rbuild_solver::graph::Digest::of(format!("{reference}|{platform}").as_bytes());
    let name = if reference.contains('/') { reference.to_string() } else { format!("library/{reference}") };
    let name = if name.contains(':') { name } else { format!("{name}:latest") };
    Ok(ResolvedBase { reference: format!("docker.io/{name}@sha256:{}", digest.hex()), config })
}

fn testdata(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("testdata").join(kind)
}

fn cases(kind: &str) -> Vec<PathBuf> {
    let dir = testdata(kind);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no cases in {}", dir.display());
    out
}

fn optional(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok()
}

fn options(dir: &Path) -> LowerOptions {
    let amd64 = Platform::parse("linux/amd64").unwrap();
    let target_platform = optional(dir, "platform")
        .map(|p| Platform::parse(p.trim()).unwrap_or_else(|| panic!("bad platform file in {}", dir.display())))
        .unwrap_or_else(|| amd64.clone());
    let build_args: BTreeMap<String, String> = optional(dir, "args")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    LowerOptions {
        target: optional(dir, "target").map(|t| t.trim().to_string()),
        build_args,
        build_platform: amd64,
        target_platform,
        dockerignore: optional(dir, "dockerignore")
            .map(|t| rbuild_solver::dockerignore::parse_dockerignore(&t))
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// The JSON the golden files hold.
fn dump(b: &LoweredBuild) -> Value {
    let vertices: Vec<Value> = b
        .definition
        .vertices
        .iter()
        .map(|v| {
            json!({
                "digest": v.digest.to_string(),
                "kind": v.op.kind(),
                "inputs": v.inputs.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                "description": v.meta.description,
                "stage": v.meta.stage,
                "op": serde_json::to_value(&v.op).unwrap(),
            })
        })
        .collect();
    let history: Vec<Value> = b
        .history
        .iter()
        .map(|h| {
            json!({
                "created_by": h.history.created_by,
                "comment": h.history.comment,
                "empty_layer": h.history.empty_layer,
                "layer": h.layer.map(|d| d.to_string()),
            })
        })
        .collect();
    json!({
        "target": b.target,
        "platform": b.platform.to_string(),
        "output": b.definition.output().map(|d| d.to_string()),
        "vertices": vertices,
        "config": serde_json::to_value(&b.config).unwrap(),
        "history": history,
        "unused_build_args": b.unused_build_args,
    })
}

fn update() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0")
}

/// A short line diff: the first differing lines with some context.
fn diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let first = e.iter().zip(&a).position(|(x, y)| x != y).unwrap_or(e.len().min(a.len()));
    let mut out = format!("first difference at line {}:\n", first + 1);
    for line in &e[first.saturating_sub(3)..first] {
        out.push_str(&format!("  {line}\n"));
    }
    for line in e.iter().skip(first).take(8) {
        out.push_str(&format!("- {line}\n"));
    }
    for line in a.iter().skip(first).take(8) {
        out.push_str(&format!("+ {line}\n"));
    }
    out
}

/// Compares `actual` with `file` (or rewrites it); returns a failure text.
fn compare(file: &Path, actual: &str) -> Option<String> {
    if update() {
        std::fs::write(file, actual).unwrap();
        return None;
    }
    let expected = std::fs::read_to_string(file).unwrap_or_default();
    (expected != actual)
        .then(|| format!("{} differs (UPDATE_GOLDEN=1 to accept):\n{}", file.display(), diff(&expected, actual)))
}

#[test]
fn golden_graphs() {
    let mut failures = Vec::new();
    for dir in cases("frontend") {
        let text = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
        let built = match parse_and_lower(&text, &options(&dir), &Images) {
            Ok(b) => b,
            Err(d) => {
                failures.push(format!("{}: lowering failed:\n{d}", dir.display()));
                continue;
            }
        };
        // Lowering twice must give the same graph: digests are cache keys.
        let again = parse_and_lower(&text, &options(&dir), &Images).unwrap();
        assert_eq!(built.definition, again.definition, "{}: lowering is not deterministic", dir.display());
        let actual = serde_json::to_string_pretty(&dump(&built)).unwrap() + "\n";
        failures.extend(compare(&dir.join("graph.json"), &actual));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn golden_errors() {
    let mut failures = Vec::new();
    for dir in cases("frontend-negative") {
        let text = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
        match parse_and_lower(&text, &options(&dir), &Images) {
            Ok(_) => failures.push(format!("{}: lowering succeeded, expected an error", dir.display())),
            Err(d) => failures.extend(compare(&dir.join("error"), &format!("{d}\n"))),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The goldens would be worthless if every vertex were the same: check the
/// dumps discriminate (a changed RUN changes the output digest).
#[test]
fn golden_dump_changes_with_input() {
    let opts = LowerOptions {
        build_platform: Platform::parse("linux/amd64").unwrap(),
        target_platform: Platform::parse("linux/amd64").unwrap(),
        ..Default::default()
    };
    let a = dump(&parse_and_lower("FROM busybox\nRUN echo a\n", &opts, &Images).unwrap());
    let b = dump(&parse_and_lower("FROM busybox\nRUN echo b\n", &opts, &Images).unwrap());
    assert_ne!(a["output"], b["output"]);
    assert_eq!(a["vertices"][0], b["vertices"][0], "the base image vertex is shared");
}
