//! Interop tests: what we export must be read by independent tools
//! (`umoci`, `skopeo`), which are installed on the build machines.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use rbuild_cache::layer::{Compression, LayerOptions, write_layer};
use rbuild_cache::oci::{ImageConfig, LayerDescriptor};
use rbuild_solver::graph::Platform;

use super::local::{export_local, export_tar};
use super::oci::{export_docker, export_oci};
use super::*;

/// A snapshot dir with every kind of entry (the layer writer's own test
/// fixture in `rbuild_cache::layer`, repeated: test code is not exported).
fn make_snapshot(root: &Path) {
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/hello.txt"), b"hello world\n").unwrap();
    fs::hard_link(root.join("etc/hello.txt"), root.join("etc/hello-link")).unwrap();
    symlink("hello.txt", root.join("etc/sym")).unwrap();
    fs::create_dir(root.join("bin")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    fs::write(root.join("bin/big"), &big).unwrap();
    fs::set_permissions(root.join("bin/big"), fs::Permissions::from_mode(0o4755)).unwrap();
    rustix::fs::mknodat(rustix::fs::CWD, root.join("fifo"), rustix::fs::FileType::Fifo, 0o644.into(), 0).unwrap();
    // Overlay whiteout: char device 0:0.
    rustix::fs::mknodat(rustix::fs::CWD, root.join("deleted"), rustix::fs::FileType::CharacterDevice, 0.into(), 0)
        .unwrap();
    fs::create_dir(root.join("opaque")).unwrap();
    fs::write(root.join("opaque/new"), b"n").unwrap();
    rustix::fs::setxattr(root.join("opaque"), "user.overlay.opaque", b"y", rustix::fs::XattrFlags::empty()).unwrap();
    rustix::fs::setxattr(root.join("etc/hello.txt"), "user.note", b"v1", rustix::fs::XattrFlags::empty()).unwrap();
    let long = root.join(format!("{}/{}", "d".repeat(120), "f".repeat(110)));
    fs::create_dir_all(long.parent().unwrap()).unwrap();
    fs::write(&long, b"long").unwrap();
    std::os::unix::fs::lchown(root.join("etc/hello.txt"), Some(1000), Some(3_000_000)).unwrap();
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn write_blob(dir: &Path, snapshot: &Path, compression: Compression) -> (LayerDescriptor, PathBuf) {
    let tmp = dir.join("layer.tmp");
    let mut f = fs::File::create(&tmp).unwrap();
    let info = write_layer(
        snapshot,
        &LayerOptions { compression, source_date_epoch: Some(1_700_000_000), threads: 2 },
        &mut f,
    )
    .unwrap();
    let path = dir.join(info.digest.replace(':', "-"));
    fs::rename(&tmp, &path).unwrap();
    (info, path)
}

/// Two layers: the full test snapshot (gzip), then a second one (given
/// compression) that deletes `etc/sym` and adds `etc/new`.
fn bundle(tmp: &Path, second: Compression) -> ImageBundle {
    let blobs = tmp.join("blobs");
    fs::create_dir_all(&blobs).unwrap();
    let l1 = tmp.join("l1");
    make_snapshot(&l1);
    let l2 = tmp.join("l2");
    fs::create_dir_all(l2.join("etc")).unwrap();
    fs::write(l2.join("etc/new"), b"second layer\n").unwrap();
    rustix::fs::mknodat(rustix::fs::CWD, l2.join("etc/sym"), rustix::fs::FileType::CharacterDevice, 0.into(), 0)
        .unwrap();
    let layers = vec![write_blob(&blobs, &l1, Compression::Gzip { level: 6 }), write_blob(&blobs, &l2, second)];
    let mut config = ImageConfig { architecture: "amd64".into(), os: "linux".into(), ..Default::default() };
    config.config.cmd = Some(vec!["/bin/sh".into()]);
    config.config.env = vec!["PATH=/usr/bin:/bin".into()];
    config.config.labels.insert("org.example".into(), "yes".into());
    config.rootfs.diff_ids = layers.iter().map(|(l, _)| l.diff_id.clone()).collect();
    let config = config.to_canonical_json();
    let infos: Vec<LayerDescriptor> = layers.iter().map(|(l, _)| l.clone()).collect();
    let (manifest, _, _) = build_manifest(&config, &infos, BTreeMap::new());
    ImageBundle::single(manifest, config, layers, vec!["app:1.0".into(), "localhost:5000/ns/app:v2".into()])
}

fn check_rootfs(rootfs: &Path) {
    assert_eq!(fs::read(rootfs.join("etc/hello.txt")).unwrap(), b"hello world\n");
    assert_eq!(fs::read(rootfs.join("etc/new")).unwrap(), b"second layer\n");
    assert!(fs::symlink_metadata(rootfs.join("etc/sym")).is_err(), "whiteout not applied");
    assert_eq!(fs::metadata(rootfs.join("bin/big")).unwrap().len(), 3_000_000);
    assert!(rootfs.join("opaque/new").exists());
    assert!(!rootfs.join("deleted").exists() && !rootfs.join(".wh.deleted").exists());
    assert!(!rootfs.join("opaque/.wh..wh..opq").exists());
}

#[test]
fn oci_layout_dir_reads_with_umoci_and_skopeo() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bundle(tmp.path(), Compression::Gzip { level: 6 });
    let layout = tmp.path().join("layout");
    export_oci(&b, &layout, false).unwrap();
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "1.0");
    assert_eq!(index["manifests"][0]["annotations"]["io.containerd.image.name"], "docker.io/library/app:1.0");
    assert_eq!(index["manifests"][1]["annotations"]["org.opencontainers.image.ref.name"], "v2");

    let bundle_dir = tmp.path().join("bundle");
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--rootless")
        .arg("--image")
        .arg(format!("{}:1.0", layout.display()))
        .arg(&bundle_dir));
    check_rootfs(&bundle_dir.join("rootfs"));

    let inspect =
        run(Command::new("skopeo").args(["inspect", "--config"]).arg(format!("oci:{}:1.0", layout.display())));
    let cfg: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(cfg["config"]["Labels"]["org.example"], "yes");
    let inspect = run(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:v2", layout.display())));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Layers"][0], b.images[0].layers[0].0.digest.as_str());

    // Exporting again into the same dir is fine and changes nothing.
    let before = fs::read(layout.join("index.json")).unwrap();
    export_oci(&b, &layout, false).unwrap();
    assert_eq!(fs::read(layout.join("index.json")).unwrap(), before);
}

#[test]
fn oci_archive_and_zstd_layers_read_with_skopeo() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bundle(tmp.path(), Compression::Zstd { level: 3 });
    let archive = tmp.path().join("image.tar");
    export_oci(&b, &archive, true).unwrap();
    // Deterministic archive bytes.
    let again = tmp.path().join("again.tar");
    export_oci(&b, &again, true).unwrap();
    assert!(fs::read(&archive).unwrap() == fs::read(&again).unwrap());

    let inspect = run(Command::new("skopeo").arg("inspect").arg(format!("oci-archive:{}:1.0", archive.display())));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
    // Copy (decompressing zstd, verifying digests) to a gzip-only layout and unpack it.
    let layout = tmp.path().join("copy");
    run(Command::new("skopeo")
        .args(["copy", "--dest-compress-format", "gzip"])
        .arg(format!("oci-archive:{}:1.0", archive.display()))
        .arg(format!("oci:{}:x", layout.display())));
    let bundle_dir = tmp.path().join("bundle");
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--rootless")
        .arg("--image")
        .arg(format!("{}:x", layout.display()))
        .arg(&bundle_dir));
    check_rootfs(&bundle_dir.join("rootfs"));
}

#[test]
fn docker_archive_reads_with_skopeo() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bundle(tmp.path(), Compression::Gzip { level: 6 });
    let archive = tmp.path().join("docker.tar");
    export_docker(&b, &archive).unwrap();
    let inspect = run(Command::new("skopeo").arg("inspect").arg(format!("docker-archive:{}", archive.display())));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Labels"]["org.example"], "yes");
    let listed = run(Command::new("tar").arg("-tf").arg(&archive));
    assert!(listed.lines().any(|l| l == "manifest.json") && listed.lines().any(|l| l == "repositories"), "{listed}");
    let manifest_json = run(Command::new("tar").arg("-xOf").arg(&archive).arg("manifest.json"));
    let m: serde_json::Value = serde_json::from_str(&manifest_json).unwrap();
    assert_eq!(m[0]["RepoTags"], serde_json::json!(["app:1.0", "localhost:5000/ns/app:v2"]));

    let layout = tmp.path().join("copy");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("docker-archive:{}:app:1.0", archive.display()))
        .arg(format!("oci:{}:x", layout.display())));
    let bundle_dir = tmp.path().join("bundle");
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--rootless")
        .arg("--image")
        .arg(format!("{}:x", layout.display()))
        .arg(&bundle_dir));
    check_rootfs(&bundle_dir.join("rootfs"));

    // Several platforms cannot go into one docker-archive.
    let mut multi = b.clone();
    multi.images.push(multi.images[0].clone());
    multi.index = Some(build_index(&[
        (multi.images[0].manifest.clone(), Platform::host()),
        (multi.images[1].manifest.clone(), Platform::host()),
    ]));
    assert!(matches!(export_docker(&multi, &tmp.path().join("m.tar")), Err(ExportError::BadBundle(_))));
    // ... but into an OCI layout they can.
    export_oci(&multi, &tmp.path().join("multi"), false).unwrap();
    run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:1.0", tmp.path().join("multi").display())));
}

#[test]
fn corrupt_blob_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bundle(tmp.path(), Compression::Gzip { level: 1 });
    let path = &b.images[0].layers[1].1;
    let mut bytes = fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(path, bytes).unwrap();
    let dest = tmp.path().join("out.tar");
    assert!(matches!(export_oci(&b, &dest, true), Err(ExportError::ReadBlob { .. })));
    assert!(!dest.exists(), "no half-written archive is left");
}

#[test]
fn local_and_tar_exporters_copy_the_rootfs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::write(root.join("a/b/file"), b"data").unwrap();
    fs::hard_link(root.join("a/b/file"), root.join("a/link")).unwrap();
    std::os::unix::fs::symlink("b/file", root.join("a/sym")).unwrap();
    rustix::fs::mknodat(rustix::fs::CWD, root.join("fifo"), rustix::fs::FileType::Fifo, 0o640.into(), 0).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // chown clears setuid, so chown first.
    std::os::unix::fs::lchown(root.join("a/b/file"), Some(123), Some(456)).unwrap();
    fs::set_permissions(root.join("a/b/file"), fs::Permissions::from_mode(0o4711)).unwrap();
    fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o1755)).unwrap();
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec { tv_sec: 1_000_000, tv_nsec: 0 },
        last_modification: rustix::fs::Timespec { tv_sec: 1_234_567, tv_nsec: 0 },
    };
    for p in ["a/b/file", "a/b", "a"] {
        rustix::fs::utimensat(rustix::fs::CWD, root.join(p), &t, rustix::fs::AtFlags::empty()).unwrap();
    }

    let dest = tmp.path().join("out");
    let summary = export_local(&root, &dest).unwrap();
    assert_eq!(summary.entries, 6);
    let f = fs::metadata(dest.join("a/b/file")).unwrap();
    assert_eq!(f.mode() & 0o7777, 0o4711);
    assert_eq!((f.uid(), f.gid()), (123, 456), "we are root in tests: ownership is kept");
    assert_eq!(f.mtime(), 1_234_567);
    assert_eq!(fs::metadata(dest.join("a/b")).unwrap().mtime(), 1_234_567, "dir mtime set after its children");
    assert_eq!(fs::metadata(dest.join("a")).unwrap().mode() & 0o7777, 0o1755);
    assert_eq!(fs::metadata(dest.join("a/link")).unwrap().ino(), f.ino());
    assert_eq!(fs::read_link(dest.join("a/sym")).unwrap(), Path::new("b/file"));
    assert!(fs::symlink_metadata(dest.join("fifo")).unwrap().file_type().is_fifo());
    use std::os::unix::fs::FileTypeExt;
    // Export again over the existing tree.
    export_local(&root, &dest).unwrap();
    assert_eq!(fs::read(dest.join("a/link")).unwrap(), b"data");

    let tarfile = tmp.path().join("rootfs.tar");
    export_tar(&root, &tarfile).unwrap();
    let listed = run(Command::new("tar").arg("-tvf").arg(&tarfile));
    let names: Vec<&str> = listed.lines().map(|l| l.split_whitespace().nth(5).unwrap()).collect();
    assert_eq!(names, ["a/", "a/b/", "a/b/file", "a/link", "a/sym", "fifo"], "{listed}");
    assert!(listed.contains("-rws--x--x 123/456"), "{listed}");
}
