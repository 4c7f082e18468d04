//! Overlay (or read-only) views of snapshots in the current process's mount namespace.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::SandboxError;
use super::syscall::{Linux, Syscall};

/// A mount made by [`mount_overlay`]; dropping it unmounts (lazily, `MNT_DETACH`).
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
}

impl MountGuard {
    /// Where the view is mounted.
    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        // Nothing useful can be done about a failure here: the mount lives
        // in our private namespace and dies with the process anyway.
        let _ = Linux.unmount(&self.target);
    }
}

/// Mounts `lowerdirs` (base first) at `target` in the current process's
/// private mount namespace (call [`super::init_process`] first).
///
/// With `upper = Some((upperdir, workdir))` the view is writable and changes
/// land in `upperdir` (overlay whiteouts, `user.overlay.opaque` markers);
/// with `None` it is read-only. No layer and an upper dir: the upper dir
/// itself is bind-mounted (there is nothing to whiteout). No layer and no
/// upper dir: an empty read-only tmpfs.
pub fn mount_overlay(
    lowerdirs: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<MountGuard, SandboxError> {
    let sys = Linux;
    let t = target.display().to_string();
    let mount_err = |step: &'static str| {
        let t = t.clone();
        move |source| SandboxError::Mount { step, target: t, source }
    };
    let prep = |p: &Path| {
        let path = p.display().to_string();
        move |source| SandboxError::Prepare { path, source }
    };
    let fd = match (lowerdirs, upper) {
        ([], Some((up, _))) => sys.clone_tree(up, false).map_err(mount_err("bind-mount"))?,
        ([], None) => sys
            .fs_mount("tmpfs", &[("mode", "0755"), ("size", "4k")], rustix::mount::MountAttrFlags::MOUNT_ATTR_RDONLY)
            .map_err(mount_err("mount tmpfs"))?,
        ([one], None) => sys.clone_tree(one, true).map_err(mount_err("bind-mount"))?,
        (layers, upper) => {
            let fds = layers.iter().map(|p| sys.open_path(p).map_err(prep(p))).collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
            match upper {
                Some((up, work)) => {
                    let u = sys.open_path(up).map_err(prep(up))?;
                    let w = sys.open_path(work).map_err(prep(work))?;
                    sys.overlay(&refs, Some((u.as_fd(), w.as_fd()))).map_err(mount_err("mount overlay"))?
                }
                None => sys.overlay(&refs, None).map_err(mount_err("mount overlay"))?,
            }
        }
    };
    sys.attach_at(fd.as_fd(), target).map_err(mount_err("attach mount"))?;
    Ok(MountGuard { target: target.to_path_buf() })
}
