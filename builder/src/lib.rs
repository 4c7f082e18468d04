//! rbuild's library half: the parts of the builder that other test binaries
//! exercise directly: the bake-file reader ([`bake`]) and the CSV fields of
//! flag values ([`csv`]), which bake and the flags share; the
//! `rbuild` binary (`main.rs`) holds the commands.
#![deny(unsafe_code)]

pub mod bake;
pub mod csv;
