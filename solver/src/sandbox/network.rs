//! The default `RUN` network: one private network namespace per solve,
//! connected to the outside by a user-mode network stack.
//!
//! Rootless builders cannot create veth pairs into the host's network
//! namespace, so, like rootless podman, outbound traffic goes through a
//! user-mode TCP/IP stack running in the host's namespace: `pasta` (Debian
//! package `passt`) or `slirp4netns`. Starting one per `RUN` would cost tens
//! of milliseconds, so [`PrivateNetwork::start`] runs once per solve:
//! 1. a short-lived thread unshares a network namespace (a network
//!    namespace belongs to a thread, so no process needs to be forked or
//!    executed for it), brings `lo` up, opens ICMP echo sockets to every
//!    group (`RUN`s here lack `CAP_NET_RAW`, see [`allow_ping`]) and
//!    bind-mounts the namespace onto a file (as `ip netns add` does), so the
//!    helper and every sandbox init can open it by path without ptrace
//!    rights over anyone;
//! 2. the helper attaches to that file with everything that would reach the
//!    host itself disabled: pasta with `--no-map-gw` and no port forwarding
//!    in either direction (`-t/-u/-T/-U none`; its default `auto` would
//!    forward the host's bound loopback ports into the namespace), slirp4netns
//!    with `--disable-host-loopback`;
//! 3. that thread waits until the namespace has a default route, adds
//!    local routes for 127.0.0.0/8 and ::1 on the helper's device (a socket
//!    bound to that device would otherwise send loopback addresses out to
//!    the helper, see [`keep_loopback_local`]), then exits; the mount keeps
//!    the namespace alive.
//!
//! Each sandbox init then `setns`es into it ([`join`]) before its own
//! unshares. Abstract unix sockets belong to a network namespace, so the
//! host's are unreachable as well. The helper is a child of a dedicated
//! thread that waits for it (its parent-death signal is tied to that thread),
//! gets `SIGKILL` if rbuild dies, inherits only stdio, and is killed when the
//! [`PrivateNetwork`] is dropped.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Forces one helper (`pasta` or `slirp4netns`) instead of the first found.
pub const HELPER_ENV: &str = "RBUILD_NETWORK_HELPER";
/// Address pasta answers DNS queries on (forwarding them to the host's
/// resolver); link-local, so it never collides with a real network.
const PASTA_DNS: &str = "169.254.1.1";
/// slirp4netns' built-in DNS forwarder.
const SLIRP_DNS: &str = "10.0.2.3";
/// How long a helper may take to configure the namespace.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a helper's stderr is kept for an error message.
const LOG_TAIL: usize = 4096;

/// The user-mode network stack behind the private network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Helper {
    /// `pasta`, from Debian's `passt` package.
    Pasta,
    /// `slirp4netns`.
    Slirp4netns,
}

impl Helper {
    /// Executable name.
    pub fn program(self) -> &'static str {
        match self {
            Helper::Pasta => "pasta",
            Helper::Slirp4netns => "slirp4netns",
        }
    }

    /// The address of the helper's DNS forwarder inside the namespace.
    pub fn dns(self) -> &'static str {
        match self {
            Helper::Pasta => PASTA_DNS,
            Helper::Slirp4netns => SLIRP_DNS,
        }
    }

    fn args(self, netns: &Path) -> Vec<String> {
        let ns = netns.display().to_string();
        let v: &[&str] = match self {
            // `--runas 0:0`: container root of rbuild's user namespace (the
            // invoking user on the host); pasta would otherwise switch to
            // `nobody`, which a single-id mapping does not have.
            Helper::Pasta => &[
                "--foreground",
                "--quiet",
                "--runas",
                "0:0",
                "--config-net",
                "--no-map-gw",
                "--tcp-ports",
                "none",
                "--udp-ports",
                "none",
                "--tcp-ns",
                "none",
                "--udp-ns",
                "none",
                "--dns-forward",
                PASTA_DNS,
                "--netns",
            ],
            Helper::Slirp4netns => &[
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                "--enable-sandbox",
                "--enable-seccomp",
                "--netns-type=path",
            ],
        };
        let mut args: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        args.push(ns);
        if self == Helper::Slirp4netns {
            args.push("tap0".into());
        }
        args
    }
}

/// Failures to provide the default network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// No helper is installed.
    #[error(
        "the default RUN network needs a user-mode network stack, but neither `pasta` (Debian package `passt`) nor `slirp4netns` (package `slirp4netns`) is in $PATH: install one (`scripts/setup.sh` does), or give the build the host's network with `--network=host --allow network.host`"
    )]
    NoHelper,
    /// `/dev/net/tun` cannot be opened (the helpers need it).
    #[error(
        "the default RUN network needs `/dev/net/tun`, which cannot be opened here; Debian's udev makes it mode 0666: as root, `chmod 0666 /dev/net/tun` (`scripts/setup.sh` does), or use `--network=host --allow network.host`"
    )]
    Tun(#[source] std::io::Error),
    /// The helper forced with [`HELPER_ENV`] is not installed.
    #[error(
        "`{HELPER_ENV}={program}`, but `{program}` is not in $PATH: install Debian package `{package}` (`scripts/setup.sh` does), or use `--network=host --allow network.host`"
    )]
    HelperMissing {
        /// The program.
        program: &'static str,
        /// Its Debian package.
        package: &'static str,
    },
    /// [`HELPER_ENV`] names something else.
    #[error("`{HELPER_ENV}` must be `pasta` or `slirp4netns`, not `{0}`")]
    UnknownHelper(String),
    /// Creating or mounting the namespace failed.
    #[error("cannot {step} the build's network namespace")]
    Namespace {
        /// The step.
        step: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The helper could not be started.
    #[error("cannot start `{program}`")]
    Start {
        /// The program.
        program: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The helper exited before the namespace had a route.
    #[error("`{program}` exited before the network was configured: {log}")]
    Exited {
        /// The program.
        program: &'static str,
        /// The end of its stderr.
        log: String,
    },
    /// The helper took too long.
    #[error("`{program}` did not configure the network within {secs} s")]
    Timeout {
        /// The program.
        program: &'static str,
        /// The limit.
        secs: u64,
    },
}

/// The private network of one solve. Dropping it stops the helper and
/// releases the namespace.
#[derive(Debug)]
pub struct PrivateNetwork {
    helper: Helper,
    netns: PathBuf,
    /// The helper, as a pidfd: killing it can never hit a reused pid.
    pidfd: Option<std::os::fd::OwnedFd>,
}

impl PrivateNetwork {
    /// Creates the namespace (its file in `dir`, which must exist and be
    /// private to this process) and attaches the helper.
    pub fn start(dir: &Path) -> Result<PrivateNetwork, NetworkError> {
        let (helper, program) = find_helper()?;
        // Checked here for a message that says what to do; the helper
        // would only say that it failed to open a tun socket.
        std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun").map_err(NetworkError::Tun)?;
        let netns = dir.join("netns");
        std::fs::File::create(&netns)
            .map_err(|source| NetworkError::Namespace { step: "create the file of", source })?;
        // From here on dropping `net` undoes everything.
        let mut net = PrivateNetwork { helper, netns, pidfd: None };
        let log = Arc::new(Mutex::new(None::<String>));
        let (mounted_tx, mounted_rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            // This thread alone moves into the new namespace: the helper
            // must be started from one that stays in the host's.
            let inside = scope.spawn(|| -> Result<(), NetworkError> {
                let created = create_namespace(&net.netns);
                let ok = created.is_ok();
                let _ = mounted_tx.send(created);
                if !ok {
                    return Ok(());
                }
                let started = Instant::now();
                loop {
                    let table = std::fs::read_to_string("/proc/thread-self/net/route").unwrap_or_default();
                    if let Some(device) = default_route_device(&table) {
                        return keep_loopback_local(device).map_err(|source| NetworkError::Namespace {
                            step: "route 127.0.0.0/8 locally on the helper's device in",
                            source,
                        });
                    }
                    if let Some(log) = log.lock().expect("helper log").take() {
                        return Err(NetworkError::Exited { program: helper.program(), log });
                    }
                    if started.elapsed() > READY_TIMEOUT {
                        return Err(NetworkError::Timeout { program: helper.program(), secs: READY_TIMEOUT.as_secs() });
                    }
                    std::thread::sleep(Duration::from_micros(500));
                }
            });
            let mounted = mounted_rx.recv().unwrap_or_else(|_| {
                Err(NetworkError::Namespace { step: "create", source: std::io::Error::other("the thread ended") })
            });
            let spawned = mounted.and_then(|()| spawn_helper(helper, &program, &net.netns, log.clone()));
            let spawned = match spawned {
                Ok(pidfd) => {
                    net.pidfd = Some(pidfd);
                    Ok(())
                }
                Err(e) => {
                    // Unblock the waiting thread (it takes the log as "exited").
                    *log.lock().expect("helper log") = Some(String::new());
                    Err(e)
                }
            };
            let ready = inside.join().unwrap_or_else(|_| {
                Err(NetworkError::Namespace { step: "create", source: std::io::Error::other("the thread panicked") })
            });
            spawned.and(ready)
        })?;
        Ok(net)
    }

    /// The namespace file a sandbox joins ([`super::Network::Private`]).
    pub fn netns(&self) -> &Path {
        &self.netns
    }

    /// The helper in use.
    pub fn helper(&self) -> Helper {
        self.helper
    }

    /// `/etc/resolv.conf` for a `RUN` in this network: the host's search
    /// and options lines, with the helper's DNS forwarder as the only
    /// nameserver (the host's may be a loopback address, unreachable here).
    pub fn resolv_conf(&self, host: &str) -> String {
        let mut out = format!("nameserver {}\n", self.helper.dns());
        for line in host.lines() {
            let l = line.trim_start();
            if l.starts_with("search") || l.starts_with("domain") || l.starts_with("options") {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for PrivateNetwork {
    fn drop(&mut self) {
        // Not waited for: the kernel takes tens of milliseconds to tear
        // down the helper's tap device, and the thread that started the
        // helper reaps it on its own.
        if let Some(fd) = self.pidfd.take() {
            let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
        }
        let _ = rustix::mount::unmount(&self.netns, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_file(&self.netns);
    }
}

/// The device of the default route in a `/proc/net/route` table, if any.
fn default_route_device(table: &str) -> Option<&str> {
    table.lines().skip(1).find_map(|l| {
        let mut f = l.split_whitespace();
        let device = f.next()?;
        (f.next()? == "00000000").then_some(device)
    })
}

/// Adds `local 127.0.0.0/8 dev DEVICE table local metric 1`, and the same
/// for `::1/128`, in the calling thread's network namespace (as `ip route
/// add` would, over rtnetlink).
///
/// Why: a socket bound to a device (`SO_BINDTODEVICE`, `IP_UNICAST_IF`, an
/// `IP_PKTINFO` interface index; none needs a capability) makes the kernel
/// look routes up on that device only; finding none for 127.0.0.1 (the
/// loopback route is on `lo`), it takes the address as on-link and sends
/// the packet out of the helper's tap, and the helper connects to the
/// host's loopback. With this route the lookup on the device finds a local
/// route, and the packet stays in the namespace, delivered over its `lo`.
fn keep_loopback_local(device: &str) -> std::io::Result<()> {
    let name = std::ffi::CString::new(device).map_err(std::io::Error::other)?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(std::io::Error::last_os_error());
    }
    for lo in &LOOPBACKS {
        add_route(&local_route_request(lo, index))?;
    }
    Ok(())
}

/// Sends one rtnetlink request and reads the kernel's acknowledgement.
fn add_route(request: &[u8]) -> std::io::Result<()> {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero `sockaddr_nl` is valid; pid 0 addresses the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `request` and `kernel` live across the call, with the lengths given.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut reply = [0u8; 1024];
    // SAFETY: `reply` is writable for its whole length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    netlink_ack(&reply[..n as usize])
}

/// A loopback prefix to keep local: address family, prefix, prefix length.
struct Loopback {
    family: u8,
    prefix: &'static [u8],
    len: u8,
}

/// 127.0.0.0/8 and ::1/128.
const LOOPBACKS: [Loopback; 2] = [
    Loopback { family: libc::AF_INET as u8, prefix: &[127, 0, 0, 0], len: 8 },
    Loopback { family: libc::AF_INET6 as u8, prefix: &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], len: 128 },
];

/// The `RTM_NEWROUTE` message for `local PREFIX dev INDEX table local
/// metric 1`.
fn local_route_request(lo: &Loopback, index: u32) -> Vec<u8> {
    let attr = |m: &mut Vec<u8>, kind: u16, data: &[u8]| {
        m.extend_from_slice(&(4 + data.len() as u16).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(data);
    };
    let mut m = Vec::with_capacity(64);
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    m.extend_from_slice(&0u32.to_ne_bytes()); // nlmsghdr: length (below),
    m.extend_from_slice(&libc::RTM_NEWROUTE.to_ne_bytes()); // type,
    m.extend_from_slice(&flags.to_ne_bytes()); // flags,
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence,
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id.
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    m.extend_from_slice(&[
        lo.family,
        lo.len,
        0,
        0,
        libc::RT_TABLE_LOCAL,
        libc::RTPROT_STATIC,
        libc::RT_SCOPE_HOST,
        libc::RTN_LOCAL,
    ]);
    m.extend_from_slice(&0u32.to_ne_bytes());
    // The table already holds `local PREFIX dev lo` with metric 0: metric 1
    // makes this a route of its own, looked at after that one.
    attr(&mut m, libc::RTA_DST, lo.prefix);
    attr(&mut m, libc::RTA_OIF, &index.to_ne_bytes());
    attr(&mut m, libc::RTA_PRIORITY, &1u32.to_ne_bytes());
    let len = m.len() as u32;
    m[..4].copy_from_slice(&len.to_ne_bytes());
    m
}

/// The kernel's answer to a request sent with `NLM_F_ACK`: an `NLMSG_ERROR`
/// message whose error is 0 on success, a negative errno otherwise.
fn netlink_ack(reply: &[u8]) -> std::io::Result<()> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed rtnetlink reply");
    let kind = u16::from_ne_bytes(reply.get(4..6).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
    let error = i32::from_ne_bytes(reply.get(16..20).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
    match (kind as i32, error) {
        (libc::NLMSG_ERROR, 0) => Ok(()),
        (libc::NLMSG_ERROR, e) => Err(std::io::Error::from_raw_os_error(-e)),
        _ => Err(bad()),
    }
}

/// The helper to use and its path: [`HELPER_ENV`], else pasta, else slirp4netns.
fn find_helper() -> Result<(Helper, PathBuf), NetworkError> {
    let forced = match std::env::var(HELPER_ENV) {
        Ok(v) if !v.is_empty() => match v.as_str() {
            "pasta" => Some(Helper::Pasta),
            "slirp4netns" => Some(Helper::Slirp4netns),
            _ => return Err(NetworkError::UnknownHelper(v)),
        },
        _ => None,
    };
    let path = std::env::var("PATH").unwrap_or_default();
    let lookup = |h: Helper| {
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(h.program()))
            .find(|p| p.is_file())
            .map(|p| (h, p))
    };
    match forced {
        Some(h) => lookup(h).ok_or(NetworkError::HelperMissing {
            program: h.program(),
            package: if h == Helper::Pasta { "passt" } else { "slirp4netns" },
        }),
        None => lookup(Helper::Pasta).or_else(|| lookup(Helper::Slirp4netns)).ok_or(NetworkError::NoHelper),
    }
}

/// Moves the calling thread into a new network namespace, brings `lo` up
/// and bind-mounts the namespace onto `file`.
fn create_namespace(file: &Path) -> Result<(), NetworkError> {
    let err = |step| move |source| NetworkError::Namespace { step, source };
    // SAFETY: unshare(CLONE_NEWNET) only changes the calling thread's
    // network namespace (unlike CLONE_NEWUSER it is allowed in a
    // multi-threaded process); this thread exists for that purpose.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(err("create")(std::io::Error::last_os_error()));
    }
    super::init::loopback_up().map_err(err("bring up `lo` in"))?;
    allow_ping().map_err(err("open ICMP echo sockets to every group in"))?;
    bind_mount(Path::new("/proc/thread-self/ns/net"), file).map_err(err("mount"))
}

/// Highest gid `net.ipv4.ping_group_range` accepts (the kernel's `GID_T_MAX`).
const PING_GID_MAX: u64 = (1 << 31) - 1;

/// Lets every group open ICMP echo sockets (`SOCK_DGRAM`, `IPPROTO_ICMP`,
/// IPv6 too) in the calling thread's network namespace, as Docker does in
/// its containers: `RUN`s on this network lack `CAP_NET_RAW` (see
/// `caps::PRIVATE_NETWORK_DEFAULT`), and `ping` falls back to these sockets
/// when it cannot open a raw one. `/proc/sys/net` shows the namespace of
/// the calling thread, which is this new one.
fn allow_ping() -> std::io::Result<()> {
    let map = std::fs::read_to_string("/proc/thread-self/gid_map")?;
    let range = ping_group_range(&map)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("no gid mapped: {map:?}")))?;
    std::fs::write("/proc/sys/net/ipv4/ping_group_range", range)
}

/// The `ping_group_range` value covering every gid of a user namespace's
/// `gid_map`. The kernel refuses a bound its namespace does not map (so
/// rootless rbuild cannot write Docker's `0 2147483647`) and one above
/// [`PING_GID_MAX`].
fn ping_group_range(gid_map: &str) -> Option<String> {
    let (mut low, mut high) = (u64::MAX, 0u64);
    for line in gid_map.lines() {
        let f: Vec<u64> = line.split_whitespace().filter_map(|n| n.parse().ok()).collect();
        if let [inside, _, count] = f[..]
            && count > 0
        {
            low = low.min(inside);
            high = high.max(inside + count - 1);
        }
    }
    let high = high.min(PING_GID_MAX);
    (low <= high).then(|| format!("{low} {high}"))
}

/// Starts the helper from a (detached) thread that waits for it; returns
/// a pidfd of it. When it exits, `log` receives the end of its stderr.
fn spawn_helper(
    helper: Helper,
    program: &Path,
    netns: &Path,
    log: Arc<Mutex<Option<String>>>,
) -> Result<std::os::fd::OwnedFd, NetworkError> {
    let mut cmd = Command::new(program);
    cmd.args(helper.args(netns)).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    // SAFETY: the closure only calls async-signal-safe prctl and close_range
    // in the forked child.
    unsafe {
        cmd.pre_exec(|| {
            // Dies with the thread that waits for it (and so with rbuild).
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Only stdio crosses: every other descriptor (store, locks,
            // pipes of running sandboxes) becomes close-on-exec; std's own
            // exec-error pipe already is.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let start_err = |source| NetworkError::Start { program: helper.program(), source };
    let thread = std::thread::Builder::new()
        .name("rbuild-net".into())
        .spawn(move || {
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            // Opened before the child can have been reaped (only this
            // thread waits for it), so it names the helper.
            let pidfd = rustix::process::Pid::from_raw(child.id() as i32)
                .ok_or(rustix::io::Errno::SRCH)
                .and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()));
            let failed = pidfd.is_err();
            let _ = tx.send(pidfd.map_err(Into::into));
            if failed {
                let _ = child.kill();
            }
            let mut tail = Vec::new();
            if let Some(mut err) = child.stderr.take() {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > LOG_TAIL {
                        tail.drain(..tail.len() - LOG_TAIL);
                    }
                }
            }
            let status = child.wait();
            let text = String::from_utf8_lossy(&tail);
            // pasta complains on stderr for every line it cannot send to syslog.
            let mut msg: Vec<&str> =
                text.lines().filter(|l| !l.starts_with("Failed to send") && !l.trim().is_empty()).collect();
            let st = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            msg.push(&st);
            *log.lock().expect("helper log") = Some(msg.join("; "));
        })
        .map_err(start_err)?;
    match rx.recv() {
        Ok(Ok(pidfd)) => Ok(pidfd),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(start_err(e))
        }
        Err(_) => {
            let _ = thread.join();
            Err(start_err(std::io::Error::other("the helper thread ended")))
        }
    }
}

fn bind_mount(source: &Path, target: &Path) -> std::io::Result<()> {
    rustix::mount::mount_bind(source, target).map_err(Into::into)
}

/// Joins the network namespace mounted at `netns` (in a sandbox init,
/// before its other unshares).
pub(crate) fn join(netns: &Path) -> std::io::Result<()> {
    let fd = std::fs::File::open(netns)?;
    // SAFETY: setns on a descriptor we own; the kernel checks it is a
    // network namespace.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_is_found_in_the_route_table() {
        let table = "Iface\tDestination\tGateway \tFlags\n\
                     tap0\t000200C0\t00000000\t0001\n\
                     eth0\t00000000\t010200C0\t0003\n";
        assert_eq!(default_route_device(table), Some("eth0"));
        let only_local = "Iface\tDestination\tGateway \tFlags\neth0\t000200C0\t00000000\t0001\n";
        assert_eq!(default_route_device(only_local), None);
        assert_eq!(default_route_device(""), None);
    }

    #[test]
    fn local_route_request_is_ip_route_add_local() {
        let m = local_route_request(&LOOPBACKS[0], 7);
        assert_eq!(m.len(), 52);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 52);
        // rtmsg: AF_INET /8 in table local (255), static, scope host (254), type local (2).
        assert_eq!(&m[16..24], &[2, 8, 0, 0, 255, 4, 254, 2]);
        assert_eq!(&m[32..36], &[127, 0, 0, 0]);
        assert_eq!(u32::from_ne_bytes(m[40..44].try_into().unwrap()), 7);
        assert_eq!(u32::from_ne_bytes(m[48..52].try_into().unwrap()), 1);
        let m6 = local_route_request(&LOOPBACKS[1], 7);
        assert_eq!(m6.len(), 64);
        assert_eq!(&m6[16..18], &[libc::AF_INET6 as u8, 128]);
        assert_eq!(m6[47], 1, "::1");
        let mut ack = vec![0u8; 36];
        ack[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        assert!(netlink_ack(&ack).is_ok());
        ack[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(netlink_ack(&ack).unwrap_err().raw_os_error(), Some(libc::EPERM));
        assert!(netlink_ack(&[0; 8]).is_err());
    }

    #[test]
    fn pasta_never_forwards_ports_or_maps_the_gateway() {
        let args = Helper::Pasta.args(Path::new("/x/netns"));
        for flag in ["--tcp-ports", "--udp-ports", "--tcp-ns", "--udp-ns"] {
            let i = args.iter().position(|a| a == flag).expect(flag);
            assert_eq!(args[i + 1], "none", "{flag}");
        }
        assert!(args.contains(&"--no-map-gw".to_string()));
        assert_eq!(args.last().map(String::as_str), Some("/x/netns"));
        let slirp = Helper::Slirp4netns.args(Path::new("/x/netns"));
        assert!(slirp.contains(&"--disable-host-loopback".to_string()));
    }

    #[test]
    fn ping_group_range_covers_the_mapped_gids() {
        // Real root: the whole range, capped where the kernel caps it.
        assert_eq!(ping_group_range("         0          0 4294967295\n").as_deref(), Some("0 2147483647"));
        // Rootless: the invoking user's gid as 0, then its subordinate range.
        let rootless = "         0       1001          1\n         1     300000      65536\n";
        assert_eq!(ping_group_range(rootless).as_deref(), Some("0 65536"));
        assert_eq!(ping_group_range("         0       1001          1\n").as_deref(), Some("0 0"));
        assert_eq!(ping_group_range(""), None);
    }

    #[test]
    fn resolv_conf_keeps_search_and_options_but_not_nameservers() {
        let net = PrivateNetwork { helper: Helper::Slirp4netns, netns: PathBuf::new(), pidfd: None };
        let host = "nameserver 127.0.0.53\nsearch example.com\noptions edns0\n";
        assert_eq!(net.resolv_conf(host), "nameserver 10.0.2.3\nsearch example.com\noptions edns0\n");
    }
}
