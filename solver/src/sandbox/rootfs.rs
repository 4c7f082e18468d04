//! Building a `RUN`'s root filesystem, from host paths to `pivot_root`.
//!
//! Order matters, and is unit-tested with the recording fake:
//! 1. private mount namespace, nothing propagates to the host;
//! 2. every host path (layers, bind sources, device nodes) is captured as a
//!    descriptor first, so later mounts cannot hide or swap them;
//! 3. a scratch tmpfs is attached at a fixed place: it holds the root mount
//!    point, an empty layer, the stub layer and the `hosts`/`resolv.conf`
//!    sources — none of it ever touches the upper dir;
//! 4. a read-only view of the layers is mounted to look the mount targets
//!    up; targets missing from the image (`/proc`, `/etc/hosts`, a cache
//!    mount's directory, ...) are created in a *stub layer* on the scratch
//!    tmpfs placed above the image layers, then the real overlay (with the
//!    upper dir) is mounted, so mount points leave no trace in the upper dir
//!    (BuildKit instead deletes its "mount stubs" after the run);
//! 5. `/proc`, `/dev`, hosts files, the extra mounts in order, all attached
//!    through descriptors resolved *inside* the root (symlinks in the image
//!    cannot point a mount at the host);
//! 6. host name, then `pivot_root`.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::mount::MountAttrFlags;
use rustix::thread::UnshareFlags;

use super::syscall::Syscall;
use super::{MountSource, RunSpec, SandboxError};

/// Where the init attaches its scratch tmpfs (in its own private mount
/// namespace, after every host path has been captured, so hiding what is
/// there is harmless).
pub(crate) const SCRATCH_AT: &str = "/tmp";

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
}

enum Source {
    Ready(OwnedFd),
    /// A writable overlay whose upper dir lives on the scratch tmpfs: built
    /// once the scratch exists.
    RwOverlay(Vec<OwnedFd>),
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
    let mut extra = Vec::with_capacity(spec.mounts.len());
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
            MountSource::Overlay { lowerdirs, readonly } => {
                if lowerdirs.is_empty() {
                    return Err(SandboxError::InvalidSpec(format!("overlay mount at `{}` has no layers", m.target)));
                }
                if *readonly && lowerdirs.len() == 1 {
                    Source::Ready(sys.clone_tree(&lowerdirs[0], true).map_err(mount_err("bind-mount", &m.target))?)
                } else {
                    let fds = lowerdirs.iter().map(|p| open(p)).collect::<Result<Vec<_>, _>>()?;
                    if *readonly {
                        let refs: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
                        Source::Ready(sys.overlay(&refs, None).map_err(overlay_err(&m.target))?)
                    } else {
                        Source::RwOverlay(fds)
                    }
                }
            }
        };
        extra.push(src);
    }
    let mut nodes = Vec::with_capacity(DEV_NODES.len());
    for n in DEV_NODES {
        let host = Path::new("/dev").join(n);
        nodes.push(sys.clone_tree(&host, false).map_err(mount_err("bind-mount", &host.display().to_string()))?);
    }

    // 3. Scratch tmpfs.
    let scratch_at = Path::new(SCRATCH_AT);
    let scratch = sys
        .fs_mount("tmpfs", &[("mode", "0700")], MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV)
        .map_err(mount_err("mount tmpfs", SCRATCH_AT))?;
    for d in ["root", "empty", "empty2", "stub"] {
        sys.mkdir_at(scratch.as_fd(), d, 0o755).map_err(prep_err(d))?;
    }
    sys.write_at(scratch.as_fd(), "hosts", spec.hosts.as_bytes()).map_err(prep_err("hosts"))?;
    sys.write_at(scratch.as_fd(), "resolv.conf", spec.resolv_conf.as_bytes()).map_err(prep_err("resolv.conf"))?;
    let empty = sys.open_at(scratch.as_fd(), "empty").map_err(prep_err("empty"))?;
    let empty2 = sys.open_at(scratch.as_fd(), "empty2").map_err(prep_err("empty2"))?;
    let stub = sys.open_at(scratch.as_fd(), "stub").map_err(prep_err("stub"))?;
    sys.attach_at(scratch.as_fd(), scratch_at).map_err(mount_err("attach scratch tmpfs", SCRATCH_AT))?;
    let root = scratch_at.join("root");
    let root_s = root.display().to_string();

    // 4. Overlay root, then stubs if needed (or the flattened copy).
    if let Some(flat) = &flat {
        sys.attach_at(flat.as_fd(), &root).map_err(mount_err("attach root", &root_s))?;
    } else {
        overlay_root(sys, spec, &extra, &lowers, [&empty, &empty2, &stub], (&upper, &work), &root)?;
    }
    drop((upper, work));
    // 5. Pseudo filesystems, hosts files, extra mounts.
    let attach = |fd: &OwnedFd, target: &str, step: &'static str| {
        sys.attach_in(fd.as_fd(), &root, target).map_err(mount_err(step, target))
    };
    let nosuid = MountAttrFlags::MOUNT_ATTR_NOSUID;
    let proc = sys
        .fs_mount("proc", &[], nosuid | MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOEXEC)
        .map_err(mount_err("mount proc", "/proc"))?;
    attach(&proc, "/proc", "attach proc")?;
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
    for (i, (m, src)) in spec.mounts.iter().zip(extra).enumerate() {
        let fd = match src {
            Source::Ready(fd) => fd,
            Source::RwOverlay(fds) => {
                let dir = format!("ovl{i}");
                sys.mkdir_at(scratch.as_fd(), &dir, 0o755).map_err(prep_err(&dir))?;
                let d = sys.open_at(scratch.as_fd(), &dir).map_err(prep_err(&dir))?;
                sys.mkdir_at(d.as_fd(), "upper", 0o755).map_err(prep_err(&dir))?;
                sys.mkdir_at(d.as_fd(), "work", 0o755).map_err(prep_err(&dir))?;
                let u = sys.open_at(d.as_fd(), "upper").map_err(prep_err(&dir))?;
                let w = sys.open_at(d.as_fd(), "work").map_err(prep_err(&dir))?;
                let refs: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
                sys.overlay(&refs, Some((u.as_fd(), w.as_fd()))).map_err(overlay_err(&m.target))?
            }
        };
        attach(&fd, &m.target, "attach mount")?;
    }

    // 6. Host name and pivot_root.
    if !spec.hostname.is_empty() {
        sys.sethostname(&spec.hostname).map_err(|e| SandboxError::Hostname(spec.hostname.clone(), e))?;
    }
    sys.pivot_root(&root).map_err(SandboxError::PivotRoot)?;
    Ok(())
}

/// Mounts the overlay root at `root`, with a stub layer for missing mount points.
fn overlay_root<S: Syscall>(
    sys: &S,
    spec: &RunSpec,
    extra: &[Source],
    lowers: &[OwnedFd],
    [empty, empty2, stub]: [&OwnedFd; 3],
    (upper, work): (&OwnedFd, &OwnedFd),
    root: &Path,
) -> Result<(), SandboxError> {
    let root_s = root.display().to_string();
    let mut layers: Vec<_> = lowers.iter().map(|f| f.as_fd()).collect();
    // A read-only overlay needs two layers; empty ones on top change nothing.
    if layers.len() < 2 {
        layers.push(empty.as_fd());
    }
    if layers.len() < 2 {
        layers.push(empty2.as_fd());
    }
    // Probe with a read-only view of the layers (the upper dir is empty):
    // unmounting an overlay that has an upper dir syncs the upper
    // filesystem, which costs tens of milliseconds on a busy disk.
    let probe = sys.overlay(&layers, None).map_err(overlay_err(&root_s))?;
    sys.attach_at(probe.as_fd(), root).map_err(mount_err("attach overlay", &root_s))?;
    drop(probe);
    let mut targets: Vec<(&str, bool)> =
        vec![("/proc", false), ("/dev", false), ("/etc/hosts", true), ("/etc/resolv.conf", true)];
    for (m, src) in spec.mounts.iter().zip(extra) {
        let file = match src {
            Source::Ready(fd) => !sys.is_dir(fd.as_fd()).map_err(prep_err(&m.target))?,
            Source::RwOverlay(_) => false,
        };
        targets.push((m.target.as_str(), file));
    }
    let mut stubs = Vec::new();
    for (t, file) in &targets {
        let r = sys.resolve(root, t).map_err(prep_err(t))?;
        if !r.missing.is_empty() {
            stubs.push(Stub { existing: r.existing, missing: r.missing, file: *file });
        }
    }
    for s in &stubs {
        sys.create_stub(stub.as_fd(), root, s)
            .map_err(prep_err(&s.existing.join(s.missing.join("/")).display().to_string()))?;
    }
    sys.unmount(root).map_err(mount_err("unmount", &root_s))?;
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
        let unmount = position(&calls, "unmount /tmp/root");
        assert!(stub_hosts < unmount && stub_cache < unmount, "stubs copy metadata from the mounted root");
        let second = calls.iter().rposition(|c| c.starts_with("overlay")).unwrap();
        assert!(unmount < second);
        assert_eq!(calls.last().unwrap(), "pivot_root /tmp/root");
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
    fn relative_targets_are_rejected() {
        let rec = Recorder::default();
        let mut s = spec();
        s.mounts[0].target = "cache".into();
        assert!(matches!(setup(&rec, &s, None), Err(SandboxError::InvalidSpec(_))));
    }
}
