//! Sources of `RUN --mount=type=bind`: which layers the sandbox merges and
//! which path inside them it mounts.
//!
//! The mounted content is the Dockerfile author's (the build context, a
//! stage, an image), so `source=` is never joined onto a host path: the
//! sandbox resolves it inside the merged layers (`openat2(RESOLVE_IN_ROOT)`)
//! and mounts the descriptor. A writable bind (`rw`) is an overlay whose
//! upper dir lives on the sandbox's scratch tmpfs, so writes are discarded
//! and never reach the checkout or a snapshot. A context bind shows what
//! BuildKit's context transfer would: entries excluded by `.dockerignore`
//! are absent, hidden by whiteouts in a small *mask* layer on a tmpfs placed
//! over the context. Nothing is copied or hard-linked, so no shared inode
//! can be written.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rbuild_cache::store::{SnapshotId, Store};

use super::ContextDir;
use super::scratch::ScratchDir;
use crate::sandbox::MountSource;

/// Failures preparing a bind source. Messages name the `source=` path as
/// the Dockerfile wrote it, never a host path.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// `source=` does not exist in the context, or the ignore rules exclude it.
    #[error("bind source `{selector}` not found in the build context")]
    NotFound {
        /// The `source=` path.
        selector: String,
    },
    /// `source=` cannot be resolved in the context (a link loop, ...).
    #[error("cannot resolve bind source `{selector}` in the build context")]
    Resolve {
        /// The `source=` path.
        selector: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Listing the context to find the entries the ignore rules exclude.
    #[error("cannot read the build context below `{selector}`")]
    Walk {
        /// The `source=` path.
        selector: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Creating the scratch directory or the mask layer.
    #[error("cannot prepare the view of bind source `{selector}`")]
    Prepare {
        /// The `source=` path.
        selector: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A prepared bind source: what the sandbox mounts, and the scratch
/// directories it refers to (kept until the `RUN` ends).
pub(crate) struct BindSource {
    pub source: MountSource,
    pub keep: Option<ScratchDir>,
}

/// A bind of `selector` in a snapshot chain (base first). An empty chain is
/// an empty directory.
pub(crate) fn layers(
    store: &Store,
    chain: &[SnapshotId],
    selector: &str,
    readonly: bool,
) -> Result<BindSource, BindError> {
    let prep = |source| BindError::Prepare { selector: selector.to_string(), source };
    let (lowerdirs, keep) = if chain.is_empty() {
        let empty = ScratchDir::new(store.root(), "empty").map_err(prep)?;
        (vec![empty.path().to_path_buf()], Some(empty))
    } else {
        // Empty diffs are left out (see `Store::mount_layers`).
        (store.mount_layers(chain), None)
    };
    Ok(BindSource { source: MountSource::Overlay { lowerdirs, readonly, selector: selector.to_string() }, keep })
}

/// A bind of `selector` in the build context `dir`, honouring its ignore rules.
pub(crate) fn context(
    store: &Store,
    dir: &ContextDir,
    selector: &str,
    readonly: bool,
) -> Result<BindSource, BindError> {
    let sel = selector.to_string();
    let sub = crate::sandbox::canonical_in_root(&dir.root, selector).map_err(|source| {
        if matches!(source.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) {
            BindError::NotFound { selector: sel.clone() }
        } else {
            BindError::Resolve { selector: sel.clone(), source }
        }
    })?;
    let sub_rel = slash(&sub);
    // An ignored path (or one below an ignored directory) is not in the
    // context at all, as for COPY.
    let mut prefix = String::new();
    for comp in sub_rel.split('/').filter(|c| !c.is_empty()) {
        prefix = join(&prefix, comp);
        if (dir.ignore)(&prefix) {
            return Err(BindError::NotFound { selector: sel });
        }
    }
    let mut hidden = Vec::new();
    let top = dir.root.join(&sub);
    if std::fs::symlink_metadata(&top).is_ok_and(|m| m.is_dir()) {
        ignored_below(&top, (&sub_rel, &sub), &*dir.ignore, &mut hidden)
            .map_err(|source| BindError::Walk { selector: sel.clone(), source })?;
    }
    // The canonical path is what was checked: the sandbox resolves it again
    // inside the merged view, where whiteouts can only make it fail. (The
    // view only lacks entries, so resolving the Dockerfile's own path there
    // reaches the same place or fails: it serves where the canonical one is
    // not UTF-8.)
    let sub_sel = sub.to_str().map_or_else(|| selector.to_string(), str::to_string);
    let mut lowerdirs = vec![dir.root.clone()];
    let keep = if hidden.is_empty() {
        None
    } else {
        let mask = ScratchDir::new_tmpfs(store.root(), "mask")
            .and_then(|mask| write_mask(&dir.root, mask.path(), &hidden).map(|()| mask))
            .map_err(|source| BindError::Prepare { selector: sel.clone(), source })?;
        lowerdirs.push(mask.path().to_path_buf());
        Some(mask)
    };
    Ok(BindSource { source: MountSource::Overlay { lowerdirs, readonly, selector: sub_sel }, keep })
}

fn slash(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") }
}

/// Appends to `out` the context-relative paths under `dir` (whose relative
/// path is `rel`, `rel_os` with the real bytes) that `ignore` excludes,
/// without descending into them — exactly the entries the COPY walk (and
/// the checksum of this bind) skips. Symlinks are never followed.
fn ignored_below(
    dir: &Path,
    (rel, rel_os): (&str, &Path),
    ignore: &dyn Fn(&str) -> bool,
    out: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        // The predicate sees the name as the COPY walk shows it to it; the
        // whiteout must carry the real one.
        let child = join(rel, &name.to_string_lossy());
        let child_os = rel_os.join(&name);
        if ignore(&child) {
            out.push(child_os);
        } else if entry.file_type()?.is_dir() {
            ignored_below(&entry.path(), (&child, &child_os), ignore, out)?;
        }
    }
    Ok(())
}

/// Fills the mask layer `mask` (the top layer over `root`): a whiteout for
/// each hidden path and the directories leading to them, which carry their
/// context directory's owner, mode and times (overlayfs shows a merged
/// directory with the top layer's attributes).
fn write_mask(root: &Path, mask: &Path, hidden: &[PathBuf]) -> std::io::Result<()> {
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    dirs.insert(PathBuf::new());
    for path in hidden {
        let mut parent = PathBuf::new();
        for comp in path.parent().into_iter().flat_map(Path::components) {
            parent.push(comp);
            if dirs.insert(parent.clone()) {
                std::fs::create_dir(mask.join(&parent))?;
            }
        }
        rustix::fs::mknodat(
            rustix::fs::CWD,
            mask.join(path),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )?;
    }
    // Deepest first: setting a parent's times after its children were made.
    for d in dirs.iter().rev() {
        let md = std::fs::symlink_metadata(root.join(d))?;
        let m = mask.join(d);
        // Ownership that the namespace cannot represent stays ours.
        let _ = std::os::unix::fs::chown(&m, Some(md.uid()), Some(md.gid()));
        rustix::fs::chmod(&m, rustix::fs::Mode::from_raw_mode(md.mode() & 0o7777))?;
        let ts = |s: i64, ns: i64| rustix::fs::Timespec { tv_sec: s, tv_nsec: ns as _ };
        let times = rustix::fs::Timestamps {
            last_access: ts(md.atime(), md.atime_nsec()),
            last_modification: ts(md.mtime(), md.mtime_nsec()),
        };
        rustix::fs::utimensat(rustix::fs::CWD, &m, &times, rustix::fs::AtFlags::empty())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};

    #[test]
    fn ignored_entries_are_found_without_descending() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("keys/deep")).unwrap();
        std::fs::create_dir_all(r.join("src/sub")).unwrap();
        std::fs::write(r.join("keys/deep/k"), "").unwrap();
        std::fs::write(r.join("src/sub/deploy-key.pem"), "").unwrap();
        std::fs::write(r.join("src/main.c"), "").unwrap();
        let ignore = |p: &str| p == "keys" || p.ends_with(".pem") || p == "keys/deep/k";
        let mut out = Vec::new();
        ignored_below(r, ("", Path::new("")), &ignore, &mut out).unwrap();
        out.sort();
        assert_eq!(out, [Path::new("keys"), Path::new("src/sub/deploy-key.pem")]);
        let mut out = Vec::new();
        ignored_below(&r.join("src"), ("src", Path::new("src")), &ignore, &mut out).unwrap();
        assert_eq!(out, [Path::new("src/sub/deploy-key.pem")]);
        // A link to a directory is not followed.
        std::os::unix::fs::symlink(r.join("src"), r.join("ln")).unwrap();
        let mut out = Vec::new();
        ignored_below(r, ("", Path::new("")), &|p: &str| p == "ln/main.c", &mut out).unwrap();
        assert!(out.is_empty(), "{out:?}");
    }

    fn overlay(b: &BindSource) -> (&[PathBuf], bool, &str) {
        match &b.source {
            MountSource::Overlay { lowerdirs, readonly, selector } => (lowerdirs, *readonly, selector),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn context_sources_resolve_inside_and_honour_the_ignore_rules() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let ctx = tempfile::tempdir().unwrap();
        let r = ctx.path();
        std::fs::create_dir_all(r.join("src/keys")).unwrap();
        std::fs::write(r.join("src/app"), "").unwrap();
        std::fs::write(r.join("src/keys/k"), "").unwrap();
        std::fs::write(r.join("deploy-key.pem"), "").unwrap();
        symlink("/", r.join("hostroot")).unwrap();
        symlink("deploy-key.pem", r.join("innocent")).unwrap();
        symlink("/src/keys", r.join("to-keys")).unwrap();
        symlink("/nowhere", r.join("dangling")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        let dir = ContextDir {
            root: r.to_path_buf(),
            ignore: std::sync::Arc::new(|p: &str| p == "deploy-key.pem" || p == "src/keys"),
        };
        // No ignored entry below `src/app`: the context itself, nothing more.
        let b = context(&store, &dir, "hostroot/src/app", true).unwrap();
        assert_eq!(overlay(&b), (&[r.to_path_buf()][..], true, "src/app"));
        assert!(b.keep.is_none());
        // Below the root two entries are ignored: a mask layer on top.
        let b = context(&store, &dir, "/", false).unwrap();
        let (lowers, readonly, selector) = overlay(&b);
        assert_eq!((lowers.len(), readonly, selector), (2, false, ""));
        assert_eq!(lowers[0], r);
        let mask = b.keep.as_ref().unwrap().path();
        assert_eq!(lowers[1], mask);
        for w in ["deploy-key.pem", "src/keys"] {
            let md = std::fs::symlink_metadata(mask.join(w)).unwrap();
            assert!(md.file_type().is_char_device() && md.rdev() == 0, "{w}");
        }
        assert!(!mask.join("src/app").exists() && !mask.join("hostroot").exists());
        for sel in ["deploy-key.pem", "innocent", "src/keys/k", "to-keys", "dangling", "missing"] {
            let e = context(&store, &dir, sel, true).err().unwrap();
            assert!(matches!(&e, BindError::NotFound { selector } if selector == sel), "{sel}: {e}");
        }
        let e = context(&store, &dir, "loop", true).err().unwrap();
        assert!(matches!(e, BindError::Resolve { .. }), "{e}");
        assert!(!e.to_string().contains(&r.display().to_string()), "{e}");
    }

    #[test]
    fn the_mask_has_whiteouts_and_the_contexts_directory_attributes() {
        let ctx = tempfile::tempdir().unwrap();
        let mask = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ctx.path().join("src/sub")).unwrap();
        std::fs::set_permissions(ctx.path().join("src"), std::fs::Permissions::from_mode(0o750)).unwrap();
        let old = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec { tv_sec: 1_000_000, tv_nsec: 0 },
            last_modification: rustix::fs::Timespec { tv_sec: 2_000_000, tv_nsec: 5 },
        };
        rustix::fs::utimensat(rustix::fs::CWD, ctx.path().join("src"), &old, rustix::fs::AtFlags::empty()).unwrap();
        // A name that is not UTF-8 is whited out under its real bytes.
        let odd = PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(b"odd\xff".to_vec()));
        match write_mask(ctx.path(), mask.path(), &["src/sub/key.pem".into(), "top.pem".into(), odd.clone()]) {
            Ok(()) => {}
            // Whiteouts need kernel 5.8+ or CAP_MKNOD.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return,
            Err(e) => panic!("{e}"),
        }
        for w in [Path::new("src/sub/key.pem"), Path::new("top.pem"), &odd] {
            let md = std::fs::symlink_metadata(mask.path().join(w)).unwrap();
            assert!(md.file_type().is_char_device() && md.rdev() == 0, "{w:?} is a whiteout");
        }
        let md = std::fs::metadata(mask.path().join("src")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o750);
        assert_eq!((md.mtime(), md.mtime_nsec()), (2_000_000, 5));
        let ctx_root = std::fs::metadata(ctx.path()).unwrap();
        let mask_root = std::fs::metadata(mask.path()).unwrap();
        assert_eq!(mask_root.mode(), ctx_root.mode());
        assert_eq!(mask_root.mtime(), ctx_root.mtime());
    }
}
