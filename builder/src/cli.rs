//! Command-line definitions (clap). Implementations live in `commands/`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// rbuild: a daemonless, rootless container image builder.
///
/// Without a command, `rbuild [FLAGS] CONTEXT` builds, exactly like
/// `rbuild build [FLAGS] CONTEXT` (the form CI scripts use).
#[derive(Debug, Parser)]
#[command(name = "rbuild", version, about, long_about = None)]
pub struct Cli {
    /// Store location (default: $XDG_DATA_HOME/rbuild or ~/.local/share/rbuild).
    #[arg(long, global = true, env = "RBUILD_ROOT")]
    pub root: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's arguments, with `build` as the default command.
    pub fn parse_args() -> Cli {
        Cli::parse_from(with_default_command(std::env::args_os().collect()))
    }
}

/// Inserts `build` where the command belongs when the first argument after
/// the global `--root` is not a command (nor `--help`/`--version`): then
/// `rbuild -t app .` is `rbuild build -t app .`. With no arguments at all
/// clap prints the usage, as before. Done on the argument list because clap
/// cannot mix a default command's positional `CONTEXT` with subcommand
/// names and a global flag before them.
pub fn with_default_command(mut args: Vec<OsString>) -> Vec<OsString> {
    let mut i = 1;
    while i < args.len() {
        let arg = args[i].to_string_lossy();
        if arg == "--root" {
            i += 2;
            continue;
        }
        if arg.starts_with("--root=") {
            i += 1;
            continue;
        }
        let is_command =
            Cli::command().get_subcommands().any(|c| c.get_name() == arg || c.get_all_aliases().any(|a| a == arg))
                || matches!(arg.as_ref(), "help" | "-h" | "--help" | "-V" | "--version");
        if !is_command {
            args.insert(i, OsString::from("build"));
        }
        break;
    }
    args
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile.
    Build(Box<BuildArgs>),
    /// List tagged images in the local store.
    Images,
    /// Remove unreferenced data from the store.
    Prune(PruneArgs),
    /// Show store disk usage.
    Du,
    /// Developer tools.
    #[command(subcommand)]
    Debug(DebugCommand),
}

/// `rbuild debug ...`.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print the lowered build graph as JSON.
    Graph(Box<GraphArgs>),
    /// Write one snapshot directory as a layer blob and print its descriptor
    /// (used by `bench/compression.sh`).
    WriteLayer(WriteLayerArgs),
}

/// `rbuild debug graph`.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Print the parse+lower time to stderr.
    #[arg(long)]
    pub timings: bool,
    /// Build flags.
    #[command(flatten)]
    pub build: BuildArgs,
}

/// `rbuild debug write-layer`.
#[derive(Debug, Args)]
pub struct WriteLayerArgs {
    /// `gzip`, `zstd` or `uncompressed`.
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    /// Compression level.
    #[arg(long)]
    pub level: Option<i32>,
    /// Compression threads (default: number of CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where to write the blob (default: discard).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Directory to pack.
    pub dir: PathBuf,
}

/// `rbuild prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove everything not held by a running build, including tagged images' data.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Keep this much data (e.g. `10GB`, `512MB`), most recently used first.
    #[arg(long)]
    pub keep_storage: Option<String>,
}

/// `rbuild build` flags: `docker buildx build`'s set.
#[derive(Debug, Args, Clone)]
pub struct BuildArgs {
    /// Build context directory.
    #[arg(default_value = ".")]
    pub context: PathBuf,
    /// Name and optionally a tag (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Dockerfile path (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Target stage to build.
    #[arg(long)]
    pub target: Option<String>,
    /// Build-time variable `KEY=VALUE` (or `KEY` to take it from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Target platform(s), comma separated.
    #[arg(long)]
    pub platform: Vec<String>,
    /// Secret to expose: `id=ID,src=PATH` or `id=ID,env=VAR`.
    #[arg(long)]
    pub secret: Vec<String>,
    /// SSH agent socket or keys: `default|ID[=SOCKET|KEY...]`.
    #[arg(long)]
    pub ssh: Vec<String>,
    /// External cache sources (`type=registry,ref=...`).
    #[arg(long = "cache-from")]
    pub cache_from: Vec<String>,
    /// Cache export destinations (`type=registry,ref=...,mode=max`).
    #[arg(long = "cache-to")]
    pub cache_to: Vec<String>,
    /// Output destination (`type=oci|docker|local|tar|image|registry,dest=...`).
    #[arg(short = 'o', long = "output")]
    pub output: Vec<String>,
    /// Shorthand for `--output=type=registry`.
    #[arg(long)]
    pub push: bool,
    /// Shorthand for `--output=type=docker`.
    #[arg(long)]
    pub load: bool,
    /// Progress output: `auto`, `tty`, `plain`, `rawjson`, `quiet`.
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// Do not use cache when building.
    #[arg(long)]
    pub no_cache: bool,
    /// Do not cache the given stages.
    #[arg(long = "no-cache-filter")]
    pub no_cache_filter: Vec<String>,
    /// Always re-resolve base image tags.
    #[arg(long)]
    pub pull: bool,
    /// Image label `KEY=VALUE`.
    #[arg(long)]
    pub label: Vec<String>,
    /// Write the image ID to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Write build result metadata to this file.
    #[arg(long = "metadata-file")]
    pub metadata_file: Option<PathBuf>,
    /// Additional build context `NAME=PATH|docker-image://REF`.
    #[arg(long = "build-context")]
    pub build_context: Vec<String>,
    /// Run a frontend method instead of building: `build`, `check`, `outline`, `targets`.
    #[arg(long = "call", default_value = "build")]
    pub call: String,
    /// Shorthand for `--call=check`.
    #[arg(long)]
    pub check: bool,
    /// Parallel jobs (default: number of CPUs).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Suppress the build output and print the image ID on success.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Registries to reach over plain HTTP (loopback registries always are).
    #[arg(long = "insecure-registry")]
    pub insecure_registry: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        let args = args.iter().map(OsString::from).collect();
        with_default_command(args).into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn build_is_the_default_command() {
        let table: &[(&[&str], &[&str])] = &[
            (&["rbuild", "-t", "app:1.0", "."], &["rbuild", "build", "-t", "app:1.0", "."]),
            (&["rbuild", "."], &["rbuild", "build", "."]),
            (&["rbuild", "--root", "/s", "-t", "a", "."], &["rbuild", "--root", "/s", "build", "-t", "a", "."]),
            (&["rbuild", "--root=/s", "ctx"], &["rbuild", "--root=/s", "build", "ctx"]),
            (&["rbuild", "build", "-t", "a", "."], &["rbuild", "build", "-t", "a", "."]),
            (&["rbuild", "--root", "/s", "images"], &["rbuild", "--root", "/s", "images"]),
            (&["rbuild", "debug", "graph", "."], &["rbuild", "debug", "graph", "."]),
            (&["rbuild", "--help"], &["rbuild", "--help"]),
            (&["rbuild", "-V"], &["rbuild", "-V"]),
            (&["rbuild"], &["rbuild"]),
            (&["rbuild", "--root", "/s"], &["rbuild", "--root", "/s"]),
        ];
        for (input, want) in table {
            assert_eq!(argv(input), *want, "{input:?}");
        }
        // Both spellings parse to the same build flags.
        let a = Cli::parse_from(with_default_command(
            ["rbuild", "-t", "app:1.0", "--platform", "linux/arm64", "ctx"].map(OsString::from).to_vec(),
        ));
        let b = Cli::parse_from(["rbuild", "build", "-t", "app:1.0", "--platform", "linux/arm64", "ctx"]);
        match (a.command, b.command) {
            (Command::Build(a), Command::Build(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
            other => panic!("not two builds: {other:?}"),
        }
    }
}
