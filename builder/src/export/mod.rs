//! Image export: from a solved build to images and files, and the
//! exporters that write them.
//!
//! [`assemble`] turns the final snapshot chain of one platform into an
//! image: a layer blob per snapshot (written with [`rbuild_cache::layer`],
//! or reused when the store already has one for that snapshot), the config
//! with diff ids and history, and the manifest ([`build_manifest`]; several
//! platforms get an index, [`build_index`]). [`export_all`] then hands the
//! images to one [`Exporter`] per requested [`Output`]: the local store,
//! a registry push, an OCI layout (dir or tar), a docker-archive tar, or the
//! merged root filesystem copied to a directory or written as a tar.

pub mod annotations;
mod assemble;
pub mod attest;
mod background;
mod dest;
mod image;
mod local;
mod mediatypes;
mod oci;
mod output;
mod push;
mod store;

#[cfg(test)]
mod interop_tests;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use rbuild_cache::layer::LayerWriteError;
use rbuild_cache::oci::{MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, Platform};
use rbuild_cache::store::{SnapshotId, Store, StoreError};
use tokio::runtime::Runtime;

use crate::progress::Printer;
use crate::registry::{ImageRef, RegistryClient, RegistryError};

pub use annotations::{AnnotationError, ImageAnnotations};
pub use assemble::{BuiltImage, LayerForm, assemble, rfc3339, threads};
pub use background::{BackgroundPlan, image_vertices};
pub use image::{ImageBundle, IndexEntry, PlatformImage, build_annotated_index, build_index, build_manifest};
pub use local::{LocalExporter, TarExporter};
pub use oci::{
    DockerExporter, LoadExporter, OciExporter, export_docker, export_oci, write_docker_archive, write_oci_tar,
};
pub use output::{CompressionKind, ImageAttrs, Output, compression_from_outputs};
pub use push::{PUSH_COMPRESSION, RegistryExporter, push_stored};
pub use store::{StoreExporter, materialize};

/// Writes built images somewhere: one implementation per output type.
pub trait Exporter {
    /// Exports `input` to this exporter's destination.
    fn export(&self, input: &ExportInput<'_>) -> Result<(), ExportError>;
}

/// Downloads a layer blob that a result resolved from imported cache
/// records names but the store lacks. Set when every output is a registry
/// push: such a build downloads a layer only when the target registry
/// neither has it nor can mount it from the cache's repository.
pub trait MissingBlobs {
    /// Makes sure the store holds blob `digest` (a layer of the result).
    fn fetch(&self, digest: &str) -> Result<(), ExportError>;
}

/// What every exporter gets.
pub struct ExportInput<'a> {
    /// The store holding the images' blobs and snapshots.
    pub store: &'a Store,
    /// The images, one per platform.
    pub images: &'a [BuiltImage],
    /// The index over the images' manifests, when there are several.
    pub index: Option<&'a [u8]>,
    /// Digest of the top-level document (the index, or the one manifest).
    pub top_digest: &'a str,
    /// Annotations of the top-level document's descriptor (an OCI
    /// layout's `index.json` entry): `index-descriptor` ones over an index,
    /// the `manifest-descriptor` ones of a lone manifest.
    pub top_annotations: BTreeMap<String, String>,
    /// Image names as given (`-t`, `name=`).
    pub names: &'a [String],
    /// Attestation manifests, listed in the index after the images.
    pub attestations: &'a [attest::AttestationImage],
    /// The provenance predicate of each image (same order), or none: the
    /// filesystem exporters write it as `provenance.json`.
    pub provenance: &'a [serde_json::Value],
    /// The same names parsed as registry references.
    pub refs: &'a [ImageRef],
    /// Progress messages.
    pub printer: &'a Printer,
    /// Layers of a cached result that were left in the cache's registry
    /// (push-only builds; see [`MissingBlobs`]).
    pub missing_blobs: Option<&'a dyn MissingBlobs>,
}

impl ExportInput<'_> {
    /// The images (and attestation manifests) as a bundle for the archive
    /// writers.
    fn bundle(&self) -> ImageBundle {
        let attestations = self.attestations.iter().map(|a| PlatformImage {
            manifest: a.manifest.clone(),
            config: a.config.clone(),
            layers: a.layers.clone(),
        });
        ImageBundle {
            images: self
                .images
                .iter()
                .map(|i| PlatformImage {
                    manifest: i.manifest.clone(),
                    config: i.config.clone(),
                    layers: i.layers.clone(),
                })
                .chain(attestations)
                .collect(),
            index: self.index.map(<[u8]>::to_vec),
            names: self.names.to_vec(),
            docker_media_types: false,
            top_annotations: self.top_annotations.clone(),
        }
    }

    /// Runs `f` on a read-only merged view of each image's filesystem, with
    /// the destination for it (`dest` itself for one platform, else
    /// `dest/<os>_<arch>[_<variant>]`) and the image's provenance predicate.
    fn for_each_rootfs(
        &self,
        dest: &std::path::Path,
        mut f: impl FnMut(&std::path::Path, &std::path::Path, Option<&serde_json::Value>) -> Result<(), ExportError>,
    ) -> Result<(), ExportError> {
        let multi = self.images.len() > 1;
        for (i, image) in self.images.iter().enumerate() {
            let target = if multi { dest.join(platform_dir(&image.platform)) } else { dest.to_path_buf() };
            let view = rbuild_solver::solve::ChainView::mount(self.store, &image.chain, "rootfs")
                .map_err(|source| ExportError::MountRootfs { source })?;
            f(view.path(), &target, self.provenance.get(i))?;
        }
        Ok(())
    }
}

fn platform_dir(p: &Platform) -> String {
    p.to_string().replace('/', "_")
}

/// The exporters that write `output`.
pub fn exporters_for(output: &Output, registry: &RegistryClient, runtime: &Runtime) -> Vec<Box<dyn Exporter>> {
    let push = || -> Box<dyn Exporter> {
        let attrs = output.image_attrs().cloned().unwrap_or_default();
        Box::new(RegistryExporter::new(registry.clone(), runtime.handle().clone(), &attrs))
    };
    match output {
        Output::Image { push: false, .. } => vec![Box::new(StoreExporter)],
        Output::Image { push: true, .. } => vec![Box::new(StoreExporter), push()],
        Output::Oci { dest, tar, image } => {
            vec![Box::new(OciExporter { dest: dest.clone(), tar: *tar, docker_media_types: image.docker_media_types })]
        }
        Output::Docker { dest, .. } => vec![Box::new(DockerExporter { dest: dest.clone() })],
        Output::Load { .. } => vec![Box::new(LoadExporter)],
        Output::Local { dest } => vec![Box::new(LocalExporter { dest: dest.clone() })],
        Output::Tar { dest } => vec![Box::new(TarExporter { dest: dest.clone() })],
    }
}

/// What the outputs produced, for `--iidfile` and `--metadata-file`.
pub struct ExportResult {
    /// Image ID (config digest, or the index digest for several platforms).
    pub image_id: String,
    /// buildx-style metadata.
    pub metadata: serde_json::Value,
}

/// What to write for one request's images.
#[derive(Clone, Copy)]
pub struct ExportSpec<'a> {
    /// The outputs.
    pub outputs: &'a [Output],
    /// The `-t` names.
    pub tags: &'a [String],
    /// Annotations for the manifests' descriptors, the index and its
    /// descriptor (those of the manifests themselves are written by
    /// [`assemble`]).
    pub annotations: &'a ImageAnnotations,
    /// One provenance predicate per image (same order), or none.
    pub provenance: &'a [serde_json::Value],
}

/// Writes every output for the built images (one per platform, in the
/// order of `--platform`). `tags` are the `-t` names; every image output
/// gets them plus all outputs' `name=` values.
#[allow(clippy::too_many_arguments)]
pub fn export_all(
    store: &Store,
    runtime: &Runtime,
    registry: &RegistryClient,
    images: &[BuiltImage],
    what: &ExportSpec<'_>,
    printer: &Printer,
    missing_blobs: Option<&dyn MissingBlobs>,
) -> Result<ExportResult, ExportError> {
    let ExportSpec { outputs, tags, annotations, provenance } = *what;
    let [first, ..] = images else {
        return Err(ExportError::BadBundle("the build produced no image"));
    };
    // Attestations need an index to hang from, even for one platform.
    let has_index = images.len() > 1 || !provenance.is_empty();
    if !provenance.is_empty() && outputs.iter().filter_map(Output::image_attrs).any(|a| a.docker_media_types) {
        return Err(attest::AttestError::DockerMediaTypes.into());
    }
    let platforms: Vec<Platform> = images.iter().map(|i| i.platform.clone()).collect();
    annotations.check(&platforms, has_index, false)?;
    if annotations.entries.iter().any(|a| a.kind != annotations::AnnotationKind::Manifest)
        && outputs.iter().filter_map(Output::image_attrs).any(|a| a.docker_media_types)
    {
        return Err(AnnotationError::DockerMediaTypes.into());
    }
    let names = output::image_names(tags, outputs);
    let mut attestations = Vec::new();
    for (image, predicate) in images.iter().zip(provenance) {
        attestations.push(attest::write_attestation(
            store,
            predicate,
            &image.manifest_digest,
            &image.platform,
            &names,
        )?);
    }
    let index = has_index.then(|| {
        let entries: Vec<IndexEntry> = images
            .iter()
            .map(|i| IndexEntry {
                manifest: i.manifest.clone(),
                platform: i.platform.clone(),
                annotations: annotations.manifest_descriptor(&i.platform),
            })
            .chain(attestations.iter().map(|a| a.entry.clone()))
            .collect();
        build_annotated_index(&entries, annotations.index())
    });
    let (top_digest, top_media_type, top_size) = match &index {
        Some(ix) => (store.write_blob(ix)?, MEDIA_TYPE_INDEX, ix.len()),
        None => (first.manifest_digest.clone(), MEDIA_TYPE_MANIFEST, first.manifest.len()),
    };
    let top_annotations = match &index {
        Some(_) => annotations.index_descriptor(),
        None => annotations.manifest_descriptor(&first.platform),
    };
    let refs = names
        .iter()
        .map(|n| {
            ImageRef::parse(n).map_err(|source| ExportError::InvalidTag { name: n.clone(), source: Box::new(source) })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let input = ExportInput {
        store,
        images,
        index: index.as_deref(),
        top_digest: &top_digest,
        top_annotations,
        names: &names,
        attestations: &attestations,
        provenance,
        refs: &refs,
        printer,
        missing_blobs,
    };
    for output in outputs {
        for exporter in exporters_for(output, registry, runtime) {
            exporter.export(&input)?;
        }
    }
    let image_id = if images.len() > 1 { top_digest.clone() } else { first.config_digest.clone() };
    let mut metadata = serde_json::json!({
        "containerimage.digest": top_digest,
        "containerimage.config.digest": first.config_digest,
        "containerimage.descriptor": {
            "mediaType": top_media_type,
            "digest": top_digest,
            "size": top_size,
        },
    });
    if !names.is_empty() {
        metadata["image.name"] = serde_json::Value::String(names.join(","));
    }
    Ok(ExportResult { image_id, metadata })
}

/// Errors from writing layers and exporting images.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A layer of a cached result could not be downloaded for a push.
    #[error("cannot download layer `{digest}` of the cached result")]
    FetchCachedLayer {
        /// The layer blob.
        digest: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Writing a tree as tar failed.
    #[error(transparent)]
    Tree(#[from] LayerWriteError),
    /// A directory of the root filesystem could not be listed.
    #[error("cannot read directory `{path}`")]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `lstat` failed.
    #[error("cannot stat `{path}`")]
    Stat {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A symlink target could not be read.
    #[error("cannot read symlink `{path}`")]
    ReadLink {
        /// The symlink.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A regular file could not be opened or read.
    #[error("cannot read file `{path}`")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing the output stream failed.
    #[error("cannot write the output stream")]
    Write {
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A manifest, config or index blob is not the JSON we expect.
    #[error("invalid {what} JSON")]
    InvalidJson {
        /// Which document.
        what: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The bundle has no image, or several where the format allows one.
    #[error("{0}")]
    BadBundle(&'static str),
    /// A blob file given in the bundle could not be read.
    #[error("cannot read blob file `{path}`")]
    ReadBlob {
        /// The blob file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Creating or writing a file at the destination failed.
    #[error("cannot write `{path}`")]
    WriteDest {
        /// The destination path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// An image name given with `-t` is not a valid reference.
    #[error("invalid image name `{0}`")]
    InvalidName(String),
    /// An image name is not a valid registry reference.
    #[error("invalid tag `{name}`")]
    InvalidTag {
        /// The name.
        name: String,
        /// Why.
        #[source]
        source: Box<RegistryError>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A manifest or index could not be re-encoded.
    #[error("cannot encode the {what}")]
    Encode {
        /// What.
        what: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored manifest, index or config is not what it should be.
    #[error("stored {what} `{digest}` is malformed")]
    Decode {
        /// What.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// `rbuild push NAME` with no such image in the store.
    #[error("no image `{name}` in the local store (see `rbuild images`)")]
    NotInStore {
        /// The name.
        name: String,
    },
    /// A snapshot could not be written as a layer.
    #[error("writing the layer for snapshot {snapshot}")]
    WriteLayer {
        /// The snapshot.
        snapshot: SnapshotId,
        /// What failed.
        #[source]
        source: LayerWriteError,
    },
    /// The store and the layer writer disagree on a layer's digest.
    #[error("layer digest mismatch: the store saw `{stored}`, the layer writer reported `{written}`")]
    LayerDigestMismatch {
        /// Digest of the bytes the store received.
        stored: String,
        /// Digest the layer writer computed.
        written: String,
    },
    /// The final filesystem could not be mounted for a local or tar output.
    #[error("cannot mount the image's filesystem")]
    MountRootfs {
        /// The mount error.
        #[source]
        source: io::Error,
    },
    /// A push without any image name.
    #[error("pushing needs an image name: pass `-t NAME` or `-o type=registry,name=NAME`")]
    PushNeedsName,
    /// `--load` failed.
    #[error("loading the image into {engine}")]
    Load {
        /// The engine.
        engine: String,
        /// What failed.
        #[source]
        source: Box<crate::engine::EngineError>,
    },
    /// `--load` found no engine.
    #[error(transparent)]
    NoEngine(Box<crate::engine::EngineError>),
    /// Annotations that do not fit the export.
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    /// Attestations that do not fit the export.
    #[error(transparent)]
    Attest(#[from] attest::AttestError),
    /// Pushing to a registry failed.
    #[error("pushing `{name}`{}", platform.as_ref().map(|p| format!(" ({p})")).unwrap_or_default())]
    Push {
        /// The image name.
        name: String,
        /// The platform whose image failed (`None`: the index).
        platform: Option<Platform>,
        /// The registry error.
        #[source]
        source: Box<RegistryError>,
    },
}
