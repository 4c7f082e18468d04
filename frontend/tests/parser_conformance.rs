//! BuildKit's parser golden files (`parser/testfiles`, `testfiles-negative`,
//! `testfile-line`) run against `rbuild_frontend::parser`.

use std::path::{Path, PathBuf};

mod common;

use rbuild_frontend::parser;

fn conformance_dir() -> PathBuf {
    common::conformance_dir("")
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no cases in {}", dir.display());
    out
}

#[test]
fn testfiles() {
    let dir = conformance_dir().join("buildkit/parser/testfiles");
    let cases = cases(&dir);
    let mut failures = Vec::new();
    for case in &cases {
        let text = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        let expected = std::fs::read_to_string(case.join("result")).unwrap();
        match parser::parse(&text) {
            Ok(ast) if ast.dump() == expected => {}
            Ok(ast) => failures.push(format!("{}:\n--- expected\n{expected}--- got\n{}", case.display(), ast.dump())),
            Err(e) => failures.push(format!("{}: {e}", case.display())),
        }
    }
    println!("parser testfiles: {}/{}", cases.len() - failures.len(), cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn testfiles_negative() {
    let dir = conformance_dir().join("buildkit/parser/testfiles-negative");
    let cases = cases(&dir);
    let mut failures = Vec::new();
    for case in &cases {
        let text = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        if let Ok(ast) = parser::parse(&text) {
            failures.push(format!("{} parsed:\n{}", case.display(), ast.dump()));
        }
    }
    println!("parser testfiles-negative: {}/{}", cases.len() - failures.len(), cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn testfile_line() {
    let path = conformance_dir().join("buildkit/parser/testfile-line/Dockerfile");
    let text = std::fs::read_to_string(path).unwrap();
    let ast = parser::parse(&text).unwrap();
    assert_eq!((ast.span.start_line, ast.span.end_line), (5, 31));
    let spans: Vec<(usize, usize)> = ast.nodes.iter().map(|n| (n.span.start_line, n.span.end_line)).collect();
    assert_eq!(spans, vec![(5, 5), (11, 12), (17, 31)]);
    println!("parser testfile-line: 1/1");
}

/// Every Dockerfile in the conformance data parses or fails cleanly (no panic).
#[test]
fn no_panics_on_conformance_dockerfiles() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("Dockerfile")) {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&conformance_dir(), &mut files);
    assert!(files.len() > 30);
    for file in &files {
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        let _ = parser::parse(&text);
        let _ = rbuild_frontend::instructions::parse_dockerfile(&text, &file.display().to_string());
    }
}

/// A small deterministic PRNG (xorshift64*), so the property test needs no
/// dependency and every failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random inputs (raw bytes, and sequences of Dockerfile-ish tokens that
/// reach deeper paths: flags, mounts, heredocs, directives, JSON) never
/// make the parser or the instruction layer panic.
#[test]
fn random_input_never_panics() {
    const TOKENS: &[&str] = &[
        "FROM ",
        "RUN ",
        "COPY ",
        "ADD ",
        "ONBUILD ",
        "HEALTHCHECK ",
        "CMD ",
        "ENV ",
        "LABEL ",
        "ARG ",
        "SHELL ",
        "VOLUME ",
        "EXPOSE ",
        "USER ",
        "WORKDIR ",
        "STOPSIGNAL ",
        "MAINTAINER ",
        "ENTRYPOINT ",
        "NONE ",
        "AS ",
        "<<EOF",
        "<<-EOF",
        "<<'EOF'",
        "<<\"EOF\"",
        "EOF",
        "\tEOF",
        "2<<X",
        "X",
        "\n",
        "\r\n",
        "\\",
        "`",
        "\"",
        "'",
        "[",
        "]",
        ",",
        "=",
        " ",
        "\t",
        "--",
        "--mount=",
        "type=cache",
        "type=secret",
        "type=tmpfs,size=",
        "target=/x",
        "mode=",
        "uid=",
        "--network=",
        "--interval=",
        "--retries=",
        "--from=",
        "--link",
        "--chmod=",
        "# escape=`\n",
        "# syntax=x\n",
        "# check=y\n",
        "#",
        "$",
        "${",
        "}",
        "é",
        "\u{feff}",
        "\u{a0}",
        "1.5",
        "ms",
        "h",
        "0",
        "-1",
        "9999999999999999999999",
        "a=b",
        "\"a\"",
        "[\"a\", 1]",
        "[[[[",
        "--=",
        "- -",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..10_000 {
        let text = if round % 4 == 0 {
            let len = rng.below(200);
            let bytes: Vec<u8> = (0..len).map(|_| (rng.next() >> 24) as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            let len = rng.below(60);
            let mut s = String::new();
            for _ in 0..len {
                s.push_str(TOKENS[rng.below(TOKENS.len())]);
            }
            s
        };
        let result = std::panic::catch_unwind(|| {
            if let Ok(ast) = parser::parse(&text) {
                let _ = ast.dump();
            }
            if let Err(e) = rbuild_frontend::instructions::parse_dockerfile(&text, "Dockerfile") {
                let _ = e.to_string();
            }
        });
        assert!(result.is_ok(), "panic on input {text:?}");
    }
}
