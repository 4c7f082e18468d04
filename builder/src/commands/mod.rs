//! Command implementations, one module per command family.

mod bake;
pub(crate) mod build;
mod call;
mod completion;
mod graph;
mod image_cmds;
mod login;
mod push;
mod store_cmds;
mod write_layer;

pub(crate) use store_cmds::parse_size;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use rbuild_solver::sandbox::IdMapping;

use crate::cli::{Cli, Command, DebugCommand};

/// Runs the parsed command line; returns the exit code.
pub fn run(cli: Cli, mapping: IdMapping) -> Result<i32> {
    // Printing completions or man pages must work whatever the config file says.
    let needs_config = !matches!(cli.command, Command::Completion(_) | Command::Debug(DebugCommand::Man(_)));
    if needs_config {
        crate::config::install(crate::config::Config::load(cli.config.as_deref())?);
    }
    let root = match cli.root {
        Some(r) => r,
        None => default_root()?,
    };
    match cli.command {
        Command::Build(args) => build::run(*args, root, mapping),
        Command::Bake(args) => bake::run(*args, root, mapping),
        Command::Images => store_cmds::images(&root),
        Command::Tag(args) => image_cmds::tag(&root, &args),
        Command::Rmi(args) => image_cmds::rmi(&root, &args),
        Command::Inspect(args) => image_cmds::inspect(&root, &args),
        Command::History(args) => image_cmds::history(&root, &args),
        Command::Save(args) => image_cmds::save(&root, &args),
        Command::Load(args) => image_cmds::load(&root, &args),
        Command::Completion(args) => completion::completion(&args),
        Command::Prune(args) => store_cmds::prune(&root, &args),
        Command::Du => store_cmds::du(&root),
        Command::Push(args) => push::run(&args, &root),
        Command::Login(args) => login::login(&args),
        Command::Logout(args) => login::logout(&args),
        Command::Debug(DebugCommand::Graph(args)) => graph::run(*args, root, mapping),
        Command::Debug(DebugCommand::WriteLayer(args)) => write_layer::write_layer_command(&args),
        Command::Debug(DebugCommand::Man(args)) => completion::man(&args),
    }
}

/// `$XDG_DATA_HOME/rbuild`, else `~/.local/share/rbuild`.
fn default_root() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("rbuild"));
    }
    let home = std::env::var_os("HOME").context("neither $XDG_DATA_HOME nor $HOME is set; pass --root")?;
    Ok(PathBuf::from(home).join(".local/share/rbuild"))
}
