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
use crate::oci::LayerDescriptor;
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

/// Read-merge-write rounds an export makes when concurrent exports to the
/// same target keep replacing its artifact under it.
pub const MERGE_ATTEMPTS: u32 = 5;

/// The least an export waits after writing its manifest before reading it
/// back (see [`export`]).
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(30);
/// The most it waits, however slow the target.
const SETTLE_MAX: std::time::Duration = std::time::Duration::from_secs(2);
/// The wait, in multiples of this export's own re-read-to-write time.
const SETTLE_FACTOR: u32 = 4;

/// An export whose manifest is written, not yet read back: [`confirm`]
/// finishes it. Whatever the build does in between (writing and pushing
/// its images) counts towards the settle time.
pub struct Written {
    ours: Ours,
    stats: ExportStats,
    manifest: Vec<u8>,
    at: std::time::Instant,
    /// How long to wait after `at` before the read-back.
    settle: std::time::Duration,
    /// Read-merge-write rounds used so far.
    rounds: u32,
}

/// Exports `plan` to `sink`: reads the artifact there, merges this build's
/// records into it (each exported platform's records replace that
/// platform's; other platforms are kept), uploads what the target lacks,
/// writes the manifest, and reads it back: [`write`] then [`confirm`],
/// with nothing in between but the settle wait.
///
/// Registries have no compare-and-swap on a tag, so two exports to one ref
/// at once (two CI runners) race. Each round therefore re-reads the
/// artifact after uploading the blobs, just before writing the manifest
/// (if it changed since the merge, merge again with the new one), and
/// again a while after writing it (if this build's records are not all
/// there, another export replaced the artifact in between: merge with it
/// and write again). A concurrent export is exposed when its own re-read
/// and manifest write (two reads and a write) fit in that while, so the
/// wait is [`SETTLE_FACTOR`] times what ours took against this target
/// (its latency), at least [`SETTLE`] and at most [`SETTLE_MAX`]. What is
/// left is an export that re-read before our write and wrote after our
/// read-back: without compare-and-swap the registry cannot rule that out. Rounds after a
/// conflict merge a platform's records as a union, so two exports of the
/// same platform both survive. After [`MERGE_ATTEMPTS`] rounds the export
/// fails with [`RemoteError::ConcurrentExport`]; the target always holds a
/// complete artifact (blobs before manifest), never a corrupt one.
pub fn export(store: &Store, sink: &dyn BlobSink, plan: &ExportPlan<'_>) -> Result<ExportStats, RemoteError> {
    let written = write(store, sink, plan)?;
    confirm(store, sink, plan, written)
}

/// The first half of [`export`]: gathers this build's records, merges them
/// with the artifact at `sink`, uploads the blobs and writes the manifest.
/// The caller may do other work, then must [`confirm`].
pub fn write(store: &Store, sink: &dyn BlobSink, plan: &ExportPlan<'_>) -> Result<Written, RemoteError> {
    let mut stats = ExportStats::default();
    // The artifact to merge with is read first: collecting waits for the
    // build's last layers, and a read after it was a round trip on the
    // export's tail. What changes at the target meanwhile is caught by the
    // re-read before the manifest is written (see `rounds`).
    let (existing, existing_bytes) = read(sink)?;
    let ours = collect(store, plan, &mut stats)?;
    rounds(store, sink, plan, ours, stats, (existing, existing_bytes, false), 0)
}

/// The second half of [`export`]: once the settle time (see [`export`]) has
/// passed since the manifest was written, reads it back; if a concurrent
/// export replaced it, merges with theirs and writes again (more rounds,
/// each read back the same way).
pub fn confirm(
    store: &Store,
    sink: &dyn BlobSink,
    plan: &ExportPlan<'_>,
    mut written: Written,
) -> Result<ExportStats, RemoteError> {
    loop {
        // An export that checked just before our write lands its manifest
        // within a request's time: wait (what is left of) that long, then
        // see who won.
        let waited = written.at.elapsed();
        if waited < written.settle {
            std::thread::sleep(written.settle - waited);
        }
        let (after, after_bytes) = read(sink)?;
        if after.as_ref().is_some_and(|a| written.ours.survives_in(a)) {
            let mut stats = written.stats;
            stats.manifest_digest = crate::oci::sha256_digest(&written.manifest);
            return Ok(stats);
        }
        // Replaced by a concurrent export between our write and the read.
        let Written { ours, stats, rounds: used, .. } = written;
        written = rounds(store, sink, plan, ours, stats, (after, after_bytes, true), used)?;
    }
}

/// The artifact at `sink`, parsed, and its config bytes (to compare).
fn read(sink: &dyn BlobSink) -> Result<(Option<CacheConfig>, Option<Vec<u8>>), RemoteError> {
    let name = sink.name();
    let artifact = sink.read_artifact().map_err(|source| RemoteError::Transport {
        what: "reading the cache at",
        name: name.clone(),
        source,
    })?;
    let bytes = artifact.as_ref().map(|(_, config)| config.clone());
    Ok((read_config(&name, artifact)?, bytes))
}

/// Read-merge-write rounds from round `used` on, until one writes its
/// manifest over the artifact it merged with (`existing`: that artifact,
/// its bytes, and whether a conflict was seen already).
#[allow(clippy::type_complexity)]
fn rounds(
    store: &Store,
    sink: &dyn BlobSink,
    plan: &ExportPlan<'_>,
    ours: Ours,
    mut stats: ExportStats,
    existing: (Option<CacheConfig>, Option<Vec<u8>>, bool),
    used: u32,
) -> Result<Written, RemoteError> {
    let name = sink.name();
    let (mut existing, mut existing_bytes, mut conflict) = existing;
    for round in used..MERGE_ATTEMPTS {
        let config = ours.merge_into(existing.clone().unwrap_or_else(CacheConfig::new), conflict);
        let (manifest, config_bytes, files) = prepare(store, sink, plan, &ours, &config, &mut stats)?;
        let write_err = |source| RemoteError::Transport { what: "writing the cache to", name: name.clone(), source };
        stats.blobs_offered = files.len();
        sink.write_blobs(&config_bytes, &files).map_err(write_err)?;
        // Changed since we read it: merge with the new one first. Checked
        // after the uploads, right before the manifest, so the window in
        // which another export can slip in is one request wide.
        let checked = std::time::Instant::now();
        let (now, now_bytes) = read(sink)?;
        if now_bytes != existing_bytes {
            (existing, existing_bytes, conflict) = (now, now_bytes, true);
            continue;
        }
        sink.write_manifest(&manifest).map_err(write_err)?;
        let at = std::time::Instant::now();
        let settle = (at - checked).saturating_mul(SETTLE_FACTOR).clamp(SETTLE, SETTLE_MAX);
        return Ok(Written { ours, stats, manifest, at, settle, rounds: round + 1 });
    }
    Err(RemoteError::ConcurrentExport { name, attempts: MERGE_ATTEMPTS })
}

/// This build's part of an artifact.
struct Ours {
    /// Records by platform.
    platforms: BTreeMap<String, BTreeMap<String, CacheEntry>>,
    /// Cache mounts exported.
    mounts: BTreeMap<String, MountEntry>,
    /// Blobs only an imported record knows where to find.
    remote_only: HashMap<String, ImportedRecord>,
}

impl Ours {
    /// `existing` with our records in: each of our platforms replaced (or,
    /// after a conflict, merged key by key), our mounts replacing theirs.
    fn merge_into(&self, mut existing: CacheConfig, union: bool) -> CacheConfig {
        for (platform, records) in &self.platforms {
            if union {
                existing.platforms.entry(platform.clone()).or_default().extend(records.clone());
            } else {
                existing.platforms.insert(platform.clone(), records.clone());
            }
        }
        existing.mounts.extend(self.mounts.clone());
        existing
    }

    /// Whether every record and mount of ours is in `config` as we wrote it.
    fn survives_in(&self, config: &CacheConfig) -> bool {
        let records = self.platforms.iter().all(|(platform, records)| {
            config.platforms.get(platform).is_some_and(|there| records.iter().all(|(k, e)| there.get(k) == Some(e)))
        });
        records && self.mounts.iter().all(|(id, m)| config.mounts.get(id) == Some(m))
    }
}

/// Gathers this build's records and mounts from the store (writing layer
/// blobs for snapshots that have none).
fn collect(store: &Store, plan: &ExportPlan<'_>, stats: &mut ExportStats) -> Result<Ours, RemoteError> {
    let mut ours = Ours { platforms: BTreeMap::new(), mounts: BTreeMap::new(), remote_only: HashMap::new() };
    for (platform, keys) in &plan.platforms {
        let mut records = BTreeMap::new();
        for key in keys {
            if let Some(layers) = local_entry(store, key, &plan.layer, stats)? {
                records.insert(key.clone(), CacheEntry { layers });
            } else if let Some(rec) = plan.imported.and_then(|i| i.lookup(key)) {
                for l in rec.layers.iter().flatten() {
                    if !store.has_blob(&l.digest) {
                        ours.remote_only.entry(l.digest.clone()).or_insert_with(|| rec.clone());
                    }
                }
                records.insert(key.clone(), CacheEntry { layers: rec.layers.clone() });
            }
        }
        stats.records += records.len();
        ours.platforms.insert(platform.clone(), records);
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
        ours.mounts.insert(mount.id.clone(), MountEntry { sharing: mount.sharing.clone(), layer });
        stats.mounts += 1;
    }
    Ok(ours)
}

/// The manifest and config of `config`, and the blob files the sink needs
/// from the store: every blob the records name that the sink may lack (a
/// blob neither here nor there is downloaded from the imported cache that
/// named it: a cache moved from one place to another).
#[allow(clippy::type_complexity)]
fn prepare(
    store: &Store,
    sink: &dyn BlobSink,
    plan: &ExportPlan<'_>,
    ours: &Ours,
    config: &CacheConfig,
    stats: &mut ExportStats,
) -> Result<(Vec<u8>, Vec<u8>, Vec<(LayerDescriptor, PathBuf)>), RemoteError> {
    let name = sink.name();
    let config_bytes = config.to_json();
    let manifest = config.manifest(&config_bytes);
    let mut files: Vec<(LayerDescriptor, PathBuf)> = Vec::new();
    stats.layers = 0;
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
            match (plan.imported, ours.remote_only.get(&layer.digest)) {
                (Some(imported), Some(rec)) => imported.fetch_blob(store, rec, &layer)?,
                _ => return Err(RemoteError::Store(crate::store::StoreError::BlobNotFound(layer.digest.clone()))),
            }
        }
        files.push((layer.clone(), store.blob_path(&layer.digest)));
    }
    Ok((manifest, config_bytes, files))
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
    let compression = &crate::layer::note_name(&opts.compression, opts.source_date_epoch);
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
