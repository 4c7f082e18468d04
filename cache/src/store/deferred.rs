//! Deferred layers: a layer kept as its snapshot plus a recorded diff id,
//! compressed only when someone reads it compressed.
//!
//! A build whose only output is the local store does not need a layer
//! blob at all: the image config names layers by diff id (the digest of
//! the uncompressed tar), and the snapshot already holds every byte. So
//! [`Store::deferred_layer`] tars the snapshot once into a hash (nothing is
//! written), notes the result beside the snapshot (`layers/tar.json`) and
//! records `diffs/<hex>.json`: "this diff id is the tar of that snapshot
//! (with that `SOURCE_DATE_EPOCH`)". The image's manifest in the store then
//! lists the layer uncompressed (`…layer.v1.tar`, digest = diff id), with
//! no blob behind it, as containers/storage keeps layers.
//!
//! [`Store::materialize_layer`] makes the blob when a push or export needs
//! it: the layer tar is deterministic (sorted entries, fixed headers), so
//! re-tarring the immutable snapshot gives the same bytes; the diff id is
//! checked on the way, so a snapshot changed behind our back fails loudly
//! instead of pushing an image whose config lies about its layers. The
//! compressed blob is then noted under its compression and level (and
//! epoch), and never made again.
//!
//! Prune treats a deferred layer named by a kept manifest as naming its
//! snapshot, which therefore stays; a `diffs/` record whose snapshot was
//! pruned is removed with it.

use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

use super::{SnapshotId, Store, StoreError, parse_digest, read_json_or_miss};
use crate::layer::{Compression, LayerOptions, TreeIdentity, note_name, write_layer, write_layer_identified};
use crate::oci::LayerDescriptor;

/// `diffs/<hex>.json`: where a deferred layer's bytes come from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct DiffRecord {
    /// The snapshot whose tar it is.
    pub snapshot: SnapshotId,
    /// The `SOURCE_DATE_EPOCH` the tar clamps mtimes to.
    pub epoch: Option<i64>,
}

/// A layer blob [`Store::materialize_layer`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Materialized {
    /// The blob (in the store).
    pub layer: LayerDescriptor,
    /// Whether it was written now (`false`: made before and reused).
    pub written: bool,
}

/// How a deferred layer's tar is taken: plain, mtimes clamped to `epoch`.
pub(crate) fn deferred_options(epoch: Option<i64>) -> LayerOptions {
    LayerOptions { compression: Compression::Uncompressed, source_date_epoch: epoch, threads: 1 }
}

/// The note name of the deferred layer for `epoch`.
pub(crate) fn note(epoch: Option<i64>) -> String {
    match epoch {
        Some(e) => format!("tar-e{e}"),
        None => "tar".to_string(),
    }
}

impl Store {
    /// The layer of snapshot `id` as an uncompressed tar that is not
    /// stored (its digest is its diff id), `None` for an empty diff.
    /// Computed once (one tar pass into a hash) and recorded so that
    /// [`Store::materialize_layer`] can make it later; waits for a
    /// [`Store::defer_in_background`] job doing the same.
    pub fn deferred_layer(&self, id: &SnapshotId, epoch: Option<i64>) -> Result<Option<LayerDescriptor>, StoreError> {
        let name = note(epoch);
        self.inner.background.wait(id, &name);
        let noted = read_json_or_miss::<LayerDescriptor>(&self.layer_file(id, &name)?)?;
        if let Some(layer) = noted
            && self.deferred_source(&layer.digest).is_some_and(|(s, e)| s == *id && e == epoch)
        {
            return Ok(Some(layer));
        }
        self.record_deferred(id, epoch)
    }

    /// Tars snapshot `id` into a hash and records the result (see the
    /// module docs).
    pub(super) fn record_deferred(
        &self,
        id: &SnapshotId,
        epoch: Option<i64>,
    ) -> Result<Option<LayerDescriptor>, StoreError> {
        Ok(self.record_deferred_identified(id, epoch)?.map(|(layer, _)| layer))
    }

    /// [`Store::record_deferred`], also returning the snapshot's
    /// [`TreeIdentity`] (taken in the same pass).
    pub(super) fn record_deferred_identified(
        &self,
        id: &SnapshotId,
        epoch: Option<i64>,
    ) -> Result<Option<(LayerDescriptor, TreeIdentity)>, StoreError> {
        if !self.has_snapshot(id) {
            return Err(StoreError::SnapshotNotFound(id.0.clone()));
        }
        let diff = self.snapshot_diff(id);
        let empty = self.diff_has_no_entries(id).map_err(|source| StoreError::Read { path: diff.clone(), source })?;
        if empty {
            return Ok(None);
        }
        let (layer, identity) = write_layer_identified(&diff, &deferred_options(epoch), &mut io::sink())
            .map_err(|source| StoreError::WriteLayer { snapshot: id.0.clone(), source })?;
        self.note_deferred(id, epoch, &layer)?;
        Ok(Some((layer, identity)))
    }

    /// Records `layer` as snapshot `id`'s deferred layer: its diff record
    /// (`diffs/`, naming `id`) and its note. `layer` is `id`'s tar, taken
    /// by [`Store::record_deferred_identified`] or known from a twin.
    pub(super) fn note_deferred(
        &self,
        id: &SnapshotId,
        epoch: Option<i64>,
        layer: &LayerDescriptor,
    ) -> Result<(), StoreError> {
        let record = DiffRecord { snapshot: id.clone(), epoch };
        let bytes = serde_json::to_vec(&record).map_err(|source| StoreError::Encode { what: "diff record", source })?;
        let note_bytes =
            serde_json::to_vec(layer).map_err(|source| StoreError::Encode { what: "layer descriptor", source })?;
        let note_path = self.layer_file(id, &note(epoch))?;
        let _gc = self.inner.gc_shared()?;
        if !self.has_snapshot(id) {
            return Err(StoreError::SnapshotNotFound(id.0.clone()));
        }
        // Durable: a tagged image relies on it as it would on a blob.
        self.inner.write_atomic(&self.diff_record_path(&layer.digest)?, &bytes)?;
        let dir = note_path.parent().expect("layer file has a parent");
        fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir { path: dir.to_path_buf(), source })?;
        self.inner.write_replace(&note_path, &note_bytes)?;
        self.inner.session.append('s', &id.0)?;
        Ok(())
    }

    /// The snapshot (and epoch) a deferred layer `diff_id` is re-made
    /// from, if recorded and the snapshot is still there. Protects the
    /// snapshot from prune for the life of this process.
    pub fn deferred_source(&self, diff_id: &str) -> Option<(SnapshotId, Option<i64>)> {
        let path = self.diff_record_path(diff_id).ok()?;
        let _gc = self.inner.gc_shared().ok()?;
        let record = read_json_or_miss::<DiffRecord>(&path).ok().flatten()?;
        if !self.has_snapshot(&record.snapshot) {
            return None;
        }
        self.inner.session.append('s', &record.snapshot.0).ok()?;
        Some((record.snapshot, record.epoch))
    }

    /// Whether the store can give layer `digest`: as a blob, or as a
    /// deferred layer whose snapshot is present.
    pub fn has_layer(&self, digest: &str) -> bool {
        self.has_blob(digest) || self.deferred_source(digest).is_some()
    }

    /// The blob of deferred layer `diff_id` with `compression`: the one
    /// made before for its snapshot (same compression, level and epoch),
    /// else written now from the snapshot with `threads` compressors. The
    /// tar is checked against `diff_id` before the blob is kept.
    pub fn materialize_layer(
        &self,
        diff_id: &str,
        compression: &Compression,
        threads: usize,
    ) -> Result<Materialized, StoreError> {
        let (id, epoch) = self.deferred_source(diff_id).ok_or_else(|| StoreError::LayerNotFound(diff_id.into()))?;
        let name = note_name(compression, epoch);
        if let Some(layer) = self.noted_layer(&id, &name)?
            && layer.diff_id == diff_id
        {
            return Ok(Materialized { layer, written: false });
        }
        let mut writer = self.blob_writer()?;
        let opts = LayerOptions { compression: *compression, source_date_epoch: epoch, threads };
        let layer = write_layer(&self.snapshot_diff(&id), &opts, &mut writer)
            .map_err(|source| StoreError::WriteLayer { snapshot: id.0.clone(), source })?;
        if layer.diff_id != diff_id {
            // `writer` drops here: its temp file goes, nothing is kept.
            return Err(StoreError::SnapshotChanged {
                snapshot: id.0.clone(),
                expected: diff_id.to_string(),
                actual: layer.diff_id,
            });
        }
        writer.finish_expecting(&layer.digest)?;
        self.set_layer_for_snapshot(&id, &name, &layer)?;
        Ok(Materialized { layer, written: true })
    }

    pub(super) fn diff_record_path(&self, diff_id: &str) -> Result<std::path::PathBuf, StoreError> {
        let hex = parse_digest(diff_id)?;
        Ok(self.inner.root.join("diffs").join(format!("{hex}.json")))
    }
}
