//! The copy fallback for kernels (or upper filesystems) that refuse overlayfs
//! in a user namespace: flatten a layer chain into a plain directory, and
//! later turn what changed in that directory into an overlay-format diff
//! (whiteouts are `0:0` character devices, a directory that replaced a
//! non-directory carries `user.overlay.opaque=y`).
//!
//! Used by [`super::mount_overlay`] (views of the solver) and by the sandbox
//! init for `RUN` roots. Chosen automatically when the kernel refuses an
//! overlay mount, or forced with `RBUILD_OVERLAY=copy`.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Bound;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps};

/// Environment variable forcing the copy fallback (`RBUILD_OVERLAY=copy`).
pub(crate) const MODE_ENV: &str = "RBUILD_OVERLAY";
/// xattr marking an opaque directory in an upper dir (userxattr mode).
const OPAQUE_XATTR: &str = "user.overlay.opaque";

static REFUSED: AtomicBool = AtomicBool::new(false);

/// Whether overlay mounts are replaced by copies in this process: forced by
/// the environment (read once), or after the kernel refused one.
pub(crate) fn use_copy() -> bool {
    static FORCED: OnceLock<bool> = OnceLock::new();
    *FORCED.get_or_init(|| std::env::var(MODE_ENV).is_ok_and(|v| v == "copy")) || REFUSED.load(Ordering::Relaxed)
}

/// Uses the copy fallback from now on in this process (a sandbox init told
/// so by the solver, which saw the kernel refuse an overlay).
pub(crate) fn force_copy() {
    REFUSED.store(true, Ordering::Relaxed);
}

/// Whether `e` (from fsopen/fsconfig/fsmount of an overlay) means "overlayfs
/// is not available here" rather than a bad path; remembers it so later
/// views go straight to the fallback.
pub(crate) fn note_refusal(e: &io::Error) -> bool {
    let refused = is_refusal(e);
    if refused {
        REFUSED.store(true, Ordering::Relaxed);
    }
    refused
}

/// The errors an overlay mount fails with when the kernel or the upper
/// filesystem does not support it in a user namespace.
pub(crate) fn is_refusal(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EINVAL | libc::ENODEV | libc::EOPNOTSUPP))
}

/// Kind of a file system entry, with what identifies its content cheaply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink(PathBuf),
    /// Fifo, socket or device node (`st_mode` file type bits, `st_rdev`).
    Special(u32, u64),
}

/// The attributes compared to decide whether an entry changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// One entry of the merged lower layers.
#[derive(Debug, Clone)]
struct Entry {
    /// The file in its layer.
    src: PathBuf,
    meta: Meta,
    atime: (i64, i64),
    /// `(inode, ctime)` of the flattened copy right after flattening: any
    /// later write, chmod, chown or replacement changes it.
    flat: Option<(u64, i64, i64)>,
}

/// The merged view of a layer chain: relative path ("" is the root) to entry.
#[derive(Debug, Clone, Default)]
pub(crate) struct Merged {
    entries: BTreeMap<PathBuf, Entry>,
}

/// Adds the path to an I/O error (the message is all that reaches the user).
fn at(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("`{}`: {e}", path.display()))
}

fn read_dir_sorted(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .and_then(|rd| rd.map(|e| e.map(|e| e.file_name())).collect::<Result<Vec<_>, _>>())
        .map_err(at(dir))?;
    names.sort();
    Ok(names)
}

fn read_meta(path: &Path) -> io::Result<(Meta, std::fs::Metadata)> {
    read_meta_inner(path).map_err(at(path))
}

fn read_meta_inner(path: &Path) -> io::Result<(Meta, std::fs::Metadata)> {
    let md = std::fs::symlink_metadata(path)?;
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink(std::fs::read_link(path)?)
    } else {
        Kind::Special(md.mode() & libc::S_IFMT, md.rdev())
    };
    let meta = Meta {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        // A directory's size is file system noise.
        size: if ft.is_dir() { 0 } else { md.size() },
        mtime: (md.mtime(), md.mtime_nsec()),
        xattrs: read_xattrs(path)?,
    };
    Ok((meta, md))
}

/// xattrs of `path` except overlayfs's own (`*.overlay.*`).
fn read_xattrs(path: &Path) -> io::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let n = match rustix::fs::llistxattr_query(path) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    if n == 0 {
        return Ok(out);
    }
    let mut names = vec![0u8; n];
    let n = rustix::fs::llistxattr(path, &mut names[..])?;
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        if is_overlay_xattr(name) {
            continue;
        }
        let cname = std::ffi::OsStr::new(std::str::from_utf8(name).unwrap_or_default());
        if cname.is_empty() {
            continue;
        }
        let len = match rustix::fs::lgetxattr_query(path, cname) {
            Ok(l) => l,
            // Removed in between, or not readable: not part of the content.
            Err(_) => continue,
        };
        let mut value = vec![0u8; len];
        let len = rustix::fs::lgetxattr(path, cname, &mut value[..])?;
        value.truncate(len);
        out.insert(name.to_vec(), value);
    }
    Ok(out)
}

fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

fn is_whiteout(md: &std::fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(rustix::fs::lgetxattr(path, OPAQUE_XATTR, &mut buf[..]), Ok(1) if buf[0] == b'y')
}

impl Merged {
    /// Merges `lowers` (base first) as overlayfs would show them.
    pub(crate) fn new(lowers: &[PathBuf]) -> io::Result<Merged> {
        let mut m = Merged::default();
        for layer in lowers {
            let (meta, md) = read_meta(layer)?;
            m.entries.insert(PathBuf::new(), Entry { src: layer.clone(), meta, atime: atime(&md), flat: None });
            m.walk_layer(layer, Path::new(""))?;
        }
        Ok(m)
    }

    fn walk_layer(&mut self, layer: &Path, rel: &Path) -> io::Result<()> {
        for name in read_dir_sorted(&layer.join(rel))? {
            let p = rel.join(&name);
            let src = layer.join(&p);
            let md = std::fs::symlink_metadata(&src).map_err(at(&src))?;
            if is_whiteout(&md) {
                self.remove_tree(&p);
                continue;
            }
            let (meta, md) = read_meta(&src)?;
            let is_dir = meta.kind == Kind::Dir;
            let below_is_dir = self.entries.get(&p).is_some_and(|e| e.meta.kind == Kind::Dir);
            if !is_dir || !below_is_dir || is_opaque(&src) {
                // Only directories merge; anything else (or an opaque
                // directory) hides what was below.
                self.remove_tree(&p);
            }
            self.entries.insert(p.clone(), Entry { src, meta, atime: atime(&md), flat: None });
            if is_dir {
                self.walk_layer(layer, &p)?;
            }
        }
        Ok(())
    }

    /// Removes `p` and everything below it.
    fn remove_tree(&mut self, p: &Path) {
        let below: Vec<PathBuf> = self
            .entries
            .range::<Path, _>((Bound::Included(p), Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(p))
            .cloned()
            .collect();
        for k in below {
            self.entries.remove(&k);
        }
    }

    /// Materialises the merged view in the existing directory `target`.
    /// `link`: hard-link regular files from their layer where possible (the
    /// result must then never be written); otherwise copy them.
    pub(crate) fn flatten(&mut self, target: &Path, link: bool) -> io::Result<()> {
        for (rel, e) in &self.entries {
            let dst = target.join(rel);
            self.flatten_one(e, rel, &dst, link).map_err(at(&dst))?;
        }
        // Directory times last: creating the children changed them.
        for (rel, e) in self.entries.iter().rev() {
            if e.meta.kind == Kind::Dir {
                let dst = target.join(rel);
                set_times(&dst, e.atime, e.meta.mtime).map_err(at(&dst))?;
            }
        }
        for (rel, e) in self.entries.iter_mut() {
            if let Ok(md) = std::fs::symlink_metadata(target.join(rel)) {
                e.flat = Some((md.ino(), md.ctime(), md.ctime_nsec()));
            }
        }
        Ok(())
    }

    fn flatten_one(&self, e: &Entry, rel: &Path, dst: &Path, link: bool) -> io::Result<()> {
        let mut linked = false;
        match &e.meta.kind {
            Kind::Dir if rel.as_os_str().is_empty() => {}
            Kind::Dir => std::fs::create_dir(dst)?,
            Kind::File => {
                linked = link && std::fs::hard_link(&e.src, dst).is_ok();
                if !linked {
                    std::fs::copy(&e.src, dst)?;
                }
            }
            Kind::Symlink(t) => std::os::unix::fs::symlink(t, dst)?,
            Kind::Special(fmt, rdev) => match mknod(dst, *fmt, e.meta.mode, *rdev) {
                Ok(()) => {}
                // Device nodes cannot be created in a user namespace; the
                // sandbox provides its own /dev.
                Err(err) if err.raw_os_error() == Some(libc::EPERM) => return Ok(()),
                Err(err) => return Err(err),
            },
        }
        if !linked {
            set_attrs(dst, &e.meta)?;
            if e.meta.kind != Kind::Dir {
                set_times(dst, e.atime, e.meta.mtime)?;
            }
        }
        Ok(())
    }

    /// Writes what changed in `target` (a [`Merged::flatten`] of these
    /// layers, since modified) into the empty directory `upper`, in overlay
    /// format. Paths in `ignore` (and below them) are left out: mount points
    /// the sandbox had to create.
    pub(crate) fn diff(&self, target: &Path, upper: &Path, ignore: &BTreeSet<PathBuf>) -> io::Result<()> {
        let mut d = Differ { merged: self, target, upper, ignore, present_dirs: BTreeSet::new(), made: Vec::new() };
        d.present_dirs.insert(PathBuf::new());
        d.walk(Path::new(""))?;
        // Deletions: a lower entry gone from a directory that still merges.
        let mut last_whiteout: Option<PathBuf> = None;
        for rel in self.entries.keys() {
            let Some(parent) = rel.parent() else { continue };
            if last_whiteout.as_ref().is_some_and(|w| rel.starts_with(w)) || !d.present_dirs.contains(parent) {
                continue;
            }
            if ignore.contains(rel) {
                continue;
            }
            match std::fs::symlink_metadata(target.join(rel)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    d.ensure_parents(rel)?;
                    mknod(&upper.join(rel), libc::S_IFCHR, 0, 0)?;
                    last_whiteout = Some(rel.clone());
                }
                Err(e) => return Err(e),
            }
        }
        for (rel, meta) in d.made.iter().rev() {
            set_times(&upper.join(rel), meta.mtime, meta.mtime)?;
        }
        Ok(())
    }
}

struct Differ<'a> {
    merged: &'a Merged,
    target: &'a Path,
    upper: &'a Path,
    ignore: &'a BTreeSet<PathBuf>,
    /// Directories of `target` that merge with a lower directory.
    present_dirs: BTreeSet<PathBuf>,
    /// Directories created in `upper`, with the attributes they must end with.
    made: Vec<(PathBuf, Meta)>,
}

impl Differ<'_> {
    fn walk(&mut self, rel: &Path) -> io::Result<()> {
        for name in read_dir_sorted(&self.target.join(rel))? {
            let p = rel.join(&name);
            if self.ignore.contains(&p) {
                continue;
            }
            let src = self.target.join(&p);
            let (meta, md) = read_meta(&src)?;
            match self.merged.entries.get(&p) {
                None => self.copy_up(&p, &meta, false)?,
                // Removed and created again (`rm -r d && mkdir d`): nothing
                // below it comes from the lowers, as overlayfs marks it.
                Some(low) if meta.kind == Kind::Dir && low.flat.is_some_and(|f| f.0 != md.ino()) => {
                    self.copy_up(&p, &meta, true)?
                }
                Some(low) if low.meta.kind == Kind::Dir && meta.kind == Kind::Dir => {
                    self.present_dirs.insert(p.clone());
                    if low.meta != meta {
                        self.ensure_parents(&p)?;
                        self.make_dir(&p, &meta)?;
                    }
                    self.walk(&p)?;
                }
                Some(low) => {
                    let same_inode = low.flat == Some((md.ino(), md.ctime(), md.ctime_nsec()));
                    if low.meta.kind == Kind::Dir || !same_inode || low.meta != meta {
                        // A directory over a non-directory must not show
                        // anything of what was below it.
                        let opaque = meta.kind == Kind::Dir;
                        self.copy_up(&p, &meta, opaque)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Creates the missing ancestors of `rel` in `upper`, as overlay's copy-up does.
    fn ensure_parents(&mut self, rel: &Path) -> io::Result<()> {
        let mut ancestors: Vec<&Path> = rel.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()).collect();
        ancestors.reverse();
        for a in ancestors {
            if std::fs::symlink_metadata(self.upper.join(a)).is_err() {
                let (meta, _) = read_meta(&self.target.join(a))?;
                self.make_dir(a, &meta)?;
            }
        }
        Ok(())
    }

    fn make_dir(&mut self, rel: &Path, meta: &Meta) -> io::Result<()> {
        let dst = self.upper.join(rel);
        match std::fs::create_dir(&dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(e),
        }
        set_attrs(&dst, meta)?;
        self.made.push((rel.to_path_buf(), meta.clone()));
        Ok(())
    }

    /// Copies `rel` of `target` (a whole subtree) into `upper`.
    fn copy_up(&mut self, rel: &Path, meta: &Meta, opaque: bool) -> io::Result<()> {
        self.ensure_parents(rel)?;
        let (src, dst) = (self.target.join(rel), self.upper.join(rel));
        match &meta.kind {
            Kind::Dir => {
                self.make_dir(rel, meta)?;
                if opaque {
                    rustix::fs::lsetxattr(&dst, OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty())?;
                }
                for name in read_dir_sorted(&src)? {
                    let p = rel.join(name);
                    if self.ignore.contains(&p) {
                        continue;
                    }
                    let (m, _) = read_meta(&self.target.join(&p))?;
                    self.copy_up(&p, &m, false)?;
                }
                return Ok(());
            }
            // `target` is thrown away afterwards: sharing its inode is a move.
            Kind::File => {
                if std::fs::hard_link(&src, &dst).is_err() {
                    std::fs::copy(&src, &dst)?;
                    set_attrs(&dst, meta)?;
                    set_times(&dst, meta.mtime, meta.mtime)?;
                }
                return Ok(());
            }
            Kind::Symlink(t) => std::os::unix::fs::symlink(t, &dst)?,
            Kind::Special(fmt, rdev) => mknod(&dst, *fmt, meta.mode, *rdev)?,
        }
        set_attrs(&dst, meta)?;
        set_times(&dst, meta.mtime, meta.mtime)
    }
}

fn atime(md: &std::fs::Metadata) -> (i64, i64) {
    (md.atime(), md.atime_nsec())
}

fn mknod(path: &Path, fmt: u32, mode: u32, rdev: u64) -> io::Result<()> {
    let ft = FileType::from_raw_mode(fmt);
    let dev = rustix::fs::makedev(libc::major(rdev), libc::minor(rdev));
    Ok(rustix::fs::mknodat(rustix::fs::CWD, path, ft, Mode::from_raw_mode(mode), dev)?)
}

/// Owner, mode and xattrs of `meta` on `path` (not its times).
fn set_attrs(path: &Path, meta: &Meta) -> io::Result<()> {
    match rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(rustix::fs::Uid::from_raw(meta.uid)),
        Some(rustix::fs::Gid::from_raw(meta.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    ) {
        // Ids the namespace cannot represent (single-id mapping) stay ours.
        Ok(()) | Err(rustix::io::Errno::PERM | rustix::io::Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    if !matches!(meta.kind, Kind::Symlink(_)) {
        // After chown, which clears set-id bits.
        rustix::fs::chmodat(rustix::fs::CWD, path, Mode::from_raw_mode(meta.mode), AtFlags::empty())?;
    }
    for (name, value) in &meta.xattrs {
        let Ok(name) = std::str::from_utf8(name) else { continue };
        // security.* and the like may be refused to us; they are not
        // something a build can rely on in a rootless sandbox anyway.
        let _ = rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty());
    }
    Ok(())
}

fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let ts = |(s, n): (i64, i64)| Timespec { tv_sec: s as _, tv_nsec: n as _ };
    let times = Timestamps { last_access: ts(atime), last_modification: ts(mtime) };
    Ok(rustix::fs::utimensat(rustix::fs::CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Removes everything inside `dir`, keeping `dir` itself.
pub(crate) fn clear_dir(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let p = entry.path();
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// A mount point created in a flattened root by [`create_mount_point`].
#[derive(Debug, Clone)]
pub(crate) struct MountPoint {
    /// The existing directory it was created in (relative to the root).
    existing: PathBuf,
    /// `existing`'s times before, restored when nothing else changed it.
    times: ((i64, i64), (i64, i64)),
    /// Created paths, outermost first; the last one is the mount point.
    created: Vec<PathBuf>,
    /// The mount point is a file.
    file: bool,
}

impl MountPoint {
    /// The mount point itself (relative), always left out of the diff.
    pub(crate) fn path(&self) -> &Path {
        self.created.last().map_or(Path::new(""), PathBuf::as_path)
    }
}

/// Creates a missing mount point in a flattened root: the components
/// `missing` under the existing directory `existing` (both relative to
/// `root`); the last one is a file when `file`. The existing directory's
/// times are restored so that it does not count as changed.
pub(crate) fn create_mount_point(
    root: &Path,
    existing: &Path,
    missing: &[String],
    file: bool,
) -> io::Result<MountPoint> {
    let base = root.join(existing);
    let md = std::fs::symlink_metadata(&base)?;
    let times = (atime(&md), (md.mtime(), md.mtime_nsec()));
    let mut rel = existing.to_path_buf();
    let mut created = Vec::new();
    for (i, comp) in missing.iter().enumerate() {
        rel.push(comp);
        let p = root.join(&rel);
        if i + 1 == missing.len() && file {
            std::fs::File::create(&p)?;
        } else {
            std::fs::create_dir(&p)?;
        }
        created.push(rel.clone());
    }
    set_times(&base, times.0, times.1)?;
    Ok(MountPoint { existing: existing.to_path_buf(), times, created, file })
}

/// Undoes [`create_mount_point`] once the mounts are gone: removes the mount
/// point and the directories created for it unless something was written
/// into them (those stay, as overlayfs copies up a stub's directory).
pub(crate) fn remove_mount_point(root: &Path, mp: &MountPoint) -> io::Result<()> {
    let base = root.join(&mp.existing);
    let md = std::fs::symlink_metadata(&base)?;
    let untouched = (md.mtime(), md.mtime_nsec()) == mp.times.1;
    for (i, rel) in mp.created.iter().enumerate().rev() {
        let p = root.join(rel);
        let removed =
            if i + 1 == mp.created.len() && mp.file { std::fs::remove_file(&p) } else { std::fs::remove_dir(&p) };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Not empty (or replaced): the command used it; keep the rest.
            Err(_) => return Ok(()),
        }
    }
    if untouched {
        set_times(&base, mp.times.0, mp.times.1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(p: &Path, s: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    }

    fn tree(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        fn go(root: &Path, rel: &Path, out: &mut Vec<String>) {
            let mut names: Vec<_> =
                std::fs::read_dir(root.join(rel)).unwrap().map(|e| e.unwrap().file_name()).collect();
            names.sort();
            for n in names {
                let p = rel.join(n);
                let md = std::fs::symlink_metadata(root.join(&p)).unwrap();
                let tag = if md.is_dir() {
                    "/"
                } else if is_whiteout(&md) {
                    " (whiteout)"
                } else {
                    ""
                };
                out.push(format!("{}{tag}", p.display()));
                if md.is_dir() {
                    go(root, &p, out);
                }
            }
        }
        go(root, Path::new(""), &mut out);
        out
    }

    /// Two layers: base has a/x, a/y, d/z, f; top deletes a/y and makes d opaque.
    fn layers(dir: &Path) -> Vec<PathBuf> {
        let (l0, l1) = (dir.join("l0"), dir.join("l1"));
        write(&l0.join("a/x"), "x");
        write(&l0.join("a/y"), "y");
        write(&l0.join("d/z"), "z");
        write(&l0.join("f"), "f0");
        std::os::unix::fs::symlink("a/x", l0.join("s")).unwrap();
        std::fs::create_dir_all(l1.join("a")).unwrap();
        mknod(&l1.join("a/y"), libc::S_IFCHR, 0, 0).unwrap();
        std::fs::create_dir_all(l1.join("d")).unwrap();
        rustix::fs::lsetxattr(l1.join("d"), OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty()).unwrap();
        write(&l1.join("d/new"), "n");
        write(&l1.join("f"), "f1");
        vec![l0, l1]
    }

    #[test]
    fn flatten_applies_whiteouts_and_opaque_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let lowers = layers(dir.path());
        let target = dir.path().join("t");
        std::fs::create_dir(&target).unwrap();
        Merged::new(&lowers).unwrap().flatten(&target, true).unwrap();
        assert_eq!(tree(&target), ["a/", "a/x", "d/", "d/new", "f", "s"]);
        assert_eq!(std::fs::read_to_string(target.join("f")).unwrap(), "f1");
        assert_eq!(std::fs::read_link(target.join("s")).unwrap(), Path::new("a/x"));
        assert!(!is_opaque(&target.join("d")), "overlay xattrs are not copied");
    }

    #[test]
    fn diff_of_an_untouched_copy_is_empty_and_changes_land_in_overlay_format() {
        let dir = tempfile::tempdir().unwrap();
        let lowers = layers(dir.path());
        let (target, upper) = (dir.path().join("t"), dir.path().join("u"));
        std::fs::create_dir(&target).unwrap();
        std::fs::create_dir(&upper).unwrap();
        let mut m = Merged::new(&lowers).unwrap();
        m.flatten(&target, false).unwrap();
        m.diff(&target, &upper, &BTreeSet::new()).unwrap();
        assert!(tree(&upper).is_empty(), "{:?}", tree(&upper));

        std::fs::remove_file(target.join("a/x")).unwrap(); // deletion
        write(&target.join("a/new"), "n"); // creation
        std::fs::remove_dir_all(target.join("d")).unwrap(); // dir replaced by a file
        write(&target.join("d"), "file");
        std::fs::set_permissions(target.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap(); // chmod
        std::fs::remove_file(target.join("s")).unwrap(); // file replaced by a dir
        write(&target.join("s/inner"), "i");
        write(&target.join("ignored/mnt"), "");
        let ignore: BTreeSet<PathBuf> = [PathBuf::from("ignored")].into();
        m.diff(&target, &upper, &ignore).unwrap();
        assert_eq!(tree(&upper), ["a/", "a/new", "a/x (whiteout)", "d", "f", "s/", "s/inner"]);
        assert!(is_opaque(&upper.join("s")));
        assert!(!is_opaque(&upper.join("a")));
        let md = std::fs::metadata(upper.join("f")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(upper.join("f")).unwrap(), "f1");
        // The copied-up directory carries the merged directory's new times, as a copy-up would.
        let a = std::fs::metadata(target.join("a")).unwrap();
        assert_eq!(std::fs::metadata(upper.join("a")).unwrap().mtime(), a.mtime());
    }

    #[test]
    fn content_change_with_same_size_and_restored_mtime_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let lowers = layers(dir.path());
        let (target, upper) = (dir.path().join("t"), dir.path().join("u"));
        std::fs::create_dir(&target).unwrap();
        std::fs::create_dir(&upper).unwrap();
        let mut m = Merged::new(&lowers).unwrap();
        m.flatten(&target, false).unwrap();
        let md = std::fs::metadata(target.join("f")).unwrap();
        std::fs::write(target.join("f"), "XX").unwrap();
        set_times(&target.join("f"), (md.atime(), md.atime_nsec()), (md.mtime(), md.mtime_nsec())).unwrap();
        m.diff(&target, &upper, &BTreeSet::new()).unwrap();
        assert_eq!(tree(&upper), ["f"]);
    }

    #[test]
    fn mount_points_leave_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let lowers = layers(dir.path());
        let (target, upper) = (dir.path().join("t"), dir.path().join("u"));
        std::fs::create_dir(&target).unwrap();
        std::fs::create_dir(&upper).unwrap();
        let mut m = Merged::new(&lowers).unwrap();
        m.flatten(&target, false).unwrap();
        let mps = [
            create_mount_point(&target, Path::new("a"), &["hosts".into()], true).unwrap(),
            create_mount_point(&target, Path::new(""), &["proc".into(), "x".into()], false).unwrap(),
            create_mount_point(&target, Path::new(""), &["etc".into(), "resolv.conf".into()], true).unwrap(),
        ];
        let ignore: BTreeSet<PathBuf> = mps.iter().map(|m| m.path().to_path_buf()).collect();
        assert_eq!(
            ignore,
            [PathBuf::from("a/hosts"), PathBuf::from("proc/x"), PathBuf::from("etc/resolv.conf")].into()
        );
        // The command wrote next to one mount point: that directory stays.
        write(&target.join("etc/passwd"), "root");
        for mp in mps.iter().rev() {
            remove_mount_point(&target, mp).unwrap();
        }
        m.diff(&target, &upper, &ignore).unwrap();
        assert_eq!(tree(&upper), ["etc/", "etc/passwd"]);
        clear_dir(&target).unwrap();
        assert!(tree(&target).is_empty());
    }
}
