//! Golden tests of `rbuild bake --print` output: each directory under
//! `testdata/bake/` holds bake files, an optional `cmd.json` (`files`,
//! `targets`, `set`, `env`) and `expected.json`, the printed definition.
//! `UPDATE_GOLDEN=1` rewrites `expected.json`. Files that must fail live in
//! `testdata/bake-negative/<case>/` with the error message in `expected.txt`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rbuild::bake::print::print_json;
use rbuild::bake::{BakeFile, ParseOptions, parse_files, read_targets};

fn cases() -> Vec<PathBuf> {
    cases_in("bake")
}

fn cases_in(sub: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata").join(sub);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("testdata/bake")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

fn render(dir: &Path) -> String {
    let cmd: serde_json::Value = std::fs::read(dir.join("cmd.json"))
        .ok()
        .map(|b| serde_json::from_slice(&b).expect("cmd.json"))
        .unwrap_or_default();
    let list = |k: &str| -> Vec<String> {
        cmd[k].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect()
    };
    let mut names = list("files");
    if names.is_empty() {
        names.push("docker-bake.hcl".into());
    }
    let files: Vec<BakeFile> = names
        .iter()
        .map(|n| BakeFile { name: n.clone(), data: std::fs::read(dir.join(n)).unwrap_or_else(|e| panic!("{n}: {e}")) })
        .collect();
    let env: BTreeMap<String, String> = cmd["env"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let opts = ParseOptions { env: env.clone(), ..Default::default() };
    let config = parse_files(&files, &opts).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut targets = list("targets");
    if targets.is_empty() {
        targets.push("default".into());
    }
    let resolved =
        read_targets(&config, &targets, &list("set"), &env).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    print_json(&resolved).pretty() + "\n"
}

#[test]
fn bake_print_golden() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.len() >= 8, "golden cases missing");
    for dir in all {
        let got = render(&dir);
        let path = dir.join("expected.json");
        if update {
            std::fs::write(&path, &got).expect("write expected.json");
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            failures.push(format!("{}:\n--- got\n{got}\n--- want\n{want}", dir.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The error `rbuild bake --print` would show for a failing case.
fn render_error(dir: &Path) -> String {
    let name = "docker-bake.hcl";
    let files = [BakeFile { name: name.into(), data: std::fs::read(dir.join(name)).expect("docker-bake.hcl") }];
    let opts = ParseOptions::default();
    let result = parse_files(&files, &opts).and_then(|c| read_targets(&c, &["default".into()], &[], &BTreeMap::new()));
    match result {
        Ok(_) => panic!("{}: expected an error", dir.display()),
        Err(e) => format!("error: {e}\n"),
    }
}

#[test]
fn bake_errors_golden() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let all = cases_in("bake-negative");
    assert!(all.len() >= 10, "negative cases missing");
    for dir in all {
        let got = render_error(&dir);
        let path = dir.join("expected.txt");
        if update {
            std::fs::write(&path, &got).expect("write expected.txt");
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            failures.push(format!("{}:\n--- got\n{got}--- want\n{want}", dir.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
