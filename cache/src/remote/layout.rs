//! `type=local`: a cache artifact in an OCI image layout directory (the
//! form CI cache actions save and restore), its manifest named in
//! `index.json` by `org.opencontainers.image.ref.name` = `tag=` (default
//! `latest`), so one directory can keep several caches.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::{BlobSink, BlobSource, TransportError};
use crate::oci::{Descriptor, Index, LayerDescriptor, MEDIA_TYPE_MANIFEST, Manifest, sha256_digest};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A cache in an OCI layout directory.
#[derive(Clone, Debug)]
pub struct LayoutCache {
    dir: PathBuf,
    tag: String,
    /// `digest=` of `--cache-from type=local`: this manifest, whatever the
    /// tags say.
    digest: Option<String>,
}

/// What is wrong with a layout directory.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A file could not be read or written.
    #[error("`{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// `index.json` or a manifest is not valid JSON.
    #[error("invalid `{path}`")]
    Json {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A blob's bytes do not hash to its name.
    #[error("blob `{digest}` in the layout is corrupt (content is `{actual}`)")]
    Corrupt {
        /// Its name.
        digest: String,
        /// The digest of its bytes.
        actual: String,
    },
    /// A digest is not `sha256:<hex>`.
    #[error("invalid digest `{0}`")]
    InvalidDigest(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Io { path: path.to_path_buf(), source }
}

impl LayoutCache {
    /// The cache tagged `tag` in `dir`.
    pub fn new(dir: PathBuf, tag: Option<String>) -> Self {
        LayoutCache { dir, tag: tag.filter(|t| !t.is_empty()).unwrap_or_else(|| "latest".to_string()), digest: None }
    }

    /// The same cache read by manifest digest instead of by tag.
    pub fn pinned(self, digest: String) -> Self {
        LayoutCache { digest: Some(digest), ..self }
    }

    fn blob(&self, digest: &str) -> Result<PathBuf, LayoutError> {
        let d = crate::oci::Digest::parse(digest).ok_or_else(|| LayoutError::InvalidDigest(digest.to_string()))?;
        Ok(self.dir.join("blobs/sha256").join(d.hex()))
    }

    fn read_verified(&self, digest: &str) -> Result<Vec<u8>, LayoutError> {
        let path = self.blob(digest)?;
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(LayoutError::Corrupt { digest: digest.to_string(), actual });
        }
        Ok(bytes)
    }

    fn index(&self) -> Result<Option<Index>, LayoutError> {
        let path = self.dir.join("index.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| LayoutError::Json { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LayoutError::Io { path, source }),
        }
    }

    fn read(&self) -> Result<Option<(Manifest, Vec<u8>)>, LayoutError> {
        let digest = match &self.digest {
            Some(d) => d.clone(),
            None => {
                let Some(index) = self.index()? else { return Ok(None) };
                let Some(entry) = index.manifests.iter().find(|m| m.annotations.get(REF_NAME) == Some(&self.tag))
                else {
                    return Ok(None);
                };
                entry.digest.clone()
            }
        };
        let bytes = self.read_verified(&digest)?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|source| LayoutError::Json { path: self.blob(&digest).unwrap_or_default(), source })?;
        let config = self.read_verified(&manifest.config.digest)?;
        Ok(Some((manifest, config)))
    }

    /// Writes `bytes` as `path` through a temp file and rename.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))
    }

    fn put_file(&self, digest: &str, src: &Path) -> Result<(), LayoutError> {
        let dest = self.blob(digest)?;
        if dest.is_file() {
            return Ok(());
        }
        // A hard link costs nothing when the layout is on the store's
        // filesystem; blobs are immutable on both sides.
        if fs::hard_link(src, &dest).is_ok() {
            return Ok(());
        }
        let tmp = dest.with_extension(format!("tmp-{}", std::process::id()));
        fs::copy(src, &tmp).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &dest).map_err(io_err(&dest))
    }

    fn write_blobs(&self, config: &[u8], layers: &[(LayerDescriptor, PathBuf)]) -> Result<(), LayoutError> {
        let blobs = self.dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        let layout = self.dir.join("oci-layout");
        if !layout.is_file() {
            self.write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        for (layer, path) in layers {
            self.put_file(&layer.digest, path)?;
        }
        self.put_bytes(config)
    }

    fn put_bytes(&self, bytes: &[u8]) -> Result<(), LayoutError> {
        let path = self.blob(&sha256_digest(bytes))?;
        if !path.is_file() {
            self.write_atomic(&path, bytes)?;
        }
        Ok(())
    }

    fn write_manifest(&self, manifest: &[u8]) -> Result<(), LayoutError> {
        self.put_bytes(manifest)?;
        let mut index = self.index()?.unwrap_or(Index {
            schema_version: 2,
            media_type: String::new(),
            manifests: Vec::new(),
            annotations: Default::default(),
        });
        index.manifests.retain(|m| m.annotations.get(REF_NAME) != Some(&self.tag));
        index.manifests.push(Descriptor {
            media_type: MEDIA_TYPE_MANIFEST.to_string(),
            digest: sha256_digest(manifest),
            size: manifest.len() as u64,
            annotations: [(REF_NAME.to_string(), self.tag.clone())].into(),
            platform: None,
        });
        let bytes = serde_json::to_vec(&index).expect("index serialises");
        self.write_atomic(&self.dir.join("index.json"), &bytes)
    }
}

impl BlobSource for LayoutCache {
    fn name(&self) -> String {
        format!("{}:{}", self.dir.display(), self.tag)
    }

    fn read_artifact(&self) -> Result<Option<(Manifest, Vec<u8>)>, TransportError> {
        Ok(self.read()?)
    }

    fn fetch_blob(&self, digest: &str, size: u64, out: &mut (dyn Write + Send)) -> Result<(), TransportError> {
        let path = self.blob(digest)?;
        let file = fs::File::open(&path).map_err(io_err(&path))?;
        // One byte more than promised is enough to tell the caller the blob
        // is too long; it never reads an endless file.
        io::copy(&mut file.take(size + 1), out).map_err(io_err(&path))?;
        Ok(())
    }
}

impl BlobSink for LayoutCache {
    fn name(&self) -> String {
        BlobSource::name(self)
    }

    fn read_artifact(&self) -> Result<Option<(Manifest, Vec<u8>)>, TransportError> {
        Ok(self.read()?)
    }

    fn has_blob(&self, digest: &str) -> Result<bool, TransportError> {
        Ok(self.blob(digest)?.is_file())
    }

    fn write_blobs(&self, config: &[u8], layers: &[(LayerDescriptor, PathBuf)]) -> Result<(), TransportError> {
        Ok(LayoutCache::write_blobs(self, config, layers)?)
    }

    fn write_manifest(&self, manifest: &[u8]) -> Result<(), TransportError> {
        Ok(LayoutCache::write_manifest(self, manifest)?)
    }
}
