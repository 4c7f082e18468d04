//! `--cache-from`: the records of one or more cache artifacts, read before
//! the solve, and the lazy half of a hit — a key found here is satisfied
//! with layer descriptors only; blobs are downloaded and unpacked when a
//! step or an exporter needs the files ([`ImportedCache::materialize`]).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::{BlobSource, MountEntry, RemoteError, read_config};
use crate::layer::{UnpackOptions, unpack_layer};
use crate::oci::{LayerDescriptor, layer_compression_name};
use crate::store::{CacheRecord, SnapshotId, Store};

/// The store's record of the snapshot unpacked from layer blob `digest`
/// (shared with base-image pulls: a layer is unpacked once, whichever way
/// it arrived).
pub fn layer_record_key(digest: &str) -> String {
    format!("layer:{digest}")
}

/// Blobs downloaded at once by [`ImportedCache::fetch_blobs`]: enough to
/// hide per-request latency, few enough not to hog a registry's rate limit.
pub const FETCH_CONCURRENCY: usize = 4;

/// The store's record of the one empty snapshot imported chains use for
/// steps whose diff was empty.
const EMPTY_RECORD_KEY: &str = "layer:empty";

/// A key found in imported records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedRecord {
    /// The chain's layers, base first (`None`: empty diff).
    pub layers: Vec<Option<LayerDescriptor>>,
    /// Which source has the blobs.
    source: usize,
}

/// The records of every `--cache-from`, by cache key.
pub struct ImportedCache {
    sources: Vec<Arc<dyn BlobSource>>,
    records: HashMap<String, ImportedRecord>,
    /// Exported cache mounts by id, with the index of their source.
    mounts: HashMap<String, (MountEntry, usize)>,
    chown: bool,
}

impl std::fmt::Debug for ImportedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.sources.iter().map(|s| s.name()).collect();
        write!(f, "ImportedCache({names:?}, {} keys)", self.records.len())
    }
}

impl ImportedCache {
    /// Reads the artifact of each source (a source without one adds no
    /// records, as a first CI run has none). The first source naming a key
    /// wins. `chown`: whether unpacking may apply the archives' owners.
    pub fn load(sources: Vec<Arc<dyn BlobSource>>, chown: bool) -> Result<ImportedCache, RemoteError> {
        let mut records = HashMap::new();
        let mut mounts = HashMap::new();
        for (i, source) in sources.iter().enumerate() {
            let name = source.name();
            let artifact = source.read_artifact().map_err(|e| RemoteError::Transport {
                what: "reading cache",
                name: name.clone(),
                source: e,
            })?;
            let Some(config) = read_config(&name, artifact)? else { continue };
            for (key, entry) in config.platforms.into_values().flatten() {
                records.entry(key).or_insert(ImportedRecord { layers: entry.layers, source: i });
            }
            for (id, entry) in config.mounts {
                mounts.entry(id).or_insert((entry, i));
            }
        }
        Ok(ImportedCache { sources, records, mounts, chown })
    }

    /// Seeds the cache mounts `ids` (those the build uses) that the store
    /// lacks, or has only empty, from the imported mount blobs; a mount
    /// with contents is left as it is. Returns the ids seeded. Ids the
    /// build does not use are never touched, whatever the source holds.
    pub fn seed_mounts(&self, store: &Store, ids: &[String]) -> Result<Vec<String>, RemoteError> {
        let mut seeded = Vec::new();
        for id in ids {
            let Some((entry, source)) = self.mounts.get(id) else { continue };
            let existing = store.cache_mount_path(id);
            if existing.is_dir() && !super::is_empty_dir(&existing) {
                continue;
            }
            let record = ImportedRecord { layers: vec![Some(entry.layer.clone())], source: *source };
            self.fetch_blob(store, &record, &entry.layer)?;
            let draft = store.cache_mount_draft()?;
            let path = store.blob_path(&entry.layer.digest);
            let unpacked = std::fs::File::open(&path)
                .map_err(|source| RemoteError::Read { path: path.clone(), source })
                .and_then(|file| {
                    unpack_layer(
                        std::io::BufReader::with_capacity(1 << 20, file),
                        &draft,
                        &UnpackOptions { chown: self.chown },
                    )
                    .map_err(|source| RemoteError::SeedMount { id: id.clone(), source })
                });
            if let Err(e) = unpacked {
                let _ = std::fs::remove_dir_all(&draft);
                return Err(e);
            }
            if store.install_cache_mount(id, &draft)? {
                seeded.push(id.clone());
            }
        }
        Ok(seeded)
    }

    /// How many keys the imported records resolve.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no key is resolved.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The imported record of `key`.
    pub fn lookup(&self, key: &str) -> Option<&ImportedRecord> {
        self.records.get(key)
    }

    /// Makes sure the store holds `layer`'s blob, downloading it from the
    /// source of `record` when missing. A blob of the wrong size or digest
    /// is rejected and never enters the store.
    pub fn fetch_blob(
        &self,
        store: &Store,
        record: &ImportedRecord,
        layer: &LayerDescriptor,
    ) -> Result<(), RemoteError> {
        if store.has_blob(&layer.digest) {
            return Ok(());
        }
        let source = &self.sources[record.source];
        let mut writer = store.blob_writer()?;
        source.fetch_blob(&layer.digest, layer.size, &mut writer).map_err(|e| RemoteError::Transport {
            what: "downloading a cache blob from",
            name: source.name(),
            source: e,
        })?;
        writer.flush().map_err(|source| RemoteError::Read { path: store.blob_path(&layer.digest), source })?;
        if writer.size() != layer.size {
            return Err(RemoteError::SizeMismatch {
                digest: layer.digest.clone(),
                expected: layer.size,
                actual: writer.size(),
            });
        }
        writer.finish_expecting(&layer.digest)?;
        Ok(())
    }

    /// Makes sure the store holds every blob of `layers` (each once),
    /// downloading up to [`FETCH_CONCURRENCY`] at a time from the source of
    /// `record`. Each download streams into its own temporary file and is
    /// checked as [`fetch_blob`](Self::fetch_blob) checks it; after the
    /// first failure no new download starts, and the first error is
    /// returned.
    pub fn fetch_blobs(
        &self,
        store: &Store,
        record: &ImportedRecord,
        layers: &[&LayerDescriptor],
    ) -> Result<(), RemoteError> {
        let mut seen = std::collections::HashSet::new();
        let missing: Vec<&LayerDescriptor> =
            layers.iter().copied().filter(|l| seen.insert(l.digest.as_str()) && !store.has_blob(&l.digest)).collect();
        if missing.len() <= 1 {
            return missing.iter().try_for_each(|l| self.fetch_blob(store, record, l));
        }
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let worker = || -> Result<(), RemoteError> {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= missing.len() || failed.load(Ordering::SeqCst) {
                    return Ok(());
                }
                if let Err(e) = self.fetch_blob(store, record, missing[i]) {
                    failed.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        };
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..FETCH_CONCURRENCY.min(missing.len())).map(|_| s.spawn(worker)).collect();
            let mut first = Ok(());
            for w in workers {
                let result = w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                if first.is_ok() {
                    first = result;
                }
            }
            first
        })
    }

    /// Turns an imported record into snapshots: each layer is unpacked once
    /// per store (a snapshot already unpacked from the same blob, by a pull
    /// or an earlier import, is reused). Records the chain under `key` in
    /// the store, so the next build finds it locally.
    pub fn materialize(
        &self,
        store: &Store,
        key: &str,
        record: &ImportedRecord,
    ) -> Result<(Vec<SnapshotId>, Vec<Option<LayerDescriptor>>), RemoteError> {
        // Download what is not unpacked yet in parallel, then unpack in
        // order (each unpack reads a complete, verified blob).
        let mut to_fetch = Vec::new();
        for layer in record.layers.iter().flatten() {
            if store.lookup(&layer_record_key(&layer.digest))?.is_none_or(|rec| rec.chain.is_empty()) {
                to_fetch.push(layer);
            }
        }
        self.fetch_blobs(store, record, &to_fetch)?;
        let mut chain = Vec::with_capacity(record.layers.len());
        for layer in &record.layers {
            chain.push(self.layer_snapshot(store, record, layer.as_ref())?);
        }
        store.record(
            key,
            &CacheRecord {
                chain: chain.clone(),
                layers: record.layers.clone(),
                created: now(),
                extra: Default::default(),
            },
        )?;
        Ok((chain, record.layers.clone()))
    }

    fn layer_snapshot(
        &self,
        store: &Store,
        record: &ImportedRecord,
        layer: Option<&LayerDescriptor>,
    ) -> Result<SnapshotId, RemoteError> {
        let key = layer.map(|l| layer_record_key(&l.digest)).unwrap_or_else(|| EMPTY_RECORD_KEY.to_string());
        if let Some(rec) = store.lookup(&key)?
            && let Some(id) = rec.chain.first()
        {
            return Ok(id.clone());
        }
        let draft = store.new_snapshot()?;
        if let Some(layer) = layer {
            self.fetch_blob(store, record, layer)?;
            let path = store.blob_path(&layer.digest);
            let file = std::fs::File::open(&path).map_err(|source| RemoteError::Read { path, source })?;
            unpack_layer(
                std::io::BufReader::with_capacity(1 << 20, file),
                &draft.diff_dir(),
                &UnpackOptions { chown: self.chown },
            )
            .map_err(|source| RemoteError::Unpack { digest: layer.digest.clone(), source })?;
        }
        let id = draft.commit()?;
        store.record(
            &key,
            &CacheRecord {
                chain: vec![id.clone()],
                layers: vec![layer.cloned()],
                created: now(),
                extra: Default::default(),
            },
        )?;
        if let Some(layer) = layer {
            store.set_layer_for_snapshot(&id, layer_compression_name(&layer.media_type), layer)?;
        }
        Ok(id)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
