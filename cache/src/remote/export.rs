//! `--cache-to`: the records of the chosen keys, gathered from the local
//! store (writing a layer blob for any snapshot that has none yet — the
//! intermediate steps of `mode=max`), merged with the artifact already at
//! the target (records of other platforms are kept), and written through a
//! [`BlobSink`] that uploads only the blobs the target lacks.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::import::{ImportedCache, ImportedRecord};
use super::{BlobSink, CacheConfig, CacheEntry, MountEntry, RemoteError, is_empty_dir, read_config};
use crate::layer::{LayerOptions, write_layer};
use crate::oci::{LayerDescriptor, layer_compression_name};
use crate::store::Store;

/// What to export.
pub struct ExportPlan<'a> {
    /// Cache keys to export, by platform (`os/arch[/variant]`).
    pub platforms: BTreeMap<String, Vec<String>>,
    /// The build's `--cache-from` records: a key resolved lazily from them
    /// (so absent from the store) is exported with their descriptors.
    pub imported: Option<&'a ImportedCache>,
    /// How to write a layer for a snapshot that has none yet.
    pub layer: LayerOptions,
    /// `cache-mounts=true`: the cache mounts the build used, whose
    /// directories are exported (one blob each).
    pub mounts: Vec<MountToExport>,
}

/// A cache mount to export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountToExport {
    /// The mount id.
    pub id: String,
    /// Its `sharing=` (`shared`, `private` or `locked`).
    pub sharing: String,
}

/// What an export did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Records written for the exported platforms.
    pub records: usize,
    /// Distinct layer blobs the artifact names.
    pub layers: usize,
    /// Layer blobs written for snapshots that had none.
    pub layers_written: usize,
    /// Blobs handed to the sink (it skips those it has).
    pub blobs_offered: usize,
    /// Cache mounts exported.
    pub mounts: usize,
    /// Manifest digest of the artifact.
    pub manifest_digest: String,
}

/// Exports `plan` to `sink`.
pub fn export(store: &Store, sink: &dyn BlobSink, plan: &ExportPlan<'_>) -> Result<ExportStats, RemoteError> {
    let name = sink.name();
    let existing = sink.read_artifact().map_err(|source| RemoteError::Transport {
        what: "reading the cache at",
        name: name.clone(),
        source,
    })?;
    let mut config = read_config(&name, existing)?.unwrap_or_else(CacheConfig::new);
    let mut stats = ExportStats::default();
    // Blobs only an imported record knows where to find.
    let mut remote_only: HashMap<String, ImportedRecord> = HashMap::new();
    for (platform, keys) in &plan.platforms {
        let mut records = BTreeMap::new();
        for key in keys {
            if let Some(layers) = local_entry(store, key, &plan.layer, &mut stats)? {
                records.insert(key.clone(), CacheEntry { layers });
            } else if let Some(rec) = plan.imported.and_then(|i| i.lookup(key)) {
                for l in rec.layers.iter().flatten() {
                    if !store.has_blob(&l.digest) {
                        remote_only.entry(l.digest.clone()).or_insert_with(|| rec.clone());
                    }
                }
                records.insert(key.clone(), CacheEntry { layers: rec.layers.clone() });
            }
        }
        stats.records += records.len();
        config.platforms.insert(platform.clone(), records);
    }
    for mount in &plan.mounts {
        let dir = store.cache_mount_path(&mount.id);
        if !dir.is_dir() {
            continue; // the step never ran on this store (a cache hit)
        }
        let mut writer = store.blob_writer()?;
        let layer = write_layer(&dir, &plan.layer, &mut writer)
            .map_err(|source| RemoteError::WriteMount { id: mount.id.clone(), source })?;
        writer.finish_expecting(&layer.digest)?;
        // Replaces this id's previous contents, keeps other ids'.
        config.mounts.insert(mount.id.clone(), MountEntry { sharing: mount.sharing.clone(), layer });
        stats.mounts += 1;
    }
    let config_bytes = config.to_json();
    let manifest = config.manifest(&config_bytes);
    let mut files: Vec<(LayerDescriptor, PathBuf)> = Vec::new();
    for layer in config.layers() {
        stats.layers += 1;
        if !store.has_blob(&layer.digest) {
            let at_sink = sink.has_blob(&layer.digest).map_err(|source| RemoteError::Transport {
                what: "checking a blob at",
                name: name.clone(),
                source,
            })?;
            if at_sink {
                continue;
            }
            // Downloaded only because the target lacks it and nothing
            // local has it: a cache moved from one place to another.
            match (plan.imported, remote_only.get(&layer.digest)) {
                (Some(imported), Some(rec)) => imported.fetch_blob(store, rec, &layer)?,
                _ => return Err(RemoteError::Store(crate::store::StoreError::BlobNotFound(layer.digest.clone()))),
            }
        }
        files.push((layer.clone(), store.blob_path(&layer.digest)));
    }
    stats.blobs_offered = files.len();
    sink.write_artifact(&manifest, &config_bytes, &files).map_err(|source| RemoteError::Transport {
        what: "writing the cache to",
        name,
        source,
    })?;
    stats.manifest_digest = crate::oci::sha256_digest(&manifest);
    Ok(stats)
}

/// The layers of `key`'s chain from the local store, writing the layer of
/// any snapshot that has none (the same bytes the image exporter would
/// write, so an image and its cache share blobs). `None`: not in the store.
fn local_entry(
    store: &Store,
    key: &str,
    opts: &LayerOptions,
    stats: &mut ExportStats,
) -> Result<Option<Vec<Option<LayerDescriptor>>>, RemoteError> {
    let Some(record) = store.lookup(key)? else { return Ok(None) };
    let compression = layer_compression_name(opts.compression.media_type());
    let mut out = Vec::with_capacity(record.chain.len());
    for (i, id) in record.chain.iter().enumerate() {
        let known = record.layers.get(i).cloned().flatten().filter(|l| store.has_blob(&l.digest));
        let known = match known {
            Some(l) => Some(l),
            None => store.layer_for_snapshot(id, compression)?,
        };
        if let Some(l) = known {
            out.push(Some(l));
            continue;
        }
        let diff = store.snapshot_diff(id);
        if is_empty_dir(&diff) {
            out.push(None);
            continue;
        }
        let mut writer = store.blob_writer()?;
        let info = write_layer(&diff, opts, &mut writer)
            .map_err(|source| RemoteError::WriteLayer { snapshot: id.0.clone(), source })?;
        writer.finish_expecting(&info.digest)?;
        store.set_layer_for_snapshot(id, compression, &info)?;
        stats.layers_written += 1;
        out.push(Some(info));
    }
    Ok(Some(out))
}
