//! `rbuild completion SHELL` (clap_complete) and `rbuild debug man DIR`
//! (clap_mangen): both generated from the same clap definitions as the
//! parser, so they never drift from the real flags.
//!
//! The man pages are written by the binary rather than by `build.rs`: the
//! CLI types name solver types (`NetworkMode`, `Rlimit`), and a build script
//! would have to compile the solver a second time for the host to reach
//! them. `scripts/setup.sh` runs it after the release build
//! (`target/man/`).

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionArgs, ManArgs};

pub fn completion(args: &CompletionArgs) -> Result<i32> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "rbuild", &mut std::io::stdout());
    Ok(0)
}

pub fn man(args: &ManArgs) -> Result<i32> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating `{}`", args.dir.display()))?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, &args.dir)
        .with_context(|| format!("writing man pages to `{}`", args.dir.display()))?;
    Ok(0)
}
