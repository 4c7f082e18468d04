//! Starting a sandbox and handling the running process.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};

use super::init::{ERR_FD, INIT_ENV, SPEC_FD};
use super::user_ns::USERNS_ENV;
use super::{RunSpec, SandboxError, Security, copyfs, seccomp};

/// A running sandbox.
#[derive(Debug)]
pub struct SandboxChild {
    child: Child,
    stdout: Option<File>,
    stderr: Option<File>,
    status: Option<i32>,
}

impl SandboxChild {
    /// Host pid of the sandbox's supervising process (outside its pid namespace).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Read end of the command's stdout (once).
    pub fn take_stdout(&mut self) -> Option<File> {
        self.stdout.take()
    }

    /// Read end of the command's stderr (once).
    pub fn take_stderr(&mut self) -> Option<File> {
        self.stderr.take()
    }

    /// Waits for the command; its exit code, or 128+signal if it was killed.
    pub fn wait(&mut self) -> Result<i32, SandboxError> {
        if let Some(code) = self.status {
            return Ok(code);
        }
        let st = self.child.wait().map_err(SandboxError::Wait)?;
        let code = st.code().or_else(|| st.signal().map(|s| 128 + s)).unwrap_or(255);
        self.status = Some(code);
        Ok(code)
    }

    /// Kills the whole sandbox (SIGKILL to the supervisor; pid 1 follows
    /// through its parent-death signal, and the rest of the pid namespace
    /// with it). Does nothing once the sandbox has been waited for.
    pub fn kill(&self) {
        if self.status.is_none()
            && let Some(pid) = rustix::process::Pid::from_raw(self.pid())
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for SandboxChild {
    fn drop(&mut self) {
        // Never leave a sandbox running (or a zombie) behind an abandoned handle.
        if self.status.is_none() {
            self.kill();
            let _ = self.wait();
        }
    }
}

fn into_file(fd: impl Into<OwnedFd>) -> File {
    File::from(fd.into())
}

/// Starts `spec.args` in a fresh sandbox; returns once the sandbox is set up
/// and the command is about to be executed (set-up failures are returned as
/// [`SandboxError::Setup`]). Stdin is `/dev/null`.
///
/// Requires [`super::init_process`] to have run in this process and to run
/// first in `main` (the sandbox init is this same executable).
pub fn spawn(spec: &RunSpec) -> Result<SandboxChild, SandboxError> {
    match spawn_once(spec) {
        // The kernel refused the overlay root: nothing was written yet;
        // retry (and from now on start) with the copy fallback.
        Err(SandboxError::Setup(msg)) if msg.starts_with(super::OVERLAY_REFUSED) && !copyfs::use_copy() => {
            copyfs::note_refusal(&std::io::Error::from_raw_os_error(libc::EPERM));
            spawn_once(spec)
        }
        other => other,
    }
}

fn spawn_once(spec: &RunSpec) -> Result<SandboxChild, SandboxError> {
    if spec.args.is_empty() {
        return Err(SandboxError::InvalidSpec("no command to run".into()));
    }
    let mut json = serde_json::to_vec(spec).map_err(SandboxError::SpecCodec)?;
    if spec.security == Security::Sandbox
        && let Some(filter) = seccomp::encoded_filter(super::caps::configured_for_seccomp(&spec.network))
    {
        json.push(0);
        json.extend_from_slice(filter);
    }
    let (spec_r, mut spec_w) = std::io::pipe().map_err(SandboxError::Pipe)?;
    let (mut err_r, err_w) = std::io::pipe().map_err(SandboxError::Pipe)?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("rbuild-sandbox-init")
        .env_clear()
        .env(INIT_ENV, "1")
        // The init allocates a few KiB and lives for one `RUN`: committing
        // mimalloc's whole first arena up front (its default where the
        // kernel overcommits) costs ~0.5 ms of page-table work per step.
        // The command never sees this variable: it gets `spec.env` only.
        .env("MIMALLOC_ARENA_EAGER_COMMIT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(v) = std::env::var_os(USERNS_ENV) {
        cmd.env(USERNS_ENV, v);
    }
    if copyfs::use_copy() {
        cmd.env(copyfs::MODE_ENV, "copy");
    }
    let (sr, ew) = (spec_r.as_raw_fd(), err_w.as_raw_fd());
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure only calls async-signal-safe prctl/getppid/
    // fcntl/dup2/close_range on descriptors that stay open in the parent
    // until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // If rbuild dies (even by SIGKILL), the sandbox goes with it:
            // the supervisor gets SIGKILL, so does pid 1, and with it the
            // whole pid namespace. The death signal is tied to the spawning
            // thread, which waits for this child for its whole life.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(125);
            }
            // Duplicate to high close-on-exec descriptors first, so that
            // placing one at 3 cannot clobber the other sitting there.
            let a = libc::fcntl(sr, libc::F_DUPFD_CLOEXEC, 10);
            let b = libc::fcntl(ew, libc::F_DUPFD_CLOEXEC, 10);
            if a < 0 || b < 0 || libc::dup2(a, SPEC_FD) < 0 || libc::dup2(b, ERR_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Only stdio and the two pipes cross: whatever rbuild inherited
            // without O_CLOEXEC (a jobserver, `exec 8</`) stays behind. The
            // init marks the rest once more before the command's execve, so
            // an old kernel refusing this (before 5.11) is no leak.
            libc::syscall(libc::SYS_close_range, (ERR_FD + 1) as u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(SandboxError::Spawn)?;
    drop(spec_r);
    drop(err_w);
    // A write error means the init died early; its report follows on the error pipe.
    let wrote = spec_w.write_all(&json);
    drop(spec_w);
    let mut msg = String::new();
    let read = err_r.read_to_string(&mut msg);
    let stdout = child.stdout.take().map(into_file);
    let stderr = child.stderr.take().map(into_file);
    let mut sc = SandboxChild { child, stdout, stderr, status: None };
    if !msg.is_empty() {
        let _ = sc.wait();
        return Err(SandboxError::Setup(msg));
    }
    if let Err(e) = read.and(wrote) {
        sc.kill();
        let _ = sc.wait();
        return Err(SandboxError::Pipe(e));
    }
    Ok(sc)
}
