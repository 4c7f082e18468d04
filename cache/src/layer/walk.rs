//! Deterministic tar writing of a directory tree.
//!
//! Shared by the layer writer (which also turns overlay whiteouts and opaque
//! markers into OCI `.wh.` entries) and the rootfs tar exporter. Entries are
//! visited depth-first, each directory's children sorted by name bytes, a
//! directory before its children; headers are ustar with PAX records only
//! where ustar cannot hold a value, `uname`/`gname` empty, mtimes in whole
//! seconds (clamped to `SOURCE_DATE_EPOCH`), so the same tree gives the same
//! bytes on every run.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

use super::LayerWriteError;

/// How to write a tree.
#[derive(Clone, Copy, Debug)]
pub struct TreeOptions {
    /// Convert overlay whiteouts (char device 0:0, opaque xattr) to OCI
    /// `.wh.` entries. Off for a merged root filesystem, which has none.
    pub whiteouts: bool,
    /// Clamp mtimes to this (`SOURCE_DATE_EPOCH`).
    pub epoch: Option<i64>,
}

/// One tar entry, before encoding.
struct Entry {
    path: Vec<u8>,
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
    link: Option<Vec<u8>>,
    dev: (u32, u32),
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Writes `root`'s contents (not `root` itself) as a tar stream, including
/// the two zero end blocks.
pub fn write_tree(root: &Path, opts: TreeOptions, out: &mut dyn Write) -> Result<(), LayerWriteError> {
    write_tree_to(root, opts, &mut Copying { out, buf: vec![0; 256 * 1024] })
}

/// [`write_tree`] to a sink that file contents are read straight into.
pub(crate) fn write_tree_to(root: &Path, opts: TreeOptions, out: &mut dyn TarSink) -> Result<(), LayerWriteError> {
    let mut w = Walker { opts, out, links: HashMap::new(), identity: None, contents: true };
    w.walk_dir(root, &[])?;
    w.out.write_all(&[0u8; 1024]).map_err(|source| LayerWriteError::Write { source })
}

/// What the tar of a tree is made of, short of file contents: SHA-256 of
/// every entry's header fields in stream order and, for each file whose
/// bytes the tar carries, its (device, inode).
///
/// Two trees with the same identity, whose inodes are alive and never
/// written (a store's snapshots: immutable, and held by their own directory
/// entries, so no inode number is reused while both exist), have the same
/// tar bytes: the same headers and, at every file, the same inode's bytes.
/// A `COPY --from` shares the inodes of the stage it copies from, so its
/// layer is found equal to that stage's without reading a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeIdentity(pub [u8; 32]);

/// [`write_tree_to`], also returning the tree's [`TreeIdentity`].
pub(crate) fn write_tree_identified(
    root: &Path,
    opts: TreeOptions,
    out: &mut dyn TarSink,
) -> Result<TreeIdentity, LayerWriteError> {
    let mut w = Walker { opts, out, links: HashMap::new(), identity: Some(Sha256::new()), contents: true };
    w.walk_dir(root, &[])?;
    w.out.write_all(&[0u8; 1024]).map_err(|source| LayerWriteError::Write { source })?;
    Ok(TreeIdentity(w.identity.take().expect("identity hasher").finalize().into()))
}

/// The [`TreeIdentity`] of `root` with `opts`: one walk of its metadata
/// (`lstat` and xattrs); no file is opened.
pub fn tree_identity(root: &Path, opts: TreeOptions) -> Result<TreeIdentity, LayerWriteError> {
    let mut sink = Copying { out: &mut io::sink(), buf: Vec::new() };
    let mut w = Walker { opts, out: &mut sink, links: HashMap::new(), identity: Some(Sha256::new()), contents: false };
    w.walk_dir(root, &[])?;
    Ok(TreeIdentity(w.identity.take().expect("identity hasher").finalize().into()))
}

/// Why [`TarSink::read_from`] failed.
pub(crate) enum SinkError {
    /// Reading the file.
    Read(io::Error),
    /// Writing the stream.
    Write(io::Error),
}

/// Where a tar stream goes.
///
/// File contents are most of a layer's bytes; a sink with buffers of its
/// own (the layer writer's hashing chunks) has them read straight into
/// those, saving a copy of every byte.
pub(crate) trait TarSink: Write {
    /// Appends up to `max` (> 0) bytes read from `file` to the stream and
    /// returns how many: 0 at the end of the file.
    fn read_from(&mut self, file: &mut File, max: usize) -> Result<usize, SinkError>;
}

/// A [`TarSink`] over any writer: reads into a buffer, then writes.
struct Copying<'a> {
    out: &'a mut dyn Write,
    buf: Vec<u8>,
}

impl Write for Copying<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl TarSink for Copying<'_> {
    fn read_from(&mut self, file: &mut File, max: usize) -> Result<usize, SinkError> {
        let want = max.min(self.buf.len());
        let n = read_retrying(file, &mut self.buf[..want]).map_err(SinkError::Read)?;
        self.out.write_all(&self.buf[..n]).map_err(SinkError::Write)?;
        Ok(n)
    }
}

/// `read`, retried on `EINTR`.
pub(crate) fn read_retrying(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

struct Walker<'a> {
    opts: TreeOptions,
    out: &'a mut dyn TarSink,
    /// First path seen for each multiply-linked (dev, inode).
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Hashes the [`TreeIdentity`] as the stream goes.
    identity: Option<Sha256>,
    /// Whether anything is written to `out` (off: only the identity).
    contents: bool,
}

/// The names in `dir`, sorted by bytes.
fn sorted_names(dir: &Path) -> Result<Vec<OsString>, LayerWriteError> {
    let read_err = |source| LayerWriteError::ReadDir { path: dir.to_path_buf(), source };
    let mut names: Vec<OsString> = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err)? {
        names.push(entry.map_err(read_err)?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + name.len() + 1);
    if !parent.is_empty() {
        p.extend_from_slice(parent);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

impl Walker<'_> {
    fn mtime(&self, md: &Metadata) -> u64 {
        let mut t = md.mtime();
        if let Some(epoch) = self.opts.epoch {
            t = t.min(epoch);
        }
        t.max(0) as u64
    }

    /// Writes the entries below `dir` in byte order of their names, depth
    /// first. Iterative (a stack of open directory listings): recursing
    /// once per level overflowed the stack on a layer with ~2,000 nested
    /// directories.
    fn walk_dir(&mut self, dir: &Path, rel: &[u8]) -> Result<(), LayerWriteError> {
        let mut stack: Vec<(PathBuf, Vec<u8>, std::vec::IntoIter<OsString>)> =
            vec![(dir.to_path_buf(), rel.to_vec(), sorted_names(dir)?.into_iter())];
        while let Some((dir, rel, names)) = stack.last_mut() {
            let Some(name) = names.next() else {
                stack.pop();
                continue;
            };
            if let Some((sub, sub_rel)) = self.visit(dir, rel, name)? {
                let names = sorted_names(&sub)?;
                stack.push((sub, sub_rel, names.into_iter()));
            }
        }
        Ok(())
    }

    /// Writes the entry `name` of `dir`; a directory is returned (host path,
    /// layer path) for the caller to descend into.
    fn visit(&mut self, dir: &Path, rel: &[u8], name: OsString) -> Result<Option<(PathBuf, Vec<u8>)>, LayerWriteError> {
        let abs = dir.join(&name);
        let md = fs::symlink_metadata(&abs).map_err(|source| LayerWriteError::Stat { path: abs.clone(), source })?;
        let ft = md.file_type();
        // Sockets cannot be represented in a layer (BuildKit skips them too).
        if ft.is_socket() {
            return Ok(None);
        }
        if self.opts.whiteouts && ft.is_char_device() && md.rdev() == 0 {
            let mut wh = b".wh.".to_vec();
            wh.extend_from_slice(name.as_bytes());
            let e = Entry {
                path: join_rel(rel, &wh),
                kind: EntryType::Regular,
                mode: 0,
                uid: 0,
                gid: 0,
                mtime: self.mtime(&md),
                size: 0,
                link: None,
                dev: (0, 0),
                xattrs: BTreeMap::new(),
            };
            self.write_entry(&e, None)?;
            return Ok(None);
        }
        let (xattrs, opaque) = read_xattrs(&abs)?;
        let rel_path = join_rel(rel, name.as_bytes());
        let mut e = Entry {
            path: rel_path.clone(),
            kind: EntryType::Regular,
            mode: md.mode() & 0o7777,
            uid: u64::from(md.uid()),
            gid: u64::from(md.gid()),
            mtime: self.mtime(&md),
            size: 0,
            link: None,
            dev: (0, 0),
            xattrs,
        };
        if ft.is_dir() {
            e.kind = EntryType::Directory;
            e.path.push(b'/');
            self.write_entry(&e, None)?;
            if self.opts.whiteouts && opaque {
                let opq = Entry {
                    path: join_rel(&rel_path, b".wh..wh..opq"),
                    kind: EntryType::Regular,
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    mtime: e.mtime,
                    size: 0,
                    link: None,
                    dev: (0, 0),
                    xattrs: BTreeMap::new(),
                };
                self.write_entry(&opq, None)?;
            }
            return Ok(Some((abs, rel_path)));
        }
        if md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            if let Some(first) = self.links.get(&key) {
                e.kind = EntryType::Link;
                e.link = Some(first.clone());
                self.write_entry(&e, None)?;
                return Ok(None);
            }
            self.links.insert(key, rel_path.clone());
        }
        if ft.is_symlink() {
            let target =
                fs::read_link(&abs).map_err(|source| LayerWriteError::ReadLink { path: abs.clone(), source })?;
            e.kind = EntryType::Symlink;
            e.link = Some(target.into_os_string().into_vec());
            self.write_entry(&e, None)?;
        } else if ft.is_file() {
            e.size = md.len();
            self.write_entry(&e, Some((&abs, &md)))?;
        } else if ft.is_fifo() {
            e.kind = EntryType::Fifo;
            self.write_entry(&e, None)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            e.kind = if ft.is_char_device() { EntryType::Char } else { EntryType::Block };
            e.dev = (rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev()));
            self.write_entry(&e, None)?;
        }
        Ok(None)
    }

    fn write_entry(&mut self, e: &Entry, data: Option<(&Path, &Metadata)>) -> Result<(), LayerWriteError> {
        if let Some(h) = &mut self.identity {
            identify_entry(h, e, data.map(|(_, md)| md));
        }
        if !self.contents {
            return Ok(());
        }
        let werr = |source| LayerWriteError::Write { source };
        let mut pax: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let split = split_ustar(&e.path);
        if split.is_none() {
            pax.insert("path".into(), e.path.clone());
        }
        if let Some(link) = &e.link
            && link.len() > 100
        {
            pax.insert("linkpath".into(), link.clone());
        }
        const MAX_ID: u64 = 0o7777777;
        const MAX_SIZE: u64 = 0o77777777777;
        if e.uid > MAX_ID {
            pax.insert("uid".into(), e.uid.to_string().into_bytes());
        }
        if e.gid > MAX_ID {
            pax.insert("gid".into(), e.gid.to_string().into_bytes());
        }
        if e.size > MAX_SIZE {
            pax.insert("size".into(), e.size.to_string().into_bytes());
        }
        for (k, v) in &e.xattrs {
            pax.insert(format!("SCHILY.xattr.{k}"), v.clone());
        }
        if !pax.is_empty() {
            let body = pax_body(&pax);
            let base = e.path.trim_ascii_end().split(|b| *b == b'/').rfind(|s| !s.is_empty()).unwrap_or(b"");
            let mut name = b"PaxHeaders.0/".to_vec();
            name.extend_from_slice(base);
            name.truncate(100);
            let mut h = Header::new_ustar();
            set_name(&mut h, b"", &name);
            h.set_entry_type(EntryType::XHeader);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(body.len() as u64);
            h.set_cksum();
            self.out.write_all(h.as_bytes()).map_err(werr)?;
            self.out.write_all(&body).map_err(werr)?;
            pad(self.out, body.len() as u64)?;
        }

        let mut h = Header::new_ustar();
        match split {
            Some((prefix, name)) => set_name(&mut h, prefix, name),
            // The PAX `path` record holds the real name; keep a readable stub.
            None => set_name(&mut h, b"", &e.path[e.path.len().saturating_sub(100)..]),
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        // Ids too big for ustar are in the PAX record; the field says 0.
        h.set_uid(if e.uid > MAX_ID { 0 } else { e.uid });
        h.set_gid(if e.gid > MAX_ID { 0 } else { e.gid });
        h.set_mtime(e.mtime);
        h.set_size(e.size);
        if let Some(link) = &e.link {
            let ustar = h.as_ustar_mut().expect("new_ustar header");
            let n = link.len().min(100);
            ustar.linkname[..n].copy_from_slice(&link[..n]);
        }
        if matches!(e.kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(e.dev.0).map_err(werr)?;
            h.set_device_minor(e.dev.1).map_err(werr)?;
        }
        h.set_cksum();
        self.out.write_all(h.as_bytes()).map_err(werr)?;

        if let Some((path, _)) = data {
            self.copy_file(path, e.size)?;
            pad(self.out, e.size)?;
        }
        Ok(())
    }

    /// Copies exactly `size` bytes of `path` to the output; a file that
    /// shrank or grew since `lstat` is an error, not a corrupt tar.
    fn copy_file(&mut self, path: &Path, size: u64) -> Result<(), LayerWriteError> {
        let rerr = |source| LayerWriteError::ReadFile { path: path.to_path_buf(), source };
        let mut f = File::open(path).map_err(rerr)?;
        let mut left = size;
        while left > 0 {
            let n = match self.out.read_from(&mut f, usize::try_from(left).unwrap_or(usize::MAX)) {
                Ok(0) => break,
                Ok(n) => n,
                Err(SinkError::Read(err)) => return Err(rerr(err)),
                Err(SinkError::Write(source)) => return Err(LayerWriteError::Write { source }),
            };
            left -= n as u64;
        }
        let mut probe = [0u8; 1];
        let extra = f.read(&mut probe).map_err(rerr)?;
        if left > 0 || extra > 0 {
            return Err(LayerWriteError::FileChanged {
                path: path.to_path_buf(),
                expected: size,
                read: size - left + extra as u64,
            });
        }
        Ok(())
    }
}

/// Feeds one entry to a [`TreeIdentity`]: every field its headers are made
/// from (the headers are a function of them), each length-prefixed, and
/// the inode of the file whose bytes follow. Hashing the fields rather
/// than the formatted headers keeps the identity walk to `lstat` and
/// xattrs (formatting octal fields was a third of it).
fn identify_entry(h: &mut Sha256, e: &Entry, data: Option<&Metadata>) {
    let bytes = |h: &mut Sha256, b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    bytes(h, &e.path);
    h.update([e.kind.as_byte()]);
    for n in [u64::from(e.mode), e.uid, e.gid, e.mtime, e.size, u64::from(e.dev.0), u64::from(e.dev.1)] {
        h.update(n.to_le_bytes());
    }
    match &e.link {
        Some(l) => {
            h.update([1]);
            bytes(h, l);
        }
        None => h.update([0]),
    }
    h.update((e.xattrs.len() as u64).to_le_bytes());
    for (k, v) in &e.xattrs {
        bytes(h, k.as_bytes());
        bytes(h, v);
    }
    match data {
        Some(md) => {
            h.update([1]);
            h.update(md.dev().to_le_bytes());
            h.update(md.ino().to_le_bytes());
        }
        None => h.update([0]),
    }
}

fn pad(out: &mut dyn TarSink, len: u64) -> Result<(), LayerWriteError> {
    let rem = (512 - len % 512) % 512;
    out.write_all(&[0u8; 512][..rem as usize]).map_err(|source| LayerWriteError::Write { source })
}

fn set_name(h: &mut Header, prefix: &[u8], name: &[u8]) {
    let ustar = h.as_ustar_mut().expect("new_ustar header");
    ustar.name = [0; 100];
    ustar.name[..name.len()].copy_from_slice(name);
    ustar.prefix = [0; 155];
    ustar.prefix[..prefix.len()].copy_from_slice(prefix);
}

/// Splits `path` into ustar `prefix` (<= 155) and `name` (<= 100), or
/// `None` when it does not fit and needs a PAX `path` record.
fn split_ustar(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((b"", path));
    }
    if path.len() > 256 {
        return None;
    }
    // Longest prefix that fits, like Go's archive/tar; the last byte may be
    // a directory's trailing `/`, which must stay in `name`.
    let limit = (path.len() - 1).min(156);
    let i = path[..limit].iter().rposition(|b| *b == b'/')?;
    let (prefix, name) = (&path[..i], &path[i + 1..]);
    (prefix.len() <= 155 && !name.is_empty() && name.len() <= 100).then_some((prefix, name))
}

/// PAX extended header records, `"<len> <key>=<value>\n"` each, where
/// `<len>` counts the whole record including its own digits.
fn pax_body(records: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = rest + rest.to_string().len();
        if len.to_string().len() + rest != len {
            len = rest + len.to_string().len();
        }
        body.extend_from_slice(len.to_string().as_bytes());
        body.push(b' ');
        body.extend_from_slice(k.as_bytes());
        body.push(b'=');
        body.extend_from_slice(v);
        body.push(b'\n');
    }
    body
}

/// Reads extended attributes to record in the tar, and whether the overlay
/// opaque marker is set.
fn read_xattrs(path: &Path) -> Result<(BTreeMap<String, Vec<u8>>, bool), LayerWriteError> {
    let xerr = |e: rustix::io::Errno| LayerWriteError::ReadXattr { path: path.to_path_buf(), source: e.into() };
    let mut out = BTreeMap::new();
    let mut opaque = false;
    let size = match rustix::fs::llistxattr_query(path) {
        Ok(n) => n,
        Err(e) if e == rustix::io::Errno::NOTSUP => return Ok((out, false)),
        Err(e) => return Err(xerr(e)),
    };
    if size == 0 {
        return Ok((out, false));
    }
    let mut list = vec![0u8; size];
    let n = rustix::fs::llistxattr(path, &mut list[..]).map_err(xerr)?;
    list.truncate(n);
    for raw in list.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8_lossy(raw).into_owned();
        let overlay = name.strip_prefix("user.overlay.").or_else(|| name.strip_prefix("trusted.overlay."));
        // `security.selinux` is the host's labelling, not image content; it
        // would make digests depend on the build host.
        if overlay.is_none() && name == "security.selinux" {
            continue;
        }
        let value = match get_xattr(path, raw) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) => return Err(xerr(e)),
        };
        match overlay {
            Some("opaque") => opaque |= value == b"y",
            Some("redirect") | Some("metacopy") => {
                return Err(LayerWriteError::UnsupportedOverlayXattr { path: path.to_path_buf(), name });
            }
            // origin, impure, nlink, upper, uuid...: overlay bookkeeping.
            Some(_) => {}
            None => {
                out.insert(name, value);
            }
        }
    }
    Ok((out, opaque))
}

fn get_xattr(path: &Path, name: &[u8]) -> Result<Option<Vec<u8>>, rustix::io::Errno> {
    let name = std::ffi::OsStr::from_bytes(name);
    for _ in 0..3 {
        let size = match rustix::fs::lgetxattr_query(path, name) {
            Ok(n) => n,
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut v = vec![0u8; size];
        match rustix::fs::lgetxattr(path, name, &mut v[..]) {
            Ok(n) => {
                v.truncate(n);
                return Ok(Some(v));
            }
            // The value grew between the two calls: ask again.
            Err(rustix::io::Errno::RANGE) => continue,
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Err(rustix::io::Errno::RANGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        let mut m = BTreeMap::new();
        m.insert("path".to_string(), vec![b'a'; 93]); // 93+4+3 = 100 -> "103 "
        m.insert("uid".to_string(), b"1".to_vec()); // 1+3+3 = 7 -> "8 "
        let body = pax_body(&m);
        let text = String::from_utf8(body).unwrap();
        for rec in text.split_inclusive('\n') {
            let (len, _) = rec.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), rec.len(), "{rec:?}");
        }
    }

    #[test]
    fn ustar_split() {
        assert_eq!(split_ustar(b"a/b"), Some((&b""[..], &b"a/b"[..])));
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(50));
        let (p, n) = split_ustar(long.as_bytes()).unwrap();
        assert_eq!((p.len(), n.len()), (120, 50));
        let dir = format!("{}/{}/", "d".repeat(120), "f".repeat(50));
        let (p, n) = split_ustar(dir.as_bytes()).unwrap();
        assert_eq!((p.len(), n), (120, format!("{}/", "f".repeat(50)).as_bytes()));
        assert_eq!(split_ustar("x".repeat(101).as_bytes()), None);
        assert_eq!(split_ustar("d/".repeat(200).as_bytes()), None);
    }

    /// Entries in pre-order, by name bytes, names not UTF-8 kept; a tree of
    /// 2,500 nested directories (deeper than the old recursion could go on
    /// a 2 MiB thread) is written without overflowing the stack.
    #[test]
    fn tree_order_and_depth() {
        use std::os::unix::ffi::OsStrExt;
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("a/sub")).unwrap();
        fs::write(root.join("a/sub/x"), "x").unwrap();
        fs::write(root.join("a/y"), "y").unwrap();
        fs::write(root.join(std::ffi::OsStr::from_bytes(b"b\xff")), "b").unwrap();
        let names = |root: &Path| {
            let mut out = Vec::new();
            write_tree(root, TreeOptions { whiteouts: false, epoch: None }, &mut out).unwrap();
            let mut ar = tar::Archive::new(&out[..]);
            ar.entries().unwrap().map(|e| e.unwrap().path_bytes().into_owned()).collect::<Vec<Vec<u8>>>()
        };
        let got = names(root);
        let want: [&[u8]; 5] = [b"a/", b"a/sub/", b"a/sub/x", b"a/y", b"b\xff"];
        assert_eq!(got, want.map(<[u8]>::to_vec));

        let deep = tempfile::tempdir().unwrap();
        let mut fd = rustix::fs::open(deep.path(), rustix::fs::OFlags::DIRECTORY, rustix::fs::Mode::empty()).unwrap();
        for _ in 0..2500 {
            rustix::fs::mkdirat(&fd, "d", rustix::fs::Mode::from_raw_mode(0o755)).unwrap();
            fd = rustix::fs::openat(&fd, "d", rustix::fs::OFlags::DIRECTORY, rustix::fs::Mode::empty()).unwrap();
        }
        // Deeper than PATH_MAX: the walk reaches the limit and reports it.
        let got = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn({
                let p = deep.path().to_path_buf();
                move || {
                    let mut out = Vec::new();
                    write_tree(&p, TreeOptions { whiteouts: false, epoch: None }, &mut out).map(|_| ())
                }
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert!(got.is_err(), "a 5,000-byte path cannot be opened");
        std::process::Command::new("rm").arg("-rf").arg(deep.path().join("d")).status().unwrap();
    }
}
