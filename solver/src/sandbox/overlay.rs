//! Overlay (or read-only) views of snapshots in the current process's mount namespace.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::syscall::{Linux, Syscall};
use super::{SandboxError, copyfs};

/// A view made by [`mount_overlay`]: a mount, or a flattened copy when the
/// kernel refuses overlayfs (the copy fallback). Dropping it unmounts
/// (lazily, `MNT_DETACH`) or removes the copy; [`MountGuard::finish`] also
/// writes a copy's changes to the upper dir.
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Mount,
    /// A flattened copy of the lowers, read-only (a read-only bind mount of
    /// itself over hard links into the snapshots) or writable (copies).
    Copy {
        merged: Box<copyfs::Merged>,
        upper: Option<PathBuf>,
        ro_bind: bool,
    },
    /// Already finished.
    Done,
}

impl MountGuard {
    /// Where the view is mounted.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Ends the view. For a writable view made by the copy fallback, first
    /// writes what changed in it to the upper dir in overlay format
    /// (whiteouts, opaque directories), as the kernel overlay would have
    /// done. Call it before using the upper dir; dropping the guard instead
    /// discards a copy's changes.
    pub fn finish(mut self) -> Result<(), SandboxError> {
        let t = self.target.display().to_string();
        match std::mem::replace(&mut self.kind, Kind::Done) {
            Kind::Mount => {
                Linux.unmount(&self.target).map_err(|source| SandboxError::Mount { step: "unmount", target: t, source })
            }
            Kind::Copy { merged, upper, ro_bind } => {
                if ro_bind {
                    Linux.unmount(&self.target).map_err(|source| SandboxError::Mount {
                        step: "unmount",
                        target: t.clone(),
                        source,
                    })?;
                }
                if let Some(up) = &upper {
                    merged.diff(&self.target, up, &Default::default()).map_err(|source| {
                        SandboxError::CopyFallback { step: "write the changes of", path: t.clone(), source }
                    })?;
                }
                copyfs::clear_dir(&self.target).map_err(|source| SandboxError::CopyFallback {
                    step: "remove",
                    path: t,
                    source,
                })
            }
            Kind::Done => Ok(()),
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        // Nothing useful can be done about a failure here: the mount lives
        // in our private namespace and dies with the process anyway; a
        // leftover copy is in a scratch dir removed by its owner.
        match &self.kind {
            Kind::Mount => {
                let _ = Linux.unmount(&self.target);
            }
            Kind::Copy { ro_bind, .. } => {
                if *ro_bind {
                    let _ = Linux.unmount(&self.target);
                }
                let _ = copyfs::clear_dir(&self.target);
            }
            Kind::Done => {}
        }
    }
}

/// The copy fallback of [`mount_overlay`].
fn copy_view(lowerdirs: &[PathBuf], upper: Option<&Path>, target: &Path) -> Result<MountGuard, SandboxError> {
    let t = target.display().to_string();
    let copy_err = |step: &'static str| {
        let path = t.clone();
        move |source| SandboxError::CopyFallback { step, path, source }
    };
    let mut merged = copyfs::Merged::new(lowerdirs).map_err(copy_err("read the layers of"))?;
    // From here on the guard cleans up whatever was created.
    let mut guard = MountGuard {
        target: target.to_path_buf(),
        kind: Kind::Copy { merged: Box::default(), upper: upper.map(Path::to_path_buf), ro_bind: false },
    };
    // Read-only views are never written: hard links into the snapshots are
    // safe, and a read-only bind of the copy over itself keeps them so.
    merged.flatten(target, upper.is_none()).map_err(copy_err("flatten layers into"))?;
    let ro_bind = upper.is_none();
    if ro_bind {
        let fd = Linux.clone_tree(target, true).map_err(|source| SandboxError::Mount {
            step: "bind-mount",
            target: t.clone(),
            source,
        })?;
        Linux.attach_at(fd.as_fd(), target).map_err(|source| SandboxError::Mount {
            step: "attach mount",
            target: t.clone(),
            source,
        })?;
    }
    guard.kind = Kind::Copy { merged: Box::new(merged), upper: upper.map(Path::to_path_buf), ro_bind };
    Ok(guard)
}

/// Mounts `lowerdirs` (base first) at `target` in the current process's
/// private mount namespace (call [`super::init_process`] first).
///
/// With `upper = Some((upperdir, workdir))` the view is writable and changes
/// land in `upperdir` (overlay whiteouts, `user.overlay.opaque` markers);
/// with `None` it is read-only. Where the kernel refuses the overlay (or
/// with `RBUILD_OVERLAY=copy`), the layers are flattened into `target`
/// instead; call [`MountGuard::finish`] to get a writable view's changes
/// into `upperdir`. No layer and an upper dir: the upper dir
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
        (layers, upper) if copyfs::use_copy() => return copy_view(layers, upper.map(|(u, _)| u), target),
        (layers, upper) => {
            let fds = layers.iter().map(|p| sys.open_path(p).map_err(prep(p))).collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
            let mounted = match upper {
                Some((up, work)) => {
                    let u = sys.open_path(up).map_err(prep(up))?;
                    let w = sys.open_path(work).map_err(prep(work))?;
                    sys.overlay(&refs, Some((u.as_fd(), w.as_fd())))
                }
                None => sys.overlay(&refs, None),
            };
            match mounted {
                Ok(fd) => fd,
                Err(e) if copyfs::note_refusal(&e) => return copy_view(layers, upper.map(|(u, _)| u), target),
                Err(e) => return Err(mount_err("mount overlay")(e)),
            }
        }
    };
    sys.attach_at(fd.as_fd(), target).map_err(mount_err("attach mount"))?;
    Ok(MountGuard { target: target.to_path_buf(), kind: Kind::Mount })
}
