//! Snapshot drafts: built in `tmp/` (so a crash leaves nothing visible),
//! committed by one rename to `snapshots/<id>`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{CWD, RenameFlags};
use rustix::io::Errno;

use super::{Inner, SnapshotId, StoreError};
use crate::fsutil;

/// A snapshot being built. Write the layer into [`SnapshotDraft::diff_dir`]
/// (directly, or as an overlay upper dir with [`SnapshotDraft::work_dir`] as
/// workdir), then [`SnapshotDraft::commit`]. Dropping discards it.
pub struct SnapshotDraft {
    inner: Arc<Inner>,
    dir: PathBuf,
    committed: bool,
    /// The diff's size when the writer knows it (see [`SnapshotDraft::set_size`]).
    size: Option<u64>,
}

impl SnapshotDraft {
    pub(crate) fn create(inner: Arc<Inner>) -> Result<SnapshotDraft, StoreError> {
        let dir = inner.tmp_path("snap");
        for sub in ["diff", "work"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|source| StoreError::CreateDir { path: p, source })?;
        }
        // The root of a `RUN`'s view is the upper dir's: 0755 whatever the
        // umask (and what [`diff_is_empty`] expects of an untouched diff).
        let diff = dir.join("diff");
        fs::set_permissions(&diff, fs::Permissions::from_mode(0o755))
            .map_err(|source| StoreError::CreateDir { path: diff, source })?;
        Ok(SnapshotDraft { inner, dir, committed: false, size: None })
    }

    /// The layer contents (overlay upper dir).
    pub fn diff_dir(&self) -> PathBuf {
        self.dir.join("diff")
    }

    /// Scratch dir for overlayfs (same filesystem as the diff).
    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// The draft's own directory (parent of `diff` and `work`).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The bytes of the diff's non-directories (each path counted, as
    /// [`fsutil::tree_size`] counts them), from a writer that made every
    /// entry itself (a copy into an empty diff): commit then records it
    /// instead of walking the tree again, one `lstat` per file.
    pub fn set_size(&mut self, bytes: u64) {
        self.size = Some(bytes);
    }

    /// Makes the snapshot visible under a fresh short id. The snapshot is
    /// protected from prune for the life of this process.
    pub fn commit(mut self) -> Result<SnapshotId, StoreError> {
        // Overlay leaves a few empty directories in `work/` (`work`,
        // `incompat/volatile`, mode 000). They stay until the snapshot is
        // pruned: removing them here cost five directory removals and a
        // mkdir, ~1 ms per `RUN`, for three inodes.
        let size = self.size.unwrap_or_else(|| fsutil::tree_size(&self.diff_dir()));
        // No record of an empty diff (a `RUN echo`'s): without one the size
        // is measured when asked for, which for an empty directory costs
        // less than writing the file did.
        if size > 0 {
            let size_path = self.dir.join("size");
            fs::write(&size_path, size.to_string()).map_err(|source| StoreError::Write { path: size_path, source })?;
        }

        let _gc = self.inner.gc_shared()?;
        for _ in 0..16 {
            let id = SnapshotId(fsutil::random_hex(6).map_err(StoreError::Random)?);
            let dest = self.inner.snapshot_dir(&id);
            match rustix::fs::renameat_with(CWD, &self.dir, CWD, &dest, RenameFlags::NOREPLACE) {
                Ok(()) => {
                    self.committed = true;
                    // No fsync of `snapshots/`: the diff's own files never
                    // were, and a record naming a snapshot lost to a power
                    // cut is a miss (`lookup` checks the snapshot exists).
                    self.inner.session.append('s', &id.0)?;
                    return Ok(id);
                }
                Err(Errno::EXIST) | Err(Errno::NOTEMPTY) => continue,
                Err(e) => {
                    return Err(StoreError::Rename { from: self.dir.clone(), to: dest, source: e.into() });
                }
            }
        }
        Err(StoreError::Random(std::io::Error::other("16 snapshot id collisions in a row")))
    }
}

/// See [`super::Store::snapshot_is_empty`].
pub(crate) fn diff_is_empty(diff: &Path) -> bool {
    use rustix::fs::{Dir, Mode, OFlags};
    let Ok(fd) =
        rustix::fs::open(diff, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
    else {
        return false;
    };
    let Ok(st) = rustix::fs::fstat(&fd) else { return false };
    if st.st_mode & 0o7777 != 0o755
        || st.st_uid != rustix::process::geteuid().as_raw()
        || st.st_gid != rustix::process::getegid().as_raw()
    {
        return false;
    }
    // Any name at all (ERANGE: more than fit) makes it not empty.
    if !matches!(rustix::fs::flistxattr(&fd, &mut [0u8; 256][..]), Ok(0)) {
        return false;
    }
    let Ok(mut dir) = Dir::read_from(&fd) else { return false };
    while let Some(entry) = dir.read() {
        let Ok(entry) = entry else { return false };
        if !matches!(entry.file_name().to_bytes(), b"." | b"..") {
            return false;
        }
    }
    true
}

impl Drop for SnapshotDraft {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fsutil::remove_tree(&self.dir);
        }
    }
}
