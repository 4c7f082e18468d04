//! Persistent stat-keyed checksum cache for build-context files.
//!
//! Key: path; validated by (size, mtime in ns, inode, mode). A hit returns
//! the stored SHA-256 without opening the file. The file format is a flat
//! binary list (magic `RBCKSUM1`, then per entry: u32 path length, path
//! bytes, u64 size, i64 mtime ns, u64 inode, u32 mode, 32 digest bytes; all
//! little-endian): loading 20,000 entries is a single read and a tight loop,
//! much cheaper than JSON.
//!
//! A file modified within the last two seconds is hashed but not persisted
//! ("racy" entries, as in git's index): it could change again within the
//! same mtime tick after we hashed it, and a stale checksum would silently
//! poison every later build.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::StoreError;

const MAGIC: &[u8; 8] = b"RBCKSUM1";
const RACY_NS: i64 = 2_000_000_000;

/// FxHash (as in rustc): paths are trusted local input, so a fast
/// non-DoS-resistant hash is fine and SipHash was a third of lookup time.
#[derive(Default)]
pub struct FxHasher(u64);

/// [`FxHasher`] for `HashMap`s keyed by the paths of a build's own files
/// (the checksum cache, incremental COPY manifests).
pub type FxBuildHasher = BuildHasherDefault<FxHasher>;

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type Map = HashMap<Box<[u8]>, Entry, FxBuildHasher>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    size: u64,
    mtime_ns: i64,
    ino: u64,
    mode: u32,
    digest: [u8; 32],
    persist: bool,
}

impl Entry {
    fn matches(&self, key: &StatKey) -> bool {
        self.size == key.size && self.mtime_ns == key.mtime_ns && self.ino == key.ino && self.mode == key.mode
    }
}

/// What a cached checksum is validated by: a file's size, mtime (ns),
/// inode and `st_mode` (type and permission bits). Small and `Copy`, so a
/// caller that walked a tree can keep it per file instead of the whole
/// `Metadata` and ask [`ChecksumCache::checksum_key`] later without a
/// second `lstat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatKey {
    /// `st_size`.
    pub size: u64,
    /// `st_mtime` in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// `st_ino`.
    pub ino: u64,
    /// `st_mode`, file type bits included.
    pub mode: u32,
}

impl StatKey {
    /// The key of a file's `symlink_metadata`.
    pub fn of(meta: &fs::Metadata) -> StatKey {
        StatKey { size: meta.size(), mtime_ns: mtime_ns(meta), ino: meta.ino(), mode: meta.mode() }
    }

    fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }

    fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
}

/// Persistent stat-keyed checksum cache: (path, size, mtime ns, inode, mode)
/// -> SHA-256 of the content. Cheap to clone; clones share one table.
#[derive(Clone)]
pub struct ChecksumCache {
    inner: Arc<CkInner>,
}

struct CkInner {
    path: PathBuf,
    lock_path: PathBuf,
    tmp_base: PathBuf,
    saves: AtomicU64,
    map: RwLock<Map>,
    dirty: AtomicBool,
}

impl ChecksumCache {
    /// Loads `<root>/checksums`; a missing or corrupt file is an empty cache.
    pub(crate) fn load(root: &Path, tmp_base: PathBuf) -> ChecksumCache {
        let path = root.join("checksums");
        let map = fs::read(&path).ok().and_then(|b| decode(&b)).unwrap_or_default();
        ChecksumCache {
            inner: Arc::new(CkInner {
                lock_path: root.join("checksums.lock"),
                path,
                tmp_base,
                saves: AtomicU64::new(0),
                map: RwLock::new(map),
                dirty: AtomicBool::new(false),
            }),
        }
    }

    /// `sha256:<hex>` of the file's content (of the link target for a
    /// symlink). `meta` must be the file's `symlink_metadata`. Reads and
    /// hashes only when the stat key does not match the cached entry.
    pub fn checksum(&self, path: &Path, meta: &fs::Metadata) -> io::Result<String> {
        self.checksum_stat(path, &StatKey::of(meta))
    }

    /// [`ChecksumCache::checksum`] given the stat key of the file's
    /// `symlink_metadata` taken by the caller.
    pub fn checksum_stat(&self, path: &Path, stat: &StatKey) -> io::Result<String> {
        Ok(format_digest(&self.checksum_key(path, stat)?))
    }

    /// The SHA-256 bytes of [`ChecksumCache::checksum`], given the stat key
    /// of the file's `symlink_metadata` taken by the caller.
    pub fn checksum_key(&self, path: &Path, stat: &StatKey) -> io::Result<[u8; 32]> {
        let key = path.as_os_str().as_bytes();
        {
            let map = self.inner.map.read().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = map.get(key)
                && e.matches(stat)
            {
                return Ok(e.digest);
            }
        }
        let (digest, stable) = hash_file(path, stat)?;
        let entry = Entry {
            size: stat.size,
            mtime_ns: stat.mtime_ns,
            ino: stat.ino,
            mode: stat.mode,
            digest,
            persist: stable && stat.mtime_ns < now_ns() - RACY_NS,
        };
        if stable {
            let mut map = self.inner.map.write().unwrap_or_else(|p| p.into_inner());
            map.insert(key.into(), entry);
            // Only what `save` would write makes the cache dirty: a build
            // that learnt nothing but racy entries (the file just edited)
            // does not rewrite and fsync the whole cache before its export.
            if entry.persist {
                self.inner.dirty.store(true, Ordering::Relaxed);
            }
        }
        Ok(digest)
    }

    /// Number of entries in memory.
    pub fn len(&self) -> usize {
        self.inner.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether the cache has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the cache atomically, merged over what other processes saved
    /// meanwhile (our entries win on conflict).
    ///
    /// The merge streams: the file's records that ours do not replace are
    /// written through, then ours, straight into the new file. Decoding the
    /// file into a second table and encoding the merge into a buffer held
    /// three copies of a 200,000-file cache at the end of a build.
    pub fn save(&self) -> Result<(), StoreError> {
        if !self.inner.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let lock_path = &self.inner.lock_path;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_path)
            .map_err(|source| StoreError::Lock { path: lock_path.clone(), source })?;
        lock.lock().map_err(|source| StoreError::Lock { path: lock_path.clone(), source })?;

        // A corrupt or truncated file is dropped whole, as `load` does.
        let saved = fs::read(&self.inner.path).ok().filter(|b| records(b).all(|r| r.is_some()));
        let n = self.inner.saves.fetch_add(1, Ordering::Relaxed);
        let mut tmp = self.inner.tmp_base.clone().into_os_string();
        tmp.push(format!("-{n}"));
        let tmp = PathBuf::from(tmp);
        let written = File::create_new(&tmp).and_then(|f| {
            let map = self.inner.map.read().unwrap_or_else(|p| p.into_inner());
            let ours = |k: &[u8]| map.get(k).is_some_and(|e| e.persist);
            let mut out = BufWriter::with_capacity(1 << 20, f);
            out.write_all(MAGIC)?;
            for (k, e) in records(saved.as_deref().unwrap_or(MAGIC)).flatten().filter(|(k, _)| !ours(k)) {
                write_record(&mut out, k, &e)?;
            }
            for (k, e) in map.iter().filter(|(_, e)| e.persist) {
                write_record(&mut out, k, e)?;
            }
            out.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()
        });
        if let Err(source) = written {
            let _ = fs::remove_file(&tmp);
            self.inner.dirty.store(true, Ordering::Relaxed);
            return Err(StoreError::Write { path: tmp, source });
        }
        if let Err(source) = fs::rename(&tmp, &self.inner.path) {
            let _ = fs::remove_file(&tmp);
            self.inner.dirty.store(true, Ordering::Relaxed);
            return Err(StoreError::Rename { from: tmp, to: self.inner.path.clone(), source });
        }
        super::sync_parent(&self.inner.path);
        Ok(())
    }
}

/// Hashes the content; `stable` is false if the file changed under us
/// (then the result is returned but not cached).
fn hash_file(path: &Path, meta: &StatKey) -> io::Result<([u8; 32], bool)> {
    if meta.is_symlink() {
        let target = fs::read_link(path)?;
        return Ok((Sha256::digest(target.as_os_str().as_bytes()).into(), true));
    }
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{}` is not a regular file or symlink", path.display()),
        ));
    }
    let mut f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    let mut h = Sha256::new();
    // Sized to the file: a fixed 256 KiB buffer zeroed for every 5 KB
    // source file was 6 % of a cold COPY's CPU (memset and page faults).
    let len = usize::try_from(meta.size).unwrap_or(usize::MAX).saturating_add(1);
    let mut buf = vec![0u8; len.min(256 * 1024)];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let after = f.metadata()?;
    let stable = after.size() == meta.size && mtime_ns(&after) == meta.mtime_ns && after.ino() == meta.ino;
    Ok((h.finalize().into(), stable))
}

fn mtime_ns(meta: &fs::Metadata) -> i64 {
    meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec())
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn format_digest(d: &[u8; 32]) -> String {
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    s.push_str(&hex::encode(d));
    s
}

/// Appends one record of the file format.
fn write_record(out: &mut impl Write, key: &[u8], e: &Entry) -> io::Result<()> {
    let Ok(len) = u32::try_from(key.len()) else { return Ok(()) };
    out.write_all(&len.to_le_bytes())?;
    out.write_all(key)?;
    out.write_all(&e.size.to_le_bytes())?;
    out.write_all(&e.mtime_ns.to_le_bytes())?;
    out.write_all(&e.ino.to_le_bytes())?;
    out.write_all(&e.mode.to_le_bytes())?;
    out.write_all(&e.digest)
}

/// The records of a cache file, in file order; a `None` item (then the
/// end) where the bytes are not a well-formed record, or not a cache.
fn records(bytes: &[u8]) -> impl Iterator<Item = Option<(&[u8], Entry)>> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if rest.len() < n {
            return None;
        }
        let (a, b) = rest.split_at(n);
        *rest = b;
        Some(a)
    }
    fn record<'a>(rest: &mut &'a [u8]) -> Option<(&'a [u8], Entry)> {
        let len = u32::from_le_bytes(take(rest, 4)?.try_into().ok()?) as usize;
        let key = take(rest, len)?;
        let size = u64::from_le_bytes(take(rest, 8)?.try_into().ok()?);
        let mtime_ns = i64::from_le_bytes(take(rest, 8)?.try_into().ok()?);
        let ino = u64::from_le_bytes(take(rest, 8)?.try_into().ok()?);
        let mode = u32::from_le_bytes(take(rest, 4)?.try_into().ok()?);
        let digest: [u8; 32] = take(rest, 32)?.try_into().ok()?;
        Some((key, Entry { size, mtime_ns, ino, mode, digest, persist: true }))
    }
    let mut rest = bytes.strip_prefix(MAGIC.as_slice());
    let mut ended = false;
    std::iter::from_fn(move || {
        if ended {
            return None;
        }
        let item = match rest.as_mut() {
            Some([]) => return None,
            Some(r) => record(r),
            None => None,
        };
        ended = item.is_none();
        Some(item)
    })
}

/// `None` if the file is not a complete, well-formed cache.
fn decode(bytes: &[u8]) -> Option<Map> {
    // Counted first: a table sized from the byte length (records of ~120
    // bytes guessed at 100) overshot the next power of two and took twice
    // the memory of the entries for a 200,000-file context.
    let mut count = 0;
    for r in records(bytes) {
        r?;
        count += 1;
    }
    let mut map = Map::with_capacity_and_hasher(count, Default::default());
    map.extend(records(bytes).flatten().map(|(k, e)| (Box::from(k), e)));
    Some(map)
}
