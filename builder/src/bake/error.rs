//! Bake errors. Errors in a file's text carry a [`Diagnostic`]
//! (`file:line:column`, the line, a caret), like Dockerfile errors.

use rbuild_frontend::diagnostic::{Diagnostic, Span};

use super::eval::EvalError;
use super::target::DecodeError;

/// Everything that can go wrong reading and resolving bake files.
#[derive(Debug, thiserror::Error)]
pub enum BakeError {
    /// A file could not be read.
    #[error("reading `{path}`: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No bake or compose file was given or found.
    #[error("no bake file found: looked for {0}; give one with `-f FILE`")]
    NoFile(String),
    /// HCL syntax error, evaluation error, unknown attribute, failed
    /// validation: anything that points into a file.
    #[error("{0}")]
    Source(Diagnostic),
    /// Several errors in one block.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Several(Vec<BakeError>),
    /// An error in a file that has no position (JSON values, compose).
    #[error("{file}: {message}")]
    Unlocated {
        /// The file.
        file: String,
        /// What went wrong.
        message: String,
    },
    /// Invalid JSON.
    #[error("{file}: invalid JSON: {source}")]
    Json {
        /// The file.
        file: String,
        /// The parser error.
        #[source]
        source: serde_json::Error,
    },
    /// Invalid compose YAML.
    #[error("{file}: invalid compose file: {source}")]
    Yaml {
        /// The file.
        file: String,
        /// The parser error.
        #[source]
        source: serde_yaml::Error,
    },
    /// A requested or inherited target does not exist.
    #[error("failed to find target {0}")]
    UnknownTarget(String),
    /// A glob matched nothing.
    #[error("could not find any target matching '{0}'")]
    NoMatch(String),
    /// `inherits` loops.
    #[error("inherits cycle: {}", .0.join(" -> "))]
    InheritsCycle(Vec<String>),
    /// A `target:` context names its own target.
    #[error("target {0} cannot link to itself")]
    LinkSelf(String),
    /// `target:` contexts loop.
    #[error("infinite loop from {from} to {to}")]
    LinkLoop {
        /// The linking target.
        from: String,
        /// The target already on the path.
        to: String,
    },
    /// A linked target builds for other platforms than the linking one.
    #[error(
        "target {target} can't be used by {by} because its platforms {by_platforms:?} are not a subset of {platforms:?}"
    )]
    LinkPlatforms {
        /// The linked target.
        target: String,
        /// The linking target.
        by: String,
        /// The linking target's platforms.
        by_platforms: Vec<String>,
        /// The linked target's platforms.
        platforms: Vec<String>,
    },
    /// A malformed `--set`.
    #[error("invalid override {0}")]
    OverrideSyntax(String),
    /// An override or resolved value that is not valid for its field.
    #[error("{source}")]
    Field {
        /// The target.
        target: String,
        /// What was wrong.
        #[source]
        source: DecodeError,
    },
}

/// A parsed file's text, for turning byte offsets into positions.
#[derive(Debug, Clone)]
pub struct SourceText {
    /// The name the user gave.
    pub name: String,
    /// The text.
    pub text: String,
    /// Whether offsets into `text` are meaningful (HCL yes, JSON no).
    pub spans: bool,
}

impl SourceText {
    /// Line and column (1-based) of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        (line, col)
    }

    /// A diagnostic at `offset`.
    pub fn diagnostic(&self, offset: Option<usize>, message: impl Into<String>) -> BakeError {
        match offset.filter(|_| self.spans) {
            Some(off) => {
                let (line, col) = self.position(off);
                let mut d = Diagnostic::new(Span::at(line, col), message).with_source(&self.name, &self.text);
                shorten(&mut d);
                BakeError::Source(d)
            }
            None => BakeError::Unlocated { file: self.name.clone(), message: message.into() },
        }
    }
}

/// Longest source line shown under an error.
const MAX_SHOWN: usize = 160;

/// Cuts a very long source line (minified or generated files) to a window
/// around the column, so an error never prints megabytes.
pub fn shorten(d: &mut Diagnostic) {
    let Some(line) = &d.source_line else { return };
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= MAX_SHOWN {
        return;
    }
    let col = d.span.column.saturating_sub(1);
    let start = col.saturating_sub(MAX_SHOWN / 2);
    let end = (start + MAX_SHOWN).min(chars.len());
    d.source_line = Some(chars[start..end].iter().collect());
    d.span.column = col - start + 1;
}

/// Turns an evaluation error into a located error against the parsed files.
pub fn from_eval(files: &[SourceText], fallback: usize, e: EvalError) -> BakeError {
    match e.loc {
        Some(loc) => files[loc.file].diagnostic(Some(loc.offset), e.message),
        None => match files.get(fallback) {
            Some(f) => f.diagnostic(None, e.message),
            None => BakeError::Unlocated { file: String::new(), message: e.message },
        },
    }
}
