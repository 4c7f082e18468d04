//! Small filesystem helpers shared by the store and the unpacker:
//! descriptor-relative recursive removal that never follows symlinks and
//! makes read-only directories writable on the way, and random names.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, Dir, Mode, OFlags};
use rustix::io::Errno;

/// Removes `path` (file, symlink or whole directory tree) if it exists.
///
/// Symlinks are removed, never followed. Directories without write or
/// search permission (overlay `work/work` is mode 000, images ship 0555
/// dirs) get `u+rwx` first, which works whenever we own them.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"));
    };
    let dir = match rustix::fs::open(parent, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    remove_at(dir.as_fd(), name)
}

/// Removes `name` inside the directory `dir` (recursively for directories),
/// without following symlinks. A missing entry is not an error.
pub fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        // Linux reports EISDIR for unlink(2) of a directory.
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(Errno::ACCESS) => {
            make_writable(dir);
            match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => return Ok(()),
                Err(Errno::ISDIR) | Err(Errno::PERM) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let sub = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ACCESS) => {
            // No read/search permission on the directory itself.
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(0o700), AtFlags::empty())?;
            rustix::fs::openat(dir, name, flags, Mode::empty())?
        }
        Err(e) => return Err(e.into()),
    };
    clear_dir(sub)?;
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ACCESS) => {
            make_writable(dir);
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(Into::into)
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes every entry inside the open directory `fd`.
pub fn clear_dir(fd: OwnedFd) -> io::Result<()> {
    make_writable(fd.as_fd());
    let mut names: Vec<OsString> = Vec::new();
    let mut d = Dir::read_from(&fd)?;
    while let Some(ent) = d.read() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        names.push(OsStr::from_bytes(n).to_owned());
    }
    for n in names {
        remove_at(fd.as_fd(), &n)?;
    }
    Ok(())
}

/// Adds `u+rwx` to a directory if it lacks it; failures are ignored because
/// the caller's next operation reports the real error.
fn make_writable(dir: BorrowedFd<'_>) {
    if let Ok(st) = rustix::fs::fstat(dir) {
        let mode = st.st_mode & 0o7777;
        if mode & 0o700 != 0o700 {
            let _ = rustix::fs::fchmod(dir, Mode::from_raw_mode(mode | 0o700));
        }
    }
}

/// `n` random bytes as lowercase hex, from the kernel's CSPRNG.
pub fn random_hex(n: usize) -> io::Result<String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hex::encode(buf))
}

/// Total bytes used by a tree (regular files' lengths plus symlink target
/// lengths), not following symlinks. Missing paths count as 0.
pub fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(path) {
        for ent in rd.flatten() {
            total += tree_size(&ent.path());
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn removes_read_only_trees_without_following_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        let victim = t.path().join("victim");
        std::fs::create_dir_all(victim.join("a/b")).unwrap();
        std::fs::write(victim.join("a/b/f"), b"data").unwrap();
        std::os::unix::fs::symlink(&outside, victim.join("a/link")).unwrap();
        std::fs::set_permissions(victim.join("a/b"), std::fs::Permissions::from_mode(0o555)).unwrap();
        std::fs::set_permissions(victim.join("a"), std::fs::Permissions::from_mode(0o000)).unwrap();
        remove_tree(&victim).unwrap();
        assert!(!victim.exists());
        assert!(outside.join("keep").exists(), "symlink target must survive");
        remove_tree(&victim).unwrap(); // missing is fine
    }
}
