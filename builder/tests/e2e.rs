//! End-to-end tests: real builds with the `rbuild` binary against a real
//! `docker-registry` on loopback, checked with independent tools (`umoci`,
//! `skopeo`, `tar`).

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use util::{TestRegistry, ok, rbuild, run};
use util::{ensure_test_user, is_root};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata");

/// Copies `testdata/<case>` into a fresh temp dir (tests may modify it).
fn context(case: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp context");
    run(Command::new("cp").arg("-a").arg(format!("{TESTDATA}/{case}/.")).arg(dir.path()));
    dir
}

fn build(store: &Path, ctx: &Path, extra: &[&str]) -> Output {
    rbuild().arg("--root").arg(store).arg("build").args(extra).arg(ctx).output().expect("run rbuild")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `tar -tv` listing of every layer of an OCI layout dir (tag `latest`).
fn layer_listings(layout: &Path) -> Vec<String> {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(layout, manifest_digest)).unwrap()).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let out = run(Command::new("tar").arg("-tvzf").arg(blob(layout, l["digest"].as_str().unwrap())));
            String::from_utf8(out).unwrap()
        })
        .collect()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

fn umoci_unpack(layout: &Path, tag: &str) -> tempfile::TempDir {
    let bundle = tempfile::tempdir().unwrap();
    let target = bundle.path().join("b");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&target));
    bundle
}

/// A fresh context directory holding a Dockerfile with `text`.
fn dockerfile_dir(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp context");
    std::fs::write(dir.path().join("Dockerfile"), text).expect("write Dockerfile");
    dir
}

/// `testdata/e2e/multistage` with its `archive.tar.gz` (for `ADD`) made
/// from `archive/`.
fn multistage_context() -> tempfile::TempDir {
    let ctx = context("e2e/multistage");
    run(Command::new("tar")
        .arg("-czf")
        .arg(ctx.path().join("archive.tar.gz"))
        .arg("-C")
        .arg(ctx.path().join("archive"))
        .arg("."));
    ctx
}

fn registry_with_busybox() -> TestRegistry {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    reg
}

#[test]
fn multistage_build_is_accepted_by_umoci_and_skopeo() {
    let reg = registry_with_busybox();
    let ctx = multistage_context();
    let store = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let layout = out_dir.path().join("layout");
    let out = ok(build(
        store.path(),
        ctx.path(),
        &[
            "--build-arg",
            &format!("REGISTRY={}", reg.addr),
            "-t",
            "e2e:latest",
            "--progress",
            "plain",
            "-o",
            &format!("type=oci,dest={},tar=false", layout.display()),
        ],
    ));
    let log = stderr(&out);
    assert!(!log.contains("the unused stage ran"), "unused stage must not run:\n{log}");
    // `COPY --from=build` into a new path shares the unchanged files' inodes
    // with the build stage's snapshot instead of copying them.
    let shared = String::from_utf8(run(Command::new("find").arg(store.path().join("snapshots")).args([
        "-name",
        "manifest.txt",
        "-links",
        "+1",
    ])))
    .unwrap();
    assert_eq!(shared.lines().count(), 2, "manifest.txt not shared between snapshots:\n{shared}");

    // umoci accepts the layout and sees the files.
    let bundle = umoci_unpack(&layout, "latest");
    let rootfs = bundle.path().join("b/rootfs");
    assert_eq!(std::fs::read_to_string(rootfs.join("app/manifest.txt")).unwrap(), "src/a.txt\nsrc/sub/b.txt\n");
    assert_eq!(std::fs::read_to_string(rootfs.join("app/status")).unwrap(), "done\n");
    assert_eq!(std::fs::read_to_string(rootfs.join("unpacked/hello.txt")).unwrap(), "from the archive\n");
    assert_eq!(std::fs::read_to_string(rootfs.join("base.txt")).unwrap(), "base\n");
    assert!(!rootfs.join("bin/vi").exists(), "deleted file must be gone");
    assert!(rootfs.join("bin/sh").exists());

    // Layers: whiteout for the deletion, owner and mode of --chown/--chmod.
    let listings = layer_listings(&layout).join("\n");
    assert!(listings.contains("bin/.wh.vi"), "whiteout missing:\n{listings}");
    let owned = listings.lines().find(|l| l.ends_with("app/owned.txt")).expect("owned.txt in a layer");
    assert!(owned.starts_with("-rw-r-----") && owned.contains("1000/1000"), "{owned}");

    // skopeo reads the config.
    let config: serde_json::Value = serde_json::from_slice(&run(Command::new("skopeo")
        .args(["inspect", "--config", "--raw"])
        .arg(format!("oci:{}:latest", layout.display()))))
    .unwrap();
    let c = &config["config"];
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["Cmd"], serde_json::json!(["cat", "/app/status"]));
    assert!(c["Env"].as_array().unwrap().iter().any(|e| e == "APP_MODE=test"));
    assert!(c["ExposedPorts"]["8080/tcp"].is_object());
    assert_eq!(c["Labels"]["org.example.test"], "yes");
    assert_eq!(c["Healthcheck"]["Test"], serde_json::json!(["CMD", "true"]));
    assert_eq!(c["Healthcheck"]["Interval"], 5_000_000_000i64);
    assert_eq!(c["StopSignal"], "SIGTERM");
    let history = config["history"].as_array().unwrap();
    assert!(history.iter().any(|h| h["created_by"] == "RUN /bin/sh -c echo base > /base.txt # buildkit"));
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        history.iter().filter(|h| h["empty_layer"] != true).count()
    );
}

#[test]
fn rebuilds_reuse_the_cache_until_a_source_changes() {
    let reg = registry_with_busybox();
    let ctx = multistage_context();
    let store = tempfile::tempdir().unwrap();
    let arg = format!("REGISTRY={}", reg.addr);
    let args = ["--build-arg", arg.as_str(), "-t", "cache:1", "--progress", "rawjson"];
    ok(build(store.path(), ctx.path(), &args));
    let started = |out: &Output| util::progress::ran(&stderr(out));
    let second = ok(build(store.path(), ctx.path(), &args));
    assert!(started(&second).is_empty(), "no-op rebuild ran steps: {:?}", started(&second));

    std::fs::write(ctx.path().join("src/sub/b.txt"), "changed\n").unwrap();
    let third = ok(build(store.path(), ctx.path(), &args));
    let ran = started(&third);
    assert!(ran.iter().any(|n| n.contains("COPY src/")), "{ran:?}");
    assert!(!ran.iter().any(|n| n.contains("echo base")), "unchanged step re-ran: {ran:?}");

    // A file excluded by .dockerignore never invalidates anything.
    std::fs::write(ctx.path().join("src/ignored.log"), "more noise\n").unwrap();
    let fourth = ok(build(store.path(), ctx.path(), &args));
    assert!(started(&fourth).is_empty(), "ignored file changed the cache key: {:?}", started(&fourth));
}

#[test]
fn push_docker_archive_and_local_outputs() {
    let reg = registry_with_busybox();
    let ctx = dockerfile_dir(&format!(
        "FROM {}/busybox:latest\nRUN echo pushed > /pushed.txt\nCMD [\"cat\", \"/pushed.txt\"]\n",
        reg.addr
    ));
    let store = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let archive = out_dir.path().join("image.tar");
    let local = out_dir.path().join("rootfs");
    let name = reg.reference("pushed:1");
    let meta = out_dir.path().join("meta.json");
    let iid = out_dir.path().join("iid");
    ok(build(
        store.path(),
        ctx.path(),
        &[
            "-t",
            &name,
            "--push",
            "-o",
            &format!("type=docker,dest={}", archive.display()),
            "-o",
            &format!("type=local,dest={}", local.display()),
            "--metadata-file",
            meta.to_str().unwrap(),
            "--iidfile",
            iid.to_str().unwrap(),
        ],
    ));
    let config = util::skopeo_inspect_config(&name);
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["cat", "/pushed.txt"]));
    let docker: serde_json::Value = serde_json::from_slice(&run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}", archive.display()))))
    .unwrap();
    assert_eq!(docker["Architecture"], "amd64");
    assert_eq!(std::fs::read_to_string(local.join("pushed.txt")).unwrap(), "pushed\n");
    assert!(local.join("bin/busybox").exists());
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let config_digest = meta["containerimage.config.digest"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), config_digest);
    let raw = util::skopeo_inspect_raw(&name);
    assert_eq!(raw["config"]["digest"], config_digest);
    assert_eq!(meta["image.name"], name.as_str());
}

#[test]
fn secrets_never_reach_layers_or_the_store() {
    let reg = registry_with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    let secret_value = "s3cr3t-value-0f-rbuild";
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}/busybox:latest\n\
             RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /len\n\
             RUN --mount=type=secret,id=tok,env=TOKEN sh -c 'test \"${{#TOKEN}}\" = {len} && echo ok > /env-ok'\n",
            reg.addr,
            len = secret_value.len()
        ),
    )
    .unwrap();
    let secret_file = ctx.path().join("..").join(format!("secret-{}", std::process::id()));
    std::fs::write(&secret_file, secret_value).unwrap();
    let store = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let layout = out_dir.path().join("layout");
    let out = ok(build(
        store.path(),
        ctx.path(),
        &[
            "--secret",
            &format!("id=tok,src={}", secret_file.display()),
            "--progress",
            "plain",
            "-t",
            "secret:latest",
            "-o",
            &format!("type=oci,dest={},tar=false", layout.display()),
        ],
    ));
    std::fs::remove_file(&secret_file).unwrap();
    let bundle = umoci_unpack(&layout, "latest");
    let rootfs = bundle.path().join("b/rootfs");
    assert_eq!(std::fs::read_to_string(rootfs.join("len")).unwrap().trim(), secret_value.len().to_string());
    assert_eq!(std::fs::read_to_string(rootfs.join("env-ok")).unwrap(), "ok\n");
    assert!(!rootfs.join("run/secrets/tok").exists());
    assert!(!stderr(&out).contains(secret_value));
    // Not in any file of the store or the output (layers are gzip: check
    // the unpacked bundle and the store's snapshots and index as text).
    for dir in [store.path(), layout.as_path(), bundle.path()] {
        let grep = Command::new("grep").args(["-r", "-l", "-a", secret_value]).arg(dir).output().unwrap();
        assert!(grep.stdout.is_empty(), "secret found in {}", String::from_utf8_lossy(&grep.stdout));
    }
}

#[test]
fn network_none_has_only_loopback() {
    let reg = registry_with_busybox();
    let ctx = dockerfile_dir(&format!(
        "FROM {}/busybox:latest\nRUN --network=none grep -c : /proc/net/dev > /ifaces\n",
        reg.addr
    ));
    let store = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    ok(build(store.path(), ctx.path(), &["-o", &format!("type=local,dest={}", local.path().display())]));
    assert_eq!(std::fs::read_to_string(local.path().join("ifaces")).unwrap().trim(), "1");
}

#[test]
fn bad_dockerfile_names_file_line_and_column() {
    let ctx = dockerfile_dir("FROM scratch\nFROOM busybox\n");
    let store = tempfile::tempdir().unwrap();
    let out = build(store.path(), ctx.path(), &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:2:1"), "{err}");
    assert!(err.contains("did you mean `FROM`?"), "{err}");
    assert!(err.contains("FROOM busybox"), "{err}");
}

#[test]
fn failing_run_reports_command_exit_code_and_output() {
    let ctx = dockerfile_dir(
        "FROM scratch\nCOPY --from=bin busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo about to fail; exit 3\"]\n",
    );
    let store = tempfile::tempdir().unwrap();
    let out = build(store.path(), ctx.path(), &["--build-context", "bin=/bin", "--progress", "plain"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(err.contains("about to fail"), "{err}");
}

/// Waits until `path`'s content contains `needle`.
fn wait_for(path: &Path, needle: &str, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::fs::read_to_string(path).map(|s| s.contains(needle)).unwrap_or(false) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn killed_build_leaves_a_usable_store() {
    let reg = registry_with_busybox();
    let store = tempfile::tempdir().unwrap();
    let slow = tempfile::tempdir().unwrap();
    // A sleep no other test (or concurrent test run) uses, to find it in `ps`.
    let sleep = format!("sleep {}", 1000 + std::process::id() % 8000);
    std::fs::write(
        slow.path().join("Dockerfile"),
        format!("FROM {}/busybox:latest\nRUN echo started-slow-step && {sleep} && echo never\n", reg.addr),
    )
    .unwrap();
    let log = slow.path().join("log");
    let mut child = rbuild()
        .arg("--root")
        .arg(store.path())
        .args(["build", "--progress", "plain"])
        .arg(slow.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    assert!(wait_for(&log, "started-slow-step", Duration::from_secs(60)), "slow step never started");
    // SIGKILL mid-RUN.
    child.kill().unwrap();
    child.wait().unwrap();
    // The sandboxed `sleep` dies with its parent (the kernel delivers the
    // parent-death signals asynchronously: give a loaded machine a moment).
    let start = Instant::now();
    let mut ps = String::new();
    while start.elapsed() < Duration::from_secs(10) {
        ps = String::from_utf8(run(Command::new("ps").args(["-eo", "args"]))).unwrap();
        if !ps.lines().any(|l| l.trim() == sleep) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!ps.lines().any(|l| l.trim() == sleep), "sandboxed `{sleep}` survived:\n{ps}");

    let ctx = dockerfile_dir(&format!("FROM {}/busybox:latest\nRUN echo after > /after\n", reg.addr));
    let local = tempfile::tempdir().unwrap();
    ok(build(store.path(), ctx.path(), &["-o", &format!("type=local,dest={}", local.path().display())]));
    assert_eq!(std::fs::read_to_string(local.path().join("after")).unwrap(), "after\n");
    // And the killed build's Dockerfile builds too, to completion.
    std::fs::write(slow.path().join("Dockerfile"), format!("FROM {}/busybox:latest\nRUN echo quick\n", reg.addr))
        .unwrap();
    ok(build(store.path(), slow.path(), &[]));
}

#[test]
fn two_builds_at_once_share_one_store() {
    let reg = registry_with_busybox();
    let store = tempfile::tempdir().unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..2)
        .map(|i| {
            dockerfile_dir(&format!(
                "FROM {}/busybox:latest\nRUN echo shared > /shared\nRUN sleep 1 && echo {i} > /mine\n",
                reg.addr
            ))
        })
        .collect();
    let children: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            rbuild()
                .arg("--root")
                .arg(store.path())
                .args(["build", "-t", &format!("concurrent:{i}"), "--progress", "plain"])
                .arg(d.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        ok(c.wait_with_output().unwrap());
    }
    let images = String::from_utf8(run(rbuild().arg("--root").arg(store.path()).arg("images"))).unwrap();
    assert_eq!(images.lines().filter(|l| l.contains("concurrent")).count(), 2, "{images}");
}

#[test]
fn independent_stages_run_in_parallel() {
    let reg = registry_with_busybox();
    let ctx = dockerfile_dir(&format!(
        "FROM {r}/busybox:latest AS a\nRUN sleep 2 && echo a > /a\nFROM {r}/busybox:latest AS b\nRUN sleep 2 && echo b > /b\nFROM {r}/busybox:latest\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
        r = reg.addr
    ));
    let store = tempfile::tempdir().unwrap();
    // Warm the base image so only the two sleeps count.
    let warm = dockerfile_dir(&format!("FROM {}/busybox:latest\n", reg.addr));
    ok(build(store.path(), warm.path(), &[]));
    let start = Instant::now();
    ok(build(store.path(), ctx.path(), &["--jobs", "2"]));
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_millis(3900), "stages did not overlap: {elapsed:?}");
}

/// The whole build as an ordinary user with subordinate id ranges.
#[test]
fn rootless_build_as_a_non_root_user() {
    if !is_root() {
        eprintln!("not root: the test user cannot be created here; the current user is already non-root");
    } else {
        ensure_test_user();
    }
    let reg = registry_with_busybox();
    let base = tempfile::Builder::new().prefix("rbuild-rootless").tempdir_in("/tmp").unwrap();
    let ctx = base.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}/busybox:latest\nRUN touch /owned && chown 1000:1000 /owned && id -u > /uid\nCOPY --chown=65534:65534 hello.txt /hello.txt\n",
            reg.addr
        ),
    )
    .unwrap();
    std::fs::write(ctx.join("hello.txt"), "hi\n").unwrap();
    let layout = base.path().join("layout");
    let store = base.path().join("store");
    let mut cmd;
    if is_root() {
        run(Command::new("chown").args(["-R", "rbuildtest:rbuildtest"]).arg(base.path()));
        run(Command::new("chmod").arg("755").arg(base.path()));
        cmd = util::rbuild_as("rbuildtest", base.path());
    } else {
        cmd = rbuild();
    }
    cmd.arg("--root").arg(&store).args(["build", "--progress", "plain", "-t", "rootless:latest", "-o"]);
    cmd.arg(format!("type=oci,dest={},tar=false", layout.display())).arg(&ctx);
    ok(cmd.output().unwrap());
    let listings = layer_listings(&layout).join("\n");
    let owned = listings.lines().find(|l| l.ends_with(" owned")).expect("owned in a layer");
    assert!(owned.contains("1000/1000"), "{owned}");
    let hello = listings.lines().find(|l| l.ends_with(" hello.txt")).expect("hello.txt in a layer");
    assert!(hello.contains("65534/65534"), "{hello}");
    let bundle = umoci_unpack(&layout, "latest");
    assert_eq!(std::fs::read_to_string(bundle.path().join("b/rootfs/uid")).unwrap(), "0\n");
}

/// A user without subordinate ids: rbuild maps only root, says which
/// ownership it cannot represent, and still builds.
#[test]
fn rootless_build_with_a_single_mapped_id() {
    if !is_root() {
        eprintln!("not root: cannot create the single-id test user; skipped");
        return;
    }
    let exists = Command::new("id").arg("rbuildsingle").output().map(|o| o.status.success()).unwrap_or(false);
    if !exists {
        run(Command::new("useradd").args(["--system", "--no-create-home", "rbuildsingle"]));
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        assert!(!text.lines().any(|l| l.starts_with("rbuildsingle:")), "rbuildsingle must have no {file} range");
    }
    let reg = registry_with_busybox();
    let base = tempfile::Builder::new().prefix("rbuild-single").tempdir_in("/tmp").unwrap();
    let ctx = base.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}/busybox:latest\nRUN echo single > /single && id -u > /uid\nCOPY hello.txt /hello.txt\n",
            reg.addr
        ),
    )
    .unwrap();
    std::fs::write(ctx.join("hello.txt"), "hi\n").unwrap();
    run(Command::new("chown").args(["-R", "rbuildsingle"]).arg(base.path()));
    run(Command::new("chmod").arg("755").arg(base.path()));
    let local = base.path().join("out");
    let out = Command::new("runuser")
        .args(["-u", "rbuildsingle", "--"])
        .arg(rbuild().get_program())
        .arg("--root")
        .arg(base.path().join("store"))
        .args(["build", "--progress", "plain", "-o"])
        .arg(format!("type=local,dest={}", local.display()))
        .arg(&ctx)
        .env("HOME", base.path())
        .output()
        .unwrap();
    let out = ok(out);
    assert!(stderr(&out).contains(" - rootless with a single id: "), "no single-id warning:\n{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(local.join("single")).unwrap(), "single\n");
    assert_eq!(std::fs::read_to_string(local.join("uid")).unwrap(), "0\n");
    assert_eq!(std::fs::read_to_string(local.join("hello.txt")).unwrap(), "hi\n");
}

/// A static HTTP server (`python3 -m http.server`) on a free loopback port.
struct HttpServer {
    child: std::process::Child,
    addr: String,
}

impl HttpServer {
    fn serve(dir: &Path) -> HttpServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 http.server");
        let addr = format!("127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "http server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        HttpServer { child, addr }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn add_http_with_checksum_and_git_over_http() {
    let served = tempfile::tempdir().unwrap();
    std::fs::write(served.path().join("payload.txt"), "remote payload\n").unwrap();
    // A git repository served over git's "dumb" HTTP protocol.
    let work = served.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("README"), "from git\n").unwrap();
    let git = |args: &[&str], dir: &Path| {
        run(Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(dir));
    };
    git(&["init", "-q"], &work);
    git(&["add", "."], &work);
    git(&["commit", "-qm", "one"], &work);
    git(&["tag", "v1"], &work);
    git(&["clone", "-q", "--bare", ".", "../repo.git"], &work);
    git(&["update-server-info"], &served.path().join("repo.git"));
    let server = HttpServer::serve(served.path());

    let sum = {
        use sha2::Digest;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(b"remote payload\n")))
    };
    let ctx = dockerfile_dir(&format!(
        "FROM scratch\nADD --checksum={sum} http://{a}/payload.txt /payload.txt\nADD http://{a}/repo.git#v1 /src/\n",
        a = server.addr
    ));
    let store = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    ok(build(store.path(), ctx.path(), &["-o", &format!("type=local,dest={}", local.path().display())]));
    assert_eq!(std::fs::read_to_string(local.path().join("payload.txt")).unwrap(), "remote payload\n");
    assert_eq!(std::fs::read_to_string(local.path().join("src/README")).unwrap(), "from git\n");
    assert!(!local.path().join("src/.git").exists(), ".git kept without --keep-git-dir");

    let bad = sum.replace(&sum[10..14], "0000");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM scratch\nADD --checksum={bad} http://{}/payload.txt /p\n", server.addr),
    )
    .unwrap();
    let out = build(store.path(), ctx.path(), &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("checksum mismatch"), "{}", stderr(&out));
}

/// Issue 10, difference 7: `ADD http://...` dates the file by the
/// response's `Last-Modified` (BuildKit's HTTP source), not the build time.
#[test]
fn add_http_file_gets_the_last_modified_time() {
    let served = tempfile::tempdir().unwrap();
    let file = served.path().join("dated.txt");
    std::fs::write(&file, "dated\n").unwrap();
    // python's http.server sends the file's mtime as `Last-Modified`.
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options().write(true).open(&file).unwrap().set_modified(when).unwrap();
    let server = HttpServer::serve(served.path());
    let ctx = dockerfile_dir(&format!("FROM scratch\nADD http://{}/dated.txt /dated.txt\n", server.addr));
    let store = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("fs.tar");
    ok(build(store.path(), ctx.path(), &["-o", &format!("type=tar,dest={}", tar.display())]));
    let mut ar = tar::Archive::new(std::fs::File::open(&tar).unwrap());
    let mtime = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_string_lossy().trim_start_matches("./") == "dated.txt")
        .map(|e| e.header().mtime().unwrap())
        .expect("dated.txt in the image");
    assert_eq!(mtime, 1_000_000_000);
}

#[test]
fn source_date_epoch_and_zstd_give_reproducible_images() {
    let reg = registry_with_busybox();
    let ctx = dockerfile_dir(&format!(
        "FROM {}/busybox:latest\nRUN echo same > /same && touch /now\nCOPY file /file\n",
        reg.addr
    ));
    std::fs::write(ctx.path().join("file"), "content\n").unwrap();
    let digests: Vec<String> = (0..2)
        .map(|_| {
            let store = tempfile::tempdir().unwrap();
            let meta = store.path().join("meta.json");
            let out = rbuild()
                .arg("--root")
                .arg(store.path().join("s"))
                .args([
                    "build",
                    "-o",
                    "type=image,compression=zstd,compression-level=5",
                    "-t",
                    "repro:1",
                    "--metadata-file",
                ])
                .arg(&meta)
                .arg(ctx.path())
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .output()
                .unwrap();
            ok(out);
            let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
            // The layers of the built image are zstd.
            let manifest = std::fs::read(
                store
                    .path()
                    .join("s/blobs/sha256")
                    .join(m["containerimage.digest"].as_str().unwrap().trim_start_matches("sha256:")),
            )
            .unwrap();
            let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
            let layers = manifest["layers"].as_array().unwrap();
            assert!(layers.last().unwrap()["mediaType"].as_str().unwrap().ends_with("+zstd"), "{manifest}");
            m["containerimage.digest"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(digests[0], digests[1], "two clean builds with SOURCE_DATE_EPOCH differ");
}

#[test]
fn multi_platform_build_writes_an_index() {
    let reg = TestRegistry::start();
    reg.push_busybox_multiarch("busybox:multi");
    let ctx = dockerfile_dir(&format!(
        "FROM {}/busybox:multi\nARG TARGETARCH\nCOPY hello /hello\nLABEL arch=$TARGETARCH\n",
        reg.addr
    ));
    std::fs::write(ctx.path().join("hello"), "hi\n").unwrap();
    let store = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let layout = out_dir.path().join("layout");
    ok(build(
        store.path(),
        ctx.path(),
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &reg.reference("multi-out:latest"),
            "--push",
            "-o",
            &format!("type=oci,dest={},tar=false", layout.display()),
        ],
    ));
    let raw: serde_json::Value = serde_json::from_slice(&run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:latest", layout.display()))))
    .unwrap();
    let archs: Vec<&str> =
        raw["manifests"].as_array().unwrap().iter().map(|m| m["platform"]["architecture"].as_str().unwrap()).collect();
    assert_eq!(archs, ["amd64", "arm64"], "{raw}");
    // The pushed index lists both platforms in the registry.
    let pushed = util::skopeo_inspect_raw(&reg.reference("multi-out:latest"));
    assert_eq!(pushed, raw, "the registry holds the same index as the OCI layout");
    for arch in ["amd64", "arm64"] {
        let config: serde_json::Value = serde_json::from_slice(&run(Command::new("skopeo")
            .args(["inspect", "--config", "--override-arch", arch])
            .arg(format!("oci:{}:latest", layout.display()))))
        .unwrap();
        assert_eq!(config["architecture"], arch);
        assert_eq!(config["config"]["Labels"]["arch"], arch);
    }
}

#[test]
fn pull_re_resolves_tags_and_store_commands_work() {
    let reg = registry_with_busybox();
    let ctx = dockerfile_dir(&format!("FROM {}/base:latest\nCMD [\"true\"]\n", reg.addr));
    let store = tempfile::tempdir().unwrap();
    // base:latest is first a plain busybox...
    reg.push_busybox("base:latest");
    let meta = store.path().join("meta.json");
    let meta_arg = meta.to_str().unwrap().to_string();
    // Fixed times, so equal inputs give equal digests.
    let build = |store: &Path, ctx: &Path, extra: &[&str]| {
        rbuild()
            .arg("--root")
            .arg(store)
            .arg("build")
            .args(extra)
            .arg(ctx)
            .env("SOURCE_DATE_EPOCH", "1")
            .output()
            .unwrap()
    };
    ok(build(store.path(), ctx.path(), &["-t", "app:1", "--metadata-file", &meta_arg]));
    let first: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    // ...then the tag moves to another image (built by rbuild and pushed).
    let other = dockerfile_dir(&format!("FROM {}/busybox:latest\nRUN echo moved > /moved\n", reg.addr));
    ok(build(store.path(), other.path(), &["-t", &reg.reference("base:latest"), "--push"]));
    ok(build(store.path(), ctx.path(), &["-t", "app:1", "--metadata-file", &meta_arg]));
    let second: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(
        first["containerimage.digest"], second["containerimage.digest"],
        "without --pull the resolved tag is reused"
    );
    ok(build(store.path(), ctx.path(), &["-t", "app:1", "--pull", "--metadata-file", &meta_arg]));
    let third: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_ne!(first["containerimage.digest"], third["containerimage.digest"], "--pull must re-resolve the tag");

    let images = String::from_utf8(run(rbuild().arg("--root").arg(store.path()).arg("images"))).unwrap();
    assert!(images.lines().any(|l| l.starts_with("docker.io/library/app") && l.contains(" 1 ")), "{images}");
    let du = String::from_utf8(run(rbuild().arg("--root").arg(store.path()).arg("du"))).unwrap();
    assert!(du.contains("blobs") && du.contains("snapshots"), "{du}");
    let pruned = String::from_utf8(run(rbuild().arg("--root").arg(store.path()).args(["prune", "--all"]))).unwrap();
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    // The store still works after a full prune.
    ok(build(store.path(), ctx.path(), &["-t", "app:1"]));
}

#[test]
fn first_failure_cancels_running_steps() {
    let reg = registry_with_busybox();
    let ctx = dockerfile_dir(&format!(
        "FROM {r}/busybox:latest AS slow\nRUN sleep 60 && echo slow > /slow\nFROM {r}/busybox:latest AS broken\nRUN sleep 1 && exit 7\nFROM {r}/busybox:latest\nCOPY --from=slow /slow /slow\nCOPY --from=broken / /broken\n",
        r = reg.addr
    ));
    let store = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = build(store.path(), ctx.path(), &["--jobs", "2", "--progress", "plain"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("exit code: 7"), "{}", stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(30), "the slow step was not cancelled: {:?}", start.elapsed());
}

#[test]
fn cache_mounts_persist_across_builds_but_stay_out_of_layers() {
    let reg = registry_with_busybox();
    let ctx = dockerfile_dir(&format!(
        "FROM {}/busybox:latest\nRUN --mount=type=cache,target=/var/cache/app,sharing=locked echo run >> /var/cache/app/log && wc -l < /var/cache/app/log > /runs\nRUN --mount=type=tmpfs,target=/scratch touch /scratch/x && ls /scratch > /tmpfs-list\n",
        reg.addr
    ));
    let store = tempfile::tempdir().unwrap();
    let runs = |extra: &[&str]| {
        let local = tempfile::tempdir().unwrap();
        let mut args = vec!["-o".to_string(), format!("type=local,dest={}", local.path().display())];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(build(store.path(), ctx.path(), &args));
        assert!(!local.path().join("var/cache/app/log").exists(), "cache mount content leaked into the image");
        assert!(!local.path().join("scratch/x").exists(), "tmpfs content leaked into the image");
        assert_eq!(std::fs::read_to_string(local.path().join("tmpfs-list")).unwrap(), "x\n");
        std::fs::read_to_string(local.path().join("runs")).unwrap().trim().to_string()
    };
    assert_eq!(runs(&[]), "1");
    assert_eq!(runs(&["--no-cache"]), "2");
}

#[test]
fn call_targets_outline_and_check() {
    let ctx = dockerfile_dir(
        "ARG BASE=scratch\nFROM $BASE AS build\nARG VERSION=1.0\nRUN --mount=type=secret,id=token,required true\nFROM build AS release\nCMD echo hi\n",
    );
    let store = tempfile::tempdir().unwrap();
    let targets = ok(build(store.path(), ctx.path(), &["--call", "targets"]));
    let targets = String::from_utf8_lossy(&targets.stdout).into_owned();
    assert!(targets.contains("build") && targets.contains("release"), "{targets}");
    let outline = ok(build(store.path(), ctx.path(), &["--call", "outline", "--target", "release"]));
    let outline = String::from_utf8_lossy(&outline.stdout).into_owned();
    assert!(outline.contains("VERSION") && outline.contains("1.0") && outline.contains("token"), "{outline}");
    let check = build(store.path(), ctx.path(), &["--check"]);
    assert!(!check.status.success(), "a check with warnings exits non-zero");
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(text.contains("JSONArgsRecommended"), "{text}");
}

/// The README's first command, on `testdata/hello`: `FROM scratch` with the
/// host's busybox as a named context, `--chown` by name, a heredoc file.
#[test]
fn readme_example_builds_offline() {
    let store = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let layout = out_dir.path().join("layout");
    let out = ok(build(
        store.path(),
        Path::new(&format!("{TESTDATA}/hello")),
        &[
            "--build-context",
            "host-bin=/bin",
            "-t",
            "hello:1.0",
            "--progress",
            "plain",
            "-o",
            &format!("type=oci,dest={},tar=false", layout.display()),
        ],
    ));
    assert!(!stderr(&out).contains("this stage is not reached"));
    let listings = layer_listings(&layout).join("\n");
    let motd = listings.lines().find(|l| l.ends_with("srv/motd")).expect("motd in a layer");
    assert!(motd.contains("1000/1000"), "{motd}");
    let bundle = umoci_unpack(&layout, "1.0");
    let rootfs = bundle.path().join("b/rootfs");
    let motd = std::fs::read_to_string(rootfs.join("srv/motd")).unwrap();
    assert!(motd.starts_with("hello from rbuild\nbuilt at stage build by 0:0 in /src"), "{motd}");
    assert_eq!(std::fs::read_to_string(rootfs.join("srv/index.txt")).unwrap(), "served by busybox\n");
    assert!(!rootfs.join("src/notes.md").exists());
}

/// Where the kernel refuses overlayfs, rbuild copies and diffs instead: the
/// forced fallback must give the very same image as kernel overlays.
#[test]
fn copy_fallback_builds_the_same_image() {
    let reg = registry_with_busybox();
    let ctx = multistage_context();
    let digest = |mode: Option<&str>| {
        let store = tempfile::tempdir().unwrap();
        let meta = store.path().join("meta.json");
        let mut cmd = rbuild();
        cmd.arg("--root")
            .arg(store.path().join("s"))
            .args(["build", "--build-arg", &format!("REGISTRY={}", reg.addr), "--metadata-file"])
            .arg(&meta)
            .arg(ctx.path())
            .env("SOURCE_DATE_EPOCH", "1700000000");
        match mode {
            Some(m) => cmd.env("RBUILD_OVERLAY", m),
            None => cmd.env_remove("RBUILD_OVERLAY"),
        };
        ok(cmd.output().unwrap());
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        m["containerimage.digest"].as_str().unwrap().to_string()
    };
    assert_eq!(digest(None), digest(Some("copy")));
}

#[test]
fn ssh_mount_forwards_the_agent_socket() {
    let reg = registry_with_busybox();
    let dir = tempfile::tempdir().unwrap();
    // Any unix socket stands in for an agent: the step only checks it is there.
    let sock = dir.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let ctx = dockerfile_dir(&format!(
        "FROM {}/busybox:latest\nRUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /sock\n",
        reg.addr
    ));
    let store = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    ok(build(
        store.path(),
        ctx.path(),
        &[
            "--ssh",
            &format!("default={}", sock.display()),
            "-o",
            &format!("type=local,dest={}", local.path().display()),
        ],
    ));
    assert_eq!(std::fs::read_to_string(local.path().join("sock")).unwrap(), "/run/buildkit/ssh_agent.0\n");
    assert!(!local.path().join("run/buildkit/ssh_agent.0").exists(), "the socket mount point leaked into the image");
    // Without --ssh a required agent is an error naming the flag.
    let ctx = dockerfile_dir(&format!("FROM {}/busybox:latest\nRUN --mount=type=ssh,required=true true\n", reg.addr));
    let out = build(store.path(), ctx.path(), &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--ssh"), "{}", stderr(&out));
}

#[test]
fn bind_mounts_from_context_and_stage_are_read_only_and_leave_no_trace() {
    let reg = registry_with_busybox();
    let ctx = dockerfile_dir(&format!(
        "FROM {r}/busybox:latest AS tools\nRUN mkdir /tools && echo tool > /tools/t\n\
         FROM {r}/busybox:latest\n\
         RUN --mount=type=bind,source=data,target=/mnt/data --mount=type=bind,from=tools,source=/tools,target=/mnt/tools \
         cat /mnt/data/a.txt /mnt/tools/t > /joined && (touch /mnt/data/x 2>/dev/null && echo writable || echo read-only) > /mode\n",
        r = reg.addr
    ));
    std::fs::create_dir(ctx.path().join("data")).unwrap();
    std::fs::write(ctx.path().join("data/a.txt"), "data\n").unwrap();
    let store = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    ok(build(store.path(), ctx.path(), &["-o", &format!("type=local,dest={}", local.path().display())]));
    assert_eq!(std::fs::read_to_string(local.path().join("joined")).unwrap(), "data\ntool\n");
    assert_eq!(std::fs::read_to_string(local.path().join("mode")).unwrap(), "read-only\n");
    assert!(!ctx.path().join("data/x").exists());
    assert!(!local.path().join("mnt/data/a.txt").exists(), "bind mount content leaked into the image");
}

/// Empty diffs (`RUN true`) are left out of what later steps mount, never
/// out of the image: later `RUN`s, a stage bind and a `COPY --from` still
/// see exactly the merged files (whiteouts and an opaque directory on top
/// of empty layers still hide what they hid), and every step keeps its layer.
#[test]
fn empty_runs_leave_views_and_layers_unchanged() {
    let reg = registry_with_busybox();
    let ctx = dockerfile_dir(&format!(
        "FROM {r}/busybox:latest AS base\n\
         RUN echo a > /a && mkdir -p /d/sub && echo x > /d/x && echo y > /keep\n\
         RUN true\n\
         RUN true\n\
         RUN rm /a && rm -r /d && mkdir /d && echo z > /d/z\n\
         RUN true\n\
         RUN test ! -e /a && test ! -e /d/x && test ! -e /d/sub && cat /keep /d/z > /seen\n\
         RUN true\n\
         FROM {r}/busybox:latest\n\
         RUN true\n\
         COPY --from=base /seen /copied\n\
         RUN --mount=type=bind,from=base,target=/b \
         (test ! -e /b/a && test ! -e /b/d/x && ls /b/d && cat /b/seen) > /from-bind\n",
        r = reg.addr
    ));
    let store = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    ok(build(store.path(), ctx.path(), &["-o", &format!("type=local,dest={}", local.path().display())]));
    assert_eq!(std::fs::read_to_string(local.path().join("copied")).unwrap(), "y\nz\n");
    assert_eq!(std::fs::read_to_string(local.path().join("from-bind")).unwrap(), "z\ny\nz\n");

    let out_dir = tempfile::tempdir().unwrap();
    let layout = out_dir.path().join("layout");
    ok(build(
        store.path(),
        ctx.path(),
        &["--target", "base", "-t", "empty:latest", "-o", &format!("type=oci,dest={},tar=false", layout.display())],
    ));
    let listings = layer_listings(&layout);
    let only = dockerfile_dir(&format!("FROM {}/busybox:latest\n", reg.addr));
    let base_layout = out_dir.path().join("only");
    ok(build(store.path(), only.path(), &["-o", &format!("type=oci,dest={},tar=false", base_layout.display())]));
    let base_layers = layer_listings(&base_layout).len();
    // The image keeps what it always had: the three RUNs that wrote
    // something as layers (empty ones are history entries only, as in
    // BuildKit), the whiteout and the opaque directory among them.
    assert_eq!(listings.len(), base_layers + 3, "{listings:#?}");
    let runs = &listings[base_layers..];
    assert!(runs[1].contains(".wh.a") && runs[1].contains(".wh..wh..opq"), "{}", runs[1]);
    let config = |layout: &Path| -> serde_json::Value {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(blob(layout, index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        serde_json::from_slice(&std::fs::read(blob(layout, manifest["config"]["digest"].as_str().unwrap())).unwrap())
            .unwrap()
    };
    let history = |layout: &Path| config(layout)["history"].as_array().unwrap().len();
    assert_eq!(history(&layout), history(&base_layout) + 7, "one history entry per RUN");
    let bundle = umoci_unpack(&layout, "latest");
    let rootfs = bundle.path().join("b/rootfs");
    assert!(!rootfs.join("a").exists() && !rootfs.join("d/x").exists() && !rootfs.join("d/sub").exists());
    assert_eq!(std::fs::read_to_string(rootfs.join("seen")).unwrap(), "y\nz\n");
}

/// Two target platforms are solved as one graph: the `FROM
/// --platform=$BUILDPLATFORM` stage is the same vertex for both, so its RUN
/// (which appends to a cache mount) executes once; each platform's image
/// still gets its own base and label.
#[test]
fn two_platforms_share_the_buildplatform_stage_and_run_it_once() {
    let reg = TestRegistry::start();
    reg.push_busybox_multiarch("busybox:multi");
    let ctx = dockerfile_dir(&format!(
        "FROM --platform=$BUILDPLATFORM {reg}/busybox:multi AS build\n\
         RUN --mount=type=cache,id=runs,target=/cache sh -c 'echo ran >> /cache/runs && wc -l < /cache/runs > /built'\n\
         FROM {reg}/busybox:multi\n\
         ARG TARGETARCH\n\
         COPY --from=build /built /built\n\
         LABEL arch=$TARGETARCH\n",
        reg = reg.addr
    ));
    let store = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let (layout, local) = (out_dir.path().join("layout"), out_dir.path().join("fs"));
    let out = ok(build(
        store.path(),
        ctx.path(),
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--progress",
            "rawjson",
            // Without the cache, only sharing the vertex keeps the RUN to one
            // execution (solving each platform on its own ran it twice).
            "--no-cache",
            "-t",
            "shared:latest",
            "-o",
            &format!("type=oci,dest={},tar=false", layout.display()),
            "-o",
            &format!("type=local,dest={}", local.display()),
        ],
    ));
    let runs: Vec<String> = util::progress::ran(&stderr(&out))
        .into_iter()
        .filter(|name| name.contains("RUN") && name.contains("echo ran"))
        .collect();
    assert_eq!(runs.len(), 1, "the shared RUN started {} times:\n{}", runs.len(), stderr(&out));
    let counters = util::find_files(&store.path().join("mounts"), "runs");
    assert_eq!(counters.len(), 1, "{counters:?}");
    assert_eq!(std::fs::read_to_string(&counters[0]).unwrap(), "ran\n", "the RUN appended more than once");
    for (arch, dir) in [("amd64", "linux_amd64"), ("arm64", "linux_arm64")] {
        assert_eq!(std::fs::read_to_string(local.join(dir).join("built")).unwrap().trim(), "1", "{arch}");
        assert!(local.join(dir).join("bin/busybox").exists(), "{arch} has its base");
        let config: serde_json::Value = serde_json::from_slice(&run(Command::new("skopeo")
            .args(["inspect", "--config", "--override-arch", arch])
            .arg(format!("oci:{}:latest", layout.display()))))
        .unwrap();
        assert_eq!(config["architecture"], arch);
        assert_eq!(config["config"]["Labels"]["arch"], arch);
    }
    // The summary names the manifest list, as buildx does.
    assert!(
        util::progress::statuses(&stderr(&out)).iter().any(|id| id.starts_with("exporting manifest list sha256:")),
        "{}",
        stderr(&out)
    );
}

/// `rbuild -t NAME CONTEXT` (no command) is `rbuild build -t NAME CONTEXT`,
/// and the build ends with the image id and the names written, as buildx.
#[test]
fn build_is_the_default_command_and_prints_the_image_written() {
    let ctx = dockerfile_dir("FROM scratch\nCOPY Dockerfile /Dockerfile\n");
    let store = tempfile::tempdir().unwrap();
    let iid = store.path().join("iid");
    let out = ok(rbuild()
        .arg("--root")
        .arg(store.path())
        .args(["-t", "app:1.0", "--progress", "plain", "--iidfile"])
        .arg(&iid)
        .arg(ctx.path())
        .output()
        .unwrap());
    let image_id = std::fs::read_to_string(&iid).unwrap();
    let err = stderr(&out);
    assert!(err.contains(&format!("writing image {image_id}")), "{err}");
    assert!(err.contains("naming to docker.io/library/app:1.0"), "{err}");
    let images = ok(rbuild().arg("--root").arg(store.path()).arg("images").output().unwrap());
    assert!(String::from_utf8_lossy(&images.stdout).contains("docker.io/library/app "), "{images:?}");
    // The explicit command builds the same image (same files, same epoch).
    let with_command = ok(rbuild()
        .env("SOURCE_DATE_EPOCH", "0")
        .arg("--root")
        .arg(store.path())
        .args(["build", "-q", "-t", "app:1.1"])
        .arg(ctx.path())
        .output()
        .unwrap());
    let without = ok(rbuild()
        .env("SOURCE_DATE_EPOCH", "0")
        .arg("--root")
        .arg(store.path())
        .args(["-q", "-t", "app:1.2"])
        .arg(ctx.path())
        .output()
        .unwrap());
    assert_eq!(with_command.stdout, without.stdout);
    // A quoted CSV field holds a comma: one output, two names.
    let out = ok(rbuild()
        .arg("--root")
        .arg(store.path())
        .args(["--progress", "plain", "-o", "type=image,\"name=two:a,two:b\""])
        .arg(ctx.path())
        .output()
        .unwrap());
    assert!(stderr(&out).contains("naming to docker.io/library/two:a"), "{}", stderr(&out));
    assert!(stderr(&out).contains("naming to docker.io/library/two:b"), "{}", stderr(&out));
    let images = ok(rbuild().arg("--root").arg(store.path()).arg("images").output().unwrap());
    let listing = String::from_utf8_lossy(&images.stdout);
    let two: Vec<&str> = listing.lines().filter(|l| l.starts_with("docker.io/library/two ")).collect();
    assert_eq!(two.len(), 2, "{listing}");
    // A malformed output spec fails before anything runs, naming the key.
    let bad =
        rbuild().arg("--root").arg(store.path()).args(["-o", "type=image,nmae=x"]).arg(ctx.path()).output().unwrap();
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("unknown key `nmae`; valid keys: type, name, push"), "{}", stderr(&bad));
}

#[test]
fn tar_output_on_stdout_holds_the_final_filesystem() {
    let reg = registry_with_busybox();
    let ctx = dockerfile_dir(&format!("FROM {}/busybox:latest\nRUN echo streamed > /streamed.txt\n", reg.addr));
    let store = tempfile::tempdir().unwrap();
    let out = ok(build(store.path(), ctx.path(), &["--progress", "plain", "-o", "-"]));
    // Standard output is the tar and nothing else (progress goes to stderr).
    let listing = tempfile::tempdir().unwrap();
    let tar_file = listing.path().join("out.tar");
    std::fs::write(&tar_file, &out.stdout).unwrap();
    let names = String::from_utf8(run(Command::new("tar").arg("-tf").arg(&tar_file))).unwrap();
    assert!(names.lines().any(|l| l.trim_start_matches("./") == "streamed.txt"), "{names}");
    assert!(names.lines().any(|l| l.trim_start_matches("./") == "bin/busybox"), "{names}");
    assert!(!ctx.path().join("-").exists() && !std::env::current_dir().unwrap().join("-").exists());
}

// ---- Bad input (project issue 6) and unrepresentable owners (issue 10) ----

/// Writes a tar at `path` with python3's `tarfile` from a list of entries:
/// `(name, kind, owner, mode, data_or_link)`, kind `f` file or `h` hard link.
fn python_tar(path: &Path, entries: &[(&str, char, u32, u32, &str)]) {
    let mut script =
        String::from("import io, sys, tarfile\nt = tarfile.open(sys.argv[1], 'w', format=tarfile.PAX_FORMAT)\n");
    for (name, kind, owner, mode, data) in entries {
        script +=
            &format!("i = tarfile.TarInfo({name:?}); i.uid = i.gid = {owner}; i.mode = {mode:#o}; i.mtime = 1000000\n");
        match kind {
            'h' => script += &format!("i.type = tarfile.LNKTYPE; i.linkname = {data:?}; t.addfile(i)\n"),
            _ => script += &format!("d = {data:?}.encode(); i.size = len(d); t.addfile(i, io.BytesIO(d))\n"),
        }
    }
    script += "t.close()\n";
    run(Command::new("python3").arg("-c").arg(script).arg(path));
}

/// Runs `rbuild --root <base>/store build --progress plain -o type=oci,dest=<base>/layout,tar=false <base>/ctx`
/// as `rbuildtest` (via runuser, when root) or as the current user.
fn build_as_test_user(base: &Path) -> Output {
    let mut cmd;
    if is_root() {
        ensure_test_user();
        run(Command::new("chown").args(["-R", "rbuildtest:rbuildtest"]).arg(base));
        run(Command::new("chmod").arg("755").arg(base));
        cmd = util::rbuild_as("rbuildtest", base);
    } else {
        cmd = rbuild();
    }
    cmd.arg("--root").arg(base.join("store")).args(["build", "--progress", "plain", "-o"]);
    cmd.arg(format!("type=oci,dest={},tar=false", base.join("layout").display())).arg(base.join("ctx"));
    cmd.output().unwrap()
}

/// Every file under `dir` named `name`.
fn find_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let out = Command::new("find").arg(dir).args(["-name", name]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from).collect()
}

#[test]
fn nested_expansion_depth_limit_is_a_clear_error() {
    let word = format!("{}x{}", "${a:-".repeat(20_000), "}".repeat(20_000));
    let ctx = dockerfile_dir(&format!("FROM scratch\nENV A={word}\n"));
    let store = tempfile::tempdir().unwrap();
    let out = build(store.path(), ctx.path(), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "must exit with an error, not a signal:\n{}", &err[..err.len().min(2000)]);
    assert!(
        err.contains("Dockerfile:2:1: substitutions nested more than 100 levels deep"),
        "{}",
        &err[..err.len().min(2000)]
    );
    assert!(!err.contains("overflow"), "{}", &err[..err.len().min(2000)]);
}

#[test]
fn copy_context_with_non_utf8_names() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let ctx = dockerfile_dir("FROM scratch\nCOPY . /ctx/\nCOPY caf?.txt /wild/\n");
    let latin1 = OsStr::from_bytes(b"caf\xe9.txt");
    std::fs::write(ctx.path().join(latin1), "latin-1 name\n").unwrap();
    std::fs::create_dir(ctx.path().join(OsStr::from_bytes(b"dir\xff"))).unwrap();
    std::fs::write(ctx.path().join(OsStr::from_bytes(b"dir\xff/inner\xfe")), "inner\n").unwrap();
    // `.dockerignore` patterns see each invalid byte as one character, as
    // Go's regexp does.
    std::fs::write(ctx.path().join(OsStr::from_bytes(b"skip-\xfe\xfd")), "ignored\n").unwrap();
    std::fs::write(ctx.path().join(".dockerignore"), "skip-??\n").unwrap();
    let store = tempfile::tempdir().unwrap();
    let layout = tempfile::tempdir().unwrap();
    let dest = format!("type=oci,dest={},tar=false", layout.path().join("l").display());
    ok(build(store.path(), ctx.path(), &["-o", &dest]));
    let check = |want: &str| {
        let unpacked = tempfile::tempdir().unwrap();
        for listing_layer in layer_blobs(&layout.path().join("l")) {
            run(Command::new("tar").arg("-xzf").arg(&listing_layer).arg("-C").arg(unpacked.path()));
        }
        let u = unpacked.path();
        assert_eq!(std::fs::read_to_string(u.join("ctx").join(latin1)).unwrap(), want, "name kept byte-exact");
        assert_eq!(std::fs::read_to_string(u.join("wild").join(latin1)).unwrap(), want, "wildcard matched it");
        assert_eq!(std::fs::read_to_string(u.join(OsStr::from_bytes(b"ctx/dir\xff/inner\xfe"))).unwrap(), "inner\n");
        assert!(!u.join("ctx").join(OsStr::from_bytes(b"skip-\xfe\xfd")).exists(), "ignored by `skip-??`");
        // No name was mangled into U+FFFD on the way.
        let listing = run(Command::new("find").arg(u));
        assert!(!listing.windows(3).any(|w| w == "\u{fffd}".as_bytes()), "{}", String::from_utf8_lossy(&listing));
    };
    check("latin-1 name\n");
    // The content checksum reads the file under its real name: a change is seen.
    std::fs::write(ctx.path().join(latin1), "changed\n").unwrap();
    ok(build(store.path(), ctx.path(), &["-o", &dest]));
    check("changed\n");
}

/// The layer blobs of the (single) manifest of an OCI layout dir.
fn layer_blobs(layout: &Path) -> Vec<PathBuf> {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(layout, index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    manifest["layers"].as_array().unwrap().iter().map(|l| blob(layout, l["digest"].as_str().unwrap())).collect()
}

#[test]
fn from_platform_is_validated() {
    let ctx = dockerfile_dir("FROM scratch AS ok\n\nFROM --platform=../../etc busybox\nRUN true\n");
    let store = tempfile::tempdir().unwrap();
    let out = build(store.path(), ctx.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:3:1: invalid platform `../../etc`"), "{err}");
    assert!(err.contains("only letters, digits"), "{err}");
    // The same rule for `--platform` on the command line.
    let ctx = dockerfile_dir("FROM scratch\n");
    let out = build(store.path(), ctx.path(), &["--platform", "linux/../../x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("invalid platform `linux/../../x`"), "{err}");
}

#[test]
fn add_tar_with_dangling_hardlink_names_the_cause() {
    let ctx = dockerfile_dir("FROM scratch\nADD links.tar /out/\n");
    python_tar(&ctx.path().join("links.tar"), &[("a", 'f', 0, 0o644, "a\n"), ("h", 'h', 0, 0o644, "missing")]);
    let store = tempfile::tempdir().unwrap();
    let out = build(store.path(), ctx.path(), &["--progress", "plain"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot hardlink `h` to `missing`: No such file or directory"), "{err}");
}

#[test]
fn long_workdir_error_says_file_name_too_long() {
    let ctx = dockerfile_dir(&format!("FROM scratch\nWORKDIR /{}\nCOPY Dockerfile .\n", "w".repeat(300)));
    let store = tempfile::tempdir().unwrap();
    let out = build(store.path(), ctx.path(), &["--progress", "plain"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("File name too long"), "{err}");
}

/// Rootless with the test user's 65,536 subordinate ids, `--chown` above
/// the range is an error that says what to do; as real root it works.
#[test]
fn unrepresentable_chown_is_an_error_rootless() {
    let base = tempfile::Builder::new().prefix("rbuild-chown").tempdir_in("/tmp").unwrap();
    let ctx = base.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY --chown=70000:70000 hello.txt /owned/hello.txt\nCOPY --chown=65536:65536 hello.txt /fits.txt\n",
    )
    .unwrap();
    std::fs::write(ctx.join("hello.txt"), "hi\n").unwrap();
    let out = build_as_test_user(base.path());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot give `/owned/hello.txt` the owner 70000:70000"), "{err}");
    assert!(err.contains("try increasing the number of subordinate IDs"), "{err}");
    assert!(
        find_named(base.path(), "hello.txt").iter().all(|p| p.starts_with(&ctx)),
        "no copy of the file was written"
    );
    if !is_root() {
        return;
    }
    // Real root maps every id: the owner is applied and reaches the layer.
    let layout = base.path().join("root-layout");
    let dest = format!("type=oci,dest={},tar=false", layout.display());
    ok(build(&base.path().join("root-store"), &ctx, &["-o", &dest]));
    let listings = layer_listings(&layout).join("\n");
    let owned = listings.lines().find(|l| l.ends_with(" owned/hello.txt")).expect("owned/hello.txt in a layer");
    assert!(owned.contains("70000/70000"), "{owned}");
}

/// Rootless, an ADDed tar whose entries are owned by an id above the range
/// fails, and its setuid file never becomes a setuid file owned by root;
/// as real root the owner and the setuid bit are both kept.
#[test]
fn unrepresentable_tar_owner_is_an_error_rootless() {
    let base = tempfile::Builder::new().prefix("rbuild-tarowner").tempdir_in("/tmp").unwrap();
    let ctx = base.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nADD owned.tar /opt/\n").unwrap();
    python_tar(
        &ctx.join("owned.tar"),
        &[("ok.txt", 'f', 0, 0o644, "ok\n"), ("suidbin", 'f', 200000, 0o4755, "#!/bin/sh\n")],
    );
    let out = build_as_test_user(base.path());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot give `suidbin` the owner 200000:200000"), "{err}");
    assert!(err.contains("try increasing the number of subordinate IDs"), "{err}");
    assert!(
        find_named(base.path(), "suidbin").is_empty(),
        "the entry was never written: {:?}",
        find_named(base.path(), "suidbin")
    );
    assert!(!base.path().join("layout").exists(), "no image was written");
    if !is_root() {
        return;
    }
    let layout = base.path().join("root-layout");
    let dest = format!("type=oci,dest={},tar=false", layout.display());
    ok(build(&base.path().join("root-store"), &ctx, &["-o", &dest]));
    let listings = layer_listings(&layout).join("\n");
    let suid = listings.lines().find(|l| l.ends_with(" opt/suidbin")).expect("suidbin in a layer");
    assert!(suid.starts_with("-rwsr-xr-x 200000/200000"), "{suid}");
}

/// A RUN for an architecture the host cannot execute fails before it
/// starts, naming the architecture and the host command that registers an
/// emulator. binfmt_misc is mounted in a private mount namespace (this
/// host's /proc/sys/fs/binfmt_misc may not be), which shows the kernel's
/// registrations without changing them.
#[test]
fn foreign_architecture_run_without_binfmt_names_the_fix() {
    if !is_root() {
        eprintln!("skipped: mounting binfmt_misc needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("Dockerfile"), "FROM scratch\nCOPY Dockerfile /x\nRUN [\"/x\"]\n").unwrap();
    let store = p.join("store");
    let out_dir = p.join("out");
    let exe = rbuild().get_program().to_owned();
    let script = "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || exit 78; \
                  [ -e /proc/sys/fs/binfmt_misc/qemu-s390x ] && exit 77; \
                  exec \"$0\" --root \"$1\" build --platform linux/s390x --progress plain -o \"type=local,dest=$2\" \"$3\"";
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", script])
        .arg(&exe)
        .arg(&store)
        .arg(&out_dir)
        .arg(p)
        .output()
        .unwrap();
    match out.status.code() {
        Some(77) => return eprintln!("skipped: this host has an s390x emulator registered"),
        Some(78) => return eprintln!("skipped: binfmt_misc cannot be mounted here"),
        _ => {}
    }
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RUN for `s390x` on this") && err.contains("host needs an emulator"), "{err}");
    assert!(err.contains("sudo apt-get install qemu-user-static"), "{err}");
    assert!(err.contains("cat /usr/lib/binfmt.d/qemu-s390x.conf > /proc/sys/fs/binfmt_misc/register"), "{err}");
    assert!(err.contains("docker run --privileged --rm tonistiigi/binfmt --install s390x"), "{err}");
    assert!(!err.contains("exit code"), "the command must not have been started: {err}");
    assert!(!out_dir.exists());
}

/// `-o type=oci,oci-mediatypes=false` over two platforms: the layout's top
/// document is a Docker manifest list whose entries are Docker schema-2
/// manifests with Docker config and layer types, every digest matching its
/// blob. (skopeo's `oci:` transport only looks up OCI-typed entries of
/// `index.json`, so it cannot open such a layout by name; BuildKit writes
/// the same.)
#[test]
fn oci_layout_with_docker_media_types_holds_a_manifest_list() {
    let reg = TestRegistry::start();
    reg.push_busybox_multiarch("busybox:latest");
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {}/busybox:latest\nCOPY Dockerfile /d\n", reg.addr))
        .unwrap();
    let store = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let layout = out_dir.path().join("layout");
    ok(build(
        store.path(),
        ctx.path(),
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "dm:1",
            "-o",
            &format!("type=oci,dest={},tar=false,oci-mediatypes=false", layout.display()),
        ],
    ));
    let blob = |digest: &str| -> Vec<u8> {
        let bytes = std::fs::read(layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))).unwrap();
        use sha2::Digest as _;
        assert_eq!(format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))), digest, "a blob does not match");
        bytes
    };
    let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
    let top = json(&std::fs::read(layout.join("index.json")).unwrap());
    let entry = &top["manifests"][0];
    assert_eq!(entry["mediaType"], "application/vnd.docker.distribution.manifest.list.v2+json", "{top}");
    let list_bytes = blob(entry["digest"].as_str().unwrap());
    assert_eq!(entry["size"].as_u64().unwrap(), list_bytes.len() as u64);
    let list = json(&list_bytes);
    assert_eq!(list["mediaType"], "application/vnd.docker.distribution.manifest.list.v2+json");
    let mut platforms = Vec::new();
    for m in list["manifests"].as_array().unwrap() {
        assert_eq!(m["mediaType"], "application/vnd.docker.distribution.manifest.v2+json", "{list}");
        let bytes = blob(m["digest"].as_str().unwrap());
        assert_eq!(m["size"].as_u64().unwrap(), bytes.len() as u64);
        let manifest = json(&bytes);
        assert_eq!(manifest["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
        assert_eq!(manifest["config"]["mediaType"], "application/vnd.docker.container.image.v1+json");
        let config = json(&blob(manifest["config"]["digest"].as_str().unwrap()));
        for layer in manifest["layers"].as_array().unwrap() {
            assert_eq!(layer["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip");
            blob(layer["digest"].as_str().unwrap());
        }
        assert_eq!(m["platform"]["architecture"], config["architecture"]);
        platforms.push(m["platform"]["architecture"].as_str().unwrap().to_string());
    }
    platforms.sort();
    assert_eq!(platforms, ["amd64", "arm64"]);
    // The entry carries the names, as in an OCI-typed layout.
    assert_eq!(entry["annotations"]["org.opencontainers.image.ref.name"], "1", "{top}");
}

/// `--annotation` (buildx's syntax) and an output's `annotation.*`
/// attributes on `rbuild build`: on the manifest, and `manifest-descriptor`
/// ones on the layout's `index.json` entry of a single-platform image.
#[test]
fn build_annotation_flags_reach_the_manifest_and_its_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY Dockerfile /d\n").unwrap();
    let layout = dir.path().join("layout");
    let store = dir.path().join("store");
    ok(rbuild()
        .arg("--root")
        .arg(&store)
        .args(["build", "--progress", "plain"])
        .args(["--annotation", "org.opencontainers.image.title=cli"])
        .args(["--annotation", "manifest-descriptor:org.example.desc=1"])
        .arg("-o")
        .arg(format!("type=oci,dest={},tar=false,annotation.org.example.out=o", layout.display()))
        .arg(&ctx)
        .output()
        .unwrap());
    let top: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = &top["manifests"][0];
    assert_eq!(entry["annotations"]["org.example.desc"], "1", "{top}");
    let digest = entry["digest"].as_str().unwrap().trim_start_matches("sha256:");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(digest)).unwrap()).unwrap();
    assert_eq!(manifest["annotations"]["org.opencontainers.image.title"], "cli", "{manifest}");
    assert_eq!(manifest["annotations"]["org.example.out"], "o", "{manifest}");
    assert!(manifest["annotations"].get("org.example.desc").is_none(), "{manifest}");

    let out = rbuild()
        .arg("--root")
        .arg(&store)
        .args(["build", "--progress", "plain", "--annotation", "index:k=v", "-o"])
        .arg(format!("type=oci,dest={}", dir.path().join("x.tar").display()))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("single platform"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--add-host` on `rbuild build` adds `/etc/hosts` lines to RUN, and is
/// part of the step's identity (BuildKit's `Meta.extraHosts`): another
/// address re-runs the step.
#[test]
fn build_add_host_reaches_run_and_keys_the_step() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}/busybox:latest\nRUN grep -w db /etc/hosts > /db && grep -w two /etc/hosts > /two\n", reg.addr),
    )
    .unwrap();
    let store = dir.path().join("store");
    for ip in ["10.9.8.7", "10.9.8.6"] {
        let out = dir.path().join(ip);
        ok(rbuild()
            .arg("--root")
            .arg(&store)
            .args([
                "build",
                "--progress",
                "plain",
                "--add-host",
                &format!("db:{ip}"),
                "--add-host",
                "two=10.0.0.1,10.0.0.2",
                "-o",
            ])
            .arg(&out)
            .arg(&ctx)
            .output()
            .unwrap());
        assert_eq!(std::fs::read_to_string(out.join("db")).unwrap(), format!("{ip}\tdb\n"));
        // buildx's `HOST=IP,IP`: one line per address.
        assert_eq!(std::fs::read_to_string(out.join("two")).unwrap(), "10.0.0.1\ttwo\n10.0.0.2\ttwo\n");
    }
    let out = rbuild().args(["build", "--add-host", "db=host-gateway"]).arg(&ctx).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("host-gateway"));
}

/// With binfmt_misc not mounted (hidden here by an empty tmpfs in a
/// private mount namespace), a foreign-architecture RUN cannot be checked
/// for an emulator: rbuild says so in the step's output, naming the mount
/// command, before starting it (it may still work through a handler
/// registered with the `F` flag, so it is not refused).
#[test]
fn foreign_run_without_binfmt_misc_mounted_says_it_cannot_verify() {
    if !is_root() {
        eprintln!("skipped: needs root for a private mount namespace");
        return;
    }
    let reg = TestRegistry::start();
    reg.push_busybox_multiarch("busybox:latest");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), format!("FROM {}/busybox:latest\nRUN true\n", reg.addr)).unwrap();
    let exe = rbuild().get_program().to_owned();
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs tmpfs /proc/sys/fs/binfmt_misc && exec \"$@\"")
        .arg("sh")
        .arg(exe)
        .arg("--root")
        .arg(dir.path().join("store"))
        .args(["build", "--progress", "plain", "--platform", "linux/arm64"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot verify that this `amd64` host runs `arm64` binaries"), "{err}");
    assert!(err.contains("sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc"), "{err}");
}

/// `--provenance=mode=min` on `rbuild build`: a single-platform image gets
/// an index with its attestation manifest (kept by a later `rbuild push`
/// from the store), and `min` leaves build args out; `--sbom` and
/// attestations with `oci-mediatypes=false` are refused clearly.
#[test]
fn build_provenance_flag_attaches_min_provenance_and_push_keeps_it() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nARG A\nCOPY Dockerfile /d\n").unwrap();
    let store = dir.path().join("store");
    let name = reg.reference("attested:1");
    let layout = dir.path().join("layout");
    ok(rbuild()
        .arg("--root")
        .arg(&store)
        .args(["build", "--progress", "plain", "--provenance=mode=min", "--build-arg", "A=hidden-in-min", "-t", &name])
        .arg("-o")
        .arg(format!("type=oci,dest={},tar=false", layout.display()))
        .arg("-o")
        .arg("type=image")
        .arg(&ctx)
        .output()
        .unwrap());
    ok(rbuild().arg("--root").arg(&store).args(["push", &name]).output().unwrap());
    let index = util::skopeo_inspect_raw(&name);
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    assert_eq!(entries[1]["annotations"]["vnd.docker.reference.type"], "attestation-manifest", "{index}");
    let att =
        util::skopeo_inspect_raw(&format!("{}@{}", reg.reference("attested"), entries[1]["digest"].as_str().unwrap()));
    let statement = std::fs::read_to_string(
        layout.join("blobs/sha256").join(att["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:")),
    )
    .unwrap();
    assert!(statement.contains("https://slsa.dev/provenance/v1"), "{statement}");
    assert!(!statement.contains("hidden-in-min"), "mode=min must leave build args out: {statement}");

    for (flags, says) in [
        (vec!["--sbom"], "`type=sbom` attestations are not supported"),
        (vec!["--attest", "type=provenance", "-o", "type=oci,dest=x.tar,oci-mediatypes=false"], "oci-mediatypes=false"),
    ] {
        let out = rbuild()
            .arg("--root")
            .arg(&store)
            .args(["build", "--progress", "plain"])
            .args(&flags)
            .arg(&ctx)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flags:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{flags:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The manifest's layer digests of the single image in an OCI layout.
fn layout_layers(layout: &Path) -> Vec<String> {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(layout, index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

/// Incremental COPY (issue 11) under attack: a RUN after the COPY appends
/// to, chmods, touches, removes and hard-links the COPY's files, which the
/// next build's incremental COPY shares by inode with the previous
/// snapshot. Neither snapshot may change: the rebuilt image's layers are
/// byte-identical to a fresh store's build of the same context, the store
/// really shares the unchanged file between the two COPY snapshots, and
/// the file the RUN appended to has its own inode.
fn incremental_copy_shared_inodes_are_never_written(as_test_user: bool, overlay_copy: bool) {
    let reg = registry_with_busybox();
    let base = tempfile::Builder::new().prefix("rbuild-incremental").tempdir_in("/tmp").unwrap();
    let ctx = base.path().join("ctx");
    std::fs::create_dir_all(ctx.join("src/sub")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}/busybox:latest\nCOPY src/ /app/src/\n\
             RUN echo evil >> /app/src/keep.txt && chmod 777 /app/src/mode.txt && touch -d @0 /app/src/time.txt \
             && rm /app/src/gone.txt && ln -f /app/src/sub/deep.txt /app/src/linked && cat /app/src/other.txt\n",
            reg.addr
        ),
    )
    .unwrap();
    for (name, text) in [
        ("keep.txt", "keep\n"),
        ("mode.txt", "mode\n"),
        ("time.txt", "time\n"),
        ("gone.txt", "gone\n"),
        ("other.txt", "one\n"),
        ("sub/deep.txt", "deep\n"),
    ] {
        std::fs::write(ctx.join("src").join(name), text).unwrap();
    }
    // Fixed context mtimes and SOURCE_DATE_EPOCH after them: directories
    // made at build time get the epoch, so two stores' layers can agree.
    let set_times =
        || run(Command::new("find").arg(&ctx).args(["-exec", "touch", "-h", "-d", "@1000000000", "{}", "+"]));
    set_times();
    let store = base.path().join("store");
    let fresh_store = base.path().join("fresh");
    if as_test_user {
        ensure_test_user();
        run(Command::new("chown").args(["-R", "rbuildtest:rbuildtest"]).arg(base.path()));
        run(Command::new("chmod").arg("755").arg(base.path()));
    }
    let build_into = |store: &Path, layout: &Path| {
        let mut cmd;
        if as_test_user {
            cmd = util::rbuild_as("rbuildtest", base.path());
        } else {
            cmd = rbuild();
        }
        cmd.env("SOURCE_DATE_EPOCH", "1500000000");
        if overlay_copy {
            // The copy fallback for kernels without overlayfs: RUN roots are
            // flattened copies, and their changes diffed into the upper.
            cmd.env("RBUILD_OVERLAY", "copy");
        }
        cmd.arg("--root").arg(store).args(["build", "--progress", "plain", "-o"]);
        cmd.arg(format!("type=oci,dest={},tar=false", layout.display())).arg(&ctx);
        ok(cmd.output().unwrap());
    };
    build_into(&store, &base.path().join("one"));
    // Another size: with the mtime put back, only the size (or inode)
    // tells the stat-keyed checksum cache that the file changed.
    std::fs::write(ctx.join("src/other.txt"), "second\n").unwrap();
    set_times();
    let rebuilt = base.path().join("two");
    build_into(&store, &rebuilt);
    let fresh = base.path().join("three");
    build_into(&fresh_store, &fresh);
    if layout_layers(&rebuilt) != layout_layers(&fresh) {
        panic!(
            "incremental COPY + RUN vs a fresh store (kept in {}):\n{}\n--- fresh:\n{}",
            base.keep().display(),
            layer_listings(&rebuilt).join("\n"),
            layer_listings(&fresh).join("\n")
        );
    }
    assert_eq!(std::fs::read_to_string(ctx.join("src/keep.txt")).unwrap(), "keep\n", "the context is untouched");
    // The store's copies of keep.txt: both COPY snapshots share one inode
    // holding the original bytes; each RUN's append went to its own inode.
    let mut by_inode: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    for snap in std::fs::read_dir(store.join("snapshots")).unwrap() {
        let p = snap.unwrap().path().join("diff/app/src/keep.txt");
        if let Ok(md) = std::fs::symlink_metadata(&p) {
            use std::os::unix::fs::MetadataExt;
            by_inode.entry(md.ino()).or_default().push(std::fs::read_to_string(&p).unwrap());
        }
    }
    let shared: Vec<&Vec<String>> = by_inode.values().filter(|v| v.len() > 1).collect();
    assert_eq!(shared.len(), 1, "one inode shared by the two COPY snapshots: {by_inode:?}");
    assert_eq!(shared[0], &vec!["keep\n".to_string(); 2], "{by_inode:?}");
    let appended: Vec<&Vec<String>> = by_inode.values().filter(|v| v[0] == "keep\nevil\n").collect();
    assert_eq!(appended.len(), 2, "each RUN wrote its own copy: {by_inode:?}");
    assert!(appended.iter().all(|v| v.len() == 1), "{by_inode:?}");
}

#[test]
fn incremental_copy_shared_inodes_are_never_written_as_root() {
    incremental_copy_shared_inodes_are_never_written(false, false);
}

#[test]
fn incremental_copy_shared_inodes_are_never_written_with_the_copy_fallback() {
    incremental_copy_shared_inodes_are_never_written(false, true);
}

#[test]
fn incremental_copy_shared_inodes_are_never_written_as_a_non_root_user() {
    if !is_root() {
        eprintln!("not root: the test user cannot be created here");
        return;
    }
    incremental_copy_shared_inodes_are_never_written(true, false);
}

/// `COPY --from` of a whole stage shares the stage's inodes (and the layer
/// writer then finds the two layers equal by those inodes), so a `RUN`
/// after it attacks the stage's snapshot: it appends to, chmods, touches,
/// removes and hard-links the copied files. The stage's snapshot must not
/// change (its files, exported again from the same store, are the
/// context's), the two COPY snapshots really share one inode, and the
/// file the RUN appended to has its own.
fn copy_from_shared_inodes_are_never_written(as_test_user: bool) {
    let reg = registry_with_busybox();
    let base = tempfile::Builder::new().prefix("rbuild-copyfrom-inodes").tempdir_in("/tmp").unwrap();
    let ctx = base.path().join("ctx");
    std::fs::create_dir_all(ctx.join("src")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {reg}/busybox:latest AS stage\nCOPY src/ /app/src/\n\
             FROM {reg}/busybox:latest\nCOPY --from=stage /app/src /app/src\n\
             RUN echo evil >> /app/src/keep.txt && chmod 777 /app/src/mode.txt && touch -d @0 /app/src/time.txt \
             && rm /app/src/gone.txt && ln -f /app/src/keep.txt /app/src/linked\n",
            reg = reg.addr
        ),
    )
    .unwrap();
    for (name, text) in [("keep.txt", "keep\n"), ("mode.txt", "mode\n"), ("time.txt", "time\n"), ("gone.txt", "gone\n")]
    {
        std::fs::write(ctx.join("src").join(name), text).unwrap();
    }
    if as_test_user {
        ensure_test_user();
        run(Command::new("chown").args(["-R", "rbuildtest:rbuildtest"]).arg(base.path()));
        run(Command::new("chmod").arg("755").arg(base.path()));
    }
    let store = base.path().join("store");
    let build = |extra: &[&str]| {
        let mut cmd = if as_test_user { util::rbuild_as("rbuildtest", base.path()) } else { rbuild() };
        cmd.arg("--root").arg(&store).args(["build", "--progress", "plain"]).args(extra).arg(&ctx);
        ok(cmd.output().unwrap());
    };
    build(&["-t", "attacked:1"]);
    let out = base.path().join("stage");
    build(&["--target", "stage", "-o", &format!("type=local,dest={}", out.display())]);
    let src = out.join("app/src");
    for name in ["keep.txt", "mode.txt", "time.txt", "gone.txt"] {
        assert_eq!(
            std::fs::read(src.join(name)).unwrap(),
            std::fs::read(ctx.join("src").join(name)).unwrap(),
            "the stage's {name} changed"
        );
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(std::fs::metadata(src.join("mode.txt")).unwrap().permissions().mode() & 0o777, 0o644);
    assert_ne!(std::fs::metadata(src.join("time.txt")).unwrap().mtime(), 0, "the stage's mtime changed");
    assert!(!src.join("linked").exists());
    let mut by_inode: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    for snap in std::fs::read_dir(store.join("snapshots")).unwrap() {
        let p = snap.unwrap().path().join("diff/app/src/keep.txt");
        if let Ok(md) = std::fs::symlink_metadata(&p) {
            by_inode.entry(md.ino()).or_default().push(std::fs::read_to_string(&p).unwrap());
        }
    }
    let shared: Vec<&Vec<String>> = by_inode.values().filter(|v| v.len() > 1).collect();
    assert_eq!(shared.len(), 1, "the stage and its COPY --from share one inode: {by_inode:?}");
    assert_eq!(shared[0], &vec!["keep\n".to_string(); 2], "{by_inode:?}");
    let appended: Vec<&Vec<String>> = by_inode.values().filter(|v| v[0] == "keep\nevil\n").collect();
    assert_eq!(appended.len(), 1, "the RUN wrote its own copy: {by_inode:?}");
}

#[test]
fn copy_from_shared_inodes_are_never_written_as_root() {
    copy_from_shared_inodes_are_never_written(false);
}

#[test]
fn copy_from_shared_inodes_are_never_written_as_a_non_root_user() {
    if !is_root() {
        eprintln!("not root: the test user cannot be created here");
        return;
    }
    copy_from_shared_inodes_are_never_written(true);
}
