//! The builder's side of the solver and frontend traits: base image configs
//! for lowering, image layers as snapshots, HTTP and git sources. All
//! network I/O of a build happens here, through the registry client.

use std::path::Path;

use anyhow::{Context as _, Result};
use futures_util::future::join_all;
use rbuild_cache::layer::{UnpackOptions, unpack_layer};
use rbuild_cache::oci::{
    Descriptor, ImageConfig, LayerDescriptor, Manifest, layer_compression_name, normalize_layer_media_type,
};
use rbuild_cache::store::{CacheRecord, SnapshotId, Store};
use rbuild_frontend::lower::{ImageConfigResolver, ResolvedBase};
use rbuild_solver::graph::Platform;
use rbuild_solver::sandbox::IdMapping;
use rbuild_solver::solve::{PulledImage, SourceProvider};
use tokio::runtime::{Handle, Runtime};

use crate::cli::BuildArgs;
use crate::registry::{ImageRef, RegistryClient, RegistryOptions};

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
    pub fn open(root: &Path, args: &BuildArgs, mapping: &IdMapping) -> Result<(Runtime, Sources)> {
        let store = Store::open(root).with_context(|| format!("opening store `{}`", root.display()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the I/O runtime")?;
        let registry = RegistryClient::new(RegistryOptions {
            insecure_registries: args.insecure_registry.clone(),
            docker_config_dir: None,
        });
        let sources = Sources {
            store,
            registry,
            runtime: runtime.handle().clone(),
            pull: args.pull,
            chown: !matches!(mapping, IdMapping::Single { .. }),
        };
        Ok((runtime, sources))
    }

    fn resolve_key(reference: &ImageRef, platform: &Platform) -> String {
        format!("{reference}|{platform}")
    }

    /// Resolves `reference` to a pinned reference and its config.
    async fn resolve_one(&self, reference: &str, platform: &Platform) -> Result<ResolvedBase> {
        let r = ImageRef::parse(reference).map_err(|e| anyhow::anyhow!("{e}"))?;
        let key = Self::resolve_key(&r, platform);
        let manifest_digest = match (&r.digest, self.pull) {
            (Some(d), _) => Some(d.clone()),
            (None, false) => self.store.resolved_ref(&key)?,
            (None, true) => None,
        };
        if let Some(digest) = manifest_digest
            && self.store.has_blob(&digest)
        {
            let manifest: Manifest = serde_json::from_slice(&self.store.read_blob(&digest)?)?;
            if self.store.has_blob(&manifest.config.digest) {
                let config: ImageConfig = serde_json::from_slice(&self.store.read_blob(&manifest.config.digest)?)
                    .context("invalid image config")?;
                return Ok(ResolvedBase { reference: pinned(&r, &digest), config });
            }
        }
        let resolved = self.registry.resolve(&r, platform).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let stored = self.store.write_blob(&resolved.manifest)?;
        if stored != resolved.manifest_digest {
            anyhow::bail!("manifest digest mismatch: registry said {}, content is {stored}", resolved.manifest_digest);
        }
        self.store.write_blob(&resolved.config)?;
        self.store.set_resolved_ref(&key, &resolved.manifest_digest)?;
        let config: ImageConfig = serde_json::from_slice(&resolved.config).context("invalid image config")?;
        Ok(ResolvedBase { reference: pinned(&r, &resolved.manifest_digest), config })
    }

    async fn pull(&self, reference: &str, platform: &Platform) -> Result<PulledImage> {
        let r = ImageRef::parse(reference).map_err(|e| anyhow::anyhow!("{e}"))?;
        // A pinned reference whose manifest is stored needs no resolution;
        // otherwise resolving stores the manifest and config.
        let manifest_digest = match &r.digest {
            Some(d) if self.store.has_blob(d) => d.clone(),
            _ => {
                let resolved = self.resolve_one(reference, platform).await?;
                resolved.reference.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default()
            }
        };
        let manifest: Manifest = serde_json::from_slice(&self.store.read_blob(&manifest_digest)?)?;
        let config: ImageConfig = serde_json::from_slice(&self.store.read_blob(&manifest.config.digest)?)?;
        let pulls = manifest.layers.iter().enumerate().map(|(i, layer)| {
            let diff_id = config.rootfs.diff_ids.get(i).cloned().unwrap_or_default();
            self.layer_snapshot(&r, layer, diff_id)
        });
        let mut chain = Vec::new();
        let mut layers = Vec::new();
        for result in join_all(pulls).await {
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
    ) -> Result<(SnapshotId, LayerDescriptor)> {
        let desc = LayerDescriptor {
            digest: layer.digest.clone(),
            diff_id,
            size: layer.size,
            media_type: normalize_layer_media_type(&layer.media_type),
        };
        let key = format!("layer:{}", layer.digest);
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
                .map_err(|e| anyhow::anyhow!("fetching layer {}: {e}", layer.digest))?;
            bridge.into_inner().finish_expecting(&layer.digest)?;
        }
        let store = self.store.clone();
        let blob = store.blob_path(&layer.digest);
        let chown = self.chown;
        let digest = layer.digest.clone();
        let id = tokio::task::spawn_blocking(move || -> Result<SnapshotId> {
            let draft = store.new_snapshot()?;
            let file = std::fs::File::open(&blob)?;
            unpack_layer(std::io::BufReader::with_capacity(1 << 20, file), &draft.diff_dir(), &UnpackOptions { chown })
                .with_context(|| format!("unpacking layer {digest}"))?;
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

/// `name@digest` with the tag dropped, as BuildKit pins base images.
fn pinned(r: &ImageRef, digest: &str) -> String {
    let mut base = r.clone();
    base.digest = Some(digest.to_string());
    base.to_string()
}

impl ImageConfigResolver for Sources {
    fn resolve_all(&self, requests: &[(String, Platform)]) -> Vec<Result<ResolvedBase, String>> {
        let this = self.clone();
        let requests = requests.to_vec();
        let fut = async move {
            join_all(requests.iter().map(|(r, p)| this.resolve_one(r, p)))
                .await
                .into_iter()
                .map(|r| r.map_err(|e| format!("{e:#}")))
                .collect::<Vec<_>>()
        };
        block_on(&self.runtime, fut)
    }
}

impl SourceProvider for Sources {
    fn pull_image(&self, reference: &str, platform: &Platform) -> Result<PulledImage, String> {
        let this = self.clone();
        let (reference, platform) = (reference.to_string(), platform.clone());
        block_on(&self.runtime, async move { this.pull(&reference, &platform).await }).map_err(|e| format!("{e:#}"))
    }

    fn fetch_http(&self, url: &str, checksum: Option<&str>, dest_dir: &Path, filename: &str) -> Result<(), String> {
        crate::fetch::fetch_url(&self.runtime, url, checksum, &dest_dir.join(filename)).map_err(|e| format!("{e:#}"))
    }

    fn fetch_git(&self, remote: &str, git_ref: &str, keep_git_dir: bool, dest_dir: &Path) -> Result<(), String> {
        git_checkout(remote, git_ref, keep_git_dir, dest_dir).map_err(|e| format!("{e:#}"))
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
fn git_checkout(remote: &str, git_ref: &str, keep_git_dir: bool, dest: &Path) -> Result<()> {
    let run = |args: &[&str], cwd: Option<&Path>| -> Result<()> {
        let mut cmd = std::process::Command::new("git");
        cmd.args(args).env("GIT_TERMINAL_PROMPT", "0");
        if let Some(c) = cwd {
            cmd.current_dir(c);
        }
        let out = cmd.output().context("running git")?;
        if !out.status.success() {
            anyhow::bail!("git {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    };
    let dest_s = dest.to_str().context("non-UTF-8 path")?;
    run(&["clone", "--quiet", "--no-checkout", remote, dest_s], None)?;
    let target = if git_ref.is_empty() { "HEAD" } else { git_ref };
    run(&["-c", "advice.detachedHead=false", "checkout", "--quiet", target], Some(dest))?;
    run(&["submodule", "update", "--init", "--recursive", "--quiet"], Some(dest))?;
    if !keep_git_dir {
        std::fs::remove_dir_all(dest.join(".git"))?;
    }
    Ok(())
}
