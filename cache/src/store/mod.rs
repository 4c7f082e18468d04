//! The on-disk store: blobs, snapshots, cache index, tags, resolved
//! references, cache mounts, leases and the checksum cache.
//!
//! Layout under the root:
//!
//! ```text
//! blobs/sha256/<hex>            content-addressed blobs
//! snapshots/<id>/{diff,work}    committed snapshots (id: 12 hex chars, short
//!                               because overlay `lowerdir=` strings must fit a page;
//!                               work/: what overlay left there, empty directories)
//! snapshots/<id>/size           bytes in diff/, computed at commit (absent: 0, or
//!                               measured when asked for)
//! snapshots/<id>/layers/<n>.json  layer blob known for this diff, per note name
//!                               (`gzip-6`, `zstd-3-e0`, ...; `tar[-e<epoch>]`:
//!                               the deferred layer, whose blob is not stored)
//! diffs/<hex>.json              diff id -> the snapshot (+ epoch) whose tar it
//!                               is: a deferred layer, re-made on demand
//! index/<sha256(key)>.json      cache key -> CacheRecord (mtime = last use)
//! tags/<sha256(name)>.json      image name -> manifest digest
//! refs/<sha256(key)>.json       image reference + platform -> manifest digest
//! mounts/<id>/                  `--mount=type=cache` directories
//! checksums                     stat-keyed checksum cache (binary)
//! locks/<owner>.lock            held (flock) for the life of each open Store
//! leases/<owner>.<n>            append-only lists of what a live owner holds
//! tmp/<owner>.<what>-<n>        unfinished writes and snapshot drafts
//! gc.lock                       shared by writers, exclusive for prune
//! ```
//!
//! Every file that becomes visible under its final name was written to
//! `tmp/` and renamed, so a process killed at any point leaves only
//! `tmp/` and `leases/` entries named after its owner id. What a user or
//! another machine relies on (blobs, tags, resolved references) is also
//! fsynced before the rename. What only makes later builds faster (cache
//! index records, layer-for-snapshot notes, snapshot renames) is not: a
//! killed process loses nothing the kernel has not written (the page cache
//! outlives it), and after a power loss a lost or torn record reads as a
//! miss, never as a wrong hit. Those fsyncs were most of the per-`RUN`
//! overhead (2-8 ms a step on ext4). An owner is alive
//! while its `locks/<owner>.lock` is flock-ed; the kernel drops that lock
//! when the process dies, and the next [`Store::open`] (or prune) removes
//! everything the dead owner left behind. Using a lock rather than the pid
//! alone makes pid reuse harmless.

mod background;
mod checksum;
mod deferred;
mod lease;
mod prune;
mod snapshot;
mod tee;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use checksum::{ChecksumCache, FxBuildHasher, FxHasher, StatKey};
pub use deferred::Materialized;
pub use lease::Lease;
pub use prune::{DiskUsage, MountUsage, PruneOptions, PruneReport};
pub use snapshot::SnapshotDraft;
pub use tee::LayerTee;

use crate::fsutil;
use crate::oci::{LayerDescriptor, sha256_digest};
use lease::LeaseLog;

/// Errors from store operations. Paths name the file that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A store directory could not be created.
    #[error("cannot create store directory `{}`", .path.display())]
    CreateDir {
        /// Directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A lock file could not be opened or locked.
    #[error("cannot lock `{}`", .path.display())]
    Lock {
        /// Lock file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Writing a file (or its temporary) failed.
    #[error("cannot write `{}`", .path.display())]
    Write {
        /// File being written.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Reading a file failed.
    #[error("cannot read `{}`", .path.display())]
    Read {
        /// File being read.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Moving a finished temporary into place failed.
    #[error("cannot rename `{}` to `{}`", .from.display(), .to.display())]
    Rename {
        /// Source.
        from: PathBuf,
        /// Destination.
        to: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Removing a file or tree failed.
    #[error("cannot remove `{}`", .path.display())]
    Remove {
        /// What was being removed.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A store file exists but does not parse; remove it or run `rbuild prune`.
    #[error("`{}` is corrupt; remove it", .path.display())]
    Corrupt {
        /// The corrupt file.
        path: PathBuf,
        /// Parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be serialised.
    #[error("cannot encode {what}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A digest is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid digest `{0}`: expected `sha256:` and 64 lowercase hex digits")]
    InvalidDigest(String),
    /// The blob is not in the store.
    #[error("blob `{0}` is not in the store")]
    BlobNotFound(String),
    /// Written content does not hash to the expected digest.
    #[error("digest mismatch: expected `{expected}`, got `{actual}`")]
    DigestMismatch {
        /// Digest the caller expected.
        expected: String,
        /// Digest of the bytes actually written.
        actual: String,
    },
    /// A snapshot could not be written as a layer tar.
    #[error("cannot write the layer of snapshot `{snapshot}`")]
    WriteLayer {
        /// The snapshot.
        snapshot: String,
        /// Cause.
        #[source]
        source: crate::layer::LayerWriteError,
    },
    /// A deferred layer's snapshot no longer tars to the diff id its image
    /// names: it was modified after it was committed.
    #[error(
        "snapshot `{snapshot}` no longer matches layer `{expected}` (its tar is now `{actual}`): the store was \
         modified behind rbuild's back; remove the image and build it again"
    )]
    SnapshotChanged {
        /// The snapshot.
        snapshot: String,
        /// The diff id recorded (and named by the image config).
        expected: String,
        /// The diff id of the tar made now.
        actual: String,
    },
    /// A layer the store keeps as its snapshot (not as a blob) whose
    /// snapshot is gone.
    #[error("layer `{0}` is neither a blob nor a snapshot in the store; build the image again")]
    LayerNotFound(String),
    /// The snapshot is not in the store (never committed, or pruned).
    #[error("snapshot `{0}` is not in the store")]
    SnapshotNotFound(String),
    /// A name used to build a path contains characters that are not allowed.
    #[error("invalid {what} `{value}`")]
    InvalidName {
        /// Kind of name.
        what: &'static str,
        /// The rejected value.
        value: String,
    },
    /// No unique snapshot id could be generated.
    #[error("cannot generate a snapshot id")]
    Random(#[source] io::Error),
}

/// What a cache key resolves to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CacheRecord {
    /// Snapshot ids, base first.
    pub chain: Vec<SnapshotId>,
    /// Layer blobs for the chain where known (same length as `chain`).
    pub layers: Vec<Option<LayerDescriptor>>,
    /// Creation time, unix seconds.
    pub created: u64,
    /// Free-form extra data (ordered so it serialises deterministically).
    pub extra: BTreeMap<String, String>,
}

/// Name of a committed snapshot directory (`snapshots/<id>`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(transparent)]
pub struct SnapshotId(pub String);

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A handle on an open store. Cheap to clone; all clones share one owner
/// id, lock and session lease.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    root: PathBuf,
    /// `<pid>-<nonce>`: prefix of every temp and lease name this handle makes.
    owner: String,
    /// Held for the life of the handle; proves the owner alive to others.
    owner_lock: File,
    counter: AtomicU64,
    /// Everything this process created or looked up is protected from a
    /// concurrent prune until the process ends.
    session: LeaseLog,
    checksums: OnceLock<ChecksumCache>,
    /// Layer blobs being written in the background.
    background: background::Background,
    /// Per snapshot id, whether its diff is empty (see
    /// [`Store::snapshot_is_empty`]); snapshots are immutable, so once known
    /// it never changes.
    empty_diffs: Mutex<HashMap<String, bool>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.session.path);
        let _ = fs::remove_file(self.root.join("locks").join(format!("{}.lock", self.owner)));
        let _ = self.owner_lock.unlock();
    }
}

const DIRS: &[&str] =
    &["blobs/sha256", "snapshots", "diffs", "index", "tags", "refs", "mounts", "locks", "leases", "tmp"];

impl Store {
    /// Opens (creating if needed) the store at `root`, and removes what dead
    /// processes left in `tmp/` and `leases/`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for d in DIRS {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(|source| StoreError::CreateDir { path: p, source })?;
        }
        let root =
            fs::canonicalize(root).map_err(|source| StoreError::CreateDir { path: root.to_path_buf(), source })?;
        let (owner, owner_lock) = acquire_owner(&root)?;
        let session_path = root.join("leases").join(format!("{owner}.session"));
        let session = LeaseLog::create(session_path)?;
        let store = Store {
            inner: Arc::new(Inner {
                root,
                owner,
                owner_lock,
                counter: AtomicU64::new(0),
                session,
                checksums: OnceLock::new(),
                background: background::Background::default(),
                empty_diffs: Mutex::new(HashMap::new()),
            }),
        };
        store.clean_dead_owners();
        Ok(store)
    }

    /// The store's root directory (canonical).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    // ---------------------------------------------------------------- blobs

    /// Whether the blob is present. Invalid digests are never present.
    pub fn has_blob(&self, digest: &str) -> bool {
        parse_digest(digest).is_ok() && self.blob_path(digest).is_file()
    }

    /// Where the blob lives (or would live). For an invalid digest this is a
    /// path that never exists, so it cannot be used to escape the store.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        match parse_digest(digest) {
            Ok(hex) => self.inner.root.join("blobs/sha256").join(hex),
            Err(_) => self.inner.root.join("blobs/invalid-digest"),
        }
    }

    /// A writer that hashes while it writes; [`BlobWriter::finish`] moves the
    /// blob into place under its digest.
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        let tmp = self.inner.tmp_path("blob");
        let file = File::create_new(&tmp).map_err(|source| StoreError::Write { path: tmp.clone(), source })?;
        Ok(BlobWriter {
            inner: self.inner.clone(),
            tmp,
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Stores `bytes` and returns their digest (no write if already present).
    pub fn write_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let digest = sha256_digest(bytes);
        let path = self.blob_path(&digest);
        if path.is_file() {
            let _gc = self.inner.gc_shared()?;
            if path.is_file() {
                touch(&path);
                self.inner.session.append('b', &digest)?;
                return Ok(digest);
            }
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(|source| StoreError::Write { path: w.tmp.clone(), source })?;
        w.finish()
    }

    /// Reads a whole blob into memory (use [`Store::blob_path`] for layers).
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        parse_digest(digest)?;
        let path = self.blob_path(digest);
        fs::read(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                StoreError::BlobNotFound(digest.to_string())
            } else {
                StoreError::Read { path, source }
            }
        })
    }

    // ------------------------------------------------------------ snapshots

    /// Starts a new snapshot in `tmp/`; commit it or drop it to discard.
    pub fn new_snapshot(&self) -> Result<SnapshotDraft, StoreError> {
        SnapshotDraft::create(self.inner.clone())
    }

    /// The `diff` directory of a committed snapshot (the overlay layer).
    pub fn snapshot_diff(&self, id: &SnapshotId) -> PathBuf {
        self.inner.snapshot_dir(id).join("diff")
    }

    /// The directory of a committed snapshot (parent of its `diff`), where
    /// metadata about it lives beside the layer.
    pub fn snapshot_dir(&self, id: &SnapshotId) -> PathBuf {
        self.inner.snapshot_dir(id)
    }

    /// Whether a committed snapshot's diff adds nothing to a view stacked
    /// over it: no entry at all (a diff of only whiteouts, opaque markers or
    /// empty directories is not empty) and a root directory as a fresh
    /// draft's (mode 0755, this process's owner, no xattrs), so leaving it out
    /// of an overlay changes neither its contents nor the attributes of its
    /// root. Checked once per snapshot and process (one `getdents`; the
    /// snapshot is immutable), and `false` for anything unreadable.
    pub fn snapshot_is_empty(&self, id: &SnapshotId) -> bool {
        if let Some(known) = self.inner.empty_diffs.lock().unwrap_or_else(|p| p.into_inner()).get(&id.0) {
            return *known;
        }
        let empty = valid_snapshot_id(&id.0) && snapshot::diff_is_empty(&self.snapshot_diff(id));
        self.inner.empty_diffs.lock().unwrap_or_else(|p| p.into_inner()).insert(id.0.clone(), empty);
        empty
    }

    /// Whether snapshot `id`'s diff has no entry at all: such a snapshot has
    /// no layer (the exporter leaves it out of the image, as BuildKit does).
    /// Looser than [`Store::snapshot_is_empty`], which also asks that the
    /// diff's root be untouched (what a mounted view may skip).
    pub fn diff_has_no_entries(&self, id: &SnapshotId) -> std::io::Result<bool> {
        Ok(fs::read_dir(self.snapshot_diff(id))?.next().is_none())
    }

    /// The diff directories a view of `chain` (base first) stacks: the
    /// chain's, less the empty ones ([`Store::snapshot_is_empty`]); of a
    /// chain of empty diffs only, the top one, so that a view still has a
    /// root directory of the chain's own. Only what is mounted changes; the
    /// chain, its layers and their history do not.
    pub fn mount_layers(&self, chain: &[SnapshotId]) -> Vec<PathBuf> {
        let layers: Vec<PathBuf> =
            chain.iter().filter(|id| !self.snapshot_is_empty(id)).map(|id| self.snapshot_diff(id)).collect();
        match chain.last() {
            Some(top) if layers.is_empty() => vec![self.snapshot_diff(top)],
            _ => layers,
        }
    }

    /// Whether a committed snapshot exists.
    pub fn has_snapshot(&self, id: &SnapshotId) -> bool {
        valid_snapshot_id(&id.0) && self.snapshot_diff(id).is_dir()
    }

    // ---------------------------------------------------------------- index

    /// Looks up a cache key. A record whose snapshots are gone counts as a
    /// miss; layer blobs that are gone read as `None`. A hit refreshes the
    /// record's last-use time and protects its contents from prune for the
    /// life of this process.
    pub fn lookup(&self, key: &str) -> Result<Option<CacheRecord>, StoreError> {
        let path = key_file(&self.inner.root.join("index"), key);
        let _gc = self.inner.gc_shared()?;
        // Records are written without fsync: one torn by a power loss is a miss.
        let Some(entry) = read_json_or_miss::<IndexEntry>(&path)? else {
            return Ok(None);
        };
        if entry.key != key {
            return Ok(None);
        }
        let mut rec = entry.record;
        if rec.chain.iter().any(|id| !self.has_snapshot(id)) {
            return Ok(None);
        }
        for layer in rec.layers.iter_mut() {
            if let Some(l) = layer
                && !self.has_blob(&l.digest)
            {
                *layer = None;
            }
        }
        for id in &rec.chain {
            self.inner.session.append('s', &id.0)?;
            touch(&self.inner.snapshot_dir(id));
        }
        for l in rec.layers.iter().flatten() {
            self.inner.session.append('b', &l.digest)?;
        }
        touch(&path);
        Ok(Some(rec))
    }

    /// Records (or replaces) what a cache key resolves to. Hold a lease on
    /// (or have created in this process) everything the record names.
    pub fn record(&self, key: &str, rec: &CacheRecord) -> Result<(), StoreError> {
        for id in &rec.chain {
            if !valid_snapshot_id(&id.0) {
                return Err(StoreError::InvalidName { what: "snapshot id", value: id.0.clone() });
            }
        }
        let entry = IndexEntry { key: key.to_string(), record: rec.clone() };
        let bytes = serde_json::to_vec(&entry).map_err(|source| StoreError::Encode { what: "cache record", source })?;
        let _gc = self.inner.gc_shared()?;
        self.inner.write_replace(&key_file(&self.inner.root.join("index"), key), &bytes)
    }

    /// The layer blob already made from this snapshot's diff under note
    /// `name` (see [`crate::layer::note_name`]: `gzip-6`, `zstd-3-e0`, ...),
    /// or else one noted by the kind alone (`gzip`: a pulled or imported
    /// blob, reused whatever its level), if its blob is still present.
    /// Waits for a [`Store::compress_in_background`] job writing it.
    pub fn layer_for_snapshot(&self, id: &SnapshotId, name: &str) -> Result<Option<LayerDescriptor>, StoreError> {
        self.inner.background.wait(id, name);
        self.layer_for_snapshot_now(id, name)
    }

    /// [`Store::layer_for_snapshot`] without waiting for background jobs.
    fn layer_for_snapshot_now(&self, id: &SnapshotId, name: &str) -> Result<Option<LayerDescriptor>, StoreError> {
        if let Some(layer) = self.noted_layer(id, name)? {
            return Ok(Some(layer));
        }
        match name.split_once('-') {
            Some((kind, _)) => self.noted_layer(id, kind),
            None => Ok(None),
        }
    }

    /// The blob noted for `id` under exactly `name`, if present.
    fn noted_layer(&self, id: &SnapshotId, name: &str) -> Result<Option<LayerDescriptor>, StoreError> {
        let path = self.layer_file(id, name)?;
        let Some(layer) = read_json_or_miss::<LayerDescriptor>(&path)? else {
            return Ok(None);
        };
        if !self.has_blob(&layer.digest) {
            return Ok(None);
        }
        self.inner.session.append('b', &layer.digest)?;
        Ok(Some(layer))
    }

    /// Remembers the layer blob made from this snapshot's diff.
    pub fn set_layer_for_snapshot(
        &self,
        id: &SnapshotId,
        name: &str,
        layer: &LayerDescriptor,
    ) -> Result<(), StoreError> {
        parse_digest(&layer.digest)?;
        let path = self.layer_file(id, name)?;
        let bytes =
            serde_json::to_vec(layer).map_err(|source| StoreError::Encode { what: "layer descriptor", source })?;
        let _gc = self.inner.gc_shared()?;
        if !self.has_snapshot(id) {
            return Err(StoreError::SnapshotNotFound(id.0.clone()));
        }
        let dir = path.parent().expect("layer file has a parent");
        fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir { path: dir.to_path_buf(), source })?;
        // A lost note costs one recompression; the blob it names is durable.
        self.inner.write_replace(&path, &bytes)
    }

    fn layer_file(&self, id: &SnapshotId, name: &str) -> Result<PathBuf, StoreError> {
        if !valid_snapshot_id(&id.0) {
            return Err(StoreError::InvalidName { what: "snapshot id", value: id.0.clone() });
        }
        let ok = !name.is_empty()
            && name.len() <= 32
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-_".contains(&b));
        if !ok {
            return Err(StoreError::InvalidName { what: "layer note name", value: name.into() });
        }
        Ok(self.inner.snapshot_dir(id).join("layers").join(format!("{name}.json")))
    }

    // ------------------------------------------------------- tags and refs

    /// Points an image name at a manifest blob.
    pub fn set_tag(&self, name: &str, manifest_digest: &str) -> Result<(), StoreError> {
        self.set_named("tags", name, manifest_digest)
    }

    /// The manifest digest an image name points at.
    pub fn tag(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.get_named("tags", name)
    }

    /// Removes a tag; returns whether it existed.
    pub fn remove_tag(&self, name: &str) -> Result<bool, StoreError> {
        let path = key_file(&self.inner.root.join("tags"), name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError::Remove { path, source }),
        }
    }

    /// All tags as `(name, manifest digest)`, sorted by name.
    pub fn tags(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut out: Vec<(String, String)> =
            self.list_named("tags")?.into_iter().map(|(_, e)| (e.name, e.digest)).collect();
        out.sort();
        Ok(out)
    }

    /// The manifest digest an image reference (plus platform) resolved to.
    pub fn resolved_ref(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.get_named("refs", key)
    }

    /// Remembers what an image reference resolved to.
    pub fn set_resolved_ref(&self, key: &str, digest: &str) -> Result<(), StoreError> {
        self.set_named("refs", key, digest)
    }

    /// Every remembered resolution as `(reference|platform, manifest digest)`.
    pub fn resolved_refs(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.list_named("refs")?.into_iter().map(|(_, e)| (e.name, e.digest)).collect())
    }

    fn set_named(&self, dir: &str, name: &str, digest: &str) -> Result<(), StoreError> {
        parse_digest(digest)?;
        let entry = NamedEntry { name: name.to_string(), digest: digest.to_string() };
        let bytes = serde_json::to_vec(&entry).map_err(|source| StoreError::Encode { what: "name entry", source })?;
        let _gc = self.inner.gc_shared()?;
        self.inner.write_atomic(&key_file(&self.inner.root.join(dir), name), &bytes)
    }

    fn get_named(&self, dir: &str, name: &str) -> Result<Option<String>, StoreError> {
        let path = key_file(&self.inner.root.join(dir), name);
        Ok(read_json::<NamedEntry>(&path)?.filter(|e| e.name == name).map(|e| e.digest))
    }

    fn list_named(&self, dir: &str) -> Result<Vec<(PathBuf, NamedEntry)>, StoreError> {
        let mut out = Vec::new();
        for path in list_dir(&self.inner.root.join(dir))? {
            if let Some(e) = read_json::<NamedEntry>(&path)? {
                out.push((path, e));
            }
        }
        Ok(out)
    }

    // --------------------------------------------------------- cache mounts

    /// The persistent directory for a `--mount=type=cache` id, created if
    /// missing. Ids that are not plain names (paths, say) are hashed.
    pub fn cache_mount_dir(&self, id: &str) -> Result<PathBuf, StoreError> {
        let name = mount_dir_name(id);
        let path = self.inner.root.join("mounts").join(&name);
        fs::create_dir_all(&path).map_err(|source| StoreError::CreateDir { path: path.clone(), source })?;
        if name != id {
            // `rbuild du` shows the id, which a hashed name no longer says.
            let id_file = path.with_file_name(format!("{name}.id"));
            if !id_file.exists() {
                fs::write(&id_file, id).map_err(|source| StoreError::Write { path: id_file, source })?;
            }
        }
        Ok(path)
    }

    /// Where the directory of cache mount `id` is (or would be), without
    /// creating it.
    pub fn cache_mount_path(&self, id: &str) -> PathBuf {
        self.inner.root.join("mounts").join(mount_dir_name(id))
    }

    /// A fresh empty directory in the store's `tmp/` to fill and then
    /// [`Store::install_cache_mount`].
    pub fn cache_mount_draft(&self) -> Result<PathBuf, StoreError> {
        let path = self.inner.tmp_path("mount-seed");
        fs::create_dir_all(&path).map_err(|source| StoreError::CreateDir { path: path.clone(), source })?;
        Ok(path)
    }

    /// Installs the filled `draft` as cache mount `id` if the store has no
    /// such mount yet or only an empty one (returns whether it did): a mount
    /// with contents is never replaced (rename(2) refuses a non-empty
    /// target), and the draft is then removed.
    pub fn install_cache_mount(&self, id: &str, draft: &Path) -> Result<bool, StoreError> {
        let path = self.cache_mount_path(id);
        let parent = self.inner.root.join("mounts");
        fs::create_dir_all(&parent).map_err(|source| StoreError::CreateDir { path: parent, source })?;
        if fs::rename(draft, &path).is_ok() {
            return Ok(true);
        }
        let _ = fs::remove_dir_all(draft);
        Ok(false)
    }

    // --------------------------------------------------------------- leases

    /// A lease protects what is added to it from prune until it is dropped
    /// or the process dies.
    pub fn lease(&self) -> Result<Lease, StoreError> {
        Lease::create(self.inner.clone())
    }

    /// The persistent stat-keyed checksum cache (loaded on first use).
    pub fn checksum_cache(&self) -> ChecksumCache {
        self.inner
            .checksums
            .get_or_init(|| ChecksumCache::load(&self.inner.root, self.inner.tmp_path("checksums")))
            .clone()
    }

    /// Removes `tmp/` and `leases/` entries of owners that are no longer
    /// alive. Errors are ignored: cleanup is best effort and retried at the
    /// next open.
    fn clean_dead_owners(&self) {
        let root = &self.inner.root;
        let locks = root.join("locks");
        if let Ok(rd) = fs::read_dir(&locks) {
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                let Some(owner) = name.strip_suffix(".lock") else {
                    continue;
                };
                if owner == self.inner.owner {
                    continue;
                }
                let Ok(f) = File::open(ent.path()) else {
                    continue;
                };
                if f.try_lock().is_ok() {
                    // Dead: we now hold its lock, so no one else cleans it.
                    self.remove_owned_by(owner);
                    let _ = fs::remove_file(ent.path());
                }
            }
        }
        // Entries whose owner lock file is gone entirely (cleaner crashed
        // halfway, or the owner never got that far).
        for dir in ["tmp", "leases"] {
            if let Ok(rd) = fs::read_dir(root.join(dir)) {
                for ent in rd.flatten() {
                    let name = ent.file_name().to_string_lossy().into_owned();
                    let owner = name.split('.').next().unwrap_or("");
                    if owner != self.inner.owner && !locks.join(format!("{owner}.lock")).exists() {
                        let _ = fsutil::remove_tree(&ent.path());
                    }
                }
            }
        }
    }

    fn remove_owned_by(&self, owner: &str) {
        let prefix = format!("{owner}.");
        for dir in ["tmp", "leases"] {
            if let Ok(rd) = fs::read_dir(self.inner.root.join(dir)) {
                for ent in rd.flatten() {
                    if ent.file_name().to_string_lossy().starts_with(&prefix) {
                        let _ = fsutil::remove_tree(&ent.path());
                    }
                }
            }
        }
    }
}

/// Creates `locks/<owner>.lock` and flocks it. A concurrent cleaner may
/// grab and delete a lock file in the instant between its creation and our
/// lock; we detect that by comparing inodes and retry with a new id.
fn acquire_owner(root: &Path) -> Result<(String, File), StoreError> {
    let mut last_err = None;
    for _ in 0..16 {
        let nonce = fsutil::random_hex(4).map_err(StoreError::Random)?;
        let owner = format!("{}-{nonce}", std::process::id());
        let path = root.join("locks").join(format!("{owner}.lock"));
        let f = match File::create_new(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(StoreError::Lock { path, source }),
        };
        f.lock().map_err(|source| StoreError::Lock { path: path.clone(), source })?;
        let same = match (f.metadata(), fs::metadata(&path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            (_, Err(e)) => {
                last_err = Some(e);
                false
            }
            _ => false,
        };
        if same {
            return Ok((owner, f));
        }
    }
    Err(StoreError::Lock {
        path: root.join("locks"),
        source: last_err.unwrap_or_else(|| io::Error::other("no unique owner id")),
    })
}

impl Inner {
    fn tmp_path(&self, what: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.root.join("tmp").join(format!("{}.{what}-{n}", self.owner))
    }

    fn snapshot_dir(&self, id: &SnapshotId) -> PathBuf {
        self.root.join("snapshots").join(&id.0)
    }

    /// Shared hold on `gc.lock`: prune (exclusive) cannot run while a writer
    /// is between "check it exists" and "recorded it". Each call opens its
    /// own descriptor because flock state is per open file description.
    fn gc_shared(&self) -> Result<File, StoreError> {
        self.gc_lock(false)
    }

    fn gc_lock(&self, exclusive: bool) -> Result<File, StoreError> {
        let path = self.root.join("gc.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::Lock { path: path.clone(), source })?;
        let r = if exclusive { f.lock() } else { f.lock_shared() };
        r.map_err(|source| StoreError::Lock { path, source })?;
        Ok(f)
    }

    /// temp + fsync + rename + fsync(dir).
    fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        self.write_renamed(dest, bytes, true)
    }

    /// temp + rename: all or nothing for a killed process, not durable
    /// across a power loss (for records whose loss is a cache miss).
    fn write_replace(&self, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        self.write_renamed(dest, bytes, false)
    }

    fn write_renamed(&self, dest: &Path, bytes: &[u8], durable: bool) -> Result<(), StoreError> {
        let tmp = self.tmp_path("w");
        let written = File::create_new(&tmp).and_then(|mut f| {
            f.write_all(bytes)?;
            if durable { f.sync_all() } else { Ok(()) }
        });
        if let Err(source) = written {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::Write { path: tmp, source });
        }
        if let Err(source) = fs::rename(&tmp, dest) {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::Rename { from: tmp, to: dest.to_path_buf(), source });
        }
        if durable {
            sync_parent(dest);
        }
        Ok(())
    }

    fn alive(&self, owner: &str) -> bool {
        if owner == self.owner {
            return true;
        }
        let Ok(f) = File::open(self.root.join("locks").join(format!("{owner}.lock"))) else {
            return false;
        };
        // Locking succeeds only if nobody holds it; the lock is released
        // again when `f` drops at the end of this function.
        f.try_lock().is_err()
    }
}

/// Streams a blob into the store while hashing it.
pub struct BlobWriter {
    inner: Arc<Inner>,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
    hasher: Sha256,
    size: u64,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Digest of what was written so far.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize().as_slice()))
    }

    /// Finishes the blob and moves it into place; returns its digest.
    pub fn finish(self) -> Result<String, StoreError> {
        self.finish_inner(None)
    }

    /// Like [`BlobWriter::finish`], but fails (and stores nothing) unless the
    /// content hashes to `expected`. Use for everything downloaded.
    pub fn finish_expecting(self, expected: &str) -> Result<String, StoreError> {
        parse_digest(expected)?;
        self.finish_inner(Some(expected))
    }

    fn finish_inner(mut self, expected: Option<&str>) -> Result<String, StoreError> {
        let file = self.file.take().expect("file present until finish");
        let synced = file.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all());
        if let Err(source) = synced {
            return Err(StoreError::Write { path: self.tmp.clone(), source });
        }
        let digest = self.digest();
        if let Some(exp) = expected
            && exp != digest
        {
            return Err(StoreError::DigestMismatch { expected: exp.to_string(), actual: digest });
        }
        let dest = self.inner.root.join("blobs/sha256").join(&digest["sha256:".len()..]);
        let _gc = self.inner.gc_shared()?;
        if dest.is_file() {
            // Same content already stored by someone else: keep theirs.
            touch(&dest);
        } else {
            fs::rename(&self.tmp, &dest).map_err(|source| StoreError::Rename {
                from: self.tmp.clone(),
                to: dest.clone(),
                source,
            })?;
            sync_parent(&dest);
        }
        self.inner.session.append('b', &digest)?;
        Ok(digest)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self.file.as_mut().ok_or_else(|| io::Error::other("blob writer finished"))?;
        let n = f.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a successful finish the temp was renamed away; this is then
        // a harmless ENOENT.
        let _ = fs::remove_file(&self.tmp);
    }
}

#[derive(Serialize, Deserialize)]
struct IndexEntry {
    key: String,
    record: CacheRecord,
}

#[derive(Serialize, Deserialize)]
struct NamedEntry {
    name: String,
    digest: String,
}

/// Checks a digest and returns its hex part.
fn parse_digest(digest: &str) -> Result<&str, StoreError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => Ok(h),
        _ => Err(StoreError::InvalidDigest(digest.to_string())),
    }
}

fn valid_snapshot_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn mount_dir_name(id: &str) -> String {
    let plain = !id.is_empty()
        && id.len() <= 64
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if plain {
        id.to_string()
    } else {
        // `_` never starts a plain name, so hashed and plain never collide.
        format!("_{}", &hex::encode(Sha256::digest(id.as_bytes()).as_slice())[..32])
    }
}

/// File named by the SHA-256 of an arbitrary key (keys contain `/`, `:`).
fn key_file(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{}.json", hex::encode(Sha256::digest(key.as_bytes()).as_slice())))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| StoreError::Corrupt { path: path.to_path_buf(), source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Read { path: path.to_path_buf(), source }),
    }
}

/// [`read_json`] for files written without fsync: unreadable content (a
/// file torn by a power loss) is `None`, as if it had never been written.
fn read_json_or_miss<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match read_json(path) {
        Err(StoreError::Corrupt { .. }) => Ok(None),
        other => other,
    }
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let rd = fs::read_dir(dir).map_err(|source| StoreError::Read { path: dir.to_path_buf(), source })?;
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|source| StoreError::Read { path: dir.to_path_buf(), source })?;
        out.push(ent.path());
    }
    out.sort();
    Ok(out)
}

/// Marks a path as just used (prune's LRU order). Best effort.
fn touch(path: &Path) {
    let now = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW },
        last_modification: rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW },
    };
    let _ = rustix::fs::utimensat(rustix::fs::CWD, path, &now, rustix::fs::AtFlags::empty());
}

fn sync_parent(path: &Path) {
    if let Some(p) = path.parent()
        && let Ok(d) = File::open(p)
    {
        let _ = d.sync_all();
    }
}

fn mtime(meta: &fs::Metadata) -> SystemTime {
    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests;
