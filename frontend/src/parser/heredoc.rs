//! Heredoc detection on an instruction line, after BuildKit's
//! `heredocsFromLine`/`ParseHeredoc`: the line is split into shell words
//! (quotes and escapes kept) and every word of the form
//! `[n]<<[-]WORD` starts a heredoc. A quoted `WORD` disables expansion.

use super::{Heredoc, LineError, is_space};

/// Splits `line` into shell words. With `raw`, quotes stay in the words.
/// Escapes are always processed except inside single quotes; with
/// `raw_escapes` the backslash is kept too. `$` is literal (BuildKit lexes
/// with an empty environment and keeps unset variables as written).
fn shell_words(line: &str, raw: bool, raw_escapes: bool) -> Result<Vec<String>, LineError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        match ch {
            c if is_space(c) => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                in_word = true;
                if let Some(next) = chars.next() {
                    if raw_escapes {
                        word.push('\\');
                    }
                    word.push(next);
                }
            }
            '\'' => {
                in_word = true;
                if raw {
                    word.push('\'');
                }
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => {
                            return Err(LineError::UnmatchedQuote("single-quote"));
                        }
                    }
                }
                if raw {
                    word.push('\'');
                }
            }
            '"' => {
                in_word = true;
                if raw {
                    word.push('"');
                }
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => {
                            let mut lookahead = chars.clone();
                            match lookahead.next() {
                                Some(c @ ('"' | '$' | '\\')) => {
                                    chars = lookahead;
                                    if raw_escapes {
                                        word.push('\\');
                                    }
                                    word.push(c);
                                }
                                Some(_) => word.push('\\'),
                                None => {}
                            }
                        }
                        Some(c) => word.push(c),
                        None => {
                            return Err(LineError::UnmatchedQuote("double-quote"));
                        }
                    }
                }
                if raw {
                    word.push('"');
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Parses one word as a heredoc start (`<<EOF`, `<<-EOF`, `3<<"EOF"`).
/// `Ok(None)` when the word is not one.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, LineError> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(rest) = word[digits..].strip_prefix("<<") else { return Ok(None) };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    let file_descriptor = word[..digits].parse::<u32>().unwrap_or(0);
    let words = shell_words(rest, false, false)?;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw_words = shell_words(rest, true, false)?;
    let count = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let expand = raw_words.len() == 1 && count(&words[0]) == count(&raw_words[0]);
    Ok(Some(Heredoc { name: words[0].clone(), content: String::new(), expand, chomp, file_descriptor }))
}

/// All heredocs started on `line`, in order.
pub(super) fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, LineError> {
    // BuildKit ignores lexing errors here: such a line has no heredocs.
    let Ok(words) = shell_words(line, true, true) else { return Ok(Vec::new()) };
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}
