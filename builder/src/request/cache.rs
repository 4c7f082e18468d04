//! `--cache-from` / `--cache-to` values as buildx parses them: a CSV record
//! with a `type=` (`registry`, `local`, `inline`, `gha`), or bare
//! references (`--cache-from user/app:cache` is `type=registry,ref=...`).
//! Each backend accepts BuildKit's keys for its direction; anything else is
//! an error naming the key. Importing and exporting is later work: these
//! are only the typed values.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::csv;
use super::{RequestError, parse_bool, require_known};

/// Which flag a cache spec came from: the keys differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheDirection {
    /// `--cache-from`.
    Import,
    /// `--cache-to`.
    Export,
}

impl CacheDirection {
    fn flag(self) -> &'static str {
        match self {
            CacheDirection::Import => "--cache-from",
            CacheDirection::Export => "--cache-to",
        }
    }
}

/// `mode=` of a cache export: the exported vertices only, or all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// Only the layers of the exported image (the default).
    #[default]
    Min,
    /// Every intermediate step too.
    Max,
}

/// A token for a cache service; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where cache lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheBackend {
    /// An OCI artifact in a registry (`ref=`).
    Registry {
        /// `ref=`.
        reference: String,
    },
    /// An OCI layout directory (`src=` to import, `dest=` to export).
    Local {
        /// `src=` / `dest=`.
        path: PathBuf,
    },
    /// Cache metadata inside the exported image (export only).
    Inline,
    /// The GitHub Actions cache service.
    Gha {
        /// `scope=` (default `buildkit`).
        scope: String,
        /// `url=` of the service (default: `$ACTIONS_CACHE_URL`).
        url: Option<String>,
        /// `token=` (default: `$ACTIONS_RUNTIME_TOKEN`).
        token: Option<Token>,
    },
}

/// One `--cache-from` or `--cache-to` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSpec {
    /// Where the cache lives.
    pub backend: CacheBackend,
    /// `mode=` (exports).
    pub mode: CacheMode,
    /// `ignore-error=true`: a failing cache export does not fail the build.
    pub ignore_error: bool,
    /// The backend's other validated keys (`compression`, `oci-mediatypes`,
    /// `image-manifest`, `tag`, `digest`, ...), as given.
    pub options: BTreeMap<String, String>,
}

const TYPES: &str = "registry, local, inline, gha";
/// Cache services buildx knows that rbuild has no client for (`gha` is
/// parsed, then refused by the builder with the same advice).
const UNSUPPORTED_SERVICES: &[&str] = &["s3", "azblob"];
const EXPORT_FORMAT_KEYS: &[&str] =
    &["mode", "oci-mediatypes", "image-manifest", "compression", "compression-level", "force-compression"];

fn valid_keys(kind: &str, direction: CacheDirection) -> Option<Vec<&'static str>> {
    let mut keys = vec!["type"];
    match (kind, direction) {
        ("registry", CacheDirection::Import) => keys.push("ref"),
        ("registry", CacheDirection::Export) => {
            keys.push("ref");
            keys.extend(EXPORT_FORMAT_KEYS);
            keys.extend(["ignore-error", "cache-mounts"]);
        }
        ("local", CacheDirection::Import) => keys.extend(["src", "digest", "tag"]),
        ("local", CacheDirection::Export) => {
            keys.extend(["dest", "tag"]);
            keys.extend(EXPORT_FORMAT_KEYS);
            keys.extend(["ignore-error", "cache-mounts"]);
        }
        ("inline", CacheDirection::Export) => {}
        ("gha", CacheDirection::Import) => keys.extend(["scope", "url", "url_v2", "token", "timeout", "version"]),
        ("gha", CacheDirection::Export) => {
            keys.extend(["scope", "url", "url_v2", "token", "timeout", "version", "mode", "ignore-error"])
        }
        _ => return None,
    }
    Some(keys)
}

impl CacheSpec {
    /// Parses one value of `--cache-from` (`Import`) or `--cache-to`
    /// (`Export`). Bare references give one registry entry each.
    pub fn parse(spec: &str, direction: CacheDirection) -> Result<Vec<CacheSpec>, RequestError> {
        let flag = direction.flag();
        let fields = csv::fields(spec).map_err(|source| RequestError::Csv { flag, source })?;
        if fields.is_empty() {
            return Ok(Vec::new());
        }
        if fields.iter().all(|f| !f.contains('=')) {
            return Ok(fields
                .into_iter()
                .map(|reference| CacheSpec {
                    backend: CacheBackend::Registry { reference },
                    mode: CacheMode::Min,
                    ignore_error: false,
                    options: BTreeMap::new(),
                })
                .collect());
        }
        let mut attrs = BTreeMap::new();
        for field in &fields {
            let (k, v) =
                csv::key_value(field).ok_or_else(|| RequestError::NotKeyValue { flag, field: field.clone() })?;
            attrs.insert(k, v.to_string());
        }
        let kind = attrs.remove("type").ok_or(RequestError::MissingType { flag, types: TYPES })?;
        let Some(valid) = valid_keys(&kind, direction) else {
            if kind == "inline" {
                return Err(RequestError::InlineImport);
            }
            if UNSUPPORTED_SERVICES.contains(&kind.as_str()) {
                // buildx users try these: name what works instead.
                return Err(RequestError::UnsupportedCacheService { flag, kind });
            }
            return Err(RequestError::UnknownType { flag, kind, types: TYPES });
        };
        require_known(flag, &kind, &attrs, &valid)?;
        let required = |key: &'static str| {
            attrs.get(key).filter(|v| !v.is_empty()).cloned().ok_or_else(|| RequestError::MissingKey {
                flag,
                kind: kind.clone(),
                key,
            })
        };
        let backend = match kind.as_str() {
            "registry" => CacheBackend::Registry { reference: required("ref")? },
            "local" => CacheBackend::Local {
                path: PathBuf::from(required(match direction {
                    CacheDirection::Import => "src",
                    CacheDirection::Export => "dest",
                })?),
            },
            "inline" => CacheBackend::Inline,
            "gha" => CacheBackend::Gha {
                scope: attrs.get("scope").cloned().unwrap_or_else(|| "buildkit".into()),
                url: attrs.get("url").cloned().or_else(|| std::env::var("ACTIONS_CACHE_URL").ok()),
                token: attrs.get("token").cloned().or_else(|| std::env::var("ACTIONS_RUNTIME_TOKEN").ok()).map(Token),
            },
            _ => unreachable!("valid_keys knows only these types"),
        };
        let mode = match attrs.get("mode").map(String::as_str) {
            None | Some("min") => CacheMode::Min,
            Some("max") => CacheMode::Max,
            Some(other) => {
                return Err(RequestError::InvalidValue {
                    flag,
                    key: "mode",
                    value: other.to_string(),
                    expected: "min or max",
                });
            }
        };
        let ignore_error = match attrs.get("ignore-error") {
            None => false,
            Some(v) => parse_bool(flag, "ignore-error", v)?,
        };
        let consumed = ["ref", "src", "dest", "scope", "url", "token", "mode", "ignore-error"];
        let options = attrs.into_iter().filter(|(k, _)| !consumed.contains(&k.as_str())).collect();
        Ok(vec![CacheSpec { backend, mode, ignore_error, options }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CacheDirection::{Export, Import};

    fn registry(reference: &str) -> CacheSpec {
        CacheSpec {
            backend: CacheBackend::Registry { reference: reference.into() },
            mode: CacheMode::Min,
            ignore_error: false,
            options: BTreeMap::new(),
        }
    }

    #[test]
    fn parses_cache_specs_as_buildx() {
        let table: Vec<(&str, CacheDirection, Vec<CacheSpec>)> = vec![
            ("", Import, vec![]),
            ("user/app:cache", Import, vec![registry("user/app:cache")]),
            ("a:1,b:2", Import, vec![registry("a:1"), registry("b:2")]),
            ("type=registry,ref=r/app:cache", Import, vec![registry("r/app:cache")]),
            (
                "type=registry,ref=r/c,mode=max,compression=zstd,ignore-error=true",
                Export,
                vec![CacheSpec {
                    backend: CacheBackend::Registry { reference: "r/c".into() },
                    mode: CacheMode::Max,
                    ignore_error: true,
                    options: [("compression".to_string(), "zstd".to_string())].into(),
                }],
            ),
            (
                "type=local,src=/tmp/cache,digest=sha256:ab",
                Import,
                vec![CacheSpec {
                    backend: CacheBackend::Local { path: "/tmp/cache".into() },
                    mode: CacheMode::Min,
                    ignore_error: false,
                    options: [("digest".to_string(), "sha256:ab".to_string())].into(),
                }],
            ),
            (
                "type=local,\"dest=/tmp/a,b\",mode=min",
                Export,
                vec![CacheSpec {
                    backend: CacheBackend::Local { path: "/tmp/a,b".into() },
                    mode: CacheMode::Min,
                    ignore_error: false,
                    options: BTreeMap::new(),
                }],
            ),
            (
                "type=inline",
                Export,
                vec![CacheSpec {
                    backend: CacheBackend::Inline,
                    mode: CacheMode::Min,
                    ignore_error: false,
                    options: BTreeMap::new(),
                }],
            ),
            (
                "type=gha,scope=main,url=http://cache,token=tok,mode=max",
                Export,
                vec![CacheSpec {
                    backend: CacheBackend::Gha {
                        scope: "main".into(),
                        url: Some("http://cache".into()),
                        token: Some(Token("tok".into())),
                    },
                    mode: CacheMode::Max,
                    ignore_error: false,
                    options: BTreeMap::new(),
                }],
            ),
        ];
        for (spec, direction, want) in table {
            assert_eq!(CacheSpec::parse(spec, direction).unwrap_or_else(|e| panic!("{spec}: {e}")), want, "{spec}");
        }
    }

    #[test]
    fn every_cache_error_names_what_is_wrong() {
        let table: &[(&str, CacheDirection, &str)] = &[
            ("ref=x", Import, "`--cache-from`: missing `type=` (one of registry, local, inline, gha)"),
            ("type=s4,ref=x", Export, "`--cache-to`: unknown type `s4`; valid types: registry, local, inline, gha"),
            (
                "type=s3,region=eu-west-1,bucket=b",
                Export,
                "`--cache-to type=s3` is not supported by rbuild: use type=registry (any OCI registry) or type=local (a directory, e.g. saved by a CI cache action); supported types: registry, local, inline (export only)",
            ),
            (
                "type=azblob,name=c",
                Import,
                "`--cache-from type=azblob` is not supported by rbuild: use type=registry (any OCI registry) or type=local (a directory, e.g. saved by a CI cache action); supported types: registry, local, inline (export only)",
            ),
            (
                "type=inline",
                Import,
                "`--cache-from type=inline` is not a cache source: inline cache is read from the image with `type=registry,ref=IMAGE`",
            ),
            (
                "type=registry,ref=x,mode=max",
                Import,
                "`--cache-from type=registry`: unknown key `mode`; valid keys: type, ref",
            ),
            (
                "type=registry,ref=x,dest=y",
                Export,
                "`--cache-to type=registry`: unknown key `dest`; valid keys: type, ref, mode, oci-mediatypes, image-manifest, compression, compression-level, force-compression, ignore-error, cache-mounts",
            ),
            (
                "type=local,dest=x",
                Import,
                "`--cache-from type=local`: unknown key `dest`; valid keys: type, src, digest, tag",
            ),
            ("type=inline,mode=max", Export, "`--cache-to type=inline`: unknown key `mode`; valid keys: type"),
            ("type=registry", Export, "`--cache-to type=registry` needs `ref=`"),
            ("type=local", Import, "`--cache-from type=local` needs `src=`"),
            ("type=local,dest=", Export, "`--cache-to type=local` needs `dest=`"),
            ("type=registry,ref=x,mode=all", Export, "`--cache-to`: invalid `mode=all`: expected min or max"),
            (
                "type=registry,ref=x,ignore-error=no",
                Export,
                "`--cache-to`: invalid `ignore-error=no`: expected true or false",
            ),
            ("type=registry,ref", Export, "`--cache-to`: `ref` is not KEY=VALUE"),
            (
                "type=registry,ref=\"x\"",
                Export,
                "`--cache-to`: bare `\"` in unquoted field 2 (quote the whole field: `\"key=value\"`)",
            ),
        ];
        for (spec, direction, message) in table {
            let err = CacheSpec::parse(spec, *direction).expect_err(spec);
            assert_eq!(err.to_string(), *message, "spec {spec:?}");
        }
    }

    #[test]
    fn tokens_are_redacted() {
        let spec = CacheSpec::parse("type=gha,token=very-secret", Import).unwrap();
        assert!(!format!("{spec:?}").contains("very-secret"));
    }
}
