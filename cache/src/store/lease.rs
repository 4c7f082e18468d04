//! Leases: append-only lists (`leases/<owner>.<n>`) of snapshots, blobs and
//! cache mounts that prune must keep while their owner process is alive.
//!
//! Each line is `<kind> <value>` with kind `s` (snapshot), `b` (blob) or `m`
//! (cache-mount dir name). Lines are appended with one `write` each, so a
//! reader sees whole lines; a torn last line from a killed owner does not
//! matter because a dead owner's lease is ignored anyway.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::{Inner, SnapshotId, StoreError, mount_dir_name, parse_digest};

/// An append-only lease file.
pub(crate) struct LeaseLog {
    pub(crate) path: PathBuf,
    file: Mutex<File>,
}

impl LeaseLog {
    pub(crate) fn create(path: PathBuf) -> Result<LeaseLog, StoreError> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|source| StoreError::Write { path: path.clone(), source })?;
        Ok(LeaseLog { path, file: Mutex::new(file) })
    }

    pub(crate) fn append(&self, kind: char, value: &str) -> Result<(), StoreError> {
        let line = format!("{kind} {value}\n");
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(line.as_bytes()).map_err(|source| StoreError::Write { path: self.path.clone(), source })
    }
}

/// What live leases hold, as read by prune.
#[derive(Default, Debug)]
pub(crate) struct Held {
    pub snapshots: BTreeSet<String>,
    pub blobs: BTreeSet<String>,
    pub mounts: BTreeSet<String>,
}

impl Held {
    pub(crate) fn parse(&mut self, text: &str) {
        for line in text.lines() {
            let Some((kind, value)) = line.split_once(' ') else {
                continue;
            };
            let set = match kind {
                "s" => &mut self.snapshots,
                "b" => &mut self.blobs,
                "m" => &mut self.mounts,
                _ => continue,
            };
            set.insert(value.to_string());
        }
    }
}

/// Protects snapshots, blobs and cache mounts from prune until dropped (or
/// until the process dies: liveness is checked through the owner lock).
pub struct Lease {
    inner: Arc<Inner>,
    pub(crate) log: LeaseLog,
    /// Snapshots already in the log: held until the lease ends, so adding
    /// one again (every step adds its whole chain) needs no lock, check or
    /// write.
    snapshots: Mutex<HashSet<String>>,
}

impl Lease {
    pub(crate) fn create(inner: Arc<Inner>) -> Result<Lease, StoreError> {
        let n = inner.counter.fetch_add(1, Ordering::Relaxed);
        let path = inner.root.join("leases").join(format!("{}.lease-{n}", inner.owner));
        let log = LeaseLog::create(path)?;
        Ok(Lease { inner, log, snapshots: Mutex::new(HashSet::new()) })
    }

    /// Holds a committed snapshot. Fails if it is not (or no longer) in the
    /// store: a concurrent prune may have removed it before the lease.
    pub fn add_snapshot(&self, id: &SnapshotId) -> Result<(), StoreError> {
        let mut held = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        if held.contains(&id.0) {
            return Ok(());
        }
        let _gc = self.inner.gc_shared()?;
        if !super::valid_snapshot_id(&id.0) || !self.inner.snapshot_dir(id).join("diff").is_dir() {
            return Err(StoreError::SnapshotNotFound(id.0.clone()));
        }
        self.log.append('s', &id.0)?;
        held.insert(id.0.clone());
        Ok(())
    }

    /// Holds a blob (and, if it is a manifest or index, what it names).
    /// Fails if the blob is not in the store.
    pub fn add_blob(&self, digest: &str) -> Result<(), StoreError> {
        let hex = parse_digest(digest)?;
        let _gc = self.inner.gc_shared()?;
        if !self.inner.root.join("blobs/sha256").join(hex).is_file() {
            return Err(StoreError::BlobNotFound(digest.to_string()));
        }
        self.log.append('b', digest)
    }

    /// Holds a cache-mount directory so prune leaves it alone. Under the
    /// shared gc lock, and recreating the directory if a prune removed it
    /// since the caller made it: once this returns, it exists and is held.
    pub fn add_mount(&self, id: &str) -> Result<(), StoreError> {
        let name = mount_dir_name(id);
        let _gc = self.inner.gc_shared()?;
        let path = self.inner.root.join("mounts").join(&name);
        fs::create_dir_all(&path).map_err(|source| StoreError::CreateDir { path, source })?;
        self.log.append('m', &name)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.log.path);
    }
}
