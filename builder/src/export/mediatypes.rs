//! `oci-mediatypes=false`: the same image with Docker schema-2 media types
//! (manifest, config, layers; an index becomes a manifest list), for
//! registries and tools that predate OCI. zstd layers have no Docker media
//! type and keep the OCI one, as BuildKit does.

use rbuild_cache::oci::{
    MEDIA_TYPE_CONFIG, MEDIA_TYPE_DOCKER_LAYER_GZIP, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_INDEX, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_MANIFEST,
};
use serde_json::Value;

/// Docker's image config media type.
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker's uncompressed layer media type.
pub const MEDIA_TYPE_DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The Docker counterpart of an OCI media type (others unchanged).
pub fn docker_media_type(oci: &str) -> &str {
    match oci {
        MEDIA_TYPE_MANIFEST => MEDIA_TYPE_DOCKER_MANIFEST,
        MEDIA_TYPE_INDEX => MEDIA_TYPE_DOCKER_MANIFEST_LIST,
        MEDIA_TYPE_CONFIG => MEDIA_TYPE_DOCKER_CONFIG,
        MEDIA_TYPE_LAYER_GZIP => MEDIA_TYPE_DOCKER_LAYER_GZIP,
        MEDIA_TYPE_LAYER_TAR => MEDIA_TYPE_DOCKER_LAYER_TAR,
        other => other,
    }
}

/// A manifest or index document with every `mediaType` (its own, its
/// config's, its layers' or entries') converted. Keys stay sorted
/// (serde_json's map is ordered), so the result is canonical JSON.
pub fn to_docker(document: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let mut v: Value = serde_json::from_slice(document)?;
    convert(&mut v);
    for key in ["config"] {
        if let Some(c) = v.get_mut(key) {
            convert(c);
        }
    }
    for key in ["layers", "manifests"] {
        if let Some(Value::Array(items)) = v.get_mut(key) {
            items.iter_mut().for_each(convert);
        }
    }
    serde_json::to_vec(&v)
}

fn convert(v: &mut Value) {
    if let Some(Value::String(m)) = v.get_mut("mediaType") {
        *m = docker_media_type(m).to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_manifest_and_index() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aa","size":1},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:bb","size":2},{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"sha256:cc","size":3}]}"#;
        let v: Value = serde_json::from_slice(&to_docker(m).unwrap()).unwrap();
        assert_eq!(v["mediaType"], MEDIA_TYPE_DOCKER_MANIFEST);
        assert_eq!(v["config"]["mediaType"], MEDIA_TYPE_DOCKER_CONFIG);
        assert_eq!(v["layers"][0]["mediaType"], MEDIA_TYPE_DOCKER_LAYER_GZIP);
        assert_eq!(v["layers"][1]["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd");
        assert_eq!(v["layers"][0]["digest"], "sha256:bb");
        let i = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:dd","size":4}]}"#;
        let v: Value = serde_json::from_slice(&to_docker(i).unwrap()).unwrap();
        assert_eq!(v["mediaType"], MEDIA_TYPE_DOCKER_MANIFEST_LIST);
        assert_eq!(v["manifests"][0]["mediaType"], MEDIA_TYPE_DOCKER_MANIFEST);
    }
}
