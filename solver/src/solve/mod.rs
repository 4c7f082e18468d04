//! Parallel scheduling, cache keys and result reuse.
