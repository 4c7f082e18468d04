//! The local store exporter (`type=image`): tags the image in the store,
//! whose blobs [`assemble`](super::assemble) already wrote there, and
//! [`materialize`]: a stored image made exportable by compressing the
//! layers it keeps deferred.
//!
//! A build whose only output is the store lists its own layers
//! uncompressed and keeps them as snapshots ([`super::LayerForm::Deferred`]),
//! as containers/storage does; the image config (the image ID) is the same
//! as an eager build's. Whatever reads the image compressed (`rbuild push`,
//! `rbuild save`) goes through [`materialize`] first, which compresses each
//! deferred layer once (the blob is kept and reused by every later push,
//! export or eager build of the same snapshot, compression, level and
//! epoch) and rewrites the manifest (and index) to name the compressed
//! blobs, giving the documents an eager build of the same settings writes.

use rbuild_cache::layer::{Compression, note_name};
use rbuild_cache::oci::{Index, MEDIA_TYPE_LAYER_TAR, Manifest, is_index};
use rbuild_cache::store::Store;

use super::{ExportError, ExportInput, Exporter};
use crate::progress::{self, Printer};

/// Tags the top-level document under every image name.
pub struct StoreExporter;

impl Exporter for StoreExporter {
    fn export(&self, input: &ExportInput<'_>) -> Result<(), ExportError> {
        // A push-only build of a cached result leaves its layers in the
        // registry: a tag here would name an image the store cannot
        // export or push, so there is none.
        let incomplete = input.images.iter().flat_map(|i| &i.layers).any(|(l, _)| !input.store.has_layer(&l.digest));
        if incomplete {
            input.printer.message(
                "note: not tagged in the local store: the cached layers were not downloaded (the registry has them)",
            );
            return Ok(());
        }
        for r in input.refs {
            input.store.set_tag(&r.to_string(), input.top_digest)?;
        }
        Ok(())
    }
}

/// The stored document `top` (a manifest or an index) with every deferred
/// layer replaced by its blob compressed with `compression`: made now from
/// the snapshot (its diff id checked on the way) or reused. Rewritten
/// manifests and index are written to the store; a document without
/// deferred layers comes back unchanged.
pub fn materialize(
    store: &Store,
    top: &[u8],
    compression: &Compression,
    printer: &Printer,
) -> Result<Vec<u8>, ExportError> {
    if !looks_like_index(top) {
        return materialize_manifest(store, top, compression, printer);
    }
    let decode = |source| ExportError::Decode { what: "index", digest: rbuild_cache::oci::sha256_digest(top), source };
    let mut index: Index = serde_json::from_slice(top).map_err(decode)?;
    let mut changed = false;
    for entry in &mut index.manifests {
        let bytes = store.read_blob(&entry.digest)?;
        let new = materialize_manifest(store, &bytes, compression, printer)?;
        if new != bytes {
            entry.digest = store.write_blob(&new)?;
            entry.size = new.len() as u64;
            changed = true;
        }
    }
    if !changed {
        return Ok(top.to_vec());
    }
    let bytes = serde_json::to_vec(&index).map_err(|source| ExportError::Encode { what: "index", source })?;
    store.write_blob(&bytes)?;
    Ok(bytes)
}

fn materialize_manifest(
    store: &Store,
    bytes: &[u8],
    compression: &Compression,
    printer: &Printer,
) -> Result<Vec<u8>, ExportError> {
    let digest = rbuild_cache::oci::sha256_digest(bytes);
    let mut manifest: Manifest = serde_json::from_slice(bytes).map_err(|source| ExportError::Decode {
        what: "manifest",
        digest: digest.clone(),
        source,
    })?;
    let mut changed = false;
    let name = note_name(compression, None);
    for layer in &mut manifest.layers {
        if layer.media_type != MEDIA_TYPE_LAYER_TAR || store.has_blob(&layer.digest) {
            continue;
        }
        let started = std::time::Instant::now();
        let made = store.materialize_layer(&layer.digest, compression, super::threads())?;
        if made.written {
            printer.message(&format!(
                "compressed layer {} ({name}): {} -> {} in {:.2}s",
                layer.digest,
                progress::bytes(layer.size),
                progress::bytes(made.layer.size),
                started.elapsed().as_secs_f64()
            ));
        } else {
            printer.message(&format!("layer {}: reusing its {name} blob {}", layer.digest, made.layer.digest));
        }
        layer.media_type = made.layer.media_type;
        layer.digest = made.layer.digest;
        layer.size = made.layer.size;
        changed = true;
    }
    if !changed {
        return Ok(bytes.to_vec());
    }
    let bytes = serde_json::to_vec(&manifest).map_err(|source| ExportError::Encode { what: "manifest", source })?;
    store.write_blob(&bytes)?;
    Ok(bytes)
}

/// Whether a stored top-level document is an index (or manifest list).
pub(crate) fn looks_like_index(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Probe>(bytes)
        .map(|p| p.media_type.as_deref().is_some_and(is_index) || p.manifests.is_some())
        .unwrap_or(false)
}
