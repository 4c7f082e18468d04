//! Materialising a copy's non-directory entries (files, symlinks, fifos,
//! devices) once the directories exist.
//!
//! The plan lists a directory's files together, so the leaves come in runs
//! with one source and one destination directory. Each run is done on open
//! `O_PATH` handles of those two directories (and, for hard links, of the
//! previous snapshot's or the input layer's same directory): every file's
//! syscalls then name it relative to a handle instead of walking its whole
//! path again. Path lookup was about a third of a one-change COPY's kernel
//! time: each `linkat` walked two paths of a dozen components, each
//! `openat` one. Runs go to the rayon threads; nothing in a run is shared
//! with another but the manifest and the layer-directory cache.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::copy::{Bases, Entry, Kind, Leaf, clear_target, copy_data, copy_xattrs_fd, lchown, umask};
use super::incremental::{Incremental, Recorded, Wanted};
use super::path::join_bytes;
use super::{FileOpError, set_times_path};

/// At most this many leaves per run: a directory of 20,000 files is still
/// spread over the threads.
pub(super) const RUN_LEN: usize = 256;

/// How the leaves of one copy are made: hard-linked from the input's layers
/// (`link`) or from the previous snapshot of an incremental copy (`inc`,
/// with the destination root), else written.
pub(super) struct Materialize<'a> {
    /// Where the plan's entries are.
    pub bases: &'a Bases,
    pub link: Option<&'a LayerLinks<'a>>,
    pub inc: Option<(&'a Incremental<'a>, &'a Path)>,
}

impl Materialize<'_> {
    /// Makes one run of leaves (see [`Bases::same_dirs`]).
    pub fn run(&self, run: &[Leaf]) -> Result<(), FileOpError> {
        let Some((first, _, _)) = run.first() else { return Ok(()) };
        let mut dirs = Dirs::open(self.bases, first)?;
        for (e, owner, mode) in run {
            self.materialize(e, *owner, *mode, &mut dirs)?;
        }
        Ok(())
    }

    /// Creates one non-directory entry with its metadata.
    fn materialize(&self, e: &Entry, owner: (u32, u32), mode: u32, dirs: &mut Dirs) -> Result<(), FileOpError> {
        let bases = self.bases;
        if let Kind::File = e.kind {
            return match self.inc {
                Some((inc, dest_root)) => incremental(bases, e, owner, mode, inc, dest_root, dirs),
                None => write_file(bases, e, owner, mode, self.link, dirs).map(|_| ()),
            };
        }
        // The rare kinds are made by path.
        let dst = bases.dst(e);
        let werr = |source| FileOpError::Write { path: dst.clone(), source };
        match e.kind {
            Kind::File | Kind::Dir | Kind::Link(_) => return Ok(()),
            Kind::Symlink => {
                let src = bases.src(e);
                let target = fs::read_link(&src).map_err(|source| FileOpError::ReadSource { path: src, source })?;
                clear_target(&dst)?;
                std::os::unix::fs::symlink(&target, &dst).map_err(werr)?;
                lchown(&dst, owner).map_err(werr)?;
                set_times_path(&dst, e.atime, e.mtime).map_err(werr)?;
                return Ok(());
            }
            Kind::Fifo | Kind::Device { .. } => {
                clear_target(&dst)?;
                let (ft, dev) = match e.kind {
                    Kind::Device { rdev, block: true } => (rustix::fs::FileType::BlockDevice, rdev),
                    Kind::Device { rdev, block: false } => (rustix::fs::FileType::CharacterDevice, rdev),
                    _ => (rustix::fs::FileType::Fifo, 0),
                };
                let made = rustix::fs::mknodat(rustix::fs::CWD, &dst, ft, Mode::from_raw_mode(0o600), dev);
                match made {
                    Ok(()) => {}
                    // A rootless builder may not create device nodes; like
                    // an unprivileged `cp -a`, skip them.
                    Err(err) if err == Errno::PERM && !matches!(e.kind, Kind::Fifo) => return Ok(()),
                    Err(err) => return Err(werr(err.into())),
                }
            }
        }
        lchown(&dst, owner).map_err(werr)?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(mode)).map_err(werr)?;
        set_times_path(&dst, e.atime, e.mtime).map_err(werr)
    }
}

/// Handles on the directories one run reads and writes.
struct Dirs {
    /// The destination directory.
    dst: OwnedFd,
    /// The owner a new file in `dst` gets, learnt from the run's first
    /// (the process's ids, or the directory's group where it is
    /// set-group-ID or the file system is mounted `grpid`): a file that
    /// must end with that owner needs no `fchown`. Asked of the file, not
    /// predicted, so a mount option cannot make a file keep a wrong group.
    created_owner: Option<(u32, u32)>,
    /// The source directory.
    src: OwnedFd,
    /// The previous snapshot's same directory (incremental copy), opened
    /// on first use; `None` inside when it has none.
    prev: Option<Option<OwnedFd>>,
    /// Input layers' same directory by layer index, opened on first use.
    layers: HashMap<usize, Option<OwnedFd>>,
    /// The destination directory's slash path relative to the destination
    /// root (incremental copy), found on first use; `None` inside when it
    /// is not below the root.
    dst_rel: Option<Option<Vec<u8>>>,
}

/// An `O_PATH` handle on the directory `p`, not following a final symlink
/// (the plan's destination directories, and the snapshots' own, are real
/// ones; a symlink there now is a race and fails the open).
fn open_dir(p: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(p, OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
}

/// [`open_dir`] for a source directory, which may be reached through a
/// symlink: a build context given as a symlinked path has its top-level
/// files in a directory named by that symlink.
fn open_src_dir(p: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(p, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
}

impl Dirs {
    fn open(bases: &Bases, e: &Entry) -> Result<Dirs, FileOpError> {
        let (src, dst) = bases.parents(e);
        Ok(Dirs {
            dst: open_dir(&dst).map_err(|err| FileOpError::Write { path: dst.clone(), source: err.into() })?,
            created_owner: None,
            src: open_src_dir(&src).map_err(|err| FileOpError::ReadSource { path: src.clone(), source: err.into() })?,
            prev: None,
            layers: HashMap::new(),
            dst_rel: None,
        })
    }

    /// Opens the previous snapshot's directory `diff/rel_dir` into
    /// `self.prev` unless tried already.
    fn prev(&mut self, diff: &Path, rel_dir: &Path) {
        self.prev.get_or_insert_with(|| open_dir(&diff.join(rel_dir)).ok());
    }

    /// Opens layer `i`'s directory `layer/rel_dir` into `self.layers`
    /// unless tried already.
    fn layer(&mut self, i: usize, layer: &Path, rel_dir: &Path) {
        self.layers.entry(i).or_insert_with(|| open_dir(&layer.join(rel_dir)).ok());
    }
}

/// The snapshot layers behind a copy's input view (top layer first), to
/// hard-link unchanged files from.
pub(super) struct LayerLinks<'l> {
    root: &'l Path,
    layers: &'l [PathBuf],
    /// Per directory of the view (relative to its root), the index of the
    /// topmost layer that has it as a directory (`None`: none has). A file
    /// of that directory can only be in that layer or below, so the layers
    /// above are not asked once per file (a `COPY --from` of a directory
    /// written a few layers down cost one failed `lstat` per file per layer
    /// above it).
    top: std::sync::Mutex<HashMap<PathBuf, Option<usize>>>,
}

impl<'l> LayerLinks<'l> {
    pub fn new(root: &'l Path, layers: &'l [PathBuf]) -> LayerLinks<'l> {
        LayerLinks { root, layers, top: std::sync::Mutex::new(HashMap::new()) }
    }

    /// The topmost layer holding `dir` (relative) as a real directory.
    /// Not through a symlink: a layer whose `dir` is a symlink cannot be
    /// where the view's directory comes from (the view would show the
    /// symlink), and following it could leave the layer.
    fn top_of(&self, dir: &Path) -> Option<usize> {
        if dir.as_os_str().is_empty() {
            return Some(0);
        }
        if let Some(top) = self.top.lock().unwrap_or_else(|p| p.into_inner()).get(dir) {
            return *top;
        }
        let top = self.layers.iter().position(|l| fs::symlink_metadata(l.join(dir)).is_ok_and(|m| m.is_dir()));
        self.top.lock().unwrap_or_else(|p| p.into_inner()).insert(dir.to_path_buf(), top);
        top
    }

    /// Hard-links the file of the topmost snapshot layer that the merged
    /// view shows at the entry's source into the destination, if it is a
    /// plain file of the expected size there; `false`: nothing linked.
    fn link(&self, bases: &Bases, e: &Entry, dirs: &mut Dirs) -> Result<bool, FileOpError> {
        let src = bases.src(e);
        let Some(rel_dir) = src.strip_prefix(self.root).ok().and_then(Path::parent) else { return Ok(false) };
        let Some(start) = self.top_of(rel_dir) else { return Ok(false) };
        let file = bases.src_name(e);
        for (i, layer) in self.layers.iter().enumerate().skip(start) {
            dirs.layer(i, layer, rel_dir);
            // Borrowed apart from `dirs.dst`, which the link needs too.
            let Some(dir) = dirs.layers.get(&i).and_then(Option::as_ref) else { continue };
            match rustix::fs::statat(dir, file, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile => {
                    if st.st_size as u64 != e.size {
                        return Ok(false);
                    }
                    return link_replacing(dir.as_fd(), file, dirs.dst.as_fd(), bases.dst_name(e), || bases.dst(e));
                }
                // A whiteout or another type: the view's file is not a plain one here.
                Ok(_) => return Ok(false),
                Err(_) => continue,
            }
        }
        Ok(false)
    }
}

/// An incremental copy of one file entry: shares it with the previous
/// snapshot when its record there matches, otherwise writes it; either way
/// records it in the new manifest. The source's stat and digest are the
/// planning walk's (the cache key of the copy was taken from the same
/// stat-keyed digests a moment before): no second `lstat`.
fn incremental(
    bases: &Bases,
    e: &Entry,
    owner: (u32, u32),
    mode: u32,
    inc: &Incremental,
    dest_root: &Path,
    dirs: &mut Dirs,
) -> Result<(), FileOpError> {
    // The run's directory relative to the root once, not each file's
    // whole path made and stripped again.
    let dir_rel = dirs.dst_rel.get_or_insert_with(|| {
        let (_, dir) = bases.parents(e);
        dir.strip_prefix(dest_root).ok().map(|r| r.as_os_str().as_bytes().to_vec())
    });
    let name = bases.dst_name(e);
    let Some(rel) = dir_rel.as_deref().map(|dir| join_bytes(dir, name.as_bytes())) else {
        write_file(bases, e, owner, mode, None, dirs)?;
        return Ok(());
    };
    let sum = match e.stat.sum {
        Some(sum) => sum,
        None => {
            let src = bases.src(e);
            (inc.content_sum)(&src, &e.stat.key).map_err(|source| FileOpError::ReadSource { path: src, source })?
        }
    };
    let attrs = Wanted { size: e.size, mode, owner, mtime: e.stat.mtime };
    let mut record = Recorded { sum, attrs, src_ctime: e.stat.ctime, xattrs: false };
    let mut shared = false;
    if let Some(diff) = inc.shareable(&rel, &sum, &attrs, e.stat.ctime, || bases.src(e)) {
        let dir = &rel[..rel.len() - name.len()];
        let dir = dir.strip_suffix(b"/").unwrap_or(dir);
        dirs.prev(diff, Path::new(OsStr::from_bytes(dir)));
        if let Some(prev) = dirs.prev.as_ref().and_then(Option::as_ref) {
            shared = link_replacing(prev.as_fd(), name, dirs.dst.as_fd(), name, || bases.dst(e))?;
        }
    }
    if shared {
        inc.shared.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    } else {
        record.xattrs = write_file(bases, e, owner, mode, None, dirs)?;
    }
    inc.record(rel, record);
    Ok(())
}

/// Writes a regular file entry: hard-linked from its input layer when
/// `link` allows, otherwise a new file with the entry's data and metadata.
/// Never opens an existing file for writing (an existing one is replaced):
/// it may be an inode shared with another snapshot. `true` when the source
/// had xattrs to carry over.
fn write_file(
    bases: &Bases,
    e: &Entry,
    owner: (u32, u32),
    mode: u32,
    link: Option<&LayerLinks>,
    dirs: &mut Dirs,
) -> Result<bool, FileOpError> {
    let werr = |source| FileOpError::Write { path: bases.dst(e), source };
    if let Some(links) = link
        && owner == (e.uid, e.gid)
        && mode == e.mode
        && links.link(bases, e, dirs)?
    {
        return Ok(false);
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let src = rustix::fs::openat(&dirs.src, bases.src_name(e), flags, Mode::empty())
        .map(File::from)
        .map_err(|err| FileOpError::ReadSource { path: bases.src(e), source: err.into() })?;
    // Created with its final mode when the umask cannot alter it
    // and no chown will clear set-id bits, saving an fchmod.
    let exact = mode & 0o7000 == 0 && mode & umask() == 0;
    let dst = create_file(dirs.dst.as_fd(), bases.dst_name(e), || bases.dst(e), if exact { mode } else { 0o600 })?;
    copy_data(&src, &dst, e.size).map_err(werr)?;
    let created = match dirs.created_owner {
        Some(o) => o,
        None => {
            let st = rustix::fs::fstat(&dst).map_err(|err| werr(err.into()))?;
            *dirs.created_owner.insert((st.st_uid, st.st_gid))
        }
    };
    // A chown to the owner the file already has is skipped: it would
    // change nothing (set-id bits it would clear are set by the fchmod
    // after it; xattrs, file capabilities included, are copied after it).
    if owner != created {
        std::os::unix::fs::fchown(&dst, Some(owner.0), Some(owner.1)).map_err(werr)?;
    }
    if !exact {
        // After chown: chown clears setuid/setgid bits.
        dst.set_permissions(fs::Permissions::from_mode(mode)).map_err(werr)?;
    }
    let xattrs = copy_xattrs_fd(&src, &dst);
    dst.set_times(fs::FileTimes::new().set_accessed(e.atime).set_modified(e.mtime)).map_err(werr)?;
    Ok(xattrs)
}

/// Hard-links `from_dir/from` at `dir/to` (`path` makes its name for errors),
/// replacing a non-directory there; `false` when the link cannot be made
/// (another file system, gone): then copy. Tries the link first, so the
/// common case (nothing there) costs one syscall.
fn link_replacing(
    from_dir: BorrowedFd,
    from: &OsStr,
    dir: BorrowedFd,
    to: &OsStr,
    path: impl Fn() -> PathBuf,
) -> Result<bool, FileOpError> {
    match rustix::fs::linkat(from_dir, from, dir, to, AtFlags::empty()) {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => {
            clear_target_at(dir, to, path)?;
            Ok(rustix::fs::linkat(from_dir, from, dir, to, AtFlags::empty()).is_ok())
        }
        Err(_) => Ok(false),
    }
}

/// Removes a non-directory at `dir/name` (replaced by the copy); a
/// directory there is an error, as in fsutil's `ensureEmptyFileTarget`.
fn clear_target_at(dir: BorrowedFd, name: &OsStr, path: impl Fn() -> PathBuf) -> Result<(), FileOpError> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory => {
            Err(FileOpError::ReplaceDir { path: path() })
        }
        Ok(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty())
            .map_err(|err| FileOpError::Remove { path: path(), source: err.into() }),
        Err(_) => Ok(()),
    }
}

/// Creates a new file at `dir/name`, replacing an existing non-directory.
/// Tries the create first so the common case costs one syscall.
fn create_file(dir: BorrowedFd, name: &OsStr, path: impl Fn() -> PathBuf, mode: u32) -> Result<File, FileOpError> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let open = || rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(mode)).map(File::from);
    match open() {
        Ok(f) => Ok(f),
        Err(Errno::EXIST) => {
            clear_target_at(dir, name, &path)?;
            open().map_err(|err| FileOpError::Write { path: path(), source: err.into() })
        }
        Err(err) => Err(FileOpError::Write { path: path(), source: err.into() }),
    }
}
