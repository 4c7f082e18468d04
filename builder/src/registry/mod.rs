//! Registry client: resolve, pull and push images through the OCI
//! distribution API, over one authenticated, retrying HTTP session
//! ([`session`]; pulls in [`pull`], pushes in [`upload`]).
//!
//! [`RegistryClient::resolve`] turns a reference into one platform's
//! manifest and config (following image indexes and Docker manifest lists);
//! [`RegistryClient::fetch_blob`] streams a blob to a writer, verifying its
//! digest and size; [`RegistryClient::push_image`] uploads layers from files,
//! then the config, then the manifest. Every request is retried with
//! exponential backoff on 429, 5xx and connection failures, waiting out a
//! registry's `Retry-After`, with one policy for pulls and pushes. Credentials come
//! from Docker's `config.json` (see [`auth`]); plain HTTP is used for
//! loopback registries and those listed as insecure.

pub mod auth;
pub mod credstore;
mod pull;
pub mod queue;
mod reference;
pub mod session;
pub mod streaming;
pub mod upload;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{TryStreamExt, stream};
use oci_client::secrets::RegistryAuth;
use rbuild_cache::oci::{
    Descriptor, ImageConfig, Index, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST, MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST, Manifest, Platform, is_index, sha256_digest,
};
use serde::Deserialize;
use sha2::Digest as _;

pub use reference::ImageRef;
pub use session::SessionError;
pub use upload::{BlobData, BlobOutcome};

/// Manifest media types we ask for, most specific first.
const ACCEPTED_MANIFEST_TYPES: &[&str] =
    &[MEDIA_TYPE_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST, MEDIA_TYPE_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST];

#[cfg(test)]
use session::MAX_ATTEMPTS;
/// Image configs are small JSON documents; refuse absurd sizes rather than
/// buffer them.
const MAX_CONFIG_SIZE: u64 = 32 << 20;
/// How long the HTTPS-first probe of a loopback/insecure registry waits.
const HTTPS_PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Layers uploaded at once.
pub(crate) const UPLOAD_CONCURRENCY: usize = 3;

/// Everything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference does not parse.
    #[error("invalid image reference `{reference}`: {reason}")]
    InvalidReference {
        /// The text given.
        reference: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A digest argument is malformed.
    #[error("invalid digest `{digest}`: {reason}")]
    InvalidDigest {
        /// The digest given.
        digest: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Docker's `config.json` exists but cannot be read.
    #[error("cannot read docker config `{}`", path.display())]
    ReadDockerConfig {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Docker's `config.json` has no usable credential for the registry.
    #[error("cannot get credentials for `{registry}` from `{}`", path.display())]
    Credentials {
        /// Registry host.
        registry: String,
        /// The config file.
        path: PathBuf,
        /// What docker_credential reported.
        #[source]
        source: docker_credential::CredentialRetrievalError,
    },
    /// A credential helper failed.
    #[error("credential helper `docker-credential-{helper}` failed for `{registry}`: {stderr}")]
    CredentialHelper {
        /// Registry host.
        registry: String,
        /// Helper name.
        helper: String,
        /// Its standard error (standard output is withheld: it may hold a secret).
        stderr: String,
    },
    /// Fetching a manifest failed.
    #[error("cannot fetch manifest of `{reference}`")]
    FetchManifest {
        /// The reference.
        reference: String,
        /// What went wrong.
        #[source]
        source: Box<SessionError>,
    },
    /// The registry has no manifest under the reference.
    #[error("`{reference}` not found in the registry")]
    ManifestNotFound {
        /// The reference.
        reference: String,
    },
    /// A manifest is larger than any sane manifest.
    #[error("manifest of `{reference}` is over the {limit}-byte limit")]
    ManifestTooLarge {
        /// The reference.
        reference: String,
        /// The limit.
        limit: usize,
    },
    /// A manifest or index is not valid JSON of the expected shape.
    #[error("manifest `{digest}` of `{reference}` is malformed")]
    ParseManifest {
        /// The reference.
        reference: String,
        /// Manifest digest.
        digest: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A manifest has a media type we cannot use.
    #[error("manifest `{digest}` of `{reference}` has unsupported media type `{media_type}`")]
    UnsupportedManifest {
        /// The reference.
        reference: String,
        /// Manifest digest.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// An index has no manifest for the requested platform.
    #[error("`{reference}` has no image for platform `{platform}` (it has: {available})")]
    NoMatchingPlatform {
        /// The reference.
        reference: String,
        /// The requested platform.
        platform: String,
        /// Platforms the index lists, comma-separated.
        available: String,
    },
    /// An index entry points at another index (nested indexes are not followed).
    #[error("index entry `{digest}` of `{reference}` is itself an index")]
    NestedIndex {
        /// The reference.
        reference: String,
        /// Digest of the entry.
        digest: String,
    },
    /// The image config is larger than any sane config.
    #[error("config `{digest}` of `{reference}` is {size} bytes, over the {MAX_CONFIG_SIZE}-byte limit")]
    ConfigTooLarge {
        /// The reference.
        reference: String,
        /// Config digest.
        digest: String,
        /// Declared size.
        size: u64,
    },
    /// The image config is not JSON.
    #[error("config `{digest}` of `{reference}` is not valid JSON")]
    ParseConfig {
        /// The reference.
        reference: String,
        /// Config digest.
        digest: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// Downloading a blob failed.
    #[error("cannot fetch blob `{digest}` from `{repository}`")]
    FetchBlob {
        /// `registry/repository`.
        repository: String,
        /// Blob digest.
        digest: String,
        /// What went wrong.
        #[source]
        source: Box<SessionError>,
    },
    /// Reading a blob's body failed part-way, after all retries.
    #[error("reading blob `{digest}` from `{repository}` failed after {received} bytes")]
    ReadBlob {
        /// `registry/repository`.
        repository: String,
        /// Blob digest.
        digest: String,
        /// Bytes received before the failure.
        received: u64,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Writing a downloaded blob to its destination failed.
    #[error("cannot write blob `{digest}`")]
    WriteBlob {
        /// Blob digest.
        digest: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Content does not hash to its digest.
    #[error("blob content does not match its digest: expected `{expected}`, got `{actual}`")]
    DigestMismatch {
        /// The digest asked for.
        expected: String,
        /// The digest of what arrived (or of the bytes given).
        actual: String,
    },
    /// Content is not the size its descriptor says.
    #[error("blob `{digest}` is not {expected} bytes as its descriptor says{}", match actual { Some(n) => format!(" but {n}"), None => " (it is longer)".to_string() })]
    SizeMismatch {
        /// Blob digest.
        digest: String,
        /// Size from the descriptor.
        expected: u64,
        /// Actual size, if known (`None`: more than expected arrived and the
        /// download was cut short).
        actual: Option<u64>,
    },
    /// A layer file to push cannot be read.
    #[error("cannot read layer file `{}`", path.display())]
    ReadLayerFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Checking whether the registry has a blob failed.
    #[error("cannot check for blob `{digest}` in `{repository}`")]
    CheckBlob {
        /// `registry/repository`.
        repository: String,
        /// Blob digest.
        digest: String,
        /// What went wrong.
        #[source]
        source: Box<SessionError>,
    },
    /// A media type is not a valid HTTP header value.
    #[error("media type `{media_type}` is not a valid Content-Type")]
    BadMediaType {
        /// The media type.
        media_type: String,
    },
    /// Uploading a blob failed (push path).
    #[error("cannot push blob `{digest}` to `{repository}`")]
    UploadBlob {
        /// `registry/repository`.
        repository: String,
        /// Blob digest.
        digest: String,
        /// What went wrong.
        #[source]
        source: Box<SessionError>,
    },
    /// Uploading a manifest failed (push path).
    #[error("cannot push manifest to `{reference}`")]
    UploadManifest {
        /// The reference.
        reference: String,
        /// What went wrong.
        #[source]
        source: Box<SessionError>,
    },
    /// A request to a registry failed outside a blob or manifest upload.
    #[error("request to `{registry}` failed")]
    Session {
        /// Registry host.
        registry: String,
        /// What went wrong.
        #[source]
        source: Box<SessionError>,
    },
    /// A background upload job failed before reaching the registry.
    #[error("background upload")]
    Background(#[source] Box<queue::QueueError>),
    /// The HTTPS client could not be set up.
    #[error("cannot set up the registry client")]
    ClientSetup(#[source] Box<SessionError>),
    /// The CA file (`--registry-ca`, `SSL_CERT_FILE`) cannot be read.
    #[error("cannot read CA certificates `{}`", path.display())]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds no valid PEM certificate.
    #[error("`{}` holds no valid PEM certificate", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// The parse error, if reqwest gave one.
        #[source]
        source: Option<reqwest::Error>,
    },
}

/// How to reach registries.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Registries (`host` or `host:port`) to reach over plain HTTP besides
    /// loopback ones.
    pub insecure_registries: Vec<String>,
    /// Directory holding Docker's `config.json`. `None`: `$DOCKER_CONFIG`,
    /// else `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
    /// PEM file of extra CA certificates (`--registry-ca`); `SSL_CERT_FILE`
    /// is read as well.
    pub ca_file: Option<PathBuf>,
    /// podman's `auth.json` (`None`: `$REGISTRY_AUTH_FILE`, else
    /// `$XDG_RUNTIME_DIR/containers/auth.json`), read when `config.json`
    /// has no entry for a registry.
    pub podman_auth_file: Option<PathBuf>,
    /// Upload chunk size for large blobs (`None`: [`upload::CHUNK_SIZE`]).
    pub upload_chunk_size: Option<u64>,
    /// Registry -> mirrors (`host[:port]`) tried in order before it for
    /// pulls (the config file's `[registry."docker.io"] mirrors = [...]`).
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// More PEM CA files (the config file's `ca = [...]`).
    pub extra_ca_files: Vec<PathBuf>,
}

/// One platform's image, as found in the registry.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// Digest of the platform manifest (not of the index).
    pub manifest_digest: String,
    /// Raw bytes of the platform manifest.
    pub manifest: Vec<u8>,
    /// Media type of the platform manifest.
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the registry tests of resolution"))]
    pub manifest_media_type: String,
    /// Digest of the index the manifest was selected from, if any.
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the registry tests of resolution"))]
    pub index_digest: Option<String>,
    /// Raw bytes of the image config blob.
    pub config: Vec<u8>,
    /// Digest of the config blob.
    pub config_digest: String,
    /// Layers, base first (media types as the registry gave them: OCI or
    /// Docker; gzip, zstd or uncompressed).
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the registry tests of resolution"))]
    pub layers: Vec<Descriptor>,
    /// The image's platform, from its config (which is what it really is,
    /// whatever was asked for).
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the registry tests of resolution"))]
    pub platform: Platform,
}

/// A registry client; cheap to clone (clones share connections, tokens and
/// credentials).
#[derive(Clone)]
pub struct RegistryClient {
    opts: Arc<RegistryOptions>,
    /// Registry -> credentials, read from config.json once per registry.
    auths: Arc<Mutex<BTreeMap<String, RegistryAuth>>>,
    /// The push path (see [`session`]).
    session: Arc<session::Session>,
    /// Blob digest -> repositories it is known to be in (pulled from
    /// there), for cross-repository mounts.
    blob_sources: Arc<Mutex<BTreeMap<String, BTreeSet<ImageRef>>>>,
    /// Registry -> whether it speaks plain HTTP, for those allowed to.
    plain_http: Arc<Mutex<BTreeMap<String, bool>>>,
    /// Blobs a background [`queue::UploadQueue`] is sending (pushes of the
    /// same blob wait for them).
    in_flight: Arc<queue::InFlight>,
}

impl RegistryClient {
    /// A client with the given options; fails if the CA file is unusable.
    pub fn new(opts: RegistryOptions) -> Result<Self, RegistryError> {
        let pems = load_ca_certs(&opts)?;
        let roots =
            pems.iter().map(|p| reqwest::Certificate::from_pem(p)).collect::<Result<Vec<_>, _>>().map_err(|e| {
                RegistryError::BadCa { path: opts.ca_file.clone().unwrap_or_default(), source: Some(e) }
            })?;
        let session = session::Session::new(&roots).map_err(|source| RegistryError::ClientSetup(Box::new(source)))?;
        Ok(RegistryClient {
            opts: Arc::new(opts),
            auths: Arc::default(),
            session: Arc::new(session),
            blob_sources: Arc::default(),
            plain_http: Arc::default(),
            in_flight: Arc::default(),
        })
    }

    /// This client, also reaching `registries` over plain HTTP (an output's
    /// `registry.insecure=true`). Shares connections and credentials.
    pub fn with_insecure(&self, registries: &[String]) -> RegistryClient {
        let mut opts = (*self.opts).clone();
        opts.insecure_registries.extend(registries.iter().cloned());
        RegistryClient { opts: Arc::new(opts), ..self.clone() }
    }

    /// Remembers that blob `digest` is in `source`'s repository, so a push
    /// to another repository of that registry can mount it.
    pub fn note_blob_source(&self, digest: &str, source: &ImageRef) {
        let bare = ImageRef { tag: None, digest: None, ..source.clone() };
        self.blob_sources.lock().unwrap_or_else(|p| p.into_inner()).entry(digest.to_string()).or_default().insert(bare);
    }

    /// Repositories of `to`'s registry (other than `to`'s) known to hold `digest`.
    fn mount_sources(&self, to: &ImageRef, digest: &str) -> Vec<ImageRef> {
        let map = self.blob_sources.lock().unwrap_or_else(|p| p.into_inner());
        map.get(digest)
            .into_iter()
            .flatten()
            .filter(|s| s.registry == to.registry && s.repository != to.repository)
            .cloned()
            .collect()
    }

    /// The credentials for `registry`: Docker's config.json first, then
    /// podman's auth.json; read once per registry.
    pub fn creds_for(&self, registry: &str) -> Result<RegistryAuth, RegistryError> {
        if let Some(a) = self.auths.lock().unwrap_or_else(|p| p.into_inner()).get(registry) {
            return Ok(a.clone());
        }
        let dir = self.opts.docker_config_dir.clone().or_else(auth::default_docker_config_dir);
        let mut a = auth::credentials_for(dir.as_deref(), registry)?;
        if a == RegistryAuth::Anonymous {
            let file = self.opts.podman_auth_file.clone().or_else(auth::default_podman_auth_file);
            if let Some(file) = file {
                a = auth::credentials_from_auth_file(&file, registry)?;
            }
        }
        self.auths.lock().unwrap_or_else(|p| p.into_inner()).insert(registry.to_string(), a.clone());
        Ok(a)
    }

    /// Whether `registry` is reached over plain HTTP.
    pub fn is_plain_http(&self, registry: &str) -> bool {
        let host = host_of(registry);
        host == "localhost"
            || host == "::1"
            || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
            || self.opts.insecure_registries.iter().any(|i| i == registry || i == host)
    }

    /// Whether to talk plain HTTP to `registry`. As docker does for
    /// insecure registries (and loopback ones), HTTPS is tried first and
    /// plain HTTP only if no TLS server answers; the answer is kept for
    /// the life of the client.
    pub async fn uses_plain_http(&self, registry: &str) -> bool {
        if !self.is_plain_http(registry) {
            return false;
        }
        if let Some(&known) = self.plain_http.lock().unwrap_or_else(|p| p.into_inner()).get(registry) {
            return known;
        }
        let probe = ImageRef { registry: registry.to_string(), repository: "x".into(), tag: None, digest: None };
        let url = format!("https://{}/v2/", probe.to_oci().resolve_registry());
        // Any HTTP answer (401 included) means a TLS server is there. A
        // plain-HTTP server fails the handshake at once; the timeout only
        // bounds one that waits for a line end that never comes.
        let tls = self.session.client().get(url).timeout(HTTPS_PROBE_TIMEOUT).send().await.is_ok();
        self.plain_http.lock().unwrap_or_else(|p| p.into_inner()).insert(registry.to_string(), !tls);
        !tls
    }

    /// Resolves `r` to the image for `platform`: follows an OCI image index
    /// or Docker manifest list to the matching manifest, then fetches the
    /// config. A plain manifest is returned whatever its platform (as Docker
    /// does); [`ResolvedImage::platform`] says what it is.
    ///
    /// With mirrors configured for `r`'s registry, each is asked first, in
    /// order (same repository, tag and digest); the first that has the
    /// image answers, and on any failure the next one, then the registry
    /// itself, is tried, as BuildKit's resolver does.
    pub async fn resolve(&self, r: &ImageRef, platform: &Platform) -> Result<ResolvedImage, RegistryError> {
        for m in self.mirrors_of(r) {
            if let Ok(image) = self.resolve_at(&m, platform).await {
                return Ok(image);
            }
        }
        self.resolve_at(r, platform).await
    }

    /// `r` on each mirror of its registry, in the configured order.
    fn mirrors_of(&self, r: &ImageRef) -> Vec<ImageRef> {
        self.opts
            .mirrors
            .get(&r.registry)
            .into_iter()
            .flatten()
            .map(|m| ImageRef { registry: m.clone(), ..r.clone() })
            .collect()
    }

    async fn resolve_at(&self, r: &ImageRef, platform: &Platform) -> Result<ResolvedImage, RegistryError> {
        // Raw bytes (whose digest we keep), and the index walked here with
        // containerd's platform order.
        let (bytes, digest) = self.fetch_manifest(r).await?;
        let media_type = manifest_media_type(r, &digest, &bytes)?;
        let (manifest_bytes, manifest_digest, manifest_media_type, index_digest) = if is_index(&media_type) {
            let index: Index = parse_manifest_json(r, &digest, &bytes)?;
            let entry =
                select_platform(&index.manifests, platform).ok_or_else(|| RegistryError::NoMatchingPlatform {
                    reference: r.to_string(),
                    platform: platform.to_string(),
                    available: index
                        .manifests
                        .iter()
                        .filter_map(|m| m.platform.as_ref().map(|p| normalise(p).to_string()))
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            let child = r.with_digest(&entry.digest);
            // fetch_manifest checks the body against the digest in `child`.
            let (child_bytes, child_digest) = self.fetch_manifest(&child).await?;
            let child_type = manifest_media_type(&child, &child_digest, &child_bytes)?;
            if is_index(&child_type) {
                return Err(RegistryError::NestedIndex { reference: r.to_string(), digest: child_digest });
            }
            if child_bytes.len() as u64 != entry.size {
                return Err(RegistryError::SizeMismatch {
                    digest: child_digest,
                    expected: entry.size,
                    actual: Some(child_bytes.len() as u64),
                });
            }
            (child_bytes, child_digest, child_type, Some(digest))
        } else {
            (bytes, digest, media_type, None)
        };
        let manifest: Manifest = parse_manifest_json(r, &manifest_digest, &manifest_bytes)?;

        if manifest.config.size > MAX_CONFIG_SIZE {
            return Err(RegistryError::ConfigTooLarge {
                reference: r.to_string(),
                digest: manifest.config.digest.clone(),
                size: manifest.config.size,
            });
        }
        let mut config = Vec::with_capacity(manifest.config.size as usize);
        self.fetch_blob_at(r, &manifest.config.digest, manifest.config.size, &mut config).await?;
        let image_config: ImageConfig = serde_json::from_slice(&config).map_err(|source| {
            RegistryError::ParseConfig { reference: r.to_string(), digest: manifest.config.digest.clone(), source }
        })?;
        Ok(ResolvedImage {
            manifest_digest,
            manifest: manifest_bytes.to_vec(),
            manifest_media_type,
            index_digest,
            config,
            config_digest: manifest.config.digest,
            layers: manifest.layers,
            platform: normalise_platform(&image_config.os, &image_config.architecture, image_config.variant.as_deref()),
        })
    }

    /// Uploads blobs (unless the repository has them), then the manifest.
    /// `layers` are `(digest, size, file)`; they are streamed from the files.
    /// `r`'s tag names the manifest; with no tag it is pushed by digest.
    /// Returns the manifest digest.
    #[cfg(test)]
    pub async fn push_image(
        &self,
        r: &ImageRef,
        manifest: &[u8],
        manifest_media_type: &str,
        config: (&[u8], &str),
        layers: &[(String, u64, PathBuf)],
    ) -> Result<String, RegistryError> {
        self.push_blobs(r, config, layers).await?;
        self.push_manifest(r, manifest, manifest_media_type).await
    }

    /// The blob half of [`push_image`](Self::push_image): layers (up to
    /// three at once), then the config. Returns what happened to each
    /// blob (layers in order, config last). Nothing is pushed after the
    /// first failure, so a manifest never follows missing blobs.
    pub async fn push_blobs(
        &self,
        r: &ImageRef,
        config: (&[u8], &str),
        layers: &[(String, u64, PathBuf)],
    ) -> Result<Vec<(String, BlobOutcome)>, RegistryError> {
        self.push_blobs_reporting(r, config, layers, &|_, _, _| {}).await
    }

    /// [`push_blobs`](Self::push_blobs), calling `on_blob(digest, size,
    /// outcome)` as each blob is done (for progress output).
    pub async fn push_blobs_reporting(
        &self,
        r: &ImageRef,
        config: (&[u8], &str),
        layers: &[(String, u64, PathBuf)],
        on_blob: &(dyn Fn(&str, u64, &BlobOutcome) + Sync),
    ) -> Result<Vec<(String, BlobOutcome)>, RegistryError> {
        let (config_bytes, config_digest) = config;
        reference::validate_digest(config_digest)
            .map_err(|reason| RegistryError::InvalidDigest { digest: config_digest.to_string(), reason })?;
        let actual = hash_bytes(config_digest, config_bytes);
        if actual != config_digest {
            return Err(RegistryError::DigestMismatch { expected: config_digest.to_string(), actual });
        }
        let mut outcomes: Vec<(String, BlobOutcome)> = stream::iter(layers.iter().map(Ok))
            .map_ok(|(digest, size, path)| async move {
                let outcome = self.push_layer_file(r, digest, *size, path).await?;
                on_blob(digest, *size, &outcome);
                Ok::<_, RegistryError>((digest.clone(), outcome))
            })
            .try_buffered(UPLOAD_CONCURRENCY)
            .try_collect()
            .await?;
        let data = BlobData::Bytes(Bytes::copy_from_slice(config_bytes));
        let outcome = self.push_blob_data(r, config_digest, config_bytes.len() as u64, data).await?;
        on_blob(config_digest, config_bytes.len() as u64, &outcome);
        outcomes.push((config_digest.to_string(), outcome));
        Ok(outcomes)
    }

    /// Uploads one layer file unless the repository already has it.
    async fn push_layer_file(
        &self,
        r: &ImageRef,
        digest: &str,
        size: u64,
        path: &Path,
    ) -> Result<BlobOutcome, RegistryError> {
        reference::validate_digest(digest)
            .map_err(|reason| RegistryError::InvalidDigest { digest: digest.to_string(), reason })?;
        // The registry checks the digest when the upload is closed.
        self.push_blob_data(r, digest, size, BlobData::File(path)).await
    }

    /// Uploads a manifest or index (its blobs must already be there) under
    /// `r`'s tag, or by digest if `r` has no tag. Returns its digest.
    pub async fn push_manifest(
        &self,
        r: &ImageRef,
        manifest: &[u8],
        media_type: &str,
    ) -> Result<String, RegistryError> {
        let digest = sha256_digest(manifest);
        let reference = r.tag.clone().unwrap_or_else(|| digest.clone());
        self.put_manifest(r, &reference, manifest, media_type).await?;
        Ok(digest)
    }
}

/// The PEM certificates of `--registry-ca` and `SSL_CERT_FILE`, one
/// `BEGIN CERTIFICATE` block each.
fn load_ca_certs(opts: &RegistryOptions) -> Result<Vec<Vec<u8>>, RegistryError> {
    let env = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut out = Vec::new();
    for path in opts.ca_file.iter().chain(&opts.extra_ca_files).chain(env.iter()) {
        let text =
            std::fs::read_to_string(path).map_err(|source| RegistryError::ReadCa { path: path.clone(), source })?;
        let before = out.len();
        const END: &str = "-----END CERTIFICATE-----";
        let mut rest = text.as_str();
        while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
            let Some(end) = rest[start..].find(END) else { break };
            let block = &rest[start..start + end + END.len()];
            reqwest::Certificate::from_pem(block.as_bytes())
                .map_err(|e| RegistryError::BadCa { path: path.clone(), source: Some(e) })?;
            out.push(format!("{block}\n").into_bytes());
            rest = &rest[start + end + END.len()..];
        }
        if out.len() == before {
            return Err(RegistryError::BadCa { path: path.clone(), source: None });
        }
    }
    Ok(out)
}

/// Incremental digest for the algorithm named in a digest string.
enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// Callers validate `digest` first; anything but sha512 is sha256.
    fn new(digest: &str) -> Self {
        if digest.starts_with("sha512:") {
            Hasher::Sha512(sha2::Sha512::new())
        } else {
            Hasher::Sha256(sha2::Sha256::new())
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }
    fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// Digest of `bytes` with the algorithm of `like`.
fn hash_bytes(like: &str, bytes: &[u8]) -> String {
    let mut h = Hasher::new(like);
    h.update(bytes);
    h.finish()
}

/// `host` of `host[:port]` (brackets of IPv6 removed).
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    registry.split_once(':').map_or(registry, |(h, _)| h)
}

/// Media type of a manifest body: its `mediaType` field, or (OCI allows
/// leaving it out) inferred from `manifests` vs `config`.
fn manifest_media_type(r: &ImageRef, digest: &str, bytes: &[u8]) -> Result<String, RegistryError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let probe: Probe = parse_manifest_json(r, digest, bytes)?;
    let media_type = match (probe.media_type, probe.manifests, probe.config) {
        (Some(m), _, _) => m,
        (None, Some(_), None) => MEDIA_TYPE_INDEX.to_string(),
        (None, None, Some(_)) => MEDIA_TYPE_MANIFEST.to_string(),
        (None, _, _) => String::new(),
    };
    if ACCEPTED_MANIFEST_TYPES.contains(&media_type.as_str()) {
        Ok(media_type)
    } else {
        Err(RegistryError::UnsupportedManifest { reference: r.to_string(), digest: digest.to_string(), media_type })
    }
}

fn parse_manifest_json<T: serde::de::DeserializeOwned>(
    r: &ImageRef,
    digest: &str,
    bytes: &[u8],
) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes).map_err(|source| RegistryError::ParseManifest {
        reference: r.to_string(),
        digest: digest.to_string(),
        source,
    })
}

/// `p` normalised (`aarch64` -> `arm64`, `arm64/v8` -> `arm64`...).
fn normalise(p: &Platform) -> Platform {
    normalise_platform(&p.os, &p.architecture, p.variant.as_deref())
}

fn normalise_platform(os: &str, arch: &str, variant: Option<&str>) -> Platform {
    let text = match variant {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    };
    Platform::parse(&text).unwrap_or_else(|| Platform {
        os: os.to_string(),
        architecture: arch.to_string(),
        variant: variant.map(str::to_string),
    })
}

/// `p` as containerd's matcher compares it (`platforms.Normalize`,
/// `normalizeArch` in containerd/platforms `database.go`): lower case,
/// `macos` is `darwin`, `i386` is `386`, `x86_64`/`amd64/v1` are `amd64`,
/// `aarch64`/`arm64/v8`/`arm64/v8.0` are `arm64`, `arm64/9.0` is
/// `arm64/v9`, `armhf` is `arm/v7`, `armel` is `arm/v6`, and a 32-bit
/// `arm` without a variant (or `7`) is `arm/v7`, `arm/5|6|8` get their `v`.
fn comparable(p: &Platform) -> Platform {
    let mut os = p.os.to_ascii_lowercase();
    if os == "macos" {
        os = "darwin".into();
    }
    let mut arch = p.architecture.to_ascii_lowercase();
    let mut variant = p.variant.as_deref().unwrap_or("").to_ascii_lowercase();
    match arch.as_str() {
        "i386" => {
            arch = "386".into();
            variant.clear();
        }
        "x86_64" | "x86-64" | "amd64" => {
            arch = "amd64".into();
            if variant == "v1" {
                variant.clear();
            }
        }
        "aarch64" | "arm64" => {
            arch = "arm64".into();
            match variant.as_str() {
                "8" | "v8" | "v8.0" => variant.clear(),
                "9" | "9.0" | "v9.0" => variant = "v9".into(),
                _ => {}
            }
        }
        "armhf" => {
            arch = "arm".into();
            variant = "v7".into();
        }
        "armel" => {
            arch = "arm".into();
            variant = "v6".into();
        }
        "arm" => match variant.as_str() {
            "" | "7" => variant = "v7".into(),
            "5" | "6" | "8" => variant = format!("v{variant}"),
            _ => {}
        },
        _ => {}
    }
    Platform { os, architecture: arch, variant: (!variant.is_empty()).then_some(variant) }
}

/// The platforms an image for `want` may be, most preferred first: a line
/// by line port of containerd/platforms' `platformVector` (`compare.go`),
/// which `platforms.Only` (BuildKit's pull matcher) orders by. `amd64/vN`
/// falls back to lower levels, then `386`; `arm/vN` to lower variants down
/// to `v5`; `arm64/v9.x` to `v9.(x-1)..v9`, then `v8.(x+5)` (capped at
/// `v8.9`) and down; `arm64/v8.x` to `v8.(x-1)..v8`; every `arm64` then to
/// 32-bit `arm/v8` and below. Each entry is compared after [`comparable`].
fn platform_vector(want: &Platform) -> Vec<Platform> {
    let want = comparable(want);
    let with = |arch: &str, variant: &str| {
        comparable(&Platform {
            os: want.os.clone(),
            architecture: arch.to_string(),
            variant: (!variant.is_empty()).then(|| variant.to_string()),
        })
    };
    let level = |v: &str| v.strip_prefix('v').unwrap_or(v).parse::<i64>().ok();
    let variant = want.variant.clone().unwrap_or_default();
    let mut vector = vec![want.clone()];
    match want.architecture.as_str() {
        "amd64" => {
            if let Some(n) = level(&variant).filter(|n| *n > 1) {
                vector.extend((1..n).rev().map(|n| with("amd64", &format!("v{n}"))));
            }
            vector.push(with("386", ""));
        }
        "arm" => {
            if let Some(n) = level(&variant).filter(|n| *n > 5) {
                vector.extend((5..n).rev().map(|n| with("arm", &format!("v{n}"))));
            }
        }
        "arm64" => {
            let mut variant = if variant.is_empty() { "v8".to_string() } else { variant };
            let (major, minor) = match variant.split_once('.') {
                Some((ma, mi)) => (ma.to_string(), Some(mi.to_string())),
                None => (variant.clone(), None),
            };
            if let Some(mut major) = level(&major).filter(|m| *m >= 8) {
                // As containerd: a minor is only read from a `vN.M` spelling.
                let mut minor = match minor {
                    Some(m) if variant.len() == 4 => m.parse::<i64>().unwrap_or(0),
                    _ => 0,
                };
                let spelled = |major: i64, minor: i64| {
                    if minor == 0 { format!("v{major}") } else { format!("v{major}.{minor}") }
                };
                if major == 9 {
                    vector.extend((0..minor).rev().map(|m| with("arm64", &spelled(9, m))));
                    // v9.0 diverged from v8.5: v9.x runs v8.(x+5), up to v8.9.
                    minor = (minor + 5).min(9);
                    major = 8;
                    vector.push(with("arm64", &format!("v8.{minor}")));
                }
                vector.extend((0..minor).rev().map(|m| with("arm64", &spelled(major, m))));
            }
            if variant.starts_with("v8.") || variant.starts_with("v9.") {
                variant = "v8".into();
            }
            vector.extend(platform_vector(&Platform {
                os: want.os.clone(),
                architecture: "arm".into(),
                variant: Some(variant),
            }));
        }
        _ => {}
    }
    vector
}

/// The index entry for `want`, as containerd's ordered matcher picks it:
/// the first platform of [`platform_vector`] any entry has, and among
/// entries of that platform the first listed. Entries without a platform
/// (attestations, artifacts) never match.
fn select_platform<'a>(entries: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let offered: Vec<(&Descriptor, Platform)> =
        entries.iter().filter_map(|e| Some((e, comparable(e.platform.as_ref()?)))).collect();
    platform_vector(want).iter().find_map(|w| offered.iter().find(|(_, p)| p == w)).map(|(e, _)| *e)
}

#[cfg(test)]
mod tests;
