//! The image commands end to end: `tag`, `rmi`, `inspect`, `history`,
//! `save`, `load` on a store holding a real build, checked with `skopeo`;
//! and `load` of hostile archives.

mod util;

use std::path::Path;
use std::process::{Command, Output};

use sha2::{Digest as _, Sha256};
use util::{TestRegistry, ok, rbuild, run};

fn rb(store: &Path, args: &[&str]) -> Output {
    rbuild().arg("--root").arg(store).args(args).output().expect("run rbuild")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn failed(out: Output) -> String {
    assert!(!out.status.success(), "expected a failure:\nstdout:\n{}\nstderr:\n{}", stdout(&out), stderr(&out));
    stderr(&out)
}

/// Builds `app:1.0` from busybox: two layers, a RUN in the history.
fn build_app(store: &Path) -> (TestRegistry, String) {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {}/busybox:latest\nRUN echo hi > /hi\nLABEL a=b\nCMD [\"cat\", \"/hi\"]\n", reg.addr),
    )
    .unwrap();
    let iid = ctx.path().join("iid");
    ok(rbuild()
        .arg("--root")
        .arg(store)
        .args(["build", "-q", "-t", "app:1.0", "--iidfile"])
        .arg(&iid)
        .arg(ctx.path())
        .output()
        .unwrap());
    let id = std::fs::read_to_string(&iid).unwrap();
    (reg, id)
}

fn inspect(store: &Path, name: &str) -> serde_json::Value {
    let out = ok(rb(store, &["inspect", name]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    v[0].clone()
}

#[test]
fn tag_inspect_history_rmi_use_docker_names_and_output() {
    let store = tempfile::tempdir().unwrap();
    let (_reg, id) = build_app(store.path());
    // inspect: docker's fields plus the documents.
    let v = inspect(store.path(), "docker.io/library/app:1.0");
    assert_eq!(v["Id"], id.as_str());
    assert_eq!(v["RepoTags"], serde_json::json!(["app:1.0"]));
    assert_eq!(v["Config"]["Cmd"], serde_json::json!(["cat", "/hi"]));
    assert_eq!(v["Config"]["Labels"]["a"], "b");
    assert_eq!(v["Architecture"], "amd64");
    assert_eq!(v["Manifest"]["layers"].as_array().unwrap().len(), 2);
    assert_eq!(v["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    // --raw: the manifest byte for byte (its digest is the tag's).
    let raw = ok(rb(store.path(), &["inspect", "--raw", "app:1.0"])).stdout;
    assert_eq!(format!("sha256:{}", hex::encode(Sha256::digest(&raw))), v["Digest"].as_str().unwrap());
    // A name that is not there: docker's message, exit 1.
    assert!(failed(rb(store.path(), &["inspect", "app"])).contains("No such image: app"));

    // tag: short and long spellings of the same name; ID prefixes work.
    ok(rb(store.path(), &["tag", "app:1.0", "me/app:2"]));
    ok(rb(store.path(), &["tag", &id[7..19], "localhost:5000/app"]));
    let images = stdout(&ok(rb(store.path(), &["images"])));
    assert!(images.contains("docker.io/me/app"), "{images}");
    assert!(images.contains("localhost:5000/app"), "{images}");
    let v = inspect(store.path(), &id);
    assert_eq!(v["RepoTags"], serde_json::json!(["app:1.0", "me/app:2", "localhost:5000/app:latest"]));
    assert!(failed(rb(store.path(), &["tag", "app:1.0", "Bad Name"])).contains("invalid image name"));

    // history: docker's columns, newest first, the top row names the image.
    let out = stdout(&ok(rb(store.path(), &["history", "me/app:2"])));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("IMAGE") && lines[0].contains("CREATED BY") && lines[0].ends_with("COMMENT"), "{out}");
    let config: serde_json::Value = v["ImageConfig"].clone();
    assert_eq!(lines.len() - 1, config["history"].as_array().unwrap().len(), "{out}");
    assert!(lines[1].starts_with(&id[7..19]), "{out}");
    assert!(lines[2..].iter().all(|l| l.starts_with("<missing>")), "{out}");
    assert!(lines.iter().any(|l| l.contains("echo hi > /hi")), "{out}");
    assert!(out.contains(" ago "), "{out}");
    // -H=false: bytes and RFC 3339; -q: ids only.
    let raw_sizes = stdout(&ok(rb(store.path(), &["history", "-H=false", "--no-trunc", "app:1.0"])));
    let run_line = raw_sizes.lines().find(|l| l.contains("echo hi")).unwrap();
    assert!(raw_sizes.lines().nth(1).unwrap().starts_with(&id), "{raw_sizes}");
    let run_layer = v["Manifest"]["layers"][1]["size"].as_u64().unwrap();
    assert!(run_line.split_whitespace().any(|w| w == run_layer.to_string()), "{run_line} vs {run_layer}");
    let q = stdout(&ok(rb(store.path(), &["history", "-q", "app:1.0"])));
    assert_eq!(q.lines().next(), Some(&id[7..19]));

    // rmi by name untags; by ID with several names it needs -f.
    let out = ok(rb(store.path(), &["rmi", "me/app:2"]));
    assert_eq!(stdout(&out), "Untagged: me/app:2\n");
    let err = failed(rb(store.path(), &["rmi", &id]));
    assert!(err.contains("must be forced") && err.contains("app:1.0"), "{err}");
    let out = stdout(&ok(rb(store.path(), &["rmi", "-f", &id])));
    assert!(out.contains("Untagged: app:1.0") && out.contains("Untagged: localhost:5000/app:latest"), "{out}");
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    assert!(!stdout(&ok(rb(store.path(), &["images"]))).contains("app"));
    // One missing name does not stop the others, but the exit code says so.
    let out = rb(store.path(), &["rmi", "nothere", "alsonot"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).matches("No such image").count(), 2, "{}", stderr(&out));
}

#[test]
fn save_and_load_round_trip_docker_and_oci_archives() {
    let store = tempfile::tempdir().unwrap();
    let (_reg, id) = build_app(store.path());
    let outdir = tempfile::tempdir().unwrap();
    let docker_tar = outdir.path().join("app-docker.tar");
    let oci_tar = outdir.path().join("app-oci.tar");
    ok(rb(store.path(), &["save", "-o", docker_tar.to_str().unwrap(), "app:1.0"]));
    ok(rb(store.path(), &["save", "--format", "oci", "-o", oci_tar.to_str().unwrap(), "app:1.0"]));
    // Independent readers accept both.
    let d: serde_json::Value = serde_json::from_slice(&run(Command::new("skopeo")
        .arg("inspect")
        .arg("--config")
        .arg(format!("docker-archive:{}", docker_tar.display()))))
    .unwrap();
    assert_eq!(d["config"]["Cmd"], serde_json::json!(["cat", "/hi"]));
    let o: serde_json::Value = serde_json::from_slice(&run(Command::new("skopeo")
        .arg("inspect")
        .arg("--config")
        .arg(format!("oci-archive:{}", oci_tar.display()))))
    .unwrap();
    assert_eq!(o["config"]["Labels"]["a"], "b");
    // Standard output when redirected, the same bytes as -o.
    let piped = ok(rb(store.path(), &["save", "app:1.0"])).stdout;
    assert_eq!(piped, std::fs::read(&docker_tar).unwrap());

    for archive in [&docker_tar, &oci_tar] {
        let fresh = tempfile::tempdir().unwrap();
        let out = ok(rb(fresh.path(), &["load", "-i", archive.to_str().unwrap()]));
        assert_eq!(stdout(&out), "Loaded image: app:1.0\n", "{}", archive.display());
        let v = inspect(fresh.path(), "app:1.0");
        assert_eq!(v["Id"], id.as_str());
        // What was loaded can be saved again, byte for byte.
        let again = ok(rb(fresh.path(), &["save", "app:1.0"])).stdout;
        assert_eq!(again, std::fs::read(&docker_tar).unwrap());
    }
    // From standard input.
    let fresh = tempfile::tempdir().unwrap();
    let out = ok(rbuild()
        .arg("--root")
        .arg(fresh.path())
        .arg("load")
        .stdin(std::fs::File::open(&docker_tar).unwrap())
        .output()
        .unwrap());
    assert_eq!(stdout(&out), "Loaded image: app:1.0\n");
    // A skopeo-written docker-archive (the legacy `docker save` layout:
    // `manifest.json`, uncompressed layers, no index.json) loads too.
    let legacy = outdir.path().join("legacy.tar");
    run(Command::new("skopeo")
        .arg("copy")
        .arg("-q")
        .arg(format!("docker-archive:{}", docker_tar.display()))
        .arg(format!("docker-archive:{}:legacy/app:3", legacy.display())));
    let fresh = tempfile::tempdir().unwrap();
    let out = ok(rb(fresh.path(), &["load", "-i", legacy.to_str().unwrap()]));
    assert_eq!(stdout(&out), "Loaded image: legacy/app:3\n");
    let v = inspect(fresh.path(), "legacy/app:3");
    assert_eq!(v["Config"]["Cmd"], serde_json::json!(["cat", "/hi"]));
    assert_eq!(v["Id"], id.as_str(), "the config travels byte for byte");
    // Saving two different images into one archive is refused, clearly.
    ok(rb(fresh.path(), &["load", "-i", oci_tar.to_str().unwrap()]));
    let err = failed(rb(fresh.path(), &["save", "-o", "/dev/null", "app:1.0", "legacy/app:3"]));
    assert!(err.contains("rbuild saves one image"), "{err}");
    let err = failed(rb(fresh.path(), &["save", "-o", "/dev/null", "busybox"]));
    assert!(err.contains("No such image: busybox"), "{err}");
}

// ----------------------------------------------------------------- hostile

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A tar built member by member; names are written raw into the header so
/// that `..` and absolute paths (which `tar::Builder` refuses) can be made.
struct Hostile {
    out: Vec<u8>,
}

impl Hostile {
    fn new() -> Self {
        Hostile { out: Vec::new() }
    }

    fn member(&mut self, name: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        let bytes = h.as_mut_bytes();
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            bytes[157..157 + l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        self.out.resize(self.out.len().div_ceil(512) * 512, 0);
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.member(name, tar::EntryType::Regular, data, None)
    }

    fn blob(&mut self, data: &[u8]) -> &mut Self {
        self.file(&format!("blobs/sha256/{}", sha(data)), data)
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

/// A minimal valid image: config, one layer, manifest; `index.json` names it `evil:1`.
fn valid_parts() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let layer = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_path("f").unwrap();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &b"hi"[..]).unwrap();
        b.into_inner().unwrap()
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha(&layer))]},
        "config": {}
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{}", sha(&layer)), "size": layer.len()}]
    }))
    .unwrap();
    (config, layer, manifest)
}

fn index_for(manifest: &[u8], size: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{}", sha(manifest)), "size": size,
                       "annotations": {"io.containerd.image.name": "docker.io/library/evil:1"}}]
    }))
    .unwrap()
}

/// `rbuild load` of `archive` into `store`, as root or as `user`.
fn load_bytes(store: &Path, archive: &[u8], user: Option<&str>) -> Output {
    let dir = tempfile::tempdir_in(store.parent().unwrap()).unwrap();
    let path = dir.path().join("a.tar");
    std::fs::write(&path, archive).unwrap();
    let mut cmd = match user {
        Some(u) => {
            run(Command::new("chown").args(["-R", &format!("{u}:{u}")]).arg(dir.path()));
            util::rbuild_as(u, store.parent().unwrap())
        }
        None => rbuild(),
    };
    cmd.arg("--root").arg(store).args(["load", "-i"]).arg(&path).output().unwrap()
}

/// As root and, when the tests run as root, as the unprivileged test user.
#[test]
fn load_refuses_hostile_archives_and_tags_nothing() {
    hostile_archives_as(None);
    if util::is_root() {
        util::ensure_test_user();
        hostile_archives_as(Some(util::TEST_USER));
    }
}

fn hostile_archives_as(user: Option<&str>) {
    let base = tempfile::Builder::new().prefix("rbuild-load").tempdir_in("/tmp").unwrap();
    let store = base.path().join("store");
    if let Some(u) = user {
        run(Command::new("chown").arg(format!("{u}:{u}")).arg(base.path()));
    }
    let images_of = |store: &Path| {
        let mut cmd = match user {
            Some(u) => util::rbuild_as(u, base.path()),
            None => rbuild(),
        };
        stdout(&ok(cmd.arg("--root").arg(store).arg("images").output().unwrap()))
    };
    let (config, layer, manifest) = valid_parts();
    let index = index_for(&manifest, manifest.len());
    let good = || {
        let mut h = Hostile::new();
        h.blob(&config).blob(&layer).blob(&manifest);
        h
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "traversal",
            good().file("../../../tmp/rbuild-evil", b"x").file("index.json", &index).finish(),
            "points outside the archive",
        ),
        ("absolute", good().file("/tmp/rbuild-evil", b"x").finish(), "points outside the archive"),
        (
            "symlinked blob",
            {
                let mut h = good();
                h.member(
                    &format!("blobs/sha256/{}", "a".repeat(64)),
                    tar::EntryType::Symlink,
                    b"",
                    Some("/etc/shadow"),
                );
                h.file("index.json", &index).finish()
            },
            "is a symlink",
        ),
        (
            "hard-linked blob",
            {
                let mut h = good();
                h.member(&format!("blobs/sha256/{}", "b".repeat(64)), tar::EntryType::Link, b"", Some("etc/passwd"));
                h.finish()
            },
            "is a hard link",
        ),
        (
            "wrong digest",
            {
                let mut h = good();
                h.file(&format!("blobs/sha256/{}", sha(b"other")), b"not other").file("index.json", &index).finish()
            },
            "does not match its digest",
        ),
        ("bad blob name", good().file("blobs/sha256/../../x", b"x").finish(), "points outside the archive"),
        ("sha512 blob", good().file(&format!("blobs/sha512/{}", "c".repeat(128)), b"x").finish(), "is not a blob name"),
        ("huge index", good().file("index.json", &vec![b' '; 5 << 20]).finish(), "larger than the 4194304-byte limit"),
        (
            "huge manifest descriptor",
            good().file("index.json", &index_for(&manifest, 1 << 30)).finish(),
            "larger than the 4194304-byte limit",
        ),
        (
            "size mismatch",
            good().file("index.json", &index_for(&manifest, manifest.len() + 1)).finish(),
            "its descriptor says",
        ),
        (
            "missing layer",
            {
                let mut h = Hostile::new();
                h.blob(&config).blob(&manifest).file("index.json", &index).finish()
            },
            "is referenced but not in the archive",
        ),
        (
            "legacy manifest.json escaping",
            {
                let mj = serde_json::to_vec(&serde_json::json!([
                    {"Config": "../../etc/passwd", "RepoTags": ["evil:1"], "Layers": []}
                ]))
                .unwrap();
                Hostile::new().file("manifest.json", &mj).finish()
            },
            "points outside the archive",
        ),
        (
            "legacy layer not matching its diff id",
            {
                let cfg = serde_json::to_vec(&serde_json::json!({
                    "architecture": "amd64", "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", "d".repeat(64))]}
                }))
                .unwrap();
                let mj = serde_json::to_vec(&serde_json::json!([
                    {"Config": "c.json", "RepoTags": ["evil:1"], "Layers": ["x/layer.tar"]}
                ]))
                .unwrap();
                Hostile::new().file("c.json", &cfg).file("x/layer.tar", &layer).file("manifest.json", &mj).finish()
            },
            "the config says",
        ),
        (
            "legacy layer symlinked out of the archive",
            Hostile::new().member("x/layer.tar", tar::EntryType::Symlink, b"", Some("../../etc/passwd")).finish(),
            "points outside the archive",
        ),
        (
            "legacy layer symlinked to an absolute path",
            Hostile::new().member("x/layer.tar", tar::EntryType::Symlink, b"", Some("/etc/shadow")).finish(),
            "points outside the archive",
        ),
        ("not an image archive", Hostile::new().file("hello.txt", b"hi").finish(), "neither `index.json`"),
        ("not a tar", b"this is not a tar file at all, just text".repeat(20), "cannot read the archive"),
    ];
    for (what, archive, want) in cases {
        let out = load_bytes(&store, &archive, user);
        assert!(!out.status.success(), "{what} ({user:?}): loaded:\n{}", stdout(&out));
        let err = stderr(&out);
        assert!(err.contains(want), "{what} ({user:?}): expected `{want}` in:\n{err}");
        assert!(!Path::new("/tmp/rbuild-evil").exists(), "{what} wrote outside");
    }
    let images = images_of(&store);
    assert_eq!(images.lines().count(), 1, "a refused archive tagged something:\n{images}");
    // The same parts, well formed, load: the cases above fail for their reason only.
    let out = ok(load_bytes(&store, &good().file("index.json", &index).finish(), user));
    assert_eq!(stdout(&out), "Loaded image: evil:1\n");
}

#[test]
fn multi_platform_images_inspect_save_and_load_per_platform() {
    let reg = TestRegistry::start();
    reg.push_busybox_multiarch("busybox:latest");
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {}/busybox:latest\nLABEL multi=yes\n", reg.addr))
        .unwrap();
    let store = tempfile::tempdir().unwrap();
    ok(rbuild()
        .arg("--root")
        .arg(store.path())
        .args(["build", "-q", "--platform", "linux/amd64,linux/arm64", "-t", "multi:1"])
        .arg(ctx.path())
        .output()
        .unwrap());
    let v = inspect(store.path(), "multi:1");
    assert_eq!(v["Id"], v["Digest"], "an index's ID is its digest");
    assert_eq!(v["MediaType"], "application/vnd.oci.image.index.v1+json");
    let platforms: Vec<&str> =
        v["Platforms"].as_array().unwrap().iter().map(|p| p["Platform"].as_str().unwrap()).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert_eq!(v["Platforms"][1]["Config"]["architecture"], "arm64");
    assert_eq!(v["Platforms"][1]["Config"]["config"]["Labels"]["multi"], "yes");

    // history: the host's image by default, another with --platform.
    let arm = stdout(&ok(rb(store.path(), &["history", "--platform", "linux/arm64", "-q", "multi:1"])));
    let arm_id = v["Platforms"][1]["Manifest"]["config"]["digest"].as_str().unwrap();
    assert_eq!(arm.lines().next(), Some(&arm_id[7..19]), "{arm}");
    let err = failed(rb(store.path(), &["history", "--platform", "linux/s390x", "multi:1"]));
    assert!(err.contains("has no `linux/s390x` image (it has linux/amd64, linux/arm64)"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let oci = dir.path().join("multi-oci.tar");
    let docker_arm = dir.path().join("multi-arm.tar");
    ok(rb(store.path(), &["save", "--format", "oci", "-o", oci.to_str().unwrap(), "multi:1"]));
    ok(rb(store.path(), &["save", "--platform", "linux/arm64", "-o", docker_arm.to_str().unwrap(), "multi:1"]));
    let raw: serde_json::Value = serde_json::from_slice(&run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", oci.display()))))
    .unwrap();
    assert_eq!(raw["manifests"].as_array().unwrap().len(), 2, "{raw}");
    let cfg: serde_json::Value = serde_json::from_slice(&run(Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("docker-archive:{}", docker_arm.display()))))
    .unwrap();
    assert_eq!(cfg["architecture"], "arm64");

    // The OCI archive loads back as the same index.
    let fresh = tempfile::tempdir().unwrap();
    assert_eq!(stdout(&ok(rb(fresh.path(), &["load", "-i", oci.to_str().unwrap()]))), "Loaded image: multi:1\n");
    assert_eq!(inspect(fresh.path(), "multi:1")["Digest"], v["Digest"]);
}
