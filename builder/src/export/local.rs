//! The `local` and `tar` exporters: the final merged filesystem as a
//! directory tree or a plain tar stream.
//!
//! The copy keeps modes (including setuid/sticky), symlinks, hard links,
//! fifos and mtimes; ownership and device nodes only where the process may
//! create them (a rootless build usually may not), which the returned
//! summary counts so the caller can say so.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};

use super::dest::write_dest_file;
use super::{ExportError, ExportInput, Exporter};
use rbuild_cache::layer::{TreeOptions, write_tree};

/// What [`export_local`] could not reproduce exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalExportSummary {
    /// Entries written.
    pub entries: u64,
    /// Entries whose owner could not be set (not permitted).
    pub ownership_skipped: u64,
    /// Device nodes and sockets left out.
    pub specials_skipped: u64,
}

/// Writes the root filesystem `rootfs_dir` as an uncompressed tar stream to
/// `out`, in the same deterministic form as layers (no whiteouts).
pub fn write_rootfs_tar(
    rootfs_dir: &Path,
    source_date_epoch: Option<i64>,
    out: &mut dyn Write,
) -> Result<(), ExportError> {
    Ok(write_tree(rootfs_dir, TreeOptions { whiteouts: false, epoch: source_date_epoch }, out)?)
}

/// The `tar` exporter: `rootfs_dir` as a tar file at `dest_file`.
pub fn export_tar(rootfs_dir: &Path, dest_file: &Path) -> Result<(), ExportError> {
    write_dest_file(dest_file, |w| write_rootfs_tar(rootfs_dir, None, w))
}

/// The `local` exporter: copies `rootfs_dir` (the merged view of the final
/// stage) into `dest`, creating it if needed and replacing files in it.
pub fn export_local(rootfs_dir: &Path, dest: &Path) -> Result<LocalExportSummary, ExportError> {
    fs::create_dir_all(dest).map_err(|source| ExportError::WriteDest { path: dest.to_path_buf(), source })?;
    let mut c = Copier { links: HashMap::new(), summary: LocalExportSummary::default() };
    c.copy_dir(rootfs_dir, dest)?;
    Ok(c.summary)
}

struct Copier {
    links: HashMap<(u64, u64), PathBuf>,
    summary: LocalExportSummary,
}

fn is_not_permitted(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EINVAL) | Some(libc::EACCES))
}

impl Copier {
    fn copy_dir(&mut self, src: &Path, dst: &Path) -> Result<(), ExportError> {
        let read_err = |source| ExportError::ReadDir { path: src.to_path_buf(), source };
        let mut names: Vec<OsString> = Vec::new();
        for e in fs::read_dir(src).map_err(read_err)? {
            names.push(e.map_err(read_err)?.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let s = src.join(&name);
            let d = dst.join(&name);
            self.copy_entry(&s, &d)?;
        }
        Ok(())
    }

    fn copy_entry(&mut self, s: &Path, d: &Path) -> Result<(), ExportError> {
        let md = fs::symlink_metadata(s).map_err(|source| ExportError::Stat { path: s.to_path_buf(), source })?;
        let ft = md.file_type();
        let derr = |source| ExportError::WriteDest { path: d.to_path_buf(), source };
        let existing = fs::symlink_metadata(d).ok();
        if let Some(ex) = &existing {
            if ex.is_dir() && !ft.is_dir() {
                return Err(derr(io::Error::other("a directory is in the way of a non-directory")));
            }
            if !ex.is_dir() {
                fs::remove_file(d).map_err(derr)?;
            }
        }
        if ft.is_dir() {
            if existing.as_ref().is_none_or(|m| !m.is_dir()) {
                fs::create_dir(d).map_err(derr)?;
            }
            // Writable while we fill it, whatever its final mode.
            fs::set_permissions(d, fs::Permissions::from_mode(0o700)).map_err(derr)?;
            self.copy_dir(s, d)?;
        } else if md.nlink() > 1 && self.links.contains_key(&(md.dev(), md.ino())) {
            fs::hard_link(&self.links[&(md.dev(), md.ino())], d).map_err(derr)?;
            self.summary.entries += 1;
            return Ok(());
        } else if ft.is_symlink() {
            let target = fs::read_link(s).map_err(|source| ExportError::ReadLink { path: s.to_path_buf(), source })?;
            std::os::unix::fs::symlink(target, d).map_err(derr)?;
        } else if ft.is_file() {
            let mut from = File::open(s).map_err(|source| ExportError::ReadFile { path: s.to_path_buf(), source })?;
            let mut to = File::create(d).map_err(derr)?;
            // io::copy uses copy_file_range (reflinks where supported).
            io::copy(&mut from, &mut to).map_err(derr)?;
        } else if ft.is_fifo() {
            rustix::fs::mknodat(CWD, d, FileType::Fifo, Mode::from_raw_mode(0o600), 0).map_err(|e| derr(e.into()))?;
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() { FileType::CharacterDevice } else { FileType::BlockDevice };
            match rustix::fs::mknodat(CWD, d, kind, Mode::from_raw_mode(0o600), md.rdev()) {
                Ok(()) => {}
                Err(e) if is_not_permitted(&e.into()) => {
                    self.summary.specials_skipped += 1;
                    return Ok(());
                }
                Err(e) => return Err(derr(e.into())),
            }
        } else {
            // Sockets: meaningless outside the build.
            self.summary.specials_skipped += 1;
            return Ok(());
        }
        if md.nlink() > 1 && !ft.is_dir() {
            self.links.insert((md.dev(), md.ino()), d.to_path_buf());
        }
        // Owner first: chown clears setuid/setgid, chmod then restores them.
        match std::os::unix::fs::lchown(d, Some(md.uid()), Some(md.gid())) {
            Ok(()) => {}
            Err(e) if is_not_permitted(&e) => self.summary.ownership_skipped += 1,
            Err(e) => return Err(derr(e)),
        }
        if !ft.is_symlink() {
            fs::set_permissions(d, fs::Permissions::from_mode(md.mode() & 0o7777)).map_err(derr)?;
        }
        let times = Timestamps {
            last_access: Timespec { tv_sec: md.atime(), tv_nsec: md.atime_nsec() as _ },
            last_modification: Timespec { tv_sec: md.mtime(), tv_nsec: md.mtime_nsec() as _ },
        };
        rustix::fs::utimensat(CWD, d, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| derr(e.into()))?;
        self.summary.entries += 1;
        Ok(())
    }
}

/// `type=local`: each platform's filesystem copied into a directory.
pub struct LocalExporter {
    /// The directory (one subdirectory per platform when there are several).
    pub dest: PathBuf,
}

impl Exporter for LocalExporter {
    fn export(&self, input: &ExportInput<'_>) -> Result<(), ExportError> {
        input.for_each_rootfs(&self.dest, |rootfs, target, provenance| {
            input.printer.message(&format!("exporting filesystem to {}", target.display()));
            export_local(rootfs, target)?;
            // As BuildKit's local exporter: the statement beside the files,
            // its subjects every regular file of the result.
            if let Some(predicate) = provenance {
                let read_err = |source| ExportError::ReadDir { path: rootfs.to_path_buf(), source };
                let subjects = super::attest::file_subjects(rootfs).map_err(read_err)?;
                let statement = super::attest::statement(predicate, &subjects);
                let bytes = serde_json::to_vec_pretty(&statement)
                    .map_err(|source| ExportError::Encode { what: "provenance", source })?;
                let path = target.join("provenance.json");
                let werr = |source| ExportError::WriteDest { path: path.clone(), source };
                let _ = fs::remove_file(&path);
                let mut f =
                    fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(werr)?;
                f.write_all(&bytes).map_err(werr)?;
            }
            Ok(())
        })
    }
}

/// `type=tar`: each platform's filesystem as a tar file (`-`: standard
/// output).
pub struct TarExporter {
    /// The tar file (one per platform, under this directory, when there
    /// are several).
    pub dest: PathBuf,
}

impl Exporter for TarExporter {
    fn export(&self, input: &ExportInput<'_>) -> Result<(), ExportError> {
        if self.dest.as_os_str() == "-" {
            let [image] = input.images else {
                return Err(ExportError::BadBundle("a tar on standard output holds one platform; use `dest=DIR`"));
            };
            let view = rbuild_solver::solve::ChainView::mount(input.store, &image.chain, "rootfs")
                .map_err(|source| ExportError::MountRootfs { source })?;
            let mut out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
            write_rootfs_tar(view.path(), None, &mut out)?;
            return out.flush().map_err(|source| ExportError::Write { source });
        }
        input.for_each_rootfs(&self.dest, |rootfs, target, _| {
            input.printer.message(&format!("exporting filesystem to {}", target.display()));
            export_tar(rootfs, target)
        })
    }
}
