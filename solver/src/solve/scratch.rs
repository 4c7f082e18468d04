//! Scratch directories under the store's `tmp/` (removed on drop, so a
//! killed build leaves only names the next `Store::open` cleans up) and
//! read-only merged views of snapshot chains mounted on them.

use std::path::{Path, PathBuf};

use rbuild_cache::store::{SnapshotId, Store};

use crate::sandbox::{self, MountGuard};

/// A directory removed (and unmounted, for tmpfs) on drop.
pub struct ScratchDir {
    path: PathBuf,
    tmpfs: bool,
}

impl ScratchDir {
    /// A fresh directory `<root>/tmp/<kind>-<pid>-<n>`.
    pub fn new(root: &Path, kind: &str) -> std::io::Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let path = root.join("tmp").join(format!("{kind}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(ScratchDir { path, tmpfs: false })
    }

    /// A fresh directory backed by a private tmpfs: secrets never touch
    /// the store's disk.
    pub fn new_tmpfs(root: &Path, kind: &str) -> std::io::Result<Self> {
        let mut dir = Self::new(root, kind)?;
        rustix::mount::mount(
            "tmpfs",
            &dir.path,
            "tmpfs",
            rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
            c"mode=0700",
        )?;
        dir.tmpfs = true;
        Ok(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if self.tmpfs {
            let _ = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A read-only merged view of a snapshot chain (base first), mounted on a
/// scratch directory; unmounted, then removed, on drop. An empty chain is
/// an empty directory.
pub struct ChainView {
    // Field order is drop order: unmount before removing the directory.
    _mount: Option<MountGuard>,
    dir: ScratchDir,
}

impl ChainView {
    /// Mounts `chain` from `store` at a fresh `<root>/tmp/<kind>-...` dir.
    pub fn mount(store: &Store, chain: &[SnapshotId], kind: &str) -> std::io::Result<ChainView> {
        let dir = ScratchDir::new(store.root(), kind)?;
        let lowers: Vec<PathBuf> = store.mount_layers(chain);
        let guard = if lowers.is_empty() {
            None
        } else {
            Some(sandbox::mount_overlay(&lowers, None, dir.path()).map_err(std::io::Error::other)?)
        };
        Ok(ChainView { _mount: guard, dir })
    }

    /// Where the view is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
