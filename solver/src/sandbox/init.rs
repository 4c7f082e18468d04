//! The sandbox init of one `RUN` (the `runc init` of rbuild).
//!
//! The zygote ([`super::zygote`]) starts it for each step with the JSON spec
//! readable on fd 3, an error pipe on fd 4 and the command's stdout/stderr
//! pipes as fds 1 and 2. With the kernel overlay the zygote clones it
//! straight into a new pid namespace: [`run_init`] (single-threaded: a copy
//! of the single-threaded zygote) is then pid 1 itself, unshares the ipc,
//! uts (and net) namespaces and goes on as pid 1 below; killing it (what
//! [`super::SandboxChild::kill`] does) makes the kernel kill everything
//! else in the namespace, and the zygote reaps it and reports its status.
//! With the copy fallback, which has work to do once pid 1 has exited, the
//! init is forked outside the namespace and
//! - unshares pid, ipc, uts (and net) namespaces — a new pid namespace only
//!   applies to children, hence the fork;
//! - forks pid 1 of the new pid namespace, which gets `PR_SET_PDEATHSIG
//!   = SIGKILL`: killing this intermediate process kills pid 1, and the
//!   kernel then kills everything else in the namespace;
//! - waits for pid 1, writes the copy's changes to the upper dir and exits
//!   with pid 1's status (128+signal if killed).
//!
//! Pid 1 builds the root ([`super::rootfs::setup`]), resolves the user in
//! the image, installs the seccomp filter ([`super::seccomp`]; before the id
//! switch, see there), switches ids, drops capabilities to Docker's set
//! (less `CAP_NET_RAW` on the private network, [`super::caps`]), marks every descriptor but stdio close-on-exec, closes
//! the error pipe (set-up done) and `execve`s.

use std::convert::Infallible;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use rustix::thread::UnshareFlags;

use super::syscall::{Linux, Syscall};
use super::{
    MountSource, Network, RunSpec, SandboxError, Security, caps, copyfs, error_chain, passwd, rootfs, seccomp,
};

/// Descriptor carrying the JSON [`RunSpec`] into the init.
pub(crate) const SPEC_FD: i32 = 3;
/// Descriptor on which the init reports set-up failures; closed on success.
pub(crate) const ERR_FD: i32 = 4;
/// The step's status pipe: an init that is not pid 1 (copy fallback)
/// writes its exit status there itself before exiting, so the solver need
/// not wait for the zygote to reap it, as does one whose set-up failed; the
/// zygote writes the status it reaps too (for pid 1, which becomes the
/// command, and for an init killed before it could).
pub(crate) const STATUS_FD: i32 = 5;
/// Exit code of a sandbox whose set-up failed (as runc/Docker use 125).
const SETUP_FAILED: i32 = 125;

/// Runs the sandbox init; never returns. `as_pid1`: this process is already
/// pid 1 of the step's new pid namespace (the zygote cloned it there), and
/// becomes the command; otherwise it forks pid 1 and waits for it.
pub(crate) fn run_init(as_pid1: bool) -> ! {
    // SAFETY: the zygote placed these three descriptors with dup2 right after
    // the fork; nothing else in this process refers to them.
    let (mut spec_pipe, err, status) =
        unsafe { (File::from_raw_fd(SPEC_FD), OwnedFd::from_raw_fd(ERR_FD), File::from_raw_fd(STATUS_FD)) };
    let _ = rustix::io::fcntl_setfd(&status, rustix::io::FdFlags::CLOEXEC);
    // Neither the spec pipe nor the error pipe may leak into the command.
    let _ = rustix::io::fcntl_setfd(&err, rustix::io::FdFlags::CLOEXEC);
    let _ = rustix::io::fcntl_setfd(&spec_pipe, rustix::io::FdFlags::CLOEXEC);
    super::trace::mark("init");
    let mut err = Some(err);
    let mut buf = Vec::new();
    let result = spec_pipe
        .read_to_end(&mut buf)
        .map_err(SandboxError::Pipe)
        .and_then(|_| {
            // The spec, then (after a NUL, which JSON never contains) the
            // seccomp filter the parent compiled once for all `RUN`s.
            let (json, filter) = buf.split_at(buf.iter().position(|b| *b == 0).unwrap_or(buf.len()));
            seccomp::receive(filter.get(1..).unwrap_or_default());
            serde_json::from_slice::<RunSpec>(json).map_err(SandboxError::SpecCodec)
        })
        .and_then(|spec| {
            super::trace::mark("spec-read");
            drop(spec_pipe);
            if as_pid1 {
                // Returns only on failure; the zygote reports the exit status.
                let Err(e) = enter_namespaces(&spec, UnshareFlags::empty()).and_then(|()| pid1(&spec, None, &mut err));
                Err(e)
            } else {
                intermediate(&spec, &mut err)
            }
        });
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            report(err.as_ref(), &e);
            SETUP_FAILED
        }
    };
    // The solver may read this before we are gone: pid 1 and its namespaces
    // are (their teardown precedes pid 1's exit notification), and the
    // copy fallback's diff is written.
    let _ = (&status).write_all(&code.to_ne_bytes());
    // SAFETY: nothing is buffered (reports go out with one write each), and
    // the exit handlers inherited from the zygote have nothing to do for
    // this process but cost time (mimalloc's purge of its arenas).
    unsafe { libc::_exit(code) }
}

fn report(err: Option<&OwnedFd>, e: &SandboxError) {
    let msg = error_chain(e);
    match err {
        Some(fd) => {
            let _ = rustix::io::write(fd, msg.as_bytes());
        }
        None => eprintln!("rbuild sandbox: {msg}"),
    }
}

/// The copy fallback of a `RUN` root: the layers flattened into a private
/// directory (next to the work dir, on the snapshot's file system), the
/// overlay extra mounts flattened beside it, and the mount points created
/// in the root, removed again before the diff.
struct Fallback {
    dir: PathBuf,
    root: PathBuf,
    merged: copyfs::Merged,
    mount_points: Vec<copyfs::MountPoint>,
    /// The spec with overlay mounts turned into binds of their copies.
    spec: RunSpec,
}

fn copy_err(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.display().to_string();
    move |source| SandboxError::CopyFallback { step, path, source }
}

impl Fallback {
    fn prepare(spec: &RunSpec) -> Result<Fallback, SandboxError> {
        let dir = spec.workdir.join("rootfs-fallback");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(copy_err("clean", &dir))?;
        }
        let root = dir.join("root");
        std::fs::create_dir_all(&root).map_err(copy_err("create", &root))?;
        let mut merged = copyfs::Merged::new(&spec.lowerdirs).map_err(copy_err("read the layers of", &root))?;
        merged.flatten(&root, false).map_err(copy_err("flatten layers into", &root))?;
        let mut spec = spec.clone();
        for (i, m) in spec.mounts.iter_mut().enumerate() {
            if let MountSource::Overlay { lowerdirs, readonly, selector } = &m.source {
                let d = dir.join(format!("mount{i}"));
                std::fs::create_dir(&d).map_err(copy_err("create", &d))?;
                // A read-only copy may share the snapshots' inodes (it is
                // bind-mounted read-only); a writable one is discarded.
                copyfs::Merged::new(lowerdirs)
                    .and_then(|mut mm| mm.flatten(&d, *readonly))
                    .map_err(copy_err("flatten layers into", &d))?;
                // Resolved inside the copy; nothing else touches this
                // private directory, so its symlink-free path stays valid.
                let sub = super::inroot::canonical_in_root(&d, selector).map_err(|source| {
                    SandboxError::BindSource { selector: selector.clone(), target: m.target.clone(), source }
                })?;
                m.source = MountSource::Bind { source: d.join(sub), readonly: *readonly };
            }
        }
        let mut targets: Vec<(&str, bool)> = rootfs::PSEUDO_TARGETS.to_vec();
        for m in &spec.mounts {
            let file = match &m.source {
                MountSource::Bind { source, .. } => !std::fs::metadata(source).is_ok_and(|md| md.is_dir()),
                _ => false,
            };
            targets.push((m.target.as_str(), file));
        }
        let mut mount_points = Vec::new();
        for (t, file) in targets {
            let r = Linux.resolve(&root, t).map_err(|source| SandboxError::Prepare { path: t.to_string(), source })?;
            if !r.missing.is_empty() {
                mount_points.push(
                    copyfs::create_mount_point(&root, &r.existing, &r.missing, file)
                        .map_err(|source| SandboxError::Prepare { path: t.to_string(), source })?,
                );
            }
        }
        Ok(Fallback { dir, root, merged, mount_points, spec })
    }

    /// Writes the changes to the upper dir, then removes the copies.
    fn finish(self, upper: &Path) -> Result<(), SandboxError> {
        for mp in self.mount_points.iter().rev() {
            copyfs::remove_mount_point(&self.root, mp).map_err(copy_err("remove mount points from", &self.root))?;
        }
        let ignore = self.mount_points.iter().map(|m| m.path().to_path_buf()).collect();
        self.merged.diff(&self.root, upper, &ignore).map_err(copy_err("write the changes of", &self.root))?;
        std::fs::remove_dir_all(&self.dir).map_err(copy_err("remove", &self.dir))
    }
}

fn intermediate(spec: &RunSpec, err: &mut Option<OwnedFd>) -> Result<i32, SandboxError> {
    let fallback = if copyfs::use_copy() { Some(Fallback::prepare(spec)?) } else { None };
    let code =
        supervise(fallback.as_ref().map_or(spec, |f| &f.spec), fallback.as_ref().map(|f| f.root.as_path()), err)?;
    if let Some(f) = fallback {
        // Pid 1 is gone, and with it its mount namespace: what is left in
        // the root is what the command wrote.
        f.finish(&spec.upperdir)?;
    }
    Ok(code)
}

/// Joins the step's cgroup and the build's network, and unshares the ipc,
/// uts (and for `--network=none` net) namespaces, plus `extra` (the pid
/// namespace, which only applies to children, where this process is not
/// pid 1 already).
fn enter_namespaces(spec: &RunSpec, extra: UnshareFlags) -> Result<(), SandboxError> {
    if let Some(cg) = &spec.cgroup {
        super::cgroup::join(cg).map_err(|source| SandboxError::Cgroup { path: cg.clone(), source })?;
    }
    if let Network::Private { netns } = &spec.network {
        super::network::join(netns).map_err(|source| SandboxError::JoinNetwork { path: netns.clone(), source })?;
    }
    let mut flags = extra | UnshareFlags::NEWIPC | UnshareFlags::NEWUTS;
    if spec.network == Network::None {
        flags |= UnshareFlags::NEWNET;
    }
    Linux.unshare(flags).map_err(|source| SandboxError::Unshare { what: "pid, ipc, uts and net", source })?;
    if spec.network == Network::None {
        loopback_up().map_err(SandboxError::Loopback)?;
    }
    super::trace::mark("namespaces");
    Ok(())
}

fn supervise(spec: &RunSpec, flat_root: Option<&Path>, err: &mut Option<OwnedFd>) -> Result<i32, SandboxError> {
    enter_namespaces(spec, UnshareFlags::NEWPID)?;
    // SAFETY: this process is single-threaded (a fork of the
    // single-threaded zygote), so the child may run arbitrary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SandboxError::Fork { what: "the sandbox pid 1", source: std::io::Error::last_os_error() });
    }
    if pid == 0 {
        // If the intermediate dies (SandboxChild::kill), so does pid 1 and
        // with it the whole pid namespace. (Window: a kill landing before
        // this prctl leaves pid 1 running to completion.)
        let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
        let Err(e) = pid1(spec, flat_root, err);
        report(err.as_ref(), &e);
        // SAFETY: leave without running the parent's exit handlers twice.
        unsafe { libc::_exit(SETUP_FAILED) };
    }
    // Only pid 1 keeps the error pipe: its close (exec or exit) is what
    // `spawn` waits for.
    *err = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid out pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(SandboxError::Wait(e));
        }
        super::trace::mark("pid1-exited");
        if libc::WIFEXITED(status) {
            return Ok(libc::WEXITSTATUS(status));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(128 + libc::WTERMSIG(status));
        }
    }
}

/// Brings `lo` up in the (new) network namespace of the calling process.
pub(crate) fn loopback_up() -> std::io::Result<()> {
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    // SAFETY: plain socket(2) call; the result is checked.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `sock` is a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: 0, _pad: [0; 22] };
    req.name[0] = b'l' as libc::c_char;
    req.name[1] = b'o' as libc::c_char;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: `req` is a properly laid out `struct ifreq` (name, then the
    // flags member of the union, padded to the union's 24 bytes) that lives
    // across both calls.
    unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req as *mut IfReq) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req as *const IfReq) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Pid 1: build the root, become the user, exec. Returns only on failure.
fn pid1(spec: &RunSpec, flat_root: Option<&Path>, err: &mut Option<OwnedFd>) -> Result<Infallible, SandboxError> {
    super::trace::mark("pid1");
    rootfs::setup(&Linux, spec, flat_root)?;
    super::trace::mark("pivoted");
    // Before leaving root: raising a hard limit needs CAP_SYS_RESOURCE.
    super::limits::apply(&spec.rlimits)?;
    // From here on "/" is the container's root.
    let passwd_text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group_text = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let user = passwd::resolve(&spec.user, &passwd_text, &group_text)
        .map_err(|detail| SandboxError::User { user: spec.user.clone(), detail })?;
    let cwd = if spec.cwd.is_empty() { "/" } else { spec.cwd.as_str() };
    // As BuildKit does, a missing working directory is created (by root,
    // before switching user) and stays in the snapshot.
    std::fs::create_dir_all(cwd).map_err(|source| SandboxError::Prepare { path: cwd.to_string(), source })?;

    // Seccomp is installed while pid 1 still holds CAP_SYS_ADMIN, i.e.
    // before the id switch and the capability drop, so that it needs no
    // `no_new_privs` and setuid binaries keep working (see `seccomp::install`).
    if spec.security == Security::Sandbox {
        seccomp::install_default(caps::configured_for_seccomp(&spec.network)).map_err(SandboxError::Seccomp)?;
    }

    super::trace::mark("seccomp");
    let caps =
        caps::Plan::new(spec.security, &spec.network, user.uid, caps::current().map_err(SandboxError::Capabilities)?);
    caps::keep_across_setuid().map_err(SandboxError::Capabilities)?;
    let set_err = |what: String| move |source: rustix::io::Errno| SandboxError::SetIds { what, source: source.into() };
    let groups: Vec<rustix::process::Gid> = user.groups.iter().map(|g| rustix::process::Gid::from_raw(*g)).collect();
    match rustix::thread::set_thread_groups(&groups) {
        // With a single-id mapping setgroups is denied; there is nothing to set anyway.
        Ok(()) | Err(rustix::io::Errno::PERM) => {}
        Err(e) => return Err(set_err(format!("groups {:?}", user.groups))(e)),
    }
    let g = rustix::process::Gid::from_raw(user.gid);
    let u = rustix::process::Uid::from_raw(user.uid);
    rustix::thread::set_thread_res_gid(g, g, g).map_err(set_err(format!("gid {}", user.gid)))?;
    rustix::thread::set_thread_res_uid(u, u, u).map_err(set_err(format!("uid {}", user.uid)))?;
    caps::regain_after_setuid().map_err(SandboxError::Capabilities)?;
    // Changing the effective uid reset the parent-death signal.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    std::env::set_current_dir(cwd).map_err(|source| SandboxError::Prepare { path: cwd.to_string(), source })?;

    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={}", super::DEFAULT_PATH));
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let path_var = env.iter().rev().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(super::DEFAULT_PATH).to_string();
    // Seccomp goes here: without NO_NEW_PRIVS (BuildKit sets none, so setuid
    // binaries work) installing a filter needs CAP_SYS_ADMIN, which the
    // capability drop below removes (runc orders it so too). The filter must
    // allow what follows: capset, prctl, close_range, execve.
    caps.apply().map_err(SandboxError::Capabilities)?;
    cloexec_above_stdio().map_err(SandboxError::CloseFds)?;
    super::trace::mark("exec");
    // Set-up is complete: closing the error pipe lets `spawn` return. What
    // follows is the command's own business and goes to its stderr.
    *err = None;
    let arg0 = spec.args[0].as_str();
    let program = match lookup(arg0, &path_var) {
        Some(p) => p,
        None => exit_with(127, &format!("`{arg0}`: executable file not found in $PATH")),
    };
    let mut cmd = std::process::Command::new(&program);
    cmd.arg0(arg0).args(&spec.args[1..]).env_clear();
    for kv in &env {
        match kv.split_once('=') {
            Some((k, v)) => cmd.env(k, v),
            None => cmd.env(kv, ""),
        };
    }
    // `exec` only returns on failure (std also resets SIGPIPE, which the
    // Rust runtime ignores, to its default first).
    let e = cmd.exec();
    let code = if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
    exit_with(code, &format!("`{arg0}`: {e}"))
}

/// Marks every descriptor above stdio close-on-exec, so that nothing rbuild
/// inherited without `O_CLOEXEC` (a CI runner's log pipe, a jobserver, an
/// `exec 8</` of the calling script) reaches the command.
fn cloexec_above_stdio() -> std::io::Result<()> {
    // SAFETY: close_range only sets descriptor flags; no memory is passed.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.11 know no CLOSE_RANGE_CLOEXEC: one at a time.
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        // SAFETY: F_SETFD on a descriptor number only sets its flags (a
        // number closed meanwhile, read_dir's own, gives EBADF, ignored).
        if fd > 2 && unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EBADF) {
                return Err(e);
            }
        }
    }
    Ok(())
}

fn exit_with(code: i32, msg: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "{msg}");
    // SAFETY: leave pid 1 without running exit handlers inherited from the parent.
    unsafe { libc::_exit(code) }
}

/// `args[0]` lookup in `PATH`, like execvp but inside the container.
fn lookup(arg0: &str, path: &str) -> Option<PathBuf> {
    if arg0.contains('/') {
        return Some(PathBuf::from(arg0));
    }
    if arg0.is_empty() {
        return None;
    }
    path.split(':')
        .map(|d| if d.is_empty() { Path::new(".") } else { Path::new(d) }.join(arg0))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_searches_path_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("tool"), "").unwrap(); // not executable: skipped
        std::fs::write(b.join("tool"), "").unwrap();
        std::fs::set_permissions(b.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", a.display(), b.display());
        assert_eq!(lookup("tool", &path), Some(b.join("tool")));
        assert_eq!(lookup("missing", &path), None);
        assert_eq!(lookup("/x/y", &path), Some(PathBuf::from("/x/y")));
        assert_eq!(lookup("", &path), None);
    }
}
