//! Per-stage state and the dispatch of each instruction.

use std::collections::BTreeMap;

use rbuild_cache::oci::{Empty, HealthConfig, History, ImageConfig};
use rbuild_solver::graph::{Digest, FileAction, FileOp, Op, Platform, VertexMeta};

use super::{DEFAULT_PATH, HistoryStep, Lowering, command_argv, expand, history};
use crate::diagnostic::{Diagnostic, Span};
use crate::instructions::{Command, Healthcheck, Instruction};

/// A stage's history as a shared, persistent list: a stage built `FROM`
/// another extends its parent's list without copying it (chains of stages
/// made lowering quadratic when every stage cloned all earlier history).
#[derive(Clone, Debug, Default)]
pub(crate) struct HistoryChain(Option<std::rc::Rc<(HistoryStep, HistoryChain)>>);

impl HistoryChain {
    pub fn push(&mut self, step: HistoryStep) {
        let prev = std::mem::take(self);
        *self = HistoryChain(Some(std::rc::Rc::new((step, prev))));
    }

    /// The steps, oldest first.
    pub fn to_vec(&self) -> Vec<HistoryStep> {
        let mut out = Vec::new();
        let mut cur = &self.0;
        while let Some(node) = cur {
            out.push(node.0.clone());
            cur = &node.1.0;
        }
        out.reverse();
        out
    }
}

impl Drop for HistoryChain {
    /// Unlinks the list node by node: the derived drop recursed once per
    /// step, so a stage with ~100,000 instructions overflowed the stack.
    fn drop(&mut self) {
        let mut cur = self.0.take();
        while let Some(node) = cur {
            cur = match std::rc::Rc::try_unwrap(node) {
                Ok((_, mut rest)) => rest.0.take(),
                // Shared with another stage: that stage still owns the rest.
                Err(_) => None,
            };
        }
    }
}

/// Longest chain of stages built from (or copying from) one another.
pub const MAX_STAGE_DEPTH: usize = 100;

/// Most canonical-encoding bytes the lowered graph may hold (128 MiB; a
/// 5,000-instruction Dockerfile with ordinary values needs a few MiB).
pub const MAX_GRAPH_BYTES: u64 = 128 << 20;

/// A lowered stage.
#[derive(Clone, Debug)]
pub(crate) struct StageResult {
    /// Stage name, or its index as a string.
    pub name: String,
    /// Final vertex (`None`: an empty filesystem, `FROM scratch`).
    pub state: Option<Digest>,
    /// Image config at the end of the stage.
    pub config: ImageConfig,
    /// History at the end of the stage.
    pub history: HistoryChain,
    /// Platform of the stage.
    pub platform: Platform,
}

/// The state threaded through a stage's instructions.
pub(crate) struct StageState {
    pub name: String,
    pub index: usize,
    pub state: Option<Digest>,
    pub config: ImageConfig,
    pub history: HistoryChain,
    pub platform: Platform,
    /// Declared stage ARGs with their values, in order.
    pub args: Vec<(String, Option<String>)>,
    /// Whether CMD was set in this stage (ENTRYPOINT resets an inherited CMD).
    pub cmd_set: bool,
    /// Step counter for descriptions.
    pub step: usize,
    pub total_steps: usize,
    pub ignore_cache: bool,
}

impl StageState {
    /// Looks a variable up as a Dockerfile word would see it: ENV wins over ARG.
    pub fn lookup(&self, name: &str) -> Option<String> {
        if let Some(v) = self.config.env_get(name) {
            return Some(v.to_string());
        }
        self.args.iter().rev().find(|(k, _)| k == name).and_then(|(_, v)| v.clone())
    }

    /// Environment of a RUN: the image env plus declared ARGs (not
    /// overridden by ENV), with a default PATH.
    pub fn run_env(&self, proxies: &BTreeMap<String, String>) -> Vec<String> {
        let base = &self.config.config.env;
        // Borrowed keys: this runs for every RUN, over env lists that grow
        // along chains of stages.
        let mut keys: std::collections::HashSet<&str> =
            base.iter().map(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k)).collect();
        let mut env = Vec::with_capacity(base.len() + self.args.len() + 1);
        if !keys.contains("PATH") {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        env.extend(base.iter().cloned());
        for (k, v) in &self.args {
            if let Some(v) = v
                && keys.insert(k.as_str())
            {
                env.push(format!("{k}={v}"));
            }
        }
        for (k, v) in proxies {
            if keys.insert(k.as_str()) {
                env.push(format!("{k}={v}"));
            }
        }
        env
    }

    /// Description prefix `[name i/n]`.
    pub fn describe(&mut self, text: &str) -> String {
        self.step += 1;
        format!("[{} {}/{}] {}", self.name, self.step, self.total_steps, text)
    }

    pub fn meta(&mut self, text: &str) -> VertexMeta {
        VertexMeta {
            description: self.describe(text),
            stage: Some(self.name.clone()),
            ignore_cache: self.ignore_cache,
            ..Default::default()
        }
    }

    pub fn commit_history(&mut self, created_by: String, layer: Option<Digest>) {
        self.history.push(HistoryStep {
            history: History {
                created: None,
                created_by,
                comment: "buildkit.dockerfile.v0".into(),
                empty_layer: layer.is_none(),
            },
            layer,
        });
    }

    /// Resolves `path` against the working directory.
    pub fn abs_path(&self, path: &str) -> String {
        if path.starts_with('/') {
            return path.to_string();
        }
        let wd = if self.config.config.working_dir.is_empty() { "/" } else { &self.config.config.working_dir };
        let mut joined = format!("{}/{}", wd.trim_end_matches('/'), path);
        if joined.is_empty() {
            joined = "/".into();
        }
        joined
    }

    pub fn shell(&self) -> Vec<String> {
        if self.config.config.shell.is_empty() {
            vec!["/bin/sh".into(), "-c".into()]
        } else {
            self.config.config.shell.clone()
        }
    }
}

/// Cleans a path like Go's `path.Clean` (absolute paths only; `..`
/// clamps at the root), with the solver's lexical cleaning.
pub(crate) fn clean_path(p: &str) -> String {
    format!("/{}", rbuild_solver::fileop::clean_rel(p))
}

impl Lowering<'_> {
    /// Lowers stage `index` (memoised); `visiting` detects cycles.
    pub(crate) fn lower_stage(&mut self, index: usize, visiting: &mut Vec<usize>) -> Result<(), Diagnostic> {
        if self.stages.contains_key(&index) {
            return Ok(());
        }
        let stage = &self.dockerfile.stages[index];
        if visiting.contains(&index) {
            return Err(Diagnostic::new(stage.span, "circular dependency between stages"));
        }
        // Each stage a stage depends on is lowered by recursion, so a
        // hostile chain of thousands of `FROM previous` stages would
        // exhaust the stack; BuildKit (Go) has no such limit.
        if visiting.len() >= MAX_STAGE_DEPTH {
            return Err(Diagnostic::new(
                stage.span,
                format!("stages depend on each other more than {MAX_STAGE_DEPTH} levels deep"),
            )
            .suggest("split the build, or let stages share a common base instead of chaining"));
        }
        visiting.push(index);
        let name = stage.from.name.clone().unwrap_or_else(|| format!("stage-{index}"));
        let platform = self.stage_platform(index)?;
        let base_name = self.stage_base_name(index)?;
        let ignore_cache = self.opts.no_cache
            || self.opts.no_cache_filter.iter().any(|f| f.eq_ignore_ascii_case(&name) || *f == index.to_string());

        let mut st = StageState {
            name: name.clone(),
            index,
            state: None,
            config: ImageConfig {
                architecture: platform.architecture.clone(),
                os: platform.os.clone(),
                variant: platform.variant.clone(),
                ..Default::default()
            },
            history: HistoryChain::default(),
            platform: platform.clone(),
            args: Vec::new(),
            cmd_set: false,
            step: 0,
            total_steps: stage.commands.len() + 1,
            ignore_cache,
        };

        let mut onbuild: Vec<String> = Vec::new();
        // FROM: an earlier stage, a named context, scratch, or an image.
        let from_stage = self.stage_by_name(&base_name).filter(|&j| {
            // A number only names a stage when it is an earlier one.
            j != index && (stage_named(self, j, &base_name) || j < index)
        });
        if let Some(j) = from_stage {
            self.lower_stage(j, visiting)?;
            let parent = &self.stages[&j];
            st.state = parent.state;
            st.config = parent.config.clone();
            st.history = parent.history.clone();
            st.platform = parent.platform.clone();
            // The parent stage's own ONBUILD instructions trigger here, as
            // an image's do (BuildKit's `resolveStages` takes them from
            // `d.base.commands`).
            onbuild = std::mem::take(&mut st.config.config.on_build);
        } else if base_name.eq_ignore_ascii_case("scratch") {
            // BuildKit's `emptyImage`: PATH and a WorkingDir of `/`.
            st.config.env_set("PATH", DEFAULT_PATH);
            st.config.config.working_dir = "/".into();
        } else {
            let reference = match self.opts.named_contexts.get(&base_name) {
                Some(super::NamedContext::Image(r)) => r.clone(),
                Some(super::NamedContext::Local) => {
                    let d = self.context(&base_name);
                    st.state = Some(d);
                    String::new()
                }
                Some(super::NamedContext::Graph(built)) => {
                    let built = built.clone();
                    st.state = Some(self.built_context(&built.definition));
                    // As BuildKit does with an `input:` context's image
                    // config: the stage starts from it like from an image.
                    if let Some(config) = &built.config {
                        st.config = config.clone();
                        st.config.architecture = platform.architecture.clone();
                        st.config.os = platform.os.clone();
                        st.config.variant = platform.variant.clone();
                        onbuild = std::mem::take(&mut st.config.config.on_build);
                        st.history = HistoryChain::default();
                        for h in &built.history {
                            st.history.push(h.clone());
                        }
                    }
                    String::new()
                }
                None => base_name.clone(),
            };
            if !reference.is_empty() {
                let base = self.resolve_base(&reference, &platform, stage.span)?;
                let d = self.image_vertex(&base, &platform, Some(&name));
                st.state = Some(d);
                st.config = base.config.clone();
                st.config.architecture = platform.architecture.clone();
                st.config.os = platform.os.clone();
                st.config.variant = platform.variant.clone();
                onbuild = std::mem::take(&mut st.config.config.on_build);
                // Base history: entries with layers map to the base's layers,
                // which the exporter takes from the image source itself.
                st.history = HistoryChain::default();
                for h in &base.config.history {
                    st.history.push(HistoryStep { history: h.clone(), layer: None });
                }
                if st.config.env_get("PATH").is_none() {
                    st.config.env_set("PATH", DEFAULT_PATH);
                }
            }
        }
        st.step = 1;
        st.config.config.on_build.clear();

        // ONBUILD triggers of the base run first, as if written after FROM.
        st.total_steps += onbuild.len();
        for trigger in onbuild {
            let command =
                crate::instructions::parse_dockerfile(&format!("FROM scratch\n{trigger}\n"), &self.opts.file_name)
                    .map_err(|e| {
                        Diagnostic::new(
                            stage.span,
                            format!("invalid ONBUILD trigger `{trigger}` in base image: {}", e.message),
                        )
                    })?
                    .stages
                    .into_iter()
                    .next()
                    .and_then(|s| s.commands.into_iter().next());
            if let Some(mut command) = command {
                command.span = stage.span;
                self.dispatch(&mut st, &command, visiting)?;
                self.check_graph_size(command.span)?;
            }
        }

        let commands = self.dockerfile.stages[index].commands.clone();
        for command in &commands {
            self.dispatch(&mut st, command, visiting)?;
            self.check_graph_size(command.span)?;
        }
        visiting.pop();
        self.stages.insert(
            index,
            StageResult { name, state: st.state, config: st.config, history: st.history, platform: st.platform },
        );
        Ok(())
    }

    /// The graph is held in memory and every `RUN` carries the whole
    /// environment: a 5 KB Dockerfile with one 2 MiB ARG and 200 `RUN`s
    /// made a 2 GB graph. Past [`MAX_GRAPH_BYTES`] the instruction that
    /// crossed it is an error (BuildKit's gateway frontends meet gRPC's
    /// message-size limit instead).
    fn check_graph_size(&self, span: crate::diagnostic::Span) -> Result<(), Diagnostic> {
        let bytes = self.definition.encoded_bytes();
        if bytes > MAX_GRAPH_BYTES {
            return Err(Diagnostic::new(
                span,
                format!("the build graph grew past {} MiB ({bytes} bytes)", MAX_GRAPH_BYTES >> 20),
            )
            .suggest("large ARG or ENV values are copied into every later RUN; pass big data as files"));
        }
        Ok(())
    }

    fn dispatch(
        &mut self,
        st: &mut StageState,
        command: &Command,
        visiting: &mut Vec<usize>,
    ) -> Result<(), Diagnostic> {
        let span = command.span;
        let lexer = self.lexer;
        let exp = |st: &StageState, word: &str| expand(&lexer, word, &|k| st.lookup(k), span);
        match &command.instruction {
            Instruction::From(_) => unreachable_from(span),
            Instruction::Run(run) => self.dispatch_run(st, run, command, visiting),
            Instruction::Copy(copy) => self.dispatch_copy(st, copy, command, visiting),
            Instruction::Add(add) => self.dispatch_add(st, add, command),
            Instruction::Cmd(cmd) => {
                let argv = command_argv(cmd, &st.shell());
                st.config.config.cmd = Some(argv.clone());
                st.cmd_set = true;
                st.commit_history(format!("CMD {}", history::go_quote_slice(&argv)), None);
                Ok(())
            }
            Instruction::Entrypoint(ep) => {
                let argv = command_argv(ep, &st.shell());
                st.config.config.entrypoint = Some(argv.clone());
                if !st.cmd_set {
                    st.config.config.cmd = None;
                }
                st.commit_history(format!("ENTRYPOINT {}", history::go_quote_slice(&argv)), None);
                Ok(())
            }
            Instruction::Env(pairs) => {
                // Every value sees the environment from before the
                // instruction (`ENV a=1 b=$a` leaves b empty), as Docker.
                let mut expanded = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    expanded.push((exp(st, k)?, exp(st, v)?));
                }
                let mut text = String::from("ENV");
                for (k, v) in expanded {
                    text.push_str(&format!(" {k}={v}"));
                    st.config.env_set(&k, &v);
                }
                st.commit_history(text, None);
                Ok(())
            }
            Instruction::Label(pairs) => {
                let mut text = String::from("LABEL");
                for (k, v) in pairs {
                    let k = exp(st, k)?;
                    let v = exp(st, v)?;
                    text.push_str(&format!(" {k}={v}"));
                    st.config.config.labels.insert(k, v);
                }
                st.commit_history(text, None);
                Ok(())
            }
            Instruction::Expose(ports) => {
                let mut added = Vec::new();
                for p in ports {
                    let p = exp(st, p)?;
                    for port in expand_port_spec(&p).map_err(|e| Diagnostic::new(span, e.to_string()))? {
                        st.config.config.exposed_ports.insert(port.clone(), Empty {});
                        added.push(port);
                    }
                }
                added.sort();
                st.commit_history(
                    format!("EXPOSE map[{}]", added.iter().map(|p| format!("{p}:{{}}")).collect::<Vec<_>>().join(" ")),
                    None,
                );
                Ok(())
            }
            Instruction::Volume(paths) => {
                let mut vols = Vec::new();
                for p in paths {
                    let p = exp(st, p)?;
                    if p.is_empty() {
                        return Err(Diagnostic::new(span, "VOLUME specified can not be an empty string"));
                    }
                    st.config.config.volumes.insert(p.clone(), Empty {});
                    vols.push(p);
                }
                st.commit_history(format!("VOLUME [{}]", vols.join(" ")), None);
                Ok(())
            }
            Instruction::User(u) => {
                let u = exp(st, u)?;
                st.config.config.user = u.clone();
                st.commit_history(format!("USER {u}"), None);
                Ok(())
            }
            Instruction::Workdir(w) => {
                let w = exp(st, w)?;
                // BuildKit's `NormalizeWorkdir`: an absolute path is recorded as
                // written (`/tmp/` keeps its slash); a relative one is joined to
                // the current directory and cleaned.
                let path = if w.starts_with('/') { w.clone() } else { clean_path(&st.abs_path(&w)) };
                st.config.config.working_dir = path.clone();
                let dir = clean_path(&path);
                if dir == "/" {
                    // `/` always exists: BuildKit adds no mkdir and no layer.
                    st.commit_history(format!("WORKDIR {path}"), None);
                    return Ok(());
                }
                // BuildKit creates the directory so later steps can rely on it.
                let chown = history::chown_for_user(&st.config.config.user);
                let meta = st.meta(&format!("WORKDIR {path}"));
                let base = st.state;
                let inputs: Vec<Digest> = base.into_iter().collect();
                let d = self.definition.add(
                    Op::File(FileOp {
                        base: base.map(|_| 0),
                        actions: vec![FileAction::Mkdir { path: dir, mode: 0o755, make_parents: true, chown }],
                    }),
                    inputs,
                    meta,
                );
                st.state = Some(d);
                st.commit_history(format!("WORKDIR {path}"), Some(d));
                Ok(())
            }
            Instruction::Arg(pairs) => {
                let mut text = String::from("ARG");
                for (name, default) in pairs {
                    let value = if let Some(v) = self.opts.build_args.get(name) {
                        self.used_args.insert(name.clone());
                        Some(v.clone())
                    } else if let Some(d) = default {
                        Some(exp(st, d)?)
                    } else if let Some(b) = self.builtin.get(name) {
                        Some(b)
                    } else {
                        // A redeclared global ARG inherits the global value.
                        self.global_args.iter().rev().find(|(k, _)| k == name).and_then(|(_, v)| v.clone())
                    };
                    match &value {
                        Some(v) if default.is_some() => text.push_str(&format!(" {name}={v}")),
                        _ => text.push_str(&format!(" {name}")),
                    }
                    // A redeclared ARG takes the new value in place.
                    match st.args.iter_mut().find(|(k, _)| k == name) {
                        Some(slot) => slot.1 = value,
                        None => st.args.push((name.clone(), value)),
                    }
                }
                st.commit_history(text, None);
                Ok(())
            }
            Instruction::Onbuild { expression, .. } => {
                st.config.config.on_build.push(expression.clone());
                st.commit_history(format!("ONBUILD {expression}"), None);
                Ok(())
            }
            Instruction::Stopsignal(s) => {
                let s = exp(st, s)?;
                validate_signal(&s).map_err(|e| Diagnostic::new(span, e.to_string()))?;
                st.config.config.stop_signal = s.clone();
                st.commit_history(format!("STOPSIGNAL {s}"), None);
                Ok(())
            }
            Instruction::Healthcheck(h) => {
                let hc = match h {
                    Healthcheck::None => HealthConfig { test: vec!["NONE".into()], ..Default::default() },
                    Healthcheck::Cmd { test, interval, timeout, start_period, start_interval, retries } => {
                        let test = match test {
                            crate::instructions::CommandLine::Exec(v) => {
                                let mut t = vec!["CMD".to_string()];
                                t.extend(v.iter().cloned());
                                t
                            }
                            crate::instructions::CommandLine::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
                        };
                        let ns = |d: &Option<std::time::Duration>| d.map(|d| d.as_nanos() as i64).unwrap_or(0);
                        HealthConfig {
                            test,
                            interval: ns(interval),
                            timeout: ns(timeout),
                            start_period: ns(start_period),
                            start_interval: ns(start_interval),
                            retries: retries.map(i64::from).unwrap_or(0),
                        }
                    }
                };
                st.commit_history(history::healthcheck(&hc), None);
                st.config.config.healthcheck = Some(hc);
                Ok(())
            }
            Instruction::Shell(sh) => {
                st.config.config.shell = sh.clone();
                st.commit_history(format!("SHELL [{}]", sh.join(" ")), None);
                Ok(())
            }
            Instruction::Maintainer(m) => {
                st.config.author = m.clone();
                st.commit_history(format!("MAINTAINER {m}"), None);
                Ok(())
            }
        }
    }
}

fn stage_named(l: &Lowering<'_>, j: usize, name: &str) -> bool {
    l.dockerfile.stages[j].from.name.as_deref() == Some(name.to_ascii_lowercase().as_str())
}

fn unreachable_from(span: Span) -> Result<(), Diagnostic> {
    Err(Diagnostic::new(span, "`FROM` cannot appear inside a stage's command list"))
}

/// An `EXPOSE` or `STOPSIGNAL` value Docker would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConfigValueError {
    /// Not tcp, udp or sctp.
    #[error("invalid proto `{proto}` in `EXPOSE {spec}`")]
    Proto {
        /// The protocol.
        proto: String,
        /// The whole value.
        spec: String,
    },
    /// Not a port number.
    #[error("invalid containerPort `{port}` in `EXPOSE {spec}`")]
    Port {
        /// The port text.
        port: String,
        /// The whole value.
        spec: String,
    },
    /// A range that ends before it starts.
    #[error("invalid port range `{ports}` in `EXPOSE {spec}`")]
    PortRange {
        /// The range.
        ports: String,
        /// The whole value.
        spec: String,
    },
    /// Not a signal name or number.
    #[error("invalid signal `{0}` in `STOPSIGNAL`")]
    Signal(String),
}

/// Expands `80`, `80/udp`, `8000-8002/tcp` into `port/proto` entries.
pub(crate) fn expand_port_spec(spec: &str) -> Result<Vec<String>, ConfigValueError> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(ConfigValueError::Proto { proto, spec: spec.to_string() });
    }
    // `ip:port` forms are accepted by Docker; only the container port counts.
    let ports = ports.rsplit(':').next().unwrap_or(ports);
    let parse =
        |s: &str| s.parse::<u16>().map_err(|_| ConfigValueError::Port { port: s.to_string(), spec: spec.to_string() });
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if end < start {
        return Err(ConfigValueError::PortRange { ports: ports.to_string(), spec: spec.to_string() });
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// Accepts `SIGTERM`, `TERM`, `SIGRTMIN+3` and numbers, as Docker does.
pub(crate) fn validate_signal(s: &str) -> Result<(), ConfigValueError> {
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE", "POLL",
        "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1",
        "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX",
    ];
    if s.parse::<u32>().is_ok_and(|n| n > 0 && n < 65) {
        return Ok(());
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    let base = name.split(['+', '-']).next().unwrap_or(name);
    if NAMES.contains(&base) { Ok(()) } else { Err(ConfigValueError::Signal(s.to_string())) }
}
