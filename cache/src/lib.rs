//! Bytes at rest: the content store under `--root`.
//!
//! Content-addressed blobs, unpacked snapshots, the cache index, the
//! stat-keyed checksum cache for context files, and safe layer unpacking.
#![deny(unsafe_code)]

mod fsutil;
pub mod store;
pub mod unpack;
