//! `--load` end to end: into a private Docker daemon (Debian's `docker.io`,
//! started by the test on its own socket, no iptables, no bridge) and into
//! podman (with its own storage), then run; and the errors when no engine
//! is reachable.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use util::{TestRegistry, is_root, ok, rbuild, run};

const DOCKER: &str = "/usr/bin/docker";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A dockerd of our own, on a socket in a temp dir.
struct Dockerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Dockerd {
    fn start() -> Dockerd {
        // Under target/: /tmp may be a small tmpfs, and overlay2 wants a real fs.
        let dir = tempfile::tempdir_in(util::shared_tmp()).unwrap();
        let p = dir.path();
        let log = std::fs::File::create(p.join("log")).unwrap();
        let child = Command::new("/usr/sbin/dockerd")
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .arg("--data-root")
            .arg(p.join("data"))
            .arg("--exec-root")
            .arg(p.join("exec"))
            .arg("--pidfile")
            .arg(p.join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", p.join("sock").display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dockerd (package docker.io)");
        let d = Dockerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if d.docker().arg("version").output().is_ok_and(|o| o.status.success()) {
                return d;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("dockerd did not start:\n{}", std::fs::read_to_string(d.dir.path().join("log")).unwrap_or_default());
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("sock").display())
    }

    fn docker(&self) -> Command {
        let mut c = Command::new(DOCKER);
        c.env("DOCKER_HOST", self.host());
        c
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM, so dockerd stops the containerd it started.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn context(reg: &TestRegistry, message: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {}/busybox:latest\nRUN echo {message} > /msg\nCMD [\"cat\", \"/msg\"]\n", reg.addr),
    )
    .unwrap();
    ctx
}

fn build_load(store: &Path, ctx: &Path, envs: &[(&str, &str)], extra: &[&str]) -> Output {
    let mut cmd = rbuild();
    cmd.env_remove("RBUILD_LOAD").env_remove("DOCKER_HOST");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.arg("--root").arg(store).args(["build", "--progress", "plain", "--load"]).args(extra).arg(ctx);
    cmd.output().unwrap()
}

#[test]
fn load_into_a_private_dockerd_then_docker_run_prints_the_output() {
    if !is_root() {
        eprintln!("skipped: starting dockerd needs root");
        return;
    }
    let daemon = Dockerd::start();
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let ctx = context(&reg, "loaded-into-docker");
    let store = tempfile::tempdir().unwrap();
    let iid = store.path().join("iid");
    let host = daemon.host();
    let out = ok(build_load(
        store.path(),
        ctx.path(),
        &[("DOCKER_HOST", &host)],
        &["-t", "loadtest:1", "--iidfile", iid.to_str().unwrap()],
    ));
    assert!(stderr(&out).contains("Loaded image: loadtest:1"), "{}", stderr(&out));
    let ran = run(daemon.docker().args(["run", "--rm", "--network", "none", "loadtest:1"]));
    assert_eq!(String::from_utf8_lossy(&ran), "loaded-into-docker\n");
    // Docker's image ID is ours: the same config bytes.
    let id = run(daemon.docker().args(["image", "inspect", "-f", "{{.Id}}", "loadtest:1"]));
    assert_eq!(String::from_utf8_lossy(&id).trim(), std::fs::read_to_string(&iid).unwrap());

    // `-o type=docker` without `dest` is `--load` (buildx's spelling).
    let ctx2 = context(&reg, "via-output-type-docker");
    ok(rbuild()
        .env("DOCKER_HOST", &host)
        .arg("--root")
        .arg(store.path())
        .args(["build", "-q", "-t", "typedocker:1", "-o", "type=docker"])
        .arg(ctx2.path())
        .output()
        .unwrap());
    let ran = run(daemon.docker().args(["run", "--rm", "--network", "none", "typedocker:1"]));
    assert_eq!(String::from_utf8_lossy(&ran), "via-output-type-docker\n");

    // bake --load.
    let ctx3 = context(&reg, "baked-and-loaded");
    std::fs::write(ctx3.path().join("docker-bake.hcl"), "target \"default\" {\n  tags = [\"baked:1\"]\n}\n").unwrap();
    ok(rbuild()
        .env("DOCKER_HOST", &host)
        .current_dir(ctx3.path())
        .arg("--root")
        .arg(store.path())
        .args(["bake", "--progress", "plain", "--load"])
        .output()
        .unwrap());
    let ran = run(daemon.docker().args(["run", "--rm", "--network", "none", "baked:1"]));
    assert_eq!(String::from_utf8_lossy(&ran), "baked-and-loaded\n");

    // What docker 20.10 saves (its legacy archive) loads back into rbuild.
    let saved = store.path().join("saved.tar");
    run(daemon.docker().args(["save", "-o", saved.to_str().unwrap(), "loadtest:1"]));
    let fresh = tempfile::tempdir().unwrap();
    let out =
        ok(rbuild().arg("--root").arg(fresh.path()).args(["load", "-i", saved.to_str().unwrap()]).output().unwrap());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Loaded image: loadtest:1\n");
    let v: serde_json::Value = serde_json::from_slice(
        &ok(rbuild().arg("--root").arg(fresh.path()).args(["inspect", "loadtest:1"]).output().unwrap()).stdout,
    )
    .unwrap();
    assert_eq!(v[0]["Id"], std::fs::read_to_string(&iid).unwrap());

    // Several platforms cannot go into a docker engine: said before building.
    let out =
        build_load(store.path(), ctx.path(), &[("DOCKER_HOST", &host)], &["--platform", "linux/amd64,linux/arm64"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("`--load` loads one platform's image"), "{}", stderr(&out));
}

#[test]
fn load_without_a_reachable_engine_is_a_clear_error() {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY Dockerfile /\n").unwrap();
    let store = tempfile::tempdir().unwrap();
    let empty_path = tempfile::tempdir().unwrap();
    let nowhere = format!("unix://{}", store.path().join("no.sock").display());
    let path = empty_path.path().to_str().unwrap();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("DOCKER_HOST", &nowhere), ("PATH", path)], "no container engine is reachable for `--load`"),
        (vec![("DOCKER_HOST", &nowhere), ("RBUILD_LOAD", "docker")], "cannot connect to the Docker daemon at"),
        (vec![("RBUILD_LOAD", "containerd")], "`RBUILD_LOAD=containerd` names no engine"),
        (vec![("DOCKER_HOST", "tcp://127.0.0.1:2375")], "only `unix://` sockets are"),
    ];
    for (envs, want) in cases {
        let out = build_load(store.path(), ctx.path(), &envs, &["-t", "x"]);
        assert!(!out.status.success(), "{envs:?}");
        assert!(stderr(&out).contains(want), "{envs:?}: expected `{want}` in:\n{}", stderr(&out));
    }
}

fn podman_storage(dir: &Path) -> PathBuf {
    let conf = dir.join("storage.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            dir.join("graph").display(),
            dir.join("run").display()
        ),
    )
    .unwrap();
    conf
}

#[test]
fn load_into_podman_with_rbuild_load_podman() {
    if !is_root() {
        eprintln!("skipped: podman's storage here is set up for root");
        return;
    }
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let ctx = context(&reg, "loaded-into-podman");
    let store = tempfile::tempdir().unwrap();
    let pod = tempfile::tempdir_in(util::shared_tmp()).unwrap();
    let conf = podman_storage(pod.path());
    let conf = conf.to_str().unwrap();
    let out = ok(build_load(
        store.path(),
        ctx.path(),
        &[("RBUILD_LOAD", "podman"), ("CONTAINERS_STORAGE_CONF", conf)],
        &["-t", "podtest:1"],
    ));
    assert!(stderr(&out).contains("Loaded image: docker.io/library/podtest:1"), "{}", stderr(&out));
    let cmd = run(Command::new("podman").env("CONTAINERS_STORAGE_CONF", conf).args([
        "image",
        "inspect",
        "-f",
        "{{.Config.Cmd}}",
        "podtest:1",
    ]));
    assert_eq!(String::from_utf8_lossy(&cmd).trim(), "[cat /msg]");
    // The layer podman unpacked holds what the RUN wrote.
    let mount = run(Command::new("podman").env("CONTAINERS_STORAGE_CONF", conf).args(["image", "mount", "podtest:1"]));
    let mount = String::from_utf8_lossy(&mount).trim().to_string();
    assert_eq!(std::fs::read_to_string(Path::new(&mount).join("msg")).unwrap(), "loaded-into-podman\n");
    let _ =
        Command::new("podman").env("CONTAINERS_STORAGE_CONF", conf).args(["image", "unmount", "podtest:1"]).status();
}
