//! Docker's masked and read-only paths of `/proc` and `/sys`.
//!
//! A `RUN` sees the same kernel interfaces a `docker run` container does
//! (moby `daemon/pkg/oci/defaults.go`, `MaskedPaths` and `ReadonlyPaths`):
//! - masked: an empty read-only file is bound over a file, an empty
//!   read-only directory over a directory (runc binds `/dev/null` over files,
//!   which reads the same but swallows writes; ours refuses them);
//! - read-only: the path is bound onto itself read-only, recursively.
//!
//! This matters most as real root: container root is host uid 0 there, and
//! `/proc/sys` files are writable by uid 0 whatever the capabilities, so a
//! writable `/proc/sys/kernel/core_pattern` would run code as host root.
//! Paths missing on this kernel are skipped. Every path is resolved inside
//! the container's root, so an image whose `/proc` or `/sys` is a symlink
//! cannot point a mask at the host. Masks come after every other mount: a
//! `RUN --mount` cannot cover one up.

use std::os::fd::AsFd;
use std::path::Path;

use super::SandboxError;
use super::syscall::Syscall;

/// Paths Docker masks (the `thermal_throttle` directory of each CPU is added
/// by [`masked_paths`]).
pub(crate) const MASKED: [&str; 12] = [
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
];

/// Paths Docker makes read-only.
pub(crate) const READONLY: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Host file listing the CPUs the kernel may ever bring up (`0-3,8`).
pub(crate) const POSSIBLE_CPUS: &str = "/sys/devices/system/cpu/possible";

/// [`MASKED`] plus `/sys/devices/system/cpu/cpuN/thermal_throttle` for each
/// CPU of `possible` (the text of [`POSSIBLE_CPUS`]); moby masks those too
/// (GHSA-6fw5-f8r9-fgfm: their interrupt counters leak host activity).
pub(crate) fn masked_paths(possible: &str) -> Vec<String> {
    let mut out: Vec<String> = MASKED.iter().map(|p| p.to_string()).collect();
    for range in possible.trim().split(',').filter(|r| !r.is_empty()) {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        let (Ok(lo), Ok(hi)) = (lo.trim().parse::<u32>(), hi.trim().parse::<u32>()) else { continue };
        // A corrupt file must not make pid 1 loop for long.
        for cpu in lo..=hi.min(lo.saturating_add(8192)) {
            out.push(format!("/sys/devices/system/cpu/cpu{cpu}/thermal_throttle"));
        }
    }
    out
}

/// The top-most mounts strictly below `under` in a `/proc/self/mountinfo`
/// text: where the host's `/sys` is bound (recursively: the kernel allows
/// nothing else in a user namespace), its sub-mounts (cgroups, debugfs,
/// tracefs, bpf, ...) are masked too, so `/sys` shows what a fresh sysfs
/// shows: their mount points are empty directories of sysfs.
pub(crate) fn sub_mounts(mountinfo: &str, under: &str) -> Vec<String> {
    let prefix = format!("{}/", under.trim_end_matches('/'));
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort();
    points.dedup();
    // Sorted, a mount's descendants follow it; covering it hides them.
    let mut top: Vec<String> = Vec::new();
    for p in points {
        if !top.last().is_some_and(|t| p.starts_with(&format!("{t}/"))) {
            top.push(p);
        }
    }
    top
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mask_err(step: &'static str, target: &str) -> impl FnOnce(std::io::Error) -> SandboxError {
    let target = target.to_string();
    move |source| SandboxError::Mount { step, target, source }
}

/// Makes [`READONLY`] read-only and masks `masked` inside `root`.
/// `empty_file` and `empty_dir` are empty, read-only-bound placeholders.
pub(crate) fn apply<S: Syscall>(
    sys: &S,
    root: &Path,
    masked: &[String],
    empty_file: &Path,
    empty_dir: &Path,
) -> Result<(), SandboxError> {
    for p in READONLY {
        let Some(at) = sys.open_in(root, p).map_err(mask_err("look up", p))? else { continue };
        let ro = sys.clone_fd(at.as_fd(), true).map_err(mask_err("bind read-only", p))?;
        sys.attach_fd(ro.as_fd(), at.as_fd()).map_err(mask_err("bind read-only", p))?;
    }
    for p in masked {
        let Some(at) = sys.open_in(root, p).map_err(mask_err("look up", p))? else { continue };
        let dir = sys.is_dir(at.as_fd()).map_err(mask_err("look up", p))?;
        let cover = sys.clone_tree(if dir { empty_dir } else { empty_file }, true).map_err(mask_err("mask", p))?;
        sys.attach_fd(cover.as_fd(), at.as_fd()).map_err(mask_err("mask", p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::syscall::fake::Recorder;
    use super::*;

    #[test]
    fn thermal_throttle_of_each_possible_cpu_is_masked() {
        let p = masked_paths("0-2,5\n");
        assert_eq!(p.len(), MASKED.len() + 4);
        assert_eq!(p[MASKED.len()], "/sys/devices/system/cpu/cpu0/thermal_throttle");
        assert_eq!(p.last().unwrap(), "/sys/devices/system/cpu/cpu5/thermal_throttle");
        assert_eq!(masked_paths("").len(), MASKED.len());
        assert_eq!(masked_paths("garbage,3-x").len(), MASKED.len());
    }

    #[test]
    fn sub_mounts_of_sys_are_the_top_most_ones() {
        let mi = "22 1 0:21 / /sys rw - sysfs sysfs rw\n\
                  25 22 0:23 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                  26 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw\n\
                  30 22 0:30 / /sys/kernel/debug rw - debugfs debugfs rw\n\
                  31 1 0:31 / /system rw - tmpfs tmpfs rw\n\
                  32 22 0:32 / /sys/odd\\040name rw - tmpfs tmpfs rw\n";
        assert_eq!(sub_mounts(mi, "/sys"), ["/sys/fs/cgroup", "/sys/kernel/debug", "/sys/odd name"]);
        assert!(sub_mounts("", "/sys").is_empty());
    }

    #[test]
    fn readonly_binds_onto_itself_and_masks_pick_file_or_dir() {
        let mut rec = Recorder::default();
        rec.missing.insert("proc/sysrq-trigger".into());
        rec.missing.insert("proc/kcore".into());
        rec.files.insert("proc/keys".into());
        let masked = vec!["/proc/kcore".to_string(), "/proc/keys".into(), "/sys/firmware".into()];
        apply(&rec, Path::new("/r"), &masked, Path::new("/s/file"), Path::new("/s/dir")).unwrap();
        let calls = rec.calls.borrow();
        let i = calls.iter().position(|c| c == "open_in /r /proc/sys").unwrap();
        assert_eq!(calls[i + 1..i + 3], ["clone_fd ro=true", "attach_fd"], "{calls:#?}");
        // Missing paths are skipped, not created.
        assert!(calls.iter().filter(|c| c.contains("sysrq") || c.contains("kcore")).all(|c| c.starts_with("open_in")));
        let keys = calls.iter().position(|c| c == "open_in /r /proc/keys").unwrap();
        assert_eq!(calls[keys + 1..keys + 3], ["clone /s/file ro=true", "attach_fd"]);
        let fw = calls.iter().position(|c| c == "open_in /r /sys/firmware").unwrap();
        assert_eq!(calls[fw + 1..fw + 3], ["clone /s/dir ro=true", "attach_fd"]);
        // Read-only paths first, as runc does.
        assert!(calls.iter().position(|c| c == "open_in /r /proc/sys").unwrap() < keys);
    }
}
