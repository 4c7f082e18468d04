//! ADD's local archive auto-extraction.
//!
//! A source is an archive when, after decompression chosen by magic bytes
//! (gzip, bzip2, xz, zstd, or none), its first tar header parses — exactly
//! BuildKit's `isArchivePath`; the file name plays no part. Extraction goes
//! through the same confined path as base-image layers
//! ([`rbuild_cache::layer::extract`]): every entry's parent is opened with
//! `openat2(RESOLVE_IN_ROOT)` under the destination, so `../x`, `/abs` and
//! symlinked parents (even ones created earlier by the same archive) all
//! land inside it, as containerd's `archive.Apply` (BuildKit's unpacker)
//! guarantees. Names are content (no whiteouts); device nodes are skipped:
//! a rootless builder cannot create them and an image should not get them
//! from ADD; overlay and `security.*` attributes are dropped; an owner the
//! user namespace cannot represent is an error.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::Path;

use rbuild_cache::layer::{self, ExtractKind, ExtractOptions, Owners};

use super::{FileOpError, Owner};

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
/// the archive's ids. An owner `can_chown` refuses is an error.
pub fn extract(
    src: &Path,
    dest: &Path,
    owner: Option<Owner>,
    can_chown: &dyn Fn(u32, u32) -> bool,
) -> Result<(), FileOpError> {
    let stream = open_stream(src).map_err(|source| FileOpError::ReadArchive { path: src.to_path_buf(), source })?;
    let owners = match owner {
        Some(o) => Owners::Force { uid: o.uid, gid: o.gid, representable: can_chown },
        None => Owners::Archive { representable: can_chown },
    };
    layer::extract(stream, dest, &ExtractOptions { kind: ExtractKind::Archive, owners })
        .map_err(|source| FileOpError::Unpack { path: src.to_path_buf(), source })?;
    Ok(())
}
