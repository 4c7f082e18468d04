//! Layer blobs written in the background, while later build steps run.
//!
//! [`Store::compress_in_background`] queues "write the layer blob of this
//! snapshot with these options" on one worker thread per store handle.
//! The blob and its layer-for-snapshot note are exactly what an exporter
//! would write itself (same [`write_layer`] bytes), so nothing downstream
//! changes: [`Store::layer_for_snapshot`] waits while a job for the same
//! snapshot and compression is queued or running, then finds the note. A
//! job that fails leaves no note, and the exporter writes the layer itself
//! as before. A process that exits mid-job leaves only a `tmp/` draft of
//! its dead owner, removed by the next [`Store::open`].
//!
//! The worker holds a weak reference to the store, so dropping the last
//! [`Store`] handle stops it (after the job at hand).

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Condvar, Mutex, Weak};

use super::{Inner, SnapshotId, Store, StoreError};
use crate::layer::{LayerOptions, LayerWriteError, write_layer};
use crate::oci::layer_compression_name;

/// One queued layer.
struct Job {
    id: SnapshotId,
    opts: LayerOptions,
}

/// Jobs queued or running, by (snapshot id, compression name).
#[derive(Default)]
pub(crate) struct Background {
    pending: Mutex<HashSet<(SnapshotId, &'static str)>>,
    changed: Condvar,
    queue: Mutex<Option<Sender<Job>>>,
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
    /// Blocks while a job for `id` with `compression` is queued or running.
    pub(crate) fn wait(&self, id: &SnapshotId, compression: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        while pending.iter().any(|(i, c)| i == id && *c == compression) {
            pending = self.changed.wait(pending).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn done(&self, key: &(SnapshotId, &'static str)) {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        self.changed.notify_all();
    }
}

impl Store {
    /// Writes the layer blob of snapshot `id` with `opts` on a background
    /// thread, unless it exists or is already queued. Readers of
    /// [`Store::layer_for_snapshot`] for that compression wait for it.
    pub fn compress_in_background(&self, id: &SnapshotId, opts: LayerOptions) {
        let bg = &self.inner.background;
        let key = (id.clone(), layer_compression_name(opts.compression.media_type()));
        if !bg.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone()) {
            return;
        }
        let mut queue = bg.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.is_none() {
            let (tx, rx) = channel();
            let weak = std::sync::Arc::downgrade(&self.inner);
            let started = std::thread::Builder::new().name("layer-bg".into()).spawn(move || worker(weak, rx));
            if started.is_err() {
                // No thread: the exporter writes the layer itself.
                drop(queue);
                bg.done(&key);
                return;
            }
            *queue = Some(tx);
        }
        let sent = queue.as_ref().map(|tx| tx.send(Job { id: id.clone(), opts }).is_ok()).unwrap_or(false);
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
        let key = (job.id.clone(), layer_compression_name(job.opts.compression.media_type()));
        // A failure is not reported: the exporter finds no note and writes
        // the layer itself, reporting whatever goes wrong then.
        let _ = write_one(&store, &job.id, &job.opts, key.1);
        store.inner.background.done(&key);
    }
}

fn write_one(store: &Store, id: &SnapshotId, opts: &LayerOptions, compression: &str) -> Result<(), JobError> {
    if store.layer_for_snapshot_now(id, compression)?.is_some() || !store.has_snapshot(id) {
        return Ok(());
    }
    let diff = store.snapshot_diff(id);
    if std::fs::read_dir(&diff).map(|mut d| d.next().is_none()).unwrap_or(true) {
        return Ok(());
    }
    let mut writer = store.blob_writer()?;
    let info = write_layer(&diff, opts, &mut writer).map_err(|e| JobError::Write(id.0.clone(), e))?;
    writer.finish_expecting(&info.digest)?;
    store.set_layer_for_snapshot(id, compression, &info)?;
    Ok(())
}
