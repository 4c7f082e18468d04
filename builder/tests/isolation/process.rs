//! Process confinement: what a `RUN` inherits from rbuild (descriptors), what
//! it can reach of the kernel through `/proc` and `/sys`, and which
//! capabilities it holds. Each test builds as real root and, through
//! `runuser`, as the unprivileged `rbuildtest`, and reads what the `RUN`
//! observed from the exported root filesystem.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{TestRegistry, rbuild, run};
use crate::util::{ensure_test_user, is_root};

const TEST_USER: &str = "rbuildtest";

/// Who starts rbuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runner {
    /// Real root: container root is host uid 0.
    Root,
    /// `rbuildtest` with a subordinate id range (rootless).
    User,
}

/// Runs `test` as root and as the test user (or once, as the current
/// non-root user, where the test user cannot be created).
fn for_each_runner(test: impl Fn(Runner)) {
    if !is_root() {
        eprintln!("not root: testing as the current user only");
        return test(Runner::User);
    }
    ensure_test_user();
    test(Runner::Root);
    test(Runner::User);
}

/// A build whose `RUN`s write what they see into the image: the Dockerfile
/// (`{base}` stands for the busybox base), built with `-o type=local`.
struct Probe {
    dir: tempfile::TempDir,
}

impl Probe {
    fn new(dockerfile: &str, reg: &TestRegistry) -> Probe {
        let dir = tempfile::Builder::new().prefix("rbuild-isolation").tempdir_in("/tmp").unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile.replace("{base}", &reg.reference("busybox:latest"))).unwrap();
        Probe { dir }
    }

    /// Builds as `who`; `prelude` is shell run right before `exec rbuild`
    /// (in the same shell, so descriptors it opens are inherited).
    fn build(&self, who: Runner, prelude: &str) -> PathBuf {
        self.build_with(who, prelude, "")
    }

    /// [`Probe::build`] with `flags` (shell words) added to `rbuild build`.
    fn build_with(&self, who: Runner, prelude: &str, flags: &str) -> PathBuf {
        let o = self.command(who, prelude, flags).output().unwrap();
        assert!(
            o.status.success(),
            "build as {who:?} failed ({}):\n{}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        self.dir.path().join(format!("out-{who:?}"))
    }

    /// The command that builds as `who` into `out-WHO` with store
    /// `store-WHO` (for the test user, the probe's directory is handed over
    /// to it first).
    fn command(&self, who: Runner, prelude: &str, flags: &str) -> Command {
        let base = self.dir.path();
        let script = format!(
            "{prelude}\nexec \"$0\" --root \"$1\" build --progress plain --no-cache {flags} -o \"type=local,dest=$2\" \"$3\""
        );
        let mut cmd = if who == Runner::User && is_root() {
            run(Command::new("chown").args(["-R", &format!("{TEST_USER}:{TEST_USER}")]).arg(base));
            run(Command::new("chmod").arg("755").arg(base));
            let mut c = Command::new("runuser");
            c.args(["-u", TEST_USER, "--", "sh", "-c"]).env("HOME", base);
            c
        } else {
            let mut c = Command::new("sh");
            c.arg("-c");
            c
        };
        cmd.arg(script)
            .arg(rbuild().get_program())
            .arg(base.join(format!("store-{who:?}")))
            .arg(base.join(format!("out-{who:?}")))
            .arg(base.join("ctx"));
        cmd
    }
}

fn read(out: &Path, rel: &str) -> String {
    std::fs::read_to_string(out.join(rel)).unwrap_or_else(|e| panic!("`{rel}` not in the output: {e}"))
}

/// Escape: rbuild started with descriptors it does not know about (a CI
/// runner's pipe, a jobserver, `exec 8</` in a script). Before the fix every
/// RUN held them: `/proc/self/fd/8/` listed the host's `/`.
#[test]
fn escape_inherited_fds() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    for_each_runner(|who| {
        let p = Probe::new(
            "FROM {base}\n\
             RUN ls /proc/self/fd > /fds; ls /proc/self/fd/8/ > /fd8 2>&1; cat /proc/self/fd/9 > /fd9 2>&1; true\n",
            &reg,
        );
        let outer = p.dir.path().join("outer-fds");
        let marker = p.dir.path().join("marker");
        std::fs::write(&marker, "host file content\n").unwrap();
        std::fs::set_permissions(&marker, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        // A directory (the host's root) and a file, neither close-on-exec.
        let prelude = format!("exec 8</ 9<{m}; ls /proc/self/fd > {o}", m = marker.display(), o = outer.display());
        let out = p.build(who, &prelude);
        let outer = std::fs::read_to_string(&outer).unwrap();
        assert!(outer.lines().any(|l| l == "8") && outer.lines().any(|l| l == "9"), "rbuild inherits 8 and 9");
        let mut fds: Vec<String> = read(&out, "fds").lines().map(str::to_string).collect();
        fds.sort();
        // 0-2 and the directory `ls` itself opened to list them.
        assert_eq!(fds, ["0", "1", "2", "3"], "{who:?}");
        let fd8 = read(&out, "fd8");
        assert!(fd8.contains("No such file"), "{who:?}: {fd8}");
        assert!(!fd8.contains("etc"), "{who:?}: the host's / is listed: {fd8}");
        let fd9 = read(&out, "fd9");
        assert!(!fd9.contains("host file content"), "{who:?}: {fd9}");
    });
}

/// Escape: a `RUN` that looks for processes outside its pid namespace, to
/// signal them. Its init is now pid 1 of the step's namespace and a direct
/// child of the zygote (one process fewer per `RUN`), so the zygote, rbuild
/// and the host's processes must stay out of reach: probing every pid up to
/// 65536 with `kill -0` finds only the `RUN`'s own processes, pid 1 has no
/// parent it can see, signals it sends to everything it can (`kill -1`)
/// leave the build running, and the next `RUN` still starts.
#[test]
fn escape_run_reaches_no_process_outside_its_pid_namespace() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    for_each_runner(|who| {
        let p = Probe::new(
            "FROM {base}\n\
             RUN echo $$ > /self; grep PPid /proc/1/status > /ppid; \
             i=1; while [ $i -le 65536 ]; do kill -0 $i 2>/dev/null && echo $i; i=$((i + 1)); done > /reachable; \
             ls /proc | grep -E '^[0-9]+$' | sort -n > /listed; kill -KILL -1 2>/dev/null; true\n\
             RUN echo survived > /after\n",
            &reg,
        );
        let out = p.build(who, "");
        assert_eq!(read(&out, "self").trim(), "1", "{who:?}: the RUN's shell is pid 1 of its namespace");
        assert_eq!(read(&out, "ppid").split_whitespace().collect::<Vec<_>>(), ["PPid:", "0"], "{who:?}");
        let reachable: Vec<u32> = read(&out, "reachable").lines().map(|l| l.parse().unwrap()).collect();
        // pid 1 (the shell) and the short-lived helpers of the pipeline at
        // most: a handful, never the host's hundreds.
        assert!(reachable.contains(&1) && reachable.len() <= 8, "{who:?}: {reachable:?}");
        let listed: Vec<u32> = read(&out, "listed").lines().map(|l| l.parse().unwrap()).collect();
        assert!(listed.contains(&1) && listed.len() <= 8, "{who:?}: /proc lists {listed:?}");
        assert_eq!(read(&out, "after"), "survived\n", "{who:?}");
    });
}

/// The options of the mount at `target` in a `/proc/self/mountinfo` text
/// (the last one mounted there, the one a process sees).
fn mount_options(mountinfo: &str, target: &str) -> Option<Vec<String>> {
    mountinfo.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(4) == Some(&target)).then(|| f[5].split(',').map(str::to_string).collect())
    })
}

/// Escape: as real root, container root is host uid 0 and `/proc/sys` files
/// are writable by uid 0 whatever the capabilities: a RUN could point
/// `kernel/core_pattern` at a pipe and run code as host root. The RUN only
/// *opens* the files for appending (writes nothing), so even a regression
/// leaves the host alone.
#[test]
fn escape_rootful_proc_sys_writable() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let files = ["/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger", "/proc/sys/kernel/modprobe"];
    let on_host: Vec<&str> = files.into_iter().filter(|f| Path::new(f).exists()).collect();
    assert!(on_host.contains(&"/proc/sys/kernel/core_pattern"));
    for_each_runner(|who| {
        let p = Probe::new(
            &"FROM {base}\n\
             RUN for f in {files}; do \
                   if (exec 3>>$f) 2>/err; then echo \"$f opened\"; else echo \"$f denied $(cat /err)\"; fi; \
                 done > /writes; cat /proc/self/mountinfo > /mountinfo\n"
                .replace("{files}", &on_host.join(" ")),
            &reg,
        );
        let out = p.build(who, "");
        let writes = read(&out, "writes");
        assert_eq!(writes.lines().count(), on_host.len(), "{writes}");
        for line in writes.lines() {
            assert!(line.contains(" denied "), "{who:?}: {line}");
            if who == Runner::Root {
                // Refused by the read-only mount, not merely by permissions.
                assert!(line.contains("Read-only file system"), "{who:?}: {line}");
            }
        }
        let mountinfo = read(&out, "mountinfo");
        for target in ["/proc/sys", "/proc/irq", "/proc/bus", "/proc/fs", "/sys"] {
            let opts = mount_options(&mountinfo, target).unwrap_or_else(|| panic!("{who:?}: no mount at {target}"));
            assert!(opts.contains(&"ro".to_string()), "{who:?}: {target} is {opts:?}");
        }
    });
}

/// Docker's masked paths, plus the per-CPU `thermal_throttle` directories.
fn masked_paths() -> Vec<String> {
    let mut v: Vec<String> = [
        "/proc/acpi",
        "/proc/asound",
        "/proc/interrupts",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/sys/devices/virtual/powercap",
        "/sys/firmware",
    ]
    .map(str::to_string)
    .to_vec();
    for cpu in std::fs::read_dir("/sys/devices/system/cpu").unwrap() {
        let p = cpu.unwrap().path().join("thermal_throttle");
        if p.exists() {
            v.push(p.display().to_string());
        }
    }
    v
}

/// The host's mounts below `/sys` (cgroups, debugfs, ...).
fn host_sys_mounts() -> Vec<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let points = mountinfo.lines().filter_map(|l| l.split(' ').nth(4));
    points.filter(|p| p.starts_with("/sys/") && !p.contains('\\')).map(str::to_string).collect()
}

#[test]
fn masked_proc_and_sys_paths_are_empty() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let paths = masked_paths();
    let on_host: Vec<&String> = paths.iter().filter(|p| Path::new(p).exists()).collect();
    assert!(on_host.len() >= 2, "this kernel has too few of the masked paths to test: {on_host:?}");
    let sub_mounts = host_sys_mounts();
    for_each_runner(|who| {
        let p = Probe::new(
            &format!(
                "FROM {{base}}\n\
                 RUN for p in {} {}; do \
                       if [ -d $p ]; then echo \"$p dir $(ls -A $p | wc -l)\"; \
                       elif [ -e $p ]; then if cat $p > /tmp/c 2>/dev/null; then echo \"$p file $(wc -c < /tmp/c)\"; \
                         else echo \"$p unreadable\"; fi; \
                       else echo \"$p missing\"; fi; \
                     done > /masks\n",
                paths.join(" "),
                sub_mounts.join(" ")
            ),
            &reg,
        );
        let out = p.build(who, "");
        let masks = read(&out, "masks");
        for path in &on_host {
            let line = masks.lines().find(|l| l.split(' ').next() == Some(path.as_str())).unwrap();
            // Present, readable and empty, as under Docker.
            let ok = line == format!("{path} dir 0") || line == format!("{path} file 0");
            assert!(ok, "{who:?}: {line}");
        }
        // A fresh sysfs shows the mount points of the host's sub-mounts as
        // empty directories (nested ones not at all); so must a bind of the
        // host's /sys: no host cgroup tree, debugfs or tracefs.
        for path in &sub_mounts {
            let line = masks.lines().find(|l| l.split(' ').next() == Some(path.as_str())).unwrap();
            let ok = line == format!("{path} dir 0") || line == format!("{path} missing");
            assert!(ok, "{who:?}: {line}");
        }
    });
}

/// `/proc/self/status` `Cap*` lines as (name, mask).
fn cap_lines(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), u64::from_str_radix(v.trim(), 16).ok()?))
        })
        .collect()
}

#[test]
fn capabilities_match_docker_defaults() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    // `docker run [--user 1000] [--network=host|none] busybox grep Cap /proc/self/status`.
    const DEFAULT: u64 = 0xa804_25fb;
    // The default (private) network: Docker's set less CAP_NET_RAW (bit 13),
    // as rootless podman's: raw frames would reach the host's loopback
    // through the user-mode stack (`escape_crafted_packets_reach_host_loopback`).
    const PRIVATE: u64 = DEFAULT & !(1 << 13);
    let expect = |bounding: u64, prm_eff: u64| {
        vec![
            ("CapInh".to_string(), 0),
            ("CapPrm".to_string(), prm_eff),
            ("CapEff".to_string(), prm_eff),
            ("CapBnd".to_string(), bounding),
            ("CapAmb".to_string(), 0),
        ]
    };
    for_each_runner(|who| {
        let p = Probe::new(
            "FROM {base}\n\
             RUN grep ^Cap /proc/self/status > /caps-root && mkdir -m 777 /out\n\
             RUN --network=none grep ^Cap /proc/self/status > /caps-root-none\n\
             RUN --network=host grep ^Cap /proc/self/status > /caps-root-host\n\
             USER 1000\n\
             RUN grep ^Cap /proc/self/status > /out/caps-user\n\
             RUN --network=none grep ^Cap /proc/self/status > /out/caps-user-none\n",
            &reg,
        );
        let out = p.build_with(who, "", "--allow network.host");
        assert_eq!(cap_lines(&read(&out, "caps-root")), expect(PRIVATE, PRIVATE), "{who:?}: root");
        assert_eq!(cap_lines(&read(&out, "caps-root-none")), expect(DEFAULT, DEFAULT), "{who:?}: root, none");
        assert_eq!(cap_lines(&read(&out, "caps-root-host")), expect(DEFAULT, DEFAULT), "{who:?}: root, host");
        assert_eq!(cap_lines(&read(&out, "out/caps-user")), expect(PRIVATE, 0), "{who:?}: USER 1000");
        assert_eq!(cap_lines(&read(&out, "out/caps-user-none")), expect(DEFAULT, 0), "{who:?}: USER 1000, none");
    });
}

/// Escape: the `RUN`'s `/dev/null`, `/dev/zero`... are bind mounts of the
/// host's device nodes. As real root, container root is host uid 0, so
/// before the fix `chmod`/`chown` through the bind changed the host's nodes
/// (`chmod 000 /dev/null` breaks every program on the machine), and any
/// user could `touch` them. The probe sets the mode and owner they already
/// have, so a regression is seen in the output without damage (ctimes would
/// be a second witness, but other builds on a shared machine change them).
#[test]
fn escape_host_device_node_metadata() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    for_each_runner(|who| {
        let p = Probe::new(
            "FROM {base}\n\
             RUN echo x > /dev/null && head -c 3 /dev/zero | wc -c > /zero; \
             for d in null zero full random urandom tty; do \
               chmod 666 /dev/$d 2>/dev/null && echo chmod $d; \
               chown 0:0 /dev/$d 2>/dev/null && echo chown $d; \
               touch /dev/$d 2>/dev/null && echo touch $d; \
             done > /changed; true\n",
            &reg,
        );
        let out = p.build(who, "");
        assert_eq!(read(&out, "zero").trim(), "3", "{who:?}: the devices must still work");
        assert_eq!(read(&out, "changed"), "", "{who:?}: a RUN changed host device nodes");
    });
}

/// Processes whose command line (NUL-separated words joined by spaces)
/// contains `needle`, with their pids.
fn processes_with(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if c.contains(needle) {
                found.push((pid, c));
            }
        }
    }
    found
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold spaces and parentheses.
    stat.rsplit_once(") ")?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Waits until `cond` holds (10 s at most); the kernel delivers
/// parent-death signals asynchronously and the machine may be loaded.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A build of `p` as `who` started in the background (stderr to `log`),
/// with `prelude` run in the same shell right before `exec rbuild`.
fn start_build(p: &Probe, who: Runner, prelude: &str, log: &Path) -> std::process::Child {
    p.command(who, prelude, "")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// The sandbox zygote started by the rbuild process building `p` as `who`,
/// and that rbuild's pid (found through the store path on its command line).
fn zygote_of(p: &Probe, who: Runner) -> (u32, u32) {
    let store = p.dir.path().join(format!("store-{who:?}"));
    let rbuild_pid = processes_with(&store.display().to_string())
        .into_iter()
        .map(|(pid, _)| pid)
        .find(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == rbuild().get_program()))
        .expect("rbuild is running");
    let zygote = processes_with("rbuild-sandbox-zygote")
        .into_iter()
        .map(|(pid, _)| pid)
        .find(|pid| parent_of(*pid) == Some(rbuild_pid))
        .expect("the zygote is running");
    (rbuild_pid, zygote)
}

/// Escape: the sandbox zygote, which forks every `RUN`, lives as long as the
/// build. Anything of the build process it held (a descriptor rbuild
/// inherited, the caller's environment or working directory) would be one
/// fork away from each `RUN`. And a killed build (^C, OOM) must take it and
/// the running step along.
#[test]
fn escape_zygote_holds_nothing_of_the_build_and_dies_with_it() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    for_each_runner(|who| {
        // A sleep no other test uses, to find it among all processes.
        let sleep = format!("sleep {}", 2000 + std::process::id() % 8000 + who as u32);
        let p = Probe::new(&format!("FROM {{base}}\nRUN echo step-started && {sleep} && echo after-$((1+1))\n"), &reg);
        let secret = p.dir.path().join("secret");
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join("file"), "host secret\n").unwrap();
        let log = p.dir.path().join("log");
        let prelude =
            format!("exec 8</ 9<{s}/file; cd {s}; export ZYGOTE_PROBE_SECRET=do-not-leak", s = secret.display());
        let mut child = start_build(&p, who, &prelude, &log);
        eventually("the step runs", || processes_with(&sleep).iter().any(|(_, c)| c.trim() == sleep));
        let (rbuild_pid, zygote) = zygote_of(&p, who);
        // rbuild itself does hold all three (the test's premise).
        let rbuild_env =
            String::from_utf8_lossy(&std::fs::read(format!("/proc/{rbuild_pid}/environ")).unwrap()).into_owned();
        assert!(rbuild_env.contains("ZYGOTE_PROBE_SECRET"), "{who:?}");

        let environ = std::fs::read(format!("/proc/{zygote}/environ")).unwrap();
        for var in environ.split(|b| *b == 0).filter(|v| !v.is_empty()) {
            let var = String::from_utf8_lossy(var);
            assert!(
                var.starts_with("RBUILD_SANDBOX_ZYGOTE=") || var.starts_with("MIMALLOC_ARENA_EAGER_COMMIT="),
                "{who:?}: the zygote has `{var}` in its environment"
            );
        }
        assert_eq!(std::fs::read_link(format!("/proc/{zygote}/cwd")).unwrap(), Path::new("/"), "{who:?}");
        for fd in std::fs::read_dir(format!("/proc/{zygote}/fd")).unwrap().flatten() {
            let target = std::fs::read_link(fd.path()).unwrap_or_default().display().to_string();
            let n: u32 = fd.file_name().to_string_lossy().parse().unwrap();
            let allowed = if n <= 2 {
                target == "/dev/null"
            } else {
                // Its socket to rbuild, the running step's status pipe and pidfd.
                target.starts_with("socket:") || target.starts_with("pipe:") || target == "anon_inode:[pidfd]"
            };
            assert!(allowed, "{who:?}: the zygote holds fd {n} -> {target}");
        }

        run(Command::new("kill").args(["-KILL", &rbuild_pid.to_string()]));
        let _ = child.wait();
        let zygote_alive =
            || std::fs::read(format!("/proc/{zygote}/cmdline")).is_ok_and(|c| c.starts_with(b"rbuild-sandbox-zygote"));
        eventually("the zygote is gone", || !zygote_alive());
        eventually("the step is gone", || !processes_with(&sleep).iter().any(|(_, c)| c.trim() == sleep));
        // The command never got past the sleep.
        let log = std::fs::read_to_string(&log).unwrap();
        assert!(log.contains("step-started") && !log.contains("after-2"), "{who:?}:\n{log}");
    });
}

/// A zygote killed from outside (the OOM killer, a stray `kill`) fails the
/// running step, and the build, with a message that says so, instead of
/// hanging or reporting a plain exit code.
#[test]
fn a_killed_zygote_fails_the_build_with_a_clear_error() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    for_each_runner(|who| {
        let sleep = format!("sleep {}", 3000 + std::process::id() % 8000 + who as u32);
        let p = Probe::new(&format!("FROM {{base}}\nRUN echo step-started && {sleep}\n"), &reg);
        let log = p.dir.path().join("log");
        let mut child = start_build(&p, who, "", &log);
        eventually("the step runs", || processes_with(&sleep).iter().any(|(_, c)| c.trim() == sleep));
        let (_, zygote) = zygote_of(&p, who);
        run(Command::new("kill").args(["-KILL", &zygote.to_string()]));
        let status = child.wait().unwrap();
        assert!(!status.success(), "{who:?}");
        let log = std::fs::read_to_string(&log).unwrap();
        assert!(log.contains("the sandbox zygote (the process starting every RUN) has exited"), "{who:?}:\n{log}");
        eventually("the step is gone", || !processes_with(&sleep).iter().any(|(_, c)| c.trim() == sleep));
    });
}
