//! Turning a solved build into an image: layer blobs for each snapshot of
//! the final chain (reusing blobs already written for a snapshot), the
//! image config with diff ids and history, and the manifest.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rbuild_cache::layer::{self, Compression, LayerOptions};
use rbuild_cache::oci::{History, ImageConfig, LayerDescriptor, Platform};
use rbuild_cache::remote::{CacheConfig, CacheEntry};
use rbuild_cache::store::{SnapshotId, Store};
use rbuild_frontend::lower::LoweredBuild;
use rbuild_solver::solve::{self, Solved};

use super::{ExportError, build_manifest};

/// An assembled image, its blobs in the store.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    /// Manifest bytes.
    pub manifest: Vec<u8>,
    /// Manifest digest.
    pub manifest_digest: String,
    /// Config bytes.
    pub config: Vec<u8>,
    /// Config digest (the image ID).
    pub config_digest: String,
    /// Layers with their blob files.
    pub layers: Vec<(LayerDescriptor, PathBuf)>,
    /// Platform.
    pub platform: Platform,
    /// The final snapshot chain (for local/tar outputs).
    pub chain: Vec<SnapshotId>,
}

/// How the image's layers are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerForm {
    /// As blobs with this compression (written now, or reused).
    Compressed(Compression),
    /// Deferred (for an image only the local store reads): a layer that has
    /// no blob yet is listed uncompressed, its digest its diff id, and left
    /// as its snapshot ([`Store::deferred_layer`]); a push or export
    /// compresses it then. Layers that already have a blob for `reference`
    /// (pulled base layers, layers compressed for an earlier push) are
    /// listed as that blob, exactly as a `Compressed(reference)` build would
    /// list them, so the config (the image ID) is the same either way.
    Deferred {
        /// The compression a push will use.
        reference: Compression,
    },
}

impl LayerForm {
    /// The form for a request's `outputs`: deferred when the local store is
    /// its only reader (every output `type=image` without `push` and without
    /// an explicit `compression=`/`compression-level=`), no cache is
    /// exported (`exports_cache`: its records would name the blobs) and no
    /// attestation names the manifest (`attests`: it would name the stored
    /// manifest, not the pushed one); compressed otherwise.
    /// `RBUILD_DEFER_LAYERS=0` always compresses, for measuring both ways.
    pub fn for_outputs(outputs: &[super::Output], exports_cache: bool, attests: bool) -> LayerForm {
        let compression = super::compression_from_outputs(outputs);
        let store_only = !outputs.is_empty()
            && outputs.iter().all(|o| match o {
                super::Output::Image { image, push: false } => {
                    image.compression.is_none() && image.compression_level.is_none()
                }
                _ => false,
            });
        let enabled = std::env::var("RBUILD_DEFER_LAYERS").map(|v| v != "0").unwrap_or(true);
        if store_only && !exports_cache && !attests && enabled {
            LayerForm::Deferred { reference: compression }
        } else {
            LayerForm::Compressed(compression)
        }
    }
}

/// Compression threads: one per core.
pub fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// RFC 3339 UTC for unix seconds.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Builds the image for one platform from a solved graph.
pub fn assemble(
    store: &Store,
    lowered: &LoweredBuild,
    solved: &Solved,
    form: &LayerForm,
    epoch: Option<i64>,
    inline_cache: Option<&[(String, usize)]>,
    annotations: BTreeMap<String, String>,
) -> Result<BuiltImage, ExportError> {
    let (chain, known) = match &solved.result {
        Some(r) => solve::result_chain(r),
        None => (Vec::new(), Vec::new()),
    };
    let compression = match form {
        LayerForm::Compressed(c) => *c,
        LayerForm::Deferred { reference } => *reference,
    };
    let name = layer::note_name(&compression, epoch);
    let mut layers: Vec<(LayerDescriptor, PathBuf)> = Vec::new();
    // Which chain entries produced no layer (empty diffs are dropped, as
    // BuildKit does, and their history entries become empty_layer).
    let mut empty: Vec<bool> = Vec::new();
    // Each chain entry's layer (`None`: empty diff), for the inline cache.
    let mut aligned: Vec<Option<LayerDescriptor>> = Vec::new();
    // A result resolved from an imported cache and not materialized has
    // layers but no snapshots (`None` is an empty diff). Its blobs are in
    // the store, except for a push-only build, whose exporter fetches only
    // what the target registry lacks (see `MissingBlobs`).
    if chain.is_empty() && !known.is_empty() {
        for layer in &known {
            match layer {
                Some(d) => {
                    layers.push((d.clone(), store.blob_path(&d.digest)));
                    empty.push(false);
                    aligned.push(Some(d.clone()));
                }
                None => {
                    empty.push(true);
                    aligned.push(None);
                }
            }
        }
    }
    for (i, id) in chain.iter().enumerate() {
        let reuse: Option<LayerDescriptor> = match known.get(i).cloned().flatten() {
            Some(d) => Some(d),
            None => store.layer_for_snapshot(id, &name)?,
        };
        if let Some(d) = reuse.filter(|d| store.has_blob(&d.digest)) {
            let path = store.blob_path(&d.digest);
            aligned.push(Some(d.clone()));
            layers.push((d, path));
            empty.push(false);
            continue;
        }
        if matches!(form, LayerForm::Deferred { .. }) {
            match store.deferred_layer(id, epoch)? {
                Some(d) => {
                    // No file behind it: exporters of this image go through
                    // `super::store::materialize` first.
                    let path = store.blob_path(&d.digest);
                    aligned.push(Some(d.clone()));
                    layers.push((d, path));
                    empty.push(false);
                }
                None => {
                    empty.push(true);
                    aligned.push(None);
                }
            }
            continue;
        }
        let diff = store.snapshot_diff(id);
        if store.diff_has_no_entries(id).unwrap_or(false) {
            empty.push(true);
            aligned.push(None);
            continue;
        }
        let mut writer = store.blob_writer()?;
        let opts = LayerOptions { compression, source_date_epoch: epoch, threads: threads() };
        let info = layer::write_layer(&diff, &opts, &mut writer)
            .map_err(|source| ExportError::WriteLayer { snapshot: id.clone(), source })?;
        let digest = writer.finish()?;
        if digest != info.digest {
            return Err(ExportError::LayerDigestMismatch { stored: digest, written: info.digest });
        }
        store.set_layer_for_snapshot(id, &name, &info)?;
        let path = store.blob_path(&info.digest);
        aligned.push(Some(info.clone()));
        layers.push((info, path));
        empty.push(false);
    }

    let now = epoch.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    });
    let created = rfc3339(now);
    let mut config: ImageConfig = lowered.config.clone();
    config.created = Some(created.clone());
    config.rootfs.diff_ids = layers.iter().map(|(l, _)| l.diff_id.clone()).collect();
    config.history = history_for(lowered, &empty, &created);
    // A base image's inline cache describes the base's build, not this one.
    config.inline_cache = inline_cache.map(|keys| inline_records(&lowered.platform.to_string(), keys, &aligned));
    let config_bytes = config.to_canonical_json();
    let config_digest = store.write_blob(&config_bytes)?;
    let (manifest, manifest_digest, manifest_config_digest) =
        build_manifest(&config_bytes, &layers.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>(), annotations);
    debug_assert_eq!(manifest_config_digest, config_digest);
    let stored = store.write_blob(&manifest)?;
    debug_assert_eq!(stored, manifest_digest);
    Ok(BuiltImage {
        manifest,
        manifest_digest,
        config: config_bytes,
        config_digest,
        layers,
        platform: lowered.platform.clone(),
        chain,
    })
}

/// The inline cache of an image: for each `(key, n)` of the image's own
/// steps, the first `n` entries of the image's chain (a key whose chain is
/// not a prefix of the image's is not given).
fn inline_records(platform: &str, keys: &[(String, usize)], aligned: &[Option<LayerDescriptor>]) -> serde_json::Value {
    let mut config = CacheConfig::new();
    let records = config.platforms.entry(platform.to_string()).or_default();
    for (key, n) in keys {
        if let Some(layers) = aligned.get(..*n) {
            records.insert(key.clone(), CacheEntry { layers: layers.to_vec() });
        }
    }
    serde_json::to_value(&config).expect("cache config serialises")
}

/// History entries aligned with the layers: base entries keep their own
/// flags; a step whose diff turned out empty is marked `empty_layer`.
fn history_for(lowered: &LoweredBuild, empty: &[bool], created: &str) -> Vec<History> {
    let mut out = Vec::new();
    let mut layer_index = 0usize;
    for step in &lowered.history {
        let mut h = step.history.clone();
        if !h.empty_layer {
            if empty.get(layer_index).copied().unwrap_or(false) {
                h.empty_layer = true;
            }
            layer_index += 1;
        }
        if step.layer.is_some() || h.created.is_none() {
            h.created = Some(created.to_string());
        }
        out.push(h);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
