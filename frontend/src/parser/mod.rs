//! Dockerfile parser following BuildKit's grammar
//! (`frontend/dockerfile/parser`): parser directives, line continuations
//! with the escape character, comments and empty lines inside
//! continuations, heredocs, JSON (exec) vs shell form and the
//! per-instruction argument splitting. The result is an untyped list of
//! [`Node`]s with spans; [`crate::instructions`] turns them into typed
//! instructions.
//!
//! Like BuildKit, this layer accepts unknown instruction words (their
//! arguments are dropped); the instructions layer rejects them with a
//! suggestion.

mod dump;
mod heredoc;
mod line_parsers;

use crate::diagnostic::{Diagnostic, Span};

pub use dump::go_quote;
pub use heredoc::parse_heredoc;
pub use line_parsers::LineError;

/// The default escape character.
pub const DEFAULT_ESCAPE: char = '\\';

/// A heredoc attached to a RUN, COPY or ADD line, as the parser found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word with quotes removed (`EOF`).
    pub name: String,
    /// The body exactly as written, every line with its line ending, no tab
    /// stripping (see [`Heredoc::chomp`] and [`chomp_heredoc_content`]).
    pub content: String,
    /// False when the delimiter was quoted (`<<"EOF"`): no expansion.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from body lines and terminator.
    pub chomp: bool,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 if none.
    pub file_descriptor: u32,
}

impl Heredoc {
    /// The body with `<<-` tab stripping applied when it was requested.
    pub fn effective_content(&self) -> String {
        if self.chomp { chomp_heredoc_content(&self.content) } else { self.content.clone() }
    }
}

/// Removes leading tabs from every line of `content` (the `<<-` rule).
pub fn chomp_heredoc_content(content: &str) -> String {
    content.split_inclusive('\n').map(|l| l.trim_start_matches('\t')).collect()
}

/// One instruction line (continuations joined) with its arguments split
/// the way BuildKit's line parser for that instruction splits them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Instruction name, lower-cased (`run`).
    pub name: String,
    /// Instruction word as written (`Run`).
    pub keyword: String,
    /// The whole line with continuations joined (BuildKit's `Original`).
    pub original: String,
    /// Leading `--flag[=value]` words, as written.
    pub flags: Vec<String>,
    /// Arguments. For ENV and LABEL: triples of key, value and separator
    /// (`=` for `k=v`, empty for the legacy `K V` form). For ARG: words as
    /// written (`name=default`, quotes kept). For HEALTHCHECK: the type
    /// (`CMD`, `NONE`) followed by the command's arguments.
    pub args: Vec<String>,
    /// Arguments were written as a JSON array (exec form).
    pub json: bool,
    /// The trigger of `ONBUILD`.
    pub sub: Option<Box<Node>>,
    /// Heredoc bodies that followed the line (RUN, COPY, ADD).
    pub heredocs: Vec<Heredoc>,
    /// Lines the instruction covers (including heredoc bodies) and the
    /// column of the instruction word.
    pub span: Span,
}

impl Node {
    /// Whether heredocs after this line belong to it (BuildKit's
    /// `canContainHeredoc`): RUN, COPY, ADD in shell form, also as an
    /// ONBUILD trigger.
    pub fn can_contain_heredoc(&self) -> bool {
        let node = match (&*self.name, &self.sub) {
            ("onbuild", Some(sub)) => sub,
            _ => self,
        };
        matches!(&*node.name, "run" | "copy" | "add") && !node.json
    }

    /// BuildKit's s-expression dump (`(copy ["--from=a"] "x" "/y")`),
    /// used by the conformance tests.
    pub fn dump(&self) -> String {
        dump::dump_node(self)
    }
}

/// A parser directive (`# syntax=`, `# escape=`, `# check=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    /// Lower-cased name.
    pub name: String,
    /// Value with surrounding whitespace removed.
    pub value: String,
    /// Where it was written.
    pub span: Span,
}

/// A parsed Dockerfile: directives and instruction nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ast {
    /// Instructions in order.
    pub nodes: Vec<Node>,
    /// Parser directives found at the top of the file.
    pub directives: Vec<Directive>,
    /// The escape character in effect.
    pub escape: char,
    /// Non-fatal findings (empty continuation lines).
    pub warnings: Vec<Diagnostic>,
    /// From the first instruction's first line to the last one's last line.
    pub span: Span,
}

impl Ast {
    /// The value of a directive, by lower-case name.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives.iter().find(|d| d.name == name).map(|d| d.value.as_str())
    }

    /// BuildKit's dump of the whole file: one `(node)` per line.
    pub fn dump(&self) -> String {
        self.nodes.iter().map(|n| format!("({})\n", n.dump())).collect()
    }
}

/// Directive bookkeeping while reading the first lines.
struct Directives {
    escape: char,
    done: bool,
    parsed: Vec<Directive>,
}

const KNOWN_DIRECTIVES: [&str; 3] = ["syntax", "escape", "check"];

impl Directives {
    /// Looks for a parser directive on `line` (newline and leading
    /// whitespace already removed). The first line that is not one ends
    /// the directive section, as in BuildKit.
    fn possible_directive(&mut self, line: &str, line_no: usize, column: usize) -> Result<(), Diagnostic> {
        if self.done {
            return Ok(());
        }
        let Some((name, value)) = match_directive(line) else {
            self.done = true;
            return Ok(());
        };
        let name = name.to_ascii_lowercase();
        if !KNOWN_DIRECTIVES.contains(&name.as_str()) {
            self.done = true;
            return Ok(());
        }
        let span = Span::at(line_no, column);
        if self.parsed.iter().any(|d| d.name == name) {
            return Err(Diagnostic::new(span, format!("only one `{name}` parser directive can be used")));
        }
        if name == "escape" {
            self.escape = match value {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(Diagnostic::new(
                        span,
                        format!("invalid escape token `{other}`: it must be `` ` `` or `\\`"),
                    ));
                }
            };
        }
        self.parsed.push(Directive { name, value: value.to_string(), span });
        Ok(())
    }
}

/// RE2 `\s`: ASCII whitespace without `\v`.
fn is_re_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c')
}

/// Matches BuildKit's `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`.
fn match_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start_matches(is_re_space);
    let name_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let rest = rest.trim_start_matches(is_re_space).strip_prefix('=')?;
    let value = rest.trim_matches(is_re_space);
    if !value.is_empty() {
        return Some((name, value));
    }
    // `(.+?)` needs one character: with only spaces left the regex
    // backtracks and captures the last one.
    let last = rest.char_indices().last()?;
    Some((name, &rest[last.0..]))
}

/// Go's `unicode.IsSpace`, which Rust's `char::is_whitespace` matches.
fn is_space(c: char) -> bool {
    c.is_whitespace()
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// BuildKit's `isComment`: the line, left-trimmed, starts with `#`.
fn is_comment(raw: &str) -> bool {
    trim_newline(raw).trim_start_matches(is_space).starts_with('#')
}

/// BuildKit's `processLine`: drop the line ending, optionally the leading
/// whitespace, and the whole line if it is a comment.
fn process_line<'a>(d: &mut Directives, raw: &'a str, strip_left: bool, line_no: usize) -> Result<&'a str, Diagnostic> {
    let mut token = trim_newline(raw);
    if strip_left {
        token = token.trim_start_matches(is_space);
    }
    let column = raw.chars().take_while(|c| is_space(*c)).count() + 1;
    d.possible_directive(token, line_no, column)?;
    Ok(if token.starts_with('#') { "" } else { token })
}

/// BuildKit's line-continuation rule: the escape character as the last
/// non-blank character, unless it is itself escaped. Returns the line
/// without it and whether the instruction ends here.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    let Some(before) = t.strip_suffix(escape) else {
        return (line, true);
    };
    if !before.is_empty() && before.ends_with(escape) {
        return (line, true);
    }
    (before, false)
}

/// Parses Dockerfile text. Errors carry the line (and column where known);
/// use [`Diagnostic::with_source`] to attach the file name and line text.
pub fn parse(text: &str) -> Result<Ast, Diagnostic> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut d = Directives { escape: DEFAULT_ESCAPE, done: false, parsed: Vec::new() };
    let mut nodes: Vec<Node> = Vec::new();
    let mut warnings = Vec::new();
    let mut next = 0usize;

    while next < lines.len() {
        let raw = lines[next];
        next += 1;
        let start = next;
        let column = raw.chars().take_while(|c| is_space(*c)).count() + 1;
        let first = process_line(&mut d, raw, true, start)?;
        let (first, mut end_of_line) = trim_continuation(first, d.escape);
        if end_of_line && first.is_empty() {
            continue;
        }
        let mut line = first.to_string();
        let mut empty_continuation = false;
        while !end_of_line && next < lines.len() {
            let raw = lines[next];
            next += 1;
            let processed = process_line(&mut d, raw, false, next)?;
            if is_comment(raw) {
                continue;
            }
            if processed.trim_start_matches(is_space).is_empty() {
                empty_continuation = true;
                continue;
            }
            let (part, eol) = trim_continuation(processed, d.escape);
            end_of_line = eol;
            line.push_str(part);
        }
        let span = Span { start_line: start, end_line: next, column };
        if empty_continuation {
            warnings.push(Diagnostic::new(
                span,
                "empty continuation line: a line-continuation is followed by an empty line; \
                 this will become an error in a future release",
            ));
        }

        let mut node =
            line_parsers::node_from_line(&line, d.escape).map_err(|e| Diagnostic::new(span, e.to_string()))?;
        if node.can_contain_heredoc() && line.contains("<<") {
            let docs = heredoc::heredocs_from_line(&line).map_err(|e| Diagnostic::new(span, e.to_string()))?;
            for mut doc in docs {
                let mut terminated = false;
                while next < lines.len() {
                    let raw = lines[next];
                    next += 1;
                    let mut candidate = trim_newline(raw);
                    if doc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    doc.content.push_str(raw);
                }
                if !terminated {
                    let span = Span { start_line: start, end_line: next, column };
                    return Err(Diagnostic::new(span, format!("unterminated heredoc `{}`", doc.name))
                        .suggest(format!("end the heredoc with a line containing only `{}`", doc.name)));
                }
                node.heredocs.push(doc);
            }
        }
        node.span = Span { start_line: start, end_line: next, column };
        if let Some(sub) = &mut node.sub {
            sub.span = node.span;
        }
        nodes.push(node);
    }

    let Some(first) = nodes.first() else {
        return Err(Diagnostic::new(Span::at(lines.len().max(1), 1), "file with no instructions"));
    };
    let span = Span {
        start_line: first.span.start_line,
        end_line: nodes.last().map_or(first.span.end_line, |n| n.span.end_line),
        column: first.span.column,
    };
    Ok(Ast { nodes, directives: d.parsed, escape: d.escape, warnings, span })
}

#[cfg(test)]
mod tests;
