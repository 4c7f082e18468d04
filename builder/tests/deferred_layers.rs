//! Deferred layers: a build whose only output is the local store writes no
//! compressed blob; `rbuild push` (and `save`) compress then, once, and
//! give exactly what an eager `--push` build of the same settings gives.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use util::{TestRegistry, ok, rbuild, run};

/// Files an attacker might hope tar differently on a second pass: hard
/// links, symlinks, a fifo, a sparse file, odd names, an xattr-less empty
/// dir, a deleted base file (a whiteout), and enough bytes to span many
/// compression blocks.
const TRICKY_RUN: &str = "RUN mkdir -p /d/empty /d/sub && seq 1 400000 > /d/data && ln /d/data /d/sub/hard \
    && ln -s ../data /d/sub/sym && mkfifo /d/fifo && dd if=/dev/zero of=/d/sparse bs=1 count=1 seek=3000000 \
    2>/dev/null && touch '/d/name with spaces' /d/$(printf 'x%.0s' $(seq 1 150)) /d/ünï && rm -f /bin/true";

fn dockerfile(reg: &TestRegistry) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("FROM {}/busybox:latest\n{TRICKY_RUN}\nRUN echo second > /second\nENV X=1\n", reg.addr);
    std::fs::write(dir.path().join("Dockerfile"), text).unwrap();
    dir
}

fn rbuild_at(store: &Path) -> Command {
    let mut c = rbuild();
    c.arg("--root").arg(store).env("SOURCE_DATE_EPOCH", "1700000000");
    c
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The digest `rbuild push` / `--push` reports (`pushed NAME@DIGEST`).
fn pushed_digest(log: &str) -> String {
    let line = log.lines().rev().find(|l| l.contains("pushed ") && l.contains("@sha256:")).expect(log);
    line.rsplit('@').next().unwrap().split_whitespace().next().unwrap().to_string()
}

fn read_blob_json(store: &Path, digest: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(blob_path(store, digest)).unwrap()).unwrap()
}

fn blob_path(store: &Path, digest: &str) -> PathBuf {
    store.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

/// Blobs of the store that are gzip streams.
fn gzip_blobs(store: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(store.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        let head = std::fs::read(&p).map(|b| b.get(..2).map(<[u8]>::to_vec)).unwrap_or_default();
        if head.as_deref() == Some(&[0x1f, 0x8b][..]) {
            out.push(p.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

fn registry() -> TestRegistry {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    reg
}

fn tag_of(store: &Path, name: &str) -> String {
    for e in std::fs::read_dir(store.join("tags")).unwrap() {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
        if v["name"] == name {
            return v["digest"].as_str().unwrap().to_string();
        }
    }
    panic!("no tag {name}")
}

#[test]
fn store_only_build_defers_compression_and_push_matches_an_eager_push() {
    let reg = registry();
    let ctx = dockerfile(&reg);
    let lazy_store = tempfile::tempdir().unwrap();
    let lazy = lazy_store.path();
    let name = reg.reference("lazy:1");
    let iid = lazy.join("iid");
    ok(rbuild_at(lazy)
        .args(["build", "--progress", "plain", "-t", &name, "--iidfile"])
        .arg(&iid)
        .arg(ctx.path())
        .output()
        .unwrap());
    // Only the pulled base layer is a gzip blob: the build compressed nothing.
    let base_gzip = gzip_blobs(lazy);
    assert_eq!(base_gzip.len(), 1, "{base_gzip:?}");
    let manifest = read_blob_json(lazy, &tag_of(lazy, &name));
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    for l in &layers[1..] {
        assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar");
        assert!(!blob_path(lazy, l["digest"].as_str().unwrap()).exists(), "no tar blob either: {l}");
    }
    let config = read_blob_json(lazy, manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(config["rootfs"]["diff_ids"][1], layers[1]["digest"], "a deferred layer's digest is its diff id");
    let du = String::from_utf8(run(rbuild().arg("--root").arg(lazy).arg("du"))).unwrap();
    assert!(du.lines().any(|l| l.starts_with("deferred layers") && l.contains(" 2 ")), "{du}");
    // `images` and `history` work on it.
    let images = String::from_utf8(run(rbuild().arg("--root").arg(lazy).arg("images"))).unwrap();
    assert!(images.contains("lazy"), "{images}");
    ok(rbuild().arg("--root").arg(lazy).args(["history", &name]).output().unwrap());

    // The first push compresses both layers, and says so.
    let first = ok(rbuild_at(lazy).args(["push", "--progress", "plain", &name]).output().unwrap());
    let log = stderr(&first);
    assert_eq!(log.matches("compressed layer").count(), 2, "{log}");
    let lazy_digest = pushed_digest(&log);
    // A second push (to another name) compresses nothing.
    let again =
        ok(rbuild_at(lazy).args(["push", "--progress", "plain", &name, &reg.reference("lazy:2")]).output().unwrap());
    let log2 = stderr(&again);
    assert!(!log2.contains("compressed layer"), "{log2}");
    assert_eq!(log2.matches("reusing its gzip-6 blob").count(), 2, "{log2}");
    assert_eq!(pushed_digest(&log2), lazy_digest);
    assert_eq!(gzip_blobs(lazy).len(), 3);

    // An eager build of the same Dockerfile and settings in a fresh store
    // pushes the very same manifest (and has the same image ID).
    let eager_store = tempfile::tempdir().unwrap();
    let eager = eager_store.path();
    let eager_iid = eager.join("iid");
    let out = ok(rbuild_at(eager)
        .args(["build", "--progress", "plain", "--iidfile"])
        .arg(&eager_iid)
        .args(["-o", &format!("type=registry,name={}", reg.reference("eager:1"))])
        .arg(ctx.path())
        .output()
        .unwrap());
    assert_eq!(pushed_digest(&stderr(&out)), lazy_digest);
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), std::fs::read_to_string(&eager_iid).unwrap());

    // Independent tools read the pushed image.
    let raw = util::skopeo_inspect_raw(&name);
    assert_eq!(raw["layers"][2]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    let layout = tempfile::tempdir().unwrap();
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", &format!("docker://{name}")])
        .arg(format!("oci:{}:t", layout.path().display())));
    let bundle = tempfile::tempdir().unwrap();
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:t", layout.path().display()))
        .arg(bundle.path().join("b")));
    let rootfs = bundle.path().join("b/rootfs");
    let data = std::fs::read_to_string(rootfs.join("d/data")).unwrap();
    assert_eq!(data.lines().count(), 400000);
    assert_eq!(std::fs::read_to_string(rootfs.join("second")).unwrap(), "second\n");
    assert!(!rootfs.join("bin/true").exists(), "the whiteout survived");

    // `save` of the stored image reuses the compressed blobs too.
    let archive = lazy.join("saved.tar");
    let saved = ok(rbuild().arg("--root").arg(lazy).args(["save", "-o"]).arg(&archive).arg(&name).output().unwrap());
    assert!(!stderr(&saved).contains("compressed layer"), "{}", stderr(&saved));
    let listing = String::from_utf8(run(Command::new("tar").arg("-tf").arg(&archive))).unwrap();
    let top_gz = raw["layers"][2]["digest"].as_str().unwrap();
    assert!(blob_path(lazy, &lazy_digest).exists(), "the pushed manifest {lazy_digest} is not in the store");
    assert!(listing.contains(top_gz.trim_start_matches("sha256:")), "{listing}");
}

#[test]
fn push_of_a_tampered_snapshot_fails_and_pushes_nothing() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {}/busybox:latest\nRUN echo original-secret-content > /payload\n", reg.addr),
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let name = reg.reference("tampered:1");
    ok(rbuild_at(store.path()).args(["build", "-t", &name]).arg(dir.path()).output().unwrap());
    let payloads = util::find_files(&store.path().join("snapshots"), "payload");
    assert_eq!(payloads.len(), 1, "{payloads:?}");
    // Same length, other bytes: only hashing the tar can tell.
    std::fs::write(&payloads[0], "tampered-secret-content\n").unwrap();
    let out = rbuild_at(store.path()).args(["push", "--progress", "plain", &name]).output().unwrap();
    assert!(!out.status.success(), "a tampered snapshot was pushed");
    let log = stderr(&out);
    assert!(log.contains("no longer matches layer"), "{log}");
    let status = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{name}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "a manifest was pushed");
    // Nothing half-made stays behind: no gzip blob besides the base's.
    assert_eq!(gzip_blobs(store.path()).len(), 1);
}

#[test]
fn killed_push_leaves_a_valid_store_and_the_next_push_completes() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    // Incompressible enough to take a while at gzip level 6.
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {}/busybox:latest\nRUN dd if=/dev/urandom of=/big bs=1M count=96 2>/dev/null && seq 1 2000000 > /seq\n",
            reg.addr
        ),
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let name = reg.reference("killed:1");
    ok(rbuild_at(store.path()).args(["build", "-t", &name]).arg(dir.path()).output().unwrap());
    let mut drafts = 0;
    for delay in [300u64, 1500] {
        let mut child = rbuild_at(store.path())
            .args(["push", "--progress", "plain", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        child.wait().unwrap();
        // A blob draft of the dead push: it was killed mid-compression.
        let tmp = std::fs::read_dir(store.path().join("tmp")).unwrap();
        drafts += tmp.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".blob-")).count();
    }
    assert!(drafts > 0, "no kill landed while a layer was being compressed");
    // Whatever the kills interrupted, the store opens clean and the push
    // completes, with the digest an eager build pushes.
    let start = Instant::now();
    let out = ok(rbuild_at(store.path()).args(["push", "--progress", "plain", &name]).output().unwrap());
    let digest = pushed_digest(&stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(600));
    let leftovers: Vec<_> = std::fs::read_dir(store.path().join("tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let gzip_before = gzip_blobs(store.path());
    let eager = ok(rbuild_at(store.path())
        .args(["build", "--progress", "plain", "-o", &format!("type=registry,name={}", reg.reference("killed:2"))])
        .arg(dir.path())
        .output()
        .unwrap());
    let log = stderr(&eager);
    assert_eq!(pushed_digest(&log), digest);
    // The eager build found the pushed blob and compressed nothing.
    assert_eq!(gzip_blobs(store.path()), gzip_before);
}

#[test]
fn prune_keeps_deferred_layers_of_tagged_images_only() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), format!("FROM {}/busybox:latest\nRUN echo kept > /kept\n", reg.addr))
        .unwrap();
    let store = tempfile::tempdir().unwrap();
    let name = reg.reference("pruned:1");
    ok(rbuild_at(store.path()).args(["build", "-t", &name]).arg(dir.path()).output().unwrap());
    ok(rbuild().arg("--root").arg(store.path()).args(["prune", "-a"]).output().unwrap());
    // The tagged image's deferred layer kept its snapshot: it still pushes.
    ok(rbuild_at(store.path()).args(["push", &name]).output().unwrap());
    let layout = tempfile::tempdir().unwrap();
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", &format!("docker://{name}")])
        .arg(format!("oci:{}:t", layout.path().display())));
    ok(rbuild().arg("--root").arg(store.path()).args(["rmi", &name]).output().unwrap());
    ok(rbuild().arg("--root").arg(store.path()).args(["prune", "-a"]).output().unwrap());
    let du = String::from_utf8(run(rbuild().arg("--root").arg(store.path()).arg("du"))).unwrap();
    assert!(du.lines().any(|l| l.starts_with("deferred layers") && l.contains(" 0 ")), "{du}");
    assert!(du.lines().any(|l| l.starts_with("snapshots") && l.contains(" 0 ")), "{du}");
    assert_eq!(std::fs::read_dir(store.path().join("diffs")).unwrap().count(), 0);
}

/// As an unprivileged user (container ids mapped to subordinate ones), the
/// push re-tars the snapshot with the same container owners the build
/// hashed: the diff id checks out, and the pushed manifest is the eager
/// build's.
#[test]
fn rootless_deferred_push_matches_an_eager_push() {
    if util::is_root() {
        util::ensure_test_user();
    } else {
        eprintln!("not root: the test user cannot be created here; the current user is already non-root");
    }
    let reg = registry();
    let base = tempfile::Builder::new().prefix("rbuild-deferred").tempdir_in("/tmp").unwrap();
    let ctx = base.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}/busybox:latest\nRUN touch /owned && chown 1000:1000 /owned && chmod 4755 /owned && \
             mkdir /d && chown 65534:65534 /d && seq 1 100000 > /d/data\n",
            reg.addr
        ),
    )
    .unwrap();
    if util::is_root() {
        run(Command::new("chown").args(["-R", "rbuildtest:rbuildtest"]).arg(base.path()));
        run(Command::new("chmod").arg("755").arg(base.path()));
    }
    let as_user = |store: &str| {
        let mut cmd = if util::is_root() { util::rbuild_as("rbuildtest", base.path()) } else { rbuild() };
        cmd.arg("--root").arg(base.path().join(store)).env("SOURCE_DATE_EPOCH", "1700000000");
        cmd
    };
    let name = reg.reference("rootless-lazy:1");
    ok(as_user("lazy").args(["build", "-t", &name]).arg(&ctx).output().unwrap());
    let pushed = ok(as_user("lazy").args(["push", "--progress", "plain", &name]).output().unwrap());
    let log = stderr(&pushed);
    assert_eq!(log.matches("compressed layer").count(), 1, "{log}");
    let out = ok(as_user("eager")
        .args([
            "build",
            "--progress",
            "plain",
            "-o",
            &format!("type=registry,name={}", reg.reference("rootless-eager:1")),
        ])
        .arg(&ctx)
        .output()
        .unwrap());
    assert_eq!(pushed_digest(&stderr(&out)), pushed_digest(&log));
    // The owners in the pushed layer are the container's, not the host's.
    let raw = util::skopeo_inspect_raw(&name);
    let top = raw["layers"][1]["digest"].as_str().unwrap();
    let listing = String::from_utf8(run(Command::new("tar").arg("-tvzf").arg(reg.blob_data_path(top)))).unwrap();
    let owned = listing.lines().find(|l| l.ends_with(" owned")).expect(&listing);
    assert!(owned.starts_with("-rwsr-xr-x") && owned.contains("1000/1000"), "{owned}");
    let d = listing.lines().find(|l| l.ends_with(" d/")).expect(&listing);
    assert!(d.contains("65534/65534"), "{d}");
}

/// Several platforms: the stored index names deferred manifests; the push
/// rewrites each and the index over them, giving the eager build's index.
#[test]
fn multi_platform_deferred_push_matches_an_eager_push() {
    let reg = TestRegistry::start();
    reg.push_busybox_multiarch("busybox:multi");
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {}/busybox:multi\nARG TARGETARCH\nCOPY hello /hello-$TARGETARCH\nCOPY hello /again\n", reg.addr),
    )
    .unwrap();
    std::fs::write(ctx.path().join("hello"), "hi\n".repeat(10000)).unwrap();
    let platforms = "linux/amd64,linux/arm64";
    let lazy = tempfile::tempdir().unwrap();
    let name = reg.reference("multi-lazy:1");
    ok(rbuild_at(lazy.path()).args(["build", "--platform", platforms, "-t", &name]).arg(ctx.path()).output().unwrap());
    let index = read_blob_json(lazy.path(), &tag_of(lazy.path(), &name));
    let mut base = Vec::new();
    for m in index["manifests"].as_array().unwrap() {
        let manifest = read_blob_json(lazy.path(), m["digest"].as_str().unwrap());
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 3);
        base.push(layers[0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string());
        for l in &layers[1..] {
            assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar", "{manifest}");
        }
    }
    base.sort();
    base.dedup();
    assert_eq!(gzip_blobs(lazy.path()), base, "only the base layers are gzip");
    let pushed = ok(rbuild_at(lazy.path()).args(["push", "--progress", "plain", &name]).output().unwrap());
    let log = stderr(&pushed);
    // Two own layers per platform (the shared `COPY hello /again` may be
    // one snapshot, compressed once and then reused).
    let compressed = log.matches("compressed layer").count();
    assert!(compressed >= 3, "{log}");
    assert_eq!(compressed + log.matches("reusing its gzip-6 blob").count(), 4, "{log}");
    let eager = tempfile::tempdir().unwrap();
    let out = ok(rbuild_at(eager.path())
        .args([
            "build",
            "--progress",
            "plain",
            "--platform",
            platforms,
            "--push",
            "-t",
            &reg.reference("multi-eager:1"),
        ])
        .arg(ctx.path())
        .output()
        .unwrap());
    assert_eq!(pushed_digest(&stderr(&out)), pushed_digest(&log));
    assert_eq!(util::skopeo_inspect_raw(&name), util::skopeo_inspect_raw(&reg.reference("multi-eager:1")));
}

/// A store-only build killed while it records its deferred layers (the
/// export phase) leaves a store whose next build and push give the eager
/// build's image: no half-written diff record or note is ever trusted.
#[test]
fn killed_store_only_build_leaves_a_valid_store() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {}/busybox:latest\nRUN seq 1 6000000 > /seq && mkdir /many && cd /many && seq 1 3000 | xargs touch\n",
            reg.addr
        ),
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let name = reg.reference("killed-build:1");
    let log = store.path().join("log");
    let mut child = rbuild_at(store.path())
        .args(["build", "--progress", "plain", "-t", &name])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("exporting layers") {
        assert!(start.elapsed() < Duration::from_secs(120), "never reached the export");
        assert!(child.try_wait().unwrap().is_none(), "the build ended before it could be killed");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    ok(rbuild_at(store.path()).args(["build", "-t", &name]).arg(dir.path()).output().unwrap());
    let pushed = ok(rbuild_at(store.path()).args(["push", "--progress", "plain", &name]).output().unwrap());
    let eager = tempfile::tempdir().unwrap();
    let out = ok(rbuild_at(eager.path())
        .args([
            "build",
            "--progress",
            "plain",
            "-o",
            &format!("type=registry,name={}", reg.reference("killed-eager:1")),
        ])
        .arg(dir.path())
        .output()
        .unwrap());
    assert_eq!(pushed_digest(&stderr(&out)), pushed_digest(&stderr(&pushed)));
}
