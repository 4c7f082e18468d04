//! Cache keys: versioned, built from the op with input digests cleared, the
//! inputs' cache keys, and content checksums of the context files the op
//! reads (never paths alone). Once released, the format never changes.

use sha2::{Digest as _, Sha256};

use super::{Finished, Shared, StepError, VertexResult};
use crate::graph::{Digest, FileAction, MountKind, Op, Vertex, canonical_encoding};

/// Version tag of the cache-key format.
pub const CACHE_KEY_VERSION: &str = "rbuild.cachekey.v0";

/// The key of a vertex.
pub(crate) fn key(vertex: &Vertex, inputs: &[Finished], content: &[(usize, Digest)]) -> Digest {
    let mut h = Sha256::new();
    h.update(CACHE_KEY_VERSION.as_bytes());
    h.update([0]);
    h.update(canonical_encoding(&vertex.op, &[]));
    for input in inputs {
        h.update([1]);
        h.update(input.key.0);
    }
    for (slot, digest) in content {
        h.update([2]);
        h.update((*slot as u64).to_le_bytes());
        h.update(digest.0);
    }
    Digest(h.finalize().into())
}

/// Version tag of the incremental-COPY key format.
pub const INCREMENTAL_KEY_VERSION: &str = "rbuild.incremental.v0";

/// The key that finds the previous snapshot of the same COPY for an
/// incremental copy: the op and its inputs' keys like [`key`], but without
/// the content checksums, so it stays the same when the files change. Never
/// a cache hit by itself; tagged apart from cache keys (`incremental:`).
pub(crate) fn incremental_key(vertex: &Vertex, inputs: &[Finished]) -> String {
    let mut h = Sha256::new();
    h.update(INCREMENTAL_KEY_VERSION.as_bytes());
    h.update([0]);
    h.update(canonical_encoding(&vertex.op, &[]));
    for input in inputs {
        h.update([1]);
        h.update(input.key.0);
    }
    format!("incremental:{}", Digest(h.finalize().into()))
}

/// The key of a context source: its name and ignore rules. Its content
/// enters the keys of the ops that read it.
pub(crate) fn context_key(name: &str, exclude: &[String]) -> Digest {
    let mut h = Sha256::new();
    h.update(CACHE_KEY_VERSION.as_bytes());
    h.update(b"\0context\0");
    h.update(name.as_bytes());
    for e in exclude {
        h.update([0]);
        h.update(e.as_bytes());
    }
    Digest(h.finalize().into())
}

/// Checksums of the context content each action or mount of `vertex` reads,
/// tagged by action/mount slot.
/// The selections of an op's copies from contexts, by action slot.
pub(crate) type Selections = Vec<(usize, crate::fileop::Selection)>;

/// With them, the selections of the copies (by action slot), for the copy
/// to plan from should the step run.
pub(crate) fn content_checksums(
    shared: &Shared<'_>,
    vertex: &Vertex,
    inputs: &[Finished],
) -> Result<(Vec<(usize, Digest)>, Selections), StepError> {
    let mut out = Vec::new();
    let mut selections = Vec::new();
    let dir_of = |i: usize| match inputs.get(i).map(|f| &f.result) {
        Some(VertexResult::Directory(d)) => Some(d.clone()),
        _ => None,
    };
    match &vertex.op {
        Op::File(op) => {
            for (slot, action) in op.actions.iter().enumerate() {
                if let FileAction::Copy { input, src, allow_wildcard, exclude, .. } = action
                    && let Some(dir) = dir_of(*input)
                {
                    let (sum, selection) =
                        checksum_selection(&shared.store.checksum_cache(), &dir, src, *allow_wildcard, exclude)?;
                    out.push((slot, sum));
                    selections.push((slot, selection));
                }
            }
        }
        Op::Exec(exec) => {
            for (slot, mount) in exec.mounts.iter().enumerate() {
                if let (MountKind::Bind, Some(i)) = (&mount.kind, mount.input)
                    && let Some(dir) = dir_of(i)
                {
                    let src = if mount.selector.is_empty() { "/".to_string() } else { mount.selector.clone() };
                    out.push((slot, checksum_selection(&shared.store.checksum_cache(), &dir, &[src], false, &[])?.0));
                }
            }
        }
        _ => {}
    }
    Ok((out, selections))
}

/// Hash of the files a copy selects: relative path (its exact bytes: the
/// same as before for UTF-8 names, and distinct for names that differ only
/// in invalid UTF-8), type, mode and content checksum (from the stat-keyed
/// cache: an unchanged file costs a stat), and the selection it hashed.
fn checksum_selection(
    checksums: &rbuild_cache::store::ChecksumCache,
    dir: &super::ContextDir,
    src: &[String],
    allow_wildcard: bool,
    exclude: &[String],
) -> Result<(Digest, crate::fileop::Selection), StepError> {
    use std::os::unix::ffi::OsStrExt;
    let ignore = dir.ignore.clone();
    let mut selection = crate::fileop::select(&dir.root, src, allow_wildcard, exclude, Some(&*ignore))?;
    let entries = selection.entries();
    // Per-entry digests in parallel (a miss reads and hashes the file; a hit
    // costs nothing more than the walk's stat), combined in path order.
    use rayon::prelude::*;
    // Each entry's digest, and a file's content digest for the copy,
    // written into their slots: an indexed pass with no per-thread lists
    // concatenated afterwards (whose fresh pages were a tenth of this pass).
    let mut per_entry: Vec<([u8; 32], Option<[u8; 32]>)> = vec![([0; 32], None); entries.len()];
    per_entry.par_iter_mut().zip(entries.par_iter()).try_for_each(|(slot, (rel, stat))| {
        let stat = &stat.key;
        let read_err = |source| StepError::Checksum { path: std::path::Path::new(rel).display().to_string(), source };
        let mut h = Sha256::new();
        h.update(rel.as_bytes());
        h.update([0]);
        // The whole `st_mode`, file type bits included.
        h.update(stat.mode.to_le_bytes());
        let path = dir.root.join(std::path::Path::new(rel).strip_prefix("/").unwrap_or(std::path::Path::new(rel)));
        let mut content = None;
        match stat.mode & libc::S_IFMT {
            libc::S_IFREG => {
                let sum = checksums.checksum_key(&path, stat).map_err(read_err)?;
                // `sha256:<hex>`, without making a string of it.
                h.update(b"sha256:");
                h.update(hex(&sum));
                content = Some(sum);
            }
            libc::S_IFLNK => {
                let target = std::fs::read_link(&path).map_err(read_err)?;
                h.update(target.as_os_str().as_encoded_bytes());
            }
            _ => {}
        }
        *slot = (h.finalize().into(), content);
        Ok::<(), StepError>(())
    })?;
    let mut h = Sha256::new();
    for (d, _) in &per_entry {
        h.update(d);
    }
    let sums = per_entry.into_iter().map(|(_, content)| content).collect();
    selection.set_sums(sums);
    Ok((Digest(h.finalize().into()), selection))
}

/// Lowercase hex of a digest, as `sha256:<hex>` spells it.
fn hex(sum: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in sum.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    use super::*;

    /// The content checksum of a context is pinned: UTF-8 names hash as
    /// they always did (relative path bytes, NUL, mode, content digest), so
    /// cache entries written before names became bytes still hit; a name
    /// that is not UTF-8 hashes its own bytes, distinct from any other.
    #[test]
    fn context_checksums_are_pinned_and_names_are_bytes() {
        let t = tempfile::tempdir().unwrap();
        let store = rbuild_cache::store::Store::open(&t.path().join("store")).unwrap();
        let ctx = t.path().join("ctx");
        std::fs::create_dir_all(ctx.join("d")).unwrap();
        std::fs::write(ctx.join("d/a.txt"), "alpha\n").unwrap();
        std::fs::write(ctx.join("é.txt"), "utf8\n").unwrap();
        for p in ["d", "d/a.txt", "é.txt"] {
            let mode = if p == "d" { 0o755 } else { 0o644 };
            std::fs::set_permissions(ctx.join(p), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let dir = |root: &std::path::Path| super::super::ContextDir {
            root: root.to_path_buf(),
            ignore: Arc::new(|_: &str| false),
        };
        let sum = |root: &std::path::Path| {
            checksum_selection(&store.checksum_cache(), &dir(root), &[".".into()], true, &[]).unwrap().0.to_string()
        };
        // The formula, written out independently of the code under test.
        let entry = |rel: &str, mode: u32, content: Option<&str>| -> [u8; 32] {
            let mut h = Sha256::new();
            h.update(rel.as_bytes());
            h.update([0]);
            h.update(mode.to_le_bytes());
            if let Some(c) = content {
                h.update(Digest(Sha256::digest(c.as_bytes()).into()).to_string().as_bytes());
            }
            h.finalize().into()
        };
        let mut h = Sha256::new();
        h.update(entry("d", 0o40755, None));
        h.update(entry("d/a.txt", 0o100644, Some("alpha\n")));
        h.update(entry("é.txt", 0o100644, Some("utf8\n")));
        let want = Digest(h.finalize().into()).to_string();
        assert_eq!(sum(&ctx), want);
        assert_eq!(want, "sha256:01784c4c0cb5af12c60ea09c99d795759e9f27734261816f7923d0752a5d8c03");
        // Two names that differ only in invalid UTF-8 bytes differ.
        let a = t.path().join("a");
        let b = t.path().join("b");
        for (root, name) in [(&a, &b"n\xfe"[..]), (&b, &b"n\xff"[..])] {
            std::fs::create_dir_all(root).unwrap();
            std::fs::write(root.join(std::ffi::OsStr::from_bytes(name)), "same\n").unwrap();
            std::fs::set_permissions(
                root.join(std::ffi::OsStr::from_bytes(name)),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
        }
        assert_ne!(sum(&a), sum(&b));
    }
}
