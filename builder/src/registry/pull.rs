//! The pull half of the client: manifests, blob existence and blob
//! downloads, through the same [`Session`](super::session::Session) as
//! pushes. One retry policy for both directions: 429, 5xx and broken
//! connections are retried with jittered exponential backoff, and a
//! registry's `Retry-After` is waited out (oci-client, which pulled
//! before, hides response headers and so could not honour it).
//!
//! A blob body cut part-way is resumed with a `Range` request from the
//! byte where it stopped (or re-read from the start, skipping what we
//! have, when the registry ignores ranges); size and digest are checked
//! while streaming, so a truncated, oversized or tampered blob is an error
//! and the caller's temporary file never becomes a store blob.

use bytes::Bytes;
use futures_util::StreamExt;
use rbuild_cache::oci::sha256_digest;
use reqwest::header::{ACCEPT, HeaderValue, RANGE};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::session::{self, Body, MAX_ATTEMPTS, Request, SessionError};
use super::{ACCEPTED_MANIFEST_TYPES, Hasher, ImageRef, RegistryClient, RegistryError, hash_bytes, reference};

/// Manifests and indexes are small JSON documents (containerd caps them at
/// 4 MiB); refuse to buffer more.
const MAX_MANIFEST_SIZE: usize = 4 << 20;

impl RegistryClient {
    /// A GET/HEAD of `path` under `r`'s repository with pull scope,
    /// retried by the session (429/5xx/connection failures, honouring
    /// `Retry-After`). Returns the response whatever its status.
    async fn pull_request(
        &self,
        r: &ImageRef,
        method: Method,
        path: &str,
        headers: reqwest::header::HeaderMap,
        wrap: impl Fn(SessionError) -> RegistryError,
    ) -> Result<reqwest::Response, RegistryError> {
        let creds = self.creds_for(&r.registry)?;
        let base = self.v2_base(r).await?;
        let url =
            base.join(path).map_err(|source| wrap(SessionError::BadUrl { url: format!("{base}{path}"), source }))?;
        let scope = format!("repository:{}:pull", r.repository);
        let req = Request { method, url, headers, body: Body::Empty, scope: &scope, retry: true };
        let resp = self.session.send(&r.registry, &creds, &req).await.map_err(&wrap)?;
        if resp.status().is_success() || resp.status() == StatusCode::NOT_FOUND {
            return Ok(resp);
        }
        // A retryable status that outlived the budget was already turned
        // into RetriesExhausted by the session; anything else is final.
        Err(wrap(session::status_error(&req.method, &req.url, resp).await))
    }

    /// Fetches a manifest (or index) as raw bytes plus its digest; a
    /// reference by digest is checked against it. `Ok(None)`: the registry
    /// has no such manifest or repository.
    async fn get_manifest(&self, r: &ImageRef) -> Result<Option<(Bytes, String)>, RegistryError> {
        let wrap = |source| RegistryError::FetchManifest { reference: r.to_string(), source: Box::new(source) };
        let reference = r.digest.clone().or_else(|| r.tag.clone()).unwrap_or_else(|| "latest".to_string());
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_str(&ACCEPTED_MANIFEST_TYPES.join(", ")).expect("media types are header-safe"),
        );
        let resp = self.pull_request(r, Method::GET, &format!("manifests/{reference}"), headers, wrap).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if resp.content_length().is_some_and(|n| n > MAX_MANIFEST_SIZE as u64) {
            return Err(RegistryError::ManifestTooLarge { reference: r.to_string(), limit: MAX_MANIFEST_SIZE });
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| {
                wrap(SessionError::Transport { method: Method::GET, url: format!("manifests/{reference}"), source })
            })?;
            if body.len() + chunk.len() > MAX_MANIFEST_SIZE {
                return Err(RegistryError::ManifestTooLarge { reference: r.to_string(), limit: MAX_MANIFEST_SIZE });
            }
            body.extend_from_slice(&chunk);
        }
        let digest = match &r.digest {
            Some(want) => {
                let actual = hash_bytes(want, &body);
                if &actual != want {
                    return Err(RegistryError::DigestMismatch { expected: want.clone(), actual });
                }
                actual
            }
            None => sha256_digest(&body),
        };
        Ok(Some((Bytes::from(body), digest)))
    }

    /// Fetches a manifest (or index) that must exist.
    pub(super) async fn fetch_manifest(&self, r: &ImageRef) -> Result<(Bytes, String), RegistryError> {
        self.get_manifest(r).await?.ok_or_else(|| RegistryError::ManifestNotFound { reference: r.to_string() })
    }

    /// The manifest `r` names as raw bytes and its digest, or `None` when
    /// the registry has no such manifest or repository (a cache reference
    /// before its first export).
    pub async fn fetch_manifest_if_exists(&self, r: &ImageRef) -> Result<Option<(Vec<u8>, String)>, RegistryError> {
        Ok(self.get_manifest(r).await?.map(|(b, d)| (b.to_vec(), d)))
    }

    /// Whether `r`'s repository has blob `digest` (HEAD request): what a
    /// cache export asks before fetching a blob it would otherwise upload.
    pub async fn blob_exists(&self, r: &ImageRef, digest: &str) -> Result<bool, RegistryError> {
        reference::validate_digest(digest)
            .map_err(|reason| RegistryError::InvalidDigest { digest: digest.to_string(), reason })?;
        let wrap = |source| RegistryError::CheckBlob {
            repository: r.name(),
            digest: digest.to_string(),
            source: Box::new(source),
        };
        let resp = self.pull_request(r, Method::HEAD, &format!("blobs/{digest}"), Default::default(), wrap).await?;
        Ok(resp.status().is_success())
    }

    /// Streams blob `digest` of `r`'s repository into `out`, never holding it
    /// whole in memory. Checks the size while streaming (so an endless body
    /// is cut off) and the digest at the end; on a dropped connection,
    /// resumes with a range request (the same attempt budget as any
    /// request). On error, `out` may hold partial data: write to a temp
    /// file and rename only on success.
    ///
    /// A mirror of `r`'s registry that has the blob (asked with a HEAD
    /// request, so a fallback never follows a partial write) serves it in
    /// place of the registry.
    pub async fn fetch_blob(
        &self,
        r: &ImageRef,
        digest: &str,
        size: u64,
        out: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<(), RegistryError> {
        for m in self.mirrors_of(r) {
            if self.blob_exists(&m, digest).await.unwrap_or(false) {
                return self.fetch_blob_at(&m, digest, size, out).await;
            }
        }
        self.fetch_blob_at(r, digest, size, out).await
    }

    pub(super) async fn fetch_blob_at(
        &self,
        r: &ImageRef,
        digest: &str,
        size: u64,
        out: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<(), RegistryError> {
        reference::validate_digest(digest)
            .map_err(|reason| RegistryError::InvalidDigest { digest: digest.to_string(), reason })?;
        let repository = r.name();
        let fetch_err = |source| RegistryError::FetchBlob {
            repository: repository.clone(),
            digest: digest.to_string(),
            source: Box::new(source),
        };
        let mut hasher = Hasher::new(digest);
        let mut received: u64 = 0;
        let mut attempt = 1;
        loop {
            // (Re)open the body: whole at first, from `received` on resume.
            let mut headers = reqwest::header::HeaderMap::new();
            if received > 0 {
                headers.insert(RANGE, HeaderValue::from_str(&format!("bytes={received}-")).expect("ascii"));
            }
            let resp = self.pull_request(r, Method::GET, &format!("blobs/{digest}"), headers, fetch_err).await?;
            let mut skip = match resp.status() {
                StatusCode::NOT_FOUND => {
                    return Err(fetch_err(SessionError::Status {
                        method: Method::GET,
                        url: session::without_query(resp.url()),
                        status: StatusCode::NOT_FOUND,
                        body: String::new(),
                        retry_after: None,
                    }));
                }
                StatusCode::PARTIAL_CONTENT => 0,
                // The registry ignored the range: skip what we have.
                _ => received,
            };
            let mut body = resp.bytes_stream();
            let failure = loop {
                match body.next().await {
                    None => break None,
                    Some(Ok(mut chunk)) => {
                        if skip > 0 {
                            let n = skip.min(chunk.len() as u64);
                            let _ = chunk.split_to(n as usize);
                            skip -= n;
                        }
                        received += chunk.len() as u64;
                        if received > size {
                            return Err(RegistryError::SizeMismatch {
                                digest: digest.to_string(),
                                expected: size,
                                actual: None,
                            });
                        }
                        hasher.update(&chunk);
                        out.write_all(&chunk)
                            .await
                            .map_err(|source| RegistryError::WriteBlob { digest: digest.to_string(), source })?;
                    }
                    Some(Err(e)) => break Some(e),
                }
            };
            match failure {
                None => break,
                // Every byte arrived before the connection broke: nothing
                // to resume (a range from the end is unsatisfiable); the
                // digest check below decides.
                Some(_) if received == size => break,
                Some(_) if attempt < MAX_ATTEMPTS => {
                    tokio::time::sleep(session::backoff(attempt)).await;
                    attempt += 1;
                }
                Some(e) => {
                    return Err(RegistryError::ReadBlob {
                        repository,
                        digest: digest.to_string(),
                        received,
                        source: std::io::Error::other(e),
                    });
                }
            }
        }
        let actual = hasher.finish();
        if actual != digest {
            return Err(RegistryError::DigestMismatch { expected: digest.to_string(), actual });
        }
        if received != size {
            return Err(RegistryError::SizeMismatch {
                digest: digest.to_string(),
                expected: size,
                actual: Some(received),
            });
        }
        out.flush().await.map_err(|source| RegistryError::WriteBlob { digest: digest.to_string(), source })?;
        self.note_blob_source(digest, r);
        Ok(())
    }
}
