//! Looking a mount target up in a `RUN`'s layers themselves, the way
//! overlayfs would merge them, without mounting them.
//!
//! [`super::rootfs`] must know which mount targets (`/proc`, `/etc/hosts`,
//! a `--mount` target, ...) the image lacks before it mounts the root, to
//! create them in the stub layer. Asking a mounted read-only overlay of the
//! layers (the probe) costs one overlay superblock per `RUN`, created and
//! torn down again: ~0.6 ms of the step here. Most lookups are a handful of
//! `fstatat`s in a handful of layers, so this module answers them directly
//! and leaves to the probe only what it does not interpret: a symlink on
//! the path (resolved inside the root by the kernel there), `..`, an
//! overlay redirect, an opaque marker other than plain `y`, a file where a
//! directory is needed. The answer only decides where stubs go; every
//! mount is still attached through a descriptor resolved inside the
//! mounted root, so a wrong answer fails the step, never reaches the host.
//!
//! Merge rules followed (overlayfs with `userxattr`, no redirects, no
//! metacopy, as [`super::syscall::Linux::overlay`] mounts): the top-most
//! layer holding a name decides; a 0:0 character device is a whiteout
//! (the name does not exist below it); a directory merges with the
//! directories of the same name below it, down to the first layer where it
//! is opaque (`user.overlay.opaque=y`), missing in between being fine, or
//! where the name is a whiteout or not a directory; the merged directory's
//! metadata is the top-most one's.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::syscall::{DirMeta, Resolved};

/// The overlay xattr marking a directory opaque (`userxattr` namespace).
const OPAQUE_XATTR: &str = "user.overlay.opaque";
/// The overlay xattr of a renamed directory; never written by our mounts.
const REDIRECT_XATTR: &str = "user.overlay.redirect";

/// Looks `target` up in the merge of `layers` (base first). `None`: the
/// layers hold something this lookup does not interpret (see the module
/// docs); mount them and ask the kernel.
pub(crate) fn resolve(layers: &[BorrowedFd<'_>], target: &str) -> io::Result<Option<Resolved>> {
    let comps: Vec<&str> = target.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    if comps.contains(&"..") {
        return Ok(None);
    }
    // The directories merged at the current path, top-most first. Layer
    // roots are merged whatever their markers (overlayfs ignores them).
    let mut merged: Vec<OwnedFd> =
        layers.iter().rev().map(|l| rustix::io::fcntl_dupfd_cloexec(l, 0)).collect::<Result<_, _>>()?;
    let mut ancestors = Vec::with_capacity(comps.len());
    for (i, comp) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        match lookup(&merged, comp)? {
            Entry::Missing => {
                return Ok(Some(Resolved {
                    existing: comps[..i].iter().collect(),
                    missing: comps[i..].iter().map(|c| c.to_string()).collect(),
                    ancestors,
                }));
            }
            Entry::NotADirectory if last => {
                return Ok(Some(Resolved { existing: comps.iter().collect(), missing: Vec::new(), ancestors }));
            }
            Entry::NotADirectory | Entry::Unsure => return Ok(None),
            Entry::Directory { meta, dirs } => {
                ancestors.push(meta);
                merged = dirs;
            }
        }
    }
    Ok(Some(Resolved { existing: comps.iter().collect::<PathBuf>(), missing: Vec::new(), ancestors }))
}

/// What one name is in a merged directory.
enum Entry {
    Missing,
    /// A file, device, socket or fifo (the top-most layer's).
    NotADirectory,
    /// Something left to the kernel: a symlink or unknown overlay markers.
    Unsure,
    /// A directory: its metadata (top-most layer's) and the layers'
    /// directories merged there, top-most first.
    Directory {
        meta: DirMeta,
        dirs: Vec<OwnedFd>,
    },
}

fn lookup(merged: &[OwnedFd], name: &str) -> io::Result<Entry> {
    let mut found: Option<(DirMeta, Vec<OwnedFd>)> = None;
    for dir in merged {
        let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let d = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                if xattr(d.as_fd(), REDIRECT_XATTR)?.is_some() {
                    return Ok(Entry::Unsure);
                }
                let opaque = match xattr(d.as_fd(), OPAQUE_XATTR)? {
                    None => false,
                    Some(v) if v == b"y" => true,
                    Some(_) => return Ok(Entry::Unsure),
                };
                let (_, dirs) = found.get_or_insert_with(|| (DirMeta::of(&st), Vec::new()));
                dirs.push(d);
                if opaque {
                    break;
                }
            }
            FileType::Symlink => return Ok(Entry::Unsure),
            // A whiteout, or below a directory a non-directory: the merge
            // ends here.
            _ if found.is_some() => break,
            FileType::CharacterDevice if st.st_rdev == 0 => return Ok(Entry::Missing),
            _ => return Ok(Entry::NotADirectory),
        }
    }
    Ok(match found {
        Some((meta, dirs)) => Entry::Directory { meta, dirs },
        None => Entry::Missing,
    })
}

/// The value of extended attribute `name` of `fd`, if it has one.
fn xattr(fd: BorrowedFd<'_>, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut buf = [0u8; 256];
    match rustix::fs::fgetxattr(fd, name, &mut buf[..]) {
        Ok(n) => Ok(Some(buf[..n].to_vec())),
        Err(Errno::NODATA) | Err(Errno::NOTSUP) => Ok(None),
        // Longer than any marker we understand.
        Err(Errno::RANGE) => Ok(Some(b"?".to_vec())),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn layer_fds(dirs: &[&Path]) -> Vec<OwnedFd> {
        dirs.iter()
            .map(|d| rustix::fs::open(*d, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).unwrap())
            .collect()
    }

    fn look(dirs: &[&Path], target: &str) -> Option<Resolved> {
        let fds = layer_fds(dirs);
        let refs: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        resolve(&refs, target).unwrap()
    }

    fn found(existing: &str, missing: &[&str]) -> (PathBuf, Vec<String>) {
        (PathBuf::from(existing), missing.iter().map(|m| m.to_string()).collect())
    }

    fn parts(r: Option<Resolved>) -> Option<(PathBuf, Vec<String>)> {
        r.map(|r| (r.existing, r.missing))
    }

    /// Whether this file system takes `user.` xattrs on directories.
    fn set_opaque(dir: &Path, value: &[u8]) -> bool {
        rustix::fs::setxattr(dir, OPAQUE_XATTR, value, rustix::fs::XattrFlags::empty()).is_ok()
    }

    #[test]
    fn the_top_most_layer_decides_and_directories_merge() {
        let t = tempfile::tempdir().unwrap();
        let (base, top) = (t.path().join("base"), t.path().join("top"));
        std::fs::create_dir_all(base.join("etc/ssl")).unwrap();
        std::fs::create_dir_all(top.join("etc")).unwrap();
        std::fs::write(top.join("etc/hosts"), "").unwrap();
        std::fs::set_permissions(top.join("etc"), std::os::unix::fs::PermissionsExt::from_mode(0o750)).unwrap();
        let layers = [base.as_path(), top.as_path()];
        assert_eq!(parts(look(&layers, "/etc/ssl/certs")), Some(found("etc/ssl", &["certs"])));
        assert_eq!(parts(look(&layers, "/etc/hosts")), Some(found("etc/hosts", &[])));
        assert_eq!(parts(look(&layers, "/proc")), Some(found("", &["proc"])));
        assert_eq!(parts(look(&layers, "/")), Some(found("", &[])));
        // The merged directory shows the top-most layer's metadata.
        let r = look(&layers, "/etc/resolv.conf").unwrap();
        assert_eq!(r.ancestors.len(), 1);
        assert_eq!(r.ancestors[0].mode, 0o750);
        assert_eq!(parts(look(&[], "/etc/hosts")), Some(found("", &["etc", "hosts"])));
    }

    #[test]
    fn whiteouts_opaque_directories_and_files_end_the_merge() {
        let t = tempfile::tempdir().unwrap();
        let (base, mid, top) = (t.path().join("base"), t.path().join("mid"), t.path().join("top"));
        std::fs::create_dir_all(base.join("srv/data")).unwrap();
        std::fs::create_dir_all(base.join("opt/sub")).unwrap();
        std::fs::create_dir_all(mid.join("opt")).unwrap();
        std::fs::write(mid.join("srv"), "a file hides the directory below").unwrap();
        std::fs::create_dir_all(top.join("srv")).unwrap();
        let layers = [base.as_path(), mid.as_path(), top.as_path()];
        // top's /srv merges with mid's file: the merge stops, base's data is hidden.
        assert_eq!(parts(look(&layers, "/srv/data")), Some(found("srv", &["data"])));
        // A file where a directory is needed is left to the kernel.
        assert_eq!(parts(look(&[base.as_path(), mid.as_path()], "/srv/data")), None);
        assert_eq!(parts(look(&[base.as_path(), mid.as_path()], "/srv")), Some(found("srv", &[])));
        if set_opaque(&mid.join("opt"), b"y") {
            assert_eq!(parts(look(&layers, "/opt/sub")), Some(found("opt", &["sub"])));
            set_opaque(&mid.join("opt"), b"x");
            assert_eq!(parts(look(&layers, "/opt/sub")), None, "unknown markers go to the kernel");
        }
        // A whiteout (needs a 0:0 character device: only where mknod works).
        let wh = rustix::fs::mknodat(
            rustix::fs::CWD,
            top.join("opt").as_path(),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            0,
        );
        if wh.is_ok() {
            assert_eq!(parts(look(&layers, "/opt/sub")), Some(found("", &["opt", "sub"])));
        }
    }

    #[test]
    fn symlinks_and_dot_dot_are_left_to_the_kernel() {
        let t = tempfile::tempdir().unwrap();
        let l = t.path().join("l");
        std::fs::create_dir_all(l.join("real")).unwrap();
        std::os::unix::fs::symlink("/real", l.join("link")).unwrap();
        assert_eq!(parts(look(&[l.as_path()], "/link/x")), None);
        assert_eq!(parts(look(&[l.as_path()], "/link")), None);
        assert_eq!(parts(look(&[l.as_path()], "/real/../x")), None);
        assert_eq!(parts(look(&[l.as_path()], "/./real/x")), Some(found("real", &["x"])));
    }
}
