//! Seccomp: every `RUN` runs under Docker's default profile. The attacker
//! here ships a static program in the build context that tries the calls the
//! profile exists to refuse (nested user namespaces, mounts, the kernel
//! keyring, BPF, perf events) and checks that each fails with `EPERM`, while
//! ordinary tools and setuid binaries keep working as under Docker.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{self, TestRegistry};
use crate::util::{ensure_test_user, is_root};

/// Tries each refused call and prints `name=errno` (0 = it succeeded).
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <pthread.h>

static void report(const char *name, long rc) { printf("%s=%d\n", name, rc < 0 ? errno : 0); }
static void *thread_main(void *arg) { return arg; }

#ifdef __x86_64__
/* An i386 call (`int 0x80`) from this 64-bit process: a filter of the
   native ABI alone would let it through unchecked. Returns like syscall(2). */
static long int80(long nr, long a0, long a1, long a2) {
    long rc;
    __asm__ volatile("int $0x80" : "=a"(rc) : "a"(nr), "b"(a0), "c"(a1), "d"(a2) : "memory");
    if (rc < 0 && rc > -4096) { errno = -rc; return -1; }
    return rc;
}
#endif

int main(void) {
    report("unshare_newuser", unshare(CLONE_NEWUSER));
    report("unshare_newns", unshare(CLONE_NEWNS));
    report("clone_newuser", syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0));
    report("clone3", syscall(SYS_clone3, 0, 0));
    report("mount", mount("none", "/mnt", "tmpfs", 0, 0));
    report("umount2", umount2("/", MNT_DETACH));
    report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 1));
    report("add_key", syscall(SYS_add_key, "user", "rbuild", "secret", 6, -3));
    report("request_key", syscall(SYS_request_key, "user", "rbuild", 0, 0));
    report("bpf", syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, 0, 0));
    report("perf_event_open", syscall(SYS_perf_event_open, 0, 0, -1, -1, 0));
    report("socket_vsock", socket(40 /* AF_VSOCK */, SOCK_STREAM, 0));
    report("setns", syscall(SYS_setns, 0, 0));
#ifdef __x86_64__
    /* The same rules through the i386 ABI (getpid 20, mount 21, unshare 310,
       socket 359) and the x32 ABI (bit 30; mount 165). */
    report("i386_getpid", int80(20, 0, 0, 0));
    report("i386_mount", int80(21, 0, 0, 0));
    report("i386_unshare_newuser", int80(310, CLONE_NEWUSER, 0, 0));
    report("i386_socket_vsock", int80(359, 40, SOCK_STREAM, 0));
    report("x32_mount", syscall(0x40000000L | 165, 0, 0, 0, 0, 0));
#endif
    /* What must keep working. */
    report("getpid", getpid());
    report("socket_unix", socket(AF_UNIX, SOCK_STREAM, 0));
    pid_t child = fork();
    if (child == 0) _exit(7);
    int status = 0;
    report("fork", child < 0 ? -1 : (waitpid(child, &status, 0) == child && WEXITSTATUS(status) == 7 ? 0 : (errno = EINVAL, -1)));
    pthread_t t;
    int e = pthread_create(&t, 0, thread_main, 0);
    if (e == 0) pthread_join(t, 0); else errno = e;
    report("pthread_create", e == 0 ? 0 : -1);
    return 0;
}
"#;

/// Prints its real and effective uid: installed setuid root in the image.
const SUID_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("ruid=%d euid=%d\n", getuid(), geteuid()); return 0; }
"#;

/// `gcc -static` of `source` into `out`.
fn compile_static(source: &str, out: &Path) {
    let src = out.with_extension("c");
    std::fs::write(&src, source).unwrap();
    util::run(Command::new("gcc").args(["-static", "-O1", "-pthread", "-o"]).arg(out).arg(&src));
    std::fs::remove_file(&src).unwrap();
}

/// Who runs `rbuild`.
#[derive(Debug, Clone, Copy)]
enum Invoker {
    Root,
    TestUser,
}

/// The invokers available here: root and `rbuildtest` when we are root,
/// else just the current (non-root) user.
fn invokers() -> Vec<Invoker> {
    if is_root() {
        ensure_test_user();
        vec![Invoker::Root, Invoker::TestUser]
    } else {
        vec![Invoker::Root]
    }
}

/// A context dir holding `dockerfile` and the compiled programs.
struct Build {
    base: tempfile::TempDir,
}

impl Build {
    fn new(dockerfile: &str, programs: &[(&str, &str)]) -> Build {
        let base = tempfile::Builder::new().prefix("rbuild-seccomp").tempdir_in("/tmp").unwrap();
        let ctx = base.path().join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        for (name, source) in programs {
            compile_static(source, &ctx.join(name));
        }
        Build { base }
    }

    fn out(&self) -> PathBuf {
        self.base.path().join("out")
    }

    /// Runs the build (local output into `out()`), as `who`.
    fn run(&self, who: Invoker) -> Output {
        let _ = std::fs::remove_dir_all(self.out());
        let store = self.base.path().join(format!("store-{who:?}"));
        let mut cmd = match who {
            Invoker::Root => util::rbuild(),
            Invoker::TestUser => {
                util::run(Command::new("chown").args(["-R", "rbuildtest:rbuildtest"]).arg(self.base.path()));
                util::run(Command::new("chmod").arg("755").arg(self.base.path()));
                let mut c = Command::new("runuser");
                c.args(["-u", "rbuildtest", "--"]).arg(util::rbuild().get_program());
                c.env("HOME", self.base.path());
                c
            }
        };
        cmd.arg("--root").arg(store).args(["build", "--progress", "plain", "--no-cache", "-o"]);
        cmd.arg(format!("type=local,dest={}", self.out().display())).arg(self.base.path().join("ctx"));
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "rbuild as {who:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.out().join(rel)).unwrap_or_else(|e| panic!("output file {rel}: {e}"))
    }
}

fn registry() -> TestRegistry {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    reg
}

/// The value of `field` in a /proc/<pid>/status dump.
fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status.lines().find_map(|l| l.strip_prefix(field)).map(str::trim).unwrap_or_default()
}

#[test]
fn seccomp_filter_is_on_in_run() {
    let reg = registry();
    let b = Build::new(
        &format!(
            "FROM {}/busybox:latest\n\
             RUN cat /proc/self/status > /root-status\n\
             USER nobody\n\
             RUN cat /proc/self/status > /tmp/nobody-status\n\
             USER root\n\
             RUN mv /tmp/nobody-status /nobody-status\n",
            reg.addr
        ),
        &[],
    );
    for who in invokers() {
        b.run(who);
        for file in ["root-status", "nobody-status"] {
            let status = b.read(file);
            assert_eq!(status_field(&status, "Seccomp:"), "2", "{who:?} {file}: filter mode");
            assert_eq!(status_field(&status, "Seccomp_filters:"), "1", "{who:?} {file}: one filter");
            // Installed without no_new_privs, as Docker does by default.
            assert_eq!(status_field(&status, "NoNewPrivs:"), "0", "{who:?} {file}");
        }
    }
}

#[test]
fn denied_syscalls_get_eperm() {
    let reg = registry();
    let b = Build::new(
        &format!(
            "FROM {}/busybox:latest\nCOPY probe /probe\nRUN mkdir -p /mnt && /probe > /probe.out\n\
             USER nobody\nRUN /probe > /tmp/probe-nobody.out\nUSER root\nRUN mv /tmp/probe-nobody.out /\n",
            reg.addr
        ),
        &[("probe", PROBE_C)],
    );
    let eperm = libc::EPERM.to_string();
    let mut expect: Vec<(&str, String)> = vec![
        ("unshare_newuser", eperm.clone()),
        ("unshare_newns", eperm.clone()),
        ("clone_newuser", eperm.clone()),
        // ENOSYS, so that libc falls back to clone(2), whose flags the filter checks.
        ("clone3", libc::ENOSYS.to_string()),
        ("mount", eperm.clone()),
        ("umount2", eperm.clone()),
        ("keyctl", eperm.clone()),
        ("add_key", eperm.clone()),
        ("request_key", eperm.clone()),
        ("bpf", eperm.clone()),
        ("perf_event_open", eperm.clone()),
        ("socket_vsock", eperm.clone()),
        ("setns", eperm.clone()),
        ("getpid", "0".into()),
        ("socket_unix", "0".into()),
        ("fork", "0".into()),
        ("pthread_create", "0".into()),
    ];
    if cfg!(target_arch = "x86_64") {
        for (i, (k, v)) in [
            ("i386_getpid", "0".to_string()),
            ("i386_mount", eperm.clone()),
            ("i386_unshare_newuser", eperm.clone()),
            ("i386_socket_vsock", eperm.clone()),
            ("x32_mount", eperm.clone()),
        ]
        .into_iter()
        .enumerate()
        {
            expect.insert(13 + i, (k, v));
        }
    }
    for who in invokers() {
        b.run(who);
        for file in ["probe.out", "probe-nobody.out"] {
            let out = b.read(file);
            let got: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once('=')).collect();
            let want: Vec<(&str, &str)> = expect.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_eq!(got, want, "{who:?} {file}");
        }
    }
}

#[test]
fn busybox_tools_and_setuid_binaries_still_work() {
    let reg = registry();
    let b = Build::new(
        &format!(
            "FROM {}/busybox:latest\n\
             COPY suid /usr/local/bin/suid\n\
             RUN chown 0:0 /usr/local/bin/suid && chmod 4755 /usr/local/bin/suid\n\
             RUN ls / > /dev/null && id && date > /dev/null && ps > /dev/null && wget --help 2>&1 | grep -q Usage \\\n\
              && tar cf /tmp/etc.tar /etc && gzip /tmp/etc.tar && sha256sum /tmp/etc.tar.gz > /sums \\\n\
              && (sleep 0 & wait) && chown 1000:1000 /sums && chmod 600 /sums && mknod /tmp/fifo p \\\n\
              && chroot / true && echo tools-ok > /tools\n\
             USER nobody\n\
             RUN suid > /tmp/suid.out\n\
             USER root\n\
             RUN mv /tmp/suid.out /suid.out\n",
            reg.addr
        ),
        &[("suid", SUID_C)],
    );
    for who in invokers() {
        b.run(who);
        assert_eq!(b.read("tools"), "tools-ok\n", "{who:?}");
        // nobody (65534) runs the setuid-root binary and becomes euid 0, as under Docker.
        assert_eq!(b.read("suid.out"), "ruid=65534 euid=0\n", "{who:?}");
    }
}
