//! Remote build cache end to end: `--cache-to` on one store, `--cache-from`
//! on an empty one, against a real `docker-registry` on loopback and an OCI
//! layout directory. What ran is read from `--progress rawjson` events.

mod util;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use util::faultproxy::FaultProxy;
use util::{TestRegistry, ok, rbuild};
use util::{ensure_test_user, is_root};

fn build(store: &Path, ctx: &Path, extra: &[&str]) -> Output {
    rbuild()
        .arg("--root")
        .arg(store)
        .arg("build")
        .args(["--progress", "rawjson"])
        .args(extra)
        .arg(ctx)
        // Identical inputs give identical image digests on both stores.
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("run rbuild")
}

/// Names of the steps that started executing (not cached), in order.
fn started(out: &Output) -> Vec<String> {
    util::progress::ran(&String::from_utf8_lossy(&out.stderr))
}

fn started_runs(out: &Output) -> Vec<String> {
    started(out).into_iter().filter(|n| n.contains("RUN ")).collect()
}

/// The image digest a build wrote (from `--metadata-file`).
fn image_digest(metadata: &Path) -> String {
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(metadata).unwrap()).unwrap();
    m["containerimage.digest"].as_str().expect("containerimage.digest").to_string()
}

/// W: a builder stage with two RUNs over a source file, and a final stage
/// copying its output next to a second source file and running over both.
fn workload(reg: &TestRegistry) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {reg}/busybox:latest AS builder\n\
             RUN echo toolchain > /toolchain\n\
             COPY lib.txt /lib.txt\n\
             RUN cat /toolchain /lib.txt > /built && echo compiled >> /built\n\
             FROM {reg}/busybox:latest\n\
             COPY --from=builder /built /app/built\n\
             COPY app.txt /app/app.txt\n\
             RUN cat /app/built /app/app.txt > /app/all\n",
            reg = reg.addr
        ),
    )
    .unwrap();
    std::fs::write(ctx.path().join("lib.txt"), "lib v1\n").unwrap();
    std::fs::write(ctx.path().join("app.txt"), "app v1\n").unwrap();
    ctx
}

fn registry_with_busybox() -> TestRegistry {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    reg
}

/// Lazy import: of the artifact's blobs, `store` downloaded exactly the
/// layers of the image `image_digest`, never those of intermediate steps
/// nobody needed.
fn assert_only_image_layers_downloaded(store: &Path, image_digest: &str, cache_from: &str) {
    let stored = |d: &str| store.join("blobs/sha256").join(d.trim_start_matches("sha256:")).exists();
    let image_manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("blobs/sha256").join(&image_digest[7..])).unwrap()).unwrap();
    let image_layers: Vec<String> = image_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    for layer in &image_layers {
        assert!(stored(layer), "image layer {layer} is missing");
    }
    for layer in cache_layers(cache_from) {
        if !image_layers.contains(&layer) {
            assert!(!stored(&layer), "{layer}, not a layer of the image, was downloaded");
        }
    }
}

/// Builds W on an empty store with `cache_from`, checking the result has
/// `want_digest`; returns the RUN steps that executed.
fn cached_build(ctx: &Path, cache_from: &str, want_digest: &str) -> Vec<String> {
    let store = tempfile::tempdir().unwrap();
    let meta = store.path().join("meta.json");
    let out_dir = tempfile::tempdir().unwrap();
    let out = ok(build(
        store.path(),
        ctx,
        &[
            "--cache-from",
            cache_from,
            "--metadata-file",
            meta.to_str().unwrap(),
            "-o",
            &format!("type=local,dest={}", out_dir.path().display()),
            "-o",
            "type=image,name=w:latest",
        ],
    ));
    assert_eq!(image_digest(&meta), want_digest, "the cached image differs");
    assert_only_image_layers_downloaded(store.path(), want_digest, cache_from);
    // The exported files are really there (the final layers were fetched).
    assert_eq!(
        std::fs::read_to_string(out_dir.path().join("app/all")).unwrap(),
        std::fs::read_to_string(ctx.join("lib.txt"))
            .map(|lib| format!("toolchain\n{lib}compiled\n{}", std::fs::read_to_string(ctx.join("app.txt")).unwrap()))
            .unwrap()
    );
    started_runs(&out)
}

/// The layer digests of the cache artifact `cache_from` names.
fn cache_layers(cache_from: &str) -> Vec<String> {
    let manifest: serde_json::Value = match cache_from.strip_prefix("type=local,src=") {
        Some(rest) => {
            let (dir, tag) = rest.split_once(",tag=").unwrap_or((rest, "latest"));
            let dir = Path::new(dir);
            let index: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
            let entry = index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
                .unwrap()
                .clone();
            let digest = entry["digest"].as_str().unwrap();
            serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(&digest[7..])).unwrap()).unwrap()
        }
        None => util::skopeo_inspect_raw(cache_from),
    };
    manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

/// The round trip of one cache backend with `mode=max`: export on store A,
/// import on empty stores, then a change of one source file.
fn round_trip(reg: &TestRegistry, cache_to: &str, cache_from: &str) {
    let ctx = workload(reg);
    let store_a = tempfile::tempdir().unwrap();
    let meta = store_a.path().join("meta.json");
    let out = ok(build(
        store_a.path(),
        ctx.path(),
        &["--cache-to", cache_to, "--metadata-file", meta.to_str().unwrap(), "-o", "type=image,name=w:latest"],
    ));
    assert_eq!(started_runs(&out).len(), 3, "the cold build runs every RUN: {:?}", started(&out));
    let digest = image_digest(&meta);

    // mode=max holds the builder stage's three layers beside the image's
    // four (base, two COPYs, RUN): those must not be downloaded below.
    assert_eq!(cache_layers(cache_from).len(), 7);
    let runs = cached_build(ctx.path(), cache_from, &digest);
    assert!(runs.is_empty(), "a fully cached build ran {runs:?}");
    // With an image output only, the layers are downloaded, not unpacked.
    let store = tempfile::tempdir().unwrap();
    let meta = store.path().join("meta.json");
    let out = ok(build(
        store.path(),
        ctx.path(),
        &["--cache-from", cache_from, "--metadata-file", meta.to_str().unwrap(), "-o", "type=image,name=w:latest"],
    ));
    assert!(started(&out).is_empty(), "{:?}", started(&out));
    assert_eq!(image_digest(&meta), digest);
    let snapshots = std::fs::read_dir(store.path().join("snapshots")).unwrap().count();
    assert_eq!(snapshots, 0, "an image-only cached build unpacked layers");

    // Only the final stage depends on app.txt: its COPY and RUN run, the
    // builder stage stays cached.
    std::fs::write(ctx.path().join("app.txt"), "app v2\n").unwrap();
    let store_b = tempfile::tempdir().unwrap();
    let out = ok(build(store_b.path(), ctx.path(), &["--cache-from", cache_from, "-o", "type=image,name=w:latest"]));
    let steps = started(&out);
    assert_eq!(started_runs(&out).len(), 1, "{steps:?}");
    assert!(steps.iter().any(|s| s.contains("COPY app.txt")), "{steps:?}");
    assert!(!steps.iter().any(|s| s.contains("COPY lib.txt") || s.contains("echo toolchain")), "{steps:?}");
}

#[test]
fn registry_cache_round_trip_with_mode_max() {
    let reg = registry_with_busybox();
    let cache = reg.reference("cache:w");
    round_trip(&reg, &format!("type=registry,ref={cache},mode=max"), &cache);
    // CI's usual pair, `--cache-from X --cache-to Y` on a fresh runner: the
    // records resolved lazily are exported again without downloading the
    // intermediate blobs (the repository has them).
    let ctx = workload(&reg);
    let again = reg.reference("cache:again");
    let store = tempfile::tempdir().unwrap();
    let meta = store.path().join("meta.json");
    let out = ok(build(
        store.path(),
        ctx.path(),
        &[
            "--cache-from",
            &cache,
            "--metadata-file",
            meta.to_str().unwrap(),
            "--cache-to",
            &format!("type=registry,ref={again},mode=max"),
            "-o",
            "type=image,name=w:latest",
        ],
    ));
    assert_eq!(started_runs(&out).len(), 0);
    assert_eq!(cache_layers(&again).len(), 7, "{:?}", cache_layers(&again));
    assert_only_image_layers_downloaded(store.path(), &image_digest(&meta), &again);
    let fresh = tempfile::tempdir().unwrap();
    let out = ok(build(fresh.path(), ctx.path(), &["--cache-from", &again, "-o", "type=image,name=w:latest"]));
    assert!(started(&out).is_empty(), "{:?}", started(&out));
    // The artifact is a plain OCI image manifest with the records config.
    let raw = util::skopeo_inspect_raw(&cache);
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(raw["config"]["mediaType"], "application/vnd.rbuild.cache.config.v1+json");
}

#[test]
fn local_cache_round_trip_with_tags() {
    let reg = registry_with_busybox();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    round_trip(&reg, &format!("type=local,dest={d},tag=w,mode=max"), &format!("type=local,src={d},tag=w"));
    // Another tag in the same directory is kept beside it.
    let ctx = workload(&reg);
    let store = tempfile::tempdir().unwrap();
    ok(build(store.path(), ctx.path(), &["--cache-to", &format!("type=local,dest={d},tag=other")]));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    let tags: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert_eq!(tags, ["w", "other"]);
    // `digest=` picks a manifest whatever the tags say.
    let w = index["manifests"][0]["digest"].as_str().unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let out = ok(build(fresh.path(), ctx.path(), &["--cache-from", &format!("type=local,src={d},digest={w}")]));
    assert!(started(&out).is_empty(), "{:?}", started(&out));
}

#[test]
fn mode_min_caches_only_the_image_steps() {
    let reg = registry_with_busybox();
    let ctx = workload(&reg);
    let (min, max) = (reg.reference("cache:min"), reg.reference("cache:max"));
    let store_a = tempfile::tempdir().unwrap();
    let meta = store_a.path().join("meta.json");
    ok(build(
        store_a.path(),
        ctx.path(),
        &[
            "--cache-to",
            &format!("type=registry,ref={min}"),
            "--cache-to",
            &format!("type=registry,ref={max},mode=max"),
            "--metadata-file",
            meta.to_str().unwrap(),
            "-o",
            "type=image,name=w:latest",
        ],
    ));
    let digest = image_digest(&meta);
    // min: the builder stage's RUNs run again (their records were not
    // exported); the final stage's steps hit.
    let runs = cached_build(ctx.path(), &min, &digest);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().all(|r| !r.contains("/app/all")), "{runs:?}");
    let runs = cached_build(ctx.path(), &max, &digest);
    assert!(runs.is_empty(), "{runs:?}");
}

#[test]
fn two_platforms_share_one_cache_ref() {
    let reg = TestRegistry::start();
    reg.push_busybox_multiarch("busybox:multi");
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM --platform=$BUILDPLATFORM {reg}/busybox:multi AS build\n\
             RUN echo built > /built\n\
             FROM {reg}/busybox:multi\n\
             ARG TARGETARCH\n\
             COPY --from=build /built /built\n\
             COPY app.txt /app.txt\n\
             LABEL arch=$TARGETARCH\n",
            reg = reg.addr
        ),
    )
    .unwrap();
    std::fs::write(ctx.path().join("app.txt"), "app\n").unwrap();
    let cache = reg.reference("cache:multi");
    let mut digests = Vec::new();
    // Two runners, one platform each, exporting to the same ref: the second
    // export keeps the first one's records.
    for platform in ["linux/amd64", "linux/arm64"] {
        let store = tempfile::tempdir().unwrap();
        let meta = store.path().join("meta.json");
        ok(build(
            store.path(),
            ctx.path(),
            &[
                "--platform",
                platform,
                "--cache-to",
                &format!("type=registry,ref={cache},mode=max"),
                "--metadata-file",
                meta.to_str().unwrap(),
                "-o",
                "type=image,name=m:latest",
            ],
        ));
        digests.push(image_digest(&meta));
    }
    for (platform, digest) in ["linux/amd64", "linux/arm64"].iter().zip(&digests) {
        let store = tempfile::tempdir().unwrap();
        let meta = store.path().join("meta.json");
        let out = ok(build(
            store.path(),
            ctx.path(),
            &[
                "--platform",
                platform,
                "--cache-from",
                &cache,
                "--metadata-file",
                meta.to_str().unwrap(),
                "-o",
                "type=image,name=m:latest",
            ],
        ));
        let steps = started(&out);
        assert!(steps.is_empty(), "{platform}: not fully cached, ran {steps:?}");
        assert_eq!(&image_digest(&meta), digest, "{platform}");
    }
}

#[test]
fn a_tampered_cache_blob_is_rejected() {
    let reg = registry_with_busybox();
    let ctx = workload(&reg);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let store_a = tempfile::tempdir().unwrap();
    ok(build(store_a.path(), ctx.path(), &["--cache-to", &format!("type=local,dest={d},mode=max")]));
    // Every layer blob of the artifact gets its bytes changed (same size):
    // whichever the build needs, it must refuse it.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = |digest: &str| dir.path().join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(blob(manifest_digest)).unwrap()).unwrap();
    let mut tampered = Vec::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let digest = layer["digest"].as_str().unwrap();
        let mut bytes = std::fs::read(blob(digest)).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::remove_file(blob(digest)).unwrap(); // may be a hard link into store A
        std::fs::write(blob(digest), bytes).unwrap();
        tampered.push(digest.to_string());
    }
    let store_b = tempfile::tempdir().unwrap();
    let out = build(store_b.path(), ctx.path(), &["--cache-from", &format!("type=local,src={d}")]);
    assert!(!out.status.success(), "a build over tampered blobs succeeded");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("digest"), "the error names the digest mismatch:\n{text}");
    for digest in tampered {
        assert!(!store_b.path().join("blobs/sha256").join(digest.trim_start_matches("sha256:")).exists());
    }
}

#[test]
fn a_cache_ref_that_does_not_exist_yet_is_an_empty_cache() {
    let reg = registry_with_busybox();
    let ctx = workload(&reg);
    let store = tempfile::tempdir().unwrap();
    let out = ok(build(store.path(), ctx.path(), &["--cache-from", &reg.reference("cache:none")]));
    assert_eq!(started_runs(&out).len(), 3);
    // The services buildx users will try answer with what works instead,
    // before anything runs.
    for (flag, spec) in [
        ("--cache-to", "type=gha,scope=x"),
        ("--cache-from", "type=gha,scope=x"),
        ("--cache-to", "type=s3,region=eu-west-1,bucket=b"),
        ("--cache-from", "type=azblob,name=c"),
    ] {
        let empty = tempfile::tempdir().unwrap();
        let out = build(empty.path(), ctx.path(), &[flag, spec]);
        assert!(!out.status.success(), "{flag} {spec} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        let kind = spec.split(',').next().unwrap();
        assert!(err.contains(&format!("`{flag} {kind}` is not supported by rbuild")), "{err}");
        assert!(err.contains("type=registry") && err.contains("type=local"), "{err}");
        assert!(started(&out).is_empty(), "{flag} {spec}: steps ran before the refusal");
    }
    // So do options this version cannot honour, before anything runs.
    for option in ["image-manifest=false", "oci-mediatypes=false", "compression-level=12"] {
        let spec = format!("type=registry,ref={},{option}", reg.reference("cache:x"));
        let empty = tempfile::tempdir().unwrap();
        let out = build(empty.path(), ctx.path(), &["--cache-to", &spec]);
        assert!(!out.status.success(), "{option} was accepted");
        assert!(started(&out).is_empty(), "{option}: steps ran before the refusal");
    }
}

/// A cache exported by root is imported by an unprivileged user on an empty
/// store: nothing runs, owners survive the unpack in its user namespace, and
/// the image is the same.
#[test]
fn rootless_import_of_a_cache() {
    if !is_root() {
        eprintln!("not root: the test user cannot be created here; skipped");
        return;
    }
    ensure_test_user();
    let reg = registry_with_busybox();
    let base = tempfile::Builder::new().prefix("rbuild-rc-rootless").tempdir_in("/tmp").unwrap();
    let ctx = base.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}/busybox:latest\nRUN touch /owned && chown 1000:1000 /owned\n", reg.addr),
    )
    .unwrap();
    let cache = reg.reference("cache:rootless");
    let root_store = tempfile::tempdir().unwrap();
    let meta = root_store.path().join("meta.json");
    ok(build(
        root_store.path(),
        &ctx,
        &[
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
            "--metadata-file",
            meta.to_str().unwrap(),
            "-o",
            "type=image,name=r:latest",
        ],
    ));
    let digest = image_digest(&meta);
    run(Command::new("chown").args(["-R", "rbuildtest:rbuildtest"]).arg(base.path()));
    run(Command::new("chmod").arg("755").arg(base.path()));
    let (store, fs, user_meta) = (base.path().join("store"), base.path().join("fs"), base.path().join("meta.json"));
    let mut cmd = util::rbuild_as("rbuildtest", base.path());
    cmd.arg("--root").arg(&store).args(["build", "--progress", "rawjson", "--cache-from", &cache]);
    cmd.arg("--metadata-file").arg(&user_meta).args(["-o", "type=image,name=r:latest", "-o"]);
    cmd.arg(format!("type=local,dest={}", fs.display())).arg(&ctx).env("SOURCE_DATE_EPOCH", "1700000000");
    let out = ok(cmd.output().unwrap());
    assert!(started(&out).is_empty(), "{:?}", started(&out));
    assert_eq!(image_digest(&user_meta), digest);
    assert!(fs.join("owned").is_file());
    // Container uid 1000 is host uid (first subordinate id + 999): the layer
    // was unpacked with its owners inside the user namespace.
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap();
    let first: u32 = subuid
        .lines()
        .find_map(|l| l.strip_prefix("rbuildtest:"))
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .expect("a subordinate range for rbuildtest");
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(fs.join("owned")).unwrap());
    assert_eq!(uid, first + 999);
}

fn run(cmd: &mut Command) {
    let status = cmd.status().expect("spawn");
    assert!(status.success(), "{cmd:?} failed");
}

/// The image config blob as pushed (`skopeo inspect --config` alone
/// re-encodes it, dropping fields it does not know).
fn raw_config(reference: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--config", "--raw"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("config JSON")
}

/// `--cache-to type=inline`: the records travel in the pushed image's
/// config, and `--cache-from IMAGE` rebuilds it on an empty store without
/// running anything; an image built FROM it does not inherit them.
#[test]
fn inline_cache_round_trip_through_the_image() {
    let reg = registry_with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}/busybox:latest\n\
             COPY app.txt /app.txt\n\
             RUN cat /app.txt > /built && echo compiled >> /built\n\
             RUN true\n\
             RUN wc -c /built > /size\n",
            reg.addr
        ),
    )
    .unwrap();
    std::fs::write(ctx.path().join("app.txt"), "app v1\n").unwrap();
    let image = reg.reference("app:inline");
    let push = |name: &str| format!("type=image,name={name},push=true");
    let store_a = tempfile::tempdir().unwrap();
    let meta = store_a.path().join("meta.json");
    let out = ok(build(
        store_a.path(),
        ctx.path(),
        &["--cache-to", "type=inline", "--metadata-file", meta.to_str().unwrap(), "-o", &push(&image)],
    ));
    assert_eq!(started_runs(&out).len(), 3, "{:?}", started(&out));
    let digest = image_digest(&meta);
    let config = raw_config(&image);
    let records = &config["org.rbuild.cache.v1"];
    assert_eq!(records["version"], 1, "{config}");
    // base, COPY and the three RUNs (`RUN true` has an empty diff).
    let keys = records["platforms"]["linux/amd64"].as_object().expect("amd64 records");
    assert_eq!(keys.len(), 5, "{records}");
    assert!(
        keys.values().any(|e| e["layers"].as_array().unwrap().iter().any(|l| l.is_null())),
        "the empty RUN is recorded as null: {records}"
    );

    // An empty store, the image itself as the cache (a bare ref).
    let store_b = tempfile::tempdir().unwrap();
    let meta_b = store_b.path().join("meta.json");
    let again = reg.reference("app:again");
    let out = ok(build(
        store_b.path(),
        ctx.path(),
        &[
            "--cache-from",
            &image,
            "--cache-to",
            "type=inline",
            "--metadata-file",
            meta_b.to_str().unwrap(),
            "-o",
            &push(&again),
        ],
    ));
    assert!(started_runs(&out).is_empty(), "a fully cached build ran {:?}", started(&out));
    assert_eq!(image_digest(&meta_b), digest, "the image rebuilt from its inline cache differs");
    assert_eq!(raw_config(&again)["org.rbuild.cache.v1"], *records);

    // A change of the source: the COPY and the RUNs after it run again.
    std::fs::write(ctx.path().join("app.txt"), "app v2\n").unwrap();
    let store_c = tempfile::tempdir().unwrap();
    let out = ok(build(store_c.path(), ctx.path(), &["--cache-from", &image, "-o", "type=image,name=w:latest"]));
    assert_eq!(started_runs(&out).len(), 3, "{:?}", started(&out));

    // FROM the inline-cached image, without type=inline: the base's records
    // describe the base's build, so they are not carried over.
    let child = tempfile::tempdir().unwrap();
    std::fs::write(child.path().join("Dockerfile"), format!("FROM {image}\nRUN echo child > /child\n")).unwrap();
    let derived = reg.reference("app:child");
    ok(build(store_a.path(), child.path(), &["-o", &push(&derived)]));
    let derived_config = raw_config(&derived);
    assert!(derived_config.get("org.rbuild.cache.v1").is_none(), "{derived_config}");
    // An image without inline records is not a cache source.
    let store_d = tempfile::tempdir().unwrap();
    let out = build(store_d.path(), child.path(), &["--cache-from", &derived, "-o", "type=image,name=w:latest"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an rbuild cache"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // mode=max cannot be inline (the config can name only the image's own
    // layers): `mode` is not a key of type=inline.
    let out =
        build(store_d.path(), ctx.path(), &["--cache-to", "type=inline,mode=max", "-o", "type=image,name=w:latest"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown key `mode`"));
}

/// A Dockerfile whose RUN reads what an earlier run left in cache mount
/// `cm` (into `/found`) and appends to it.
fn cache_mount_workload(reg: &TestRegistry) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}/busybox:latest\n\
             RUN --mount=type=cache,id=cm,target=/cache,sharing=locked \
             sh -c 'cat /cache/file > /found 2>/dev/null || echo none > /found; echo from-a >> /cache/file'\n",
            reg.addr
        ),
    )
    .unwrap();
    ctx
}

/// What the RUN found in its cache mount, building on `store` with `extra`.
fn found_in_mount(store: &Path, ctx: &Path, extra: &[&str]) -> String {
    let out_dir = tempfile::tempdir().unwrap();
    let dest = format!("type=local,dest={}", out_dir.path().display());
    let mut args = extra.to_vec();
    args.extend(["--no-cache", "-o", &dest]);
    let out = ok(build(store, ctx, &args));
    assert_eq!(started_runs(&out).len(), 1, "{:?}", started(&out));
    std::fs::read_to_string(out_dir.path().join("found")).unwrap()
}

/// `cache-mounts=true`: a cache mount's files exported to a registry and to
/// a layout directory, and seeded on empty stores by `--cache-from`.
#[test]
fn cache_mounts_are_exported_and_seeded() {
    let reg = registry_with_busybox();
    let ctx = cache_mount_workload(&reg);
    let store_a = tempfile::tempdir().unwrap();
    assert_eq!(found_in_mount(store_a.path(), ctx.path(), &[]), "none\n");
    let cache = reg.reference("cache:mounts");
    let layout = tempfile::tempdir().unwrap();
    let local_to = format!("type=local,dest={},cache-mounts=true", layout.path().display());
    // The second build on A leaves two lines in the mount, and exports it.
    let found = found_in_mount(
        store_a.path(),
        ctx.path(),
        &["--cache-to", &format!("type=registry,ref={cache},cache-mounts=true"), "--cache-to", &local_to],
    );
    assert_eq!(found, "from-a\n");
    let raw = util::skopeo_inspect_raw(&cache);
    assert!(raw["layers"].as_array().unwrap().len() >= 3, "base, RUN and the mount blob: {raw}");

    for cache_from in [cache.clone(), format!("type=local,src={}", layout.path().display())] {
        // An empty store: the RUN (forced by --no-cache) finds A's files.
        let store_b = tempfile::tempdir().unwrap();
        assert_eq!(found_in_mount(store_b.path(), ctx.path(), &["--cache-from", &cache_from]), "from-a\nfrom-a\n");
        // A mount with contents is never overwritten by a seed.
        assert_eq!(
            found_in_mount(store_b.path(), ctx.path(), &["--cache-from", &cache_from]),
            "from-a\nfrom-a\nfrom-a\n"
        );
    }
    // Without cache-mounts=true nothing of the mount is exported.
    let plain = reg.reference("cache:plain");
    found_in_mount(store_a.path(), ctx.path(), &["--cache-to", &format!("type=registry,ref={plain}")]);
    let store_c = tempfile::tempdir().unwrap();
    assert_eq!(found_in_mount(store_c.path(), ctx.path(), &["--cache-from", &plain]), "none\n");
    // A build that uses other mount ids gets none of the cache's.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        other.path().join("Dockerfile"),
        format!("FROM {}/busybox:latest\nRUN --mount=type=cache,id=elsewhere,target=/c ls /c > /found\n", reg.addr),
    )
    .unwrap();
    let store_d = tempfile::tempdir().unwrap();
    assert_eq!(found_in_mount(store_d.path(), other.path(), &["--cache-from", &cache]), "");
    assert!(!store_d.path().join("mounts/cm").exists());
    // A bad value is refused before anything runs.
    let out =
        build(store_d.path(), ctx.path(), &["--cache-to", &format!("type=registry,ref={plain},cache-mounts=yes")]);
    assert!(!out.status.success());
}

/// A cache mount with its own owner (`uid=`/`gid=`/`mode=`) is another
/// cache than the default one of its id (BuildKit keys it so): its export
/// and its seed on an empty store are that mount's files, not the default
/// mount's.
#[test]
fn a_cache_mount_with_an_owner_is_exported_and_seeded_as_itself() {
    let reg = registry_with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}/busybox:latest\n\
             RUN --mount=type=cache,id=cm,target=/cache echo default >> /cache/file\n\
             RUN --mount=type=cache,id=cm,target=/cache,uid=1000,gid=1000,mode=0700 \
             sh -c 'cat /cache/file > /found 2>/dev/null || echo none > /found; echo owned >> /cache/file; \
             stat -c %u:%g:%a /cache >> /found'\n",
            reg.addr
        ),
    )
    .unwrap();
    let store_a = tempfile::tempdir().unwrap();
    let cache = reg.reference("cache:owned-mounts");
    assert_eq!(found_in_owned_mount(store_a.path(), ctx.path(), &[]), "none\n1000:1000:700\n");
    let to = format!("type=registry,ref={cache},cache-mounts=true");
    assert_eq!(found_in_owned_mount(store_a.path(), ctx.path(), &["--cache-to", &to]), "owned\n1000:1000:700\n");
    let store_b = tempfile::tempdir().unwrap();
    assert_eq!(
        found_in_owned_mount(store_b.path(), ctx.path(), &["--cache-from", &cache]),
        "owned\nowned\n1000:1000:700\n",
        "the owned mount was seeded with the owned mount's files"
    );
    // `prune --filter id=cm` removes both caches of the id.
    let mounts = |store: &Path| {
        std::fs::read_dir(store.join("mounts")).unwrap().filter(|e| e.as_ref().unwrap().path().is_dir()).count()
    };
    assert_eq!(mounts(store_a.path()), 2);
    store_cmd(store_a.path(), &["prune", "--cache-mounts", "--filter", "id=other"]);
    assert_eq!(mounts(store_a.path()), 2);
    store_cmd(store_a.path(), &["prune", "--cache-mounts", "--filter", "id=cm"]);
    assert_eq!(mounts(store_a.path()), 0);
}

fn found_in_owned_mount(store: &Path, ctx: &Path, extra: &[&str]) -> String {
    let out_dir = tempfile::tempdir().unwrap();
    let dest = format!("type=local,dest={}", out_dir.path().display());
    let mut args = extra.to_vec();
    args.extend(["--no-cache", "-o", &dest]);
    ok(build(store, ctx, &args));
    std::fs::read_to_string(out_dir.path().join("found")).unwrap()
}

fn store_cmd(store: &Path, args: &[&str]) -> String {
    let out = ok(rbuild().arg("--root").arg(store).args(args).output().expect("run rbuild"));
    String::from_utf8(out.stdout).unwrap()
}

/// `rbuild du` lists cache mounts; `rbuild prune --cache-mounts [--filter
/// id=ID]` removes them, never one a running build holds.
#[test]
fn cache_mounts_are_listed_and_pruned() {
    let reg = registry_with_busybox();
    let ctx = cache_mount_workload(&reg);
    let store = tempfile::tempdir().unwrap();
    found_in_mount(store.path(), ctx.path(), &[]);
    let busy_ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        busy_ctx.path().join("Dockerfile"),
        format!(
            "FROM {}/busybox:latest\n\
             RUN --mount=type=cache,id=busy,target=/c sh -c 'echo x > /c/started; sleep 5; cat /c/started'\n",
            reg.addr
        ),
    )
    .unwrap();
    let du = store_cmd(store.path(), &["du"]);
    assert!(du.lines().any(|l| l.starts_with("cm ") && l.contains('B')), "{du}");

    // A build holding `busy` runs while prune does.
    let running = rbuild()
        .arg("--root")
        .arg(store.path())
        .args(["build", "--progress", "plain"])
        .arg(busy_ctx.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = store.path().join("mounts/busy/started");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !started.exists() {
        assert!(std::time::Instant::now() < deadline, "the busy build never reached its RUN");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let du = store_cmd(store.path(), &["du"]);
    assert!(du.lines().any(|l| l.starts_with("busy ") && l.trim_end().ends_with("yes")), "{du}");
    let pruned = store_cmd(store.path(), &["prune", "--cache-mounts", "--filter", "id=busy"]);
    assert!(pruned.contains("(0 cache mounts; 1 held by running builds kept)"), "{pruned}");
    assert!(started.exists());
    let pruned = store_cmd(store.path(), &["prune", "--cache-mounts"]);
    assert!(pruned.contains("(1 cache mounts; 1 held by running builds kept)"), "{pruned}");
    assert!(!store.path().join("mounts/cm").exists() && started.exists());
    let out = running.wait_with_output().unwrap();
    assert!(out.status.success(), "the build whose mount was spared failed: {}", String::from_utf8_lossy(&out.stderr));
    // Once it ended, its mount goes too; a filter names ids.
    let pruned = store_cmd(store.path(), &["prune", "--cache-mounts", "--filter", "id=other"]);
    assert!(pruned.contains("(0 cache mounts; 0 held"), "{pruned}");
    let pruned = store_cmd(store.path(), &["prune", "--cache-mounts", "--filter", "id=busy"]);
    assert!(pruned.contains("(1 cache mounts; 0 held"), "{pruned}");
    assert!(!store_cmd(store.path(), &["du"]).contains("CACHE MOUNT"));
    // The build's other data is untouched by --cache-mounts.
    assert!(std::fs::read_dir(store.path().join("snapshots")).unwrap().count() > 0);
    let bad = rbuild().arg("--root").arg(store.path()).args(["prune", "--filter", "id=x"]).output().unwrap();
    assert!(!bad.status.success());
}

/// Cache mounts exported by root are seeded for an unprivileged user on an
/// empty store: the RUN finds the files, with their owners as the
/// container sees them.
#[test]
fn rootless_seeding_of_cache_mounts() {
    if !is_root() {
        eprintln!("not root: the test user cannot be created here; skipped");
        return;
    }
    ensure_test_user();
    let reg = registry_with_busybox();
    let base = tempfile::Builder::new().prefix("rbuild-rc-mounts").tempdir_in("/tmp").unwrap();
    let ctx = base.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}/busybox:latest\n\
             RUN --mount=type=cache,id=cm,target=/cache \
             sh -c 'if [ -f /cache/file ]; then stat -c %u /cache/file > /found; cat /cache/file >> /found; \
             else echo none > /found; echo from-root > /cache/file; chown 1000:1000 /cache/file; fi'\n",
            reg.addr
        ),
    )
    .unwrap();
    let cache = reg.reference("cache:rootless-mounts");
    let root_store = tempfile::tempdir().unwrap();
    let spec = format!("type=registry,ref={cache},cache-mounts=true");
    assert_eq!(found_in_mount(root_store.path(), &ctx, &["--cache-to", &spec]), "none\n");
    run(Command::new("chown").args(["-R", "rbuildtest:rbuildtest"]).arg(base.path()));
    run(Command::new("chmod").arg("755").arg(base.path()));
    let (store, fs) = (base.path().join("store"), base.path().join("fs"));
    let mut cmd = util::rbuild_as("rbuildtest", base.path());
    cmd.arg("--root").arg(&store).args(["build", "--progress", "rawjson", "--no-cache", "--cache-from", &cache]);
    cmd.arg("-o").arg(format!("type=local,dest={}", fs.display())).arg(&ctx);
    let out = ok(cmd.output().unwrap());
    assert_eq!(started_runs(&out).len(), 1, "{:?}", started(&out));
    assert_eq!(std::fs::read_to_string(fs.join("found")).unwrap(), "1000\nfrom-root\n");
}

/// `type=inline` on a multi-platform push: each platform's image carries
/// its records, and `--cache-from` the index serves every platform.
#[test]
fn inline_cache_of_a_multi_platform_image() {
    let reg = TestRegistry::start();
    reg.push_busybox_multiarch("busybox:multi");
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {}/busybox:multi\nARG TARGETARCH\nCOPY app.txt /app.txt\nLABEL arch=$TARGETARCH\n", reg.addr),
    )
    .unwrap();
    std::fs::write(ctx.path().join("app.txt"), "app\n").unwrap();
    let image = reg.reference("multi:inline");
    let store = tempfile::tempdir().unwrap();
    let out = ok(build(
        store.path(),
        ctx.path(),
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--cache-to",
            "type=inline",
            "-o",
            &format!("type=image,name={image},push=true"),
        ],
    ));
    assert!(started(&out).iter().any(|s| s.contains("COPY app.txt")), "{:?}", started(&out));
    let raw = util::skopeo_inspect_raw(&image);
    assert!(raw["manifests"].as_array().is_some_and(|m| m.len() == 2), "an index: {raw}");
    for platform in ["linux/amd64", "linux/arm64"] {
        let fresh = tempfile::tempdir().unwrap();
        let out = ok(build(
            fresh.path(),
            ctx.path(),
            &["--platform", platform, "--cache-from", &image, "-o", "type=image,name=m"],
        ));
        let steps = started(&out);
        assert!(steps.is_empty(), "{platform}: not fully cached, ran {steps:?}");
    }
}

/// The layer digests of the image manifest `digest` in `store`.
fn stored_image_layers(store: &Path, digest: &str) -> Vec<String> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("blobs/sha256").join(&digest[7..])).unwrap()).unwrap();
    manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

/// Which of `candidates` the store holds as blobs.
fn blobs_in_store(store: &Path, candidates: &[String]) -> BTreeSet<String> {
    candidates.iter().filter(|d| store.join("blobs/sha256").join(&d[7..]).exists()).cloned().collect()
}

/// The layer blobs (of `layers`) among the GETs a counting proxy saw since
/// its `since`-th (config blobs of the cache artifacts are not layers: they
/// are always read).
fn layer_gets(proxy: &FaultProxy, since: usize, layers: &[String]) -> BTreeSet<String> {
    proxy.blob_gets()[since..].iter().filter(|d| layers.contains(d)).cloned().collect()
}

/// Lazy import, counted: on empty stores behind a counting proxy, for
/// mode=min, mode=max, type=local and type=inline caches, a fully cached
/// push-only build downloads no layer (the registry has them: HEAD, or a
/// cross-repository mount from the cache's repository); an image-only
/// local export downloads exactly the final image's layers; a `type=local`
/// output unpacks exactly those; a miss below a hit downloads the hit's
/// chain only because the step that runs needs its files, and nothing of
/// the stage below that hit.
#[test]
fn a_fresh_store_downloads_exactly_the_blobs_the_rules_allow() {
    let reg = registry_with_busybox();
    let proxy = FaultProxy::start(&reg.addr, vec![]);
    let via = |name: &str| format!("{}/{name}", proxy.addr);
    let ctx = workload(&reg);
    let store_a = tempfile::tempdir().unwrap();
    let meta = store_a.path().join("meta.json");
    let local_dir = tempfile::tempdir().unwrap();
    let local_from = format!("type=local,src={}", local_dir.path().display());
    ok(build(
        store_a.path(),
        ctx.path(),
        &[
            "--cache-to",
            &format!("type=registry,ref={}", via("cache:min")),
            "--cache-to",
            &format!("type=registry,ref={},mode=max", via("cache:max")),
            "--cache-to",
            &format!("type=local,dest={},mode=max", local_dir.path().display()),
            "--metadata-file",
            meta.to_str().unwrap(),
            "-o",
            "type=image,name=w:latest",
        ],
    ));
    let digest = image_digest(&meta);
    // The inline cache changes the config (it holds the records), so that
    // image has its own digest; its layers are the same.
    ok(build(
        store_a.path(),
        ctx.path(),
        &[
            "--cache-to",
            "type=inline",
            "--metadata-file",
            meta.to_str().unwrap(),
            "-o",
            &format!("type=image,name={},push=true", via("app:inline")),
        ],
    ));
    let inline_digest = image_digest(&meta);
    let image: BTreeSet<String> = stored_image_layers(store_a.path(), &digest).into_iter().collect();
    // Every layer any of the caches names (mode=max: the builder stage's too).
    let all: Vec<String> = cache_layers(&via("cache:max"));
    assert_eq!(all.len(), 7, "{all:?}");
    assert!(image.iter().all(|l| all.contains(l)));

    // mode=min (and inline) has no records of the builder stage: its two
    // RUNs run on the base image, a hit whose layer they need (a miss
    // below a hit), so that one layer is downloaded; the final stage hits.
    let inline = ["--cache-to", "type=inline"];
    for (name, cache_from, runs, extra, want) in [
        ("mode=min", via("cache:min"), 2, &[][..], &digest),
        ("mode=max", via("cache:max"), 0, &[][..], &digest),
        ("type=local", local_from.clone(), 0, &[][..], &digest),
        ("type=inline", via("app:inline"), 2, &inline[..], &inline_digest),
    ] {
        // Push-only: no layer downloaded, none in the store, and the pushed
        // image is the same image, complete in the registry.
        let store = tempfile::tempdir().unwrap();
        let meta = store.path().join("meta.json");
        let before = proxy.blob_gets().len();
        let target = via(&format!("app:pushed-{}", name.replace('=', "-")));
        let out = ok(build(
            store.path(),
            ctx.path(),
            &[
                &["--cache-from", &cache_from, "--metadata-file", meta.to_str().unwrap()][..],
                extra,
                &["-o", &format!("type=registry,name={target}")][..],
            ]
            .concat(),
        ));
        assert_eq!(started_runs(&out).len(), runs, "{name}: {:?}", started(&out));
        assert_eq!(&image_digest(&meta), want, "{name}");
        let base: BTreeSet<String> = stored_image_layers(store_a.path(), &digest).into_iter().take(1).collect();
        let allowed = if runs == 0 || cache_from.starts_with("type=local") { BTreeSet::new() } else { base };
        let got = layer_gets(&proxy, before, &all);
        assert_eq!(got, allowed, "{name}: layers a push-only cached build downloaded");
        if runs == 0 {
            assert!(blobs_in_store(store.path(), &all).is_empty(), "{name}: layers entered the store");
        }
        let pushed = util::skopeo_inspect_raw(&target);
        let pushed_layers: BTreeSet<String> =
            pushed["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
        assert_eq!(pushed_layers, image, "{name}");
        // skopeo reads every blob back: the registry holds them all.
        let copy_dir = tempfile::tempdir().unwrap();
        run(Command::new("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false"])
            .arg(format!("docker://{target}"))
            .arg(format!("dir:{}", copy_dir.path().display())));

        // Image-only local export: exactly the image's layers.
        let store = tempfile::tempdir().unwrap();
        let before = proxy.blob_gets().len();
        ok(build(store.path(), ctx.path(), &["--cache-from", &cache_from, "-o", "type=image,name=w:latest"]));
        if !cache_from.starts_with("type=local") {
            let got = layer_gets(&proxy, before, &all);
            assert_eq!(got, image, "{name}: image-only export");
            // Each at most once.
            let n = proxy.blob_gets()[before..].iter().filter(|d| all.contains(d)).count();
            assert_eq!(n, image.len(), "{name}: a layer was downloaded twice");
        }
        if runs == 0 {
            assert_eq!(blobs_in_store(store.path(), &all), image, "{name}: image-only export");
        }

        // Files output: the same layers, unpacked.
        let store = tempfile::tempdir().unwrap();
        let out_dir = tempfile::tempdir().unwrap();
        ok(build(
            store.path(),
            ctx.path(),
            &["--cache-from", &cache_from, "-o", &format!("type=local,dest={}", out_dir.path().display())],
        ));
        if runs == 0 {
            assert_eq!(blobs_in_store(store.path(), &all), image, "{name}: type=local output");
        }
        assert!(out_dir.path().join("app/all").exists(), "{name}");
    }

    // A miss below a hit (mode=max): app.txt changes, so its COPY runs on
    // the hit `COPY --from=builder` and needs that chain's files (base and
    // the COPY's layer); the builder stage below that hit is never fetched.
    std::fs::write(ctx.path().join("app.txt"), "app v2\n").unwrap();
    let store = tempfile::tempdir().unwrap();
    let before = proxy.blob_gets().len();
    let out = ok(build(store.path(), ctx.path(), &["--cache-from", &via("cache:max"), "-o", "type=image,name=w:2"]));
    assert_eq!(started_runs(&out).len(), 1, "{:?}", started(&out));
    let first_two: BTreeSet<String> = stored_image_layers(store_a.path(), &digest).into_iter().take(2).collect();
    let fetched = layer_gets(&proxy, before, &all);
    assert_eq!(fetched, first_two, "only the chain below the miss is downloaded");
}

/// Two real rbuild processes export to one cache ref at the same moment,
/// for different platforms, several rounds over changing sources: each
/// either succeeds with its records surviving beside the other's (read,
/// merge, write, read back, merge again if replaced), or fails saying so;
/// never a silently lost platform or a corrupt ref. After each round both
/// platforms build fully cached on empty stores.
#[test]
fn concurrent_exports_from_two_processes_keep_both_platforms() {
    let reg = TestRegistry::start();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY a.txt /a.txt\nCOPY b.txt /b.txt\n").unwrap();
    std::fs::write(ctx.path().join("b.txt"), "b\n").unwrap();
    let cache = reg.reference("cache:shared");
    let platforms = ["linux/amd64", "linux/arm64"];
    for round in 0..4 {
        std::fs::write(ctx.path().join("a.txt"), format!("round {round}\n")).unwrap();
        let stores: Vec<tempfile::TempDir> = platforms.iter().map(|_| tempfile::tempdir().unwrap()).collect();
        let children: Vec<std::process::Child> = platforms
            .iter()
            .zip(&stores)
            .map(|(platform, store)| {
                rbuild()
                    .arg("--root")
                    .arg(store.path())
                    .args(["build", "--progress", "plain", "--platform", platform])
                    .args(["--cache-to", &format!("type=registry,ref={cache},mode=max")])
                    .args(["-o", "type=image,name=w:latest"])
                    .arg(ctx.path())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn rbuild")
            })
            .collect();
        let mut succeeded = Vec::new();
        for (child, platform) in children.into_iter().zip(platforms) {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                succeeded.push(platform);
            } else {
                // The only acceptable failure: losing the race every round.
                assert!(err.contains("another export replaced the cache artifact"), "round {round}: {err}");
            }
        }
        assert!(!succeeded.is_empty(), "round {round}: neither export succeeded");
        // The ref is a complete artifact: skopeo reads every blob back.
        let copy = tempfile::tempdir().unwrap();
        run(Command::new("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false"])
            .arg(format!("docker://{cache}"))
            .arg(format!("dir:{}", copy.path().display())));
        let config = raw_config(&cache);
        for platform in &succeeded {
            assert!(config["platforms"][platform].is_object(), "round {round}: {platform} lost: {config}");
            let fresh = tempfile::tempdir().unwrap();
            let out = ok(build(
                fresh.path(),
                ctx.path(),
                &["--platform", platform, "--cache-from", &cache, "-o", "type=image,name=w:latest"],
            ));
            assert!(started(&out).is_empty(), "round {round}: {platform} is not fully cached: {:?}", started(&out));
        }
    }
}

/// The HTTP status of `GET http://ADDR/PATH` (curl), straight at the registry.
fn http_status(addr: &str, path: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg("Accept: application/vnd.oci.image.manifest.v1+json")
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// Cache export and import through a fault-injecting proxy: dropped
/// connections and 503/429 with `Retry-After` on a share of requests, and a
/// truncated blob, are retried (a cut download resumed) and the round trip
/// completes; beyond the retry budget the export fails naming the cause (a
/// warning with `ignore-error=true`) and the registry holds no manifest at
/// the ref; a blob cut short on every try, or of the wrong digest, fails the
/// import and never enters the store.
#[test]
fn cache_export_and_import_through_faults() {
    use util::faultproxy::{Fault, Rule};
    let reg = registry_with_busybox();
    let ctx = workload(&reg);
    let store_a = tempfile::tempdir().unwrap();
    let meta = store_a.path().join("meta.json");
    ok(build(store_a.path(), ctx.path(), &["-o", "type=image,name=w:1"]));
    let every = |method, path, every, limit, fault| Rule { method, path_contains: path, every, limit, fault };

    // Export: a share of every kind of request fails once or twice.
    let flaky = FaultProxy::start(
        &reg.addr,
        vec![
            every(Some("HEAD"), "/blobs/sha256:", 3, 2, Fault::Drop),
            every(Some("POST"), "/blobs/uploads/", 2, 2, Fault::Status { code: 503, retry_after: Some(1) }),
            every(Some("PUT"), "/blobs/uploads/", 2, 2, Fault::Status { code: 429, retry_after: Some(1) }),
            every(Some("PUT"), "/manifests/", 1, 1, Fault::Status { code: 503, retry_after: None }),
            every(Some("GET"), "/manifests/", 2, 2, Fault::Drop),
        ],
    );
    let cache = format!("{}/cache:faulty", flaky.addr);
    let out = ok(build(
        store_a.path(),
        ctx.path(),
        &[
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
            "--metadata-file",
            meta.to_str().unwrap(),
            "-o",
            "type=image,name=w:1",
        ],
    ));
    // The image with compressed layers (a store-only build defers them and
    // has another manifest; the image ID is the same).
    let digest = image_digest(&meta);
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported cache"));
    let injected: Vec<_> = flaky.log().into_iter().filter(|l| l.fault.is_some()).collect();
    assert!(injected.len() >= 6, "too few faults to mean anything: {injected:#?}");
    // Complete in the registry (read straight, not through the proxy).
    let copy = tempfile::tempdir().unwrap();
    run(Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{}", reg.reference("cache:faulty")))
        .arg(format!("dir:{}", copy.path().display())));

    // Import through faults: 429s with Retry-After, a drop, and a body cut
    // part-way (resumed with a range request).
    let flaky = FaultProxy::start(
        &reg.addr,
        vec![
            every(Some("GET"), "/blobs/sha256:", 2, 2, Fault::Status { code: 429, retry_after: Some(1) }),
            every(Some("GET"), "/blobs/sha256:", 3, 1, Fault::Drop),
            every(Some("GET"), "/blobs/sha256:", 1, 2, Fault::TruncateResponse(2048)),
            every(Some("GET"), "/manifests/", 1, 1, Fault::Status { code: 503, retry_after: Some(1) }),
        ],
    );
    let store = tempfile::tempdir().unwrap();
    let meta = store.path().join("meta.json");
    let out_dir = tempfile::tempdir().unwrap();
    let out = ok(build(
        store.path(),
        ctx.path(),
        &[
            "--cache-from",
            &format!("{}/cache:faulty", flaky.addr),
            "--metadata-file",
            meta.to_str().unwrap(),
            "-o",
            &format!("type=local,dest={}", out_dir.path().display()),
            "-o",
            "type=image,name=w:1",
        ],
    ));
    assert!(started_runs(&out).is_empty(), "{:?}", started(&out));
    assert_eq!(image_digest(&meta), digest);
    assert!(out_dir.path().join("app/all").is_file());
    let log = flaky.log();
    assert!(log.iter().any(|l| l.fault == Some(Fault::TruncateResponse(2048))), "{log:#?}");
    assert!(log.iter().any(|l| l.fault.is_some_and(|f| matches!(f, Fault::Status { code: 429, .. }))), "{log:#?}");

    // Beyond the retry budget: every blob upload is refused. The export
    // fails saying why, no manifest is sent, the ref does not exist.
    let broken = FaultProxy::start(
        &reg.addr,
        vec![Rule::always(Some("PUT"), "/blobs/uploads/", Fault::Status { code: 503, retry_after: None })],
    );
    let spec = format!("type=registry,ref={}/brokencache:x,mode=max", broken.addr);
    let out = build(store_a.path(), ctx.path(), &["--cache-to", &spec, "-o", "type=image,name=w:1"]);
    assert!(!out.status.success(), "an export whose uploads all failed succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exporting the build cache") && err.contains("gave up after 5 attempts"), "{err}");
    assert!(err.contains("503"), "{err}");
    assert!(!broken.log().iter().any(|l| l.method == "PUT" && l.target.contains("/manifests/")), "a manifest was sent");
    assert_eq!(http_status(&reg.addr, "/v2/brokencache/manifests/x"), 404);
    // `ignore-error=true`: the same failure is a warning, the build succeeds.
    let out = ok(build(
        store_a.path(),
        ctx.path(),
        &["--cache-to", &format!("{spec},ignore-error=true"), "-o", "type=image,name=w:1"],
    ));
    let warnings = util::progress::warnings(&String::from_utf8_lossy(&out.stderr));
    assert!(warnings.iter().any(|w| w.contains("cache export failed")), "{warnings:?}");
    assert_eq!(http_status(&reg.addr, "/v2/brokencache/manifests/x"), 404);

    // Import beyond the budget: every download of the layers larger than
    // the cut is cut short (the records, in the config blob, arrive
    // whole). The build fails naming the blob, and no partial blob is in
    // the store.
    let layers = cache_layers(&reg.reference("cache:faulty"));
    let big: Vec<String> = util::skopeo_inspect_raw(&reg.reference("cache:faulty"))["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["size"].as_u64().unwrap() > 8192)
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert!(!big.is_empty(), "the base layer is larger than the cut");
    let rules = big
        .iter()
        .map(|l| {
            let path: &'static str = Box::leak(format!("/blobs/{l}").into_boxed_str());
            Rule::always(Some("GET"), path, Fault::TruncateResponse(4096))
        })
        .collect();
    let cut = FaultProxy::start(&reg.addr, rules);
    let store = tempfile::tempdir().unwrap();
    let from = format!("{}/cache:faulty", cut.addr);
    let out = build(store.path(), ctx.path(), &["--cache-from", &from, "-o", "type=image,name=w:1"]);
    assert!(!out.status.success(), "an import of truncated blobs succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("downloading") && big.iter().any(|b| err.contains(b.as_str())), "{err}");
    assert!(cut.faults() >= 5, "{:#?}", cut.log());
    let stored = blobs_in_store(store.path(), &big);
    assert!(stored.is_empty(), "a truncated blob entered the store: {stored:?}");
    let tmp_left = std::fs::read_dir(store.path().join("tmp")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(tmp_left, 0, "a partial download was left behind");

    // Wrong digest: the registry serves other bytes (same size) under one
    // of the image's layers. Refused, never stored; the others are fine.
    let image = stored_image_layers(store_a.path(), &digest);
    let victim = image.last().unwrap();
    let data = reg.blob_data_path(victim);
    let size = std::fs::metadata(&data).unwrap().len();
    std::fs::write(&data, vec![0x5a; size as usize]).unwrap();
    let store = tempfile::tempdir().unwrap();
    let out =
        build(store.path(), ctx.path(), &["--cache-from", &reg.reference("cache:faulty"), "-o", "type=image,name=w:1"]);
    assert!(!out.status.success(), "an import of a tampered blob succeeded");
    assert!(String::from_utf8_lossy(&out.stderr).contains("digest"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!blobs_in_store(store.path(), &layers).contains(victim), "the tampered blob entered the store");
}

/// The layers a `mode=max` export needs are written in the background while
/// the build runs: the export then writes none itself, and the image and
/// the cache are byte for byte those of a build that compresses everything
/// at export (`RBUILD_BACKGROUND_LAYERS=0`).
#[test]
fn background_layers_change_nothing_but_when_they_are_written() {
    let reg = registry_with_busybox();
    let ctx = workload(&reg);
    let mut results = Vec::new();
    for background in ["1", "0"] {
        let store = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let meta = store.path().join("meta.json");
        let cache_to = format!("type=local,dest={},mode=max", cache.path().display());
        let out = rbuild()
            .arg("--root")
            .arg(store.path())
            .arg("build")
            .args(["--progress", "rawjson", "--cache-to", &cache_to, "--metadata-file", meta.to_str().unwrap()])
            .args(["-o", "type=image,name=w:latest"])
            .arg(ctx.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("RBUILD_BACKGROUND_LAYERS", background)
            .output()
            .expect("run rbuild");
        let out = ok(out);
        let export = util::progress::statuses(&String::from_utf8_lossy(&out.stderr))
            .into_iter()
            .find(|t| t.starts_with("exported cache:"))
            .expect("an export message");
        let mut layers = cache_layers(&format!("type=local,src={}", cache.path().display()));
        layers.sort();
        results.push((background, image_digest(&meta), layers, export));
    }
    let (_, digest_bg, layers_bg, export_bg) = &results[0];
    let (_, digest_fg, layers_fg, export_fg) = &results[1];
    assert_eq!(digest_bg, digest_fg, "the image differs with background layers");
    assert_eq!(layers_bg, layers_fg, "the cache's layers differ with background layers");
    assert_eq!(layers_bg.len(), 7);
    assert!(export_bg.contains("(0 new)"), "the export compressed layers itself: {export_bg}");
    assert!(!export_fg.contains("(0 new)"), "without background layers the export writes them: {export_fg}");
}

/// The first export of `ctx`'s cache straight to `reference` (mode=max);
/// its manifest, and that every blob it names is in the registry.
fn export_and_read_back(reg: &TestRegistry, ctx: &Path, reference: &str) -> serde_json::Value {
    let store = tempfile::tempdir().unwrap();
    ok(build(
        store.path(),
        ctx,
        &["--cache-to", &format!("type=registry,ref={reference},mode=max"), "-o", "type=image,name=w:1"],
    ));
    let manifest = util::skopeo_inspect_raw(reference);
    assert_blobs_present(reg, &manifest);
    manifest
}

/// Every blob `manifest` (of repository `bgcache`) names is in the registry.
fn assert_blobs_present(reg: &TestRegistry, manifest: &serde_json::Value) {
    let mut digests = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
    digests.extend(manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()));
    for d in digests {
        assert_eq!(http_status(&reg.addr, &format!("/v2/bgcache/blobs/{d}")), 200, "{d} is missing");
    }
}

/// A second version of the workload: every step but the base's changes.
fn change_workload(ctx: &Path) {
    std::fs::write(ctx.join("lib.txt"), "lib v2\n").unwrap();
    std::fs::write(ctx.join("app.txt"), "app v2\n").unwrap();
}

/// Layers upload in the background as the steps commit, so a cold build's
/// uploads reach the registry before the export reads the artifact there.
/// When they fail beyond the retry budget, the build fails saying which
/// blob and why, no manifest is sent, and the artifact already at the ref
/// is untouched (its blobs all there).
#[test]
fn a_failing_background_upload_fails_the_build_and_leaves_the_ref_alone() {
    use util::faultproxy::{Fault, Rule};
    let reg = registry_with_busybox();
    let ctx = workload(&reg);
    let before = export_and_read_back(&reg, ctx.path(), &reg.reference("bgcache:x"));
    change_workload(ctx.path());
    // A last step that outlasts the earlier layers' uploads, so "before the
    // export" does not hang on how loaded the machine is: the order is what
    // is tested, not a race between the first upload and the solve's end.
    let dockerfile = ctx.path().join("Dockerfile");
    let mut text = std::fs::read_to_string(&dockerfile).unwrap();
    text.push_str("RUN sleep 2\n");
    std::fs::write(&dockerfile, text).unwrap();

    let broken = FaultProxy::start(
        &reg.addr,
        vec![Rule::always(Some("PUT"), "/blobs/uploads/", Fault::Status { code: 503, retry_after: None })],
    );
    let store = tempfile::tempdir().unwrap();
    let spec = format!("type=registry,ref={}/bgcache:x,mode=max", broken.addr);
    let out = build(store.path(), ctx.path(), &["--cache-to", &spec, "-o", "type=image,name=w:2"]);
    assert!(!out.status.success(), "an export whose uploads all failed succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exporting the build cache") && err.contains("cannot push blob `sha256:"), "{err}");
    assert!(err.contains("gave up after 5 attempts") && err.contains("503"), "{err}");
    let log = broken.log();
    let first_upload = log.iter().position(|l| l.method == "PUT" && l.target.contains("/blobs/uploads/"));
    let first_read = log.iter().position(|l| l.method == "GET" && l.target.contains("/manifests/"));
    let (Some(upload), Some(read)) = (first_upload, first_read) else { panic!("no upload or no read: {log:#?}") };
    assert!(upload < read, "the layers were not uploaded before the export began: {log:#?}");
    assert!(!log.iter().any(|l| l.method == "PUT" && l.target.contains("/manifests/")), "a manifest was sent");
    let after = util::skopeo_inspect_raw(&reg.reference("bgcache:x"));
    assert_eq!(after, before, "the ref changed");
    assert_blobs_present(&reg, &after);

    // Without background uploads the same failure reads the same.
    let store = tempfile::tempdir().unwrap();
    let out = rbuild()
        .arg("--root")
        .arg(store.path())
        .args(["build", "--progress", "rawjson", "--cache-to", &spec, "-o", "type=image,name=w:2"])
        .arg(ctx.path())
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("RBUILD_BACKGROUND_UPLOADS", "0")
        .output()
        .expect("run rbuild");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exporting the build cache") && err.contains("gave up after 5 attempts"), "{err}");
    assert_eq!(util::skopeo_inspect_raw(&reg.reference("bgcache:x")), before, "the ref changed");
}

/// A build killed (SIGKILL) while a background upload is in flight leaves
/// the artifact at the ref exactly as it was: a manifest is written only
/// after every blob it names.
#[test]
fn a_build_killed_mid_upload_leaves_the_ref_untouched() {
    use util::faultproxy::{Fault, Rule};
    let reg = registry_with_busybox();
    let ctx = workload(&reg);
    let before = export_and_read_back(&reg, ctx.path(), &reg.reference("bgcache:x"));
    change_workload(ctx.path());

    // Uploads are held for a minute: the kill lands while one is in flight.
    let held = FaultProxy::start(&reg.addr, vec![Rule::always(Some("PUT"), "/blobs/uploads/", Fault::Delay(60_000))]);
    let store = tempfile::tempdir().unwrap();
    let spec = format!("type=registry,ref={}/bgcache:x,mode=max", held.addr);
    let mut child = rbuild()
        .arg("--root")
        .arg(store.path())
        .args(["build", "--progress", "plain", "--cache-to", &spec, "-o", "type=image,name=w:2"])
        .arg(ctx.path())
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run rbuild");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while held.delayed_in_flight() == 0 {
        assert!(child.try_wait().unwrap().is_none(), "rbuild ended before uploading: {:#?}", held.log());
        assert!(std::time::Instant::now() < deadline, "no upload reached the registry: {:#?}", held.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!held.log().iter().any(|l| l.method == "PUT" && l.target.contains("/manifests/")), "a manifest was sent");
    let after = util::skopeo_inspect_raw(&reg.reference("bgcache:x"));
    assert_eq!(after, before, "the ref changed");
    assert_blobs_present(&reg, &after);
}

/// A cold build that pushes its image and exports its cache to another
/// repository of the same registry sends each blob once: whichever of the
/// cache's background uploads and the image push gets to a layer first
/// sends it, the other waits and mounts it.
#[test]
fn a_pushed_image_mounts_the_layers_its_cache_uploaded() {
    let reg = registry_with_busybox();
    let ctx = workload(&reg);
    let proxy = FaultProxy::start(&reg.addr, vec![]);
    let store = tempfile::tempdir().unwrap();
    let out = ok(build(
        store.path(),
        ctx.path(),
        &[
            "--cache-to",
            &format!("type=registry,ref={}/bgcache:x,mode=max", proxy.addr),
            "-o",
            &format!("type=image,name={}/app:1,push=true", proxy.addr),
        ],
    ));
    let log = proxy.log();
    let mut sent: std::collections::BTreeMap<String, usize> = Default::default();
    for l in log.iter().filter(|l| l.method == "PUT" && l.status == Some(201)) {
        if let Some(d) = l.target.split("digest=").nth(1) {
            *sent.entry(d.replace("%3A", ":")).or_default() += 1;
        }
    }
    assert!(sent.values().all(|&n| n == 1), "a blob was uploaded twice: {sent:#?}");
    // Nor were bytes sent and thrown away: a layer streamed to the cache
    // while it was compressed is committed before the image push reads it
    // (the push then mounts it), not cancelled after the push sent it too.
    let thrown = log.iter().filter(|l| l.method == "DELETE" && l.target.contains("/blobs/uploads/")).count();
    assert_eq!(thrown, 0, "an upload session was cancelled (a blob's bytes sent twice): {log:#?}");
    // The image's layers: each uploaded (once, above) or mounted.
    let manifest = util::skopeo_inspect_raw(&reg.reference("app:1"));
    let mounted = |d: &str| {
        log.iter().any(|l| {
            l.method == "POST"
                && l.target.contains("/v2/app/")
                && l.target.contains(&d.replace(':', "%3A"))
                && l.status == Some(201)
        })
    };
    for layer in manifest["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        assert!(sent.contains_key(d) || mounted(d), "{d} neither uploaded nor mounted: {log:#?}");
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("mounted sha256:"), "nothing was mounted");
}

/// A cache whose layers are big enough to stream in several PATCHes: a
/// few MB that do not compress, and a small layer, on busybox from `registry`.
fn streaming_context(registry: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}/busybox:latest\n\
             RUN head -c 6000000 /dev/urandom > /big\n\
             RUN echo small > /small\n",
            registry
        ),
    )
    .unwrap();
    ctx
}

/// Every blob the cache artifact `name` names is in the registry exactly as
/// the store holds it (its bytes hash to its digest and equal the store's
/// file), and skopeo copies the artifact, checking every digest.
fn assert_cache_blobs_complete(reg: &TestRegistry, store: &Path, name: &str) {
    use sha2::{Digest as _, Sha256};
    let manifest = util::skopeo_inspect_raw(&reg.reference(name));
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{manifest}"); // busybox and the two RUNs
    let repository = name.split(':').next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for layer in layers {
        let digest = layer["digest"].as_str().unwrap();
        let got = dir.path().join(&digest[7..]);
        let status = Command::new("curl")
            .args(["-sf", "-o"])
            .arg(&got)
            .arg(format!("http://{}/v2/{repository}/blobs/{digest}", reg.addr))
            .status()
            .expect("run curl");
        assert!(status.success(), "{digest} is not in the registry");
        let bytes = std::fs::read(&got).unwrap();
        assert_eq!(format!("sha256:{}", hex::encode(Sha256::digest(&bytes))), digest);
        assert_eq!(bytes.len() as u64, layer["size"].as_u64().unwrap());
        let stored = std::fs::read(store.join("blobs/sha256").join(&digest[7..])).unwrap();
        assert!(stored == bytes, "the registry's {digest} is not the stored blob");
    }
    let copy = tempfile::tempdir().unwrap();
    run(Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{}", reg.reference(name)))
        .arg(format!("dir:{}", copy.path().display())));
}

/// A layer streams to the registry while the store compresses it (PATCHes
/// during the write, `PUT ?digest=` at the end). A stream whose PATCH is cut
/// part-way falls back to uploading the finished file and the export
/// completes, naming only blobs the registry holds.
#[test]
fn a_streamed_upload_cut_mid_stream_falls_back_and_completes() {
    use util::faultproxy::{Fault, Rule};
    let reg = registry_with_busybox();
    let ctx = streaming_context(&reg.addr);
    let cut = FaultProxy::start(
        &reg.addr,
        vec![Rule {
            method: Some("PATCH"),
            path_contains: "/blobs/uploads/",
            every: 1,
            limit: 1,
            fault: Fault::CutRequestBody(4096),
        }],
    );
    let store = tempfile::tempdir().unwrap();
    let reference = format!("{}/streamcache:x", cut.addr);
    let out = ok(build(
        store.path(),
        ctx.path(),
        &["--cache-to", &format!("type=registry,ref={reference}"), "-o", "type=image,name=s:1"],
    ));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported cache"));
    let log = cut.log();
    let patches: Vec<_> = log.iter().filter(|l| l.method == "PATCH").collect();
    assert!(patches.iter().any(|l| l.fault == Some(Fault::CutRequestBody(4096))), "no stream was cut: {log:#?}");
    assert!(patches.iter().any(|l| l.status == Some(202)), "no layer streamed: {log:#?}");
    assert!(!log.iter().any(|l| l.method == "PUT" && l.status.is_some_and(|s| s >= 400)), "{log:#?}");
    assert_cache_blobs_complete(&reg, store.path(), "streamcache:x");
}

/// A stream whose closing `PUT ?digest=` fails (every PATCH went through)
/// is not retried in place: the layer is uploaded again from the stored
/// file, and the artifact names only blobs the registry holds.
#[test]
fn a_streamed_upload_whose_commit_fails_is_uploaded_from_the_file() {
    use util::faultproxy::{Fault, Rule};
    let reg = registry_with_busybox();
    let refused = FaultProxy::start(
        &reg.addr,
        vec![Rule {
            method: Some("PUT"),
            path_contains: "/blobs/uploads/",
            every: 1,
            limit: 1,
            fault: Fault::Status { code: 500, retry_after: None },
        }],
    );
    // The base comes through the proxy too, so its layer is mounted, not
    // uploaded: the only PUTs to upload sessions close streams (and the
    // config's monolithic upload, last).
    let ctx = streaming_context(&refused.addr);
    let store = tempfile::tempdir().unwrap();
    let reference = format!("{}/streamput:x", refused.addr);
    let out = ok(build(
        store.path(),
        ctx.path(),
        &["--cache-to", &format!("type=registry,ref={reference}"), "-o", "type=image,name=s:1"],
    ));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported cache"));
    let log = refused.log();
    // The refused PUT closed a stream: PATCHes of its session came before it.
    let refused_at = log.iter().position(|l| l.fault.is_some()).unwrap_or_else(|| panic!("no PUT refused: {log:#?}"));
    let session = log[refused_at].target.split('?').next().unwrap().to_string();
    assert!(
        log[..refused_at]
            .iter()
            .any(|l| l.method == "PATCH" && l.target.starts_with(&session) && l.status == Some(202)),
        "the refused PUT did not close a stream: {log:#?}"
    );
    assert_cache_blobs_complete(&reg, store.path(), "streamput:x");
}

/// `mode=max` exports a stage whose files the final stage copies whole:
/// the two layers are one tar, and the background writer notes the image's
/// layer with the stage's blob (found by identity: the copy shares the
/// stage's inodes) instead of compressing it again. The image and the
/// cache must be exactly what a build that writes every layer itself in
/// the foreground gives; as root and rootless.
#[test]
fn a_stage_copied_whole_gives_the_image_the_layer_a_foreground_build_writes() {
    stage_copied_whole(false);
}

#[test]
fn rootless_a_stage_copied_whole_gives_the_image_the_layer_a_foreground_build_writes() {
    if !is_root() {
        eprintln!("not root: the test user cannot be created here; skipped");
        return;
    }
    ensure_test_user();
    stage_copied_whole(true);
}

fn stage_copied_whole(rootless: bool) {
    let reg = registry_with_busybox();
    let base = tempfile::Builder::new().prefix("rbuild-rc-twin").tempdir_in("/tmp").unwrap();
    let ctx = base.path().join("ctx");
    std::fs::create_dir_all(ctx.join("src/sub")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {reg}/busybox:latest AS build\n\
             COPY src/ /app/src/\n\
             RUN ls /app/src > /listing\n\
             FROM {reg}/busybox:latest\n\
             COPY --from=build /listing /listing\n\
             COPY --from=build /app/src /app/src\n",
            reg = reg.addr
        ),
    )
    .unwrap();
    // Above the writer's 4 MiB threshold for looking for a twin.
    let mut seed = 7u64;
    for i in 0..6 {
        let bytes: Vec<u8> = (0..1_000_000)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            })
            .collect();
        std::fs::write(ctx.join(format!("src/{}f{i}", if i % 2 == 0 { "sub/" } else { "" })), bytes).unwrap();
    }
    if rootless {
        run(Command::new("chown").args(["-R", "rbuildtest:rbuildtest"]).arg(base.path()));
        run(Command::new("chmod").arg("755").arg(base.path()));
    }
    let mut results = Vec::new();
    for background in ["1", "0"] {
        let (store, cache) =
            (base.path().join(format!("store-{background}")), base.path().join(format!("cache-{background}")));
        let image = format!("{}/twin-{rootless}-{background}:1", reg.addr);
        let mut cmd = if rootless { util::rbuild_as("rbuildtest", base.path()) } else { rbuild() };
        cmd.arg("--root").arg(&store).arg("build");
        cmd.args(["--progress", "rawjson", "-o", &format!("type=registry,name={image}")]);
        cmd.args(["--cache-to", &format!("type=local,dest={},mode=max", cache.display())]).arg(&ctx);
        cmd.env("SOURCE_DATE_EPOCH", "1700000000").env("RBUILD_BACKGROUND_LAYERS", background);
        ok(cmd.output().expect("run rbuild"));
        let manifest = util::skopeo_inspect_raw(&image);
        let layers: Vec<String> =
            manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
        let mut cached = cache_layers(&format!("type=local,src={}", cache.display()));
        cached.sort();
        results.push((layers, cached));
    }
    let ((image_bg, cache_bg), (image_fg, cache_fg)) = (&results[0], &results[1]);
    assert_eq!(image_bg, image_fg, "the image's layers differ when written in the background");
    assert_eq!(cache_bg, cache_fg, "the cache's layers differ when written in the background");
    // The image's last layer is the build stage's `COPY src/` layer: the
    // cache names `COPY src/`, `RUN` and `COPY /listing` (the base is the
    // registry's), no fourth.
    assert!(cache_bg.contains(image_bg.last().unwrap()));
    assert_eq!(cache_bg.len(), 3, "the stage's layer and the image's are not one blob: {cache_bg:?}");
}
