//! The build's private `RUN` network, started on the first `RUN` that uses
//! the default network and stopped when the solve ends.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use super::scratch::ScratchDir;
use crate::sandbox::PrivateNetwork;
use crate::sandbox::network::NetworkError;

/// Started at most once per solve; concurrent first users wait for it.
#[derive(Default)]
pub(crate) struct BuildNetwork {
    cell: OnceLock<Result<Started, Arc<NetworkError>>>,
}

struct Started {
    // Field order is drop order: unmount the namespace before removing its directory.
    net: PrivateNetwork,
    _dir: ScratchDir,
}

impl BuildNetwork {
    /// The network, starting it (under the store's `tmp/`) if needed. A
    /// failure is remembered: later steps report the same error.
    pub(crate) fn get(&self, store_root: &Path) -> Result<&PrivateNetwork, Arc<NetworkError>> {
        let started = self.cell.get_or_init(|| {
            let dir = ScratchDir::new(store_root, "netns")
                .map_err(|source| NetworkError::Namespace { step: "create the directory of", source })?;
            let net = PrivateNetwork::start(dir.path())?;
            Ok(Started { net, _dir: dir })
        });
        started.as_ref().map(|s| &s.net).map_err(Arc::clone)
    }
}
