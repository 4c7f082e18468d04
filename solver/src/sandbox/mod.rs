//! The rootless sandbox: user namespace, per-RUN namespaces, overlay root, pivot_root.
//!
//! Life cycle:
//! 1. [`init_process`] runs first in `main`, before any thread exists. It
//!    moves the whole process into one user namespace (plus a private mount
//!    namespace) with an id mapping chosen from what the host allows
//!    ([`IdMapping`]). All store work then happens as "root" with real
//!    ownership semantics.
//! 2. [`spawn`] runs one `RUN` step. On the first call it starts the
//!    zygote ([`zygote`]): `/proc/self/exe` executed once with a marker in
//!    the environment, which [`init_process`] notices, and a single-threaded
//!    loop that forks one sandbox init per request (a fork of the
//!    multi-threaded solver could not run Rust code; an exec per step cost
//!    ~2.4 ms). The init unshares pid/ipc/uts(/net)
//!    namespaces, forks pid 1 of the new pid namespace, which builds the
//!    overlay root, `/proc`, `/sys`, `/dev`, `/etc/hosts`, `/etc/resolv.conf`
//!    and the extra mounts, masks Docker's masked and read-only paths
//!    (`masks`), calls `pivot_root`, installs the seccomp filter
//!    ([`seccomp`]: Docker's default profile), switches user, drops to
//!    Docker's capability set (`caps`; less `CAP_NET_RAW` on the build's
//!    private network), marks every descriptor but stdio
//!    close-on-exec and `execve`s.
//! 3. [`mount_overlay`] gives the solver merged views of snapshots in its own
//!    mount namespace (file operations, exports).
//!
//! Where the kernel refuses overlayfs in the user namespace (older kernels,
//! an upper dir on NFS, ...), or with `RBUILD_OVERLAY=copy`, both fall back
//! to `copyfs`: the layers are flattened into a plain directory and, after
//! the `RUN` (or at [`MountGuard::finish`]), what changed is written to the
//! upper dir in overlay format. [`spawn`] notices a refusal reported by the
//! init and retries once in that mode.
//!
//! Raw syscalls live behind the [`syscall::Syscall`] trait (real Linux
//! implementation plus a recording fake for unit tests of the ordering
//! logic), following youki's layout. This is the only module of the project
//! allowed to contain `unsafe`.
#![allow(unsafe_code)]

mod caps;
pub mod cgroup;
mod copyfs;
mod init;
mod inroot;
mod layer_lookup;
pub mod limits;
mod masks;
pub mod network;
mod overlay;
mod passwd;
mod process;
mod rootfs;
pub mod seccomp;
mod syscall;
pub mod trace;
mod user_ns;
mod zygote;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use cgroup::{CgroupRoot, StepCgroup};
pub use inroot::{canonical_in_root, open_in_root};
pub use limits::Rlimit;
pub use network::PrivateNetwork;
pub use overlay::{MountGuard, mount_overlay};
pub use passwd::UserError;
pub use process::{SandboxChild, spawn};
pub use user_ns::{IdMapping, init_process};
pub use zygote::{Killer, shutdown};

/// Default `PATH` given to a `RUN` whose environment has none (same as BuildKit's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's `/dev/shm` size (64 MiB), used when `--shm-size` is not given.
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;

/// Network namespace choice of a `RUN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Share the host's (the rbuild process's) network namespace.
    Host,
    /// A fresh network namespace containing only `lo`, brought up.
    None,
    /// Join the build's private network ([`PrivateNetwork::netns`]).
    Private {
        /// The namespace file.
        netns: PathBuf,
    },
}

/// Confinement of a `RUN` (`RUN --security=...`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Security {
    /// Docker's defaults: default capability set, seccomp profile, masked
    /// and read-only `/proc` and `/sys` paths.
    #[default]
    Sandbox,
    /// `--security=insecure` (needs the `security.insecure` entitlement):
    /// all capabilities, no seccomp filter, writable `/proc/sys`.
    Insecure,
}

/// What is mounted at an [`ExtraMount`]'s target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountSource {
    /// Bind mount of a host path (file or directory), recursively.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Make the bind read-only.
        readonly: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Size limit in bytes; 0 means the kernel default (half of RAM).
        size: u64,
    },
    /// An overlay of snapshot directories (bottom layer first), or the part
    /// of it at `selector` (`RUN --mount=type=bind,source=...`).
    Overlay {
        /// Layers, base first. Trusted host paths; their content is not.
        lowerdirs: Vec<PathBuf>,
        /// `true`: read-only view. `false`: writable, with the writes going
        /// to a tmpfs and discarded when the `RUN` ends (`--mount=type=bind,rw`).
        readonly: bool,
        /// Path inside the merged view that is mounted (`""`: all of it),
        /// resolved inside the view (`openat2(RESOLVE_IN_ROOT)`): its
        /// symlinks and `..` never leave the layers.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        selector: String,
    },
}

/// A mount made inside the root filesystem before `pivot_root`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraMount {
    /// Absolute path inside the container; symlinks resolve inside the rootfs.
    pub target: String,
    /// What to mount there.
    pub source: MountSource,
}

/// Everything needed to run one process in a fresh sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Snapshot directories of the root filesystem, base (bottom) first. May be empty.
    pub lowerdirs: Vec<PathBuf>,
    /// New snapshot directory receiving the changes (overlay upper).
    pub upperdir: PathBuf,
    /// Overlay work directory: empty, on the same filesystem as `upperdir`.
    pub workdir: PathBuf,
    /// Command line; `args[0]` is looked up in the container's `PATH`.
    pub args: Vec<String>,
    /// Environment (`KEY=value`). `PATH` and `HOME` get defaults if absent.
    pub env: Vec<String>,
    /// Working directory, created if missing (and then kept, as BuildKit does).
    pub cwd: String,
    /// `user[:group]`, names or ids, resolved from the rootfs; `""` is root.
    pub user: String,
    /// Host name inside the UTS namespace.
    pub hostname: String,
    /// Network namespace choice.
    pub network: Network,
    /// Confinement (capabilities, seccomp, `/proc` masking).
    #[serde(default)]
    pub security: Security,
    /// Extra mounts, in order.
    pub mounts: Vec<ExtraMount>,
    /// Contents of `/etc/hosts` (bind-mounted; never written to the upper dir).
    pub hosts: String,
    /// Contents of `/etc/resolv.conf` (bind-mounted; never written to the upper dir).
    pub resolv_conf: String,
    /// rlimits set before the command runs (`--ulimit`).
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// Size of the `/dev/shm` tmpfs in bytes (`--shm-size`); 0 means [`DEFAULT_SHM_SIZE`].
    #[serde(default)]
    pub shm_size: u64,
    /// cgroup (v2) directory the sandbox joins before pid 1 starts ([`StepCgroup::path`]).
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
}

/// Failures of the sandbox, one variant per failing step.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `init_process` was called in a process that already has several threads.
    #[error("the sandbox must be initialised before any thread is started (found {0} threads)")]
    Threaded(usize),
    /// Reading a host id file (`/etc/subuid`, `/proc/self/status`, ...).
    #[error("cannot read `{path}`")]
    ReadHostFile {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `fork` failed.
    #[error("cannot fork {what}")]
    Fork {
        /// Which process.
        what: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `unshare` failed.
    #[error("cannot create {what} namespace(s)")]
    Unshare {
        /// Which namespaces.
        what: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The helper writing the id maps failed.
    #[error("cannot set up the user namespace id mapping ({mapping}): {detail}")]
    IdMap {
        /// The mapping attempted.
        mapping: String,
        /// What the helper reported.
        detail: String,
    },
    /// Switching to container root, or to the `RUN` user, failed.
    #[error("cannot switch to {what}")]
    SetIds {
        /// Which ids.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A mount step failed.
    #[error("cannot {step} at `{target}`")]
    Mount {
        /// The step (for example "mount overlay").
        step: &'static str,
        /// Where.
        target: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The `source` of a bind mount cannot be opened inside its layers
    /// (missing, a dangling link or a link loop). Names container-side
    /// paths only, never the host's.
    #[error("cannot open bind source `{selector}` for `{target}`")]
    BindSource {
        /// The path inside the mounted content.
        selector: String,
        /// Mount point in the container.
        target: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `pivot_root` (or its dance) failed.
    #[error("cannot pivot_root into the container root")]
    PivotRoot(#[source] std::io::Error),
    /// A directory or file needed by the sandbox could not be prepared.
    #[error("cannot prepare `{path}`")]
    Prepare {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The `user[:group]` of the spec could not be resolved.
    #[error("cannot resolve user `{user}`: {detail}")]
    User {
        /// The spec's user string.
        user: String,
        /// Why (in the message rather than `source()`: pid 1 reports it to
        /// the parent as text).
        detail: UserError,
    },
    /// The spec cannot be used as is.
    #[error("invalid run spec: {0}")]
    InvalidSpec(String),
    /// Encoding/decoding the spec for the re-executed init failed.
    #[error("cannot encode or decode the run spec")]
    SpecCodec(#[source] serde_json::Error),
    /// The zygote (the process forking every sandbox) could not be started.
    #[error("cannot start the sandbox zygote")]
    ZygoteStart(#[source] std::io::Error),
    /// The zygote died (killed from outside, or out of memory): the step
    /// running, or about to run, cannot be started or waited for.
    #[error("the sandbox zygote (the process starting every RUN) has exited")]
    ZygoteGone,
    /// Pipe I/O with the sandbox init failed.
    #[error("cannot talk to the sandbox process")]
    Pipe(#[source] std::io::Error),
    /// The sandbox init reported a set-up failure before running the command.
    #[error("sandbox set-up failed: {0}")]
    Setup(String),
    /// Waiting for the sandbox failed.
    #[error("cannot wait for the sandbox process")]
    Wait(#[source] std::io::Error),
    /// Setting up the loopback interface of a `--network=none` sandbox failed.
    #[error("cannot bring up `lo` in the new network namespace")]
    Loopback(#[source] std::io::Error),
    /// The kernel refused an overlay mount (no overlayfs in user namespaces,
    /// or an unsupported upper filesystem); [`spawn`] then retries with the
    /// copy fallback.
    #[error("{OVERLAY_REFUSED} at `{target}`")]
    OverlayRefused {
        /// Where.
        target: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A step of the copy fallback (used where overlayfs is refused) failed.
    #[error("copy fallback: cannot {step} `{path}`")]
    CopyFallback {
        /// The step (for example "flatten layers into").
        step: &'static str,
        /// The directory concerned.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading or setting the capabilities of the `RUN` process failed.
    #[error("cannot set the capabilities of the command")]
    Capabilities(#[source] std::io::Error),
    /// Marking inherited descriptors close-on-exec failed.
    #[error("cannot close the descriptors the command must not inherit")]
    CloseFds(#[source] std::io::Error),
    /// Joining the build's private network namespace failed.
    #[error("cannot join the build's network namespace `{}`", path.display())]
    JoinNetwork {
        /// The namespace file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Setting an rlimit failed.
    #[error(transparent)]
    Rlimit(#[from] limits::RlimitError),
    /// Joining the step's cgroup failed.
    #[error("cannot join cgroup `{}`", path.display())]
    Cgroup {
        /// The cgroup directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Building or installing the `RUN`'s seccomp filter failed.
    #[error("cannot confine the command with seccomp")]
    Seccomp(#[source] seccomp::SeccompError),
    /// Setting the host name failed.
    #[error("cannot set the host name to `{0}`")]
    Hostname(String, #[source] std::io::Error),
}

/// Start of the message of [`SandboxError::OverlayRefused`] (recognised in
/// the set-up error the sandbox init sends back).
const OVERLAY_REFUSED: &str = "the kernel refused the overlay mount";

/// Renders an error with its chain of causes on one line (for the init's error pipe).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
