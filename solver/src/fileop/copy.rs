//! The COPY/ADD engine.
//!
//! A copy runs in two phases. Planning walks the sources (sorted, as fsutil's
//! `ReadDir` does) and records one [`Entry`] per path to create, noting
//! hard-link groups by (device, inode); entries name their paths below a
//! base pair of directories ([`Bases`]). Execution creates the directories in
//! order, then materialises files, symlinks and fifos in parallel with rayon
//! (each file is open/`copy_file_range`/`fchown`/`fchmod`/`futimens` on file
//! descriptors, no path lookups beyond the two opens), then hard links, then
//! sets directory metadata bottom-up so that creating children does not
//! disturb the directories' mtimes.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rayon::prelude::*;

use super::chmod::Chmod;
use super::incremental::{Incremental, SourceStat, StatKey};
use super::leaves::{LayerLinks, Materialize, RUN_LEN};
use super::path::{
    clean_rel, go_lossy, join_bytes, join_slash, resolve_bytes_in_root, resolve_in_root, root_path, root_path_bytes,
};
use super::pattern::{go_match, has_wildcard};
use super::{FileOpError, InputRoot, Owner, archive, check_owner, mkdir_all, set_owner_path, set_times_path};
use crate::dockerignore::PatternMatcher;

/// A COPY/ADD action with its options resolved.
pub(super) struct CopySpec<'a, 'b> {
    pub input: &'a InputRoot<'b>,
    pub src: &'a [String],
    pub dest: &'a str,
    pub owner: Option<Owner>,
    pub chmod: Option<Chmod>,
    pub allow_wildcard: bool,
    pub allow_empty_wildcard: bool,
    pub unpack: bool,
    pub parents: bool,
    pub exclude: PatternMatcher,
    pub dest_root: &'a Path,
    pub can_chown: &'a dyn Fn(u32, u32) -> bool,
    pub incremental: Option<&'a Incremental<'a>>,
}

/// One wildcard match. Relative paths are byte-exact (names need not be
/// UTF-8); patterns see them through [`go_lossy`].
pub(super) struct Match {
    /// Host path (the match itself is not followed).
    pub path: PathBuf,
    /// Slash path relative to where the glob started.
    pub rel: Vec<u8>,
    /// Slash path relative to the pattern's wildcard-free prefix.
    pub base_rel: Vec<u8>,
}

/// Expands `pattern` (clean, relative) under the directory `start`, one
/// component at a time with Go's `filepath.Match`. The wildcard-free prefix
/// is resolved inside `start`'s root first; symlinked directories met while
/// matching are not descended (as `filepath.Walk`). Matches are in lexical
/// order. `ignore` sees paths relative to `start`.
pub(super) fn glob(
    start: &Path,
    pattern: &str,
    ignore: Option<&(dyn Fn(&str) -> bool + Sync)>,
) -> Result<Vec<Match>, FileOpError> {
    let comps: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let split = comps.iter().position(|c| has_wildcard(c)).unwrap_or(comps.len());
    let prefix = comps[..split].join("/");
    let prefix_parts = resolve_in_root(start, &prefix, true)
        .map_err(|source| FileOpError::Resolve { path: pattern.into(), source })?;
    let mut dir = start.to_path_buf();
    dir.extend(&prefix_parts);
    let mut level = vec![(dir, join_slash(&prefix_parts), Vec::new())];
    let rest = &comps[split..];
    for (i, comp) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        let mut next = Vec::new();
        for (d, rel, base_rel) in &level {
            let mut names: Vec<OsString> = match fs::read_dir(d) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
                Err(_) => continue,
            };
            names.sort();
            for name in names {
                let n = name.as_bytes();
                if !go_match(comp, &go_lossy(n)).map_err(|_| FileOpError::BadPattern { pattern: pattern.into() })? {
                    continue;
                }
                let rel = join_bytes(rel, n);
                if ignore.is_some_and(|f| f(&go_lossy(&rel))) {
                    continue;
                }
                let p = d.join(&name);
                if !last && !fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                    continue;
                }
                next.push((p, rel, join_bytes(base_rel, n)));
            }
        }
        level = next;
    }
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    Ok(level.into_iter().map(|(path, rel, base_rel)| Match { path, rel, base_rel }).collect())
}

/// A source after wildcard expansion and symlink resolution. Slash paths
/// are byte-exact.
struct Source {
    /// Unresolved slash path relative to the pivot (the root unless
    /// `--parents` with `/./`): what `--parents` recreates at the dest.
    name: Vec<u8>,
    /// Host path of the pivot.
    pivot: PathBuf,
    /// Resolved host path.
    path: PathBuf,
    /// Resolved slash path relative to the input root.
    rel: Vec<u8>,
    /// `lstat` of the resolved path.
    meta: Metadata,
}

fn expand(
    input: &InputRoot,
    src: &[String],
    allow_wildcard: bool,
    allow_empty_wildcard: bool,
    parents: bool,
    exclude: &PatternMatcher,
) -> Result<Vec<Source>, FileOpError> {
    let root = input.root;
    let ignored = |rel: &[u8]| !rel.is_empty() && input.exclude.is_some_and(|f| f(&go_lossy(rel)));
    let mut out = Vec::new();
    for s in src {
        let (pivot_s, pat) = match s.split_once("/./") {
            Some((a, b)) if parents => (a, b),
            _ => ("", s.as_str()),
        };
        let resolve_err = |source| FileOpError::Resolve { path: s.clone(), source };
        let pivot_parts = resolve_in_root(root, pivot_s, true).map_err(resolve_err)?;
        let pivot_rel = join_slash(&pivot_parts);
        let mut pivot = root.to_path_buf();
        pivot.extend(&pivot_parts);
        let pat = clean_rel(pat);
        let names: Vec<Vec<u8>> = if allow_wildcard && has_wildcard(&pat) {
            let ign = |rel: &str| ignored(&join_bytes(&pivot_rel, rel.as_bytes()));
            let matches = glob(&pivot, &pat, Some(&ign))?;
            let mut names = Vec::new();
            for m in matches {
                let is_dir = fs::symlink_metadata(&m.path).is_ok_and(|md| md.is_dir());
                let exclude_rel = if parents { &m.rel } else { &m.base_rel };
                if !exclude.excludes_entry(&go_lossy(exclude_rel), is_dir) {
                    names.push(m.rel);
                }
            }
            if names.is_empty() {
                if allow_empty_wildcard {
                    continue;
                }
                return Err(FileOpError::NotFound { path: s.clone() });
            }
            names
        } else {
            vec![pat.into_bytes()]
        };
        for name in names {
            let full = join_bytes(&pivot_rel, &name);
            let parts = resolve_bytes_in_root(root, &full, true).map_err(resolve_err)?;
            let rel = join_slash(&parts);
            // Ignored paths never reach the builder in BuildKit (the context
            // transfer filters them), so they are simply absent.
            if ignored(&full) || ignored(&rel) {
                return Err(FileOpError::NotFound { path: s.clone() });
            }
            let mut path = root.to_path_buf();
            path.extend(&parts);
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
                    return Err(FileOpError::NotFound { path: s.clone() });
                }
                Err(source) => return Err(FileOpError::ReadSource { path, source }),
            };
            out.push(Source { name, pivot: pivot.clone(), path, rel, meta });
        }
    }
    Ok(out)
}

/// One entry of a walk: host path, `lstat`, and its slash paths (byte-exact)
/// relative to the input root and to the copied directory.
struct Walked {
    path: PathBuf,
    meta: Metadata,
    root_rel: Vec<u8>,
    copy_rel: Vec<u8>,
}

/// Lists `dir`'s tree depth-first in name order (a directory before its
/// contents), without the ignored or excluded entries (an excluded
/// directory is not descended), each entry passed through `map`.
///
/// The subtrees of `dir`'s entries are walked in parallel (rayon) and
/// concatenated in order: the time of a walk over many files goes into
/// `getdents` and `statx`, and a context's files are usually spread over
/// several directories. Only the results are held, not the tree. Each
/// subtree is walked iteratively: a context with thousands of nested
/// directories overflowed the stack when this recursed once per level.
fn walk<T: Send>(
    dir: &Path,
    root_rel: &[u8],
    copy_rel: &[u8],
    ignore: Option<&(dyn Fn(&str) -> bool + Sync)>,
    exclude: &PatternMatcher,
    map: &(dyn Fn(Walked) -> T + Sync),
) -> Result<Vec<Vec<T>>, FileOpError> {
    let read = |dir: &Path, root_rel: &[u8], copy_rel: &[u8]| -> Result<Vec<Walked>, FileOpError> {
        let rerr = |source| FileOpError::ReadSource { path: dir.to_path_buf(), source };
        let mut ents: Vec<fs::DirEntry> = fs::read_dir(dir).map_err(rerr)?.collect::<Result<_, _>>().map_err(rerr)?;
        ents.sort_by_key(|e| e.file_name());
        let mut out = Vec::with_capacity(ents.len());
        for e in ents {
            let name = e.file_name();
            let rrel = join_bytes(root_rel, name.as_bytes());
            if ignore.is_some_and(|f| f(&go_lossy(&rrel))) {
                continue;
            }
            let meta = e.metadata().map_err(|source| FileOpError::ReadSource { path: e.path(), source })?;
            let crel = join_bytes(copy_rel, name.as_bytes());
            if !exclude.is_empty() && exclude.excludes_entry(&go_lossy(&crel), meta.is_dir()) {
                continue;
            }
            out.push(Walked { path: e.path(), meta, root_rel: rrel, copy_rel: crel });
        }
        Ok(out)
    };
    // One entry of `dir` and everything below it, in pre-order.
    let subtree = |top: Walked| -> Result<Vec<T>, FileOpError> {
        let mut out = Vec::new();
        // Pending entries, the next one last.
        let mut pending = vec![top];
        while let Some(w) = pending.pop() {
            let below = if w.meta.is_dir() { Some(read(&w.path, &w.root_rel, &w.copy_rel)?) } else { None };
            out.push(map(w));
            if let Some(children) = below {
                pending.extend(children.into_iter().rev());
            }
        }
        Ok(out)
    };
    let top = read(dir, root_rel, copy_rel)?;
    let parts: Vec<Result<Vec<T>, FileOpError>> = if top.iter().filter(|w| w.meta.is_dir()).count() > 1 {
        top.into_par_iter().map(subtree).collect()
    } else {
        top.into_iter().map(subtree).collect()
    };
    // In parts (one per entry of `dir`), not concatenated: a caller that
    // consumes them in order with `flatten` frees each part as it goes, so
    // the whole listing is never held twice.
    parts.into_iter().collect()
}

/// See [`super::selected_files`].
pub(super) fn selected(
    input: &InputRoot,
    src: &[String],
    allow_wildcard: bool,
    exclude: &PatternMatcher,
) -> Result<Vec<OsString>, FileOpError> {
    Ok(selected_with_meta(input, src, allow_wildcard, exclude)?.entries.into_iter().map(|(p, _)| p).collect())
}

/// An entry's `lstat` as a walk took it: what the cache key hashes (its
/// stat key) and what a copy plans from ([`planned_entry`]). Compact, not
/// the whole `Metadata`: a selection of 200,000 files is held at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryStat {
    /// Size, mtime, inode and `st_mode` (file type included).
    pub key: StatKey,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Whether a regular file has other links (its group is (`dev`, inode)).
    pub multi_link: bool,
    /// `st_dev`.
    pub dev: u64,
    /// `st_rdev` (devices).
    pub rdev: u64,
    /// atime (seconds, nanoseconds).
    pub atime: (i64, i64),
    /// mtime (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// ctime (seconds, nanoseconds).
    pub ctime: (i64, i64),
}

impl EntryStat {
    /// The stat of an entry's `symlink_metadata`.
    pub fn of(meta: &Metadata) -> EntryStat {
        EntryStat {
            key: StatKey::of(meta),
            uid: meta.uid(),
            gid: meta.gid(),
            multi_link: meta.nlink() > 1,
            dev: meta.dev(),
            rdev: meta.rdev(),
            atime: (meta.atime(), meta.atime_nsec()),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// See [`super::select`].
pub struct Selection {
    /// Relative slash paths (sorted by bytes, de-duplicated) and stats.
    pub(super) entries: Vec<(OsString, EntryStat)>,
    /// When the selection is exactly the tree of one directory source:
    /// that source's resolved slash path relative to the input root.
    tree: Option<Vec<u8>>,
    /// Content digests of the regular files, in entry order (empty: not
    /// known).
    sums: Vec<Option<[u8; 32]>>,
}

impl Selection {
    /// The selected entries: relative slash paths, sorted by bytes, with
    /// their walk's stat.
    pub fn entries(&self) -> &[(OsString, EntryStat)] {
        &self.entries
    }

    /// Gives the content digest of each entry ([`Selection::entries`]
    /// order; `None` but for regular files) that the cache key took, so a
    /// copy planned from the selection records them without asking the
    /// checksum cache again. Ignored unless there is one per entry.
    pub fn set_sums(&mut self, mut sums: Vec<Option<[u8; 32]>>) {
        if sums.len() == self.entries.len() {
            // Held until the copy: not with the room of what it came from.
            sums.shrink_to_fit();
            self.sums = sums;
        }
    }
}

/// [`selected`] with each entry's stat from the walk, so callers that
/// need it (cache keys) do not stat every file a second time, and a copy
/// of the same selection need not walk the tree again.
pub(super) fn selected_with_meta(
    input: &InputRoot,
    src: &[String],
    allow_wildcard: bool,
    exclude: &PatternMatcher,
) -> Result<Selection, FileOpError> {
    let mut out = Vec::new();
    // An empty wildcard selects nothing (BuildKit's checksum of no paths);
    // whether it is an error is the copy's own decision at execution.
    let sources = expand(input, src, allow_wildcard, true, false, exclude)?;
    let tree = match sources.as_slice() {
        [s] if s.meta.is_dir() => Some(s.rel.clone()),
        _ => None,
    };
    for s in sources {
        if !s.rel.is_empty() {
            out.push((OsStr::from_bytes(&s.rel).to_os_string(), EntryStat::of(&s.meta)));
        }
        if s.meta.is_dir() {
            let parts = walk(&s.path, &s.rel, b"", input.exclude, exclude, &|w| {
                (OsString::from_vec(w.root_rel), EntryStat::of(&w.meta))
            })?;
            // Reserved once: growing by doubling held the old and the new
            // buffer at once.
            out.reserve(parts.iter().map(Vec::len).sum());
            out.extend(parts.into_iter().flatten());
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup_by(|a, b| a.0 == b.0);
    Ok(Selection { entries: out, tree, sums: Vec::new() })
}

/// Performs a COPY/ADD. Returns the bytes of the non-directories it
/// created (each path counted, as [`rbuild_cache::fsutil::tree_size`]
/// counts them) when that is known exactly: one source, no archive
/// extracted (several sources may overwrite each other's files).
///
/// `selection`: the same copy's [`Selection`], taken for its cache key a
/// moment before; when it is the tree of this copy's one directory
/// source, the copy is planned from it instead of walking the tree a
/// second time (the walk was an eighth of a cold `COPY src/` of 20,000
/// files), and copies exactly the entries the key was computed from.
pub(super) fn copy(spec: &CopySpec, selection: Option<Selection>) -> Result<Option<u64>, FileOpError> {
    let sources =
        expand(spec.input, spec.src, spec.allow_wildcard, spec.allow_empty_wildcard, spec.parents, &spec.exclude)?;
    if sources.is_empty() {
        return Ok(Some(0));
    }
    let mut selection = selection.filter(|sel| match (sources.as_slice(), &sel.tree) {
        ([s], Some(tree)) => s.meta.is_dir() && s.rel == *tree,
        _ => false,
    });
    let mut bytes = (sources.len() == 1).then_some(0u64);
    let dest_clean = clean_rel(spec.dest);
    let dest_is_dir = spec.dest.ends_with('/') || spec.dest.ends_with("/.") || dest_clean.is_empty();
    // Docker counts sources after wildcard expansion (so `*.txt` matching
    // one file may still go to a file name).
    if sources.len() > 1 && !dest_is_dir && !spec.parents {
        return Err(FileOpError::DestNotDir { cmd: if spec.unpack { "ADD" } else { "COPY" } });
    }
    let resolve = |p: &str| {
        root_path(spec.dest_root, p, true).map_err(|source| FileOpError::Resolve { path: spec.dest.into(), source })
    };
    // fsutil's Copy: make the destination (or its parent) like `mkdir -p`,
    // mode 0755, owned by the --chown user.
    let ensure =
        if dest_is_dir { dest_clean.clone() } else { dest_clean.rsplit_once('/').map_or("", |(d, _)| d).to_string() };
    mkdir_all(&resolve(&ensure)?, 0o755, spec.owner)?;
    let dest = resolve(&dest_clean)?;
    for s in &sources {
        let mut plan = Plan { spec, bases: Bases::default(), entries: Vec::new(), inodes: HashMap::new() };
        if spec.unpack && s.meta.is_file() && archive::is_archive(&s.path) {
            mkdir_all(&dest, 0o755, spec.owner)?;
            archive::extract(&s.path, &dest, spec.owner, spec.can_chown)?;
            bytes = None;
            continue;
        }
        if spec.parents {
            // Recreate the source's directories below the pivot, with the
            // source directories' metadata (fsutil's createParentDirs).
            let comps: Vec<&[u8]> = s.name.split(|b| *b == b'/').filter(|c| !c.is_empty()).collect();
            let mut src_dir = s.pivot.clone();
            for (i, c) in comps.iter().enumerate() {
                src_dir.push(OsStr::from_bytes(c));
                let dst = root_path_bytes(
                    spec.dest_root,
                    &join_bytes(dest_clean.as_bytes(), &comps[..=i].join(&b'/')),
                    false,
                )
                .map_err(|source| FileOpError::Resolve { path: spec.dest.into(), source })?;
                if i + 1 < comps.len() {
                    let meta = fs::metadata(&src_dir)
                        .map_err(|source| FileOpError::ReadSource { path: src_dir.clone(), source })?;
                    plan.push(&src_dir, &meta, dst);
                } else {
                    plan.push(&s.path, &s.meta, dst.clone());
                    if s.meta.is_dir() {
                        plan.walk_into(s, &dst, selection.take())?;
                    }
                }
            }
            if comps.is_empty() && s.meta.is_dir() {
                plan.walk_into(s, &dest, selection.take())?;
            }
        } else if s.meta.is_dir() {
            // A directory's contents go into the destination; the
            // destination directory itself keeps the 0755 it was made with.
            match fs::metadata(&dest) {
                Ok(m) if !m.is_dir() => return Err(FileOpError::CopyToNonDir { path: dest }),
                Ok(_) => {}
                Err(_) => mkdir_all(&dest, 0o755, spec.owner)?,
            }
            plan.walk_into(s, &dest, selection.take())?;
        } else {
            let target = if fs::metadata(&dest).is_ok_and(|m| m.is_dir()) {
                let base = s.name.rsplit(|b| *b == b'/').next().unwrap_or(&s.name);
                dest.join(OsStr::from_bytes(base))
            } else {
                dest.clone()
            };
            plan.push(&s.path, &s.meta, target);
        }
        plan.execute()?;
        if let Some(b) = &mut bytes {
            *b += plan.entries.iter().filter(|e| !matches!(e.kind, Kind::Dir)).map(|e| e.size).sum::<u64>();
        }
    }
    Ok(bytes)
}

/// What an entry is.
pub(super) enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Device {
        rdev: u64,
        block: bool,
    },
    /// A hard link to the file entry at this index.
    Link(usize),
}

/// The (source, destination) host directory pairs a plan's entries are
/// below. Full host paths per entry were most of a large copy's memory (a
/// source and a destination path of ~60 and ~100 bytes for each of 200,000
/// files, held at once): a walk's entries share their walk's pair and keep
/// only their path below it, and full paths are made when needed.
#[derive(Default)]
pub(super) struct Bases(Vec<(PathBuf, PathBuf)>);

impl Bases {
    /// Adds a pair; entries below it name it by the returned index.
    fn add(&mut self, src: PathBuf, dst: PathBuf) -> u32 {
        self.0.push((src, dst));
        (self.0.len() - 1) as u32
    }

    fn pair(&self, e: &Entry) -> &(PathBuf, PathBuf) {
        &self.0[e.base as usize]
    }

    /// The entry's source host path.
    pub fn src(&self, e: &Entry) -> PathBuf {
        below(&self.pair(e).0, &e.rel)
    }

    /// The entry's destination host path.
    pub fn dst(&self, e: &Entry) -> PathBuf {
        below(&self.pair(e).1, &e.rel)
    }

    /// The source's last component (every leaf has one).
    pub fn src_name<'e>(&'e self, e: &'e Entry) -> &'e OsStr {
        last_name(&self.pair(e).0, &e.rel)
    }

    /// The destination's last component.
    pub fn dst_name<'e>(&'e self, e: &'e Entry) -> &'e OsStr {
        last_name(&self.pair(e).1, &e.rel)
    }

    /// The directories holding the entry's source and destination.
    pub fn parents(&self, e: &Entry) -> (PathBuf, PathBuf) {
        let (src, dst) = self.pair(e);
        match e.rel.iter().rposition(|b| *b == b'/') {
            Some(i) => (below(src, &e.rel[..i]), below(dst, &e.rel[..i])),
            None if e.rel.is_empty() => (parent_or_self(src), parent_or_self(dst)),
            None => (src.clone(), dst.clone()),
        }
    }

    /// Whether two entries below one pair read from one directory and
    /// write into one.
    pub fn same_dirs(&self, a: &Entry, b: &Entry) -> bool {
        let dir = |e: &Entry| e.rel.iter().rposition(|c| *c == b'/').map_or(0, |i| i);
        a.base == b.base && !a.rel.is_empty() && !b.rel.is_empty() && a.rel[..dir(a)] == b.rel[..dir(b)]
    }
}

/// `base/rel` (`base` itself for an empty `rel`).
fn below(base: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() { base.to_path_buf() } else { base.join(OsStr::from_bytes(rel)) }
}

fn last_name<'p>(base: &'p Path, rel: &'p [u8]) -> &'p OsStr {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => OsStr::from_bytes(&rel[i + 1..]),
        None if rel.is_empty() => base.file_name().unwrap_or(base.as_os_str()),
        None => OsStr::from_bytes(rel),
    }
}

fn parent_or_self(p: &Path) -> PathBuf {
    p.parent().unwrap_or(p).to_path_buf()
}

/// One path to create.
pub(super) struct Entry {
    /// Index of its pair in the plan's [`Bases`].
    pub base: u32,
    /// Slash path below that pair (empty: the pair's paths themselves).
    pub rel: Box<[u8]>,
    pub kind: Kind,
    pub mode: u32,
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    /// The planning `lstat`'s stat key and ctime, for an incremental copy:
    /// its source digest comes from the stat-keyed checksum cache without a
    /// second `lstat`, and an unchanged ctime tells it the source's xattrs
    /// did not change since the previous copy read them.
    pub stat: SourceStat,
}

/// A non-directory entry with its decided owner and mode.
pub(super) type Leaf<'e> = (&'e Entry, (u32, u32), u32);

struct Plan<'s, 'a, 'b> {
    spec: &'s CopySpec<'a, 'b>,
    bases: Bases,
    entries: Vec<Entry>,
    /// (dev, ino) of multiply-linked files -> entry index.
    inodes: HashMap<(u64, u64), usize>,
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// The plan entry for the source at `rel` below the pair `base` (with its
/// `lstat`), and the (dev, inode) of a file with several links; `None` for
/// a socket (which cannot be copied; fsutil skips them too).
fn planned_entry(base: u32, rel: Box<[u8]>, st: &EntryStat) -> Option<(Entry, Option<(u64, u64)>)> {
    let mut inode = None;
    let kind = match st.key.mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFREG => {
            if st.multi_link {
                inode = Some((st.dev, st.key.ino));
            }
            Kind::File
        }
        libc::S_IFLNK => Kind::Symlink,
        libc::S_IFIFO => Kind::Fifo,
        fmt @ (libc::S_IFCHR | libc::S_IFBLK) => Kind::Device { rdev: st.rdev, block: fmt == libc::S_IFBLK },
        _ => return None,
    };
    let entry = Entry {
        base,
        rel,
        kind,
        mode: st.key.mode & 0o7777,
        size: st.key.size,
        uid: st.uid,
        gid: st.gid,
        atime: time(st.atime.0, st.atime.1),
        mtime: time(st.mtime.0, st.mtime.1),
        stat: SourceStat { key: st.key, mtime: st.mtime, ctime: st.ctime, sum: None },
    };
    Some((entry, inode))
}

impl Plan<'_, '_, '_> {
    fn push(&mut self, src: &Path, meta: &Metadata, dst: PathBuf) {
        let base = self.bases.add(src.to_path_buf(), dst);
        if let Some(planned) = planned_entry(base, Box::default(), &EntryStat::of(meta)) {
            self.push_planned(planned);
        }
    }

    /// Adds an entry, turning a file into a link to the first entry of its
    /// hard-link group (in walk order).
    fn push_planned(&mut self, (mut entry, inode): (Entry, Option<(u64, u64)>)) {
        if let Some(inode) = inode {
            match self.inodes.get(&inode) {
                Some(&i) => entry.kind = Kind::Link(i),
                None => {
                    self.inodes.insert(inode, self.entries.len());
                }
            }
        }
        self.entries.push(entry);
    }

    /// Plans the tree of the directory source `s` into `dst`: from the
    /// selection of the same tree when there is one (see [`copy`]),
    /// otherwise walking it.
    fn walk_into(&mut self, s: &Source, dst: &Path, selection: Option<Selection>) -> Result<(), FileOpError> {
        let spec = self.spec;
        let base = self.bases.add(s.path.clone(), dst.to_path_buf());
        if let Some(sel) = selection {
            // Sorted by bytes rather than in walk order: parents still come
            // before their contents (a prefix sorts first), which is all
            // the plan's order has to give (directories made before their
            // entries, their metadata set after); which path of a
            // hard-link group is written first does not show in the
            // snapshot, whose files are then one inode either way.
            self.entries.reserve(sel.entries.len());
            let mut sums = sel.sums.into_iter();
            for (path, st) in sel.entries {
                let sum = sums.next().flatten();
                let path = path.into_vec();
                let rel = if s.rel.is_empty() {
                    &path[..]
                } else {
                    // The source itself is planned by the caller.
                    match path.strip_prefix(&s.rel[..]).and_then(|r| r.strip_prefix(b"/")) {
                        Some(r) => r,
                        None => continue,
                    }
                };
                if let Some(mut planned) = planned_entry(base, rel.into(), &st) {
                    planned.0.stat.sum = sum;
                    self.push_planned(planned);
                }
            }
            return Ok(());
        }
        // Entries are made on the walk's threads: only the compact plan is
        // held for the whole tree, not every entry's `Metadata` or paths.
        let walked = walk(&s.path, &s.rel, b"", spec.input.exclude, &spec.exclude, &|w| {
            planned_entry(base, w.copy_rel.into_boxed_slice(), &EntryStat::of(&w.meta))
        })?;
        self.entries.reserve(walked.iter().map(Vec::len).sum());
        for planned in walked.into_iter().flatten().flatten() {
            self.push_planned(planned);
        }
        Ok(())
    }

    fn owner(&self, e: &Entry) -> (u32, u32) {
        match self.spec.owner {
            Some(o) => (o.uid, o.gid),
            None if self.spec.input.reset_owner => (0, 0),
            None => (e.uid, e.gid),
        }
    }

    fn mode(&self, e: &Entry, is_dir: bool) -> u32 {
        self.spec.chmod.as_ref().map_or(e.mode, |c| c.apply(e.mode, is_dir))
    }

    fn execute(&self) -> Result<(), FileOpError> {
        // Every owner is checked before anything is written: an entry the
        // sandbox cannot give its owner (a stage file owned by an id
        // outside the subordinate range) fails the copy.
        for e in &self.entries {
            let (uid, gid) = self.owner(e);
            let shown = || {
                let src = self.bases.src(e);
                Path::new("/").join(src.strip_prefix(self.spec.input.root).unwrap_or(&src)).display().to_string()
            };
            check_owner(shown, uid, gid, self.spec.can_chown)?;
        }
        for e in &self.entries {
            if let Kind::Dir = e.kind {
                let dst = self.bases.dst(e);
                match fs::create_dir(&dst) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                        if !fs::symlink_metadata(&dst).is_ok_and(|m| m.is_dir()) {
                            return Err(FileOpError::CopyToNonDir { path: dst });
                        }
                    }
                    Err(source) => return Err(FileOpError::CreateDir { path: dst, source }),
                }
            }
        }
        // Ownership and mode are decided here, serially: the caller's hooks
        // need not be `Sync`, and the workers then touch only plain data.
        // Sized once: collected from a filter, the list grew by doubling,
        // each regrowth faulting in fresh pages (15 ms of a 0.38 s copy of
        // 20,000 files, with the workers idle).
        let mut leaves: Vec<Leaf> = Vec::with_capacity(self.entries.len());
        leaves.extend(
            self.entries
                .iter()
                .filter(|e| !matches!(e.kind, Kind::Dir | Kind::Link(_)))
                .map(|e| (e, self.owner(e), self.mode(e, false))),
        );
        if let Some(inc) = self.spec.incremental {
            // Room for every file's record at once: grown by doubling under
            // its lock, the list stalled the other workers on each regrowth.
            inc.reserve(leaves.iter().filter(|l| matches!(l.0.kind, Kind::File)).count());
        }
        let links = (!self.spec.input.link_layers.is_empty())
            .then(|| LayerLinks::new(self.spec.input.root, self.spec.input.link_layers));
        let inc = self.spec.incremental.map(|i| (i, self.spec.dest_root));
        let how = Materialize { bases: &self.bases, link: links.as_ref(), inc };
        // Runs of leaves with one source and one destination directory
        // (the walk lists a directory's files together), each run on open
        // handles of the two; long runs are cut so one big directory still
        // spreads over the threads.
        let runs: Vec<&[Leaf]> =
            leaves.chunk_by(|a, b| self.bases.same_dirs(a.0, b.0)).flat_map(|run| run.chunks(RUN_LEN)).collect();
        if leaves.len() > 64 {
            runs.par_iter().try_for_each(|run| how.run(run))?;
        } else {
            runs.iter().try_for_each(|run| how.run(run))?;
        }
        for e in &self.entries {
            if let Kind::Link(i) = e.kind {
                let dst = self.bases.dst(e);
                clear_target(&dst)?;
                if let Err(source) = fs::hard_link(self.bases.dst(&self.entries[i]), &dst) {
                    return Err(FileOpError::Write { path: dst, source });
                }
            }
        }
        for e in self.entries.iter().rev() {
            if let Kind::Dir = e.kind {
                let dst = self.bases.dst(e);
                let werr = |source| FileOpError::Write { path: dst.clone(), source };
                let (uid, gid) = self.owner(e);
                set_owner_path(&dst, uid, gid).map_err(werr)?;
                fs::set_permissions(&dst, fs::Permissions::from_mode(self.mode(e, true))).map_err(werr)?;
                copy_xattrs_path(&self.bases.src(e), &dst);
                set_times_path(&dst, e.atime, e.mtime).map_err(werr)?;
            }
        }
        Ok(())
    }
}

pub(super) fn lchown(p: &Path, (uid, gid): (u32, u32)) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
}

/// Removes a non-directory at `p` (replaced by the copy); a directory there
/// is an error, as in fsutil's `ensureEmptyFileTarget`.
pub(super) fn clear_target(p: &Path) -> Result<(), FileOpError> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Err(FileOpError::ReplaceDir { path: p.to_path_buf() }),
        Ok(_) => fs::remove_file(p).map_err(|source| FileOpError::Remove { path: p.to_path_buf(), source }),
        Err(_) => Ok(()),
    }
}

/// Copies `size` bytes (the size seen when planning) with
/// `copy_file_range`, which shares extents where the file system can (a
/// reflink) and otherwise copies in the kernel. `std::io::copy` would do the
/// same but spends two `statx` and two `fcntl` per file finding that out.
/// Falls back to a plain copy where the kernel refuses (across file systems
/// on old kernels, special file systems).
pub(super) fn copy_data(src: &File, dst: &File, size: u64) -> io::Result<()> {
    let mut left = size;
    let mut first = true;
    while left > 0 {
        match rustix::fs::copy_file_range(src, None, dst, None, left.min(1 << 30) as usize) {
            Ok(0) => return Ok(()), // the file shrank since planning
            Ok(n) => left -= n as u64,
            Err(e)
                if first
                    && matches!(
                        e,
                        rustix::io::Errno::XDEV
                            | rustix::io::Errno::INVAL
                            | rustix::io::Errno::NOSYS
                            | rustix::io::Errno::OPNOTSUPP
                            | rustix::io::Errno::PERM
                    ) =>
            {
                let (mut s, mut d) = (src, dst);
                io::copy(&mut s, &mut d)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        first = false;
    }
    Ok(())
}

/// The process umask, read once from /proc (reading it with `umask(2)`
/// would have to change it, racing other threads). Unknown: assume the
/// worst, so every file gets an explicit fchmod.
pub(super) fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix("Umask:")).and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o777)
    })
}

/// Xattr names from a `listxattr` buffer, without `security.*` but for
/// `security.capability`: SELinux and other LSM labels belong to the build
/// host, not the image, but file capabilities are the file's (BuildKit's
/// copier copies every xattr, so `COPY --from=build /usr/bin/ping /` keeps
/// `cap_net_raw`). Unchanged files that COPY hard-links from their layer
/// keep theirs anyway; dropping them only on the copy path made the result
/// depend on `--chown`.
pub(super) fn xattr_names(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    buf.split(|b| *b == 0).filter(|n| !n.is_empty() && (!n.starts_with(b"security.") || *n == b"security.capability"))
}

/// Copies xattrs between open files. Failures are ignored, as BuildKit's
/// file backend does (it logs them): many file systems refuse user xattrs.
/// `true` when the source has (or may have: unlistable) xattrs to copy.
pub(super) fn copy_xattrs_fd(src: &File, dst: &File) -> bool {
    let mut list = [0u8; 4096];
    let n = match rustix::fs::flistxattr(src.as_fd(), &mut list[..]) {
        Ok(n) => n,
        // No xattrs on this file system.
        Err(rustix::io::Errno::NOTSUP) => return false,
        Err(_) => return true,
    };
    let mut any = false;
    for name in xattr_names(&list[..n]) {
        any = true;
        let mut val = vec![0u8; 64 * 1024];
        if let Ok(len) = rustix::fs::fgetxattr(src.as_fd(), name, &mut val[..]) {
            let _ = rustix::fs::fsetxattr(dst.as_fd(), name, &val[..len], rustix::fs::XattrFlags::empty());
        }
    }
    any
}

/// [`copy_xattrs_fd`] by path, for directories.
fn copy_xattrs_path(src: &Path, dst: &Path) {
    let mut list = [0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(src, &mut list[..]) else { return };
    for name in xattr_names(&list[..n]) {
        let mut val = vec![0u8; 64 * 1024];
        if let Ok(len) = rustix::fs::lgetxattr(src, name, &mut val[..]) {
            let _ = rustix::fs::lsetxattr(dst, name, &val[..len], rustix::fs::XattrFlags::empty());
        }
    }
}
