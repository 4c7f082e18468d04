//! The rootless sandbox: user namespace, per-RUN namespaces, overlay root, pivot_root.
