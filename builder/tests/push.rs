//! Registry client end to end: `rbuild login`/`logout`/`push` and
//! `build --push` against a real `docker-registry` (behind TLS with
//! htpasswd auth, or plain behind a fault-injecting proxy), checked with
//! `skopeo` and the registry's own log.

mod util;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use util::faultproxy::{Fault, FaultProxy, Rule};
use util::{TestRegistry, ok, rbuild, run};
use util::{ensure_test_user, is_root};

/// A password no output may ever contain.
const PASSWORD: &str = "pw-Zq8rbuildSECRET";

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `rbuild` with only the temporary credential locations of `env`.
fn rbuild_in(env: &Path) -> Command {
    let mut cmd = rbuild();
    cmd.env("DOCKER_CONFIG", env.join("docker"))
        .env("XDG_RUNTIME_DIR", env.join("run"))
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("SSL_CERT_FILE")
        .env_remove("RBUILD_REGISTRY_CA");
    cmd
}

fn login(env: &Path, reg: &TestRegistry, password: &str, extra: &[&str]) -> Output {
    let mut child = rbuild_in(env)
        .args(["login", "-u", "alice", "--password-stdin"])
        .args(extra)
        .arg(&reg.addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rbuild login");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn docker_config(env: &Path) -> serde_json::Value {
    let path = env.join("docker/config.json");
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).unwrap(),
        Err(_) => serde_json::json!({}),
    }
}

fn base64(s: &str) -> String {
    let out = run(Command::new("base64").arg("-w0").stdin_bytes(s));
    String::from_utf8(out).unwrap()
}

trait StdinBytes {
    fn stdin_bytes(&mut self, s: &str) -> &mut Self;
}

impl StdinBytes for Command {
    /// Feeds `s` on stdin through a temp file (Command::output has no
    /// stdin data).
    fn stdin_bytes(&mut self, s: &str) -> &mut Self {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), s).unwrap();
        self.stdin(std::fs::File::open(f.path()).unwrap())
    }
}

/// skopeo against the TLS registry with its CA and an auth file.
fn skopeo_tls(reg: &TestRegistry, authfile: &Path, args: &[&str]) -> Output {
    let ca = reg.tls.as_ref().unwrap();
    Command::new("skopeo")
        .args(args)
        .arg("--cert-dir")
        .arg(&ca.cert_dir)
        .arg("--authfile")
        .arg(authfile)
        .output()
        .unwrap()
}

fn first_layer_digest(reg: &TestRegistry, name: &str) -> String {
    reg.inspect_raw(name)["layers"][0]["digest"].as_str().unwrap().to_string()
}

#[test]
fn login_build_push_and_logout_against_a_tls_registry_with_auth() {
    let reg = TestRegistry::start_tls_with_auth("alice", PASSWORD);
    let ca = reg.tls.as_ref().unwrap();
    reg.push_busybox("busybox:latest");
    let base_layer = first_layer_digest(&reg, "busybox:latest");
    let env = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(env.path().join("run")).unwrap();
    let ca_flag = ["--registry-ca", ca.ca_cert.to_str().unwrap()];
    let mut all_output = String::new();

    // A wrong password is refused by the registry and nothing is stored.
    let out = login(env.path(), &reg, "not-the-password", &ca_flag);
    all_output += &text(&out);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("authentication") || text(&out).contains("401"), "{}", text(&out));
    assert!(docker_config(env.path())["auths"].get(&reg.addr).is_none());
    assert!(!text(&out).contains("not-the-password"));
    // Without the CA the certificate is not trusted (no silent plain HTTP
    // fallback to a TLS server either).
    let out = login(env.path(), &reg, PASSWORD, &[]);
    all_output += &text(&out);
    assert!(!out.status.success(), "{}", text(&out));

    // The right one is verified and written as docker does.
    let out = ok(login(env.path(), &reg, PASSWORD, &ca_flag));
    all_output += &text(&out);
    assert!(text(&out).contains("Login Succeeded"));
    let config = docker_config(env.path());
    assert_eq!(config["auths"][&reg.addr]["auth"], base64(&format!("alice:{PASSWORD}")));

    // Build on the private base and push, the CA given by SSL_CERT_FILE.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {}\nRUN echo built > /built\n", reg.reference("busybox")),
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let app = reg.reference("app:1");
    let out = ok(rbuild_in(env.path())
        .env("SSL_CERT_FILE", &ca.ca_cert)
        .arg("--root")
        .arg(store.path())
        .args(["build", "--push", "--progress", "rawjson", "-t", &app])
        .arg(ctx.path())
        .output()
        .unwrap());
    all_output += &text(&out);

    // The base layer was mounted from `busybox`, never uploaded.
    let log = reg.log();
    let hex = base_layer.trim_start_matches("sha256:");
    // (A first attempt may be a 401 challenge; the mount itself is a 201.)
    let mount = log.lines().find(|l| {
        l.contains("POST /v2/app/blobs/uploads/") && l.contains("mount=") && l.contains(hex) && l.contains("\" 201 ")
    });
    let mount = mount.unwrap_or_else(|| panic!("no mount POST for {base_layer} in the registry log:\n{log}"));
    assert!(mount.contains("from=busybox"), "{mount}");
    assert!(
        !log.lines().any(|l| l.contains("/v2/app/blobs/uploads/")
            && (l.contains("\"PUT ") || l.contains("\"PATCH "))
            && l.contains(hex)),
        "base layer uploaded:\n{log}"
    );

    // skopeo reads it back with the same auth file and the CA.
    let authfile = env.path().join("docker/config.json");
    let inspect = skopeo_tls(&reg, &authfile, &["inspect", &format!("docker://{app}")]);
    assert!(inspect.status.success(), "{}", text(&inspect));
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(info["Layers"][0], base_layer.as_str());
    let copy_dir = tempfile::tempdir().unwrap();
    let ca_dir = ca.cert_dir.to_str().unwrap();
    let copy = Command::new("skopeo")
        .args(["copy", "-q", "--src-cert-dir", ca_dir, "--src-authfile"])
        .arg(&authfile)
        .arg(format!("docker://{app}"))
        .arg(format!("oci:{}:app", copy_dir.path().display()))
        .output()
        .unwrap();
    assert!(copy.status.success(), "{}", text(&copy));

    // `rbuild push` of the stored image, under another name and with
    // Docker media types.
    let pushed = reg.reference("pushed:2");
    let out = ok(rbuild_in(env.path())
        .arg("--root")
        .arg(store.path())
        .args(["push", "--progress", "plain", &app, &pushed])
        .args(ca_flag)
        .output()
        .unwrap());
    all_output += &text(&out);
    let digest = |name: &str| {
        let out = skopeo_tls(&reg, &authfile, &["inspect", "--format", "{{.Digest}}", &format!("docker://{name}")]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(digest(&pushed), digest(&app));
    let docker = reg.reference("docker:1");
    ok(rbuild_in(env.path())
        .arg("--root")
        .arg(store.path())
        .args(["push", "--oci-mediatypes=false", &app, &docker])
        .args(ca_flag)
        .output()
        .unwrap());
    let raw = skopeo_tls(&reg, &authfile, &["inspect", "--raw", &format!("docker://{docker}")]);
    let raw: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(raw["config"]["mediaType"], "application/vnd.docker.container.image.v1+json");
    for l in raw["layers"].as_array().unwrap() {
        assert_eq!(l["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip");
    }

    // The same from the build's image output (`oci-mediatypes=false`).
    let docker_build = reg.reference("docker-build:1");
    ok(rbuild_in(env.path())
        .env("SSL_CERT_FILE", &ca.ca_cert)
        .arg("--root")
        .arg(store.path())
        .args(["build", "-o", &format!("type=registry,name={docker_build},oci-mediatypes=false")])
        .arg(ctx.path())
        .output()
        .unwrap());
    let raw = skopeo_tls(&reg, &authfile, &["inspect", "--raw", &format!("docker://{docker_build}")]);
    let raw: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(raw["layers"][1]["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip");
    // Same (cached) layers; the config differs only in its `created` time.
    let digests =
        |v: &serde_json::Value| v["layers"].as_array().unwrap().iter().map(|l| l["digest"].clone()).collect::<Vec<_>>();
    let pushed_raw = skopeo_tls(&reg, &authfile, &["inspect", "--raw", &format!("docker://{docker}")]);
    assert_eq!(digests(&raw), digests(&serde_json::from_slice(&pushed_raw.stdout).unwrap()));

    // podman's auth.json is read when config.json has no entry.
    std::fs::rename(env.path().join("docker/config.json"), env.path().join("saved.json")).unwrap();
    std::fs::create_dir_all(env.path().join("run/containers")).unwrap();
    std::fs::copy(env.path().join("saved.json"), env.path().join("run/containers/auth.json")).unwrap();
    ok(rbuild_in(env.path())
        .arg("--root")
        .arg(store.path())
        .args(["push", &app, &reg.reference("podman:1")])
        .args(ca_flag)
        .output()
        .unwrap());
    std::fs::remove_file(env.path().join("run/containers/auth.json")).unwrap();
    std::fs::rename(env.path().join("saved.json"), env.path().join("docker/config.json")).unwrap();

    // Logout removes the entry; pushing then is refused.
    let out = ok(rbuild_in(env.path()).args(["logout", &reg.addr]).output().unwrap());
    assert!(text(&out).contains("Removing login credentials"));
    assert!(docker_config(env.path())["auths"].get(&reg.addr).is_none());
    let out = rbuild_in(env.path())
        .arg("--root")
        .arg(store.path())
        .args(["push", &app, &reg.reference("anon:1")])
        .args(ca_flag)
        .output()
        .unwrap();
    all_output += &text(&out);
    assert!(!out.status.success());
    assert!(text(&out).contains("rbuild login"), "{}", text(&out));
    let out = ok(rbuild_in(env.path()).args(["logout", &reg.addr]).output().unwrap());
    assert!(text(&out).contains("Not logged in"));

    // The password never appeared anywhere, in plain or base64.
    assert!(!all_output.contains(PASSWORD), "password leaked:\n{all_output}");
    assert!(!all_output.contains(&base64(&format!("alice:{PASSWORD}"))), "credential leaked:\n{all_output}");
}

/// A context whose image has a large random (incompressible) layer.
fn big_layer_context(base: &str, megabytes: usize) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {base}\nCOPY big /big\nCOPY small /small\n")).unwrap();
    run(Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", ctx.path().join("big").display()))
        .arg("bs=1M")
        .arg(format!("count={megabytes}"))
        .stderr(Stdio::null()));
    std::fs::write(ctx.path().join("small"), "small\n").unwrap();
    ctx
}

fn http_status(addr: &str, path: &str) -> u16 {
    let out = run(Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{addr}{path}")));
    String::from_utf8(out).unwrap().trim().parse().unwrap()
}

#[test]
fn push_retries_through_faults_resumes_chunks_and_gives_up_cleanly() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let store = tempfile::tempdir().unwrap();
    let env = tempfile::tempdir().unwrap();
    // 40 MiB: above the 32 MiB chunk size, so the layer goes in PATCHes.
    let ctx = big_layer_context(&reg.reference("busybox"), 40);
    ok(rbuild_in(env.path())
        .arg("--root")
        .arg(store.path())
        .args(["build", "-t", "local/app:1"])
        .arg(ctx.path())
        .output()
        .unwrap());

    // Faults on a share of requests: 503 and 429 with Retry-After, dropped
    // connections, a PATCH whose answer is lost, a PATCH cut part-way, a
    // truncated response.
    let proxy = FaultProxy::start(
        &reg.addr,
        vec![
            Rule {
                method: Some("PATCH"),
                path_contains: "/blobs/uploads/",
                every: 1,
                limit: 1,
                fault: Fault::TruncateResponse(10),
            },
            Rule {
                method: Some("PATCH"),
                path_contains: "/blobs/uploads/",
                every: 1,
                limit: 1,
                fault: Fault::CutRequestBody(5 << 20),
            },
            Rule { method: Some("HEAD"), path_contains: "/blobs/", every: 2, limit: 2, fault: Fault::Drop },
            Rule {
                method: Some("POST"),
                path_contains: "/blobs/uploads/",
                every: 2,
                limit: 2,
                fault: Fault::Status { code: 503, retry_after: Some(1) },
            },
            Rule {
                method: Some("PUT"),
                path_contains: "/blobs/uploads/",
                every: 2,
                limit: 1,
                fault: Fault::Status { code: 429, retry_after: Some(1) },
            },
            Rule {
                method: Some("PUT"),
                path_contains: "/manifests/",
                every: 1,
                limit: 1,
                fault: Fault::Status { code: 503, retry_after: None },
            },
            Rule {
                method: Some("GET"),
                path_contains: "/blobs/uploads/",
                every: 1,
                limit: 1,
                fault: Fault::TruncateResponse(12),
            },
        ],
    );
    let target = format!("{}/app:1", proxy.addr);
    let out = ok(rbuild_in(env.path())
        .arg("--root")
        .arg(store.path())
        .args(["push", "--progress", "plain", "local/app:1", &target])
        .output()
        .unwrap());
    let log = proxy.log();
    assert!(proxy.faults() >= 5, "faults: {log:#?}");
    // After the PATCH whose answer was lost, the client asked the upload
    // URL how far it got (distribution refuses to resume a session whose
    // state token is stale, with 404: the blob then starts over in a new
    // session), and the layer was committed in the end.
    let lost = log.iter().position(|l| l.fault == Some(Fault::TruncateResponse(10))).expect("a PATCH answer was lost");
    assert_eq!(log[lost].method, "PATCH");
    assert!(
        log[lost..].iter().any(|l| l.method == "GET" && l.target.contains("/blobs/uploads/") && l.status.is_some()),
        "no upload-status query after the lost answer: {log:#?}\n{}",
        text(&out)
    );
    assert!(log.iter().any(|l| l.fault == Some(Fault::CutRequestBody(5 << 20))), "no PATCH was cut: {log:#?}");
    // skopeo reads and verifies every blob of what was pushed.
    let copy_dir = tempfile::tempdir().unwrap();
    run(Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{}", reg.reference("app:1")))
        .arg(format!("oci:{}:app", copy_dir.path().display())));
    let raw = reg.inspect_raw("app:1");
    assert_eq!(raw["layers"].as_array().unwrap().len(), 3);
    assert!(raw["layers"][1]["size"].as_u64().unwrap() > 40 << 20);
    let big = raw["layers"][1]["digest"].as_str().unwrap().replace(':', "%3A");
    assert!(
        log.iter().any(|l| l.method == "PUT" && l.target.contains(&big) && l.status == Some(201)),
        "the big layer was never committed: {log:#?}"
    );

    // Beyond the retry budget: every upload is refused. The push fails,
    // saying why, and no manifest is left behind.
    let broken = FaultProxy::start(
        &reg.addr,
        vec![
            Rule::always(Some("PUT"), "/blobs/uploads/", Fault::Status { code: 503, retry_after: None }),
            Rule::always(Some("PATCH"), "/blobs/uploads/", Fault::Status { code: 503, retry_after: None }),
        ],
    );
    let target = format!("{}/broken:1", broken.addr);
    let out =
        rbuild_in(env.path()).arg("--root").arg(store.path()).args(["push", "local/app:1", &target]).output().unwrap();
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(msg.contains("gave up after 5 attempts") && msg.contains("503"), "{msg}");
    assert!(!broken.log().iter().any(|l| l.target.contains("/manifests/")), "a manifest was sent: {:#?}", broken.log());
    assert_eq!(http_status(&reg.addr, "/v2/broken/manifests/1"), 404);
}

#[test]
fn truncated_or_tampered_base_layers_never_enter_the_store() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let layer = first_layer_digest(&reg, "busybox:latest");
    let hex = layer.trim_start_matches("sha256:").to_string();
    let env = tempfile::tempdir().unwrap();
    let in_store = |store: &Path| store.join("blobs/sha256").join(&hex).exists();

    // Every download of the layer is cut short.
    let proxy =
        FaultProxy::start(&reg.addr, vec![Rule::always(Some("GET"), "/blobs/sha256:", Fault::TruncateResponse(4096))]);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {}/busybox\nRUN true\n", proxy.addr)).unwrap();
    let store = tempfile::tempdir().unwrap();
    let out = rbuild_in(env.path()).arg("--root").arg(store.path()).arg("build").arg(ctx.path()).output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(proxy.faults() >= 2, "{:#?}", proxy.log());
    assert!(!in_store(store.path()));

    // The registry serves other bytes under the layer's digest.
    let data = reg.blob_data_path(&layer);
    let size = std::fs::metadata(&data).unwrap().len();
    std::fs::write(&data, vec![0x5a; size as usize]).unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {}\nRUN true\n", reg.reference("busybox"))).unwrap();
    let store = tempfile::tempdir().unwrap();
    let out = rbuild_in(env.path()).arg("--root").arg(store.path()).arg("build").arg(ctx.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("does not match its digest"), "{}", text(&out));
    assert!(!in_store(store.path()));
}

/// Base-image layers are downloaded a bounded number at once (3, as
/// dockerd): an image of 12 layers, each download held 300 ms by the proxy,
/// never has more than 3 in flight, yet more than one (they do overlap),
/// and the image comes out whole and in order.
#[test]
fn base_layers_are_pulled_a_bounded_number_at_once() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let env = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let runs: String = (1..=11).map(|i| format!("RUN echo {i} >> /order\n")).collect();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {}\n{runs}", reg.reference("busybox"))).unwrap();
    let store = tempfile::tempdir().unwrap();
    let many = reg.reference("many:layers");
    let out = rbuild_in(env.path())
        .arg("--root")
        .arg(store.path())
        .args(["build", "-o", &format!("type=registry,name={many}")])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let proxy = FaultProxy::start(&reg.addr, vec![Rule::always(Some("GET"), "/blobs/sha256:", Fault::Delay(300))]);
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {}/many:layers\nRUN cat /order > /seen\n", proxy.addr))
        .unwrap();
    let dest = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let out = rbuild_in(env.path())
        .arg("--root")
        .arg(store.path())
        .args(["build", "-o", &format!("type=local,dest={}", dest.path().display())])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let expected: String = (1..=11).map(|i| format!("{i}\n")).collect();
    assert_eq!(std::fs::read_to_string(dest.path().join("seen")).unwrap(), expected);
    let layers = proxy.blob_gets().len();
    assert!(layers >= 12, "{layers} blobs fetched: {:#?}", proxy.log());
    let most = proxy.max_delayed_in_flight();
    assert!((2..=3).contains(&most), "{most} downloads in flight at once");
}

#[test]
fn login_build_push_as_a_non_root_user() {
    let root = is_root();
    if root {
        ensure_test_user();
    } else {
        eprintln!("not root: running as the current (non-root) user");
    }
    let reg = TestRegistry::start_tls_with_auth("alice", PASSWORD);
    reg.push_busybox("busybox:latest");
    let base = tempfile::Builder::new().prefix("rbuild-rootless-push").tempdir_in("/tmp").unwrap();
    let home = base.path().join("home");
    let ctx = base.path().join("ctx");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {}\nRUN id -u > /uid\n", reg.reference("busybox"))).unwrap();
    let ca = base.path().join("ca.pem");
    std::fs::copy(&reg.tls.as_ref().unwrap().ca_cert, &ca).unwrap();
    if root {
        run(Command::new("chown").args(["-R", "rbuildtest:rbuildtest"]).arg(base.path()));
        run(Command::new("chmod").arg("755").arg(base.path()));
    }
    // rbuild as the test user, with only HOME pointing at its config.
    let as_user = || {
        let mut cmd = if root {
            // runuser resets HOME to the user's own: set it through env.
            let mut c = Command::new("runuser");
            c.args(["-u", "rbuildtest", "--", "env"]).arg(format!("HOME={}", home.display()));
            c.arg(rbuild().get_program());
            c
        } else {
            rbuild()
        };
        cmd.env("HOME", &home)
            .env_remove("DOCKER_CONFIG")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("SSL_CERT_FILE")
            .env("RBUILD_REGISTRY_CA", &ca);
        cmd
    };
    let mut all = String::new();
    let mut login = as_user()
        .args(["login", "-u", "alice", "--password-stdin", &reg.addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    login.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    let out = ok(login.wait_with_output().unwrap());
    all += &text(&out);
    let config = home.join(".docker/config.json");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&config).expect("config.json written under ~/.docker");
    assert_eq!(meta.mode() & 0o777, 0o600);
    if root {
        let uid = String::from_utf8(run(Command::new("id").args(["-u", "rbuildtest"]))).unwrap();
        assert_eq!(meta.uid().to_string(), uid.trim(), "config.json must belong to the user");
    }
    let store = base.path().join("store");
    let app = reg.reference("rootless:1");
    let out = ok(as_user()
        .arg("--root")
        .arg(&store)
        .args(["build", "--push", "--progress", "rawjson", "-t", &app])
        .arg(&ctx)
        .output()
        .unwrap());
    all += &text(&out);
    let inspect = skopeo_tls(&reg, &config, &["inspect", &format!("docker://{app}")]);
    assert!(inspect.status.success(), "{}", text(&inspect));
    let out = ok(as_user().args(["logout", &reg.addr]).output().unwrap());
    all += &text(&out);
    assert!(docker_config_at(&config)["auths"].get(&reg.addr).is_none());
    assert!(!all.contains(PASSWORD), "password leaked:\n{all}");
}

fn docker_config_at(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}
