//! The configuration file: `--config FILE`, else
//! `$XDG_CONFIG_HOME/rbuild/config.toml` (or `~/.config/rbuild/config.toml`)
//! when it exists. What `buildkitd.toml` users set, in its spelling where
//! there is one:
//!
//! ```toml
//! jobs = 4                        # default --jobs
//!
//! [gc]                            # automatic GC after each build
//! keep-storage = "10GB"
//! keep-duration = "48h"
//!
//! [registry."docker.io"]
//! mirrors = ["127.0.0.1:5001"]    # tried in order, then docker.io itself
//!
//! [registry."reg.internal:5000"]
//! http = true                     # plain HTTP
//! ca = ["/etc/ssl/internal-ca.pem"]
//! ```
//!
//! Unknown keys and malformed values are errors naming the file, line and
//! column: a typo must not silently leave a mirror or a GC limit unset.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::registry::RegistryOptions;

/// The parsed configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// The file it came from (`None`: no file, defaults).
    pub path: Option<PathBuf>,
    /// Default `--jobs`.
    pub jobs: Option<usize>,
    /// Automatic GC after a build.
    pub gc: GcPolicy,
    /// Per-registry settings, by host (`docker.io`, `localhost:5000`).
    pub registries: BTreeMap<String, RegistryConfig>,
}

/// When and how much the automatic GC prunes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcPolicy {
    /// Prune when the store holds more than this many bytes.
    pub keep_storage: Option<u64>,
    /// Keep cache used within this long.
    pub keep_duration: Option<Duration>,
}

/// One `[registry."HOST"]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Mirrors (`host[:port]`), tried in order before the registry.
    pub mirrors: Vec<String>,
    /// Reach it over plain HTTP.
    pub http: bool,
    /// Allow plain HTTP when no TLS server answers (as `--insecure-registry`).
    pub insecure: bool,
    /// CA certificate files (PEM) to trust, relative to the config file.
    pub ca: Vec<PathBuf>,
}

/// Why the configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Bad TOML, an unknown key or a bad value.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    jobs: Option<Spanned<i64>>,
    #[serde(default)]
    gc: RawGc,
    #[serde(default)]
    registry: BTreeMap<String, Spanned<RawRegistry>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawGc {
    keep_storage: Option<Spanned<String>>,
    keep_duration: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    #[serde(default)]
    mirrors: Vec<Spanned<String>>,
    #[serde(default)]
    http: bool,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    ca: Vec<Spanned<String>>,
}

/// 1-based line and column of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Go's `time.ParseDuration` units (`48h`, `1h30m`, `90s`), plus `d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (num, tail) = rest.split_at(num_end);
        let n: f64 = num.parse().ok()?;
        let unit_end = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let secs = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return None,
        };
        total += n * secs;
        rest = tail;
    }
    Some(Duration::from_secs_f64(total))
}

impl Config {
    /// Parses `text` (the contents of `path`).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |span: Option<Range<usize>>, message: String| {
            let (line, column) = line_column(text, span.map_or(0, |s| s.start));
            ConfigError::Invalid { path: path.to_path_buf(), line, column, message }
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| invalid(e.span(), e.message().to_string()))?;
        let jobs = match raw.jobs {
            None => None,
            Some(j) if *j.get_ref() >= 1 => Some(*j.get_ref() as usize),
            Some(j) => return Err(invalid(Some(j.span()), "`jobs` must be at least 1".into())),
        };
        let keep_storage = match raw.gc.keep_storage {
            None => None,
            Some(v) => Some(crate::commands::parse_size(v.get_ref()).map_err(|_| {
                invalid(Some(v.span()), format!("invalid `keep-storage = {:?}`: use a size like \"10GB\"", v.get_ref()))
            })?),
        };
        let keep_duration = match raw.gc.keep_duration {
            None => None,
            Some(v) => Some(parse_duration(v.get_ref()).ok_or_else(|| {
                invalid(
                    Some(v.span()),
                    format!("invalid `keep-duration = {:?}`: use a duration like \"48h\" or \"7d\"", v.get_ref()),
                )
            })?),
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let mut registries = BTreeMap::new();
        for (host, table) in raw.registry {
            let span = table.span();
            let table = table.into_inner();
            if host.is_empty() || host.contains(['/', ' ']) {
                return Err(invalid(Some(span), format!("`[registry.\"{host}\"]`: expected a registry host[:port]")));
            }
            let mut mirrors = Vec::new();
            for m in table.mirrors {
                let ok = !m.get_ref().is_empty() && !m.get_ref().contains(['/', ' ']);
                if !ok {
                    return Err(invalid(
                        Some(m.span()),
                        format!(
                            "mirror `{}` of `{host}`: expected host[:port] (no scheme or path; set `http = true` in \
                             the mirror's own `[registry.\"HOST\"]` table for plain HTTP)",
                            m.get_ref()
                        ),
                    ));
                }
                mirrors.push(m.into_inner());
            }
            let ca = table.ca.into_iter().map(|c| base.join(c.into_inner())).collect();
            registries.insert(host, RegistryConfig { mirrors, http: table.http, insecure: table.insecure, ca });
        }
        Ok(Config { path: Some(path.to_path_buf()), jobs, gc: GcPolicy { keep_storage, keep_duration }, registries })
    }

    /// Reads `explicit` (which must exist), else the default file if it
    /// exists, else the defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => match default_path() {
                Some(p) if p.is_file() => p,
                _ => return Ok(Config::default()),
            },
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        Config::parse(&text, &path)
    }

    /// Registries reached over plain HTTP (`http` or `insecure`).
    pub fn insecure_registries(&self) -> Vec<String> {
        self.registries.iter().filter(|(_, r)| r.http || r.insecure).map(|(h, _)| h.clone()).collect()
    }

    /// The registry options the file sets; `base` holds the command line's.
    pub fn registry_options(&self, mut base: RegistryOptions) -> RegistryOptions {
        base.insecure_registries.extend(self.insecure_registries());
        for (host, r) in &self.registries {
            if !r.mirrors.is_empty() {
                base.mirrors.insert(host.clone(), r.mirrors.clone());
            }
            base.extra_ca_files.extend(r.ca.iter().cloned());
        }
        base
    }
}

/// `$XDG_CONFIG_HOME/rbuild/config.toml`, else `~/.config/rbuild/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("rbuild/config.toml"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/rbuild/config.toml"))
}

// The configuration is process-wide, like `--root` and the user namespace:
// read once in `commands::run` and consulted where registries are reached,
// jobs are counted and a build ends, rather than threaded through every
// command's signature.
static CURRENT: OnceLock<Config> = OnceLock::new();

/// Makes `config` the process's configuration (first call wins).
pub fn install(config: Config) {
    let _ = CURRENT.set(config);
}

/// The process's configuration (the defaults before [`install`]).
pub fn current() -> &'static Config {
    CURRENT.get_or_init(Config::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/rbuild/config.toml"))
    }

    #[test]
    fn parses_what_buildkitd_users_set() {
        let c = parse(
            r#"
jobs = 3

[gc]
keep-storage = "10GB"
keep-duration = "48h"

[registry."docker.io"]
mirrors = ["127.0.0.1:5001", "mirror.example.com"]

[registry."reg.internal:5000"]
http = true
ca = ["certs/ca.pem", "/abs/ca.pem"]

[registry."old.internal"]
insecure = true
"#,
        )
        .unwrap();
        assert_eq!(c.jobs, Some(3));
        assert_eq!(c.gc.keep_storage, Some(10_000_000_000));
        assert_eq!(c.gc.keep_duration, Some(Duration::from_secs(48 * 3600)));
        assert_eq!(c.registries["docker.io"].mirrors, ["127.0.0.1:5001", "mirror.example.com"]);
        assert_eq!(
            c.registries["reg.internal:5000"].ca,
            [PathBuf::from("/etc/rbuild/certs/ca.pem"), "/abs/ca.pem".into()]
        );
        assert_eq!(c.insecure_registries(), ["old.internal", "reg.internal:5000"]);
        let opts = c.registry_options(RegistryOptions::default());
        assert_eq!(opts.mirrors["docker.io"].len(), 2);
        assert_eq!(opts.extra_ca_files.len(), 2);
        assert_eq!(parse("").unwrap(), Config { path: Some("/etc/rbuild/config.toml".into()), ..Config::default() });
    }

    #[test]
    fn unknown_keys_and_bad_values_name_file_line_and_column() {
        let table: &[(&str, &str)] = &[
            ("jobs = 2\nmirrors = []\n", "/etc/rbuild/config.toml:2:1: unknown field `mirrors`"),
            (
                "[gc]\nkeep-storage = \"10GB\"\nkeepduration = \"1h\"\n",
                "/etc/rbuild/config.toml:3:1: unknown field `keepduration`",
            ),
            ("[registry.\"docker.io\"]\nmirror = [\"x\"]\n", "/etc/rbuild/config.toml:2:1: unknown field `mirror`"),
            ("[gc]\nkeep-storage = \"ten\"\n", "/etc/rbuild/config.toml:2:16: invalid `keep-storage = \"ten\"`"),
            ("[gc]\nkeep-duration = \"2 weeks\"\n", "/etc/rbuild/config.toml:2:17: invalid `keep-duration"),
            ("jobs = 0\n", "/etc/rbuild/config.toml:1:8: `jobs` must be at least 1"),
            (
                "[registry.\"docker.io\"]\nmirrors = [\"https://m/x\"]\n",
                "/etc/rbuild/config.toml:2:12: mirror `https://m/x`",
            ),
            ("jobs = \n", "/etc/rbuild/config.toml:1:8:"),
        ];
        for (text, want) in table {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: got {e}");
        }
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("48h"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        for bad in ["", "h", "10", "10y", "1h 2m"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
