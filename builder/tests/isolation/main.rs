//! RUN isolation: end-to-end tests written as an attacker who controls only
//! a Dockerfile and its build context would write them. Each escape closed
//! has a regression test named after it; each runs as root and, through
//! `runuser`, as the unprivileged test user `rbuildtest`.
//!
//! One module per area of confinement.

mod network;
#[path = "../util/mod.rs"]
mod util;

mod binds;
mod process;
mod seccomp;
