//! The solver: runs a build graph.
//!
//! [`graph`] holds the plain-data graph types the frontend produces;
//! [`solve`] schedules vertices in parallel, computes cache keys and reuses
//! results; [`sandbox`] is the rootless user-namespace sandbox that runs
//! `RUN` steps (the only home of unsafe code); [`fileop`] performs COPY/ADD
//! style file actions; [`dockerignore`] is moby's pattern matcher, for
//! `.dockerignore` and COPY `--exclude`.
#![deny(unsafe_code)]

pub mod dockerignore;
pub mod fileop;
pub mod graph;
pub mod sandbox;
pub mod solve;
