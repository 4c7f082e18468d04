//! `.dockerignore` files and moby's pattern matcher.
//!
//! These are *not* gitignore rules: a pattern is anchored at the context
//! root (`foo` does not match `a/foo`), `*` and `?` never cross `/`, `**`
//! crosses any number of directories, a pattern that matches a directory
//! excludes everything below it, and a later `!pattern` re-includes what an
//! earlier pattern excluded — even below an excluded directory. The rules are
//! those of `github.com/moby/patternmatcher` (`MatchesOrParentMatches`) and of
//! its `ignorefile.ReadAll`, pinned by moby's own vectors in
//! `tests/dockerignore_conformance.rs`.
//!
//! moby compiles each pattern to a Go regular expression; this module
//! compiles it once into a small state machine with the same language, so a
//! context of tens of thousands of paths costs microseconds per path and no
//! regex engine is needed. Known differences from moby (all in patterns no
//! real `.dockerignore` uses): `*` and `?` inside `[...]` are literal here,
//! whereas moby splices regex text into the class; and the Go-regex escapes
//! `\b`, `\B`, `\A`, `\z`, `\p`, `\Q`, `\x..` and octal escapes are rejected
//! as bad patterns instead of being interpreted.
//!
//! Paths are `&str`, but file names are bytes. moby matches Go strings,
//! which are bytes too, and its regexp engine reads each byte of an invalid
//! UTF-8 sequence as one U+FFFD; the solver hands this matcher exactly that
//! view of a name that is not UTF-8 (`rbuild_solver::fileop` `go_lossy`),
//! so `?` matches one such byte and `*` any run of them, as in moby, while
//! the file itself is always copied under its real name. A `.dockerignore`
//! that is not UTF-8 is an error naming its line and column (moby's pattern
//! compiler rejects invalid UTF-8 as well).

/// Why a pattern cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is malformed (Go's `filepath.ErrBadPattern`).
    #[error("syntax error in pattern `{pattern}`: {reason}")]
    BadPattern {
        /// The pattern as cleaned.
        pattern: String,
        /// What is wrong with it.
        reason: Syntax,
    },
    /// A line that is only `!`.
    #[error("illegal exclusion pattern: `!`")]
    IllegalExclusion,
}

/// What is wrong in a malformed pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Syntax {
    /// `[` without `]`.
    #[error("unterminated `[`")]
    UnterminatedClass,
    /// `-` or `]` where a class member belongs.
    #[error("unescaped `{0}` in character class")]
    UnescapedInClass(char),
    /// A `\` at the end.
    #[error("trailing `\\`")]
    TrailingBackslash,
    /// A Go-regex escape we do not interpret.
    #[error("unsupported escape `\\{0}`")]
    UnsupportedEscape(char),
    /// A range whose end is below its start.
    #[error("invalid character class range `{0}-{1}`")]
    BadRange(char, char),
    /// `[:name:]` with a name POSIX does not define.
    #[error("invalid character class `[:{0}:]`")]
    UnknownPosixClass(String),
    /// A class escape (`\d`...) as a range end.
    #[error("class escape `\\{0}` cannot be a range end")]
    ClassEscapeRangeEnd(char),
}

/// `ignorefile.ReadAll`: the patterns of a `.dockerignore` file, in order.
///
/// Lines starting with `#` (in the first column) are comments; surrounding
/// whitespace is trimmed; a leading `!` is kept, and what follows it is
/// trimmed and lexically cleaned with a leading `/` removed (patterns are
/// relative to the context root). A UTF-8 BOM at the start is ignored.
pub fn parse_dockerignore(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut patterns = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut out = String::new();
        if invert {
            out.push('!');
        }
        if !pattern.is_empty() {
            let cleaned = clean(pattern);
            match cleaned.strip_prefix('/') {
                Some(rest) if !rest.is_empty() => out.push_str(rest),
                _ => out.push_str(&cleaned),
            }
        }
        patterns.push(out);
    }
    patterns
}

/// A compiled list of patterns: later patterns override earlier ones and
/// `!` patterns re-include.
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl PatternMatcher {
    /// Compile `patterns` (as from [`parse_dockerignore`]). Blank patterns
    /// are skipped; each is trimmed and cleaned; a lone `!` is an error.
    pub fn new(patterns: &[String]) -> Result<Self, PatternError> {
        let mut compiled = Vec::with_capacity(patterns.len());
        for p in patterns {
            if p.trim().is_empty() {
                continue;
            }
            compiled.push(Pattern::new(p)?);
        }
        let exclusions = compiled.iter().any(|p| p.exclusion);
        Ok(Self { patterns: compiled, exclusions })
    }

    /// `MatchesOrParentMatches`: is `path` (relative, slash-separated,
    /// clean) excluded? A path is excluded when the last pattern that applies
    /// to it or to one of its parent directories is not a `!` pattern. The
    /// context root (`""` or `"."`) is never excluded.
    pub fn matches(&self, path: &str) -> bool {
        if path.is_empty() || path == "." {
            return false;
        }
        let parent = parent_dir(path);
        let mut matched = false;
        for pattern in &self.patterns {
            // An inclusion cannot change an already excluded path, nor an
            // exclusion a path that is not excluded: skip the work.
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.kind.is_match(path);
            if !hit && parent != "." {
                hit = parent_prefixes(&parent).any(|dir| pattern.kind.is_match(dir));
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// `MatchesExact`: like [`matches`](Self::matches) but without looking
    /// at parent directories.
    pub fn matches_exact(&self, path: &str) -> bool {
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            if pattern.kind.is_match(path) {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// For a walker (a `.dockerignore`d context, COPY `--exclude`): should
    /// the entry at `path` be skipped? An excluded directory is still walked
    /// when a `!` pattern may re-include something inside it (as fsutil
    /// does); its excluded entries are then skipped one by one.
    pub fn excludes_entry(&self, path: &str, is_dir: bool) -> bool {
        self.matches(path) && !(is_dir && self.exclusions && self.dir_may_contain_included(path))
    }

    /// No patterns at all: nothing is excluded.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// True if any pattern is an exclusion (`!`) — callers must then walk
    /// into excluded directories.
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// Could anything under directory `dir` be included even though `dir`
    /// matches? Conservative: `false` only when no `!` pattern can match
    /// `dir`, an ancestor of it, or anything below it, so a walker may skip
    /// the directory; when `true`, the walker must descend and ask
    /// [`matches`](Self::matches) for each entry.
    pub fn dir_may_contain_included(&self, dir: &str) -> bool {
        let dir_parts: Vec<&str> = dir.split('/').collect();
        self.patterns.iter().filter(|p| p.exclusion).any(|p| p.may_match_within(&dir_parts))
    }

    /// The compiled patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }
}

/// fsutil's `patternWithoutTrailingGlob`: a pattern without a final `/**`
/// or `/*`.
fn without_trailing_glob(p: &str) -> &str {
    let p = p.strip_suffix("/**").unwrap_or(p);
    p.strip_suffix("/*").unwrap_or(p)
}

impl PatternMatcher {
    /// fsutil's `onlyPrefixExcludeExceptions`: no `!` pattern has a
    /// wildcard character (`*[]?^\\`) once a trailing `/**` or `/*` is
    /// dropped. Only then does its walk skip excluded directories.
    fn only_prefix_exceptions(&self) -> bool {
        !self
            .patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| without_trailing_glob(&p.cleaned).contains(['*', '[', ']', '?', '^', '\\']))
    }

    /// fsutil's `SkipDir` for an excluded directory `dir`: with only prefix
    /// exceptions, the directory is not walked unless some `!` pattern
    /// (without its trailing glob) starts with `dir/`. With a wildcard
    /// exception anywhere, every excluded directory is walked.
    fn skips_excluded_dir(&self, dir: &str) -> bool {
        if !self.only_prefix_exceptions() {
            return false;
        }
        let dir_slash = format!("{dir}/");
        !self
            .patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| format!("{}/", without_trailing_glob(&p.cleaned)).starts_with(&dir_slash))
    }
}

/// Which paths of a context directory BuildKit's context transfer sends,
/// exactly as fsutil's filtered walk decides: an excluded file is not sent;
/// an excluded directory is either skipped whole (see
/// [`PatternMatcher::skips_excluded_dir`]) — even when a pattern would
/// re-include something below it — or walked, and then sent only as the
/// parent of something inside it that is sent.
pub struct ContextFilter {
    matcher: PatternMatcher,
    root: std::path::PathBuf,
    only_prefix: bool,
    /// Walked excluded directory -> whether anything below it is sent.
    sends_below: std::sync::Mutex<std::collections::HashMap<String, bool>>,
}

impl ContextFilter {
    /// A filter for the context at `root` with `.dockerignore` `matcher`.
    pub fn new(matcher: PatternMatcher, root: std::path::PathBuf) -> Self {
        let only_prefix = matcher.only_prefix_exceptions();
        Self { matcher, root, only_prefix, sends_below: Default::default() }
    }

    /// Is `path` (relative, clean, slash-separated) left out of the context?
    pub fn ignored(&self, path: &str) -> bool {
        match self.decide(path) {
            Decision::Sent => false,
            Decision::NotSent => true,
            Decision::WalkedExcluded => !self.sends_something_below(path),
        }
    }

    /// What fsutil's walk does with `path`, without looking below it.
    fn decide(&self, path: &str) -> Decision {
        if path.is_empty() || path == "." || self.matcher.is_empty() {
            return Decision::Sent;
        }
        // A skipped ancestor hides everything below it, re-included or not.
        // (Without exceptions a matched ancestor also matches `path`; with
        // wildcard exceptions nothing is skipped.)
        if self.only_prefix && self.matcher.exclusions {
            let mut end = 0;
            while let Some(i) = path[end..].find('/') {
                let dir = &path[..end + i];
                if self.matcher.matches(dir) && self.matcher.skips_excluded_dir(dir) {
                    return Decision::NotSent;
                }
                end += i + 1;
            }
        }
        if !self.matcher.matches(path) {
            return Decision::Sent;
        }
        let is_dir = std::fs::symlink_metadata(self.root.join(path)).is_ok_and(|m| m.is_dir());
        if !is_dir || self.matcher.skips_excluded_dir(path) {
            return Decision::NotSent;
        }
        Decision::WalkedExcluded
    }

    /// Whether anything below the walked excluded directory `dir` is sent.
    /// Iterative (a context may nest directories thousands deep) and
    /// memoised for every directory it settles, so a walk that asks about
    /// each directory of an excluded tree reads the tree once.
    fn sends_something_below(&self, dir: &str) -> bool {
        let memo = |d: &str| self.sends_below.lock().expect("filter memo").get(d).copied();
        let mark_sent = |from: &str| {
            let mut m = self.sends_below.lock().expect("filter memo");
            let mut p = from;
            loop {
                m.insert(p.to_string(), true);
                if p == dir {
                    break;
                }
                p = p.rsplit_once('/').map_or(dir, |(parent, _)| parent);
            }
        };
        if let Some(v) = memo(dir) {
            return v;
        }
        let mut stack = vec![dir.to_string()];
        let mut settled = Vec::new();
        while let Some(d) = stack.pop() {
            match memo(&d) {
                Some(true) => {
                    mark_sent(&d);
                    return true;
                }
                Some(false) => continue,
                None => {}
            }
            let mut names: Vec<std::ffi::OsString> = match std::fs::read_dir(self.root.join(&d)) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
                Err(_) => Vec::new(),
            };
            names.sort();
            for n in names {
                // Names are matched as moby sees them (invalid UTF-8 as U+FFFD).
                let q = format!("{d}/{}", n.to_string_lossy());
                match self.decide(&q) {
                    Decision::Sent => {
                        mark_sent(&d);
                        return true;
                    }
                    Decision::NotSent => {}
                    Decision::WalkedExcluded => stack.push(q),
                }
            }
            settled.push(d);
        }
        let mut m = self.sends_below.lock().expect("filter memo");
        for d in settled {
            m.insert(d, false);
        }
        false
    }
}

/// [`ContextFilter::decide`]'s answer.
enum Decision {
    /// Sent (and so are its parents).
    Sent,
    /// Not sent, nor anything below it.
    NotSent,
    /// An excluded directory that is walked: sent only as the parent of
    /// something below it that is sent.
    WalkedExcluded,
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    cleaned: String,
    exclusion: bool,
    kind: Kind,
}

impl Pattern {
    /// Compile one pattern: trimmed, lexically cleaned (`a//b/./c/` is
    /// `a/b/c`), then a leading `!` marks an exclusion. Syntax is checked as
    /// Go's `filepath.Match` does.
    pub fn new(p: &str) -> Result<Self, PatternError> {
        let mut p = clean(p.trim());
        let exclusion = p.starts_with('!');
        if exclusion {
            if p.len() == 1 {
                return Err(PatternError::IllegalExclusion);
            }
            p.remove(0);
        }
        let bad = |reason: Syntax| PatternError::BadPattern { pattern: p.clone(), reason };
        validate_glob(&p).map_err(bad)?;
        let kind = compile(&p).map_err(bad)?;
        Ok(Self { cleaned: p, exclusion, kind })
    }

    /// Does the pattern match exactly `path` (no parent-directory rule)?
    /// Patterns are fully checked by [`Pattern::new`], so this does not fail
    /// today; the `Result` mirrors moby, which compiles lazily.
    pub fn matches(&self, path: &str) -> Result<bool, PatternError> {
        Ok(self.kind.is_match(path))
    }

    /// True for a `!` pattern.
    pub fn exclusion(&self) -> bool {
        self.exclusion
    }

    /// The cleaned pattern without its `!`.
    pub fn as_str(&self) -> &str {
        &self.cleaned
    }

    /// Could this pattern match `dir` itself, one of its ancestors, or a
    /// path below it? Compares component by component; anything that might
    /// span components (`**`, classes, escapes) answers yes.
    fn may_match_within(&self, dir_parts: &[&str]) -> bool {
        for (pat, part) in self.cleaned.split('/').zip(dir_parts) {
            if pat.contains("**") || pat.contains('[') || pat.contains('\\') {
                return true;
            }
            match compile(pat) {
                Ok(kind) if kind.is_match(part) => {}
                Ok(_) => return false,
                Err(_) => return true,
            }
        }
        // Every compared component matched: the pattern matches an ancestor
        // of `dir` (so everything below), `dir` itself, or may match deeper.
        true
    }
}

/// How a pattern is matched; moby's `matchType`, with the regex replaced by
/// a compiled [`Program`].
#[derive(Debug, Clone)]
enum Kind {
    /// No wildcards: string equality.
    Exact(String),
    /// `prefix**`: starts with `prefix`.
    Prefix(String),
    /// `**suffix` (`**/x` also matches `x`).
    Suffix(String),
    Program(Program),
}

impl Kind {
    fn is_match(&self, path: &str) -> bool {
        match self {
            Kind::Exact(p) => path == p,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str()) || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Program(program) => program.is_match(path),
        }
    }
}

/// Go's `path.Clean`: lexical normalisation, `""` becomes `"."`.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// True if `clean(path) == path`, checked without allocating.
fn is_clean(path: &str) -> bool {
    if path == "." || path == "/" {
        return true;
    }
    if path.is_empty() || path.ends_with('/') {
        return false;
    }
    let (rooted, body) = match path.strip_prefix('/') {
        Some(body) => (true, body),
        None => (false, path),
    };
    // `..` survives cleaning only as a leading run of a relative path.
    let mut leading = !rooted;
    for part in body.split('/') {
        match part {
            "" | "." => return false,
            ".." if !leading => return false,
            ".." => {}
            _ => leading = false,
        }
    }
    true
}

/// Go's `filepath.Dir`.
fn parent_dir(path: &str) -> std::borrow::Cow<'_, str> {
    match path.rfind('/') {
        None => ".".into(),
        Some(0) => "/".into(),
        Some(i) => {
            let head = &path[..i];
            if is_clean(head) { head.into() } else { clean(head).into() }
        }
    }
}

/// `a/b/c` → `a`, `a/b`, `a/b/c` (moby joins the first i+1 components).
fn parent_prefixes(parent: &str) -> impl Iterator<Item = &str> {
    parent.match_indices('/').map(move |(i, _)| &parent[..i]).chain(std::iter::once(parent))
}

/// The syntax check of Go's `filepath.Match` (Unix): `\` must escape
/// something, and `[...]` must be a non-empty list of characters or ranges
/// where `-` and `]` must be escaped.
fn validate_glob(p: &str) -> Result<(), Syntax> {
    let chars: Vec<char> = p.chars().collect();
    let n = chars.len();
    let mut i = 0;
    // One class character (`getEsc`): must exist, may be escaped, and must
    // be followed by more of the class.
    let class_char = |i: &mut usize| -> Result<(), Syntax> {
        match chars.get(*i) {
            None => return Err(Syntax::UnterminatedClass),
            Some('-' | ']') => return Err(Syntax::UnescapedInClass(chars[*i])),
            Some('\\') => {
                *i += 1;
                if *i >= n {
                    return Err(Syntax::TrailingBackslash);
                }
            }
            Some(_) => {}
        }
        *i += 1;
        if *i >= n {
            return Err(Syntax::UnterminatedClass);
        }
        Ok(())
    };
    while i < n {
        match chars[i] {
            '[' => {
                i += 1;
                if chars.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut ranges = 0;
                loop {
                    if ranges > 0 && chars.get(i) == Some(&']') {
                        i += 1;
                        break;
                    }
                    class_char(&mut i)?;
                    if chars[i] == '-' {
                        i += 1;
                        class_char(&mut i)?;
                    }
                    ranges += 1;
                }
            }
            '\\' => {
                if i + 1 >= n {
                    return Err(Syntax::TrailingBackslash);
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// moby's `Pattern.compile`: classify the pattern and, when it needs one,
/// build the matcher equivalent to moby's regex.
fn compile(p: &str) -> Result<Kind, Syntax> {
    #[derive(PartialEq)]
    enum Detected {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let chars: Vec<char> = p.chars().collect();
    let n = chars.len();
    let mut detected = Detected::Exact;
    let mut prog = Vec::new();
    let mut i = 0;
    let mut first = true;
    while i < n {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                // `**/` is `**`.
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == n {
                    // Trailing `**` accepts everything, like .gitignore.
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        prog.push(Inst::Loop(Pred::NotNewline));
                        detected = Detected::Regex;
                    }
                } else {
                    // `(.*/)?`: any number of whole directories, even none.
                    let after = prog.len() + 3;
                    prog.push(Inst::Split(after));
                    prog.push(Inst::Loop(Pred::NotNewline));
                    prog.push(Inst::Char(Pred::Lit('/')));
                    detected = Detected::Regex;
                }
                if first {
                    detected = Detected::Suffix;
                }
            }
            '*' => {
                prog.push(Inst::Loop(Pred::NotSlash));
                detected = Detected::Regex;
            }
            '?' => {
                prog.push(Inst::Char(Pred::NotSlash));
                detected = Detected::Regex;
            }
            '\\' => {
                // A trailing `\` is rejected by `validate_glob`.
                let Some(&c) = chars.get(i) else {
                    return Err(Syntax::TrailingBackslash);
                };
                i += 1;
                prog.push(Inst::Char(escape(c)?));
                detected = Detected::Regex;
            }
            '[' => {
                let (class, next) = parse_class(&chars, i)?;
                i = next;
                prog.push(Inst::Char(Pred::Class(Box::new(class))));
                detected = Detected::Regex;
            }
            ']' => {
                prog.push(Inst::Char(Pred::Lit(']')));
                detected = Detected::Regex;
            }
            // moby leaves `^` unescaped, so in a regex pattern it anchors at
            // the start of the path (and makes the pattern unmatchable
            // anywhere else).
            '^' => prog.push(Inst::AssertStart),
            c => prog.push(Inst::Char(Pred::Lit(c))),
        }
        first = false;
    }
    Ok(match detected {
        Detected::Exact => Kind::Exact(p.to_string()),
        Detected::Prefix => Kind::Prefix(p[..p.len() - 2].to_string()),
        Detected::Suffix => Kind::Suffix(p[2..].to_string()),
        Detected::Regex => Kind::Program(Program::new(prog)),
    })
}

/// What `\c` means in moby's generated regex (Go `regexp` syntax).
fn escape(c: char) -> Result<Pred, Syntax> {
    Ok(match c {
        'a' => Pred::Lit('\x07'),
        'f' => Pred::Lit('\x0c'),
        't' => Pred::Lit('\t'),
        'n' => Pred::Lit('\n'),
        'r' => Pred::Lit('\r'),
        'v' => Pred::Lit('\x0b'),
        'd' | 'D' | 's' | 'S' | 'w' | 'W' => {
            Pred::Class(Box::new(Class { negated: false, items: vec![perl_class(c)] }))
        }
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => Pred::Lit(c),
        c => return Err(Syntax::UnsupportedEscape(c)),
    })
}

fn perl_class(c: char) -> ClassItem {
    let (set, negated): (fn(char) -> bool, bool) = match c {
        'd' => (|c| c.is_ascii_digit(), false),
        'D' => (|c| c.is_ascii_digit(), true),
        's' => (|c| matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' '), false),
        'S' => (|c| matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' '), true),
        'w' => (|c| c.is_ascii_alphanumeric() || c == '_', false),
        _ => (|c| c.is_ascii_alphanumeric() || c == '_', true),
    };
    ClassItem::Set { set, negated }
}

fn posix_class(name: &str) -> Option<fn(char) -> bool> {
    Some(match name {
        "alnum" => |c| c.is_ascii_alphanumeric(),
        "alpha" => |c| c.is_ascii_alphabetic(),
        "ascii" => |c| c.is_ascii(),
        "blank" => |c| c == ' ' || c == '\t',
        "cntrl" => |c| c.is_ascii_control(),
        "digit" => |c| c.is_ascii_digit(),
        "graph" => |c| c.is_ascii_graphic(),
        "lower" => |c| c.is_ascii_lowercase(),
        "print" => |c| c == ' ' || c.is_ascii_graphic(),
        "punct" => |c| c.is_ascii_punctuation(),
        "space" => |c| matches!(c, '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' '),
        "upper" => |c| c.is_ascii_uppercase(),
        "word" => |c| c.is_ascii_alphanumeric() || c == '_',
        "xdigit" => |c| c.is_ascii_hexdigit(),
        _ => return None,
    })
}

/// A bracket expression with Go `regexp` semantics (what moby's regex
/// does with it): `^` negates, ranges, `\` escapes, `[:alpha:]` classes,
/// `\d`-style classes; a negated class also matches `/`.
fn parse_class(chars: &[char], mut i: usize) -> Result<(Class, usize), Syntax> {
    let mut class = Class { negated: false, items: Vec::new() };
    if chars.get(i) == Some(&'^') {
        class.negated = true;
        i += 1;
    }
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(Syntax::UnterminatedClass);
        };
        if c == ']' && !first {
            return Ok((class, i + 1));
        }
        first = false;
        if c == '[' && chars.get(i + 1) == Some(&':') {
            let rest: String = chars[i + 2..].iter().collect();
            if let Some(end) = rest.find(":]") {
                let name = &rest[..end];
                let (negated, name) = match name.strip_prefix('^') {
                    Some(n) => (true, n),
                    None => (false, name),
                };
                let set = posix_class(name).ok_or_else(|| Syntax::UnknownPosixClass(name.to_string()))?;
                class.items.push(ClassItem::Set { set, negated });
                i += 2 + rest[..end].chars().count() + 2;
                continue;
            }
        }
        if c == '\\' && matches!(chars.get(i + 1), Some('d' | 'D' | 's' | 'S' | 'w' | 'W')) {
            class.items.push(perl_class(chars[i + 1]));
            i += 2;
            continue;
        }
        let (lo, next) = class_char(chars, i)?;
        i = next;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
            let (h, next) = class_char(chars, i + 1)?;
            hi = h;
            i = next;
            if hi < lo {
                return Err(Syntax::BadRange(lo, hi));
            }
        }
        class.items.push(ClassItem::Range(lo, hi));
    }
}

fn class_char(chars: &[char], i: usize) -> Result<(char, usize), Syntax> {
    match chars.get(i) {
        None => Err(Syntax::UnterminatedClass),
        Some('\\') => match chars.get(i + 1) {
            None => Err(Syntax::TrailingBackslash),
            Some(&c) => match escape(c)? {
                Pred::Lit(l) => Ok((l, i + 2)),
                _ => Err(Syntax::ClassEscapeRangeEnd(c)),
            },
        },
        Some(&c) => Ok((c, i + 1)),
    }
}

#[derive(Debug, Clone)]
struct Class {
    negated: bool,
    items: Vec<ClassItem>,
}

#[derive(Debug, Clone)]
enum ClassItem {
    Range(char, char),
    Set { set: fn(char) -> bool, negated: bool },
}

impl Class {
    fn contains(&self, c: char) -> bool {
        let hit = self.items.iter().any(|item| match item {
            ClassItem::Range(lo, hi) => *lo <= c && c <= *hi,
            ClassItem::Set { set, negated } => set(c) != *negated,
        });
        hit != self.negated
    }
}

/// What one character step accepts.
#[derive(Debug, Clone)]
enum Pred {
    Lit(char),
    /// `[^/]` (it does match a newline, as Go's negated classes do).
    NotSlash,
    /// Go's `.`: anything but a newline.
    NotNewline,
    Class(Box<Class>),
}

impl Pred {
    fn accepts(&self, c: char) -> bool {
        match self {
            Pred::Lit(l) => *l == c,
            Pred::NotSlash => c != '/',
            Pred::NotNewline => c != '\n',
            Pred::Class(class) => class.contains(c),
        }
    }
}

/// One instruction of the matcher; every epsilon edge points forward, so
/// one forward sweep computes the closure of a state set.
#[derive(Debug, Clone)]
enum Inst {
    /// Consume one accepted character, go to the next instruction.
    Char(Pred),
    /// Zero or more accepted characters (`X*`).
    Loop(Pred),
    /// Continue at the next instruction or at the target.
    Split(usize),
    /// Only at the start of the input.
    AssertStart,
}

/// A whole-string matcher run as a set-of-states simulation: linear in the
/// path length, no backtracking.
#[derive(Debug, Clone)]
struct Program {
    insts: Vec<Inst>,
    /// Literal text every match starts with (`src/` of `src/**/*.rs`).
    prefix: String,
    /// Literal text every match ends with (`.rs`): most paths are rejected
    /// by these two string compares without running the program.
    suffix: String,
}

impl Program {
    fn new(insts: Vec<Inst>) -> Self {
        let literal = |inst: &Inst| match inst {
            Inst::Char(Pred::Lit(c)) => Some(*c),
            _ => None,
        };
        let prefix = insts.iter().map_while(literal).collect();
        let mut suffix: Vec<char> = insts.iter().rev().map_while(literal).collect();
        suffix.reverse();
        Self { insts, prefix, suffix: suffix.into_iter().collect() }
    }

    fn is_match(&self, s: &str) -> bool {
        if !s.starts_with(self.prefix.as_str()) || !s.ends_with(self.suffix.as_str()) {
            return false;
        }
        let n = self.insts.len();
        // Up to 127 instructions (any real pattern) the state set is a u128.
        if n < 128 {
            let mut cur: u128 = self.closure_bits(1, true);
            for c in s.chars() {
                let mut next: u128 = 0;
                let mut set = cur;
                while set != 0 {
                    let pc = set.trailing_zeros() as usize;
                    set &= set - 1;
                    match self.insts.get(pc) {
                        Some(Inst::Char(p)) if p.accepts(c) => next |= 1 << (pc + 1),
                        Some(Inst::Loop(p)) if p.accepts(c) => next |= 1 << pc,
                        _ => {}
                    }
                }
                if next == 0 {
                    return false;
                }
                cur = self.closure_bits(next, false);
            }
            return cur & (1 << n) != 0;
        }
        let mut cur = vec![false; n + 1];
        cur[0] = true;
        self.closure_vec(&mut cur, true);
        let mut next = vec![false; n + 1];
        for c in s.chars() {
            next.fill(false);
            let mut any = false;
            for pc in 0..n {
                if !cur[pc] {
                    continue;
                }
                match &self.insts[pc] {
                    Inst::Char(p) if p.accepts(c) => {
                        next[pc + 1] = true;
                        any = true;
                    }
                    Inst::Loop(p) if p.accepts(c) => {
                        next[pc] = true;
                        any = true;
                    }
                    _ => {}
                }
            }
            if !any {
                return false;
            }
            std::mem::swap(&mut cur, &mut next);
            self.closure_vec(&mut cur, false);
        }
        cur[n]
    }

    fn closure_bits(&self, mut set: u128, at_start: bool) -> u128 {
        for (pc, inst) in self.insts.iter().enumerate() {
            if set & (1 << pc) == 0 {
                continue;
            }
            match inst {
                Inst::Loop(_) => set |= 1 << (pc + 1),
                Inst::Split(target) => set |= (1 << (pc + 1)) | (1 << target),
                Inst::AssertStart if at_start => set |= 1 << (pc + 1),
                _ => {}
            }
        }
        set
    }

    fn closure_vec(&self, set: &mut [bool], at_start: bool) {
        for (pc, inst) in self.insts.iter().enumerate() {
            if !set[pc] {
                continue;
            }
            match inst {
                Inst::Loop(_) => set[pc + 1] = true,
                Inst::Split(target) => {
                    set[pc + 1] = true;
                    set[*target] = true;
                }
                Inst::AssertStart if at_start => set[pc + 1] = true,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(patterns: &[&str]) -> PatternMatcher {
        let patterns: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        PatternMatcher::new(&patterns).unwrap()
    }

    #[test]
    fn read_all_matches_moby() {
        let content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
        assert_eq!(
            parse_dockerignore(content),
            ["test1", "test2", "a/file/here", "lastfile", "!inverted/abs/path", "!", "!"]
        );
        assert_eq!(
            parse_dockerignore("\u{feff}a//b/../c/\r\n  # not a comment\r\n./x\n/\n"),
            ["a/c", "# not a comment", "x", "/"]
        );
    }

    #[test]
    fn clean_like_go() {
        for (input, want) in [
            ("", "."),
            ("a/b", "a/b"),
            ("a//b/./c/", "a/b/c"),
            ("a/../..", ".."),
            ("../a/../b", "../b"),
            ("/../a", "/a"),
            ("/", "/"),
            ("./", "."),
            ("**/", "**"),
        ] {
            assert_eq!(clean(input), want, "{input}");
            assert!(is_clean(want), "{want}");
        }
        for unclean in ["a/", "a//b", "./a", "a/..", "a/../b", "/..", ""] {
            assert!(!is_clean(unclean), "{unclean}");
        }
    }

    #[test]
    fn exclusions_and_parents() {
        let m = pm(&["docs", "!docs/README.md"]);
        assert!(m.matches("docs"));
        assert!(m.matches("docs/other.md"));
        assert!(!m.matches("docs/README.md"));
        assert!(m.has_exclusions());
        let m = pm(&["!fileutils.go", "*.go"]);
        assert!(m.matches("fileutils.go"));
        assert!(!m.matches("."));
        assert!(!pm(&["*"]).matches(""));
        // Not gitignore: a bare name is anchored at the root.
        assert!(!pm(&["foo"]).matches("a/foo"));
        assert!(pm(&["**/foo"]).matches("a/foo"));
        assert!(pm(&["*/foo"]).matches("a/foo/x"));
        assert!(!pm(&["*/foo"]).matches("a/b/foo"));
    }

    #[test]
    fn errors() {
        assert_eq!(Pattern::new("!").unwrap_err(), PatternError::IllegalExclusion);
        assert!(PatternMatcher::new(&["[".to_string()]).is_err());
        assert!(Pattern::new("a[z-a]").is_err());
        assert!(Pattern::new("a\\b").is_err());
        assert!(Pattern::new("[[:nope:]]").is_err());
        // Blank entries are skipped, not errors.
        assert!(PatternMatcher::new(&["  ".to_string()]).unwrap().patterns().is_empty());
    }

    #[test]
    fn regex_quirks_of_moby() {
        // `^` is an unescaped regex anchor in moby's translation.
        assert!(Pattern::new("^a*").unwrap().matches("abc").unwrap());
        assert!(!Pattern::new("x^a*").unwrap().matches("x^abc").unwrap());
        // Without wildcards the same pattern is compared literally.
        assert!(Pattern::new("^a").unwrap().matches("^a").unwrap());
        // Negated classes cross `/`; POSIX and Perl classes work.
        assert!(Pattern::new("a[^x]b").unwrap().matches("a/b").unwrap());
        assert!(Pattern::new("v[[:digit:]]").unwrap().matches("v1").unwrap());
        assert!(Pattern::new("v\\d.txt").unwrap().matches("v7.txt").unwrap());
        assert!(!Pattern::new("v\\d.txt").unwrap().matches("vx.txt").unwrap());
        // `**` (Go's `.`) does not cross a newline; `*` does.
        assert!(!Pattern::new("a/**/b*").unwrap().matches("a/x\ny/bc").unwrap());
        assert!(Pattern::new("a/*/b*").unwrap().matches("a/x\ny/bc").unwrap());
        // `a**b`: `(.*/)?` needs a slash.
        assert!(Pattern::new("a**b").unwrap().matches("ax/b").unwrap());
        assert!(!Pattern::new("a**b").unwrap().matches("axb").unwrap());
    }

    #[test]
    fn long_patterns_use_the_vec_simulation() {
        let long = format!("{}*z", "a?".repeat(80));
        let p = Pattern::new(&long).unwrap();
        let hit = format!("{}qqz", "ab".repeat(80));
        assert!(p.matches(&hit).unwrap());
        assert!(!p.matches(&hit[..hit.len() - 1]).unwrap());
    }

    #[test]
    fn dir_pruning_is_conservative() {
        let m = pm(&["*", "!keep", "!src/**/*.rs", "!docs/api"]);
        assert!(!m.dir_may_contain_included("node_modules"));
        assert!(m.dir_may_contain_included("keep"));
        assert!(m.dir_may_contain_included("src"));
        assert!(m.dir_may_contain_included("docs"));
        assert!(m.dir_may_contain_included("docs/api"));
        assert!(m.dir_may_contain_included("docs/api/v1"));
        assert!(!m.dir_may_contain_included("docs/guide"));
        assert!(!pm(&["*"]).dir_may_contain_included("x"));
        assert!(pm(&["*", "!**/keep"]).dir_may_contain_included("x"));
        assert!(pm(&["*", "!*/keep"]).dir_may_contain_included("x"));
        assert!(!pm(&["*", "!y*/keep"]).dir_may_contain_included("x"));
    }

    /// Exhaustive cross-check of the pruning rule against `matches` on a
    /// small tree: whenever pruning says no, nothing below is included.
    #[test]
    fn dir_pruning_never_hides_included_files() {
        let sets: &[&[&str]] = &[
            &["*", "!a/b"],
            &["a", "!a/*/c"],
            &["**", "!**/c"],
            &["a", "!?/b/c"],
            &["*", "!b*"],
            &["a/b", "!a/b/c", "a/b/c/d"],
        ];
        let names = ["a", "b", "c", "d"];
        let mut paths = Vec::new();
        for x in names {
            paths.push(x.to_string());
            for y in names {
                paths.push(format!("{x}/{y}"));
                for z in names {
                    paths.push(format!("{x}/{y}/{z}"));
                }
            }
        }
        for set in sets {
            let m = pm(set);
            for dir in &paths {
                if !m.matches(dir) || m.dir_may_contain_included(dir) {
                    continue;
                }
                for p in &paths {
                    if p.starts_with(&format!("{dir}/")) {
                        assert!(m.matches(p), "{set:?}: pruned {dir} but {p} is included");
                    }
                }
            }
        }
    }

    #[test]
    fn walkers_skip_excluded_entries_but_enter_dirs_with_reinclusions() {
        let m = PatternMatcher::new(&["*.txt".into(), "**/tmp".into(), "build".into(), "!build/keep".into()]).unwrap();
        assert!(m.excludes_entry("a.txt", false));
        assert!(!m.excludes_entry("sub/a.txt", false));
        assert!(m.excludes_entry("x/y/tmp/z", false));
        assert!(m.excludes_entry("tmp", true));
        assert!(!m.excludes_entry("build", true), "dir with a re-included child is walked");
        assert!(m.excludes_entry("build/other", false));
        assert!(!m.excludes_entry("build/keep", false));
        assert!(!m.excludes_entry("src/main.rs", false));
        assert!(PatternMatcher::new(&["[".into()]).is_err());
        assert!(PatternMatcher::default().is_empty() && !PatternMatcher::default().excludes_entry("a", false));
    }

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for f in files {
            let p = t.path().join(f);
            if let Some(d) = f.strip_suffix('/') {
                std::fs::create_dir_all(t.path().join(d)).unwrap();
            } else {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, "x").unwrap();
            }
        }
        t
    }

    /// Issue 10, difference 10: what fsutil's filtered walk sends.
    #[test]
    fn context_filter_sends_what_fsutil_walk_sends() {
        let t =
            tree(&["volume/two.txt", "volume/data/oneline.txt", "volume/empty/x.txt", "volume/hollow/", "keep.txt"]);
        let f = ContextFilter::new(pm(&["volume/", "!**/oneline.txt"]), t.path().to_path_buf());
        // A wildcard exception: every excluded directory is walked, and
        // sent only as the parent of something sent.
        assert!(!f.ignored("volume"));
        assert!(!f.ignored("volume/data"));
        assert!(!f.ignored("volume/data/oneline.txt"));
        assert!(f.ignored("volume/two.txt"));
        assert!(f.ignored("volume/empty"), "an excluded directory with nothing sent below it");
        assert!(f.ignored("volume/hollow"));
        assert!(!f.ignored("keep.txt"));

        // Literal exceptions: an excluded directory is walked only when an
        // exception (without a trailing `/*` or `/**`) starts with its path.
        let t = tree(&["a/keep/k", "a/other/o", "b/x", "c/d/e"]);
        let f = ContextFilter::new(pm(&["a", "b", "c", "!a/keep/**", "!c/d/e"]), t.path().to_path_buf());
        assert!(!f.ignored("a") && !f.ignored("a/keep") && !f.ignored("a/keep/k"));
        assert!(f.ignored("a/other") && f.ignored("a/other/o"));
        assert!(f.ignored("b") && f.ignored("b/x"));
        assert!(!f.ignored("c/d/e") && !f.ignored("c/d") && !f.ignored("c"));
        let f = ContextFilter::new(pm(&["a"]), t.path().to_path_buf());
        assert!(f.ignored("a") && f.ignored("a/keep/k"));
    }

    /// A hostile context nests excluded directories thousands deep: the
    /// filter neither overflows the stack nor rescans the tree per level.
    #[test]
    fn context_filter_survives_deeply_nested_excluded_dirs() {
        let t = tempfile::tempdir().unwrap();
        // As deep as a path can name (PATH_MAX 4096).
        let depth = 1000;
        let mut deep = t.path().join("junk");
        std::fs::create_dir(&deep).unwrap();
        for _ in 0..depth {
            deep.push("d");
            std::fs::create_dir(&deep).unwrap();
        }
        let f = ContextFilter::new(pm(&["junk", "!**/wanted"]), t.path().to_path_buf());
        assert!(f.ignored("junk"));
        let mid = format!("junk{}", "/d".repeat(depth / 2));
        assert!(f.ignored(&mid));
        std::fs::write(deep.join("wanted"), "w").unwrap();
        let f = ContextFilter::new(pm(&["junk", "!**/wanted"]), t.path().to_path_buf());
        assert!(!f.ignored("junk"));
        assert!(!f.ignored(&mid));
    }
}
