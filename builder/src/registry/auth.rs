//! Registry credentials from Docker's `config.json`: `auths` (base64 `auth`
//! or `username`/`password`), `credsStore` and `credHelpers`, through the
//! `docker_credential` crate.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use docker_credential::{CredentialRetrievalError, DockerCredential};
use oci_client::secrets::RegistryAuth;

use super::RegistryError;
use super::reference::DOCKER_HUB;

/// The key Docker files Docker Hub credentials under.
const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// Where Docker's client config lives: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn default_docker_config_dir() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))
}

/// podman's auth file: `$REGISTRY_AUTH_FILE`, else
/// `$XDG_RUNTIME_DIR/containers/auth.json`.
pub fn default_podman_auth_file() -> Option<PathBuf> {
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(f));
    }
    std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()).map(|d| Path::new(&d).join("containers/auth.json"))
}

/// Credentials for `registry` from a podman/containers `auth.json` (the
/// same `auths` format as Docker's `config.json`). A missing file means
/// anonymous access.
pub fn credentials_from_auth_file(path: &Path, registry: &str) -> Result<RegistryAuth, RegistryError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(source) => return Err(RegistryError::ReadDockerConfig { path: path.to_path_buf(), source }),
    };
    // podman files docker.io under `docker.io`, Docker under its v1 URL.
    for server in [registry, if registry == DOCKER_HUB { DOCKER_HUB_AUTH_KEY } else { registry }] {
        match docker_credential::get_credential_from_reader(&bytes[..], server) {
            Ok(DockerCredential::UsernamePassword(user, password)) => return Ok(RegistryAuth::Basic(user, password)),
            Ok(DockerCredential::IdentityToken(_)) | Err(CredentialRetrievalError::NoCredentialConfigured) => {}
            Err(source) => {
                return Err(RegistryError::Credentials {
                    registry: registry.to_string(),
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    Ok(RegistryAuth::Anonymous)
}

/// The key Docker files `registry`'s credentials under.
pub fn server_key(registry: &str) -> &str {
    if registry == DOCKER_HUB { DOCKER_HUB_AUTH_KEY } else { registry }
}

/// Credentials for `registry` (as written in an image reference, e.g.
/// `docker.io`, `localhost:5000`) from `config_dir/config.json`.
///
/// No config file, or no entry for the registry, means anonymous access.
pub fn credentials_for(config_dir: Option<&Path>, registry: &str) -> Result<RegistryAuth, RegistryError> {
    let Some(dir) = config_dir else {
        return Ok(RegistryAuth::Anonymous);
    };
    let path = dir.join("config.json");
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(source) => return Err(RegistryError::ReadDockerConfig { path, source }),
    };
    // docker.io is filed under its v1 index URL by `docker login`;
    // docker_credential does not do that mapping for us.
    let server = if registry == DOCKER_HUB { DOCKER_HUB_AUTH_KEY } else { registry };
    match docker_credential::get_credential_from_reader(BufReader::new(file), server) {
        Ok(DockerCredential::UsernamePassword(user, password)) => Ok(RegistryAuth::Basic(user, password)),
        // An identity token is an OAuth2 refresh token; oci-client has no
        // refresh-token grant, so such logins fall back to anonymous access
        // (enough for public images).
        Ok(DockerCredential::IdentityToken(_)) => Ok(RegistryAuth::Anonymous),
        Err(CredentialRetrievalError::NoCredentialConfigured) => Ok(RegistryAuth::Anonymous),
        // The helper's stdout may hold a secret: keep only its name and stderr.
        Err(CredentialRetrievalError::HelperFailure { helper, stderr, .. }) => {
            Err(RegistryError::CredentialHelper { registry: registry.to_string(), helper, stderr })
        }
        Err(source) => Err(RegistryError::Credentials { registry: registry.to_string(), path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(json: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), json).unwrap();
        dir
    }

    #[test]
    fn base64_auth_entry() {
        // "alice:s3cr:et" — the password may contain ':'.
        let dir = write_config(r#"{"auths":{"localhost:5000":{"auth":"YWxpY2U6czNjcjpldA=="}}}"#);
        let auth = credentials_for(Some(dir.path()), "localhost:5000").unwrap();
        assert_eq!(auth, RegistryAuth::Basic("alice".into(), "s3cr:et".into()));
        assert_eq!(credentials_for(Some(dir.path()), "other:5000").unwrap(), RegistryAuth::Anonymous);
    }

    #[test]
    fn username_password_entry_and_docker_hub_key() {
        let dir = write_config(r#"{"auths":{"https://index.docker.io/v1/":{"username":"bob","password":"pw"}}}"#);
        let auth = credentials_for(Some(dir.path()), "docker.io").unwrap();
        assert_eq!(auth, RegistryAuth::Basic("bob".into(), "pw".into()));
    }

    #[test]
    fn missing_config_is_anonymous() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(credentials_for(Some(dir.path()), "x.io").unwrap(), RegistryAuth::Anonymous);
        assert_eq!(credentials_for(None, "x.io").unwrap(), RegistryAuth::Anonymous);
    }

    #[test]
    fn podman_auth_file_is_read() {
        let dir = write_config(r#"{"auths":{"localhost:5000":{"auth":"YWxpY2U6czNjcjpldA=="}}}"#);
        let file = dir.path().join("config.json");
        let auth = credentials_from_auth_file(&file, "localhost:5000").unwrap();
        assert_eq!(auth, RegistryAuth::Basic("alice".into(), "s3cr:et".into()));
        assert_eq!(credentials_from_auth_file(&file, "other").unwrap(), RegistryAuth::Anonymous);
        assert_eq!(credentials_from_auth_file(&dir.path().join("none"), "x").unwrap(), RegistryAuth::Anonymous);
    }

    #[test]
    fn malformed_config_is_an_error() {
        let dir = write_config("{not json");
        assert!(matches!(credentials_for(Some(dir.path()), "x.io"), Err(RegistryError::Credentials { .. })));
    }

    #[test]
    fn cred_helper_is_run() {
        // A real credential helper: an executable `docker-credential-NAME`
        // on PATH answering the `get` protocol.
        let dir = tempfile::tempdir().unwrap();
        let name = format!("rbuildtest{}", std::process::id());
        let helper = dir.path().join(format!("docker-credential-{name}"));
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\necho \"{\\\"ServerURL\\\":\\\"$server\\\",\\\"Username\\\":\\\"helperuser\\\",\\\"Secret\\\":\\\"helpersecret\\\"}\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("config.json"), format!(r#"{{"credHelpers":{{"reg.example:5000":"{name}"}}}}"#))
            .unwrap();
        // docker_credential runs `docker-credential-NAME` through PATH.
        // Mutating this process's PATH would race other test threads, so
        // install the helper (uniquely named) into a writable PATH directory.
        let path = std::env::var_os("PATH").expect("PATH is set");
        let target = std::env::split_paths(&path)
            .map(|d| d.join(helper.file_name().unwrap()))
            .find(|t| std::fs::copy(&helper, t).is_ok())
            .expect("no writable directory on PATH to install a credential helper into");
        let res = credentials_for(Some(dir.path()), "reg.example:5000");
        let _ = std::fs::remove_file(&target);
        assert_eq!(res.unwrap(), RegistryAuth::Basic("helperuser".into(), "helpersecret".into()));
    }
}
