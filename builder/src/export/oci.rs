//! OCI image layout (dir or tar) and docker-archive exporters.
//!
//! The docker-archive is what `docker save` writes since Docker 25: an OCI
//! layout plus Docker's `manifest.json` and `repositories`, so `docker
//! load`, `podman load` and `skopeo` (both `oci-archive:` and
//! `docker-archive:`) read it. Layers stay compressed; `docker load`
//! decompresses them. Archive members are in a fixed order with fixed
//! metadata, so the same bundle gives the same tar bytes.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::dest::write_dest_file;
use super::{ExportError, ExportInput, Exporter};
use rbuild_cache::oci::{Descriptor, Index, MEDIA_TYPE_INDEX, Manifest, sha256_digest};

use super::image::{Blob, BlobData, ImageBundle, parse_name};

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const ANN_REF_NAME: &str = "org.opencontainers.image.ref.name";
const ANN_CONTAINERD_NAME: &str = "io.containerd.image.name";

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// `index.json` of the layout: one entry per name (as buildx writes them),
/// or one unnamed entry.
fn layout_index(bundle: &ImageBundle) -> Result<Vec<u8>, ExportError> {
    let (media_type, top) = bundle.top()?;
    let base = Descriptor {
        media_type: media_type.to_string(),
        digest: sha256_digest(top),
        size: top.len() as u64,
        annotations: bundle.top_annotations.clone(),
        platform: None,
    };
    let mut manifests = Vec::new();
    for name in &bundle.names {
        let n = parse_name(name)?;
        let mut d = base.clone();
        d.annotations.insert(ANN_CONTAINERD_NAME.into(), n.full);
        d.annotations.insert(ANN_REF_NAME.into(), n.tag);
        if !manifests.contains(&d) {
            manifests.push(d);
        }
    }
    if manifests.is_empty() {
        manifests.push(base);
    }
    let index =
        Index { schema_version: 2, media_type: MEDIA_TYPE_INDEX.into(), manifests, annotations: BTreeMap::new() };
    Ok(serde_json::to_vec(&index).expect("index serialises"))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// Docker's `manifest.json` and `repositories`.
fn docker_files(bundle: &ImageBundle) -> Result<(Vec<u8>, Vec<u8>), ExportError> {
    let [img] = bundle.images.as_slice() else {
        return Err(ExportError::BadBundle(
            "a docker-archive holds one platform's image; choose one platform for this export",
        ));
    };
    let manifest: Manifest = serde_json::from_slice(&img.manifest)
        .map_err(|source| ExportError::InvalidJson { what: "manifest", source })?;
    let mut repo_tags = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for name in &bundle.names {
        let n = parse_name(name)?;
        if !repo_tags.contains(&n.familiar) {
            repo_tags.push(n.familiar.clone());
        }
        if let Some(top) = manifest.layers.last() {
            repositories.entry(n.familiar_repo).or_default().insert(n.tag, hex_of(&top.digest).to_string());
        }
    }
    let entry = DockerManifestEntry {
        config: format!("blobs/sha256/{}", hex_of(&manifest.config.digest)),
        repo_tags,
        layers: manifest.layers.iter().map(|l| format!("blobs/sha256/{}", hex_of(&l.digest))).collect(),
    };
    Ok((
        serde_json::to_vec(&[entry]).expect("manifest.json serialises"),
        serde_json::to_vec(&repositories).expect("repositories serialises"),
    ))
}

/// A reader that hashes what it reads.
struct HashRead<R> {
    inner: R,
    hash: Sha256,
    count: u64,
}

impl<R: Read> Read for HashRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Opens a blob file after checking its size; the digest is checked by
/// [`check_blob`] once it has been streamed.
fn open_blob(path: &Path, size: u64) -> Result<HashRead<io::Take<File>>, ExportError> {
    let rerr = |source| ExportError::ReadBlob { path: path.to_path_buf(), source };
    let f = File::open(path).map_err(rerr)?;
    let len = f.metadata().map_err(rerr)?.len();
    if len != size {
        return Err(rerr(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("blob file is {len} bytes, its descriptor says {size}"),
        )));
    }
    Ok(HashRead { inner: f.take(size), hash: Sha256::new(), count: 0 })
}

fn check_blob(path: &Path, blob: &Blob<'_>, r: HashRead<io::Take<File>>) -> Result<(), ExportError> {
    let got = format!("sha256:{}", hex::encode(r.hash.finalize()));
    if got != blob.digest || r.count != blob.size {
        return Err(ExportError::ReadBlob {
            path: path.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob file has digest `{got}`, expected `{}`; the store may be corrupt", blob.digest),
            ),
        });
    }
    Ok(())
}

/// Writes a layout as a tar stream.
fn write_layout_tar(bundle: &ImageBundle, docker: bool, out: &mut dyn Write) -> Result<(), ExportError> {
    let werr = |source| ExportError::Write { source };
    let index = layout_index(bundle)?;
    let docker = if docker { Some(docker_files(bundle)?) } else { None };
    let blobs = bundle.blobs();
    let mut ar = tar::Builder::new(out);
    let header = |path: &str, size: u64, dir: bool| -> Result<tar::Header, ExportError> {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).map_err(werr)?;
        h.set_entry_type(if dir { tar::EntryType::Directory } else { tar::EntryType::Regular });
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h.set_cksum();
        Ok(h)
    };
    ar.append(&header("blobs/", 0, true)?, io::empty()).map_err(werr)?;
    ar.append(&header("blobs/sha256/", 0, true)?, io::empty()).map_err(werr)?;
    for blob in &blobs {
        let h = header(&format!("blobs/sha256/{}", hex_of(&blob.digest)), blob.size, false)?;
        match blob.data {
            BlobData::Bytes(b) => ar.append(&h, b).map_err(werr)?,
            BlobData::File(path) => {
                let mut r = open_blob(path, blob.size)?;
                ar.append(&h, &mut r).map_err(werr)?;
                check_blob(path, blob, r)?;
            }
        }
    }
    let mut files: Vec<(&str, &[u8])> = vec![("index.json", &index), ("oci-layout", OCI_LAYOUT)];
    if let Some((manifest_json, repositories)) = &docker {
        files.push(("manifest.json", manifest_json));
        files.push(("repositories", repositories));
    }
    files.sort();
    for (name, bytes) in files {
        ar.append(&header(name, bytes.len() as u64, false)?, bytes).map_err(werr)?;
    }
    ar.into_inner().map_err(werr)?.flush().map_err(werr)
}

/// Writes the bundle as an OCI layout tar (`oci-archive`) to `out`.
pub fn write_oci_tar(bundle: &ImageBundle, out: &mut dyn Write) -> Result<(), ExportError> {
    write_layout_tar(bundle, false, out)
}

/// Writes the bundle as a docker-archive (for `docker load`) to `out`.
pub fn write_docker_archive(bundle: &ImageBundle, out: &mut dyn Write) -> Result<(), ExportError> {
    write_layout_tar(bundle, true, out)
}

/// Exports an OCI image layout to `dest`: a tar file when `tar` (buildx's
/// default for `type=oci`), else a directory (existing blobs are kept,
/// `index.json` is replaced).
pub fn export_oci(bundle: &ImageBundle, dest: &Path, tar: bool) -> Result<(), ExportError> {
    if tar {
        return write_dest_file(dest, |w| write_oci_tar(bundle, w));
    }
    let index = layout_index(bundle)?;
    let blob_dir = dest.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).map_err(|source| ExportError::WriteDest { path: blob_dir.clone(), source })?;
    for blob in bundle.blobs() {
        let target = blob_dir.join(hex_of(&blob.digest));
        // Content-addressed: a present blob of the right size is this blob.
        if fs::symlink_metadata(&target).map(|m| m.is_file() && m.len() == blob.size).unwrap_or(false) {
            continue;
        }
        write_dest_file(&target, |w| match blob.data {
            BlobData::Bytes(b) => w.write_all(b).map_err(|source| ExportError::Write { source }),
            BlobData::File(path) => {
                let mut r = open_blob(path, blob.size)?;
                io::copy(&mut r, w).map_err(|source| ExportError::Write { source })?;
                check_blob(path, &blob, r)
            }
        })?;
    }
    write_dest_file(&dest.join("oci-layout"), |w| {
        w.write_all(OCI_LAYOUT).map_err(|source| ExportError::Write { source })
    })?;
    write_dest_file(&dest.join("index.json"), |w| w.write_all(&index).map_err(|source| ExportError::Write { source }))
}

/// Exports a docker-archive tar file to `dest`.
pub fn export_docker(bundle: &ImageBundle, dest: &Path) -> Result<(), ExportError> {
    write_dest_file(dest, |w| write_docker_archive(bundle, w))
}

/// `type=oci`: an OCI image layout, as a tar file or a directory.
pub struct OciExporter {
    /// The tar file or directory.
    pub dest: PathBuf,
    /// Write a tar file (buildx's default) rather than a directory.
    pub tar: bool,
    /// `oci-mediatypes=false`: Docker schema-2 manifests and, for several
    /// platforms, a Docker manifest list.
    pub docker_media_types: bool,
}

impl Exporter for OciExporter {
    fn export(&self, input: &ExportInput<'_>) -> Result<(), ExportError> {
        input.printer.message(&format!("exporting to oci {}", self.dest.display()));
        let bundle = input.bundle();
        let bundle = if self.docker_media_types { bundle.with_docker_media_types()? } else { bundle };
        export_oci(&bundle, &self.dest, self.tar)
    }
}

/// `type=docker`: a docker-archive tar file, for `docker load`.
pub struct DockerExporter {
    /// The tar file.
    pub dest: PathBuf,
}

impl Exporter for DockerExporter {
    fn export(&self, input: &ExportInput<'_>) -> Result<(), ExportError> {
        if input.images.len() > 1 {
            return Err(ExportError::BadBundle("docker-archive output holds one platform; use `type=oci` for several"));
        }
        input.printer.message(&format!("exporting to docker {}", self.dest.display()));
        // `docker load` takes one image: attestations (and the index that
        // only they needed) stay out of the archive.
        let mut bundle = input.bundle();
        if !input.attestations.is_empty() {
            bundle.images.truncate(input.images.len());
            bundle.index = None;
            bundle.top_annotations.clear();
        }
        export_docker(&bundle, &self.dest)
    }
}

/// `--load`: the image streamed into the local Docker engine or podman
/// (see [`crate::engine`]).
pub struct LoadExporter;

impl Exporter for LoadExporter {
    fn export(&self, input: &ExportInput<'_>) -> Result<(), ExportError> {
        if input.images.len() > 1 {
            return Err(ExportError::BadBundle(
                "`--load` loads one platform's image; build one platform, or use `type=oci` for several",
            ));
        }
        let engine = crate::engine::Engine::detect().map_err(|e| ExportError::NoEngine(Box::new(e)))?;
        input.printer.message(&format!("loading image into {}", engine.describe()));
        let messages = engine
            .load(&input.bundle())
            .map_err(|source| ExportError::Load { engine: engine.describe(), source: Box::new(source) })?;
        for m in messages {
            input.printer.message(&m);
        }
        Ok(())
    }
}
