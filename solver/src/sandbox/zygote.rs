//! The sandbox zygote: one small single-threaded process per rbuild process
//! that forks the sandbox init of every `RUN`.
//!
//! Why: re-executing the ~100 MB rbuild binary for each `RUN` (what `runc
//! init` does) cost ~2.4 ms of loader, relocation and runtime start-up per
//! step. Forking the multi-threaded solver instead is not an option (only
//! async-signal-safe calls are allowed in such a child). So the binary is
//! executed once, on the first `RUN`, as the zygote: it has one thread, so
//! the children it forks may run any code, and it holds nothing of the
//! build process (empty environment, `/` as working directory, `/dev/null`
//! as stdio, no other descriptor than its socket).
//!
//! Protocol, over a `SOCK_SEQPACKET` socket pair (one message per datagram,
//! so no framing), requests serialised by the solver side's lock:
//! - request: one flags byte ([`REQ_COPY`]) and, by `SCM_RIGHTS`, the spec
//!   pipe's read end, the error pipe's write end, the command's stdout and
//!   stderr write ends and the status pipe's write end;
//! - reply: the host pid of the forked init (or `-errno`) and, by
//!   `SCM_RIGHTS`, a pidfd of it: the solver kills through the pidfd, so a
//!   pid reused after the zygote reaped the init is never signalled;
//! - the init is the step's pid 1 itself, cloned into a new pid namespace
//!   (with the copy fallback: an init outside it that forks pid 1, waits
//!   and writes its exit status to the status pipe before it exits); when
//!   the zygote reaps it, it writes the status it saw (exit code, or
//!   128+signal) and closes the pipe. The solver reads the first 4 bytes.
//!
//! Life: the zygote exits when its socket reaches end of file (the rbuild
//! process is gone) and gets `SIGKILL` when the thread that started it —
//! which only waits for it — ends, i.e. when rbuild dies. Each init it forked
//! has a parent-death signal too, so killing rbuild takes the zygote, every
//! init and (through their pid 1's parent-death signal and the pid
//! namespace) every command with it. A zygote that died is reported as
//! [`SandboxError::ZygoteGone`] to the steps waiting on it and to later
//! ones; nothing waits forever.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use super::{SandboxError, copyfs, init};

/// Environment marker of the zygote process.
pub(crate) const ZYGOTE_ENV: &str = "RBUILD_SANDBOX_ZYGOTE";
/// The zygote's end of the socket pair.
const SOCK_FD: RawFd = 3;
/// Request flag: build the root with the copy fallback (overlay refused).
pub(crate) const REQ_COPY: u8 = 1;
/// Request flag: write [`super::trace`] marks.
pub(crate) const REQ_TRACE: u8 = 2;
/// Descriptors of a request, in order.
const REQ_FDS: usize = 5;

/// The descriptors a step's init gets, in the order of a request.
pub(crate) struct StepFds {
    /// Read end of the pipe carrying the JSON spec.
    pub spec: OwnedFd,
    /// Write end of the error pipe (closed once the command is exec'd).
    pub err: OwnedFd,
    /// The command's stdout.
    pub stdout: OwnedFd,
    /// The command's stderr.
    pub stderr: OwnedFd,
    /// Write end of the status pipe (kept by the zygote).
    pub status: OwnedFd,
}

/// The zygote as seen from the solver.
enum State {
    NotStarted,
    /// The socket, and the thread waiting for the zygote.
    Running(OwnedFd, std::thread::JoinHandle<()>),
    Gone,
}

static ZYGOTE: Mutex<State> = Mutex::new(State::NotStarted);

/// Asks the zygote to fork the init of one step; returns its host pid and a
/// pidfd. The descriptors are the zygote's (and the init's) afterwards.
pub(crate) fn fork_init(flags: u8, fds: StepFds) -> Result<(i32, OwnedFd), SandboxError> {
    let mut state = ZYGOTE.lock().unwrap_or_else(|p| p.into_inner());
    if matches!(*state, State::NotStarted) {
        let (sock, keeper) = start()?;
        *state = State::Running(sock, keeper);
    }
    let State::Running(sock, _) = &*state else { return Err(SandboxError::ZygoteGone) };
    let raw = [&fds.spec, &fds.err, &fds.stdout, &fds.stderr, &fds.status].map(|f| f.as_raw_fd());
    let reply = send(sock, &[flags], &raw).and_then(|()| recv(sock, &mut [0u8; 4], 1));
    match reply {
        Ok((4, buf, mut got)) => {
            let pid = i32::from_ne_bytes(buf);
            match got.pop() {
                Some(pidfd) if pid > 0 => Ok((pid, pidfd)),
                _ => Err(SandboxError::Fork {
                    what: "the sandbox init",
                    source: std::io::Error::from_raw_os_error(
                        pid.checked_neg().filter(|e| *e > 0).unwrap_or(libc::EIO),
                    ),
                }),
            }
        }
        // End of file (or a broken socket): the zygote has died.
        Ok(_) | Err(_) => {
            *state = State::Gone;
            Err(SandboxError::ZygoteGone)
        }
    }
}

/// Ends the zygote, if one was started, and waits for it (so that its CPU
/// time and its steps' count in this process's: `time rbuild build`).
/// Later [`super::spawn`]s fail with [`SandboxError::ZygoteGone`]. Call it
/// once no sandbox runs any more, before the process exits.
pub fn shutdown() {
    let mut state = ZYGOTE.lock().unwrap_or_else(|p| p.into_inner());
    if let State::Running(sock, keeper) = std::mem::replace(&mut *state, State::Gone) {
        // End of file on its socket: the zygote exits.
        drop(sock);
        let _ = keeper.join();
    }
}

/// Starts the zygote from a thread of its own that then waits for it for
/// its whole life: the zygote's parent-death signal is tied to that thread.
fn start() -> Result<(OwnedFd, std::thread::JoinHandle<()>), SandboxError> {
    let (ours, theirs) = socketpair().map_err(SandboxError::ZygoteStart)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let keeper = std::thread::Builder::new()
        .name("sandbox-zygote".into())
        .spawn(move || {
            let spawned = command(&theirs).spawn();
            // The zygote holds the only other end: its death is our end of file.
            drop(theirs);
            match spawned {
                Ok(mut child) => {
                    let _ = tx.send(Ok(()));
                    let _ = child.wait();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })
        .map_err(SandboxError::ZygoteStart)?;
    match rx.recv() {
        Ok(Ok(())) => Ok((ours, keeper)),
        Ok(Err(e)) => Err(SandboxError::ZygoteStart(e)),
        Err(_) => Err(SandboxError::ZygoteGone),
    }
}

fn command(sock: &OwnedFd) -> Command {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("rbuild-sandbox-zygote")
        .env_clear()
        .env(ZYGOTE_ENV, "1")
        // The zygote and the inits it forks allocate a few KiB: committing
        // mimalloc's whole first arena up front (its default where the
        // kernel overcommits) only makes every fork copy more page tables.
        .env("MIMALLOC_ARENA_EAGER_COMMIT", "0")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let fd = sock.as_raw_fd();
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure only calls async-signal-safe prctl/getppid/fcntl/
    // dup2/close_range on a descriptor that stays open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // rbuild may have died before the prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(125);
            }
            let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
            if high < 0 || libc::dup2(high, SOCK_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Nothing else rbuild holds (or inherited without O_CLOEXEC)
            // reaches the zygote. Each init closes the rest once more.
            libc::syscall(libc::SYS_close_range, (SOCK_FD + 1) as u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
            Ok(())
        });
    }
    cmd
}

fn socketpair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into the array on success.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Room for the `SCM_RIGHTS` control message of up to [`REQ_FDS`] descriptors.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// Sends one datagram with `fds` attached.
fn send(sock: &OwnedFd, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    let mut cmsg = CmsgBuf([0; 64]);
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: an all-zero msghdr is valid; the pointers set below point at
    // locals that outlive the sendmsg call, and CMSG_* stay within `cmsg`
    // (64 bytes hold CMSG_SPACE of 5 descriptors).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = cmsg.0.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(fd_bytes as u32) as _;
            let hdr = libc::CMSG_FIRSTHDR(&msg);
            (*hdr).cmsg_level = libc::SOL_SOCKET;
            (*hdr).cmsg_type = libc::SCM_RIGHTS;
            (*hdr).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(hdr), fd_bytes);
        }
        loop {
            if libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) >= 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Receives one datagram into `buf`, with at most `max_fds` descriptors
/// (close-on-exec); returns its length (0: end of file), the buffer and the
/// descriptors. A datagram carrying more descriptors than that, or longer
/// than `buf`, is an error (its descriptors are closed).
fn recv<const N: usize>(
    sock: &OwnedFd,
    buf: &mut [u8; N],
    max_fds: usize,
) -> std::io::Result<(usize, [u8; N], Vec<OwnedFd>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: N };
    let mut cmsg = CmsgBuf([0; 64]);
    // SAFETY: as in `send`; the kernel writes at most `msg_controllen`
    // bytes of control data into `cmsg`, and only SCM_RIGHTS payloads
    // (descriptors it installed for us) are read back, each taken over once.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE((REQ_FDS * 4) as u32) as _;
        let n = loop {
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 {
                break n as usize;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let mut fds = Vec::new();
        let mut hdr = libc::CMSG_FIRSTHDR(&msg);
        while !hdr.is_null() {
            if (*hdr).cmsg_level == libc::SOL_SOCKET && (*hdr).cmsg_type == libc::SCM_RIGHTS {
                let len = (*hdr).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(hdr);
                for i in 0..len / 4 {
                    let fd = std::ptr::read_unaligned(data.add(i * 4).cast::<RawFd>());
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            hdr = libc::CMSG_NXTHDR(&msg, hdr);
        }
        if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 || fds.len() > max_fds {
            return Err(std::io::Error::from_raw_os_error(libc::EMSGSIZE));
        }
        Ok((n, *buf, fds))
    }
}

/// A step's init, as the zygote tracks it.
struct Init {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    status: File,
}

/// The zygote's main loop (reached through `init_process` in the freshly
/// executed, single-threaded zygote); never returns.
pub(crate) fn run_zygote() -> ! {
    // SAFETY: `command` placed the socket at SOCK_FD right before exec;
    // nothing else in this process refers to it.
    let sock = unsafe { OwnedFd::from_raw_fd(SOCK_FD) };
    let _ = rustix::io::fcntl_setfd(&sock, rustix::io::FdFlags::CLOEXEC);
    // Settled once here (off: our environment has no such variable) rather
    // than looked up again in every init; a request turns it on.
    let _ = super::trace::enabled();
    // A pidfd of ourselves, through which a child in a new pid namespace
    // (whose `getppid` reads 0 whoever its parent is) checks that we are
    // still alive once its parent-death signal is armed.
    // SAFETY: plain syscall; the result is checked and owned below.
    let me = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0u32) };
    // SAFETY: a fresh descriptor (close-on-exec) if non-negative.
    let me = (me >= 0).then(|| unsafe { OwnedFd::from_raw_fd(me as RawFd) });
    let mut inits: Vec<Init> = Vec::new();
    loop {
        let mut polled: Vec<libc::pollfd> = std::iter::once(sock.as_raw_fd())
            .chain(inits.iter().map(|i| i.pidfd.as_raw_fd()))
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
        // SAFETY: `polled` is a valid array of `polled.len()` pollfds.
        if unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, -1) } < 0 {
            continue; // EINTR
        }
        // Reap first (from the back, so indices stay valid): a pidfd is
        // readable once its process has exited.
        for i in (0..inits.len()).rev() {
            if polled[i + 1].revents != 0 && reap(&inits[i]) {
                inits.swap_remove(i);
            }
        }
        if polled[0].revents == 0 {
            continue;
        }
        match recv(&sock, &mut [0u8; 1], REQ_FDS) {
            // rbuild has gone: so do we (the inits follow by their
            // parent-death signal).
            Ok((0, _, _)) | Err(_) => std::process::exit(0),
            Ok((_, flags, fds)) => {
                let reply = match <[OwnedFd; REQ_FDS]>::try_from(fds) {
                    Ok([spec, err, stdout, stderr, status]) => {
                        fork_step(flags[0], StepFds { spec, err, stdout, stderr, status }, me.as_ref(), &mut inits)
                    }
                    Err(_) => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
                };
                let sent = match reply {
                    Ok((pid, pidfd)) => send(&sock, &pid.to_ne_bytes(), &[pidfd.as_raw_fd()]),
                    Err(e) => send(&sock, &(-e.raw_os_error().unwrap_or(libc::EIO)).to_ne_bytes(), &[]),
                };
                if sent.is_err() {
                    std::process::exit(0);
                }
            }
        }
    }
}

/// Collects an exited init and reports its status; false if it is still running.
fn reap(init: &Init) -> bool {
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid out pointer.
    let rc = unsafe { libc::waitpid(init.pid, &mut status, libc::WNOHANG) };
    if rc == 0 {
        return false;
    }
    let code = if rc < 0 {
        255
    } else if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        return false;
    };
    let _ = (&init.status).write_all(&code.to_ne_bytes());
    true
}

/// Starts the init of one step; returns its pid and a pidfd for the solver.
///
/// With the kernel overlay (no [`REQ_COPY`]) the init is the step's pid 1
/// itself: it is cloned straight into a new pid namespace, builds the root
/// and executes the command, and this zygote reaps it (one fork and one
/// exit fewer per `RUN` than an init that forks pid 1 and waits for it).
/// The copy fallback keeps an init outside the namespace, which writes the
/// copy's changes to the upper dir once pid 1 has exited.
fn fork_step(flags: u8, fds: StepFds, me: Option<&OwnedFd>, inits: &mut Vec<Init>) -> std::io::Result<(i32, OwnedFd)> {
    let zygote = std::process::id() as libc::pid_t;
    let as_pid1 = flags & REQ_COPY == 0;
    let pid = match (as_pid1, me) {
        // SAFETY: the zygote is single-threaded (a fresh exec whose main
        // does nothing but this loop), so the child may run arbitrary code.
        // Without CLONE_VM and with SIGCHLD, clone is fork with a new pid
        // namespace: the child runs on its own copy of this stack. glibc's
        // fork handlers do not run, and need not: no other thread can hold
        // a lock, and the zygote registers none. (glibc's cached thread id
        // in the child is stale; `raise` and `abort` ask the kernel.)
        (true, Some(_)) => unsafe {
            libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_NEWPID | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            ) as libc::pid_t
        },
        (true, None) => return Err(std::io::Error::from_raw_os_error(libc::ENOSYS)),
        // SAFETY: as above.
        (false, _) => unsafe { libc::fork() },
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        become_init(flags, &fds, if as_pid1 { Parent::Pidfd(me) } else { Parent::Pid(zygote) });
    }
    // SAFETY: plain syscall on our own child's pid; the result is checked.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    if pidfd < 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: our own unreaped child; kill then reap it.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        return Err(e);
    }
    // SAFETY: pidfd_open returned a fresh descriptor (O_CLOEXEC by default).
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    let ours = rustix::io::fcntl_dupfd_cloexec(&pidfd, 0)?;
    let StepFds { status, .. } = fds;
    inits.push(Init { pid, pidfd: ours, status: File::from(status) });
    Ok((pid, pidfd))
}

/// How a child of the zygote checks that the zygote is still there.
enum Parent<'a> {
    /// Forked in the zygote's pid namespace: `getppid` is the zygote's pid.
    Pid(libc::pid_t),
    /// Pid 1 of a new namespace: the zygote's pidfd is readable once it has
    /// exited.
    Pidfd(Option<&'a OwnedFd>),
}

/// In the forked child: puts the step's descriptors in place, drops every
/// other one (the socket, the other steps' status pipes and pidfds) and
/// runs the sandbox init.
fn become_init(flags: u8, fds: &StepFds, parent: Parent<'_>) -> ! {
    // SAFETY: single-threaded child of the zygote; prctl/getppid/poll/fcntl/
    // dup2/close_range only act on this process and its descriptor table.
    unsafe {
        // Killing the zygote (or rbuild) takes the init, and with it the
        // step's pid namespace, along.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The zygote may have died before the prctl took effect.
        let gone = match parent {
            Parent::Pid(zygote) => libc::getppid() != zygote,
            Parent::Pidfd(Some(fd)) => {
                let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                libc::poll(&mut p, 1, 0) != 0
            }
            Parent::Pidfd(None) => true,
        };
        if gone {
            libc::_exit(125);
        }
        // To high numbers first, so that placing one cannot clobber another.
        let placed = [
            (fds.stdout.as_raw_fd(), 1),
            (fds.stderr.as_raw_fd(), 2),
            (fds.spec.as_raw_fd(), init::SPEC_FD),
            (fds.err.as_raw_fd(), init::ERR_FD),
            (fds.status.as_raw_fd(), init::STATUS_FD),
        ]
        .map(|(fd, to)| (libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10), to));
        for (high, to) in placed {
            if high < 0 || libc::dup2(high, to) < 0 {
                libc::_exit(125);
            }
        }
        let first = (init::STATUS_FD + 1) as u32;
        if libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) != 0 {
            // Before Linux 5.9: the init marks them close-on-exec anyway.
            for fd in first as RawFd..1024 {
                libc::close(fd);
            }
        }
    }
    if flags & REQ_COPY != 0 {
        copyfs::force_copy();
    }
    if flags & REQ_TRACE != 0 {
        super::trace::enable();
    }
    init::run_init(matches!(parent, Parent::Pidfd(_)))
}

/// A handle that kills a sandbox through its pidfd (never a reused pid).
#[derive(Debug, Clone)]
pub struct Killer(Arc<OwnedFd>);

impl Killer {
    pub(crate) fn new(pidfd: OwnedFd) -> Killer {
        Killer(Arc::new(pidfd))
    }

    /// Sends `SIGKILL` to the sandbox's init (its pid namespace follows: the
    /// init is pid 1, or pid 1's parent, whose death kills pid 1); does
    /// nothing once it has exited.
    pub fn kill(&self) {
        // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo.
        unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, self.0.as_raw_fd(), libc::SIGKILL, std::ptr::null::<u8>(), 0u32);
        }
    }
}

/// Reads the 4-byte status the zygote writes when the init exits.
pub(crate) fn read_status(pipe: &mut File) -> Result<i32, SandboxError> {
    let mut buf = [0u8; 4];
    match pipe.read_exact(&mut buf) {
        Ok(()) => Ok(i32::from_ne_bytes(buf)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(SandboxError::ZygoteGone),
        Err(e) => Err(SandboxError::Wait(e)),
    }
}
