//! Running file ops (COPY/ADD/WORKDIR/heredoc files) and remote sources
//! (ADD of URLs and git repositories) into new snapshots.

use std::path::{Path, PathBuf};

use super::scratch::{ChainView, ScratchDir};
use super::{Finished, Shared, SolveError, VertexResult, chain_of, step_error};
use crate::fileop::{self, FileOpContext, InputRoot};
use crate::graph::{Chown, FileAction, FileOp, Op, SourceOp, Vertex};
use crate::sandbox::{self, MountGuard};

pub(crate) fn run(
    shared: &Shared<'_>,
    vertex: &Vertex,
    op: &FileOp,
    inputs: &[Finished],
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
    let draft = store.new_snapshot()?;
    let mut views: Vec<ChainView> = Vec::new();
    let err = |e: String| step_error(vertex, e);

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
                let view =
                    ChainView::mount(store, &input_chain, "src").map_err(setup_error(vertex, "mounting an input"))?;
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
        Some((view, _)) => prepare_direct_copy(op, view, &draft.diff_dir())
            .map_err(setup_error(vertex, "preparing the destination"))?,
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
                let owner = fileop::resolve_owner(c, view)
                    .map_err(|source| SolveError::File { name: vertex.meta.description.clone(), source })?;
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
        let view = dest_dir.insert(
            ScratchDir::new(store.root(), "dest").map_err(setup_error(vertex, "creating the destination view"))?,
        );
        let lowers: Vec<PathBuf> = chain.iter().map(|id| store.snapshot_diff(id)).collect();
        let (upper, work) = (draft.diff_dir(), draft.work_dir());
        dest_guard = Some(
            sandbox::mount_overlay(&lowers, Some((&upper, &work)), view.path())
                .map_err(setup_error(vertex, "mounting the destination overlay"))?,
        );
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
            exclude: ignore.as_ref().map(|f| &**f as &dyn Fn(&str) -> bool),
            // Context files arrive owned by root, as BuildKit's file sync resets them.
            reset_owner: ignore.is_some(),
            // Writing straight into the new snapshot (same file system as
            // the store): unchanged files are shared with their layer.
            link_layers: if direct { layers.as_slice() } else { &[] },
        })
        .collect();
    let can_chown = |u: u32, g: u32| (shared.opts.can_chown)(u, g);
    let ctx = FileOpContext { inputs: input_roots, dest_root: &dest_root, can_chown: &can_chown };
    for action in actions.iter() {
        if shared.is_cancelled() {
            return Err(step_error(vertex, "cancelled"));
        }
        fileop::apply(action, &ctx)
            .map_err(|source| SolveError::File { name: vertex.meta.description.clone(), source })?;
    }
    drop(ctx);
    if let Some(g) = dest_guard.take() {
        g.finish().map_err(|e| {
            let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
            err(format!("{e}{cause}"))
        })?;
    }
    drop(dest_dir);
    drop(views);
    let id = draft.commit()?;
    chain.push(id);
    layers.push(None);
    Ok(VertexResult::Snapshots { chain, layers })
}

/// Maps a set-up failure of `vertex` to [`SolveError::Setup`], keeping it
/// as the source.
fn setup_error<'v, E: std::error::Error + Send + Sync + 'static>(
    vertex: &'v Vertex,
    what: &'static str,
) -> impl FnOnce(E) -> SolveError + 'v {
    move |e| SolveError::Setup { name: vertex.meta.description.clone(), what, source: Box::new(e) }
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
            shared.source.fetch_http(url, checksum.as_deref(), &dir, filename)
        }
        Op::Source(SourceOp::Git { remote, git_ref, subdir, keep_git_dir }) => {
            let checkout = dir.join(".checkout");
            shared
                .source
                .fetch_git(remote, git_ref, *keep_git_dir, &checkout)
                .and_then(|()| move_subdir(&checkout, subdir, &dir).map_err(|e| format!("git subdir `{subdir}`: {e}")))
        }
        _ => Err("not a remote source".into()),
    };
    outcome.map_err(|e| step_error(vertex, e))?;
    let id = draft.commit()?;
    Ok(VertexResult::Snapshots { chain: vec![id], layers: vec![None] })
}

/// Moves `checkout/subdir/*` to `dest/` and removes `checkout`.
fn move_subdir(checkout: &std::path::Path, subdir: &str, dest: &std::path::Path) -> std::io::Result<()> {
    let from = super::exec::resolve_selector(checkout, subdir);
    for entry in std::fs::read_dir(&from)? {
        let entry = entry?;
        std::fs::rename(entry.path(), dest.join(entry.file_name()))?;
    }
    std::fs::remove_dir_all(checkout)
}
