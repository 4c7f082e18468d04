//! Command-line definitions (clap). Implementations live in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// rbuild: a daemonless, rootless container image builder.
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

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile.
    Build(Box<BuildArgs>),
    /// Build the targets of a bake file (`docker-bake.hcl`, compose).
    Bake(Box<BakeArgs>),
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

/// `rbuild bake` flags: `docker buildx bake`'s set.
#[derive(Debug, Args, Clone)]
pub struct BakeArgs {
    /// Targets or groups to build (default: the `default` group); globs allowed.
    pub targets: Vec<String>,
    /// Bake file(s), merged in order; `-` reads stdin (default: docker-bake.{json,hcl},
    /// docker-bake.override.{json,hcl}, compose files).
    #[arg(short = 'f', long = "file")]
    pub files: Vec<String>,
    /// Override a target value: `TARGET.KEY=VALUE` or `TARGET.KEY+=VALUE`; TARGET may be a glob.
    #[arg(long)]
    pub set: Vec<String>,
    /// Set a variable: `NAME=VALUE` (looked up before the environment).
    #[arg(long = "var")]
    pub vars: Vec<String>,
    /// Print the resolved definition as JSON instead of building.
    #[arg(long)]
    pub print: bool,
    /// List `targets` or `variables` instead of building.
    #[arg(long)]
    pub list: Option<String>,
    /// Shorthand for `--set=*.push=true`.
    #[arg(long)]
    pub push: bool,
    /// Shorthand for `--set=*.load=true` (the local store).
    #[arg(long)]
    pub load: bool,
    /// Progress output: `auto`, `tty`, `plain`, `rawjson`, `quiet`.
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// Do not use cache when building.
    #[arg(long)]
    pub no_cache: bool,
    /// Always re-resolve base image tags.
    #[arg(long)]
    pub pull: bool,
    /// Grant entitlements (`network.host`, `security.insecure`, `fs.read=PATH`, ...).
    #[arg(long)]
    pub allow: Vec<String>,
    /// Run a frontend method instead of building: `build`, `check`, `outline`, `targets`.
    #[arg(long = "call")]
    pub call: Option<String>,
    /// Shorthand for `--call=check`.
    #[arg(long)]
    pub check: bool,
    /// Shorthand for `--set=*.attest=type=sbom` (`true`, `false` or attributes).
    #[arg(long)]
    pub sbom: Option<String>,
    /// Shorthand for `--set=*.attest=type=provenance` (`true`, `false` or attributes).
    #[arg(long)]
    pub provenance: Option<String>,
    /// Write build result metadata (one entry per target) to this file.
    #[arg(long = "metadata-file")]
    pub metadata_file: Option<std::path::PathBuf>,
    /// Parallel jobs per build (default: number of CPUs).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Registries to reach over plain HTTP (loopback registries always are).
    #[arg(long = "insecure-registry")]
    pub insecure_registry: Vec<String>,
}
