//! The namespace and mount syscalls used by the sandbox, behind a trait.
//!
//! [`Syscall`] is what [`super::rootfs`] drives; [`Linux`] makes the real
//! calls (rustix, plus libc where rustix has no wrapper) and the test-only
//! `Recorder` logs the calls so the ordering rules can be unit-tested
//! without privileges. All mounts are made with the new mount API
//! (`fsopen`/`fsconfig`/`fsmount`/`open_tree`/`move_mount`): it has no
//! page-size limit on options (one `lowerdir+` per layer) and lets every
//! host path be captured as a file descriptor before the mount namespace is
//! rearranged.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

use super::rootfs::{DEV_NODES, Stub};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountPropagationFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
};

/// A path looked up inside a root: the deepest part that exists (canonical,
/// relative to the root, symlinks resolved inside the root) and the
/// components below it that do not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// Canonical relative path of the deepest existing ancestor ("" = the root).
    pub existing: PathBuf,
    /// Missing components under `existing` (empty if the whole path exists).
    pub missing: Vec<String>,
    /// Metadata of each directory of `existing`, outermost first: what a
    /// stub layer recreates them with.
    pub ancestors: Vec<DirMeta>,
}

/// The metadata of a directory that a stub layer copies (the stub layer is
/// the top-most lower layer, so its directories' owner, mode and times are
/// what the container sees, and what a copy-up would copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirMeta {
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Access time (seconds, nanoseconds).
    pub atime: (i64, i64),
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
}

impl DirMeta {
    pub(crate) fn of(st: &rustix::fs::Stat) -> DirMeta {
        DirMeta {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            atime: (st.st_atime, st.st_atime_nsec as i64),
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
        }
    }
}

/// The kernel operations the rootfs set-up needs.
pub(crate) trait Syscall {
    /// `unshare(2)`.
    fn unshare(&self, flags: rustix::thread::UnshareFlags) -> io::Result<()>;
    /// Makes every mount under `path` private, so nothing propagates back to the host.
    fn make_rprivate(&self, path: &Path) -> io::Result<()>;
    /// Opens a host path as an `O_PATH` descriptor (captured before mounts hide it).
    fn open_path(&self, path: &Path) -> io::Result<OwnedFd>;
    /// Creates a detached overlay mount of `lowers` (base first); read-only without `upper`.
    fn overlay(
        &self,
        lowers: &[BorrowedFd<'_>],
        upper: Option<(BorrowedFd<'_>, BorrowedFd<'_>)>,
    ) -> io::Result<OwnedFd>;
    /// Creates a detached mount of a pseudo filesystem (`tmpfs`, `proc`, `devpts`).
    fn fs_mount(&self, fstype: &str, options: &[(&str, &str)], attrs: MountAttrFlags) -> io::Result<OwnedFd>;
    /// Clones the mount tree at `path` (recursively) as a detached bind mount.
    fn clone_tree(&self, path: &Path, readonly: bool) -> io::Result<OwnedFd>;
    /// Like [`Syscall::clone_tree`] for `selector` resolved inside `root`
    /// ([`super::inroot::open_in_root`]): content symlinks cannot point the
    /// bind at the host.
    fn clone_in(&self, root: &Path, selector: &str, readonly: bool) -> io::Result<OwnedFd>;
    /// Attaches a detached mount at an absolute host path.
    fn attach_at(&self, mount: BorrowedFd<'_>, target: &Path) -> io::Result<()>;
    /// Attaches a detached mount at `target`, resolved inside `root` (symlinks cannot escape).
    fn attach_in(&self, mount: BorrowedFd<'_>, root: &Path, target: &str) -> io::Result<()>;
    /// Opens `target` inside `root` (symlinks cannot escape) as an `O_PATH`
    /// descriptor; `None` if it does not exist.
    fn open_in(&self, root: &Path, target: &str) -> io::Result<Option<OwnedFd>>;
    /// Clones the mount tree at a descriptor (recursively) as a detached bind mount.
    fn clone_fd(&self, fd: BorrowedFd<'_>, readonly: bool) -> io::Result<OwnedFd>;
    /// Attaches a detached mount over the file or directory `target` refers to.
    fn attach_fd(&self, mount: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()>;
    /// Lazily unmounts `target`.
    fn unmount(&self, target: &Path) -> io::Result<()>;
    /// Looks `target` up inside `root`.
    fn resolve(&self, root: &Path, target: &str) -> io::Result<Resolved>;
    /// Looks `target` up in the merge of `layers` (base first) without
    /// mounting them ([`super::layer_lookup`]); `None` where only the
    /// kernel can tell.
    fn resolve_in_layers(&self, layers: &[BorrowedFd<'_>], target: &str) -> io::Result<Option<Resolved>>;
    /// Creates directory `name` under `dir`.
    fn mkdir_at(&self, dir: BorrowedFd<'_>, name: &str, mode: u32) -> io::Result<()>;
    /// Creates file `name` under `dir` with `data`.
    fn write_at(&self, dir: BorrowedFd<'_>, name: &str, data: &[u8]) -> io::Result<()>;
    /// Opens directory `name` under `dir` as an `O_PATH` descriptor.
    fn open_at(&self, dir: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd>;
    /// Whether the descriptor refers to a directory.
    fn is_dir(&self, fd: BorrowedFd<'_>) -> io::Result<bool>;
    /// Creates a missing mount target in the stub layer `stub_dir`, its
    /// existing ancestors recreated with their metadata (`stub.ancestors`).
    fn create_stub(&self, stub_dir: BorrowedFd<'_>, stub: &Stub) -> io::Result<()>;
    /// Fills a fresh `/dev` tmpfs: mount points for the device nodes,
    /// `pts`, `shm`, and the usual symlinks.
    fn prepare_dev(&self, dev: BorrowedFd<'_>) -> io::Result<()>;
    /// Sets the UTS host name.
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// Makes `new_root` the root: `chdir`, `pivot_root(".", ".")`, detach the old root.
    fn pivot_root(&self, new_root: &Path) -> io::Result<()>;
}

/// The real implementation.
pub(crate) struct Linux;

fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

impl Syscall for Linux {
    fn unshare(&self, flags: rustix::thread::UnshareFlags) -> io::Result<()> {
        // SAFETY: callers only unshare namespaces (never CLONE_FILES), and do
        // so in a single-threaded process, so no other thread can observe a
        // changed descriptor table.
        unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(io::Error::from)
    }

    fn make_rprivate(&self, path: &Path) -> io::Result<()> {
        rustix::mount::mount_change(path, MountPropagationFlags::PRIVATE | MountPropagationFlags::REC)
            .map_err(io::Error::from)
    }

    fn open_path(&self, path: &Path) -> io::Result<OwnedFd> {
        Ok(rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
    }

    fn mkdir_at(&self, dir: BorrowedFd<'_>, name: &str, mode: u32) -> io::Result<()> {
        Ok(rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode))?)
    }

    fn write_at(&self, dir: BorrowedFd<'_>, name: &str, data: &[u8]) -> io::Result<()> {
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o644),
        )?;
        std::io::Write::write_all(&mut std::fs::File::from(fd), data)
    }

    fn open_at(&self, dir: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
        Ok(rustix::fs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )?)
    }

    fn is_dir(&self, fd: BorrowedFd<'_>) -> io::Result<bool> {
        let st = rustix::fs::fstat(fd)?;
        Ok(rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory)
    }

    fn create_stub(&self, stub_dir: BorrowedFd<'_>, stub: &Stub) -> io::Result<()> {
        // Recreate each existing ancestor with the image's metadata.
        let mut cur: OwnedFd = rustix::io::fcntl_dupfd_cloexec(stub_dir, 0)?;
        let comps: Vec<_> = stub.existing.components().collect();
        if comps.len() != stub.ancestors.len() {
            return Err(io::Error::other("stub ancestors do not match its path"));
        }
        for (comp, meta) in comps.into_iter().zip(&stub.ancestors) {
            let name = comp.as_os_str();
            match rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(meta.mode)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            let next = rustix::fs::openat(
                &cur,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            // Ownership that the namespace cannot represent stays root's.
            let _ = rustix::fs::fchown(
                &next,
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
            );
            rustix::fs::fchmod(&next, Mode::from_raw_mode(meta.mode))?;
            let times = rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec { tv_sec: meta.atime.0 as _, tv_nsec: meta.atime.1 as _ },
                last_modification: rustix::fs::Timespec { tv_sec: meta.mtime.0 as _, tv_nsec: meta.mtime.1 as _ },
            };
            rustix::fs::futimens(&next, &times)?;
            cur = next;
        }
        for (i, comp) in stub.missing.iter().enumerate() {
            let last = i + 1 == stub.missing.len();
            if last && stub.file {
                let f = rustix::fs::openat(
                    &cur,
                    comp.as_str(),
                    OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )?;
                drop(f);
            } else {
                match rustix::fs::mkdirat(&cur, comp.as_str(), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                if !last {
                    cur = rustix::fs::openat(
                        &cur,
                        comp.as_str(),
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )?;
                }
            }
        }
        Ok(())
    }

    fn prepare_dev(&self, dev: BorrowedFd<'_>) -> io::Result<()> {
        for n in DEV_NODES {
            drop(rustix::fs::openat(
                dev,
                n,
                OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o666),
            )?);
        }
        rustix::fs::mkdirat(dev, "pts", Mode::from_raw_mode(0o755))?;
        rustix::fs::mkdirat(dev, "shm", Mode::from_raw_mode(0o1777))?;
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("ptmx", "pts/ptmx"),
            ("core", "/proc/kcore"),
        ] {
            rustix::fs::symlinkat(target, dev, name)?;
        }
        Ok(())
    }

    fn overlay(
        &self,
        lowers: &[BorrowedFd<'_>],
        upper: Option<(BorrowedFd<'_>, BorrowedFd<'_>)>,
    ) -> io::Result<OwnedFd> {
        let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
        // Layers are passed as `/proc/self/fd/N` of descriptors captured
        // earlier: the kernel resolves the magic link at fsconfig time, so a
        // layer stays reachable even when its host path has been hidden by a
        // later mount. `lowerdir+` (kernel 6.8+) appends one layer per call,
        // top-most first, with no page-size limit on the total: the spec is
        // base first, so walk it backwards.
        for lower in lowers.iter().rev() {
            rustix::mount::fsconfig_set_string(&fs, "lowerdir+", fd_path(*lower).as_str())?;
        }
        if let Some((upper, work)) = upper {
            rustix::mount::fsconfig_set_string(&fs, "upperdir", fd_path(upper).as_str())?;
            rustix::mount::fsconfig_set_string(&fs, "workdir", fd_path(work).as_str())?;
            // Without `volatile`, unmounting syncs the whole upper
            // filesystem: 20-200 ms per RUN on a shared disk. A snapshot is
            // only trusted once the store commits it (and syncs then if it
            // wants durability); a crash mid-RUN discards it anyway. The
            // work dir keeps a `work/incompat/volatile` marker, which
            // would refuse a later mount; we remove it below, so a work dir
            // can be reused once its previous mount is gone.
            clear_volatile_marker(work)?;
            rustix::mount::fsconfig_set_flag(&fs, "volatile")?;
        }
        // Inside a user namespace overlayfs may not use trusted.* xattrs.
        rustix::mount::fsconfig_set_flag(&fs, "userxattr")?;
        rustix::mount::fsconfig_create(&fs)?;
        let attrs = if upper.is_none() { MountAttrFlags::MOUNT_ATTR_RDONLY } else { MountAttrFlags::empty() };
        Ok(rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?)
    }

    fn fs_mount(&self, fstype: &str, options: &[(&str, &str)], attrs: MountAttrFlags) -> io::Result<OwnedFd> {
        let fs = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)?;
        for (key, value) in options {
            if value.is_empty() {
                rustix::mount::fsconfig_set_flag(&fs, *key)?;
            } else {
                rustix::mount::fsconfig_set_string(&fs, *key, *value)?;
            }
        }
        rustix::mount::fsconfig_create(&fs)?;
        Ok(rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?)
    }

    fn clone_tree(&self, path: &Path, readonly: bool) -> io::Result<OwnedFd> {
        let fd = rustix::mount::open_tree(
            rustix::fs::CWD,
            path,
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | OpenTreeFlags::AT_RECURSIVE,
        )?;
        if readonly {
            mount_setattr_rdonly(fd.as_fd())?;
        }
        Ok(fd)
    }

    fn clone_in(&self, root: &Path, selector: &str, readonly: bool) -> io::Result<OwnedFd> {
        let at = super::inroot::open_in_root(root, selector)?;
        // The descriptor itself is cloned: nothing is looked up again.
        let fd = rustix::mount::open_tree(
            &at,
            "",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_RECURSIVE
                | OpenTreeFlags::AT_EMPTY_PATH,
        )?;
        if readonly {
            mount_setattr_rdonly(fd.as_fd())?;
        }
        Ok(fd)
    }

    fn attach_at(&self, mount: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
        rustix::mount::move_mount(mount, "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)?;
        Ok(())
    }

    fn attach_in(&self, mount: BorrowedFd<'_>, root: &Path, target: &str) -> io::Result<()> {
        let rootfd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        let to = super::inroot::openat2_in_root(&rootfd, target)?;
        rustix::mount::move_mount(
            mount,
            "",
            &to,
            "",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )?;
        Ok(())
    }

    fn open_in(&self, root: &Path, target: &str) -> io::Result<Option<OwnedFd>> {
        let rootfd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        match super::inroot::openat2_in_root(&rootfd, target) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn clone_fd(&self, fd: BorrowedFd<'_>, readonly: bool) -> io::Result<OwnedFd> {
        let clone = rustix::mount::open_tree(
            fd,
            "",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_RECURSIVE
                | OpenTreeFlags::AT_EMPTY_PATH,
        )?;
        if readonly {
            mount_setattr_rdonly(clone.as_fd())?;
        }
        Ok(clone)
    }

    fn attach_fd(&self, mount: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
        rustix::mount::move_mount(
            mount,
            "",
            target,
            "",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )?;
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        Ok(rustix::mount::unmount(target, UnmountFlags::DETACH)?)
    }

    fn resolve(&self, root: &Path, target: &str) -> io::Result<Resolved> {
        let rootfd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        let root_canon = std::fs::canonicalize(root)?;
        let comps: Vec<&str> = target.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
        for keep in (0..=comps.len()).rev() {
            let prefix = if keep == 0 { ".".to_string() } else { comps[..keep].join("/") };
            match super::inroot::openat2_in_root(&rootfd, &prefix) {
                Ok(fd) => {
                    // The kernel's own name for the resolved object gives the
                    // canonical path with every in-root symlink followed.
                    let link = rustix::fs::readlinkat(
                        rustix::fs::CWD,
                        format!("/proc/self/fd/{}", fd.as_raw_fd()),
                        Vec::new(),
                    )?;
                    let canon = PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(
                        link.into_bytes(),
                    ));
                    let existing = canon
                        .strip_prefix(&root_canon)
                        .map(Path::to_path_buf)
                        .map_err(|_| io::Error::other(format!("`{target}` resolves outside the root")))?;
                    let missing: Vec<String> = comps[keep..].iter().map(|c| c.to_string()).collect();
                    // Only a stub (something missing) needs its ancestors'
                    // metadata; each is a directory of the canonical path,
                    // so no symlink is followed here.
                    let mut ancestors = Vec::new();
                    if !missing.is_empty() {
                        let mut rel = PathBuf::new();
                        for comp in existing.components() {
                            rel.push(comp);
                            let st = rustix::fs::statat(&rootfd, &rel, AtFlags::SYMLINK_NOFOLLOW)?;
                            if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
                                return Err(rustix::io::Errno::NOTDIR.into());
                            }
                            ancestors.push(DirMeta::of(&st));
                        }
                    }
                    return Ok(Resolved { existing, missing, ancestors });
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("the root itself cannot be opened"))
    }

    fn resolve_in_layers(&self, layers: &[BorrowedFd<'_>], target: &str) -> io::Result<Option<Resolved>> {
        super::layer_lookup::resolve(layers, target)
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        Ok(rustix::system::sethostname(name.as_bytes())?)
    }

    fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
        // pivot_root(".", ".") stacks the old root on top of the new one at
        // "/", so the old root can be detached without needing a directory
        // for it inside the container (runc does the same).
        rustix::process::chdir(new_root)?;
        rustix::process::pivot_root(".", ".")?;
        rustix::mount::unmount(".", UnmountFlags::DETACH)?;
        rustix::process::chdir("/")?;
        Ok(())
    }
}

/// Removes `work/incompat/volatile/dirty` (and its directories) left in an overlay work dir by an earlier `volatile` mount.
fn clear_volatile_marker(work: BorrowedFd<'_>) -> io::Result<()> {
    let dir = format!("{}/work/incompat", fd_path(work));
    match rustix::fs::unlinkat(rustix::fs::CWD, format!("{dir}/volatile/dirty").as_str(), AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match rustix::fs::unlinkat(rustix::fs::CWD, format!("{dir}/volatile").as_str(), AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match rustix::fs::unlinkat(rustix::fs::CWD, dir.as_str(), AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTEMPTY) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, {MOUNT_ATTR_RDONLY})`: rustix has no wrapper.
fn mount_setattr_rdonly(fd: BorrowedFd<'_>) -> io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: u64::from(MountAttrFlags::MOUNT_ATTR_RDONLY.bits()),
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = (AtFlags::EMPTY_PATH.bits() | libc::AT_RECURSIVE as u32) as libc::c_uint;
    // SAFETY: the path is a valid NUL-terminated empty string, `attr` is a
    // properly initialised `struct mount_attr` whose size we pass, and the
    // descriptor is borrowed for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A recording fake of [`Syscall`].

    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    /// Records every call as a line of text; `missing` lists targets that do
    /// not exist, `files` those [`Syscall::open_in`] finds to be files (the
    /// rest are directories).
    #[derive(Default)]
    pub(crate) struct Recorder {
        pub calls: RefCell<Vec<String>>,
        pub missing: BTreeSet<String>,
        pub files: BTreeSet<String>,
        /// What the last `open_in` opened: what `is_dir` answers for.
        last_open: RefCell<String>,
        /// `fs_mount` of these file system types fails with `EPERM`.
        pub refuse: BTreeSet<&'static str>,
        /// `resolve_in_layers` answers (like `resolve`) instead of leaving
        /// every lookup to a probe mount.
        pub layer_lookup: bool,
    }

    impl Recorder {
        fn log(&self, s: String) {
            self.calls.borrow_mut().push(s);
        }
        fn fd(&self) -> io::Result<OwnedFd> {
            Ok(rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?)
        }
    }

    impl Syscall for Recorder {
        fn unshare(&self, flags: rustix::thread::UnshareFlags) -> io::Result<()> {
            self.log(format!("unshare {flags:?}"));
            Ok(())
        }
        fn make_rprivate(&self, path: &Path) -> io::Result<()> {
            self.log(format!("rprivate {}", path.display()));
            Ok(())
        }
        fn open_path(&self, path: &Path) -> io::Result<OwnedFd> {
            self.log(format!("open {}", path.display()));
            self.fd()
        }
        fn overlay(
            &self,
            lowers: &[BorrowedFd<'_>],
            upper: Option<(BorrowedFd<'_>, BorrowedFd<'_>)>,
        ) -> io::Result<OwnedFd> {
            self.log(format!("overlay layers={} upper={}", lowers.len(), upper.is_some()));
            self.fd()
        }
        fn mkdir_at(&self, _: BorrowedFd<'_>, name: &str, _: u32) -> io::Result<()> {
            self.log(format!("mkdir {name}"));
            Ok(())
        }
        fn write_at(&self, _: BorrowedFd<'_>, name: &str, _: &[u8]) -> io::Result<()> {
            self.log(format!("write {name}"));
            Ok(())
        }
        fn open_at(&self, _: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
            self.log(format!("open_at {name}"));
            self.fd()
        }
        fn is_dir(&self, _: BorrowedFd<'_>) -> io::Result<bool> {
            Ok(!self.files.contains(self.last_open.borrow().as_str()))
        }
        fn create_stub(&self, _: BorrowedFd<'_>, stub: &Stub) -> io::Result<()> {
            self.log(format!("stub {} + {} file={}", stub.existing.display(), stub.missing.join("/"), stub.file));
            Ok(())
        }
        fn prepare_dev(&self, _: BorrowedFd<'_>) -> io::Result<()> {
            self.log("prepare_dev".into());
            Ok(())
        }
        fn fs_mount(&self, fstype: &str, _: &[(&str, &str)], _: MountAttrFlags) -> io::Result<OwnedFd> {
            self.log(format!("fs {fstype}"));
            if self.refuse.contains(fstype) {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            self.fd()
        }
        fn clone_tree(&self, path: &Path, readonly: bool) -> io::Result<OwnedFd> {
            self.log(format!("clone {} ro={readonly}", path.display()));
            self.fd()
        }
        fn clone_in(&self, root: &Path, selector: &str, readonly: bool) -> io::Result<OwnedFd> {
            self.log(format!("clone_in {} `{selector}` ro={readonly}", root.display()));
            self.fd()
        }
        fn attach_at(&self, _: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
            self.log(format!("attach_at {}", target.display()));
            Ok(())
        }
        fn attach_in(&self, _: BorrowedFd<'_>, root: &Path, target: &str) -> io::Result<()> {
            self.log(format!("attach {} {target}", root.display()));
            Ok(())
        }
        fn open_in(&self, root: &Path, target: &str) -> io::Result<Option<OwnedFd>> {
            self.log(format!("open_in {} {target}", root.display()));
            let t = target.trim_start_matches('/').to_string();
            if self.missing.contains(&t) {
                return Ok(None);
            }
            *self.last_open.borrow_mut() = t;
            self.fd().map(Some)
        }
        fn clone_fd(&self, _: BorrowedFd<'_>, readonly: bool) -> io::Result<OwnedFd> {
            self.log(format!("clone_fd ro={readonly}"));
            self.fd()
        }
        fn attach_fd(&self, _: BorrowedFd<'_>, _: BorrowedFd<'_>) -> io::Result<()> {
            self.log("attach_fd".into());
            Ok(())
        }
        fn unmount(&self, target: &Path) -> io::Result<()> {
            self.log(format!("unmount {}", target.display()));
            Ok(())
        }
        fn resolve(&self, _: &Path, target: &str) -> io::Result<Resolved> {
            let t = target.trim_start_matches('/').to_string();
            if self.missing.contains(&t) {
                let mut comps: Vec<String> = t.split('/').map(str::to_string).collect();
                let last = comps.pop().unwrap_or_default();
                let existing = PathBuf::from(comps.join("/"));
                let ancestors = existing.components().map(|_| DirMeta::of(&rustix::fs::stat("/").unwrap())).collect();
                Ok(Resolved { existing, missing: vec![last], ancestors })
            } else {
                Ok(Resolved { existing: PathBuf::from(t), missing: Vec::new(), ancestors: Vec::new() })
            }
        }
        fn resolve_in_layers(&self, layers: &[BorrowedFd<'_>], target: &str) -> io::Result<Option<Resolved>> {
            self.log(format!("layer lookup layers={} {target}", layers.len()));
            if self.layer_lookup { self.resolve(Path::new("/"), target).map(Some) } else { Ok(None) }
        }
        fn sethostname(&self, name: &str) -> io::Result<()> {
            self.log(format!("hostname {name}"));
            Ok(())
        }
        fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
            self.log(format!("pivot_root {}", new_root.display()));
            Ok(())
        }
    }
}
