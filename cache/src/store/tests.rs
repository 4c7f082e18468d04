//! Store tests. Multi-process tests re-execute this test binary with an
//! environment variable naming the role; the helper "tests" are `#[ignore]`
//! so they only run when re-executed.

use super::*;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

fn tmp_store() -> (tempfile::TempDir, Store) {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    (t, s)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn commit_snapshot(s: &Store, content: &[u8]) -> SnapshotId {
    let d = s.new_snapshot().unwrap();
    fs::write(d.diff_dir().join("f"), content).unwrap();
    d.commit().unwrap()
}

fn record_for(chain: Vec<SnapshotId>) -> CacheRecord {
    let n = chain.len();
    CacheRecord { chain, layers: vec![None; n], created: 1, extra: BTreeMap::new() }
}

/// Runs `role` in a child copy of this test binary (see the ignored
/// helpers at the bottom).
fn child(role: &str, root: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([role, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("RBUILD_STORE_TEST_ROOT", root)
        .stdout(Stdio::piped());
    c
}

#[test]
fn blobs_round_trip_and_verify() {
    let (_t, s) = tmp_store();
    let d = s.write_blob(b"hello").unwrap();
    assert_eq!(d, sha256_digest(b"hello"));
    assert!(s.has_blob(&d));
    assert_eq!(s.read_blob(&d).unwrap(), b"hello");
    assert_eq!(s.write_blob(b"hello").unwrap(), d, "rewrite is a no-op");

    let mut w = s.blob_writer().unwrap();
    for _ in 0..1000 {
        w.write_all(&[7u8; 1000]).unwrap();
    }
    assert_eq!(w.size(), 1_000_000);
    let d2 = w.finish().unwrap();
    assert_eq!(d2, sha256_digest(&vec![7u8; 1_000_000]));
    assert_eq!(fs::metadata(s.blob_path(&d2)).unwrap().len(), 1_000_000);

    let mut w = s.blob_writer().unwrap();
    w.write_all(b"tampered").unwrap();
    let err = w.finish_expecting(&sha256_digest(b"original")).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(!s.has_blob(&sha256_digest(b"tampered")));
    assert!(entries(&s.root().join("tmp")).is_empty(), "temp removed after mismatch");

    for bad in ["sha256:../../etc/passwd", "md5:abc", "sha256:ABC", ""] {
        assert!(!s.has_blob(bad));
        assert!(s.blob_path(bad).starts_with(s.root()));
        assert!(matches!(s.read_blob(bad), Err(StoreError::InvalidDigest(_))));
    }
    let missing = sha256_digest(b"missing");
    assert!(matches!(s.read_blob(&missing), Err(StoreError::BlobNotFound(_))));
}

#[test]
fn snapshots_commit_or_vanish() {
    let (_t, s) = tmp_store();
    let d = s.new_snapshot().unwrap();
    assert!(d.work_dir().is_dir());
    fs::create_dir(d.diff_dir().join("ro")).unwrap();
    fs::write(d.diff_dir().join("ro/file"), b"abc").unwrap();
    fs::set_permissions(d.diff_dir().join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    let id = d.commit().unwrap();
    assert_eq!(id.0.len(), 12);
    assert!(id.0.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(fs::read(s.snapshot_diff(&id).join("ro/file")).unwrap(), b"abc");
    assert!(s.has_snapshot(&id));
    assert_eq!(s.disk_usage().unwrap().snapshots_bytes, 3);

    let d = s.new_snapshot().unwrap();
    let draft_dir = d.path().to_path_buf();
    fs::write(d.diff_dir().join("x"), b"x").unwrap();
    drop(d);
    assert!(!draft_dir.exists());
    assert!(entries(&s.root().join("tmp")).is_empty());
    assert_eq!(entries(&s.root().join("snapshots")), vec![id.0.clone()]);
}

#[test]
fn only_diffs_that_add_nothing_are_left_out_of_views() {
    use std::os::unix::fs::symlink;
    let (_t, s) = tmp_store();
    let commit = |f: &dyn Fn(&Path)| {
        let d = s.new_snapshot().unwrap();
        f(&d.diff_dir());
        d.commit().unwrap()
    };
    let empty = commit(&|_| {});
    let file = commit(&|d| fs::write(d.join("f"), b"").unwrap());
    // A whiteout (a 0:0 character device needs privilege; a symlink stands
    // in for any entry) and an empty directory are entries.
    let entry = commit(&|d| symlink("x", d.join(".wh.gone")).unwrap());
    let dir = commit(&|d| fs::create_dir(d.join("empty-dir")).unwrap());
    let chmodded = commit(&|d| fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap());
    let xattr = commit(&|d| {
        if rustix::fs::setxattr(d, "user.overlay.opaque", b"y", rustix::fs::XattrFlags::empty()).is_err() {
            // No user xattrs on this filesystem: any other entry will do.
            fs::write(d.join("f"), b"").unwrap();
        }
    });
    assert!(s.snapshot_is_empty(&empty));
    for id in [&file, &entry, &dir, &chmodded, &xattr] {
        assert!(!s.snapshot_is_empty(id), "{id}");
    }
    let chain = [empty.clone(), file.clone(), empty.clone(), dir.clone(), empty.clone()];
    assert_eq!(s.mount_layers(&chain), [s.snapshot_diff(&file), s.snapshot_diff(&dir)]);
    assert_eq!(s.mount_layers(&[empty.clone(), empty.clone()]), [s.snapshot_diff(&empty)]);
    assert!(s.mount_layers(&[]).is_empty());
    // Memoised: the answer survives the diff (which nothing may write).
    fs::write(s.snapshot_diff(&empty).join("late"), b"").unwrap();
    assert!(s.snapshot_is_empty(&empty));
    // Another process checks for itself.
    let s2 = Store::open(s.root()).unwrap();
    assert!(!s2.snapshot_is_empty(&empty));
    assert!(!s2.snapshot_is_empty(&SnapshotId("../../etc".into())));
}

#[test]
fn a_lease_logs_each_snapshot_once() {
    let (_t, s) = tmp_store();
    let (a, b) = (commit_snapshot(&s, b"a"), commit_snapshot(&s, b"b"));
    let lease = s.lease().unwrap();
    for id in [&a, &b, &a, &b, &a] {
        lease.add_snapshot(id).unwrap();
    }
    assert_eq!(fs::read_to_string(&lease.log.path).unwrap(), format!("s {a}\ns {b}\n"));
    // A missing snapshot still fails, and is not remembered as held.
    let gone = SnapshotId("0123456789ab".into());
    assert!(matches!(lease.add_snapshot(&gone), Err(StoreError::SnapshotNotFound(_))));
    assert!(matches!(lease.add_snapshot(&gone), Err(StoreError::SnapshotNotFound(_))));
}

#[test]
fn index_records_round_trip_and_check_their_contents() {
    let (_t, s) = tmp_store();
    let a = commit_snapshot(&s, b"a");
    let b = commit_snapshot(&s, b"b");
    let blob = s.write_blob(b"layer").unwrap();
    let layer = LayerDescriptor {
        digest: blob.clone(),
        diff_id: sha256_digest(b"tar"),
        size: 5,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
    };
    let mut rec = record_for(vec![a.clone(), b.clone()]);
    rec.layers = vec![Some(layer.clone()), None];
    rec.extra.insert("k".into(), "v".into());
    s.record("exec:v0:abc", &rec).unwrap();
    assert_eq!(s.lookup("exec:v0:abc").unwrap(), Some(rec.clone()));
    assert_eq!(s.lookup("exec:v0:other").unwrap(), None);

    // A record naming a snapshot that is gone is a miss.
    s.record("dangling", &record_for(vec![SnapshotId("0123456789ab".into())])).unwrap();
    assert_eq!(s.lookup("dangling").unwrap(), None);
    // Invalid ids are refused before they can become paths.
    assert!(s.record("bad", &record_for(vec![SnapshotId("../x".into())])).is_err());

    // Layers whose blob is gone read as None.
    fs::remove_file(s.blob_path(&blob)).unwrap();
    assert_eq!(s.lookup("exec:v0:abc").unwrap().unwrap().layers, vec![None, None]);

    // Layer-for-snapshot memo.
    let blob = s.write_blob(b"layer").unwrap();
    assert_eq!(s.layer_for_snapshot(&a, "gzip").unwrap(), None);
    s.set_layer_for_snapshot(&a, "gzip", &layer).unwrap();
    assert_eq!(s.layer_for_snapshot(&a, "gzip").unwrap(), Some(layer.clone()));
    assert_eq!(s.layer_for_snapshot(&a, "zstd").unwrap(), None);
    assert!(s.set_layer_for_snapshot(&a, "../x", &layer).is_err());
    let gone = SnapshotId("aaaaaaaaaaaa".into());
    assert!(matches!(s.set_layer_for_snapshot(&gone, "gzip", &layer), Err(StoreError::SnapshotNotFound(_))));
    fs::remove_file(s.blob_path(&blob)).unwrap();
    assert_eq!(s.layer_for_snapshot(&a, "gzip").unwrap(), None);
}

/// Index records and layer notes are written without fsync; after a power
/// loss such a file may be empty or hold garbage. Either reads as a miss
/// (the step reruns), never as an error or a wrong hit.
#[test]
fn torn_unsynced_records_read_as_misses() {
    let (_t, s) = tmp_store();
    let a = commit_snapshot(&s, b"a");
    s.record("k", &record_for(vec![a.clone()])).unwrap();
    let blob = s.write_blob(b"layer").unwrap();
    let layer = LayerDescriptor {
        digest: blob,
        diff_id: sha256_digest(b"tar"),
        size: 5,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
    };
    s.set_layer_for_snapshot(&a, "gzip", &layer).unwrap();
    let index = key_file(&s.root().join("index"), "k");
    let note = s.snapshot_diff(&a).parent().unwrap().join("layers/gzip.json");
    for torn in [&b""[..], b"{\"key\":\"k\",\"rec", b"\0\0\0\0"] {
        fs::write(&index, torn).unwrap();
        fs::write(&note, torn).unwrap();
        assert_eq!(s.lookup("k").unwrap(), None);
        assert_eq!(s.layer_for_snapshot(&a, "gzip").unwrap(), None);
    }
    // Writing again repairs them.
    s.record("k", &record_for(vec![a.clone()])).unwrap();
    s.set_layer_for_snapshot(&a, "gzip", &layer).unwrap();
    assert_eq!(s.lookup("k").unwrap().map(|r| r.chain), Some(vec![a.clone()]));
    assert_eq!(s.layer_for_snapshot(&a, "gzip").unwrap(), Some(layer));
}

#[test]
fn tags_refs_and_mounts() {
    let (_t, s) = tmp_store();
    let m1 = sha256_digest(b"m1");
    let m2 = sha256_digest(b"m2");
    s.set_tag("docker.io/library/app:1.0", &m1).unwrap();
    s.set_tag("app:latest", &m2).unwrap();
    s.set_tag("app:latest", &m1).unwrap();
    assert_eq!(
        s.tags().unwrap(),
        vec![("app:latest".into(), m1.clone()), ("docker.io/library/app:1.0".into(), m1.clone())]
    );
    assert_eq!(s.tag("app:latest").unwrap(), Some(m1.clone()));
    assert!(s.remove_tag("app:latest").unwrap());
    assert!(!s.remove_tag("app:latest").unwrap());
    assert!(s.set_tag("x", "not-a-digest").is_err());

    assert_eq!(s.resolved_ref("alpine:3@linux/amd64").unwrap(), None);
    s.set_resolved_ref("alpine:3@linux/amd64", &m2).unwrap();
    assert_eq!(s.resolved_ref("alpine:3@linux/amd64").unwrap(), Some(m2));

    let plain = s.cache_mount_dir("go-build").unwrap();
    assert_eq!(plain, s.root().join("mounts/go-build"));
    assert!(plain.is_dir());
    let hashed = s.cache_mount_dir("/root/.cache/../../etc").unwrap();
    assert_eq!(hashed.parent().unwrap(), s.root().join("mounts"));
    assert!(hashed.is_dir());
    assert_eq!(s.cache_mount_dir("/root/.cache/../../etc").unwrap(), hashed);
}

#[test]
fn open_removes_leftovers_of_dead_owners_only() {
    let t = tempfile::tempdir().unwrap();
    let live = Store::open(t.path()).unwrap();
    let live_draft = live.new_snapshot().unwrap();
    let live_writer = live.blob_writer().unwrap();
    let _live_lease = live.lease().unwrap();

    // A crashed owner whose lock file still exists but is not held...
    fs::write(t.path().join("locks/999999-deadbeef.lock"), b"").unwrap();
    fs::write(t.path().join("tmp/999999-deadbeef.blob-0"), b"partial").unwrap();
    fs::create_dir_all(t.path().join("tmp/999999-deadbeef.snap-1/diff/d")).unwrap();
    fs::set_permissions(t.path().join("tmp/999999-deadbeef.snap-1/diff/d"), fs::Permissions::from_mode(0o500)).unwrap();
    fs::write(t.path().join("leases/999999-deadbeef.lease-3"), b"s 0123456789ab\n").unwrap();
    // ...and one that never got as far as its lock file (or whose cleaner died).
    fs::write(t.path().join("tmp/888888-cafebabe.w-7"), b"x").unwrap();

    let s = Store::open(t.path()).unwrap();
    let tmp = entries(&t.path().join("tmp"));
    assert_eq!(tmp.len(), 2, "only the live owner's temp entries remain: {tmp:?}");
    assert!(tmp.iter().all(|n| n.starts_with(&live.inner.owner)));
    assert!(live_draft.diff_dir().is_dir());
    let leases = entries(&t.path().join("leases"));
    assert!(leases.iter().all(|n| !n.starts_with("999999")), "{leases:?}");
    assert!(!t.path().join("locks/999999-deadbeef.lock").exists());
    drop(live_writer);
    drop(live_draft);
    drop(s);
}

#[test]
#[ignore = "helper: re-executed by killed_child_leaves_a_valid_store"]
fn child_dies_mid_write() {
    let root = PathBuf::from(std::env::var_os("RBUILD_STORE_TEST_ROOT").expect("run by parent test"));
    let s = Store::open(&root).unwrap();
    let lease = s.lease().unwrap();
    let leased = SnapshotId(std::env::var("RBUILD_LEASED").unwrap());
    lease.add_snapshot(&leased).unwrap();
    let mut w = s.blob_writer().unwrap();
    w.write_all(&vec![1u8; 3 << 20]).unwrap();
    w.flush().unwrap();
    let d = s.new_snapshot().unwrap();
    fs::write(d.diff_dir().join("half"), b"half-written").unwrap();
    s.set_tag("child:tag", &sha256_digest(b"x")).unwrap();
    println!("READY");
    std::thread::sleep(Duration::from_secs(120));
    drop((w, d, lease));
}

#[test]
fn killed_child_leaves_a_valid_store() {
    let t = tempfile::tempdir().unwrap();
    let leased = {
        let s = Store::open(t.path()).unwrap();
        commit_snapshot(&s, b"leased by the child")
    };
    let mut c = child("store::tests::child_dies_mid_write", t.path()).env("RBUILD_LEASED", &leased.0).spawn().unwrap();
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child exited before READY");
        // libtest prints "test <name> ... " without a newline first.
        if line.contains("READY") {
            break;
        }
    }
    // While the child lives, its lease protects the snapshot.
    let s = Store::open(t.path()).unwrap();
    assert_eq!(s.prune(&PruneOptions::default()).unwrap().snapshots_removed, 0);
    assert!(s.has_snapshot(&leased));
    drop(s);

    c.kill().unwrap(); // SIGKILL
    c.wait().unwrap();
    assert!(!entries(&t.path().join("tmp")).is_empty(), "the child left temp entries");

    let s = Store::open(t.path()).unwrap();
    let own = &s.inner.owner;
    assert!(entries(&t.path().join("tmp")).iter().all(|n| n.starts_with(own.as_str())));
    assert!(entries(&t.path().join("leases")).iter().all(|n| n.starts_with(own.as_str())));
    assert_eq!(entries(&t.path().join("blobs/sha256")), Vec::<String>::new());
    assert_eq!(s.tag("child:tag").unwrap(), Some(sha256_digest(b"x")), "finished writes survive");
    // The dead child's lease no longer protects anything.
    let r = s.prune(&PruneOptions::default()).unwrap();
    assert_eq!(r.snapshots_removed, 1);
    assert!(!s.has_snapshot(&leased));
}

#[test]
#[ignore = "helper: re-executed by two_processes_share_a_store"]
fn child_hammers_store() {
    let root = PathBuf::from(std::env::var_os("RBUILD_STORE_TEST_ROOT").expect("run by parent test"));
    hammer(&root, std::env::var("RBUILD_WHO").unwrap().as_str());
}

/// Writes the same blobs and keys as every other hammer, plus its own.
fn hammer(root: &Path, who: &str) {
    let s = Store::open(root).unwrap();
    for i in 0..40u32 {
        let shared = format!("shared blob {i}").repeat(1000);
        let d = s.write_blob(shared.as_bytes()).unwrap();
        let mut w = s.blob_writer().unwrap();
        w.write_all(format!("{who} {i}").as_bytes()).unwrap();
        let own = w.finish().unwrap();
        let snap = commit_snapshot(&s, format!("{who} {i}").as_bytes());
        let mut rec = record_for(vec![snap]);
        rec.layers = vec![Some(LayerDescriptor { digest: own, diff_id: d.clone(), size: 1, media_type: "x".into() })];
        s.record(&format!("shared key {i}"), &rec).unwrap();
        s.set_tag(&format!("tag{}", i % 5), &d).unwrap();
        s.checksum_cache(); // exercise concurrent load
    }
}

#[test]
fn two_processes_share_a_store() {
    let t = tempfile::tempdir().unwrap();
    let kids: Vec<_> = ["a", "b"]
        .iter()
        .map(|who| {
            child("store::tests::child_hammers_store", t.path())
                .env("RBUILD_WHO", who)
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Two more owners in this process, on threads, with separate handles.
    let threads: Vec<_> = ["c", "d"]
        .iter()
        .map(|who| {
            let root = t.path().to_path_buf();
            std::thread::spawn(move || hammer(&root, who))
        })
        .collect();
    // And a concurrent pruner: it must never remove what the hammers made.
    let pruner = {
        let root = t.path().to_path_buf();
        std::thread::spawn(move || {
            let s = Store::open(&root).unwrap();
            for _ in 0..20 {
                s.prune(&PruneOptions::default()).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    for t in threads {
        t.join().unwrap();
    }
    pruner.join().unwrap();
    for mut k in kids {
        assert!(k.wait().unwrap().success());
    }
    let s = Store::open(t.path()).unwrap();
    for i in 0..40u32 {
        let shared = format!("shared blob {i}").repeat(1000);
        let d = sha256_digest(shared.as_bytes());
        // Untagged shared blobs may be pruned once their writers exit, but
        // what is there is never partial.
        if s.has_blob(&d) {
            assert_eq!(s.read_blob(&d).unwrap(), shared.as_bytes());
        }
        let rec = s.lookup(&format!("shared key {i}")).unwrap().expect("record present and complete");
        let layer = rec.layers[0].as_ref().expect("its layer blob survived");
        let own = s.read_blob(&layer.digest).unwrap();
        let snap = fs::read(s.snapshot_diff(&rec.chain[0]).join("f")).unwrap();
        assert_eq!(own, snap, "record points at one writer's consistent pair");
    }
    let tags = s.tags().unwrap();
    assert_eq!(tags.len(), 5);
    for (_, d) in tags {
        assert!(s.has_blob(&d), "tagged blob kept");
    }
    // Snapshots whose record was overwritten by another writer may be pruned
    // after their writer exits; the 40 recorded ones never are.
    assert!(s.disk_usage().unwrap().snapshots_count >= 40);
    assert!(entries(&t.path().join("tmp")).is_empty());
}

#[test]
fn prune_keeps_tagged_leased_and_recorded() {
    let t = tempfile::tempdir().unwrap();
    let (leased, recorded, loose, loose_blob, manifest, config, layer, snap_layer) = {
        let a = Store::open(t.path()).unwrap();
        let leased = commit_snapshot(&a, b"leased");
        let recorded = commit_snapshot(&a, b"recorded");
        let loose = commit_snapshot(&a, b"loose");
        let loose_blob = a.write_blob(b"loose blob").unwrap();
        let config = a.write_blob(b"{\"config\":{}}").unwrap();
        let layer = a.write_blob(&[0x1f, 0x8b, 1, 2, 3]).unwrap();
        let manifest = a
            .write_blob(
                format!(
                    "{{\"schemaVersion\":2,\"config\":{{\"digest\":\"{config}\"}},\"layers\":[{{\"digest\":\"{layer}\"}}]}}"
                )
                .as_bytes(),
            )
            .unwrap();
        let index = a.write_blob(format!("{{\"manifests\":[{{\"digest\":\"{manifest}\"}}]}}").as_bytes()).unwrap();
        a.set_tag("app:1", &index).unwrap();
        a.record("key", &record_for(vec![recorded.clone()])).unwrap();
        let snap_layer = a.write_blob(b"layer of recorded").unwrap();
        a.set_layer_for_snapshot(
            &recorded,
            "gzip",
            &LayerDescriptor {
                digest: snap_layer.clone(),
                diff_id: String::new(),
                size: 17,
                media_type: String::new(),
            },
        )
        .unwrap();
        // While `a` lives, its session protects everything it made.
        let b = Store::open(t.path()).unwrap();
        let r = b.prune(&PruneOptions::default()).unwrap();
        assert_eq!((r.snapshots_removed, r.blobs_removed), (0, 0), "{r:?}");
        (leased, recorded, loose, loose_blob, manifest, config, layer, snap_layer)
    };
    // Read-only dirs inside a doomed snapshot must not stop prune.
    let ro = t.path().join("snapshots").join(&loose.0).join("diff/ro");
    fs::create_dir(&ro).unwrap();
    fs::write(ro.join("f"), b"x").unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o500)).unwrap();
    // Nor what overlay leaves in a work dir (kept since commit): mode 000.
    let work = t.path().join("snapshots").join(&loose.0).join("work");
    fs::create_dir_all(work.join("work/incompat/volatile")).unwrap();
    for d in ["work/incompat/volatile", "work/incompat", "work"] {
        fs::set_permissions(work.join(d), fs::Permissions::from_mode(0o000)).unwrap();
    }

    let s = Store::open(t.path()).unwrap();
    let lease = s.lease().unwrap();
    lease.add_snapshot(&leased).unwrap();
    let r = s.prune(&PruneOptions::default()).unwrap();
    assert_eq!((r.snapshots_removed, r.blobs_removed, r.records_removed), (1, 1, 0), "{r:?}");
    assert!(!s.has_snapshot(&loose) && !s.has_blob(&loose_blob));
    assert!(!t.path().join("snapshots").join(&loose.0).exists());
    assert!(s.has_snapshot(&leased) && s.has_snapshot(&recorded));
    for d in [&manifest, &config, &layer, &snap_layer] {
        assert!(s.has_blob(d), "{d} kept");
    }
    assert!(r.bytes_freed >= 5 + 10);

    let r = s.prune(&PruneOptions { all: true, keep_storage: None, keep_duration: None }).unwrap();
    assert_eq!((r.snapshots_removed, r.records_removed), (1, 1), "{r:?}");
    assert!(!s.has_snapshot(&recorded) && !s.has_blob(&snap_layer));
    assert!(s.has_snapshot(&leased), "lease still held");
    assert!(s.has_blob(&manifest) && s.has_blob(&config) && s.has_blob(&layer), "tag kept");

    drop(lease);
    let r = s.prune(&PruneOptions { all: true, keep_storage: None, keep_duration: None }).unwrap();
    assert_eq!(r.snapshots_removed, 1);
    assert!(s.has_blob(&layer));
    assert!(matches!(s.lease().unwrap().add_snapshot(&leased), Err(StoreError::SnapshotNotFound(_))));
}

#[test]
fn prune_keep_storage_keeps_most_recently_used() {
    let t = tempfile::tempdir().unwrap();
    let ids: Vec<SnapshotId> = {
        let a = Store::open(t.path()).unwrap();
        (0..4)
            .map(|i| {
                let id = commit_snapshot(&a, &vec![b'x'; 1000]);
                a.record(&format!("k{i}"), &record_for(vec![id.clone()])).unwrap();
                id
            })
            .collect()
    };
    // Give records distinct last-use times: k0 oldest ... k3 newest.
    for i in 0..4u64 {
        let f = key_file(&t.path().join("index"), &format!("k{i}"));
        let when = UNIX_EPOCH + Duration::from_secs(1_000_000 + i * 100);
        File::options().write(true).open(f).unwrap().set_modified(when).unwrap();
    }
    let s = Store::open(t.path()).unwrap();
    // Using k0 makes it the most recent.
    assert!(s.lookup("k0").unwrap().is_some());
    drop(s);
    let s = Store::open(t.path()).unwrap();
    let r = s.prune(&PruneOptions { all: false, keep_storage: Some(2500), keep_duration: None }).unwrap();
    assert_eq!((r.records_removed, r.snapshots_removed, r.bytes_freed), (2, 2, 2000), "{r:?}");
    let kept: Vec<bool> = ids.iter().map(|id| s.has_snapshot(id)).collect();
    assert_eq!(kept, vec![true, false, false, true]);
    assert!(s.lookup("k1").unwrap().is_none());
    assert!(s.lookup("k3").unwrap().is_some());
    let du = s.disk_usage().unwrap();
    assert_eq!((du.snapshots_bytes, du.records_count), (2000, 2));
}

#[test]
fn prune_keep_duration_keeps_recent_cache_and_drops_older() {
    let t = tempfile::tempdir().unwrap();
    let ids: Vec<SnapshotId> = {
        let a = Store::open(t.path()).unwrap();
        (0..3)
            .map(|i| {
                let id = commit_snapshot(&a, &vec![b'y'; 1000]);
                a.record(&format!("d{i}"), &record_for(vec![id.clone()])).unwrap();
                id
            })
            .collect()
    };
    // d0 used three days ago, d1 an hour ago, d2 just now.
    let now = SystemTime::now();
    for (i, age) in [(0, 3 * 86400), (1, 3600)] {
        let f = key_file(&t.path().join("index"), &format!("d{i}"));
        File::options().write(true).open(f).unwrap().set_modified(now - Duration::from_secs(age)).unwrap();
    }
    let s = Store::open(t.path()).unwrap();
    let two_days = Some(Duration::from_secs(48 * 3600));
    // Alone: everything older than the duration goes.
    let r = s.prune(&PruneOptions { all: false, keep_storage: None, keep_duration: two_days }).unwrap();
    assert_eq!((r.records_removed, r.snapshots_removed), (1, 1), "{r:?}");
    assert_eq!(ids.iter().map(|id| s.has_snapshot(id)).collect::<Vec<_>>(), [false, true, true]);
    // With a size budget smaller than what is recent: the recent stays anyway.
    let r = s.prune(&PruneOptions { all: false, keep_storage: Some(10), keep_duration: two_days }).unwrap();
    assert_eq!(r.records_removed, 0, "{r:?}");
    // A short duration and a budget: the budget decides for the older one.
    let r = s
        .prune(&PruneOptions { all: false, keep_storage: Some(1500), keep_duration: Some(Duration::from_secs(60)) })
        .unwrap();
    assert_eq!((r.records_removed, r.snapshots_removed), (1, 1), "{r:?}");
    assert_eq!(ids.iter().map(|id| s.has_snapshot(id)).collect::<Vec<_>>(), [false, false, true]);
}

#[test]
fn prune_all_removes_unleased_cache_mounts() {
    let (_t, s) = tmp_store();
    let keep = s.cache_mount_dir("keep").unwrap();
    let gone = s.cache_mount_dir("/var/cache/apt").unwrap();
    fs::write(gone.join("pkg"), b"12345").unwrap();
    let lease = s.lease().unwrap();
    lease.add_mount("keep").unwrap();
    assert_eq!(s.prune(&PruneOptions::default()).unwrap().mounts_removed, 0);
    let r = s.prune(&PruneOptions { all: true, keep_storage: None, keep_duration: None }).unwrap();
    assert_eq!(r.mounts_removed, 1);
    assert!(keep.is_dir() && !gone.exists());
}

#[test]
fn cache_mounts_are_listed_and_pruned_by_id_but_never_when_held() {
    let (_t, s) = tmp_store();
    let go = s.cache_mount_dir("go").unwrap();
    fs::write(go.join("obj"), b"123").unwrap();
    let apt = s.cache_mount_dir("/var/cache/apt").unwrap();
    fs::write(apt.join("pkg"), b"12345").unwrap();
    let busy = s.cache_mount_dir("busy").unwrap();
    let lease = s.lease().unwrap();
    lease.add_mount("busy").unwrap();
    let listed: Vec<(String, u64, bool)> =
        s.cache_mounts().unwrap().into_iter().map(|m| (m.id, m.bytes, m.held)).collect();
    assert_eq!(listed.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(), ["/var/cache/apt", "busy", "go"]);
    assert!(listed.iter().find(|m| m.0 == "go").unwrap().1 >= 3);
    assert!(listed.iter().find(|m| m.0 == "busy").unwrap().2, "held by the lease");
    // `.lock`/`.id` files beside the directories are not mounts.
    assert_eq!(s.disk_usage().unwrap().mounts_count, 3);

    let r = s.prune_cache_mounts(Some(&["/var/cache/apt".to_string(), "busy".to_string()])).unwrap();
    assert_eq!((r.mounts_removed, r.mounts_held), (1, 1));
    assert!(!apt.exists() && go.is_dir() && busy.is_dir());
    let r = s.prune_cache_mounts(None).unwrap();
    assert_eq!((r.mounts_removed, r.mounts_held), (1, 1));
    assert!(!go.exists() && busy.is_dir());
    drop(lease);
    assert_eq!(s.prune_cache_mounts(None).unwrap().mounts_removed, 1);
    assert!(s.cache_mounts().unwrap().is_empty());
    // A lease taken after a prune removed the directory brings it back.
    let lease = s.lease().unwrap();
    lease.add_mount("busy").unwrap();
    assert!(busy.is_dir());
}

fn set_mtime(path: &Path, secs: u64) {
    File::options().write(true).open(path).unwrap().set_modified(UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
}

#[test]
fn checksum_cache_hit_does_not_read_the_file() {
    let (t, s) = tmp_store();
    let f = t.path().join("ctx-file");
    fs::write(&f, b"aaaa").unwrap();
    set_mtime(&f, 1_600_000_000);
    let cc = s.checksum_cache();
    let meta = fs::symlink_metadata(&f).unwrap();
    assert_eq!(cc.checksum(&f, &meta).unwrap(), sha256_digest(b"aaaa"));

    // Same size, same mtime, same inode: the stale checksum proves no read.
    fs::write(&f, b"bbbb").unwrap();
    set_mtime(&f, 1_600_000_000);
    let meta = fs::symlink_metadata(&f).unwrap();
    assert_eq!(cc.checksum(&f, &meta).unwrap(), sha256_digest(b"aaaa"));

    cc.save().unwrap();
    drop(cc);
    drop(s);
    // Persisted: a fresh process (new handle) still hits.
    let s = Store::open(t.path()).unwrap();
    let cc = s.checksum_cache();
    assert_eq!(cc.len(), 1);
    assert_eq!(cc.checksum(&f, &meta).unwrap(), sha256_digest(b"aaaa"));

    // A new mtime is a miss.
    set_mtime(&f, 1_600_000_001);
    let meta = fs::symlink_metadata(&f).unwrap();
    assert_eq!(cc.checksum(&f, &meta).unwrap(), sha256_digest(b"bbbb"));

    // Symlinks hash their target, without following it.
    let l = t.path().join("link");
    std::os::unix::fs::symlink("ctx-file", &l).unwrap();
    assert_eq!(cc.checksum(&l, &fs::symlink_metadata(&l).unwrap()).unwrap(), sha256_digest(b"ctx-file"));
    assert!(cc.checksum(t.path(), &fs::symlink_metadata(t.path()).unwrap()).is_err());
}

#[test]
fn checksum_cache_does_not_persist_racy_entries() {
    let (t, s) = tmp_store();
    let f = t.path().join("fresh");
    fs::write(&f, b"just written").unwrap();
    let cc = s.checksum_cache();
    cc.checksum(&f, &fs::symlink_metadata(&f).unwrap()).unwrap();
    cc.save().unwrap();
    drop((cc, s));
    let s = Store::open(t.path()).unwrap();
    assert!(s.checksum_cache().is_empty());
}

/// Learning only racy entries (a file edited just before the build) leaves
/// nothing to persist: `save` does not rewrite (and fsync) the cache file;
/// a stable entry does.
#[test]
fn checksum_cache_save_skips_when_only_racy_entries_were_learnt() {
    let (t, s) = tmp_store();
    let (old, fresh) = (t.path().join("old"), t.path().join("fresh"));
    fs::write(&old, b"old").unwrap();
    set_mtime(&old, 1_600_000_000);
    let cc = s.checksum_cache();
    cc.checksum(&old, &fs::symlink_metadata(&old).unwrap()).unwrap();
    cc.save().unwrap();
    let ino = || fs::metadata(t.path().join("checksums")).unwrap().ino();
    let first = ino();
    fs::write(&fresh, b"fresh").unwrap();
    cc.checksum(&fresh, &fs::symlink_metadata(&fresh).unwrap()).unwrap();
    cc.save().unwrap();
    assert_eq!(ino(), first, "a racy entry alone rewrote the cache");
    set_mtime(&fresh, 1_600_000_000);
    cc.checksum(&fresh, &fs::symlink_metadata(&fresh).unwrap()).unwrap();
    cc.save().unwrap();
    assert_ne!(ino(), first, "a stable entry is saved");
    drop((cc, s));
    assert_eq!(Store::open(t.path()).unwrap().checksum_cache().len(), 2);
}

#[test]
fn checksum_cache_merges_concurrent_savers_and_survives_corruption() {
    let (t, s1) = tmp_store();
    let s2 = Store::open(t.path()).unwrap();
    let (f1, f2) = (t.path().join("one"), t.path().join("two"));
    for f in [&f1, &f2] {
        fs::write(f, f.to_string_lossy().as_bytes()).unwrap();
        set_mtime(f, 1_500_000_000);
    }
    let (c1, c2) = (s1.checksum_cache(), s2.checksum_cache());
    c1.checksum(&f1, &fs::symlink_metadata(&f1).unwrap()).unwrap();
    c2.checksum(&f2, &fs::symlink_metadata(&f2).unwrap()).unwrap();
    c1.save().unwrap();
    c2.save().unwrap();
    let s3 = Store::open(t.path()).unwrap();
    assert_eq!(s3.checksum_cache().len(), 2);

    fs::write(t.path().join("checksums"), b"RBCKSUM1\x05\x00").unwrap();
    let s4 = Store::open(t.path()).unwrap();
    assert!(s4.checksum_cache().is_empty(), "truncated file reads as empty cache");
}

#[test]
fn checksum_cache_speed_20000_lookups() {
    let (t, s) = tmp_store();
    let dir = t.path().join("ctx");
    fs::create_dir(&dir).unwrap();
    let mut files = Vec::new();
    for i in 0..20_000 {
        let p = dir.join(format!("dir{}/file-{i}.txt", i % 100));
        if i < 100 {
            fs::create_dir(p.parent().unwrap()).unwrap();
        }
        fs::write(&p, format!("content {i}")).unwrap();
        set_mtime(&p, 1_600_000_000);
        files.push(p);
    }
    let metas: Vec<fs::Metadata> = files.iter().map(|p| fs::symlink_metadata(p).unwrap()).collect();
    let cc = s.checksum_cache();
    let first: Vec<String> = files.iter().zip(&metas).map(|(p, m)| cc.checksum(p, m).unwrap()).collect();
    cc.save().unwrap();
    drop((cc, s));

    let s = Store::open(t.path()).unwrap();
    let start = Instant::now();
    let cc = s.checksum_cache();
    let loaded = start.elapsed();
    let again: Vec<String> = files.iter().zip(&metas).map(|(p, m)| cc.checksum(p, m).unwrap()).collect();
    let total = start.elapsed();
    println!(
        "checksum cache: load {} entries {:?}, load + 20000 lookups {:?} ({} bytes on disk)",
        cc.len(),
        loaded,
        total,
        fs::metadata(t.path().join("checksums")).unwrap().len()
    );
    assert_eq!(first, again);
    assert_eq!(first[7], sha256_digest(b"content 7"));
}

/// A layer written in the background is the one the exporter would write:
/// same descriptor, same blob bytes; readers wait for it rather than race it.
#[test]
fn background_layers_match_foreground_ones() {
    use crate::layer::{Compression, LayerOptions, write_layer};
    let (_t, s) = tmp_store();
    let d = s.new_snapshot().unwrap();
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    fs::write(d.diff_dir().join("big"), &big).unwrap();
    fs::write(d.diff_dir().join("small"), b"hello").unwrap();
    let id = d.commit().unwrap();
    let empty = s.new_snapshot().unwrap().commit().unwrap();
    let opts = LayerOptions { compression: Compression::Gzip { level: 6 }, source_date_epoch: Some(1), threads: 2 };
    s.compress_in_background(&id, opts);
    s.compress_in_background(&id, opts); // queued once
    s.compress_in_background(&empty, opts);
    let name = crate::layer::note_name(&opts.compression, opts.source_date_epoch);
    assert_eq!(name, "gzip-6-e1");
    let got = s.layer_for_snapshot(&id, &name).unwrap().expect("background layer");
    let mut direct = Vec::new();
    let want = write_layer(&s.snapshot_diff(&id), &opts, &mut direct).unwrap();
    assert_eq!(got, want);
    assert!(s.read_blob(&got.digest).unwrap() == direct);
    // An empty diff has no layer (the exporter drops it).
    assert_eq!(s.layer_for_snapshot(&empty, &name).unwrap(), None);
    // Another compression, level or epoch is not waited for, and not there.
    assert_eq!(s.layer_for_snapshot(&id, "zstd-3-e1").unwrap(), None);
    assert_eq!(s.layer_for_snapshot(&id, "gzip-9-e1").unwrap(), None);
    assert_eq!(s.layer_for_snapshot(&id, "gzip-6").unwrap(), None);
    // Dropping the store with a job queued neither hangs nor leaks a note.
    let (t2, s2) = tmp_store();
    let id2 = commit_snapshot(&s2, &big);
    s2.compress_in_background(&id2, opts);
    drop(s2);
    let s2 = Store::open(t2.path()).unwrap();
    if let Some(l) = s2.layer_for_snapshot(&id2, &name).unwrap() {
        assert!(s2.has_blob(&l.digest));
    }
}

/// Queues the layers of `ids` (gzip level 1, epoch 3) with the background
/// writer, in order, and waits for each: the options and the layers.
fn background_layers(s: &Store, ids: [&SnapshotId; 3]) -> (crate::layer::LayerOptions, [LayerDescriptor; 3]) {
    use crate::layer::{Compression, LayerOptions, note_name};
    let opts = LayerOptions { compression: Compression::Gzip { level: 1 }, source_date_epoch: Some(3), threads: 2 };
    let name = note_name(&opts.compression, opts.source_date_epoch);
    for id in ids {
        s.compress_in_background(id, opts);
    }
    (opts, ids.map(|id| s.layer_for_snapshot(id, &name).unwrap().expect("background layer")))
}

/// A snapshot whose tar is one already compressed in this process (a
/// stage's files copied again by a later stage) is noted with that blob,
/// not compressed again; one of the same size with other bytes is.
#[test]
fn background_writer_reuses_the_blob_of_an_identical_layer() {
    use crate::layer::write_layer;
    let (_t, s) = tmp_store();
    let big: Vec<u8> = (0..6_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let first = commit_snapshot(&s, &big);
    let twin = commit_snapshot(&s, &big);
    let mut other_bytes = big.clone();
    other_bytes[3_000_000] ^= 1;
    let other = commit_snapshot(&s, &other_bytes);
    let (opts, [a, b, c]) = background_layers(&s, [&first, &twin, &other]);
    assert_eq!(a, b);
    assert_ne!(a.diff_id, c.diff_id);
    assert_eq!(s.background_compressions(), 2, "the twin was compressed again");
    // A copy has inodes of its own: found by its tar, not by identity.
    assert_eq!(s.background_identity_twins(), 0);
    // What the twin is noted with is exactly its own layer.
    let want = write_layer(&s.snapshot_diff(&twin), &opts, &mut std::io::sink()).unwrap();
    assert_eq!(b, want);
}

/// A snapshot that shares the first one's inodes (as `COPY --from` links
/// a stage's files) and has the same headers is its twin by identity, with
/// no tar pass; one that shares them but differs in a header (a
/// directory's mode) is not, and is compressed: its layer is its own.
#[test]
fn background_writer_finds_a_twin_that_shares_inodes_by_identity() {
    use std::os::unix::fs::PermissionsExt;

    use crate::layer::write_layer;
    let (_t, s) = tmp_store();
    let file =
        |i: u32| -> Vec<u8> { (0..1_200_000u32).map(|j| (j.wrapping_mul(2654435761 + i) >> 11) as u8).collect() };
    let d = s.new_snapshot().unwrap();
    fs::create_dir_all(d.diff_dir().join("app/src")).unwrap();
    for i in 0..5 {
        fs::write(d.diff_dir().join(format!("app/src/f{i}")), file(i)).unwrap();
    }
    let first = d.commit().unwrap();
    let linked = |dir_mode: u32| {
        let d = s.new_snapshot().unwrap();
        fs::create_dir_all(d.diff_dir().join("app/src")).unwrap();
        fs::set_permissions(d.diff_dir().join("app/src"), fs::Permissions::from_mode(dir_mode)).unwrap();
        for i in 0..5 {
            let rel = format!("app/src/f{i}");
            fs::hard_link(s.snapshot_diff(&first).join(&rel), d.diff_dir().join(&rel)).unwrap();
        }
        d.commit().unwrap()
    };
    fs::set_permissions(s.snapshot_diff(&first).join("app/src"), fs::Permissions::from_mode(0o755)).unwrap();
    let twin = linked(0o755);
    let other = linked(0o700);
    let (opts, [a, b, c]) = background_layers(&s, [&first, &twin, &other]);
    assert_eq!(a, b);
    assert_eq!(s.background_identity_twins(), 1, "the linked twin was not found by identity");
    assert_eq!(s.background_compressions(), 2);
    for (id, got) in [(&twin, &b), (&other, &c)] {
        let want = write_layer(&s.snapshot_diff(id), &opts, &mut std::io::sink()).unwrap();
        assert_eq!(*got, want);
    }
    assert_ne!(a.diff_id, c.diff_id);
}

fn blob_count(s: &Store) -> usize {
    entries(&s.root().join("blobs/sha256")).len()
}

/// A deferred layer is one tar pass into a hash: no blob, the same diff id
/// an eager layer has, and the compressed blob made later is the eager one,
/// made once per (compression, level, epoch).
#[test]
fn deferred_layers_store_no_blob_and_compress_once() {
    use crate::layer::{Compression, LayerOptions, write_layer};
    let (_t, s) = tmp_store();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    let id = commit_snapshot(&s, &big);
    let empty = s.new_snapshot().unwrap().commit().unwrap();
    let gzip = Compression::Gzip { level: 6 };
    let eager_opts = LayerOptions { compression: gzip, source_date_epoch: Some(7), threads: 2 };
    let mut eager_bytes = Vec::new();
    let eager = write_layer(&s.snapshot_diff(&id), &eager_opts, &mut eager_bytes).unwrap();

    s.defer_in_background(&id, Some(7));
    let deferred = s.deferred_layer(&id, Some(7)).unwrap().expect("a layer");
    assert_eq!(deferred.digest, eager.diff_id);
    assert_eq!(deferred.diff_id, eager.diff_id);
    assert_eq!(deferred.media_type, crate::oci::MEDIA_TYPE_LAYER_TAR);
    assert_eq!(blob_count(&s), 0, "a deferred layer writes no blob");
    assert_eq!(s.deferred_layer(&empty, Some(7)).unwrap(), None);
    // Another epoch is another tar.
    let other = s.deferred_layer(&id, None).unwrap().unwrap();
    assert_ne!(other.digest, deferred.digest);
    assert!(s.has_layer(&deferred.digest) && s.has_layer(&other.digest));
    assert!(!s.has_blob(&deferred.digest));
    assert_eq!(s.deferred_source(&deferred.digest), Some((id.clone(), Some(7))));

    let first = s.materialize_layer(&deferred.diff_id, &gzip, 2).unwrap();
    assert!(first.written);
    assert_eq!(first.layer, eager);
    assert!(s.read_blob(&eager.digest).unwrap() == eager_bytes);
    let again = s.materialize_layer(&deferred.diff_id, &gzip, 1).unwrap();
    assert_eq!(again, Materialized { layer: eager.clone(), written: false });
    // The eager exporter finds it under the same note.
    assert_eq!(s.layer_for_snapshot(&id, "gzip-6-e7").unwrap(), Some(eager.clone()));
    // Another level is another blob.
    let nine = s.materialize_layer(&deferred.diff_id, &Compression::Gzip { level: 9 }, 2).unwrap();
    assert!(nine.written);
    assert_ne!(nine.layer.digest, eager.digest);
    assert_eq!(nine.layer.diff_id, eager.diff_id);
    assert_eq!(blob_count(&s), 2);
    let du = s.disk_usage().unwrap();
    assert_eq!(du.deferred_layers, 2);
}

/// A deferred layer of a snapshot that shares a deferred one's inodes and
/// headers (`COPY --from` of a whole stage in a store-only build) takes
/// that diff id without a tar pass; the layer is exactly its own tar, and
/// it materializes from the twin it names.
#[test]
fn a_deferred_twin_that_shares_inodes_takes_its_diff_id_by_identity() {
    use crate::layer::{Compression, LayerOptions, write_layer};
    let (_t, s) = tmp_store();
    let d = s.new_snapshot().unwrap();
    fs::create_dir_all(d.diff_dir().join("app")).unwrap();
    for i in 0..5u32 {
        let bytes: Vec<u8> = (0..1_000_000u32).map(|j| (j.wrapping_mul(2654435761 + i) >> 9) as u8).collect();
        fs::write(d.diff_dir().join(format!("app/f{i}")), bytes).unwrap();
    }
    let first = d.commit().unwrap();
    let d = s.new_snapshot().unwrap();
    fs::create_dir_all(d.diff_dir().join("app")).unwrap();
    for i in 0..5 {
        let rel = format!("app/f{i}");
        fs::hard_link(s.snapshot_diff(&first).join(&rel), d.diff_dir().join(&rel)).unwrap();
    }
    let twin = d.commit().unwrap();
    s.defer_in_background(&first, Some(7));
    s.defer_in_background(&twin, Some(7));
    let a = s.deferred_layer(&first, Some(7)).unwrap().expect("first layer");
    let b = s.deferred_layer(&twin, Some(7)).unwrap().expect("twin layer");
    assert_eq!(s.background_identity_twins(), 1, "the twin's tar was taken again");
    assert_eq!(a, b);
    let plain = LayerOptions { compression: Compression::Uncompressed, source_date_epoch: Some(7), threads: 1 };
    assert_eq!(b, write_layer(&s.snapshot_diff(&twin), &plain, &mut std::io::sink()).unwrap());
    assert_eq!(s.deferred_source(&b.diff_id), Some((twin.clone(), Some(7))));
    let blob = s.materialize_layer(&b.diff_id, &Compression::Gzip { level: 1 }, 2).unwrap();
    assert_eq!(blob.layer.diff_id, a.diff_id);
    assert_eq!(blob_count(&s), 1);
}

/// A snapshot changed behind the store's back does not become a blob
/// whose config lies about it: materializing fails and keeps nothing.
#[test]
fn a_changed_snapshot_fails_to_materialize() {
    use crate::layer::Compression;
    let (_t, s) = tmp_store();
    let id = commit_snapshot(&s, b"original content");
    let layer = s.deferred_layer(&id, None).unwrap().unwrap();
    // Same size, other bytes: only the tar's hash can tell.
    fs::write(s.snapshot_diff(&id).join("f"), b"tampered content").unwrap();
    let err = s.materialize_layer(&layer.diff_id, &Compression::Gzip { level: 6 }, 1).unwrap_err();
    match &err {
        StoreError::SnapshotChanged { snapshot, expected, actual } => {
            assert_eq!(snapshot, &id.0);
            assert_eq!(expected, &layer.diff_id);
            assert_ne!(actual, &layer.diff_id);
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("no longer matches"), "{err}");
    assert_eq!(blob_count(&s), 0);
    assert_eq!(entries(&s.root().join("tmp")).iter().filter(|n| n.contains("blob")).count(), 0);
    assert!(s.layer_for_snapshot(&id, "gzip-6").unwrap().is_none());
}

/// Prune keeps the snapshot of a deferred layer a tagged manifest names,
/// with the blobs compressed from it, and drops both (and the record)
/// once nothing names them.
#[test]
fn prune_keeps_deferred_layers_of_tagged_images() {
    use crate::layer::Compression;
    let (t, s) = tmp_store();
    let id = commit_snapshot(&s, b"layer bytes");
    let layer = s.deferred_layer(&id, None).unwrap().unwrap();
    let gz = s.materialize_layer(&layer.diff_id, &Compression::Gzip { level: 6 }, 1).unwrap().layer;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": s.write_blob(b"{}").unwrap(), "size": 2},
        "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
    });
    let m = s.write_blob(&serde_json::to_vec(&manifest).unwrap()).unwrap();
    s.set_tag("app", &m).unwrap();
    drop(s);
    let s = Store::open(t.path()).unwrap();
    s.prune(&PruneOptions { all: true, ..Default::default() }).unwrap();
    assert!(s.has_snapshot(&id));
    assert!(s.has_blob(&gz.digest), "the compressed blob of a kept snapshot stays");
    assert_eq!(s.deferred_source(&layer.digest), Some((id.clone(), None)));
    assert!(s.remove_tag("app").unwrap());
    drop(s);
    let s = Store::open(t.path()).unwrap();
    let report = s.prune(&PruneOptions { all: true, ..Default::default() }).unwrap();
    assert_eq!(report.snapshots_removed, 1);
    assert!(!s.has_snapshot(&id) && !s.has_blob(&gz.digest));
    assert_eq!(entries(&s.root().join("diffs")), Vec::<String>::new());
    assert!(!s.has_layer(&layer.digest));
    assert!(matches!(
        s.materialize_layer(&layer.diff_id, &Compression::Gzip { level: 6 }, 1),
        Err(StoreError::LayerNotFound(_))
    ));
}
