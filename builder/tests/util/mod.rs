//! Shared end-to-end test harness: a real `docker-registry` on a free
//! loopback port, busybox base images pushed into it, and command builders for
//! `rbuild` and `skopeo`.
//!
//! Every e2e test binary includes this with `mod util;`; the in-crate tests of
//! `registry` include it with `#[path = "../../tests/util/mod.rs"]`. Because
//! unit tests of a binary crate do not get `CARGO_BIN_EXE_*` or
//! `CARGO_TARGET_TMPDIR`, those are read with `option_env!` and have
//! fallbacks. Harness failures panic: they are test set-up, not code under
//! test.
#![allow(dead_code)]

pub mod faultproxy;
pub mod progress;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The script that builds the busybox OCI layout.
const MAKE_BUSYBOX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/make-busybox-image.sh");

/// A `docker-registry` serving on `127.0.0.1:PORT`, storage in a temp dir,
/// killed on drop.
pub struct TestRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Credentials the registry demands (htpasswd), if any.
    pub creds: Option<(String, String)>,
    /// For a TLS registry: the CA that signed its certificate.
    pub tls: Option<TestCa>,
    child: Child,
    dir: tempfile::TempDir,
}

impl TestRegistry {
    /// Starts an anonymous registry.
    pub fn start() -> TestRegistry {
        Self::start_inner(None, false)
    }

    /// Starts a registry that requires HTTP basic auth (`auth: htpasswd`)
    /// with one user.
    pub fn start_with_auth(user: &str, password: &str) -> TestRegistry {
        Self::start_inner(Some((user.to_string(), password.to_string())), false)
    }

    /// Starts a registry behind TLS (a certificate for `127.0.0.1` signed
    /// by a CA made for this registry) that requires basic auth, with its
    /// access log on (see [`TestRegistry::log`]).
    pub fn start_tls_with_auth(user: &str, password: &str) -> TestRegistry {
        Self::start_inner(Some((user.to_string(), password.to_string())), true)
    }

    /// The registry's log (access log for TLS registries).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn start_inner(creds: Option<(String, String)>, tls: bool) -> TestRegistry {
        let dir = tempfile::tempdir().expect("temp dir for registry");
        let ca = tls.then(|| TestCa::create(&dir.path().join("tls")));
        let tls_section = match &ca {
            Some(ca) => {
                format!("  tls:\n    certificate: {}\n    key: {}\n", ca.server_cert.display(), ca.server_key.display())
            }
            None => String::new(),
        };
        let log_section = if tls {
            "log:\n  level: info\n  accesslog:\n    disabled: false\n"
        } else {
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        };
        let mut auth_section = String::new();
        if let Some((user, password)) = &creds {
            let htpasswd = dir.path().join("htpasswd");
            fs::write(&htpasswd, format!("{user}:{}\n", bcrypt_hash(password))).expect("write htpasswd");
            auth_section = format!("auth:\n  htpasswd:\n    realm: rbuild-test\n    path: {}\n", htpasswd.display());
        }
        // A free port can be taken by someone else between probing and the
        // registry binding it: retry a few times.
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let config = dir.path().join("config.yml");
            fs::write(
                &config,
                format!(
                    "version: 0.1\n{log_section}\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: {addr}\n  secret: rbuild-test-secret\n{tls_section}{auth_section}",
                    dir.path().join("storage").display()
                ),
            )
            .expect("write registry config");
            let log = File::create(dir.path().join("registry.log")).expect("registry log");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .spawn()
                .expect("spawn docker-registry (apt-get install docker-registry)");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_err = format!(
                        "docker-registry exited with {status}: {}",
                        fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
                    );
                    break;
                }
                if let Some(code) = http_status(&addr, "/v2/") {
                    // 401 is "up, wants credentials"; 400 is a TLS server
                    // refusing our plain-HTTP probe.
                    if code == 200 || code == 401 || (code == 400 && ca.is_some()) {
                        return TestRegistry { addr, creds, tls: ca, child, dir };
                    }
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = "docker-registry did not answer /v2/ within 20s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("could not start docker-registry: {last_err}");
    }

    /// `ADDR/NAME`, e.g. `127.0.0.1:40123/busybox:latest`.
    pub fn reference(&self, name: &str) -> String {
        format!("{}/{name}", self.addr)
    }

    /// Where the registry keeps the blob `sha256:HEX` on disk (for tampering).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir.path().join("storage/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    /// Pushes the busybox base image (OCI manifest, linux/amd64) as `NAME`
    /// (`repo` or `repo:tag`).
    pub fn push_busybox(&self, name: &str) {
        self.skopeo_copy(&busybox_layout("amd64"), "latest", name, &[]);
    }

    /// Pushes the busybox base image converted to Docker schema 2.
    pub fn push_busybox_docker(&self, name: &str) {
        self.skopeo_copy(&busybox_layout("amd64"), "latest", name, &["--format", "v2s2"]);
    }

    /// Pushes an OCI image index with two busybox images: linux/amd64 and a
    /// fake linux/arm64 (same layer, config says arm64 — it does not run).
    pub fn push_busybox_multiarch(&self, name: &str) {
        let layout = multiarch_layout();
        self.skopeo_copy(&layout, "latest", name, &["--all"]);
    }

    fn skopeo_copy(&self, layout: &Path, tag: &str, name: &str, extra: &[&str]) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "-q", "--dest-tls-verify=false"]).args(extra);
        if let Some((u, p)) = &self.creds {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display())).arg(format!("docker://{}", self.reference(name)));
        run(&mut cmd);
    }

    /// `skopeo inspect --raw` of the manifest (or index) at `ADDR/NAME`.
    pub fn inspect_raw(&self, name: &str) -> serde_json::Value {
        skopeo_json(&self.reference(name), &["--raw"], self.creds.as_ref())
    }

    /// `skopeo inspect --config` of `ADDR/NAME`.
    pub fn inspect_config(&self, name: &str) -> serde_json::Value {
        skopeo_json(&self.reference(name), &["--config"], self.creds.as_ref())
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throw-away CA and a server certificate it signed for `127.0.0.1` /
/// `localhost`, made with `openssl`.
pub struct TestCa {
    /// The CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// A directory holding only `ca.crt` (for `skopeo --cert-dir`).
    pub cert_dir: PathBuf,
    /// Server certificate (PEM).
    pub server_cert: PathBuf,
    /// Server key (PEM).
    pub server_key: PathBuf,
}

impl TestCa {
    fn create(dir: &Path) -> TestCa {
        fs::create_dir_all(dir.join("certs.d")).expect("tls dir");
        let p = |n: &str| dir.join(n);
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        run(Command::new("openssl")
            .args(["req", "-x509", "-days", "2", "-subj", "/CN=rbuild test CA"])
            .args(ec)
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.crt"))
            .stderr(Stdio::null()));
        run(Command::new("openssl")
            .args(["req", "-subj", "/CN=127.0.0.1"])
            .args(ec)
            .arg("-keyout")
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr"))
            .stderr(Stdio::null()));
        fs::write(
            p("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write ext.cnf");
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.crt"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("server.crt"))
            .arg("-extfile")
            .arg(p("ext.cnf"))
            .stderr(Stdio::null()));
        fs::copy(p("ca.crt"), dir.join("certs.d/ca.crt")).expect("copy ca.crt");
        TestCa {
            ca_cert: p("ca.crt"),
            cert_dir: dir.join("certs.d"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
        }
    }
}

/// The `rbuild` binary under test.
pub fn rbuild() -> Command {
    let exe = match option_env!("CARGO_BIN_EXE_rbuild") {
        Some(p) => PathBuf::from(p),
        // Unit tests of the binary crate: the binary sits next to `deps/`.
        None => target_profile_dir().join("rbuild"),
    };
    Command::new(exe)
}

/// `skopeo inspect --config` of a registry reference (`HOST:PORT/NAME:TAG`,
/// plain HTTP).
pub fn skopeo_inspect_config(reference: &str) -> serde_json::Value {
    skopeo_json(reference, &["--config"], None)
}

/// `skopeo inspect --raw` of a registry reference (manifest or index).
pub fn skopeo_inspect_raw(reference: &str) -> serde_json::Value {
    skopeo_json(reference, &["--raw"], None)
}

fn skopeo_json(reference: &str, flags: &[&str], creds: Option<&(String, String)>) -> serde_json::Value {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--tls-verify=false"]).args(flags);
    if let Some((u, p)) = creds {
        cmd.arg("--creds").arg(format!("{u}:{p}"));
    }
    cmd.arg(format!("docker://{reference}"));
    let out = run(&mut cmd);
    serde_json::from_slice(&out).unwrap_or_else(|e| panic!("skopeo output is not JSON: {e}"))
}

/// A shared temp dir under `target/` that outlives one test.
pub fn shared_tmp() -> PathBuf {
    let dir = match option_env!("CARGO_TARGET_TMPDIR") {
        Some(p) => PathBuf::from(p),
        None => target_profile_dir().join("../tmp"),
    };
    fs::create_dir_all(&dir).expect("create shared tmp dir");
    dir
}

/// `target/<profile>`, found from the running test executable
/// (`target/<profile>/deps/<test>-<hash>`).
fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().and_then(Path::parent).expect("test exe in target/<profile>/deps").to_path_buf()
}

/// The busybox OCI layout for `arch` (tag `latest`), built once per script
/// version and cached; a file lock keeps parallel tests (threads or
/// processes) from building it twice.
pub fn busybox_layout(arch: &str) -> PathBuf {
    let script = fs::read(MAKE_BUSYBOX).expect("read scripts/make-busybox-image.sh");
    // Key the cache on the script's content so an edited script rebuilds.
    let key = &hex::encode(Sha256::digest(&script))[..12];
    let tmp = shared_tmp();
    let dir = tmp.join(format!("busybox-oci-{arch}-{key}"));
    let lock = File::create(tmp.join("busybox-oci.lock")).expect("lock file");
    lock.lock().expect("lock busybox cache");
    if !dir.join("index.json").exists() {
        run(Command::new("bash").arg(MAKE_BUSYBOX).arg(&dir).arg(arch));
    }
    drop(lock);
    dir
}

/// An OCI layout whose tag `latest` is an image index over the amd64 and
/// (fake) arm64 busybox images. Built from the two single-arch layouts.
fn multiarch_layout() -> PathBuf {
    let amd64 = busybox_layout("amd64");
    let arm64 = busybox_layout("arm64");
    let tmp = shared_tmp();
    let key = amd64.file_name().unwrap().to_string_lossy().replace("busybox-oci-amd64-", "");
    let dir = tmp.join(format!("busybox-oci-multi-{key}"));
    let lock = File::create(tmp.join("busybox-oci-multi.lock")).expect("lock file");
    lock.lock().expect("lock multiarch cache");
    if !dir.join("index.json").exists() {
        let work = tmp.join(format!("busybox-oci-multi-{key}.tmp"));
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(work.join("blobs/sha256")).unwrap();
        let mut entries = Vec::new();
        for (layout, arch) in [(&amd64, "amd64"), (&arm64, "arm64")] {
            for blob in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
                let blob = blob.unwrap();
                let to = work.join("blobs/sha256").join(blob.file_name());
                if !to.exists() {
                    fs::copy(blob.path(), to).unwrap();
                }
            }
            let index: serde_json::Value =
                serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
            let m = &index["manifests"][0];
            entries.push(serde_json::json!({
                "mediaType": m["mediaType"],
                "digest": m["digest"],
                "size": m["size"],
                "platform": {"architecture": arch, "os": "linux"},
            }));
        }
        let image_index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }))
        .unwrap();
        let digest = hex::encode(Sha256::digest(&image_index));
        fs::write(work.join("blobs/sha256").join(&digest), &image_index).unwrap();
        fs::write(work.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        fs::write(
            work.join("index.json"),
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "manifests": [{
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "digest": format!("sha256:{digest}"),
                    "size": image_index.len(),
                    "annotations": {"org.opencontainers.image.ref.name": "latest"},
                }],
            }))
            .unwrap(),
        )
        .unwrap();
        fs::rename(&work, &dir).unwrap();
    }
    drop(lock);
    dir
}

/// Runs a command, panicking with its stderr on failure; returns stdout.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}:\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.stdout
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// Status code of a plain-HTTP GET, or `None` if nothing answers yet.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let line = std::str::from_utf8(&buf[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A bcrypt hash for an htpasswd file. Neither `htpasswd` (apache2-utils)
/// nor python's bcrypt is installed here, but glibc's libxcrypt implements
/// bcrypt behind `crypt(3)`, which perl exposes.
fn bcrypt_hash(password: &str) -> String {
    let out = run(Command::new("perl")
        .arg("-e")
        .arg(r#"print crypt($ARGV[0], q{$2y$05$rbuildtestsaltrbuildte})"#)
        .arg(password));
    let hash = String::from_utf8(out).expect("utf-8 hash");
    assert!(hash.starts_with("$2y$"), "crypt(3) has no bcrypt here: {hash:?}");
    hash
}

/// Whether the tests run as real root (then they also run each case as the
/// unprivileged [`TEST_USER`]).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The unprivileged user the tests run rbuild as, with a subordinate id range.
pub const TEST_USER: &str = "rbuildtest";

/// Creates [`TEST_USER`] with a 65,536-id subordinate range (idempotent).
pub fn ensure_test_user() {
    let exists = Command::new("id").arg(TEST_USER).output().map(|o| o.status.success()).unwrap_or(false);
    if !exists {
        run(Command::new("useradd").args(["-m", TEST_USER]));
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = fs::read_to_string(file).unwrap_or_default();
        if !text.lines().any(|l| l.starts_with(&format!("{TEST_USER}:"))) {
            let mut f = fs::OpenOptions::new().create(true).append(true).open(file).expect("open subordinate id file");
            f.write_all(format!("{TEST_USER}:300000:65536\n").as_bytes()).expect("add subordinate ids");
        }
    }
}

/// rbuild run as `user` (by `runuser`) with `HOME` at `home`: how the
/// tests run a case unprivileged.
pub fn rbuild_as(user: &str, home: &std::path::Path) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", user, "--"]).arg(rbuild().get_program()).env("HOME", home);
    c
}

/// Every file named `name` under `dir`, recursively.
pub fn find_files(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let path = e.path();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.extend(find_files(&path, name));
        } else if ft.is_file() && e.file_name() == name {
            out.push(path);
        }
    }
    out
}

/// Asserts that an rbuild command succeeded, showing its output if not.
pub fn ok(out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "rbuild failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The script that builds the Debian bookworm OCI layout.
const MAKE_DEBIAN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/make-debian-image.sh");

/// The Debian mirror the base image and the builds' `apt-get` use
/// (`RBUILD_TEST_DEBIAN_MIRROR`, default Debian's CDN).
pub fn debian_mirror() -> String {
    std::env::var("RBUILD_TEST_DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".to_string())
}

/// Whether the tests run under CI (`CI=true`), where a missing prerequisite
/// is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Why the Debian tests cannot run here, if they cannot: the mirror does
/// not answer, or the base layout is not cached and we are not root (so
/// cannot debootstrap it). Under CI this panics instead: those tests must
/// run there.
pub fn debian_unavailable() -> Option<String> {
    let mirror = debian_mirror();
    let release = format!("{mirror}/dists/bookworm/Release");
    let reachable = Command::new("curl")
        .args(["-fsS", "-o", "/dev/null", "--max-time", "20", &release])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let why = if !reachable {
        Some(format!("the Debian mirror does not answer ({release}); set RBUILD_TEST_DEBIAN_MIRROR"))
    } else if !is_root() && !debian_layout_path().join("index.json").exists() {
        Some("not root: cannot debootstrap the Debian base image (run the tests as root once)".to_string())
    } else {
        None
    };
    if let Some(why) = &why {
        assert!(!in_ci(), "CI=true and the Debian tests cannot run: {why}");
        eprintln!("SKIPPED (not CI): {why}");
    }
    why
}

fn debian_layout_path() -> PathBuf {
    let mut script = fs::read(MAKE_DEBIAN).expect("read scripts/make-debian-image.sh");
    // The image's sources.list names the mirror: another mirror, another image.
    script.extend_from_slice(debian_mirror().as_bytes());
    let key = &hex::encode(Sha256::digest(&script))[..12];
    shared_tmp().join(format!("debian-bookworm-oci-{key}"))
}

/// The Debian bookworm (`debootstrap --variant=minbase`) OCI layout, tag
/// `latest`. debootstrap takes minutes and is not reproducible, so the
/// layout is made once per script version and kept under `target/tmp`; a
/// file lock keeps parallel tests (threads or processes) from making it
/// twice.
pub fn debian_layout() -> PathBuf {
    let dir = debian_layout_path();
    let lock = File::create(shared_tmp().join("debian-oci.lock")).expect("lock file");
    lock.lock().expect("lock debian cache");
    if !dir.join("index.json").exists() {
        let started = Instant::now();
        run(Command::new("bash").arg(MAKE_DEBIAN).arg(&dir).arg(debian_mirror()));
        eprintln!("made the Debian base image in {:.1}s: {}", started.elapsed().as_secs_f64(), dir.display());
    }
    drop(lock);
    dir
}

impl TestRegistry {
    /// Pushes the Debian bookworm base image (see [`debian_layout`]) as
    /// `NAME`.
    pub fn push_debian(&self, name: &str) {
        self.skopeo_copy(&debian_layout(), "latest", name, &[]);
    }

    /// Pushes the image tagged `tag` in the OCI layout `layout` as `NAME`.
    pub fn push_layout(&self, layout: &Path, tag: &str, name: &str) {
        self.skopeo_copy(layout, tag, name, &[]);
    }
}

/// One entry of a layer tar, as the tests compare them.
#[derive(Clone, Debug)]
pub struct LayerEntry {
    /// Path without a leading `./` or `/`.
    pub path: String,
    /// Tar entry type.
    pub kind: tar::EntryType,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Hard link or symlink target.
    pub link: Option<String>,
    /// `SCHILY.xattr.*` records, name without the prefix.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// The entries of every layer (in order) of the image tagged `tag` in the
/// OCI layout `layout`; gzip, zstd and plain tar layers.
pub fn layer_entries(layout: &Path, tag: &str) -> Vec<Vec<LayerEntry>> {
    let blob = |digest: &str| layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))).unwrap()
    };
    let index = json(layout.join("index.json"));
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .or_else(|| index["manifests"].get(0))
        .unwrap_or_else(|| panic!("no manifest in {}", layout.display()));
    let manifest = json(blob(desc["digest"].as_str().unwrap()));
    let mut layers = Vec::new();
    for l in manifest["layers"].as_array().unwrap() {
        let path = blob(l["digest"].as_str().unwrap());
        let media = l["mediaType"].as_str().unwrap_or_default();
        let bytes = if media.ends_with("gzip") {
            run(Command::new("gzip").arg("-dc").arg(&path))
        } else if media.ends_with("zstd") {
            run(Command::new("zstd").arg("-dcq").arg(&path))
        } else {
            fs::read(&path).unwrap()
        };
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut entries = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let path = e.path().unwrap().to_string_lossy().trim_start_matches("./").trim_start_matches('/').to_string();
            let link = e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned());
            let mut xattrs = Vec::new();
            if let Some(pax) = e.pax_extensions().unwrap() {
                for ext in pax {
                    let ext = ext.unwrap();
                    if let Some(name) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                        xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                    }
                }
            }
            entries.push(LayerEntry {
                path,
                kind: h.entry_type(),
                mode: h.mode().unwrap() & 0o7777,
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                link,
                xattrs,
            });
        }
        layers.push(entries);
    }
    layers
}
