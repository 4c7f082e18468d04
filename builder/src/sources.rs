//! The builder's side of the solver and frontend traits: base image configs
//! for lowering, image layers as snapshots, HTTP and git sources. All
//! network I/O of a build happens here, through the registry client.

use std::path::Path;

use anyhow::{Context as _, Result};
use futures_util::StreamExt as _;
use futures_util::future::join_all;

/// Base-image layers downloaded and unpacked at once.
const LAYER_PULL_CONCURRENCY: usize = 3;
use rbuild_cache::layer::UnpackError;
use rbuild_cache::layer::{UnpackOptions, unpack_layer};
use rbuild_cache::oci::{
    Descriptor, ImageConfig, LayerDescriptor, Manifest, layer_compression_name, normalize_layer_media_type,
};
use rbuild_cache::store::StoreError;
use rbuild_cache::store::{CacheRecord, SnapshotId, Store};
use rbuild_frontend::lower::{ImageConfigResolver, ResolveError, ResolvedBase};
use rbuild_solver::graph::Platform;
use rbuild_solver::sandbox::IdMapping;
use rbuild_solver::solve::{PulledImage, SourceError, SourceProvider};
use tokio::runtime::{Handle, Runtime};

use crate::registry::{ImageRef, RegistryClient, RegistryError, RegistryOptions};

/// Why a base image could not be resolved or pulled.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry failed (or the reference is invalid).
    #[error(transparent)]
    Registry(Box<RegistryError>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored manifest or config is not valid JSON.
    #[error("invalid {what} `{digest}`")]
    InvalidJson {
        /// `manifest` or `image config`.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The registry's manifest bytes do not hash to the digest it gave.
    #[error("manifest digest mismatch: registry said `{said}`, content is `{content}`")]
    ManifestMismatch {
        /// The digest the registry gave.
        said: String,
        /// The digest of the bytes.
        content: String,
    },
    /// Fetching a layer failed.
    #[error("fetching layer `{digest}`")]
    FetchLayer {
        /// The layer digest.
        digest: String,
        /// The registry error.
        #[source]
        source: Box<RegistryError>,
    },
    /// A layer blob could not be opened.
    #[error("cannot open layer blob `{digest}`")]
    OpenLayer {
        /// The layer digest.
        digest: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Unpacking a layer failed.
    #[error("unpacking layer `{digest}`")]
    Unpack {
        /// The layer digest.
        digest: String,
        /// The unpack error.
        #[source]
        source: UnpackError,
    },
    /// The unpacking task panicked or was cancelled.
    #[error("the unpack task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// Why `git` could not check out a repository.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// `git` could not be started.
    #[error("cannot run git")]
    Spawn(#[source] std::io::Error),
    /// A git command failed.
    #[error("git {args}: {stderr}")]
    Failed {
        /// Its arguments.
        args: String,
        /// Its standard error.
        stderr: String,
    },
    /// The destination path is not UTF-8 (git takes it as an argument).
    #[error("non-UTF-8 path `{0}`")]
    Path(std::path::PathBuf),
    /// The `.git` directory could not be removed.
    #[error("cannot remove `.git`")]
    RemoveGitDir(#[source] std::io::Error),
}

impl From<RegistryError> for PullError {
    fn from(e: RegistryError) -> Self {
        PullError::Registry(Box::new(e))
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &'static str, digest: &str, bytes: &[u8]) -> Result<T, PullError> {
    serde_json::from_slice(bytes).map_err(|source| PullError::InvalidJson { what, digest: digest.to_string(), source })
}

/// Resolves and pulls images for one build.
#[derive(Clone)]
pub struct Sources {
    pub store: Store,
    pub registry: RegistryClient,
    pub runtime: Handle,
    /// `--pull`: re-resolve tags instead of reusing resolutions in the store.
    pub pull: bool,
    /// Whether unpacking may chown to any id.
    pub chown: bool,
}

impl Sources {
    /// Opens the store under `root`, starts the I/O runtime and the registry
    /// client, as every command that resolves or pulls images needs them.
    /// The runtime must outlive the returned `Sources` (it holds a handle).
    pub fn open(
        root: &Path,
        insecure_registries: &[String],
        registry_ca: Option<&Path>,
        pull: bool,
        mapping: &IdMapping,
    ) -> Result<(Runtime, Sources)> {
        let store = Store::open(root).with_context(|| format!("opening store `{}`", root.display()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the I/O runtime")?;
        let registry = RegistryClient::new(crate::config::current().registry_options(RegistryOptions {
            insecure_registries: insecure_registries.to_vec(),
            ca_file: registry_ca.map(Path::to_path_buf),
            ..RegistryOptions::default()
        }))?;
        let sources = Sources {
            store,
            registry,
            runtime: runtime.handle().clone(),
            pull,
            chown: !matches!(mapping, IdMapping::Single { .. }),
        };
        Ok((runtime, sources))
    }

    fn resolve_key(reference: &ImageRef, platform: &Platform) -> String {
        format!("{reference}|{platform}")
    }

    /// Resolves `reference` to a pinned reference and its config.
    async fn resolve_one(&self, reference: &str, platform: &Platform) -> Result<ResolvedBase, PullError> {
        let r = ImageRef::parse(reference)?;
        let key = Self::resolve_key(&r, platform);
        let manifest_digest = match (&r.digest, self.pull) {
            (Some(d), _) => Some(d.clone()),
            (None, false) => self.store.resolved_ref(&key)?,
            (None, true) => None,
        };
        if let Some(digest) = manifest_digest
            && self.store.has_blob(&digest)
        {
            let manifest: Manifest = parse_json("manifest", &digest, &self.store.read_blob(&digest)?)?;
            if self.store.has_blob(&manifest.config.digest) {
                let config_digest = &manifest.config.digest;
                let config: ImageConfig =
                    parse_json("image config", config_digest, &self.store.read_blob(config_digest)?)?;
                return Ok(ResolvedBase { reference: pinned(&r, &digest), config });
            }
        }
        let resolved = self.registry.resolve(&r, platform).await?;
        let stored = self.store.write_blob(&resolved.manifest)?;
        if stored != resolved.manifest_digest {
            return Err(PullError::ManifestMismatch { said: resolved.manifest_digest, content: stored });
        }
        self.store.write_blob(&resolved.config)?;
        self.store.set_resolved_ref(&key, &resolved.manifest_digest)?;
        let config: ImageConfig = parse_json("image config", &resolved.config_digest, &resolved.config)?;
        Ok(ResolvedBase { reference: pinned(&r, &resolved.manifest_digest), config })
    }

    async fn pull(&self, reference: &str, platform: &Platform) -> Result<PulledImage, PullError> {
        let r = ImageRef::parse(reference)?;
        // A pinned reference whose manifest is stored needs no resolution;
        // otherwise resolving stores the manifest and config.
        let manifest_digest = match &r.digest {
            Some(d) if self.store.has_blob(d) => d.clone(),
            _ => {
                let resolved = self.resolve_one(reference, platform).await?;
                resolved.reference.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default()
            }
        };
        let manifest: Manifest = parse_json("manifest", &manifest_digest, &self.store.read_blob(&manifest_digest)?)?;
        let config_digest = &manifest.config.digest;
        let config: ImageConfig = parse_json("image config", config_digest, &self.store.read_blob(config_digest)?)?;
        // Collected first: a lazy `map` in the stream trips rustc's
        // higher-ranked `Send` check of the whole future.
        let pulls: Vec<_> = manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let diff_id = config.rootfs.diff_ids.get(i).cloned().unwrap_or_default();
                self.layer_snapshot(&r, layer, diff_id)
            })
            .collect();
        // A bounded number at once, in order (dockerd's
        // max-concurrent-downloads default): an image of thousands of
        // layers must not open thousands of connections and files.
        let results: Vec<_> = futures_util::stream::iter(pulls).buffered(LAYER_PULL_CONCURRENCY).collect().await;
        let mut chain = Vec::new();
        let mut layers = Vec::new();
        for result in results {
            let (id, desc) = result?;
            chain.push(id);
            layers.push(desc);
        }
        Ok(PulledImage { chain, layers })
    }

    /// Fetches (if missing) and unpacks (once) one layer.
    async fn layer_snapshot(
        &self,
        r: &ImageRef,
        layer: &Descriptor,
        diff_id: String,
    ) -> Result<(SnapshotId, LayerDescriptor), PullError> {
        let desc = LayerDescriptor {
            digest: layer.digest.clone(),
            diff_id,
            size: layer.size,
            media_type: normalize_layer_media_type(&layer.media_type),
        };
        let key = layer_key(&layer.digest);
        if let Some(rec) = self.store.lookup(&key)?
            && let Some(id) = rec.chain.first()
            && self.store.has_snapshot(id)
        {
            return Ok((id.clone(), desc));
        }
        if !self.store.has_blob(&layer.digest) {
            let writer = self.store.blob_writer()?;
            let mut bridge = crate::fetch::SyncWriteBridge::new(writer);
            self.registry
                .fetch_blob(r, &layer.digest, layer.size, &mut bridge)
                .await
                .map_err(|source| PullError::FetchLayer { digest: layer.digest.clone(), source: Box::new(source) })?;
            bridge.into_inner().finish_expecting(&layer.digest)?;
        }
        let store = self.store.clone();
        let blob = store.blob_path(&layer.digest);
        let chown = self.chown;
        let digest = layer.digest.clone();
        let id = tokio::task::spawn_blocking(move || -> Result<SnapshotId, PullError> {
            let draft = store.new_snapshot()?;
            let file =
                std::fs::File::open(&blob).map_err(|source| PullError::OpenLayer { digest: digest.clone(), source })?;
            unpack_layer(std::io::BufReader::with_capacity(1 << 20, file), &draft.diff_dir(), &UnpackOptions { chown })
                .map_err(|source| PullError::Unpack { digest, source })?;
            Ok(draft.commit()?)
        })
        .await??;
        let created =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.store.record(
            &key,
            &CacheRecord {
                chain: vec![id.clone()],
                layers: vec![Some(desc.clone())],
                created,
                extra: Default::default(),
            },
        )?;
        self.store.set_layer_for_snapshot(&id, layer_compression_name(&desc.media_type), &desc)?;
        Ok((id, desc))
    }
}

/// The store record of a pulled layer (its snapshot).
fn layer_key(digest: &str) -> String {
    format!("layer:{digest}")
}

/// `name@digest` with the tag dropped, as BuildKit pins base images.
fn pinned(r: &ImageRef, digest: &str) -> String {
    let mut base = r.clone();
    base.digest = Some(digest.to_string());
    base.to_string()
}

impl ImageConfigResolver for Sources {
    fn resolve_all(&self, requests: &[(String, Platform)]) -> Vec<Result<ResolvedBase, ResolveError>> {
        let this = self.clone();
        let requests = requests.to_vec();
        let fut = async move {
            join_all(requests.iter().map(|(r, p)| this.resolve_one(r, p)))
                .await
                .into_iter()
                .map(|r| r.map_err(ResolveError::new))
                .collect::<Vec<_>>()
        };
        block_on(&self.runtime, fut)
    }
}

impl SourceProvider for Sources {
    fn pull_image(&self, reference: &str, platform: &Platform) -> Result<PulledImage, SourceError> {
        let this = self.clone();
        let (reference, platform) = (reference.to_string(), platform.clone());
        Ok(block_on(&self.runtime, async move { this.pull(&reference, &platform).await })?)
    }

    fn fetch_http(
        &self,
        url: &str,
        checksum: Option<&str>,
        dest_dir: &Path,
        filename: &str,
    ) -> Result<(), SourceError> {
        Ok(crate::fetch::fetch_url(&self.runtime, url, checksum, &dest_dir.join(filename))?)
    }

    fn fetch_git(&self, remote: &str, git_ref: &str, keep_git_dir: bool, dest_dir: &Path) -> Result<(), SourceError> {
        Ok(git_checkout(remote, git_ref, keep_git_dir, dest_dir)?)
    }
}

/// Runs a future from a solver thread (never a runtime worker).
fn block_on<T: Send + 'static>(rt: &Handle, fut: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().expect("runtime task finished")
}

/// `git clone` (the git CLI handles every transport and credential helper).
fn git_checkout(remote: &str, git_ref: &str, keep_git_dir: bool, dest: &Path) -> Result<(), GitError> {
    let run = |args: &[&str], cwd: Option<&Path>| -> Result<(), GitError> {
        let mut cmd = std::process::Command::new("git");
        cmd.args(args).env("GIT_TERMINAL_PROMPT", "0");
        if let Some(c) = cwd {
            cmd.current_dir(c);
        }
        let out = cmd.output().map_err(GitError::Spawn)?;
        if !out.status.success() {
            return Err(GitError::Failed {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    };
    let dest_s = dest.to_str().ok_or_else(|| GitError::Path(dest.to_path_buf()))?;
    run(&["clone", "--quiet", "--no-checkout", remote, dest_s], None)?;
    let target = if git_ref.is_empty() { "HEAD" } else { git_ref };
    run(&["-c", "advice.detachedHead=false", "checkout", "--quiet", target], Some(dest))?;
    run(&["submodule", "update", "--init", "--recursive", "--quiet"], Some(dest))?;
    if !keep_git_dir {
        std::fs::remove_dir_all(dest.join(".git")).map_err(GitError::RemoveGitDir)?;
    }
    Ok(())
}
