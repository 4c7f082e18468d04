//! Tests of the registry client against a real `docker-registry` on
//! loopback (started by the shared e2e harness), plus unit tests of
//! platform selection and retry classification.

use std::path::Path;

use sha2::Digest as _;

use super::*;

#[path = "../../tests/util/mod.rs"]
mod util;

use util::TestRegistry;

fn platform(s: &str) -> Platform {
    Platform::parse(s).unwrap()
}

fn client() -> RegistryClient {
    // An empty config dir: the tests must not pick up the host's logins.
    let dir = std::env::temp_dir().join("rbuild-registry-tests-empty-docker-config");
    std::fs::create_dir_all(&dir).unwrap();
    RegistryClient::new(RegistryOptions {
        docker_config_dir: Some(dir.clone()),
        podman_auth_file: Some(dir.join("no-auth.json")),
        ..Default::default()
    })
    .unwrap()
}

fn image(reg: &TestRegistry, name: &str) -> ImageRef {
    ImageRef::parse(&reg.reference(name)).unwrap()
}

fn sha256_file(path: &Path) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap())))
}

/// Digest of the manifest `skopeo` sees at `name` (what a tag points to).
fn skopeo_digest(reg: &TestRegistry, name: &str) -> String {
    let out = util::run(
        std::process::Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
            .arg(format!("docker://{}", reg.reference(name))),
    );
    String::from_utf8(out).unwrap().trim().to_string()
}

#[tokio::test]
async fn resolves_and_fetches_busybox() {
    let reg = TestRegistry::start();
    reg.push_busybox("library/busybox:latest");
    let c = client();
    let r = image(&reg, "library/busybox");
    let img = c.resolve(&r, &platform("linux/amd64")).await.unwrap();

    assert_eq!(img.manifest_digest, skopeo_digest(&reg, "library/busybox:latest"));
    assert_eq!(img.manifest_media_type, MEDIA_TYPE_MANIFEST);
    assert_eq!(img.index_digest, None);
    assert_eq!(img.platform, platform("linux/amd64"));
    assert_eq!(format!("sha256:{}", hex::encode(sha2::Sha256::digest(&img.config))), img.config_digest);
    let config: serde_json::Value = serde_json::from_slice(&img.config).unwrap();
    assert_eq!(config, reg.inspect_config("library/busybox:latest"));
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(img.layers.len(), 1);
    assert_eq!(img.layers[0].media_type, "application/vnd.oci.image.layer.v1.tar+gzip");

    let dir = tempfile::tempdir().unwrap();
    for layer in &img.layers {
        let path = dir.path().join(layer.digest.replace(':', "-"));
        let mut f = tokio::fs::File::create(&path).await.unwrap();
        c.fetch_blob(&r, &layer.digest, layer.size, &mut f).await.unwrap();
        assert_eq!(sha256_file(&path), layer.digest);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), layer.size);
        // The layer is a real gzip'd tar with busybox in it.
        let listing = util::run(std::process::Command::new("tar").arg("tzf").arg(&path));
        assert!(String::from_utf8_lossy(&listing).lines().any(|l| l == "bin/busybox"));
    }
}

#[tokio::test]
async fn resolves_docker_schema2_manifest() {
    let reg = TestRegistry::start();
    reg.push_busybox_docker("bb:v2s2");
    let img = client().resolve(&image(&reg, "bb:v2s2"), &platform("linux/amd64")).await.unwrap();
    assert_eq!(img.manifest_media_type, MEDIA_TYPE_DOCKER_MANIFEST);
    assert_eq!(img.layers[0].media_type, "application/vnd.docker.image.rootfs.diff.tar.gzip");
    assert_eq!(img.manifest_digest, skopeo_digest(&reg, "bb:v2s2"));
}

#[tokio::test]
async fn rejects_tampered_and_missized_blobs() {
    let reg = TestRegistry::start();
    reg.push_busybox("bb");
    let c = client();
    let r = image(&reg, "bb");
    let img = c.resolve(&r, &platform("linux/amd64")).await.unwrap();
    let layer = &img.layers[0];

    // Wrong size in the descriptor, shorter: cut off as soon as it overflows.
    let mut sink = Vec::new();
    match c.fetch_blob(&r, &layer.digest, layer.size - 1, &mut sink).await {
        Err(RegistryError::SizeMismatch { actual: None, expected, .. }) => assert_eq!(expected, layer.size - 1),
        other => panic!("expected SizeMismatch, got {other:?}"),
    }
    // Longer than the blob.
    let mut sink = Vec::new();
    match c.fetch_blob(&r, &layer.digest, layer.size + 1, &mut sink).await {
        Err(RegistryError::SizeMismatch { actual: Some(n), .. }) => assert_eq!(n, layer.size),
        other => panic!("expected SizeMismatch, got {other:?}"),
    }
    // Malformed digest: refused before any request.
    let mut sink = Vec::new();
    assert!(matches!(c.fetch_blob(&r, "sha256:xyz", 1, &mut sink).await, Err(RegistryError::InvalidDigest { .. })));
    // A digest the registry does not have.
    let missing = format!("sha256:{}", "0".repeat(64));
    assert!(matches!(c.fetch_blob(&r, &missing, 1, &mut sink).await, Err(RegistryError::FetchBlob { .. })));

    // Corrupt the stored layer (same length, one byte flipped): the registry
    // serves it as is, and the client must refuse it.
    let path = reg.blob_data_path(&layer.digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let mut sink = Vec::new();
    match c.fetch_blob(&r, &layer.digest, layer.size, &mut sink).await {
        Err(RegistryError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, layer.digest);
            assert_eq!(actual, format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn pushes_fetched_image_under_new_name() {
    let reg = TestRegistry::start();
    reg.push_busybox("bb:latest");
    let c = client();
    let src = image(&reg, "bb:latest");
    let img = c.resolve(&src, &platform("linux/amd64")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut layers = Vec::new();
    for l in &img.layers {
        let path = dir.path().join(l.digest.replace(':', "-"));
        let mut f = tokio::fs::File::create(&path).await.unwrap();
        c.fetch_blob(&src, &l.digest, l.size, &mut f).await.unwrap();
        layers.push((l.digest.clone(), l.size, path));
    }

    let dst = image(&reg, "copies/busybox:v1");
    assert!(!c.blob_exists(&dst, &img.layers[0].digest).await.unwrap());
    let digest = c
        .push_image(&dst, &img.manifest, &img.manifest_media_type, (&img.config, &img.config_digest), &layers)
        .await
        .unwrap();
    assert_eq!(digest, img.manifest_digest);
    assert!(c.blob_exists(&dst, &img.layers[0].digest).await.unwrap());

    // Independent check with skopeo.
    assert_eq!(skopeo_digest(&reg, "copies/busybox:v1"), digest);
    let config = reg.inspect_config("copies/busybox:v1");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(config["architecture"], "amd64");

    // Pushing again is a no-op for blobs (they exist) and still succeeds; a
    // missing layer file is then not even opened.
    let gone = vec![(img.layers[0].digest.clone(), img.layers[0].size, dir.path().join("does-not-exist"))];
    let again = c
        .push_image(&dst, &img.manifest, &img.manifest_media_type, (&img.config, &img.config_digest), &gone)
        .await
        .unwrap();
    assert_eq!(again, digest);

    // By digest (no tag), as index children are pushed.
    let by_digest = ImageRef { tag: None, ..image(&reg, "copies/busybox") };
    assert_eq!(c.push_manifest(&by_digest, &img.manifest, &img.manifest_media_type).await.unwrap(), digest);

    // A config that does not match its digest is refused before upload.
    let bad = c.push_blobs(&image(&reg, "copies/bad"), (b"{}", &img.config_digest), &[]).await;
    assert!(matches!(bad, Err(RegistryError::DigestMismatch { .. })));
    // A layer file of the wrong size too.
    let wrong = vec![(img.layers[0].digest.clone(), img.layers[0].size + 5, layers[0].2.clone())];
    let bad = c.push_blobs(&image(&reg, "copies/bad"), (&img.config, &img.config_digest), &wrong).await;
    assert!(matches!(bad, Err(RegistryError::SizeMismatch { .. })), "{bad:?}");
}

#[tokio::test]
async fn mounts_blob_across_repositories() {
    let reg = TestRegistry::start();
    reg.push_busybox("src/bb:latest");
    let c = client();
    let src = image(&reg, "src/bb");
    let img = c.resolve(&src, &platform("linux/amd64")).await.unwrap();
    let dst = image(&reg, "dst/bb");
    let layer = &img.layers[0].digest;
    assert!(!c.blob_exists(&dst, layer).await.unwrap());
    assert!(c.mount_blob(&dst, &src, layer).await.unwrap());
    assert!(c.blob_exists(&dst, layer).await.unwrap());

    // A push to a third repository mounts the layer it knows the source of.
    c.note_blob_source(layer, &src);
    let third = image(&reg, "third/bb:1");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer");
    let mut f = tokio::fs::File::create(&path).await.unwrap();
    c.fetch_blob(&src, layer, img.layers[0].size, &mut f).await.unwrap();
    let outcomes = c
        .push_blobs(&third, (&img.config, &img.config_digest), &[(layer.clone(), img.layers[0].size, path)])
        .await
        .unwrap();
    assert_eq!(outcomes[0], (layer.clone(), BlobOutcome::Mounted { from: "src/bb".into() }));
    // The config came from `src/bb` too (fetched by `resolve`).
    assert_eq!(outcomes[1].1, BlobOutcome::Mounted { from: "src/bb".into() });
    assert!(c.blob_exists(&third, layer).await.unwrap());
}

#[tokio::test]
async fn selects_platform_from_index() {
    let reg = TestRegistry::start();
    reg.push_busybox_multiarch("multi:latest");
    let c = client();
    let r = image(&reg, "multi:latest");
    let index_digest = skopeo_digest_raw_index(&reg, "multi:latest");

    let amd = c.resolve(&r, &platform("linux/amd64")).await.unwrap();
    assert_eq!(amd.platform, platform("linux/amd64"));
    assert_eq!(amd.index_digest.as_deref(), Some(index_digest.as_str()));
    let arm = c.resolve(&r, &platform("linux/arm64")).await.unwrap();
    assert_eq!(arm.platform, platform("linux/arm64"));
    assert_ne!(arm.manifest_digest, amd.manifest_digest);
    assert_ne!(arm.config_digest, amd.config_digest);
    // arm64/v8 is arm64.
    let v8 = c.resolve(&r, &platform("linux/arm64/v8")).await.unwrap();
    assert_eq!(v8.manifest_digest, arm.manifest_digest);
    // The index's entries are what skopeo sees.
    let raw = reg.inspect_raw("multi:latest");
    let entries: Vec<_> = raw["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap()).collect();
    assert!(entries.contains(&amd.manifest_digest.as_str()) && entries.contains(&arm.manifest_digest.as_str()));

    match c.resolve(&r, &platform("linux/s390x")).await {
        Err(RegistryError::NoMatchingPlatform { available, .. }) => {
            assert_eq!(available, "linux/amd64, linux/arm64")
        }
        other => panic!("expected NoMatchingPlatform, got {other:?}"),
    }
}

/// Digest of the index at `name`: sha256 of the exact bytes the registry
/// serves, read with `curl`-free plain skopeo raw output.
fn skopeo_digest_raw_index(reg: &TestRegistry, name: &str) -> String {
    let out = util::run(
        std::process::Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}", reg.reference(name))),
    );
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&out)))
}

#[tokio::test]
async fn authenticates_with_docker_config() {
    let reg = TestRegistry::start_with_auth("alice", "s3cret");
    reg.push_busybox("private/bb:latest");
    let r = image(&reg, "private/bb:latest");

    // Anonymous: refused.
    match client().resolve(&r, &platform("linux/amd64")).await {
        Err(RegistryError::FetchManifest { source, .. }) if matches!(*source, SessionError::Unauthorized { .. }) => {}
        other => panic!("expected an unauthorized error, got {other:?}"),
    }

    let with_config = |json: String| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), json).unwrap();
        let c = RegistryClient::new(RegistryOptions {
            docker_config_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap();
        (dir, c)
    };
    // Wrong password: refused, and the password is not in the error.
    let (_d, c) = with_config(format!(r#"{{"auths":{{"{}":{{"username":"alice","password":"nope"}}}}}}"#, reg.addr));
    let err = c.resolve(&r, &platform("linux/amd64")).await.unwrap_err();
    assert!(matches!(err, RegistryError::FetchManifest { .. }), "{err:?}");
    assert!(!format!("{err:?} {err}").contains("nope"));

    // Right credentials (base64 `auth` entry, as `docker login` writes).
    let b64 =
        String::from_utf8(util::run(std::process::Command::new("sh").arg("-c").arg("printf %s alice:s3cret | base64")))
            .unwrap();
    let (_d, c) = with_config(format!(r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#, reg.addr, b64.trim()));
    let img = c.resolve(&r, &platform("linux/amd64")).await.unwrap();
    assert_eq!(img.manifest_digest, {
        let out = util::run(
            std::process::Command::new("skopeo")
                .args(["inspect", "--tls-verify=false", "--creds", "alice:s3cret", "--format", "{{.Digest}}"])
                .arg(format!("docker://{}", reg.reference("private/bb:latest"))),
        );
        String::from_utf8(out).unwrap().trim().to_string()
    });
    // Pull a layer and push the image elsewhere with the same credentials.
    let dir = tempfile::tempdir().unwrap();
    let l = &img.layers[0];
    let path = dir.path().join("layer");
    let mut f = tokio::fs::File::create(&path).await.unwrap();
    c.fetch_blob(&r, &l.digest, l.size, &mut f).await.unwrap();
    let dst = image(&reg, "private/copy:1");
    let digest = c
        .push_image(
            &dst,
            &img.manifest,
            &img.manifest_media_type,
            (&img.config, &img.config_digest),
            &[(l.digest.clone(), l.size, path)],
        )
        .await
        .unwrap();
    assert_eq!(digest, img.manifest_digest);
    assert_eq!(reg.inspect_config("private/copy:1")["architecture"], "amd64");
}

#[test]
fn selects_platform_entries() {
    let index: Index = serde_json::from_str(
        r#"{"manifests":[
            {"digest":"sha256:a","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v6"}},
            {"digest":"sha256:b","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v7"}},
            {"digest":"sha256:c","size":1,"platform":{"os":"linux","architecture":"aarch64"}},
            {"digest":"sha256:d","size":1,"platform":{"os":"windows","architecture":"amd64"}},
            {"digest":"sha256:e","size":1,"platform":{"os":"linux","architecture":"amd64"}},
            {"digest":"sha256:f","size":1,"platform":{"os":"unknown","architecture":"unknown"}},
            {"digest":"sha256:g","size":1}
        ]}"#,
    )
    .unwrap();
    let pick = |p: &str| select_platform(&index.manifests, &platform(p)).map(|e| e.digest.as_str());
    assert_eq!(pick("linux/amd64"), Some("sha256:e"));
    assert_eq!(pick("linux/arm64"), Some("sha256:c"));
    assert_eq!(pick("linux/arm64/v8"), Some("sha256:c"));
    assert_eq!(pick("linux/arm/v7"), Some("sha256:b"));
    assert_eq!(pick("linux/arm/v6"), Some("sha256:a"));
    // containerd: a bare `arm` is `arm/v7`.
    assert_eq!(pick("linux/arm"), Some("sha256:b"));
    assert_eq!(pick("windows/amd64"), Some("sha256:d"));
    assert_eq!(pick("linux/arm/v5"), None);
    assert_eq!(pick("linux/riscv64"), None);
}

fn index_of(platforms: &[&str]) -> Index {
    let manifests: Vec<serde_json::Value> = platforms
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let parts: Vec<&str> = p.split('/').collect();
            let mut platform = serde_json::json!({"os": parts[0], "architecture": parts[1]});
            if let Some(v) = parts.get(2) {
                platform["variant"] = serde_json::json!(v);
            }
            serde_json::json!({"digest": format!("sha256:{i}"), "size": 1, "platform": platform})
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "manifests": manifests })).unwrap()
}

/// containerd's `platforms.Only`: the requested platform first, then the
/// variants it can run, in that order of preference (not index order).
#[test]
fn platform_variants_fall_back_as_containerd_orders_them() {
    let pick = |offered: &[&str], want: &str| {
        let index = index_of(offered);
        select_platform(&index.manifests, &platform(want)).map(|e| {
            let p = e.platform.as_ref().unwrap();
            match &p.variant {
                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                None => format!("{}/{}", p.os, p.architecture),
            }
        })
    };
    let some = |s: &str| Some(s.to_string());
    // arm64 is arm64/v8, whichever way either side spells it.
    assert_eq!(pick(&["linux/arm64/v8"], "linux/arm64"), some("linux/arm64/v8"));
    assert_eq!(pick(&["linux/arm64"], "linux/arm64/v8"), some("linux/arm64"));
    // arm/v7 takes v6, then v5; the highest offered wins, wherever listed.
    assert_eq!(pick(&["linux/arm/v5", "linux/arm/v6"], "linux/arm/v7"), some("linux/arm/v6"));
    assert_eq!(pick(&["linux/arm/v5"], "linux/arm/v7"), some("linux/arm/v5"));
    assert_eq!(pick(&["linux/arm/v6", "linux/arm/v7"], "linux/arm/v7"), some("linux/arm/v7"));
    // ... but never upwards: a v6 CPU cannot run v7 code.
    assert_eq!(pick(&["linux/arm/v7"], "linux/arm/v6"), None);
    assert_eq!(pick(&["linux/arm/v7", "linux/arm/v6"], "linux/arm/v5"), None);
    // An arm64 CPU runs 32-bit arm, preferring its own architecture.
    assert_eq!(pick(&["linux/arm/v7", "linux/arm64"], "linux/arm64"), some("linux/arm64"));
    assert_eq!(pick(&["linux/arm/v6", "linux/arm/v7"], "linux/arm64"), some("linux/arm/v7"));
    // amd64 micro-architecture levels fall back down to plain amd64.
    assert_eq!(pick(&["linux/amd64", "linux/amd64/v2"], "linux/amd64/v3"), some("linux/amd64/v2"));
    assert_eq!(pick(&["linux/amd64"], "linux/amd64/v3"), some("linux/amd64"));
    assert_eq!(pick(&["linux/amd64/v3"], "linux/amd64"), None);
    // containerd: an amd64 CPU runs 386 images, as the last resort.
    assert_eq!(pick(&["linux/386"], "linux/amd64"), some("linux/386"));
    assert_eq!(pick(&["linux/386", "linux/amd64"], "linux/amd64/v2"), some("linux/amd64"));
    // arm64/v9.x falls back through v9.(x-1).. then v8.(x+5)..
    assert_eq!(pick(&["linux/arm64/v8.4", "linux/arm64/v8.6"], "linux/arm64/v9"), some("linux/arm64/v8.4"));
    assert_eq!(pick(&["linux/arm64", "linux/arm/v7"], "linux/arm64/v9"), some("linux/arm64"));
    // No cross-architecture or cross-OS matches otherwise.
    assert_eq!(pick(&["linux/amd64"], "linux/386"), None);
    assert_eq!(pick(&["linux/arm64"], "linux/arm/v7"), None);
    assert_eq!(pick(&["windows/arm64"], "linux/arm64"), None);
    assert_eq!(pick(&["linux/amd64", "linux/arm64"], "linux/s390x"), None);
}

#[test]
fn classifies_retryable_errors() {
    let status = |code: u16, retry_after| SessionError::Status {
        method: reqwest::Method::GET,
        url: String::new(),
        status: reqwest::StatusCode::from_u16(code).unwrap(),
        body: String::new(),
        retry_after,
    };
    assert!(status(429, None).is_retryable());
    assert!(status(500, None).is_retryable());
    assert!(status(503, None).is_retryable());
    assert!(!status(501, None).is_retryable());
    assert!(!status(404, None).is_retryable());
    assert!(!status(401, None).is_retryable());
    assert_eq!(status(429, Some(Duration::from_secs(2))).retry_after(), Some(Duration::from_secs(2)));
    assert!((Duration::from_millis(200)..=Duration::from_millis(300)).contains(&session::backoff(1)));
    assert!((Duration::from_millis(1600)..=Duration::from_millis(2400)).contains(&session::backoff(4)));
}

/// Pulls share the push path's retry policy: a 429 or 503 with
/// `Retry-After` is waited out (not the 0.2 s backoff), and a connection
/// dropped before any answer is retried, for manifests and blobs alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_honour_retry_after_and_retry_drops() {
    use util::faultproxy::{Fault, FaultProxy, Rule};
    let reg = TestRegistry::start();
    reg.push_busybox("bb:latest");
    let c = client();
    let limited = |method, path, fault| Rule { method, path_contains: path, every: 1, limit: 1, fault };
    let proxy = FaultProxy::start(
        &reg.addr,
        vec![
            limited(Some("GET"), "/manifests/", Fault::Status { code: 429, retry_after: Some(2) }),
            limited(Some("GET"), "/blobs/", Fault::Status { code: 503, retry_after: Some(1) }),
            limited(Some("HEAD"), "/blobs/", Fault::Drop),
        ],
    );
    let r = ImageRef::parse(&format!("{}/bb:latest", proxy.addr)).unwrap();
    let started = std::time::Instant::now();
    let img = c.resolve(&r, &platform("linux/amd64")).await.unwrap();
    // 2 s for the manifest's 429, 1 s for the config blob's 503.
    assert!(started.elapsed() >= Duration::from_secs(3), "Retry-After not honoured: {:?}", started.elapsed());
    let l = &img.layers[0];
    assert!(c.blob_exists(&r, &l.digest).await.unwrap(), "a dropped HEAD was not retried");
    let mut sink = Vec::new();
    c.fetch_blob(&r, &l.digest, l.size, &mut sink).await.unwrap();
    assert_eq!(format!("sha256:{}", hex::encode(sha2::Sha256::digest(&sink))), l.digest);
    assert_eq!(proxy.faults(), 3, "{:?}", proxy.log());

    // A registry that never stops answering 429: the budget runs out with
    // an error saying so, after MAX_ATTEMPTS requests.
    let proxy = FaultProxy::start(
        &reg.addr,
        vec![Rule::always(Some("GET"), "/manifests/", Fault::Status { code: 429, retry_after: None })],
    );
    let r = ImageRef::parse(&format!("{}/bb:latest", proxy.addr)).unwrap();
    let err = c.resolve(&r, &platform("linux/amd64")).await.unwrap_err();
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert!(chain.contains("gave up after 5 attempts") && chain.contains("429"), "{chain}");
    assert_eq!(proxy.faults(), MAX_ATTEMPTS as usize);
}

#[test]
fn plain_http_only_for_loopback_and_listed_hosts() {
    let c = RegistryClient::new(RegistryOptions {
        insecure_registries: vec!["reg.lan:5000".into(), "plain.lan".into()],
        ..Default::default()
    })
    .unwrap();
    for plain in
        ["localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "reg.lan:5000", "plain.lan:443"]
    {
        assert!(c.is_plain_http(plain), "{plain}");
    }
    // An output's `registry.insecure=true` adds its registries.
    let out = c.with_insecure(&["10.0.0.1:5000".to_string()]);
    assert!(out.is_plain_http("10.0.0.1:5000") && out.is_plain_http("reg.lan:5000"));
    assert!(!c.is_plain_http("10.0.0.1:5000"));
    for tls in ["docker.io", "reg.lan:5001", "ghcr.io", "10.0.0.1:5000", "localhost.example.com"] {
        assert!(!c.is_plain_http(tls), "{tls}");
    }
}

/// What the faulty proxy does to a matching request.
#[derive(Clone, Copy)]
enum Fault {
    /// Answer with this status and no body.
    Status(u16),
    /// Forward, but cut the response off after this many bytes.
    Cut(usize),
}

/// A loopback HTTP proxy in front of a real registry that applies `fault`
/// to the first `count` requests whose request line contains `needle` and
/// forwards everything else. One request per connection (it forces
/// `Connection: close`), so every request is seen. Returns its address and
/// how many faults it injected.
async fn faulty_proxy(
    upstream: String,
    needle: &'static str,
    fault: Fault,
    count: usize,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let injected = Arc::new(AtomicUsize::new(0));
    let counter = injected.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let upstream = upstream.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let head_end = loop {
                    let mut chunk = [0u8; 4096];
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    // The client's HTTPS-first probe: hang up.
                    if buf[0] == 0x16 {
                        return;
                    }
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let content_length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + content_length {
                    let mut chunk = [0u8; 4096];
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let first_line = head.lines().next().unwrap_or("").to_string();
                let hit = first_line.contains(needle)
                    && counter
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| (c < count).then_some(c + 1))
                        .is_ok();
                let cut = match (hit, fault) {
                    (true, Fault::Status(code)) => {
                        let _ = conn
                            .write_all(
                                format!("HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                                    .as_bytes(),
                            )
                            .await;
                        return;
                    }
                    (true, Fault::Cut(n)) => Some(n),
                    (false, _) => None,
                };
                let mut new_head: String = head
                    .trim_end_matches("\r\n")
                    .split("\r\n")
                    .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                    .map(|l| format!("{l}\r\n"))
                    .collect();
                new_head.push_str("Connection: close\r\n\r\n");
                let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = up.write_all(new_head.as_bytes()).await;
                let _ = up.write_all(&buf[head_end..]).await;
                let mut sent = 0usize;
                let mut chunk = vec![0u8; 16384];
                loop {
                    let n = up.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    let n = match cut {
                        Some(limit) => n.min(limit.saturating_sub(sent)),
                        None => n,
                    };
                    if n == 0 || conn.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                }
                let _ = conn.shutdown().await;
            });
        }
    });
    (addr, injected)
}

#[tokio::test]
async fn retries_server_errors_then_succeeds() {
    use std::sync::atomic::Ordering;
    let reg = TestRegistry::start();
    reg.push_busybox("bb:latest");
    let c = client();

    // Two 503s on manifests: absorbed by the retries.
    let (addr, injected) = faulty_proxy(reg.addr.clone(), "/manifests/", Fault::Status(503), 2).await;
    let r = ImageRef::parse(&format!("{addr}/bb:latest")).unwrap();
    let img = c.resolve(&r, &platform("linux/amd64")).await.unwrap();
    assert_eq!(injected.load(Ordering::SeqCst), 2);

    // Two 429s on blobs: absorbed too.
    let (addr, injected) = faulty_proxy(reg.addr.clone(), "/blobs/", Fault::Status(429), 2).await;
    let r = ImageRef::parse(&format!("{addr}/bb:latest")).unwrap();
    let l = &img.layers[0];
    let mut sink = Vec::new();
    c.fetch_blob(&r, &l.digest, l.size, &mut sink).await.unwrap();
    assert_eq!(injected.load(Ordering::SeqCst), 2);
    assert_eq!(format!("sha256:{}", hex::encode(sha2::Sha256::digest(&sink))), l.digest);

    // A body cut off half-way: resumed with a range request, still verified.
    let (addr, injected) = faulty_proxy(reg.addr.clone(), "/blobs/", Fault::Cut(200_000), 1).await;
    let r = ImageRef::parse(&format!("{addr}/bb:latest")).unwrap();
    let mut sink = Vec::new();
    c.fetch_blob(&r, &l.digest, l.size, &mut sink).await.unwrap();
    assert_eq!(injected.load(Ordering::SeqCst), 1);
    assert_eq!(sink.len() as u64, l.size);
    assert_eq!(format!("sha256:{}", hex::encode(sha2::Sha256::digest(&sink))), l.digest);

    // Endless 503s: give up after MAX_ATTEMPTS.
    let (addr, injected) = faulty_proxy(reg.addr.clone(), "/manifests/", Fault::Status(503), 100).await;
    let r = ImageRef::parse(&format!("{addr}/bb:latest")).unwrap();
    match c.resolve(&r, &platform("linux/amd64")).await {
        Err(RegistryError::FetchManifest { source, .. }) if matches!(&*source, SessionError::RetriesExhausted { last, .. } if matches!(**last, SessionError::Status { status, .. } if status == 503)) =>
            {}
        other => panic!("expected a 503 error, got {other:?}"),
    }
    assert_eq!(injected.load(Ordering::SeqCst), MAX_ATTEMPTS as usize);

    // 404 is final: one attempt.
    let (addr, injected) = faulty_proxy(reg.addr.clone(), "/manifests/", Fault::Status(404), 100).await;
    let r = ImageRef::parse(&format!("{addr}/bb:latest")).unwrap();
    assert!(c.resolve(&r, &platform("linux/amd64")).await.is_err());
    assert_eq!(injected.load(Ordering::SeqCst), 1);
}

/// A minimal registry upload endpoint that, unlike distribution, tracks an
/// upload's offset on the server (as zot and others do), so an upload whose
/// PATCH answer was lost can be resumed. The first PATCH is applied but its
/// answer is never sent. Returns its address and the request log.
fn resumable_upload_server() -> (String, Arc<Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut data: Vec<u8> = Vec::new();
        let mut patches = 0;
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            // The client's HTTPS-first probe: hang up, as an HTTP server would.
            if reader.fill_buf().map(|b| b.first() == Some(&0x16)).unwrap_or(true) {
                continue;
            }
            let mut lines = Vec::new();
            loop {
                let mut l = String::new();
                if reader.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                    break;
                }
                lines.push(l.trim_end().to_string());
            }
            let Some(first) = lines.first().cloned() else { continue };
            let header = |name: &str| {
                lines.iter().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
            };
            let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let (method, target) = first.split_once(' ').map(|(m, r)| (m, r.split(' ').next().unwrap())).unwrap();
            log2.lock().unwrap().push(format!("{method} {}", header("content-range").unwrap_or_default()));
            let range = |n: usize| format!("Range: 0-{}\r\n", n.saturating_sub(1));
            let loc = "Location: /v2/r/blobs/uploads/u1\r\n";
            let reply = match method {
                "HEAD" => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
                "POST" => format!("HTTP/1.1 202 Accepted\r\n{loc}{}Content-Length: 0\r\n\r\n", range(0)),
                "GET" => format!("HTTP/1.1 204 No Content\r\n{loc}{}\r\n", range(data.len())),
                "PATCH" => {
                    let start: usize = header("content-range")
                        .and_then(|r| r.split('-').next().and_then(|s| s.parse().ok()))
                        .unwrap_or(usize::MAX);
                    if start != data.len() {
                        "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\n\r\n".to_string()
                    } else {
                        data.extend_from_slice(&body);
                        patches += 1;
                        if patches == 1 {
                            // Applied, but the answer is lost.
                            let _ = conn.shutdown(std::net::Shutdown::Both);
                            continue;
                        }
                        format!("HTTP/1.1 202 Accepted\r\n{loc}{}Content-Length: 0\r\n\r\n", range(data.len()))
                    }
                }
                "PUT" => {
                    let want = target.split("digest=").nth(1).unwrap_or_default().replace("%3A", ":");
                    let got = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&data)));
                    if want == got {
                        "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n".to_string()
                    } else {
                        "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_string()
                    }
                }
                _ => "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n".to_string(),
            };
            // One request per connection, so a client never reuses a socket
            // this loop has already dropped.
            let reply = reply.replacen("\r\n", "\r\nConnection: close\r\n", 1);
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    (addr, log)
}

#[tokio::test]
async fn resumes_a_chunked_upload_from_the_registry_range() {
    let (addr, log) = resumable_upload_server();
    let dir = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(RegistryOptions {
        docker_config_dir: Some(dir.path().to_path_buf()),
        podman_auth_file: Some(dir.path().join("none.json")),
        upload_chunk_size: Some(1 << 20),
        ..Default::default()
    })
    .unwrap();
    // 3.5 chunks of data that cannot be mistaken for one another.
    let data: Vec<u8> = (0..(7u32 << 19)).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let path = dir.path().join("blob");
    std::fs::write(&path, &data).unwrap();
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&data)));
    let r = ImageRef::parse(&format!("{addr}/r:1")).unwrap();
    let outcome = c.push_blob_data(&r, &digest, data.len() as u64, BlobData::File(&path)).await.unwrap();
    assert_eq!(outcome, BlobOutcome::Uploaded);
    let log = log.lock().unwrap().clone();
    // The lost first answer was followed by a status query, and the upload
    // went on from the registry's offset: each chunk sent exactly once.
    assert_eq!(
        log.iter().filter(|l| !l.starts_with("HEAD")).cloned().collect::<Vec<_>>(),
        vec![
            "POST ".to_string(),
            "PATCH 0-1048575".into(),
            "GET ".into(),
            "PATCH 1048576-2097151".into(),
            "PATCH 2097152-3145727".into(),
            "PATCH 3145728-3670015".into(),
            "PUT ".into(),
        ],
        "{log:#?}"
    );
}

/// A one-shot HTTP server: answers every request with `reply` and records
/// each request head.
fn recording_server(reply: impl Fn(&str) -> String + Send + 'static) -> (String, Arc<Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let heads2 = heads.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            // The client's HTTPS-first probe: hang up, as an HTTP server would.
            if reader.fill_buf().map(|b| b.first() == Some(&0x16)).unwrap_or(true) {
                continue;
            }
            let mut head = String::new();
            loop {
                let mut l = String::new();
                if reader.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                    break;
                }
                head.push_str(&l);
            }
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            let _ = std::io::copy(&mut (&mut reader).take(len as u64), &mut std::io::sink());
            let answer = reply(&head);
            heads2.lock().unwrap().push(head);
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    (addr, heads)
}

#[tokio::test]
async fn credentials_never_follow_an_upload_location_to_another_host() {
    // A hostile registry that demands basic auth, then sends the upload to
    // a host it controls, hoping the password comes along.
    let (collector, collected) = recording_server(|_| "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n".into());
    let (registry, seen) = recording_server(move |head| {
        if !head.to_ascii_lowercase().contains("authorization: basic") {
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\nContent-Length: 0\r\n\r\n".into()
        } else if head.starts_with("HEAD") {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into()
        } else {
            format!("HTTP/1.1 202 Accepted\r\nLocation: http://{collector}/upload/1\r\nContent-Length: 0\r\n\r\n")
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let b64 = session::base64_encode(b"alice:hunter2");
    std::fs::write(dir.path().join("config.json"), format!(r#"{{"auths":{{"{registry}":{{"auth":"{b64}"}}}}}}"#))
        .unwrap();
    let c = RegistryClient::new(RegistryOptions {
        docker_config_dir: Some(dir.path().to_path_buf()),
        podman_auth_file: Some(dir.path().join("none.json")),
        ..Default::default()
    })
    .unwrap();
    let r = ImageRef::parse(&format!("{registry}/app:1")).unwrap();
    let data = Bytes::from_static(b"{}");
    let digest = sha256_digest(&data);
    // The collector "accepts" the blob; what matters is what it was sent.
    c.push_blob_data(&r, &digest, 2, BlobData::Bytes(data)).await.unwrap();
    assert!(seen.lock().unwrap().iter().any(|h| h.contains(&b64)), "the registry itself got the credentials");
    let collected = collected.lock().unwrap();
    assert_eq!(collected.len(), 1, "{collected:?}");
    assert!(!collected[0].to_ascii_lowercase().contains("authorization"), "credentials leaked: {collected:?}");
}

/// containerd/platforms `compare_test.go` `TestOnly`, row by row: for each
/// requested platform, the platforms `platforms.Only` must and must not
/// match. (Its `windows(10.0.17763)/amd64` entries are left out: rbuild's
/// platforms carry no OS version.)
#[test]
fn matches_containerd_only_table() {
    let parse = |s: &str| {
        let parts: Vec<&str> = s.split('/').collect();
        Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        }
    };
    let table: &[(&str, &[&str], &[&str])] = &[
        (
            "linux/amd64",
            &["linux/amd64", "linux/386"],
            &["linux/amd64/v2", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"],
        ),
        (
            "linux/amd64/v2",
            &["linux/amd64", "linux/amd64/v1", "linux/amd64/v2", "linux/386"],
            &["linux/amd64/v3", "linux/amd64/v4", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"],
        ),
        ("linux/386", &["linux/386"], &["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"]),
        ("windows/amd64", &["windows/amd64"], &["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/arm"]),
        (
            "linux/arm/v8",
            &["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8"],
            &["linux/amd64", "linux/arm/v4", "linux/arm64", "windows/amd64", "windows/arm"],
        ),
        (
            "linux/arm/v7",
            &["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7"],
            &["linux/amd64", "linux/arm/v4", "linux/arm/v8", "linux/arm64", "windows/amd64", "windows/arm"],
        ),
        (
            "linux/arm/v6",
            &["linux/arm/v5", "linux/arm/v6"],
            &[
                "linux/amd64",
                "linux/arm",
                "linux/arm/v4",
                "linux/arm/v7",
                "linux/arm/v8",
                "linux/arm64",
                "windows/amd64",
                "windows/arm",
            ],
        ),
        (
            "linux/arm/v5",
            &["linux/arm/v5"],
            &[
                "linux/amd64",
                "linux/arm",
                "linux/arm/v4",
                "linux/arm/v6",
                "linux/arm/v7",
                "linux/arm/v8",
                "linux/arm64",
                "windows/amd64",
                "windows/arm",
            ],
        ),
        (
            "linux/arm/v4",
            &["linux/arm/v4"],
            &[
                "linux/amd64",
                "linux/arm",
                "linux/arm/v5",
                "linux/arm/v6",
                "linux/arm/v7",
                "linux/arm/v8",
                "linux/arm64",
                "windows/amd64",
                "windows/arm",
            ],
        ),
        (
            "linux/arm64",
            &[
                "linux/arm",
                "linux/arm/v5",
                "linux/arm/v6",
                "linux/arm/v7",
                "linux/arm/v8",
                "linux/arm64",
                "linux/arm64/v8",
            ],
            &[
                "linux/amd64",
                "linux/arm/v4",
                "linux/arm/v9",
                "linux/arm64/v7",
                "linux/arm64/v9",
                "windows/amd64",
                "windows/arm",
            ],
        ),
        (
            "linux/arm64/v9",
            &[
                "linux/arm",
                "linux/arm/v5",
                "linux/arm/v6",
                "linux/arm/v7",
                "linux/arm/v8",
                "linux/arm64",
                "linux/arm64/v8",
                "linux/arm64/v9",
            ],
            &["linux/amd64", "linux/arm/v4", "linux/arm64/v7", "linux/arm64/v10", "windows/arm64", "windows/arm"],
        ),
    ];
    for (want, yes, no) in table {
        let vector = platform_vector(&parse(want));
        for m in *yes {
            assert!(vector.contains(&comparable(&parse(m))), "Only({want}) must match {m}: {vector:?}");
        }
        for m in *no {
            assert!(!vector.contains(&comparable(&parse(m))), "Only({want}) must not match {m}: {vector:?}");
        }
    }
}
