//! The registry exporter (`type=registry`, `push=true`) and `rbuild push`:
//! pushes each platform's image (layers concurrently, then the config, then
//! the manifest), then the index, under every image name.
//!
//! Before pushing, the store's remembered base-image resolutions tell the
//! client which repositories of a registry already hold which layers, so
//! an image built on `REG/busybox` and pushed to `REG/app` mounts the base
//! layers instead of uploading them.

use std::path::PathBuf;

use rbuild_cache::oci::{Index, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, Manifest, Platform, is_index, sha256_digest};
use rbuild_cache::store::Store;
use tokio::runtime::Handle;

use super::output::ImageAttrs;
use super::{ExportError, ExportInput, Exporter, build_index, mediatypes};
use crate::progress::Printer;
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
            push_images(
                &registry,
                &self.runtime,
                input.store,
                r,
                &images,
                input.index,
                self.docker_media_types,
                input.printer,
            )?;
        }
        Ok(())
    }
}

/// Pushes `images` (and `index` over them, when there is one) as `r`.
/// The index is pushed as given (its annotations and attestation entries
/// kept), or rebuilt over the converted manifests for Docker media types.
/// Returns the digest of the top-level manifest or index.
#[allow(clippy::too_many_arguments)]
pub fn push_images(
    registry: &RegistryClient,
    runtime: &Handle,
    store: &Store,
    r: &ImageRef,
    images: &[PushImage],
    index: Option<&[u8]>,
    docker_media_types: bool,
    printer: &Printer,
) -> Result<String, ExportError> {
    let name = r.to_string();
    printer.message(&format!("pushing {name}"));
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
        let outcomes = runtime
            .block_on(registry.push_blobs(target, (&image.config, &image.config_digest), &image.layers))
            .map_err(err(Some(image.platform.clone())))?;
        report(printer, &name, &outcomes);
        top = runtime
            .block_on(registry.push_manifest(target, &manifest, manifest_type))
            .map_err(err(Some(image.platform.clone())))?;
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
    Ok(top)
}

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
    let top_bytes = store.read_blob(&top)?;
    let is_index = looks_like_index(&top_bytes);
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
    push_images(registry, runtime, store, r, &images, index, docker_media_types, printer)
}

fn looks_like_index(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Probe>(bytes)
        .map(|p| p.media_type.as_deref().is_some_and(is_index) || p.manifests.is_some())
        .unwrap_or(false)
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

/// One progress line per push: what was uploaded, mounted or already there.
fn report(printer: &Printer, name: &str, outcomes: &[(String, BlobOutcome)]) {
    let (mut uploaded, mut existed) = (0, 0);
    for (digest, outcome) in outcomes {
        match outcome {
            BlobOutcome::Uploaded => uploaded += 1,
            BlobOutcome::Existed => existed += 1,
            BlobOutcome::Mounted { from } => printer.message(&format!("{name}: mounted {digest} from {from}")),
        }
    }
    printer.message(&format!("{name}: {uploaded} blob(s) uploaded, {existed} already present"));
}
