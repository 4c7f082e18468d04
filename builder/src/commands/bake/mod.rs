//! `rbuild bake`: read the bake files, resolve the requested targets, then
//! print, list, or build them ([`run`]).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use rbuild::bake::print::{Json, print_json};
use rbuild::bake::{self, BakeError, BakeFile, DEFAULT_FILES, ParseOptions};
use rbuild_solver::sandbox::IdMapping;

use crate::cli::BakeArgs;

mod run;

/// Reads `-f` files (or the default names that exist).
fn read_files(args: &BakeArgs) -> Result<Vec<BakeFile>, BakeError> {
    let mut out = Vec::new();
    if args.files.is_empty() {
        for name in DEFAULT_FILES {
            match std::fs::read(name) {
                Ok(data) => out.push(BakeFile { name: name.to_string(), data }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(BakeError::Read { path: name.to_string(), source }),
            }
        }
        if out.is_empty() {
            return Err(BakeError::NoFile(DEFAULT_FILES.join(", ")));
        }
        return Ok(out);
    }
    for name in &args.files {
        let data = if name == "-" {
            let mut d = Vec::new();
            std::io::stdin().read_to_end(&mut d).map_err(|source| BakeError::Read { path: "-".into(), source })?;
            d
        } else {
            std::fs::read(name).map_err(|source| BakeError::Read { path: name.clone(), source })?
        };
        out.push(BakeFile { name: name.clone(), data });
    }
    Ok(out)
}

/// The host platform as `os/arch[/variant]`.
fn local_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm/v7",
        other => other,
    };
    format!("linux/{arch}")
}

/// Parse options for the CLI: the process environment, buildx's built-in
/// variables, `BUILDX_BAKE_FILE_RELATIVE_PATHS`,
/// `BUILDX_BAKE_DISABLE_VARS_ENV_LOOKUP`.
fn parse_options() -> ParseOptions {
    let mut env: BTreeMap<String, String> = std::env::vars().collect();
    let file_relative_paths =
        env.get("BUILDX_BAKE_FILE_RELATIVE_PATHS").is_some_and(|v| matches!(v.as_str(), "1" | "true"));
    // buildx's switch to stop variables (and `--set x.args.NAME`) reading
    // the environment.
    if env.get("BUILDX_BAKE_DISABLE_VARS_ENV_LOOKUP").is_some_and(|v| matches!(v.as_str(), "1" | "true")) {
        env.clear();
    }
    let defaults = BTreeMap::from([
        ("BAKE_CMD_CONTEXT".to_string(), "cwd://".to_string()),
        ("BAKE_LOCAL_PLATFORM".to_string(), local_platform()),
    ]);
    ParseOptions { env, defaults, file_relative_paths, vars: BTreeMap::new() }
}

pub fn run(args: BakeArgs, root: PathBuf, mapping: IdMapping) -> Result<i32> {
    let files = read_files(&args)?;
    let mut opts = parse_options();
    for v in &args.vars {
        let (k, val) = v.split_once('=').with_context(|| format!("invalid `--var {v}`: expected NAME=VALUE"))?;
        opts.vars.insert(k.to_string(), val.to_string());
    }
    let config = bake::parse_files(&files, &opts)?;

    if let Some(what) = &args.list {
        return list(&config, what);
    }

    let requested = if args.targets.is_empty() { vec!["default".to_string()] } else { args.targets.clone() };
    let mut sets = args.set.clone();
    for (flag, key) in [(args.push, "push"), (args.load, "load"), (args.no_cache, "no-cache"), (args.pull, "pull")] {
        if flag {
            sets.push(format!("*.{key}=true"));
        }
    }
    let call = if args.check { Some("check") } else { args.call.as_deref() };
    if let Some(call) = call {
        sets.push(format!("*.call={call}"));
    }
    for (kind, value) in [("sbom", &args.sbom), ("provenance", &args.provenance)] {
        if let Some(v) = value {
            sets.push(format!("*.attest={}", canonical_attest(kind, v)));
        }
    }
    let mut resolved = bake::read_targets(&config, &requested, &sets, &opts.env)?;
    // As buildx: `SOURCE_DATE_EPOCH` from the environment becomes a build
    // arg of every target that does not set it.
    if let Some(epoch) = opts.env.get("SOURCE_DATE_EPOCH").filter(|v| !v.is_empty()) {
        for t in resolved.targets.values_mut() {
            let args = t.args.get_or_insert_with(BTreeMap::new);
            args.entry("SOURCE_DATE_EPOCH".into()).or_insert_with(|| Some(epoch.clone()));
        }
    }

    if args.print {
        write_stdout(&(print_json(&resolved).pretty() + "\n"))?;
        return Ok(0);
    }
    run::build_all(&resolved, &args, root, mapping)
}

/// buildx `CanonicalizeAttest`: `--sbom=true` is `type=sbom,disabled=false`,
/// anything else is attributes after `type=sbom,`.
fn canonical_attest(kind: &str, v: &str) -> String {
    match bake::entries::parse_go_bool(v) {
        Some(b) => format!("type={kind},disabled={}", !b),
        None => format!("type={kind},{v}"),
    }
}

/// `--list targets|variables`, or buildx's long form
/// `--list type=targets|variables[,format=table|json]`.
fn list(config: &bake::Config, what: &str) -> Result<i32> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut kind = "";
    let mut format = "table";
    for part in what.split(',') {
        match part.split_once('=') {
            Some(("type", v)) => kind = v,
            Some(("format", v)) => format = v,
            None => kind = part,
            Some(_) => bail!("invalid `--list {what}`: use `targets`, `variables` or `type=...,format=json`"),
        }
    }
    let text = |s: &str| Json::Str(s.to_string());
    match (kind, format) {
        ("targets", "table") => {
            let _ = writeln!(out, "{:<24} DESCRIPTION", "TARGET");
            for g in &config.groups {
                let d = if g.description.is_empty() { g.targets.join(", ") } else { g.description.clone() };
                let _ = writeln!(out, "{:<24} {d}", g.name);
            }
            for t in &config.targets {
                let _ = writeln!(out, "{:<24} {}", t.name, t.description);
            }
        }
        ("targets", "json") => {
            let mut rows = Vec::new();
            for g in &config.groups {
                rows.push(Json::Obj(vec![
                    ("name".into(), text(&g.name)),
                    ("description".into(), text(&g.description)),
                    ("group".into(), Json::Bool(true)),
                    ("targets".into(), Json::Arr(g.targets.iter().map(|t| text(t)).collect())),
                ]));
            }
            for t in &config.targets {
                rows.push(Json::Obj(vec![
                    ("name".into(), text(&t.name)),
                    ("description".into(), text(&t.description)),
                ]));
            }
            let _ = writeln!(out, "{}", Json::Arr(rows).pretty());
        }
        ("variables", "table") => {
            let _ = writeln!(out, "{:<24} {:<12} {:<24} DESCRIPTION", "VARIABLE", "TYPE", "VALUE");
            for v in &config.variables {
                let _ = writeln!(
                    out,
                    "{:<24} {:<12} {:<24} {}",
                    v.name,
                    v.type_name.as_deref().unwrap_or(""),
                    v.value.as_deref().unwrap_or("<null>"),
                    v.description
                );
            }
        }
        ("variables", "json") => {
            let rows = config
                .variables
                .iter()
                .map(|v| {
                    let mut o = vec![("name".to_string(), text(&v.name))];
                    if !v.description.is_empty() {
                        o.push(("description".into(), text(&v.description)));
                    }
                    if let Some(t) = &v.type_name {
                        o.push(("type".into(), text(t)));
                    }
                    if let Some(val) = &v.value {
                        o.push(("value".into(), text(val)));
                    }
                    Json::Obj(o)
                })
                .collect();
            let _ = writeln!(out, "{}", Json::Arr(rows).pretty());
        }
        _ => bail!("invalid `--list {what}`: use `targets`, `variables` or `type=targets|variables,format=table|json`"),
    }
    write_stdout(&out)?;
    Ok(0)
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
