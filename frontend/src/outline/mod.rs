//! `--call targets|outline|check`: what a Dockerfile offers, printed the
//! way buildx prints BuildKit's subrequest results.
//!
//! [`targets`] lists the stages, [`outline`] lists the build args, secrets
//! and SSH sockets the chosen target (and the stages it depends on) uses,
//! and [`check`] runs BuildKit's lint rules that can be decided without
//! resolving base images. All of it works on the typed [`Dockerfile`]
//! without lowering, so no image is ever pulled for these calls.

mod check;

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostic::{Diagnostic, Span};
use crate::instructions::{Dockerfile, Instruction, MountType};
use crate::lower::{BuiltinArgs, LowerOptions};
use crate::shell::Lexer;

pub use check::{CheckReport, CheckWarning, check};

/// The `--call targets` table: one row per named stage, the default target
/// (the last stage) marked `(default)`.
///
/// BuildKit takes descriptions from `# name description` comments above the
/// FROM line; the parser drops comments, so the column stays empty.
pub fn targets(df: &Dockerfile) -> String {
    let last = df.stages.len().saturating_sub(1);
    let mut rows = vec![vec!["TARGET".to_string(), "DESCRIPTION".to_string()]];
    for (i, stage) in df.stages.iter().enumerate() {
        let name = match (&stage.from.name, i == last) {
            (Some(n), true) => format!("{n} (default)"),
            (Some(n), false) => n.clone(),
            (None, true) => "(default)".to_string(),
            (None, false) => continue,
        };
        rows.push(vec![name, String::new()]);
    }
    tabulate(&rows, 1)
}

/// One build arg of the outline.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OutlineArg {
    name: String,
    value: String,
}

/// The `--call outline` text for `opts.target` (the last stage when unset):
/// the target's name, the build args it and the stages it depends on use
/// (global ARGs referenced by their FROM lines, ARGs declared in them),
/// with `--build-arg` values taking precedence over defaults, then the
/// secrets and SSH ids their `RUN --mount`s require.
pub fn outline(df: &Dockerfile, opts: &LowerOptions) -> Result<String, Diagnostic> {
    if df.stages.is_empty() {
        return Err(Diagnostic::new(Span::at(1, 1), "the Dockerfile has no `FROM` instruction")
            .suggest("start the Dockerfile with `FROM <image>` or `FROM scratch`"));
    }
    let target = target_index(df, opts.target.as_deref())?;
    let lexer = Lexer::new(df.escape);
    let builtin = BuiltinArgs::new(&opts.build_platform, &opts.target_platform);
    let globals = global_values(df, opts, &lexer, &builtin);
    let global_lookup = |k: &str| -> Option<String> {
        match globals.iter().rev().find(|(n, _)| n == k) {
            Some((_, v)) => Some(v.clone().unwrap_or_default()),
            None => builtin.get(k),
        }
    };
    let reachable = reachable_stages(df, target, &lexer, &global_lookup);

    // Global ARGs count when a reachable FROM line references them.
    let mut used_globals = BTreeSet::new();
    for &i in &reachable {
        let from = &df.stages[i].from;
        for word in std::iter::once(&from.image).chain(from.platform.iter()) {
            if let Ok(e) = lexer.expand(word, &global_lookup) {
                used_globals.extend(e.matched.into_iter().chain(e.unmatched));
            }
        }
    }
    let mut args: Vec<OutlineArg> = Vec::new();
    let push = |args: &mut Vec<OutlineArg>, name: &str, value: String| {
        if !args.iter().any(|a| a.name == name) {
            args.push(OutlineArg { name: name.to_string(), value });
        }
    };
    for (name, value) in &globals {
        if used_globals.contains(name) {
            push(&mut args, name, value.clone().unwrap_or_default());
        }
    }
    let mut secrets: BTreeMap<String, bool> = BTreeMap::new();
    let mut ssh: BTreeMap<String, bool> = BTreeMap::new();
    for &i in &reachable {
        // ARG values in a stage: --build-arg, else the default expanded with
        // what is declared so far, else the global ARG of the same name.
        let mut scope: Vec<(String, String)> = Vec::new();
        for command in &df.stages[i].commands {
            match &command.instruction {
                Instruction::Arg(pairs) => {
                    for (name, default) in pairs {
                        let value = if let Some(v) = opts.build_args.get(name) {
                            v.clone()
                        } else if let Some(d) = default {
                            let lookup = |k: &str| scope.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                            lenient_default(&lexer, d, &lookup)
                        } else {
                            global_lookup(name).unwrap_or_default()
                        };
                        push(&mut args, name, value.clone());
                        scope.push((name.clone(), value));
                    }
                }
                Instruction::Run(run) => {
                    for mount in &run.mounts {
                        match mount.kind {
                            MountType::Secret => {
                                let id = mount.id.clone().or_else(|| {
                                    mount.target.as_deref().and_then(|t| t.rsplit('/').next()).map(str::to_string)
                                });
                                if let Some(id) = id.filter(|s| !s.is_empty()) {
                                    *secrets.entry(id).or_default() |= mount.required;
                                }
                            }
                            MountType::Ssh => {
                                let id = mount.id.clone().unwrap_or_else(|| "default".to_string());
                                *ssh.entry(id).or_default() |= mount.required;
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }

    let mut out = String::new();
    let name = df.stages[target].from.name.clone().unwrap_or_else(|| "(default)".to_string());
    out.push_str(&tabulate(&[vec!["TARGET:".into(), name]], 1));
    out.push('\n');
    if !args.is_empty() {
        let mut rows = vec![vec!["BUILD ARG".to_string(), "VALUE".into(), "DESCRIPTION".into()]];
        rows.extend(args.into_iter().map(|a| vec![a.name, a.value, String::new()]));
        out.push_str(&tabulate(&rows, 3));
        out.push('\n');
    }
    for (title, map) in [("SECRET", &secrets), ("SSH", &ssh)] {
        if map.is_empty() {
            continue;
        }
        let mut rows = vec![vec![title.to_string(), "REQUIRED".into()]];
        rows.extend(map.iter().map(|(id, req)| vec![id.clone(), if *req { "true".into() } else { String::new() }]));
        out.push_str(&tabulate(&rows, 3));
        out.push('\n');
    }
    Ok(out)
}

/// Index of the `--target` stage (or the last one), with a suggestion when
/// the name is a typo, like lowering reports it.
fn target_index(df: &Dockerfile, target: Option<&str>) -> Result<usize, Diagnostic> {
    let Some(t) = target else {
        return Ok(df.stages.len() - 1);
    };
    let lower = t.to_ascii_lowercase();
    df.stages.iter().position(|s| s.from.name.as_deref() == Some(lower.as_str())).ok_or_else(|| {
        let names: Vec<&str> = df.stages.iter().filter_map(|s| s.from.name.as_deref()).collect();
        let mut d = Diagnostic::new(Span::at(1, 1), format!("target stage `{t}` could not be found"));
        d.suggestion = crate::diagnostic::closest(t, &names)
            .map(|c| format!("did you mean `{c}`?"))
            .or_else(|| (!names.is_empty()).then(|| format!("stages: {}", names.join(", "))));
        d
    })
}

/// Global ARG values in declaration order: `--build-arg`, else the default
/// expanded with the globals before it and the builtin platform ARGs.
/// An ARG default for outline and lint purposes, where a word that fails to
/// expand shows as written. Past a resource limit it is empty instead: the
/// raw text would be expanded again by the next `ARG a=${a}${a}` and grow
/// to the limit once more, making a long chain of such ARGs quadratic.
pub(crate) fn lenient_default(lexer: &Lexer, word: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    match lexer.expand_word(word, env) {
        Ok(v) => v,
        Err(e) if e.is_limit() => String::new(),
        Err(_) => word.to_string(),
    }
}

fn global_values(
    df: &Dockerfile,
    opts: &LowerOptions,
    lexer: &Lexer,
    builtin: &BuiltinArgs,
) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for command in &df.global_args {
        let Instruction::Arg(pairs) = &command.instruction else {
            continue;
        };
        for (name, default) in pairs {
            let value = if let Some(v) = opts.build_args.get(name) {
                Some(v.clone())
            } else if let Some(d) = default {
                let lookup = |k: &str| {
                    out.iter().rev().find(|(n, _)| n == k).and_then(|(_, v)| v.clone()).or_else(|| builtin.get(k))
                };
                Some(lenient_default(lexer, d, &lookup))
            } else {
                None
            };
            out.push((name.clone(), value));
        }
    }
    out
}

/// The stage named (or numbered) `name`.
fn stage_by_name(df: &Dockerfile, name: &str) -> Option<usize> {
    let lower = name.to_ascii_lowercase();
    df.stages
        .iter()
        .position(|s| s.from.name.as_deref() == Some(lower.as_str()))
        .or_else(|| name.parse::<usize>().ok().filter(|i| *i < df.stages.len()))
}

/// Stages the target depends on, the target included, in file order:
/// `FROM <stage>`, `COPY --from=<stage|index>`, `RUN --mount from=<stage>`.
fn reachable_stages(
    df: &Dockerfile,
    target: usize,
    lexer: &Lexer,
    global_lookup: &dyn Fn(&str) -> Option<String>,
) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![target];
    while let Some(i) = stack.pop() {
        if !seen.insert(i) {
            continue;
        }
        let stage = &df.stages[i];
        let mut refs = vec![lexer.expand_word(&stage.from.image, global_lookup).unwrap_or_default()];
        for command in &stage.commands {
            match &command.instruction {
                Instruction::Copy(c) => refs.extend(c.from.clone()),
                Instruction::Run(r) => refs.extend(r.mounts.iter().filter_map(|m| m.from.clone())),
                _ => {}
            }
        }
        for r in refs {
            let r = lexer.expand_word(&r, global_lookup).unwrap_or(r);
            // A stage can only refer to stages before it.
            if let Some(j) = stage_by_name(df, &r).filter(|&j| j < i) {
                stack.push(j);
            }
        }
    }
    seen.into_iter().collect()
}

/// Aligns cells like Go's `tabwriter` with `minwidth 0, padchar ' '`: every
/// cell but a row's last is padded to its column's widest cell plus
/// `padding`; the last cell is written as is.
fn tabulate(rows: &[Vec<String>], padding: usize) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] + padding - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instructions::parse_dockerfile;

    fn df(text: &str) -> Dockerfile {
        parse_dockerfile(text, "Dockerfile").unwrap()
    }

    #[test]
    fn targets_lists_named_stages_and_marks_default() {
        let text = "FROM busybox AS base\nFROM base AS build\nRUN x\nFROM busybox\nFROM scratch AS final\n";
        assert_eq!(
            targets(&df(text)),
            "TARGET          DESCRIPTION\nbase            \nbuild           \nfinal (default) \n"
        );
        let text = "FROM busybox AS base\nFROM base\n";
        assert_eq!(targets(&df(text)), "TARGET    DESCRIPTION\nbase      \n(default) \n");
    }

    #[test]
    fn outline_lists_args_of_reachable_stages_only() {
        let text = "ARG BASE=busybox\nARG UNUSED=1\nFROM ${BASE} AS deps\nARG DEPS_V=2\nFROM busybox AS other\nARG OTHER=3\n\
                    FROM scratch AS final\nARG FINAL\nCOPY --from=deps /a /a\n";
        let got = outline(&df(text), &LowerOptions::default()).unwrap();
        assert_eq!(
            got,
            "TARGET: final\n\nBUILD ARG   VALUE     DESCRIPTION\nBASE        busybox   \nDEPS_V      2         \nFINAL                 \n\n"
        );
        let opts = LowerOptions {
            target: Some("other".into()),
            build_args: [("OTHER".to_string(), "9".to_string())].into(),
            ..Default::default()
        };
        let got = outline(&df(text), &opts).unwrap();
        assert!(got.starts_with("TARGET: other\n"), "{got}");
        assert!(got.contains("OTHER       9"), "{got}");
        assert!(!got.contains("BASE") && !got.contains("DEPS_V"), "{got}");
    }

    #[test]
    fn outline_lists_secrets_and_ssh_from_mounts() {
        let text = "FROM busybox AS a\nRUN --mount=type=secret,id=npm,required=true x\n\
                    FROM busybox\nRUN --mount=type=bind,from=a,target=/a --mount=type=secret,id=aws --mount=type=ssh y\n";
        let got = outline(&df(text), &LowerOptions::default()).unwrap();
        assert!(got.contains("SECRET   REQUIRED\naws      \nnpm      true\n"), "{got}");
        assert!(got.contains("SSH       REQUIRED\ndefault   \n"), "{got}");
        assert!(!got.contains("BUILD ARG"), "{got}");
    }

    #[test]
    fn outline_unknown_target_suggests() {
        let opts = LowerOptions { target: Some("biuld".into()), ..Default::default() };
        let err = outline(&df("FROM busybox AS build\n"), &opts).unwrap_err();
        assert_eq!(err.suggestion.as_deref(), Some("did you mean `build`?"));
    }

    #[test]
    fn tabulate_pads_all_but_last_cell() {
        assert_eq!(tabulate(&[vec!["a".into(), "b".into()], vec!["ccc".into(), "d".into()]], 3), "a     b\nccc   d\n");
    }

    #[test]
    fn lenient_defaults_stop_growing_at_the_limit() {
        let lexer = Lexer::default();
        let big = "x".repeat(3 << 20);
        let env = |k: &str| (k == "a").then(|| big.clone());
        // Past the limit the value is empty, so `ARG a=${a}${a}` chains stop
        // re-growing to the limit (outline of 400 such ARGs took 9 s).
        assert_eq!(lenient_default(&lexer, "${a}${a}", &env), "");
        assert_eq!(lenient_default(&lexer, "${a", &env), "${a");
        assert_eq!(lenient_default(&lexer, "v-${b:-1}", &env), "v-1");
    }
}
