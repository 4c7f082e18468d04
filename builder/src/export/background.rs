//! Which layer blobs to start writing while the build still runs.
//!
//! Compressing a layer is most of an export's cost, and the steps after
//! the one that made a big layer usually leave a core idle. So as each
//! exec/file step commits its snapshot, the layers someone will read
//! compressed are queued on the store's background writer
//! ([`Store::compress_in_background`]), with exactly the options the
//! exporter will use; [`super::assemble`] and the cache export then find
//! them written (or wait for the job in progress) instead of compressing
//! at the end:
//! - the snapshots of each image's own chain (the root-filesystem line from
//!   an output vertex back to its base), with the image's compression;
//! - with a `mode=max` `--cache-to`, every step's snapshot, with the
//!   cache's compression (the intermediate stages' layers are exported too);
//!   with `mode=min`, the image's snapshots with the cache's compression.
//!
//! An image only the local store reads is not compressed at all: its
//! snapshots' deferred layers (one tar pass into a hash each) are recorded
//! instead ([`super::LayerForm::Deferred`]).
//!
//! A registry `--cache-to` also uploads each of its layers as soon as it is
//! written ([`BackgroundPlan::add_upload`], the queue of
//! [`crate::registry::queue`]): the export at the end then waits only for
//! the uploads still in flight and writes the config and manifest.
//!
//! `RBUILD_BACKGROUND_LAYERS=0` turns this off (compress at export, as
//! before), for measuring both ways; `RBUILD_BACKGROUND_UPLOADS=0` keeps
//! the layers but uploads at export.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rbuild_cache::layer::LayerOptions;
use rbuild_cache::store::Store;
use rbuild_solver::graph::{Definition, Digest, Op};
use rbuild_solver::solve::CommitHook;

use crate::registry::queue::UploadQueue;

/// Layer options to write in the background, per vertex.
#[derive(Debug, Default)]
pub struct BackgroundPlan {
    by_vertex: HashMap<Digest, Vec<LayerOptions>>,
    /// Applies to every exec/file vertex (`mode=max`).
    every: Vec<LayerOptions>,
    /// Vertices whose deferred layer (diff id only) to record, with the
    /// epoch (store-only builds, see [`super::LayerForm::Deferred`]).
    deferred: HashMap<Digest, Option<i64>>,
    /// Background uploads of the layers written.
    uploads: Vec<Upload>,
}

/// The layers one `--cache-to` uploads as they are written.
#[derive(Clone)]
struct Upload {
    queue: Arc<UploadQueue>,
    /// The layer's note name (compression, level, epoch): what the
    /// background write it waits for is keyed by.
    note: String,
    /// `None`: every exec/file vertex's (`mode=max`).
    vertices: Option<HashSet<Digest>>,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload").field("note", &self.note).field("vertices", &self.vertices).finish()
    }
}

impl BackgroundPlan {
    /// Whether `RBUILD_BACKGROUND_LAYERS` leaves background layers on.
    pub fn enabled() -> bool {
        std::env::var("RBUILD_BACKGROUND_LAYERS").map(|v| v != "0").unwrap_or(true)
    }

    /// Writes the layers of `output`'s image chain with `opts`.
    pub fn add_image(&mut self, def: &Definition, output: Digest, opts: LayerOptions) {
        for digest in image_vertices(def, output) {
            let list = self.by_vertex.entry(digest).or_default();
            if !list.iter().any(|o| same(o, &opts)) {
                list.push(opts);
            }
        }
    }

    /// Writes the layer of every step's snapshot with `opts`.
    pub fn add_every(&mut self, opts: LayerOptions) {
        if !self.every.iter().any(|o| same(o, &opts)) {
            self.every.push(opts);
        }
    }

    /// Records the deferred layers of `output`'s image chain (nothing is
    /// compressed for an image only the store reads).
    pub fn add_image_deferred(&mut self, def: &Definition, output: Digest, epoch: Option<i64>) {
        for digest in image_vertices(def, output) {
            self.deferred.insert(digest, epoch);
        }
    }

    /// Uploads to `queue` the layer written with `opts` of each vertex in
    /// `vertices` (`None`: of every step, `mode=max`) once it is written.
    /// The layers must be planned (with [`add_image`](Self::add_image) or
    /// [`add_every`](Self::add_every)); an upload waits for the write.
    pub fn add_upload(&mut self, queue: Arc<UploadQueue>, opts: LayerOptions, vertices: Option<HashSet<Digest>>) {
        let note = rbuild_cache::layer::note_name(&opts.compression, opts.source_date_epoch);
        self.uploads.push(Upload { queue, note, vertices });
    }

    /// The solver's commit hook, or `None` when nothing is planned.
    pub fn into_hook(self, store: &Store) -> Option<CommitHook> {
        if self.by_vertex.is_empty() && self.every.is_empty() && self.deferred.is_empty() {
            return None;
        }
        let store = store.clone();
        Some(Arc::new(move |digest: &Digest, id: &rbuild_cache::store::SnapshotId| {
            for opts in self.every.iter().chain(self.by_vertex.get(digest).into_iter().flatten()) {
                // The uploads of this very layer stream it as it is
                // written (their jobs, queued below, commit the stream).
                let note = rbuild_cache::layer::note_name(&opts.compression, opts.source_date_epoch);
                let tees: Vec<Box<dyn rbuild_cache::store::LayerTee>> = self
                    .uploads
                    .iter()
                    .filter(|u| u.note == note && u.vertices.as_ref().is_none_or(|v| v.contains(digest)))
                    .filter_map(|u| u.queue.open_stream(&crate::remote_cache::layer_job_key(id, &note)))
                    .map(|sink| Box::new(sink) as Box<dyn rbuild_cache::store::LayerTee>)
                    .collect();
                store.compress_in_background_teed(id, *opts, tees);
            }
            if let Some(epoch) = self.deferred.get(digest) {
                store.defer_in_background(id, *epoch);
            }
            // Queued after the writes, so each waits for its layer.
            for upload in &self.uploads {
                if upload.vertices.as_ref().is_none_or(|v| v.contains(digest)) {
                    crate::remote_cache::queue_layer(&upload.queue, &store, id, &upload.note);
                }
            }
        }))
    }
}

fn same(a: &LayerOptions, b: &LayerOptions) -> bool {
    a.compression == b.compression && a.source_date_epoch == b.source_date_epoch
}

/// The vertices whose snapshots make up `output`'s filesystem chain: the
/// root mount of each exec, the base of each file op, every input of a
/// merge, back to the sources. Stages reached only through `COPY --from`
/// or bind mounts are not part of the image's layers.
pub fn image_vertices(def: &Definition, output: Digest) -> HashSet<Digest> {
    let by_digest: HashMap<Digest, &rbuild_solver::graph::Vertex> =
        def.vertices.iter().map(|v| (v.digest, v)).collect();
    let mut out = HashSet::new();
    let mut todo = vec![output];
    while let Some(d) = todo.pop() {
        if !out.insert(d) {
            continue;
        }
        let Some(v) = by_digest.get(&d) else { continue };
        let below: Vec<usize> = match &v.op {
            Op::Exec(exec) => exec.mounts.first().and_then(|m| m.input).into_iter().collect(),
            Op::File(file) => file.base.into_iter().collect(),
            Op::Merge(_) => (0..v.inputs.len()).collect(),
            Op::Source(_) => Vec::new(),
        };
        todo.extend(below.into_iter().filter_map(|i| v.inputs.get(i).copied()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbuild_solver::graph::{
        ExecOp, FileOp, Mount, MountKind, NetworkMode, Platform, SecurityMode, SourceOp, VertexMeta,
    };

    fn mount(input: Option<usize>, target: &str) -> Mount {
        Mount {
            input,
            selector: String::new(),
            target: target.into(),
            readonly: false,
            kind: MountKind::Bind,
            mode: None,
            uid: None,
            gid: None,
        }
    }

    fn exec(cmd: &str, root: Option<usize>, bind: Option<usize>) -> Op {
        let mut mounts = vec![mount(root, "/")];
        if bind.is_some() {
            mounts.push(mount(bind, "/src"));
        }
        Op::Exec(ExecOp {
            args: vec![cmd.into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            network: NetworkMode::None,
            security: SecurityMode::Sandbox,
            mounts,
            ulimits: vec![],
            shm_size: 0,
            extra_hosts: vec![],
            platform: None,
        })
    }

    /// base <- RUN a <- COPY --from=build <- RUN c, with build = base <- RUN b
    /// and a bind mount of `build` into RUN c: only base, a, the copy and c
    /// are the image's.
    #[test]
    fn image_chain_follows_roots_not_copies_or_binds() {
        let mut def = Definition::default();
        let m = VertexMeta::default;
        let image = Op::Source(SourceOp::Image { reference: "busybox".into(), platform: Platform::host() });
        let base = def.add(image, vec![], m());
        let a = def.add(exec("a", Some(0), None), vec![base], m());
        let b = def.add(exec("b", Some(0), None), vec![base], m());
        let copy = def.add(Op::File(FileOp { base: Some(0), actions: vec![] }), vec![a, b], m());
        let c = def.add(exec("c", Some(0), Some(1)), vec![copy, b], m());
        assert_ne!(a, b);
        let got = image_vertices(&def, c);
        assert_eq!(got, [base, a, copy, c].into_iter().collect());
    }
}
