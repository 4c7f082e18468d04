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
        let base = self.dir.path();
        let out = base.join(format!("out-{who:?}"));
        let store = base.join(format!("store-{who:?}"));
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
        cmd.arg(script).arg(rbuild().get_program()).arg(&store).arg(&out).arg(base.join("ctx"));
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "build as {who:?} failed ({}):\n{}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        out
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
