//! Garbage collection (mark and sweep) and disk usage.
//!
//! Roots that are always kept: tags (and every blob their manifests and
//! indexes name) and everything held by a live lease (including the
//! session lease of each running process). Roots kept unless `all` is set
//! or `keep_storage` runs out: cache-index records and resolved references,
//! most recently used first. Prune holds `gc.lock` exclusively while it
//! marks and moves victims into `tmp/`, so a writer (which holds the lock
//! shared between "it exists" and "it is recorded or leased") never sees a
//! half-pruned store; the slow deletion happens after the lock is released.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use super::deferred::DiffRecord;
use super::lease::Held;
use super::{IndexEntry, SnapshotId, Store, StoreError, list_dir, mtime, read_json};
use crate::fsutil;

/// What to prune.
#[derive(Clone, Debug, Default)]
pub struct PruneOptions {
    /// Drop every cache record, resolved reference and unleased cache mount;
    /// only tagged images and what running builds hold survive.
    pub all: bool,
    /// Keep the most recently used cache up to this many bytes (tagged and
    /// leased data count towards it but are never removed).
    pub keep_storage: Option<u64>,
    /// Keep cache used within this long, whatever `keep_storage` says;
    /// alone, drop everything older (BuildKit's `keepDuration`).
    pub keep_duration: Option<std::time::Duration>,
}

/// What prune removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Total bytes removed.
    pub bytes_freed: u64,
    /// Blobs removed.
    pub blobs_removed: u64,
    /// Snapshots removed.
    pub snapshots_removed: u64,
    /// Cache-index records removed.
    pub records_removed: u64,
    /// Resolved image references forgotten.
    pub refs_removed: u64,
    /// Cache-mount directories removed.
    pub mounts_removed: u64,
    /// Cache mounts kept because a running build holds them.
    pub mounts_held: u64,
}

/// One cache mount of the store (`rbuild du`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountUsage {
    /// The mount id, as the Dockerfile spells it.
    pub id: String,
    /// Bytes in the directory.
    pub bytes: u64,
    /// Whether a running build holds it.
    pub held: bool,
}

/// Space used by the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Bytes in blobs.
    pub blobs_bytes: u64,
    /// Number of blobs.
    pub blobs_count: u64,
    /// Bytes in snapshot diffs.
    pub snapshots_bytes: u64,
    /// Number of snapshots.
    pub snapshots_count: u64,
    /// Bytes in cache mounts.
    pub mounts_bytes: u64,
    /// Number of cache mounts.
    pub mounts_count: u64,
    /// Number of cache-index records.
    pub records_count: u64,
    /// Layers kept as their snapshot, not as a blob (their bytes are in
    /// `snapshots_bytes`; a push or export compresses them).
    pub deferred_layers: u64,
}

/// Manifest or index fields that name other blobs.
#[derive(Deserialize)]
struct BlobRefs {
    #[serde(default)]
    config: Option<Desc>,
    #[serde(default)]
    layers: Vec<Desc>,
    #[serde(default)]
    manifests: Vec<Desc>,
}

#[derive(Deserialize)]
struct Desc {
    digest: String,
}

/// An optional root: a record or resolved-ref file and what it names.
struct Root {
    file: PathBuf,
    used: SystemTime,
    is_record: bool,
    snapshots: Vec<String>,
    blobs: Vec<String>,
}

struct Marker<'a> {
    store: &'a Store,
    snapshots: HashSet<String>,
    blobs: HashSet<String>,
    bytes: u64,
}

impl<'a> Marker<'a> {
    /// Everything reachable from the given snapshots and blobs that is not
    /// already marked, with its size. Does not mark.
    fn reach(&self, snapshots: &[String], blobs: &[String]) -> (HashSet<String>, HashSet<String>, u64) {
        let mut snaps = HashSet::new();
        let mut bls = HashSet::new();
        let mut bytes = 0;
        let mut blob_stack: Vec<String> = blobs.to_vec();
        let mut snap_stack: Vec<String> = snapshots.to_vec();
        loop {
            while let Some(s) = snap_stack.pop() {
                if self.snapshots.contains(&s) || !snaps.insert(s.clone()) {
                    continue;
                }
                bytes += self.store.snapshot_size(&s);
                let layers = self.store.inner.root.join("snapshots").join(&s).join("layers");
                if let Ok(rd) = fs::read_dir(layers) {
                    for ent in rd.flatten() {
                        if let Ok(Some(l)) = read_json::<super::LayerDescriptor>(&ent.path()) {
                            blob_stack.push(l.digest);
                        }
                    }
                }
            }
            let Some(d) = blob_stack.pop() else { break };
            if self.blobs.contains(&d) || !bls.insert(d.clone()) {
                continue;
            }
            let path = self.store.blob_path(&d);
            let Ok(meta) = fs::metadata(&path) else {
                // A deferred layer: its bytes are its snapshot's.
                if let Ok(Some(rec)) = self.store.diff_record_path(&d).and_then(|p| read_json::<DiffRecord>(&p)) {
                    snap_stack.push(rec.snapshot.0);
                }
                continue;
            };
            bytes += meta.len();
            if let Some(refs) = read_manifest(&path, meta.len()) {
                blob_stack.extend(refs.config.map(|c| c.digest));
                blob_stack.extend(refs.layers.into_iter().map(|l| l.digest));
                blob_stack.extend(refs.manifests.into_iter().map(|m| m.digest));
            }
        }
        (snaps, bls, bytes)
    }

    fn mark(&mut self, snapshots: &[String], blobs: &[String]) -> u64 {
        let (s, b, bytes) = self.reach(snapshots, blobs);
        self.snapshots.extend(s);
        self.blobs.extend(b);
        self.bytes += bytes;
        bytes
    }
}

/// Parses a small JSON blob as a manifest/index; layers and other binary
/// blobs are recognised by their first byte and never read in full.
fn read_manifest(path: &Path, len: u64) -> Option<BlobRefs> {
    if len > 4 << 20 {
        return None;
    }
    let mut f = File::open(path).ok()?;
    let mut first = [0u8; 1];
    f.read_exact(&mut first).ok()?;
    if first[0] != b'{' {
        return None;
    }
    let mut buf = vec![first[0]];
    f.read_to_end(&mut buf).ok()?;
    serde_json::from_slice(&buf).ok()
}

impl Store {
    /// Removes unreferenced blobs and snapshots (see the module docs for
    /// what counts as a reference).
    pub fn prune(&self, opts: &PruneOptions) -> Result<PruneReport, StoreError> {
        self.clean_dead_owners();
        let mut report = PruneReport::default();
        let mut trash: Vec<PathBuf> = Vec::new();
        {
            let _gc = self.inner.gc_lock(true)?;
            let held = self.live_leases()?;
            let mut marker = Marker { store: self, snapshots: HashSet::new(), blobs: HashSet::new(), bytes: 0 };
            let tag_blobs: Vec<String> = self.list_named("tags")?.into_iter().map(|(_, e)| e.digest).collect();
            marker.mark(&[], &tag_blobs);
            let held_snaps: Vec<String> = held.snapshots.iter().cloned().collect();
            let held_blobs: Vec<String> = held.blobs.iter().cloned().collect();
            marker.mark(&held_snaps, &held_blobs);

            let mut roots = self.optional_roots()?;
            // Most recently used first; ties broken by file name for a
            // deterministic order.
            roots.sort_by(|a, b| b.used.cmp(&a.used).then_with(|| a.file.cmp(&b.file)));
            let mut budget_exhausted = opts.all;
            let mut dropped: Vec<Root> = Vec::new();
            let now = SystemTime::now();
            let recent = |root: &Root| {
                opts.keep_duration.is_some_and(|d| now.duration_since(root.used).map(|age| age < d).unwrap_or(true))
            };
            for root in roots {
                if !opts.all && recent(&root) {
                    marker.mark(&root.snapshots, &root.blobs);
                    continue;
                }
                // Older than `keep_duration` with no size budget: dropped.
                if opts.keep_duration.is_some() && opts.keep_storage.is_none() {
                    budget_exhausted = true;
                }
                if !budget_exhausted && let Some(limit) = opts.keep_storage {
                    let (_, _, extra) = marker.reach(&root.snapshots, &root.blobs);
                    if marker.bytes + extra > limit {
                        budget_exhausted = true;
                    }
                }
                if budget_exhausted {
                    dropped.push(root);
                } else {
                    marker.mark(&root.snapshots, &root.blobs);
                }
            }

            for root in &dropped {
                match fs::remove_file(&root.file) {
                    Ok(()) => {
                        if root.is_record {
                            report.records_removed += 1;
                        } else {
                            report.refs_removed += 1;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(StoreError::Remove { path: root.file.clone(), source });
                    }
                }
            }

            for path in list_dir(&self.inner.root.join("snapshots"))? {
                let name = file_name(&path);
                if marker.snapshots.contains(&name) {
                    continue;
                }
                report.bytes_freed += self.snapshot_size(&name);
                report.snapshots_removed += 1;
                trash.push(self.move_to_trash(&path)?);
            }
            // Deferred layers whose snapshot just went (or was gone).
            for path in list_dir(&self.inner.root.join("diffs"))? {
                let keep = read_json::<DiffRecord>(&path)
                    .ok()
                    .flatten()
                    .is_some_and(|r| marker.snapshots.contains(&r.snapshot.0));
                if !keep {
                    let _ = fs::remove_file(&path);
                }
            }
            for path in list_dir(&self.inner.root.join("blobs/sha256"))? {
                let digest = format!("sha256:{}", file_name(&path));
                if marker.blobs.contains(&digest) {
                    continue;
                }
                let len = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
                match fs::remove_file(&path) {
                    Ok(()) => {
                        report.bytes_freed += len;
                        report.blobs_removed += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(StoreError::Remove { path, source }),
                }
            }
            if opts.all {
                self.sweep_mounts(&held, None, &mut report, &mut trash)?;
            }
        }
        for t in trash {
            fsutil::remove_tree(&t).map_err(|source| StoreError::Remove { path: t.clone(), source })?;
        }
        Ok(report)
    }

    /// Removes the cache mounts (every one, or those of `ids`) that no
    /// running build holds; held ones are counted in
    /// [`PruneReport::mounts_held`] and left alone.
    pub fn prune_cache_mounts(&self, ids: Option<&[String]>) -> Result<PruneReport, StoreError> {
        self.clean_dead_owners();
        let mut report = PruneReport::default();
        let mut trash = Vec::new();
        {
            let _gc = self.inner.gc_lock(true)?;
            let held = self.live_leases()?;
            let ids: Option<HashSet<String>> = ids.map(|ids| ids.iter().cloned().collect());
            self.sweep_mounts(&held, ids.as_ref(), &mut report, &mut trash)?;
        }
        for t in trash {
            fsutil::remove_tree(&t).map_err(|source| StoreError::Remove { path: t.clone(), source })?;
        }
        Ok(report)
    }

    /// Moves unheld mount directories (those of the ids in `only`, if
    /// given) to the trash, with their lock and id files. Under the
    /// exclusive gc lock: a build takes it shared while it leases a mount.
    /// An id also names the mounts of that id with their own owner or mode
    /// (store keys `ID uid=U gid=G mode=M`, see the solver's
    /// `cache_mount_key`), as `rbuild du` lists them under the id.
    fn sweep_mounts(
        &self,
        held: &Held,
        only: Option<&HashSet<String>>,
        report: &mut PruneReport,
        trash: &mut Vec<PathBuf>,
    ) -> Result<(), StoreError> {
        for path in list_dir(&self.inner.root.join("mounts"))? {
            let name = file_name(&path);
            if !path.is_dir() {
                continue;
            }
            if let Some(only) = only {
                // Hashed names keep their key in a side file.
                let key =
                    fs::read_to_string(path.with_file_name(format!("{name}.id"))).unwrap_or_else(|_| name.clone());
                let id = key.split(" uid=").next().unwrap_or(&key);
                if !only.contains(&key) && !only.contains(id) {
                    continue;
                }
            }
            if held.mounts.contains(&name) {
                report.mounts_held += 1;
                continue;
            }
            report.bytes_freed += fsutil::tree_size(&path);
            report.mounts_removed += 1;
            trash.push(self.move_to_trash(&path)?);
            for side in [".lock", ".id"] {
                let _ = fs::remove_file(path.with_file_name(format!("{name}{side}")));
            }
        }
        Ok(())
    }

    /// Every cache mount of the store: its id, size and whether a running
    /// build holds it, sorted by id.
    pub fn cache_mounts(&self) -> Result<Vec<MountUsage>, StoreError> {
        let held = self.live_leases()?;
        let mut out = Vec::new();
        for path in list_dir(&self.inner.root.join("mounts"))? {
            if !path.is_dir() {
                continue;
            }
            let name = file_name(&path);
            // Hashed names keep the id they came from beside them.
            let id = fs::read_to_string(path.with_file_name(format!("{name}.id"))).unwrap_or_else(|_| name.clone());
            out.push(MountUsage { id, bytes: fsutil::tree_size(&path), held: held.mounts.contains(&name) });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Bytes and counts per area of the store.
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        let mut du = DiskUsage::default();
        for path in list_dir(&self.inner.root.join("blobs/sha256"))? {
            du.blobs_count += 1;
            du.blobs_bytes += fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
        }
        for path in list_dir(&self.inner.root.join("snapshots"))? {
            du.snapshots_count += 1;
            du.snapshots_bytes += self.snapshot_size(&file_name(&path));
        }
        for path in list_dir(&self.inner.root.join("mounts"))? {
            // Not the `.lock` and `.id` files beside each directory.
            if path.is_dir() {
                du.mounts_count += 1;
                du.mounts_bytes += fsutil::tree_size(&path);
            }
        }
        du.records_count = list_dir(&self.inner.root.join("index"))?.len() as u64;
        for path in list_dir(&self.inner.root.join("diffs"))? {
            if let Ok(Some(r)) = read_json::<DiffRecord>(&path)
                && self.has_snapshot(&r.snapshot)
            {
                du.deferred_layers += 1;
            }
        }
        Ok(du)
    }

    /// Size recorded at commit, or measured if the record is missing.
    pub(super) fn snapshot_size(&self, id: &str) -> u64 {
        let dir = self.inner.root.join("snapshots").join(id);
        match fs::read_to_string(dir.join("size")).ok().and_then(|s| s.trim().parse().ok()) {
            Some(n) => n,
            None => fsutil::tree_size(&dir.join("diff")),
        }
    }

    fn move_to_trash(&self, path: &Path) -> Result<PathBuf, StoreError> {
        let t = self.inner.tmp_path("trash");
        fs::rename(path, &t).map_err(|source| StoreError::Rename {
            from: path.to_path_buf(),
            to: t.clone(),
            source,
        })?;
        Ok(t)
    }

    fn optional_roots(&self) -> Result<Vec<Root>, StoreError> {
        let mut roots = Vec::new();
        for file in list_dir(&self.inner.root.join("index"))? {
            let used = fs::metadata(&file).map(|m| mtime(&m)).unwrap_or(SystemTime::UNIX_EPOCH);
            // A corrupt record protects nothing and is dropped with the rest.
            let entry = read_json::<IndexEntry>(&file).ok().flatten();
            let (snapshots, blobs) = match entry {
                Some(e) => (
                    e.record.chain.iter().map(|SnapshotId(s)| s.clone()).collect(),
                    e.record.layers.iter().flatten().map(|l| l.digest.clone()).collect(),
                ),
                None => (Vec::new(), Vec::new()),
            };
            roots.push(Root { file, used, is_record: true, snapshots, blobs });
        }
        for (file, e) in self.list_named("refs")? {
            let used = fs::metadata(&file).map(|m| mtime(&m)).unwrap_or(SystemTime::UNIX_EPOCH);
            roots.push(Root { file, used, is_record: false, snapshots: Vec::new(), blobs: vec![e.digest] });
        }
        Ok(roots)
    }

    /// Reads the leases of live owners; deletes those of dead ones.
    fn live_leases(&self) -> Result<Held, StoreError> {
        let mut held = Held::default();
        for path in list_dir(&self.inner.root.join("leases"))? {
            let name = file_name(&path);
            let owner = name.split('.').next().unwrap_or("");
            if !self.inner.alive(owner) {
                let _ = fs::remove_file(&path);
                continue;
            }
            match fs::read_to_string(&path) {
                Ok(text) => held.parse(&text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::Read { path, source }),
            }
        }
        Ok(held)
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}
