//! Incremental COPY: building a COPY's new snapshot from the previous
//! snapshot of the same instruction.
//!
//! When a COPY from a build context misses the cache only because some of
//! the files it reads changed, most of its result is already on disk: the
//! previous snapshot of the same op (same destination, options and base).
//! Each copy records, beside its snapshot, the content digest of every file
//! it wrote ([`Manifest`]). The next copy of the same instruction hard-links
//! a file from the previous snapshot when its content digest, size, mode,
//! owner and mtime all match, and writes everything else as a fresh copy
//! would; removed files are simply not created. Snapshots are immutable, so
//! sharing an inode between them is safe as long as nothing ever writes
//! into one: the copy only ever links or creates, never opens an existing
//! file for writing.
//!
//! The result is byte-identical to a fresh copy, including hard-link
//! groups: each previous inode is shared at most once per copy, so two
//! paths can only end up on one inode when the source has them linked too
//! (the layer writer would otherwise record a hard link a fresh copy does
//! not have).

use std::collections::{HashMap, HashSet};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

/// Name of the manifest file in a snapshot's directory (beside `diff/`).
pub const MANIFEST_FILE: &str = "copy-sums";

/// Magic and version of the manifest encoding.
const MAGIC: &[u8; 8] = b"rbcsum\0\x01";

/// Content digests (SHA-256) of the regular files a copy wrote, by their
/// slash path relative to the snapshot's root.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Manifest {
    sums: HashMap<Vec<u8>, [u8; 32]>,
}

impl Manifest {
    /// Number of files recorded.
    pub fn len(&self) -> usize {
        self.sums.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// The recorded digest of `rel`.
    pub fn get(&self, rel: &[u8]) -> Option<&[u8; 32]> {
        self.sums.get(rel)
    }

    /// Records `rel`'s digest (a later write of the same path wins).
    pub fn insert(&mut self, rel: Vec<u8>, sum: [u8; 32]) {
        self.sums.insert(rel, sum);
    }

    /// The binary encoding: magic, then per file (sorted by path, so the
    /// same manifest gives the same bytes) a little-endian `u32` path
    /// length, the path bytes and the 32 digest bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut entries: Vec<(&Vec<u8>, &[u8; 32])> = self.sums.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::with_capacity(MAGIC.len() + entries.iter().map(|(p, _)| p.len() + 36).sum::<usize>());
        out.extend_from_slice(MAGIC);
        for (path, sum) in entries {
            out.extend_from_slice(&(path.len() as u32).to_le_bytes());
            out.extend_from_slice(path);
            out.extend_from_slice(sum);
        }
        out
    }

    /// Decodes [`Manifest::encode`]'s bytes; `None` when they are not a
    /// manifest (truncated, another version): the copy is then a fresh one.
    pub fn decode(bytes: &[u8]) -> Option<Manifest> {
        let mut rest = bytes.strip_prefix(MAGIC.as_slice())?;
        let mut sums = HashMap::new();
        while !rest.is_empty() {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            if tail.len() < len + 32 {
                return None;
            }
            let (path, tail) = tail.split_at(len);
            let (sum, tail) = tail.split_first_chunk::<32>()?;
            sums.insert(path.to_vec(), *sum);
            rest = tail;
        }
        Some(Manifest { sums })
    }

    /// Reads the manifest of the snapshot whose directory is `dir`; a
    /// missing or unreadable one is `None`.
    pub fn load(dir: &Path) -> Option<Manifest> {
        Manifest::decode(&fs::read(dir.join(MANIFEST_FILE)).ok()?)
    }
}

/// Content digest of a source file, given its `lstat` (from the
/// stat-keyed checksum cache in the solver).
pub type ContentSum<'a> = dyn Fn(&Path, &Metadata) -> io::Result<[u8; 32]> + Sync + 'a;

/// What an incremental copy needs: the previous snapshot (if any) and a way
/// to get source digests; it collects the new snapshot's manifest.
pub struct Incremental<'a> {
    /// The previous snapshot's `diff` directory and manifest.
    pub previous: Option<(&'a Path, &'a Manifest)>,
    /// Source content digests.
    pub content_sum: &'a ContentSum<'a>,
    /// The manifest of the snapshot being written.
    pub(super) manifest: Mutex<Manifest>,
    /// Previous inodes already shared by this copy (each at most once).
    claimed: Mutex<HashSet<(u64, u64)>>,
    /// Files shared with the previous snapshot.
    pub(super) shared: std::sync::atomic::AtomicUsize,
}

impl<'a> Incremental<'a> {
    /// A copy that records its manifest and shares with `previous`.
    pub fn new(previous: Option<(&'a Path, &'a Manifest)>, content_sum: &'a ContentSum<'a>) -> Incremental<'a> {
        Incremental {
            previous,
            content_sum,
            manifest: Mutex::new(Manifest::default()),
            claimed: Mutex::new(HashSet::new()),
            shared: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The manifest of what was written so far.
    pub fn into_manifest(self) -> Manifest {
        self.manifest.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// How many files were shared with the previous snapshot.
    pub fn shared_files(&self) -> usize {
        self.shared.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The previous snapshot's file to share for the destination `rel`
    /// (relative to the destination root) whose source has digest `sum`
    /// and which must end with `size`, `mode`, `owner` and `mtime`: only a
    /// plain file whose recorded digest and every attribute the layer tar
    /// shows match, without xattrs on either side, and whose inode this
    /// copy has not shared yet.
    pub(super) fn shareable(
        &self,
        rel: &[u8],
        sum: &[u8; 32],
        want: &Wanted,
        src: &Path,
    ) -> Option<std::path::PathBuf> {
        let (diff, manifest) = self.previous?;
        if manifest.get(rel) != Some(sum) {
            return None;
        }
        let candidate = diff.join(std::ffi::OsStr::from_bytes(rel));
        let md = fs::symlink_metadata(&candidate).ok()?;
        let same = md.is_file()
            && md.len() == want.size
            && md.mode() & 0o7777 == want.mode
            && (md.uid(), md.gid()) == want.owner
            && (md.mtime(), md.mtime_nsec()) == want.mtime;
        if !same || has_xattrs(&candidate) || has_xattrs(src) {
            return None;
        }
        let mut claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
        claimed.insert((md.dev(), md.ino())).then_some(candidate)
    }

    /// Records the digest of a file written (or shared) at `rel`.
    pub(super) fn record(&self, rel: Vec<u8>, sum: [u8; 32]) {
        self.manifest.lock().unwrap_or_else(|p| p.into_inner()).insert(rel, sum);
    }
}

/// The attributes a shared file must already have.
pub(super) struct Wanted {
    pub size: u64,
    pub mode: u32,
    pub owner: (u32, u32),
    pub mtime: (i64, i64),
}

/// Whether `p` carries xattrs that a copy would carry over (`security.*`
/// is never copied). Unknown counts as yes: then the file is copied.
fn has_xattrs(p: &Path) -> bool {
    let mut list = [0u8; 1024];
    match rustix::fs::llistxattr(p, &mut list[..]) {
        Ok(n) => list[..n].split(|b| *b == 0).any(|name| !name.is_empty() && !name.starts_with(b"security.")),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_round_trip_and_reject_other_bytes() {
        let mut m = Manifest::default();
        m.insert(b"a/b.txt".to_vec(), [7; 32]);
        m.insert(b"n\xff".to_vec(), [9; 32]);
        m.insert(Vec::new(), [1; 32]);
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes), Some(m.clone()));
        // Deterministic encoding.
        assert_eq!(bytes, Manifest::decode(&bytes).unwrap().encode());
        assert_eq!(Manifest::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Manifest::decode(b"rbcsum\0\x02"), None);
        assert_eq!(Manifest::decode(b""), None);
    }
}
