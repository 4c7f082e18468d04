//! The registry exporter (`type=registry`, `push=true`): pushes each
//! platform's image, then the index, under every image name. Base-image
//! layers pulled from another repository of the same registry are mounted
//! from there rather than uploaded.

use rbuild_cache::oci::{MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};
use tokio::runtime::Handle;

use super::{ExportError, ExportInput, Exporter};
use crate::registry::{ImageRef, LayerUpload, RegistryClient};
use crate::sources::layer_source;

/// Pushes to the registries the image names point at.
pub struct RegistryExporter {
    registry: RegistryClient,
    runtime: Handle,
}

impl RegistryExporter {
    /// An exporter pushing with `registry` on `runtime` (called from a
    /// thread that is not one of the runtime's workers).
    pub fn new(registry: RegistryClient, runtime: Handle) -> Self {
        RegistryExporter { registry, runtime }
    }
}

impl Exporter for RegistryExporter {
    fn export(&self, input: &ExportInput<'_>) -> Result<(), ExportError> {
        if input.refs.is_empty() {
            return Err(ExportError::PushNeedsName);
        }
        for r in input.refs {
            let name = r.to_string();
            input.printer.message(&format!("pushing {name}"));
            // With an index, the platform manifests are pushed by digest
            // and only the index gets the tag.
            let by_digest = ImageRef { tag: None, digest: None, ..r.clone() };
            let target = if input.index.is_some() { &by_digest } else { r };
            for image in input.images {
                let layers: Vec<LayerUpload> = image
                    .layers
                    .iter()
                    .map(|(l, path)| LayerUpload {
                        digest: l.digest.clone(),
                        size: l.size,
                        path: path.clone(),
                        mount_from: layer_source(input.store, &l.digest),
                    })
                    .collect();
                self.runtime
                    .block_on(self.registry.push_image(
                        target,
                        &image.manifest,
                        MEDIA_TYPE_MANIFEST,
                        (&image.config, &image.config_digest),
                        &layers,
                    ))
                    .map_err(|source| ExportError::Push {
                        name: name.clone(),
                        platform: Some(image.platform.clone()),
                        source: Box::new(source),
                    })?;
            }
            if let Some(index) = input.index {
                self.runtime.block_on(self.registry.push_manifest(r, index, MEDIA_TYPE_INDEX)).map_err(|source| {
                    ExportError::Push { name: name.clone(), platform: None, source: Box::new(source) }
                })?;
            }
        }
        Ok(())
    }
}
