//! Lowering: typed instructions to a build graph and the target's image
//! config.
//!
//! Mirrors BuildKit's `dockerfile2llb`: resolve stages (by name, by index,
//! by image), global vs stage ARG scoping, ENV, predefined platform ARGs,
//! word expansion, and emit a [`Definition`] for the requested target.
//! Stages the target does not reach are never lowered, so they produce no
//! vertex and their base images are never resolved.
//!
//! One file per feature: [`stage`] holds the per-stage state and dispatch of
//! metadata instructions, [`run`] RUN and its mounts, [`copy`] COPY/ADD,
//! [`history`] how BuildKit spells history entries.

mod args;
mod copy;
mod history;
mod run;
mod stage;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rbuild_cache::oci::{History, ImageConfig};
use rbuild_solver::graph::{Definition, Digest, NetworkMode, Op, Platform, SourceOp, VertexMeta};
use rbuild_solver::sandbox::Rlimit;
use rbuild_solver::solve::Entitlements;

use crate::diagnostic::{Diagnostic, Span};
use crate::instructions::{self, CommandLine};

pub use args::{BuiltinArgs, PROXY_ARGS};
pub use stage::{MAX_GRAPH_BYTES, MAX_STAGE_DEPTH};

/// The default `PATH` BuildKit gives Linux images that have none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A base image as resolved by the image-config resolver.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedBase {
    /// Normalised reference pinned to the manifest digest
    /// (`docker.io/library/busybox:latest@sha256:...`).
    pub reference: String,
    /// The image's config (Env, WorkingDir, User, Shell, OnBuild, history...).
    pub config: ImageConfig,
}

/// Why an [`ImageConfigResolver`] could not resolve a base image: the
/// implementation's own error (registry, store...), shared because lowering
/// keeps each result for every stage that names the same image.
#[derive(Clone, Debug, thiserror::Error)]
#[error(transparent)]
pub struct ResolveError(Arc<dyn std::error::Error + Send + Sync>);

impl ResolveError {
    /// Wraps an implementation's error (or message, in tests).
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ResolveError(Arc::from(e.into()))
    }
}

/// Looks up base image configs. `builder` implements it with the registry
/// client and the store; tests implement it in memory.
pub trait ImageConfigResolver {
    /// Resolves every request; the implementation may do them concurrently.
    /// The lowering attaches the span to errors.
    fn resolve_all(&self, requests: &[(String, Platform)]) -> Vec<Result<ResolvedBase, ResolveError>>;
}

/// What a `--build-context name=value` provides.
#[derive(Clone, Debug, PartialEq)]
pub enum NamedContext {
    /// A local directory, used like the main context.
    Local,
    /// An image reference (`docker-image://ref`).
    Image(String),
    /// The result of another build lowered for the same platform (a bake
    /// `target:NAME` context): its graph is taken into this one, so both
    /// run in one solve and the shared part once.
    Graph(Arc<BuiltContext>),
}

/// Another build's result used as a context (BuildKit's `input:` contexts,
/// which carry the result's image config as metadata).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BuiltContext {
    /// Its graph; `definition.output()` is its result.
    pub definition: Definition,
    /// Its image config: `FROM` the context starts from it (Env,
    /// WorkingDir, User, Entrypoint, Cmd, Labels, ONBUILD triggers...), as
    /// `FROM` an image does. `None`: a bare filesystem, like `scratch`.
    pub config: Option<ImageConfig>,
    /// Its history, base entries first, aligned with its layers.
    pub history: Vec<HistoryStep>,
}

impl BuiltContext {
    /// The result of `lowered`, to be used as a context.
    pub fn of(lowered: &LoweredBuild) -> Self {
        BuiltContext {
            definition: lowered.definition.clone(),
            config: Some(lowered.config.clone()),
            history: lowered.history.clone(),
        }
    }
}

/// Inputs to lowering besides the Dockerfile.
#[derive(Clone, Debug)]
pub struct LowerOptions {
    /// `--target`; `None` means the last stage.
    pub target: Option<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// Platform the build runs on.
    pub build_platform: Platform,
    /// Platform of the result (`--platform`).
    pub target_platform: Platform,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter` stage names.
    pub no_cache_filter: Vec<String>,
    /// `--label` values added to the image config.
    pub labels: BTreeMap<String, String>,
    /// `.dockerignore` patterns of the main context.
    pub dockerignore: Vec<String>,
    /// `--build-context` names.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// Where each local context (`context` and named ones) comes from, by
    /// name; it becomes part of the context vertex's identity so that
    /// merged graphs of several targets keep same-named contexts of
    /// different directories apart. Missing: no origin.
    pub context_origins: BTreeMap<String, String>,
    /// Dockerfile path as the user named it (for diagnostics).
    pub file_name: String,
    /// Network of `RUN`s without `--network` (or with `--network=default`):
    /// the build's `--network`, which BuildKit's frontend stores in each
    /// exec op (`force-network-mode`), so it is part of their cache keys.
    pub default_network: NetworkMode,
    /// Granted entitlements (`--allow`): a `RUN` needing another one is an
    /// error at its line. `None` does not check (graph dumps, golden tests);
    /// the solver checks again before running anything.
    pub entitlements: Option<Entitlements>,
    /// `--ulimit`s of every `RUN` (stored in each exec op, as BuildKit does).
    pub ulimits: Vec<Rlimit>,
    /// `--shm-size` of every `RUN` in bytes; 0 is the default.
    pub shm_size: u64,
    /// `--add-host` entries of every `RUN`'s `/etc/hosts`.
    pub extra_hosts: Vec<rbuild_solver::graph::HostEntry>,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions {
            target: None,
            build_args: BTreeMap::new(),
            build_platform: Platform::host(),
            target_platform: Platform::host(),
            no_cache: false,
            no_cache_filter: Vec::new(),
            labels: BTreeMap::new(),
            dockerignore: Vec::new(),
            named_contexts: BTreeMap::new(),
            context_origins: BTreeMap::new(),
            file_name: "Dockerfile".into(),
            default_network: NetworkMode::Default,
            entitlements: None,
            ulimits: Vec::new(),
            shm_size: 0,
            extra_hosts: Vec::new(),
        }
    }
}

/// A history entry and, when it adds a layer, the vertex whose snapshot is
/// that layer.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryStep {
    /// The entry (without `created`; the exporter stamps times).
    pub history: History,
    /// The vertex producing this step's layer.
    pub layer: Option<Digest>,
}

/// The result of lowering.
#[derive(Clone, Debug)]
pub struct LoweredBuild {
    /// The graph; `definition.output()` is the target stage's final state.
    pub definition: Definition,
    /// The target's image config (history and rootfs are filled at export).
    pub config: ImageConfig,
    /// History of the target in order; base image entries first.
    pub history: Vec<HistoryStep>,
    /// Platform of the target.
    pub platform: Platform,
    /// Name (or index) of the target stage.
    pub target: String,
    /// Build args given but never consumed (BuildKit warns about these).
    pub unused_build_args: Vec<String>,
}

/// Parses `text` and lowers it (see [`lower`]).
pub fn parse_and_lower(
    text: &str,
    opts: &LowerOptions,
    resolver: &dyn ImageConfigResolver,
) -> Result<LoweredBuild, Diagnostic> {
    let dockerfile = instructions::parse_dockerfile(text, &opts.file_name)?;
    lower(&dockerfile, opts, resolver).map_err(|d| d.with_source(&opts.file_name, text))
}

/// Lowers a parsed Dockerfile for `opts.target`.
pub fn lower(
    dockerfile: &instructions::Dockerfile,
    opts: &LowerOptions,
    resolver: &dyn ImageConfigResolver,
) -> Result<LoweredBuild, Diagnostic> {
    let mut lowering = Lowering::new(dockerfile, opts, resolver)?;
    let target = lowering.target_index()?;
    lowering.prefetch_bases(target);
    lowering.lower_stage(target, &mut Vec::new())?;
    lowering.finish(target)
}

/// Expands a word with the BuildKit shell lexer, mapping errors to a span.
pub(crate) fn expand(
    lexer: &crate::shell::Lexer,
    word: &str,
    env: &dyn Fn(&str) -> Option<String>,
    span: Span,
) -> Result<String, Diagnostic> {
    lexer.expand_word(word, env).map_err(|e| Diagnostic::new(span, e.to_string()))
}

/// The lowering of one Dockerfile for one target.
pub(crate) struct Lowering<'a> {
    pub(crate) dockerfile: &'a instructions::Dockerfile,
    pub(crate) opts: &'a LowerOptions,
    resolver: &'a dyn ImageConfigResolver,
    pub(crate) lexer: crate::shell::Lexer,
    pub(crate) definition: Definition,
    /// Global ARG values (declared before the first FROM).
    pub(crate) global_args: Vec<(String, Option<String>)>,
    pub(crate) builtin: BuiltinArgs,
    /// Lowered stages by index.
    pub(crate) stages: HashMap<usize, stage::StageResult>,
    /// Resolved base images by (reference, platform).
    bases: HashMap<(String, Platform), Result<ResolvedBase, ResolveError>>,
    /// Vertex of the main context source, created on first use.
    pub(crate) context_vertex: HashMap<String, Digest>,
    /// Build args read by some ARG.
    pub(crate) used_args: std::collections::BTreeSet<String>,
}

impl<'a> Lowering<'a> {
    fn new(
        dockerfile: &'a instructions::Dockerfile,
        opts: &'a LowerOptions,
        resolver: &'a dyn ImageConfigResolver,
    ) -> Result<Self, Diagnostic> {
        let lexer = crate::shell::Lexer::new(dockerfile.escape);
        let builtin = BuiltinArgs::new(&opts.build_platform, &opts.target_platform);
        let mut lowering = Lowering {
            dockerfile,
            opts,
            resolver,
            lexer,
            definition: Definition::default(),
            global_args: Vec::new(),
            builtin,
            stages: HashMap::new(),
            bases: HashMap::new(),
            context_vertex: HashMap::new(),
            used_args: Default::default(),
        };
        lowering.global_args = lowering.eval_global_args()?;
        if dockerfile.stages.is_empty() {
            return Err(Diagnostic::new(Span::at(1, 1), "the Dockerfile has no `FROM` instruction")
                .suggest("start the Dockerfile with `FROM <image>` or `FROM scratch`"));
        }
        Ok(lowering)
    }

    /// Looks a global ARG (or a builtin platform ARG) up, for FROM lines.
    pub(crate) fn global_lookup(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.global_args.iter().rev().find(|(k, _)| k == name) {
            return v.clone();
        }
        self.builtin.get(name)
    }

    fn eval_global_args(&mut self) -> Result<Vec<(String, Option<String>)>, Diagnostic> {
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        for command in &self.dockerfile.global_args {
            let instructions::Instruction::Arg(pairs) = &command.instruction else { continue };
            for (name, default) in pairs {
                let value = if let Some(v) = self.opts.build_args.get(name) {
                    self.used_args.insert(name.clone());
                    Some(v.clone())
                } else if let Some(d) = default {
                    let lookup = |k: &str| {
                        out.iter()
                            .rev()
                            .find(|(n, _)| n == k)
                            .and_then(|(_, v)| v.clone())
                            .or_else(|| self.builtin.get(k))
                    };
                    Some(expand(&self.lexer, d, &lookup, command.span)?)
                } else {
                    None
                };
                out.push((name.clone(), value));
            }
        }
        Ok(out)
    }

    /// Index of the stage named (or numbered) `name`, among all stages.
    pub(crate) fn stage_by_name(&self, name: &str) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Some(i) = self.dockerfile.stages.iter().position(|s| s.from.name.as_deref() == Some(lower.as_str())) {
            return Some(i);
        }
        name.parse::<usize>().ok().filter(|i| *i < self.dockerfile.stages.len())
    }

    fn target_index(&self) -> Result<usize, Diagnostic> {
        match &self.opts.target {
            None => Ok(self.dockerfile.stages.len() - 1),
            Some(t) => {
                let lower = t.to_ascii_lowercase();
                self.dockerfile.stages.iter().position(|s| s.from.name.as_deref() == Some(lower.as_str())).ok_or_else(
                    || {
                        let names: Vec<&str> =
                            self.dockerfile.stages.iter().filter_map(|s| s.from.name.as_deref()).collect();
                        let mut d = Diagnostic::new(Span::at(1, 1), format!("target stage `{t}` could not be found"));
                        d.suggestion = crate::diagnostic::closest(t, &names)
                            .map(|c| format!("did you mean `{c}`?"))
                            .or_else(|| (!names.is_empty()).then(|| format!("stages: {}", names.join(", "))));
                        d
                    },
                )
            }
        }
    }

    /// The FROM reference of stage `index`, expanded with global ARGs.
    pub(crate) fn stage_base_name(&self, index: usize) -> Result<String, Diagnostic> {
        let stage = &self.dockerfile.stages[index];
        let lookup = |k: &str| self.global_lookup(k);
        let image = expand(&self.lexer, &stage.from.image, &lookup, stage.span)?;
        if image.is_empty() {
            return Err(Diagnostic::new(stage.span, "base name (`FROM` argument) should not be blank")
                .suggest("check that the ARG used in `FROM` has a value"));
        }
        Ok(image)
    }

    /// The platform of stage `index` (`FROM --platform`, else the target's).
    pub(crate) fn stage_platform(&self, index: usize) -> Result<Platform, Diagnostic> {
        let stage = &self.dockerfile.stages[index];
        match &stage.from.platform {
            None => Ok(self.opts.target_platform.clone()),
            Some(p) => {
                let lookup = |k: &str| self.global_lookup(k);
                let value = expand(&self.lexer, p, &lookup, stage.span)?;
                Platform::try_parse(&value).map_err(|e| {
                    Diagnostic::new(stage.span, e.to_string()).suggest("use `os/arch[/variant]`, e.g. `linux/amd64`")
                })
            }
        }
    }

    /// Resolves, concurrently through the resolver, the base images of the
    /// stages the target reaches by a syntactic scan (FROM, `--from`,
    /// `--mount from=`). Anything the scan misses is resolved on demand.
    fn prefetch_bases(&mut self, target: usize) {
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![target];
        let mut requests: Vec<(String, Platform)> = Vec::new();
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            let Ok(platform) = self.stage_platform(i) else { continue };
            let mut refs: Vec<String> = Vec::new();
            if let Ok(base) = self.stage_base_name(i) {
                refs.push(base);
            }
            for command in &self.dockerfile.stages[i].commands {
                match &command.instruction {
                    instructions::Instruction::Copy(c) => refs.extend(c.from.clone()),
                    instructions::Instruction::Run(r) => refs.extend(r.mounts.iter().filter_map(|m| m.from.clone())),
                    _ => {}
                }
            }
            for r in refs {
                if r.contains('$') {
                    continue;
                }
                match self.stage_by_name(&r).filter(|&j| j < self.dockerfile.stages.len()) {
                    Some(j) if j != i => stack.push(j),
                    Some(_) => {}
                    None if r.eq_ignore_ascii_case("scratch") || self.opts.named_contexts.contains_key(&r) => {}
                    None => {
                        let key = (r, platform.clone());
                        if !requests.contains(&key) {
                            requests.push(key);
                        }
                    }
                }
            }
        }
        if requests.is_empty() {
            return;
        }
        let results = self.resolver.resolve_all(&requests);
        for (key, result) in requests.into_iter().zip(results) {
            self.bases.insert(key, result);
        }
    }

    /// The resolved base image for `reference` on `platform`.
    pub(crate) fn resolve_base(
        &mut self,
        reference: &str,
        platform: &Platform,
        span: Span,
    ) -> Result<ResolvedBase, Diagnostic> {
        let key = (reference.to_string(), platform.clone());
        if !self.bases.contains_key(&key) {
            let mut results = self.resolver.resolve_all(std::slice::from_ref(&key));
            let result = results.pop().unwrap_or_else(|| Err(ResolveError::new("the resolver returned nothing")));
            self.bases.insert(key.clone(), result);
        }
        // A diagnostic is a located message: the resolver's error chain
        // becomes part of its text.
        self.bases[&key].clone().map_err(|e| {
            let mut message = format!("failed to resolve base image `{reference}`");
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&*e.0);
            while let Some(err) = cur {
                message.push_str(": ");
                message.push_str(&err.to_string());
                cur = err.source();
            }
            Diagnostic::new(span, message)
        })
    }

    /// Adds an image source vertex.
    pub(crate) fn image_vertex(&mut self, base: &ResolvedBase, platform: &Platform, stage: Option<&str>) -> Digest {
        self.definition.add(
            Op::Source(SourceOp::Image { reference: base.reference.clone(), platform: platform.clone() }),
            vec![],
            VertexMeta {
                description: format!("FROM {}", base.reference),
                stage: stage.map(str::to_string),
                ..Default::default()
            },
        )
    }

    /// The vertex of a local context (`context` or a named one).
    pub(crate) fn context(&mut self, name: &str) -> Digest {
        if let Some(d) = self.context_vertex.get(name) {
            return *d;
        }
        let exclude = if name == "context" { self.opts.dockerignore.clone() } else { Vec::new() };
        let origin = self.opts.context_origins.get(name).cloned().unwrap_or_default();
        let d = self.definition.add(
            Op::Source(SourceOp::Context { name: name.to_string(), origin, include: vec![], exclude }),
            vec![],
            VertexMeta { description: format!("load build context {name}"), ..Default::default() },
        );
        self.context_vertex.insert(name.to_string(), d);
        d
    }

    fn finish(mut self, target: usize) -> Result<LoweredBuild, Diagnostic> {
        let result = self.stages.remove(&target).expect("target stage was lowered");
        self.definition.set_output(rbuild_solver::graph::MAIN_OUTPUT, result.state);
        self.definition.prune_unreachable();
        let mut config = result.config;
        for (k, v) in &self.opts.labels {
            config.config.labels.insert(k.clone(), v.clone());
        }
        let unused_build_args = self
            .opts
            .build_args
            .keys()
            .filter(|k| {
                !self.used_args.contains(*k) && !PROXY_ARGS.contains(&k.as_str()) && self.builtin.get(k).is_none()
            })
            .cloned()
            .collect();
        Ok(LoweredBuild {
            definition: self.definition,
            config,
            history: result.history.to_vec(),
            platform: result.platform,
            target: result.name,
            unused_build_args,
        })
    }
}

/// Turns CMD/ENTRYPOINT/HEALTHCHECK forms into argv using `shell`.
pub(crate) fn command_argv(command: &CommandLine, shell: &[String]) -> Vec<String> {
    match command {
        CommandLine::Exec(v) => v.clone(),
        CommandLine::Shell(s) => {
            let mut argv = shell.to_vec();
            argv.push(s.clone());
            argv
        }
    }
}

#[cfg(test)]
mod tests;
