//! `rbuild bake`: build definitions from bake files, as `docker buildx bake`
//! reads them.
//!
//! The pipeline, one module per step:
//! - [`parse`] reads `docker-bake.{hcl,json}` ([`ojson`] keeps JSON key
//!   order), overrides and compose files ([`compose`]) into one syntax tree:
//!   HCL syntax from hcl-rs (its hcl-edit tree, which keeps spans for
//!   errors).
//! - [`hcl_eval`] evaluates it with bake's semantics (variables with
//!   [`vartypes`], env overrides, validation, user functions, matrix,
//!   `target.X.attr`); expressions go through our evaluator ([`eval`],
//!   [`value`]) and buildx's function library ([`functions`]). The result
//!   is a [`Config`].
//! - [`resolve`] turns a `Config` and the requested names plus `--set`
//!   overrides into the targets to build ([`target`] holds the target model,
//!   merge and override rules; [`entries`] the structured list entries).
//! - [`print`] writes `--print`'s JSON; [`inputs`] derives what a target
//!   means for its build (context and Dockerfile paths, named contexts,
//!   exports with annotations).
//!
//! Why not hcl-rs's own evaluator: its functions are plain `fn` pointers (no
//! closures, so user `function` blocks and lookups into the bake state
//! cannot be functions), its context is filled up front while bake resolves
//! variables and `target.X.attr` lazily (with cycle errors), and its value
//! model has no typed nulls or type constraints. The syntax tree, with
//! spans for `file:line:column` errors, is what we take from it.
//!
//! Running the resolved targets is the binary's job (`commands/bake/run.rs`:
//! it turns them into build requests for `commands::build`).

pub mod compose;
pub mod entitlements;
pub mod entries;
pub mod error;
pub mod eval;
pub mod functions;
pub mod hcl_eval;
pub mod inputs;
pub mod ojson;
pub mod parse;
pub mod print;
pub mod resolve;
pub mod target;
pub mod value;
pub mod vartypes;

pub use error::BakeError;
pub use parse::{BakeFile, Config, DEFAULT_FILES, ParseOptions, parse_files};
pub use resolve::{Resolved, read_targets};
pub use target::{Group, Target};
