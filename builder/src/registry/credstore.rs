//! `rbuild login` / `rbuild logout`: checking credentials against a
//! registry and storing them where Docker does.
//!
//! Storage follows docker's CLI: with a credential helper configured for
//! the registry (`credHelpers`) or for all (`credsStore`), the secret goes
//! to `docker-credential-<helper> store` as JSON on stdin and
//! `config.json` keeps an empty `auths` entry; otherwise the entry is
//! `{"auth": base64(user:password)}`. Other keys of `config.json` are kept
//! as they are. The file is written atomically with mode 0600.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use oci_client::secrets::RegistryAuth;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use serde_json::{Map, Value};

use super::auth::server_key;
use super::session::{self, Challenge, SessionError};
use super::{ImageRef, RegistryClient};

/// Failures of login and logout.
#[derive(Debug, thiserror::Error)]
pub enum CredStoreError {
    /// `config.json` cannot be read.
    #[error("cannot read `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not a JSON object.
    #[error("`{}` is not a JSON object", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The JSON error, if it is not JSON at all.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// `config.json` cannot be written.
    #[error("cannot write `{}`", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The credential helper could not be run.
    #[error("cannot run `docker-credential-{helper}`")]
    SpawnHelper {
        /// Helper name.
        helper: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The credential helper failed (its stdout is withheld: it may echo
    /// the secret).
    #[error("`docker-credential-{helper} {action}` failed: {stderr}")]
    Helper {
        /// Helper name.
        helper: String,
        /// `store` or `erase`.
        action: &'static str,
        /// Its standard error.
        stderr: String,
    },
    /// No Docker config directory (no `$DOCKER_CONFIG`, no `$HOME`).
    #[error("no docker config directory: set `DOCKER_CONFIG` or `HOME`")]
    NoConfigDir,
    /// The registry is unreachable or refused the credentials.
    #[error("login to `{registry}` failed")]
    Verify {
        /// Registry host.
        registry: String,
        /// What went wrong.
        #[source]
        source: SessionError,
    },
    /// The registry name is not a valid host.
    #[error("invalid registry `{0}`")]
    BadRegistry(String),
}

/// Where a credential was stored.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// In `config.json` (`auths`).
    ConfigFile(PathBuf),
    /// In a credential helper.
    Helper(String),
}

/// Normalises what the user typed (`https://reg.example/`, `docker.io`,
/// `index.docker.io`) to a registry host as image references name it.
pub fn normalise_registry(input: &str) -> Result<String, CredStoreError> {
    let trimmed = input.trim();
    let host = trimmed.strip_prefix("https://").or_else(|| trimmed.strip_prefix("http://")).unwrap_or(trimmed);
    let host = host.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('@') {
        return Err(CredStoreError::BadRegistry(input.to_string()));
    }
    Ok(match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    })
}

impl RegistryClient {
    /// Checks `user`/`password` against `registry` the way `docker login`
    /// does: `GET /v2/`; on a Basic challenge, again with the credentials;
    /// on a Bearer challenge, a token request to the realm with them.
    pub async fn verify_login(&self, registry: &str, user: &str, password: &str) -> Result<(), CredStoreError> {
        let verify = |source| CredStoreError::Verify { registry: registry.to_string(), source };
        let probe = ImageRef { registry: registry.to_string(), repository: "x".into(), tag: None, digest: None };
        let base = self.v2_base(&probe).await.map_err(|_| CredStoreError::BadRegistry(registry.to_string()))?;
        let root =
            base.join("/v2/").map_err(|source| verify(SessionError::BadUrl { url: base.to_string(), source }))?;
        let client = self.session.client();
        let get = |auth: Option<reqwest::header::HeaderValue>| {
            let mut req = client.get(root.clone());
            if let Some(a) = auth {
                req = req.header(AUTHORIZATION, a);
            }
            req.send()
        };
        let transport =
            |source| verify(SessionError::Transport { method: reqwest::Method::GET, url: root.to_string(), source });
        let resp = get(None).await.map_err(transport)?;
        if resp.status().is_success() {
            return Ok(());
        }
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Err(verify(session::status_error(&reqwest::Method::GET, &root, resp).await));
        }
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .map(Challenge::parse)
            .unwrap_or(Challenge::Basic);
        let creds = RegistryAuth::Basic(user.to_string(), password.to_string());
        let header = match challenge {
            Challenge::Basic => session::basic_header(user, password),
            Challenge::Bearer { realm, service } => {
                let token =
                    self.session.fetch_token(registry, &creds, &realm, service.as_deref(), "").await.map_err(verify)?;
                let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| verify(SessionError::BadToken { registry: registry.to_string(), source: None }))?;
                v.set_sensitive(true);
                v
            }
        };
        let resp = get(Some(header)).await.map_err(transport)?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(verify(SessionError::Unauthorized {
            registry: registry.to_string(),
            status: resp.status(),
            detail: "wrong username or password".to_string(),
        }))
    }
}

/// Stores credentials for `registry` under `config_dir`.
pub fn store(config_dir: &Path, registry: &str, user: &str, password: &str) -> Result<Stored, CredStoreError> {
    let path = config_dir.join("config.json");
    let mut config = read_config(&path)?;
    let server = server_key(registry);
    let helper = helper_for(&config, server);
    let stored = match helper {
        Some(helper) => {
            let input = serde_json::json!({"ServerURL": server, "Username": user, "Secret": password});
            run_helper(&helper, "store", &input.to_string())?;
            object_entry(&mut config, "auths").insert(server.to_string(), Value::Object(Map::new()));
            Stored::Helper(helper)
        }
        None => {
            let auth = session::base64_encode(format!("{user}:{password}").as_bytes());
            object_entry(&mut config, "auths").insert(server.to_string(), serde_json::json!({ "auth": auth }));
            Stored::ConfigFile(path.clone())
        }
    };
    write_config(config_dir, &path, &config)?;
    Ok(stored)
}

/// Removes credentials for `registry`; returns whether there were any.
pub fn erase(config_dir: &Path, registry: &str) -> Result<bool, CredStoreError> {
    let path = config_dir.join("config.json");
    if !path.exists() {
        return Ok(false);
    }
    let mut config = read_config(&path)?;
    let server = server_key(registry);
    let mut removed = false;
    if let Some(helper) = helper_for(&config, server) {
        // A helper that holds nothing for the server fails; docker ignores
        // that too, as the entry is gone either way.
        removed |= run_helper(&helper, "erase", server).is_ok();
    }
    if let Some(Value::Object(auths)) = config.get_mut("auths") {
        removed |= auths.remove(server).is_some();
    }
    write_config(config_dir, &path, &config)?;
    Ok(removed)
}

/// `credHelpers[server]`, else `credsStore`.
fn helper_for(config: &Map<String, Value>, server: &str) -> Option<String> {
    let by_server = config.get("credHelpers").and_then(|h| h.get(server)).and_then(Value::as_str);
    let global = config.get("credsStore").and_then(Value::as_str);
    by_server.or(global).filter(|h| !h.is_empty()).map(str::to_string)
}

fn object_entry<'a>(config: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let v = config.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().expect("just made an object")
}

fn read_config(path: &Path) -> Result<Map<String, Value>, CredStoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(source) => return Err(CredStoreError::Read { path: path.to_path_buf(), source }),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(CredStoreError::Parse { path: path.to_path_buf(), source: None }),
        Err(e) => Err(CredStoreError::Parse { path: path.to_path_buf(), source: Some(e) }),
    }
}

/// Atomic write (temp file in the same directory, fsync, rename), 0600:
/// the file holds secrets.
fn write_config(dir: &Path, path: &Path, config: &Map<String, Value>) -> Result<(), CredStoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let werr = |source| CredStoreError::Write { path: path.to_path_buf(), source };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(werr)?;
    let mut body = serde_json::to_vec_pretty(config).expect("a JSON map serialises");
    body.push(b'\n');
    let tmp = dir.join(format!(".config.json.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(werr)
}

/// Runs `docker-credential-<helper> <action>` with `input` on stdin.
fn run_helper(helper: &str, action: &'static str, input: &str) -> Result<(), CredStoreError> {
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CredStoreError::SpawnHelper { helper: helper.to_string(), source })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|source| CredStoreError::SpawnHelper { helper: helper.to_string(), source })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| CredStoreError::SpawnHelper { helper: helper.to_string(), source })?;
    if out.status.success() {
        return Ok(());
    }
    // Helpers report errors on stdout (docker reads it from there); it is
    // shown only when it does not contain the secret we sent.
    let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if msg.is_empty() {
        msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    if let Ok(v) = serde_json::from_str::<Value>(input)
        && let Some(secret) = v.get("Secret").and_then(Value::as_str)
        && !secret.is_empty()
        && msg.contains(secret)
    {
        msg = "<output withheld: it contains the secret>".to_string();
    }
    Err(CredStoreError::Helper { helper: helper.to_string(), action, stderr: msg })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_erase_in_config_file_keep_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"psFormat":"x","auths":{"other:1":{"auth":"b3RoZXI="}}}"#)
            .unwrap();
        let stored = store(dir.path(), "reg.example:5000", "alice", "s3cr:et").unwrap();
        assert_eq!(stored, Stored::ConfigFile(dir.path().join("config.json")));
        let v: Value = serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "x");
        assert_eq!(v["auths"]["other:1"]["auth"], "b3RoZXI=");
        assert_eq!(v["auths"]["reg.example:5000"]["auth"], "YWxpY2U6czNjcjpldA==");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("config.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Readable back through the same path pulls use.
        let auth = super::super::auth::credentials_for(Some(dir.path()), "reg.example:5000").unwrap();
        assert_eq!(auth, RegistryAuth::Basic("alice".into(), "s3cr:et".into()));

        assert!(erase(dir.path(), "reg.example:5000").unwrap());
        assert!(!erase(dir.path(), "reg.example:5000").unwrap());
        let v: Value = serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
        assert!(v["auths"].get("reg.example:5000").is_none());
        assert_eq!(v["auths"]["other:1"]["auth"], "b3RoZXI=");
    }

    #[test]
    fn docker_hub_is_filed_under_its_v1_url() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(normalise_registry("https://index.docker.io/v1/").unwrap(), "docker.io");
        store(dir.path(), "docker.io", "bob", "pw").unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
        assert!(v["auths"]["https://index.docker.io/v1/"]["auth"].is_string());
    }

    #[test]
    fn credential_helper_gets_store_and_erase() {
        // A real helper on PATH that records what it was sent.
        let dir = tempfile::tempdir().unwrap();
        let name = format!("rbuildstore{}", std::process::id());
        let log = dir.path().join("helper.log");
        let script = format!("#!/bin/sh\necho \"$1\" >> {log}\ncat >> {log}\necho >> {log}\n", log = log.display());
        let path = std::env::var_os("PATH").expect("PATH is set");
        let target = std::env::split_paths(&path)
            .map(|d| d.join(format!("docker-credential-{name}")))
            .find(|t| std::fs::write(t, &script).is_ok())
            .expect("no writable directory on PATH");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("config.json"), format!(r#"{{"credsStore":"{name}"}}"#)).unwrap();
        let stored = store(dir.path(), "reg.example:5000", "alice", "hunter2");
        let erased = erase(dir.path(), "reg.example:5000");
        let _ = std::fs::remove_file(&target);
        assert_eq!(stored.unwrap(), Stored::Helper(name.clone()));
        assert!(erased.unwrap());
        let logged = std::fs::read_to_string(&log).unwrap();
        let mut lines = logged.lines();
        assert_eq!(lines.next(), Some("store"));
        let sent: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(sent, serde_json::json!({"ServerURL":"reg.example:5000","Username":"alice","Secret":"hunter2"}));
        assert_eq!(lines.next(), Some("erase"));
        assert_eq!(lines.next(), Some("reg.example:5000"));
        // The secret stays out of config.json.
        let config = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        assert!(!config.contains("hunter2") && !config.contains(&session::base64_encode(b"alice:hunter2")));
    }
}
