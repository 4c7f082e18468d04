//! Bytes at rest: the content store under `--root`.
//!
//! The OCI formats everything else speaks ([`oci`]); content-addressed blobs, unpacked snapshots, the cache index, the
//! stat-keyed checksum cache for context files, and safe layer unpacking.
#![deny(unsafe_code)]

mod fsutil;
pub mod oci;
pub mod store;
pub mod unpack;
