//! Uploading a blob while it is being written: the store's background
//! writer tees the compressed bytes of a layer ([`rbuild_cache::store::LayerTee`])
//! into a [`StreamSink`]; a task opens an upload session (POST) at the
//! first bytes, PATCHes them as they come, and hashes them on the way.
//! Once the write is done, [`RegistryClient::finish_stream`] closes the
//! session with `PUT ?digest=` if what was streamed is the stored blob,
//! under the digest's claim (a blob the registry has by then is not
//! committed twice: the session is cancelled). The sink takes that claim
//! when the writer names the finished blob, before the store tells anyone
//! the layer exists: a push of the image that reads the layer then waits
//! for the stream to commit and mounts the blob, instead of sending the
//! bytes the stream has nearly all sent.
//!
//! The compressor is never held up: the sink queues bytes without waiting,
//! and once more than [`SPILL_BOUND`] bytes wait for the network it drops
//! out (the stream is abandoned and its session cancelled). An abandoned
//! or failed stream is no error: the caller uploads the finished file as
//! before, with the full retry policy. The PATCHes are not retried in
//! place (the fallback is the retry).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use sha2::{Digest as _, Sha256};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::queue::{Claim, InFlight};
use super::session::{self, Body, SessionError};
use super::upload::{Mount, header, location, request};
use super::{BlobOutcome, ImageRef, RegistryClient, RegistryError};

/// Bytes the sink lets wait for the network before it gives up on the
/// stream: a registry this far behind the compressor is better served from
/// the finished file.
pub const SPILL_BOUND: u64 = 64 << 20;

/// A PATCH waits for at least this many bytes (or the end), so a slow
/// compressor does not cost a request per write.
const MIN_PATCH: usize = 1 << 20;

/// At most this many bytes per PATCH.
const MAX_PATCH: usize = 16 << 20;

/// Why a stream stopped (never shown to the user: the file is uploaded
/// instead, and that upload's failure is what a user sees).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A request of the stream failed.
    #[error("streaming a blob failed")]
    Session(#[from] SessionError),
    /// The client could not start (credentials, URL).
    #[error("cannot start streaming a blob")]
    Setup(#[from] Box<RegistryError>),
}

enum Msg {
    Bytes(Bytes),
    /// Every byte was sent: the blob is complete (with its claim, if the
    /// sink got it).
    End(Option<Claim>),
}

/// The writer's end of a stream (a [`rbuild_cache::store::LayerTee`]).
pub struct StreamSink {
    tx: mpsc::UnboundedSender<Msg>,
    queued: Arc<AtomicU64>,
    /// Where the blob's claim is taken, and for which registry.
    in_flight: Arc<InFlight>,
    target: ImageRef,
    claim: Option<Claim>,
}

impl rbuild_cache::store::LayerTee for StreamSink {
    fn write(&mut self, bytes: &[u8]) -> bool {
        let len = bytes.len() as u64;
        if self.queued.fetch_add(len, Ordering::SeqCst) + len > SPILL_BOUND {
            // Dropping the sink closes the channel: the task abandons.
            return false;
        }
        self.tx.send(Msg::Bytes(Bytes::copy_from_slice(bytes))).is_ok()
    }

    fn complete(&mut self, digest: &str) {
        // Held by someone else (a push of the same blob already running):
        // the commit waits for it as before.
        self.claim = self.in_flight.try_claim(&self.target, digest);
    }

    fn finish(mut self: Box<Self>) {
        let claim = self.claim.take();
        // A task that ended already drops the claim with the message.
        let _ = self.tx.send(Msg::End(claim));
    }
}

/// What a stream sent, ready for its closing PUT.
pub struct Streamed {
    /// The upload session (its latest `Location`).
    url: Url,
    /// `sha256:<hex>` of the bytes sent.
    pub digest: String,
    /// Bytes sent.
    pub size: u64,
    /// The claim on the digest, when the sink took it (released when this
    /// is dropped: committed or discarded).
    claim: Option<Claim>,
}

/// The upload task's end of a stream.
pub struct StreamHandle {
    task: JoinHandle<Result<Option<Streamed>, StreamError>>,
}

impl StreamHandle {
    /// Waits for the stream: what it sent, `None` when it sent nothing
    /// (no write happened, or it was abandoned), or why it failed.
    pub async fn wait(self) -> Result<Option<Streamed>, StreamError> {
        match self.task.await {
            Ok(r) => r,
            // A panicked task is a stream that did not happen.
            Err(_) => Ok(None),
        }
    }
}

/// Whether `RBUILD_STREAM_UPLOADS` leaves streamed uploads on (`0`: off,
/// background uploads then start from the finished file).
pub fn enabled() -> bool {
    std::env::var("RBUILD_STREAM_UPLOADS").map(|v| v != "0").unwrap_or(true)
}

impl RegistryClient {
    /// A stream of a blob to `r`'s repository, its task on `runtime` (no
    /// request is made before the first bytes).
    pub fn open_stream(&self, runtime: &Handle, r: &ImageRef) -> (StreamSink, StreamHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicU64::new(0));
        let (client, target, q) = (self.clone(), r.clone(), queued.clone());
        let task = runtime.spawn(async move { client.run_stream(&target, rx, &q).await });
        let sink = StreamSink { tx, queued, in_flight: self.in_flight.clone(), target: r.clone(), claim: None };
        (sink, StreamHandle { task })
    }

    async fn run_stream(
        &self,
        r: &ImageRef,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        queued: &AtomicU64,
    ) -> Result<Option<Streamed>, StreamError> {
        let first = match rx.recv().await {
            Some(Msg::Bytes(b)) => b,
            // No write, or an empty one: nothing to stream.
            Some(Msg::End(_)) | None => return Ok(None),
        };
        queued.fetch_sub(first.len() as u64, Ordering::SeqCst);
        let creds = self.creds_for(&r.registry).map_err(Box::new)?;
        let base = self.v2_base(r).await.map_err(Box::new)?;
        let scope = format!("repository:{}:pull,push", r.repository);
        let mut url = self.begin_upload(r, &creds, &base, &scope).await?;
        let mut hasher = Sha256::new();
        hasher.update(&first);
        let mut buf = BytesMut::from(&first[..]);
        let mut offset = 0u64;
        let mut ended = None;
        loop {
            // At least MIN_PATCH (or the end), then whatever else is there.
            while ended.is_none() && buf.len() < MAX_PATCH {
                let msg = if buf.len() < MIN_PATCH { rx.recv().await } else { rx.try_recv().ok() };
                match msg {
                    Some(Msg::Bytes(b)) => {
                        queued.fetch_sub(b.len() as u64, Ordering::SeqCst);
                        hasher.update(&b);
                        buf.extend_from_slice(&b);
                    }
                    Some(Msg::End(claim)) => ended = Some(claim),
                    None if buf.len() >= MIN_PATCH => break,
                    None => {
                        // The writer failed or gave up: the bytes are void.
                        self.cancel_upload(r, &creds, &scope, &url).await;
                        return Ok(None);
                    }
                }
            }
            if !buf.is_empty() {
                let chunk = buf.split().freeze();
                let len = chunk.len() as u64;
                let mut patch = request(Method::PATCH, url.clone(), &scope);
                patch.retry = false;
                patch.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
                patch.headers.insert(CONTENT_RANGE, header(&format!("{offset}-{}", offset + len - 1)));
                patch.body = Body::Bytes(chunk);
                let resp = self.session.send(&r.registry, &creds, &patch).await?;
                if resp.status() != StatusCode::ACCEPTED {
                    let err = session::status_error(&patch.method, &patch.url, resp).await;
                    self.cancel_upload(r, &creds, &scope, &url).await;
                    return Err(err.into());
                }
                url = location(&patch.url, &resp)?;
                offset += len;
            }
            if let Some(claim) = ended {
                let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
                return Ok(Some(Streamed { url, digest, size: offset, claim }));
            }
        }
    }

    /// Commits a stream as blob `digest` of `r`'s repository: under the
    /// digest's claim, the registry's copy if it has one by now (the
    /// session is cancelled), else `PUT ?digest=`. Once pushed, `r`'s
    /// repository is noted as the blob's source.
    pub async fn finish_stream(&self, r: &ImageRef, mut streamed: Streamed) -> Result<BlobOutcome, RegistryError> {
        let wrap = |source| RegistryError::UploadBlob {
            repository: r.name(),
            digest: streamed.digest.clone(),
            source: Box::new(source),
        };
        // The sink's claim is for this very digest and registry (a stream
        // whose bytes are not the blob is discarded, never finished).
        let _claim = match streamed.claim.take() {
            Some(claim) => claim,
            None => self.in_flight.claim(r, &streamed.digest).await,
        };
        let creds = self.creds_for(&r.registry)?;
        let scope = format!("repository:{}:pull,push", r.repository);
        if self.blob_exists(r, &streamed.digest).await? {
            self.cancel_upload(r, &creds, &scope, &streamed.url).await;
            return Ok(BlobOutcome::Existed);
        }
        // Pushed meanwhile to another repository of the registry (the
        // image's own push got there first): mount it, as a push of the
        // file would, instead of sending it a second time.
        let base = self.v2_base(r).await?;
        match self.mount_known(r, &creds, &base, &scope, &streamed.digest).await.map_err(wrap)? {
            Mount::Mounted(from) => {
                self.cancel_upload(r, &creds, &scope, &streamed.url).await;
                return Ok(BlobOutcome::Mounted { from });
            }
            // The registry opened a session of its own instead of mounting:
            // ours holds the bytes already, so that one is dropped.
            Mount::Opened(other) => self.cancel_upload(r, &creds, &scope, &other).await,
            Mount::No => {}
        }
        let mut url = streamed.url.clone();
        url.query_pairs_mut().append_pair("digest", &streamed.digest);
        let mut put = request(Method::PUT, url, &scope);
        put.retry = false;
        let resp = self.session.send(&r.registry, &creds, &put).await.map_err(wrap)?;
        if resp.status() != StatusCode::CREATED {
            return Err(wrap(session::status_error(&put.method, &put.url, resp).await));
        }
        self.note_blob_source(&streamed.digest, r);
        Ok(BlobOutcome::Uploaded)
    }

    /// Drops a stream that will not be committed (best effort: a session
    /// left behind expires in the registry).
    pub async fn discard_stream(&self, r: &ImageRef, streamed: Streamed) {
        if let Ok(creds) = self.creds_for(&r.registry) {
            let scope = format!("repository:{}:pull,push", r.repository);
            self.cancel_upload(r, &creds, &scope, &streamed.url).await;
        }
    }

    /// `DELETE` an upload session, ignoring the answer.
    async fn cancel_upload(&self, r: &ImageRef, creds: &oci_client::secrets::RegistryAuth, scope: &str, url: &Url) {
        let mut delete = request(Method::DELETE, url.clone(), scope);
        delete.retry = false;
        let _ = self.session.send(&r.registry, creds, &delete).await;
    }
}

#[cfg(test)]
mod tests {
    use rbuild_cache::store::LayerTee;

    use super::*;

    /// The sink never waits for the network: with nothing draining it, it
    /// takes [`SPILL_BOUND`] bytes and then gives up; bytes the task took
    /// no longer count against it.
    #[test]
    fn a_sink_gives_up_past_the_spill_bound_instead_of_blocking() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicU64::new(0));
        let mut sink = test_sink(tx, queued.clone(), &Arc::default());
        let chunk = vec![7u8; 1 << 20];
        let mut taken = 0u64;
        while sink.write(&chunk) {
            taken += 1;
            assert!(taken <= SPILL_BOUND >> 20, "the sink went past its bound");
        }
        assert_eq!(taken, SPILL_BOUND >> 20);
        // A task that keeps up (takes each chunk as it comes) never spills.
        let (tx, mut rx2) = mpsc::unbounded_channel();
        let queued2 = Arc::new(AtomicU64::new(0));
        let mut sink2 = test_sink(tx, queued2.clone(), &Arc::default());
        for _ in 0..(2 * (SPILL_BOUND >> 20)) {
            assert!(sink2.write(&chunk));
            let Ok(Msg::Bytes(b)) = rx2.try_recv() else { panic!("no bytes") };
            queued2.fetch_sub(b.len() as u64, Ordering::SeqCst);
        }
        Box::new(sink2).finish();
        assert!(matches!(rx2.try_recv(), Ok(Msg::End(None))));
        assert!(matches!(rx.try_recv(), Ok(Msg::Bytes(_))));
    }

    fn test_sink(tx: mpsc::UnboundedSender<Msg>, queued: Arc<AtomicU64>, in_flight: &Arc<InFlight>) -> StreamSink {
        let target = ImageRef::parse("127.0.0.1:1/cache:x").unwrap();
        StreamSink { tx, queued, in_flight: in_flight.clone(), target, claim: None }
    }

    /// A sink told its blob's digest takes the digest's claim if nobody
    /// holds it (so a push of the same blob waits for the stream to
    /// commit), hands it to the task with the end, and it is released
    /// when the task's result goes; one whose digest is claimed already
    /// takes nothing and does not wait.
    #[test]
    fn a_completed_sink_carries_the_blob_claim_to_its_task() {
        let in_flight: Arc<InFlight> = Arc::default();
        let target = ImageRef::parse("127.0.0.1:1/cache:x").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut sink = test_sink(tx, Arc::default(), &in_flight);
        sink.complete("sha256:aa");
        assert!(in_flight.try_claim(&target, "sha256:aa").is_none(), "the sink did not take the claim");
        Box::new(sink).finish();
        let Ok(Msg::End(Some(claim))) = rx.try_recv() else { panic!("no claim with the end") };
        assert!(in_flight.try_claim(&target, "sha256:aa").is_none());
        drop(claim);
        let held = in_flight.try_claim(&target, "sha256:aa").expect("released with the message");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut other = test_sink(tx, Arc::default(), &in_flight);
        other.complete("sha256:aa");
        Box::new(other).finish();
        assert!(matches!(rx.try_recv(), Ok(Msg::End(None))));
        drop(held);
    }
}
