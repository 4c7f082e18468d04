//! Safe, entry-by-entry layer unpacking into a snapshot diff directory in
//! overlay format.
//!
//! Every entry's parent directory is opened with `openat2(RESOLVE_IN_ROOT)`
//! relative to the destination, so `..`, absolute names and symlinks (in
//! the archive or created by earlier entries) resolve as if the destination
//! were `/` and can never reach outside it. The final component is then
//! created with `*at` calls that do not follow symlinks, after removing
//! whatever was there (a regular file never writes through an existing
//! symlink or hardlink).
//!
//! OCI whiteouts become overlay whiteouts: `.wh.<name>` is a 0:0 character
//! device (unprivileged `mknod` of exactly that device is allowed in user
//! namespaces since Linux 5.8), `.wh..wh..opq` sets `user.overlay.opaque=y`
//! on its directory. We always use the `user.` namespace because our overlay
//! mounts use `userxattr`, which ignores `trusted.` markers even as root.
//! For the same reason `*.overlay.*` xattrs inside archives are dropped: a
//! hostile layer must not be able to forge overlay metadata.
//!
//! [`extract`] is the same path for any tar: [`ExtractKind::Layer`] is a
//! layer as above; [`ExtractKind::Archive`] is `ADD`'s local-archive
//! extraction, where names are taken literally (a `.wh.` file is a file, a
//! 0:0 character device is skipped like any device) and `security.*`
//! attributes are dropped, but confinement, replacement and metadata are
//! the same.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use super::owner::{OwnerError, check_owner};
use crate::fsutil;

/// Overlay's opaque-directory marker in `userxattr` mode.
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// How to unpack.
#[derive(Clone, Debug)]
pub struct UnpackOptions {
    /// Apply the archive's owners. False when only a single id is mapped:
    /// then files stay owned by the caller and entries owned by anyone but
    /// 0:0 are counted in [`UnpackStats::ownership_not_applied`].
    pub chown: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions { chown: true }
    }
}

/// What kind of tar [`extract`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtractKind {
    /// An OCI layer: whiteouts become overlay whiteouts.
    Layer,
    /// An archive `ADD` unpacks: every name is content.
    Archive,
}

/// Whose owner extracted entries get.
#[derive(Clone, Copy)]
pub enum Owners<'a> {
    /// The archive's owners; an owner `representable` refuses is an error
    /// (it could not be stored, and silently changing it would be wrong).
    Archive {
        /// Whether an owner can be set in this user namespace.
        representable: &'a dyn Fn(u32, u32) -> bool,
    },
    /// Every entry gets this owner (`ADD --chown`); an error if it cannot
    /// be represented.
    Force {
        /// Owner uid.
        uid: u32,
        /// Owner gid.
        gid: u32,
        /// Whether an owner can be set in this user namespace.
        representable: &'a dyn Fn(u32, u32) -> bool,
    },
    /// Entries stay owned by the caller; those owned by anyone but 0:0 are
    /// counted in [`UnpackStats::ownership_not_applied`].
    Caller,
}

impl std::fmt::Debug for Owners<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owners::Archive { .. } => f.write_str("Archive"),
            Owners::Force { uid, gid, .. } => write!(f, "Force({uid}:{gid})"),
            Owners::Caller => f.write_str("Caller"),
        }
    }
}

/// How to extract.
#[derive(Clone, Copy, Debug)]
pub struct ExtractOptions<'a> {
    /// Layer or `ADD` archive.
    pub kind: ExtractKind,
    /// Whose owners entries get.
    pub owners: Owners<'a>,
}

/// What an unpack did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries seen (excluding extension headers).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hardlinks created.
    pub hardlinks: u64,
    /// FIFOs created.
    pub fifos: u64,
    /// Whiteouts created (`.wh.<name>` and 0:0 char devices).
    pub whiteouts: u64,
    /// Directories marked opaque (`.wh..wh..opq`).
    pub opaque_dirs: u64,
    /// Character/block devices skipped: they cannot be created rootless.
    pub devices_skipped: u64,
    /// Extended attributes skipped (`security.*`/`trusted.*`/`system.*`
    /// that the kernel refused, overlay markers, attributes on symlinks).
    pub xattrs_skipped: u64,
    /// Entries with a non-root owner when `chown` was off.
    pub ownership_not_applied: u64,
    /// Entries of other types (or aufs `.wh..wh.*` metadata) skipped.
    pub other_skipped: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Errors from unpacking; `path` is the entry's name as cleaned (relative
/// to the destination).
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The destination directory could not be opened.
    #[error("cannot open unpack destination `{}`", .path.display())]
    OpenDest {
        /// Destination.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Reading or decompressing the layer stream failed.
    #[error("cannot read layer archive")]
    Read(#[source] io::Error),
    /// A header field (path, mode, owner...) could not be decoded.
    #[error("malformed tar header for `{path}`")]
    Header {
        /// Entry name (lossy).
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The parent directory of an entry could not be opened or created.
    #[error("cannot create parent directory of `{path}`")]
    Parent {
        /// Entry.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// An existing entry could not be removed before replacing it.
    #[error("cannot replace existing `{path}`")]
    Replace {
        /// Entry.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Creating the entry (or writing its content) failed.
    #[error("cannot create `{path}`")]
    Create {
        /// Entry.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A hardlink's target is missing, a directory, or otherwise unlinkable.
    #[error("cannot hardlink `{path}` to `{target}`")]
    Hardlink {
        /// Entry.
        path: String,
        /// Link target inside the layer.
        target: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The owner an entry needs is not a valid id or cannot be represented
    /// in this user namespace; checked before the entry is written.
    #[error(transparent)]
    Owner(#[from] OwnerError),
    /// Owner could not be applied (with `chown` on).
    #[error("cannot set owner of `{path}` to {uid}:{gid}; is the id mapped in this user namespace?")]
    Chown {
        /// Entry.
        path: String,
        /// Owner uid.
        uid: u32,
        /// Owner gid.
        gid: u32,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Mode or times could not be applied.
    #[error("cannot set mode or times of `{path}`")]
    Metadata {
        /// Entry.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A `user.*` extended attribute could not be set.
    #[error("cannot set extended attribute `{name}` on `{path}`")]
    Xattr {
        /// Entry.
        path: String,
        /// Attribute name.
        name: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// An overlay whiteout or opaque marker could not be created.
    #[error("cannot create overlay whiteout for `{path}`")]
    Whiteout {
        /// Entry.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// Unpacks a layer (gzip, zstd or plain tar, detected by magic bytes) into
/// `dest`, which must exist.
pub fn unpack_layer(reader: impl Read, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats, UnpackError> {
    let stream = decompress(reader).map_err(UnpackError::Read)?;
    let all = |_: u32, _: u32| true;
    // With `chown` on, the kernel itself refuses an unmapped owner (a
    // `Chown` error naming the id).
    let owners = if opts.chown { Owners::Archive { representable: &all } } else { Owners::Caller };
    extract(stream, dest, &ExtractOptions { kind: ExtractKind::Layer, owners })
}

/// Extracts the (decompressed) tar stream `reader` into `dest`, which must
/// exist, entry by entry and confined to it (see the module doc).
pub fn extract(reader: impl Read, dest: &Path, opts: &ExtractOptions<'_>) -> Result<UnpackStats, UnpackError> {
    let root = rustix::fs::open(dest, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| UnpackError::OpenDest { path: dest.to_path_buf(), source: e.into() })?;
    let mut archive = tar::Archive::new(reader);
    let mut u = Unpacker { root, opts: *opts, stats: UnpackStats::default(), dirs: BTreeMap::new() };
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        u.entry(&mut entry)?;
    }
    u.finish_dirs()?;
    Ok(u.stats)
}

/// Whether `meta` (from `symlink_metadata`) is an overlay whiteout: a
/// character device with device number 0:0.
pub fn is_overlay_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Whether `path` is a directory overlay treats as opaque (`user.` marker,
/// or `trusted.` as written by a privileged non-userxattr overlay).
pub fn is_opaque_dir(path: &Path) -> bool {
    let mut buf = [0u8; 4];
    [OPAQUE_XATTR, "trusted.overlay.opaque"]
        .iter()
        .any(|name| matches!(rustix::fs::lgetxattr(path, *name, &mut buf), Ok(1) if buf[0] == b'y'))
}

fn decompress<'a>(reader: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(256 * 1024, reader);
    let head = br.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(br))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(br)?)
    } else {
        Box::new(br)
    })
}

/// The parts of a header we act on, decoded once.
struct Meta {
    name: String,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Unpacker<'a> {
    root: OwnedFd,
    opts: ExtractOptions<'a>,
    stats: UnpackStats,
    /// Directory path components -> (mode, mtime), applied at the end so
    /// read-only directories can still receive their content and
    /// directory mtimes are not disturbed by later entries.
    dirs: BTreeMap<Vec<OsString>, (u32, Timespec)>,
}

/// Lexically cleans an archive path: drops `/`, `.` and clamps `..` at the
/// root. Resolution inside the destination still goes through
/// `RESOLVE_IN_ROOT`; this just makes names canonical.
fn clean(path: &Path) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_owned()),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn join(comps: &[OsString]) -> PathBuf {
    comps.iter().collect()
}

fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let tv_sec: i64 = secs.parse().ok()?;
    let mut nanos = String::from(&frac[..frac.len().min(9)]);
    while nanos.len() < 9 {
        nanos.push('0');
    }
    let tv_nsec: i64 = nanos.parse().ok()?;
    // Negative fractional times count down from the whole second.
    if tv_sec < 0 && tv_nsec > 0 {
        return Some(Timespec { tv_sec: tv_sec - 1, tv_nsec: 1_000_000_000 - tv_nsec });
    }
    Some(Timespec { tv_sec, tv_nsec })
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            return Ok(());
        }
        self.stats.entries += 1;
        let raw_path = entry.path().map_err(|source| UnpackError::Header { path: String::new(), source })?;
        let comps = clean(&raw_path);
        let name = join(&comps).to_string_lossy().into_owned();
        let meta = self.meta(entry, name.clone())?;
        let Some((base, parent_comps)) = comps.split_last() else {
            // The root itself ("./"): the snapshot root's metadata is not
            // part of a layer.
            return Ok(());
        };
        let base_bytes = base.as_bytes();
        let layer = self.opts.kind == ExtractKind::Layer;

        if layer && base_bytes == OPAQUE_MARKER.as_bytes() {
            return self.opaque(parent_comps, &name);
        }
        if layer && let Some(hidden) = base_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.is_empty() || hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                // aufs metadata such as `.wh..wh.plnk`: not content.
                self.stats.other_skipped += 1;
                return Ok(());
            }
            return self.whiteout(parent_comps, OsStr::from_bytes(hidden), &meta);
        }

        use tar::EntryType as T;
        // An owner that cannot be given fails the entry before anything of
        // it (parents included) is written. Hard links share their target's
        // inode; devices are skipped.
        if let Owners::Archive { representable } | Owners::Force { representable, .. } = self.opts.owners
            && matches!(kind, T::Regular | T::Continuous | T::GNUSparse | T::Directory | T::Symlink | T::Fifo)
        {
            check_owner(|| meta.name.clone(), meta.uid, meta.gid, representable)?;
        }
        let parent = self.open_parent(parent_comps, &name)?;
        let parent = parent.as_fd();
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => self.file(parent, base, entry, &meta),
            T::Directory => self.dir(parent, base, &comps, &meta),
            T::Symlink => self.symlink(parent, base, entry, &meta),
            T::Link => self.hardlink(parent, base, entry, &meta),
            T::Fifo => self.fifo(parent, base, &meta),
            T::Char | T::Block => {
                let major = entry.header().device_major().ok().flatten().unwrap_or(1);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(1);
                if layer && kind == T::Char && major == 0 && minor == 0 {
                    // Already in overlay format.
                    self.make_whiteout(parent, base, &meta)
                } else {
                    self.stats.devices_skipped += 1;
                    Ok(())
                }
            }
            _ => {
                self.stats.other_skipped += 1;
                Ok(())
            }
        }
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, name: String) -> Result<Meta, UnpackError> {
        let h = entry.header();
        let hdr = |source| UnpackError::Header { path: name.clone(), source };
        // Hand-made archives for ADD often leave numeric fields empty, which
        // Go's archive/tar (and so BuildKit) reads as 0; a layer must be
        // well-formed.
        // A field of only NULs and spaces is 0 there; anything else that
        // does not parse is an error naming the entry, never silently 0.
        let lenient = self.opts.kind == ExtractKind::Archive;
        let field = |v: io::Result<u64>, raw: &[u8]| match v {
            Err(_) if lenient && raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
            v => v.map_err(hdr),
        };
        let old = h.as_old();
        let mode = field(h.mode().map(u64::from), &old.mode)? as u32 & 0o7777;
        let mut uid = field(h.uid(), &old.uid)?;
        let mut gid = field(h.gid(), &old.gid)?;
        let mut mtime = Timespec { tv_sec: field(h.mtime(), &old.mtime)? as i64, tv_nsec: 0 };
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(hdr)? {
            for ext in pax {
                let ext = ext.map_err(hdr)?;
                let Ok(key) = ext.key() else { continue };
                let value = ext.value_bytes();
                let num = || std::str::from_utf8(value).ok().and_then(|s| s.parse::<u64>().ok());
                match key {
                    "uid" => uid = num().unwrap_or(uid),
                    "gid" => gid = num().unwrap_or(gid),
                    "mtime" => mtime = parse_pax_time(value).unwrap_or(mtime),
                    _ => {
                        if let Some(x) = key.strip_prefix("SCHILY.xattr.") {
                            xattrs.push((x.to_string(), value.to_vec()));
                        }
                    }
                }
            }
        }
        let id = |v: u64| {
            u32::try_from(v).map_err(|_| hdr(io::Error::new(io::ErrorKind::InvalidData, "owner id above 2^32")))
        };
        let (uid, gid) = match self.opts.owners {
            Owners::Force { uid, gid, .. } => (uid, gid),
            _ => (id(uid)?, id(gid)?),
        };
        Ok(Meta { uid, gid, name, mode, mtime, xattrs })
    }

    /// Opens (creating as needed, mode 0755) the directory `comps`,
    /// resolved inside the root.
    fn open_dir(&self, comps: &[OsString]) -> io::Result<OwnedFd> {
        let path = if comps.is_empty() { PathBuf::from(".") } else { join(comps) };
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        for _ in 0..8 {
            match rustix::fs::openat2(&self.root, &path, flags, Mode::empty(), ResolveFlags::IN_ROOT) {
                Ok(fd) => return Ok(fd),
                // The kernel asks for a retry when a rename raced the walk.
                Err(Errno::AGAIN) => continue,
                Err(Errno::NOENT) if !comps.is_empty() => {
                    let (last, up) = comps.split_last().expect("non-empty");
                    let parent = self.open_dir(up)?;
                    match rustix::fs::mkdirat(&parent, last.as_os_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    // A dangling symlink named `last` makes mkdir report
                    // EEXIST while the open keeps failing: a layer gives up
                    // then; an archive creates the directories the link
                    // points at (inside the root), as moby's untar does.
                    return match rustix::fs::openat2(&self.root, &path, flags, Mode::empty(), ResolveFlags::IN_ROOT) {
                        Err(Errno::NOENT) if self.opts.kind == ExtractKind::Archive => self.create_through_links(comps),
                        r => r.map_err(Into::into),
                    };
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Errno::AGAIN.into())
    }

    /// Walks `comps` from the root one component at a time, following
    /// symlinks by their targets read as paths inside the root and creating
    /// missing directories (mode 0755). Only directories that were checked
    /// to be real ones are ever entered, and the final open is still
    /// `RESOLVE_IN_ROOT`, so nothing outside the root is reached.
    fn create_through_links(&self, comps: &[OsString]) -> io::Result<OwnedFd> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let open = |resolved: &[OsString]| {
            let path = if resolved.is_empty() { PathBuf::from(".") } else { join(resolved) };
            rustix::fs::openat2(&self.root, &path, flags, Mode::empty(), ResolveFlags::IN_ROOT)
        };
        let mut resolved: Vec<OsString> = Vec::new();
        let mut todo: std::collections::VecDeque<OsString> = comps.iter().cloned().collect();
        let mut links = 0;
        while let Some(c) = todo.pop_front() {
            if c == ".." {
                resolved.pop();
                continue;
            }
            if c.is_empty() || c == "." {
                continue;
            }
            let dir = open(&resolved)?;
            match rustix::fs::statat(&dir, c.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Err(Errno::NOENT) => match rustix::fs::mkdirat(&dir, c.as_os_str(), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => resolved.push(c),
                    Err(e) => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
                Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => resolved.push(c),
                    FileType::Symlink => {
                        links += 1;
                        if links > 40 {
                            return Err(Errno::LOOP.into());
                        }
                        let target = rustix::fs::readlinkat(&dir, c.as_os_str(), Vec::new())?;
                        let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                        if target.is_absolute() {
                            resolved.clear();
                        }
                        for part in target.components().rev() {
                            match part {
                                Component::Normal(n) => todo.push_front(n.to_owned()),
                                Component::ParentDir => todo.push_front("..".into()),
                                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                            }
                        }
                    }
                    _ => return Err(Errno::NOTDIR.into()),
                },
            }
        }
        open(&resolved).map_err(Into::into)
    }

    fn open_parent(&self, comps: &[OsString], name: &str) -> Result<OwnedFd, UnpackError> {
        self.open_dir(comps).map_err(|source| UnpackError::Parent { path: name.to_string(), source })
    }

    /// Clears the slot `base` in `parent` for a new entry. Returns true if
    /// an existing directory was kept (only when the new entry is one).
    fn prepare(&self, parent: BorrowedFd<'_>, base: &OsStr, keep_dir: bool, name: &str) -> Result<bool, UnpackError> {
        let replace = |source: io::Error| UnpackError::Replace { path: name.to_string(), source };
        match rustix::fs::statat(parent, base, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(replace(e.into())),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                if keep_dir {
                    Ok(true)
                } else {
                    fsutil::remove_at(parent, base).map_err(replace)?;
                    Ok(false)
                }
            }
            Ok(_) => {
                rustix::fs::unlinkat(parent, base, AtFlags::empty()).map_err(|e| replace(e.into()))?;
                Ok(false)
            }
        }
    }

    /// The owner to set on the entry, `None` to leave the caller's.
    fn owner(&mut self, m: &Meta) -> Result<Option<(rustix::fs::Uid, rustix::fs::Gid)>, UnpackError> {
        match self.opts.owners {
            Owners::Archive { representable } | Owners::Force { representable, .. } => {
                check_owner(|| m.name.clone(), m.uid, m.gid, representable)?;
                Ok(Some((rustix::fs::Uid::from_raw(m.uid), rustix::fs::Gid::from_raw(m.gid))))
            }
            Owners::Caller => {
                if m.uid != 0 || m.gid != 0 {
                    self.stats.ownership_not_applied += 1;
                }
                Ok(None)
            }
        }
    }

    fn chown_err(m: &Meta, e: Errno) -> UnpackError {
        UnpackError::Chown { path: m.name.clone(), uid: m.uid, gid: m.gid, source: e.into() }
    }

    fn meta_err(m: &Meta) -> impl Fn(Errno) -> UnpackError + '_ {
        |e| UnpackError::Metadata { path: m.name.clone(), source: e.into() }
    }

    fn times(m: &Meta) -> Timestamps {
        Timestamps { last_access: m.mtime, last_modification: m.mtime }
    }

    fn file<R: Read>(
        &mut self,
        parent: BorrowedFd<'_>,
        base: &OsStr,
        entry: &mut tar::Entry<'_, R>,
        m: &Meta,
    ) -> Result<(), UnpackError> {
        self.prepare(parent, base, false, &m.name)?;
        let create = |source: io::Error| UnpackError::Create { path: m.name.clone(), source };
        let fd = rustix::fs::openat(
            parent,
            base,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| create(e.into()))?;
        let mut f = File::from(fd);
        let n = io::copy(entry, &mut f).map_err(create)?;
        self.stats.bytes += n;
        if let Some((u, g)) = self.owner(m)? {
            rustix::fs::fchown(&f, Some(u), Some(g)).map_err(|e| Self::chown_err(m, e))?;
        }
        // After chown, which removes `security.capability` (the kernel
        // drops file capabilities on any chown of a regular file).
        self.xattrs_fd(f.as_fd(), m)?;
        // After chown, which clears set-id bits.
        rustix::fs::fchmod(&f, Mode::from_raw_mode(m.mode)).map_err(Self::meta_err(m))?;
        rustix::fs::futimens(&f, &Self::times(m)).map_err(Self::meta_err(m))?;
        self.stats.files += 1;
        Ok(())
    }

    fn dir(&mut self, parent: BorrowedFd<'_>, base: &OsStr, comps: &[OsString], m: &Meta) -> Result<(), UnpackError> {
        if !self.prepare(parent, base, true, &m.name)? {
            rustix::fs::mkdirat(parent, base, Mode::from_raw_mode(0o700))
                .map_err(|e| UnpackError::Create { path: m.name.clone(), source: e.into() })?;
        }
        let fd = rustix::fs::openat(
            parent,
            base,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| UnpackError::Create { path: m.name.clone(), source: e.into() })?;
        if let Some((u, g)) = self.owner(m)? {
            rustix::fs::fchown(&fd, Some(u), Some(g)).map_err(|e| Self::chown_err(m, e))?;
        }
        self.xattrs_fd(fd.as_fd(), m)?;
        self.dirs.insert(comps.to_vec(), (m.mode, m.mtime));
        self.stats.dirs += 1;
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        parent: BorrowedFd<'_>,
        base: &OsStr,
        entry: &tar::Entry<'_, R>,
        m: &Meta,
    ) -> Result<(), UnpackError> {
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| UnpackError::Header {
                path: m.name.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, "symlink without target"),
            })?
            .into_owned();
        self.prepare(parent, base, false, &m.name)?;
        rustix::fs::symlinkat(OsStr::from_bytes(&target), parent, base)
            .map_err(|e| UnpackError::Create { path: m.name.clone(), source: e.into() })?;
        // user.* xattrs are not allowed on symlinks; try the rest through
        // the parent's descriptor so no path walk can be redirected.
        for (name, value) in &m.xattrs {
            let via = format!("/proc/self/fd/{}/", parent.as_raw_fd());
            let mut p = OsString::from(via);
            p.push(base);
            if self.skip_xattr(name)
                || rustix::fs::lsetxattr(Path::new(&p), name.as_str(), value, XattrFlags::empty()).is_err()
            {
                self.stats.xattrs_skipped += 1;
            }
        }
        self.finish_at(parent, base, m, false)?;
        self.stats.symlinks += 1;
        Ok(())
    }

    fn hardlink<R: Read>(
        &mut self,
        parent: BorrowedFd<'_>,
        base: &OsStr,
        entry: &tar::Entry<'_, R>,
        m: &Meta,
    ) -> Result<(), UnpackError> {
        let target = entry
            .link_name()
            .map_err(|source| UnpackError::Header { path: m.name.clone(), source })?
            .ok_or_else(|| UnpackError::Header {
                path: m.name.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, "hardlink without target"),
            })?;
        let tcomps = clean(&target);
        let tname = join(&tcomps).to_string_lossy().into_owned();
        let link_err =
            |source: io::Error| UnpackError::Hardlink { path: m.name.clone(), target: tname.clone(), source };
        let Some((tbase, tparent_comps)) = tcomps.split_last() else {
            return Err(link_err(io::Error::new(io::ErrorKind::InvalidInput, "link to the root")));
        };
        if tname == m.name {
            return Ok(());
        }
        // Resolve the target's parent inside the root without creating it.
        let tpath = if tparent_comps.is_empty() { PathBuf::from(".") } else { join(tparent_comps) };
        let tparent = rustix::fs::openat2(
            &self.root,
            &tpath,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT,
        )
        .map_err(|e| link_err(e.into()))?;
        // Check the target exists before removing what the link replaces.
        rustix::fs::statat(&tparent, tbase.as_os_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| link_err(e.into()))?;
        self.prepare(parent, base, false, &m.name)?;
        // No AT_SYMLINK_FOLLOW: a symlink target is linked, never followed.
        rustix::fs::linkat(&tparent, tbase.as_os_str(), parent, base, AtFlags::empty())
            .map_err(|e| link_err(e.into()))?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    fn fifo(&mut self, parent: BorrowedFd<'_>, base: &OsStr, m: &Meta) -> Result<(), UnpackError> {
        self.prepare(parent, base, false, &m.name)?;
        rustix::fs::mknodat(parent, base, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
            .map_err(|e| UnpackError::Create { path: m.name.clone(), source: e.into() })?;
        self.finish_at(parent, base, m, true)?;
        self.stats.fifos += 1;
        Ok(())
    }

    /// Owner, then mode (unless a symlink), then times, by name without
    /// following a final symlink.
    fn finish_at(&mut self, parent: BorrowedFd<'_>, base: &OsStr, m: &Meta, chmod: bool) -> Result<(), UnpackError> {
        if let Some((u, g)) = self.owner(m)? {
            rustix::fs::chownat(parent, base, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| Self::chown_err(m, e))?;
        }
        if chmod {
            // The entry was just created by us as a non-symlink, so this
            // (following) chmod cannot leave the root.
            rustix::fs::chmodat(parent, base, Mode::from_raw_mode(m.mode), AtFlags::empty())
                .map_err(Self::meta_err(m))?;
        }
        rustix::fs::utimensat(parent, base, &Self::times(m), AtFlags::SYMLINK_NOFOLLOW).map_err(Self::meta_err(m))?;
        Ok(())
    }

    fn xattrs_fd(&mut self, fd: BorrowedFd<'_>, m: &Meta) -> Result<(), UnpackError> {
        for (name, value) in &m.xattrs {
            if self.skip_xattr(name) {
                self.stats.xattrs_skipped += 1;
                continue;
            }
            if let Err(e) = rustix::fs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty()) {
                // A layer's user attributes are content; an ADDed archive's
                // are restored where the file system allows, as BuildKit.
                if name.starts_with("user.") && self.opts.kind == ExtractKind::Layer {
                    return Err(UnpackError::Xattr { path: m.name.clone(), name: name.clone(), source: e.into() });
                }
                self.stats.xattrs_skipped += 1;
            }
        }
        Ok(())
    }

    fn opaque(&mut self, dir_comps: &[OsString], name: &str) -> Result<(), UnpackError> {
        let wo = |source: io::Error| UnpackError::Whiteout { path: name.to_string(), source };
        // Create the directory if the marker comes first; its own entry
        // (if any) keeps it and applies metadata later.
        self.open_parent(dir_comps, name)?;
        let path = if dir_comps.is_empty() { PathBuf::from(".") } else { join(dir_comps) };
        let fd = rustix::fs::openat2(
            &self.root,
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT,
        )
        .map_err(|e| wo(e.into()))?;
        rustix::fs::fsetxattr(&fd, OPAQUE_XATTR, b"y", XattrFlags::empty()).map_err(|e| wo(e.into()))?;
        self.stats.opaque_dirs += 1;
        Ok(())
    }

    fn whiteout(&mut self, parent_comps: &[OsString], hidden: &OsStr, m: &Meta) -> Result<(), UnpackError> {
        let parent = self.open_parent(parent_comps, &m.name)?;
        // OCI: a whiteout only hides lower layers; an entry of the same
        // name from this layer stays (and already hides the lower one).
        match rustix::fs::statat(&parent, hidden, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => {
                self.stats.other_skipped += 1;
                return Ok(());
            }
            Err(Errno::NOENT) => {}
            Err(e) => {
                return Err(UnpackError::Whiteout { path: m.name.clone(), source: e.into() });
            }
        }
        self.make_whiteout(parent.as_fd(), hidden, m)
    }

    /// A 0:0 character device carrying the entry's mtime, so a layer made
    /// from this snapshot again is byte-for-byte reproducible.
    fn make_whiteout(&mut self, parent: BorrowedFd<'_>, base: &OsStr, m: &Meta) -> Result<(), UnpackError> {
        let wo = |e: Errno| UnpackError::Whiteout { path: m.name.clone(), source: e.into() };
        self.prepare(parent, base, false, &m.name)?;
        rustix::fs::mknodat(parent, base, FileType::CharacterDevice, Mode::empty(), rustix::fs::makedev(0, 0))
            .map_err(wo)?;
        rustix::fs::utimensat(parent, base, &Self::times(m), AtFlags::SYMLINK_NOFOLLOW).map_err(wo)?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        let mut dirs: Vec<_> = std::mem::take(&mut self.dirs).into_iter().collect();
        // Deepest first, so a parent's mode cannot get in a child's way.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0.len()));
        for (comps, (mode, mtime)) in dirs {
            let name = join(&comps).to_string_lossy().into_owned();
            let fd = match rustix::fs::openat2(
                &self.root,
                join(&comps),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT,
            ) {
                Ok(fd) => fd,
                // Replaced by a later entry (or removed): nothing to do.
                Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => continue,
                Err(e) => {
                    return Err(UnpackError::Metadata { path: name, source: e.into() });
                }
            };
            let meta_err = |e: Errno| UnpackError::Metadata { path: name.clone(), source: e.into() };
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(meta_err)?;
            let t = Timestamps { last_access: mtime, last_modification: mtime };
            rustix::fs::futimens(&fd, &t).map_err(meta_err)?;
        }
        Ok(())
    }
}

impl Unpacker<'_> {
    /// Xattrs never restored: overlay's own metadata (an archive must not
    /// forge opaque/redirect markers), and for `ADD` `security.*` other
    /// than file capabilities (labels belong to the host that made the
    /// archive). BuildKit's ADD restores an archive's
    /// `security.capability` (moby's `Untar` sets every `SCHILY.xattr`),
    /// and so does `RUN tar -x`; the Dockerfile could `setcap` in a RUN
    /// just as well, so keeping it grants nothing.
    fn skip_xattr(&self, name: &str) -> bool {
        name.starts_with("user.overlay.")
            || name.starts_with("trusted.overlay.")
            || (self.opts.kind == ExtractKind::Archive
                && name.starts_with("security.")
                && name != "security.capability")
    }
}

#[cfg(test)]
mod tests;
