//! Image export: layers, config, manifest, and the exporters.
