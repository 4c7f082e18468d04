//! Per-`RUN` cgroups where a writable cgroup v2 hierarchy with the `pids`
//! controller exists (real root on a pure v2 host, or a systemd-delegated
//! subtree given with `--cgroup-parent`).
//!
//! Layout: `<parent>/rbuild-<pid>/<step>`, where `<parent>` is
//! `--cgroup-parent` or rbuild's own cgroup. Each step cgroup gets a
//! `pids.max` (a fork bomb in a `RUN` stops there) and is emptied with
//! `cgroup.kill` when the step ends or is cancelled. The sandbox init joins
//! its step cgroup before forking pid 1, so everything the command starts is
//! inside.
//!
//! cgroup v2's "no internal processes" rule means the parent must be able
//! to enable `pids` for its children: true for the root cgroup and for an
//! empty delegated cgroup, not for a cgroup holding rbuild itself next to
//! other processes. Where that fails, or on hosts whose controllers are
//! bound to cgroup v1 (hybrid mode), [`CgroupRoot::create`] says why and
//! the build continues with rlimits only.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `pids.max` of a step cgroup. BuildKit sets none; podman's default is
/// 2048, which parallel builds (`make -j`, test runners) can reach.
pub const DEFAULT_PIDS_MAX: u64 = 4096;

/// Why per-`RUN` cgroups are not available.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup2 file system is mounted.
    #[error("no cgroup v2 hierarchy is mounted (cgroup v1 only)")]
    NoV2,
    /// rbuild's cgroup could not be read.
    #[error("cannot read `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The `pids` controller is not available in the parent.
    #[error(
        "the cgroup v2 hierarchy has no `pids` controller at `{}` (controllers: `{controllers}`; on hybrid hosts they are bound to cgroup v1)",
        path.display()
    )]
    NoPids {
        /// The parent cgroup.
        path: PathBuf,
        /// What it offers.
        controllers: String,
    },
    /// A cgroup file could not be written or a directory created.
    #[error("cannot {step} `{}`", path.display())]
    Write {
        /// What was attempted.
        step: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `--cgroup-parent` is not an absolute cgroup path.
    #[error("`--cgroup-parent` must be an absolute cgroup path such as `/user.slice/build`, not `{0}`")]
    Parent(String),
}

/// The cgroup of one build, under which each `RUN` gets its own.
#[derive(Debug)]
pub struct CgroupRoot {
    dir: PathBuf,
    pids_max: u64,
    next: AtomicU64,
}

impl CgroupRoot {
    /// Creates `<parent>/rbuild-<pid>`, enabling `pids` for its children.
    pub fn create(parent: Option<&str>) -> Result<CgroupRoot, CgroupError> {
        let mountinfo = PathBuf::from("/proc/self/mountinfo");
        let text =
            std::fs::read_to_string(&mountinfo).map_err(|source| CgroupError::Read { path: mountinfo, source })?;
        let mount = v2_mount(&text).ok_or(CgroupError::NoV2)?;
        let rel = match parent {
            Some(p) if p.starts_with('/') => p.to_string(),
            Some(p) => return Err(CgroupError::Parent(p.to_string())),
            None => {
                let own = PathBuf::from("/proc/self/cgroup");
                let t = std::fs::read_to_string(&own).map_err(|source| CgroupError::Read { path: own, source })?;
                own_v2_cgroup(&t).ok_or(CgroupError::NoV2)?.to_string()
            }
        };
        let rel = rel.trim_start_matches('/');
        let parent = if rel.is_empty() { mount } else { mount.join(rel) };
        let controllers = read_trim(&parent.join("cgroup.controllers"))?;
        if !controllers.split_whitespace().any(|c| c == "pids") {
            return Err(CgroupError::NoPids { path: parent, controllers });
        }
        enable_pids(&parent)?;
        let dir = parent.join(format!("rbuild-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(write_err("create", &dir))?;
        let root = CgroupRoot { dir, pids_max: DEFAULT_PIDS_MAX, next: AtomicU64::new(0) };
        enable_pids(&root.dir)?;
        Ok(root)
    }

    /// A fresh cgroup for one step, with `pids.max` set.
    pub fn step(&self) -> Result<StepCgroup, CgroupError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(format!("step{n}"));
        std::fs::create_dir(&dir).map_err(write_err("create", &dir))?;
        let step = StepCgroup { dir };
        let max = step.dir.join("pids.max");
        std::fs::write(&max, self.pids_max.to_string()).map_err(write_err("write", &max))?;
        Ok(step)
    }
}

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The cgroup of one running step; killed and removed when dropped.
#[derive(Debug)]
pub struct StepCgroup {
    dir: PathBuf,
}

impl StepCgroup {
    /// The directory, which the sandbox init joins ([`super::RunSpec::cgroup`]).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Kills every process in the cgroup (`cgroup.kill`, Linux 5.14+).
    pub fn kill(&self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
    }
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        self.kill();
        // The kill is asynchronous: the directory is busy until the last
        // process is gone.
        let started = Instant::now();
        while std::fs::remove_dir(&self.dir).is_err() && started.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Moves the calling process into `cgroup` (in the sandbox init, before it
/// forks pid 1).
pub(crate) fn join(cgroup: &Path) -> std::io::Result<()> {
    std::fs::write(cgroup.join("cgroup.procs"), "0")
}

fn write_err(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Write { step, path, source }
}

fn read_trim(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| CgroupError::Read { path: path.to_path_buf(), source })
}

fn enable_pids(dir: &Path) -> Result<(), CgroupError> {
    let ctl = dir.join("cgroup.subtree_control");
    if read_trim(&ctl)?.split_whitespace().any(|c| c == "pids") {
        return Ok(());
    }
    std::fs::write(&ctl, "+pids").map_err(write_err("enable `pids` in", &ctl))
}

/// Mount point of the cgroup2 file system, from `/proc/self/mountinfo`.
fn v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let point = pre.split_whitespace().nth(4)?;
        (post.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(point))
    })
}

/// rbuild's cgroup v2 path (`0::/path` in `/proc/self/cgroup`).
fn own_v2_cgroup(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v2_mount_on_pure_and_hybrid_hosts() {
        let hybrid = "35 25 0:30 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                      36 35 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                      37 35 0:32 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
        assert_eq!(v2_mount(hybrid), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let v1 = "37 35 0:32 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
        assert_eq!(v2_mount(v1), None);
        assert_eq!(own_v2_cgroup("4:memory:/x\n0::/user.slice/a.scope\n"), Some("/user.slice/a.scope"));
        assert_eq!(own_v2_cgroup("4:memory:/x\n"), None);
    }

    #[test]
    fn relative_cgroup_parent_is_refused() {
        // Refused before anything is created, wherever cgroup2 is mounted.
        match CgroupRoot::create(Some("build")) {
            Err(CgroupError::Parent(p)) => assert_eq!(p, "build"),
            Err(CgroupError::NoV2) => {}
            other => panic!("{other:?}"),
        }
    }
}
