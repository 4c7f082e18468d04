//! The process-wide user namespace and its id mapping.
//!
//! Kernel ordering rules this code relies on:
//! - `unshare(CLONE_NEWUSER)` is refused in a multi-threaded process, so this
//!   must run before any thread (tokio, rayon) starts.
//! - The new namespace's `uid_map`/`gid_map` can only be written once, and a
//!   map covering more than the caller's own id must be written by a process
//!   *outside* the namespace that holds the capability there (real root), or
//!   by the setuid `newuidmap`/`newgidmap` helpers. So a helper child is
//!   forked *before* `unshare`, waits on a pipe, writes the maps for its
//!   parent, and exits.
//! - An unprivileged single-id `gid_map` may only be written after
//!   `setgroups` has been set to `deny`.
//! - Ids only become usable after the maps exist: `setresgid`/`setresuid(0)`
//!   come last.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::SandboxError;
use super::syscall::{Linux, Syscall};

/// Environment marker: set once the process is inside its user namespace
/// (value: the JSON of the [`IdMapping`]); makes [`init_process`] idempotent
/// and tells re-executed children which mapping is in force.
pub(crate) const USERNS_ENV: &str = "RBUILD_USERNS";

/// One `uid_map`/`gid_map` line: first container id, first host id, count.
type MapLine = (u32, u32, u32);

/// How container ids map to host ids in the process-wide user namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdMapping {
    /// Real root: ids 0..2^32-1 map to themselves.
    Full,
    /// Container root is the invoking user; container ids `1..=count` map to
    /// the subordinate ranges from `/etc/subuid` and `/etc/subgid`.
    SubIds {
        /// Host uid of container root.
        uid: u32,
        /// Host gid of container root.
        gid: u32,
        /// First host uid of the subordinate range (container uid 1).
        sub_uid_start: u32,
        /// Number of subordinate uids.
        sub_uid_count: u32,
        /// First host gid of the subordinate range (container gid 1).
        sub_gid_start: u32,
        /// Number of subordinate gids.
        sub_gid_count: u32,
    },
    /// Only container root exists: it maps to the invoking user.
    Single {
        /// Host uid of container root.
        uid: u32,
        /// Host gid of container root.
        gid: u32,
    },
}

impl IdMapping {
    /// A one-line human description, saying what cannot be represented.
    pub fn describe(&self) -> String {
        match self {
            IdMapping::Full => "real root: all uids and gids map to themselves".to_string(),
            IdMapping::SubIds { uid, gid, sub_uid_start, sub_uid_count, sub_gid_start, sub_gid_count } => {
                format!(
                    "rootless: container root is host {uid}:{gid}; container uids 1-{sub_uid_count} map to host uids {sub_uid_start}-{}, gids 1-{sub_gid_count} to host gids {sub_gid_start}-{}; files owned by higher ids cannot be represented",
                    u64::from(*sub_uid_start) + u64::from(*sub_uid_count) - 1,
                    u64::from(*sub_gid_start) + u64::from(*sub_gid_count) - 1,
                )
            }
            IdMapping::Single { uid, gid } => format!(
                "rootless with a single id: container root is host {uid}:{gid}; no other uid or gid exists, so files owned by non-root users cannot be represented (add a range for this user to /etc/subuid and /etc/subgid and install newuidmap/newgidmap)"
            ),
        }
    }

    /// Whether a file can be given owner `uid:gid` (container ids) in this namespace.
    pub fn can_chown(&self, uid: u32, gid: u32) -> bool {
        match self {
            IdMapping::Full => true,
            IdMapping::SubIds { sub_uid_count, sub_gid_count, .. } => uid <= *sub_uid_count && gid <= *sub_gid_count,
            IdMapping::Single { .. } => uid == 0 && gid == 0,
        }
    }

    /// The `uid_map` and `gid_map` lines (`inside outside count`).
    fn map_lines(&self) -> (Vec<MapLine>, Vec<MapLine>) {
        match *self {
            IdMapping::Full => (vec![(0, 0, u32::MAX)], vec![(0, 0, u32::MAX)]),
            IdMapping::SubIds { uid, gid, sub_uid_start, sub_uid_count, sub_gid_start, sub_gid_count } => (
                vec![(0, uid, 1), (1, sub_uid_start, sub_uid_count)],
                vec![(0, gid, 1), (1, sub_gid_start, sub_gid_count)],
            ),
            IdMapping::Single { uid, gid } => (vec![(0, uid, 1)], vec![(0, gid, 1)]),
        }
    }
}

/// Must be the first thing `main` calls, before any thread exists.
///
/// If this process is the sandbox zygote (see [`super::spawn`]), runs it
/// and never returns. Otherwise moves the process into one user namespace
/// and a private mount namespace, becomes container root and returns the
/// mapping in force. Calling it again (or in a child that inherited the
/// environment marker) does nothing but return the mapping.
pub fn init_process() -> Result<IdMapping, SandboxError> {
    if std::env::var_os(super::zygote::ZYGOTE_ENV).is_some() {
        super::zygote::run_zygote();
    }
    if let Some(v) = std::env::var_os(USERNS_ENV) {
        return serde_json::from_str(&v.to_string_lossy()).map_err(SandboxError::SpecCodec);
    }
    let threads = thread_count()?;
    if threads > 1 {
        return Err(SandboxError::Threaded(threads));
    }
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let planned =
        choose_mapping(uid, gid, Path::new("/etc/passwd"), Path::new("/etc/subuid"), Path::new("/etc/subgid"))?;
    let mapping = enter(planned)?;
    let json = serde_json::to_string(&mapping).map_err(SandboxError::SpecCodec)?;
    // SAFETY: we checked above that this process has a single thread, so no
    // other thread can be reading the environment concurrently.
    unsafe { std::env::set_var(USERNS_ENV, json) };
    Ok(mapping)
}

fn thread_count() -> Result<usize, SandboxError> {
    let path = PathBuf::from("/proc/self/status");
    let status = std::fs::read_to_string(&path).map_err(|source| SandboxError::ReadHostFile { path, source })?;
    Ok(status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok()).unwrap_or(1))
}

/// Picks the best mapping the host allows for `uid:gid`.
fn choose_mapping(uid: u32, gid: u32, passwd: &Path, subuid: &Path, subgid: &Path) -> Result<IdMapping, SandboxError> {
    if uid == 0 {
        return Ok(IdMapping::Full);
    }
    let name = read_optional(passwd)?
        .and_then(|text| {
            text.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 3 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_default();
    let subu = read_optional(subuid)?.and_then(|t| find_subid_range(&t, &name, uid));
    let subg = read_optional(subgid)?.and_then(|t| find_subid_range(&t, &name, uid));
    match (subu, subg, find_helper("newuidmap"), find_helper("newgidmap")) {
        (Some((us, uc)), Some((gs, gc)), Some(_), Some(_)) => Ok(IdMapping::SubIds {
            uid,
            gid,
            sub_uid_start: us,
            sub_uid_count: uc,
            sub_gid_start: gs,
            sub_gid_count: gc,
        }),
        _ => Ok(IdMapping::Single { uid, gid }),
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, SandboxError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SandboxError::ReadHostFile { path: path.to_path_buf(), source }),
    }
}

/// First `name:start:count` (or `uid:start:count`) line of a subid file.
fn find_subid_range(text: &str, name: &str, uid: u32) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.trim().split(':').collect();
        if f.len() != 3 || f[0].starts_with('#') {
            return None;
        }
        if (!name.is_empty() && f[0] == name) || f[0] == uid.to_string() {
            let start: u32 = f[1].parse().ok()?;
            let count: u32 = f[2].parse().ok()?;
            (count > 0 && start.checked_add(count - 1).is_some()).then_some((start, count))
        } else {
            None
        }
    })
}

fn find_helper(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_else(|_| super::DEFAULT_PATH.to_string());
    path.split(':')
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// What the map-writing helper reports back through its pipe.
const HELPER_OK: &str = "ok";
const HELPER_SINGLE: &str = "single";

/// Forks the map helper, unshares, lets the helper write the maps, becomes root.
fn enter(planned: IdMapping) -> Result<IdMapping, SandboxError> {
    let pipe_err = |e| SandboxError::Pipe(e);
    let (mut go_r, mut go_w) = std::io::pipe().map_err(pipe_err)?;
    let (mut res_r, mut res_w) = std::io::pipe().map_err(pipe_err)?;
    let parent = rustix::process::getpid().as_raw_nonzero().get();
    // SAFETY: the process is single-threaded (checked by the caller), so the
    // child is a faithful copy that may allocate and run arbitrary code; it
    // leaves with `_exit` and never returns into the caller's stack.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SandboxError::Fork { what: "the id-map helper", source: std::io::Error::last_os_error() });
    }
    if pid == 0 {
        drop(go_w);
        drop(res_r);
        let mut byte = [0u8; 1];
        let report = match go_r.read(&mut byte) {
            Ok(1) => match write_maps(parent, &planned) {
                Ok(single) => {
                    if single {
                        HELPER_SINGLE.to_string()
                    } else {
                        HELPER_OK.to_string()
                    }
                }
                Err(e) => e.to_string(),
            },
            // The parent gave up (unshare failed): nothing to do.
            _ => String::new(),
        };
        let _ = res_w.write_all(report.as_bytes());
        drop(res_w);
        // SAFETY: `_exit` skips the parent's atexit handlers and destructors,
        // which must not run twice.
        unsafe { libc::_exit(0) };
    }
    drop(go_r);
    drop(res_w);
    let unshared = Linux.unshare(rustix::thread::UnshareFlags::NEWUSER | rustix::thread::UnshareFlags::NEWNS);
    if unshared.is_ok() {
        go_w.write_all(&[1]).map_err(pipe_err)?;
    }
    drop(go_w);
    let mut report = String::new();
    let read = res_r.read_to_string(&mut report);
    reap(pid);
    unshared.map_err(|source| SandboxError::Unshare { what: "user and mount", source })?;
    read.map_err(pipe_err)?;
    let mapping = match report.as_str() {
        HELPER_OK => planned,
        HELPER_SINGLE => match planned {
            IdMapping::SubIds { uid, gid, .. } => IdMapping::Single { uid, gid },
            other => other,
        },
        _ => return Err(SandboxError::IdMap { mapping: planned.describe(), detail: report }),
    };
    become_root(&mapping)?;
    // Mounts made from now on (overlays of the solver, sandboxes) must never
    // propagate back into the host's mount namespace.
    Linux.make_rprivate(Path::new("/")).map_err(|source| SandboxError::Mount {
        step: "make mounts private",
        target: "/".into(),
        source,
    })?;
    Ok(mapping)
}

fn reap(pid: libc::pid_t) {
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid on our own child with a valid out pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Why the id-map helper could not map the new namespace (sent to the
/// parent as text through a pipe).
#[derive(Debug, thiserror::Error)]
enum MapError {
    /// Writing `/proc/<pid>/<file>` failed.
    #[error("writing {file}: {source}")]
    Write { file: &'static str, source: std::io::Error },
    /// `newuidmap`/`newgidmap` could not be started.
    #[error("running {helper}: {source}")]
    Run { helper: &'static str, source: std::io::Error },
    /// `newuidmap`/`newgidmap` failed.
    #[error("{helper} failed ({status}): {stderr}")]
    Helper { helper: &'static str, status: std::process::ExitStatus, stderr: String },
}

/// Runs in the helper (outside the namespace). `Ok(true)` means it fell back to a single id.
fn write_maps(pid: i32, mapping: &IdMapping) -> Result<bool, MapError> {
    let (uids, gids) = mapping.map_lines();
    let text = |lines: &[MapLine]| lines.iter().map(|(a, b, c)| format!("{a} {b} {c}\n")).collect::<String>();
    let write = |file: &'static str, data: &str| {
        std::fs::write(format!("/proc/{pid}/{file}"), data).map_err(|source| MapError::Write { file, source })
    };
    match mapping {
        IdMapping::Full => {
            write("uid_map", &text(&uids))?;
            write("gid_map", &text(&gids))?;
            Ok(false)
        }
        IdMapping::Single { .. } => {
            write("setgroups", "deny")?;
            write("uid_map", &text(&uids))?;
            write("gid_map", &text(&gids))?;
            Ok(false)
        }
        IdMapping::SubIds { uid, gid, .. } => {
            let run = |helper: &'static str, lines: &[MapLine]| -> Result<(), MapError> {
                let mut cmd = Command::new(find_helper(helper).unwrap_or_else(|| PathBuf::from(helper)));
                cmd.arg(pid.to_string());
                for (a, b, c) in lines {
                    cmd.args([a.to_string(), b.to_string(), c.to_string()]);
                }
                let out = cmd.output().map_err(|source| MapError::Run { helper, source })?;
                if out.status.success() {
                    Ok(())
                } else {
                    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    Err(MapError::Helper { helper, status: out.status, stderr })
                }
            };
            if run("newuidmap", &uids).is_err() {
                // Nothing is written yet, so a single-id mapping is still possible.
                let single = IdMapping::Single { uid: *uid, gid: *gid };
                write_maps(pid, &single)?;
                return Ok(true);
            }
            run("newgidmap", &gids)?;
            Ok(false)
        }
    }
}

fn become_root(mapping: &IdMapping) -> Result<(), SandboxError> {
    let root_err =
        |source: rustix::io::Errno| SandboxError::SetIds { what: "container root".into(), source: source.into() };
    // The process is single-threaded, so the per-thread rustix calls change
    // the credentials of the whole process.
    if !matches!(mapping, IdMapping::Single { .. }) {
        // Drop the host's supplementary groups (they would show as nogroup).
        rustix::thread::set_thread_groups(&[]).map_err(root_err)?;
    }
    let g = rustix::process::Gid::ROOT;
    let u = rustix::process::Uid::ROOT;
    rustix::thread::set_thread_res_gid(g, g, g).map_err(root_err)?;
    rustix::thread::set_thread_res_uid(u, u, u).map_err(root_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_range_by_name_or_uid() {
        let text = "# comment\nalice:100000:65536\n1001:300000:1000\nbad line\n";
        assert_eq!(find_subid_range(text, "alice", 1000), Some((100000, 65536)));
        assert_eq!(find_subid_range(text, "bob", 1001), Some((300000, 1000)));
        assert_eq!(find_subid_range(text, "carol", 1002), None);
        assert_eq!(find_subid_range("x:4294967295:2\n", "x", 5), None, "overflowing range");
    }

    #[test]
    fn choose_mapping_prefers_subids() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        let subuid = dir.path().join("subuid");
        let subgid = dir.path().join("subgid");
        std::fs::write(&passwd, "root:x:0:0::/root:/bin/sh\nbob:x:1234:1234::/home/bob:/bin/sh\n").unwrap();
        std::fs::write(&subuid, "bob:200000:65536\n").unwrap();
        std::fs::write(&subgid, "bob:300000:1000\n").unwrap();
        assert_eq!(choose_mapping(0, 0, &passwd, &subuid, &subgid).unwrap(), IdMapping::Full);
        let m = choose_mapping(1234, 1234, &passwd, &subuid, &subgid).unwrap();
        if find_helper("newuidmap").is_some() && find_helper("newgidmap").is_some() {
            assert_eq!(
                m,
                IdMapping::SubIds {
                    uid: 1234,
                    gid: 1234,
                    sub_uid_start: 200000,
                    sub_uid_count: 65536,
                    sub_gid_start: 300000,
                    sub_gid_count: 1000
                }
            );
        } else {
            assert_eq!(m, IdMapping::Single { uid: 1234, gid: 1234 });
        }
        let missing = dir.path().join("nope");
        assert_eq!(
            choose_mapping(1234, 1234, &passwd, &missing, &subgid).unwrap(),
            IdMapping::Single { uid: 1234, gid: 1234 }
        );
    }

    #[test]
    fn can_chown_follows_the_mapping() {
        let sub = IdMapping::SubIds {
            uid: 1000,
            gid: 1000,
            sub_uid_start: 100000,
            sub_uid_count: 65536,
            sub_gid_start: 100000,
            sub_gid_count: 10,
        };
        assert!(sub.can_chown(0, 0));
        assert!(sub.can_chown(65536, 10));
        assert!(!sub.can_chown(65537, 0));
        assert!(!sub.can_chown(0, 11));
        assert!(IdMapping::Full.can_chown(u32::MAX - 1, 7));
        let single = IdMapping::Single { uid: 1000, gid: 1000 };
        assert!(single.can_chown(0, 0));
        assert!(!single.can_chown(1, 0));
        assert!(single.describe().contains("cannot be represented"));
        assert_eq!(sub.map_lines().0, vec![(0, 1000, 1), (1, 100000, 65536)]);
    }
}
