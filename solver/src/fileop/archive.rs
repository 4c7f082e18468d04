//! ADD's local archive auto-extraction.
//!
//! A source is an archive when, after decompression chosen by magic bytes
//! (gzip, bzip2, xz, zstd, or none), its first tar header parses — exactly
//! BuildKit's `isArchivePath`; the file name plays no part. Extraction is
//! confined to the destination directory: every entry path is resolved with
//! [`super::path::resolve_bytes_in_root`] using the destination as root, so `../x`,
//! `/abs` and symlinked parents (even ones created earlier by the same
//! archive) all land inside it, as containerd's `archive.Apply` (BuildKit's
//! unpacker) guarantees. Device nodes are skipped: a rootless builder cannot
//! create them and an image should not get them from ADD.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::path::{resolve_bytes_in_root, root_path_bytes};
use super::{FileOpError, Owner, check_owner, set_owner_path, set_times_path};

/// Compression of a tar stream, told by magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// bzip2 (`BZh`).
    Bzip2,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// Detects the compression from the first bytes of a file.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Opens `path` as a decompressed stream.
fn open_stream(path: &Path) -> io::Result<Box<dyn Read>> {
    let mut f = File::open(path)?;
    let mut head = [0u8; 6];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let kind = Compression::detect(&head[..n]);
    let f = BufReader::with_capacity(128 * 1024, File::open(path)?);
    Ok(match kind {
        Compression::None => Box::new(f),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(f)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(f)),
        Compression::Xz => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(f)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(f)?),
    })
}

/// Whether `path` (already resolved, not followed further) is a regular file
/// holding a tar archive, possibly compressed.
pub fn is_archive(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => {}
        _ => return false,
    }
    let Ok(stream) = open_stream(path) else { return false };
    let mut ar = tar::Archive::new(stream);
    let Ok(mut entries) = ar.entries() else { return false };
    matches!(entries.next(), Some(Ok(_)))
}

/// Extracts the archive at `src` into the existing directory `dest`.
/// `owner`: `Some` forces the owner of every entry (`--chown`); `None` keeps
/// the archive's ids. An entry whose owner the sandbox cannot represent
/// (`can_chown`) fails the extraction before it is written.
pub fn extract(
    src: &Path,
    dest: &Path,
    owner: Option<Owner>,
    can_chown: &dyn Fn(u32, u32) -> bool,
) -> Result<(), FileOpError> {
    let read_err = |source: io::Error| FileOpError::ReadArchive { path: src.to_path_buf(), source };
    let stream = open_stream(src).map_err(read_err)?;
    let mut ar = tar::Archive::new(stream);
    // Directory times are set last: creating children changes them.
    let mut dir_times: Vec<(PathBuf, SystemTime)> = Vec::new();
    for entry in ar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        // Names are bytes: the entry lands under exactly its stored name;
        // `rel` is only for messages.
        let raw_path = entry.path_bytes().into_owned();
        let rel = String::from_utf8_lossy(&raw_path).into_owned();
        let header = entry.header().clone();
        let kind = header.entry_type();
        let header_err = |source: io::Error| FileOpError::Extract { entry: rel.clone(), source };
        // Ids beyond u32 become `u32::MAX`, which `check_owner` rejects:
        // truncating them would silently pick another owner.
        let id = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        let mut uid = id(numeric(header.uid(), &header.as_old().uid).map_err(header_err)?);
        let mut gid = id(numeric(header.gid(), &header.as_old().gid).map_err(header_err)?);
        let mut mtime = numeric(header.mtime(), &header.as_old().mtime).map_err(header_err)?;
        let mode = numeric(header.mode().map(u64::from), &header.as_old().mode).map_err(header_err)? as u32 & 0o7777;
        let mut xattrs: Vec<(String, Vec<u8>)> = Vec::new();
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                let Ok(key) = ext.key() else { continue };
                let value = ext.value_bytes();
                let num = || std::str::from_utf8(value).ok().and_then(|v| v.split('.').next()?.parse::<u64>().ok());
                match key {
                    "uid" => uid = num().map_or(uid, id),
                    "gid" => gid = num().map_or(gid, id),
                    "mtime" => mtime = num().unwrap_or(mtime),
                    k => {
                        if let Some(name) = k.strip_prefix("SCHILY.xattr.")
                            && !name.starts_with("security.")
                        {
                            xattrs.push((name.to_string(), value.to_vec()));
                        }
                    }
                }
            }
        }
        let (uid, gid) = owner.map_or((uid, gid), |o| (o.uid, o.gid));
        // Only the entries created below get an owner (a hard link shares
        // its target's inode; devices are skipped).
        if matches!(
            kind,
            tar::EntryType::Directory
                | tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse
                | tar::EntryType::Symlink
                | tar::EntryType::Fifo
        ) {
            check_owner(|| rel.clone(), uid, gid, can_chown)?;
        }
        let parts = resolve_bytes_in_root(dest, &raw_path, false)
            .map_err(|source| FileOpError::Resolve { path: rel.clone(), source })?;
        if parts.is_empty() {
            // The entry names the destination itself (`./`): only its
            // metadata could apply; BuildKit leaves the directory alone.
            continue;
        }
        let mut target = dest.to_path_buf();
        target.extend(&parts);
        let write_err = |source: io::Error| FileOpError::Extract { entry: rel.clone(), source };
        // Parents missing from the archive are created like `mkdir -p`.
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(write_err)?;
        }
        let existing = fs::symlink_metadata(&target).ok();
        let is_dir_entry = kind.is_dir();
        if let Some(m) = &existing {
            // Any non-directory is replaced; a directory is only merged into
            // by a directory entry (Docker's untar removes it otherwise).
            if !(m.is_dir() && is_dir_entry) {
                if m.is_dir() {
                    fs::remove_dir_all(&target).map_err(write_err)?;
                } else {
                    fs::remove_file(&target).map_err(write_err)?;
                }
            }
        }
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime);
        match kind {
            tar::EntryType::Directory => {
                if existing.is_none() {
                    fs::create_dir(&target).map_err(write_err)?;
                }
                set_owner_path(&target, uid, gid).map_err(write_err)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(write_err)?;
                set_xattrs(&target, &xattrs);
                dir_times.push((target, mtime));
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(write_err)?;
                io::copy(&mut entry, &mut f).map_err(write_err)?;
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(write_err)?;
                f.set_permissions(fs::Permissions::from_mode(mode)).map_err(write_err)?;
                set_xattrs(&target, &xattrs);
                f.set_times(fs::FileTimes::new().set_accessed(mtime).set_modified(mtime)).map_err(write_err)?;
                continue;
            }
            tar::EntryType::Symlink => {
                let link = entry.link_name_bytes().map(|b| b.into_owned()).unwrap_or_default();
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target).map_err(write_err)?;
            }
            tar::EntryType::Link => {
                let link = entry.link_name_bytes().map(|b| b.into_owned()).unwrap_or_default();
                // The link target is resolved inside the destination too, and
                // must be an entry extracted before (not a directory).
                let link_err = |source| FileOpError::Hardlink {
                    entry: rel.clone(),
                    target: String::from_utf8_lossy(&link).into_owned(),
                    source,
                };
                let src_path = root_path_bytes(dest, &link, false).map_err(link_err)?;
                fs::hard_link(&src_path, &target).map_err(link_err)?;
                continue;
            }
            tar::EntryType::Fifo => {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &target,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(mode),
                    0,
                )
                .map_err(|e| write_err(e.into()))?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(write_err)?;
            }
            // Devices are skipped (see the module doc); PAX/GNU metadata
            // entries are consumed by the tar crate and never reach here.
            _ => continue,
        }
        set_owner_path(&target, uid, gid).map_err(write_err)?;
        set_times_path(&target, mtime, mtime).map_err(write_err)?;
    }
    for (dir, mtime) in dir_times.into_iter().rev() {
        set_times_path(&dir, mtime, mtime)
            .map_err(|source| FileOpError::Extract { entry: dir.display().to_string(), source })?;
    }
    Ok(())
}

/// A numeric header field as Go's `archive/tar` (BuildKit's reader) reads
/// it: a field of only NULs and spaces is 0, anything else unparsable is
/// an error (never silently 0).
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> io::Result<u64> {
    match parsed {
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        other => other,
    }
}

/// Best-effort xattr restore: like BuildKit's handler, failures (a file
/// system without user xattrs) are ignored.
fn set_xattrs(path: &Path, xattrs: &[(String, Vec<u8>)]) {
    for (k, v) in xattrs {
        let _ = rustix::fs::lsetxattr(path, k.as_str(), v, rustix::fs::XattrFlags::empty());
    }
}
