//! The remote build-cache format (see `docs/cache-format.md`) and the moves
//! of its blobs through [`BlobSource`] / [`BlobSink`] traits: the builder
//! implements them with the registry client, [`layout`] with an OCI image
//! layout on disk.
//!
//! A cache artifact is a plain OCI image manifest whose config blob
//! ([`MEDIA_TYPE_CACHE_CONFIG`]) holds the records — for each platform, for
//! each cache key, the layer blobs of that key's snapshot chain — and whose
//! layers are every blob the records name. [`export`] builds one from the
//! local store's records, merged with the artifact already at the target;
//! [`import`] reads one and turns a record into snapshots only when a
//! build needs the files.

pub mod export;
pub mod import;
pub mod layout;
#[cfg(test)]
mod layout_tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::oci::{Descriptor, LayerDescriptor, MEDIA_TYPE_MANIFEST, Manifest};
use crate::store::StoreError;

pub use export::{ExportPlan, ExportStats, MERGE_ATTEMPTS, MountToExport, SETTLE, Written, confirm, export, write};
pub use import::ImportedCache;

/// Media type of the config blob holding the records.
pub const MEDIA_TYPE_CACHE_CONFIG: &str = "application/vnd.rbuild.cache.config.v1+json";
/// Version of the records format in [`CacheConfig::version`]. Once released,
/// a version never changes meaning; readers refuse versions they do not know.
pub const CACHE_FORMAT_VERSION: u32 = 1;
/// Manifest annotation naming the format (so tools listing a registry can
/// tell a cache artifact from an image).
pub const ANNOTATION_FORMAT: &str = "org.rbuild.cache.format";

/// The records of one cache artifact (its config blob).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    /// [`CACHE_FORMAT_VERSION`].
    pub version: u32,
    /// Records by platform (`os/arch[/variant]`, the platform of the build
    /// that exported them); each platform's records are replaced only by an
    /// export of the same platform.
    pub platforms: BTreeMap<String, BTreeMap<String, CacheEntry>>,
    /// `cache-mounts=true`: the contents of `RUN --mount=type=cache`
    /// directories by mount id. Added in version 1 as an optional key
    /// (absent when empty), so readers that do not know it ignore it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mounts: BTreeMap<String, MountEntry>,
}

/// The exported contents of one cache mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountEntry {
    /// The mount's `sharing=` (`shared`, `private` or `locked`) in the build
    /// that exported it.
    pub sharing: String,
    /// A layer-format tar of the directory (its root is the mount's root).
    pub layer: LayerDescriptor,
}

/// What one cache key (the solver's key, `sha256:<hex>`) resolves to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The snapshot chain, base first: the layer blob of each snapshot, or
    /// `null` for a snapshot with an empty diff (it has no blob).
    pub layers: Vec<Option<LayerDescriptor>>,
}

impl CacheConfig {
    /// An empty config of the current version.
    pub fn new() -> Self {
        CacheConfig { version: CACHE_FORMAT_VERSION, platforms: BTreeMap::new(), mounts: BTreeMap::new() }
    }

    /// Parses and validates a config blob: the version must be known and
    /// every layer digest a valid `sha256:<hex>`, as the blob comes from a
    /// registry or directory this build does not control.
    pub fn parse(bytes: &[u8]) -> Result<CacheConfig, RemoteError> {
        let config: CacheConfig = serde_json::from_slice(bytes).map_err(RemoteError::ParseConfig)?;
        if config.version != CACHE_FORMAT_VERSION {
            return Err(RemoteError::UnknownVersion(config.version));
        }
        let records = config.platforms.values().flat_map(|r| r.values()).flat_map(|e| e.layers.iter().flatten());
        for layer in records.chain(config.mounts.values().map(|m| &m.layer)) {
            if crate::oci::Digest::parse(&layer.digest).is_none() {
                return Err(RemoteError::InvalidDigest(layer.digest.clone()));
            }
        }
        Ok(config)
    }

    /// The canonical JSON of the config (sorted maps, no whitespace).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("cache config serialises")
    }

    /// Every distinct layer blob the records name, in first-seen order
    /// (platforms and keys sorted), then the cache mounts' blobs (ids
    /// sorted).
    pub fn layers(&self) -> Vec<LayerDescriptor> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        let records = self.platforms.values().flat_map(|r| r.values()).flat_map(|e| e.layers.iter().flatten());
        for layer in records.chain(self.mounts.values().map(|m| &m.layer)) {
            if seen.insert(layer.digest.clone()) {
                out.push(layer.clone());
            }
        }
        out
    }

    /// The manifest of an artifact with this config (bytes as given).
    pub fn manifest(&self, config: &[u8]) -> Vec<u8> {
        let manifest = Manifest {
            schema_version: 2,
            media_type: MEDIA_TYPE_MANIFEST.to_string(),
            config: Descriptor {
                media_type: MEDIA_TYPE_CACHE_CONFIG.to_string(),
                digest: crate::oci::sha256_digest(config),
                size: config.len() as u64,
                annotations: BTreeMap::new(),
                platform: None,
            },
            layers: self.layers().iter().map(LayerDescriptor::descriptor).collect(),
            annotations: [(ANNOTATION_FORMAT.to_string(), format!("v{CACHE_FORMAT_VERSION}"))].into(),
        };
        serde_json::to_vec(&manifest).expect("manifest serialises")
    }
}

/// Why a transport (registry, directory) failed; the builder's errors are
/// boxed so `cache` stays free of HTTP types.
pub type TransportError = Box<dyn std::error::Error + Send + Sync>;

/// Where a cache artifact is read from.
pub trait BlobSource: Send + Sync {
    /// What the source is, for messages (`REG/cache:w`, a directory).
    fn name(&self) -> String;
    /// The artifact's manifest and config bytes, or `None` when there is no
    /// artifact (yet).
    fn read_artifact(&self) -> Result<Option<(Manifest, Vec<u8>)>, TransportError>;
    /// Streams blob `digest` (`size` bytes) into `out`.
    fn fetch_blob(&self, digest: &str, size: u64, out: &mut (dyn std::io::Write + Send)) -> Result<(), TransportError>;
}

/// Where a cache artifact is written to.
pub trait BlobSink: Send + Sync {
    /// What the sink is, for messages.
    fn name(&self) -> String;
    /// The artifact now at the target (to merge with), if any.
    fn read_artifact(&self) -> Result<Option<(Manifest, Vec<u8>)>, TransportError>;
    /// Whether the target already holds blob `digest`.
    fn has_blob(&self, digest: &str) -> Result<bool, TransportError>;
    /// Writes the blobs in `layers` that the target lacks (each with its
    /// file), then the config blob: everything the manifest will name.
    fn write_blobs(&self, config: &[u8], layers: &[(LayerDescriptor, PathBuf)]) -> Result<(), TransportError>;
    /// Points the target at `manifest` (its blobs are written): the
    /// target never holds a manifest whose blobs are missing.
    fn write_manifest(&self, manifest: &[u8]) -> Result<(), TransportError>;
}

/// Failures of remote-cache import and export.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The config blob is not valid records JSON.
    #[error("invalid cache config")]
    ParseConfig(#[source] serde_json::Error),
    /// The config blob is of a format version this rbuild does not know.
    #[error("cache format version {0} is not supported (this rbuild reads version 1); export the cache again")]
    UnknownVersion(u32),
    /// A record names a blob by something that is not a sha256 digest.
    #[error("invalid layer digest `{0}` in cache records")]
    InvalidDigest(String),
    /// The manifest's config is not a cache config.
    #[error("`{name}` is not an rbuild cache (config media type `{media_type}`)")]
    NotACache {
        /// The source.
        name: String,
        /// Its config's media type.
        media_type: String,
    },
    /// Reading from the source or writing to the sink failed.
    #[error("{what} `{name}`")]
    Transport {
        /// What was being done.
        what: &'static str,
        /// The source or sink.
        name: String,
        /// The transport's error.
        #[source]
        source: TransportError,
    },
    /// Concurrent exports kept replacing the artifact at the target.
    #[error(
        "`{name}`: another export replaced the cache artifact during each of {attempts} read-merge-write rounds; the cache there is intact but lacks this build's records (export again, or give concurrent builds their own refs)"
    )]
    ConcurrentExport {
        /// The target.
        name: String,
        /// Rounds made.
        attempts: u32,
    },
    /// A downloaded blob is not what the records promise.
    #[error("cache blob `{digest}` has {actual} bytes, the records say {expected}")]
    SizeMismatch {
        /// The blob.
        digest: String,
        /// Size in the records.
        expected: u64,
        /// Size received.
        actual: u64,
    },
    /// The store failed (a wrong digest is a [`StoreError::DigestMismatch`]).
    #[error("store")]
    Store(#[from] StoreError),
    /// Unpacking a blob failed.
    #[error("unpacking cache blob `{digest}`")]
    Unpack {
        /// The blob.
        digest: String,
        /// Cause.
        #[source]
        source: crate::layer::UnpackError,
    },
    /// Opening a blob file failed.
    #[error("reading `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing the tar of a cache mount failed.
    #[error("writing the contents of cache mount `{id}`")]
    WriteMount {
        /// The mount id.
        id: String,
        /// Cause.
        #[source]
        source: crate::layer::LayerWriteError,
    },
    /// Unpacking a cache mount's blob failed.
    #[error("seeding cache mount `{id}`")]
    SeedMount {
        /// The mount id.
        id: String,
        /// Cause.
        #[source]
        source: crate::layer::UnpackError,
    },
    /// Writing a layer for a snapshot failed.
    #[error("writing the layer of snapshot `{snapshot}`")]
    WriteLayer {
        /// The snapshot.
        snapshot: String,
        /// Cause.
        #[source]
        source: crate::layer::LayerWriteError,
    },
}

/// Reads and checks an artifact's records from `source`.
pub fn read_config(name: &str, artifact: Option<(Manifest, Vec<u8>)>) -> Result<Option<CacheConfig>, RemoteError> {
    let Some((manifest, config)) = artifact else { return Ok(None) };
    if manifest.config.media_type != MEDIA_TYPE_CACHE_CONFIG {
        return Err(RemoteError::NotACache { name: name.to_string(), media_type: manifest.config.media_type });
    }
    CacheConfig::parse(&config).map(Some)
}

/// Whether `path` is an empty directory (a snapshot with no changes).
pub(crate) fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).map(|mut d| d.next().is_none()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: u8) -> LayerDescriptor {
        LayerDescriptor {
            digest: format!("sha256:{}", hex::encode([n; 32])),
            diff_id: format!("sha256:{}", hex::encode([n + 100; 32])),
            size: n as u64,
            media_type: crate::oci::MEDIA_TYPE_LAYER_GZIP.into(),
        }
    }

    #[test]
    fn config_round_trips_and_lists_each_blob_once() {
        let mut c = CacheConfig::new();
        let entry = CacheEntry { layers: vec![Some(layer(1)), None, Some(layer(2))] };
        c.platforms.entry("linux/amd64".into()).or_default().insert("sha256:aa".into(), entry.clone());
        c.platforms.entry("linux/arm64".into()).or_default().insert("sha256:bb".into(), entry);
        let bytes = c.to_json();
        assert_eq!(CacheConfig::parse(&bytes).unwrap(), c);
        assert_eq!(c.layers().len(), 2);
        let m: Manifest = serde_json::from_slice(&c.manifest(&bytes)).unwrap();
        assert_eq!(m.config.media_type, MEDIA_TYPE_CACHE_CONFIG);
        assert_eq!(m.config.digest, crate::oci::sha256_digest(&bytes));
        assert_eq!(m.layers.len(), 2);
    }

    #[test]
    fn mounts_are_an_optional_key_of_version_1() {
        let mut c = CacheConfig::new();
        // Without mounts the bytes are those of a config written before the
        // key existed.
        assert_eq!(c.to_json(), br#"{"version":1,"platforms":{}}"#);
        c.mounts.insert("go".into(), MountEntry { sharing: "locked".into(), layer: layer(3) });
        let bytes = c.to_json();
        assert_eq!(CacheConfig::parse(&bytes).unwrap(), c);
        assert_eq!(c.layers(), vec![layer(3)]);
        let bad = br#"{"version":1,"platforms":{},"mounts":{"go":{"sharing":"shared","layer":{"digest":"../x","diff_id":"x","size":1,"media_type":"m"}}}}"#;
        assert!(matches!(CacheConfig::parse(bad), Err(RemoteError::InvalidDigest(_))));
    }

    #[test]
    fn foreign_configs_are_refused() {
        assert!(matches!(CacheConfig::parse(br#"{"version":2,"platforms":{}}"#), Err(RemoteError::UnknownVersion(2))));
        let bad = br#"{"version":1,"platforms":{"linux/amd64":{"k":{"layers":[{"digest":"../../etc","diff_id":"x","size":1,"media_type":"m"}]}}}}"#;
        assert!(matches!(CacheConfig::parse(bad), Err(RemoteError::InvalidDigest(_))));
        assert!(matches!(CacheConfig::parse(b"{"), Err(RemoteError::ParseConfig(_))));
    }
}
