//! Running file ops (COPY/ADD/WORKDIR/heredoc files) and remote sources
//! (ADD of URLs and git repositories) into new snapshots.

use std::path::{Path, PathBuf};

use super::scratch::{ChainView, ScratchDir};
use super::{Finished, Shared, SolveError, StepError, VertexResult, chain_of, step_error};
use crate::fileop::{self, FileOpContext, InputRoot};
use crate::graph::{Chown, FileAction, FileOp, Op, SourceOp, Vertex};
use crate::sandbox::{self, MountGuard};

/// `selections`: what the op's copies from contexts read, by action slot,
/// as their cache key saw it (see [`fileop::apply_selected`]).
pub(crate) fn run(
    shared: &Shared<'_>,
    vertex: &Vertex,
    op: &FileOp,
    inputs: &[Finished],
    mut selections: super::cachekey::Selections,
) -> Result<VertexResult, SolveError> {
    let store = shared.store;
    let (mut chain, mut layers) = match op.base.map(|i| &inputs[i].result) {
        Some(VertexResult::Snapshots { chain, layers }) => (chain.clone(), layers.clone()),
        _ => (Vec::new(), Vec::new()),
    };
    if op.actions.is_empty() {
        // The empty filesystem (`scratch` used as an input).
        return Ok(VertexResult::Snapshots { chain, layers });
    }
    let mut draft = store.new_snapshot()?;
    let mut views: Vec<ChainView> = Vec::new();
    let err = |e: StepError| step_error(vertex, e);

    // Every input as a read-only merged view.
    let mut roots: Vec<(PathBuf, Option<super::ContextDir>)> = Vec::new();
    // Each input's snapshot dirs, top layer first (empty for contexts).
    let mut input_layers: Vec<Vec<PathBuf>> = Vec::new();
    for input in inputs {
        match &input.result {
            VertexResult::Directory(dir) => {
                roots.push((dir.root.clone(), Some(dir.clone())));
                input_layers.push(Vec::new());
            }
            result @ VertexResult::Snapshots { .. } => {
                let input_chain = chain_of(result);
                input_layers.push(input_chain.iter().rev().map(|id| store.snapshot_diff(id)).collect());
                let view = ChainView::mount(store, &input_chain, "src")
                    .map_err(|source| err(StepError::View { target: "input".into(), source }))?;
                roots.push((view.path().to_path_buf(), None));
                views.push(view);
            }
        }
    }

    // The destination: the bare snapshot dir for an empty base or a copy
    // into a path the base does not have (no overlayfs in the write path:
    // creating files through it costs ~1.5x); otherwise an overlay over the
    // base chain whose upper dir is the new snapshot, so deletions become
    // whiteouts and existing directories merge.
    let direct = match op.base.and_then(|i| roots.get(i)) {
        _ if chain.is_empty() => true,
        Some((view, _)) => {
            prepare_direct_copy(op, view, &draft.diff_dir()).map_err(|e| err(StepError::Destination(e)))?
        }
        None => false,
    };
    // `--chown` names are looked up in the destination's /etc/passwd and
    // /etc/group, which a direct write cannot see: resolve them to ids in
    // the base view first.
    let mut actions = std::borrow::Cow::Borrowed(&op.actions);
    if direct && let Some((view, _)) = op.base.and_then(|i| roots.get(i)) {
        let mut resolved = op.actions.clone();
        for action in &mut resolved {
            if let FileAction::Copy { chown: Some(c), .. } = action {
                let owner = fileop::resolve_owner(c, view).map_err(|e| err(e.into()))?;
                *c = Chown { user: owner.uid.to_string(), group: Some(owner.gid.to_string()) };
            }
        }
        actions = std::borrow::Cow::Owned(resolved);
    }
    // The writable view of the destination, finished (its changes written
    // to the snapshot) before the snapshot is committed.
    // Declared before the guard, so an early return unmounts first.
    let mut dest_dir: Option<ScratchDir> = None;
    let mut dest_guard: Option<MountGuard> = None;
    let dest_root: PathBuf = if direct {
        draft.diff_dir()
    } else {
        let view = dest_dir.insert(ScratchDir::new(store.root(), "dest").map_err(|e| err(StepError::Scratch(e)))?);
        let lowers: Vec<PathBuf> = store.mount_layers(&chain);
        let (upper, work) = (draft.diff_dir(), draft.work_dir());
        dest_guard =
            Some(sandbox::mount_overlay(&lowers, Some((&upper, &work)), view.path()).map_err(|e| err(e.into()))?);
        view.path().to_path_buf()
    };
    let ignores: Vec<Option<super::IgnoreFn>> =
        roots.iter().map(|(_, ctx)| ctx.as_ref().map(|c| c.ignore.clone())).collect();
    let input_roots: Vec<InputRoot<'_>> = roots
        .iter()
        .zip(&ignores)
        .zip(&input_layers)
        .map(|(((root, _), ignore), layers)| InputRoot {
            root: root.as_path(),
            exclude: ignore.as_ref().map(|f| &**f as &(dyn Fn(&str) -> bool + Sync)),
            // Context files arrive owned by root, as BuildKit's file sync resets them.
            reset_owner: ignore.is_some(),
            // Writing straight into the new snapshot (same file system as
            // the store): unchanged files are shared with their layer.
            link_layers: if direct { layers.as_slice() } else { &[] },
        })
        .collect();
    let can_chown = |u: u32, g: u32| (shared.opts.can_chown)(u, g);
    // Incremental COPY: a single copy from a context, written directly into
    // the new snapshot, starts from the previous snapshot of the same copy.
    let incremental_key =
        (direct && incremental_candidate(op, inputs)).then(|| super::cachekey::incremental_key(vertex, inputs));
    let previous = match &incremental_key {
        Some(key) => previous_copy(shared, key)?,
        None => None,
    };
    let checksums = store.checksum_cache();
    let content_sum = |path: &Path, stat: &fileop::incremental::StatKey| checksums.checksum_key(path, stat);
    let incremental = incremental_key
        .as_ref()
        .map(|_| fileop::incremental::Incremental::new(previous.as_ref().map(|(p, m)| (p.as_path(), m)), &content_sum));
    let ctx = FileOpContext {
        inputs: input_roots,
        dest_root: &dest_root,
        can_chown: &can_chown,
        incremental: incremental.as_ref(),
    };
    let mut size = None;
    for (slot, action) in actions.iter().enumerate() {
        if shared.is_cancelled() {
            return Err(step_error(vertex, StepError::Cancelled));
        }
        let selection = selections.iter().position(|(s, _)| *s == slot).map(|i| selections.swap_remove(i).1);
        size = fileop::apply_selected(action, &ctx, selection).map_err(|e| err(e.into()))?;
    }
    drop(ctx);
    // A single action that wrote the whole (empty) diff knows its size:
    // commit need not walk it again.
    if let (true, [_], Some(bytes)) = (direct, actions.as_slice(), size) {
        draft.set_size(bytes);
    }
    if let Some(inc) = incremental {
        let path = draft.path().join(fileop::incremental::MANIFEST_FILE);
        if let Err(source) = std::fs::write(&path, inc.into_manifest().as_bytes()) {
            return Err(err(StepError::Manifest { path, source }));
        }
    }
    if let Some(g) = dest_guard.take() {
        g.finish().map_err(|e| err(e.into()))?;
    }
    drop(dest_dir);
    drop(views);
    let id = draft.commit()?;
    chain.push(id);
    layers.push(None);
    if let Some(key) = &incremental_key {
        let created =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let record = rbuild_cache::store::CacheRecord {
            chain: chain.clone(),
            layers: layers.clone(),
            created,
            extra: Default::default(),
        };
        store.record(key, &record)?;
    }
    Ok(VertexResult::Snapshots { chain, layers })
}

/// Whether `op` can be an incremental copy: one COPY/ADD whose source is a
/// local context (whose files the stat-keyed checksum cache knows).
fn incremental_candidate(op: &FileOp, inputs: &[Finished]) -> bool {
    match op.actions.as_slice() {
        [FileAction::Copy { input, .. }] => {
            matches!(inputs.get(*input).map(|f| &f.result), Some(VertexResult::Directory(_)))
        }
        _ => false,
    }
}

/// The previous snapshot of the copy with this incremental key: its `diff`
/// directory (leased for this build, so a concurrent prune keeps it) and
/// manifest. Missing, pruned or without a manifest: `None`, a fresh copy.
fn previous_copy(
    shared: &Shared<'_>,
    key: &str,
) -> Result<Option<(PathBuf, fileop::incremental::Manifest)>, SolveError> {
    let Some(record) = shared.store.lookup(key)? else { return Ok(None) };
    let Some(id) = record.chain.last() else { return Ok(None) };
    shared.lease.add_snapshot(id)?;
    if !shared.store.has_snapshot(id) {
        return Ok(None);
    }
    let Some(manifest) = fileop::incremental::Manifest::load(&shared.store.snapshot_dir(id)) else {
        return Ok(None);
    };
    Ok(Some((shared.store.snapshot_diff(id), manifest)))
}

/// Whether a file op may write straight into the new snapshot's directory:
/// a single COPY whose destination does not exist in the base, below
/// ancestors that are real directories (a symlinked ancestor must be
/// followed, which only the overlay view does). On `true`, the existing
/// ancestors are created in `upper` with the base's mode, owner and mtime,
/// as overlayfs's copy-up would.
fn prepare_direct_copy(op: &FileOp, base_view: &Path, upper: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let [FileAction::Copy { dest, .. }] = op.actions.as_slice() else { return Ok(false) };
    let parts: Vec<&str> = dest.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Ok(false);
    }
    let mut existing = Vec::new();
    let mut path = base_view.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if i + 1 < parts.len() && meta.is_dir() => existing.push((parts[..=i].join("/"), meta)),
            // The destination itself exists, or an ancestor is a symlink or
            // a file: the overlay has to resolve it.
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    for (rel, meta) in existing {
        let dir = upper.join(&rel);
        std::fs::create_dir(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        let _ = std::os::unix::fs::lchown(&dir, Some(meta.uid()), Some(meta.gid()));
        let mtime = std::time::UNIX_EPOCH + std::time::Duration::new(meta.mtime() as u64, meta.mtime_nsec() as u32);
        let _ = std::fs::File::open(&dir).and_then(|f| f.set_modified(mtime));
    }
    Ok(true)
}

/// `ADD https://...` and `ADD git...`: fetched by the source provider into
/// a fresh snapshot.
pub(crate) fn run_remote_source(shared: &Shared<'_>, vertex: &Vertex) -> Result<VertexResult, SolveError> {
    let draft = shared.store.new_snapshot()?;
    let dir = draft.diff_dir();
    let outcome = match &vertex.op {
        Op::Source(SourceOp::Http { url, checksum, filename }) => {
            shared.source.fetch_http(url, checksum.as_deref(), &dir, filename).map_err(StepError::Source)
        }
        Op::Source(SourceOp::Git { remote, git_ref, subdir, keep_git_dir }) => {
            let checkout = dir.join(".checkout");
            shared.source.fetch_git(remote, git_ref, *keep_git_dir, &checkout).map_err(StepError::Source).and_then(
                |()| {
                    move_subdir(&checkout, subdir, &dir)
                        .map_err(|source| StepError::GitSubdir { subdir: subdir.clone(), source })
                },
            )
        }
        _ => unreachable!("run_remote_source is called for HTTP and git sources"),
    };
    outcome.map_err(|e| step_error(vertex, e))?;
    let id = draft.commit()?;
    Ok(VertexResult::Snapshots { chain: vec![id], layers: vec![None] })
}

/// Moves `checkout/subdir/*` to `dest/` and removes `checkout`.
fn move_subdir(checkout: &std::path::Path, subdir: &str, dest: &std::path::Path) -> std::io::Result<()> {
    // The repository is the Dockerfile author's: its links resolve inside
    // the checkout (which nothing else touches), never on the host.
    let from = checkout.join(crate::sandbox::canonical_in_root(checkout, subdir)?);
    for entry in std::fs::read_dir(&from)? {
        let entry = entry?;
        std::fs::rename(entry.path(), dest.join(entry.file_name()))?;
    }
    std::fs::remove_dir_all(checkout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ADD git...#ref:subdir` where the repository's `subdir` is a link to
    /// a host directory: the link resolves inside the checkout, and the
    /// host directory's files are neither moved nor read.
    #[test]
    fn a_git_subdir_link_cannot_move_host_files() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("id_ed25519"), "host key").unwrap();
        let dest = tempfile::tempdir().unwrap();
        let checkout = dest.path().join(".checkout");
        std::fs::create_dir_all(checkout.join("docs")).unwrap();
        std::fs::write(checkout.join("docs/readme"), "docs").unwrap();
        std::os::unix::fs::symlink(host.path(), checkout.join("sub")).unwrap();
        let err = move_subdir(&checkout, "sub", dest.path()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
        assert_eq!(std::fs::read_to_string(host.path().join("id_ed25519")).unwrap(), "host key");
        // A link inside the checkout works; `..` stays in it.
        std::fs::remove_file(checkout.join("sub")).unwrap();
        std::os::unix::fs::symlink("/docs", checkout.join("sub")).unwrap();
        move_subdir(&checkout, "../../sub", dest.path()).unwrap();
        assert_eq!(std::fs::read_to_string(dest.path().join("readme")).unwrap(), "docs");
        assert!(!checkout.exists());
    }
}
