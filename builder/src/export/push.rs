//! The registry exporter (`type=registry`, `push=true`) and `rbuild push`:
//! pushes each platform's image (layers concurrently, then the config, then
//! the manifest), then the index, under every image name.
//!
//! Before pushing, the store's remembered base-image resolutions tell the
//! client which repositories of a registry already hold which layers, so
//! an image built on `REG/busybox` and pushed to `REG/app` mounts the base
//! layers instead of uploading them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use rbuild_cache::layer::Compression;
use rbuild_cache::oci::{Index, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, Manifest, Platform, sha256_digest};
use rbuild_cache::store::Store;
use tokio::runtime::Handle;

use super::output::ImageAttrs;
use super::{ExportError, ExportInput, Exporter, MissingBlobs, build_index, mediatypes};
use crate::progress::{self, Printer};
use crate::registry::{BlobOutcome, ImageRef, RegistryClient};

/// Pushes to the registries the image names point at.
pub struct RegistryExporter {
    registry: RegistryClient,
    runtime: Handle,
    docker_media_types: bool,
    insecure: bool,
}

impl RegistryExporter {
    /// An exporter pushing with `registry` on `runtime` (called from a
    /// thread that is not one of the runtime's workers), honouring the
    /// output's `oci-mediatypes` and `registry.insecure`.
    pub fn new(registry: RegistryClient, runtime: Handle, attrs: &ImageAttrs) -> Self {
        RegistryExporter { registry, runtime, docker_media_types: attrs.docker_media_types, insecure: attrs.insecure }
    }
}

/// One platform's image to push.
pub struct PushImage {
    /// Manifest bytes (OCI).
    pub manifest: Vec<u8>,
    /// Config bytes.
    pub config: Vec<u8>,
    /// Config digest.
    pub config_digest: String,
    /// Layers as `(digest, size, blob file)`.
    pub layers: Vec<(String, u64, PathBuf)>,
    /// Its platform.
    pub platform: Platform,
}

impl Exporter for RegistryExporter {
    fn export(&self, input: &ExportInput<'_>) -> Result<(), ExportError> {
        if input.refs.is_empty() {
            return Err(ExportError::PushNeedsName);
        }
        let images: Vec<PushImage> = input
            .images
            .iter()
            .map(|image| PushImage {
                manifest: image.manifest.clone(),
                config: image.config.clone(),
                config_digest: image.config_digest.clone(),
                layers: image.layers.iter().map(|(l, p)| (l.digest.clone(), l.size, p.clone())).collect(),
                platform: image.platform.clone(),
            })
            .chain(input.attestations.iter().map(|a| PushImage {
                manifest: a.manifest.clone(),
                config: a.config.clone(),
                config_digest: a.config_digest.clone(),
                layers: a.layers.iter().map(|(l, p)| (l.digest.clone(), l.size, p.clone())).collect(),
                platform: super::attest::attestation_platform(),
            }))
            .collect();
        let registry = if self.insecure {
            let hosts: Vec<String> = input.refs.iter().map(|r| r.registry.clone()).collect();
            self.registry.with_insecure(&hosts)
        } else {
            self.registry.clone()
        };
        for r in input.refs {
            let target = Target { registry: &registry, runtime: &self.runtime, store: input.store };
            push_images(&target, r, &images, input.index, self.docker_media_types, input.printer, input.missing_blobs)?;
        }
        Ok(())
    }
}

/// Where a push goes and what it reads from.
pub struct Target<'a> {
    /// The client.
    pub registry: &'a RegistryClient,
    /// Its runtime.
    pub runtime: &'a Handle,
    /// The store holding the blobs.
    pub store: &'a Store,
}

/// Pushes `images` (and `index` over them, when there is one) as `r`.
/// The index is pushed as given (its annotations and attestation entries
/// kept), or rebuilt over the converted manifests for Docker media types.
/// Layers the store lacks (a cached result left in the cache's registry)
/// are taken from the registry itself when `r`'s repository has them or
/// can mount them, else downloaded through `missing`. Returns the digest of
/// the top-level manifest or index.
pub fn push_images(
    target_of: &Target<'_>,
    r: &ImageRef,
    images: &[PushImage],
    index: Option<&[u8]>,
    docker_media_types: bool,
    printer: &Printer,
    missing: Option<&dyn MissingBlobs>,
) -> Result<String, ExportError> {
    let Target { registry, runtime, store } = *target_of;
    let name = r.to_string();
    let phase = printer.phase(&format!("pushing {name}"));
    note_known_blob_sources(registry, store);
    let err = |platform: Option<Platform>| {
        let name = name.clone();
        move |source| ExportError::Push { name, platform, source: Box::new(source) }
    };
    // With an index, the platform manifests are pushed by digest and only
    // the index gets the tag.
    let by_digest = ImageRef { tag: None, digest: None, ..r.clone() };
    let multi = index.is_some() || images.len() > 1;
    let target = if multi { &by_digest } else { r };
    let (manifest_type, index_type) = if docker_media_types {
        (mediatypes::docker_media_type(MEDIA_TYPE_MANIFEST), mediatypes::docker_media_type(MEDIA_TYPE_INDEX))
    } else {
        (MEDIA_TYPE_MANIFEST, MEDIA_TYPE_INDEX)
    };
    let mut pushed: Vec<(Vec<u8>, Platform)> = Vec::new();
    let mut top = String::new();
    for image in images {
        let manifest = if docker_media_types {
            mediatypes::to_docker(&image.manifest).map_err(|source| ExportError::Encode { what: "manifest", source })?
        } else {
            image.manifest.clone()
        };
        // Layers the store does not hold (a push-only build from a remote
        // cache): mounted or found in the target repository, else fetched.
        let mut linked = Vec::new();
        let mut layers = Vec::new();
        for layer in &image.layers {
            let (digest, _, path) = layer;
            if store.has_blob(digest) || path.exists() {
                layers.push(layer.clone());
                continue;
            }
            match runtime.block_on(registry.link_blob(target, digest)).map_err(err(Some(image.platform.clone())))? {
                Some(outcome) => linked.push((digest.clone(), outcome)),
                None => {
                    let Some(missing) = missing else {
                        return Err(ExportError::Store(rbuild_cache::store::StoreError::BlobNotFound(digest.clone())));
                    };
                    missing.fetch(digest)?;
                    layers.push(layer.clone());
                }
            }
        }
        let total: u64 = layers.iter().map(|(_, size, _)| *size).sum::<u64>() + image.config.len() as u64;
        let task = printer.task("pushing layers");
        task.set(0, total);
        let started = std::time::Instant::now();
        // Bytes of the blobs done so far (uploaded or not: they count
        // towards the total either way); uploaded bytes alone give the rate.
        let (done, sent) = (AtomicU64::new(0), AtomicU64::new(0));
        let on_blob = |digest: &str, size: u64, outcome: &BlobOutcome| {
            let what = match outcome {
                BlobOutcome::Uploaded => {
                    sent.fetch_add(size, Ordering::SeqCst);
                    format!("pushing {digest} {}", progress::bytes(size))
                }
                BlobOutcome::Existed => format!("{digest} already present"),
                BlobOutcome::Mounted { from } => format!("mounted {digest} from {from}"),
            };
            task.set(done.fetch_add(size, Ordering::SeqCst) + size, total);
            printer.message(&what);
        };
        let mut outcomes = runtime
            .block_on(registry.push_blobs_reporting(target, (&image.config, &image.config_digest), &layers, &on_blob))
            .map_err(err(Some(image.platform.clone())))?;
        task.done();
        for (digest, outcome) in &linked {
            if let BlobOutcome::Mounted { from } = outcome {
                printer.message(&format!("mounted {digest} from {from}"));
            }
        }
        outcomes.extend(linked);
        report(printer, &outcomes, sent.load(Ordering::SeqCst), started.elapsed());
        let manifest_task = printer.task(&format!("pushing manifest for {name}"));
        top = runtime
            .block_on(registry.push_manifest(target, &manifest, manifest_type))
            .map_err(err(Some(image.platform.clone())))?;
        manifest_task.done();
        pushed.push((manifest, image.platform.clone()));
    }
    if multi {
        let index = match index {
            Some(given) if !docker_media_types => given.to_vec(),
            _ if docker_media_types => mediatypes::to_docker(&build_index(&pushed))
                .map_err(|source| ExportError::Encode { what: "index", source })?,
            _ => build_index(&pushed),
        };
        top = runtime.block_on(registry.push_manifest(r, &index, index_type)).map_err(err(None))?;
    }
    printer.message(&format!("pushed {name}@{top}"));
    phase.done();
    Ok(top)
}

/// What `rbuild push` compresses a stored image's deferred layers with:
/// a build's default, so the pushed manifest is the one an eager
/// `--push` build would have pushed.
pub const PUSH_COMPRESSION: Compression = Compression::Gzip { level: 6 };

/// `rbuild push`: the image tagged `r` in the store, pushed to `r`.
pub fn push_stored(
    registry: &RegistryClient,
    runtime: &Handle,
    store: &Store,
    r: &ImageRef,
    local_name: &str,
    docker_media_types: bool,
    printer: &Printer,
) -> Result<String, ExportError> {
    let missing = || ExportError::NotInStore { name: local_name.to_string() };
    let top = store.tag(local_name)?.ok_or_else(missing)?;
    // Layers the store keeps deferred are compressed (once) first.
    let top_bytes = super::store::materialize(store, &store.read_blob(&top)?, &PUSH_COMPRESSION, printer)?;
    let is_index = super::store::looks_like_index(&top_bytes);
    let manifests: Vec<Vec<u8>> = if is_index {
        let index: Index = serde_json::from_slice(&top_bytes).map_err(|source| ExportError::Decode {
            what: "index",
            digest: top.clone(),
            source,
        })?;
        index.manifests.iter().map(|m| store.read_blob(&m.digest)).collect::<Result<_, _>>()?
    } else {
        vec![top_bytes.clone()]
    };
    let mut images = Vec::new();
    for bytes in manifests {
        let digest = sha256_digest(&bytes);
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|source| ExportError::Decode {
            what: "manifest",
            digest: digest.clone(),
            source,
        })?;
        let config = store.read_blob(&m.config.digest)?;
        let platform = serde_json::from_slice::<rbuild_cache::oci::ImageConfig>(&config)
            .map(|c| Platform { os: c.os, architecture: c.architecture, variant: c.variant })
            .map_err(|source| ExportError::Decode { what: "config", digest: m.config.digest.clone(), source })?;
        let layers = m.layers.iter().map(|l| (l.digest.clone(), l.size, store.blob_path(&l.digest))).collect();
        images.push(PushImage { manifest: bytes, config, config_digest: m.config.digest, layers, platform });
    }
    let index = is_index.then_some(top_bytes.as_slice());
    push_images(&Target { registry, runtime, store }, r, &images, index, docker_media_types, printer, None)
}

/// Tells the client which repositories hold which layers, from the base
/// images this store pulled (`reference|platform` -> manifest). Unreadable
/// entries are skipped: this only enables an optimisation.
fn note_known_blob_sources(registry: &RegistryClient, store: &Store) {
    let Ok(refs) = store.resolved_refs() else { return };
    for (key, digest) in refs {
        let Some(reference) = key.split('|').next() else { continue };
        let (Ok(source), Ok(bytes)) = (ImageRef::parse(reference), store.read_blob(&digest)) else { continue };
        let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) else { continue };
        for l in &m.layers {
            registry.note_blob_source(&l.digest, &source);
        }
    }
}

/// The blobs of one push in all: how many were sent, the bytes and the rate
/// (buildx shows `pushing layers` with a byte count).
fn report(printer: &Printer, outcomes: &[(String, BlobOutcome)], uploaded_bytes: u64, took: std::time::Duration) {
    let uploaded = outcomes.iter().filter(|(_, o)| *o == BlobOutcome::Uploaded).count();
    let rate = uploaded_bytes as f64 / took.as_secs_f64().max(0.001);
    printer.message(&format!(
        "{uploaded} blob(s) uploaded ({} at {}/s), {} already there",
        progress::bytes(uploaded_bytes),
        progress::bytes(rate as u64),
        outcomes.len() - uploaded
    ));
}
