//! BuildKit's own shell-lexer vectors (`envVarTest`, `wordsTest`) run against
//! `rbuild_frontend::shell`. Data: `/work/shared/conformance/buildkit/shell`
//! (see `SOURCES.md` there for the formats).

use std::collections::BTreeMap;
use std::path::PathBuf;

mod common;

use rbuild_frontend::shell::Lexer;

fn data_dir() -> PathBuf {
    common::conformance_dir("buildkit/shell")
}

fn read(name: &str) -> String {
    let path = data_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn env_var_test() {
    let text = read("envVarTest");
    let env: BTreeMap<&str, &str> = [("PWD", "/home"), ("SHELL", "bash"), ("KOREAN", "한국어"), ("NULL", "")].into();
    let lookup = |k: &str| env.get(k).map(|v| v.to_string());
    let lexer = Lexer::new('\\');
    let (mut total, mut passed) = (0, 0);
    let mut failures = Vec::new();
    for (lineno, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').collect();
        assert_eq!(fields.len(), 3, "line {}: {line:?}", lineno + 1);
        let (tag, input, expected) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        assert!(matches!(tag, "A" | "U" | "W"), "line {}: bad tag {tag}", lineno + 1);
        if tag == "W" {
            continue;
        }
        total += 1;
        let got = lexer.expand_word(input, &lookup);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(value), want) => want != "error" && value == want,
            (Err(_), _) => false,
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!("line {}: {input:?} => {got:?}, want {expected:?}", lineno + 1));
        }
    }
    println!("shell envVarTest: {passed}/{total}");
    assert!(total > 200, "suspiciously few vectors: {total}");
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

#[test]
fn words_test() {
    let text = read("wordsTest");
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let lexer = Lexer::new('\\');
    let (mut total, mut passed) = (0, 0);
    let mut failures = Vec::new();
    for (lineno, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let rest = rest.trim_start_matches(' ');
            let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
            env.insert(k.to_string(), v.to_string());
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 2, "line {}: {line:?}", lineno + 1);
        let input = fields[0].trim();
        let expected: Vec<&str> = fields[1].trim_start_matches(' ').split(',').collect();
        total += 1;
        let got = lexer.expand_words(input, &|k| env.get(k).cloned()).unwrap_or_else(|_| vec!["error".to_string()]);
        if got == expected {
            passed += 1;
        } else {
            failures.push(format!("line {}: {input:?} => {got:?}, want {expected:?}", lineno + 1));
        }
    }
    println!("shell wordsTest: {passed}/{total}");
    assert!(total > 20, "suspiciously few vectors: {total}");
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}
