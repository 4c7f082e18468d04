//! Per-instruction argument splitting, after BuildKit's `line_parsers.go`
//! and `split_command.go`: each instruction's arguments are split by the
//! rule BuildKit uses for it (whitespace words, `name=value` pairs, maybe
//! JSON, ...). Errors carry no position; the caller adds the span.

use super::{Node, is_space};

/// Why an instruction's arguments cannot be split (BuildKit's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Legacy `ENV K V` / `LABEL K V` with no value.
    #[error("{0} must have two arguments")]
    NeedsTwoArguments(String),
    /// A `name=value` list with a word that has no `=`.
    #[error("syntax error - can't find = in {0}. Must be of the form: name=value")]
    MissingEquals(String),
    /// A JSON array with an element that is not a string.
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    NotStringArray,
    /// A heredoc word with an unterminated quote.
    #[error("unexpected end of statement while looking for matching {0}")]
    UnmatchedQuote(&'static str),
}

/// BuildKit's `reWhitespace`: `[\t\v\f\r ]`.
fn is_split_space(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// The instruction word, the leading flags and the rest (trimmed).
fn split_command(line: &str) -> (&str, Vec<String>, &str) {
    let line = line.trim_matches(is_space);
    let Some(cut) = line.find(is_split_space) else {
        return (line, Vec::new(), "");
    };
    let cmd = &line[..cut];
    let rest = line[cut..].trim_start_matches(is_split_space);
    let (args, flags) = extract_builder_flags(rest);
    (cmd, flags, args.trim_matches(is_space))
}

/// Takes the `--flag[=value]` words at the start of `line` (quotes and
/// backslashes processed, a lone `--` ends them) and returns the rest.
fn extract_builder_flags(line: &str) -> (&str, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut blank_ok = false;
    let mut chars = line.char_indices().peekable();
    while let Some((pos, ch)) = chars.next() {
        if phase == Phase::Spaces {
            if is_space(ch) {
                continue;
            }
            let starts_flag = ch == '-' && line[pos + 1..].starts_with('-');
            if !starts_flag {
                return (&line[pos..], words);
            }
            phase = Phase::Word;
        }
        match phase {
            Phase::Word => {
                if is_space(ch) {
                    phase = Phase::Spaces;
                    if word == "--" {
                        return (&line[pos..], words);
                    }
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                    continue;
                }
                if ch == '\\' {
                    // A backslash at the very end is dropped.
                    if let Some((_, c)) = chars.next() {
                        word.push(c);
                    }
                    continue;
                }
                word.push(ch);
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                    continue;
                }
                if ch == '\\' {
                    match chars.next() {
                        Some((_, c)) => word.push(c),
                        None => phase = Phase::Word,
                    }
                    continue;
                }
                word.push(ch);
            }
            Phase::Spaces => {}
        }
    }
    if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    ("", words)
}

/// What a line parser produced.
struct Parsed {
    args: Vec<String>,
    json: bool,
    sub: Option<Box<Node>>,
}

impl Parsed {
    fn words(args: Vec<String>) -> Self {
        Parsed { args, json: false, sub: None }
    }
}

/// Splits one instruction line into a [`Node`] (span left empty).
pub(super) fn node_from_line(line: &str, escape: char) -> Result<Node, LineError> {
    node_from_line_at(line, escape, false)
}

/// `in_onbuild`: the line is the trigger of an ONBUILD. A trigger that is
/// itself ONBUILD is an error later (BuildKit: no chaining), so its own
/// trigger is not parsed: parsing it recursed once per `ONBUILD` word, and
/// 100,000 of them on one line overflowed the stack.
fn node_from_line_at(line: &str, escape: char, in_onbuild: bool) -> Result<Node, LineError> {
    let (cmd, flags, rest) = split_command(line);
    let name = cmd.to_lowercase();
    let parsed = match name.as_str() {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(rest)?,
        "arg" => Parsed::words(parse_words(rest, escape)),
        "cmd" | "entrypoint" | "run" | "shell" => parse_maybe_json(rest)?,
        "env" => Parsed::words(parse_name_val(rest, "ENV", escape)?),
        "label" => Parsed::words(parse_name_val(rest, "LABEL", escape)?),
        "expose" | "from" => Parsed::words(split_whitespace(rest)),
        "healthcheck" => parse_health_config(rest)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            Parsed::words(if rest.is_empty() { Vec::new() } else { vec![rest.to_string()] })
        }
        "onbuild" if in_onbuild => Parsed::words(Vec::new()),
        "onbuild" => {
            let sub = if rest.is_empty() { None } else { Some(Box::new(node_from_line_at(rest, escape, true)?)) };
            Parsed { args: Vec::new(), json: false, sub }
        }
        // Unknown words are kept without arguments; the instructions layer
        // reports them.
        _ => Parsed::words(Vec::new()),
    };
    Ok(Node {
        name,
        keyword: cmd.to_string(),
        original: line.to_string(),
        flags,
        args: parsed.args,
        json: parsed.json,
        sub: parsed.sub,
        heredocs: Vec::new(),
        span: Default::default(),
    })
}

/// BuildKit's `parseStringsWhitespaceDelimited`.
fn split_whitespace(rest: &str) -> Vec<String> {
    rest.split(is_split_space).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// BuildKit's `parseWords`: words separated by whitespace, quotes and
/// escapes kept in the word (they are removed later by word expansion).
pub(super) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut chars = rest.chars().peekable();
    while let Some(ch) = chars.next() {
        if !in_word {
            if is_space(ch) {
                continue;
            }
            in_word = true;
        }
        match quote {
            None => {
                if is_space(ch) {
                    in_word = false;
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    let Some(next) = chars.next() else { continue };
                    word.push(ch);
                    word.push(next);
                    continue;
                }
                word.push(ch);
            }
            Some(q) => {
                let mut ch = ch;
                if ch == q {
                    quote = None;
                }
                if ch == escape && q != '\'' {
                    let Some(next) = chars.next() else {
                        quote = None;
                        continue;
                    };
                    word.push(ch);
                    ch = next;
                }
                word.push(ch);
            }
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// BuildKit's `parseNameVal` (ENV, LABEL): `k=v ...` or the legacy `K V`.
/// Returns key, value, separator triples.
fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, LineError> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else { return Ok(Vec::new()) };
    if !first.contains('=') {
        let Some(cut) = rest.find(is_split_space) else {
            return Err(LineError::NeedsTwoArguments(key.to_string()));
        };
        let value = rest[cut..].trim_start_matches(is_split_space);
        return Ok(vec![rest[..cut].to_string(), value.to_string(), String::new()]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in &words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(LineError::MissingEquals(super::go_quote(word)));
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(out)
}

/// BuildKit's `parseJSON`: `Ok(None)` when `rest` is not a JSON array (the
/// caller falls back to shell form), an error when it is one whose
/// elements are not all strings. Like Go's `json.Decoder`, anything after
/// the first JSON value is ignored.
fn parse_json(rest: &str) -> Result<Option<Vec<String>>, LineError> {
    let rest = rest.trim_start_matches(is_space);
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
    match values.next() {
        Some(Ok(serde_json::Value::Array(items))) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return Err(LineError::NotStringArray),
                }
            }
            Ok(Some(out))
        }
        // Go has no nesting limit: deeply nested arrays are valid JSON
        // there, and then not an array of strings.
        Some(Err(e)) if e.to_string().contains("recursion limit") => Err(LineError::NotStringArray),
        _ => Ok(None),
    }
}

/// BuildKit's `parseMaybeJSON` (CMD, ENTRYPOINT, RUN, SHELL).
fn parse_maybe_json(rest: &str) -> Result<Parsed, LineError> {
    if rest.is_empty() {
        return Ok(Parsed::words(Vec::new()));
    }
    Ok(match parse_json(rest)? {
        Some(args) => Parsed { args, json: true, sub: None },
        None => Parsed::words(vec![rest.to_string()]),
    })
}

/// BuildKit's `parseMaybeJSONToList` (ADD, COPY, VOLUME).
fn parse_maybe_json_to_list(rest: &str) -> Result<Parsed, LineError> {
    Ok(match parse_json(rest)? {
        Some(args) => Parsed { args, json: true, sub: None },
        None => Parsed::words(split_whitespace(rest)),
    })
}

/// BuildKit's `parseHealthConfig`: a type word, then maybe-JSON.
fn parse_health_config(rest: &str) -> Result<Parsed, LineError> {
    let sep = rest.find(is_space).unwrap_or(rest.len());
    if sep == 0 {
        return Ok(Parsed::words(Vec::new()));
    }
    let typ = &rest[..sep];
    let cmd = parse_maybe_json(rest[sep..].trim_start_matches(is_space))?;
    let mut args = vec![typ.to_string()];
    args.extend(cmd.args);
    Ok(Parsed { args, json: cmd.json, sub: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_stop_at_first_non_flag_and_double_dash() {
        assert_eq!(extract_builder_flags("--a=1 --b x y"), ("x y", vec!["--a=1".into(), "--b".into()]));
        assert_eq!(extract_builder_flags("--a=1 -- --b"), (" --b", vec!["--a=1".to_string()]));
        assert_eq!(extract_builder_flags("--a=\"x y\" z"), ("z", vec!["--a=x y".to_string()]));
        assert_eq!(extract_builder_flags("--a"), ("", vec!["--a".to_string()]));
        assert_eq!(extract_builder_flags("-a b"), ("-a b", vec![]));
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(parse_words(r#"abc="123 456" def"#, '\\'), vec![r#"abc="123 456""#, "def"]);
        assert_eq!(parse_words(r"a\ b c", '\\'), vec![r"a\ b", "c"]);
        assert_eq!(parse_words(r"'a\'b'", '\\'), vec![r"'a\'b'"]);
    }

    #[test]
    fn json_with_trailing_text_is_json() {
        assert_eq!(parse_json(r#"["a"] b"#), Ok(Some(vec!["a".to_string()])));
        assert_eq!(parse_json(r#"["a", 1]"#), Err(LineError::NotStringArray));
        assert_eq!(parse_json(r#"['a']"#), Ok(None));
    }
}
