//! A bake file is untrusted input (CI runs whatever a pull request holds):
//! hostile files must fail with an error, never crash, hang or exhaust
//! memory.

use std::collections::BTreeMap;

use rbuild::bake::{BakeFile, ParseOptions, parse_files, read_targets};

fn resolve(text: &str) -> Result<String, String> {
    let files = [BakeFile { name: "docker-bake.hcl".into(), data: text.as_bytes().to_vec() }];
    let config = parse_files(&files, &ParseOptions::default()).map_err(|e| e.to_string())?;
    let r = read_targets(&config, &["default".into()], &[], &BTreeMap::new()).map_err(|e| e.to_string())?;
    Ok(rbuild::bake::print::print_json(&r).pretty())
}

#[test]
fn deeply_nested_expression_is_an_error_with_a_short_line() {
    let text =
        format!("target \"default\" {{\n  args = {{ X = {}1{} }}\n}}\n", "(".repeat(100_000), ")".repeat(100_000));
    let err = resolve(&text).unwrap_err();
    assert!(err.contains("nesting depth"), "{err}");
    assert!(err.len() < 1000, "the error must not echo the whole line ({} bytes)", err.len());
}

#[test]
fn long_variable_chain_is_an_error_not_a_stack_overflow() {
    let n = 50_000;
    let mut text: String = (0..n).map(|i| format!("variable \"V{i}\" {{ default = V{} }}\n", i + 1)).collect();
    text.push_str(&format!(
        "variable \"V{n}\" {{ default = \"end\" }}\ntarget \"default\" {{ args = {{ X = V0 }} }}\n"
    ));
    let err = resolve(&text).unwrap_err();
    assert!(err.contains("nests deeper"), "{err}");
}

#[test]
fn recursive_function_is_an_error() {
    let err =
        resolve("function \"f\" {\n  params = [x]\n  result = f(x)\n}\ntarget \"default\" { args = { X = f(1) } }\n")
            .unwrap_err();
    assert!(err.contains("function cycle not allowed for f"), "{err}");
}

#[test]
fn target_reference_cycle_is_an_error() {
    let err = resolve("target \"default\" { tags = target.b.tags }\ntarget \"b\" { tags = target.default.tags }\n")
        .unwrap_err();
    assert!(err.contains("reference cycle not allowed"), "{err}");
}

#[test]
fn huge_matrix_is_refused() {
    let err =
        resolve("target \"default\" {\n  name = \"m-${a}-${b}\"\n  matrix = { a = range(1000), b = range(1000) }\n}\n")
            .unwrap_err();
    assert!(err.contains("matrix expands to more than"), "{err}");
}

#[test]
fn huge_padding_is_refused() {
    let err = resolve("target \"default\" { args = { X = format(\"%999999999d\", 1) } }\n").unwrap_err();
    assert!(err.contains("at most"), "{err}");
    let err = resolve("target \"default\" { args = { X = indent(1e12, \"a\\nb\") } }\n").unwrap_err();
    assert!(err.contains("indent must be"), "{err}");
}

#[test]
fn inherits_and_link_cycles_are_errors() {
    let err =
        resolve("target \"default\" { inherits = [\"b\"] }\ntarget \"b\" { inherits = [\"default\"] }\n").unwrap_err();
    assert!(err.contains("inherits cycle"), "{err}");
    let err = resolve("target \"default\" { contexts = { x = \"target:b\" } }\ntarget \"b\" { contexts = { y = \"target:default\" } }\n").unwrap_err();
    assert!(err.contains("infinite loop"), "{err}");
}

#[test]
fn target_names_cannot_escape_into_paths() {
    // Names end up in file names (inline Dockerfiles, metadata): only
    // `[a-zA-Z0-9_-]` is accepted, also for names computed by `name`.
    let err = resolve("target \"../x\" {}\n").unwrap_err();
    assert!(err.contains("are allowed"), "{err}");
    let err = resolve("target \"m\" {\n  name = \"../${v}\"\n  matrix = { v = [\"a\"] }\n}\n").unwrap_err();
    assert!(err.contains("are allowed"), "{err}");
}
