//! The configuration file end to end: registry mirrors for `FROM` (tried in
//! order, falling back to the registry), errors with file:line:column, the
//! default location, and the automatic GC after a build, which leaves a
//! running build's data alone.

mod util;

use std::path::Path;
use std::process::Output;

use util::{TestRegistry, ok, rbuild};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn dockerfile(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), text).unwrap();
    dir
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Pushes `FROM busybox` + `/who` saying `who` to `reference`.
fn push_marked(base: &TestRegistry, reference: &str, who: &str) {
    let ctx = dockerfile(&format!("FROM {}/busybox:latest\nRUN echo {who} > /who\n", base.addr));
    let store = tempfile::tempdir().unwrap();
    ok(rbuild()
        .arg("--root")
        .arg(store.path())
        .args(["build", "-q", "--push", "-t", reference])
        .arg(ctx.path())
        .output()
        .unwrap());
}

/// Builds `FROM from` + copies `/who` out; returns what it says.
fn who_answers(config: &Path, from: &str) -> Result<String, String> {
    let ctx = dockerfile(&format!("FROM {from}\nRUN cat /who > /seen\n"));
    let store = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = rbuild()
        .arg("--root")
        .arg(store.path())
        .arg("--config")
        .arg(config)
        .args(["build", "--progress", "plain", "-o"])
        .arg(format!("type=local,dest={}", out_dir.path().display()))
        .arg(ctx.path())
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(stderr(&out));
    }
    Ok(std::fs::read_to_string(out_dir.path().join("seen")).unwrap().trim().to_string())
}

#[test]
fn registry_mirrors_serve_from_in_order_and_fall_back_to_the_registry() {
    let base = TestRegistry::start();
    base.push_busybox("busybox:latest");
    let origin = TestRegistry::start();
    let mirror = TestRegistry::start();
    let empty_mirror = TestRegistry::start();
    // The same name on both, different content: who answers is visible.
    push_marked(&base, &origin.reference("pick:1"), "origin");
    push_marked(&base, &mirror.reference("pick:1"), "mirror");
    // Only the registry has this one.
    push_marked(&base, &origin.reference("only-origin:1"), "origin-fallback");
    // docker.io is unreachable here: only a mirror can answer for it.
    push_marked(&base, &mirror.reference("library/hub-image:1"), "hub-via-mirror");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[registry.\"{o}\"]\nmirrors = [\"{e}\", \"{m}\"]\n\n[registry.\"docker.io\"]\nmirrors = [\"{e}\", \"{m}\"]\n",
            o = origin.addr,
            e = empty_mirror.addr,
            m = mirror.addr
        ),
    );
    // The empty mirror fails, the second mirror answers before the registry.
    assert_eq!(who_answers(&config, &origin.reference("pick:1")).unwrap(), "mirror");
    // Neither mirror has it: the registry itself.
    assert_eq!(who_answers(&config, &origin.reference("only-origin:1")).unwrap(), "origin-fallback");
    // `FROM hub-image:1` is docker.io/library/hub-image:1, served by the mirror.
    assert_eq!(who_answers(&config, "hub-image:1").unwrap(), "hub-via-mirror");
    // Without the config, the same FROM reaches the registry.
    let none_dir = tempfile::tempdir().unwrap();
    let none = write_config(none_dir.path(), "");
    assert_eq!(who_answers(&none, &origin.reference("pick:1")).unwrap(), "origin");
    let err = who_answers(&none, "hub-image:1").unwrap_err();
    assert!(err.contains("hub-image"), "{err}");
}

#[test]
fn config_errors_name_file_line_and_column_and_the_default_path_is_read() {
    let ctx = dockerfile("FROM scratch\nCOPY Dockerfile /\n");
    let dir = tempfile::tempdir().unwrap();
    let bad = write_config(dir.path(), "jobs = 2\n\n[registry.\"docker.io\"]\nmirorrs = [\"x\"]\n");
    let store = tempfile::tempdir().unwrap();
    let out = rbuild()
        .arg("--root")
        .arg(store.path())
        .arg("--config")
        .arg(&bad)
        .arg("build")
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let want = format!("{}:4:1: unknown field `mirorrs`", bad.display());
    assert!(stderr(&out).contains(&want), "expected `{want}` in:\n{}", stderr(&out));
    // $XDG_CONFIG_HOME/rbuild/config.toml is read when no --config is given.
    let xdg = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(xdg.path().join("rbuild")).unwrap();
    std::fs::write(xdg.path().join("rbuild/config.toml"), "[gc]\nkeep-storage = \"lots\"\n").unwrap();
    let out =
        rbuild().env("XDG_CONFIG_HOME", xdg.path()).arg("--root").arg(store.path()).arg("images").output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("rbuild/config.toml:2:16: invalid `keep-storage = \"lots\"`"), "{}", stderr(&out));
    // A missing --config file is an error; a missing default file is not.
    let out = rbuild()
        .arg("--root")
        .arg(store.path())
        .arg("--config")
        .arg(dir.path().join("nope.toml"))
        .arg("images")
        .output()
        .unwrap();
    assert!(stderr(&out).contains("cannot read the config file"), "{}", stderr(&out));
    let empty_xdg = tempfile::tempdir().unwrap();
    ok(rbuild()
        .env("XDG_CONFIG_HOME", empty_xdg.path())
        .arg("--root")
        .arg(store.path())
        .arg("images")
        .output()
        .unwrap());
}

fn du(store: &Path) -> (u64, String) {
    let out = ok(rbuild().arg("--root").arg(store).arg("du").output().unwrap());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let records = text
        .lines()
        .find(|l| l.starts_with("cache records"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap();
    (records, text)
}

#[test]
fn automatic_gc_after_a_build_keeps_tagged_images_and_running_builds() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let store = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Cache nobody tags: a 3 MB layer, built without a GC policy.
    let big = dockerfile(&format!("FROM {}/busybox:latest\nRUN head -c 3000000 /dev/urandom > /big\n", reg.addr));
    let no_gc = write_config(dir.path(), "");
    let local = tempfile::tempdir().unwrap();
    ok(rbuild()
        .arg("--root")
        .arg(store.path())
        .arg("--config")
        .arg(&no_gc)
        .args(["build", "-q", "-o"])
        .arg(format!("type=local,dest={}", local.path().display()))
        .arg(big.path())
        .output()
        .unwrap());
    let (records_before, before) = du(store.path());
    assert!(records_before >= 1, "{before}");

    // A build that sleeps while a GC runs: what it holds must survive.
    let gc_dir = tempfile::tempdir().unwrap();
    let gc = gc_dir.path().join("config.toml");
    std::fs::write(&gc, "[gc]\nkeep-storage = \"1kB\"\n").unwrap();
    let slow = dockerfile(&format!(
        "FROM {}/busybox:latest\nRUN sleep 6 && cat /bin/busybox > /copy && echo survived > /state\n",
        reg.addr
    ));
    let slow_out = tempfile::tempdir().unwrap();
    let running = rbuild()
        .arg("--root")
        .arg(store.path())
        .arg("--config")
        .arg(&no_gc)
        .args(["build", "-q", "-o"])
        .arg(format!("type=local,dest={}", slow_out.path().display()))
        .arg(slow.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));

    // A small tagged build with a tiny keep-storage: it GCs when done.
    let small = dockerfile("FROM scratch\nCOPY Dockerfile /Dockerfile\n");
    let out = ok(rbuild()
        .arg("--root")
        .arg(store.path())
        .arg("--config")
        .arg(&gc)
        .args(["build", "--progress", "plain", "-t", "small:1"])
        .arg(small.path())
        .output()
        .unwrap());
    let err = stderr(&out);
    assert!(err.contains("automatic GC (store at") && err.contains("> keep-storage 1kB): reclaimed"), "{err}");
    let (records_after, after) = du(store.path());
    assert!(records_after < records_before, "nothing pruned:\n{before}\n{after}");
    // The tagged image is whole: it saves (every blob is read and checked).
    ok(rbuild().arg("--root").arg(store.path()).args(["save", "-o", "/dev/null", "small:1"]).output().unwrap());

    let slow_done = running.wait_with_output().unwrap();
    assert!(slow_done.status.success(), "the running build failed:\n{}", stderr(&slow_done));
    assert_eq!(std::fs::read_to_string(slow_out.path().join("state")).unwrap(), "survived\n");
    assert!(slow_out.path().join("copy").metadata().unwrap().len() > 100_000);
    // No policy, no GC message.
    let out = ok(rbuild()
        .arg("--root")
        .arg(store.path())
        .arg("--config")
        .arg(&no_gc)
        .args(["build", "--progress", "plain", "-t", "small:2"])
        .arg(small.path())
        .output()
        .unwrap());
    assert!(!stderr(&out).contains("automatic GC"), "{}", stderr(&out));
}

#[test]
fn a_ca_file_named_in_the_config_is_trusted_for_login_and_pull() {
    let password = "pw-config-ca";
    let reg = TestRegistry::start_tls_with_auth("alice", password);
    reg.push_busybox("busybox:latest");
    let ca = reg.tls.as_ref().unwrap();
    let env = tempfile::tempdir().unwrap();
    // Relative to the config file.
    std::fs::copy(&ca.ca_cert, env.path().join("registry-ca.pem")).unwrap();
    let config = write_config(env.path(), &format!("[registry.\"{}\"]\nca = [\"registry-ca.pem\"]\n", reg.addr));
    let pw = env.path().join("pw");
    std::fs::write(&pw, password).unwrap();
    let login = |with_config: bool| {
        let mut cmd = rbuild();
        cmd.env("HOME", env.path()).env("DOCKER_CONFIG", env.path().join("docker")).env_remove("SSL_CERT_FILE");
        if with_config {
            cmd.arg("--config").arg(&config);
        }
        cmd.args(["login", "-u", "alice", "--password-stdin", &reg.addr]).stdin(std::fs::File::open(&pw).unwrap());
        cmd.output().unwrap()
    };
    // Without the file the certificate is not trusted.
    assert!(!login(false).status.success());
    let out = ok(login(true));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Login Succeeded"), "{}", stderr(&out));
    // And a build pulls its base through the same trust.
    let ctx = dockerfile(&format!("FROM {}\nRUN echo over-tls > /tls\n", reg.reference("busybox:latest")));
    let store = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    ok(rbuild()
        .env("HOME", env.path())
        .env("DOCKER_CONFIG", env.path().join("docker"))
        .env_remove("SSL_CERT_FILE")
        .arg("--root")
        .arg(store.path())
        .arg("--config")
        .arg(&config)
        .args(["build", "-q", "-o"])
        .arg(format!("type=local,dest={}", local.path().display()))
        .arg(ctx.path())
        .output()
        .unwrap());
    assert_eq!(std::fs::read_to_string(local.path().join("tls")).unwrap(), "over-tls\n");
}
