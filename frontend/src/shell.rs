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
    /// `${...}` forms nested deeper than [`MAX_EXPANSION_DEPTH`]. BuildKit's
    /// Go lexer has no limit (goroutine stacks grow); ours recurses on a
    /// fixed stack, so hostile nesting must stop with an error, not abort.
    #[error("substitutions nested more than {limit} levels deep")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// The expansion grew past [`MAX_EXPANDED_LEN`] bytes.
    #[error("expansion is longer than the limit of {limit} bytes")]
    TooLong {
        /// The limit.
        limit: usize,
    },
    /// A `#`, `%` or `/` pattern matched against a value whose size product
    /// exceeds [`MAX_PATTERN_WORK`]: matching costs pattern × value steps.
    #[error(
        "substitution pattern too large: a {pattern_len}-character pattern against a {value_len}-character value exceeds the limit of {limit} steps"
    )]
    PatternTooLarge {
        /// Characters (tokens) in the pattern.
        pattern_len: usize,
        /// Characters in the value.
        value_len: usize,
        /// The limit on their product.
        limit: u64,
    },
}

/// Longest result of one expansion (4 MiB). Expansion amplifies: a word
/// may reference a long variable many times, and a chain of ARGs each
/// doubling the previous one grows exponentially; past this the word is an
/// error instead of an allocation failure.
pub const MAX_EXPANDED_LEN: usize = 4 << 20;

/// Deepest nesting of `${...}` inside the word of another `${...}`.
/// Real Dockerfiles nest a handful of levels; each level costs stack.
pub const MAX_EXPANSION_DEPTH: usize = 100;

/// Most pattern-tokens × value-characters steps one `#`/`%`/`/` match may
/// take (64 Mi: a 4096-character pattern against a 16 KiB value).
pub const MAX_PATTERN_WORK: u64 = 1 << 26;

impl ShellError {
    /// Whether this is one of the resource limits ([`MAX_EXPANSION_DEPTH`],
    /// [`MAX_EXPANDED_LEN`], [`MAX_PATTERN_WORK`]) rather than bad syntax.
    pub fn is_limit(&self) -> bool {
        matches!(self, ShellError::TooDeep { .. } | ShellError::TooLong { .. } | ShellError::PatternTooLarge { .. })
    }
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
            depth: 0,
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
    /// Current `${...}` nesting (see [`MAX_EXPANSION_DEPTH`]).
    depth: usize,
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
            check_len(&result)?;
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
        check_len(&result)?;
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
            check_len(&result)?;
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
        // Every recursion of the lexer goes through here: `${...}` words
        // are read with `process_until`, which may meet `${` again.
        if self.depth >= MAX_EXPANSION_DEPTH {
            return Err(ShellError::TooDeep { limit: MAX_EXPANSION_DEPTH });
        }
        self.depth += 1;
        let result = self.process_braced();
        self.depth -= 1;
        result
    }

    /// The `${...}` forms, after the `{`.
    fn process_braced(&mut self) -> Result<String, ShellError> {
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
                if op == '#' { trim_prefix(&tokens, &value, greedy) } else { trim_suffix(&tokens, &value, greedy) }
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
        let matcher = PrefixMatcher::new(&tokens, &chars, true)?;
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
                check_len(&out)?;
            }
            last_end = end;
            search = if search + 1 > end { search + 1 } else { end };
        }
        out.extend(&chars[last_end.min(chars.len())..]);
        check_len(&out)?;
        Ok(out)
    }
}

fn check_len(s: &str) -> Result<(), ShellError> {
    if s.len() > MAX_EXPANDED_LEN { Err(ShellError::TooLong { limit: MAX_EXPANDED_LEN }) } else { Ok(()) }
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
/// patterns made of literals, `.` and `.*`/`.*?`, anchored at each start
/// position. Computed bottom-up, one row per token from the last one, so it
/// neither recurses (a long pattern cannot exhaust the stack) nor keeps more
/// than two rows: O(tokens × len) time, O(len) memory, bounded by
/// [`MAX_PATTERN_WORK`].
struct PrefixMatcher {
    /// `ends[si]`: end of the preferred match of the whole pattern at `si`.
    ends: Vec<Option<usize>>,
}

impl PrefixMatcher {
    fn new(tokens: &[PatTok], s: &[char], greedy: bool) -> Result<Self, ShellError> {
        let work = (tokens.len() as u64).saturating_mul(s.len() as u64 + 1);
        if work > MAX_PATTERN_WORK {
            return Err(ShellError::PatternTooLarge {
                pattern_len: tokens.len(),
                value_len: s.len(),
                limit: MAX_PATTERN_WORK,
            });
        }
        let len = s.len();
        // The row after the last token: the empty pattern matches anywhere.
        let mut next: Vec<Option<usize>> = (0..=len).map(Some).collect();
        let mut row: Vec<Option<usize>> = vec![None; len + 1];
        for tok in tokens.iter().rev() {
            match tok {
                PatTok::Lit(c) => {
                    for si in 0..=len {
                        row[si] = if s.get(si) == Some(c) { next[si + 1] } else { None };
                    }
                }
                PatTok::Any => {
                    for si in 0..=len {
                        row[si] = match s.get(si) {
                            Some(c) if *c != '\n' => next[si + 1],
                            _ => None,
                        };
                    }
                }
                PatTok::Star => {
                    // A star at `si` may consume up to the next newline: the
                    // rest of the pattern then starts at some `j` in
                    // `si..=e(si)`. Greedy prefers the largest such `j` where
                    // the rest matches, lazy the smallest. Scanning right to
                    // left keeps that choice for the current window.
                    let mut best: Option<usize> = None;
                    for si in (0..=len).rev() {
                        let here = next[si].is_some().then_some(si);
                        best = if si == len || s[si] == '\n' {
                            here
                        } else if greedy {
                            best.or(here)
                        } else {
                            here.or(best)
                        };
                        row[si] = best.and_then(|j| next[j]);
                    }
                }
            }
            std::mem::swap(&mut next, &mut row);
        }
        Ok(Self { ends: next })
    }

    /// End of the preferred match starting at `si`.
    fn match_at(&self, si: usize) -> Option<usize> {
        self.ends.get(si).copied().flatten()
    }

    /// Leftmost match starting at or after `from`: (start, end).
    fn find(&self, from: usize) -> Option<(usize, usize)> {
        (from..self.ends.len()).find_map(|start| self.match_at(start).map(|end| (start, end)))
    }
}

fn trim_prefix(tokens: &[PatTok], value: &str, greedy: bool) -> Result<String, ShellError> {
    let chars: Vec<char> = value.chars().collect();
    Ok(match PrefixMatcher::new(tokens, &chars, greedy)?.match_at(0) {
        Some(end) => chars[end..].iter().collect(),
        None => value.to_string(),
    })
}

fn trim_suffix(tokens: &[PatTok], value: &str, greedy: bool) -> Result<String, ShellError> {
    // As BuildKit: reverse both pattern and value, so the shortest/longest
    // suffix becomes the shortest/longest prefix.
    let reversed_tokens: Vec<PatTok> = tokens.iter().rev().copied().collect();
    let chars: Vec<char> = value.chars().rev().collect();
    Ok(match PrefixMatcher::new(&reversed_tokens, &chars, greedy)?.match_at(0) {
        Some(end) => chars[end..].iter().rev().collect(),
        None => value.to_string(),
    })
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

    #[test]
    fn nesting_deeper_than_the_limit_is_an_error_not_a_stack_overflow() {
        let nested = |n: usize| format!("{}x{}", "${a:-".repeat(n), "}".repeat(n));
        assert_eq!(expand(&nested(MAX_EXPANSION_DEPTH), &[]).unwrap(), "x");
        assert_eq!(expand(&nested(MAX_EXPANSION_DEPTH + 1), &[]), Err(ShellError::TooDeep { limit: 100 }));
        // The issue's reproducer: 20,000 levels, in a thread with a 1 MiB
        // stack (debug builds spend ~4 KiB a level, so the limit fits and
        // unbounded recursion would abort the test binary).
        let word = nested(20_000);
        let got = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || expand(&word, &[]))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(got, Err(ShellError::TooDeep { limit: MAX_EXPANSION_DEPTH }));
        // Quotes and replacements nest through the same path.
        let quoted = format!("{}x{}", "\"${a:-".repeat(200), "}\"".repeat(200));
        assert!(matches!(expand(&quoted, &[]), Err(ShellError::TooDeep { .. })));
        let replace = format!("{}x{}", "${a/b/".repeat(200), "}".repeat(200));
        assert!(matches!(expand(&replace, &[]), Err(ShellError::TooDeep { .. })));
    }

    #[test]
    fn long_patterns_neither_recurse_nor_blow_up() {
        // A 5,000-literal pattern against a matching value: the matcher used
        // to recurse once per token.
        let value = "x".repeat(5_000);
        let word = format!("${{V#{value}}}|${{V%%{value}}}|${{V/{value}/y}}");
        let got = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || expand(&word, &[("V", value.as_str())]).map(|s| s.len()))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(got, Ok(3));
        // Pattern × value beyond the work limit is a clear error.
        let big = "x".repeat(20_000);
        let err = expand(&format!("${{V#{big}}}"), &[("V", &big)]).unwrap_err();
        assert!(matches!(err, ShellError::PatternTooLarge { pattern_len: 20_000, value_len: 20_000, .. }), "{err}");
    }

    #[test]
    fn star_preference_matches_go_regexp() {
        let cases: &[Case] = &[
            ("${V#a*b}", &[("V", "aXbYb")], "Yb"),
            ("${V##a*b}", &[("V", "aXbYb")], ""),
            ("${V%b*}", &[("V", "aXbYb")], "aXbY"),
            ("${V%%b*}", &[("V", "aXbYb")], "aX"),
            // `*` does not cross a newline (Go's `.`).
            ("${V##*}", &[("V", "ab\ncd")], "\ncd"),
            ("${V//?/-}", &[("V", "a\nb")], "-\n-"),
            ("${V/*c/-}", &[("V", "abc\nxc")], "-\nxc"),
        ];
        for (word, env, want) in cases {
            assert_eq!(expand(word, env).unwrap(), *want, "{word}");
        }
    }

    #[test]
    fn expansions_longer_than_the_limit_are_an_error() {
        let mb = "x".repeat(1 << 20);
        let env = [("V", mb.as_str())];
        assert_eq!(expand("$V$V$V$V", &env).unwrap().len(), 4 << 20);
        for word in ["$V$V$V$V$V", "\"$V$V$V$V$V\"", "${V//x/xxxxx}", "${V//?/${V}}", "${U:-$V$V$V$V$V}"] {
            assert_eq!(expand(word, &env), Err(ShellError::TooLong { limit: MAX_EXPANDED_LEN }), "{word}");
        }
    }
}
