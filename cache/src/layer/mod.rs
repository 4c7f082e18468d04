//! Overlay-format snapshot directories <-> OCI layer tars, both ways.
//!
//! [`unpack_layer`] extracts a (compressed) layer tar entry by entry into a
//! snapshot diff directory, turning OCI whiteouts into overlay ones
//! ([`extract`] is the same confined path for `ADD`'s archives);
//! [`write_layer`] walks a snapshot diff directory (the upper dir of a
//! `RUN`, or an unpacked layer) and writes a deterministic layer tar,
//! compressed with gzip or zstd in parallel, computing `diff_id`, digest and
//! size in the same streaming pass and turning overlay whiteouts back into
//! OCI ones. [`write_tree`] is the deterministic tar walker underneath, also
//! used for a merged root filesystem (no whiteouts).
//!
//! Everything here is synchronous; callers on an async runtime use
//! `spawn_blocking`.

mod digest;
mod owner;
mod pgzip;
pub mod unpack;
mod walk;
mod write;

use std::io;
use std::path::PathBuf;

pub use owner::{OwnerError, check_owner};
pub use unpack::{
    ExtractKind, ExtractOptions, OPAQUE_XATTR, Owners, UnpackError, UnpackOptions, UnpackStats, extract, is_opaque_dir,
    is_overlay_whiteout, unpack_layer,
};
pub use walk::{TreeIdentity, TreeOptions, write_tree};
pub use write::{Compression, LayerOptions, compress_stream, layer_identity, write_layer, write_layer_identified};

/// The name a snapshot's layer blob written with this compression and
/// `SOURCE_DATE_EPOCH` is noted under in the store (`gzip-6`, `zstd-3`,
/// `uncompressed`, with `-e<epoch>` when mtimes are clamped): both change
/// the blob, so a blob made with one is never reused for another. Blobs
/// that came from elsewhere (pulled, imported) are noted by their kind
/// alone (`gzip`), whatever level made them.
pub fn note_name(compression: &Compression, epoch: Option<i64>) -> String {
    let base = match compression {
        Compression::Gzip { level } => format!("gzip-{level}"),
        Compression::Zstd { level } => format!("zstd-{level}"),
        Compression::Uncompressed => "uncompressed".to_string(),
    };
    match epoch {
        Some(e) => format!("{base}-e{e}"),
        None => base,
    }
}

/// Errors from writing a layer (or any tree) as tar.
#[derive(Debug, thiserror::Error)]
pub enum LayerWriteError {
    /// A directory of the snapshot could not be listed.
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
    /// Extended attributes could not be listed or read.
    #[error("cannot read extended attributes of `{path}`")]
    ReadXattr {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// An overlay feature we cannot represent in a layer tar.
    #[error("`{path}` carries overlay attribute `{name}` (redirect_dir/metacopy); mount overlays without them")]
    UnsupportedOverlayXattr {
        /// The path.
        path: PathBuf,
        /// The xattr name.
        name: String,
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
    /// A file changed size while it was being archived.
    #[error(
        "`{path}` changed while it was archived (expected {expected} bytes, read {read}); is a build still writing to it?"
    )]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// Size from `lstat`.
        expected: u64,
        /// Bytes actually read.
        read: u64,
    },
    /// Writing the (compressed) output stream failed.
    #[error("cannot write the output stream")]
    Write {
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A compression thread pool could not be created.
    #[error("cannot start {threads} compression threads")]
    ThreadPool {
        /// Threads asked for.
        threads: usize,
        /// The pool error.
        #[source]
        source: rayon::ThreadPoolBuildError,
    },
}
