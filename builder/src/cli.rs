//! Command-line definitions (clap). Implementations live in `commands/`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};
use rbuild_solver::graph::NetworkMode;
use rbuild_solver::sandbox::Rlimit;
use rbuild_solver::solve::Entitlements;

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
    /// Configuration file (default: $XDG_CONFIG_HOME/rbuild/config.toml or
    /// ~/.config/rbuild/config.toml, when present).
    #[arg(long, global = true, env = "RBUILD_CONFIG")]
    pub config: Option<PathBuf>,
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
        if arg == "--root" || arg == "--config" {
            i += 2;
            continue;
        }
        if arg.starts_with("--root=") || arg.starts_with("--config=") {
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
    /// Build the targets of a bake file (`docker-bake.hcl`, compose).
    Bake(Box<BakeArgs>),
    /// List tagged images in the local store.
    Images,
    /// Give a stored image another name (`docker tag`).
    Tag(TagArgs),
    /// Remove image names from the store (`docker rmi`); the data goes with
    /// the next prune.
    #[command(alias = "image-rm")]
    Rmi(RmiArgs),
    /// Show a stored image's manifest or index, config and platforms as JSON.
    Inspect(InspectArgs),
    /// Show the history of a stored image (`docker history`).
    History(HistoryArgs),
    /// Write stored images to a docker-archive or OCI archive (`docker save`).
    Save(SaveArgs),
    /// Read a docker-archive or OCI archive into the store (`docker load`).
    Load(LoadArgs),
    /// Print a shell completion script (`bash`, `zsh`, `fish`, `elvish`, `powershell`).
    Completion(CompletionArgs),
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
    /// Write the man pages (`rbuild.1`, `rbuild-build.1`, ...) into a directory.
    Man(ManArgs),
}

/// `rbuild debug man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing).
    pub dir: PathBuf,
}

/// `rbuild completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// `rbuild tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// The stored image (name or ID).
    pub source: String,
    /// The new name (`[REGISTRY/]REPO[:TAG]`).
    pub target: String,
}

/// `rbuild rmi`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Names or IDs of the images.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Remove every name of an image given by ID.
    #[arg(short, long)]
    pub force: bool,
}

/// `rbuild inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Names or IDs of the images.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Print the top-level document (manifest or index) byte for byte, as
    /// `docker buildx imagetools inspect --raw` does.
    #[arg(long)]
    pub raw: bool,
}

/// `rbuild history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Name or ID of the image.
    pub name: String,
    /// Print sizes and dates in human-readable form (`-H=false`: bytes and RFC 3339).
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    pub human: bool,
    /// Do not truncate the output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// The platform of a multi-platform image (default: the host's).
    #[arg(long)]
    pub platform: Option<String>,
}

/// Archive format of `rbuild save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaveFormat {
    /// docker-archive (`docker load`); Docker 25's layout: OCI plus `manifest.json`.
    Docker,
    /// OCI image layout tar (`oci-archive`).
    Oci,
}

/// `rbuild save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Names or IDs of the image (several names of one image).
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Archive format.
    #[arg(long, value_enum, default_value = "docker")]
    pub format: SaveFormat,
    /// The platform to save from a multi-platform image (docker format:
    /// default the host's; OCI format: default all of them).
    #[arg(long)]
    pub platform: Option<String>,
}

/// `rbuild load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this file instead of standard input.
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Accepted for docker compatibility (rbuild prints no progress here).
    #[arg(short, long)]
    pub quiet: bool,
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
    /// Treat `dir` as a file (a tar) and only compress its bytes, with the
    /// layer writer's own compressor: the compressor-alone baseline of
    /// `bench/compression.sh`.
    #[arg(long)]
    pub compress_only: bool,
    /// Directory to pack (a file with `--compress-only`).
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
    /// Remove `RUN --mount=type=cache` directories (only those), except
    /// the ones a running build holds.
    #[arg(long)]
    pub cache_mounts: bool,
    /// With `--cache-mounts`: only the mount `id=ID` (repeatable).
    #[arg(long)]
    pub filter: Vec<String>,
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
    /// Load the image into the local Docker engine (`DOCKER_HOST`, else
    /// /var/run/docker.sock) or podman (`RBUILD_LOAD=docker|podman` chooses).
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
    /// OCI annotation `[TYPE[PLATFORM],...:]KEY=VALUE` (TYPE: `manifest`
    /// (default), `manifest-descriptor`, `index`, `index-descriptor`).
    #[arg(long)]
    pub annotation: Vec<String>,
    /// Attestation `type=provenance[,mode=min|max]` (`type=sbom` is not
    /// supported).
    #[arg(long)]
    pub attest: Vec<String>,
    /// Shorthand for `--attest=type=provenance`: `true`, `false` or `mode=min|max`.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub provenance: Option<String>,
    /// Shorthand for `--attest=type=sbom` (not supported: an error unless `false`).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub sbom: Option<String>,
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
    /// Extra privileged entitlement: `network.host`, `security.insecure`.
    #[arg(long = "allow", value_parser = parse_entitlement)]
    pub allow: Vec<Entitlement>,
    /// Network of `RUN` instructions: `default` (private, outbound only), `none`, `host`.
    #[arg(long, default_value = "default", value_parser = parse_network)]
    pub network: NetworkMode,
    /// Resource limit of every `RUN`: `NAME=SOFT[:HARD]` (e.g. `nofile=1024:2048`).
    #[arg(long = "ulimit")]
    pub ulimit: Vec<Rlimit>,
    /// Size of `/dev/shm` in `RUN` (e.g. `128m`; default 64m).
    #[arg(long = "shm-size", value_parser = parse_bytes)]
    pub shm_size: Option<u64>,
    /// Extra `/etc/hosts` entry of every `RUN`: `HOST=IP[,IP...]` or `HOST:IP`.
    #[arg(long = "add-host", value_parser = parse_add_host)]
    pub add_host: Vec<AddHost>,
    /// Parent cgroup (v2) of the per-`RUN` cgroups (e.g. `/user.slice/build`).
    #[arg(long = "cgroup-parent")]
    pub cgroup_parent: Option<String>,
    /// PEM file of CA certificates to trust for registries (besides the
    /// system's and `SSL_CERT_FILE`).
    #[arg(long = "registry-ca", env = "RBUILD_REGISTRY_CA")]
    pub registry_ca: Option<PathBuf>,
}

/// One `--add-host` value: a name with one or more addresses.
#[derive(Clone, Debug)]
pub struct AddHost(pub Vec<rbuild_solver::graph::HostEntry>);

fn parse_add_host(s: &str) -> Result<AddHost, String> {
    rbuild_solver::graph::HostEntry::parse_all(s).map(AddHost).map_err(|e| e.to_string())
}

/// An `--allow` value (BuildKit's entitlement names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entitlement {
    /// `network.host`.
    NetworkHost,
    /// `security.insecure`.
    SecurityInsecure,
}

impl BuildArgs {
    /// The entitlements granted with `--allow`.
    pub fn entitlements(&self) -> Entitlements {
        Entitlements {
            network_host: self.allow.contains(&Entitlement::NetworkHost),
            security_insecure: self.allow.contains(&Entitlement::SecurityInsecure),
        }
    }
}

fn parse_entitlement(s: &str) -> Result<Entitlement, String> {
    match s {
        "network.host" => Ok(Entitlement::NetworkHost),
        "security.insecure" => Ok(Entitlement::SecurityInsecure),
        _ => Err(format!("unknown entitlement `{s}`: use `network.host` or `security.insecure`")),
    }
}

fn parse_network(s: &str) -> Result<NetworkMode, String> {
    match s {
        "default" | "sandbox" => Ok(NetworkMode::Default),
        "none" => Ok(NetworkMode::None),
        "host" => Ok(NetworkMode::Host),
        _ => Err(format!("unknown network mode `{s}`: use `default`, `none` or `host`")),
    }
}

/// Docker's byte sizes (`RAMInBytes`): a number with an optional binary
/// unit `b`, `k`, `m`, `g`, `t`, `p` (optionally followed by `b`/`ib`).
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size `{s}`: use a number of bytes with an optional unit, e.g. `128m`");
    let t = s.trim().to_ascii_lowercase();
    let digits = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let unit = unit.trim_start();
    let unit = unit.strip_suffix("ib").or_else(|| unit.strip_suffix('b')).unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(bad()),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let bytes = n * (1u64 << shift) as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(args: &[&str]) -> Result<BuildArgs, clap::Error> {
        let mut v = vec!["rbuild", "build"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v)?.command {
            Command::Build(b) => Ok(*b),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ulimit_flags_parse_into_rlimits() {
        let b = build(&["--ulimit", "nofile=1024:2048", "--ulimit", "nproc=64", "."]).unwrap();
        assert_eq!(b.ulimit.iter().map(|l| l.to_string()).collect::<Vec<_>>(), ["nofile=1024:2048", "nproc=64:64"]);
        let e = build(&["--ulimit", "nofiles=1", "."]).unwrap_err().to_string();
        assert!(e.contains("unknown resource"), "{e}");
        assert!(build(&["--ulimit", "nofile=9:8", "."]).is_err());
    }

    #[test]
    fn allow_takes_buildkit_entitlement_names() {
        let b = build(&["--allow", "network.host", "--allow=security.insecure", "."]).unwrap();
        assert_eq!(b.entitlements(), Entitlements { network_host: true, security_insecure: true });
        assert_eq!(build(&["."]).unwrap().entitlements(), Entitlements::default());
        let e = build(&["--allow", "network.hots", "."]).unwrap_err().to_string();
        assert!(e.contains("unknown entitlement `network.hots`"), "{e}");
    }

    #[test]
    fn network_and_shm_size_and_cgroup_parent() {
        let b = build(&["--network", "host", "--shm-size", "128m", "--cgroup-parent", "/x", "."]).unwrap();
        assert_eq!(b.network, NetworkMode::Host);
        assert_eq!(b.shm_size, Some(128 << 20));
        assert_eq!(b.cgroup_parent.as_deref(), Some("/x"));
        assert_eq!(build(&["."]).unwrap().network, NetworkMode::Default);
        assert_eq!(build(&["--network=none", "."]).unwrap().network, NetworkMode::None);
        assert!(build(&["--network=bridge", "."]).is_err());
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("512k"), Ok(512 << 10));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1.5m"), Ok(3 << 19));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        for bad in ["", "m", "12x", "-1m", "0"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

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
            (
                &["rbuild", "--config", "c.toml", "-t", "a", "."],
                &["rbuild", "--config", "c.toml", "build", "-t", "a", "."],
            ),
            (&["rbuild", "--config=c.toml", "images"], &["rbuild", "--config=c.toml", "images"]),
            (&["rbuild", "--root", "/s", "completion", "zsh"], &["rbuild", "--root", "/s", "completion", "zsh"]),
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
    /// Shorthand for `--set=*.load=true`: load into the local Docker engine or podman.
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
