//! Typed instructions: one struct per Dockerfile instruction, flags
//! validated, after BuildKit's `instructions/parse.go`.
//!
//! [`parse_dockerfile`] runs [`crate::parser`] and turns every node into an
//! [`Instruction`]: unknown instructions, unknown or repeated flags,
//! malformed flag values and wrong argument counts are [`Diagnostic`]s
//! naming the line and column. Values stay unexpanded; ENV, LABEL and ARG
//! values keep their quotes exactly as written, because removing them is
//! part of word expansion, which lowering does with the scope it knows.

mod mount;
mod types;
mod values;

use std::collections::BTreeMap;

pub use mount::{parse_mount, set_numeric_option};
pub use types::*;
pub use values::{parse_go_duration, parse_ram_in_bytes};

use crate::diagnostic::{Diagnostic, Span, closest};
use crate::parser::{self, Node};

/// Every instruction name, upper-case, for suggestions.
const INSTRUCTIONS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Parses a Dockerfile into global ARGs and stages. `file` names the
/// Dockerfile in diagnostics, which also carry the offending line.
pub fn parse_dockerfile(text: &str, file: &str) -> Result<Dockerfile, Diagnostic> {
    let ast = parser::parse(text).map_err(|d| d.with_source(file, text))?;
    from_ast(&ast, text).map_err(|d| d.with_source(file, text))
}

/// Turns a parsed file into stages. `text` is the source the AST came
/// from, used to point diagnostics at the offending flag.
pub fn from_ast(ast: &parser::Ast, text: &str) -> Result<Dockerfile, Diagnostic> {
    let ctx = Ctx::new(text);
    let mut out = Dockerfile {
        escape: ast.escape,
        syntax: ast.directive("syntax").map(str::to_string),
        check: ast.directive("check").map(str::to_string),
        ..Dockerfile::default()
    };
    let mut names: BTreeMap<String, Span> = BTreeMap::new();
    for node in &ast.nodes {
        if node.name == "from" {
            let from = ctx.from(node)?;
            if let Some(name) = &from.name
                && let Some(first) = names.insert(name.clone(), node.span)
            {
                return Err(Diagnostic::new(
                    ctx.locate(node, name),
                    format!("duplicate stage name `{name}` (first defined on line {})", first.start_line),
                ));
            }
            out.stages.push(Stage { from, span: node.span, commands: Vec::new() });
            continue;
        }
        let instruction = ctx.instruction(node)?;
        let command = Command { instruction, span: node.span, original: node.original.clone() };
        match out.stages.last_mut() {
            Some(stage) => stage.commands.push(command),
            None if matches!(command.instruction, Instruction::Arg(_)) => out.global_args.push(command),
            None => {
                return Err(Diagnostic::new(
                    node.span,
                    format!("`{}` before the first `FROM`: only `ARG` may come before it", node.keyword.to_uppercase()),
                )
                .suggest("start the build stage with `FROM <image>`"));
            }
        }
    }
    Ok(out)
}

/// Parses one node (not FROM) into an [`Instruction`]. `text` is the
/// Dockerfile source, for columns in diagnostics.
pub fn parse_instruction(node: &Node, text: &str) -> Result<Instruction, Diagnostic> {
    Ctx::new(text).instruction(node)
}

/// Kinds of flag values (BuildKit's `BFlags`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    /// `--x` or `--x=true|false`.
    Bool,
    /// `--x=value`, once.
    String,
    /// `--x=value`, repeatable.
    Strings,
}

/// Flag values after validation, by flag name.
#[derive(Default)]
struct Flags {
    values: BTreeMap<&'static str, Vec<String>>,
}

impl Flags {
    fn string(&mut self, name: &str) -> Option<String> {
        self.values.remove(name).and_then(|mut v| v.pop())
    }
    fn bool(&self, name: &str) -> bool {
        self.values.get(name).is_some_and(|v| v.last().is_some_and(|s| s == "true"))
    }
    fn list(&mut self, name: &str) -> Vec<String> {
        self.values.remove(name).unwrap_or_default()
    }
}

/// Source lines for locating flags and words in diagnostics.
struct Ctx<'a> {
    lines: Vec<&'a str>,
}

impl<'a> Ctx<'a> {
    fn new(text: &'a str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Ctx { lines: text.lines().collect() }
    }

    /// The position of `needle` within the node's lines, else the node's.
    fn locate(&self, node: &Node, needle: &str) -> Span {
        if !needle.is_empty() {
            for line_no in node.span.start_line..=node.span.end_line {
                let Some(line) = self.lines.get(line_no.wrapping_sub(1)) else { continue };
                if let Some(byte) = line.find(needle) {
                    return Span {
                        start_line: line_no,
                        end_line: node.span.end_line.max(line_no),
                        column: line[..byte].chars().count() + 1,
                    };
                }
            }
        }
        node.span
    }

    fn err(&self, node: &Node, needle: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(self.locate(node, needle), message)
    }

    /// Validates the node's flags against `defs` (BuildKit's `BFlags.Parse`).
    fn flags(&self, node: &Node, defs: &[(&'static str, FlagKind)]) -> Result<Flags, Diagnostic> {
        let mut flags = Flags::default();
        let command = node.keyword.to_uppercase();
        for arg in &node.flags {
            let Some(body) = arg.strip_prefix("--") else {
                return Err(self.err(node, arg, format!("flag `{arg}` must start with `--`")));
            };
            if body.is_empty() {
                break;
            }
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(key, kind)) = defs.iter().find(|(n, _)| *n == name) else {
                let mut d = self.err(node, arg, format!("unknown flag `--{name}` for `{command}`"));
                let names: Vec<&str> = defs.iter().map(|(n, _)| *n).collect();
                if let Some(s) = closest(name, &names) {
                    d = d.suggest(format!("did you mean `--{s}`?"));
                } else if defs.is_empty() {
                    d = d.suggest(format!("`{command}` takes no flags"));
                }
                return Err(d);
            };
            if kind != FlagKind::Strings && flags.values.contains_key(key) {
                return Err(self.err(node, arg, format!("duplicate flag `--{name}`")));
            }
            let value = match (kind, value) {
                (FlagKind::Bool, None) => "true".to_string(),
                (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" => "true".to_string(),
                    "false" => "false".to_string(),
                    "" => return Err(self.err(node, arg, format!("missing a value on flag `--{name}`"))),
                    _ => {
                        return Err(self.err(
                            node,
                            arg,
                            format!("expecting boolean value for flag `--{name}`, not `{v}`"),
                        ));
                    }
                },
                (_, None) => return Err(self.err(node, arg, format!("missing a value on flag `--{name}`"))),
                (_, Some(v)) => v.to_string(),
            };
            flags.values.entry(key).or_default().push(value);
        }
        Ok(flags)
    }

    fn unknown(&self, node: &Node) -> Diagnostic {
        let word = &node.keyword;
        let d = Diagnostic::new(node.span, format!("unknown instruction `{word}`"));
        match closest(word, &INSTRUCTIONS) {
            Some(s) => d.suggest(format!("did you mean `{s}`?")),
            None => d,
        }
    }

    fn from(&self, node: &Node) -> Result<From, Diagnostic> {
        let mut flags = self.flags(node, &[("platform", FlagKind::String)])?;
        let args = &node.args;
        let name = match args.len() {
            1 => None,
            3 if args[1].eq_ignore_ascii_case("as") => {
                let name = args[2].to_lowercase();
                if !valid_stage_name(&name) {
                    return Err(self.err(
                        node,
                        &args[2],
                        format!(
                            "invalid name for build stage: `{}`, name can't start with a number or contain symbols",
                            args[2]
                        ),
                    ));
                }
                Some(name)
            }
            _ => return Err(self.err(node, "", "FROM requires either one or three arguments: `FROM image [AS name]`")),
        };
        Ok(From { image: args[0].clone(), name, platform: flags.string("platform") })
    }

    fn no_flags(&self, node: &Node) -> Result<(), Diagnostic> {
        self.flags(node, &[]).map(|_| ())
    }

    fn instruction(&self, node: &Node) -> Result<Instruction, Diagnostic> {
        let upper = node.keyword.to_uppercase();
        let args = &node.args;
        let exactly_one = |what: &str| -> Result<String, Diagnostic> {
            match args.as_slice() {
                [one] => Ok(one.clone()),
                _ => Err(self.err(node, "", format!("{upper} requires exactly one argument{what}"))),
            }
        };
        let at_least_one = || -> Result<(), Diagnostic> {
            if args.is_empty() {
                return Err(self.err(node, "", format!("{upper} requires at least one argument")));
            }
            Ok(())
        };
        Ok(match node.name.as_str() {
            "from" => {
                return Err(self.err(node, "", "FROM is only allowed at the start of a build stage"));
            }
            "run" => self.run(node)?,
            "cmd" => {
                self.no_flags(node)?;
                Instruction::Cmd(command_line(node, args))
            }
            "entrypoint" => {
                self.no_flags(node)?;
                Instruction::Entrypoint(command_line(node, args))
            }
            "label" => {
                self.no_flags(node)?;
                Instruction::Label(self.pairs(node, "LABEL")?)
            }
            "env" => {
                self.no_flags(node)?;
                Instruction::Env(self.pairs(node, "ENV")?)
            }
            "expose" => {
                self.no_flags(node)?;
                at_least_one()?;
                Instruction::Expose(args.clone())
            }
            "add" => self.add(node)?,
            "copy" => self.copy(node)?,
            "volume" => {
                self.no_flags(node)?;
                at_least_one()?;
                let mut volumes = Vec::with_capacity(args.len());
                for v in args {
                    let v = v.trim();
                    if v.is_empty() {
                        return Err(self.err(node, "", "VOLUME specified can not be an empty string"));
                    }
                    volumes.push(v.to_string());
                }
                Instruction::Volume(volumes)
            }
            "user" => {
                self.no_flags(node)?;
                Instruction::User(exactly_one("")?)
            }
            "workdir" => {
                self.no_flags(node)?;
                Instruction::Workdir(exactly_one("")?)
            }
            "arg" => {
                self.no_flags(node)?;
                at_least_one()?;
                let mut pairs = Vec::with_capacity(args.len());
                for arg in args {
                    let pair = match arg.split_once('=') {
                        Some(("", _)) => return Err(self.err(node, arg, "ARG names can not be blank")),
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (arg.clone(), None),
                    };
                    pairs.push(pair);
                }
                Instruction::Arg(pairs)
            }
            "onbuild" => self.onbuild(node)?,
            "stopsignal" => {
                self.no_flags(node)?;
                Instruction::Stopsignal(exactly_one("")?)
            }
            "healthcheck" => self.healthcheck(node)?,
            "shell" => {
                self.no_flags(node)?;
                if !node.json {
                    return Err(self
                        .err(node, "", "SHELL requires the arguments to be in JSON form")
                        .suggest("write it as `SHELL [\"executable\", \"parameters\"]`"));
                }
                at_least_one()?;
                Instruction::Shell(args.clone())
            }
            "maintainer" => {
                self.no_flags(node)?;
                Instruction::Maintainer(exactly_one("")?)
            }
            _ => return Err(self.unknown(node)),
        })
    }

    /// ENV and LABEL key/value/separator triples from the parser.
    fn pairs(&self, node: &Node, command: &str) -> Result<Vec<(String, String)>, Diagnostic> {
        let args = &node.args;
        if args.is_empty() {
            return Err(self.err(node, "", format!("{command} requires at least one argument")));
        }
        if !args.len().is_multiple_of(3) {
            return Err(self.err(node, "", format!("bad input to {command}, too many arguments")));
        }
        let mut out = Vec::with_capacity(args.len() / 3);
        for triple in args.chunks(3) {
            if triple[0].is_empty() {
                return Err(self.err(node, "", format!("{command} names can not be blank")));
            }
            out.push((triple[0].clone(), triple[1].clone()));
        }
        Ok(out)
    }

    fn run(&self, node: &Node) -> Result<Instruction, Diagnostic> {
        let mut flags = self.flags(
            node,
            &[("mount", FlagKind::Strings), ("network", FlagKind::String), ("security", FlagKind::String)],
        )?;
        let mut mounts = Vec::new();
        for value in flags.list("mount") {
            let mount = parse_mount(&value).map_err(|e| self.err(node, &value, e.to_string()))?;
            mounts.push(mount);
        }
        let network = match flags.string("network").as_deref() {
            None | Some("default") => Network::Default,
            Some("none") => Network::None,
            Some("host") => Network::Host,
            Some(other) => {
                return Err(self
                    .err(node, "--network", format!("network mode `{other}` not supported"))
                    .suggest("use `default`, `none` or `host`"));
            }
        };
        let security = match flags.string("security").as_deref() {
            None | Some("sandbox") => Security::Sandbox,
            Some("insecure") => Security::Insecure,
            Some(other) => {
                return Err(self
                    .err(node, "--security", format!("security mode `{other}` not supported"))
                    .suggest("use `sandbox` or `insecure`"));
            }
        };
        Ok(Instruction::Run(Run {
            command: command_line(node, &node.args),
            heredocs: node.heredocs.iter().map(to_heredoc).collect(),
            mounts,
            network,
            security,
        }))
    }

    /// Sources and destination of COPY/ADD; `<<EOF` sources become
    /// heredoc files.
    fn sources_and_dest(&self, node: &Node, command: &str) -> Result<(Vec<CopySource>, String), Diagnostic> {
        let args = &node.args;
        let Some((dest, srcs)) = args.split_last().filter(|(_, s)| !s.is_empty()) else {
            return Err(self.err(
                node,
                "",
                format!("{command} requires at least two arguments, but only one was provided. Destination could not be determined"),
            ));
        };
        if matches!(parser::parse_heredoc(dest), Ok(Some(_))) {
            return Err(self.err(node, dest, format!("{command} cannot accept a heredoc as a destination")));
        }
        let mut sources = Vec::with_capacity(srcs.len());
        for src in srcs {
            match parser::parse_heredoc(src) {
                Ok(Some(word)) => {
                    let Some(body) = node.heredocs.iter().find(|h| h.name == word.name) else {
                        return Err(self
                            .err(node, src, format!("heredoc `{}` has no body", word.name))
                            .suggest("heredocs are not read in the JSON form; use the shell form"));
                    };
                    let content =
                        if word.chomp { parser::chomp_heredoc_content(&body.content) } else { body.content.clone() };
                    sources.push(CopySource::Heredoc(Heredoc { name: word.name, content, expand: word.expand }));
                }
                _ => sources.push(CopySource::Path(src.clone())),
            }
        }
        Ok((sources, dest.clone()))
    }

    fn copy(&self, node: &Node) -> Result<Instruction, Diagnostic> {
        let mut flags = self.flags(
            node,
            &[
                ("chown", FlagKind::String),
                ("from", FlagKind::String),
                ("chmod", FlagKind::String),
                ("link", FlagKind::Bool),
                ("parents", FlagKind::Bool),
                ("exclude", FlagKind::Strings),
            ],
        )?;
        let (sources, dest) = self.sources_and_dest(node, "COPY")?;
        Ok(Instruction::Copy(Copy {
            sources,
            dest,
            from: flags.string("from"),
            chown: flags.string("chown"),
            chmod: flags.string("chmod"),
            link: flags.bool("link"),
            parents: flags.bool("parents"),
            exclude: flags.list("exclude"),
        }))
    }

    fn add(&self, node: &Node) -> Result<Instruction, Diagnostic> {
        let mut flags = self.flags(
            node,
            &[
                ("chown", FlagKind::String),
                ("chmod", FlagKind::String),
                ("link", FlagKind::Bool),
                ("checksum", FlagKind::String),
                ("keep-git-dir", FlagKind::Bool),
                ("exclude", FlagKind::Strings),
            ],
        )?;
        let (sources, dest) = self.sources_and_dest(node, "ADD")?;
        Ok(Instruction::Add(Add {
            sources,
            dest,
            chown: flags.string("chown"),
            chmod: flags.string("chmod"),
            link: flags.bool("link"),
            checksum: flags.string("checksum"),
            keep_git_dir: flags.bool("keep-git-dir"),
            exclude: flags.list("exclude"),
        }))
    }

    fn onbuild(&self, node: &Node) -> Result<Instruction, Diagnostic> {
        self.no_flags(node)?;
        let Some(sub) = &node.sub else {
            return Err(self.err(node, "", "ONBUILD requires at least one argument"));
        };
        let trigger = sub.keyword.to_uppercase();
        match trigger.as_str() {
            "ONBUILD" => {
                return Err(self.err(node, &sub.original, "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"));
            }
            "FROM" | "MAINTAINER" => {
                return Err(self.err(node, &sub.original, format!("`{trigger}` isn't allowed as an ONBUILD trigger")));
            }
            _ => {}
        }
        // The trigger owns the heredocs that followed the ONBUILD line.
        let mut trigger_node = (**sub).clone();
        trigger_node.heredocs = node.heredocs.clone();
        trigger_node.span = node.span;
        let instruction = self.instruction(&trigger_node)?;
        Ok(Instruction::Onbuild { expression: onbuild_expression(node), instruction: Box::new(instruction) })
    }

    fn healthcheck(&self, node: &Node) -> Result<Instruction, Diagnostic> {
        let mut flags = self.flags(
            node,
            &[
                ("interval", FlagKind::String),
                ("timeout", FlagKind::String),
                ("start-period", FlagKind::String),
                ("start-interval", FlagKind::String),
                ("retries", FlagKind::String),
            ],
        )?;
        let Some((typ, rest)) = node.args.split_first() else {
            return Err(self.err(node, "", "HEALTHCHECK requires at least one argument"));
        };
        match typ.to_uppercase().as_str() {
            "NONE" => {
                if !rest.is_empty() {
                    return Err(self.err(node, "", "HEALTHCHECK NONE takes no arguments"));
                }
                Ok(Instruction::Healthcheck(Healthcheck::None))
            }
            "CMD" => {
                if rest.is_empty() {
                    return Err(self.err(node, typ, "missing command after HEALTHCHECK CMD"));
                }
                let mut interval = |name: &str| -> Result<Option<std::time::Duration>, Diagnostic> {
                    let Some(v) = flags.string(name) else { return Ok(None) };
                    let flag = format!("--{name}");
                    let (negative, d) = parse_go_duration(&v).map_err(|e| self.err(node, &flag, e.to_string()))?;
                    if d.is_zero() {
                        return Ok(Some(d));
                    }
                    if negative || d < std::time::Duration::from_millis(1) {
                        return Err(self.err(node, &flag, format!("interval `{flag}` cannot be less than 1ms")));
                    }
                    Ok(Some(d))
                };
                let test = command_line(node, rest);
                let interval_value = interval("interval")?;
                let timeout = interval("timeout")?;
                let start_period = interval("start-period")?;
                let start_interval = interval("start-interval")?;
                let retries = match flags.string("retries") {
                    None => None,
                    Some(v) => {
                        let n: i32 = v
                            .parse()
                            .map_err(|_| self.err(node, "--retries", format!("invalid value `{v}` for `--retries`")))?;
                        if n < 0 {
                            return Err(self.err(node, "--retries", format!("`--retries` cannot be negative ({n})")));
                        }
                        Some(n as u32)
                    }
                };
                Ok(Instruction::Healthcheck(Healthcheck::Cmd {
                    test,
                    interval: interval_value,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                }))
            }
            other => Err(self.err(node, typ, format!("unknown type `{other}` in HEALTHCHECK (try CMD)"))),
        }
    }
}

/// Exec form when the node was JSON, else the shell text.
fn command_line(node: &Node, args: &[String]) -> CommandLine {
    if node.json { CommandLine::Exec(args.to_vec()) } else { CommandLine::Shell(args.join(" ")) }
}

fn to_heredoc(h: &parser::Heredoc) -> Heredoc {
    Heredoc { name: h.name.clone(), content: h.effective_content(), expand: h.expand }
}

/// The trigger as BuildKit stores it in the image config: the original
/// line without the `ONBUILD` word, then each heredoc body and terminator.
fn onbuild_expression(node: &Node) -> String {
    let original = node.original.trim_start();
    let rest = if original.get(..7).is_some_and(|w| w.eq_ignore_ascii_case("onbuild")) {
        original[7..].trim_start()
    } else {
        original
    };
    let mut out = rest.to_string();
    for h in &node.heredocs {
        out.push('\n');
        out.push_str(&h.content);
        out.push_str(&h.name);
    }
    out
}

/// BuildKit's stage-name rule: `^[a-z][a-z0-9-_\.]*$`.
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests;
