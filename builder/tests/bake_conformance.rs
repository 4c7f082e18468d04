//! Runs buildx's own bake test cases (`../shared/conformance/buildx-bake`,
//! format in its README.md) against `rbuild::bake`: `parse` cases against
//! `parse_files`, `resolve`/`print` cases against `read_targets`. Prints the
//! pass rate and the failing cases; fails if the rate drops below
//! [`THRESHOLD`]. Deviations are listed in the project README.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rbuild::bake::inputs::build_inputs;
use rbuild::bake::print::target_json;
use rbuild::bake::{BakeFile, Config, ParseOptions, Target, parse_files, read_targets};
use serde_json::Value as J;

/// The pass rate reached; lower means a regression.
const THRESHOLD: f64 = 1.0;

const ENTRY_FIELDS: &[&str] = &["attest", "cache-from", "cache-to", "output", "secret", "ssh"];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/buildx-bake")
}

fn s(x: &str) -> J {
    J::String(x.to_string())
}

/// A target as the comparison sees it: `--print` JSON, with entry lists in
/// buildx's Go struct form plus their canonical string.
fn target_value(t: &Target, print: bool) -> J {
    let mut o = match target_json(t, print).to_serde() {
        J::Object(o) => o,
        _ => unreachable!("a target is an object"),
    };
    let attrs = |m: &BTreeMap<String, String>| J::Object(m.iter().map(|(k, v)| (k.clone(), s(v))).collect());
    let mut put = |k: &str, v: Option<Vec<J>>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            o.insert(k.to_string(), J::Array(v));
        }
    };
    put(
        "attest",
        t.attest.as_ref().map(|v| {
            v.iter()
                .map(|e| serde_json::json!({"__str": e.canonical(), "type": e.kind, "disabled": e.disabled, "attrs": attrs(&e.attrs)}))
                .collect()
        }),
    );
    for (k, v) in [("cache-from", &t.cache_from), ("cache-to", &t.cache_to)] {
        put(
            k,
            v.as_ref().map(|v| {
                v.iter()
                    .map(|e| serde_json::json!({"__str": e.canonical(), "type": e.kind, "attrs": attrs(&e.attrs)}))
                    .collect()
            }),
        );
    }
    put(
        "output",
        t.output.as_ref().map(|v| {
            v.iter().map(|e| serde_json::json!({"__str": e.canonical(), "type": e.kind, "attrs": attrs(&e.attrs), "dest": e.dest})).collect()
        }),
    );
    put(
        "secret",
        t.secret.as_ref().map(|v| {
            v.iter()
                .map(|e| serde_json::json!({"__str": e.canonical(), "id": e.id, "src": e.src, "env": e.env}))
                .collect()
        }),
    );
    put(
        "ssh",
        t.ssh.as_ref().map(|v| {
            v.iter().map(|e| serde_json::json!({"__str": e.canonical(), "id": e.id, "paths": e.paths})).collect()
        }),
    );
    J::Object(o)
}

fn len_of(a: Option<&J>) -> usize {
    match a {
        Some(J::Array(x)) => x.len(),
        Some(J::Object(x)) => x.len(),
        _ => 0,
    }
}

fn is_op(e: &J) -> bool {
    matches!(e, J::Object(o) if o.keys().any(|k| k.starts_with('$')))
}

/// Compares `exp` with `act` by the README's rules; `entry` marks elements
/// of entry-list fields.
fn check(exp: &J, act: Option<&J>, entry: bool, path: &str) -> Result<(), String> {
    if is_op(exp) {
        let J::Object(ops) = exp else { unreachable!("checked") };
        for (op, v) in ops {
            match op.as_str() {
                "$len" => {
                    let n = v.as_u64().unwrap_or(0) as usize;
                    if len_of(act) != n {
                        return Err(format!("{path}: length {} != {n}", len_of(act)));
                    }
                }
                "$keys" => {
                    let J::Object(keys) = v else { return Err(format!("{path}: bad $keys")) };
                    for (k, kv) in keys {
                        let a = act.and_then(|a| a.get(k));
                        if kv.is_null() {
                            if a.is_some_and(|a| !a.is_null()) {
                                return Err(format!("{path}.{k}: expected null, got {}", a.unwrap()));
                            }
                        } else {
                            check(kv, a, false, &format!("{path}.{k}"))?;
                        }
                    }
                }
                "$has" | "$lacks" => {
                    for k in v.as_array().into_iter().flatten() {
                        let k = k.as_str().unwrap_or_default();
                        let has = act.and_then(|a| a.as_object()).is_some_and(|o| o.contains_key(k));
                        if has != (op == "$has") {
                            return Err(format!("{path}: {op} {k}"));
                        }
                    }
                }
                "$at" => {
                    let J::Object(at) = v else { return Err(format!("{path}: bad $at")) };
                    for (i, iv) in at {
                        let idx: usize = i.parse().unwrap_or(0);
                        check(iv, act.and_then(|a| a.get(idx)), entry, &format!("{path}[{idx}]"))?;
                    }
                }
                "$unordered" => {
                    let exp_items = v.as_array().cloned().unwrap_or_default();
                    let mut act_items: Vec<J> = act.and_then(|a| a.as_array()).cloned().unwrap_or_default();
                    if exp_items.len() != act_items.len() {
                        return Err(format!("{path}: {} elements, expected {}", act_items.len(), exp_items.len()));
                    }
                    for e in &exp_items {
                        match act_items.iter().position(|a| check(e, Some(a), entry, path).is_ok()) {
                            Some(i) => {
                                act_items.remove(i);
                            }
                            None => return Err(format!("{path}: no element matches {e}")),
                        }
                    }
                }
                other => return Err(format!("{path}: unknown operator {other}")),
            }
        }
        return Ok(());
    }
    match exp {
        J::Null => match act {
            None | Some(J::Null) => Ok(()),
            Some(a) => Err(format!("{path}: expected unset, got {a}")),
        },
        J::String(x) if entry => match act.and_then(|a| a.get("__str")) {
            Some(J::String(a)) if a == x => Ok(()),
            other => Err(format!("{path}: entry {other:?} != {x:?}")),
        },
        J::Object(o) if entry => {
            for (k, v) in o {
                let a = act.and_then(|a| a.get(k));
                check(v, a, false, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        J::Object(o) => {
            let Some(J::Object(a)) = act else { return Err(format!("{path}: expected object, got {act:?}")) };
            if a.len() != o.len() || o.keys().any(|k| !a.contains_key(k)) {
                return Err(format!(
                    "{path}: keys {:?} != {:?}",
                    a.keys().collect::<Vec<_>>(),
                    o.keys().collect::<Vec<_>>()
                ));
            }
            for (k, v) in o {
                check(v, a.get(k), false, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        J::Array(items) => {
            let Some(J::Array(a)) = act else { return Err(format!("{path}: expected list, got {act:?}")) };
            if a.len() != items.len() {
                return Err(format!("{path}: {} elements, expected {}: {a:?}", a.len(), items.len()));
            }
            for (i, (e, x)) in items.iter().zip(a).enumerate() {
                check(e, Some(x), entry, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        J::Number(n) => match act {
            Some(J::Number(m)) if n.as_f64() == m.as_f64() => Ok(()),
            other => Err(format!("{path}: {other:?} != {n}")),
        },
        other => {
            if act == Some(other) {
                Ok(())
            } else {
                Err(format!("{path}: {act:?} != {other}"))
            }
        }
    }
}

/// Checks the `group`/`target` level of `expect`.
fn check_level(
    exp: &J,
    names: &[String],
    entries: &BTreeMap<String, J>,
    kind: &str,
    parse_level: bool,
) -> Result<(), String> {
    let J::Object(o) = exp else { return Err(format!("{kind}: expectation is not an object")) };
    for (k, v) in o {
        match k.as_str() {
            "$len" => {
                if names.len() as u64 != v.as_u64().unwrap_or(0) {
                    return Err(format!("{kind}: {} entries {names:?}, expected {v}", names.len()));
                }
            }
            "$order" => {
                let want: Vec<String> =
                    v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from)).collect();
                if !parse_level || want != names {
                    return Err(format!("{kind}: order {names:?} != {want:?}"));
                }
            }
            "$names" => {
                let mut want: Vec<String> =
                    v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from)).collect();
                let mut have = names.to_vec();
                want.sort();
                have.sort();
                if want != have {
                    return Err(format!("{kind}: names {have:?} != {want:?}"));
                }
            }
            name => {
                let Some(actual) = entries.get(name) else {
                    return Err(format!("{kind} {name} missing (have {names:?})"));
                };
                let J::Object(fields) = v else { return Err(format!("{kind} {name}: bad expectation")) };
                for (f, fv) in fields {
                    check(fv, actual.get(f), ENTRY_FIELDS.contains(&f.as_str()), &format!("{kind}.{name}.{f}"))?;
                }
            }
        }
    }
    Ok(())
}

/// A target's build options in the shape `expect_build` names.
fn build_value(t: &Target) -> Result<J, String> {
    let b = build_inputs(t, Path::new("/CWD")).map_err(|e| e.to_string())?;
    Ok(serde_json::json!({
        "context_path": b.context_path,
        "dockerfile_path": b.dockerfile_path,
        "named_contexts": b.named_contexts,
        "allow": b.allow,
        "network_mode": b.network_mode,
        "attests": b.attests,
        "exports": b.exports.iter().map(|e| serde_json::json!({"type": e.kind, "attrs": e.attrs})).collect::<Vec<_>>(),
    }))
}

fn group_value(g: &rbuild::bake::Group) -> J {
    serde_json::json!({"targets": g.targets, "description": g.description})
}

/// Target names and values, group names and values.
type Actual = (Vec<String>, BTreeMap<String, J>, Vec<String>, BTreeMap<String, J>, BTreeMap<String, J>, Vec<String>);

fn run_case(dir: &Path) -> Result<(), String> {
    let case: J = serde_json::from_slice(&std::fs::read(dir.join("case.json")).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let strmap = |k: &str| -> BTreeMap<String, String> {
        case.get(k)
            .and_then(|v| v.as_object())
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default()
    };
    let env = strmap("env");
    let opts = ParseOptions {
        env: env.clone(),
        defaults: strmap("defaults"),
        file_relative_paths: case.pointer("/parse_opts/file_relative_paths").and_then(J::as_bool).unwrap_or(false),
        vars: strmap("vars"),
    };
    let mut files = Vec::new();
    for f in case["files"].as_array().into_iter().flatten() {
        let name = f.as_str().unwrap_or_default();
        let data = std::fs::read(dir.join("files").join(name)).map_err(|e| format!("{name}: {e}"))?;
        files.push(BakeFile { name: name.to_string(), data });
    }
    let level = case["level"].as_str().unwrap_or_default();
    let strs = |k: &str| -> Vec<String> {
        case[k].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect()
    };
    let result: Result<Actual, String> = (|| {
        let config: Config = parse_files(&files, &opts).map_err(|e| e.to_string())?;
        if level == "parse" {
            let tn = config.targets.iter().map(|t| t.name.clone()).collect();
            let tv = config.targets.iter().map(|t| (t.name.clone(), target_value(t, false))).collect();
            let gn = config.groups.iter().map(|g| g.name.clone()).collect();
            let gv = config.groups.iter().map(|g| (g.name.clone(), group_value(g))).collect();
            return Ok((tn, tv, gn, gv, BTreeMap::new(), Vec::new()));
        }
        let r = read_targets(&config, &strs("targets"), &strs("overrides"), &env).map_err(|e| e.to_string())?;
        let print = level == "print";
        Ok((
            r.targets.keys().cloned().collect(),
            r.targets.iter().map(|(n, t)| (n.clone(), target_value(t, print))).collect(),
            r.groups.keys().cloned().collect(),
            r.groups.iter().map(|(n, g)| (n.clone(), group_value(g))).collect(),
            r.targets.iter().map(|(n, t)| Ok((n.clone(), build_value(t)?))).collect::<Result<_, String>>()?,
            r.fs_read.clone(),
        ))
    })();
    if let Some(want) = case.get("expect_error") {
        let msg = match result {
            Ok(_) => return Err("expected an error, got success".into()),
            Err(m) => m,
        };
        let exact = case.get("expect_error_match").and_then(J::as_str) == Some("exact");
        if let Some(w) = want.as_str() {
            let ok = if exact { msg == w } else { msg.contains(w) };
            if !ok {
                return Err(format!("error {msg:?} does not match {w:?}"));
            }
        }
        for also in case.get("expect_error_also").and_then(J::as_array).into_iter().flatten() {
            let a = also.as_str().unwrap_or_default();
            if !msg.contains(a) {
                return Err(format!("error {msg:?} lacks {a:?}"));
            }
        }
        return Ok(());
    }
    let (tn, tv, gn, gv, builds, fs_read) = result?;
    let expect = &case["expect"];
    if let Some(t) = expect.get("target") {
        check_level(t, &tn, &tv, "target", level == "parse")?;
    }
    if let Some(g) = expect.get("group") {
        check_level(g, &gn, &gv, "group", level == "parse")?;
    }
    if let Some(fs) = case.pointer("/expect_entitlements/fs_read") {
        check(fs, Some(&serde_json::json!(fs_read)), false, "entitlements.fs_read")?;
    }
    for (name, fields) in case.get("expect_build").and_then(J::as_object).into_iter().flatten() {
        let actual = builds.get(name).ok_or_else(|| format!("build options for {name} missing"))?;
        for (f, fv) in fields.as_object().into_iter().flatten() {
            // `${CWD}` in expectations is the working directory (`/CWD` here).
            let fv: J = serde_json::from_str(&fv.to_string().replace("${CWD}", "/CWD")).expect("JSON");
            check(&fv, actual.get(f), f == "exports", &format!("build.{name}.{f}"))?;
        }
    }
    Ok(())
}

#[test]
fn buildx_bake_conformance() {
    let dir = data_dir();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("case.json").is_file())
        .collect();
    cases.sort();
    let mut failed = Vec::new();
    for c in &cases {
        if let Err(e) = run_case(c) {
            failed.push(format!("{}: {e}", c.file_name().unwrap_or_default().to_string_lossy()));
        }
    }
    let total = cases.len();
    let passed = total - failed.len();
    let rate = passed as f64 / total as f64;
    println!("buildx-bake conformance: {passed}/{total} passed ({:.1} %)", rate * 100.0);
    for f in &failed {
        println!("  FAIL {f}");
    }
    assert!(total > 300, "expected the conformance cases at {}", dir.display());
    assert!(rate >= THRESHOLD, "pass rate {:.1} % fell below {:.1} %", rate * 100.0, THRESHOLD * 100.0);
}
