//! The builder's side of the remote build cache: `--cache-from` /
//! `--cache-to` specs turned into `cache::remote` sources and sinks — a
//! registry reference through the registry client, or an OCI layout
//! directory — and the export of a solved build's records.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use rbuild_cache::layer::{Compression, LayerOptions};
use rbuild_cache::oci::{LayerDescriptor, MEDIA_TYPE_MANIFEST, Manifest};
use rbuild_cache::remote::import::ImportedRecord;
use rbuild_cache::remote::layout::LayoutCache;
use rbuild_cache::remote::{
    self, BlobSink, BlobSource, ExportPlan, ExportStats, ImportedCache, MountToExport, TransportError,
};
use rbuild_cache::store::Store;
use tokio::runtime::Handle;

use rbuild_solver::graph::{CacheSharing, Definition, MountKind, Op};
use rbuild_solver::solve::{Solved, VertexResult};

use crate::export::{ExportError, MissingBlobs, Output};
use crate::fetch::SyncWriteBridge;
use crate::registry::queue::{QueuedBlob, UploadQueue};
use crate::registry::{ImageRef, RegistryClient};
use crate::request::cache::{CacheBackend, CacheMode, CacheSpec};

/// A cache artifact at a registry reference.
pub struct RegistryCache {
    registry: RegistryClient,
    runtime: Handle,
    reference: ImageRef,
    /// The build's background uploads to this ref's repository, waited for
    /// before the config and manifest are written.
    queue: Option<Arc<UploadQueue>>,
}

impl RegistryCache {
    /// The cache at `reference` (a reference without tag or digest means
    /// `:latest`, as for images).
    pub fn new(registry: RegistryClient, runtime: Handle, reference: &str) -> Result<Self> {
        let mut r =
            ImageRef::parse(reference).map_err(|e| anyhow::anyhow!("invalid cache reference `{reference}`: {e}"))?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some("latest".to_string());
        }
        Ok(RegistryCache { registry, runtime, reference: r, queue: None })
    }

    /// This cache, its layers (some, all) sent already by `queue`.
    fn with_queue(self, queue: Option<Arc<UploadQueue>>) -> Self {
        RegistryCache { queue, ..self }
    }

    /// The artifact, and the note to the client that this repository holds
    /// its blobs (so a push to another repository of the registry mounts
    /// them instead of downloading and uploading).
    fn read(&self) -> Result<Option<(Manifest, Vec<u8>)>, TransportError> {
        let artifact = self.read_artifact_bytes()?;
        if let Some((manifest, _)) = &artifact {
            for layer in &manifest.layers {
                self.registry.note_blob_source(&layer.digest, &self.reference);
            }
        }
        Ok(artifact)
    }

    fn read_artifact_bytes(&self) -> Result<Option<(Manifest, Vec<u8>)>, TransportError> {
        let Some((bytes, digest)) = self.runtime.block_on(self.registry.fetch_manifest_if_exists(&self.reference))?
        else {
            return Ok(None);
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes)?;
        if value.get("config").is_none() && value.get("manifests").is_some() {
            // A multi-platform image pushed with `--cache-to type=inline`.
            return self.read_index(&bytes, &digest).map(Some);
        }
        let mut manifest: Manifest = serde_json::from_value(value)?;
        let config = self.fetch_config(&manifest, &digest)?;
        if manifest.config.media_type != remote::MEDIA_TYPE_CACHE_CONFIG
            && let Some(records) = inline_records(&config)?
        {
            // An image pushed with `--cache-to type=inline`: its records
            // name the image's own layers, in this repository.
            manifest.config.media_type = remote::MEDIA_TYPE_CACHE_CONFIG.to_string();
            manifest.config.digest = rbuild_cache::oci::sha256_digest(&records);
            manifest.config.size = records.len() as u64;
            return Ok(Some((manifest, records)));
        }
        Ok(Some((manifest, config)))
    }

    fn fetch_config(&self, manifest: &Manifest, digest: &str) -> Result<Vec<u8>, TransportError> {
        if manifest.config.size > 64 << 20 {
            return Err(format!("cache config of `{}` ({digest}) is too large", self.reference).into());
        }
        let mut config = Vec::with_capacity(manifest.config.size as usize);
        self.runtime.block_on(self.registry.fetch_blob(
            &self.reference,
            &manifest.config.digest,
            manifest.config.size,
            &mut config,
        ))?;
        Ok(config)
    }

    /// The inline records of every platform of an image index, merged into
    /// one artifact (each platform's image carries its own group).
    fn read_index(&self, bytes: &[u8], digest: &str) -> Result<(Manifest, Vec<u8>), TransportError> {
        let index: rbuild_cache::oci::Index = serde_json::from_slice(bytes)?;
        let mut merged = remote::CacheConfig::new();
        for child in &index.manifests {
            if child.media_type != rbuild_cache::oci::MEDIA_TYPE_MANIFEST
                && child.media_type != "application/vnd.docker.distribution.manifest.v2+json"
            {
                continue; // a nested index: not something rbuild pushes
            }
            let r = ImageRef { tag: None, digest: Some(child.digest.clone()), ..self.reference.clone() };
            let Some((bytes, _)) = self.runtime.block_on(self.registry.fetch_manifest_if_exists(&r))? else {
                continue;
            };
            let manifest: Manifest = serde_json::from_slice(&bytes)?;
            let config = self.fetch_config(&manifest, &child.digest)?;
            let Some(records) = inline_records(&config)? else { continue };
            let records = remote::CacheConfig::parse(&records)?;
            for (platform, keys) in records.platforms {
                merged.platforms.entry(platform).or_default().extend(keys);
            }
        }
        if merged.platforms.is_empty() {
            return Err(
                format!("`{}` ({digest}) is an image index without inline cache records", self.reference).into()
            );
        }
        let config = merged.to_json();
        let manifest: Manifest = serde_json::from_slice(&merged.manifest(&config))?;
        Ok((manifest, config))
    }
}

/// The inline cache records of an image config (`--cache-to type=inline`),
/// as config-blob bytes; `None` for an image without them (or a config that
/// is not an image's).
fn inline_records(config: &[u8]) -> Result<Option<Vec<u8>>, TransportError> {
    let Ok(image) = serde_json::from_slice::<rbuild_cache::oci::ImageConfig>(config) else { return Ok(None) };
    Ok(image.inline_cache.map(|records| serde_json::to_vec(&records)).transpose()?)
}

impl BlobSource for RegistryCache {
    fn name(&self) -> String {
        self.reference.to_string()
    }

    fn read_artifact(&self) -> Result<Option<(Manifest, Vec<u8>)>, TransportError> {
        self.read()
    }

    fn fetch_blob(&self, digest: &str, size: u64, out: &mut (dyn std::io::Write + Send)) -> Result<(), TransportError> {
        // The client checks size and digest while streaming.
        let mut bridge = SyncWriteBridge::new(out);
        Ok(self.runtime.block_on(self.registry.fetch_blob(&self.reference, digest, size, &mut bridge))?)
    }
}

impl BlobSink for RegistryCache {
    fn name(&self) -> String {
        self.reference.to_string()
    }

    fn read_artifact(&self) -> Result<Option<(Manifest, Vec<u8>)>, TransportError> {
        self.read()
    }

    fn has_blob(&self, digest: &str) -> Result<bool, TransportError> {
        Ok(self.runtime.block_on(self.registry.blob_exists(&self.reference, digest))?)
    }

    fn write_blobs(&self, config: &[u8], layers: &[(LayerDescriptor, PathBuf)]) -> Result<(), TransportError> {
        // The background uploads first: a failed one fails the export here,
        // before any manifest names its blob. What they sent is not checked
        // again.
        let sent = match &self.queue {
            Some(queue) => queue.finish()?,
            None => BTreeMap::new(),
        };
        let config_digest = rbuild_cache::oci::sha256_digest(config);
        let files: Vec<(String, u64, PathBuf)> = layers
            .iter()
            .filter(|(l, _)| !sent.contains_key(&l.digest))
            .map(|(l, p)| (l.digest.clone(), l.size, p.clone()))
            .collect();
        // Blobs the repository has (the pushed image's, a previous cache's)
        // are skipped, known ones in other repositories mounted.
        self.runtime.block_on(self.registry.push_blobs(&self.reference, (config, &config_digest), &files))?;
        // An image pushed to another repository of this registry mounts
        // them from here.
        for (layer, _) in layers {
            self.registry.note_blob_source(&layer.digest, &self.reference);
        }
        Ok(())
    }

    fn write_manifest(&self, manifest: &[u8]) -> Result<(), TransportError> {
        self.runtime.block_on(self.registry.push_manifest(&self.reference, manifest, MEDIA_TYPE_MANIFEST))?;
        Ok(())
    }
}

/// Why `type=gha` is refused, and what to use instead (after the flag).
const GHA_UNSUPPORTED: &str = "type=gha` is not supported by rbuild (it has no client for the GitHub Actions cache service): use type=registry,ref=ghcr.io/OWNER/APP:cache, or type=local with actions/cache saving the directory; supported types: registry, local, inline (export only)";

fn local_cache(path: &std::path::Path, spec: &CacheSpec) -> LayoutCache {
    let cache = LayoutCache::new(path.to_path_buf(), spec.options.get("tag").cloned());
    match spec.options.get("digest") {
        Some(digest) => cache.pinned(digest.clone()),
        None => cache,
    }
}

/// Reads the records of every `--cache-from` before the solve.
pub fn import(
    specs: &[CacheSpec],
    registry: &RegistryClient,
    runtime: &Handle,
    chown: bool,
) -> Result<Option<Arc<ImportedCache>>> {
    if specs.is_empty() {
        return Ok(None);
    }
    let mut sources: Vec<Arc<dyn BlobSource>> = Vec::new();
    for spec in specs {
        match &spec.backend {
            CacheBackend::Registry { reference } => {
                sources.push(Arc::new(RegistryCache::new(registry.clone(), runtime.clone(), reference)?))
            }
            CacheBackend::Local { path } => sources.push(Arc::new(local_cache(path, spec))),
            CacheBackend::Inline => {
                bail!("`--cache-from type=inline` does not exist: name the image (`--cache-from IMAGE`)")
            }
            CacheBackend::Gha { .. } => bail!("`--cache-from {GHA_UNSUPPORTED}"),
        }
    }
    let imported = ImportedCache::load(sources, chown).context("importing the build cache")?;
    Ok(Some(Arc::new(imported)))
}

/// Refuses cache types and options this version cannot honour, before
/// anything runs, rather than ignoring them.
pub fn check_exports(specs: &[CacheSpec]) -> Result<()> {
    for spec in specs {
        if matches!(spec.backend, CacheBackend::Gha { .. }) {
            bail!("`--cache-to {GHA_UNSUPPORTED}");
        }
        for (key, unsupported) in
            [("image-manifest", "false"), ("oci-mediatypes", "false"), ("force-compression", "true")]
        {
            if spec.options.get(key).is_some_and(|v| v.eq_ignore_ascii_case(unsupported)) {
                bail!(
                    "`--cache-to {key}={unsupported}` is not available yet in this rbuild version: the cache is always an OCI image manifest over existing layer blobs"
                );
            }
        }
        layer_compression(spec)?;
        cache_mounts(spec)?;
    }
    Ok(())
}

/// `cache-mounts=true|false` of a `--cache-to` (default false).
fn cache_mounts(spec: &CacheSpec) -> Result<bool> {
    match spec.options.get("cache-mounts").map(|v| v.to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if v == "true" => Ok(true),
        Some(v) if v == "false" => Ok(false),
        Some(v) => bail!("`--cache-to`: invalid `cache-mounts={v}`: expected true or false"),
    }
}

/// The cache mounts (`RUN --mount=type=cache`) a build graph uses: id and
/// sharing mode, each store key ([`rbuild_solver::solve::cache_mount_key`])
/// once.
pub fn cache_mounts_of(def: &Definition) -> Vec<MountToExport> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for vertex in &def.vertices {
        let Op::Exec(exec) = &vertex.op else { continue };
        for mount in &exec.mounts {
            if let MountKind::Cache { id, sharing } = &mount.kind {
                let sharing = match sharing {
                    CacheSharing::Shared => "shared",
                    CacheSharing::Private => "private",
                    CacheSharing::Locked => "locked",
                };
                // The store's key: a mount with its own `uid=`/`gid=`/`mode=`
                // is another cache than the default one of the same id.
                out.entry(rbuild_solver::solve::cache_mount_key(id, mount)).or_insert_with(|| sharing.to_string());
            }
        }
    }
    out.into_iter().map(|(id, sharing)| MountToExport { id, sharing }).collect()
}

/// `compression=` and `compression-level=` of a cache export (for the layers
/// of snapshots that have none yet).
pub fn layer_compression(spec: &CacheSpec) -> Result<Compression> {
    let level = match spec.options.get("compression-level") {
        None => None,
        Some(v) => Some(v.parse::<i32>().with_context(|| format!("`--cache-to`: invalid `compression-level={v}`"))?),
    };
    Ok(match spec.options.get("compression").map(String::as_str) {
        None | Some("gzip") => {
            let level = level.unwrap_or(6);
            if !(0..=9).contains(&level) {
                bail!("`--cache-to`: `compression-level={level}` is out of range for gzip (0-9)");
            }
            Compression::Gzip { level: level as u32 }
        }
        Some("zstd") => Compression::zstd_buildkit_level(level),
        Some("uncompressed") => Compression::Uncompressed,
        Some(other) => bail!("`--cache-to`: invalid `compression={other}`: expected gzip, zstd or uncompressed"),
    })
}

/// Makes an output resolved from imported records exportable: outputs that
/// write files (`type=local`, `type=tar`) need snapshots, so the chain is
/// downloaded and unpacked; image outputs need only the layer blobs, which
/// are downloaded (where missing, several at once) and never unpacked.
/// When every output is a registry push, nothing is downloaded here: the
/// layers are noted in `lazy`, and the push takes each from the registry
/// (the target has it, or mounts it from the cache's repository) or
/// downloads it only then.
pub fn fetch_output(
    store: &Store,
    imported: Option<&ImportedCache>,
    solved: &Solved,
    outputs: &[Output],
    lazy: &mut LazyLayers,
) -> Result<Solved> {
    let (Some(imported), Some(record), Some(key)) = (imported, &solved.imported, solved.key) else {
        return Ok(solved.clone());
    };
    let needs_files = outputs.iter().any(|o| matches!(o, Output::Local { .. } | Output::Tar { .. }));
    if needs_files {
        let (chain, layers) =
            imported.materialize(store, &key.to_string(), record).context("importing the build result")?;
        return Ok(Solved {
            result: Some(VertexResult::Snapshots { chain, layers }),
            imported: None,
            ..solved.clone()
        });
    }
    let push_only = outputs.iter().all(|o| matches!(o, Output::Image { push: true, .. }));
    if push_only {
        for layer in record.layers.iter().flatten() {
            lazy.records.entry(layer.digest.clone()).or_insert_with(|| (layer.clone(), record.clone()));
        }
        return Ok(solved.clone());
    }
    let layers: Vec<_> = record.layers.iter().flatten().collect();
    imported.fetch_blobs(store, record, &layers).context("downloading the layers of the cached result")?;
    Ok(solved.clone())
}

/// The layers of cached results a push-only build left in the cache's
/// registry, downloaded only if a push target can neither find nor mount
/// them.
pub struct LazyLayers {
    store: Store,
    imported: Option<Arc<ImportedCache>>,
    records: BTreeMap<String, (LayerDescriptor, ImportedRecord)>,
}

impl LazyLayers {
    /// None yet, for a build with `imported` records.
    pub fn new(store: &Store, imported: Option<Arc<ImportedCache>>) -> Self {
        LazyLayers { store: store.clone(), imported, records: BTreeMap::new() }
    }
}

impl MissingBlobs for LazyLayers {
    fn fetch(&self, digest: &str) -> Result<(), ExportError> {
        let (Some(imported), Some((layer, record))) = (&self.imported, self.records.get(digest)) else {
            return Err(ExportError::Store(rbuild_cache::store::StoreError::BlobNotFound(digest.to_string())));
        };
        imported
            .fetch_blob(&self.store, record, layer)
            .map_err(|source| ExportError::FetchCachedLayer { digest: digest.to_string(), source: Box::new(source) })
    }
}

/// Whether any `--cache-to` is `type=inline` (records in the image config).
pub fn wants_inline(specs: &[CacheSpec]) -> bool {
    specs.iter().any(|s| matches!(s.backend, CacheBackend::Inline))
}

/// The image's own keys with their chain lengths, for the inline cache of
/// `solved`'s image: keys the store holds (their chain must be a prefix of
/// the image's) or the imported records resolved.
pub fn inline_keys(store: &Store, imported: Option<&ImportedCache>, solved: &Solved) -> Result<Vec<(String, usize)>> {
    let (chain, _) = match &solved.result {
        Some(r) => rbuild_solver::solve::result_chain(r),
        None => (Vec::new(), Vec::new()),
    };
    let mut out = Vec::new();
    for key in &solved.image_keys {
        let key = key.to_string();
        if let Some(record) = store.lookup(&key)? {
            if chain.is_empty() || chain.starts_with(&record.chain) {
                out.push((key, record.chain.len()));
            }
        } else if let Some(record) = imported.and_then(|i| i.lookup(&key)) {
            out.push((key, record.layers.len()));
        }
    }
    Ok(out)
}

/// The keys of one platform's build, for both modes.
pub struct PlatformKeys {
    /// `os/arch[/variant]`.
    pub platform: String,
    /// Every solved vertex (`mode=max`).
    pub all: Vec<String>,
    /// Those making up the image (`mode=min`).
    pub image: Vec<String>,
}

/// What a build gives every `--cache-to`.
pub struct BuildCache<'a> {
    /// The keys of each platform built.
    pub keys: &'a [PlatformKeys],
    /// The build's `--cache-from` records.
    pub imported: Option<&'a ImportedCache>,
    /// The cache mounts the build used (exported with `cache-mounts=true`).
    pub mounts: &'a [MountToExport],
    /// `SOURCE_DATE_EPOCH`, for layers written at export.
    pub epoch: Option<i64>,
}

/// The build's background uploads, one queue per registry `--cache-to`
/// (see [`crate::registry::queue`]): each layer it will export is sent as
/// soon as its snapshot is committed and compressed.
#[derive(Default)]
pub struct CacheUploads {
    queues: BTreeMap<String, Arc<UploadQueue>>,
}

impl CacheUploads {
    /// Whether `RBUILD_BACKGROUND_UPLOADS` leaves background uploads on
    /// (`0`: upload at export, as before, for measuring both ways).
    pub fn enabled() -> bool {
        std::env::var("RBUILD_BACKGROUND_UPLOADS").map(|v| v != "0").unwrap_or(true)
    }

    /// A queue for each registry spec of `specs`.
    pub fn new<'a>(
        specs: impl IntoIterator<Item = &'a CacheSpec>,
        registry: &RegistryClient,
        runtime: &Handle,
    ) -> Result<Self> {
        let mut queues = BTreeMap::new();
        for spec in specs {
            let CacheBackend::Registry { reference } = &spec.backend else { continue };
            let cache = RegistryCache::new(registry.clone(), runtime.clone(), reference)?;
            let queue = UploadQueue::new(registry.clone(), runtime.clone(), &cache.reference);
            queues.entry(spec_key(spec)).or_insert_with(|| Arc::new(queue));
        }
        Ok(CacheUploads { queues })
    }

    /// The queue of `spec`, if it has one.
    pub fn queue(&self, spec: &CacheSpec) -> Option<Arc<UploadQueue>> {
        self.queues.get(&spec_key(spec)).cloned()
    }
}

/// Identifies a `--cache-to` (two identical ones are exported once).
pub fn spec_key(spec: &CacheSpec) -> String {
    format!("{spec:?}")
}

/// Queues the upload of snapshot `id`'s layer with `compression` (a store
/// compression name) on `queue`, once the store has written it (it waits
/// for the background writer's job).
pub fn queue_layer(queue: &UploadQueue, store: &Store, id: &rbuild_cache::store::SnapshotId, note: &str) {
    let (store, id, note) = (store.clone(), id.clone(), note.to_string());
    queue.enqueue(layer_job_key(&id, &note), move || {
        // No layer (an empty diff, a failed background write): the export
        // writes and uploads whatever is missing itself.
        let layer = store.layer_for_snapshot(&id, &note).ok().flatten()?;
        Some(QueuedBlob { path: store.blob_path(&layer.digest), digest: layer.digest, size: layer.size })
    });
}

/// The key of the upload job of snapshot `id`'s layer under note `note`
/// (a stream for it is opened under the same key).
pub fn layer_job_key(id: &rbuild_cache::store::SnapshotId, note: &str) -> String {
    format!("{}|{note}", id.0)
}

/// A `--cache-to` whose manifest is written; [`PendingExport::confirm`]
/// reads it back (see [`remote::confirm`]) once the images are exported.
pub struct PendingExport<'a> {
    sink: Box<dyn BlobSink + 'a>,
    plan: ExportPlan<'a>,
    written: remote::Written,
}

impl PendingExport<'_> {
    /// Finishes the export: the artifact read back, written again if a
    /// concurrent export replaced it.
    pub fn confirm(self, store: &Store) -> Result<ExportStats> {
        remote::confirm(store, self.sink.as_ref(), &self.plan, self.written).context("exporting the build cache")
    }
}

/// Exports one `--cache-to` up to its manifest (`queue`: the build's
/// background uploads to it).
pub fn begin_export<'a>(
    spec: &CacheSpec,
    store: &Store,
    registry: &RegistryClient,
    runtime: &Handle,
    build: &BuildCache<'a>,
    queue: Option<Arc<UploadQueue>>,
) -> Result<PendingExport<'a>> {
    let BuildCache { keys, imported, mounts, epoch } = *build;
    let mut platforms: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for k in keys {
        let chosen = match spec.mode {
            CacheMode::Min => &k.image,
            CacheMode::Max => &k.all,
        };
        let entry = platforms.entry(k.platform.clone()).or_default();
        entry.extend(chosen.iter().cloned());
        entry.sort();
        entry.dedup();
    }
    let compression = layer_compression(spec)?;
    let plan = ExportPlan {
        platforms,
        imported,
        layer: LayerOptions { compression, source_date_epoch: epoch, threads: crate::export::threads() },
        mounts: if cache_mounts(spec)? { mounts.to_vec() } else { Vec::new() },
    };
    let sink: Box<dyn BlobSink + 'a> = match &spec.backend {
        CacheBackend::Registry { reference } => {
            Box::new(RegistryCache::new(registry.clone(), runtime.clone(), reference)?.with_queue(queue))
        }
        CacheBackend::Local { path } => Box::new(local_cache(path, spec)),
        CacheBackend::Inline | CacheBackend::Gha { .. } => unreachable!("inline: in the image; gha: refused"),
    };
    let written = remote::write(store, sink.as_ref(), &plan).context("exporting the build cache")?;
    Ok(PendingExport { sink, plan, written })
}

/// What the cache exports of a build need, owned (they run on a thread).
pub struct CacheExportJob {
    /// Each `--cache-to` once, with its background upload queue.
    pub specs: Vec<(CacheSpec, Option<Arc<UploadQueue>>)>,
    /// The store.
    pub store: Store,
    /// The registry client.
    pub registry: RegistryClient,
    /// The I/O runtime.
    pub runtime: Handle,
    /// The keys of each platform built.
    pub keys: Vec<PlatformKeys>,
    /// The build's `--cache-from` records.
    pub imported: Option<Arc<ImportedCache>>,
    /// The cache mounts the build used.
    pub mounts: Vec<MountToExport>,
    /// `SOURCE_DATE_EPOCH`.
    pub epoch: Option<i64>,
}

/// One export's end: its spec, what happened, and when it ended.
pub type ExportOutcome = (CacheSpec, Result<ExportStats>, std::time::Instant);

/// A build's `--cache-to` exports, written on a thread while the images
/// are exported, read back once [`CacheExports::finish`] says the images
/// are written.
pub struct CacheExports {
    images_done: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<Vec<ExportOutcome>>>,
}

impl CacheExports {
    /// Starts writing the exports of `job` (none: no thread).
    pub fn start(job: CacheExportJob) -> Result<Self> {
        let (images_done, wait) = std::sync::mpsc::channel();
        if job.specs.is_empty() {
            return Ok(CacheExports { images_done, thread: None });
        }
        let thread = std::thread::Builder::new()
            .name("cache-export".into())
            .spawn(move || run_exports(job, &wait))
            .context("starting the cache export thread")?;
        Ok(CacheExports { images_done, thread: Some(thread) })
    }

    /// Whether there is nothing to export.
    pub fn is_empty(&self) -> bool {
        self.thread.is_none()
    }

    /// The images are written: reads each export back; their outcomes.
    pub fn finish(mut self) -> Result<Vec<ExportOutcome>> {
        let Some(thread) = self.thread.take() else { return Ok(Vec::new()) };
        // A thread that ended early (it never does) sees no receiver.
        let _ = self.images_done.send(());
        thread.join().map_err(|_| anyhow::anyhow!("the cache export thread panicked"))
    }
}

/// The thread of [`CacheExports`]: every export written, then (once told the
/// images are written) read back. If the build fails first (the sender is
/// dropped), the exports stay written, unchecked.
fn run_exports(job: CacheExportJob, images_done: &std::sync::mpsc::Receiver<()>) -> Vec<ExportOutcome> {
    let CacheExportJob { specs, store, registry, runtime, keys, imported, mounts, epoch } = job;
    let build = BuildCache { keys: &keys, imported: imported.as_deref(), mounts: &mounts, epoch };
    let written: Vec<_> = specs
        .iter()
        .map(|(spec, queue)| (spec, begin_export(spec, &store, &registry, &runtime, &build, queue.clone())))
        .collect();
    if images_done.recv().is_err() {
        return Vec::new();
    }
    written
        .into_iter()
        .map(|(spec, pending)| {
            let result = pending.and_then(|p| p.confirm(&store));
            (spec.clone(), result, std::time::Instant::now())
        })
        .collect()
}
