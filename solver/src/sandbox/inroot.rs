//! Paths resolved *inside* a root directory by the kernel.
//!
//! A `RUN --mount=type=bind` names a path (`source=`) inside content the
//! Dockerfile's author controls: the build context, a stage, an image. Its
//! symlinks must resolve as they would in a container whose `/` is that
//! content, never on the host: `openat2(RESOLVE_IN_ROOT)` makes an absolute
//! link restart at the root and clamps `..` there, and
//! `RESOLVE_NO_MAGICLINKS` refuses `/proc/*/fd`-style links that could jump
//! anywhere. A link leaving its root therefore lands inside it (as in
//! BuildKit, whose snapshots are mounted before the path is followed), and
//! a dangling one is "not found". Callers mount the descriptor itself, so
//! nothing is resolved a second time through a path that could have changed.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// Opens `selector` (relative or absolute, both meaning "from the root")
/// inside `root` as an `O_PATH` descriptor. `root` itself is a trusted host
/// path and is followed as given; `""`, `"."` and `"/"` name the root.
pub fn open_in_root(root: &Path, selector: &str) -> io::Result<OwnedFd> {
    let rootfd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    openat2_in_root(&rootfd, selector)
}

/// `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` of `path` (leading
/// `/` ignored) under the directory `rootfd`, as an `O_PATH` descriptor.
///
/// The kernel answers `EAGAIN` when a mount or rename anywhere on the
/// system (the seqcounts are global) raced with resolving a `..`: it cannot
/// then prove the walk stayed inside the root. Retrying is what it asks
/// for (as libpathrs does); concurrent sandboxes mounting make it common.
pub(crate) fn openat2_in_root(rootfd: &OwnedFd, path: &str) -> io::Result<OwnedFd> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(
            rootfd,
            rel,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(rustix::io::Errno::AGAIN) if tries < 64 => tries += 1,
            other => return Ok(other?),
        }
    }
}

/// The canonical path (no symlinks, no `..`) of `selector` inside `root`,
/// relative to `root` (`""` for the root itself), as [`open_in_root`]
/// resolves it.
pub fn canonical_in_root(root: &Path, selector: &str) -> io::Result<PathBuf> {
    let fd = open_in_root(root, selector)?;
    // The kernel's own name of the object (`d_path`) is its canonical path.
    let link = rustix::fs::readlinkat(rustix::fs::CWD, format!("/proc/self/fd/{}", fd.as_raw_fd()), Vec::new())?;
    let canon = PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(link.into_bytes()));
    let root_canon = std::fs::canonicalize(root)?;
    canon
        .strip_prefix(&root_canon)
        .map(Path::to_path_buf)
        // Only possible if the root was moved meanwhile: fail closed.
        .map_err(|_| io::Error::other("the resolved path is not below its root"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("a/b")).unwrap();
        std::fs::write(p.join("a/b/f"), "f").unwrap();
        std::fs::create_dir_all(p.join("etc")).unwrap();
        std::fs::write(p.join("etc/hostname"), "inside").unwrap();
        symlink("/", p.join("hostroot")).unwrap();
        symlink("/etc", p.join("abs-etc")).unwrap();
        symlink("../../../../../..", p.join("a/up")).unwrap();
        symlink("b/f", p.join("a/rel")).unwrap();
        symlink("loop2", p.join("loop1")).unwrap();
        symlink("loop1", p.join("loop2")).unwrap();
        symlink("/nowhere", p.join("dangling")).unwrap();
        symlink("/proc/self/root", p.join("magic")).unwrap();
        d
    }

    fn canon(root: &Path, sel: &str) -> io::Result<String> {
        canonical_in_root(root, sel).map(|p| p.display().to_string())
    }

    #[test]
    fn links_and_dotdot_stay_inside_the_root() {
        let d = tree();
        let r = d.path();
        assert_eq!(canon(r, "").unwrap(), "");
        assert_eq!(canon(r, "/").unwrap(), "");
        assert_eq!(canon(r, "a/b/f").unwrap(), "a/b/f");
        assert_eq!(canon(r, "/a/./b/../b/f").unwrap(), "a/b/f");
        // `..` at the root stays at the root.
        assert_eq!(canon(r, "../../..").unwrap(), "");
        assert_eq!(canon(r, "../a/b/../../etc/hostname").unwrap(), "etc/hostname");
        // Absolute links restart at the root, not at the host's `/`.
        assert_eq!(canon(r, "hostroot").unwrap(), "");
        assert_eq!(canon(r, "hostroot/etc/hostname").unwrap(), "etc/hostname");
        assert_eq!(canon(r, "abs-etc/hostname").unwrap(), "etc/hostname");
        // A relative link climbing out is clamped.
        assert_eq!(canon(r, "a/up").unwrap(), "");
        assert_eq!(canon(r, "a/up/a/rel").unwrap(), "a/b/f");
    }

    #[test]
    fn the_host_is_never_reached() {
        let d = tree();
        let fd = open_in_root(d.path(), "hostroot/etc/hostname").unwrap();
        let text = std::fs::read_to_string(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_eq!(text, "inside");
        // Host paths that exist outside but not inside are not found.
        let err = open_in_root(d.path(), "hostroot/proc/self/status").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    }

    #[test]
    fn loops_dangling_and_magic_links_fail() {
        let d = tree();
        let r = d.path();
        assert_eq!(open_in_root(r, "loop1").unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert_eq!(open_in_root(r, "dangling").unwrap_err().raw_os_error(), Some(libc::ENOENT));
        assert_eq!(open_in_root(r, "missing/x").unwrap_err().raw_os_error(), Some(libc::ENOENT));
        // `/proc/self/root` is looked up inside the root, where there is no
        // `/proc`: not found rather than the host's root.
        assert_eq!(open_in_root(r, "magic").unwrap_err().raw_os_error(), Some(libc::ENOENT));
    }
}
