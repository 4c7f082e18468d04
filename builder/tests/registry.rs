//! End-to-end checks of the shared harness itself: the loopback registry,
//! the busybox base image the set-up script builds, the two-platform index,
//! and the `rbuild` command builder. (The registry client's own tests live
//! in `src/registry/tests.rs`: a binary crate's modules cannot be imported
//! from here.)

mod util;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use util::TestRegistry;

#[test]
fn busybox_image_has_expected_config() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let config = reg.inspect_config("busybox:latest");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    );
    // Also reachable through the free-function helper.
    assert_eq!(util::skopeo_inspect_config(&reg.reference("busybox:latest")), config);
}

#[test]
fn busybox_rootfs_has_users_and_applets() {
    let layout = util::busybox_layout("amd64");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    util::run(
        Command::new("umoci").arg("unpack").arg("--image").arg(format!("{}:latest", layout.display())).arg(&bundle),
    );
    let root = bundle.join("rootfs");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("root:x:0:0:")));
    assert!(passwd.lines().any(|l| l.starts_with("nobody:x:65534:65534:")));
    assert!(passwd.lines().any(|l| l == "user:x:1000:1000::/home/user:/bin/sh"));
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l.starts_with("user:x:1000:")));
    assert_eq!(std::fs::metadata(root.join("tmp")).unwrap().permissions().mode() & 0o7777, 0o1777);
    assert!(root.join("root").is_dir());
    assert_eq!(std::fs::metadata(root.join("home/user")).unwrap().uid(), 1000);
    assert_eq!(std::fs::read_link(root.join("bin/sh")).unwrap(), std::path::Path::new("busybox"));
    // The busybox in the image is the busybox-static binary and runs.
    let out = util::run(Command::new(root.join("bin/busybox")).arg("echo").arg("hi"));
    assert_eq!(out, b"hi\n");
}

#[test]
fn busybox_image_is_reproducible() {
    // The cached layout and a fresh build agree byte for byte.
    let cached = util::busybox_layout("amd64");
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh");
    util::run(
        Command::new("bash").arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/make-busybox-image.sh")).arg(&fresh),
    );
    assert_eq!(std::fs::read(cached.join("index.json")).unwrap(), std::fs::read(fresh.join("index.json")).unwrap());
}

#[test]
fn multiarch_index_lists_two_platforms() {
    let reg = TestRegistry::start();
    reg.push_busybox_multiarch("multi:latest");
    let raw = reg.inspect_raw("multi:latest");
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let archs: Vec<&str> =
        raw["manifests"].as_array().unwrap().iter().map(|m| m["platform"]["architecture"].as_str().unwrap()).collect();
    assert_eq!(archs, ["amd64", "arm64"]);
}

#[test]
fn auth_registry_refuses_anonymous_access() {
    let reg = TestRegistry::start_with_auth("u", "p");
    reg.push_busybox("x:1");
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--no-creds"])
        .arg(format!("docker://{}", reg.reference("x:1")))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(reg.inspect_config("x:1")["architecture"], "amd64");
}

#[test]
fn concurrent_layout_requests_share_one_build() {
    let paths: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| util::busybox_layout("amd64")))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert!(paths.windows(2).all(|w| w[0] == w[1]));
    assert!(paths[0].join("index.json").is_file());
}

#[test]
fn rbuild_binary_runs() {
    let out = util::rbuild().arg("--help").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
