//! Bytes at rest: the content store under `--root`.
//!
//! [`oci`] holds the OCI formats everything else speaks; [`store`] the
//! content-addressed blobs, unpacked snapshots, the cache index and the
//! stat-keyed checksum cache for context files; [`layer`] the conversion
//! between snapshot directories and layer tars (safe unpacking,
//! deterministic writing); [`remote`] the remote build-cache format.
#![deny(unsafe_code)]

mod fsutil;
pub mod layer;
pub mod oci;
pub mod remote;
pub mod store;
