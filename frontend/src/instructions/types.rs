//! One typed struct per Dockerfile instruction.
//!
//! Values are kept as written (unexpanded): word expansion depends on the
//! ARG/ENV scope at that point of the stage, which only lowering knows.
//! Flags are validated here (known names, well-formed values).

use std::time::Duration;

use crate::diagnostic::Span;

/// Exec (JSON) form or shell form of CMD, ENTRYPOINT, RUN, HEALTHCHECK CMD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandLine {
    /// `["prog", "arg"]`: run as is.
    Exec(Vec<String>),
    /// `prog arg`: run through the stage's SHELL.
    Shell(String),
}

/// A heredoc attached to RUN, COPY or ADD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, e.g. `EOF`.
    pub name: String,
    /// The body (after `<<-` tab stripping), ending in a newline.
    pub content: String,
    /// False for quoted delimiters (`<<"EOF"`, `<<'EOF'`): no expansion.
    pub expand: bool,
}

/// `FROM [--platform=P] image [AS name]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct From {
    /// Image reference, stage name or `scratch` (unexpanded).
    pub image: String,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// `--platform` value (unexpanded).
    pub platform: Option<String>,
}

/// Kinds of `RUN --mount`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountType {
    /// `type=bind` (default).
    Bind,
    /// `type=cache`.
    Cache,
    /// `type=tmpfs`.
    Tmpfs,
    /// `type=secret`.
    Secret,
    /// `type=ssh`.
    Ssh,
}

/// `sharing=` of a cache mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sharing {
    /// `shared` (default).
    #[default]
    Shared,
    /// `private`.
    Private,
    /// `locked`.
    Locked,
}

/// One `RUN --mount=...` flag, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// Mount type.
    pub kind: MountType,
    /// `target|dst|destination` (required except for secret/ssh).
    pub target: Option<String>,
    /// `source|src`.
    pub source: Option<String>,
    /// `from` (stage, image or named context).
    pub from: Option<String>,
    /// `readonly|ro` (true) or `rw` (false). `None`: the type's default.
    pub readonly: Option<bool>,
    /// `id`.
    pub id: Option<String>,
    /// `sharing`.
    pub sharing: Sharing,
    /// `mode` (octal).
    pub mode: Option<u32>,
    /// `uid`.
    pub uid: Option<u32>,
    /// `gid`.
    pub gid: Option<u32>,
    /// `required` (secret/ssh).
    pub required: bool,
    /// `env` (secret as an environment variable).
    pub env: Option<String>,
    /// `size` in bytes (tmpfs).
    pub size: Option<u64>,
    /// Numeric options (`mode`, `uid`, `gid`, `size`) written with a
    /// variable: expanded and validated by lowering, as BuildKit expands
    /// mount options before parsing them.
    pub deferred: Vec<(String, String)>,
}

/// `RUN --network=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Network {
    /// `default`.
    #[default]
    Default,
    /// `none`.
    None,
    /// `host`.
    Host,
}

/// `RUN --security=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Security {
    /// `sandbox`.
    #[default]
    Sandbox,
    /// `insecure`.
    Insecure,
}

/// `RUN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// The command. With heredocs in shell form, the shell text is the
    /// first line and the heredoc bodies follow in `heredocs`.
    pub command: CommandLine,
    /// Heredocs on the command line.
    pub heredocs: Vec<Heredoc>,
    /// `--mount` flags.
    pub mounts: Vec<MountSpec>,
    /// `--network`.
    pub network: Network,
    /// `--security`.
    pub security: Security,
}

/// A COPY/ADD source: a path/URL, or a heredoc used as a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopySource {
    /// A path, wildcard, URL or git reference (unexpanded).
    Path(String),
    /// `<<EOF` used as a file named after the delimiter.
    Heredoc(Heredoc),
}

/// `COPY`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    /// Sources.
    pub sources: Vec<CopySource>,
    /// Destination (unexpanded).
    pub dest: String,
    /// `--from`.
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` (repeatable).
    pub exclude: Vec<String>,
}

/// `ADD`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Add {
    /// Sources (paths, URLs, git references, heredocs).
    pub sources: Vec<CopySource>,
    /// Destination (unexpanded).
    pub dest: String,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--checksum`.
    pub checksum: Option<String>,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--exclude` (repeatable).
    pub exclude: Vec<String>,
}

/// `HEALTHCHECK`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`.
    None,
    /// `HEALTHCHECK [opts] CMD ...`.
    Cmd {
        /// The test command.
        test: CommandLine,
        /// `--interval`.
        interval: Option<Duration>,
        /// `--timeout`.
        timeout: Option<Duration>,
        /// `--start-period`.
        start_period: Option<Duration>,
        /// `--start-interval`.
        start_interval: Option<Duration>,
        /// `--retries`.
        retries: Option<u32>,
    },
}

/// A typed instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Instruction {
    /// `FROM` (only inside [`Stage::from`]).
    From(From),
    /// `RUN`.
    Run(Run),
    /// `CMD`.
    Cmd(CommandLine),
    /// `LABEL k=v ...` (unexpanded pairs).
    Label(Vec<(String, String)>),
    /// `EXPOSE 80/tcp ...`.
    Expose(Vec<String>),
    /// `ENV k=v ...` or `ENV k v` (unexpanded pairs).
    Env(Vec<(String, String)>),
    /// `ADD`.
    Add(Add),
    /// `COPY`.
    Copy(Copy),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine),
    /// `VOLUME` paths.
    Volume(Vec<String>),
    /// `USER`.
    User(String),
    /// `WORKDIR`.
    Workdir(String),
    /// `ARG name[=default] ...`.
    Arg(Vec<(String, Option<String>)>),
    /// `ONBUILD` with its trigger's text and parsed form.
    Onbuild {
        /// The trigger as stored in the image config (`RUN echo hi`).
        expression: String,
        /// The trigger, parsed and validated.
        instruction: Box<Instruction>,
    },
    /// `STOPSIGNAL`.
    Stopsignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `SHELL` (exec form only).
    Shell(Vec<String>),
    /// `MAINTAINER` (deprecated; sets Author).
    Maintainer(String),
}

/// An instruction with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The instruction.
    pub instruction: Instruction,
    /// Its span in the Dockerfile.
    pub span: Span,
    /// Its original text with continuations joined (for history `created_by`).
    pub original: String,
}

/// A build stage: its FROM and the commands after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// The FROM line.
    pub from: From,
    /// Span of the FROM line.
    pub span: Span,
    /// Commands after FROM, in order.
    pub commands: Vec<Command>,
}

/// A parsed Dockerfile: global ARGs (before the first FROM) and the stages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dockerfile {
    /// `ARG`s before the first FROM, each with its span.
    pub global_args: Vec<Command>,
    /// Stages in order.
    pub stages: Vec<Stage>,
    /// The escape character in effect (`\\` or `` ` ``).
    pub escape: char,
    /// `# syntax=` directive.
    pub syntax: Option<String>,
    /// `# check=` directive.
    pub check: Option<String>,
}
