//! Entitlements (buildx `bake/entitlements.go`): a bake file is often not
//! the user's own (a pull request, a cloned repository), so what it makes
//! the build do beyond the working directory must be granted with
//! `--allow`: `network.host` and `security.insecure` for the build
//! containers, `ssh` for the default agent, `fs.read=PATH` for files read
//! outside the working directory (contexts, secrets, SSH keys, local cache
//! sources) and `fs.write=PATH` for files written outside it (local outputs,
//! local cache exports). `fs=PATH` grants both, `fs=*` any path.
//! `BUILDX_BAKE_ENTITLEMENTS_FS=0` turns the path checks off. There is no
//! interactive prompt: a missing grant is an error that names the flags.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::inputs::BuildInputs;
use super::resolve::is_remote;
use super::target::Target;

/// What `--allow` granted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grants {
    /// `network.host`.
    pub network_host: bool,
    /// `security.insecure`.
    pub security_insecure: bool,
    /// `ssh`: forwarding the default agent.
    pub ssh: bool,
    /// `fs.read=` paths (absolute); `*` is `read_any`.
    pub read: Vec<PathBuf>,
    /// `fs.write=` paths (absolute).
    pub write: Vec<PathBuf>,
    /// `fs.read=*` / `fs=*`.
    pub read_any: bool,
    /// `fs.write=*` / `fs=*`.
    pub write_any: bool,
}

/// A bad `--allow` or grants that are missing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EntitlementError {
    /// `--allow` names no known entitlement.
    #[error(
        "unknown entitlement `{0}`: use network.host, security.insecure, ssh, fs=PATH, fs.read=PATH or fs.write=PATH"
    )]
    Unknown(String),
    /// The build needs more than was granted.
    #[error("additional privileges requested:\n{}\nPass `{}` to grant them{}", .reasons.join("\n"), .flags.join(" "), if *.fs { " (or set BUILDX_BAKE_ENTITLEMENTS_FS=0 to skip the path checks)" } else { "" })]
    Missing {
        /// One line per missing grant.
        reasons: Vec<String>,
        /// The `--allow=...` flags that grant them.
        flags: Vec<String>,
        /// Whether any is a path grant.
        fs: bool,
    },
}

/// Absolute, with the longest existing prefix's symlinks resolved, so a
/// symlink inside the working directory cannot smuggle a path out of it.
fn resolve(p: &Path, cwd: &Path) -> PathBuf {
    let abs = if p.is_absolute() { p.to_path_buf() } else { cwd.join(p) };
    let mut existing = abs.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            for r in rest.iter().rev() {
                out.push(r);
            }
            return lexical_clean(&out);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => return lexical_clean(&abs),
        }
    }
}

fn lexical_clean(p: &Path) -> PathBuf {
    PathBuf::from(super::functions::clean_path(&p.to_string_lossy()))
}

fn within(p: &Path, parent: &Path) -> bool {
    p == parent || parent == Path::new("/") || p.starts_with(parent)
}

impl Grants {
    /// Parses `--allow` values; the working directory is always granted.
    pub fn parse(allow: &[String], cwd: &Path) -> Result<Grants, EntitlementError> {
        let mut g = Grants { read: vec![resolve(cwd, cwd)], write: vec![resolve(cwd, cwd)], ..Default::default() };
        for a in allow {
            match a.split_once('=') {
                None => match a.as_str() {
                    "network.host" => g.network_host = true,
                    "security.insecure" => g.security_insecure = true,
                    "ssh" => g.ssh = true,
                    other => return Err(EntitlementError::Unknown(other.to_string())),
                },
                Some((k, v)) => {
                    let (read, write) = match k {
                        "fs.read" => (true, false),
                        "fs.write" => (false, true),
                        "fs" => (true, true),
                        _ => return Err(EntitlementError::Unknown(a.clone())),
                    };
                    if v == "*" {
                        g.read_any |= read;
                        g.write_any |= write;
                        continue;
                    }
                    let p = resolve(Path::new(v), cwd);
                    if read {
                        g.read.push(p.clone());
                    }
                    if write {
                        g.write.push(p);
                    }
                }
            }
        }
        Ok(g)
    }
}

/// Local paths a target's build reads and writes (buildx `check`).
fn paths(t: &Target, b: &BuildInputs) -> (Vec<String>, Vec<String>) {
    let local = |p: &str| {
        !(p.is_empty()
            || p == "-"
            || is_remote(p)
            || p.contains("://")
            || p.starts_with("target:")
            || p.starts_with("docker-image:"))
    };
    let mut ro: Vec<String> = Vec::new();
    if local(&b.context_path) {
        ro.push(b.context_path.clone());
        if b.dockerfile_inline.is_none() && local(&b.dockerfile_path) {
            ro.push(b.dockerfile_path.clone());
        }
    }
    ro.extend(b.named_contexts.values().filter(|v| local(v)).cloned());
    ro.extend(t.secret.iter().flatten().filter(|s| !s.src.is_empty()).map(|s| s.src.clone()));
    ro.extend(t.ssh.iter().flatten().flat_map(|s| s.paths.iter().cloned()));
    ro.extend(t.cache_from.iter().flatten().filter(|c| c.kind == "local").filter_map(|c| c.attrs.get("src").cloned()));
    let mut rw: Vec<String> = Vec::new();
    rw.extend(b.exports.iter().filter(|e| !e.dest.is_empty() && e.dest != "-").map(|e| e.dest.clone()));
    rw.extend(t.cache_to.iter().flatten().filter(|c| c.kind == "local").filter_map(|c| c.attrs.get("dest").cloned()));
    (ro, rw)
}

/// Checks every target's needs against the grants.
pub fn check<'a>(
    targets: impl IntoIterator<Item = (&'a Target, &'a BuildInputs)>,
    grants: &Grants,
    cwd: &Path,
    fs_checks: bool,
) -> Result<(), EntitlementError> {
    let mut flags: BTreeSet<String> = BTreeSet::new();
    let mut reasons: Vec<String> = Vec::new();
    let mut fs = false;
    let mut need = |flag: String, reason: String| {
        if flags.insert(flag) {
            reasons.push(reason);
        }
    };
    for (t, b) in targets {
        for e in t.entitlements.iter().flatten() {
            match e.as_str() {
                "network.host" if !grants.network_host => need(
                    "--allow=network.host".into(),
                    " - running build containers that can access the host network".into(),
                ),
                "security.insecure" if !grants.security_insecure => need(
                    "--allow=security.insecure".into(),
                    " - running privileged build containers that can make system changes".into(),
                ),
                _ => {}
            }
        }
        if !fs_checks {
            continue;
        }
        if t.ssh.iter().flatten().any(|s| s.paths.is_empty()) && !grants.ssh {
            fs = true;
            need("--allow=ssh".into(), " - forwarding the default SSH agent socket".into());
        }
        let (ro, rw) = paths(t, b);
        for p in ro {
            let abs = resolve(Path::new(&p), cwd);
            if !grants.read_any && !grants.read.iter().any(|g| within(&abs, g)) {
                fs = true;
                need(format!("--allow=fs.read={}", abs.display()), format!(" - read access to path {}", abs.display()));
            }
        }
        for p in rw {
            let abs = resolve(Path::new(&p), cwd);
            if !grants.write_any && !grants.write.iter().any(|g| within(&abs, g)) {
                fs = true;
                need(
                    format!("--allow=fs.write={}", abs.display()),
                    format!(" - write access to path {}", abs.display()),
                );
            }
        }
    }
    if reasons.is_empty() {
        return Ok(());
    }
    Err(EntitlementError::Missing { reasons, flags: flags.into_iter().collect(), fs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bake::entries::{Export, SecretEntry, SshEntry};
    use crate::bake::inputs::build_inputs;

    fn run(t: &Target, allow: &[&str], cwd: &Path) -> Result<(), EntitlementError> {
        let b = build_inputs(t, cwd).unwrap();
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        check([(t, &b)], &Grants::parse(&allow, cwd).unwrap(), cwd, true)
    }

    #[test]
    fn paths_outside_the_working_directory_need_grants() {
        let dir = std::env::temp_dir().join(format!("rbuild-ent-test-{}", std::process::id()));
        let cwd = dir.join("work");
        std::fs::create_dir_all(&cwd).unwrap();
        let inside = Target {
            context: Some(".".into()),
            output: Some(vec![Export { kind: "local".into(), dest: "out".into(), ..Default::default() }]),
            ..Default::default()
        };
        assert_eq!(run(&inside, &[], &cwd), Ok(()));

        let out = Target {
            output: Some(vec![Export { kind: "tar".into(), dest: "../elsewhere/x.tar".into(), ..Default::default() }]),
            ..Default::default()
        };
        let err = run(&out, &[], &cwd).unwrap_err().to_string();
        assert!(err.contains("--allow=fs.write="), "{err}");
        assert!(err.contains("elsewhere"), "{err}");
        assert_eq!(run(&out, &["fs.write=../elsewhere"], &cwd), Ok(()));
        assert_eq!(run(&out, &["fs=*"], &cwd), Ok(()));

        let secret = Target {
            secret: Some(vec![SecretEntry { id: "k".into(), src: "/etc/shadow".into(), env: String::new() }]),
            ..Default::default()
        };
        assert!(run(&secret, &[], &cwd).unwrap_err().to_string().contains("fs.read=/etc/shadow"));
        assert_eq!(run(&secret, &["fs.read=/etc"], &cwd), Ok(()));

        // A symlink inside the working directory does not lead out of it unseen.
        std::os::unix::fs::symlink("/etc", cwd.join("link")).unwrap();
        let via_link = Target { context: Some("link".into()), ..Default::default() };
        assert!(run(&via_link, &[], &cwd).unwrap_err().to_string().contains("fs.read=/etc"));

        let agent = Target { ssh: Some(vec![SshEntry { id: "default".into(), paths: vec![] }]), ..Default::default() };
        assert!(run(&agent, &[], &cwd).unwrap_err().to_string().contains("--allow=ssh"));
        assert_eq!(run(&agent, &["ssh"], &cwd), Ok(()));

        let host = Target { entitlements: Some(vec!["network.host".into()]), ..Default::default() };
        assert!(run(&host, &[], &cwd).unwrap_err().to_string().contains("--allow=network.host"));
        assert_eq!(run(&host, &["network.host"], &cwd), Ok(()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_entitlements_are_errors() {
        assert!(Grants::parse(&["net.host".into()], Path::new("/")).is_err());
        assert!(Grants::parse(&["device=x".into()], Path::new("/")).is_err());
    }
}
