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
    /// List tagged images in the local store.
    Images,
    /// Remove unreferenced data from the store.
    Prune(PruneArgs),
    /// Show store disk usage.
    Du,
    /// Push an image from the local store to a registry.
    Push(PushArgs),
    /// Log in to a registry (credentials go where `docker login` puts them).
    Login(LoginArgs),
    /// Log out of a registry.
    Logout(LogoutArgs),
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

/// How to reach registries (push, login).
#[derive(Debug, Args, Clone)]
pub struct RegistryArgs {
    /// Registries to reach over plain HTTP (loopback registries always are).
    #[arg(long = "insecure-registry")]
    pub insecure_registry: Vec<String>,
    /// PEM file of CA certificates to trust for registries (besides the
    /// system's and `SSL_CERT_FILE`).
    #[arg(long = "registry-ca", env = "RBUILD_REGISTRY_CA")]
    pub registry_ca: Option<PathBuf>,
}

/// `rbuild push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The stored image (`rbuild images`) and where to push it.
    pub name: String,
    /// Push under this name instead (`REGISTRY/REPO:TAG`).
    pub destination: Option<String>,
    /// Push Docker schema-2 media types instead of OCI ones.
    #[arg(long = "oci-mediatypes", default_value_t = true, action = clap::ArgAction::Set)]
    pub oci_mediatypes: bool,
    /// Progress output: `auto`, `plain`, `rawjson`, `quiet`.
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// Registry connection flags.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `rbuild login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry host (`reg.example.com`, `localhost:5000`; default docker.io).
    pub server: Option<String>,
    /// User name.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Read the password from standard input (the only way to give it:
    /// passwords on command lines leak into process lists and shell history).
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
    /// Registry connection flags.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `rbuild logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry host (default docker.io).
    pub server: Option<String>,
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
    /// PEM file of CA certificates to trust for registries (besides the
    /// system's and `SSL_CERT_FILE`).
    #[arg(long = "registry-ca", env = "RBUILD_REGISTRY_CA")]
    pub registry_ca: Option<PathBuf>,
}
