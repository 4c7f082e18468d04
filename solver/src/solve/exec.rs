//! Running an exec vertex in the sandbox: overlay root over the input
//! chain, mounts, output streamed to progress, the upper dir committed as a
//! new snapshot.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::scratch::ScratchDir;
use super::{Event, Finished, Shared, SolveError, StepError, VertexResult, chain_of, step_error};
use crate::graph::{CacheSharing, ExecOp, MountKind, NetworkMode, SecurityMode, Vertex};
use crate::sandbox::{self, ExtraMount, MountSource, RunSpec};

/// How many trailing output lines a failure message shows.
const TAIL_LINES: usize = 10;

pub(crate) fn run(
    shared: &Shared<'_>,
    vertex: &Vertex,
    exec: &ExecOp,
    inputs: &[Finished],
) -> Result<VertexResult, SolveError> {
    sandbox::trace::mark("step");
    if let Some(platform) = &exec.platform {
        let host = crate::graph::Platform::host();
        let found = super::emulation::check(
            &host.architecture,
            &platform.architecture,
            Path::new(super::emulation::BINFMT_DIR),
        )
        .map_err(|e| step_error(vertex, StepError::NoEmulator(e)))?;
        if let super::emulation::Emulation::Unverifiable(warning) = found {
            // In the step's own output, where a following `exec format
            // error` will appear.
            shared.progress.event(Event::Log { digest: vertex.digest, stream: 2, line: warning });
        }
    }
    let store = shared.store;
    let root_input = exec.mounts.first().and_then(|m| m.input);
    let (mut chain, mut layers) = match root_input.map(|i| &inputs[i].result) {
        Some(VertexResult::Snapshots { chain, layers }) => (chain.clone(), layers.clone()),
        _ => (Vec::new(), Vec::new()),
    };
    // Empty diffs (a `RUN echo`'s) add nothing to the view: each one left
    // out is one overlay layer fewer for the kernel to stack and look
    // through, twice per `RUN` (layer probe and root).
    let lowerdirs: Vec<PathBuf> = store.mount_layers(&chain);
    let draft = store.new_snapshot()?;

    // Scratch directories the mounts refer to, removed when the step ends.
    let mut scratch_dirs: Vec<ScratchDir> = Vec::new();
    // Held until the step ends (`sharing=locked|private`).
    let mut cache_locks: Vec<std::fs::File> = Vec::new();
    let mut extra = Vec::new();
    let mut env = exec.env.clone();
    for mount in exec.mounts.iter().skip(1) {
        let source = match &mount.kind {
            MountKind::Bind => {
                let bind_err = |source| step_error(vertex, StepError::Bind { target: mount.target.clone(), source });
                let bind = match mount.input.map(|i| &inputs[i].result) {
                    Some(VertexResult::Directory(dir)) => {
                        super::bind::context(store, dir, &mount.selector, mount.readonly).map_err(bind_err)?
                    }
                    Some(result @ VertexResult::Snapshots { .. }) => {
                        super::bind::layers(store, &chain_of(result), &mount.selector, mount.readonly)
                            .map_err(bind_err)?
                    }
                    None => super::bind::layers(store, &[], &mount.selector, mount.readonly).map_err(bind_err)?,
                };
                scratch_dirs.extend(bind.keep);
                bind.source
            }
            MountKind::Cache { id, sharing } => {
                let key = cache_mount_key(id, mount);
                let dir = store.cache_mount_dir(&key)?;
                shared.lease.add_mount(&key)?;
                let mut lock_name = dir.file_name().unwrap_or_default().to_os_string();
                lock_name.push(".lock");
                let lock_path = dir.with_file_name(lock_name);
                let lock = std::fs::File::create(&lock_path)
                    .map_err(|source| step_error(vertex, StepError::CacheMount { id: id.clone(), source }))?;
                let source = match sharing {
                    CacheSharing::Shared => dir,
                    // Writers wait for each other.
                    CacheSharing::Locked => {
                        lock.lock()
                            .map_err(|source| step_error(vertex, StepError::CacheMount { id: id.clone(), source }))?;
                        dir
                    }
                    // A busy cache gives this writer a fresh private directory.
                    CacheSharing::Private => match lock.try_lock() {
                        Ok(()) => dir,
                        Err(_) => {
                            let own = ScratchDir::new(store.root(), "cache")
                                .map_err(|e| step_error(vertex, StepError::Scratch(e)))?;
                            let p = own.path().to_path_buf();
                            scratch_dirs.push(own);
                            p
                        }
                    },
                };
                if mount.uid.unwrap_or(0) != 0 || mount.gid.unwrap_or(0) != 0 {
                    let _ = std::os::unix::fs::chown(&source, mount.uid, mount.gid);
                }
                if let Some(mode) = mount.mode {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(&source, std::fs::Permissions::from_mode(mode));
                }
                cache_locks.push(lock);
                MountSource::Bind { source, readonly: mount.readonly }
            }
            MountKind::Tmpfs { size } => MountSource::Tmpfs { size: *size },
            MountKind::Secret { id, required, env: as_env } => {
                let Some(secret) = shared.opts.secrets.get(id) else {
                    if *required {
                        return Err(step_error(vertex, StepError::SecretRequired(id.clone())));
                    }
                    continue;
                };
                if let Some(var) = as_env {
                    // Injected into this process's environment only: the op
                    // (and so the cache key and history) never sees it.
                    env.push(format!("{var}={}", String::from_utf8_lossy(&secret.0)));
                    if mount.target.is_empty() {
                        continue;
                    }
                }
                let dir = ScratchDir::new_tmpfs(store.root(), "secret")
                    .map_err(|source| step_error(vertex, StepError::Secret { id: id.clone(), source }))?;
                let file = dir.path().join("secret");
                write_private(
                    &file,
                    &secret.0,
                    mount.mode.unwrap_or(0o400),
                    mount.uid.unwrap_or(0),
                    mount.gid.unwrap_or(0),
                )
                .map_err(|source| step_error(vertex, StepError::Secret { id: id.clone(), source }))?;
                scratch_dirs.push(dir);
                MountSource::Bind { source: file, readonly: true }
            }
            MountKind::Ssh { id, required } => match shared.opts.ssh.get(id) {
                Some(sock) => MountSource::Bind { source: sock.clone(), readonly: false },
                None if *required => {
                    return Err(step_error(vertex, StepError::SshRequired(id.clone())));
                }
                None => continue,
            },
        };
        extra.push(ExtraMount { target: mount.target.clone(), source });
    }

    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let (network, resolv_conf) = match exec.network {
        NetworkMode::None => (sandbox::Network::None, host_resolv),
        NetworkMode::Host => (sandbox::Network::Host, host_resolv),
        NetworkMode::Default => {
            let net = shared.network.get(store.root()).map_err(|e| step_error(vertex, StepError::Network(e)))?;
            let resolv = net.resolv_conf(&host_resolv);
            (sandbox::Network::Private { netns: net.netns().to_path_buf() }, resolv)
        }
    };
    let cgroup = match &shared.opts.limits.cgroups {
        Some(root) => Some(root.step().map_err(|e| step_error(vertex, StepError::Cgroup(e)))?),
        None => None,
    };
    let spec = RunSpec {
        lowerdirs,
        upperdir: draft.diff_dir(),
        workdir: draft.work_dir(),
        args: exec.args.clone(),
        env,
        cwd: exec.cwd.clone(),
        user: exec.user.clone(),
        hostname: "buildkitsandbox".into(),
        network,
        security: match exec.security {
            SecurityMode::Sandbox => sandbox::Security::Sandbox,
            SecurityMode::Insecure => sandbox::Security::Insecure,
        },
        mounts: extra,
        hosts: hosts_file(&exec.extra_hosts),
        resolv_conf,
        rlimits: exec.ulimits.clone(),
        shm_size: exec.shm_size,
        cgroup: cgroup.as_ref().map(|c| c.path().to_path_buf()),
    };
    let mut child = sandbox::spawn(&spec).map_err(|e| step_error(vertex, e))?;
    shared.running.lock().expect("running map").insert(vertex.digest, child.killer());
    if shared.is_cancelled() {
        child.kill();
        if let Some(cg) = &cgroup {
            cg.kill();
        }
    }
    let tail = Mutex::new(VecDeque::with_capacity(TAIL_LINES));
    let status = std::thread::scope(|scope| {
        for (stream, pipe) in [(1u8, child.take_stdout()), (2u8, child.take_stderr())] {
            let Some(pipe) = pipe else { continue };
            let tail = &tail;
            scope.spawn(move || {
                for line in BufReader::new(pipe).split(b'\n') {
                    let Ok(line) = line else { break };
                    let line = String::from_utf8_lossy(&line).into_owned();
                    {
                        let mut t = tail.lock().expect("tail");
                        if t.len() == TAIL_LINES {
                            t.pop_front();
                        }
                        t.push_back(line.clone());
                    }
                    shared.progress.event(Event::Log { digest: vertex.digest, stream, line });
                }
            });
        }
        child.wait()
    });
    sandbox::trace::mark("exited");
    shared.running.lock().expect("running map").remove(&vertex.digest);
    // Kills whatever the command left behind, then removes the cgroup.
    drop(cgroup);
    drop(scratch_dirs);
    drop(cache_locks);
    sandbox::trace::mark("released");
    let code = status.map_err(|e| step_error(vertex, e))?;
    if shared.is_cancelled() {
        return Err(step_error(vertex, StepError::Cancelled));
    }
    if code != 0 {
        let tail: Vec<String> = tail.into_inner().expect("tail").into_iter().collect();
        return Err(step_error(vertex, StepError::ExitCode { command: exec.args.join(" "), code, tail }));
    }
    let id = draft.commit()?;
    sandbox::trace::mark("committed");
    chain.push(id);
    layers.push(None);
    Ok(VertexResult::Snapshots { chain, layers })
}

fn write_private(path: &Path, data: &[u8], mode: u32, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, data)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
    Ok(())
}

/// `/etc/hosts` of a RUN: BuildKit's two localhost lines, then one line per
/// extra host (`executor/oci/hosts.go`).
fn hosts_file(extra: &[crate::graph::HostEntry]) -> String {
    let mut hosts = String::from("127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for h in extra {
        hosts.push_str(&format!("{}\t{}\n", h.ip, h.host));
    }
    hosts
}

#[cfg(test)]
mod hosts_tests {
    use super::hosts_file;
    use crate::graph::{HostEntry, HostEntryError};

    #[test]
    fn extra_hosts_are_appended_after_localhost() {
        let extra = [HostEntry::parse("db=10.1.2.3").unwrap(), HostEntry::parse("v6=[::1]").unwrap()];
        assert_eq!(
            hosts_file(&extra),
            "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n10.1.2.3\tdb\n::1\tv6\n"
        );
    }

    #[test]
    fn host_entries_parse_as_buildx_does() {
        assert_eq!(HostEntry::parse("a:10.0.0.1").unwrap().host, "a");
        assert_eq!(HostEntry::parse("a=fe80::1").unwrap().ip.to_string(), "fe80::1");
        let two = HostEntry::parse_all("a=1.2.3.4,[::1]").unwrap();
        assert_eq!(two.iter().map(|h| h.ip.to_string()).collect::<Vec<_>>(), ["1.2.3.4", "::1"]);
        assert!(matches!(HostEntry::parse("a=host-gateway"), Err(HostEntryError::HostGateway(_))));
        assert!(matches!(HostEntry::parse("a=notanip"), Err(HostEntryError::NotAnIp(..))));
        assert!(matches!(HostEntry::parse("=1.2.3.4"), Err(HostEntryError::Syntax(_))));
        // A name cannot smuggle more lines or fields into the hosts file.
        assert!(matches!(HostEntry::parse("a\n6.6.6.6 evil=1.2.3.4"), Err(HostEntryError::BadName(_))));
        assert!(matches!(HostEntry::parse("a b=1.2.3.4"), Err(HostEntryError::BadName(_))));
    }
}

/// The store key of a cache mount's directory (also the id its
/// `cache-mounts=true` export and seeding use). BuildKit keys a cache on its
/// id plus the mount's base: `uid=`, `gid=` or `mode=` make that base a
/// directory made with those options (`setCacheUIDGID`), so such a mount
/// never shares the default cache of the same id, nor one with other
/// options. The frontend fills in the defaults (0, 0, 0755), so options
/// spelling out exactly the defaults share the default cache here, where
/// BuildKit would give them their own (an empty one).
pub fn cache_mount_key(id: &str, mount: &crate::graph::Mount) -> String {
    let (uid, gid, mode) = (mount.uid.unwrap_or(0), mount.gid.unwrap_or(0), mount.mode.unwrap_or(0o755));
    if (uid, gid, mode) == (0, 0, 0o755) {
        return id.to_string();
    }
    format!("{id} uid={uid} gid={gid} mode={mode:o}")
}

#[cfg(test)]
mod tests {
    use super::cache_mount_key;
    use crate::graph::{CacheSharing, Mount, MountKind};

    fn cache(uid: u32, gid: u32, mode: u32) -> Mount {
        Mount {
            input: None,
            selector: String::new(),
            target: "/cache".into(),
            readonly: false,
            kind: MountKind::Cache { id: "/cache".into(), sharing: CacheSharing::Shared },
            mode: Some(mode),
            uid: Some(uid),
            gid: Some(gid),
        }
    }

    /// Issue 10, difference 6: a cache mount's owner and mode are part of
    /// which cache it is.
    #[test]
    fn diff06_cache_mounts_are_keyed_on_uid_gid_and_mode() {
        let default = cache_mount_key("/cache", &cache(0, 0, 0o755));
        assert_eq!(default, "/cache", "the default cache keeps its id as key");
        let keys = [
            cache_mount_key("/cache", &cache(10, 0, 0o755)),
            cache_mount_key("/cache", &cache(0, 10, 0o755)),
            cache_mount_key("/cache", &cache(0, 0, 0o700)),
            cache_mount_key("/cache", &cache(10, 10, 0o755)),
        ];
        for (i, k) in keys.iter().enumerate() {
            assert_ne!(k, &default);
            assert!(keys[i + 1..].iter().all(|o| o != k), "{keys:?}");
        }
    }
}
