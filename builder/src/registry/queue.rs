//! Background blob uploads: a layer is uploaded to a repository as soon as
//! it exists, while the build goes on, so the end of the build only waits
//! for what is still in flight (a `--cache-to` uploads its layers while
//! later steps run).
//!
//! An [`UploadQueue`] targets one repository. Jobs are keyed (a snapshot
//! and compression, say) and each key is taken once; a job first produces
//! its blob on a blocking thread (waiting, typically, for the store's
//! background compression), then uploads it with
//! [`RegistryClient::push_blob_data`]: the same existence check, mounts and
//! retry policy as a push; at most [`UPLOAD_CONCURRENCY`] jobs wait or
//! upload at once. A digest
//! is uploaded once per queue however many jobs produce it.
//!
//! Every push of a blob, a job's or an image's, first claims the digest for
//! its registry: a push of a digest someone else is pushing to any
//! repository of that registry waits for it, then finds the blob there or
//! mounts it (a pushed blob's repository is noted as its source), so no
//! blob is sent twice.
//!
//! Nothing here writes a manifest: [`UploadQueue::finish`] waits for every
//! job and returns the first failure, and the caller writes its manifest
//! only after a success. Dropping the queue, or the process dying, leaves
//! at most unreferenced blobs in the repository (registries collect them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::streaming::{self, StreamHandle, StreamSink};
use super::{BlobData, BlobOutcome, ImageRef, RegistryClient, RegistryError, UPLOAD_CONCURRENCY};

/// A blob to upload: digest, size and the file holding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedBlob {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// The file (a blob of the store).
    pub path: PathBuf,
}

/// Uploads to one repository in the background (see the module docs).
pub struct UploadQueue {
    shared: Arc<Shared>,
    runtime: Handle,
}

struct Shared {
    client: RegistryClient,
    /// The repository (no tag or digest).
    target: ImageRef,
    permits: Semaphore,
    state: Mutex<State>,
}

/// A job's end: the blob it put in the repository and how, or `None` when
/// it had nothing to send (or another job of the queue sent it).
type JobResult = Result<Option<(String, BlobOutcome)>, RegistryError>;

#[derive(Default)]
struct State {
    /// Job keys taken.
    keys: BTreeSet<String>,
    /// Digests a job has taken.
    digests: BTreeSet<String>,
    tasks: Vec<JoinHandle<JobResult>>,
    /// Streams opened for jobs (by key), taken by the job.
    streams: BTreeMap<String, StreamHandle>,
    /// Blobs sent (or found) by jobs [`UploadQueue::finish`] collected.
    done: BTreeMap<String, BlobOutcome>,
}

/// Why a background job failed outside the registry client.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The blob's producer panicked or was cancelled.
    #[error("the background job writing a blob for `{target}` did not finish")]
    Producer {
        /// The repository.
        target: String,
        /// Cause.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl UploadQueue {
    /// A queue uploading to `target`'s repository with `client`, its jobs
    /// run on `runtime`.
    pub fn new(client: RegistryClient, runtime: Handle, target: &ImageRef) -> Self {
        let target = ImageRef { tag: None, digest: None, ..target.clone() };
        let shared =
            Arc::new(Shared { client, target, permits: Semaphore::new(UPLOAD_CONCURRENCY), state: Mutex::default() });
        UploadQueue { shared, runtime }
    }

    /// Queues job `key` (once: a key queued before is ignored): `produce`
    /// runs on a blocking thread and names the blob to upload, or `None`
    /// when there is nothing to send (an empty layer, a failed write that
    /// the export will redo and upload itself).
    pub fn enqueue(&self, key: String, produce: impl FnOnce() -> Option<QueuedBlob> + Send + 'static) {
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if !state.keys.insert(key.clone()) {
            return;
        }
        let shared = self.shared.clone();
        let task = self.runtime.spawn(async move {
            // Held from the wait for the blob to the end of its upload: a
            // build of thousands of steps has at most this many blocking
            // threads waiting and uploads running. Jobs take permits in
            // the order they were queued (the semaphore is fair), which is
            // the order the store writes layers in, so the holders are
            // always the layers written next.
            let _permit = shared.permits.acquire().await.expect("the queue's semaphore is never closed");
            let blob = tokio::task::spawn_blocking(produce).await;
            // The write is over, so its stream has all it will get. Taken
            // whatever the outcome: a stream may hold the blob's claim,
            // which a push of the same blob waits for.
            let stream = shared.state.lock().unwrap_or_else(|p| p.into_inner()).streams.remove(&key);
            let blob = match blob {
                Ok(blob) => blob,
                Err(source) => {
                    shared.discard(stream).await;
                    let target = shared.target.name();
                    return Err(RegistryError::Background(Box::new(QueueError::Producer { target, source })));
                }
            };
            let Some(blob) = blob else {
                shared.discard(stream).await;
                return Ok(None);
            };
            if !shared.state.lock().unwrap_or_else(|p| p.into_inner()).digests.insert(blob.digest.clone()) {
                shared.discard(stream).await;
                return Ok(None); // another job of this queue sends it
            }
            if let Some(outcome) = shared.commit_stream(stream, &blob).await {
                return Ok(Some((blob.digest, outcome)));
            }
            shared.upload(blob).await.map(Some)
        });
        state.tasks.push(task);
    }

    /// A stream of the blob job `key` (queued next with
    /// [`enqueue`](Self::enqueue)) will upload: the sink to give the
    /// store's background write of it (see [`super::streaming`]). `None` when
    /// the key is taken or streams are off; the job then uploads the file.
    pub fn open_stream(&self, key: &str) -> Option<StreamSink> {
        if !streaming::enabled() {
            return None;
        }
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.keys.contains(key) || state.streams.contains_key(key) {
            return None;
        }
        let (sink, handle) = self.shared.client.open_stream(&self.runtime, &self.shared.target);
        state.streams.insert(key.to_string(), handle);
        Some(sink)
    }

    /// Waits for every job queued so far; every blob the queue's jobs have
    /// put in the repository, with what happened to each, or the first
    /// failure (after all jobs ended, so nothing is in flight when this
    /// returns). Call it outside the runtime.
    pub fn finish(&self) -> Result<BTreeMap<String, BlobOutcome>, RegistryError> {
        let tasks = std::mem::take(&mut self.shared.state.lock().unwrap_or_else(|p| p.into_inner()).tasks);
        let target = self.shared.target.name();
        let results = self.runtime.block_on(futures_util::future::join_all(tasks));
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut first_error = None;
        for result in results {
            let result = result.map_err(|source| {
                RegistryError::Background(Box::new(QueueError::Producer { target: target.clone(), source }))
            });
            match result.and_then(|r| r) {
                Ok(Some((digest, outcome))) => {
                    state.done.insert(digest, outcome);
                }
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(state.done.clone()),
        }
    }
}

impl Shared {
    /// Commits what `stream` sent as `blob`, if it sent exactly `blob`:
    /// `None` when there was no stream, it was abandoned or failed, or its
    /// closing failed (the caller uploads the file, the retried path).
    async fn commit_stream(&self, stream: Option<StreamHandle>, blob: &QueuedBlob) -> Option<BlobOutcome> {
        let streamed = stream?.wait().await.ok()??;
        if streamed.digest != blob.digest || streamed.size != blob.size {
            // Not the stored blob (cannot happen unless the writer's and
            // the tee's bytes differ): never committed.
            self.client.discard_stream(&self.target, streamed).await;
            return None;
        }
        self.client.finish_stream(&self.target, streamed).await.ok()
    }

    /// Waits for a stream that will not be committed, and cancels it.
    async fn discard(&self, stream: Option<StreamHandle>) {
        if let Some(Ok(Some(streamed))) = match stream {
            Some(s) => Some(s.wait().await),
            None => None,
        } {
            self.client.discard_stream(&self.target, streamed).await;
        }
    }

    /// Uploads `blob` (the caller holds one of the permits).
    async fn upload(&self, blob: QueuedBlob) -> Result<(String, BlobOutcome), RegistryError> {
        let outcome =
            self.client.push_blob_data(&self.target, &blob.digest, blob.size, BlobData::File(&blob.path)).await?;
        Ok((blob.digest, outcome))
    }
}

/// Which digests are being pushed to which registry, so that one push at a
/// time handles a digest: the others wait, then find it or mount it.
#[derive(Default)]
pub(super) struct InFlight {
    map: Mutex<BTreeMap<(String, String), watch::Receiver<bool>>>,
}

/// The right to push a digest to a registry, held until dropped.
pub(super) struct Claim {
    in_flight: Arc<InFlight>,
    key: (String, String),
    done: watch::Sender<bool>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.in_flight.lock().remove(&self.key);
        let _ = self.done.send(true);
    }
}

impl InFlight {
    /// Takes the claim on `digest` for `r`'s registry, first waiting for
    /// whoever holds it (a background upload, another push).
    pub(super) async fn claim(self: &Arc<Self>, r: &ImageRef, digest: &str) -> Claim {
        let key = (r.registry.clone(), digest.to_string());
        loop {
            let busy = {
                let mut map = self.lock();
                match map.get(&key) {
                    Some(rx) => rx.clone(),
                    None => {
                        let (done, rx) = watch::channel(false);
                        map.insert(key.clone(), rx);
                        return Claim { in_flight: self.clone(), key, done };
                    }
                }
            };
            Self::wait_on(busy).await;
        }
    }

    /// The claim on `digest` for `r`'s registry if nobody holds it now
    /// (never waits: a stream's writer takes it on the compressor's thread).
    pub(super) fn try_claim(self: &Arc<Self>, r: &ImageRef, digest: &str) -> Option<Claim> {
        let key = (r.registry.clone(), digest.to_string());
        let mut map = self.lock();
        if map.contains_key(&key) {
            return None;
        }
        let (done, rx) = watch::channel(false);
        map.insert(key.clone(), rx);
        Some(Claim { in_flight: self.clone(), key, done })
    }

    /// Waits while someone pushes `digest` to `r`'s registry.
    pub(super) async fn wait(&self, r: &ImageRef, digest: &str) {
        let busy = self.lock().get(&(r.registry.clone(), digest.to_string())).cloned();
        if let Some(rx) = busy {
            Self::wait_on(rx).await;
        }
    }

    async fn wait_on(mut rx: watch::Receiver<bool>) {
        // A dropped sender (the push cancelled) also ends the wait.
        let _ = rx.wait_for(|done| *done).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), watch::Receiver<bool>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::registry::RegistryOptions;

    /// However many jobs a build queues, at most UPLOAD_CONCURRENCY wait
    /// for their blob at once (each on a blocking thread), and every job
    /// is waited for by `finish`; a key queued twice runs once.
    #[test]
    fn jobs_are_bounded_and_each_key_runs_once() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let client = RegistryClient::new(RegistryOptions::default()).unwrap();
        let target = ImageRef::parse("127.0.0.1:1/cache:x").unwrap();
        let queue = UploadQueue::new(client, runtime.handle().clone(), &target);
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let ran = Arc::new(AtomicUsize::new(0));
        for i in 0..40 {
            for _ in 0..2 {
                let (now, most, ran) = (now.clone(), most.clone(), ran.clone());
                queue.enqueue(format!("job-{i}"), move || {
                    most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    now.fetch_sub(1, Ordering::SeqCst);
                    ran.fetch_add(1, Ordering::SeqCst);
                    None
                });
            }
        }
        assert!(queue.finish().unwrap().is_empty());
        assert_eq!(ran.load(Ordering::SeqCst), 40);
        let most = most.load(Ordering::SeqCst);
        assert!((1..=UPLOAD_CONCURRENCY).contains(&most), "{most} jobs waited at once");
    }
}
