//! Lowering: typed instructions to a build graph and image config.
