//! The Dockerfile frontend: text in, build graph out.
//!
//! The pipeline is strict, one module per step, as in BuildKit:
//! [`parser`] turns text into lines with spans (directives, continuations,
//! heredocs, JSON vs shell form); [`instructions`] turns lines into one typed
//! struct per instruction with validated flags; [`shell`] expands words with
//! BuildKit's shell-lexer rules; [`lower`] resolves stages, ARG/ENV scoping
//! and platforms and emits a [`rbuild_solver::graph::Definition`] plus the
//! image config of the target. (`.dockerignore` matching lives in
//! [`rbuild_solver::dockerignore`], beside COPY `--exclude`, which uses the
//! same moby pattern matcher.)
#![deny(unsafe_code)]

pub mod diagnostic;
pub mod instructions;
pub mod lower;
pub mod outline;
pub mod parser;
pub mod shell;

pub use diagnostic::{Diagnostic, Span};
