//! Building a `RUN`'s root filesystem, from host paths to `pivot_root`.
//!
//! Order matters, and is unit-tested with the recording fake:
//! 1. private mount namespace, nothing propagates to the host;
//! 2. every host path (layers, bind sources, device nodes) is captured as a
//!    descriptor first, so later mounts cannot hide or swap them; a bind
//!    mount's `source=` is resolved *inside* its layers
//!    (`openat2(RESOLVE_IN_ROOT)`), never joined onto a host path;
//! 3. a scratch tmpfs is attached at a fixed place: it holds the root mount
//!    point, an empty layer, the stub layer and the `hosts`/`resolv.conf`
//!    sources — none of it ever touches the upper dir; layered mount
//!    sources are merged there (a writable one gets its upper dir there, so
//!    its writes are discarded with the tmpfs);
//! 4. the mount targets are looked up in the layers themselves
//!    ([`super::layer_lookup`]), or where that cannot tell (a symlink on
//!    the way, ...) in a read-only view of the layers mounted for it;
//!    targets missing from the image (`/proc`, `/etc/hosts`, a cache
//!    mount's directory, ...) are created in a *stub layer* on the scratch
//!    tmpfs placed above the image layers, then the real overlay (with the
//!    upper dir) is mounted, so mount points leave no trace in the upper dir
//!    (BuildKit instead deletes its "mount stubs" after the run);
//! 5. `/proc`, `/sys`, `/dev`, hosts files, the extra mounts in order, all
//!    attached through descriptors resolved *inside* the root (symlinks in
//!    the image cannot point a mount at the host);
//! 6. Docker's masked and read-only paths of `/proc` and `/sys`
//!    ([`super::masks`]), after every other mount so none can cover them;
//! 7. host name, then `pivot_root`.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::mount::MountAttrFlags;
use rustix::thread::UnshareFlags;

use super::syscall::{DirMeta, Resolved, Syscall};
use super::{MountSource, RunSpec, SandboxError, Security, masks};

/// Where the init attaches its scratch tmpfs (in its own private mount
/// namespace, after every host path has been captured, so hiding what is
/// there is harmless).
pub(crate) const SCRATCH_AT: &str = "/tmp";
/// Where, beside the root on the scratch tmpfs, the read-only probe of the
/// layers is mounted to look mount targets up.
const PROBE_DIR: &str = "probe";

/// Deepest layer chain whose mount targets are looked up in the layers
/// themselves: each layer costs about one `fstatat` per path component of
/// every target (~7 for the fixed ones), which by estimate (not measured
/// on deep chains) outweighs the probe mount it saves (~0.6 ms here) from
/// some 60 layers on.
const MAX_LOOKUP_LAYERS: usize = 48;

/// Mount points every root gets (path, is a file), created where missing.
pub(crate) const PSEUDO_TARGETS: [(&str, bool); 5] =
    [("/proc", false), ("/sys", false), ("/dev", false), ("/etc/hosts", true), ("/etc/resolv.conf", true)];

/// Host device nodes bind-mounted into the container's `/dev`.
pub(crate) const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// A mount target missing from the image, to be created in the stub layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stub {
    /// Canonical path (relative to the root) of the deepest existing ancestor.
    pub existing: PathBuf,
    /// Components to create under it; the last one is the mount point.
    pub missing: Vec<String>,
    /// The mount point is a file (a bind of a file), not a directory.
    pub file: bool,
    /// Metadata of each component of `existing`, outermost first.
    pub ancestors: Vec<DirMeta>,
}

enum Source<'a> {
    Ready(OwnedFd),
    /// Layers merged once the scratch tmpfs exists: a writable overlay keeps
    /// its upper dir there, and a `selector` is resolved in the merged view
    /// mounted there.
    Layers {
        fds: Vec<OwnedFd>,
        readonly: bool,
        selector: &'a str,
    },
}

fn bind_err(selector: &str, target: &str) -> impl FnOnce(std::io::Error) -> SandboxError {
    let (selector, target) = (selector.to_string(), target.to_string());
    move |source| SandboxError::BindSource { selector, target, source }
}

/// Whether `selector` names the root of its layers.
fn is_root(selector: &str) -> bool {
    selector.split('/').all(|c| c.is_empty() || c == ".")
}

fn mount_err(step: &'static str, target: &str) -> impl FnOnce(std::io::Error) -> SandboxError {
    let target = target.to_string();
    move |source| SandboxError::Mount { step, target, source }
}

fn prep_err(path: &str) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.to_string();
    move |source| SandboxError::Prepare { path, source }
}

/// Builds the root filesystem of `spec` and pivots into it.
///
/// `flat_root`: the copy fallback's flattened root (mount points already
/// created in it), bind-mounted instead of the overlay of `spec.lowerdirs`.
pub(crate) fn setup<S: Syscall>(sys: &S, spec: &RunSpec, flat_root: Option<&Path>) -> Result<(), SandboxError> {
    sys.unshare(UnshareFlags::NEWNS).map_err(|source| SandboxError::Unshare { what: "mount", source })?;
    sys.make_rprivate(Path::new("/")).map_err(mount_err("make mounts private", "/"))?;

    // 2. Capture host paths.
    let open = |p: &Path| sys.open_path(p).map_err(prep_err(&p.display().to_string()));
    let flat = match flat_root {
        Some(dir) => Some(sys.clone_tree(dir, false).map_err(mount_err("bind-mount", &dir.display().to_string()))?),
        None => None,
    };
    let lowers = if flat.is_some() {
        Vec::new()
    } else {
        spec.lowerdirs.iter().map(|p| open(p)).collect::<Result<Vec<_>, _>>()?
    };
    let upper = open(&spec.upperdir)?;
    let work = open(&spec.workdir)?;
    let mut captured = Vec::with_capacity(spec.mounts.len());
    for m in &spec.mounts {
        if !m.target.starts_with('/') {
            return Err(SandboxError::InvalidSpec(format!("mount target `{}` is not absolute", m.target)));
        }
        let src = match &m.source {
            MountSource::Bind { source, readonly } => Source::Ready(
                sys.clone_tree(source, *readonly).map_err(mount_err("bind-mount", &source.display().to_string()))?,
            ),
            MountSource::Tmpfs { size } => {
                let size = size.to_string();
                let mut opts = vec![("mode", "0755")];
                if size != "0" {
                    opts.push(("size", size.as_str()));
                }
                Source::Ready(
                    sys.fs_mount("tmpfs", &opts, MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV)
                        .map_err(mount_err("mount tmpfs", &m.target))?,
                )
            }
            MountSource::Overlay { lowerdirs, readonly, selector } => {
                if lowerdirs.is_empty() {
                    return Err(SandboxError::InvalidSpec(format!("overlay mount at `{}` has no layers", m.target)));
                }
                if *readonly && lowerdirs.len() == 1 {
                    Source::Ready(sys.clone_in(&lowerdirs[0], selector, true).map_err(bind_err(selector, &m.target))?)
                } else {
                    let fds = lowerdirs.iter().map(|p| open(p)).collect::<Result<Vec<_>, _>>()?;
                    Source::Layers { fds, readonly: *readonly, selector }
                }
            }
        };
        captured.push(src);
    }
    // Read-only binds: these are the host's inodes, and as real root rbuild
    // maps host root into the build's namespace, so through a writable bind
    // a RUN could `chmod 000 /dev/null` or `chown` it on the host (and, as
    // anyone, `touch` it). Reading and writing a device node does not need a
    // writable mount (the kernel exempts device nodes from `EROFS` on open);
    // changing its owner, mode, times or xattrs does, and now fails.
    let mut nodes = Vec::with_capacity(DEV_NODES.len());
    for n in DEV_NODES {
        let host = Path::new("/dev").join(n);
        nodes.push(sys.clone_tree(&host, true).map_err(mount_err("bind-mount", &host.display().to_string()))?);
    }

    // 3. Scratch tmpfs.
    let scratch_at = Path::new(SCRATCH_AT);
    let scratch = sys
        .fs_mount("tmpfs", &[("mode", "0700")], MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV)
        .map_err(mount_err("mount tmpfs", SCRATCH_AT))?;
    for d in ["root", PROBE_DIR, "empty", "empty2", "stub"] {
        sys.mkdir_at(scratch.as_fd(), d, 0o755).map_err(prep_err(d))?;
    }
    // What masked paths show (bound read-only).
    sys.mkdir_at(scratch.as_fd(), "masked-dir", 0o555).map_err(prep_err("masked-dir"))?;
    sys.write_at(scratch.as_fd(), "masked-file", b"").map_err(prep_err("masked-file"))?;
    sys.write_at(scratch.as_fd(), "hosts", spec.hosts.as_bytes()).map_err(prep_err("hosts"))?;
    sys.write_at(scratch.as_fd(), "resolv.conf", spec.resolv_conf.as_bytes()).map_err(prep_err("resolv.conf"))?;
    let empty = sys.open_at(scratch.as_fd(), "empty").map_err(prep_err("empty"))?;
    let empty2 = sys.open_at(scratch.as_fd(), "empty2").map_err(prep_err("empty2"))?;
    let stub = sys.open_at(scratch.as_fd(), "stub").map_err(prep_err("stub"))?;
    sys.attach_at(scratch.as_fd(), scratch_at).map_err(mount_err("attach scratch tmpfs", SCRATCH_AT))?;
    let root = scratch_at.join("root");
    let root_s = root.display().to_string();
    let mut extra = Vec::with_capacity(captured.len());
    for (i, (m, src)) in spec.mounts.iter().zip(captured).enumerate() {
        extra.push(match src {
            Source::Ready(fd) => fd,
            Source::Layers { fds, readonly, selector } => {
                merged_view(sys, (&scratch, scratch_at), &format!("ovl{i}"), &fds, readonly, selector, &m.target)?
            }
        });
    }

    // 4. Overlay root, then stubs if needed (or the flattened copy).
    if let Some(flat) = &flat {
        sys.attach_at(flat.as_fd(), &root).map_err(mount_err("attach root", &root_s))?;
    } else {
        overlay_root(sys, spec, &extra, &lowers, [&empty, &empty2, &stub], (&upper, &work), &root)?;
    }
    drop((upper, work));
    super::trace::mark("overlay");
    // 5. Pseudo filesystems, hosts files, extra mounts.
    let attach = |fd: &OwnedFd, target: &str, step: &'static str| {
        sys.attach_in(fd.as_fd(), &root, target).map_err(mount_err(step, target))
    };
    let nosuid = MountAttrFlags::MOUNT_ATTR_NOSUID;
    let proc = sys
        .fs_mount("proc", &[], nosuid | MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOEXEC)
        .map_err(mount_err("mount proc", "/proc"))?;
    attach(&proc, "/proc", "attach proc")?;
    // `/sys` read-only, as Docker mounts it. Only the owner of the network
    // namespace may mount sysfs: where the RUN shares one we do not own (the
    // host's), the host's `/sys` is bound instead, recursively read-only, as
    // rootless podman does. `/sys` is not under the scratch tmpfs, so it can
    // still be captured here.
    let sandboxed = spec.security == Security::Sandbox;
    let ro = if sandboxed { MountAttrFlags::MOUNT_ATTR_RDONLY } else { MountAttrFlags::empty() };
    let (sysfs, host_sys) = match sys.fs_mount(
        "sysfs",
        &[],
        ro | nosuid | MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    ) {
        Ok(fd) => (fd, false),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            (sys.clone_tree(Path::new("/sys"), sandboxed).map_err(mount_err("bind-mount", "/sys"))?, true)
        }
        Err(e) => return Err(mount_err("mount sysfs", "/sys")(e)),
    };
    attach(&sysfs, "/sys", "attach /sys")?;
    let dev = sys
        .fs_mount("tmpfs", &[("mode", "0755"), ("size", "65536k")], nosuid | MountAttrFlags::MOUNT_ATTR_NOEXEC)
        .map_err(mount_err("mount tmpfs", "/dev"))?;
    sys.prepare_dev(dev.as_fd()).map_err(prep_err("/dev"))?;
    attach(&dev, "/dev", "attach /dev")?;
    for (n, fd) in DEV_NODES.iter().zip(&nodes) {
        attach(fd, &format!("/dev/{n}"), "bind-mount device")?;
    }
    let pts = sys
        .fs_mount(
            "devpts",
            &[("newinstance", ""), ("ptmxmode", "0666"), ("mode", "0620")],
            nosuid | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        )
        .map_err(mount_err("mount devpts", "/dev/pts"))?;
    attach(&pts, "/dev/pts", "attach devpts")?;
    let shm_size = if spec.shm_size == 0 { super::DEFAULT_SHM_SIZE } else { spec.shm_size }.to_string();
    let shm = sys
        .fs_mount(
            "tmpfs",
            &[("mode", "1777"), ("size", &shm_size)],
            nosuid | MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        )
        .map_err(mount_err("mount tmpfs", "/dev/shm"))?;
    attach(&shm, "/dev/shm", "attach /dev/shm")?;
    for (name, target) in [("hosts", "/etc/hosts"), ("resolv.conf", "/etc/resolv.conf")] {
        let fd = sys.clone_tree(&scratch_at.join(name), false).map_err(mount_err("bind-mount", target))?;
        attach(&fd, target, "bind-mount")?;
    }
    for (m, fd) in spec.mounts.iter().zip(extra) {
        attach(&fd, &m.target, "attach mount")?;
    }

    super::trace::mark("mounts");
    // 6. Masked and read-only paths (`--security=insecure` has none).
    if sandboxed {
        let cpus = std::fs::read_to_string(masks::POSSIBLE_CPUS).unwrap_or_default();
        let mut masked = masks::masked_paths(&cpus);
        if host_sys {
            // Still the host's mount table: the root is not pivoted yet.
            let mountinfo =
                std::fs::read_to_string("/proc/self/mountinfo").map_err(prep_err("/proc/self/mountinfo"))?;
            masked.extend(masks::sub_mounts(&mountinfo, "/sys"));
        }
        let (file, dir) = (scratch_at.join("masked-file"), scratch_at.join("masked-dir"));
        masks::apply(sys, &root, &masked, &file, &dir)?;
    }

    super::trace::mark("masks");
    // 7. Host name and pivot_root.
    if !spec.hostname.is_empty() {
        sys.sethostname(&spec.hostname).map_err(|e| SandboxError::Hostname(spec.hostname.clone(), e))?;
    }
    sys.pivot_root(&root).map_err(SandboxError::PivotRoot)?;
    Ok(())
}

/// The overlay of `fds` (base first), read-only or with its upper dir in
/// `dir` on the scratch tmpfs (so writes are discarded with it), or its
/// part at `selector`: the view is attached in `dir` and the selector
/// resolved inside it.
fn merged_view<S: Syscall>(
    sys: &S,
    (scratch, scratch_at): (&OwnedFd, &Path),
    dir: &str,
    fds: &[OwnedFd],
    readonly: bool,
    selector: &str,
    target: &str,
) -> Result<OwnedFd, SandboxError> {
    sys.mkdir_at(scratch.as_fd(), dir, 0o755).map_err(prep_err(dir))?;
    let d = sys.open_at(scratch.as_fd(), dir).map_err(prep_err(dir))?;
    let refs: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let ov = if readonly {
        sys.overlay(&refs, None)
    } else {
        sys.mkdir_at(d.as_fd(), "upper", 0o755).map_err(prep_err(dir))?;
        sys.mkdir_at(d.as_fd(), "work", 0o755).map_err(prep_err(dir))?;
        let u = sys.open_at(d.as_fd(), "upper").map_err(prep_err(dir))?;
        let w = sys.open_at(d.as_fd(), "work").map_err(prep_err(dir))?;
        sys.overlay(&refs, Some((u.as_fd(), w.as_fd())))
    }
    .map_err(overlay_err(target))?;
    if is_root(selector) {
        return Ok(ov);
    }
    sys.mkdir_at(d.as_fd(), "view", 0o755).map_err(prep_err(dir))?;
    let view = scratch_at.join(dir).join("view");
    sys.attach_at(ov.as_fd(), &view).map_err(mount_err("attach overlay", target))?;
    sys.clone_in(&view, selector, readonly).map_err(bind_err(selector, target))
}

/// Mounts the overlay root at `root`, with a stub layer for missing mount points.
fn overlay_root<S: Syscall>(
    sys: &S,
    spec: &RunSpec,
    extra: &[OwnedFd],
    lowers: &[OwnedFd],
    [empty, empty2, stub]: [&OwnedFd; 3],
    (upper, work): (&OwnedFd, &OwnedFd),
    root: &Path,
) -> Result<(), SandboxError> {
    let root_s = root.display().to_string();
    let mut targets: Vec<(&str, bool)> = PSEUDO_TARGETS.to_vec();
    for (m, fd) in spec.mounts.iter().zip(extra) {
        targets.push((m.target.as_str(), !sys.is_dir(fd.as_fd()).map_err(prep_err(&m.target))?));
    }
    let layer_fds: Vec<_> = lowers.iter().map(|f| f.as_fd()).collect();
    let mut found = Vec::with_capacity(targets.len());
    if layer_fds.len() <= MAX_LOOKUP_LAYERS {
        for (t, _) in &targets {
            // An error (a directory we may not read, ...) is the kernel's
            // to report, or not: the probe decides.
            match sys.resolve_in_layers(&layer_fds, t) {
                Ok(Some(r)) => found.push(r),
                Ok(None) | Err(_) => break,
            }
        }
    }
    if found.len() < targets.len() {
        found = probe(sys, lowers, [empty, empty2], root, &targets)?;
    }
    let mut stubs = Vec::new();
    for (r, (_, file)) in found.into_iter().zip(&targets) {
        if !r.missing.is_empty() {
            stubs.push(Stub { existing: r.existing, missing: r.missing, file: *file, ancestors: r.ancestors });
        }
    }
    for s in &stubs {
        sys.create_stub(stub.as_fd(), s)
            .map_err(prep_err(&s.existing.join(s.missing.join("/")).display().to_string()))?;
    }
    let mut layers: Vec<_> = lowers.iter().map(|f| f.as_fd()).collect();
    if !stubs.is_empty() {
        // Stub layer on top of the image (overlay takes base first).
        layers.push(stub.as_fd());
    } else if layers.is_empty() {
        layers.push(empty.as_fd());
    }
    let ov = sys.overlay(&layers, Some((upper.as_fd(), work.as_fd()))).map_err(overlay_err(&root_s))?;
    sys.attach_at(ov.as_fd(), root).map_err(mount_err("attach overlay", &root_s))?;

    Ok(())
}

/// Looks `targets` up in a read-only overlay of `lowers` mounted for it,
/// where [`super::layer_lookup`] cannot tell.
fn probe<S: Syscall>(
    sys: &S,
    lowers: &[OwnedFd],
    [empty, empty2]: [&OwnedFd; 2],
    root: &Path,
    targets: &[(&str, bool)],
) -> Result<Vec<Resolved>, SandboxError> {
    let mut layers: Vec<_> = lowers.iter().map(|f| f.as_fd()).collect();
    // A read-only overlay needs two layers; empty ones on top change nothing.
    if layers.len() < 2 {
        layers.push(empty.as_fd());
    }
    if layers.len() < 2 {
        layers.push(empty2.as_fd());
    }
    // Read-only (the upper dir is empty): unmounting an overlay that has an
    // upper dir syncs the upper filesystem, which costs tens of
    // milliseconds on a busy disk. The probe sits beside the root on the
    // scratch tmpfs and is never unmounted on its own: `pivot_root`
    // detaches it with the rest of the old root, in the same mount-table
    // change (one lazy unmount fewer per `RUN`).
    let probe_at = root.with_file_name(PROBE_DIR);
    let probe_s = probe_at.display().to_string();
    let probe = sys.overlay(&layers, None).map_err(overlay_err(&probe_s))?;
    sys.attach_at(probe.as_fd(), &probe_at).map_err(mount_err("attach overlay", &probe_s))?;
    drop(probe);
    targets.iter().map(|(t, _)| sys.resolve(&probe_at, t).map_err(prep_err(t))).collect()
}

/// A refused overlay mount is reported as [`SandboxError::OverlayRefused`],
/// which makes [`super::spawn`] retry with the copy fallback.
fn overlay_err(target: &str) -> impl FnOnce(std::io::Error) -> SandboxError {
    let target = target.to_string();
    move |source| {
        if super::copyfs::is_refusal(&source) {
            SandboxError::OverlayRefused { target, source }
        } else {
            SandboxError::Mount { step: "mount overlay", target, source }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::syscall::fake::Recorder;
    use super::super::{ExtraMount, Network};
    use super::*;

    fn spec() -> RunSpec {
        RunSpec {
            lowerdirs: vec!["/l0".into(), "/l1".into()],
            upperdir: "/up".into(),
            workdir: "/wk".into(),
            args: vec!["true".into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            hostname: "box".into(),
            network: Network::None,
            security: Default::default(),
            mounts: vec![ExtraMount { target: "/cache".into(), source: MountSource::Tmpfs { size: 0 } }],
            hosts: String::new(),
            resolv_conf: String::new(),
            rlimits: vec![],
            shm_size: 0,
            cgroup: None,
        }
    }

    fn position(calls: &[String], prefix: &str) -> usize {
        calls.iter().position(|c| c.starts_with(prefix)).unwrap_or_else(|| panic!("no `{prefix}` in {calls:#?}"))
    }

    #[test]
    fn order_without_stubs() {
        let rec = Recorder::default();
        setup(&rec, &spec(), None).unwrap();
        let calls = rec.calls.borrow();
        assert!(calls[0].starts_with("unshare"));
        assert_eq!(calls[1], "rprivate /");
        // Host paths are captured before the scratch tmpfs may hide them.
        assert!(position(&calls, "open /wk") < position(&calls, "attach_at /tmp"));
        assert!(position(&calls, "clone /dev/tty") < position(&calls, "attach_at /tmp"));
        // A read-only probe, then the real overlay, without the stub layer.
        let overlays: Vec<&String> = calls.iter().filter(|c| c.starts_with("overlay")).collect();
        assert_eq!(overlays, ["overlay layers=2 upper=false", "overlay layers=2 upper=true"]);
        assert!(!calls.iter().any(|c| c.starts_with("stub")));
        let proc = position(&calls, "attach /tmp/root /proc");
        let dev = position(&calls, "attach /tmp/root /dev");
        let null = position(&calls, "attach /tmp/root /dev/null");
        let cache = position(&calls, "attach /tmp/root /cache");
        let host = position(&calls, "hostname box");
        assert!(position(&calls, "attach_at /tmp/root") < proc);
        assert!(proc < dev && dev < null && null < cache && cache < host);
        assert_eq!(calls.last().unwrap(), "pivot_root /tmp/root");
    }

    #[test]
    fn missing_targets_go_to_a_stub_layer_and_remount() {
        let mut rec = Recorder::default();
        rec.missing.insert("etc/hosts".into());
        rec.missing.insert("cache".into());
        let mut s = spec();
        s.lowerdirs.clear();
        setup(&rec, &s, None).unwrap();
        let calls = rec.calls.borrow();
        let overlays: Vec<&String> = calls.iter().filter(|c| c.starts_with("overlay")).collect();
        // Scratch builds probe empty dirs, then mount the stub layer as the only lower.
        assert_eq!(overlays, ["overlay layers=2 upper=false", "overlay layers=1 upper=true"], "{calls:#?}");
        let stub_hosts = position(&calls, "stub etc + hosts file=true");
        let stub_cache = position(&calls, "stub  + cache file=false");
        let probe = position(&calls, "attach_at /tmp/probe");
        let second = calls.iter().rposition(|c| c.starts_with("overlay")).unwrap();
        assert!(probe < stub_hosts && probe < stub_cache, "stubs copy metadata from the mounted probe");
        assert!(stub_hosts < second && stub_cache < second);
        // The probe goes with the old root at pivot_root, not on its own.
        assert!(!calls.iter().any(|c| c.starts_with("unmount")), "{calls:#?}");
        assert_eq!(calls.last().unwrap(), "pivot_root /tmp/root");
    }

    #[test]
    fn targets_the_layers_answer_for_need_no_probe_mount() {
        let mut rec = Recorder::default();
        rec.layer_lookup = true;
        rec.missing.insert("etc/hosts".into());
        rec.missing.insert("proc".into());
        setup(&rec, &spec(), None).unwrap();
        let calls = rec.calls.borrow();
        let overlays: Vec<&String> = calls.iter().filter(|c| c.starts_with("overlay")).collect();
        // Only the root: image layers plus the stub layer, no read-only probe.
        assert_eq!(overlays, ["overlay layers=3 upper=true"], "{calls:#?}");
        assert!(!calls.iter().any(|c| c.contains("/tmp/probe")), "{calls:#?}");
        let lookup = position(&calls, "layer lookup layers=2 /etc/hosts");
        let stub = position(&calls, "stub etc + hosts file=true");
        assert!(lookup < stub && stub < position(&calls, "overlay layers=3"), "{calls:#?}");
        assert!(calls.iter().any(|c| c == "stub  + proc file=false"), "{calls:#?}");
    }

    #[test]
    fn deep_chains_are_probed_by_a_mount() {
        let mut rec = Recorder::default();
        rec.layer_lookup = true;
        let mut s = spec();
        s.lowerdirs = (0..=MAX_LOOKUP_LAYERS).map(|i| PathBuf::from(format!("/l{i}"))).collect();
        setup(&rec, &s, None).unwrap();
        let calls = rec.calls.borrow();
        assert!(!calls.iter().any(|c| c.starts_with("layer lookup")), "{calls:#?}");
        let n = MAX_LOOKUP_LAYERS + 1;
        let overlays: Vec<&String> = calls.iter().filter(|c| c.starts_with("overlay")).collect();
        assert_eq!(overlays, [&format!("overlay layers={n} upper=false"), &format!("overlay layers={n} upper=true")]);
    }

    #[test]
    fn refused_overlays_are_recognisable_across_the_error_pipe() {
        for errno in [libc::EPERM, libc::EINVAL, libc::ENODEV, libc::EOPNOTSUPP] {
            let e = overlay_err("/tmp/root")(std::io::Error::from_raw_os_error(errno));
            assert!(matches!(e, SandboxError::OverlayRefused { .. }));
            assert!(super::super::error_chain(&e).starts_with(super::super::OVERLAY_REFUSED));
        }
        let e = overlay_err("/tmp/root")(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert!(matches!(e, SandboxError::Mount { step: "mount overlay", .. }));
    }

    #[test]
    fn a_flattened_root_is_bound_instead_of_overlaid() {
        let rec = Recorder::default();
        setup(&rec, &spec(), Some(Path::new("/flat"))).unwrap();
        let calls = rec.calls.borrow();
        assert!(!calls.iter().any(|c| c.starts_with("overlay")), "{calls:#?}");
        // Captured before the scratch tmpfs may hide it, attached as the root.
        assert!(position(&calls, "clone /flat") < position(&calls, "attach_at /tmp"));
        assert!(position(&calls, "attach_at /tmp/root") < position(&calls, "attach /tmp/root /proc"));
        assert_eq!(calls.last().unwrap(), "pivot_root /tmp/root");
    }

    #[test]
    fn bind_selectors_are_resolved_inside_their_layers() {
        let rec = Recorder::default();
        let mut s = spec();
        let layers = |lowers: &[&str], readonly, selector: &str| MountSource::Overlay {
            lowerdirs: lowers.iter().map(PathBuf::from).collect(),
            readonly,
            selector: selector.into(),
        };
        s.mounts = vec![
            ExtraMount { target: "/ro".into(), source: layers(&["/ctx"], true, "hostroot/etc") },
            ExtraMount { target: "/rw".into(), source: layers(&["/s0", "/s1"], false, "/sub") },
            ExtraMount { target: "/all".into(), source: layers(&["/s0", "/s1"], true, "/") },
        ];
        setup(&rec, &s, None).unwrap();
        let calls = rec.calls.borrow();
        // A single read-only layer: resolved in it and cloned while host paths are captured.
        let ro = position(&calls, "clone_in /ctx `hostroot/etc` ro=true");
        let scratch = calls.iter().position(|c| c == "attach_at /tmp").unwrap();
        assert!(ro < scratch, "{calls:#?}");
        // Layers are merged on the scratch tmpfs (a writable one with its
        // upper dir there), and the selector resolved in the merged view.
        let rw_view = position(&calls, "attach_at /tmp/ovl1/view");
        let rw = position(&calls, "clone_in /tmp/ovl1/view `/sub` ro=false");
        assert!(scratch < rw_view && rw_view < rw, "{calls:#?}");
        assert!(calls.iter().any(|c| c == "mkdir upper"), "{calls:#?}");
        // The whole view needs no lookup.
        assert!(!calls.iter().any(|c| c.contains("/tmp/ovl2/view")), "{calls:#?}");
        let overlays: Vec<&String> = calls.iter().filter(|c| c.starts_with("overlay")).collect();
        assert_eq!(
            overlays,
            [
                "overlay layers=2 upper=true",
                "overlay layers=2 upper=false",
                "overlay layers=2 upper=false",
                "overlay layers=2 upper=true"
            ],
            "{calls:#?}"
        );
        assert!(position(&calls, "attach /tmp/root /all") > position(&calls, "attach /tmp/root /ro"));
    }

    #[test]
    fn sys_is_read_only_and_masks_come_after_every_mount() {
        let rec = Recorder::default();
        setup(&rec, &spec(), None).unwrap();
        let calls = rec.calls.borrow();
        let sysfs = position(&calls, "fs sysfs");
        let sys_at = position(&calls, "attach /tmp/root /sys");
        assert!(position(&calls, "attach /tmp/root /proc") < sysfs && sysfs < sys_at, "{calls:#?}");
        assert!(!calls.iter().any(|c| c == "clone /sys ro=true"), "sysfs mounted: no host bind");
        // Read-only and masked paths after the last extra mount, before pivot_root.
        let cache = position(&calls, "attach /tmp/root /cache");
        let ro = position(&calls, "open_in /tmp/root /proc/sys");
        let masked = position(&calls, "open_in /tmp/root /sys/firmware");
        let pivot = position(&calls, "pivot_root");
        assert!(cache < ro && ro < masked && masked < pivot);
        assert_eq!(calls[ro + 1..ro + 3], ["clone_fd ro=true", "attach_fd"]);
        assert_eq!(calls[masked + 1..masked + 3], ["clone /tmp/masked-dir ro=true", "attach_fd"]);
        for p in masks::READONLY.iter().chain(&masks::MASKED) {
            assert!(calls.contains(&format!("open_in /tmp/root {p}")), "{p} not handled");
        }
    }

    #[test]
    fn sys_of_a_foreign_network_namespace_is_the_hosts_bound_read_only() {
        let mut rec = Recorder::default();
        rec.refuse.insert("sysfs");
        setup(&rec, &spec(), None).unwrap();
        let calls = rec.calls.borrow();
        let bind = position(&calls, "clone /sys ro=true");
        assert!(position(&calls, "fs sysfs") < bind && bind < position(&calls, "attach /tmp/root /sys"));
    }

    #[test]
    fn insecure_has_no_masks_and_a_writable_sys() {
        let mut rec = Recorder::default();
        rec.refuse.insert("sysfs");
        let mut s = spec();
        s.security = Security::Insecure;
        setup(&rec, &s, None).unwrap();
        let calls = rec.calls.borrow();
        assert!(!calls.iter().any(|c| c.starts_with("open_in") || c.starts_with("attach_fd")), "{calls:#?}");
        assert!(calls.contains(&"clone /sys ro=false".to_string()));
    }

    #[test]
    fn relative_targets_are_rejected() {
        let rec = Recorder::default();
        let mut s = spec();
        s.mounts[0].target = "cache".into();
        assert!(matches!(setup(&rec, &s, None), Err(SandboxError::InvalidSpec(_))));
    }
}
