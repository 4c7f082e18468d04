//! moby/patternmatcher's own vectors (`TestMatches`, `matchTests`) run
//! against `rbuild_solver::dockerignore`. Data:
//! `/work/shared/conformance/patternmatcher` (formats in `SOURCES.md`).

use std::path::PathBuf;

mod common;

use rbuild_solver::dockerignore::PatternMatcher;

fn data_dir() -> PathBuf {
    common::conformance_dir("patternmatcher")
}

/// Rows of a TSV file, comments skipped, each field as written.
fn rows(name: &str) -> Vec<(usize, Vec<String>)> {
    let path = data_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.split('\t').map(str::to_string).collect()))
        .collect()
}

fn json<T: serde::de::DeserializeOwned>(field: &str, line: usize) -> T {
    serde_json::from_str(field).unwrap_or_else(|e| panic!("line {line}: {field:?}: {e}"))
}

#[test]
fn matches_tsv() {
    let (mut total, mut passed) = (0, 0);
    let mut failures = Vec::new();
    for (line, fields) in rows("matches.tsv") {
        assert_eq!(fields.len(), 3, "line {line}");
        let patterns: Vec<String> = json(&fields[0], line);
        let path: String = json(&fields[1], line);
        let want: bool = json(&fields[2], line);
        total += 1;
        let got = PatternMatcher::new(&patterns).map(|m| m.matches(&path));
        if got == Ok(want) {
            passed += 1;
        } else {
            failures.push(format!("line {line}: {patterns:?} {path:?} => {got:?}, want {want}"));
        }
    }
    println!("dockerignore matches.tsv: {passed}/{total}");
    assert!(total > 60, "suspiciously few vectors: {total}");
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

#[test]
fn match_tsv() {
    let (mut total, mut passed) = (0, 0);
    let mut failures = Vec::new();
    for (line, fields) in rows("match.tsv") {
        assert_eq!(fields.len(), 4, "line {line}");
        let pattern: String = json(&fields[0], line);
        let path: String = json(&fields[1], line);
        let want: bool = json(&fields[2], line);
        let want_err = match fields[3].as_str() {
            "nil" => false,
            "filepath.ErrBadPattern" => true,
            other => panic!("line {line}: unknown error {other:?}"),
        };
        total += 1;
        // As moby's TestMatch: the one-pattern matcher; a bad pattern is
        // an error from compiling it, and then nothing matches.
        let got = PatternMatcher::new(std::slice::from_ref(&pattern)).map(|m| m.matches(&path));
        let ok = match &got {
            Err(_) => want_err && !want,
            Ok(m) => !want_err && *m == want,
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!("line {line}: {pattern:?} {path:?} => {got:?}, want {want} (error: {want_err})"));
        }
    }
    println!("dockerignore match.tsv: {passed}/{total}");
    assert!(total > 40, "suspiciously few vectors: {total}");
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}
