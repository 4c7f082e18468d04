//! Errors that point into a Dockerfile: `file:line:column`, the offending
//! line with a caret under the column, and a suggestion where one is obvious.

use std::fmt;

/// A position in a Dockerfile. Lines and columns are 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    /// First line of the construct.
    pub start_line: usize,
    /// Last line of the construct (continuations, heredocs).
    pub end_line: usize,
    /// Column of the first character on `start_line`.
    pub column: usize,
}

impl Span {
    /// A span covering one position.
    pub fn at(line: usize, column: usize) -> Self {
        Span { start_line: line, end_line: line, column }
    }
}

/// An error located in a Dockerfile.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostic {
    /// Path of the Dockerfile as the user named it.
    pub file: String,
    /// Where the problem is.
    pub span: Span,
    /// What is wrong (lower-case, values in backticks).
    pub message: String,
    /// The text of the offending line, for the caret display.
    pub source_line: Option<String>,
    /// A fix, when one is obvious (`did you mean `FROM`?`).
    pub suggestion: Option<String>,
}

impl Diagnostic {
    /// A diagnostic without file name or source line; [`Diagnostic::with_source`]
    /// fills them in once the caller knows them.
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        Diagnostic { file: String::new(), span, message: message.into(), source_line: None, suggestion: None }
    }

    /// Adds a suggestion.
    pub fn suggest(mut self, suggestion: impl Into<String>) -> Self {
        self.suggestion = Some(suggestion.into());
        self
    }

    /// Fills in the file name and, from `text`, the offending line.
    pub fn with_source(mut self, file: &str, text: &str) -> Self {
        if self.file.is_empty() {
            self.file = file.to_string();
        }
        if self.source_line.is_none() && self.span.start_line > 0 {
            self.source_line = text
                .trim_start_matches('\u{feff}')
                .lines()
                .nth(self.span.start_line - 1)
                .map(|l| l.trim_end_matches('\r').to_string());
        }
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = if self.file.is_empty() { "Dockerfile" } else { &self.file };
        write!(f, "{file}:{}:{}: {}", self.span.start_line, self.span.column.max(1), self.message)?;
        if let Some(line) = &self.source_line {
            let number = self.span.start_line.to_string();
            write!(f, "\n {number} | {line}")?;
            let pad: String = line
                .chars()
                .take(self.span.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n {} | {pad}^", " ".repeat(number.len()))?;
        }
        if let Some(s) = &self.suggestion {
            write!(f, "\n{s}")?;
        }
        Ok(())
    }
}

/// The closest of `candidates` to `word` by edit distance, if close enough to
/// be a plausible typo.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caret_under_column() {
        let d = Diagnostic::new(Span::at(2, 1), "unknown instruction `FROOM`")
            .suggest("did you mean `FROM`?")
            .with_source("Dockerfile", "# x\nFROOM alpine\n");
        assert_eq!(
            d.to_string(),
            "Dockerfile:2:1: unknown instruction `FROOM`\n 2 | FROOM alpine\n   | ^\ndid you mean `FROM`?"
        );
    }

    #[test]
    fn suggests_close_words_only() {
        assert_eq!(closest("FROOM", &["FROM", "RUN"]), Some("FROM"));
        assert_eq!(closest("XYZZY", &["FROM", "RUN"]), None);
    }
}
