//! The OCI formats, in one place: digests, platforms, descriptors,
//! manifests, indexes, the image config and media types.
//!
//! The store, the remote cache, the registry client and the exporters all
//! speak these. Our own serde types rather than `oci-spec`'s: its
//! `annotations` are `HashMap`s that serialise in random order, and these
//! bytes are digested. Field order follows the Go `image-spec` structs, maps
//! are `BTreeMap`s.

mod config;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use config::{ContainerConfig, Empty, HealthConfig, History, ImageConfig, RootFs};

/// A SHA-256 digest, printed as `sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// Lower-case hex without the algorithm prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses `sha256:<64 hex>`.
    pub fn parse(s: &str) -> Option<Self> {
        let hex_part = s.strip_prefix("sha256:")?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).ok()?;
        Some(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", &self.hex()[..12])
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // On the stack: digests are serialised for every vertex's identity.
        let mut buf = [0u8; 71];
        buf[..7].copy_from_slice(b"sha256:");
        hex::encode_to_slice(self.0, &mut buf[7..]).expect("64 hex digits fit");
        s.serialize_str(std::str::from_utf8(&buf).expect("ASCII"))
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("invalid digest `{s}`")))
    }
}

/// An OCI platform (`linux/amd64`, `linux/arm64/v8`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// Architecture in GOARCH spelling, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// Variant, e.g. `v7` for `arm/v7`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this process runs on.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform { os: "linux".into(), architecture: architecture.into(), variant: None }
    }

    /// Parses `os/arch[/variant]`; a bare `arch` means `linux/arch`.
    /// `None` where [`Platform::try_parse`] fails.
    pub fn parse(s: &str) -> Option<Self> {
        Self::try_parse(s).ok()
    }

    /// Parses `os/arch[/variant]` (a bare `arch` means `linux/arch`) and
    /// normalises it as containerd's `platforms.Parse` does. Each component
    /// must be letters, digits, `_` or `-` (containerd's specifier rule):
    /// platforms end up in paths, references and cache keys, so `..` or
    /// `/` in one is never accepted.
    pub fn try_parse(s: &str) -> Result<Self, PlatformError> {
        let invalid = |reason: String| PlatformError { value: s.to_string(), reason };
        let parts: Vec<&str> = s.trim().split('/').collect();
        if parts.len() > 3 {
            return Err(invalid(format!("{} components, at most 3 allowed", parts.len())));
        }
        for (part, what) in parts.iter().zip(if parts.len() == 1 {
            ["architecture"].iter()
        } else {
            ["os", "architecture", "variant"].iter()
        }) {
            if part.is_empty() {
                return Err(invalid(format!("the {what} is empty")));
            }
            if let Some(c) = part.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
                return Err(invalid(format!(
                    "the {what} `{part}` contains `{}`: only letters, digits, `_` and `-` are allowed",
                    c.escape_debug()
                )));
            }
        }
        let (os, arch, variant) = match parts.as_slice() {
            [arch] => ("linux", *arch, None),
            [os, arch] => (*os, *arch, None),
            [os, arch, v] => (*os, *arch, Some(v.to_string())),
            _ => return Err(invalid("it is empty".to_string())),
        };
        let os = os.to_ascii_lowercase();
        let mut architecture = arch.to_ascii_lowercase();
        let mut variant = variant.map(|v| v.to_ascii_lowercase());
        // Normalise as containerd's platforms package does.
        match architecture.as_str() {
            "x86_64" | "x86-64" => architecture = "amd64".into(),
            "aarch64" => {
                architecture = "arm64".into();
            }
            "armhf" => {
                architecture = "arm".into();
                variant = Some("v7".into());
            }
            "armel" => {
                architecture = "arm".into();
                variant = Some("v6".into());
            }
            _ => {}
        }
        if architecture == "arm64" && variant.as_deref() == Some("v8") {
            variant = None;
        }
        if architecture == "amd64" && variant.as_deref() == Some("v1") {
            variant = None;
        }
        Ok(Platform { os, architecture, variant })
    }
}

/// A platform string that is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform `{value}`: {reason}")]
pub struct PlatformError {
    /// The string as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// OCI image manifest media type.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI layer, uncompressed tar.
pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip-compressed tar.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd-compressed tar.
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker schema 2 manifest media type.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker gzip layer media type.
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// `sha256:<hex>` of `bytes`, as descriptors spell digests.
pub fn sha256_digest(bytes: &[u8]) -> String {
    Digest::of(bytes).to_string()
}

/// Whether `media_type` is an image index or a Docker manifest list.
pub fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_INDEX || media_type == MEDIA_TYPE_DOCKER_MANIFEST_LIST
}

/// A layer media type in its OCI spelling (Docker's gzip type, or none at
/// all, mean OCI gzip).
pub fn normalize_layer_media_type(media_type: &str) -> String {
    match media_type {
        MEDIA_TYPE_DOCKER_LAYER_GZIP | "" => MEDIA_TYPE_LAYER_GZIP.into(),
        other => other.to_string(),
    }
}

/// The compression of a layer media type, by the name the store keys layer
/// blobs with (`gzip`, `zstd`, `uncompressed`).
pub fn layer_compression_name(media_type: &str) -> &'static str {
    if media_type.ends_with("+zstd") {
        "zstd"
    } else if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
        "gzip"
    } else {
        "uncompressed"
    }
}

/// An OCI content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content (may be absent in documents we
    /// read: OCI allows leaving it out in some places).
    #[serde(default)]
    pub media_type: String,
    /// `algorithm:hex` of the content. A string, not a [`Digest`]: foreign
    /// documents may use `sha512`.
    pub digest: String,
    /// Size of the content in bytes.
    pub size: u64,
    /// Annotations (sorted, so the JSON is canonical).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Platform of a manifest listed in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// An OCI image manifest (Docker schema 2 manifests parse into it too).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    #[serde(default)]
    pub schema_version: u32,
    /// [`MEDIA_TYPE_MANIFEST`] for the manifests we write.
    #[serde(default)]
    pub media_type: String,
    /// The image config blob.
    pub config: Descriptor,
    /// Layer blobs, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image index (Docker manifest lists parse into it too).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    #[serde(default)]
    pub schema_version: u32,
    /// [`MEDIA_TYPE_INDEX`] for the indexes we write (the OCI layout's
    /// `index.json` leaves it out).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    /// The manifests, in order.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A layer blob as it appears in a manifest, plus its uncompressed digest:
/// what the layer writer produces, the store records per snapshot, and the
/// solver hands around with snapshot chains. Its JSON (snake_case) is part
/// of the store's index format.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LayerDescriptor {
    /// Digest of the compressed blob (`sha256:<hex>`).
    pub digest: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// Size of the compressed blob in bytes.
    pub size: u64,
    /// OCI media type of the blob.
    pub media_type: String,
}

impl LayerDescriptor {
    /// The manifest descriptor of this layer.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_documents_parse_into_the_oci_types() {
        let list = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
            "manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:aa","size":7,
            "platform":{"architecture":"arm","os":"linux","variant":"v7","os.features":["x"]}}]}"#;
        let index: Index = serde_json::from_slice(list).unwrap();
        assert!(is_index(&index.media_type));
        assert_eq!(index.manifests[0].platform.as_ref().unwrap().to_string(), "linux/arm/v7");
        let manifest = br#"{"schemaVersion":2,"config":{"digest":"sha256:cc","size":1},
            "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:ll","size":3}]}"#;
        let m: Manifest = serde_json::from_slice(manifest).unwrap();
        assert_eq!(m.media_type, "");
        assert_eq!(normalize_layer_media_type(&m.layers[0].media_type), MEDIA_TYPE_LAYER_GZIP);
        assert_eq!(layer_compression_name(&m.layers[0].media_type), "gzip");
        assert_eq!(layer_compression_name(MEDIA_TYPE_LAYER_ZSTD), "zstd");
        assert_eq!(layer_compression_name(MEDIA_TYPE_LAYER_TAR), "uncompressed");
    }

    #[test]
    fn layer_descriptor_json_is_the_store_format() {
        let l =
            LayerDescriptor { digest: "sha256:a".into(), diff_id: "sha256:b".into(), size: 3, media_type: "m".into() };
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"digest":"sha256:a","diff_id":"sha256:b","size":3,"media_type":"m"}"#
        );
    }
}
