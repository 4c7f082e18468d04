//! Pushing blobs and manifests (OCI distribution spec, "push"): existence
//! check, cross-repository mount, monolithic upload for small blobs,
//! chunked upload with resumption for large ones, manifest last.
//!
//! Resumption: a PATCH that fails part-way may have appended some of its
//! bytes, so PATCHes are not retried blindly. We ask the upload URL how much
//! the registry holds (`GET` -> `Range: 0-N`) and continue from `N+1`; if
//! the registry has forgotten the session, the blob starts over in a new
//! one. Every step has the same attempt budget as other requests.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, RANGE};
use reqwest::{Method, StatusCode, Url};

use super::session::{self, Body, MAX_ATTEMPTS, Request, SessionError};
use super::{ImageRef, RegistryClient, RegistryError};

/// Blobs up to this size go in one PUT; larger ones in PATCH chunks of
/// this size. Large enough that the per-request round trip is noise next
/// to the transfer, small enough that a failure costs little to resend.
pub const CHUNK_SIZE: u64 = 32 << 20;

/// What happened to one blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobOutcome {
    /// The repository had it.
    Existed,
    /// Linked from another repository of the same registry.
    Mounted {
        /// The repository it came from.
        from: String,
    },
    /// Uploaded.
    Uploaded,
}

/// Where a blob's bytes are.
#[derive(Clone)]
pub enum BlobData<'a> {
    /// A file (a layer in the store).
    File(&'a Path),
    /// In memory (a config).
    Bytes(Bytes),
}

/// What a mount attempt gave.
pub(super) enum Mount {
    /// Linked, from this repository.
    Mounted(String),
    /// Not mounted; the registry opened this upload session instead.
    Opened(Url),
    /// No repository to mount from, or none could.
    No,
}

impl RegistryClient {
    /// The upload chunk size ([`CHUNK_SIZE`] unless the options say otherwise).
    fn chunk_size(&self) -> u64 {
        self.opts.upload_chunk_size.filter(|&n| n > 0).unwrap_or(CHUNK_SIZE)
    }

    /// `scheme://host/v2/<repository>/`.
    pub(super) async fn v2_base(&self, r: &ImageRef) -> Result<Url, RegistryError> {
        let scheme = if self.uses_plain_http(&r.registry).await { "http" } else { "https" };
        let oref = r.to_oci();
        let text = format!("{scheme}://{}/v2/{}/", oref.resolve_registry(), r.repository);
        Url::parse(&text).map_err(|source| RegistryError::Session {
            registry: r.registry.clone(),
            source: Box::new(SessionError::BadUrl { url: text, source }),
        })
    }

    /// Pushes one blob unless `r`'s repository has it, mounting it from a
    /// repository it is known to live in when the registry allows. One push
    /// of a digest at a time per registry: if another (a background
    /// [`UploadQueue`](super::queue::UploadQueue) job, another image) is
    /// pushing it, this waits, then finds the blob or mounts it: it is never
    /// sent twice. Once pushed, `r`'s repository is noted as its source.
    pub async fn push_blob_data(
        &self,
        r: &ImageRef,
        digest: &str,
        size: u64,
        data: BlobData<'_>,
    ) -> Result<BlobOutcome, RegistryError> {
        let _claim = self.in_flight.claim(r, digest).await;
        let outcome = self.push_blob_claimed(r, digest, size, data).await?;
        self.note_blob_source(digest, r);
        Ok(outcome)
    }

    async fn push_blob_claimed(
        &self,
        r: &ImageRef,
        digest: &str,
        size: u64,
        data: BlobData<'_>,
    ) -> Result<BlobOutcome, RegistryError> {
        let wrap = |source| RegistryError::UploadBlob {
            repository: r.name(),
            digest: digest.to_string(),
            source: Box::new(source),
        };
        let creds = self.creds_for(&r.registry)?;
        let base = self.v2_base(r).await?;
        let scope = format!("repository:{}:pull,push", r.repository);
        let session = &self.session;

        let head = request(Method::HEAD, join(&base, &format!("blobs/{digest}")).map_err(wrap)?, &scope);
        let resp = session.send(&r.registry, &creds, &head).await.map_err(wrap)?;
        match resp.status() {
            StatusCode::OK => return Ok(BlobOutcome::Existed),
            StatusCode::NOT_FOUND => {}
            _ => return Err(wrap(session::status_error(&head.method, &head.url, resp).await)),
        }

        if let BlobData::File(path) = &data {
            // Checked after the HEAD (a blob the repository has is never
            // opened) but before a mount, which would hide a broken file.
            let read_err = |source| RegistryError::ReadLayerFile { path: path.to_path_buf(), source };
            let actual = tokio::fs::metadata(path).await.map_err(read_err)?.len();
            if actual != size {
                return Err(RegistryError::SizeMismatch {
                    digest: digest.to_string(),
                    expected: size,
                    actual: Some(actual),
                });
            }
        }
        let mut opened: Option<Url> = None;
        match self.mount_known(r, &creds, &base, &scope, digest).await.map_err(wrap)? {
            Mount::Mounted(from) => return Ok(BlobOutcome::Mounted { from }),
            Mount::Opened(url) => opened = Some(url),
            Mount::No => {}
        }

        let mut failures = 0;
        loop {
            let upload = match opened.take() {
                Some(u) => u,
                None => self.begin_upload(r, &creds, &base, &scope).await.map_err(wrap)?,
            };
            let sent = if size <= self.chunk_size() {
                self.put_whole(r, &creds, &scope, upload, digest, size, &data).await
            } else {
                self.put_chunked(r, &creds, &scope, upload, digest, size, &data).await
            };
            match sent {
                Ok(()) => return Ok(BlobOutcome::Uploaded),
                Err(e) if e.is_retryable() && failures + 1 < MAX_ATTEMPTS => {
                    failures += 1;
                    tokio::time::sleep(e.retry_after().unwrap_or_else(|| session::backoff(failures))).await;
                }
                Err(e) if failures > 0 && e.is_retryable() => {
                    return Err(wrap(SessionError::RetriesExhausted { attempts: failures + 1, last: Box::new(e) }));
                }
                Err(e) => return Err(wrap(e)),
            }
        }
    }

    /// Links blob `digest` into `r`'s repository without its bytes: it is
    /// there already (HEAD), or mounted from a repository of the same
    /// registry known to hold it (a cache ref it was imported from, a base
    /// image). `None`: neither, so the caller must upload it.
    pub async fn link_blob(&self, r: &ImageRef, digest: &str) -> Result<Option<BlobOutcome>, RegistryError> {
        let wrap = |source| RegistryError::UploadBlob {
            repository: r.name(),
            digest: digest.to_string(),
            source: Box::new(source),
        };
        self.in_flight.wait(r, digest).await;
        if self.blob_exists(r, digest).await? {
            return Ok(Some(BlobOutcome::Existed));
        }
        let creds = self.creds_for(&r.registry)?;
        let base = self.v2_base(r).await?;
        let scope = format!("repository:{}:pull,push", r.repository);
        // An upload session the registry opened instead of mounting is
        // left to expire (the caller uploads in its own).
        match self.mount_known(r, &creds, &base, &scope, digest).await.map_err(wrap)? {
            Mount::Mounted(from) => Ok(Some(BlobOutcome::Mounted { from })),
            Mount::Opened(_) | Mount::No => Ok(None),
        }
    }

    /// Tries a cross-repository mount of `digest` from each repository of
    /// `r`'s registry known to hold it.
    pub(super) async fn mount_known(
        &self,
        r: &ImageRef,
        creds: &oci_client::secrets::RegistryAuth,
        base: &Url,
        scope: &str,
        digest: &str,
    ) -> Result<Mount, SessionError> {
        for from in self.mount_sources(r, digest) {
            let mount_scope = format!("{scope} repository:{}:pull", from.repository);
            let mut url = join(base, "blobs/uploads/")?;
            url.query_pairs_mut().append_pair("mount", digest).append_pair("from", &from.repository);
            let post = request(Method::POST, url, &mount_scope);
            let resp = self.session.send(&r.registry, creds, &post).await?;
            match resp.status() {
                StatusCode::CREATED => return Ok(Mount::Mounted(from.repository)),
                // The registry could not mount (no such blob there, or no
                // read access) and opened an ordinary upload: use it.
                StatusCode::ACCEPTED => return Ok(Mount::Opened(location(&post.url, &resp)?)),
                _ => {}
            }
        }
        Ok(Mount::No)
    }

    /// Asks the registry to link blob `digest` from `from`'s repository into
    /// `to`'s (cross-repository mount, same registry only). Returns whether
    /// it did; `false` means "upload it yourself" (an upload session the
    /// registry opened instead is left to expire).
    #[cfg(test)]
    pub async fn mount_blob(&self, to: &ImageRef, from: &ImageRef, digest: &str) -> Result<bool, RegistryError> {
        if to.registry != from.registry {
            return Ok(false);
        }
        let wrap = |source| RegistryError::UploadBlob {
            repository: to.name(),
            digest: digest.to_string(),
            source: Box::new(source),
        };
        let creds = self.creds_for(&to.registry)?;
        let base = self.v2_base(to).await?;
        let scope = format!("repository:{}:pull,push repository:{}:pull", to.repository, from.repository);
        let mut url = join(&base, "blobs/uploads/").map_err(wrap)?;
        url.query_pairs_mut().append_pair("mount", digest).append_pair("from", &from.repository);
        let resp = self.session.send(&to.registry, &creds, &request(Method::POST, url, &scope)).await.map_err(wrap)?;
        Ok(resp.status() == StatusCode::CREATED)
    }

    /// Opens an upload session: its URL.
    pub(super) async fn begin_upload(
        &self,
        r: &ImageRef,
        creds: &oci_client::secrets::RegistryAuth,
        base: &Url,
        scope: &str,
    ) -> Result<Url, SessionError> {
        let post = request(Method::POST, join(base, "blobs/uploads/")?, scope);
        let resp = self.session.send(&r.registry, creds, &post).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(session::status_error(&post.method, &post.url, resp).await);
        }
        location(&post.url, &resp)
    }

    /// The whole blob in the closing PUT (not retried in place: a
    /// failed PUT leaves the session in an unknown state, so the caller
    /// starts a new one).
    #[allow(clippy::too_many_arguments)]
    async fn put_whole(
        &self,
        r: &ImageRef,
        creds: &oci_client::secrets::RegistryAuth,
        scope: &str,
        upload: Url,
        digest: &str,
        size: u64,
        data: &BlobData<'_>,
    ) -> Result<(), SessionError> {
        let mut url = upload;
        url.query_pairs_mut().append_pair("digest", digest);
        let mut put = request(Method::PUT, url, scope);
        put.retry = false;
        put.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        put.body = match data {
            BlobData::File(path) => Body::File { path: path.to_path_buf(), offset: 0, len: size },
            BlobData::Bytes(b) => Body::Bytes(b.clone()),
        };
        let resp = self.session.send(&r.registry, creds, &put).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(session::status_error(&put.method, &put.url, resp).await);
        }
        Ok(())
    }

    /// PATCH chunks, resuming after failures from what the registry holds,
    /// then the closing PUT.
    #[allow(clippy::too_many_arguments)]
    async fn put_chunked(
        &self,
        r: &ImageRef,
        creds: &oci_client::secrets::RegistryAuth,
        scope: &str,
        mut upload: Url,
        digest: &str,
        size: u64,
        data: &BlobData<'_>,
    ) -> Result<(), SessionError> {
        let chunk_size = self.chunk_size();
        let mut offset = 0u64;
        let mut failures = 0;
        while offset < size {
            let len = chunk_size.min(size - offset);
            let mut patch = request(Method::PATCH, upload.clone(), scope);
            patch.retry = false;
            patch.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            patch.headers.insert(CONTENT_RANGE, header(&format!("{offset}-{}", offset + len - 1)));
            patch.body = match data {
                BlobData::File(path) => Body::File { path: PathBuf::from(path), offset, len },
                BlobData::Bytes(b) => Body::Bytes(b.slice(offset as usize..(offset + len) as usize)),
            };
            let err = match self.session.send(&r.registry, creds, &patch).await {
                Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                    upload = location(&patch.url, &resp)?;
                    offset = range_end(resp.headers()).map_or(offset + len, |end| end + 1);
                    failures = 0;
                    continue;
                }
                Ok(resp) => session::status_error(&patch.method, &patch.url, resp).await,
                Err(e) => e,
            };
            failures += 1;
            if !err.is_retryable() || failures >= MAX_ATTEMPTS {
                return Err(err);
            }
            tokio::time::sleep(err.retry_after().unwrap_or_else(|| session::backoff(failures))).await;
            // How far did the registry get? (A lost session is a 404: the
            // caller starts over.)
            let status = request(Method::GET, upload.clone(), scope);
            let resp = self.session.send(&r.registry, creds, &status).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Err(SessionError::UploadLost { url: session::without_query(&status.url) });
            }
            if resp.status() != StatusCode::NO_CONTENT {
                return Err(session::status_error(&status.method, &status.url, resp).await);
            }
            offset = range_end(resp.headers()).map_or(0, |end| if end == 0 { 0 } else { end + 1 });
            if let Ok(u) = location(&status.url, &resp) {
                upload = u;
            }
        }
        let mut url = upload;
        url.query_pairs_mut().append_pair("digest", digest);
        let put = request(Method::PUT, url, scope);
        let resp = self.session.send(&r.registry, creds, &put).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(session::status_error(&put.method, &put.url, resp).await);
        }
        Ok(())
    }

    /// PUTs a manifest or index under `reference` (a tag or digest).
    pub(super) async fn put_manifest(
        &self,
        r: &ImageRef,
        reference: &str,
        body: &[u8],
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let wrap = |source| RegistryError::UploadManifest { reference: r.to_string(), source: Box::new(source) };
        let creds = self.creds_for(&r.registry)?;
        let base = self.v2_base(r).await?;
        let scope = format!("repository:{}:pull,push", r.repository);
        let mut put = request(Method::PUT, join(&base, &format!("manifests/{reference}")).map_err(wrap)?, &scope);
        let content_type = HeaderValue::from_str(media_type)
            .map_err(|_| RegistryError::BadMediaType { media_type: media_type.to_string() })?;
        put.headers.insert(CONTENT_TYPE, content_type);
        put.body = Body::Bytes(Bytes::copy_from_slice(body));
        let resp = self.session.send(&r.registry, &creds, &put).await.map_err(wrap)?;
        if resp.status() != StatusCode::CREATED {
            return Err(wrap(session::status_error(&put.method, &put.url, resp).await));
        }
        Ok(())
    }
}

pub(super) fn request<'a>(method: Method, url: Url, scope: &'a str) -> Request<'a> {
    Request { method, url, headers: HeaderMap::new(), body: Body::Empty, scope, retry: true }
}

fn join(base: &Url, path: &str) -> Result<Url, SessionError> {
    base.join(path).map_err(|source| SessionError::BadUrl { url: format!("{base}{path}"), source })
}

pub(super) fn header(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The (possibly relative) `Location` of `resp`, resolved against `url`.
pub(super) fn location(url: &Url, resp: &reqwest::Response) -> Result<Url, SessionError> {
    let text = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    url.join(text)
        .map_err(|source| SessionError::BadUrl { url: text.split('?').next().unwrap_or_default().to_string(), source })
}

/// The inclusive end of a `Range: 0-N` header.
fn range_end(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(RANGE)?.to_str().ok()?;
    let v = v.trim().trim_start_matches("bytes=");
    v.split_once('-')?.1.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_reads_registry_ranges() {
        let mut h = HeaderMap::new();
        h.insert(RANGE, HeaderValue::from_static("0-1048575"));
        assert_eq!(range_end(&h), Some(1048575));
        h.insert(RANGE, HeaderValue::from_static("bytes=0-9"));
        assert_eq!(range_end(&h), Some(9));
        h.insert(RANGE, HeaderValue::from_static("garbage"));
        assert_eq!(range_end(&h), None);
    }
}
