//! The local store exporter (`type=image`): tags the image in the store,
//! whose blobs [`assemble`](super::assemble) already wrote there.

use super::{ExportError, ExportInput, Exporter};

/// Tags the top-level document under every image name.
pub struct StoreExporter;

impl Exporter for StoreExporter {
    fn export(&self, input: &ExportInput<'_>) -> Result<(), ExportError> {
        // A push-only build of a cached result leaves its layers in the
        // registry: a tag here would name an image the store cannot
        // export or push, so there is none.
        let incomplete = input.images.iter().flat_map(|i| &i.layers).any(|(l, _)| !input.store.has_blob(&l.digest));
        if incomplete {
            input.printer.message(
                "note: not tagged in the local store: the cached layers were not downloaded (the registry has them)",
            );
            return Ok(());
        }
        for r in input.refs {
            input.store.set_tag(&r.to_string(), input.top_digest)?;
        }
        Ok(())
    }
}
