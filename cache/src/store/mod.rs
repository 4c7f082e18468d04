//! The on-disk store: blobs, snapshots, index, checksums, locks.
