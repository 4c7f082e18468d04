//! Debian-based builds: the Dockerfiles most users write (apt with cache
//! mounts, `useradd` + `USER`, multi-stage static C, dpkg's hard links,
//! setuid files and file capabilities), on a real `debootstrap`ed bookworm
//! base pushed to a loopback registry, built as root and as the unprivileged
//! [`TEST_USER`] with a subordinate id range. The results are checked the way
//! BuildKit writes them, from the layer tars themselves.
//!
//! apt downloads go through the real Debian mirror (the machine reaches it;
//! `RBUILD_TEST_DEBIAN_MIRROR` points elsewhere). Without it, or without root
//! to debootstrap, the tests say so and skip — except under `CI=true`, where
//! that is a failure.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use util::{LayerEntry, TEST_USER, TestRegistry, debian_unavailable, ensure_test_user, is_root, layer_entries, ok};
use util::{debian_mirror, rbuild, run, shared_tmp};

/// Who runs rbuild.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The current user (root in CI).
    Root,
    /// [`TEST_USER`] through `runuser`, with a 65,536-id subordinate range.
    Rootless,
}

/// One test's registry (Debian and busybox bases pushed), context and
/// store, in a directory the rootless user can use.
struct Case {
    mode: Mode,
    reg: TestRegistry,
    /// The store directory's name under `dir`.
    store: String,
    dir: tempfile::TempDir,
}

impl Case {
    /// `None` when the Debian tests cannot run here (see
    /// [`debian_unavailable`]), or when `mode` is rootless and we are not
    /// root (then the root run already is a non-root run).
    fn new(mode: Mode, dockerfile: &str, files: &[(&str, &str)]) -> Option<Case> {
        if debian_unavailable().is_some() {
            return None;
        }
        if mode == Mode::Rootless {
            if !is_root() {
                eprintln!("not root: the rootless variant is the root variant here; skipped");
                return None;
            }
            ensure_test_user();
        }
        let reg = TestRegistry::start();
        reg.push_debian("debian:bookworm");
        reg.push_busybox("busybox:latest");
        // Under target/ (not /tmp) because stores with Debian in them are big.
        let dir = tempfile::Builder::new().prefix("rbuild-debian").tempdir_in(shared_tmp()).unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile.replace("REG", &reg.addr)).unwrap();
        for (name, text) in files {
            std::fs::write(ctx.join(name), text).unwrap();
        }
        if mode == Mode::Rootless {
            run(Command::new("chown").args(["-R", &format!("{TEST_USER}:{TEST_USER}")]).arg(dir.path()));
            run(Command::new("chmod").arg("755").arg(dir.path()));
        }
        Some(Case { mode, reg, dir, store: "store".into() })
    }

    /// Replaces the context's Dockerfile (`REG` is the registry) and builds
    /// later on with the fresh store `store`.
    fn next_dockerfile(&mut self, dockerfile: &str, store: &str) {
        let file = self.path("ctx/Dockerfile");
        std::fs::write(&file, dockerfile.replace("REG", &self.reg.addr)).unwrap();
        if self.mode == Mode::Rootless {
            run(Command::new("chown").arg(format!("{TEST_USER}:{TEST_USER}")).arg(&file));
        }
        self.store = store.to_string();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `rbuild --root STORE build --progress plain ARGS CTX` as this case's
    /// user, timed.
    fn build(&self, args: &[&str]) -> Output {
        let mut cmd = match self.mode {
            Mode::Root => rbuild(),
            Mode::Rootless => util::rbuild_as(TEST_USER, self.dir.path()),
        };
        cmd.arg("--root").arg(self.path(&self.store)).args(["build", "--progress", "plain"]);
        cmd.args(args).arg(self.path("ctx"));
        let started = Instant::now();
        let out = ok(cmd.output().expect("run rbuild"));
        eprintln!("[{:?}] rbuild build {args:?}: {:.1}s", self.mode, started.elapsed().as_secs_f64());
        out
    }

    /// Builds into an OCI layout dir `NAME` and returns its path.
    fn build_oci(&self, name: &str, args: &[&str]) -> (PathBuf, String) {
        let layout = self.path(name);
        let mut all = vec!["-t".to_string(), "t:latest".to_string(), "-o".to_string()];
        all.push(format!("type=oci,dest={},tar=false", layout.display()));
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = self.build(&all);
        (layout, String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The apt lines every test uses: cache mounts as Docker's documentation
/// recommends for apt, with Debian's `docker-clean` hook removed and
/// downloaded packages kept.
const APT: &str = "RUN rm -f /etc/apt/apt.conf.d/docker-clean; \
    echo 'Binary::apt::APT::Keep-Downloaded-Packages \"true\";' > /etc/apt/apt.conf.d/keep-cache\n\
    RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,target=/var/lib/apt,sharing=locked";

/// The entry at `path` in `layer`.
fn entry<'a>(layer: &'a [LayerEntry], path: &str) -> &'a LayerEntry {
    layer.iter().find(|e| e.path.trim_end_matches('/') == path).unwrap_or_else(|| {
        let paths: Vec<&str> = layer.iter().map(|e| e.path.as_str()).take(60).collect();
        panic!("{path} not in the layer; it has {paths:?}...")
    })
}

/// The last layer that has `path`.
fn last_with<'a>(layers: &'a [Vec<LayerEntry>], path: &str) -> &'a [LayerEntry] {
    layers
        .iter()
        .rev()
        .find(|l| l.iter().any(|e| e.path.trim_end_matches('/') == path))
        .unwrap_or_else(|| panic!("no layer has {path}"))
}

fn apt_python(mode: Mode) {
    let dockerfile = format!(
        "FROM REG/debian:bookworm\n{APT} \
         apt-get update && apt-get install -y --no-install-recommends python3 ca-certificates \
         && stat -c '%U:%G %a %n' /var/lib/apt/lists/partial /var/cache/apt/archives/partial\n\
         RUN python3 -c 'import ssl, sys; open(\"/python.txt\", \"w\").write(\"%d.%d %s\" % (sys.version_info[0], sys.version_info[1], ssl.get_default_verify_paths().openssl_cafile))' \
         && python3 -c 'import ssl; ssl.create_default_context().load_verify_locations(\"/etc/ssl/certs/ca-certificates.crt\")'\n"
    );
    let Some(case) = Case::new(mode, &dockerfile, &[]) else { return };
    let (layout, log) = case.build_oci("first", &[]);
    // The RUN's private network reached the mirror.
    let mirror = debian_mirror();
    assert!(log.contains(&format!("Get:1 {mirror} bookworm InRelease")), "apt did not reach {mirror}:\n{log}");
    assert!(log.contains("Setting up python3 "), "{log}");
    assert!(log.lines().any(|l| l.contains("Get:") && l.contains(" Packages")), "{log}");
    // apt dropped to `_apt` for its downloads: it warns "Download is
    // performed unsandboxed as root" when it cannot.
    assert!(!log.contains("unsandboxed"), "apt could not drop privileges to _apt:\n{log}");
    for dir in ["/var/lib/apt/lists/partial", "/var/cache/apt/archives/partial"] {
        assert!(log.contains(&format!("_apt:root 700 {dir}")), "{dir} not owned by _apt:\n{log}");
    }
    assert!(!log.lines().any(|l| l.contains(" W: ") || l.contains(" E: ")), "apt warned:\n{log}");

    let layers = layer_entries(&layout, "latest");
    let python = entry(last_with(&layers, "python.txt"), "python.txt");
    assert_eq!((python.uid, python.gid, python.mode), (0, 0, 0o644));
    let bundle = umoci_unpack(&layout);
    let python = std::fs::read_to_string(bundle.path().join("b/rootfs/python.txt")).unwrap();
    assert!(python.starts_with("3.11 "), "{python}");
    let installed = bundle.path().join("b/rootfs/usr/bin/python3.11");
    assert!(installed.exists(), "python3.11 not in the image");
    // The cache mounts stayed out of the image.
    let lists = bundle.path().join("b/rootfs/var/lib/apt/lists");
    let listed: Vec<_> =
        std::fs::read_dir(&lists).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(listed.is_empty(), "apt lists leaked into the image: {listed:?}");
    let debs = bundle.path().join("b/rootfs/var/cache/apt/archives");
    let cached = std::fs::read_dir(&debs)
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".deb")).count())
        .unwrap_or(0);
    assert_eq!(cached, 0, "downloaded .debs leaked into the image");

    // Again without the build cache: the cache mounts still hold the lists
    // and the .debs, so apt downloads nothing.
    let (_, log) = case.build_oci("second", &["--no-cache"]);
    // (The test mirror answers InRelease without `Last-Modified`, so apt
    // fetches that small file again; the package lists it names are the
    // ones that must come from the cache mount.)
    assert!(
        !log.lines().any(|l| l.contains("Get:") && l.contains(" Packages")),
        "apt-get update did not find its lists in the cache mount:\n{log}"
    );
    assert!(log.contains("Need to get 0 B/"), "apt-get install downloaded again:\n{log}");
    assert!(!log.contains("unsandboxed"), "{log}");
}

#[test]
fn debian_apt_install_with_cache_mounts_as_root() {
    apt_python(Mode::Root);
}

#[test]
fn debian_apt_install_with_cache_mounts_rootless() {
    apt_python(Mode::Rootless);
}

fn users(mode: Mode) {
    let dockerfile = "FROM REG/debian:bookworm\n\
        RUN useradd -m app\n\
        COPY --chown=app:app app.txt /home/app/app.txt\n\
        USER app\n\
        WORKDIR /home/app\n\
        RUN id -un > whoami && touch made-by-app && (cat /etc/shadow 2>/dev/null && echo readable || echo denied) > shadow\n";
    let Some(case) = Case::new(mode, dockerfile, &[("app.txt", "for app\n")]) else { return };
    let (layout, _) = case.build_oci("out", &[]);
    let layers = layer_entries(&layout, "latest");
    let base = &layers[0];
    let useradd = &layers[1];
    for layer in [base, useradd] {
        for (path, mode) in [("etc/shadow", 0o640), ("etc/gshadow", 0o640)] {
            let e = entry(layer, path);
            assert_eq!((e.uid, e.gid, e.mode), (0, 42, mode), "{path}: {e:?}");
        }
    }
    let e = entry(useradd, "etc/passwd");
    assert_eq!((e.uid, e.gid, e.mode), (0, 0, 0o644), "{e:?}");
    let home = entry(useradd, "home/app");
    // Debian's login.defs leaves HOME_MODE unset: UMASK 022 gives 0755.
    assert_eq!((home.uid, home.gid, home.mode), (1000, 1000, 0o755), "{home:?}");
    let copied = entry(&layers[2], "home/app/app.txt");
    assert_eq!((copied.uid, copied.gid, copied.mode), (1000, 1000, 0o644), "{copied:?}");
    let last = layers.last().unwrap();
    for path in ["home/app/whoami", "home/app/made-by-app", "home/app/shadow"] {
        let e = entry(last, path);
        assert_eq!((e.uid, e.gid), (1000, 1000), "{path}: {e:?}");
    }
    let bundle = umoci_unpack(&layout);
    let root = bundle.path().join("b/rootfs/home/app");
    assert_eq!(std::fs::read_to_string(root.join("whoami")).unwrap(), "app\n");
    assert_eq!(std::fs::read_to_string(root.join("shadow")).unwrap(), "denied\n", "USER app could read /etc/shadow");
    let config = image_config(&layout);
    assert_eq!(config["config"]["User"], "app");
}

#[test]
fn debian_useradd_user_and_copy_chown_as_root() {
    users(Mode::Root);
}

#[test]
fn debian_useradd_user_and_copy_chown_rootless() {
    users(Mode::Rootless);
}

const HELLO_C: &str = "#include <stdio.h>\n#include <unistd.h>\n\
    int main(void) { printf(\"hello from static C, uid %d\\n\", (int)getuid()); return 0; }\n";

fn static_c(mode: Mode) {
    let dockerfile = format!(
        "FROM REG/debian:bookworm AS build\n{APT} \
         apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev\n\
         COPY hello.c /src/hello.c\n\
         RUN mkdir /out && gcc -static -O2 -o /out/hello /src/hello.c\n\
         FROM scratch AS app\n\
         COPY --from=build /out/hello /hello\n\
         ENTRYPOINT [\"/hello\"]\n\
         FROM REG/busybox:latest AS check\n\
         COPY --from=app /hello /hello\n\
         RUN /hello > /greeting\n"
    );
    let Some(case) = Case::new(mode, &dockerfile, &[("hello.c", HELLO_C)]) else { return };
    let (layout, _) = case.build_oci("app", &["--target", "app"]);
    let layers = layer_entries(&layout, "latest");
    assert_eq!(layers.len(), 1, "a FROM scratch image with one COPY has one layer");
    let paths: Vec<&str> = layers[0].iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["hello"], "the scratch image holds only the binary");
    let e = &layers[0][0];
    assert_eq!((e.kind, e.uid, e.gid, e.mode), (tar::EntryType::Regular, 0, 0, 0o755), "{e:?}");
    let bundle = umoci_unpack(&layout);
    let bin = bundle.path().join("b/rootfs/hello");
    assert_static_elf(&std::fs::read(&bin).unwrap());
    let out = run(&mut Command::new(&bin));
    assert!(String::from_utf8_lossy(&out).starts_with("hello from static C"));
    assert_eq!(image_config(&layout)["config"]["Entrypoint"], serde_json::json!(["/hello"]));

    // The binary runs on a base without a libc, inside rbuild's sandbox.
    let local = case.path("check");
    case.build(&["--target", "check", "-o", &format!("type=local,dest={}", local.display())]);
    assert_eq!(std::fs::read_to_string(local.join("greeting")).unwrap(), "hello from static C, uid 0\n");
}

/// Panics unless `elf` is a 64-bit ELF executable with no program
/// interpreter and no dynamic section (statically linked).
fn assert_static_elf(elf: &[u8]) {
    assert_eq!(&elf[..5], b"\x7fELF\x02", "not a 64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    assert!(phnum > 0, "no program headers");
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
        // PT_DYNAMIC = 2, PT_INTERP = 3.
        assert!(p_type != 2 && p_type != 3, "program header {i} has type {p_type}: dynamically linked");
    }
}

#[test]
fn debian_multistage_static_c_into_scratch_as_root() {
    static_c(Mode::Root);
}

#[test]
fn debian_multistage_static_c_into_scratch_rootless() {
    static_c(Mode::Rootless);
}

/// `security.capability` for `cap_net_raw+ep` in the revision-2 format
/// (no namespace root id) that BuildKit writes, root or rootless: magic
/// 0x02000000 | effective, permitted bit 13, nothing inheritable.
const CAP_NET_RAW_EP_V2: [u8; 20] = [1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn dpkg_files(mode: Mode) {
    let dockerfile = format!(
        "FROM REG/debian:bookworm AS caps\n{APT} \
         apt-get update && apt-get install -y --no-install-recommends libcap2-bin \
         && apt-get install -y --reinstall passwd perl-base\n\
         RUN cp /bin/true /usr/local/bin/captest && setcap cap_net_raw+ep /usr/local/bin/captest\n\
         RUN getcap /usr/local/bin/captest > /getcap.txt && stat -c '%a %u:%g' /usr/bin/passwd /usr/bin/chage > /modes.txt\n\
         RUN /usr/local/bin/captest; echo \"default $?\" > /exec.txt\n\
         RUN --network=none /usr/local/bin/captest; echo \"none $?\" >> /exec.txt\n\
         FROM REG/busybox:latest AS copied\n\
         COPY --from=caps /usr/local/bin/captest /plain\n\
         COPY --from=caps --chown=1000:1000 /usr/local/bin/captest /chowned\n"
    );
    let Some(mut case) = Case::new(mode, &dockerfile, &[]) else { return };
    let (layout, _) = case.build_oci("out", &["--target", "caps"]);
    let layers = layer_entries(&layout, "latest");
    let dpkg = last_with(&layers, "usr/bin/perl5.36.0");

    // Hard links: one regular file, the other names are links to it.
    let perl = [entry(dpkg, "usr/bin/perl"), entry(dpkg, "usr/bin/perl5.36.0")];
    let regular: Vec<_> = perl.iter().filter(|e| e.kind == tar::EntryType::Regular).collect();
    let links: Vec<_> = perl.iter().filter(|e| e.kind == tar::EntryType::Link).collect();
    assert_eq!((regular.len(), links.len()), (1, 1), "perl's two names are not one file and a hard link: {perl:?}");
    // BuildKit writes the first name in walk (lexical) order as the file.
    assert_eq!(regular[0].path, "usr/bin/perl");
    assert_eq!(links[0].link.as_deref(), Some("usr/bin/perl"), "{:?}", links[0]);

    // setuid root and setgid shadow, as dpkg installed them.
    for (path, want) in [
        ("usr/bin/passwd", (0, 0, 0o4755)),
        ("usr/bin/chsh", (0, 0, 0o4755)),
        ("usr/bin/chage", (0, 42, 0o2755)),
        ("usr/bin/expiry", (0, 42, 0o2755)),
    ] {
        let e = entry(dpkg, path);
        assert_eq!((e.uid, e.gid, e.mode), want, "{path}: {e:?}");
    }

    // The file capability, in the layer and as a later RUN sees it.
    let cap = entry(last_with(&layers, "usr/local/bin/captest"), "usr/local/bin/captest");
    let xattr = cap.xattrs.iter().find(|(n, _)| n == "security.capability");
    assert_eq!(xattr.map(|(_, v)| v.as_slice()), Some(&CAP_NET_RAW_EP_V2[..]), "{cap:?}");
    assert_eq!((cap.uid, cap.gid, cap.mode), (0, 0, 0o755));
    let bundle = umoci_unpack(&layout);
    let rootfs = bundle.path().join("b/rootfs");
    let getcap = std::fs::read_to_string(rootfs.join("getcap.txt")).unwrap();
    assert_eq!(getcap.trim(), "/usr/local/bin/captest cap_net_raw=ep");
    let modes = std::fs::read_to_string(rootfs.join("modes.txt")).unwrap();
    assert_eq!(modes, "4755 0:0\n2755 0:42\n");
    // The default network's RUN lacks NET_RAW, so the kernel refuses to
    // exec a file that demands it (126, as Docker with --cap-drop NET_RAW);
    // --network=none holds Docker's 14 capabilities and runs it.
    let exec = std::fs::read_to_string(rootfs.join("exec.txt")).unwrap();
    assert_eq!(exec, "default 126\nnone 0\n");

    // COPY --from keeps the capability, with and without --chown (as
    // BuildKit's copier, which copies every xattr).
    let (copied, _) = case.build_oci("copied", &["--target", "copied"]);
    let layers = layer_entries(&copied, "latest");
    for (path, owner) in [("plain", (0, 0)), ("chowned", (1000, 1000))] {
        let e = entry(last_with(&layers, path), path);
        let xattr = e.xattrs.iter().find(|(n, _)| n == "security.capability");
        assert_eq!(xattr.map(|(_, v)| v.as_slice()), Some(&CAP_NET_RAW_EP_V2[..]), "COPY lost it: {e:?}");
        assert_eq!((e.uid, e.gid), owner, "{e:?}");
    }

    // Pulled as a base image into a fresh store, the capability is still
    // there for a RUN (the unpacker used to chown after restoring it).
    case.reg.push_layout(&layout, "latest", "caps:latest");
    case.next_dockerfile("FROM REG/caps:latest\nRUN getcap /usr/local/bin/captest > /getcap-pulled.txt\n", "store2");
    let local = case.path("pulled");
    case.build(&["-o", &format!("type=local,dest={}", local.display())]);
    let pulled = std::fs::read_to_string(local.join("getcap-pulled.txt")).unwrap();
    assert_eq!(pulled.trim(), "/usr/local/bin/captest cap_net_raw=ep", "the pulled base lost the capability");
}

#[test]
fn debian_dpkg_hard_links_setuid_and_file_capabilities_as_root() {
    dpkg_files(Mode::Root);
}

#[test]
fn debian_dpkg_hard_links_setuid_and_file_capabilities_rootless() {
    dpkg_files(Mode::Rootless);
}

fn umoci_unpack(layout: &Path) -> tempfile::TempDir {
    let bundle = tempfile::Builder::new().prefix("rbuild-debian-unpack").tempdir_in(shared_tmp()).unwrap();
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(bundle.path().join("b")));
    bundle
}

fn image_config(layout: &Path) -> serde_json::Value {
    let json = |p: PathBuf| -> serde_json::Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let blob =
        |d: &serde_json::Value| layout.join("blobs/sha256").join(d.as_str().unwrap().trim_start_matches("sha256:"));
    let index = json(layout.join("index.json"));
    let manifest = json(blob(&index["manifests"][0]["digest"]));
    json(blob(&manifest["config"]["digest"]))
}
