//! Layer work done in the background, while later build steps run.
//!
//! [`Store::compress_in_background`] queues "write the layer blob of this
//! snapshot with these options", and [`Store::defer_in_background`]
//! "record the deferred (uncompressed, not stored) layer of this snapshot",
//! on one worker thread per store handle. What a job leaves is exactly what
//! the foreground would write itself (same [`write_layer`] bytes, same
//! notes), so nothing downstream changes: [`Store::layer_for_snapshot`] and
//! [`Store::deferred_layer`] wait while a job for the same snapshot and
//! note name is queued or running, then find the note. A job that fails
//! leaves no note, and the foreground does the work itself as before. A
//! process that exits mid-job leaves only a `tmp/` draft of its dead owner,
//! removed by the next [`Store::open`].
//!
//! The worker holds a weak reference to the store, so dropping the last
//! [`Store`] handle stops it (after the job at hand).
//!
//! Two snapshots often hold the same layer: `COPY --from=build /app /app`
//! of a stage whose own `COPY src/ /app` made the files gives the same tar
//! (a `mode=max` cache exports both). Before compressing a large snapshot
//! whose size matches a layer this process already wrote under the same
//! note name, the worker compares their [`TreeIdentity`]: headers and
//! file inodes, from a walk of metadata alone. The copy shares the
//! stage's inodes, so that is usually enough; otherwise it tars the
//! snapshot into a hash (a fraction of compressing it). On a match it
//! notes that blob for it instead of compressing the same bytes again.
//! (The tar hash took 0.32 s for the 20,000 files of `bench/ci_workload.sh`,
//! on the path of the image's last layer; the identity walk a fraction.)

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Condvar, Mutex, Weak};

use super::tee::{LayerTee, TeeWriter};
use super::{Inner, SnapshotId, Store, StoreError};
use crate::layer::{
    Compression, LayerOptions, LayerWriteError, TreeIdentity, layer_identity, note_name, write_layer,
    write_layer_identified,
};
use crate::oci::LayerDescriptor;

/// Snapshots smaller than this are compressed without looking for a twin:
/// hashing them first would cost about what it could save.
const TWIN_MIN_BYTES: u64 = 4 << 20;

/// One queued job.
struct Job {
    id: SnapshotId,
    kind: JobKind,
    /// Who sees a blob job's bytes as they are written.
    tees: Vec<Box<dyn LayerTee>>,
    /// The snapshot's size, read when a blob job is queued.
    size: u64,
    /// The snapshot's identity, being taken since the job was queued when
    /// a twin may be found for it (see [`Background::sizes_queued`]).
    identity: Option<EarlyIdentity>,
}

/// A [`TreeIdentity`] taken on a thread of its own; `None` if it failed.
type EarlyIdentity = std::thread::JoinHandle<Option<TreeIdentity>>;

#[derive(Clone, Copy)]
enum JobKind {
    /// Write the blob.
    Blob(LayerOptions),
    /// Record the deferred layer (diff id only) for this epoch.
    Deferred(Option<i64>),
}

impl JobKind {
    /// How the job's tar is taken (what its identity depends on).
    fn tar_options(&self) -> LayerOptions {
        match self {
            JobKind::Blob(opts) => *opts,
            JobKind::Deferred(epoch) => super::deferred::deferred_options(*epoch),
        }
    }

    fn note(&self) -> String {
        match self {
            JobKind::Blob(opts) => note_name(&opts.compression, opts.source_date_epoch),
            JobKind::Deferred(epoch) => super::deferred::note(*epoch),
        }
    }
}

/// Jobs queued or running, by (snapshot id, note name).
#[derive(Default)]
pub(crate) struct Background {
    pending: Mutex<HashSet<(SnapshotId, String)>>,
    changed: Condvar,
    queue: Mutex<Option<Sender<Job>>>,
    /// The large layers written by this process, by (snapshot size, note
    /// name): where a twin of the next one may be found.
    written: Mutex<HashMap<(u64, String), Vec<Written>>>,
    /// Layers compressed (not found as a twin), for tests and traces.
    compressed: AtomicUsize,
    /// Twins found by identity alone (no tar pass), for tests and traces.
    twins_by_identity: AtomicUsize,
    /// (snapshot size, note name) of every large blob job queued so far:
    /// a job of a size already queued may have a twin, so its identity is
    /// taken as soon as it is queued, while the one queued before it is
    /// still compressing. On `bench/ci_workload.sh` with `mode=max` that
    /// takes the identity walk (0.15 s) off the image's last layer.
    sizes_queued: Mutex<HashSet<(u64, String)>>,
}

/// A large layer this process wrote, as a twin candidate.
#[derive(Clone)]
struct Written {
    layer: LayerDescriptor,
    /// The snapshot it is the layer of, and that snapshot's identity.
    snapshot: SnapshotId,
    identity: TreeIdentity,
}

/// Why a background layer could not be written (the foreground then writes it).
#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the layer of snapshot `{0}`")]
    Write(String, #[source] LayerWriteError),
}

impl Background {
    /// Blocks while a job for `id` under note `name` is queued or running.
    pub(crate) fn wait(&self, id: &SnapshotId, name: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        while pending.iter().any(|(i, n)| i == id && n == name) {
            pending = self.changed.wait(pending).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn done(&self, key: &(SnapshotId, String)) {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        self.changed.notify_all();
    }
}

impl Store {
    /// Writes the layer blob of snapshot `id` with `opts` on a background
    /// thread, unless it exists or is already queued. Readers of
    /// [`Store::layer_for_snapshot`] for that note name wait for it.
    pub fn compress_in_background(&self, id: &SnapshotId, opts: LayerOptions) {
        self.compress_in_background_teed(id, opts, Vec::new());
    }

    /// [`Store::compress_in_background`], with `tees` seeing the blob's
    /// bytes as they are written (see [`LayerTee`]). A tee whose write does
    /// not happen (the layer exists, the job was queued before, the write
    /// fails) is dropped unfinished.
    pub fn compress_in_background_teed(&self, id: &SnapshotId, opts: LayerOptions, tees: Vec<Box<dyn LayerTee>>) {
        self.queue_layer_job(id, JobKind::Blob(opts), tees);
    }

    /// Records the deferred layer of snapshot `id` (see
    /// [`Store::deferred_layer`]) on a background thread.
    pub fn defer_in_background(&self, id: &SnapshotId, epoch: Option<i64>) {
        self.queue_layer_job(id, JobKind::Deferred(epoch), Vec::new());
    }

    /// Queues a job for `id`'s layer. A large snapshot of a size already
    /// queued under the same note may be a twin: its identity is taken on
    /// a thread of its own from now, while the job before it still runs.
    fn queue_layer_job(&self, id: &SnapshotId, kind: JobKind, tees: Vec<Box<dyn LayerTee>>) {
        let bg = &self.inner.background;
        let size = self.snapshot_size(&id.0);
        let key = (size, kind.note());
        let maybe_twin = size >= TWIN_MIN_BYTES
            && !bg.pending.lock().unwrap_or_else(|p| p.into_inner()).contains(&(id.clone(), kind.note()))
            && !bg.sizes_queued.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
        let identity = maybe_twin.then(|| {
            let (diff, opts) = (self.snapshot_diff(id), kind.tar_options());
            std::thread::Builder::new()
                .name("layer-identity".into())
                .spawn(move || layer_identity(&diff, &opts).ok())
                .ok()
        });
        self.queue_job(Job { id: id.clone(), kind, tees, size, identity: identity.flatten() });
    }

    fn queue_job(&self, job: Job) {
        let bg = &self.inner.background;
        let key = (job.id.clone(), job.kind.note());
        if !bg.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone()) {
            return;
        }
        let mut queue = bg.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.is_none() {
            let (tx, rx) = channel();
            let weak = std::sync::Arc::downgrade(&self.inner);
            let started = std::thread::Builder::new().name("layer-bg".into()).spawn(move || worker(weak, rx));
            if started.is_err() {
                // No thread: the foreground does the work itself.
                drop(queue);
                bg.done(&key);
                return;
            }
            *queue = Some(tx);
        }
        let sent = queue.as_ref().map(|tx| tx.send(job).is_ok()).unwrap_or(false);
        drop(queue);
        if !sent {
            bg.done(&key);
        }
    }
}

fn worker(store: Weak<Inner>, jobs: Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        let Some(inner) = store.upgrade() else { return };
        let store = Store { inner };
        let key = (job.id.clone(), job.kind.note());
        // A failure is not reported: the foreground finds no note and does
        // the work itself, reporting whatever goes wrong then.
        let _ = match job.kind {
            JobKind::Blob(opts) => write_one(&store, job, &opts, &key.1),
            JobKind::Deferred(epoch) => defer_one(&store, job, epoch, &key.1),
        };
        store.inner.background.done(&key);
    }
}

fn write_one(store: &Store, job: Job, opts: &LayerOptions, name: &str) -> Result<(), JobError> {
    let Job { id, tees, size, identity: early, .. } = job;
    let id = &id;
    if store.layer_for_snapshot_now(id, name)?.is_some() || !store.has_snapshot(id) {
        return Ok(());
    }
    let diff = store.snapshot_diff(id);
    if store.diff_has_no_entries(id).unwrap_or(true) {
        return Ok(());
    }
    let bg = &store.inner.background;
    if let Some(twin) = twin_layer(store, id, opts, (size, name), early)? {
        store.set_layer_for_snapshot(id, name, &twin)?;
        return Ok(());
    }
    let mut writer = store.blob_writer()?;
    let mut tee = TeeWriter { inner: &mut writer, tees };
    let (info, identity) =
        write_layer_identified(&diff, opts, &mut tee).map_err(|e| JobError::Write(id.0.clone(), e))?;
    let mut tees = std::mem::take(&mut tee.tees);
    drop(tee);
    writer.finish_expecting(&info.digest)?;
    for t in &mut tees {
        t.complete(&info.digest);
    }
    store.set_layer_for_snapshot(id, name, &info)?;
    bg.compressed.fetch_add(1, Ordering::Relaxed);
    remember(store, size, name, Written { layer: info, snapshot: id.clone(), identity });
    // Finished only once the blob is kept (and noted, so a reader waiting
    // for the job finds it): an early return drops them unfinished.
    for t in tees {
        t.finish();
    }
    Ok(())
}

/// A layer this process wrote under note `key.1` whose tar is exactly
/// snapshot `id`'s (blob still stored), if one of the same size exists:
/// found by identity (its snapshot still stored, so its inodes are alive),
/// else by diff id with one tar pass into a hash.
fn twin_layer(
    store: &Store,
    id: &SnapshotId,
    opts: &LayerOptions,
    key: (u64, &str),
    early: Option<EarlyIdentity>,
) -> Result<Option<LayerDescriptor>, JobError> {
    let candidates = candidates(store, key);
    if candidates.is_empty() {
        return Ok(None);
    }
    if let Some(twin) = twin_by_identity(store, id, opts, &candidates, early, |c| store.has_blob(&c.digest))? {
        return Ok(Some(twin));
    }
    let plain = LayerOptions { compression: Compression::Uncompressed, threads: 1, ..*opts };
    let tar = write_layer(&store.snapshot_diff(id), &plain, &mut std::io::sink())
        .map_err(|e| JobError::Write(id.0.clone(), e))?;
    Ok(candidates.into_iter().map(|c| c.layer).find(|c| c.diff_id == tar.diff_id && store.has_blob(&c.digest)))
}

/// The candidate whose identity is snapshot `id`'s (taken early, or now),
/// whose snapshot is still stored (so its inodes are alive) and whose
/// layer passes `usable`.
fn twin_by_identity(
    store: &Store,
    id: &SnapshotId,
    opts: &LayerOptions,
    candidates: &[Written],
    early: Option<EarlyIdentity>,
    usable: impl Fn(&LayerDescriptor) -> bool,
) -> Result<Option<LayerDescriptor>, JobError> {
    let identity = match early.and_then(|h| h.join().ok().flatten()) {
        Some(identity) => identity,
        None => layer_identity(&store.snapshot_diff(id), opts).map_err(|e| JobError::Write(id.0.clone(), e))?,
    };
    let same = candidates
        .iter()
        .find(|c| c.identity == identity && c.snapshot != *id && store.has_snapshot(&c.snapshot) && usable(&c.layer));
    if same.is_some() {
        store.inner.background.twins_by_identity.fetch_add(1, Ordering::Relaxed);
    }
    Ok(same.map(|c| c.layer.clone()))
}

/// The large layers this process wrote under `key`'s note with `key`'s
/// size: the twin candidates of a snapshot of that size.
fn candidates(store: &Store, key: (u64, &str)) -> Vec<Written> {
    if key.0 < TWIN_MIN_BYTES {
        return Vec::new();
    }
    let written = store.inner.background.written.lock().unwrap_or_else(|p| p.into_inner());
    written.get(&(key.0, key.1.to_string())).cloned().unwrap_or_default()
}

/// Notes a large layer this process wrote as a twin candidate.
fn remember(store: &Store, size: u64, name: &str, written: Written) {
    if size >= TWIN_MIN_BYTES {
        let mut all = store.inner.background.written.lock().unwrap_or_else(|p| p.into_inner());
        all.entry((size, name.to_string())).or_default().push(written);
    }
}

/// Records the deferred layer (diff id) of the job's snapshot: from a twin
/// found by identity when there is one (its tar is this snapshot's, so
/// its diff id is too), else with a tar pass into a hash. A candidate
/// whose identity differs is not hashed for: that hash is the tar pass.
fn defer_one(store: &Store, job: Job, epoch: Option<i64>, name: &str) -> Result<(), JobError> {
    let Job { id, size, identity: early, .. } = job;
    let candidates = candidates(store, (size, name));
    if !candidates.is_empty()
        && store.has_snapshot(&id)
        && !store.diff_has_no_entries(&id).unwrap_or(true)
        && let Some(twin) =
            twin_by_identity(store, &id, &super::deferred::deferred_options(epoch), &candidates, early, |_| true)?
    {
        store.note_deferred(&id, epoch, &twin)?;
        return Ok(());
    }
    if let Some((layer, identity)) = store.record_deferred_identified(&id, epoch)? {
        remember(store, size, name, Written { layer, snapshot: id, identity });
    }
    Ok(())
}

impl Store {
    /// How many layers this store handle's background writer compressed
    /// (a layer noted from its twin does not count).
    pub fn background_compressions(&self) -> usize {
        self.inner.background.compressed.load(Ordering::Relaxed)
    }

    /// How many layers this store handle's background writer noted from a
    /// twin found by [`TreeIdentity`] alone, without a tar pass.
    pub fn background_identity_twins(&self) -> usize {
        self.inner.background.twins_by_identity.load(Ordering::Relaxed)
    }
}
