//! Starting a sandbox and handling the running process.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use super::zygote::{self, Killer, StepFds};
use super::{RunSpec, SandboxError, Security, copyfs, seccomp, trace};

/// A running sandbox.
#[derive(Debug)]
pub struct SandboxChild {
    pid: i32,
    killer: Killer,
    /// Where the zygote writes the init's exit status.
    status_pipe: File,
    stdout: Option<File>,
    stderr: Option<File>,
    status: Option<i32>,
}

impl SandboxChild {
    /// Host pid of the sandbox's init (pid 1 of its pid namespace, or with
    /// the copy fallback the process supervising it).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A handle killing this sandbox from another thread (build cancellation).
    pub fn killer(&self) -> Killer {
        self.killer.clone()
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
        let code = zygote::read_status(&mut self.status_pipe)?;
        self.status = Some(code);
        Ok(code)
    }

    /// Kills the whole sandbox (SIGKILL to its init: pid 1, or with the copy
    /// fallback pid 1's parent, which pid 1 follows through its
    /// parent-death signal; the rest of the pid namespace follows pid 1).
    /// Does nothing once the sandbox has been waited for.
    pub fn kill(&self) {
        if self.status.is_none() {
            self.killer.kill();
        }
    }
}

impl Drop for SandboxChild {
    fn drop(&mut self) {
        // Never leave a sandbox running behind an abandoned handle (the
        // zygote reaps it; its status, or the zygote's end, arrives soon).
        if self.status.is_none() {
            self.kill();
            let _ = self.wait();
        }
    }
}

/// Writes what of `data` fits into the (empty) pipe without blocking;
/// returns how much.
fn prefill(pipe: &std::io::PipeWriter, data: &[u8]) -> std::io::Result<usize> {
    use rustix::fs::OFlags;
    let flags = rustix::fs::fcntl_getfl(pipe)?;
    rustix::fs::fcntl_setfl(pipe, flags | OFlags::NONBLOCK)?;
    let mut done = 0;
    while done < data.len() {
        match rustix::io::write(pipe, &data[done..]) {
            Ok(n) => done += n,
            Err(rustix::io::Errno::AGAIN) => break,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    rustix::fs::fcntl_setfl(pipe, flags)?;
    Ok(done)
}

fn into_file(fd: impl Into<OwnedFd>) -> File {
    File::from(fd.into())
}

/// Starts `spec.args` in a fresh sandbox; returns once the sandbox is set up
/// and the command is about to be executed (set-up failures are returned as
/// [`SandboxError::Setup`]). Stdin is `/dev/null`.
///
/// Requires [`super::init_process`] to run first in `main`: the zygote
/// ([`super::zygote`]), started on the first call, is this same executable.
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
    trace::mark("spawn");
    let mut json = serde_json::to_vec(spec).map_err(SandboxError::SpecCodec)?;
    if spec.security == Security::Sandbox
        && let Some(filter) = seccomp::encoded_filter(super::caps::configured_for_seccomp(&spec.network))
    {
        json.push(0);
        json.extend_from_slice(filter);
    }
    let (spec_r, spec_w) = std::io::pipe().map_err(SandboxError::Pipe)?;
    let (mut err_r, err_w) = std::io::pipe().map_err(SandboxError::Pipe)?;
    let (out_r, out_w) = std::io::pipe().map_err(SandboxError::Pipe)?;
    let (errout_r, errout_w) = std::io::pipe().map_err(SandboxError::Pipe)?;
    let (status_r, status_w) = std::io::pipe().map_err(SandboxError::Pipe)?;
    let mut flags = if copyfs::use_copy() { zygote::REQ_COPY } else { 0 };
    if trace::enabled() {
        flags |= zygote::REQ_TRACE;
    }
    // Into the pipe before the init exists, as far as it holds without
    // blocking (all of a usual spec), and our end closed if it all fit: the
    // init then reads it to the end at once instead of waiting for us to be
    // scheduled again after the zygote's reply.
    let sent = prefill(&spec_w, &json).map_err(SandboxError::Pipe)?;
    let mut spec_w = (sent < json.len()).then_some(spec_w);
    // The zygote forks the init and takes over the write ends (our copies
    // close when `fds` is dropped, so that the pipes reach end of file when
    // the sandbox ends).
    let fds = StepFds {
        spec: spec_r.into(),
        err: err_w.into(),
        stdout: out_w.into(),
        stderr: errout_w.into(),
        status: status_w.into(),
    };
    let (pid, pidfd) = zygote::fork_init(flags, fds)?;
    let mut sc = SandboxChild {
        pid,
        killer: Killer::new(pidfd),
        status_pipe: File::from(OwnedFd::from(status_r)),
        stdout: Some(into_file(out_r)),
        stderr: Some(into_file(errout_r)),
        status: None,
    };
    // A write error means the init died early; its report follows on the error pipe.
    let wrote = spec_w.take().map_or(Ok(()), |mut w| w.write_all(&json[sent..]));
    let mut msg = String::new();
    let read = err_r.read_to_string(&mut msg);
    trace::mark("set-up");
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
