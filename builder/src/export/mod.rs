//! Image export: layers, config, manifest, and the exporters.
//!
//! [`write_layer`] turns an overlay-format snapshot directory (the upper dir
//! of a `RUN`, or an unpacked layer) into a deterministic layer tar,
//! compressed with gzip or zstd in parallel, computing `diff_id`, digest and
//! size in the same streaming pass. [`build_manifest`] and [`build_index`]
//! write the OCI manifest and index as canonical JSON. The exporters then
//! write an [`ImageBundle`] as an OCI layout (dir or tar) or a docker-archive
//! tar, or copy/tar the final merged filesystem (`export_local`,
//! `export_tar`).
//!
//! Everything here is synchronous; callers on the async runtime use
//! `spawn_blocking`.
// Nothing calls the exporters yet (the lead wires them into the CLI).
#![allow(dead_code, unused_imports)]

mod assemble;
mod image;
mod local;
mod oci;
mod output;

#[cfg(test)]
mod interop_tests;

use std::io;
use std::path::PathBuf;

use rbuild_cache::layer::LayerWriteError;

pub use assemble::{BuiltImage, assemble, compression_from_outputs, stored_image, threads};
pub use image::{ImageBundle, PlatformImage, build_index, build_manifest};
pub use local::{LocalExportSummary, export_local, export_tar, write_rootfs_tar};
pub use oci::{export_docker, export_oci, write_docker_archive, write_oci_tar};
pub use output::{ExportResult, Output, export_all, parse_outputs};

/// Errors from writing layers and exporting images.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Writing a tree as tar failed.
    #[error(transparent)]
    Tree(#[from] LayerWriteError),
    /// A directory of the root filesystem could not be listed.
    #[error("cannot read directory `{path}`")]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `lstat` failed.
    #[error("cannot stat `{path}`")]
    Stat {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A symlink target could not be read.
    #[error("cannot read symlink `{path}`")]
    ReadLink {
        /// The symlink.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A regular file could not be opened or read.
    #[error("cannot read file `{path}`")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing the output stream failed.
    #[error("cannot write the output stream")]
    Write {
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A manifest, config or index blob is not the JSON we expect.
    #[error("invalid {what} JSON")]
    InvalidJson {
        /// Which document.
        what: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The bundle has no image, or several where the format allows one.
    #[error("{0}")]
    BadBundle(&'static str),
    /// A blob file given in the bundle could not be read.
    #[error("cannot read blob file `{path}`")]
    ReadBlob {
        /// The blob file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Creating or writing a file at the destination failed.
    #[error("cannot write `{path}`")]
    WriteDest {
        /// The destination path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// An image name given with `-t` is not a valid reference.
    #[error("invalid image name `{0}`")]
    InvalidName(String),
}
