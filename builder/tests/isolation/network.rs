//! RUN networking, entitlements and resource limits: what a Dockerfile can
//! reach by default, what needs `--allow`, and the limits `--ulimit`,
//! `--shm-size` and cgroups put on it. Every test runs as root and as the
//! unprivileged `rbuildtest` (through `runuser`).

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::util::ensure_test_user;
use crate::util::{TestRegistry, rbuild, run};

/// Who runs rbuild.
#[derive(Clone, Copy, Debug)]
enum Who {
    Root,
    TestUser,
}

/// Root, plus `rbuildtest` where the test user can be set up (we are root).
fn users() -> Vec<Who> {
    if rustix::process::getuid().is_root() {
        ensure_test_user();
        vec![Who::Root, Who::TestUser]
    } else {
        eprintln!("not root: the test user cannot be created; running as the current (non-root) user only");
        vec![Who::Root]
    }
}

/// One build directory (context + store), readable by the test user.
struct Case {
    dir: tempfile::TempDir,
    who: Who,
}

impl Case {
    fn new(who: Who, dockerfile: &str) -> Case {
        Case::with_files(who, dockerfile, &[])
    }

    /// A case whose context also holds copies of `files` (name, source).
    fn with_files(who: Who, dockerfile: &str, files: &[(&str, &Path)]) -> Case {
        let dir = tempfile::Builder::new().prefix("rbuild-net").tempdir_in("/tmp").unwrap();
        std::fs::create_dir_all(dir.path().join("ctx")).unwrap();
        std::fs::write(dir.path().join("ctx/Dockerfile"), dockerfile).unwrap();
        for (name, source) in files {
            std::fs::copy(source, dir.path().join("ctx").join(name)).unwrap();
        }
        if let Who::TestUser = who {
            run(Command::new("chown").args(["-R", "rbuildtest:rbuildtest"]).arg(dir.path()));
            run(Command::new("chmod").arg("755").arg(dir.path()));
        }
        Case { dir, who }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// `rbuild --root STORE build --progress plain ARGS CTX`, with `env` set.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = match self.who {
            Who::Root => Command::new("env"),
            Who::TestUser => {
                // runuser resets PATH; `env` sets what the test asks for.
                let mut c = Command::new("runuser");
                c.args(["-u", "rbuildtest", "--", "env"]);
                c.arg(format!("HOME={}", self.dir.path().display()));
                c
            }
        };
        cmd.args(env.iter().map(|(k, v)| format!("{k}={v}"))).arg(rbuild().get_program());
        cmd.arg("--root").arg(self.store()).args(["build", "--progress", "plain"]).args(args);
        cmd.arg(self.dir.path().join("ctx"));
        cmd
    }

    fn build_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().expect("run rbuild")
    }

    fn build(&self, args: &[&str]) -> Output {
        self.build_env(args, &[])
    }
}

fn registry() -> TestRegistry {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    reg
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[track_caller]
fn ok(who: Who, out: &Output) -> String {
    let t = text(out);
    assert!(out.status.success(), "{who:?}: rbuild failed ({}):\n{t}", out.status);
    t
}

#[track_caller]
fn fails(who: Who, out: &Output) -> String {
    let t = text(out);
    assert!(!out.status.success(), "{who:?}: rbuild succeeded but should not have:\n{t}");
    t
}

/// A TCP server on the host's 127.0.0.1 that answers every connection with
/// a secret and counts them.
struct LoopbackServer {
    port: u16,
    hits: Arc<AtomicUsize>,
}

const SECRET: &str = "host-loopback-secret-5d1c";

impl LoopbackServer {
    fn start() -> LoopbackServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                h.fetch_add(1, Ordering::SeqCst);
                let _ = writeln!(conn, "{SECRET}");
            }
        });
        LoopbackServer { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A RUN script trying the host's loopback server at 127.0.0.1, at the
/// gateway address (where slirp4netns would map the host's loopback
/// without `--disable-host-loopback`, and pasta without `--no-map-gw`) and
/// at the DNS forwarder's address (pasta forwards port 53 there to the host).
fn probe(port: u16) -> String {
    format!(
        "gw=$(ip route | awk '/^default/ {{print $3}}'); ns=$(awk '/^nameserver/ {{print $2; exit}}' /etc/resolv.conf); \
         echo \"gateway=$gw dns=$ns\"; \
         for a in 127.0.0.1 $gw $ns; do nc -w 3 $a {port} </dev/null && echo \"got\"\"-$a\" || echo \"no $a\"; done"
    )
}

/// Processes (other than the test) whose command line mentions `path`.
fn processes_mentioning(path: &Path) -> Vec<String> {
    let needle = path.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if c.contains(&needle) {
                found.push(c);
            }
        }
    }
    found
}

/// The build using `store` left no process behind. The helper gets SIGKILL
/// when the build ends; on a loaded machine it may take a moment to go.
#[track_caller]
fn assert_helper_gone(store: &Path, who: Who) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = processes_mentioning(store);
        if left.is_empty() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{who:?}: left running after the build: {left:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn default_network_cannot_reach_host_loopback() {
    let reg = registry();
    let server = LoopbackServer::start();
    for who in users() {
        let case = Case::new(who, &format!("FROM {}/busybox:latest\nRUN {}\n", reg.addr, probe(server.port)));
        let for_helper = |helper: &str, tried: &[&str]| {
            let t = ok(who, &case.build_env(&["--no-cache"], &[("RBUILD_NETWORK_HELPER", helper)]));
            for a in tried {
                assert!(t.contains(&format!("no {a}\n")), "{who:?} {helper}: `{a}` was not probed:\n{t}");
            }
            assert!(!t.contains(SECRET) && !t.contains("got-"), "{who:?} {helper}: host loopback reached:\n{t}");
        };
        // pasta: the gateway is the host's real one (`--no-map-gw`); its DNS forwarder.
        for_helper("pasta", &["127.0.0.1", "169.254.1.1"]);
        // slirp4netns: 10.0.2.2 would be the host's loopback; 10.0.2.3 its DNS.
        for_helper("slirp4netns", &["127.0.0.1", "10.0.2.2", "10.0.2.3"]);
        assert_eq!(server.hits(), 0, "{who:?}: the host's loopback server was connected to");
        // The helper is gone with the build.
        assert_helper_gone(&case.store(), who);
    }
}

#[test]
fn default_network_cannot_reach_host_abstract_sockets() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("rbuild-test-abstract-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    let reg = registry();
    for who in users() {
        let df = format!(
            "FROM {}/busybox:latest\nRUN if grep -q {name} /proc/net/unix; then echo VISIBLE-$((6*7)); else echo invisible; fi\n",
            reg.addr
        );
        let case = Case::new(who, &df);
        let t = ok(who, &case.build(&[]));
        assert!(t.contains("invisible") && !t.contains("VISIBLE-42"), "{who:?}: host abstract socket visible:\n{t}");
        // Control: in the host's network namespace it is there.
        let t = ok(who, &case.build(&["--no-cache", "--network=host", "--allow", "network.host"]));
        assert!(t.contains("VISIBLE-42"), "{who:?}: the control did not see the socket:\n{t}");
    }
}

#[test]
fn host_network_needs_the_entitlement() {
    let reg = registry();
    let server = LoopbackServer::start();
    for who in users() {
        let df = format!(
            "FROM {}/busybox:latest\nRUN echo first-step-$((40+2))\nRUN --network=host nc -w 3 127.0.0.1 {} </dev/null\n",
            reg.addr, server.port
        );
        let case = Case::new(who, &df);
        let t = fails(who, &case.build(&[]));
        assert!(t.contains("Dockerfile:3:1"), "{who:?}: the error does not name the line:\n{t}");
        assert!(t.contains("--allow network.host"), "{who:?}: the error does not say what to pass:\n{t}");
        assert!(!t.contains("first-step-42"), "{who:?}: a step ran before the refusal:\n{t}");
        let before = server.hits();
        let t = ok(who, &case.build(&["--allow", "network.host"]));
        assert!(t.contains(SECRET), "{who:?}: `--network=host` did not reach the host's loopback:\n{t}");
        assert!(server.hits() > before);

        // The build-wide flag needs it too, and then applies to every RUN.
        let case = Case::new(who, &format!("FROM {}/busybox:latest\nRUN {}\n", reg.addr, probe(server.port)));
        let t = fails(who, &case.build(&["--network=host"]));
        assert!(t.contains("--allow network.host"), "{who:?}:\n{t}");
        let t = ok(who, &case.build(&["--network=host", "--allow", "network.host"]));
        assert!(t.contains("got-127.0.0.1"), "{who:?}:\n{t}");
    }
}

#[test]
fn default_network_fetches_from_debian_mirror() {
    let reg = registry();
    for who in users() {
        let df = format!(
            "FROM {}/busybox:latest\nRUN wget -q -O /Release http://deb.debian.org/debian/dists/bookworm/Release && grep '^Codename:' /Release\n",
            reg.addr
        );
        let case = Case::new(who, &df);
        let t = ok(who, &case.build(&[]));
        assert!(t.contains("Codename: bookworm"), "{who:?}:\n{t}");
        assert_helper_gone(&case.store(), who);
    }
}

#[test]
fn network_none_stays_empty() {
    let reg = registry();
    for who in users() {
        let script = "echo ifaces=$(grep -c : /proc/net/dev); \
                      wget -q -T 3 -O /dev/null http://deb.debian.org/debian/dists/bookworm/Release && echo FETCH''ED || echo off''line";
        let case = Case::new(who, &format!("FROM {}/busybox:latest\nRUN --network=none {script}\n", reg.addr));
        // No network helper is needed for it.
        let t = ok(who, &case.build_env(&[], &[("RBUILD_NETWORK_HELPER", "slirp4netns"), ("PATH", "/nonexistent")]));
        assert!(t.contains("ifaces=1") && t.contains("offline") && !t.contains("FETCHED"), "{who:?}:\n{t}");
        let case = Case::new(who, &format!("FROM {}/busybox:latest\nRUN {script}\n", reg.addr));
        let t = ok(who, &case.build(&["--network=none"]));
        assert!(t.contains("ifaces=1") && t.contains("offline"), "{who:?}: `--network=none` flag:\n{t}");
    }
}

#[test]
fn insecure_needs_the_entitlement() {
    let reg = registry();
    let last_cap: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").unwrap().trim().parse().unwrap();
    let all_caps = format!("{:016x}", (1u64 << (last_cap + 1)) - 1);
    for who in users() {
        let df = format!(
            "FROM {}/busybox:latest\nRUN echo first-step-$((40+2))\nRUN --security=insecure grep CapEff /proc/self/status\n",
            reg.addr
        );
        let case = Case::new(who, &df);
        let t = fails(who, &case.build(&[]));
        assert!(t.contains("Dockerfile:3:1"), "{who:?}: the error does not name the line:\n{t}");
        assert!(t.contains("--allow security.insecure"), "{who:?}:\n{t}");
        assert!(!t.contains("first-step-42"), "{who:?}: a step ran before the refusal:\n{t}");
        let t = ok(who, &case.build(&["--allow", "security.insecure"]));
        assert!(t.contains(&format!("CapEff:\t{all_caps}")), "{who:?}: not all capabilities:\n{t}");
    }
}

#[test]
fn ulimit_sets_rlimits() {
    let reg = registry();
    for who in users() {
        let df = format!(
            "FROM {}/busybox:latest\nRUN echo \"limits n=$(ulimit -n) hn=$(ulimit -Hn) u=$(ulimit -u) c=$(ulimit -c)\"\n",
            reg.addr
        );
        let case = Case::new(who, &df);
        let args = ["--ulimit", "nofile=1000:2000", "--ulimit", "nproc=300:400", "--ulimit", "core=0"];
        let t = ok(who, &case.build(&args));
        assert!(t.contains("limits n=1000 hn=2000 u=300 c=0"), "{who:?}:\n{t}");
        let t = fails(who, &case.build(&["--ulimit", "nofiles=10"]));
        assert!(t.contains("unknown resource"), "{who:?}:\n{t}");
        // Raising the hard limit is the kernel's to refuse; the error says why.
        let t = fails(who, &case.build(&["--ulimit", "nofile=1024:-1"]));
        assert!(t.contains("can only be lowered"), "{who:?}:\n{t}");
    }
}

#[test]
fn shm_size_sets_dev_shm() {
    let reg = registry();
    for who in users() {
        let df = format!("FROM {}/busybox:latest\nRUN df -k /dev/shm | awk 'NR==2 {{print \"shm=\" $2}}'\n", reg.addr);
        let case = Case::new(who, &df);
        let t = ok(who, &case.build(&["--shm-size", "128m"]));
        assert!(t.contains("shm=131072"), "{who:?}:\n{t}");
        let t = ok(who, &case.build(&["--no-cache"]));
        assert!(t.contains("shm=65536"), "{who:?}: Docker's default is 64 MiB:\n{t}");
    }
}

#[test]
fn missing_network_helper_error_names_the_package() {
    let reg = registry();
    // A PATH with what rbuild itself needs (the id-map helpers) but neither
    // pasta nor slirp4netns.
    let bin = tempfile::Builder::new().prefix("rbuild-net-path").tempdir_in("/tmp").unwrap();
    for tool in ["newuidmap", "newgidmap"] {
        if let Some(p) = ["/usr/bin", "/usr/sbin", "/bin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.exists())
        {
            std::os::unix::fs::symlink(p, bin.path().join(tool)).unwrap();
        }
    }
    run(Command::new("chmod").arg("755").arg(bin.path()));
    let path = bin.path().display().to_string();
    for who in users() {
        let case = Case::new(who, &format!("FROM {}/busybox:latest\nRUN echo needs-the-network\n", reg.addr));
        let t = fails(who, &case.build_env(&[], &[("PATH", &path)]));
        assert!(t.contains("`passt`") && t.contains("slirp4netns"), "{who:?}: the package is not named:\n{t}");
        assert!(t.contains("--network=host --allow network.host"), "{who:?}: no opt-in named:\n{t}");
        assert!(t.contains("RUN /bin/sh -c echo needs-the-network"), "{who:?}: the step is not named:\n{t}");
        let t = fails(who, &case.build_env(&[], &[("PATH", &path), ("RBUILD_NETWORK_HELPER", "pasta")]));
        assert!(t.contains("`passt`"), "{who:?}:\n{t}");
    }
}

#[test]
fn run_gets_its_own_cgroup() {
    let reg = registry();
    for who in users() {
        let df = format!("FROM {}/busybox:latest\nRUN grep '^0::' /proc/self/cgroup\nRUN echo second\n", reg.addr);
        let case = Case::new(who, &df);
        let t = ok(who, &case.build(&[]));
        if let Some(line) = t.lines().find(|l| l.contains("no per-RUN cgroups")) {
            // These CI machines run cgroup v1 (hybrid): said once, and an
            // explicit `--cgroup-parent` is refused rather than ignored.
            assert_eq!(t.matches("no per-RUN cgroups").count(), 1, "{who:?}:\n{t}");
            let e = fails(who, &case.build(&["--no-cache", "--cgroup-parent", "/rbuild-test"]));
            assert!(e.contains("`--cgroup-parent`: "), "{who:?}:\n{e}");
            eprintln!("skipped for {who:?}: {line}");
            continue;
        }
        let line = t.lines().find(|l| l.contains(" 0::/")).unwrap_or_else(|| panic!("{who:?}: no cgroup line:\n{t}"));
        let path = line.split("0::").nth(1).unwrap_or_default();
        assert!(
            path.contains("/rbuild-") && path.rsplit('/').next().is_some_and(|s| s.starts_with("step")),
            "{who:?}: not in a step cgroup: {line}"
        );
    }
}

/// Pids of processes whose command line mentions `path` and runs `program`.
fn helper_pids(path: &Path, program: &str) -> Vec<u32> {
    let needle = path.display().to_string();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            let args: Vec<String> =
                cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            if args.first().is_some_and(|a| a.ends_with(program)) && args.iter().any(|a| a.contains(&needle)) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Waits up to 20 s for the helper of the build using `store` to appear.
fn wait_for_helper(store: &Path, program: &str) -> u32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(pid) = helper_pids(store, program).first() {
            return *pid;
        }
        assert!(std::time::Instant::now() < deadline, "no `{program}` for {} appeared", store.display());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn network_helper_holds_no_store_descriptors_and_dies_with_rbuild() {
    let reg = registry();
    for who in users() {
        for program in ["pasta", "slirp4netns"] {
            let case = Case::new(who, &format!("FROM {}/busybox:latest\nRUN sleep 30\n", reg.addr));
            let mut child = case
                .command(&[], &[("RBUILD_NETWORK_HELPER", program)])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let helper = wait_for_helper(&case.store(), program);
            // Its descriptors: nothing of the store but the namespace file.
            let store = std::fs::canonicalize(case.store()).unwrap();
            for fd in std::fs::read_dir(format!("/proc/{helper}/fd")).unwrap().flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else { continue };
                assert!(
                    !target.starts_with(&store) || target.ends_with("netns"),
                    "{who:?} {program}: fd {:?} -> {}",
                    fd.file_name(),
                    target.display()
                );
            }
            // Killing rbuild (as a user's ^C or an OOM kill would) takes the helper along.
            let rbuild_pid = rbuild_pid(&case.store());
            run(Command::new("kill").args(["-KILL", &rbuild_pid.to_string()]));
            let _ = child.wait();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !helper_pids(&case.store(), program).is_empty() {
                assert!(std::time::Instant::now() < deadline, "{who:?}: `{program}` outlived rbuild");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// The rbuild process building into `store` (runuser may fork it).
fn rbuild_pid(store: &Path) -> u32 {
    let exe = rbuild().get_program().to_string_lossy().into_owned();
    let name = Path::new(&exe).file_name().unwrap().to_string_lossy().into_owned();
    let pids = helper_pids(store, &name);
    *pids.iter().min().unwrap_or_else(|| panic!("no rbuild running for {}", store.display()))
}

#[test]
fn entitlement_needed_by_one_platform_is_refused_before_any_platform_runs() {
    let reg = TestRegistry::start();
    reg.push_busybox_multiarch("busybox:latest");
    for who in users() {
        let df = format!(
            "FROM {r}/busybox:latest AS base-amd64\nRUN echo first-step-$((40+2))\n\
             FROM {r}/busybox:latest AS base-arm64\nRUN --network=host echo arm\n\
             FROM base-$TARGETARCH\n",
            r = reg.addr
        );
        let case = Case::new(who, &df);
        let t = fails(who, &case.build(&["--platform", "linux/amd64,linux/arm64"]));
        assert!(t.contains("Dockerfile:4:1") && t.contains("--allow network.host"), "{who:?}:\n{t}");
        assert!(!t.contains("first-step-42"), "{who:?}: the amd64 build ran first:\n{t}");
    }
}

/// A UDP socket on the host's 127.0.0.1 that keeps what it receives.
struct LoopbackUdp {
    port: u16,
    got: Arc<std::sync::Mutex<Vec<String>>>,
}

impl LoopbackUdp {
    fn start() -> LoopbackUdp {
        LoopbackUdp::on("127.0.0.1:0")
    }

    fn on(addr: &str) -> LoopbackUdp {
        let socket = UdpSocket::bind(addr).unwrap();
        let port = socket.local_addr().unwrap().port();
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok(n) = socket.recv(&mut buf) {
                g.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        LoopbackUdp { port, got }
    }

    /// How many datagrams carried `payload`.
    fn count(&self, payload: &str) -> usize {
        self.got.lock().unwrap().iter().filter(|p| *p == payload).count()
    }

    fn hits(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

/// `gcc -static` of the crafted-packet probe (`probes/raw_escape.c`) into `dir`.
fn compile_raw_escape(dir: &Path) -> PathBuf {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/isolation/probes/raw_escape.c");
    let out = dir.join("escape");
    run(Command::new("gcc").args(["-static", "-O1", "-Wall", "-o"]).arg(&out).arg(src));
    out
}

/// Waits up to `secs` for `count()` to exceed `before`; the last value seen.
fn settle(count: impl Fn() -> usize, before: usize, secs: u64) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while count() == before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    count()
}

/// Escape: the user-mode stacks forward whatever leaves the namespace, so a
/// `RUN` that gets a packet for 127.0.0.1 or ::1 out of the namespace's
/// device reaches the host's loopback. Three ways: raw frames (`AF_PACKET`,
/// `CAP_NET_RAW`), a raw IP socket with `IP_HDRINCL` routed to the gateway
/// (`CAP_NET_RAW`), and, with no capability at all, a socket bound to the
/// device (`SO_BINDTODEVICE`, or `IP_PKTINFO` per datagram: the kernel
/// takes 127.0.0.1 as on-link there, and sends ::1 to the default route). As root and as a non-root `USER`
/// running a setuid-root copy (which gains the bounding set), with both
/// helpers. Before the fix, rootful and rootless alike: the raw paths got a
/// TCP handshake and the server's data and both UDP datagrams through with
/// pasta and slirp4netns; the bound sockets got UDP datagrams to 127.0.0.1
/// through both (`SO_BINDTODEVICE` and `IP_PKTINFO`) and to [::1] through
/// pasta, and TCP connections accepted by
/// the host's server (the namespace's kernel dropped the SYN-ACK from
/// 127.0.0.1 as martian, so no data came back).
#[test]
fn escape_crafted_packets_reach_host_loopback() {
    let reg = registry();
    let tcp = LoopbackServer::start();
    let udp = LoopbackUdp::start();
    let udp6 = LoopbackUdp::on("[::1]:0");
    let bin = tempfile::Builder::new().prefix("rbuild-net-escape").tempdir_in("/tmp").unwrap();
    let escape = compile_raw_escape(bin.path());
    let run_probe = format!("/escape {} {} {}", tcp.port, udp.port, udp6.port);
    for who in users() {
        let df = format!(
            "FROM {}/busybox:latest\nCOPY escape /escape\nRUN chmod 4755 /escape && {run_probe}\n\
             USER user\nRUN echo as-$(id -u) && {run_probe}\n",
            reg.addr
        );
        let case = Case::with_files(who, &df, &[("escape", &escape)]);
        // Control, so that the probe cannot pass by being broken: with every
        // capability (`--security=insecure`) the same frames do reach the
        // host's loopback through the helper.
        let df =
            format!("FROM {}/busybox:latest\nCOPY escape /escape\nRUN --security=insecure {run_probe}\n", reg.addr);
        let control = Case::with_files(who, &df, &[("escape", &escape)]);
        for helper in ["pasta", "slirp4netns"] {
            let env = [("RBUILD_NETWORK_HELPER", helper)];
            let (tcp_before, udp_before, udp6_before) = (tcp.hits(), udp.hits(), udp6.hits());
            let udp_count_before = ["rbuild-packet-udp-escape", "rbuild-hdrincl-udp-escape"].map(|p| (p, udp.count(p)));
            let t = ok(who, &case.build_env(&["--no-cache"], &env));
            assert_eq!(t.matches("packet_socket=").count(), 2, "{who:?} {helper}: the probe did not run twice:\n{t}");
            assert!(t.contains("as-1000"), "{who:?} {helper}: the second probe did not run as `user`:\n{t}");
            // The datagram would arrive a moment after the frame left.
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert!(
                !t.contains("tcp=synack") && !t.contains(SECRET),
                "{who:?} {helper}: a crafted SYN reached the host's loopback:\n{t}"
            );
            assert_eq!(tcp.hits(), tcp_before, "{who:?} {helper}: the host's TCP server was connected to:\n{t}");
            assert_eq!(udp.hits(), udp_before, "{who:?} {helper}: the host's UDP server got a datagram:\n{t}");
            assert_eq!(udp6.hits(), udp6_before, "{who:?} {helper}: the host's [::1] UDP server got a datagram:\n{t}");

            let t = ok(who, &control.build_env(&["--no-cache", "--allow", "security.insecure"], &env));
            assert!(
                t.contains("tcp=synack") && t.contains(SECRET),
                "{who:?} {helper}: the control got no SYN-ACK:\n{t}"
            );
            for (path, payload) in
                [("AF_PACKET", "rbuild-packet-udp-escape"), ("IP_HDRINCL", "rbuild-hdrincl-udp-escape")]
            {
                let before = udp_count_before.iter().find(|(p, _)| *p == payload).map_or(0, |(_, n)| *n);
                let after = settle(|| udp.count(payload), before, 5);
                assert!(after > before, "{who:?} {helper}: the control's {path} datagram did not arrive:\n{t}");
            }
        }
        assert_helper_gone(&case.store(), who);
    }
}

/// `RUN`s on the default network lack `CAP_NET_RAW`; ICMP echo keeps working
/// through ICMP datagram sockets, which the build's namespace opens to every
/// group (`ping_group_range`), as root and as a non-root `USER`. The targets
/// stay on this machine: the namespace's loopback and own address, and with
/// slirp4netns its gateway 10.0.2.2, which slirp answers itself (pasta's
/// gateway is the host's real one, not pinged here). Busybox 1.35's `ping`
/// (the test image's) only tries a raw socket, so it is not the probe.
#[test]
fn icmp_echo_works_on_the_default_network_without_net_raw() {
    let reg = registry();
    let bin = tempfile::Builder::new().prefix("rbuild-net-ping").tempdir_in("/tmp").unwrap();
    let ping = bin.path().join("icmp_ping");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/isolation/probes/icmp_ping.c");
    run(Command::new("gcc").args(["-static", "-O1", "-Wall", "-o"]).arg(&ping).arg(src));
    let script = "grep CapBnd /proc/self/status; \
                  own=$(ip -4 addr show scope global | awk '/inet / {sub(\"/.*\", \"\", $2); print $2; exit}'); \
                  gw=$(ip route | awk '/^default/ {print $3}'); case $gw in 10.0.2.2) extra=$gw;; esac; \
                  /icmp_ping 127.0.0.1 $own $extra";
    for who in users() {
        let df = format!(
            "FROM {}/busybox:latest\nCOPY icmp_ping /icmp_ping\nRUN {script}\nUSER user\nRUN {script}\n",
            reg.addr
        );
        let case = Case::with_files(who, &df, &[("icmp_ping", &ping)]);
        for helper in ["pasta", "slirp4netns"] {
            let t = ok(who, &case.build_env(&["--no-cache"], &[("RBUILD_NETWORK_HELPER", helper)]));
            assert!(!t.contains("ping-FAILED"), "{who:?} {helper}: ICMP echo failed:\n{t}");
            assert_eq!(t.matches("CapBnd:\t00000000a80405fb").count(), 2, "{who:?} {helper}: NET_RAW held:\n{t}");
            let expected = if helper == "slirp4netns" { 3 } else { 2 };
            for uid in [0, 1000] {
                let pings = t.matches(&format!(" as {uid}\n")).count();
                assert_eq!(pings, expected, "{who:?} {helper}: not every address answered uid {uid}:\n{t}");
            }
        }
    }
}
