//! Building OCI manifest and index documents (types in
//! [`rbuild_cache::oci`]), and the bundle handed to exporters.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rbuild_cache::oci::{
    Descriptor, Index, LayerDescriptor, MEDIA_TYPE_CONFIG, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, Manifest, Platform, sha256_digest,
};
use serde::Serialize;

use super::ExportError;

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain structs, strings and BTreeMaps: serialisation cannot fail.
    serde_json::to_vec(v).expect("descriptor types always serialise")
}

/// Builds the OCI image manifest for `config_json` and `layers` (base
/// first). Returns the manifest bytes (canonical JSON), its digest and the
/// config digest.
pub fn build_manifest(
    config_json: &[u8],
    layers: &[LayerDescriptor],
    annotations: BTreeMap<String, String>,
) -> (Vec<u8>, String, String) {
    let config_digest = sha256_digest(config_json);
    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_TYPE_MANIFEST.into(),
        config: Descriptor {
            media_type: MEDIA_TYPE_CONFIG.into(),
            digest: config_digest.clone(),
            size: config_json.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        },
        layers: layers
            .iter()
            .map(|l| Descriptor {
                media_type: l.media_type.clone(),
                digest: l.digest.clone(),
                size: l.size,
                annotations: BTreeMap::new(),
                platform: None,
            })
            .collect(),
        annotations,
    };
    let bytes = to_json(&manifest);
    let digest = sha256_digest(&bytes);
    (bytes, digest, config_digest)
}

/// Builds an OCI image index over per-platform manifests, in the given
/// order.
pub fn build_index(manifests: &[(Vec<u8>, Platform)]) -> Vec<u8> {
    let entries: Vec<IndexEntry> = manifests
        .iter()
        .map(|(manifest, platform)| IndexEntry {
            manifest: manifest.clone(),
            platform: platform.clone(),
            annotations: BTreeMap::new(),
        })
        .collect();
    build_annotated_index(&entries, BTreeMap::new())
}

/// One manifest of an index, with its descriptor's annotations.
#[derive(Clone, Debug)]
pub struct IndexEntry {
    /// The manifest bytes.
    pub manifest: Vec<u8>,
    /// Its platform.
    pub platform: Platform,
    /// Annotations on its descriptor.
    pub annotations: BTreeMap<String, String>,
}

/// Builds an OCI image index over `entries`, in order, carrying
/// `annotations`.
pub fn build_annotated_index(entries: &[IndexEntry], annotations: BTreeMap<String, String>) -> Vec<u8> {
    let index = Index {
        schema_version: 2,
        media_type: MEDIA_TYPE_INDEX.into(),
        manifests: entries
            .iter()
            .map(|e| Descriptor {
                media_type: MEDIA_TYPE_MANIFEST.into(),
                digest: sha256_digest(&e.manifest),
                size: e.manifest.len() as u64,
                annotations: e.annotations.clone(),
                platform: Some(e.platform.clone()),
            })
            .collect(),
        annotations,
    };
    to_json(&index)
}

/// One platform's image: manifest, config and layer blobs.
#[derive(Clone, Debug)]
pub struct PlatformImage {
    /// Manifest bytes (from [`build_manifest`]).
    pub manifest: Vec<u8>,
    /// Config bytes (`ImageConfig::to_canonical_json`).
    pub config: Vec<u8>,
    /// Layers, base first, each with the file holding its blob.
    pub layers: Vec<(LayerDescriptor, PathBuf)>,
}

/// What the exporters write: one image, or several platforms under an
/// index, plus the names given with `-t`.
#[derive(Clone, Debug)]
pub struct ImageBundle {
    /// The images; exactly one unless `index` is set.
    pub images: Vec<PlatformImage>,
    /// Index bytes (from [`build_index`]) over `images`' manifests.
    pub index: Option<Vec<u8>>,
    /// Image names (`-t`), e.g. `app:1.0`, `localhost:5000/ns/app`.
    pub names: Vec<String>,
    /// The documents carry Docker schema-2 media types (see
    /// [`ImageBundle::with_docker_media_types`]).
    pub docker_media_types: bool,
    /// Annotations of the top-level document's descriptor in a layout's
    /// `index.json`.
    pub top_annotations: BTreeMap<String, String>,
}

/// A blob of the bundle, in memory or in a file.
pub(crate) enum BlobData<'a> {
    Bytes(&'a [u8]),
    File(&'a std::path::Path),
}

/// A blob to write, with its descriptor fields.
pub(crate) struct Blob<'a> {
    pub digest: String,
    pub size: u64,
    pub data: BlobData<'a>,
}

impl ImageBundle {
    /// A single-platform bundle.
    #[cfg(test)]
    pub fn single(
        manifest: Vec<u8>,
        config: Vec<u8>,
        layers: Vec<(LayerDescriptor, PathBuf)>,
        names: Vec<String>,
    ) -> Self {
        ImageBundle {
            images: vec![PlatformImage { manifest, config, layers }],
            index: None,
            names,
            docker_media_types: false,
            top_annotations: BTreeMap::new(),
        }
    }

    /// The same images with Docker schema-2 media types
    /// (`oci-mediatypes=false`): each manifest converted, and the index
    /// becomes a manifest list whose entries point at the converted
    /// manifests (new digests and sizes). Configs and layers are unchanged.
    pub(crate) fn with_docker_media_types(&self) -> Result<ImageBundle, ExportError> {
        let encode = |what| move |source| ExportError::Encode { what, source };
        let mut moved: BTreeMap<String, (String, u64)> = BTreeMap::new();
        let mut images = Vec::with_capacity(self.images.len());
        for image in &self.images {
            let manifest = super::mediatypes::to_docker(&image.manifest).map_err(encode("manifest"))?;
            moved.insert(sha256_digest(&image.manifest), (sha256_digest(&manifest), manifest.len() as u64));
            images.push(PlatformImage { manifest, ..image.clone() });
        }
        let index = match &self.index {
            None => None,
            Some(bytes) => {
                let mut index: Index = serde_json::from_slice(bytes).map_err(encode("index"))?;
                for entry in &mut index.manifests {
                    let (digest, size) = moved
                        .get(&entry.digest)
                        .ok_or(ExportError::BadBundle("an index entry is not one of the bundle's manifests"))?;
                    entry.digest = digest.clone();
                    entry.size = *size;
                }
                Some(super::mediatypes::to_docker(&to_json(&index)).map_err(encode("index"))?)
            }
        };
        Ok(ImageBundle {
            images,
            index,
            names: self.names.clone(),
            docker_media_types: true,
            top_annotations: self.top_annotations.clone(),
        })
    }

    /// The top-level document: (media type, bytes).
    pub(crate) fn top(&self) -> Result<(&'static str, &[u8]), ExportError> {
        let (index_type, manifest_type) = if self.docker_media_types {
            (MEDIA_TYPE_DOCKER_MANIFEST_LIST, MEDIA_TYPE_DOCKER_MANIFEST)
        } else {
            (MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST)
        };
        match (&self.index, self.images.as_slice()) {
            (Some(index), [_, ..]) => Ok((index_type, index)),
            (None, [one]) => Ok((manifest_type, &one.manifest)),
            (_, []) => Err(ExportError::BadBundle("the image bundle has no image")),
            (None, _) => Err(ExportError::BadBundle("several images need an index")),
        }
    }

    /// Every blob (index, manifests, configs, layers), deduplicated by
    /// digest and sorted, so archives list them in a stable order.
    pub(crate) fn blobs(&self) -> Vec<Blob<'_>> {
        let mut map: BTreeMap<String, Blob<'_>> = BTreeMap::new();
        let mut docs: Vec<&[u8]> = self.index.iter().map(Vec::as_slice).collect();
        for img in &self.images {
            docs.push(&img.manifest);
            docs.push(&img.config);
        }
        for bytes in docs {
            let d = sha256_digest(bytes);
            map.entry(d.clone()).or_insert(Blob { digest: d, size: bytes.len() as u64, data: BlobData::Bytes(bytes) });
        }
        for img in &self.images {
            for (info, path) in &img.layers {
                map.entry(info.digest.clone()).or_insert(Blob {
                    digest: info.digest.clone(),
                    size: info.size,
                    data: BlobData::File(path),
                });
            }
        }
        map.into_values().collect()
    }
}

/// An image name split the way the OCI layout and docker-archive need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ImageName {
    /// Fully qualified: `docker.io/library/app:1.0`.
    pub full: String,
    /// Docker's short form: `app:1.0`.
    pub familiar: String,
    /// Repository in familiar form: `app`.
    pub familiar_repo: String,
    /// The tag: `1.0` (`latest` when none was given).
    pub tag: String,
}

/// Parses `-t` names with Docker's normalisation.
pub(crate) fn parse_name(name: &str) -> Result<ImageName, ExportError> {
    let bad = || ExportError::InvalidName(name.to_string());
    if name.is_empty() || name.contains('@') || name.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    let (repo, tag) = match name.rfind(':') {
        Some(i) if !name[i + 1..].contains('/') => (&name[..i], &name[i + 1..]),
        _ => (name, "latest"),
    };
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !tag_ok || repo.is_empty() {
        return Err(bad());
    }
    let (domain, path) = match repo.split_once('/') {
        Some((d, rest)) if d.contains(['.', ':']) || d == "localhost" || d.chars().any(|c| c.is_ascii_uppercase()) => {
            (d, rest.to_string())
        }
        _ => ("docker.io", repo.to_string()),
    };
    let path = if domain == "docker.io" && !path.contains('/') { format!("library/{path}") } else { path };
    let path_ok = path.split('/').all(|c| {
        !c.is_empty()
            && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-'))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
    });
    if !path_ok {
        return Err(bad());
    }
    let full_repo = format!("{domain}/{path}");
    let familiar_repo = if domain == "docker.io" {
        path.strip_prefix("library/").unwrap_or(&path).to_string()
    } else {
        full_repo.clone()
    };
    Ok(ImageName {
        full: format!("{full_repo}:{tag}"),
        familiar: format!("{familiar_repo}:{tag}"),
        familiar_repo,
        tag: tag.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(d: &str) -> LayerDescriptor {
        LayerDescriptor {
            digest: format!("sha256:{}", d.repeat(64)),
            diff_id: format!("sha256:{}", "f".repeat(64)),
            size: 42,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        }
    }

    #[test]
    fn manifest_is_canonical_and_digested() {
        let mut ann = BTreeMap::new();
        ann.insert("z".to_string(), "1".to_string());
        ann.insert("a".to_string(), "2".to_string());
        let (bytes, digest, config_digest) = build_manifest(b"{}", &[layer("a"), layer("b")], ann);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}"#), "{text}");
        assert!(text.ends_with(r#""annotations":{"a":"2","z":"1"}}"#), "{text}");
        assert_eq!(digest, sha256_digest(&bytes));
        assert_eq!(config_digest, sha256_digest(b"{}"));
        let m: Manifest = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(m.layers.len(), 2);
        assert_eq!(m.layers[1].digest, layer("b").digest);
    }

    #[test]
    fn index_lists_platforms() {
        let amd = Platform { os: "linux".into(), architecture: "amd64".into(), variant: None };
        let arm = Platform { os: "linux".into(), architecture: "arm".into(), variant: Some("v7".into()) };
        let idx = build_index(&[(b"m1".to_vec(), amd), (b"m2".to_vec(), arm)]);
        let v: serde_json::Value = serde_json::from_slice(&idx).unwrap();
        assert_eq!(v["mediaType"], MEDIA_TYPE_INDEX);
        assert_eq!(v["manifests"][0]["digest"], sha256_digest(b"m1"));
        assert_eq!(v["manifests"][0]["platform"], serde_json::json!({"os":"linux","architecture":"amd64"}));
        assert_eq!(v["manifests"][1]["platform"]["variant"], "v7");
    }

    #[test]
    fn names_normalise_like_docker() {
        let n = parse_name("app").unwrap();
        assert_eq!(
            (n.full.as_str(), n.familiar.as_str(), n.tag.as_str()),
            ("docker.io/library/app:latest", "app:latest", "latest")
        );
        let n = parse_name("me/app:1.0").unwrap();
        assert_eq!((n.full.as_str(), n.familiar.as_str()), ("docker.io/me/app:1.0", "me/app:1.0"));
        let n = parse_name("localhost:5000/ns/app").unwrap();
        assert_eq!(
            (n.full.as_str(), n.familiar.as_str(), n.tag.as_str()),
            ("localhost:5000/ns/app:latest", "localhost:5000/ns/app:latest", "latest")
        );
        let n = parse_name("docker.io/library/busybox:1.36").unwrap();
        assert_eq!(n.familiar, "busybox:1.36");
        for bad in ["", "App", "a:", "a:-x", "a b", "a@sha256:00", "a//b"] {
            assert!(parse_name(bad).is_err(), "{bad}");
        }
    }
}
