//! Export and import through an OCI layout directory: merging of platform
//! groups, lazy import, and refusal of tampered blobs.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::layout::LayoutCache;
use super::*;
use crate::layer::{Compression, LayerOptions};
use crate::store::{CacheRecord, Store};

fn snapshot(store: &Store, file: &str, text: &str) -> crate::store::SnapshotId {
    let draft = store.new_snapshot().unwrap();
    std::fs::write(draft.diff_dir().join(file), text).unwrap();
    draft.commit().unwrap()
}

fn plan<'a>(platforms: &[(&str, &[&str])], imported: Option<&'a ImportedCache>) -> ExportPlan<'a> {
    ExportPlan {
        platforms: platforms
            .iter()
            .map(|(p, keys)| (p.to_string(), keys.iter().map(|k| k.to_string()).collect()))
            .collect::<BTreeMap<_, _>>(),
        imported,
        layer: LayerOptions { compression: Compression::Gzip { level: 6 }, source_date_epoch: Some(0), threads: 1 },
        mounts: Vec::new(),
    }
}

fn records(dir: &std::path::Path) -> CacheConfig {
    let cache = LayoutCache::new(dir.to_path_buf(), None);
    read_config("t", BlobSource::read_artifact(&cache).unwrap()).unwrap().expect("an artifact")
}

#[test]
fn exports_merge_platforms_and_import_lazily() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("a")).unwrap();
    let base = snapshot(&store, "base", "base\n");
    let step = snapshot(&store, "step", "step\n");
    // No layer blobs yet: the export writes them (as for mode=max steps).
    let record =
        |chain: Vec<_>| CacheRecord { layers: vec![None; chain.len()], chain, created: 0, extra: BTreeMap::new() };
    store.record("k-base", &record(vec![base.clone()])).unwrap();
    store.record("k-step", &record(vec![base, step])).unwrap();
    let dir = tmp.path().join("cache");
    let sink = LayoutCache::new(dir.clone(), None);

    let stats = export(&store, &sink, &plan(&[("linux/amd64", &["k-base", "k-step"])], None)).unwrap();
    assert_eq!((stats.records, stats.layers, stats.layers_written), (2, 2, 2));
    export(&store, &sink, &plan(&[("linux/arm64", &["k-base", "unknown-key"])], None)).unwrap();
    let c = records(&dir);
    assert_eq!(c.platforms["linux/amd64"].len(), 2, "the arm64 export kept the amd64 records");
    assert_eq!(c.platforms["linux/arm64"].len(), 1, "keys not in the store are not exported");
    // A second export of one platform replaces that platform's records only.
    export(&store, &sink, &plan(&[("linux/amd64", &["k-base"])], None)).unwrap();
    let c = records(&dir);
    assert_eq!((c.platforms["linux/amd64"].len(), c.platforms["linux/arm64"].len()), (1, 1));
    export(&store, &sink, &plan(&[("linux/amd64", &["k-base", "k-step"])], None)).unwrap();

    // Import on an empty store: a lookup downloads nothing; materializing
    // fetches and unpacks, once per blob.
    let fresh = Store::open(&tmp.path().join("b")).unwrap();
    let imported = ImportedCache::load(vec![Arc::new(LayoutCache::new(dir.clone(), None))], true).unwrap();
    let rec = imported.lookup("k-step").expect("imported").clone();
    assert_eq!(rec.layers.len(), 2);
    assert!(std::fs::read_dir(fresh.root().join("blobs/sha256")).unwrap().next().is_none());
    let (chain, _) = imported.materialize(&fresh, "k-step", &rec).unwrap();
    assert_eq!(std::fs::read_to_string(fresh.snapshot_diff(&chain[1]).join("step")).unwrap(), "step\n");
    assert_eq!(fresh.lookup("k-step").unwrap().unwrap().chain, chain, "recorded locally for the next build");
    let base_rec = imported.lookup("k-base").unwrap().clone();
    let (base_chain, _) = imported.materialize(&fresh, "k-base", &base_rec).unwrap();
    assert_eq!(base_chain[0], chain[0], "the base layer was unpacked once");
}

#[test]
fn a_blob_that_does_not_match_its_digest_never_enters_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("a")).unwrap();
    let id = snapshot(&store, "f", "content\n");
    store
        .record("k", &CacheRecord { chain: vec![id], layers: vec![None], created: 0, extra: BTreeMap::new() })
        .unwrap();
    let dir = tmp.path().join("cache");
    export(&store, &LayoutCache::new(dir.clone(), None), &plan(&[("linux/amd64", &["k"])], None)).unwrap();
    let layer = records(&dir).layers().remove(0);
    let path = dir.join("blobs/sha256").join(&layer.digest[7..]);
    for tamper in [|b: &mut Vec<u8>| *b.last_mut().unwrap() ^= 1, |b: &mut Vec<u8>| b.truncate(b.len() / 2)] {
        let fresh = Store::open(&tmp.path().join(format!("fresh-{}", rand_suffix()))).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let original = bytes.clone();
        tamper(&mut bytes);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let imported = ImportedCache::load(vec![Arc::new(LayoutCache::new(dir.clone(), None))], true).unwrap();
        let rec = imported.lookup("k").unwrap().clone();
        let err = imported.materialize(&fresh, "k", &rec).unwrap_err();
        assert!(
            matches!(
                err,
                RemoteError::SizeMismatch { .. } | RemoteError::Store(crate::store::StoreError::DigestMismatch { .. })
            ),
            "{err:?}"
        );
        assert!(!fresh.has_blob(&layer.digest));
        std::fs::write(&path, original).unwrap();
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

#[test]
fn cache_mounts_round_trip_and_never_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("a")).unwrap();
    let m = store.cache_mount_dir("go-build").unwrap();
    std::fs::create_dir(m.join("sub")).unwrap();
    std::fs::write(m.join("sub/obj"), "compiled\n").unwrap();
    let dir = tmp.path().join("cache");
    let sink = LayoutCache::new(dir.clone(), None);
    let mut p = plan(&[("linux/amd64", &[])], None);
    p.mounts = vec![
        MountToExport { id: "go-build".into(), sharing: "locked".into() },
        // Never created on this store: nothing to export.
        MountToExport { id: "absent".into(), sharing: "shared".into() },
    ];
    assert_eq!(export(&store, &sink, &p).unwrap().mounts, 1);
    let c = records(&dir);
    assert_eq!(c.mounts.keys().collect::<Vec<_>>(), ["go-build"]);
    assert_eq!(c.mounts["go-build"].sharing, "locked");
    assert!(c.layers().contains(&c.mounts["go-build"].layer), "the manifest names the mount blob");
    // An export without mounts keeps the ones already exported.
    export(&store, &sink, &plan(&[("linux/amd64", &[])], None)).unwrap();
    assert_eq!(records(&dir).mounts.len(), 1);

    let fresh = Store::open(&tmp.path().join("b")).unwrap();
    let imported = ImportedCache::load(vec![Arc::new(LayoutCache::new(dir.clone(), None))], true).unwrap();
    // Only ids the build uses are seeded.
    let ids = ["go-build".to_string(), "other".to_string()];
    assert_eq!(imported.seed_mounts(&fresh, &ids).unwrap(), ["go-build"]);
    assert!(!fresh.cache_mount_path("other").exists());
    let seeded = fresh.cache_mount_path("go-build");
    assert_eq!(std::fs::read_to_string(seeded.join("sub/obj")).unwrap(), "compiled\n");
    // A mount with contents is left as it is.
    std::fs::write(seeded.join("sub/obj"), "local\n").unwrap();
    assert!(imported.seed_mounts(&fresh, &ids).unwrap().is_empty());
    assert_eq!(std::fs::read_to_string(seeded.join("sub/obj")).unwrap(), "local\n");
    // An empty one (created by a build that wrote nothing) is seeded.
    let empty = Store::open(&tmp.path().join("c")).unwrap();
    empty.cache_mount_dir("go-build").unwrap();
    assert_eq!(imported.seed_mounts(&empty, &ids).unwrap(), ["go-build"]);
}

/// A source serving one hand-made artifact (a hostile cache).
struct FixedSource {
    config: Vec<u8>,
    blob: Vec<u8>,
}

impl BlobSource for FixedSource {
    fn name(&self) -> String {
        "hostile".into()
    }

    fn read_artifact(&self) -> Result<Option<(Manifest, Vec<u8>)>, TransportError> {
        let manifest: Manifest = serde_json::from_slice(&CacheConfig::parse(&self.config)?.manifest(&self.config))?;
        Ok(Some((manifest, self.config.clone())))
    }

    fn fetch_blob(
        &self,
        _digest: &str,
        _size: u64,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<(), TransportError> {
        Ok(out.write_all(&self.blob)?)
    }
}

/// Name, kind, link target, data.
type Entry<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

fn raw_entry(tar: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    tar.append(&h, data).unwrap();
}

/// A cache mount blob from an untrusted cache cannot write outside the
/// mount: `..` names and symlinked parents are refused, and a failed seed
/// leaves no mount behind.
#[test]
fn a_hostile_mount_blob_cannot_escape_the_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let cases: [(Vec<Entry<'_>>, bool); 2] = [
        // `..` is resolved inside the mount: contained, seeded.
        (vec![("../../../../victim/escape", tar::EntryType::Regular, "", b"x")], true),
        // A symlinked parent is never followed: refused, nothing installed.
        (
            vec![
                ("link", tar::EntryType::Symlink, victim.to_str().unwrap(), b""),
                ("link/escape", tar::EntryType::Regular, "", b"x"),
            ],
            false,
        ),
    ];
    for (entries, contained) in cases {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, kind, link, data) in entries {
            raw_entry(&mut tar, name, kind, link, data);
        }
        let blob = tar.into_inner().unwrap();
        let layer = LayerDescriptor {
            digest: crate::oci::sha256_digest(&blob),
            diff_id: crate::oci::sha256_digest(&blob),
            size: blob.len() as u64,
            media_type: crate::oci::MEDIA_TYPE_LAYER_TAR.into(),
        };
        let mut config = CacheConfig::new();
        config.mounts.insert("m".into(), MountEntry { sharing: "shared".into(), layer });
        let source = FixedSource { config: config.to_json(), blob };
        let store = Store::open(&tmp.path().join(format!("s-{}", rand_suffix()))).unwrap();
        let imported = ImportedCache::load(vec![Arc::new(source)], true).unwrap();
        let result = imported.seed_mounts(&store, &["m".to_string()]);
        assert!(!victim.join("escape").exists(), "a mount blob wrote outside its mount");
        let seeded = store.cache_mount_path("m");
        if contained {
            assert_eq!(result.unwrap(), ["m"]);
            assert!(seeded.join("victim/escape").is_file());
        } else {
            assert!(matches!(result, Err(RemoteError::SeedMount { .. })), "{result:?}");
            assert!(!seeded.exists(), "a failed seed left a mount");
            let leftovers = std::fs::read_dir(store.root().join("tmp")).unwrap().count();
            assert_eq!(leftovers, 0, "a failed seed left its draft");
        }
    }
}

/// A layout sink with a concurrent exporter beside it: after each of our
/// first `races` writes, the other exporter writes its artifact (read
/// before ours, so it lacks our records), as a second CI runner would.
struct RacingSink {
    inner: LayoutCache,
    theirs: std::sync::Mutex<(usize, Vec<u8>)>,
}

impl BlobSink for RacingSink {
    fn name(&self) -> String {
        "racing".into()
    }
    fn read_artifact(&self) -> Result<Option<(Manifest, Vec<u8>)>, TransportError> {
        BlobSink::read_artifact(&self.inner)
    }
    fn has_blob(&self, digest: &str) -> Result<bool, TransportError> {
        self.inner.has_blob(digest)
    }
    fn write_blobs(&self, config: &[u8], layers: &[(LayerDescriptor, PathBuf)]) -> Result<(), TransportError> {
        BlobSink::write_blobs(&self.inner, config, layers)
    }
    fn write_manifest(&self, manifest: &[u8]) -> Result<(), TransportError> {
        BlobSink::write_manifest(&self.inner, manifest)?;
        let mut theirs = self.theirs.lock().unwrap();
        if theirs.0 > 0 {
            theirs.0 -= 1;
            let config = theirs.1.clone();
            let manifest = CacheConfig::parse(&config)?.manifest(&config);
            BlobSink::write_blobs(&self.inner, &config, &[])?;
            BlobSink::write_manifest(&self.inner, &manifest)?;
        }
        Ok(())
    }
}

/// Two exports to one target at once: a write replaced by the other
/// exporter's is detected by reading back, merged and written again, so
/// both exports' records survive (the same platform's as a union); one
/// that keeps losing the race fails loudly after MERGE_ATTEMPTS rounds,
/// leaving the other's complete artifact.
#[test]
fn concurrent_exports_merge_or_fail_loudly() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("a")).unwrap();
    let base = snapshot(&store, "base", "base\n");
    store
        .record("k-ours", &CacheRecord { layers: vec![None], chain: vec![base], created: 0, extra: BTreeMap::new() })
        .unwrap();
    // The other runner's artifact: records of another platform and of ours.
    let mut other = CacheConfig::new();
    other.platforms.entry("linux/arm64".into()).or_default().insert("k-arm".into(), CacheEntry { layers: vec![None] });
    other
        .platforms
        .entry("linux/amd64".into())
        .or_default()
        .insert("k-theirs".into(), CacheEntry { layers: vec![None] });
    let sink = |races| RacingSink {
        inner: LayoutCache::new(tmp.path().join(format!("cache-{races}")), None),
        theirs: std::sync::Mutex::new((races, other.to_json())),
    };

    let racing = sink(2);
    export(&store, &racing, &plan(&[("linux/amd64", &["k-ours"])], None)).unwrap();
    let c = read_config("t", BlobSink::read_artifact(&racing).unwrap()).unwrap().unwrap();
    assert!(c.platforms["linux/arm64"].contains_key("k-arm"), "{c:?}");
    assert!(c.platforms["linux/amd64"].contains_key("k-ours"), "{c:?}");
    assert!(c.platforms["linux/amd64"].contains_key("k-theirs"), "same platform: a union after a conflict: {c:?}");

    let losing = sink(usize::MAX);
    let err = export(&store, &losing, &plan(&[("linux/amd64", &["k-ours"])], None)).unwrap_err();
    assert!(matches!(err, RemoteError::ConcurrentExport { attempts: MERGE_ATTEMPTS, .. }), "{err:?}");
    assert!(err.to_string().contains("another export replaced the cache artifact"), "{err}");
    let c = read_config("t", BlobSink::read_artifact(&losing).unwrap()).unwrap().unwrap();
    assert_eq!(c, other, "the target holds the other export's complete artifact");
}

/// A layout sink whose reads and manifest writes take `latency` each (a
/// distant registry), with an exporter beside it that re-read the target
/// before our manifest and writes its own `late` after ours, and a log of
/// when our manifest was written and read back.
struct SlowSink {
    inner: LayoutCache,
    dir: PathBuf,
    other: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    latency: std::time::Duration,
    late: std::time::Duration,
    theirs: std::sync::Mutex<Option<Vec<u8>>>,
    log: std::sync::Mutex<Vec<(&'static str, std::time::Instant)>>,
}

impl BlobSink for SlowSink {
    fn name(&self) -> String {
        "slow".into()
    }
    fn read_artifact(&self) -> Result<Option<(Manifest, Vec<u8>)>, TransportError> {
        std::thread::sleep(self.latency);
        self.log.lock().unwrap().push(("read", std::time::Instant::now()));
        BlobSink::read_artifact(&self.inner)
    }
    fn has_blob(&self, digest: &str) -> Result<bool, TransportError> {
        self.inner.has_blob(digest)
    }
    fn write_blobs(&self, config: &[u8], layers: &[(LayerDescriptor, PathBuf)]) -> Result<(), TransportError> {
        BlobSink::write_blobs(&self.inner, config, layers)
    }
    fn write_manifest(&self, manifest: &[u8]) -> Result<(), TransportError> {
        std::thread::sleep(self.latency);
        BlobSink::write_manifest(&self.inner, manifest)?;
        self.log.lock().unwrap().push(("write", std::time::Instant::now()));
        if let Some(config) = self.theirs.lock().unwrap().take() {
            // Theirs lands `late` after ours, as a slow second runner's.
            let (dir, late) = (self.dir.clone(), self.late);
            *self.other.lock().unwrap() = Some(std::thread::spawn(move || {
                std::thread::sleep(late);
                let other = LayoutCache::new(dir, None);
                let manifest = CacheConfig::parse(&config).unwrap().manifest(&config);
                BlobSink::write_blobs(&other, &config, &[]).unwrap();
                BlobSink::write_manifest(&other, &manifest).unwrap();
            }));
        }
        Ok(())
    }
}

/// The read-back waits in proportion to the target's latency (at least
/// SETTLE): against a target where a request takes 50 ms it comes 0.4 s
/// after the write, so a concurrent export landing 250 ms after ours
/// (which a fixed 0.1 s wait would miss, losing our records) is seen and
/// merged with.
#[test]
fn the_read_back_waits_in_proportion_to_the_targets_latency() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("a")).unwrap();
    let base = snapshot(&store, "base", "base\n");
    store
        .record("k-ours", &CacheRecord { layers: vec![None], chain: vec![base], created: 0, extra: BTreeMap::new() })
        .unwrap();
    let mut other = CacheConfig::new();
    other.platforms.entry("linux/arm64".into()).or_default().insert("k-arm".into(), CacheEntry { layers: vec![None] });
    let ms = std::time::Duration::from_millis;
    let sink = |latency, late, theirs: Option<Vec<u8>>| SlowSink {
        inner: LayoutCache::new(tmp.path().join(format!("cache-{latency:?}")), None),
        dir: tmp.path().join(format!("cache-{latency:?}")),
        other: std::sync::Mutex::new(None),
        latency,
        late,
        theirs: std::sync::Mutex::new(theirs),
        log: std::sync::Mutex::new(Vec::new()),
    };
    // The write's time is measured from the check before it (a read and
    // the write: 2 x 50 ms), so the read-back comes 4 x 100 ms after it.
    let slow = sink(ms(50), ms(250), Some(other.to_json()));
    export(&store, &slow, &plan(&[("linux/amd64", &["k-ours"])], None)).unwrap();
    slow.other.lock().unwrap().take().expect("the other export ran").join().unwrap();
    let c = read_config("t", BlobSink::read_artifact(&slow).unwrap()).unwrap().unwrap();
    assert!(c.platforms["linux/arm64"].contains_key("k-arm"), "theirs was lost: {c:?}");
    assert!(c.platforms["linux/amd64"].contains_key("k-ours"), "ours was lost: {c:?}");
    let log = slow.log.lock().unwrap().clone();
    let first_write = log.iter().position(|(what, _)| *what == "write").unwrap();
    let (_, written) = log[first_write];
    let (_, read_back) = log[first_write + 1];
    assert!(read_back - written >= ms(400), "read back {:?} after the write", read_back - written);

    // A fast target: the least wait, SETTLE.
    let fast = sink(ms(0), ms(0), None);
    export(&store, &fast, &plan(&[("linux/amd64", &["k-ours"])], None)).unwrap();
    let log = fast.log.lock().unwrap().clone();
    let first_write = log.iter().position(|(what, _)| *what == "write").unwrap();
    let gap = log[first_write + 1].1 - log[first_write].1;
    assert!(gap >= SETTLE && gap < SETTLE + ms(400), "read back {gap:?} after the write");
}
