//! `--secret` (a CSV record, as buildx parses it) and `--ssh`
//! (`default|ID[=SOCKET]`). Values are not read here: a spec names where a
//! secret comes from, [`SecretSpec::load`] reads it when the build starts.
//! Error messages never contain a secret's value.

use std::path::PathBuf;

use rbuild_solver::solve::Secret;

use super::csv;
use super::{RequestError, require_known};

/// Where a secret's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file (`src=`/`source=`).
    File(PathBuf),
    /// An environment variable (`env=`).
    Env(String),
}

/// One `--secret`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretSpec {
    /// The id RUN mounts refer to.
    pub id: String,
    /// Where the value is read from.
    pub source: SecretSource,
}

const FLAG: &str = "--secret";
const KEYS: &[&str] = &["type", "id", "src", "source", "env"];

impl SecretSpec {
    /// Parses one `--secret` value. Without `src=` or `env=` the value is the
    /// environment variable named like the id when it is set, else the file
    /// named like it, as BuildKit's secret store does.
    pub fn parse(spec: &str) -> Result<SecretSpec, RequestError> {
        // Fields are echoed in errors by key only: a confused user may have
        // put a value where a path belongs.
        let fields = csv::fields(spec).map_err(|source| RequestError::Csv { flag: FLAG, source })?;
        let mut kind = None;
        let (mut id, mut src, mut env) = (None, None, None);
        let mut attrs = std::collections::BTreeMap::new();
        for field in &fields {
            let (k, v) = csv::key_value(field).ok_or(RequestError::SecretNotKeyValue)?;
            attrs.insert(k.clone(), String::new());
            match k.as_str() {
                "type" => kind = Some(v.to_string()),
                "id" => id = Some(v.to_string()),
                "src" | "source" => src = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                _ => {}
            }
        }
        require_known(FLAG, "", &attrs, KEYS)?;
        match kind.as_deref() {
            None | Some("file") => {}
            Some("env") => {
                // `type=env,src=VAR` names the variable, as buildx reads it.
                if env.is_none() {
                    env = src.take();
                }
            }
            Some(other) => {
                return Err(RequestError::InvalidValue {
                    flag: FLAG,
                    key: "type",
                    value: other.to_string(),
                    expected: "file or env",
                });
            }
        }
        let id = id.or_else(|| env.clone()).filter(|i| !i.is_empty()).ok_or(RequestError::SecretWithoutId)?;
        let source = match (src, env) {
            (Some(path), _) if !path.is_empty() => SecretSource::File(PathBuf::from(path)),
            (_, Some(var)) if !var.is_empty() => SecretSource::Env(var),
            _ if std::env::var_os(&id).is_some() => SecretSource::Env(id.clone()),
            _ => SecretSource::File(PathBuf::from(&id)),
        };
        Ok(SecretSpec { id, source })
    }

    /// Reads the secret's value.
    pub fn load(&self) -> Result<Secret, RequestError> {
        match &self.source {
            SecretSource::File(path) => std::fs::read(path).map(Secret).map_err(|source| RequestError::SecretFile {
                id: self.id.clone(),
                path: path.clone(),
                source,
            }),
            SecretSource::Env(var) => std::env::var(var)
                .map(|v| Secret(v.into_bytes()))
                .map_err(|_| RequestError::SecretEnv { id: self.id.clone(), var: var.clone() }),
        }
    }
}

/// One `--ssh`: an agent id and the socket to forward (`None`: `$SSH_AUTH_SOCK`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshSpec {
    /// The id RUN mounts refer to (`default` unless named).
    pub id: String,
    /// The agent socket.
    pub socket: Option<PathBuf>,
}

impl SshSpec {
    /// Parses `ID[=PATH]`. buildx also accepts several key files after the
    /// `=`; rbuild forwards one agent socket, so a list is an error.
    pub fn parse(spec: &str) -> Result<SshSpec, RequestError> {
        let (id, paths) = spec.split_once('=').unwrap_or((spec, ""));
        if id.is_empty() {
            return Err(RequestError::SshWithoutId);
        }
        let paths: Vec<&str> = paths.split(',').filter(|p| !p.is_empty()).collect();
        match paths.as_slice() {
            [] => Ok(SshSpec { id: id.to_string(), socket: None }),
            [one] => Ok(SshSpec { id: id.to_string(), socket: Some(PathBuf::from(one)) }),
            _ => Err(RequestError::SshSeveralPaths { id: id.to_string() }),
        }
    }

    /// The socket to forward.
    pub fn resolve(&self) -> Result<PathBuf, RequestError> {
        match &self.socket {
            Some(path) => Ok(path.clone()),
            None => std::env::var_os("SSH_AUTH_SOCK")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| RequestError::SshNoAgent { id: self.id.clone() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: &str, path: &str) -> SecretSpec {
        SecretSpec { id: id.into(), source: SecretSource::File(path.into()) }
    }

    fn env(id: &str, var: &str) -> SecretSpec {
        SecretSpec { id: id.into(), source: SecretSource::Env(var.into()) }
    }

    #[test]
    fn parses_secrets_as_buildx() {
        // A variable name no environment sets.
        let unset = "RBUILD_TEST_SECRET_SURELY_UNSET";
        let table: Vec<(String, SecretSpec)> = vec![
            ("id=tok,src=/run/tok".into(), file("tok", "/run/tok")),
            ("id=tok,source=/run/tok".into(), file("tok", "/run/tok")),
            ("type=file,id=tok,src=/run/tok".into(), file("tok", "/run/tok")),
            ("\"id=tok\",\"src=/a,b\"".into(), file("tok", "/a,b")),
            ("ID=tok,SRC=f".into(), file("tok", "f")),
            ("id=tok,env=TOKEN".into(), env("tok", "TOKEN")),
            ("env=TOKEN".into(), env("TOKEN", "TOKEN")),
            ("type=env,id=tok,src=TOKEN".into(), env("tok", "TOKEN")),
            ("id=PATH".into(), env("PATH", "PATH")),
            (format!("id={unset}"), file(unset, unset)),
        ];
        for (spec, want) in table {
            assert_eq!(SecretSpec::parse(&spec).unwrap_or_else(|e| panic!("{spec}: {e}")), want, "{spec}");
        }
    }

    #[test]
    fn every_secret_error_names_what_is_wrong_and_no_value() {
        let table: &[(&str, &str)] = &[
            ("src=/run/tok", "`--secret` needs `id=` (or `env=`)"),
            ("id=", "`--secret` needs `id=` (or `env=`)"),
            ("id=tok,path=/x", "`--secret`: unknown key `path`; valid keys: type, id, src, source, env"),
            ("id=tok,type=ssh", "`--secret`: invalid `type=ssh`: expected file or env"),
            ("id=tok,hunter2", "`--secret`: a field is not KEY=VALUE (use `id=ID,src=PATH` or `id=ID,env=VAR`)"),
            ("id=tok,src=\"x", "`--secret`: bare `\"` in unquoted field 2 (quote the whole field: `\"key=value\"`)"),
        ];
        for (spec, message) in table {
            let err = SecretSpec::parse(spec).expect_err(spec);
            assert_eq!(err.to_string(), *message, "spec {spec:?}");
        }
        let missing = file("tok", "/nonexistent/rbuild-secret");
        assert!(
            missing
                .load()
                .unwrap_err()
                .to_string()
                .starts_with("reading secret `tok` from `/nonexistent/rbuild-secret`")
        );
        let unset = env("tok", "RBUILD_TEST_SECRET_SURELY_UNSET");
        assert_eq!(
            unset.load().unwrap_err().to_string(),
            "secret `tok`: environment variable `RBUILD_TEST_SECRET_SURELY_UNSET` is not set"
        );
    }

    #[test]
    fn parses_ssh_as_buildx() {
        assert_eq!(SshSpec::parse("default").unwrap(), SshSpec { id: "default".into(), socket: None });
        assert_eq!(
            SshSpec::parse("git=/run/agent.sock").unwrap(),
            SshSpec { id: "git".into(), socket: Some("/run/agent.sock".into()) }
        );
        assert_eq!(SshSpec::parse("=x").unwrap_err().to_string(), "`--ssh`: missing the id (`default` or a name)");
        assert_eq!(
            SshSpec::parse("default=/a,/b").unwrap_err().to_string(),
            "`--ssh default`: give one agent socket; several sockets or key files are not supported"
        );
        let none = SshSpec { id: "default".into(), socket: None };
        if std::env::var_os("SSH_AUTH_SOCK").is_none() {
            assert_eq!(none.resolve().unwrap_err().to_string(), "`--ssh default`: $SSH_AUTH_SOCK is not set");
        }
    }
}
