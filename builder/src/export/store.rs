//! The local store exporter (`type=image`): tags the image in the store,
//! whose blobs [`assemble`](super::assemble) already wrote there.

use super::{ExportError, ExportInput, Exporter};

/// Tags the top-level document under every image name.
pub struct StoreExporter;

impl Exporter for StoreExporter {
    fn export(&self, input: &ExportInput<'_>) -> Result<(), ExportError> {
        for r in input.refs {
            input.store.set_tag(&r.to_string(), input.top_digest)?;
        }
        Ok(())
    }
}
