//! A typed build request: everything one build of one target needs, parsed
//! and validated, with no clap types. The command line makes one
//! ([`BuildRequest::from_cli`]); a bake target will make another. Everything
//! below `commands` works from this value.
//!
//! Flag values are parsed as buildx parses them: `--output`, `--secret`,
//! `--cache-from` and `--cache-to` are CSV records with quoting ([`csv`]),
//! keys are case-insensitive, and an unknown key is an error that names it
//! and lists the valid ones.

pub mod cache;
use rbuild::csv;
pub mod output;
pub mod secret;

use std::collections::BTreeMap;
use std::path::PathBuf;

use rbuild_solver::graph::{NetworkMode, Platform, PlatformError};
use rbuild_solver::sandbox::Rlimit;
use rbuild_solver::solve::Entitlements;

pub use cache::{CacheDirection, CacheSpec};
pub use csv::CsvError;
pub use output::Output;
pub use secret::{SecretSpec, SshSpec};

use crate::cli::BuildArgs;
use crate::export::annotations::{self, AnnotationError, ImageAnnotations};
use crate::export::attest::{AttestError, Attestations};
use crate::progress::Mode;

/// Where the Dockerfile comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DockerfileSource {
    /// A file (`-f PATH`, default `CONTEXT/Dockerfile`).
    Path(PathBuf),
    /// Standard input (`-f -`).
    Stdin,
}

/// What a `--build-context NAME=VALUE` provides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContextSource {
    /// A local directory.
    Local(PathBuf),
    /// An image (`docker-image://REF`).
    Image(String),
    /// The result of another request of the same build, by its name (a bake
    /// `target:NAME` context): lowered into the same graph, one solve.
    Request(String),
}

/// Limits and defaults of RUN steps (`--network`, `--ulimit`, `--shm-size`,
/// `--cgroup-parent`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunLimits {
    /// Network of RUN steps that do not name one.
    pub network: NetworkMode,
    /// Resource limits.
    pub ulimits: Vec<Rlimit>,
    /// Size of `/dev/shm` in bytes.
    pub shm_size: Option<u64>,
    /// Parent cgroup of RUN processes.
    pub cgroup_parent: Option<String>,
    /// `--add-host` entries.
    pub extra_hosts: Vec<rbuild_solver::graph::HostEntry>,
}

/// Everything one build of one target needs.
#[derive(Clone, Debug)]
pub struct BuildRequest {
    /// A name for this request's outputs in a shared solve (the bake target
    /// name; `default` for the command line).
    pub name: String,
    /// Main context directory.
    pub context: PathBuf,
    /// The Dockerfile.
    pub dockerfile: DockerfileSource,
    /// `--target` stage.
    pub target: Option<String>,
    /// `--build-arg` values (a bare `KEY` already taken from the environment).
    pub args: BTreeMap<String, String>,
    /// Target platforms, at least one, no duplicates.
    pub platforms: Vec<Platform>,
    /// `--build-context` by name.
    pub contexts: BTreeMap<String, ContextSource>,
    /// `--secret`s.
    pub secrets: Vec<SecretSpec>,
    /// `--ssh` agents.
    pub ssh: Vec<SshSpec>,
    /// `-t` image names.
    pub tags: Vec<String>,
    /// Outputs (`type=image` when none was asked for; empty only for a
    /// request built as another request's [`ContextSource::Request`]).
    pub outputs: Vec<Output>,
    /// `--cache-from`.
    pub cache_from: Vec<CacheSpec>,
    /// `--cache-to`.
    pub cache_to: Vec<CacheSpec>,
    /// `--label`s for the image config.
    pub labels: BTreeMap<String, String>,
    /// `--annotation`s and the outputs' `annotation.*` attributes: one set
    /// for every image output of the build (its manifests are written once).
    pub annotations: ImageAnnotations,
    /// `--attest`, `--provenance`: the attestations to attach.
    pub attestations: Attestations,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter` stages.
    pub no_cache_filter: Vec<String>,
    /// `--pull`: re-resolve base image tags.
    pub pull: bool,
    /// Granted privileges (`--allow`).
    pub entitlements: Entitlements,
    /// RUN limits and defaults.
    pub run_limits: RunLimits,
    /// Progress output.
    pub progress: Mode,
    /// Frontend method: `build`, `check`, `outline` or `targets`.
    pub call: String,
    /// `--jobs` (default: number of CPUs).
    pub jobs: Option<usize>,
    /// `--iidfile`.
    pub iidfile: Option<PathBuf>,
    /// `--metadata-file`.
    pub metadata_file: Option<PathBuf>,
    /// Registries reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// `--registry-ca`: extra CA certificates for registries.
    pub registry_ca: Option<PathBuf>,
}

/// Why a build request is invalid.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The value is not one CSV record.
    #[error("`{flag}`: {source}")]
    Csv {
        /// The flag.
        flag: &'static str,
        /// The CSV error.
        #[source]
        source: CsvError,
    },
    /// A field without `=`.
    #[error("`{flag}`: `{field}` is not KEY=VALUE")]
    NotKeyValue {
        /// The flag.
        flag: &'static str,
        /// The field.
        field: String,
    },
    /// A `--secret` field without `=` (not echoed: it may be the value).
    #[error("`--secret`: a field is not KEY=VALUE (use `id=ID,src=PATH` or `id=ID,env=VAR`)")]
    SecretNotKeyValue,
    /// No `type=`.
    #[error("`{flag}`: missing `type=` (one of {types})")]
    MissingType {
        /// The flag.
        flag: &'static str,
        /// Valid types.
        types: &'static str,
    },
    /// An unknown `type=`.
    #[error("`{flag}`: unknown type `{kind}`; valid types: {types}")]
    UnknownType {
        /// The flag.
        flag: &'static str,
        /// The type given.
        kind: String,
        /// Valid types.
        types: &'static str,
    },
    /// A cache service buildx supports and rbuild does not (`s3`, `azblob`).
    #[error(
        "`{flag} type={kind}` is not supported by rbuild: use type=registry (any OCI registry) or type=local (a directory, e.g. saved by a CI cache action); supported types: registry, local, inline (export only)"
    )]
    UnsupportedCacheService {
        /// The flag.
        flag: &'static str,
        /// `s3` or `azblob`.
        kind: String,
    },
    /// A key the type does not know.
    #[error("`{what}`: unknown key `{key}`; valid keys: {valid}")]
    UnknownKey {
        /// The flag and type, e.g. `--output type=image`.
        what: String,
        /// The key given.
        key: String,
        /// Valid keys.
        valid: String,
    },
    /// A required key is missing.
    #[error("`{flag} type={kind}` needs `{key}=`")]
    MissingKey {
        /// The flag.
        flag: &'static str,
        /// The type.
        kind: String,
        /// The key.
        key: &'static str,
    },
    /// A key has a value it cannot take.
    #[error("`{flag}`: invalid `{key}={value}`: expected {expected}")]
    InvalidValue {
        /// The flag.
        flag: &'static str,
        /// The key.
        key: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// `--cache-from type=inline`.
    #[error(
        "`--cache-from type=inline` is not a cache source: inline cache is read from the image with `type=registry,ref=IMAGE`"
    )]
    InlineImport,
    /// `--secret` without an id.
    #[error("`--secret` needs `id=` (or `env=`)")]
    SecretWithoutId,
    /// A secret file could not be read.
    #[error("reading secret `{id}` from `{}`", path.display())]
    SecretFile {
        /// Secret id.
        id: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A secret's environment variable is not set.
    #[error("secret `{id}`: environment variable `{var}` is not set")]
    SecretEnv {
        /// Secret id.
        id: String,
        /// The variable.
        var: String,
    },
    /// `--ssh =...`.
    #[error("`--ssh`: missing the id (`default` or a name)")]
    SshWithoutId,
    /// `--ssh id=a,b`.
    #[error("`--ssh {id}`: give one agent socket; several sockets or key files are not supported")]
    SshSeveralPaths {
        /// Agent id.
        id: String,
    },
    /// `--ssh id` without `$SSH_AUTH_SOCK`.
    #[error("`--ssh {id}`: $SSH_AUTH_SOCK is not set")]
    SshNoAgent {
        /// Agent id.
        id: String,
    },
    /// A platform that does not parse.
    #[error("`--platform`: use os/arch[/variant], e.g. linux/amd64")]
    InvalidPlatform(#[source] PlatformError),
    /// `--build-context` without `=`.
    #[error("invalid `--build-context {spec}`: expected NAME=PATH or NAME=docker-image://REF")]
    BuildContextSyntax {
        /// The value.
        spec: String,
    },
    /// A build-context source rbuild does not read yet.
    #[error(
        "`--build-context {name}={value}`: {kind} contexts are not supported yet; use a local directory or docker-image://REF"
    )]
    BuildContextUnsupported {
        /// Context name.
        name: String,
        /// The value.
        value: String,
        /// What it looks like (`git`, `oci-layout`, ...).
        kind: &'static str,
    },
    /// A local build context that is not a directory.
    #[error("`--build-context {name}={value}`: `{value}` is not a directory")]
    BuildContextNotDir {
        /// Context name.
        name: String,
        /// The value.
        value: String,
    },
    /// `--load` with several platforms.
    #[error(
        "`--load` loads one platform's image into the engine; build one platform, or use `-o type=oci` for several"
    )]
    LoadSeveralPlatforms,
    /// `--progress` value.
    #[error("invalid `--progress {value}`: use auto, tty, plain, rawjson or quiet")]
    InvalidProgress {
        /// The value.
        value: String,
    },
    /// An `--annotation` or an output's `annotation.*` attribute.
    #[error("`--annotation`")]
    Annotation(#[source] AnnotationError),
    /// An `--attest`, `--provenance` or `--sbom` value.
    #[error("`--attest`")]
    Attest(#[source] AttestError),
}

/// The annotations of a build: the `--annotation` specs, then each image
/// output's `annotation*` attributes (buildx adds `--annotation` to every
/// output; rbuild writes each platform's manifest once, so one set serves
/// all outputs).
pub fn collect_annotations<'a>(
    specs: impl IntoIterator<Item = &'a str>,
    outputs: &[Output],
) -> Result<ImageAnnotations, RequestError> {
    let mut all = ImageAnnotations::default();
    for spec in specs {
        all.entries.extend(annotations::parse_spec(spec).map_err(RequestError::Annotation)?);
    }
    for image in outputs.iter().filter_map(Output::image_attrs) {
        all.entries.extend(image.annotations.iter().cloned());
    }
    Ok(all)
}

/// Go's `strconv.ParseBool`, which buildx uses for boolean attributes.
pub(crate) fn parse_bool(flag: &'static str, key: &'static str, value: &str) -> Result<bool, RequestError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(RequestError::InvalidValue { flag, key, value: value.to_string(), expected: "true or false" }),
    }
}

/// Fails on the first key of `attrs` not in `valid` (keys are sorted, so the
/// error is the same whatever the order on the command line).
pub(crate) fn require_known(
    flag: &'static str,
    kind: &str,
    attrs: &BTreeMap<String, String>,
    valid: &[&str],
) -> Result<(), RequestError> {
    if let Some(key) = attrs.keys().find(|k| !valid.contains(&k.as_str())) {
        let what = if kind.is_empty() { flag.to_string() } else { format!("{flag} type={kind}") };
        return Err(RequestError::UnknownKey { what, key: key.clone(), valid: valid.join(", ") });
    }
    Ok(())
}

/// Parses a comma-separated `--platform` list (several flags add up);
/// duplicates are dropped, order kept. Empty: the host platform.
pub fn parse_platforms<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Vec<Platform>, RequestError> {
    let mut out: Vec<Platform> = Vec::new();
    for p in values.into_iter().flat_map(|v| v.split(',')).map(str::trim).filter(|p| !p.is_empty()) {
        let platform = Platform::try_parse(p).map_err(RequestError::InvalidPlatform)?;
        if !out.contains(&platform) {
            out.push(platform);
        }
    }
    if out.is_empty() {
        out.push(Platform::host());
    }
    Ok(out)
}

/// Parses one `--build-context NAME=VALUE`.
pub fn parse_build_context(spec: &str) -> Result<(String, ContextSource), RequestError> {
    let Some((name, value)) = spec.split_once('=').filter(|(n, v)| !n.is_empty() && !v.is_empty()) else {
        return Err(RequestError::BuildContextSyntax { spec: spec.to_string() });
    };
    let unsupported =
        |kind| RequestError::BuildContextUnsupported { name: name.to_string(), value: value.to_string(), kind };
    if let Some(reference) = value.strip_prefix("docker-image://") {
        return Ok((name.to_string(), ContextSource::Image(reference.to_string())));
    }
    if value.starts_with("oci-layout://") {
        return Err(unsupported("oci-layout"));
    }
    if value.starts_with("target:") {
        return Err(unsupported("bake target"));
    }
    if value.starts_with("git@") || value.starts_with("git://") || value.ends_with(".git") {
        return Err(unsupported("git"));
    }
    if value.contains("://") {
        return Err(unsupported("remote"));
    }
    if !std::path::Path::new(value).is_dir() {
        return Err(RequestError::BuildContextNotDir { name: name.to_string(), value: value.to_string() });
    }
    Ok((name.to_string(), ContextSource::Local(PathBuf::from(value))))
}

impl BuildRequest {
    /// The request the command line asks for.
    pub fn from_cli(args: &BuildArgs) -> Result<BuildRequest, RequestError> {
        let mut build_args = BTreeMap::new();
        for a in &args.build_args {
            match a.split_once('=') {
                Some((k, v)) => {
                    build_args.insert(k.to_string(), v.to_string());
                }
                // `--build-arg KEY` takes the value from the environment, as docker does.
                None => {
                    if let Ok(v) = std::env::var(a) {
                        build_args.insert(a.clone(), v);
                    }
                }
            }
        }
        let labels = args
            .label
            .iter()
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        let contexts = args.build_context.iter().map(|c| parse_build_context(c)).collect::<Result<_, _>>()?;
        let mut outputs = args.output.iter().map(|o| output::parse(o)).collect::<Result<Vec<_>, _>>()?;
        if args.push {
            outputs.push(Output::Image { image: Default::default(), push: true });
        }
        if args.load {
            outputs.push(Output::Load { image: Default::default() });
        }
        if outputs.is_empty() {
            outputs.push(Output::Image { image: Default::default(), push: false });
        }
        let annotations = collect_annotations(args.annotation.iter().map(String::as_str), &outputs)?;
        let mut attestations = Attestations::default();
        for a in &args.attest {
            attestations.add(a).map_err(RequestError::Attest)?;
        }
        if let Some(v) = &args.provenance {
            attestations.add_provenance_flag(v).map_err(RequestError::Attest)?;
        }
        if let Some(v) = &args.sbom {
            let spec = match v.as_str() {
                "false" | "0" => "type=sbom,disabled=true".to_string(),
                "true" | "1" => "type=sbom".to_string(),
                attrs => format!("type=sbom,{attrs}"),
            };
            attestations.add(&spec).map_err(RequestError::Attest)?;
        }
        let mut cache_from = Vec::new();
        for c in &args.cache_from {
            cache_from.extend(CacheSpec::parse(c, CacheDirection::Import)?);
        }
        let mut cache_to = Vec::new();
        for c in &args.cache_to {
            cache_to.extend(CacheSpec::parse(c, CacheDirection::Export)?);
        }
        let progress = Mode::parse(&args.progress, args.quiet)
            .map_err(|_| RequestError::InvalidProgress { value: args.progress.clone() })?;
        let platforms = parse_platforms(args.platform.iter().map(String::as_str))?;
        // Said before building, not after: an engine takes one platform's image.
        if platforms.len() > 1 && outputs.iter().any(|o| matches!(o, Output::Load { .. })) {
            return Err(RequestError::LoadSeveralPlatforms);
        }
        let dockerfile = match &args.file {
            Some(f) if f.as_os_str() == "-" => DockerfileSource::Stdin,
            Some(f) => DockerfileSource::Path(f.clone()),
            None => DockerfileSource::Path(args.context.join("Dockerfile")),
        };
        Ok(BuildRequest {
            name: "default".into(),
            context: args.context.clone(),
            dockerfile,
            target: args.target.clone(),
            args: build_args,
            platforms,
            contexts,
            secrets: args.secret.iter().map(|s| SecretSpec::parse(s)).collect::<Result<_, _>>()?,
            ssh: args.ssh.iter().map(|s| SshSpec::parse(s)).collect::<Result<_, _>>()?,
            tags: args.tags.clone(),
            outputs,
            cache_from,
            cache_to,
            labels,
            annotations,
            attestations,
            no_cache: args.no_cache,
            no_cache_filter: args.no_cache_filter.clone(),
            pull: args.pull,
            entitlements: args.entitlements(),
            run_limits: RunLimits {
                network: args.network,
                ulimits: args.ulimit.clone(),
                shm_size: args.shm_size,
                extra_hosts: args.add_host.iter().flat_map(|h| h.0.iter().cloned()).collect(),
                cgroup_parent: args.cgroup_parent.clone(),
            },
            progress,
            call: if args.check { "check".into() } else { args.call.clone() },
            jobs: args.jobs,
            iidfile: args.iidfile.clone(),
            metadata_file: args.metadata_file.clone(),
            insecure_registries: args.insecure_registry.clone(),
            registry_ca: args.registry_ca.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::cache::CacheBackend;
    use super::secret::SecretSource;
    use super::*;

    #[test]
    fn platforms_are_deduplicated_and_default_to_the_host() {
        let p = parse_platforms(["linux/amd64,linux/arm64", "linux/x86_64"]).unwrap();
        assert_eq!(p.iter().map(|p| p.to_string()).collect::<Vec<_>>(), ["linux/amd64", "linux/arm64"]);
        assert_eq!(parse_platforms([]).unwrap(), vec![Platform::host()]);
        let e = parse_platforms(["linux//"]).unwrap_err();
        assert_eq!(e.to_string(), "`--platform`: use os/arch[/variant], e.g. linux/amd64");
        let cause = std::error::Error::source(&e).map(|c| c.to_string()).unwrap_or_default();
        assert_eq!(cause, "invalid platform `linux//`: the architecture is empty");
    }

    #[test]
    fn build_contexts_parse_and_unsupported_sources_say_so() {
        assert_eq!(
            parse_build_context("base=docker-image://alpine:3").unwrap(),
            ("base".to_string(), ContextSource::Image("alpine:3".into()))
        );
        assert_eq!(parse_build_context("bin=/bin").unwrap(), ("bin".to_string(), ContextSource::Local("/bin".into())));
        let table: &[(&str, &str)] = &[
            ("bin", "invalid `--build-context bin`: expected NAME=PATH or NAME=docker-image://REF"),
            ("=/bin", "invalid `--build-context =/bin`: expected NAME=PATH or NAME=docker-image://REF"),
            (
                "x=oci-layout:///tmp/l",
                "`--build-context x=oci-layout:///tmp/l`: oci-layout contexts are not supported yet; use a local directory or docker-image://REF",
            ),
            (
                "x=target:base",
                "`--build-context x=target:base`: bake target contexts are not supported yet; use a local directory or docker-image://REF",
            ),
            (
                "x=https://github.com/a/b.git",
                "`--build-context x=https://github.com/a/b.git`: git contexts are not supported yet; use a local directory or docker-image://REF",
            ),
            (
                "x=https://example.com/ctx.tar",
                "`--build-context x=https://example.com/ctx.tar`: remote contexts are not supported yet; use a local directory or docker-image://REF",
            ),
            (
                "x=/nonexistent/rbuild",
                "`--build-context x=/nonexistent/rbuild`: `/nonexistent/rbuild` is not a directory",
            ),
        ];
        for (spec, message) in table {
            assert_eq!(parse_build_context(spec).unwrap_err().to_string(), *message, "{spec}");
        }
    }

    #[test]
    fn cli_flags_become_one_typed_request() {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            build: BuildArgs,
        }
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().display().to_string();
        let args = Wrap::parse_from([
            "rbuild",
            "-t",
            "app:1",
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            "type=image,\"name=a:1,b:2\",push=true",
            "--push",
            "--cache-from",
            "r/app:cache",
            "--cache-to",
            "type=inline",
            "--secret",
            "id=tok,env=TOKEN",
            "--build-arg",
            "V=1",
            "--label",
            "k=v",
            "--check",
            &ctx,
        ])
        .build;
        let r = BuildRequest::from_cli(&args).unwrap();
        assert_eq!(r.platforms.len(), 2);
        assert_eq!(r.tags, ["app:1"]);
        assert_eq!(r.outputs.len(), 2);
        assert!(matches!(&r.outputs[0], Output::Image { image, push: true } if image.names == ["a:1", "b:2"]));
        assert!(matches!(&r.outputs[1], Output::Image { image, push: true } if image.names.is_empty()));
        assert_eq!(r.cache_from.len(), 1);
        assert_eq!(r.cache_to[0].backend, CacheBackend::Inline);
        assert_eq!(r.secrets[0].source, SecretSource::Env("TOKEN".into()));
        assert_eq!(r.args["V"], "1");
        assert_eq!(r.labels["k"], "v");
        assert_eq!(r.call, "check");
        assert_eq!(r.dockerfile, DockerfileSource::Path(dir.path().join("Dockerfile")));
        // No output asked for: the local store.
        let plain = Wrap::parse_from(["rbuild", &ctx]).build;
        let r = BuildRequest::from_cli(&plain).unwrap();
        assert!(matches!(&r.outputs[..], [Output::Image { push: false, .. }]));
        let load = Wrap::parse_from(["rbuild", "--load", &ctx]).build;
        let r = BuildRequest::from_cli(&load).unwrap();
        assert!(matches!(&r.outputs[..], [Output::Load { .. }]), "{:?}", r.outputs);
        let bad = Wrap::parse_from(["rbuild", "--progress", "fancy", &ctx]).build;
        assert_eq!(
            BuildRequest::from_cli(&bad).unwrap_err().to_string(),
            "invalid `--progress fancy`: use auto, tty, plain, rawjson or quiet"
        );
    }
}
