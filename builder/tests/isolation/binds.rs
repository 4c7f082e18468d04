//! `RUN --mount=type=bind`: the source is resolved inside its own content
//! (context, stage, image), `rw` writes are discarded, and `.dockerignore`
//! applies as it does to COPY. Every test plants something on the host
//! outside the context and checks that a RUN neither sees nor changes it.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{TestRegistry, rbuild, run};
use crate::util::{ensure_test_user, is_root};

/// Who runs `rbuild`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum User {
    /// Real root: the whole host would be reachable by an escape.
    Root,
    /// The unprivileged `rbuildtest` (or the current user when the tests
    /// do not run as root): everything that user owns would be.
    Rootless,
}

/// The users every isolation test runs as: root and `rbuildtest` when
/// running as root, else just the current (unprivileged) user.
pub(crate) fn users() -> Vec<User> {
    if is_root() {
        ensure_test_user();
        vec![User::Root, User::Rootless]
    } else {
        vec![User::Rootless]
    }
}

/// The busybox registry, once per test.
pub(crate) fn registry() -> TestRegistry {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    reg
}

/// One build of one test as one user: a base directory holding the
/// context (`ctx/`), a host marker outside it (`host/marker`), the store
/// and the local export (`out/`).
pub(crate) struct Case {
    base: tempfile::TempDir,
    user: User,
}

impl Case {
    /// A context with `files` (relative paths; `Dockerfile` among them),
    /// and the host marker.
    pub(crate) fn new(user: User, files: &[(&str, &str)]) -> Case {
        let base = tempfile::Builder::new().prefix("rbuild-iso").tempdir_in("/tmp").unwrap();
        let case = Case { base, user };
        std::fs::create_dir_all(case.ctx()).unwrap();
        for (rel, text) in files {
            let p = case.ctx().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        std::fs::create_dir_all(case.path("host")).unwrap();
        std::fs::write(case.marker(), "host marker\n").unwrap();
        case
    }

    /// A path under the base directory.
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.base.path().join(rel)
    }

    /// The context directory.
    pub(crate) fn ctx(&self) -> PathBuf {
        self.path("ctx")
    }

    /// The marker planted on the host, outside the context (readable by
    /// the building user: an escape would show it).
    pub(crate) fn marker(&self) -> PathBuf {
        self.path("host/marker")
    }

    /// `ln -s target ctx/rel`.
    pub(crate) fn symlink(&self, target: &str, rel: &str) {
        symlink(target, self.ctx().join(rel)).unwrap();
    }

    /// `rbuild build` of the context as the case's user, exported to `out/`.
    pub(crate) fn build(&self) -> Output {
        let mut cmd = if self.user == User::Rootless && is_root() {
            run(Command::new("chown").args(["-R", "rbuildtest:rbuildtest"]).arg(self.base.path()));
            run(Command::new("chmod").arg("755").arg(self.base.path()));
            let mut c = Command::new("runuser");
            c.args(["-u", "rbuildtest", "--"]).arg(rbuild().get_program()).env("HOME", self.base.path());
            c
        } else {
            rbuild()
        };
        cmd.arg("--root").arg(self.path("store")).args(["build", "--progress", "plain", "-o"]);
        cmd.arg(format!("type=local,dest={}", self.path("out").display())).arg(self.ctx());
        cmd.output().unwrap()
    }

    /// [`Case::build`], which must succeed.
    pub(crate) fn build_ok(&self) -> Output {
        let out = self.build();
        assert!(out.status.success(), "{:?}: rbuild failed:\n{}", self.user, text(&out));
        out
    }

    /// A file of the exported image.
    pub(crate) fn out(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path("out").join(rel))
            .unwrap_or_else(|e| panic!("{:?}: `{rel}` in the image: {e}", self.user))
    }
}

/// stdout and stderr of a build.
fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Listing of a directory on the host, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn escape_bind_source_symlink_to_host_context() {
    let reg = registry();
    for user in users() {
        let case = Case::new(user, &[("a.txt", "a\n")]);
        let marker = case.marker().display().to_string();
        let host_dir = case.path("host").display().to_string();
        std::fs::write(
            case.ctx().join("Dockerfile"),
            format!(
                "FROM {reg}/busybox:latest\n\
                 RUN --mount=type=bind,source=hostroot,target=/m \
                     sh -c 'ls /m > /listing; (cat /m{marker} || echo absent) > /seen; \
                            (cat /m/etc/hostname || echo absent) >> /seen'\n\
                 RUN --mount=type=bind,source=hostroot,target=/m,rw \
                     sh -c 'echo pwned > /m{host_dir}/pwned; echo pwned > /m/pwned; mkdir -p /m{host_dir}; \
                            echo pwned > /m{host_dir}/pwned && cat /m/pwned > /rw-seen'\n\
                 RUN --mount=type=bind,source=deep/up,target=/u sh -c 'ls /u > /up-listing'\n",
                reg = reg.addr
            ),
        )
        .unwrap();
        case.symlink("/", "hostroot");
        std::fs::create_dir_all(case.ctx().join("deep")).unwrap();
        case.symlink("../../../../../../../..", "deep/up");
        case.build_ok();
        // The link resolved to the context's own root, not the host's.
        assert_eq!(case.out("listing"), "Dockerfile\na.txt\ndeep\nhostroot\n", "{user:?}");
        assert_eq!(case.out("up-listing"), "Dockerfile\na.txt\ndeep\nhostroot\n", "{user:?}");
        assert_eq!(case.out("seen"), "absent\nabsent\n", "{user:?}: the host was visible");
        // rw writes stayed in the RUN: not on the host, not in the checkout.
        assert_eq!(case.out("rw-seen"), "pwned\n", "{user:?}");
        assert_eq!(listing(&case.path("host")), ["marker"], "{user:?}: the host was written");
        assert_eq!(listing(&case.ctx()), ["Dockerfile", "a.txt", "deep", "hostroot"], "{user:?}");
        assert_eq!(std::fs::read_to_string(case.marker()).unwrap(), "host marker\n");
    }
}

#[test]
fn escape_bind_source_symlink_in_stage() {
    let reg = registry();
    for user in users() {
        let case = Case::new(user, &[]);
        let host_dir = case.path("host").display().to_string();
        // A stage plants links to the host directory and to `/`; the
        // image it comes from has neither that directory nor the marker.
        let stage = format!(
            "FROM {}/busybox:latest AS s\nRUN ln -s {host_dir} /l && ln -s / /root-link && echo stage > /in-stage\n",
            reg.addr
        );
        std::fs::write(
            case.ctx().join("Dockerfile"),
            format!(
                "{stage}FROM {}/busybox:latest\n\
                 RUN --mount=type=bind,from=s,source=/root-link,target=/m \
                     sh -c '(cat /m{host_dir}/marker || echo absent) > /seen; cat /m/in-stage >> /seen'\n\
                 RUN --mount=type=bind,from=s,source=/root-link/root-link/in-stage,target=/f,rw \
                     sh -c 'cat /f >> /seen && echo changed > /f'\n",
                reg.addr
            ),
        )
        .unwrap();
        case.build_ok();
        assert_eq!(case.out("seen"), "absent\nstage\nstage\n", "{user:?}");

        // A link to a host directory the stage lacks is "not found", and
        // the error names no host store path.
        let case = Case::new(user, &[]);
        let host_dir = case.path("host").display().to_string();
        std::fs::write(
            case.ctx().join("Dockerfile"),
            format!(
                "FROM {}/busybox:latest AS s\nRUN ln -s {host_dir} /l\nFROM {}/busybox:latest\n\
                 RUN --mount=type=bind,from=s,source=/l,target=/m cat /m/marker\n",
                reg.addr, reg.addr
            ),
        )
        .unwrap();
        let out = case.build();
        let msg = text(&out);
        assert!(!out.status.success(), "{user:?}: the host directory was mounted:\n{msg}");
        assert!(msg.contains("cannot open bind source `/l` for `/m`"), "{user:?}: {msg}");
        assert!(msg.contains("No such file or directory"), "{user:?}: {msg}");
        assert!(!msg.contains("host marker"), "{user:?}: {msg}");
        let store = case.path("store").display().to_string();
        assert!(!msg.contains(&store), "{user:?}: store path in the error:\n{msg}");
    }
}

#[test]
fn escape_rw_context_bind_writes_checkout() {
    let reg = registry();
    for user in users() {
        let case = Case::new(user, &[("existing.txt", "original\n"), ("victim.txt", "keep me\n"), ("sub/x", "x\n")]);
        std::fs::write(
            case.ctx().join("Dockerfile"),
            format!(
                "FROM {}/busybox:latest\n\
                 RUN --mount=type=bind,rw,target=/ctx \
                     sh -c 'echo \"echo pwned\" > /ctx/evil.sh && chmod +x /ctx/evil.sh && echo changed > /ctx/existing.txt \
                            && rm /ctx/victim.txt && rm -r /ctx/sub && cat /ctx/evil.sh /ctx/existing.txt > /seen'\n\
                 RUN --mount=type=bind,rw,source=sub,target=/sub sh -c 'echo y > /sub/x && cat /sub/x >> /seen'\n\
                 RUN --mount=type=bind,rw,source=existing.txt,target=/e sh -c 'echo rewritten > /e && cat /e >> /seen'\n\
                 RUN --mount=type=bind,target=/ctx sh -c 'ls /ctx > /after && cat /ctx/existing.txt >> /after'\n",
                reg.addr
            ),
        )
        .unwrap();
        case.build_ok();
        assert_eq!(case.out("seen"), "echo pwned\nchanged\ny\nrewritten\n", "{user:?}: rw writes inside the RUN");
        // The checkout is unchanged, and the next RUN sees it unchanged.
        assert_eq!(listing(&case.ctx()), ["Dockerfile", "existing.txt", "sub", "victim.txt"], "{user:?}");
        assert_eq!(std::fs::read_to_string(case.ctx().join("existing.txt")).unwrap(), "original\n");
        assert_eq!(std::fs::read_to_string(case.ctx().join("victim.txt")).unwrap(), "keep me\n");
        assert_eq!(std::fs::read_to_string(case.ctx().join("sub/x")).unwrap(), "x\n");
        assert_eq!(case.out("after"), "Dockerfile\nexisting.txt\nsub\nvictim.txt\noriginal\n", "{user:?}");
        // Nor did the writes enter the image.
        assert!(!case.path("out/ctx/evil.sh").exists() && !case.path("out/evil.sh").exists(), "{user:?}");
    }
}

#[test]
fn escape_rw_stage_bind_is_writable_and_discarded() {
    let reg = registry();
    for user in users() {
        let case = Case::new(user, &[]);
        std::fs::write(
            case.ctx().join("Dockerfile"),
            format!(
                "FROM {r}/busybox:latest AS s\nRUN echo base > /base-file\n\
                 FROM {r}/busybox:latest\n\
                 RUN --mount=type=bind,from=s,source=/,target=/base,rw \
                     sh -c 'echo new > /base/new && echo changed > /base/base-file && rm /base/bin/ls \
                            && cat /base/new /base/base-file > /seen'\n\
                 RUN --mount=type=bind,from=s,target=/base \
                     sh -c 'cat /base/base-file > /after && test ! -e /base/new && test -e /base/bin/ls \
                            && echo discarded >> /after'\n\
                 FROM s\nCOPY --from=1 /seen /after /\n",
                r = reg.addr
            ),
        )
        .unwrap();
        case.build_ok();
        assert_eq!(case.out("seen"), "new\nchanged\n", "{user:?}: the rw stage bind was not writable");
        assert_eq!(case.out("after"), "base\ndiscarded\n", "{user:?}: rw writes reached the stage");
        // The stage's own content is unchanged in its image too.
        assert_eq!(case.out("base-file"), "base\n", "{user:?}");
        assert!(!case.path("out/new").exists(), "{user:?}");
    }
}

#[test]
fn escape_dockerignore_bypass_through_bind() {
    let reg = registry();
    for user in users() {
        let files = [
            (".dockerignore", "deploy-key.pem\nsecrets\n**/*.key\n"),
            ("deploy-key.pem", "PRIVATE KEY\n"),
            ("secrets/token", "TOKEN\n"),
            ("src/app.txt", "app\n"),
            ("src/nested/id.key", "NESTED KEY\n"),
            ("src/nested/ok.txt", "ok\n"),
        ];
        let case = Case::new(user, &files);
        // A link to the ignored file leads nowhere either.
        case.symlink("deploy-key.pem", "innocent");
        std::fs::write(
            case.ctx().join("Dockerfile"),
            format!(
                "FROM {}/busybox:latest\n\
                 RUN --mount=type=bind,target=/ctx \
                     sh -c 'ls -a /ctx > /listing; ls /ctx/src/nested > /nested; \
                            (cat /ctx/deploy-key.pem /ctx/innocent /ctx/secrets/token 2>&1 || true) | grep -c KEY\\|TOKEN > /leaks; \
                            stat -c %a /ctx/src > /mode'\n\
                 RUN --mount=type=bind,source=src,target=/src,rw sh -c 'ls /src/nested >> /nested'\n\
                 RUN --mount=type=bind,source=src/nested,target=/n sh -c 'ls /n >> /nested'\n",
                reg.addr
            ),
        )
        .unwrap();
        std::fs::set_permissions(case.ctx().join("src"), std::os::unix::fs::PermissionsExt::from_mode(0o750)).unwrap();
        case.build_ok();
        // Ignored entries are absent (not empty); the rest is all there.
        assert_eq!(case.out("listing"), ".\n..\n.dockerignore\nDockerfile\ninnocent\nsrc\n", "{user:?}");
        assert_eq!(case.out("nested"), "ok.txt\nok.txt\nok.txt\n", "{user:?}");
        assert_eq!(case.out("leaks"), "0\n", "{user:?}: ignored content was readable");
        // The view keeps the context's directory attributes.
        assert_eq!(case.out("mode"), "750\n", "{user:?}");

        // Naming an ignored file as the source is "not found".
        for source in ["deploy-key.pem", "secrets/token", "innocent", "src/nested/id.key"] {
            let case = Case::new(user, &files);
            case.symlink("deploy-key.pem", "innocent");
            std::fs::write(
                case.ctx().join("Dockerfile"),
                format!("FROM {}/busybox:latest\nRUN --mount=type=bind,source={source},target=/k cat /k\n", reg.addr),
            )
            .unwrap();
            let out = case.build();
            let msg = text(&out);
            assert!(!out.status.success(), "{user:?}: `{source}` was mounted:\n{msg}");
            assert!(msg.contains("not found"), "{user:?}: {msg}");
            assert!(!msg.contains("PRIVATE KEY") && !msg.contains("TOKEN\n"), "{user:?}: {msg}");
        }
    }
}

/// Mount targets reached through links an earlier step planted (one to a
/// host directory, one climbing with `..` past `/`) are resolved inside
/// the RUN's root: the stubs and mounts land there, the host directory is
/// never written, and the layer lookup that decides where stubs go never
/// answers for a path it cannot interpret (it hands those to the kernel).
#[test]
fn escape_mount_targets_through_planted_links() {
    let reg = registry();
    for user in users() {
        let case = Case::new(user, &[]);
        let host_dir = case.path("host").display().to_string();
        std::fs::write(
            case.ctx().join("Dockerfile"),
            format!(
                "FROM {}/busybox:latest\n\
                 RUN ln -s {host_dir} /hostlink && mkdir -p /a && ln -s ../../../../../.. /a/up\n\
                 RUN --mount=type=tmpfs,target=/hostlink/t --mount=type=cache,id=c,target=/a/up{host_dir}/c \
                     sh -c 'echo pwned > /hostlink/t/x && echo pwned > /a/up{host_dir}/c/y && \
                            (cat /hostlink/marker || echo absent) > /seen && ls /hostlink/t /a/up{host_dir}/c >> /seen'\n",
                reg.addr
            ),
        )
        .unwrap();
        case.build_ok();
        assert_eq!(case.out("seen"), format!("absent\n/a/up{host_dir}/c:\ny\n\n/hostlink/t:\nx\n"), "{user:?}");
        assert_eq!(listing(&case.path("host")), ["marker"], "{user:?}: the host was written");
        assert_eq!(std::fs::read_to_string(case.marker()).unwrap(), "host marker\n");
    }
}

/// A context `COPY` of one directory (planned from its cache key's walk)
/// whose tree holds links to the host and climbing past `/`: the links are
/// copied as links, and a source named through them resolves inside the
/// context; the host's marker never reaches the image.
#[test]
fn escape_copy_through_context_links() {
    let reg = registry();
    for user in users() {
        let case = Case::new(user, &[("src/a.txt", "a\n")]);
        let marker = case.marker().display().to_string();
        std::fs::write(
            case.ctx().join("Dockerfile"),
            format!(
                "FROM {reg}/busybox:latest\n\
                 COPY src/ /app/\n\
                 COPY src/up/ /up/\n\
                 RUN sh -c '(cat /app/host{marker} || echo absent) > /seen; ls /up > /up-listing'\n",
                reg = reg.addr
            ),
        )
        .unwrap();
        case.symlink("/", "src/host");
        case.symlink("../../../../../../../..", "src/up");
        case.build_ok();
        assert_eq!(case.out("seen"), "absent\n", "{user:?}: the host was copied");
        assert_eq!(case.out("up-listing"), "Dockerfile\nsrc\n", "{user:?}");
    }
}
