//! Word expansion with BuildKit's shell-lexer semantics.
//!
//! Dockerfile instructions expand `$VAR`, `${VAR}` and the POSIX-like
//! `${VAR<op>word}` forms, remove quotes and handle the escape character the
//! way BuildKit's `frontend/dockerfile/shell` lexer does, which is *not*
//! exactly what a POSIX shell does: there is no command substitution, no
//! arithmetic, no field splitting inside quotes, `${V/p/r}` requires the
//! second `/`, and patterns in `#`, `%` and `/` forms are BuildKit's regex
//! translation of shell globs (no bracket expressions). The behaviour is
//! pinned by BuildKit's own test vectors (see `tests/shell_conformance.rs`).
//!
//! Two entry points mirror BuildKit: [`Lexer::expand_word`] (`ProcessWord`)
//! yields one string; [`Lexer::expand_words`] (`ProcessWords`) splits the
//! result into words on unquoted whitespace *after* expansion, so a variable
//! holding `a b` becomes two words unless quoted.

use std::collections::BTreeSet;

/// Why a word could not be expanded. Messages carry no location: callers
/// know the instruction and add the span.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    /// A `'` was opened and the word ended before it was closed.
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    /// A `"` was opened and the word ended before it was closed.
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    /// A `${` was opened and the word ended before the closing `}`.
    #[error("syntax error: missing '}}' in `${{...}}` substitution")]
    MissingBrace,
    /// `${VAR/pattern/replacement}` ended before the second `/`.
    #[error("syntax error: missing '/' in `${{VAR/pattern/replacement}}` substitution")]
    MissingSlash,
    /// `${}`, `${:...}` or `${{...` — no variable name where one is needed.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// An operator after the variable name that BuildKit does not support
    /// (`${V:=x}`, `${V.}`, `${#V}`...).
    #[error("unsupported modifier `{modifier}` in substitution of `{name}`")]
    UnsupportedModifier {
        /// The variable name (may be empty).
        name: String,
        /// The operator characters as written.
        modifier: String,
    },
    /// `${VAR?message}` / `${VAR:?message}` on an unset (or empty) variable.
    #[error("`{name}`: {message}")]
    Required {
        /// The variable that must be set.
        name: String,
        /// The user's message, or BuildKit's default one.
        message: String,
    },
    /// The pattern of a `#`, `%` or `/` form has an escape BuildKit rejects
    /// (only `\*`, `\?`, `\\`, `\}` and `\/` are allowed).
    #[error("invalid pattern `{pattern}` in substitution: {reason}")]
    InvalidPattern {
        /// The pattern after expansion.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The full result of expanding one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The word as one string (`ProcessWord`).
    pub value: String,
    /// The word split on unquoted whitespace (`ProcessWords`).
    pub words: Vec<String>,
    /// Variables that were referenced and found in the environment.
    pub matched: BTreeSet<String>,
    /// Variables that were referenced but not set (for undefined-var lints).
    pub unmatched: BTreeSet<String>,
}

/// The word lexer: BuildKit's `shell.Lex` with a configurable escape
/// character (`\` by default, `` ` `` after `# escape=``).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
}

impl Default for Lexer {
    fn default() -> Self {
        Self::new('\\')
    }
}

impl Lexer {
    /// A lexer that uses `escape` as the escape character.
    pub fn new(escape: char) -> Self {
        Self { escape }
    }

    /// The escape character this lexer was built with.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// `ProcessWord`: expand variables and remove quotes, producing a single
    /// string (whitespace is kept, nothing is split).
    ///
    /// `env` returns `Some("")` for a variable that is set but empty, which
    /// matters for `${V-x}` versus `${V:-x}`.
    pub fn expand_word(&self, word: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ShellError> {
        Ok(self.expand(word, env)?.value)
    }

    /// `ProcessWords`: expand, then split into words on whitespace that is
    /// neither quoted nor escaped. Whitespace that comes from a variable
    /// outside quotes splits; a quoted empty string yields no word.
    pub fn expand_words(&self, word: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, ShellError> {
        Ok(self.expand(word, env)?.words)
    }

    /// Expand `word` and report both forms plus which variables were used.
    pub fn expand(&self, word: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Expansion, ShellError> {
        let mut st = State {
            chars: word.chars().collect(),
            pos: 0,
            escape: self.escape,
            env,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        let (value, words) = st.process_until(None, false)?;
        Ok(Expansion { value, words, matched: st.matched, unmatched: st.unmatched })
    }
}

/// Accumulates words for `ProcessWords`: unquoted whitespace ends a word,
/// anything quoted or escaped is added verbatim.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            // Like BuildKit, whitespace only ends a word that has content; a
            // quoted empty string before it leaves `in_word` set.
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct State<'e> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: &'e dyn Fn(&str) -> Option<String>,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

/// Positional and special parameters (`$@`, `$#`, ...) are recognised as
/// names, as BuildKit does, and are simply never set in a Dockerfile.
fn is_special_param(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

fn is_digit(ch: char) -> bool {
    if ch.is_ascii() { ch.is_ascii_digit() } else { ch.is_numeric() }
}

impl State<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        let value = (self.env)(name);
        if value.is_some() {
            self.matched.insert(name.to_string());
        } else {
            self.unmatched.insert(name.to_string());
        }
        value
    }

    /// BuildKit's `processStopOn`: read until `stop` (consumed) or the end.
    /// `raw_escapes` keeps escape characters in the output (used for
    /// patterns, which interpret `\*` themselves).
    fn process_until(&mut self, stop: Option<char>, raw_escapes: bool) -> Result<(String, Vec<String>), ShellError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let expanded = self.process_dollar()?;
                    result.push_str(&expanded);
                    // Unquoted expansions are subject to word splitting.
                    words.add_string(&expanded);
                }
                '\'' => {
                    let quoted = self.process_single_quote()?;
                    result.push_str(&quoted);
                    words.add_raw_string(&quoted);
                }
                '"' => {
                    let quoted = self.process_double_quote(raw_escapes)?;
                    result.push_str(&quoted);
                    words.add_raw_string(&quoted);
                }
                _ => {
                    self.pos += 1;
                    if ch == self.escape {
                        if raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // An escape at the very end of the word is dropped.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        match stop {
            // The only stop characters are `}` and `/` inside `${...}`; the
            // caller turns this into the matching syntax error.
            Some('/') => Err(ShellError::MissingSlash),
            Some(_) => Err(ShellError::MissingBrace),
            None => Ok((result, words.finish())),
        }
    }

    fn process_single_quote(&mut self) -> Result<String, ShellError> {
        // Everything up to the next `'` is literal; `'` cannot be escaped.
        self.pos += 1;
        let mut result = String::new();
        loop {
            match self.next() {
                None => return Err(ShellError::UnterminatedSingleQuote),
                Some('\'') => return Ok(result),
                Some(ch) => result.push(ch),
            }
        }
    }

    fn process_double_quote(&mut self, raw_escapes: bool) -> Result<String, ShellError> {
        // Literal except `$`; the escape character only escapes `"`, `$`
        // and itself, otherwise it stays (as in sh).
        self.pos += 1;
        let mut result = String::new();
        loop {
            match self.peek() {
                None => return Err(ShellError::UnterminatedDoubleQuote),
                Some('"') => {
                    self.pos += 1;
                    return Ok(result);
                }
                Some('$') => {
                    let expanded = self.process_dollar()?;
                    result.push_str(&expanded);
                }
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == self.escape {
                        if raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // BuildKit drops an escape right before the end of
                            // the input; the unterminated quote errors next.
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                ch = next;
                                self.pos += 1;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    /// Read a parameter name: a run of digits (positional), one special
    /// character, or letters/digits/underscores.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(d) = self.peek().filter(|c| is_digit(*c)) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.pos += 1;
                return ch.to_string();
            }
            if !ch.is_alphabetic() && !is_digit(ch) && ch != '_' {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }

    fn process_dollar(&mut self) -> Result<String, ShellError> {
        self.pos += 1; // `$`
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                // A `$` not followed by a name is literal (`$.`, `$` at end).
                return Ok("$".to_string());
            }
            return Ok(self.get_env(&name).unwrap_or_default());
        }
        self.pos += 1; // `{`
        match self.peek() {
            None => return Err(ShellError::MissingBrace),
            Some('{' | '}' | ':') => return Err(ShellError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.process_name();
        let Some(mut op) = self.next() else {
            return Err(ShellError::MissingBrace);
        };
        let mut modifier = op.to_string();
        let mut null_is_unset = false;
        match op {
            '}' => return Ok(self.get_env(&name).unwrap_or_default()),
            '/' => return self.process_replace(&name),
            ':' => {
                null_is_unset = true;
                let Some(next) = self.next() else {
                    return Err(ShellError::MissingBrace);
                };
                op = next;
                modifier.push(op);
            }
            '+' | '-' | '?' | '#' | '%' => {}
            _ => return Err(ShellError::UnsupportedModifier { name, modifier }),
        }
        // BuildKit reads the operand before looking at the operator, so
        // `${V:x...}` fails only once the closing brace is found.
        let raw_escapes = op == '#' || op == '%';
        let (word, _) = self.process_until(Some('}'), raw_escapes)?;
        let value = self.get_env(&name);
        let unset = match &value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match op {
            '-' => Ok(if unset { word } else { value.unwrap_or_default() }),
            '+' => Ok(if unset { String::new() } else { word }),
            '?' => {
                if unset {
                    let message = if !word.is_empty() {
                        word
                    } else if value.is_none() {
                        "is not allowed to be unset".to_string()
                    } else {
                        "is not allowed to be empty".to_string()
                    };
                    Err(ShellError::Required { name, message })
                } else {
                    Ok(value.unwrap_or_default())
                }
            }
            '#' | '%' => {
                let value = value.unwrap_or_default();
                // `##`/`%%` remove the longest match, `#`/`%` the shortest.
                let (greedy, pattern) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let tokens = parse_pattern(pattern)?;
                if op == '#' {
                    Ok(trim_prefix(&tokens, &value, greedy))
                } else {
                    Ok(trim_suffix(&tokens, &value, greedy))
                }
            }
            _ => Err(ShellError::UnsupportedModifier { name, modifier }),
        }
    }

    /// `${V/pattern/replacement}` and `${V//pattern/replacement}`.
    fn process_replace(&mut self, name: &str) -> Result<String, ShellError> {
        let replace_all = self.peek() == Some('/');
        if replace_all {
            self.pos += 1;
        }
        let (pattern, _) = self.process_until(Some('/'), true)?;
        let (replacement, _) = self.process_until(Some('}'), true)?;
        let value = self.get_env(name).unwrap_or_default();
        let tokens = parse_pattern(&pattern)?;
        let chars: Vec<char> = value.chars().collect();
        let mut matcher = PrefixMatcher::new(&tokens, &chars, true);
        if !replace_all {
            // A single replacement is literal (Go's string slicing), unlike
            // replace-all below which goes through regexp template expansion.
            return Ok(match matcher.find(0) {
                Some((start, end)) => {
                    let mut out: String = chars[..start].iter().collect();
                    out.push_str(&replacement);
                    out.extend(&chars[end..]);
                    out
                }
                None => value,
            });
        }
        // Go's `Regexp.ReplaceAllString`: non-overlapping matches, an empty
        // match right after a match is not replaced, always advance.
        let mut out = String::new();
        let mut last_end = 0;
        let mut search = 0;
        while search <= chars.len() {
            let Some((start, end)) = matcher.find(search) else { break };
            out.extend(&chars[last_end..start]);
            if end > last_end || start == 0 {
                let matched: String = chars[start..end].iter().collect();
                expand_template(&mut out, &replacement, &matched);
            }
            last_end = end;
            search = if search + 1 > end { search + 1 } else { end };
        }
        out.extend(&chars[last_end.min(chars.len())..]);
        Ok(out)
    }
}

/// Go's `Regexp.Expand` for a regex whose only group is the whole match:
/// `$$` is `$`, `$0`/`${0}` the match, any other name expands to nothing and
/// a `$` that starts no name is kept.
fn expand_template(out: &mut String, template: &str, matched: &str) {
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let (braced, body) = match rest.strip_prefix('{') {
            Some(b) => (true, b),
            None => (false, rest),
        };
        let name_len: usize =
            body.chars().take_while(|c| c.is_alphabetic() || is_digit(*c) || *c == '_').map(char::len_utf8).sum();
        let name = &body[..name_len];
        let mut consumed = name_len;
        if name.is_empty() || (braced && !body[name_len..].starts_with('}')) {
            out.push('$');
            continue;
        }
        if braced {
            consumed += 1;
        }
        if name == "0" {
            out.push_str(matched);
        }
        rest = &body[consumed..];
    }
    out.push_str(rest);
}

/// One element of a `#`/`%`/`/` pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatTok {
    Lit(char),
    /// `?`: one character (not a newline, as Go's `.`).
    Any,
    /// `*`: any run of characters without a newline.
    Star,
}

/// BuildKit's `convertShellPatternToRegex`, as tokens: `*` and `?` are
/// wildcards; `\` may only escape `*`, `?`, `\`, and is dropped before `}`
/// and `/` (those had to be escaped to stay inside `${...}`).
fn parse_pattern(pattern: &str) -> Result<Vec<PatTok>, ShellError> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '*' => tokens.push(PatTok::Star),
            '?' => tokens.push(PatTok::Any),
            '\\' => match chars.peek().copied() {
                Some('}' | '/') => {}
                Some(c @ ('*' | '?' | '\\')) => {
                    chars.next();
                    tokens.push(PatTok::Lit(c));
                }
                other => {
                    return Err(ShellError::InvalidPattern {
                        pattern: pattern.to_string(),
                        reason: match other {
                            Some(c) => format!("invalid escape `\\{c}`"),
                            None => "trailing escape `\\`".to_string(),
                        },
                    });
                }
            },
            c => tokens.push(PatTok::Lit(c)),
        }
    }
    Ok(tokens)
}

/// Emulates a backtracking regex engine (Go's leftmost-first semantics) for
/// patterns made of literals, `.` and `.*`/`.*?`, anchored at a start
/// position. Results are memoised per (token, position), so matching is
/// O(tokens × len²) at worst instead of exponential.
struct PrefixMatcher<'a> {
    tokens: &'a [PatTok],
    s: &'a [char],
    greedy: bool,
    memo: Vec<Option<Option<usize>>>,
}

impl<'a> PrefixMatcher<'a> {
    fn new(tokens: &'a [PatTok], s: &'a [char], greedy: bool) -> Self {
        Self { tokens, s, greedy, memo: vec![None; (tokens.len() + 1) * (s.len() + 1)] }
    }

    /// End of the preferred match of `tokens[ti..]` starting at `si`.
    fn match_at(&mut self, ti: usize, si: usize) -> Option<usize> {
        let key = ti * (self.s.len() + 1) + si;
        if let Some(done) = self.memo[key] {
            return done;
        }
        let result = match self.tokens.get(ti) {
            None => Some(si),
            Some(PatTok::Lit(c)) => {
                if self.s.get(si) == Some(c) {
                    self.match_at(ti + 1, si + 1)
                } else {
                    None
                }
            }
            Some(PatTok::Any) => match self.s.get(si) {
                Some(c) if *c != '\n' => self.match_at(ti + 1, si + 1),
                _ => None,
            },
            Some(PatTok::Star) => {
                let max = self.s[si..].iter().take_while(|c| **c != '\n').count();
                let mut found = None;
                if self.greedy {
                    for k in (0..=max).rev() {
                        found = self.match_at(ti + 1, si + k);
                        if found.is_some() {
                            break;
                        }
                    }
                } else {
                    for k in 0..=max {
                        found = self.match_at(ti + 1, si + k);
                        if found.is_some() {
                            break;
                        }
                    }
                }
                found
            }
        };
        self.memo[key] = Some(result);
        result
    }

    /// Leftmost match starting at or after `from`: (start, end).
    fn find(&mut self, from: usize) -> Option<(usize, usize)> {
        (from..=self.s.len()).find_map(|start| self.match_at(0, start).map(|end| (start, end)))
    }
}

fn trim_prefix(tokens: &[PatTok], value: &str, greedy: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    match PrefixMatcher::new(tokens, &chars, greedy).match_at(0, 0) {
        Some(end) => chars[end..].iter().collect(),
        None => value.to_string(),
    }
}

fn trim_suffix(tokens: &[PatTok], value: &str, greedy: bool) -> String {
    // As BuildKit: reverse both pattern and value, so the shortest/longest
    // suffix becomes the shortest/longest prefix.
    let reversed_tokens: Vec<PatTok> = tokens.iter().rev().copied().collect();
    let chars: Vec<char> = value.chars().rev().collect();
    match PrefixMatcher::new(&reversed_tokens, &chars, greedy).match_at(0, 0) {
        Some(end) => chars[end..].iter().rev().collect(),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A test vector: word, environment, expected expansion.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

    fn env_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expand(word: &str, pairs: &[(&str, &str)]) -> Result<String, ShellError> {
        let env = env_of(pairs);
        Lexer::new('\\').expand_word(word, &|k| env.get(k).cloned())
    }

    #[test]
    fn defaults_and_alternatives_distinguish_empty_from_unset() {
        let env = [("FOO", "xxx"), ("BAR", "")];
        assert_eq!(expand("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", &env).unwrap(), "xxx  ccc");
        assert_eq!(expand("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", &env).unwrap(), "xxx bbb ccc");
        assert_eq!(expand("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", &env).unwrap(), "aaa bbb ");
        assert_eq!(expand("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", &env).unwrap(), "aaa  ");
        assert_eq!(expand("${FOO:-}", &env).unwrap(), "xxx");
    }

    #[test]
    fn required_variables_report_name_and_message() {
        let set = [("VAR", "plain"), ("ARG", "x")];
        let empty = [("VAR", ""), ("ARG", "x")];
        let unset = [("ARG", "x")];
        assert_eq!(expand("${VAR:?message here$ARG}", &set).unwrap(), "plain");
        let err = expand("${VAR:?message here$ARG}", &empty).unwrap_err();
        assert_eq!(err.to_string(), "`VAR`: message herex");
        assert!(expand("${VAR:?message here$ARG}", &unset).is_err());
        assert_eq!(expand("${VAR?message here$ARG}", &empty).unwrap(), "");
        let err = expand("${VAR?}", &unset).unwrap_err();
        assert_eq!(err.to_string(), "`VAR`: is not allowed to be unset");
        let err = expand("${VAR:?}", &empty).unwrap_err();
        assert_eq!(err.to_string(), "`VAR`: is not allowed to be empty");
    }

    #[test]
    fn unsupported_modifiers_fail() {
        let env = [("FOO", "xxx")];
        for word in ["${FOO=aaa}", "${FOO=:aaa}", "${FOO=}", "${FOO:=x}", "${FOO.}"] {
            assert!(matches!(expand(word, &env), Err(ShellError::UnsupportedModifier { .. })), "{word}");
        }
    }

    #[test]
    fn prefix_and_suffix_removal() {
        let cases: &[Case] = &[
            (r"${FOO#()[]{\}^$.\*\?|\\}", &[("FOO", r"()[]{}^$.*?|\x")], "x"),
            (r"${FOO%%\**}", &[("FOO", "xx**")], "xx"),
            ("${FOO#*x*y}", &[("FOO", "xxyy")], "y"),
            ("${FOO#*}", &[("FOO", "xxyy")], "xxyy"),
            ("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "x")], "xyy"),
            ("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "")], "xxyy"),
            ("${FOO#}", &[("FOO", "xxyy")], "xxyy"),
            ("${FOO##*x}", &[("FOO", "xxyy")], "yy"),
            ("${FOO##}", &[("FOO", "xxyy")], "xxyy"),
            (r"${FOO#?\?}", &[("FOO", "???y")], "?y"),
            ("${ABC:-.}${FOO%x}${ABC:-.}", &[("FOO", "xxyy")], ".xxyy."),
            (r"${FOO%%\**\*}", &[("FOO", "a***yy*")], "a"),
            ("${FOO%}", &[("FOO", "xxyy")], "xxyy"),
            ("${FOO%%$BAR}", &[("FOO", "xxyy"), ("BAR", "")], "xxyy"),
            ("${FOO%.*}", &[("FOO", "a.tar.gz")], "a.tar"),
            ("${FOO%%.*}", &[("FOO", "a.tar.gz")], "a"),
            ("${FOO#*/}", &[("FOO", "a/b/c")], "b/c"),
            ("${FOO##*/}", &[("FOO", "a/b/c")], "c"),
        ];
        for (word, env, want) in cases {
            assert_eq!(expand(word, env).unwrap(), *want, "{word}");
        }
        assert!(matches!(expand(r"${FOO#\x}", &[("FOO", "x")]), Err(ShellError::InvalidPattern { .. })));
    }

    #[test]
    fn replacement() {
        let cases: &[Case] = &[
            (
                "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
                &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", r"\*/")],
                "/foo.*/*.txt - /foo..*.txt",
            ),
            (
                "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
                &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
                "/tmp/bar.txt - /bar.txt",
            ),
            (
                "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
                &[("FOO", "/a/foo/b/c.txt"), ("NEEDLE", "/?/"), ("REPLACEMENT", "/")],
                "/foo/b/c.txt - /foo/c.txt",
            ),
            (
                "${FOO/$NEEDLE/$REPLACEMENT}",
                &[("FOO", "http://google.de"), ("NEEDLE", "http://"), ("REPLACEMENT", "https://")],
                "https://google.de",
            ),
            (r"${FOO//\//\/}", &[("FOO", "/tmp/foo.txt")], r"\/tmp\/foo.txt"),
            ("${FOO/$BAR/ww}", &[("FOO", "xxyy"), ("BAR", "")], "wwxxyy"),
            ("${FOO///}", &[("FOO", "xxyy")], "xxyy"),
            ("${FOO///}", &[], ""),
            ("${FOO//x/y}", &[("FOO", "axxb")], "ayyb"),
            ("${FOO//$E/-}", &[("FOO", "ab"), ("E", "")], "-a-b-"),
            // Replace-all goes through Go's template expansion: `$0` is the match.
            (r"${FOO//b/<\$0>}", &[("FOO", "abc")], r"a<\b>c"),
        ];
        for (word, env, want) in cases {
            assert_eq!(expand(word, env).unwrap(), *want, "{word}");
        }
        for word in ["${FOO//ww}", "${FOO//}"] {
            assert!(expand(word, &[("FOO", "xxyy")]).is_err(), "{word}");
        }
    }

    #[test]
    fn tracks_matched_and_unmatched_variables() {
        let env = env_of(&[("FOO", "xxx"), ("BAR", "")]);
        let got = Lexer::default().expand("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", &|k| env.get(k).cloned()).unwrap();
        assert_eq!(got.matched.into_iter().collect::<Vec<_>>(), ["BAR", "FOO"]);
        assert_eq!(got.unmatched.into_iter().collect::<Vec<_>>(), ["BAZ"]);
    }

    #[test]
    fn backtick_escape() {
        let env = env_of(&[("A", "1")]);
        let lex = Lexer::new('`');
        let get = |k: &str| env.get(k).cloned();
        assert_eq!(lex.expand_word(r"C:\path`$A", &get).unwrap(), r"C:\path$A");
        assert_eq!(lex.expand_word(r#""a`"b""#, &get).unwrap(), r#"a"b"#);
        assert_eq!(lex.expand_words("a` b c", &get).unwrap(), ["a b", "c"]);
    }

    #[test]
    fn words_split_after_expansion() {
        let env = env_of(&[("V", " a  b ")]);
        let get = |k: &str| env.get(k).cloned();
        let lex = Lexer::default();
        assert_eq!(lex.expand_words("x${V}y", &get).unwrap(), ["x", "a", "b", "y"]);
        assert_eq!(lex.expand_words("x\"${V}\"y", &get).unwrap(), ["x a  b y"]);
        assert!(lex.expand_words("\"\"", &get).unwrap().is_empty());
    }
}
