//! rbuild's library half: the parts of the builder that other test binaries
//! exercise directly. Today that is the bake-file reader ([`bake`]); the
//! `rbuild` binary (`main.rs`) holds the commands.
#![deny(unsafe_code)]

pub mod bake;
