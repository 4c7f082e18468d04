//! `rbuild completion SHELL` and `rbuild debug man DIR`: generated from the
//! parser's own definitions, so they name the real commands and flags.

mod util;

use std::process::Command;

use util::{ok, rbuild, run};

#[test]
fn completion_scripts_name_the_commands_and_flags_and_parse_in_their_shell() {
    let bash = ok(rbuild().args(["completion", "bash"]).output().unwrap()).stdout;
    let bash = String::from_utf8(bash).unwrap();
    assert!(bash.contains("_rbuild()"), "{bash}");
    for word in ["build", "bake", "history", "save", "load", "--load", "--no-cache", "--cache-from"] {
        assert!(bash.contains(word), "bash completion lacks `{word}`");
    }
    // It is valid bash and defines the completion for `rbuild`.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("rbuild.bash");
    std::fs::write(&script, &bash).unwrap();
    let out = run(Command::new("bash").arg("-c").arg(format!("source {} && complete -p rbuild", script.display())));
    assert!(String::from_utf8_lossy(&out).contains("_rbuild"), "{}", String::from_utf8_lossy(&out));

    let zsh = String::from_utf8(ok(rbuild().args(["completion", "zsh"]).output().unwrap()).stdout).unwrap();
    assert!(zsh.starts_with("#compdef rbuild"), "{zsh}");
    let fish = String::from_utf8(ok(rbuild().args(["completion", "fish"]).output().unwrap()).stdout).unwrap();
    assert!(fish.contains("complete -c rbuild") && fish.contains("inspect"), "{fish}");
    let bad = rbuild().args(["completion", "tcsh"]).output().unwrap();
    assert!(!bad.status.success());
    // Completion works even with a broken config file.
    let broken = dir.path().join("bad.toml");
    std::fs::write(&broken, "nonsense = 1\n").unwrap();
    ok(rbuild().arg("--config").arg(&broken).args(["completion", "bash"]).output().unwrap());
}

#[test]
fn man_pages_cover_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man1");
    ok(rbuild().args(["debug", "man"]).arg(&man).output().unwrap());
    let top = std::fs::read_to_string(man.join("rbuild.1")).unwrap();
    assert!(top.contains(".TH rbuild 1"), "{top}");
    for command in ["build", "bake", "tag", "rmi", "inspect", "history", "save", "load", "completion"] {
        let page = std::fs::read_to_string(man.join(format!("rbuild-{command}.1")))
            .unwrap_or_else(|e| panic!("no page for `{command}`: {e}"));
        assert!(page.contains(&format!(".TH rbuild-{command} 1")), "{page}");
    }
    let build = std::fs::read_to_string(man.join("rbuild-build.1")).unwrap();
    assert!(build.contains("\\-\\-load") && build.contains("\\-\\-cache\\-to"), "{build}");
}
