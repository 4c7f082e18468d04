//! The image configuration (OCI image config plus Docker's extensions).
//!
//! Our own type rather than `oci-spec`'s: that one drops `Healthcheck`,
//! `OnBuild`, `Shell` and `ArgsEscaped`, and its `HashMap`s serialise in
//! random order. Every map here is a `BTreeMap` so the JSON is canonical
//! (sorted keys) and its digest is stable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An empty JSON object, as Docker writes set members (`{"80/tcp":{}}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Docker's health check configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", cmd]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    /// Nanoseconds between checks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    /// Nanoseconds before a check is considered hung.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    /// Start period in nanoseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    /// Interval during the start period, in nanoseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    /// Consecutive failures before unhealthy.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The runtime part of the image config (`config` key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// `user[:group]`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `port/proto` set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, Empty>,
    /// `KEY=value`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Entrypoint argv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Volume set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Empty>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Stop signal.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    /// Docker: health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// Docker: CMD/ENTRYPOINT in shell form were already escaped (Windows).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_escaped: bool,
    /// Docker: ONBUILD triggers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_build: Vec<String>,
    /// Docker: SHELL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shell: Vec<String>,
}

/// One history entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction, as BuildKit writes it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_by: String,
    /// Comment (`buildkit.dockerfile.v0`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// True when the step added no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// Layer diff ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Uncompressed layer digests, base first.
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs { kind: "layers".into(), diff_ids: Vec::new() }
    }
}

/// The image configuration blob.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Creation time, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author (MAINTAINER).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author: String,
    /// GOARCH.
    #[serde(default)]
    pub architecture: String,
    /// GOOS.
    #[serde(default)]
    pub os: String,
    /// Architecture variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Runtime configuration.
    #[serde(default)]
    pub config: ContainerConfig,
    /// Layer diff ids.
    #[serde(default)]
    pub rootfs: RootFs,
    /// History, one entry per step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// The inline build cache of `--cache-to type=inline`: the records of
    /// the image's own steps, in the format of the cache config blob
    /// (`docs/cache-format.md`). Kept as raw JSON so a malformed value in a
    /// base image never fails the pull; never inherited from a base (the
    /// exporter sets or clears it).
    #[serde(rename = "org.rbuild.cache.v1", default, skip_serializing_if = "Option::is_none")]
    pub inline_cache: Option<serde_json::Value>,
}

impl ImageConfig {
    /// Canonical JSON bytes (struct order, sorted maps, no spaces).
    pub fn to_canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("image config always serialises")
    }

    /// Looks up `key` in `Env`.
    pub fn env_get(&self, key: &str) -> Option<&str> {
        self.config.env.iter().rev().find_map(|e| {
            let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
            (k == key).then_some(v)
        })
    }

    /// Sets `key=value` in `Env`, replacing an existing entry in place.
    pub fn env_set(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self.config.env.iter_mut().find(|e| e.split_once('=').map(|(k, _)| k) == Some(key) || e.as_str() == key) {
            Some(slot) => *slot = entry,
            None => self.config.env.push(entry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_docker_extensions_and_sorts_maps() {
        let mut c = ImageConfig { architecture: "amd64".into(), os: "linux".into(), ..Default::default() };
        c.config.labels.insert("z".into(), "1".into());
        c.config.labels.insert("a".into(), "2".into());
        c.config.shell = vec!["/bin/sh".into(), "-c".into()];
        c.config.on_build = vec!["RUN true".into()];
        c.config.healthcheck = Some(HealthConfig { test: vec!["NONE".into()], ..Default::default() });
        let json = String::from_utf8(c.to_canonical_json()).unwrap();
        assert!(json.contains(r#""Labels":{"a":"2","z":"1"}"#), "{json}");
        assert!(json.contains(r#""Shell":["/bin/sh","-c"]"#));
        assert!(json.contains(r#""OnBuild":["RUN true"]"#));
        assert!(json.contains(r#""Healthcheck":{"Test":["NONE"]}"#));
        let back: ImageConfig = serde_json::from_slice(json.as_bytes()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn env_set_replaces_in_place() {
        let mut c = ImageConfig::default();
        c.env_set("PATH", "/bin");
        c.env_set("A", "1");
        c.env_set("PATH", "/usr/bin");
        assert_eq!(c.config.env, vec!["PATH=/usr/bin", "A=1"]);
        assert_eq!(c.env_get("A"), Some("1"));
    }
}
