//! Typed instructions: one struct per Dockerfile instruction, flags validated.

mod types;

pub use types::*;
