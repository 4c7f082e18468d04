//! The layer writer: snapshot dir -> tar -> gzip/zstd, one streaming pass.
//!
//! The tar stream is hashed (diff_id) on its way into the compressor and the
//! compressed stream is hashed and counted (digest, size) on its way out, so
//! nothing is ever read back. Compression runs on `threads` workers with
//! output that is identical for any thread count >= 1. The two digests are
//! taken on threads of their own when the workers leave a core free, so the
//! thread feeding the compressor never waits for SHA-256 (`digest.rs`).

use std::io::{self, Write};
use std::path::Path;

use crate::oci::{LayerDescriptor, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_LAYER_ZSTD};

use super::LayerWriteError;
use super::digest::HashingWriter;
use super::pgzip::ParGzip;
use super::walk::{TarSink, TreeIdentity, TreeOptions, tree_identity, write_tree_identified, write_tree_to};

/// Layer compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip at `level` (0-9; BuildKit uses Go's default, equivalent to 6).
    Gzip {
        /// zlib level.
        level: u32,
    },
    /// zstd at `level` (BuildKit's default is 3).
    Zstd {
        /// zstd level.
        level: i32,
    },
    /// Plain tar.
    Uncompressed,
}

impl Compression {
    /// zstd for BuildKit's `compression-level=N` (none: 3).
    ///
    /// BuildKit's zstd (klauspost/compress) has four encoder speeds, and
    /// its exporter maps the level onto them: below 0 the default, 0-2
    /// fastest, 3-6 default, 7-8 better, 9 and up best. libzstd levels of
    /// about the same speed and ratio stand for them (1, 3, 7, 11, as
    /// klauspost documents its speeds), so `compression-level=19` costs
    /// what it costs in BuildKit, not libzstd's ultra levels (a 128 MiB
    /// window, jobs of 512 MiB per compression thread, single-digit MB/s).
    pub fn zstd_buildkit_level(level: Option<i32>) -> Compression {
        let level = match level {
            None => 3,
            Some(l) if l < 0 => 3,
            Some(0..=2) => 1,
            Some(3..=6) => 3,
            Some(7..=8) => 7,
            Some(_) => 11,
        };
        Compression::Zstd { level }
    }

    /// The OCI media type of a layer with this compression.
    pub fn media_type(&self) -> &'static str {
        match self {
            Compression::Gzip { .. } => MEDIA_TYPE_LAYER_GZIP,
            Compression::Zstd { .. } => MEDIA_TYPE_LAYER_ZSTD,
            Compression::Uncompressed => MEDIA_TYPE_LAYER_TAR,
        }
    }
}

/// How to write a layer.
#[derive(Clone, Copy, Debug)]
pub struct LayerOptions {
    /// Compression of the blob.
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: mtimes later than this are clamped to it.
    pub source_date_epoch: Option<i64>,
    /// Compression threads (0 is treated as 1).
    pub threads: usize,
}

/// Writes the layer for the overlay-format snapshot `diff_dir` to `out`.
///
/// Entries are in a deterministic order with overlay whiteouts converted to
/// OCI ones, so the same directory always gives the same digest.
pub fn write_layer(
    diff_dir: &Path,
    opts: &LayerOptions,
    out: &mut dyn Write,
) -> Result<LayerDescriptor, LayerWriteError> {
    write_layer_inner(diff_dir, opts, out, false).map(|(layer, _)| layer)
}

/// [`write_layer`], also returning the snapshot's [`TreeIdentity`] (see
/// [`layer_identity`]), taken in the same pass.
pub fn write_layer_identified(
    diff_dir: &Path,
    opts: &LayerOptions,
    out: &mut dyn Write,
) -> Result<(LayerDescriptor, TreeIdentity), LayerWriteError> {
    let (layer, identity) = write_layer_inner(diff_dir, opts, out, true)?;
    Ok((layer, identity.expect("identified write")))
}

/// The [`TreeIdentity`] of the layer [`write_layer`] writes for `diff_dir`
/// with `opts`, from its metadata alone: equal identities of two live
/// snapshots mean equal layers.
pub fn layer_identity(diff_dir: &Path, opts: &LayerOptions) -> Result<TreeIdentity, LayerWriteError> {
    tree_identity(diff_dir, layer_tree(opts))
}

fn layer_tree(opts: &LayerOptions) -> TreeOptions {
    TreeOptions { whiteouts: true, epoch: opts.source_date_epoch }
}

fn write_layer_inner(
    diff_dir: &Path,
    opts: &LayerOptions,
    out: &mut dyn Write,
    identify: bool,
) -> Result<(LayerDescriptor, Option<TreeIdentity>), LayerWriteError> {
    let tree = layer_tree(opts);
    let walk = |sink: &mut dyn TarSink| -> Result<Option<TreeIdentity>, LayerWriteError> {
        if identify {
            write_tree_identified(diff_dir, tree, sink).map(Some)
        } else {
            write_tree_to(diff_dir, tree, sink).map(|()| None)
        }
    };
    let threads = opts.threads.max(1);
    let werr = |source| LayerWriteError::Write { source };
    // `threads` workers compress; the caller's thread walks, feeds them and
    // mostly waits for them. Plain tar: the caller's thread is the only one.
    let off_thread = spare_core(if opts.compression == Compression::Uncompressed { 1 } else { threads });
    let mut blob = HashingWriter::new(out, "sha256-blob", off_thread);
    let (diff_id, identity) = match opts.compression {
        Compression::Uncompressed => (None, walk(&mut blob)?),
        Compression::Gzip { level } => {
            let gz = ParGzip::new(&mut blob, level, threads)
                .map_err(|source| LayerWriteError::ThreadPool { threads, source })?;
            let mut tar = HashingWriter::new(gz, "sha256-tar", off_thread);
            let identity = walk(&mut tar)?;
            let (diff_id, _, gz) = tar.finish();
            gz.finish().map_err(werr)?;
            (Some(diff_id), identity)
        }
        Compression::Zstd { level } => {
            let mut enc = zstd::stream::write::Encoder::new(&mut blob, level).map_err(werr)?;
            // multithread(0) would be a different (single-threaded) format
            // path; >= 1 gives the same bytes for any count.
            enc.multithread(threads as u32).map_err(werr)?;
            let mut tar = HashingWriter::new(enc, "sha256-tar", off_thread);
            let identity = walk(&mut tar)?;
            let (diff_id, _, enc) = tar.finish();
            enc.finish().map_err(werr)?;
            (Some(diff_id), identity)
        }
    };
    blob.flush().map_err(werr)?;
    let (digest, size, _) = blob.finish();
    let layer = LayerDescriptor {
        diff_id: diff_id.unwrap_or_else(|| digest.clone()),
        digest,
        size,
        media_type: opts.compression.media_type().to_string(),
    };
    Ok((layer, identity))
}

/// Whether the machine has a core left over when `busy` threads are at work.
///
/// The two digests are then taken on threads of their own (see
/// `digest.rs`), in the time the compressor leaves that core idle. When
/// every core already compresses, a hashing thread only takes turns with a
/// compression worker and adds copies, thread switches and cache misses:
/// then hashing inline, on bytes still in cache, is the cheaper of the two.
fn spare_core(busy: usize) -> bool {
    std::thread::available_parallelism().map_or(1, |n| n.get()) > busy
}

/// A writer that only counts what passes through it.
struct Count<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Count<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses `input` exactly as [`write_layer`] compresses a tar stream
/// (same encoder, level and threads) and returns the compressed size: the
/// compressor alone, without walk, tar or digests. `bench/compression.sh`
/// measures the layer writer against it.
pub fn compress_stream(
    input: &mut dyn io::Read,
    compression: Compression,
    threads: usize,
    out: &mut dyn Write,
) -> Result<u64, LayerWriteError> {
    let threads = threads.max(1);
    let werr = |source| LayerWriteError::Write { source };
    let mut counted = Count { inner: out, count: 0 };
    match compression {
        Compression::Uncompressed => {
            io::copy(input, &mut counted).map_err(werr)?;
        }
        Compression::Gzip { level } => {
            let mut gz = ParGzip::new(&mut counted, level, threads)
                .map_err(|source| LayerWriteError::ThreadPool { threads, source })?;
            io::copy(input, &mut gz).map_err(werr)?;
            gz.finish().map_err(werr)?;
        }
        Compression::Zstd { level } => {
            let mut enc = zstd::stream::write::Encoder::new(&mut counted, level).map_err(werr)?;
            enc.multithread(threads as u32).map_err(werr)?;
            io::copy(input, &mut enc).map_err(werr)?;
            enc.finish().map_err(werr)?;
        }
    }
    Ok(counted.count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::{PermissionsExt, symlink};

    use sha2::{Digest as _, Sha256};

    use crate::layer::walk::{SinkError, TarSink};

    /// A snapshot dir with every kind of entry; returns its path.
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
        rustix::fs::setxattr(root.join("opaque"), "user.overlay.opaque", b"y", rustix::fs::XattrFlags::empty())
            .unwrap();
        rustix::fs::setxattr(root.join("etc/hello.txt"), "user.note", b"v1", rustix::fs::XattrFlags::empty()).unwrap();
        let long = root.join(format!("{}/{}", "d".repeat(120), "f".repeat(110)));
        fs::create_dir_all(long.parent().unwrap()).unwrap();
        fs::write(&long, b"long").unwrap();
        std::os::unix::fs::lchown(root.join("etc/hello.txt"), Some(1000), Some(3_000_000)).unwrap();
    }

    /// (path, type, size, link, uid, gid, mode, xattrs) for each entry.
    #[allow(clippy::type_complexity)]
    fn list_tar(
        tar_bytes: &[u8],
    ) -> Vec<(String, tar::EntryType, u64, Option<String>, u64, u64, u32, BTreeMap<String, Vec<u8>>)> {
        let mut ar = tar::Archive::new(tar_bytes);
        let mut v = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut xattrs = BTreeMap::new();
            if let Some(ext) = e.pax_extensions().unwrap() {
                for r in ext {
                    let r = r.unwrap();
                    if let Some(k) = r.key().unwrap().strip_prefix("SCHILY.xattr.") {
                        xattrs.insert(k.to_string(), r.value_bytes().to_vec());
                    }
                }
            }
            let h = e.header().clone();
            let link = e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned());
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            assert_eq!(data.len() as u64, e.size());
            v.push((
                path,
                h.entry_type(),
                e.size(),
                link,
                e.header().uid().unwrap(),
                h.gid().unwrap(),
                h.mode().unwrap(),
                xattrs,
            ));
        }
        v
    }

    fn layer(dir: &Path, compression: Compression, threads: usize, epoch: Option<i64>) -> (LayerDescriptor, Vec<u8>) {
        let mut out = Vec::new();
        let info =
            write_layer(dir, &LayerOptions { compression, source_date_epoch: epoch, threads }, &mut out).unwrap();
        (info, out)
    }

    fn sha(b: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(b)))
    }

    #[test]
    fn tar_contents_whiteouts_links_and_pax() {
        let tmp = tempfile::tempdir().unwrap();
        make_snapshot(tmp.path());
        let (info, tar) = layer(tmp.path(), Compression::Uncompressed, 1, None);
        assert_eq!(info.digest, info.diff_id);
        assert_eq!(info.digest, sha(&tar));
        assert_eq!(info.size, tar.len() as u64);
        let entries = list_tar(&tar);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        let long_dir = format!("{}/", "d".repeat(120));
        let long_file = format!("{}/{}", "d".repeat(120), "f".repeat(110));
        assert_eq!(
            names,
            // Sorted by on-disk name: the whiteout sits where `deleted` does.
            vec![
                "bin/",
                "bin/big",
                long_dir.as_str(),
                long_file.as_str(),
                ".wh.deleted",
                "etc/",
                "etc/hello-link",
                "etc/hello.txt",
                "etc/sym",
                "fifo",
                "opaque/",
                "opaque/.wh..wh..opq",
                "opaque/new",
            ]
        );
        let get = |n: &str| entries.iter().find(|e| e.0 == n).unwrap();
        assert_eq!(get("bin/big").2, 3_000_000);
        assert_eq!(get("bin/big").6, 0o4755);
        assert_eq!(get(".wh.deleted").1, tar::EntryType::Regular);
        assert_eq!(get(".wh.deleted").2, 0);
        // hello-link sorts first, so it is the file and hello.txt the link.
        assert_eq!(get("etc/hello-link").1, tar::EntryType::Regular);
        assert_eq!(get("etc/hello.txt").1, tar::EntryType::Link);
        assert_eq!(get("etc/hello.txt").3.as_deref(), Some("etc/hello-link"));
        assert_eq!((get("etc/hello.txt").4, get("etc/hello.txt").5), (1000, 3_000_000));
        assert_eq!(get("etc/sym").1, tar::EntryType::Symlink);
        assert_eq!(get("etc/sym").3.as_deref(), Some("hello.txt"));
        assert_eq!(get("fifo").1, tar::EntryType::Fifo);
        assert_eq!(get("etc/hello.txt").7.get("user.note").map(|v| v.as_slice()), Some(&b"v1"[..]));
        // Overlay's own xattrs never leak into the layer.
        assert!(entries.iter().all(|e| e.7.keys().all(|k| !k.contains("overlay"))));
    }

    /// A sink over the layer writer's hashing writer that changes a file
    /// (`how`) the first time file contents are read into it: what a
    /// process left running by a build step could do to a snapshot while it
    /// is exported.
    struct Meddling<'a> {
        inner: HashingWriter<Vec<u8>>,
        target: &'a Path,
        how: fn(&Path),
        done: bool,
    }

    impl Write for Meddling<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.inner.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    impl TarSink for Meddling<'_> {
        fn read_from(&mut self, file: &mut fs::File, max: usize) -> Result<usize, SinkError> {
            if !self.done {
                self.done = true;
                (self.how)(self.target);
            }
            self.inner.read_from(file, max)
        }
    }

    /// The identity taken while writing is the one a metadata walk gives,
    /// the layer written with it is the plain one, and the identity moves
    /// with anything the tar shows (an xattr, a clamped mtime) and with a
    /// file's inode (a copy of the same bytes), never with nothing.
    #[test]
    fn a_layer_identity_follows_headers_and_inodes() {
        let tmp = tempfile::tempdir().unwrap();
        make_snapshot(tmp.path());
        let opts =
            |epoch| LayerOptions { compression: Compression::Gzip { level: 1 }, source_date_epoch: epoch, threads: 2 };
        let mut out = Vec::new();
        let (written, identity) = write_layer_identified(tmp.path(), &opts(Some(5)), &mut out).unwrap();
        let (plain, bytes) = layer(tmp.path(), Compression::Gzip { level: 1 }, 2, Some(5));
        assert_eq!((written, out), (plain, bytes));
        assert_eq!(layer_identity(tmp.path(), &opts(Some(5))).unwrap(), identity);
        assert_eq!(layer_identity(tmp.path(), &opts(Some(5))).unwrap(), identity, "not stable");
        assert_ne!(layer_identity(tmp.path(), &opts(None)).unwrap(), identity, "the epoch's clamp is in the tar");
        rustix::fs::setxattr(tmp.path().join("bin"), "user.k", b"v", rustix::fs::XattrFlags::empty()).unwrap();
        let with_xattr = layer_identity(tmp.path(), &opts(Some(5))).unwrap();
        assert_ne!(with_xattr, identity, "a directory's xattr is in the tar");
        let big = tmp.path().join("bin/big");
        let copy = tmp.path().join("bin/big.new");
        fs::copy(&big, &copy).unwrap();
        fs::rename(&copy, &big).unwrap();
        assert_ne!(layer_identity(tmp.path(), &opts(Some(5))).unwrap(), with_xattr, "another inode, same bytes");
    }

    #[test]
    fn a_file_that_grows_or_shrinks_while_archived_is_an_error_not_a_corrupt_tar() {
        let grow: fn(&Path) = |p| {
            let mut f = fs::OpenOptions::new().append(true).open(p).unwrap();
            f.write_all(&[b'x'; 70_000]).unwrap();
        };
        let shrink: fn(&Path) = |p| fs::OpenOptions::new().write(true).open(p).unwrap().set_len(10).unwrap();
        for (how, read) in [(grow, 1_000_001u64), (shrink, 10)] {
            for off_thread in [true, false] {
                let tmp = tempfile::tempdir().unwrap();
                let big = tmp.path().join("big");
                fs::write(&big, vec![7u8; 1_000_000]).unwrap();
                let mut sink = Meddling {
                    inner: HashingWriter::new(Vec::new(), "sha256-test", off_thread),
                    target: &big,
                    how,
                    done: false,
                };
                let tree = TreeOptions { whiteouts: true, epoch: None };
                match write_tree_to(tmp.path(), tree, &mut sink) {
                    Err(LayerWriteError::FileChanged { path, expected, read: got }) => {
                        assert_eq!(path, big);
                        assert_eq!(expected, 1_000_000);
                        assert_eq!(got, read);
                    }
                    other => panic!("expected FileChanged, got {other:?}"),
                }
            }
        }
    }

    /// Takes `left` bytes, then fails.
    struct Failing {
        left: usize,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_output_is_an_error_for_every_compression_and_thread_count() {
        let tmp = tempfile::tempdir().unwrap();
        make_snapshot(tmp.path());
        for compression in [Compression::Gzip { level: 1 }, Compression::Zstd { level: 1 }, Compression::Uncompressed] {
            // 1 thread hashes off-thread (with 2+ cores), 4 inline; the
            // output fails early and late.
            for threads in [1, 4] {
                for left in [0, 20_000] {
                    let opts = LayerOptions { compression, source_date_epoch: None, threads };
                    let err = write_layer(tmp.path(), &opts, &mut Failing { left }).unwrap_err();
                    assert!(matches!(err, LayerWriteError::Write { .. }), "{compression:?} t={threads}: {err:?}");
                }
            }
        }
    }

    #[test]
    fn zstd_levels_follow_buildkit_speed_classes() {
        let level = |l| match Compression::zstd_buildkit_level(l) {
            Compression::Zstd { level } => level,
            other => panic!("{other:?}"),
        };
        assert_eq!(level(None), 3);
        for (asked, libzstd) in [
            (-100, 3),
            (-1, 3),
            (0, 1),
            (1, 1),
            (2, 1),
            (3, 3),
            (5, 3),
            (6, 3),
            (7, 7),
            (8, 7),
            (9, 11),
            (19, 11),
            (22, 11),
        ] {
            assert_eq!(level(Some(asked)), libzstd, "compression-level={asked}");
        }
        assert_eq!(level(Some(i32::MAX)), 11);
        assert_eq!(level(Some(i32::MIN)), 3);
    }

    #[test]
    fn source_date_epoch_clamps_mtimes() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("f"), b"x").unwrap();
        let (_, tar) = layer(tmp.path(), Compression::Uncompressed, 1, Some(1_000_000));
        let mut ar = tar::Archive::new(&tar[..]);
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.header().mtime().unwrap(), 1_000_000);
        let (_, tar2) = layer(tmp.path(), Compression::Uncompressed, 1, Some(i64::MAX));
        let mut ar = tar::Archive::new(&tar2[..]);
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_ne!(e.header().mtime().unwrap(), 1_000_000);
    }

    #[test]
    fn compressed_layers_round_trip_deterministically_for_any_thread_count() {
        let tmp = tempfile::tempdir().unwrap();
        make_snapshot(tmp.path());
        let (plain, tar) = layer(tmp.path(), Compression::Uncompressed, 1, Some(0));
        for compression in [Compression::Gzip { level: 6 }, Compression::Zstd { level: 3 }] {
            let (one, bytes1) = layer(tmp.path(), compression, 1, Some(0));
            let (two, bytes2) = layer(tmp.path(), compression, 2, Some(0));
            let (four, bytes4) = layer(tmp.path(), compression, 4, Some(0));
            assert!(bytes1 == bytes2 && bytes1 == bytes4, "{compression:?} differs by thread count");
            assert_eq!(one, two);
            assert_eq!(one, four);
            assert_eq!(one.diff_id, plain.diff_id);
            assert_eq!(one.digest, sha(&bytes1));
            assert_eq!(one.size, bytes1.len() as u64);
            assert_eq!(one.media_type, compression.media_type());
            let mut back = Vec::new();
            match compression {
                Compression::Gzip { .. } => {
                    flate2::read::GzDecoder::new(&bytes1[..]).read_to_end(&mut back).unwrap();
                }
                _ => {
                    back = zstd::decode_all(&bytes1[..]).unwrap();
                }
            }
            assert!(back == tar, "{compression:?} round trip");
        }
        // The compressor alone gives the layer writer's very bytes.
        for compression in [Compression::Gzip { level: 6 }, Compression::Zstd { level: 3 }] {
            let (_, blob) = layer(tmp.path(), compression, 2, Some(0));
            let mut alone = Vec::new();
            let n = compress_stream(&mut &tar[..], compression, 2, &mut alone).unwrap();
            assert_eq!(n, alone.len() as u64);
            assert!(alone == blob, "{compression:?}: compressor alone differs from the layer writer");
        }
        // Twice the same: same digest.
        let (again, _) = layer(tmp.path(), Compression::Gzip { level: 6 }, 2, Some(0));
        assert_eq!(again.digest, layer(tmp.path(), Compression::Gzip { level: 6 }, 1, Some(0)).0.digest);
    }
}
