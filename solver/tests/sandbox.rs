//! Real sandboxes, driven through the `sandbox_run` example binary (the test
//! harness is multi-threaded, so it cannot enter a user namespace itself).
//! Root filesystems are built from the static busybox of `busybox-static`.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rbuild_solver::sandbox::{ExtraMount, MountSource, Network, RunSpec, Security};

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "id", "ls", "touch", "rm", "sleep", "hostname", "mount", "true", "pwd", "mkdir", "chown",
    "ifconfig", "stat", "grep", "wc", "chmod", "head", "env",
];

/// The `sandbox_run` example, rebuilt once per test run: `cargo test
/// --test sandbox` alone does not build examples, and a stale one would
/// test old code.
fn example() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            build.args(["build", "-q", "-p", "rbuild-solver", "--example", "sandbox_run", "--manifest-path"]);
            build.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
            // Into the profile directory this test binary runs from (looked
            // up below): `cargo test --release` must not find a stale or
            // missing release example beside a fresh debug one.
            if !cfg!(debug_assertions) {
                build.arg("--release");
            }
            let st = build.status().unwrap();
            assert!(st.success(), "building the sandbox_run example failed");
            // target/<profile>/deps/sandbox-<hash> -> target/<profile>/examples/sandbox_run
            let exe = std::env::current_exe().unwrap();
            let p = exe.parent().unwrap().parent().unwrap().join("examples/sandbox_run");
            assert!(p.is_file(), "`{}` missing", p.display());
            p
        })
        .clone()
}

/// A scratch area: busybox lower layer plus fresh upper/work dirs.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::Builder::new().prefix("rbuild-sbx").tempdir_in("/tmp").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = Fixture { dir };
        let bin = f.path("lower/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static must be installed");
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(a)).unwrap();
        }
        std::fs::create_dir_all(f.path("lower/etc")).unwrap();
        std::fs::write(
            f.path("lower/etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbuilder:x:1000:1000::/home/builder:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(f.path("lower/etc/group"), "root:x:0:\nbuilder:x:1000:\nstaff:x:50:builder\n").unwrap();
        std::fs::create_dir_all(f.path("upper")).unwrap();
        std::fs::create_dir_all(f.path("work")).unwrap();
        f
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn spec(&self, args: &[&str]) -> RunSpec {
        RunSpec {
            lowerdirs: vec![self.path("lower")],
            upperdir: self.path("upper"),
            workdir: self.path("work"),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            hostname: "sandbox-test".into(),
            network: Network::None,
            security: Default::default(),
            mounts: vec![],
            hosts: "127.0.0.1 localhost\n".into(),
            resolv_conf: "nameserver 192.0.2.1\n".into(),
            rlimits: vec![],
            shm_size: 0,
            cgroup: None,
        }
    }

    fn write_spec(&self, spec: &RunSpec) -> PathBuf {
        let p = self.path(&format!("spec-{}.json", rand_suffix()));
        std::fs::write(&p, serde_json::to_vec(spec).unwrap()).unwrap();
        p
    }

    fn run(&self, spec: &RunSpec) -> Output {
        let p = self.write_spec(spec);
        // The kernel overlay, whatever the caller's environment says.
        Command::new(example()).env_remove("RBUILD_OVERLAY").arg("run").arg(&p).output().unwrap()
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn check(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(o)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn output_and_exit_code_are_propagated() {
    let f = Fixture::new();
    let o = f.run(&f.spec(&["sh", "-c", "echo hello; echo oops >&2; exit 3"]));
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(stdout(&o), "hello\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "oops\n");
}

#[test]
fn writes_land_in_upper_and_mount_points_leave_no_trace() {
    let f = Fixture::new();
    let mut spec = f.spec(&[
        "sh",
        "-c",
        "echo data > /new && mkdir -p /d/e && cat /etc/hosts /etc/resolv.conf && ls /proc/self >/dev/null",
    ]);
    spec.mounts.push(ExtraMount { target: "/cache/dir".into(), source: MountSource::Tmpfs { size: 1 << 20 } });
    let out = check(&f.run(&spec));
    assert_eq!(out, "127.0.0.1 localhost\nnameserver 192.0.2.1\n");
    assert_eq!(std::fs::read_to_string(f.path("upper/new")).unwrap(), "data\n");
    // No /etc (hosts), /proc, /dev or /cache stub in the snapshot.
    assert_eq!(entries(&f.path("upper")), ["d", "new"]);
    assert_eq!(entries(&f.path("upper/d")), ["e"]);
}

#[test]
fn a_noop_run_leaves_an_empty_upper() {
    let f = Fixture::new();
    check(&f.run(&f.spec(&["true"])));
    assert!(entries(&f.path("upper")).is_empty());
}

/// Mount targets are looked up in the layers without a probe mount where
/// the layers are plain (whiteouts, opaque directories, files hiding
/// directories) and through the kernel where a symlink is on the way: both
/// must agree with what the mounted overlay shows.
#[test]
fn mount_targets_are_looked_up_as_the_overlay_merges_the_layers() {
    let f = Fixture::new();
    // A layer over the base: /etc replaced (opaque, mode 750; a RUN cannot
    // make it, its /etc holds mount points), a symlink to a directory.
    std::fs::create_dir(f.path("upper/etc")).unwrap();
    std::fs::write(f.path("upper/etc/marker"), "").unwrap();
    std::fs::set_permissions(f.path("upper/etc"), std::fs::Permissions::from_mode(0o750)).unwrap();
    rustix::fs::setxattr(f.path("upper/etc"), "user.overlay.opaque", b"y", rustix::fs::XattrFlags::empty()).unwrap();
    std::fs::create_dir(f.path("upper/srv")).unwrap();
    std::os::unix::fs::symlink("/srv", f.path("upper/data")).unwrap();
    let next = |n: &str, mounts: Vec<ExtraMount>, script: &str| {
        let (upper, work) = (f.path(&format!("upper{n}")), f.path(&format!("work{n}")));
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let mut spec = f.spec(&["sh", "-c", script]);
        spec.lowerdirs.push(f.path("upper"));
        spec.upperdir = upper;
        spec.workdir = work;
        spec.mounts = mounts;
        check(&f.run(&spec))
    };
    let tmpfs = |target: &str| ExtraMount { target: target.into(), source: MountSource::Tmpfs { size: 1 << 20 } };
    // Plain layers: the stubs sit in the opaque /etc, with its metadata;
    // the base's passwd and group stay hidden.
    let out = next("2", vec![tmpfs("/etc/conf.d")], "stat -c %a /etc; ls /etc; cat /etc/hosts");
    assert_eq!(out, "750\nconf.d\nhosts\nmarker\nresolv.conf\n127.0.0.1 localhost\n");
    // Through a symlink: resolved inside the root by the kernel.
    let out = next("3", vec![tmpfs("/data/cache")], "ls /srv; ls -l /data | head -c 1");
    assert_eq!(out, "cache\nl");
    for n in ["2", "3"] {
        assert!(entries(&f.path(&format!("upper{n}"))).is_empty(), "mount points left a trace in upper{n}");
    }
}

#[test]
fn deletions_make_whiteouts_and_opaque_dirs() {
    let f = Fixture::new();
    std::fs::write(f.path("lower/old"), "x").unwrap();
    std::fs::create_dir_all(f.path("lower/dir")).unwrap();
    std::fs::write(f.path("lower/dir/a"), "a").unwrap();
    check(&f.run(&f.spec(&["sh", "-c", "rm /old && rm -r /dir && mkdir /dir && touch /dir/b && ls /dir"])));
    let wh = std::fs::symlink_metadata(f.path("upper/old")).unwrap();
    assert!(wh.file_type().is_char_device(), "whiteout is a character device");
    assert_eq!(wh.rdev(), 0, "whiteout is 0:0");
    let mut buf = [0u8; 8];
    let n = rustix::fs::getxattr(f.path("upper/dir"), "user.overlay.opaque", &mut buf[..]).expect("opaque marker");
    assert_eq!(&buf[..n], b"y");
    assert_eq!(entries(&f.path("upper/dir")), ["b"]);
}

#[test]
fn network_none_has_only_loopback_up() {
    let f = Fixture::new();
    let out = check(&f.run(&f.spec(&["cat", "/proc/net/dev"])));
    let ifaces: Vec<&str> = out.lines().skip(2).map(|l| l.trim().split(':').next().unwrap()).collect();
    assert_eq!(ifaces, ["lo"]);
    let up = check(&f.run(&f.spec(&["ifconfig"])));
    assert!(up.contains("lo") && up.contains("UP"), "{up}");
    let mut host = f.spec(&["cat", "/proc/net/dev"]);
    host.network = Network::Host;
    assert!(check(&f.run(&host)).lines().count() > 3, "the host network has more than lo");
}

/// `Seccomp:` and `Seccomp_filters:` of the command's /proc/self/status.
fn seccomp_status(f: &Fixture, security: Security, user: &str) -> (String, String) {
    let mut spec = f.spec(&["cat", "/proc/self/status"]);
    spec.security = security;
    spec.user = user.into();
    let status = check(&f.run(&spec));
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
    };
    (field("Seccomp:"), field("Seccomp_filters:"))
}

#[test]
fn seccomp_filter_for_sandbox_runs_none_for_insecure() {
    let f = Fixture::new();
    for user in ["", "builder"] {
        assert_eq!(seccomp_status(&f, Security::Sandbox, user), ("2".into(), "1".into()), "user `{user}`");
    }
    assert_eq!(seccomp_status(&f, Security::Insecure, "").0, "0", "--security=insecure has no filter");
    // The filter is installed without no_new_privs: setuid binaries work, as under Docker.
    let mut spec = f.spec(&["grep", "NoNewPrivs", "/proc/self/status"]);
    spec.user = "builder".into();
    assert_eq!(check(&f.run(&spec)).split_whitespace().nth(1), Some("0"));
    // mount(2) is refused (EPERM: busybox says "permission denied") in the
    // sandbox, and works for the same root without the filter.
    let mut mount = f.spec(&["mount", "-t", "tmpfs", "none", "/etc"]);
    let o = f.run(&mount);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("permission denied"), "{o:?}");
    mount.security = Security::Insecure;
    check(&f.run(&mount));
}

/// The command's environment is the step's and nothing else: none of the
/// variables rbuild gives its sandbox init (its re-exec marker, allocator
/// tuning) or has itself reaches RUN, where it would end up in images.
#[test]
fn the_command_gets_exactly_the_steps_environment() {
    let f = Fixture::new();
    let mut spec = f.spec(&["env"]);
    spec.env = vec!["PATH=/bin".into(), "A=1".into()];
    let out = Command::new(example())
        .env_remove("RBUILD_OVERLAY")
        .env("RBUILD_FROM_THE_HOST", "leaked")
        .arg("run")
        .arg(f.write_spec(&spec))
        .output()
        .unwrap();
    let mut lines: Vec<String> = check(&out).lines().map(str::to_string).collect();
    lines.sort();
    // HOME from the user's passwd entry when the step sets none, as runc does.
    assert_eq!(lines, ["A=1", "HOME=/root", "PATH=/bin"]);
}

#[test]
fn hostname_pid_namespace_and_cwd() {
    let f = Fixture::new();
    assert_eq!(check(&f.run(&f.spec(&["hostname"]))), "sandbox-test\n");
    assert_eq!(check(&f.run(&f.spec(&["cat", "/proc/1/cmdline"]))), "cat\0/proc/1/cmdline\0");
    assert_eq!(check(&f.run(&f.spec(&["sh", "-c", "echo $$"]))), "1\n");
    let mut spec = f.spec(&["pwd"]);
    spec.cwd = "/work/deep".into();
    assert_eq!(check(&f.run(&spec)), "/work/deep\n");
    assert!(f.path("upper/work/deep").is_dir(), "the working directory is created and kept");
}

#[test]
fn users_are_resolved_in_the_image() {
    let f = Fixture::new();
    let root = check(&f.run(&f.spec(&["id"])));
    assert!(root.starts_with("uid=0(root) gid=0(root)"), "{root}");
    let mut spec = f.spec(&["id"]);
    spec.user = "1000:1000".into();
    let u = check(&f.run(&spec));
    assert!(u.starts_with("uid=1000(builder) gid=1000(builder)"), "{u}");
    spec.user = "builder".into();
    let u = check(&f.run(&spec));
    assert!(u.contains("uid=1000") && u.contains("50(staff)"), "supplementary groups: {u}");
    spec.user = "4242:4343".into();
    spec.args = vec!["sh".into(), "-c".into(), "id; echo $HOME; touch /x".into()];
    let o = f.run(&spec);
    assert_ne!(o.status.code(), Some(0), "a non-root user cannot write to /");
    // An explicit group gives no supplementary groups (runc's GetExecUser,
    // as under BuildKit), so busybox `id` prints none.
    assert!(stdout(&o).starts_with("uid=4242 gid=4343\n/\n"), "{}", stdout(&o));
    spec.user = "nosuchuser".into();
    let o = f.run(&spec);
    assert_eq!(o.status.code(), Some(90));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nosuchuser"));
}

#[test]
fn exec_failures_use_126_and_127() {
    let f = Fixture::new();
    let o = f.run(&f.spec(&["nosuchcmd"]));
    assert_eq!(o.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&o.stderr).contains("`nosuchcmd`: executable file not found in $PATH"));
    std::fs::write(f.path("lower/notexec"), "#!/bin/sh\n").unwrap();
    let o = f.run(&f.spec(&["/notexec"]));
    assert_eq!(o.status.code(), Some(126), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn setup_failures_are_reported_by_spawn() {
    let f = Fixture::new();
    let mut spec = f.spec(&["true"]);
    spec.lowerdirs.push(f.path("does-not-exist"));
    let o = f.run(&spec);
    assert_eq!(o.status.code(), Some(90));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does-not-exist"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn extra_mounts() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.path("ctx")).unwrap();
    std::fs::write(f.path("ctx/file"), "ctx").unwrap();
    std::fs::create_dir_all(f.path("cache")).unwrap();
    std::fs::create_dir_all(f.path("stage")).unwrap();
    std::fs::write(f.path("stage/s"), "stage").unwrap();
    let mut spec = f.spec(&[
        "sh",
        "-c",
        "cat /ctx/file /stage/s && ! touch /ctx/nope 2>/dev/null && echo c > /var/cache/c && echo rw > /stage/new && cat /stage/new && echo t > /t/x",
    ]);
    spec.mounts = vec![
        ExtraMount { target: "/ctx".into(), source: MountSource::Bind { source: f.path("ctx"), readonly: true } },
        ExtraMount {
            target: "/var/cache".into(),
            source: MountSource::Bind { source: f.path("cache"), readonly: false },
        },
        ExtraMount {
            target: "/stage".into(),
            source: MountSource::Overlay {
                lowerdirs: vec![f.path("lower"), f.path("stage")],
                readonly: false,
                selector: String::new(),
            },
        },
        ExtraMount { target: "/t".into(), source: MountSource::Tmpfs { size: 0 } },
    ];
    assert_eq!(check(&f.run(&spec)), "ctxstagerw\n");
    assert_eq!(std::fs::read_to_string(f.path("cache/c")).unwrap(), "c\n");
    assert!(!f.path("stage/new").exists(), "rw overlay mount writes are discarded");
    assert!(entries(&f.path("upper")).is_empty(), "{:?}", entries(&f.path("upper")));
}

#[test]
fn kill_stops_the_whole_sandbox_promptly() {
    let f = Fixture::new();
    let p = f.write_spec(&f.spec(&["sh", "-c", "sleep 100 & sleep 100"]));
    let start = std::time::Instant::now();
    let o = Command::new(example()).arg("kill").arg(&p).arg("300").output().unwrap();
    let out = check(&o);
    assert!(out.starts_with("code=137 "), "{out}");
    assert!(start.elapsed().as_secs() < 10, "kill took {:?}", start.elapsed());
}

#[test]
fn a_120_layer_chain_mounts() {
    let f = Fixture::new();
    let mut spec = f.spec(&["sh", "-c", "cat /value /layer-000 /layer-119 && ls / | grep -c layer-"]);
    // Long names: the old single-page `lowerdir=` option would overflow.
    for i in 0..120 {
        let d = f.path(&format!("layers/snapshot-with-a-rather-long-directory-name-{i:03}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("value"), format!("{i}\n")).unwrap();
        std::fs::write(d.join(format!("layer-{i:03}")), "").unwrap();
        spec.lowerdirs.push(d);
    }
    assert_eq!(check(&f.run(&spec)), "119\n120\n");
}

#[test]
fn scratch_rootfs_without_layers() {
    let f = Fixture::new();
    let mut spec = f.spec(&["/busybox", "sh", "-c", "/busybox echo hi > /f; /busybox ls /"]);
    spec.lowerdirs.clear();
    // A scratch root is only useful with something mounted into it.
    spec.mounts.push(ExtraMount {
        target: "/busybox".into(),
        source: MountSource::Bind { source: "/bin/busybox".into(), readonly: true },
    });
    let out = check(&f.run(&spec));
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["busybox", "dev", "etc", "f", "proc", "sys"]);
    assert_eq!(entries(&f.path("upper")), ["f"]);
}

#[test]
fn mount_overlay_in_the_current_process() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.path("top")).unwrap();
    std::fs::write(f.path("top/value"), "top\n").unwrap();
    std::fs::write(f.path("lower/value"), "base\n").unwrap();
    std::fs::create_dir_all(f.path("mnt")).unwrap();
    let mnt = f.path("mnt").display().to_string();
    let lower = f.path("lower").display().to_string();
    let top = f.path("top").display().to_string();
    let o = Command::new(example())
        .args(["overlay", &mnt, "-", "-", &lower, &top, "--", "sh", "-c"])
        .arg(format!("cat {mnt}/value && ! touch {mnt}/x 2>/dev/null"))
        .output()
        .unwrap();
    assert_eq!(check(&o), "top\n");
    let up = f.path("upper").display().to_string();
    let wk = f.path("work").display().to_string();
    let o = Command::new(example())
        .args(["overlay", &mnt, &up, &wk, &lower, &top, "--", "sh", "-c"])
        .arg(format!("echo w > {mnt}/written && rm {mnt}/value"))
        .output()
        .unwrap();
    check(&o);
    assert_eq!(std::fs::read_to_string(f.path("upper/written")).unwrap(), "w\n");
    assert!(std::fs::symlink_metadata(f.path("upper/value")).unwrap().file_type().is_char_device());
    assert!(entries(&f.path("mnt")).is_empty(), "unmounted on drop (and never visible to the host)");
}

#[test]
fn per_run_overhead() {
    let f = Fixture::new();
    let mut spec = f.spec(&["true"]);
    spec.upperdir = f.path("bench");
    let p = f.write_spec(&spec);
    let out = check(&Command::new(example()).arg("bench").arg(&p).arg("50").output().unwrap());
    let mean: f64 = out.trim().strip_prefix("mean_ms=").unwrap().parse().unwrap();
    eprintln!("per-RUN overhead (50 x `true`, network none): {mean:.2} ms");
    // Generous bound: the machine is shared; the target is <= 10 ms.
    assert!(mean < 250.0, "{mean} ms per RUN");
}

// ---- confinement (capabilities, /proc and /sys, descriptors) -----------------

/// Masks of the `Cap*` lines of `/proc/self/status`, by name.
fn caps_of(status: &str) -> std::collections::BTreeMap<String, u64> {
    status
        .lines()
        .filter_map(|l| {
            let (k, v) = l.strip_prefix("Cap")?.split_once(':')?;
            Some((k.to_string(), u64::from_str_radix(v.trim(), 16).ok()?))
        })
        .collect()
}

/// Mount points of a `/proc/self/mountinfo` text with their options.
fn mounts_of(mountinfo: &str) -> Vec<(String, String)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(4)?.to_string(), f.get(5)?.to_string()))
        })
        .collect()
}

const PROBE: &str = "grep ^Cap /proc/self/status; echo ---; cat /proc/self/mountinfo; echo ---; \
    if (exec 3>>/proc/sys/kernel/core_pattern) 2>/dev/null; then echo opened; else echo denied; fi";

#[test]
fn insecure_security_grants_all_caps_and_writable_proc_sys() {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").unwrap().trim().parse().unwrap();
    let all = (1u64 << (last + 1)) - 1;
    let is_root = rustix::process::getuid().is_root();
    // As real root, then (where it can be created) as the rootless test user.
    for rootless in if is_root { vec![false, true] } else { vec![true] } {
        let f = Fixture::new();
        if rootless && is_root {
            let (uid, gid) = ensure_test_user();
            for d in ["lower", "upper", "work"] {
                chown_tree(&f.path(d), uid, gid);
            }
        }
        let run = |security: Security| {
            let mut spec = f.spec(&["sh", "-c", PROBE]);
            spec.security = security;
            let p = f.write_spec(&spec);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            let o = if rootless && is_root {
                as_test_user(&["run", p.to_str().unwrap()])
            } else {
                Command::new(example()).env_remove("RBUILD_OVERLAY").arg("run").arg(&p).output().unwrap()
            };
            let out = check(&o);
            let parts: Vec<String> = out.split("---\n").map(str::to_string).collect();
            (caps_of(&parts[0]), mounts_of(&parts[1]), parts[2].trim().to_string())
        };
        let ro = |mounts: &[(String, String)], t: &str| {
            mounts.iter().filter(|(m, _)| m == t).any(|(_, o)| o.split(',').any(|x| x == "ro"))
        };
        let (caps, mounts, core) = run(Security::Insecure);
        for set in ["Prm", "Eff", "Bnd"] {
            assert_eq!(caps[set], all, "rootless={rootless}: Cap{set}: every capability of the kernel");
        }
        assert_eq!((caps["Inh"], caps["Amb"]), (0, 0));
        assert!(!mounts.iter().any(|(m, _)| m == "/proc/sys" || m == "/proc/keys"), "nothing masked: {mounts:?}");
        assert!(!ro(&mounts, "/sys"), "/sys is writable: {mounts:?}");
        // As real root, container root is host root: /proc/sys is really
        // writable (the probe only opens it, writing nothing). Rootless, the
        // kernel still refuses: the file belongs to the host's root.
        assert_eq!(core, if rootless { "denied" } else { "opened" });

        // The default for comparison: Docker's set, read-only and masked paths.
        let (caps, mounts, core) = run(Security::Sandbox);
        assert_eq!((caps["Prm"], caps["Eff"], caps["Bnd"]), (0xa804_25fb, 0xa804_25fb, 0xa804_25fb));
        assert!(ro(&mounts, "/proc/sys") && ro(&mounts, "/sys"), "{mounts:?}");
        assert!(mounts.iter().any(|(m, _)| m == "/proc/keys"), "{mounts:?}");
        assert_eq!(core, "denied");
    }
}

#[test]
fn capabilities_of_root_and_of_a_user() {
    let f = Fixture::new();
    let mut spec = f.spec(&["grep", "^Cap", "/proc/self/status"]);
    let root = caps_of(&check(&f.run(&spec)));
    let want = |held: u64| {
        [("Amb", 0), ("Bnd", 0xa804_25fb), ("Eff", held), ("Inh", 0), ("Prm", held)]
            .map(|(k, v)| (k.to_string(), v))
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(root, want(0xa804_25fb));
    spec.user = "builder".into();
    assert_eq!(caps_of(&check(&f.run(&spec))), want(0), "Docker leaves a non-root USER nothing effective");
}

#[test]
fn inherited_descriptors_stay_outside() {
    let f = Fixture::new();
    let p = f.write_spec(&f.spec(&["sh", "-c", "ls /proc/self/fd; ls /proc/self/fd/7/ 2>&1; true"]));
    // A directory and a file without O_CLOEXEC, as from a careless parent.
    let o = Command::new("sh")
        .arg("-c")
        .arg("exec 7</ 9<\"$1\"; exec \"$0\" run \"$1\"")
        .arg(example())
        .arg(&p)
        .env_remove("RBUILD_OVERLAY")
        .output()
        .unwrap();
    let out = check(&o);
    let fds: Vec<&str> = out.lines().take_while(|l| l.chars().all(|c| c.is_ascii_digit())).collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "{out}");
    assert!(out.contains("No such file") && !out.contains("etc"), "{out}");
}

// ---- non-root --------------------------------------------------------------

const TEST_USER: &str = "rbuildtest";
const SUB_START: u32 = 200000; // used only when useradd allocated no range

/// Creates the test user with a subordinate id range, once (needs real root).
fn ensure_test_user() -> (u32, u32) {
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = ONCE.lock().unwrap();
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, TEST_USER]).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let st = Command::new("useradd").args(["-m", TEST_USER]).status().unwrap();
        assert!(st.success(), "useradd failed");
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if !text.lines().any(|l| l.starts_with(&format!("{TEST_USER}:"))) {
            let line = format!("{TEST_USER}:{SUB_START}:65536\n");
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(file).unwrap();
            std::io::Write::write_all(&mut f, line.as_bytes()).unwrap();
        }
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

fn as_test_user(args: &[&str]) -> Output {
    let exe = example();
    Command::new("runuser").args(["-u", TEST_USER, "--"]).arg(exe).args(args).output().unwrap()
}

fn chown_tree(p: &Path, uid: u32, gid: u32) {
    let st = Command::new("chown").arg("-R").arg(format!("{uid}:{gid}")).arg(p).status().unwrap();
    assert!(st.success());
}

#[test]
fn non_root_with_subordinate_ids() {
    if !rustix::process::getuid().is_root() {
        eprintln!("skipped: creating the test user needs root");
        return;
    }
    let (uid, gid) = ensure_test_user();
    let mapping = stdout(&as_test_user(&["mapping"]));
    // useradd may already have allocated a range: use whatever /etc/subuid says.
    let json: serde_json::Value = serde_json::from_str(mapping.lines().next().unwrap()).unwrap();
    let sub = &json["SubIds"];
    assert_eq!(sub["uid"], uid, "{mapping}");
    let sub_uid_start = sub["sub_uid_start"].as_u64().unwrap() as u32;
    let sub_gid_start = sub["sub_gid_start"].as_u64().unwrap() as u32;
    let f = Fixture::new();
    // In rbuild, layers are unpacked inside the namespace; here the lower
    // layer is given to the user's container root the same way.
    chown_tree(&f.path("lower"), uid, gid);
    chown_tree(&f.path("upper"), uid, gid);
    chown_tree(&f.path("work"), uid, gid);
    let mut spec = f.spec(&[
        "sh",
        "-c",
        "id && echo a > /owned-by-root && touch /owned-by-1000 && chown 1000:1000 /owned-by-1000 && rm /etc/group && stat -c %u /bin/busybox && hostname",
    ]);
    spec.user = String::new();
    let p = f.write_spec(&spec);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = as_test_user(&["run", p.to_str().unwrap()]);
    let out = check(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("uid=0(root) gid=0(root)"), "{out}");
    assert_eq!(lines[1], "0", "files of the user are container root's");
    assert_eq!(lines[2], "sandbox-test");
    let meta = |rel: &str| std::fs::symlink_metadata(f.path(rel)).unwrap();
    assert_eq!((meta("upper/owned-by-root").uid(), meta("upper/owned-by-root").gid()), (uid, gid));
    assert_eq!(meta("upper/owned-by-1000").uid(), sub_uid_start + 999);
    assert_eq!(meta("upper/owned-by-1000").gid(), sub_gid_start + 999);
    assert!(meta("upper/etc/group").file_type().is_char_device(), "whiteouts work rootless");

    // As the user inside too.
    let mut spec = f.spec(&["id"]);
    spec.upperdir = f.path("upper2");
    spec.workdir = f.path("work2");
    spec.user = "builder".into();
    for d in [&spec.upperdir, &spec.workdir] {
        std::fs::create_dir_all(d).unwrap();
        chown_tree(d, uid, gid);
    }
    let p = f.write_spec(&spec);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = check(&as_test_user(&["run", p.to_str().unwrap()]));
    assert!(out.starts_with("uid=1000(builder) gid=1000(builder)") && out.contains("50(staff)"), "{out}");
}

#[test]
fn non_root_with_a_single_id() {
    if !rustix::process::getuid().is_root() {
        eprintln!("skipped: creating the test user needs root");
        return;
    }
    const SINGLE_USER: &str = "rbuildsingle";
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, SINGLE_USER]).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        // A system user gets no subordinate ids from useradd.
        let st = Command::new("useradd").args(["-r", "-M", SINGLE_USER]).status().unwrap();
        assert!(st.success(), "useradd failed");
    }
    let (uid, gid) = (id("-u").unwrap(), id("-g").unwrap());
    let run = |args: &[&str]| {
        Command::new("runuser").args(["-u", SINGLE_USER, "--"]).arg(example()).args(args).output().unwrap()
    };
    let mapping = check(&run(&["mapping"]));
    assert!(mapping.starts_with(&format!("{{\"Single\":{{\"uid\":{uid},\"gid\":{gid}}}}}")), "{mapping}");
    let f = Fixture::new();
    for d in ["lower", "upper", "work"] {
        chown_tree(&f.path(d), uid, gid);
    }
    let spec = f.spec(&["sh", "-c", "id && echo a > /f && rm /etc/group && ! chown 1000 /f 2>/dev/null"]);
    let p = f.write_spec(&spec);
    let out = check(&run(&["run", p.to_str().unwrap()]));
    assert!(out.starts_with("uid=0(root) gid=0(root)"), "{out}");
    let meta = std::fs::symlink_metadata(f.path("upper/f")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    assert!(std::fs::symlink_metadata(f.path("upper/etc/group")).unwrap().file_type().is_char_device());
}

// ---- copy fallback (RBUILD_OVERLAY=copy) -----------------------------------

/// Every entry below `dir` with its type, mode and content (files, symlink
/// targets; whiteouts and opaque markers shown): what an upper dir means.
fn upper_tree(dir: &Path) -> Vec<String> {
    fn go(root: &Path, rel: &Path, out: &mut Vec<String>) {
        let mut names: Vec<_> = std::fs::read_dir(root.join(rel)).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        for n in names {
            let p = rel.join(n);
            let full = root.join(&p);
            let md = std::fs::symlink_metadata(&full).unwrap();
            let mode = md.mode() & 0o7777;
            let desc = if md.is_dir() {
                let mut buf = [0u8; 4];
                let opaque = rustix::fs::lgetxattr(&full, "user.overlay.opaque", &mut buf[..]).is_ok();
                format!("dir {mode:o}{}", if opaque { " opaque" } else { "" })
            } else if md.file_type().is_char_device() {
                format!("char {}", md.rdev())
            } else if md.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&full).unwrap().display())
            } else {
                format!("file {mode:o} {:?}", std::fs::read_to_string(&full).unwrap())
            };
            out.push(format!("{} {desc}", p.display()));
            if md.is_dir() {
                go(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    go(dir, Path::new(""), &mut out);
    out
}

impl Fixture {
    /// Lower files the copy-fallback tests change, plus a second layer `top`.
    fn with_changeable_files(self) -> Fixture {
        std::fs::create_dir_all(self.path("lower/data")).unwrap();
        std::fs::write(self.path("lower/data/keep"), "keep\n").unwrap();
        std::fs::write(self.path("lower/data/gone"), "gone\n").unwrap();
        std::fs::write(self.path("lower/data/mod"), "old\n").unwrap();
        std::fs::create_dir_all(self.path("lower/dir/sub")).unwrap();
        std::fs::write(self.path("lower/dir/sub/x"), "x").unwrap();
        std::fs::write(self.path("lower/perm"), "p\n").unwrap();
        std::fs::set_permissions(self.path("lower/perm"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::create_dir_all(self.path("top")).unwrap();
        std::fs::write(self.path("top/value"), "top\n").unwrap();
        let st = Command::new("mknod").arg(self.path("top/perm")).args(["c", "0", "0"]).status().unwrap();
        assert!(st.success(), "mknod whiteout");
        std::fs::write(self.path("top/perm"), "").expect_err("a whiteout is not writable");
        self
    }

    fn run_copy(&self, spec: &RunSpec) -> Output {
        let p = self.write_spec(spec);
        Command::new(example()).env("RBUILD_OVERLAY", "copy").arg("run").arg(&p).output().unwrap()
    }
}

const CHANGES: &str = "echo new > /created && echo changed > /data/mod && rm /data/gone && rm -r /dir \
     && echo f > /dir && chmod 600 /perm && cat /etc/hosts /view/value && ls /proc/self >/dev/null \
     && ! test -e /view/perm";

#[test]
fn copy_fallback_run_writes_the_same_upper_as_overlayfs() {
    let mut uppers = Vec::new();
    for copy in [false, true] {
        let f = Fixture::new().with_changeable_files();
        // `top` deletes `perm` in the view, not in the root.
        let mut spec = f.spec(&["sh", "-c", CHANGES]);
        spec.mounts.push(ExtraMount {
            target: "/view".into(),
            source: MountSource::Overlay {
                lowerdirs: vec![f.path("lower"), f.path("top")],
                readonly: true,
                selector: String::new(),
            },
        });
        let out = check(&if copy { f.run_copy(&spec) } else { f.run(&spec) });
        assert_eq!(out, "127.0.0.1 localhost\ntop\n");
        let tree = upper_tree(&f.path("upper"));
        // Nothing else: no /proc, /dev, /etc/hosts or /view mount point.
        assert_eq!(
            tree,
            [
                "created file 644 \"new\\n\"",
                "data dir 755",
                "data/gone char 0",
                "data/mod file 644 \"changed\\n\"",
                "dir file 644 \"f\\n\"",
                "perm file 600 \"p\\n\"",
            ],
            "copy={copy}"
        );
        // The flattened root is gone, the lowers untouched.
        assert!(!f.path("work/rootfs-fallback").exists());
        assert_eq!(std::fs::read_to_string(f.path("lower/data/mod")).unwrap(), "old\n");
        assert_eq!(std::fs::metadata(f.path("lower/perm")).unwrap().mode() & 0o777, 0o644);
        uppers.push(tree);
    }
    assert_eq!(uppers[0], uppers[1]);
}

#[test]
fn copy_fallback_noop_run_and_replaced_dir() {
    let f = Fixture::new().with_changeable_files();
    // The root is a bind mount of the flattened copy, not an overlay.
    let mounts = check(&f.run_copy(&f.spec(&["cat", "/proc/mounts"])));
    let root_fs = |mounts: &str| {
        let line = mounts.lines().find(|l| l.split(' ').nth(1) == Some("/")).unwrap_or_default();
        line.split(' ').nth(2).unwrap_or_default().to_string()
    };
    assert!(!["", "overlay"].contains(&root_fs(&mounts).as_str()), "{mounts}");
    let normal = check(&f.run(&f.spec(&["cat", "/proc/mounts"])));
    assert_eq!(root_fs(&normal), "overlay", "{normal}");
    assert!(upper_tree(&f.path("upper")).is_empty(), "{:?}", upper_tree(&f.path("upper")));
    let f = Fixture::new().with_changeable_files();
    // A file replaced by a directory: opaque, as overlayfs marks it.
    let out = check(&f.run_copy(&f.spec(&["sh", "-c", "rm /perm && mkdir /perm && echo y > /perm/in && id -u"])));
    assert_eq!(out, "0\n");
    assert_eq!(upper_tree(&f.path("upper")), ["perm dir 755 opaque", "perm/in file 644 \"y\\n\""]);
}

#[test]
fn copy_fallback_mount_overlay_views() {
    let f = Fixture::new().with_changeable_files();
    std::fs::create_dir_all(f.path("mnt")).unwrap();
    let mnt = f.path("mnt").display().to_string();
    let lower = f.path("lower").display().to_string();
    let top = f.path("top").display().to_string();
    let overlay = |upper: &str, work: &str, script: String| {
        Command::new(example())
            .env("RBUILD_OVERLAY", "copy")
            .args(["overlay", &mnt, upper, work, &lower, &top, "--", "sh", "-c"])
            .arg(script)
            .output()
            .unwrap()
    };
    // Read-only: merged (whiteout applied), not writable, not even through hard links.
    let o = overlay(
        "-",
        "-",
        format!(
            "cat {mnt}/value {mnt}/data/keep && ! test -e {mnt}/perm && ! touch {mnt}/x 2>/dev/null \
             && ! sh -c 'echo y >> {mnt}/data/keep' 2>/dev/null"
        ),
    );
    assert_eq!(check(&o), "top\nkeep\n");
    assert!(entries(&f.path("mnt")).is_empty(), "the copy is removed");
    assert_eq!(std::fs::read_to_string(f.path("lower/data/keep")).unwrap(), "keep\n");
    // Writable: changes land in upper in overlay format, nothing else.
    let up = f.path("upper").display().to_string();
    let wk = f.path("work").display().to_string();
    let script = format!(
        "echo new > {mnt}/created && echo changed > {mnt}/data/mod && rm {mnt}/data/gone && rm -r {mnt}/dir \
         && echo f > {mnt}/dir && rm {mnt}/value && chmod 600 {mnt}/bin"
    );
    check(&overlay(&up, &wk, script));
    assert_eq!(
        upper_tree(&f.path("upper")),
        [
            "bin dir 600",
            "created file 644 \"new\\n\"",
            "data dir 755",
            "data/gone char 0",
            "data/mod file 644 \"changed\\n\"",
            "dir file 644 \"f\\n\"",
            "value char 0",
        ]
    );
    assert!(entries(&f.path("mnt")).is_empty(), "the copy is removed");
}

#[test]
fn copy_fallback_keeps_writes_next_to_created_mount_points() {
    let f = Fixture::new();
    // No /etc in the image: the sandbox creates it for /etc/hosts; what the
    // command writes there is kept, the mount points are not.
    std::fs::remove_dir_all(f.path("lower/etc")).unwrap();
    let spec =
        f.spec(&["sh", "-c", "echo 'root:x:0:0::/:/bin/sh' > /etc/passwd && mkdir -p /proc/x 2>/dev/null; true"]);
    check(&f.run_copy(&spec));
    assert_eq!(upper_tree(&f.path("upper")), ["etc dir 755", "etc/passwd file 644 \"root:x:0:0::/:/bin/sh\\n\""]);
    assert!(!f.path("work/rootfs-fallback").exists());
}

#[test]
fn copy_fallback_recreated_dirs_are_opaque_and_setup_errors_name_the_path() {
    let f = Fixture::new().with_changeable_files();
    check(&f.run_copy(&f.spec(&["sh", "-c", "rm -r /dir && mkdir /dir && touch /dir/b && chmod 644 /dir/b"])));
    // A recreated directory is recognised by its new inode number; when the
    // file system hands the old number out again, the equivalent form (same
    // directory, its lost entry whited out) is written. Both merge the same.
    let tree = upper_tree(&f.path("upper"));
    assert!(
        tree == ["dir dir 755 opaque", "dir/b file 644 \"\""]
            || tree == ["dir dir 755", "dir/b file 644 \"\"", "dir/sub char 0"],
        "{tree:?}"
    );
    let mut spec = f.spec(&["true"]);
    spec.lowerdirs.push(f.path("does-not-exist"));
    let o = f.run_copy(&spec);
    assert_eq!(o.status.code(), Some(90));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does-not-exist"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `source=` paths are resolved inside the mounted layers: links to `/` or
/// `/etc` land in the layers, never on the host; `rw` writes go to a
/// discarded tmpfs; a missing source fails without naming host paths. Both
/// with the kernel overlay and with the copy fallback.
#[test]
fn bind_sources_resolve_inside_their_layers() {
    for copy in [false, true] {
        let f = Fixture::new();
        // A marker on the host, outside every layer.
        std::fs::write(f.path("host-marker"), "host secret").unwrap();
        let host_marker = f.path("host-marker").display().to_string();
        std::fs::create_dir_all(f.path("stage/etc")).unwrap();
        std::fs::write(f.path("stage/etc/marker"), "stage").unwrap();
        std::os::unix::fs::symlink("/", f.path("stage/hostroot")).unwrap();
        std::os::unix::fs::symlink("/etc", f.path("stage/etclink")).unwrap();
        std::os::unix::fs::symlink("../../../../../../..", f.path("stage/etc/up")).unwrap();
        std::fs::create_dir_all(f.path("top")).unwrap();
        std::fs::write(f.path("top/topfile"), "top").unwrap();
        let script = format!(
            "cat /ro/etc/marker /file /rw/marker /up/etc/marker && ! test -e /ro{host_marker} && ! test -e /up{host_marker} \
             && ls /rw && echo new > /rw/new && echo changed > /rw/marker && cat /rw/new /rw/marker \
             && echo w > /all/w && cat /all/topfile"
        );
        let mut spec = f.spec(&["sh", "-c", &script]);
        let layers = |lowers: &[&str], readonly, selector: &str| MountSource::Overlay {
            lowerdirs: lowers.iter().map(|l| f.path(l)).collect(),
            readonly,
            selector: selector.into(),
        };
        spec.mounts = vec![
            ExtraMount { target: "/ro".into(), source: layers(&["stage"], true, "hostroot") },
            ExtraMount { target: "/file".into(), source: layers(&["stage"], true, "hostroot/etclink/marker") },
            ExtraMount { target: "/rw".into(), source: layers(&["stage", "top"], false, "/etclink") },
            ExtraMount { target: "/up".into(), source: layers(&["stage", "top"], true, "etc/up") },
            ExtraMount { target: "/all".into(), source: layers(&["stage", "top"], false, "") },
        ];
        let out = check(&if copy { f.run_copy(&spec) } else { f.run(&spec) });
        assert_eq!(out, "stagestagestagestagemarker\nup\nnew\nchanged\ntop", "copy={copy}");
        // Writes were discarded: layers and the RUN's upper dir are untouched.
        assert_eq!(std::fs::read_to_string(f.path("stage/etc/marker")).unwrap(), "stage");
        assert!(!f.path("stage/etc/new").exists() && !f.path("top/w").exists() && !f.path("stage/w").exists());
        assert!(entries(&f.path("upper")).is_empty(), "{:?}", entries(&f.path("upper")));
        assert_eq!(std::fs::read_to_string(f.path("host-marker")).unwrap(), "host secret");

        // A source that exists only on the host (through the link) is not found.
        let mut spec = f.spec(&["true"]);
        let missing = format!("hostroot{host_marker}");
        spec.mounts = vec![ExtraMount { target: "/m".into(), source: layers(&["stage", "top"], true, &missing) }];
        let o = if copy { f.run_copy(&spec) } else { f.run(&spec) };
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(90), "copy={copy}: {err}");
        assert!(err.contains(&format!("cannot open bind source `{missing}` for `/m`")), "{err}");
        assert!(err.contains("No such file or directory"), "{err}");
        assert!(!err.contains(&f.path("stage").display().to_string()), "host layer path in {err}");
    }
}

/// Regression: `/dev/null` and the other device nodes are bind mounts of the
/// host's inodes, and as real root the build's namespace maps host root, so
/// a RUN could `chmod`/`chown` the host's `/dev/null` (found when a build
/// machine's `/dev/null` was replaced mid-run and apt's `_apt` and `pasta`
/// could no longer open it). The binds are read-only: the devices still
/// read and write, their metadata cannot change, as root or not. The probe
/// sets the mode and owner the nodes already have, so a regression shows
/// in the output without breaking the machine's `/dev/null`.
#[test]
fn host_device_nodes_cannot_be_changed_from_a_run() {
    let f = Fixture::new();
    let script = "echo x > /dev/null && cat /dev/null && head -c 4 /dev/zero | wc -c \
        && ! (echo x > /dev/full) 2>/dev/null \
        && for d in null zero full random urandom tty; do \
             chmod 666 /dev/$d 2>/dev/null && echo chmod $d; \
             chown 0:0 /dev/$d 2>/dev/null && echo chown $d; \
             touch /dev/$d 2>/dev/null && echo touch $d; \
           done; stat -c '%a' /dev/null";
    let o = f.run(&f.spec(&["sh", "-c", script]));
    assert_eq!(check(&o).split_whitespace().collect::<Vec<_>>(), ["4", "666"]);
}
