//! File actions (copy, mkdir, mkfile, rm) with Docker's COPY/ADD semantics.
//!
//! Everything here is a plain file-system operation over directories the
//! caller has already mounted: each input is the root of a read-only view,
//! the destination the root of the writable view of the result. All paths
//! are resolved inside their root ([`path`]), so no symlink or `..` can make
//! an action read or write outside it.
//!
//! Semantics follow BuildKit's file backend (`solver/llbsolver/file`) over
//! fsutil's `copy` package, with the options the Dockerfile frontend sets for
//! COPY/ADD (follow the source symlink, copy a directory's contents, create
//! the destination path, allow wildcards). Where this deviates, the item says
//! so. Ownership without `--chown`: BuildKit's copier keeps the source's
//! uid/gid; files of the local build context arrive with uid/gid reset to 0
//! by the session's file sync (`resetUIDAndGID`), so COPY from the context
//! gives 0:0 while `COPY --from=stage` keeps the stage's owners. Inputs say
//! which they are with [`InputRoot::reset_owner`].

mod archive;
mod chmod;
mod copy;
pub mod incremental;
mod leaves;
mod path;
mod pattern;

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::dockerignore::PatternMatcher;
use crate::graph::{Chown, FileAction};

pub use archive::Compression;
pub use chmod::Chmod;
pub use copy::{EntryStat, Selection};
pub use path::clean_rel;
pub use rbuild_cache::layer::OwnerError;

/// One input a file action can read from.
pub struct InputRoot<'a> {
    /// Root of the input's merged read-only view.
    pub root: &'a Path,
    /// `.dockerignore` of a build context: relative slash path -> excluded.
    /// An excluded path is treated as absent. An excluded directory is not
    /// walked, so the hook must answer `false` for a directory that has
    /// re-included (`!pattern`) descendants.
    pub exclude: Option<&'a (dyn Fn(&str) -> bool + Sync)>,
    /// Files from this input are owned by 0:0 unless `--chown` says otherwise
    /// (a local build context); `false` keeps the source's owners (a stage
    /// or image).
    pub reset_owner: bool,
    /// The snapshot directories behind `root`, top layer first, when files
    /// may be hard-linked from them instead of copied: snapshots are
    /// immutable, so a new snapshot can share their inodes when owner, mode
    /// and content stay the same. Empty: always copy (contexts, or a
    /// destination on another file system).
    pub link_layers: &'a [std::path::PathBuf],
}

/// Where a file action reads and writes.
pub struct FileOpContext<'a> {
    /// Inputs, indexed by the `input` field of a Copy action.
    pub inputs: Vec<InputRoot<'a>>,
    /// Root of the writable view of the result (overlay mount or directory).
    pub dest_root: &'a Path,
    /// `false` for ids the sandbox cannot represent (outside the
    /// subordinate id range, or any non-root id with a single-id mapping).
    /// An action that would give an entry such an owner fails with
    /// [`FileOpError::Owner`] before writing it: an entry never
    /// silently keeps the builder's ids (which would turn a setuid file
    /// owned by an unmapped user into a setuid-root one).
    pub can_chown: &'a dyn Fn(u32, u32) -> bool,
    /// An incremental COPY ([`incremental`]): share unchanged files with the
    /// previous snapshot of the same copy and record this one's manifest.
    /// Only for a destination written directly (no overlay), on the store's
    /// file system.
    pub incremental: Option<&'a incremental::Incremental<'a>>,
}

/// Errors of file actions.
#[derive(Debug, thiserror::Error)]
pub enum FileOpError {
    /// The action names an input the op does not have.
    #[error("file action reads input {index}, but the op has {count} inputs")]
    NoSuchInput {
        /// Requested index.
        index: usize,
        /// Inputs available.
        count: usize,
    },
    /// A source path (or a wildcard matching nothing) does not exist.
    #[error("`{path}`: not found")]
    NotFound {
        /// The source as written.
        path: String,
    },
    /// Several sources with a destination that is not a directory.
    #[error("When using {cmd} with more than one source file, the destination must be a directory and end with a /")]
    DestNotDir {
        /// `COPY` or `ADD`.
        cmd: &'static str,
    },
    /// A malformed wildcard.
    #[error("invalid wildcard pattern `{pattern}`")]
    BadPattern {
        /// The pattern.
        pattern: String,
    },
    /// A malformed `--exclude` pattern.
    #[error("invalid --exclude pattern")]
    BadExclude(#[source] crate::dockerignore::PatternError),
    /// A malformed `--chmod`.
    #[error("invalid --chmod value `{value}`: use octal (`755`) or symbolic (`u+x,g-w`)")]
    BadChmod {
        /// The value.
        value: String,
    },
    /// `--chown` names a user the destination's /etc/passwd lacks.
    #[error("unable to find user `{name}`: no matching entries in the destination's /etc/passwd")]
    UnknownUser {
        /// User name.
        name: String,
    },
    /// `--chown` names a group the destination's /etc/group lacks.
    #[error("unable to find group `{name}`: no matching entries in the destination's /etc/group")]
    UnknownGroup {
        /// Group name.
        name: String,
    },
    /// /etc/passwd or /etc/group could not be read.
    #[error("reading `{path}`")]
    ReadUserDb {
        /// Host path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A path could not be resolved inside its root (symlink loop, EACCES).
    #[error("resolving `{path}`")]
    Resolve {
        /// The path as written.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A directory source over an existing non-directory.
    #[error("cannot copy to non-directory: `{path}`")]
    CopyToNonDir {
        /// Host path of the destination.
        path: PathBuf,
    },
    /// A file source over an existing directory.
    #[error("cannot replace directory `{path}` with a file")]
    ReplaceDir {
        /// Host path of the destination.
        path: PathBuf,
    },
    /// Reading a source entry failed.
    #[error("reading `{path}`")]
    ReadSource {
        /// Host path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Creating a directory failed.
    #[error("creating directory `{path}`")]
    CreateDir {
        /// Host path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Writing a destination entry (data or metadata) failed.
    #[error("writing `{path}`")]
    Write {
        /// Host path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Reading an archive for ADD failed.
    #[error("reading archive `{path}`")]
    ReadArchive {
        /// Host path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Extracting an archive failed (an entry could not be written, or its
    /// owner cannot be represented).
    #[error("cannot extract `{}`", path.display())]
    Unpack {
        /// Host path of the archive.
        path: PathBuf,
        /// Cause.
        #[source]
        source: rbuild_cache::layer::UnpackError,
    },
    /// Removing a path failed.
    #[error("removing `{path}`")]
    Remove {
        /// Host path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// `Rm` of `/`.
    #[error("refusing to remove the root directory")]
    RemoveRoot,
    /// The owner an entry must get is not a valid id, or is not mapped in
    /// this user namespace (the check `ADD`'s archive extraction makes too).
    #[error(transparent)]
    Owner(#[from] OwnerError),
}

/// Fails unless `uid:gid` is a real owner that `can_chown` says the
/// sandbox can represent ([`rbuild_cache::layer::check_owner`]).
pub(crate) fn check_owner(
    path: impl FnOnce() -> String,
    uid: u32,
    gid: u32,
    can_chown: &dyn Fn(u32, u32) -> bool,
) -> Result<(), FileOpError> {
    Ok(rbuild_cache::layer::check_owner(path, uid, gid, can_chown)?)
}

/// A resolved numeric owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Performs one file action.
pub fn apply(action: &FileAction, ctx: &FileOpContext) -> Result<(), FileOpError> {
    apply_counted(action, ctx).map(|_| ())
}

/// [`apply`], returning the bytes of the non-directories a COPY/ADD into an
/// empty destination created, when known exactly (see [`copy::copy`]): the
/// snapshot's size without walking it again.
pub fn apply_counted(action: &FileAction, ctx: &FileOpContext) -> Result<Option<u64>, FileOpError> {
    apply_selected(action, ctx, None)
}

/// [`apply_counted`], given the [`select`]ion a COPY's cache key was taken
/// from (the same action on the same input): a copy of one directory plans
/// from it instead of walking the tree again.
pub fn apply_selected(
    action: &FileAction,
    ctx: &FileOpContext,
    selection: Option<Selection>,
) -> Result<Option<u64>, FileOpError> {
    match action {
        FileAction::Copy {
            input,
            src,
            dest,
            chown,
            chmod,
            allow_wildcard,
            allow_empty_wildcard,
            unpack_archive,
            parents,
            exclude,
        } => {
            let inp =
                ctx.inputs.get(*input).ok_or(FileOpError::NoSuchInput { index: *input, count: ctx.inputs.len() })?;
            let owner = chown.as_ref().map(|c| resolve_owner(c, ctx.dest_root)).transpose()?;
            if let Some(o) = owner {
                check_owner(|| dest.clone(), o.uid, o.gid, ctx.can_chown)?;
            }
            let chmod = chmod
                .as_ref()
                .map(|v| Chmod::parse(v).ok_or_else(|| FileOpError::BadChmod { value: v.clone() }))
                .transpose()?;
            let exclude = PatternMatcher::new(exclude).map_err(FileOpError::BadExclude)?;
            copy::copy(
                &copy::CopySpec {
                    input: inp,
                    src,
                    dest,
                    owner,
                    chmod,
                    allow_wildcard: *allow_wildcard,
                    allow_empty_wildcard: *allow_empty_wildcard,
                    unpack: *unpack_archive,
                    parents: *parents,
                    exclude,
                    dest_root: ctx.dest_root,
                    can_chown: ctx.can_chown,
                    incremental: ctx.incremental,
                },
                selection,
            )
        }
        FileAction::Mkdir { path, mode, make_parents, chown } => {
            let owner = chown.as_ref().map(|c| resolve_owner(c, ctx.dest_root)).transpose()?;
            if let Some(o) = owner {
                check_owner(|| path.clone(), o.uid, o.gid, ctx.can_chown)?;
            }
            let p = path::root_path(ctx.dest_root, path, true)
                .map_err(|source| FileOpError::Resolve { path: path.clone(), source })?;
            if *make_parents {
                mkdir_all(&p, *mode & 0o7777, owner)?;
            } else {
                match fs::create_dir(&p) {
                    // BuildKit: an existing path is left as it is.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
                    Err(source) => return Err(FileOpError::CreateDir { path: p, source }),
                    Ok(()) => finish_created_dir(&p, *mode & 0o7777, owner)?,
                }
            }
            Ok(None)
        }
        FileAction::Mkfile { path, mode, data, chown } => {
            let owner = chown.as_ref().map(|c| resolve_owner(c, ctx.dest_root)).transpose()?;
            if let Some(o) = owner {
                check_owner(|| path.clone(), o.uid, o.gid, ctx.can_chown)?;
            }
            let p = path::root_path(ctx.dest_root, path, true)
                .map_err(|source| FileOpError::Resolve { path: path.clone(), source })?;
            let werr = |source| FileOpError::Write { path: p.clone(), source };
            fs::write(&p, data.as_bytes()).map_err(werr)?;
            if let Some(o) = owner {
                set_owner_path(&p, o.uid, o.gid).map_err(werr)?;
            }
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode & 0o7777)).map_err(werr)?;
            Ok(None)
        }
        FileAction::Rm { path, allow_not_found } => rm(ctx.dest_root, path, *allow_not_found).map(|()| None),
    }
}

/// The entries a COPY of `src` would read from the input at `root`, as
/// sorted (by bytes), de-duplicated slash paths relative to `root`, exactly
/// as the file system names them (not necessarily UTF-8; symlinks among the
/// sources resolved, so each path names what is really read). Directories
/// are listed along with their contents. `exclude` are `--exclude`
/// patterns, `ignore` the input's `.dockerignore` hook. Missing sources are
/// errors as in [`apply`]; a wildcard that matches nothing selects nothing.
pub fn selected_files(
    root: &Path,
    src: &[String],
    allow_wildcard: bool,
    exclude: &[String],
    ignore: Option<&(dyn Fn(&str) -> bool + Sync)>,
) -> Result<Vec<std::ffi::OsString>, FileOpError> {
    let exclude = PatternMatcher::new(exclude).map_err(FileOpError::BadExclude)?;
    let input = InputRoot { root, exclude: ignore, reset_owner: false, link_layers: &[] };
    copy::selected(&input, src, allow_wildcard, &exclude)
}

/// Resolves `--chown` against the destination's /etc/passwd and /etc/group.
/// A numeric user alone means the same number as group (BuildKit's
/// `UserOpt_ByID`); a user name alone means that user's primary group.
pub fn resolve_owner(chown: &Chown, dest_root: &Path) -> Result<Owner, FileOpError> {
    let (uid, mut gid) = match chown.user.parse::<u32>() {
        Ok(id) => (id, id),
        Err(_) => {
            let line = lookup(dest_root, "/etc/passwd", &chown.user)?
                .ok_or_else(|| FileOpError::UnknownUser { name: chown.user.clone() })?;
            let f: Vec<&str> = line.split(':').collect();
            let id = |i: usize| f.get(i).and_then(|v| v.trim().parse::<u32>().ok());
            match (id(2), id(3)) {
                (Some(u), Some(g)) => (u, g),
                _ => return Err(FileOpError::UnknownUser { name: chown.user.clone() }),
            }
        }
    };
    if let Some(group) = &chown.group {
        gid = match group.parse::<u32>() {
            Ok(id) => id,
            Err(_) => lookup(dest_root, "/etc/group", group)?
                .and_then(|line| line.split(':').nth(2).and_then(|g| g.trim().parse().ok()))
                .ok_or_else(|| FileOpError::UnknownGroup { name: group.clone() })?,
        };
    }
    Ok(Owner { uid, gid })
}

/// The first line of the colon-separated database `db` (inside `root`)
/// whose first field is `name`; `None` when absent (or the file is).
fn lookup(root: &Path, db: &str, name: &str) -> Result<Option<String>, FileOpError> {
    let p = path::root_path(root, db, true).map_err(|source| FileOpError::Resolve { path: db.into(), source })?;
    let text = match fs::read(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
        Err(source) => return Err(FileOpError::ReadUserDb { path: p, source }),
    };
    Ok(String::from_utf8_lossy(&text).lines().find(|l| l.split(':').next() == Some(name)).map(str::to_string))
}

/// Creates `p` and its missing parents (all resolved, symlink-free) with
/// `mode`, chowning the ones created (fsutil's `MkdirAll`). An existing
/// non-directory is an error. `owner` must have passed [`check_owner`].
pub(crate) fn mkdir_all(p: &Path, mode: u32, owner: Option<Owner>) -> Result<(), FileOpError> {
    let mut missing = Vec::new();
    let mut cur = Some(p);
    while let Some(c) = cur {
        match fs::symlink_metadata(c) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(FileOpError::CopyToNonDir { path: c.to_path_buf() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(c),
            Err(source) => return Err(FileOpError::CreateDir { path: c.to_path_buf(), source }),
        }
        cur = c.parent();
    }
    for c in missing.into_iter().rev() {
        match fs::create_dir(c) {
            Ok(()) => finish_created_dir(c, mode, owner)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(FileOpError::CreateDir { path: c.to_path_buf(), source }),
        }
    }
    Ok(())
}

fn finish_created_dir(p: &Path, mode: u32, owner: Option<Owner>) -> Result<(), FileOpError> {
    let werr = |source| FileOpError::Write { path: p.to_path_buf(), source };
    if let Some(o) = owner {
        set_owner_path(p, o.uid, o.gid).map_err(werr)?;
    }
    // Set exactly: the process umask must not leak into the image.
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(werr)
}

/// `lchown`; the ids must have passed [`check_owner`].
pub(crate) fn set_owner_path(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
}

/// Sets atime and mtime without following a final symlink.
pub(crate) fn set_times_path(p: &Path, atime: SystemTime, mtime: SystemTime) -> io::Result<()> {
    let ts = |t: SystemTime| {
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        rustix::fs::Timespec { tv_sec: d.as_secs() as i64, tv_nsec: d.subsec_nanos() as _ }
    };
    let times = rustix::fs::Timestamps { last_access: ts(atime), last_modification: ts(mtime) };
    rustix::fs::utimensat(rustix::fs::CWD, p, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// `Rm`: the parent is resolved inside the root, the last component is not
/// followed (removing a symlink removes the link). A path that does not
/// exist but contains wildcards is expanded and each match removed.
fn rm(root: &Path, p: &str, allow_not_found: bool) -> Result<(), FileOpError> {
    let clean = path::clean_rel(p);
    if clean.is_empty() {
        return Err(FileOpError::RemoveRoot);
    }
    let target =
        path::root_path(root, &clean, false).map_err(|source| FileOpError::Resolve { path: p.into(), source })?;
    let targets = if fs::symlink_metadata(&target).is_ok() {
        vec![target]
    } else if pattern::has_wildcard(&clean) {
        copy::glob(root, &clean, None)?.into_iter().map(|m| m.path).collect()
    } else {
        Vec::new()
    };
    if targets.is_empty() {
        return if allow_not_found { Ok(()) } else { Err(FileOpError::NotFound { path: p.into() }) };
    }
    for t in targets {
        let res = match fs::symlink_metadata(&t) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&t),
            Ok(_) => fs::remove_file(&t),
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && allow_not_found => {}
            Err(source) => return Err(FileOpError::Remove { path: t, source }),
        }
    }
    Ok(())
}

/// Like [`selected_files`], with the stat of each entry's `lstat` (the
/// source itself is stat-ed through a symlink, as COPY follows it; the
/// stat key's `mode` holds the file type too). Given back to
/// [`apply_selected`] for the same copy, it spares the copy a second walk.
pub fn select(
    root: &Path,
    src: &[String],
    allow_wildcard: bool,
    exclude: &[String],
    ignore: Option<&(dyn Fn(&str) -> bool + Sync)>,
) -> Result<Selection, FileOpError> {
    let exclude = PatternMatcher::new(exclude).map_err(FileOpError::BadExclude)?;
    let input = InputRoot { root, exclude: ignore, reset_owner: false, link_layers: &[] };
    copy::selected_with_meta(&input, src, allow_wildcard, &exclude)
}
