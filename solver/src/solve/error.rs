//! Why a step failed: [`StepError`], carried by
//! [`SolveError::Step`](super::SolveError::Step) with the step's name.

use std::io;

use crate::fileop::FileOpError;
use crate::sandbox::SandboxError;

/// An error of a [`SourceProvider`](super::SourceProvider) implementation
/// (the builder's registry, HTTP and git errors): boxed, since the solver
/// only passes it on, keeping it as the typed `source()` of the step error.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong in one step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Another step failed first (or the build was interrupted).
    #[error("cancelled")]
    Cancelled,
    /// A RUN for another architecture, and no emulator registered for it.
    #[error(transparent)]
    NoEmulator(#[from] super::emulation::NoEmulator),
    /// A named build context the graph uses was not given.
    #[error("build context `{name}`{} was not provided", from_origin(origin))]
    MissingContext {
        /// The context's name.
        name: String,
        /// Where it should have come from (empty: anywhere).
        origin: String,
    },
    /// A `RUN --mount=type=bind` source could not be prepared.
    #[error("mount `{target}`")]
    Bind {
        /// The mount target.
        target: String,
        /// Why.
        #[source]
        source: super::bind::BindError,
    },
    /// A context file the step reads could not be checksummed.
    #[error("cannot checksum `{path}`")]
    Checksum {
        /// The path inside the context.
        path: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Pulling a base image or fetching an HTTP or git source failed.
    #[error(transparent)]
    Source(SourceError),
    /// The subdirectory of a git checkout could not be moved into place.
    #[error("git subdir `{subdir}`")]
    GitSubdir {
        /// The subdirectory.
        subdir: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A read-only view of an input could not be mounted.
    #[error("cannot mount the view for `{target}`")]
    View {
        /// Where the view was for (a mount target, or `input`).
        target: String,
        /// The mount error.
        #[source]
        source: io::Error,
    },
    /// A scratch directory could not be prepared.
    #[error("cannot prepare a scratch directory")]
    Scratch(#[source] io::Error),
    /// A cache mount's directory or lock failed.
    #[error("cache mount `{id}`")]
    CacheMount {
        /// The cache id.
        id: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A required secret was not given.
    #[error("secret `{0}` is required but was not provided; pass `--secret id={0},src=PATH`")]
    SecretRequired(String),
    /// A secret could not be written into its tmpfs.
    #[error("secret `{id}`")]
    Secret {
        /// The secret id.
        id: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A required ssh agent socket was not given.
    #[error("ssh agent `{0}` is required but was not provided; pass `--ssh {0}`")]
    SshRequired(String),
    /// The build's private network could not be started.
    #[error("cannot start the build's network")]
    Network(#[source] std::sync::Arc<crate::sandbox::network::NetworkError>),
    /// The step's cgroup could not be created.
    #[error("cannot create the step's cgroup")]
    Cgroup(#[source] crate::sandbox::cgroup::CgroupError),
    /// The sandbox failed (spawn, mounts, wait).
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The command exited with a non-zero code.
    #[error("process `{command}` did not complete successfully: exit code: {code}{}", last_output(tail))]
    ExitCode {
        /// The command line.
        command: String,
        /// The exit code.
        code: i32,
        /// Its last lines of output.
        tail: Vec<String>,
    },
    /// A file operation failed.
    #[error(transparent)]
    FileOp(#[from] FileOpError),
    /// Preparing a direct write into the snapshot failed.
    #[error("cannot prepare the destination")]
    Destination(#[source] io::Error),
    /// The incremental-COPY manifest could not be written beside the snapshot.
    #[error("cannot write the copy manifest `{}`", path.display())]
    Manifest {
        /// Its path.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

fn last_output(tail: &[String]) -> String {
    if tail.is_empty() { String::new() } else { format!("\n  last output:\n    {}", tail.join("\n    ")) }
}

/// `e` and its sources, `: `-separated (for progress lines, which show one
/// string).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

fn from_origin(origin: &str) -> String {
    if origin.is_empty() { String::new() } else { format!(" from `{origin}`") }
}
