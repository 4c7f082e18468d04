//! `--call check`: BuildKit's Dockerfile lint rules.
//!
//! Only rules that can be decided from the text are implemented: the
//! base images are never resolved here, so rules that need their config
//! (InvalidBaseImagePlatform) are absent, and UndefinedVar cannot see the
//! base image's environment (it assumes `PATH`, which BuildKit always sets).
//! Rule names, messages and URLs are BuildKit's so that documentation and
//! `# check=skip=` directives written for BuildKit apply unchanged.

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostic::Span;
use crate::instructions::{CommandLine, CopySource, Dockerfile, Instruction};
use crate::lower::{BuiltinArgs, LowerOptions, PROXY_ARGS};
use crate::parser::{self, Node};
use crate::shell::Lexer;

/// One lint finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckWarning {
    /// BuildKit's rule name (`StageNameCasing`).
    pub rule: &'static str,
    /// The message, as BuildKit words it.
    pub message: String,
    /// Where the offending instruction is.
    pub span: Span,
    /// The rule's documentation page.
    pub url: String,
}

/// The result of [`check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Findings in file order, without the rules `# check=skip=` disables.
    pub warnings: Vec<CheckWarning>,
    /// `# check=error=true`: findings fail the build (buildx prints an
    /// error line after them).
    pub error_on_warning: bool,
}

impl CheckReport {
    /// Renders the report like `docker buildx build --call check`.
    pub fn render(&self, file: &str, text: &str) -> String {
        let lines: Vec<&str> = text.trim_start_matches('\u{feff}').lines().collect();
        let mut out = String::new();
        for w in &self.warnings {
            out.push_str(&format!("WARNING: {} - {}\n{}\n", w.rule, w.url, w.message));
            out.push_str(&format!("{file}:{}\n--------------------\n", w.span.start_line));
            let end = w.span.end_line.max(w.span.start_line);
            let width = end.to_string().len();
            for n in w.span.start_line..=end {
                if let Some(line) = n.checked_sub(1).and_then(|i| lines.get(i)) {
                    out.push_str(&format!("  {n:>width$} | {}\n", line.trim_end_matches('\r')));
                }
            }
            out.push_str("--------------------\n");
        }
        match self.warnings.len() {
            0 => out.push_str("Check complete, no warnings found.\n"),
            1 => out.push_str("Check complete, 1 warning has been found!\n"),
            n => out.push_str(&format!("Check complete, {n} warnings have been found!\n")),
        }
        if self.error_on_warning && !self.warnings.is_empty() {
            let rules: BTreeSet<&str> = self.warnings.iter().map(|w| w.rule).collect();
            out.push_str(&format!(
                "ERROR: lint violation found for rules: {}\n",
                rules.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        out
    }

    /// Whether the check found anything (buildx exits 1 then).
    pub fn failed(&self) -> bool {
        !self.warnings.is_empty()
    }
}

/// What the `# check=` directive asks for.
#[derive(Debug, Default, PartialEq, Eq)]
struct CheckDirective {
    skip_all: bool,
    skip: BTreeSet<String>,
    error: bool,
}

/// Parses `skip=Rule1,Rule2;error=true` (BuildKit's `parseLintOptions`).
fn parse_directive(value: Option<&str>) -> CheckDirective {
    let mut out = CheckDirective::default();
    for part in value.unwrap_or_default().split(';') {
        let Some((key, value)) = part.split_once('=') else {
            continue;
        };
        match key.trim() {
            "skip" => {
                for rule in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if rule == "all" {
                        out.skip_all = true;
                    } else {
                        out.skip.insert(rule.to_string());
                    }
                }
            }
            "error" => out.error = value.trim().eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    out
}

/// Runs the lint rules over `df` (parsed from `text`).
pub fn check(df: &Dockerfile, text: &str, opts: &LowerOptions) -> CheckReport {
    let directive = parse_directive(df.check.as_deref());
    let mut lint = Linter { warnings: Vec::new() };
    if !directive.skip_all {
        // The AST keeps what the typed form normalises away: keyword
        // casing, `AS` casing, stage names as written, legacy `K V` pairs.
        if let Ok(ast) = parser::parse(text) {
            syntax_rules(&ast, &mut lint);
        }
        semantic_rules(df, opts, &mut lint);
    }
    let mut warnings: Vec<CheckWarning> =
        lint.warnings.into_iter().filter(|w| !directive.skip.contains(w.rule)).collect();
    warnings.sort_by_key(|w| (w.span.start_line, w.span.column));
    CheckReport { warnings, error_on_warning: directive.error }
}

struct Linter {
    warnings: Vec<CheckWarning>,
}

impl Linter {
    fn warn(&mut self, rule: &'static str, span: Span, message: String) {
        let url = format!("https://docs.docker.com/go/dockerfile/rule/{}/", kebab(rule));
        self.warnings.push(CheckWarning { rule, message, span, url });
    }
}

/// `StageNameCasing` -> `stage-name-casing`, BuildKit's URL scheme.
fn kebab(rule: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = rule.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        // A new word starts at an upper-case letter after a lower-case one
        // or before one (`JSONArgs` -> `json-args`).
        let boundary = i > 0
            && c.is_ascii_uppercase()
            && (chars[i - 1].is_ascii_lowercase() || chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase()));
        if boundary {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn is_lower(s: &str) -> bool {
    s == s.to_lowercase()
}

fn is_upper(s: &str) -> bool {
    s == s.to_uppercase()
}

/// Rules decided from the untyped lines.
fn syntax_rules(ast: &parser::Ast, lint: &mut Linter) {
    for w in &ast.warnings {
        lint.warn("NoEmptyContinuation", w.span, "Empty continuation line".into());
    }
    // Instructions before the first FROM are global ARGs, which BuildKit
    // leaves out of the casing vote.
    let first_from = ast.nodes.iter().position(|n| n.name == "from").unwrap_or(ast.nodes.len());
    let staged: &[Node] = &ast.nodes[first_from..];
    let (mut lower, mut upper) = (0, 0);
    for node in staged {
        if is_lower(&node.keyword) {
            lower += 1;
        } else if is_upper(&node.keyword) {
            upper += 1;
        }
    }
    let majority_lower = lower > upper;
    for node in staged {
        let kw = &node.keyword;
        let casing = if majority_lower && !is_lower(kw) {
            "lowercase"
        } else if !majority_lower && !is_upper(kw) {
            "uppercase"
        } else {
            continue;
        };
        lint.warn(
            "ConsistentInstructionCasing",
            node.span,
            format!("Command '{kw}' should match the case of the command majority ({casing})"),
        );
    }

    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for node in staged.iter().filter(|n| n.name == "from") {
        if node.args.len() == 3 {
            let (as_kw, name) = (&node.args[1], &node.args[2]);
            if !is_lower(name) {
                lint.warn("StageNameCasing", node.span, format!("Stage name '{name}' should be lowercase"));
            }
            // Mixed-case FROM is ConsistentInstructionCasing's business.
            let mismatch =
                (is_upper(&node.keyword) && !is_upper(as_kw)) || (is_lower(&node.keyword) && !is_lower(as_kw));
            if mismatch {
                lint.warn(
                    "FromAsCasing",
                    node.span,
                    format!("'{as_kw}' and '{}' keywords' casing do not match", node.keyword),
                );
            }
            let lower_name = name.to_lowercase();
            if lower_name == "context" || lower_name == "scratch" {
                lint.warn(
                    "ReservedStageName",
                    node.span,
                    format!("Stage name should not use the same name as reserved stage \"{lower_name}\""),
                );
            }
            if names.insert(lower_name.clone(), node.span.start_line).is_some() {
                lint.warn(
                    "DuplicateStageName",
                    node.span,
                    format!("Duplicate stage name \"{lower_name}\", stage names should be unique"),
                );
            }
        }
    }

    for node in &ast.nodes {
        let node = match (&*node.name, &node.sub) {
            ("onbuild", Some(sub)) => sub,
            _ => node,
        };
        if matches!(&*node.name, "env" | "label") && node.args.chunks(3).any(|t| t.get(2).is_some_and(|s| s.is_empty()))
        {
            let name = node.name.to_uppercase();
            lint.warn(
                "LegacyKeyValueFormat",
                node.span,
                format!("\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"),
            );
        }
    }
}

/// BuildKit's secret-name heuristic: a token from the deny list as the
/// whole name or as its first/last `_`-separated word, unless `public` is.
fn is_secret_key(key: &str) -> bool {
    const DENY: [&str; 10] =
        ["apikey", "auth", "credential", "credentials", "key", "password", "pword", "passwd", "secret", "token"];
    let words: Vec<String> = key.split('_').map(str::to_ascii_lowercase).collect();
    // `(?:_|^)TOKEN(?:_|$)` matches a token delimited by `_` or the ends,
    // which is any `_`-separated word.
    let has = |list: &[&str]| words.iter().any(|w| list.contains(&w.as_str()));
    has(&DENY) && !has(&["public"])
}

/// Whether `image` parses as a Docker reference (a relaxed
/// `reference.ParseNormalizedNamed`): non-empty, no whitespace, lower-case
/// repository, a tag and digest that are not empty.
fn valid_reference(image: &str) -> bool {
    if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if digest.is_some_and(|d| !d.contains(':') || d.ends_with(':')) {
        return false;
    }
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[last_slash..].find(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if tag.is_some_and(|t| t.is_empty() || t.len() > 128) {
        return false;
    }
    // The registry host may have upper case and a port; the path may not.
    let path = match repo.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => rest,
        _ => repo,
    };
    !path.is_empty()
        && !path.starts_with('/')
        && !path.ends_with('/')
        && path.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c))
}

/// Per-stage facts later stages inherit when they build `FROM` it.
#[derive(Clone, Default)]
struct StageFacts {
    env: BTreeSet<String>,
    workdir_set: bool,
    shell_set: bool,
}

/// Rules decided from the typed instructions.
fn semantic_rules(df: &Dockerfile, opts: &LowerOptions, lint: &mut Linter) {
    let lexer = Lexer::new(df.escape);
    let builtin = BuiltinArgs::new(&opts.build_platform, &opts.target_platform);

    // Global ARGs: declared names, and values from defaults only (for
    // InvalidDefaultArgInFrom) and with build args (for expansion).
    let mut declared: Vec<(String, Option<String>)> = Vec::new();
    for command in &df.global_args {
        let Instruction::Arg(pairs) = &command.instruction else {
            continue;
        };
        for (name, default) in pairs {
            if is_secret_key(name) {
                lint.warn(
                    "SecretsUsedInArgOrEnv",
                    command.span,
                    format!("Do not use ARG or ENV instructions for sensitive data (ARG \"{name}\")"),
                );
            }
            let lookup = |k: &str| {
                declared.iter().rev().find(|(n, _)| n == k).and_then(|(_, v)| v.clone()).or_else(|| builtin.get(k))
            };
            let value = default.as_ref().map(|d| super::lenient_default(&lexer, d, &lookup));
            declared.push((name.clone(), value));
        }
    }
    let defaults_lookup = |k: &str| -> Option<String> {
        match declared.iter().rev().find(|(n, _)| n == k) {
            Some((_, v)) => Some(v.clone().unwrap_or_default()),
            None => builtin.get(k),
        }
    };
    let global_names: Vec<String> =
        declared.iter().map(|(n, _)| n.clone()).chain(builtin.names().map(str::to_string)).collect();
    let global_names: Vec<&str> = global_names.iter().map(String::as_str).collect();

    let mut facts: Vec<StageFacts> = Vec::new();
    for (index, stage) in df.stages.iter().enumerate() {
        // FROM: undeclared ARGs, defaults that give no valid name, platform flags.
        for word in std::iter::once(&stage.from.image).chain(stage.from.platform.iter()) {
            if let Ok(e) = lexer.expand(word, &defaults_lookup) {
                for name in &e.unmatched {
                    let suggestion = crate::diagnostic::closest(name, &global_names)
                        .map(|s| format!(" (did you mean {s}?)"))
                        .unwrap_or_default();
                    lint.warn(
                        "UndefinedArgInFrom",
                        stage.span,
                        format!("FROM argument '{name}' is not declared{suggestion}"),
                    );
                }
            }
        }
        if stage.from.image.contains('$') {
            let expanded = lexer.expand_word(&stage.from.image, &defaults_lookup).unwrap_or_default();
            if !valid_reference(&expanded) {
                lint.warn(
                    "InvalidDefaultArgInFrom",
                    stage.span,
                    format!("Default value for ARG {} results in empty or invalid base image name", stage.from.image),
                );
            }
        }
        if let Some(platform) = &stage.from.platform {
            let p = platform.trim();
            if p == "$TARGETPLATFORM" || p == "${TARGETPLATFORM}" {
                lint.warn(
                    "RedundantTargetPlatform",
                    stage.span,
                    "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior"
                        .into(),
                );
            } else if !p.contains('$') {
                // A stage named after its architecture (`AS build-arm64`)
                // is a deliberate per-platform stage; BuildKit allows it.
                let arch = rbuild_solver::graph::Platform::parse(p).map(|p| p.architecture);
                let named_for_arch = matches!((&stage.from.name, &arch), (Some(n), Some(a)) if n.contains(a.as_str()));
                if !named_for_arch {
                    lint.warn(
                        "FromPlatformFlagConstDisallowed",
                        stage.span,
                        format!("FROM --platform flag should not use constant value \"{p}\""),
                    );
                }
            }
        }

        // Facts inherited from a parent stage of this Dockerfile.
        let base = lexer.expand_word(&stage.from.image, &defaults_lookup).unwrap_or_default().to_ascii_lowercase();
        let parent = df.stages[..index].iter().rposition(|s| s.from.name.as_deref() == Some(base.as_str()));
        let mut st = parent.map(|p| facts[p].clone()).unwrap_or_default();
        st.env.insert("PATH".into());
        // ARGs declared in the stage (with or without value) are defined.
        let mut args: BTreeSet<String> = BTreeSet::new();
        let mut last_once: BTreeMap<&'static str, Span> = BTreeMap::new();

        for command in &stage.commands {
            let keyword = command.original.split_whitespace().next().unwrap_or_default().to_uppercase();
            let known: Vec<&str> = st.env.iter().chain(args.iter()).map(String::as_str).collect();
            let check_word = |lint: &mut Linter, word: &str| {
                let lookup = |k: &str| (st.env.contains(k) || args.contains(k)).then(String::new);
                if let Ok(e) = lexer.expand(word, &lookup) {
                    for name in e.unmatched {
                        if PROXY_ARGS.contains(&name.as_str()) && opts.build_args.contains_key(&name) {
                            continue;
                        }
                        let suggestion = crate::diagnostic::closest(&name, &known)
                            .map(|s| format!(" (did you mean ${s}?)"))
                            .unwrap_or_default();
                        lint.warn(
                            "UndefinedVar",
                            command.span,
                            format!("Usage of undefined variable '${name}'{suggestion}"),
                        );
                    }
                }
            };
            let mut new_args: Vec<String> = Vec::new();
            let expanded = |word: &str| {
                let lookup = |k: &str| (st.env.contains(k) || args.contains(k)).then(String::new);
                lexer.expand_word(word, &lookup).unwrap_or_else(|_| word.to_string())
            };
            match &command.instruction {
                Instruction::Env(pairs) => {
                    for (k, v) in pairs {
                        check_word(lint, v);
                        if is_secret_key(k) {
                            lint.warn(
                                "SecretsUsedInArgOrEnv",
                                command.span,
                                format!("Do not use ARG or ENV instructions for sensitive data (ENV \"{k}\")"),
                            );
                        }
                    }
                    st.env.extend(pairs.iter().map(|(k, _)| k.clone()));
                }
                Instruction::Arg(pairs) => {
                    for (k, v) in pairs {
                        if let Some(v) = v {
                            check_word(lint, v);
                        }
                        if is_secret_key(k) {
                            lint.warn(
                                "SecretsUsedInArgOrEnv",
                                command.span,
                                format!("Do not use ARG or ENV instructions for sensitive data (ARG \"{k}\")"),
                            );
                        }
                        new_args.push(k.clone());
                    }
                }
                Instruction::Label(pairs) => {
                    for (k, v) in pairs {
                        check_word(lint, k);
                        check_word(lint, v);
                    }
                }
                Instruction::Copy(c) => {
                    let words = c.sources.iter().filter_map(|s| match s {
                        CopySource::Path(p) => Some(p.as_str()),
                        CopySource::Heredoc(_) => None,
                    });
                    for w in words
                        .chain([c.dest.as_str()])
                        .chain(c.from.as_deref())
                        .chain(c.chown.as_deref())
                        .chain(c.chmod.as_deref())
                    {
                        check_word(lint, w);
                    }
                }
                Instruction::Add(a) => {
                    let words = a.sources.iter().filter_map(|s| match s {
                        CopySource::Path(p) => Some(p.as_str()),
                        CopySource::Heredoc(_) => None,
                    });
                    for w in words.chain([a.dest.as_str()]).chain(a.chown.as_deref()).chain(a.chmod.as_deref()) {
                        check_word(lint, w);
                    }
                }
                Instruction::Expose(words) | Instruction::Volume(words) => {
                    for w in words {
                        check_word(lint, w);
                    }
                }
                Instruction::User(w) | Instruction::Stopsignal(w) => check_word(lint, w),
                Instruction::Workdir(path) => {
                    check_word(lint, path);
                    let path = expanded(path);
                    if !st.workdir_set && !path.starts_with('/') {
                        lint.warn(
                            "WorkdirRelativePath",
                            command.span,
                            format!(
                                "Relative workdir \"{path}\" can have unexpected results if the base image changes"
                            ),
                        );
                    }
                    st.workdir_set = true;
                }
                Instruction::Shell(_) => st.shell_set = true,
                Instruction::Maintainer(_) => lint.warn(
                    "MaintainerDeprecated",
                    command.span,
                    "Maintainer instruction is deprecated in favor of using label".into(),
                ),
                // BuildKit skips this once SHELL is set: the shell form is
                // then presumably deliberate.
                Instruction::Cmd(CommandLine::Shell(_)) | Instruction::Entrypoint(CommandLine::Shell(_))
                    if !st.shell_set =>
                {
                    lint.warn(
                            "JSONArgsRecommended",
                            command.span,
                            format!(
                                "JSON arguments recommended for {keyword} to prevent unintended behavior related to OS signals"
                            ),
                        );
                }
                _ => {}
            }
            args.extend(new_args);
            let once = match &command.instruction {
                Instruction::Cmd(_) => Some("CMD"),
                Instruction::Entrypoint(_) => Some("ENTRYPOINT"),
                Instruction::Healthcheck(_) => Some("HEALTHCHECK"),
                _ => None,
            };
            if let Some(name) = once
                && let Some(previous) = last_once.insert(name, command.span)
            {
                // BuildKit flags the earlier instruction: it is the one
                // that has no effect.
                lint.warn(
                    "MultipleInstructionsDisallowed",
                    previous,
                    format!("Multiple {name} instructions should not be used in the same stage because only the last one will be used"),
                );
            }
        }
        facts.push(st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Vec<(&'static str, String, usize)> {
        let df = crate::instructions::parse_dockerfile(text, "Dockerfile").unwrap();
        check(&df, text, &LowerOptions::default())
            .warnings
            .into_iter()
            .map(|w| (w.rule, w.message, w.span.start_line))
            .collect()
    }

    fn has(text: &str, rule: &str) -> Vec<String> {
        rules(text).into_iter().filter(|(r, _, _)| *r == rule).map(|(_, m, l)| format!("{l}: {m}")).collect()
    }

    #[test]
    fn stage_name_casing() {
        assert_eq!(has("FROM busybox AS Build\n", "StageNameCasing"), ["1: Stage name 'Build' should be lowercase"]);
        assert!(has("FROM busybox AS build\n", "StageNameCasing").is_empty());
    }

    #[test]
    fn from_as_casing() {
        assert_eq!(
            has("FROM busybox as build\n", "FromAsCasing"),
            ["1: 'as' and 'FROM' keywords' casing do not match"]
        );
        assert!(has("from busybox as build\n", "FromAsCasing").is_empty());
        assert!(has("FROM busybox AS build\n", "FromAsCasing").is_empty());
    }

    #[test]
    fn consistent_instruction_casing() {
        let text = "FROM busybox\nRUN a\nrun b\nCopy x y\n";
        assert_eq!(
            has(text, "ConsistentInstructionCasing"),
            [
                "3: Command 'run' should match the case of the command majority (uppercase)",
                "4: Command 'Copy' should match the case of the command majority (uppercase)"
            ]
        );
        assert!(has("from busybox\nrun a\n", "ConsistentInstructionCasing").is_empty());
    }

    #[test]
    fn duplicate_and_reserved_stage_names() {
        // The typed parser rejects duplicates, so exercise the AST rule.
        let ast = parser::parse("FROM a AS x\nFROM b AS X\n").unwrap();
        let mut lint = Linter { warnings: Vec::new() };
        syntax_rules(&ast, &mut lint);
        let dup: Vec<_> = lint.warnings.iter().filter(|w| w.rule == "DuplicateStageName").collect();
        assert_eq!(dup.len(), 1);
        assert_eq!(dup[0].message, "Duplicate stage name \"x\", stage names should be unique");
        assert_eq!(dup[0].span.start_line, 2);
        let ast = parser::parse("FROM a AS x\nFROM b AS y\n").unwrap();
        let mut lint = Linter { warnings: Vec::new() };
        syntax_rules(&ast, &mut lint);
        assert!(lint.warnings.is_empty());

        assert_eq!(
            has("FROM busybox AS context\n", "ReservedStageName"),
            ["1: Stage name should not use the same name as reserved stage \"context\""]
        );
        assert!(has("FROM busybox AS ctx\n", "ReservedStageName").is_empty());
    }

    #[test]
    fn json_args_recommended() {
        assert_eq!(
            has("FROM busybox\nCMD echo hi\n", "JSONArgsRecommended"),
            ["2: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals"]
        );
        assert_eq!(has("FROM busybox\nENTRYPOINT run\n", "JSONArgsRecommended").len(), 1);
        assert!(has("FROM busybox\nCMD [\"echo\", \"hi\"]\n", "JSONArgsRecommended").is_empty());
        assert!(has("FROM busybox\nSHELL [\"/bin/bash\", \"-c\"]\nCMD echo hi\n", "JSONArgsRecommended").is_empty());
    }

    #[test]
    fn maintainer_deprecated() {
        assert_eq!(
            has("FROM busybox\nMAINTAINER me\n", "MaintainerDeprecated"),
            ["2: Maintainer instruction is deprecated in favor of using label"]
        );
        assert!(has("FROM busybox\nLABEL maintainer=me\n", "MaintainerDeprecated").is_empty());
    }

    #[test]
    fn undefined_arg_in_from() {
        assert_eq!(
            has("ARG VERSION=1\nFROM busybox:${VERSIN}\n", "UndefinedArgInFrom"),
            ["2: FROM argument 'VERSIN' is not declared (did you mean VERSION?)"]
        );
        assert!(has("ARG VERSION=1\nFROM busybox:${VERSION}\n", "UndefinedArgInFrom").is_empty());
        assert!(has("FROM --platform=$BUILDPLATFORM busybox\n", "UndefinedArgInFrom").is_empty());
    }

    #[test]
    fn invalid_default_arg_in_from() {
        assert_eq!(
            has("ARG TAG\nFROM busybox:${TAG}\n", "InvalidDefaultArgInFrom"),
            ["2: Default value for ARG busybox:${TAG} results in empty or invalid base image name"]
        );
        assert_eq!(has("ARG IMG\nFROM $IMG\n", "InvalidDefaultArgInFrom").len(), 1);
        assert!(has("ARG TAG=1.36\nFROM busybox:${TAG}\n", "InvalidDefaultArgInFrom").is_empty());
        assert!(has("ARG IMG=ghcr.io/o/busybox@sha256:abc\nFROM $IMG\n", "InvalidDefaultArgInFrom").is_empty());
    }

    #[test]
    fn workdir_relative_path() {
        assert_eq!(
            has("FROM busybox\nWORKDIR app\nWORKDIR sub\n", "WorkdirRelativePath"),
            ["2: Relative workdir \"app\" can have unexpected results if the base image changes"]
        );
        assert!(has("FROM busybox\nWORKDIR /app\nWORKDIR sub\n", "WorkdirRelativePath").is_empty());
        // inherited from the parent stage
        assert!(has("FROM busybox AS a\nWORKDIR /app\nFROM a\nWORKDIR sub\n", "WorkdirRelativePath").is_empty());
    }

    #[test]
    fn undefined_var() {
        assert_eq!(
            has("FROM busybox\nENV PORT=80\nEXPOSE $PROT\n", "UndefinedVar"),
            ["3: Usage of undefined variable '$PROT' (did you mean $PORT?)"]
        );
        let ok =
            "ARG G=1\nFROM busybox\nARG V\nENV PATH=$PATH:/x A=$V\nCOPY --chown=$V a /$A/\nRUN echo $NOT_CHECKED\n";
        assert!(has(ok, "UndefinedVar").is_empty(), "{:?}", rules(ok));
        // global ARGs are not visible in a stage unless redeclared
        assert_eq!(has("ARG G=1\nFROM busybox\nWORKDIR /$G\n", "UndefinedVar").len(), 1);
        // ENV is inherited from a parent stage
        assert!(has("FROM busybox AS a\nENV X=1\nFROM a\nUSER $X\n", "UndefinedVar").is_empty());
    }

    #[test]
    fn multiple_instructions_disallowed() {
        assert_eq!(
            has("FROM busybox\nCMD [\"a\"]\nCMD [\"b\"]\n", "MultipleInstructionsDisallowed"),
            [
                "2: Multiple CMD instructions should not be used in the same stage because only the last one will be used"
            ]
        );
        assert!(
            has("FROM busybox\nCMD [\"a\"]\nFROM busybox\nCMD [\"b\"]\n", "MultipleInstructionsDisallowed").is_empty()
        );
    }

    #[test]
    fn legacy_key_value_format() {
        assert_eq!(
            has("FROM busybox\nENV A 1\n", "LegacyKeyValueFormat"),
            ["2: \"ENV key=value\" should be used instead of legacy \"ENV key value\" format"]
        );
        assert!(has("FROM busybox\nENV A=1\nLABEL a=b\n", "LegacyKeyValueFormat").is_empty());
    }

    #[test]
    fn redundant_target_platform() {
        assert_eq!(
            has("FROM --platform=$TARGETPLATFORM busybox\n", "RedundantTargetPlatform"),
            ["1: Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior"]
        );
        assert!(has("FROM --platform=$BUILDPLATFORM busybox\n", "RedundantTargetPlatform").is_empty());
    }

    #[test]
    fn secrets_used_in_arg_or_env() {
        assert_eq!(
            has("ARG GITHUB_TOKEN\nFROM busybox\nENV DB_PASSWORD=x\n", "SecretsUsedInArgOrEnv"),
            [
                "1: Do not use ARG or ENV instructions for sensitive data (ARG \"GITHUB_TOKEN\")",
                "3: Do not use ARG or ENV instructions for sensitive data (ENV \"DB_PASSWORD\")"
            ]
        );
        assert!(has("FROM busybox\nARG PUBLIC_KEY\nENV TOKENIZER=1 KEYBOARD=us\n", "SecretsUsedInArgOrEnv").is_empty());
    }

    #[test]
    fn from_platform_flag_const_disallowed() {
        assert_eq!(
            has("FROM --platform=linux/amd64 busybox\n", "FromPlatformFlagConstDisallowed"),
            ["1: FROM --platform flag should not use constant value \"linux/amd64\""]
        );
        assert!(has("FROM --platform=$BUILDPLATFORM busybox\n", "FromPlatformFlagConstDisallowed").is_empty());
        assert!(
            has("FROM --platform=linux/arm64 busybox AS build-arm64\n", "FromPlatformFlagConstDisallowed").is_empty()
        );
    }

    #[test]
    fn no_empty_continuation() {
        assert_eq!(has("FROM busybox\nRUN echo a \\\n\n  b\n", "NoEmptyContinuation"), ["2: Empty continuation line"]);
        assert!(has("FROM busybox\nRUN echo a \\\n  b\n", "NoEmptyContinuation").is_empty());
    }

    #[test]
    fn directive_skips_and_errors() {
        let text = "# check=skip=StageNameCasing;error=true\nFROM busybox AS Build\nMAINTAINER me\n";
        let df = crate::instructions::parse_dockerfile(text, "Dockerfile").unwrap();
        let report = check(&df, text, &LowerOptions::default());
        assert_eq!(report.warnings.len(), 1);
        assert_eq!(report.warnings[0].rule, "MaintainerDeprecated");
        assert!(report.error_on_warning && report.failed());
        let text = "# check=skip=all\nFROM busybox AS Build\nMAINTAINER me\n";
        let df = crate::instructions::parse_dockerfile(text, "Dockerfile").unwrap();
        let report = check(&df, text, &LowerOptions::default());
        assert!(!report.failed());
        assert_eq!(report.render("Dockerfile", text), "Check complete, no warnings found.\n");
    }

    #[test]
    fn render_matches_buildx_layout() {
        let text = "FROM busybox\nMAINTAINER me\n";
        let df = crate::instructions::parse_dockerfile(text, "Dockerfile").unwrap();
        let report = check(&df, text, &LowerOptions::default());
        assert_eq!(
            report.render("Dockerfile", text),
            "WARNING: MaintainerDeprecated - https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/\n\
             Maintainer instruction is deprecated in favor of using label\n\
             Dockerfile:2\n\
             --------------------\n\
             \x20 2 | MAINTAINER me\n\
             --------------------\n\
             Check complete, 1 warning has been found!\n"
        );
    }

    #[test]
    fn rule_urls_are_kebab_case() {
        assert_eq!(kebab("JSONArgsRecommended"), "json-args-recommended");
        assert_eq!(kebab("FromPlatformFlagConstDisallowed"), "from-platform-flag-const-disallowed");
    }
}
