//! Writing an exporter's destination file (`dest=FILE`, `save -o FILE`).
//!
//! A regular file (or a new path) is written next to itself and renamed into
//! place, so a killed build never leaves half an archive under the final
//! name. Anything else that already exists there (`/dev/null`, `/dev/stdout`,
//! a fifo a CI step reads from) is written in place: renaming over it would
//! replace a device node or pipe with a regular file, on the host, as the
//! user running rbuild (`docker save -o /dev/null` writes through too).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::ExportError;

/// Writes `dest` with `f`: atomically for regular files and new paths, in
/// place for devices, fifos and sockets.
pub fn write_dest_file(
    dest: &Path,
    f: impl FnOnce(&mut dyn Write) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let derr = |source| ExportError::WriteDest { path: dest.to_path_buf(), source };
    match fs::metadata(dest) {
        Ok(meta) if !meta.is_file() && !meta.is_dir() => {
            let file = OpenOptions::new().write(true).open(dest).map_err(derr)?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            f(&mut w)?;
            return w.flush().map_err(derr);
        }
        _ => {}
    }
    let file_name = dest.file_name().ok_or_else(|| derr(io::Error::other("destination has no file name")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp: PathBuf = dest.with_file_name(tmp_name);
    let result = (|| {
        let file = File::create(&tmp).map_err(derr)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        f(&mut w)?;
        let file = w.into_inner().map_err(|e| derr(e.into_error()))?;
        file.sync_all().map_err(derr)?;
        fs::rename(&tmp, dest).map_err(derr)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;

    fn write_hello(dest: &Path) -> Result<(), ExportError> {
        write_dest_file(dest, |w| w.write_all(b"hello").map_err(|source| ExportError::Write { source }))
    }

    #[test]
    fn a_fifo_destination_is_written_through_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, rustix::fs::Mode::from(0o600), 0)
            .unwrap();
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut s = String::new();
                File::open(fifo).unwrap().read_to_string(&mut s).unwrap();
                s
            })
        };
        write_hello(&fifo).unwrap();
        assert_eq!(reader.join().unwrap(), "hello");
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the fifo was replaced");
    }

    #[test]
    fn a_regular_destination_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.tar");
        fs::write(&dest, "old contents, longer than the new").unwrap();
        write_hello(&dest).unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "hello");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }
}
