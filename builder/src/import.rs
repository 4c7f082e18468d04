//! `rbuild load`: a docker-archive (either `docker save` format: the legacy
//! one with `manifest.json` and `<id>/layer.tar`, or Docker 25+'s OCI
//! layout plus `manifest.json`) or an OCI archive, read into the store.
//!
//! An archive is untrusted input. It is read in one streaming pass: each
//! blob goes straight into the store through a hashing writer (never whole
//! into memory) and a blob named `blobs/sha256/<hex>` must hash to its name.
//! Only regular files and directories are accepted (a symlink or hard link
//! could point a "blob" at any file of the machine), member paths must stay
//! inside the archive, and the JSON documents (index, manifests, configs,
//! `manifest.json`) are bounded in size. Paths inside `manifest.json` are
//! only looked up among the members already read, never opened on disk.
//! Every document an image needs must be present with the size its
//! descriptor states before anything is tagged.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Component, Path};

use rbuild_cache::oci::{
    Descriptor, ImageConfig, Index, LayerDescriptor, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR,
    MEDIA_TYPE_LAYER_ZSTD, Manifest, is_index, sha256_digest,
};
use rbuild_cache::store::{Lease, Store, StoreError};
use serde::Deserialize;

use crate::registry::ImageRef;

/// Largest JSON document accepted (containerd's manifest limit).
pub const MAX_DOCUMENT: u64 = 4 << 20;
/// Largest total of all JSON documents of one archive held in memory.
const MAX_DOCUMENTS_TOTAL: u64 = 64 << 20;
/// Deepest nesting of indexes accepted.
const MAX_INDEX_DEPTH: usize = 4;

const ANN_CONTAINERD_NAME: &str = "io.containerd.image.name";
const ANN_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Why an archive could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Reading the tar stream failed (truncated or not a tar).
    #[error("cannot read the archive")]
    Read {
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A member path leaves the archive (`..`, absolute).
    #[error("archive member `{path}` points outside the archive")]
    PathTraversal {
        /// The member path.
        path: String,
    },
    /// A member is a symlink, hard link or device.
    #[error("archive member `{path}` is a {kind}: only regular files and directories are accepted")]
    NotRegular {
        /// The member path.
        path: String,
        /// What it is.
        kind: &'static str,
    },
    /// A member under `blobs/` is not `blobs/sha256/<64 hex digits>`.
    #[error("archive member `{path}` is not a blob name (`blobs/sha256/<64 lowercase hex digits>`)")]
    BadBlobName {
        /// The member path.
        path: String,
    },
    /// A blob's content does not hash to its name.
    #[error("blob `{path}` does not match its digest: its content hashes to `{actual}`")]
    WrongDigest {
        /// The member path.
        path: String,
        /// The digest of its content.
        actual: String,
    },
    /// A JSON document is bigger than [`MAX_DOCUMENT`].
    #[error("`{path}` is {size} bytes, larger than the {MAX_DOCUMENT}-byte limit for a JSON document")]
    DocumentTooLarge {
        /// The member path or digest.
        path: String,
        /// Its size.
        size: u64,
    },
    /// The documents together are too big.
    #[error("the archive's JSON documents together exceed {MAX_DOCUMENTS_TOTAL} bytes")]
    DocumentsTooLarge,
    /// A JSON document does not parse.
    #[error("`{path}` is not a valid {what}")]
    BadJson {
        /// The member path or digest.
        path: String,
        /// What it should be.
        what: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Neither `index.json` nor `manifest.json`.
    #[error("not an image archive: it has neither `index.json` (OCI) nor `manifest.json` (docker)")]
    NotAnArchive,
    /// The archive lists no image.
    #[error("the archive lists no image")]
    Empty,
    /// A document or layer the images need is not in the archive.
    #[error("`{what}` is referenced but not in the archive")]
    Missing {
        /// The path or digest.
        what: String,
    },
    /// A blob's size disagrees with its descriptor.
    #[error("blob `{digest}` is {actual} bytes, its descriptor says {expected}")]
    WrongSize {
        /// The digest.
        digest: String,
        /// The descriptor's size.
        expected: u64,
        /// The blob's size.
        actual: u64,
    },
    /// Indexes nested deeper than [`MAX_INDEX_DEPTH`].
    #[error("image indexes nested more than {MAX_INDEX_DEPTH} deep")]
    TooDeep,
    /// A legacy archive's layer count disagrees with its config's diff ids,
    /// or an uncompressed layer does not hash to its diff id.
    #[error("image `{config}`: {reason}")]
    DiffIds {
        /// The config path.
        config: String,
        /// What is wrong.
        reason: String,
    },
    /// A name in the archive is not a valid image reference.
    #[error("the archive names the image `{name}`, which is not a valid reference")]
    BadName {
        /// The name.
        name: String,
    },
    /// Writing a member into the store failed.
    #[error("cannot write an archive member into the store")]
    WriteBlob {
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One image the archive held, now in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The top-level document's digest (manifest or index) the names point at.
    pub digest: String,
    /// The image ID (config digest; the index digest for an index).
    pub image_id: String,
    /// The normalised names it was tagged with (may be empty).
    pub names: Vec<String>,
}

/// A regular member that went into the store.
#[derive(Debug, Clone)]
struct StoredMember {
    digest: String,
    size: u64,
    /// The first bytes, to tell a legacy layer's compression.
    magic: [u8; 4],
}

#[derive(Default)]
struct Members {
    /// `blobs/sha256/<hex>` members by digest.
    blobs: BTreeMap<String, u64>,
    /// Other members (legacy layers) by path.
    files: BTreeMap<String, StoredMember>,
    /// JSON documents by path.
    docs: BTreeMap<String, Vec<u8>>,
    /// Symlinks outside `blobs/` (skopeo's and docker's legacy archives link
    /// `<id>/layer.tar` to the layer file), resolved inside the archive.
    links: BTreeMap<String, String>,
    docs_total: u64,
}

/// Reads an archive into the store and tags its images; returns them.
pub fn import_archive(store: &Store, reader: impl Read) -> Result<Vec<Loaded>, ImportError> {
    let lease = store.lease()?;
    let members = read_members(store, &lease, reader)?;
    let images = if let Some(index) = members.docs.get("index.json") {
        let mut images = oci_images(store, &members, index)?;
        // Docker 25+'s archive: `manifest.json` carries the short names.
        if let Some(mj) = members.docs.get("manifest.json") {
            add_repo_tags(mj, &mut images)?;
        }
        images
    } else if let Some(mj) = members.docs.get("manifest.json") {
        legacy_images(store, &lease, &members, mj)?
    } else {
        return Err(ImportError::NotAnArchive);
    };
    if images.is_empty() {
        return Err(ImportError::Empty);
    }
    for image in &images {
        for name in &image.names {
            store.set_tag(name, &image.digest)?;
        }
    }
    Ok(images)
}

fn read_err(source: io::Error) -> ImportError {
    ImportError::Read { source }
}

/// The member path, normalised (no `./`), or a traversal error.
fn member_path(raw: &Path) -> Result<String, ImportError> {
    let shown = raw.to_string_lossy().into_owned();
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().ok_or(ImportError::PathTraversal { path: shown.clone() })?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ImportError::PathTraversal { path: shown });
            }
        }
    }
    Ok(parts.join("/"))
}

/// Where a symlink member points, as a member path: resolved lexically
/// against the link's directory, never leaving the archive.
fn resolve_link(link: &str, target: &Path) -> Result<String, ImportError> {
    let escape = || ImportError::PathTraversal { path: format!("{link} -> {}", target.display()) };
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for c in target.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().ok_or_else(escape)?),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop().ok_or_else(escape)?;
            }
            Component::RootDir | Component::Prefix(_) => return Err(escape()),
        }
    }
    Ok(parts.join("/"))
}

fn is_document(path: &str) -> bool {
    matches!(path, "index.json" | "manifest.json" | "repositories" | "oci-layout")
        || (!path.contains('/') && path.ends_with(".json"))
}

fn read_members(store: &Store, lease: &Lease, reader: impl Read) -> Result<Members, ImportError> {
    let mut archive = tar::Archive::new(reader);
    let mut members = Members::default();
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw = entry.path().map_err(read_err)?.into_owned();
        let path = member_path(&raw)?;
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => None,
            tar::EntryType::Directory => continue,
            // Extended headers the tar crate does not fold into the next entry.
            tar::EntryType::XGlobalHeader => continue,
            tar::EntryType::Symlink => Some("symlink"),
            tar::EntryType::Link => Some("hard link"),
            tar::EntryType::Char | tar::EntryType::Block => Some("device"),
            tar::EntryType::Fifo => Some("fifo"),
            _ => Some("special file"),
        };
        if kind == Some("symlink") && !path.starts_with("blobs/") {
            let target = entry.link_name().map_err(read_err)?.unwrap_or_default().into_owned();
            members.links.insert(path.clone(), resolve_link(&path, &target)?);
            continue;
        }
        if let Some(kind) = kind {
            return Err(ImportError::NotRegular { path, kind });
        }
        let size = entry.size();
        if let Some(name) = path.strip_prefix("blobs/") {
            let hex = name
                .strip_prefix("sha256/")
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            let Some(hex) = hex else {
                return Err(ImportError::BadBlobName { path });
            };
            let expected = format!("sha256:{hex}");
            let stored = store_member(store, &mut entry)?;
            if stored.digest != expected {
                return Err(ImportError::WrongDigest { path, actual: stored.digest });
            }
            lease.add_blob(&stored.digest)?;
            members.blobs.insert(stored.digest, stored.size);
        } else if is_document(&path) {
            if size > MAX_DOCUMENT {
                return Err(ImportError::DocumentTooLarge { path, size });
            }
            members.docs_total += size;
            if members.docs_total > MAX_DOCUMENTS_TOTAL {
                return Err(ImportError::DocumentsTooLarge);
            }
            let mut bytes = Vec::with_capacity(size as usize);
            (&mut entry).take(MAX_DOCUMENT + 1).read_to_end(&mut bytes).map_err(read_err)?;
            members.docs.insert(path, bytes);
        } else if !path.ends_with("/VERSION") && !path.ends_with("/json") {
            // A layer of a legacy archive: `<id>/layer.tar` as docker wrote
            // them, `<hex>.tar` as skopeo does. (`<id>/VERSION` and
            // `<id>/json` are docker v1 metadata nobody needs.)
            let stored = store_member(store, &mut entry)?;
            lease.add_blob(&stored.digest)?;
            members.files.insert(path, stored);
        }
    }
    Ok(members)
}

/// Streams one member into the store.
fn store_member(store: &Store, entry: &mut impl Read) -> Result<StoredMember, ImportError> {
    let mut w = store.blob_writer()?;
    let mut magic = [0u8; 4];
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = entry.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        if size < 4 {
            let take = (4 - size as usize).min(n);
            magic[size as usize..size as usize + take].copy_from_slice(&buf[..take]);
        }
        size += n as u64;
        w.write_all(&buf[..n]).map_err(|source| ImportError::WriteBlob { source })?;
    }
    let digest = w.finish()?;
    Ok(StoredMember { digest, size, magic })
}

/// A blob's bytes, once checked against its descriptor.
fn document(store: &Store, members: &Members, d: &Descriptor) -> Result<Vec<u8>, ImportError> {
    if d.size > MAX_DOCUMENT {
        return Err(ImportError::DocumentTooLarge { path: d.digest.clone(), size: d.size });
    }
    check_blob(members, d)?;
    Ok(store.read_blob(&d.digest)?)
}

/// The blob is in the archive with the right size. (One already in the
/// store does not count: an archive must be whole, as for `docker load`.)
fn check_blob(members: &Members, d: &Descriptor) -> Result<(), ImportError> {
    let actual = *members.blobs.get(&d.digest).ok_or_else(|| ImportError::Missing { what: d.digest.clone() })?;
    if actual != d.size {
        return Err(ImportError::WrongSize { digest: d.digest.clone(), expected: d.size, actual });
    }
    Ok(())
}

fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8], path: &str, what: &'static str) -> Result<T, ImportError> {
    serde_json::from_slice(bytes).map_err(|source| ImportError::BadJson { path: path.to_string(), what, source })
}

/// Checks a manifest or index and everything under it; returns the image ID.
fn check_tree(store: &Store, members: &Members, d: &Descriptor, depth: usize) -> Result<String, ImportError> {
    if depth > MAX_INDEX_DEPTH {
        return Err(ImportError::TooDeep);
    }
    let bytes = document(store, members, d)?;
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: String,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = parse(&bytes, &d.digest, "manifest or index")?;
    if is_index(&d.media_type) || is_index(&probe.media_type) || probe.manifests.is_some() {
        let index: Index = parse(&bytes, &d.digest, "image index")?;
        for child in &index.manifests {
            check_tree(store, members, child, depth + 1)?;
        }
        return Ok(d.digest.clone());
    }
    let manifest: Manifest = parse(&bytes, &d.digest, "image manifest")?;
    let config = document(store, members, &manifest.config)?;
    let _: ImageConfig = parse(&config, &manifest.config.digest, "image config")?;
    for layer in &manifest.layers {
        check_blob(members, layer)?;
    }
    Ok(manifest.config.digest)
}

fn normalised(name: &str) -> Result<String, ImportError> {
    ImageRef::parse(name).map(|r| r.to_string()).map_err(|_| ImportError::BadName { name: name.to_string() })
}

fn oci_images(store: &Store, members: &Members, index: &[u8]) -> Result<Vec<Loaded>, ImportError> {
    let index: Index = parse(index, "index.json", "OCI index")?;
    let mut out: Vec<Loaded> = Vec::new();
    for d in &index.manifests {
        let image_id = check_tree(store, members, d, 1)?;
        // A full name, or a ref.name that is one (`app:1.0`; a bare `latest`
        // is only a tag and names nothing).
        let name = d
            .annotations
            .get(ANN_CONTAINERD_NAME)
            .or_else(|| d.annotations.get(ANN_REF_NAME).filter(|n| n.contains(['/', ':']) && !n.starts_with(':')));
        let names = name.map(|n| normalised(n)).transpose()?.into_iter().collect::<Vec<_>>();
        match out.iter_mut().find(|l| l.digest == d.digest) {
            Some(l) => {
                for n in names {
                    if !l.names.contains(&n) {
                        l.names.push(n);
                    }
                }
            }
            None => out.push(Loaded { digest: d.digest.clone(), image_id, names }),
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Names from `manifest.json`'s `RepoTags` onto the OCI images with that config.
fn add_repo_tags(mj: &[u8], images: &mut [Loaded]) -> Result<(), ImportError> {
    let entries: Vec<DockerManifestEntry> = parse(mj, "manifest.json", "docker manifest.json")?;
    for e in entries {
        let Some(hex) = e.config.strip_prefix("blobs/sha256/") else { continue };
        let config = format!("sha256:{hex}");
        if let Some(img) = images.iter_mut().find(|i| i.image_id == config) {
            for t in e.repo_tags.unwrap_or_default() {
                let n = normalised(&t)?;
                if !img.names.contains(&n) {
                    img.names.push(n);
                }
            }
        }
    }
    Ok(())
}

/// The member a `manifest.json` path names: a document, a blob or a layer.
fn legacy_member<'m>(members: &'m Members, path: &str) -> Result<LegacyMember<'m>, ImportError> {
    let missing = || ImportError::Missing { what: path.to_string() };
    let mut clean = member_path(Path::new(path))?;
    // Links to links are followed a few times, never in a loop.
    for _ in 0..8 {
        match members.links.get(&clean) {
            Some(t) => clean = t.clone(),
            None => break,
        }
    }
    if let Some(bytes) = members.docs.get(&clean) {
        return Ok(LegacyMember::Doc(bytes));
    }
    if let Some(f) = members.files.get(&clean) {
        return Ok(LegacyMember::File(f));
    }
    if let Some(hex) = clean.strip_prefix("blobs/sha256/") {
        let digest = format!("sha256:{hex}");
        if let Some(size) = members.blobs.get(&digest) {
            return Ok(LegacyMember::Blob(digest, *size));
        }
    }
    Err(missing())
}

enum LegacyMember<'m> {
    Doc(&'m [u8]),
    File(&'m StoredMember),
    Blob(String, u64),
}

fn layer_media_type(magic: &[u8; 4]) -> &'static str {
    match magic {
        [0x1f, 0x8b, _, _] => MEDIA_TYPE_LAYER_GZIP,
        [0x28, 0xb5, 0x2f, 0xfd] => MEDIA_TYPE_LAYER_ZSTD,
        _ => MEDIA_TYPE_LAYER_TAR,
    }
}

/// Images of a pre-Docker-25 archive: an OCI manifest is written for each.
fn legacy_images(store: &Store, lease: &Lease, members: &Members, mj: &[u8]) -> Result<Vec<Loaded>, ImportError> {
    let entries: Vec<DockerManifestEntry> = parse(mj, "manifest.json", "docker manifest.json")?;
    let mut out = Vec::new();
    for e in entries {
        let config = match legacy_member(members, &e.config)? {
            LegacyMember::Doc(b) => b.to_vec(),
            LegacyMember::Blob(digest, size) => {
                document(store, members, &Descriptor { digest, size, ..blank_descriptor() })?
            }
            LegacyMember::File(_) => return Err(ImportError::Missing { what: e.config.clone() }),
        };
        let parsed: ImageConfig = parse(&config, &e.config, "image config")?;
        let diff_ids = &parsed.rootfs.diff_ids;
        if diff_ids.len() != e.layers.len() {
            return Err(ImportError::DiffIds {
                config: e.config.clone(),
                reason: format!("{} layers but {} diff ids", e.layers.len(), diff_ids.len()),
            });
        }
        let mut layers = Vec::new();
        for (path, diff_id) in e.layers.iter().zip(diff_ids) {
            let (digest, size, media_type) = match legacy_member(members, path)? {
                LegacyMember::File(f) => (f.digest.clone(), f.size, layer_media_type(&f.magic)),
                LegacyMember::Blob(digest, size) => {
                    let mut magic = [0u8; 4];
                    let mut f = std::fs::File::open(store.blob_path(&digest))
                        .map_err(|source| StoreError::Read { path: store.blob_path(&digest), source })?;
                    let _ = f.read(&mut magic);
                    (digest, size, layer_media_type(&magic))
                }
                LegacyMember::Doc(_) => return Err(ImportError::Missing { what: path.clone() }),
            };
            if media_type == MEDIA_TYPE_LAYER_TAR && &digest != diff_id {
                return Err(ImportError::DiffIds {
                    config: e.config.clone(),
                    reason: format!("layer `{path}` hashes to `{digest}`, the config says `{diff_id}`"),
                });
            }
            layers.push(LayerDescriptor { digest, diff_id: diff_id.clone(), size, media_type: media_type.into() });
        }
        let config_digest = store.write_blob(&config)?;
        lease.add_blob(&config_digest)?;
        let (manifest, manifest_digest, _) = crate::export::build_manifest(&config, &layers, BTreeMap::new());
        let written = store.write_blob(&manifest)?;
        debug_assert_eq!(written, manifest_digest);
        lease.add_blob(&written)?;
        let names = e.repo_tags.unwrap_or_default().iter().map(|t| normalised(t)).collect::<Result<Vec<_>, _>>()?;
        out.push(Loaded { digest: manifest_digest, image_id: sha256_digest(&config), names });
    }
    Ok(out)
}

fn blank_descriptor() -> Descriptor {
    Descriptor {
        media_type: String::new(),
        digest: String::new(),
        size: 0,
        annotations: BTreeMap::new(),
        platform: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths_stay_inside() {
        assert_eq!(member_path(Path::new("./blobs/sha256/ab")).unwrap(), "blobs/sha256/ab");
        assert_eq!(member_path(Path::new("index.json")).unwrap(), "index.json");
        for bad in ["../x", "/etc/passwd", "blobs/../../x"] {
            assert!(matches!(member_path(Path::new(bad)), Err(ImportError::PathTraversal { .. })), "{bad}");
        }
        assert_eq!(resolve_link("id/layer.tar", Path::new("../abc.tar")).unwrap(), "abc.tar");
        assert_eq!(resolve_link("a/b/layer.tar", Path::new("./c.tar")).unwrap(), "a/b/c.tar");
        for bad in ["../../x", "/etc/shadow", "../../../etc/shadow"] {
            assert!(resolve_link("id/layer.tar", Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn legacy_layer_compression_is_sniffed() {
        assert_eq!(layer_media_type(&[0x1f, 0x8b, 8, 0]), MEDIA_TYPE_LAYER_GZIP);
        assert_eq!(layer_media_type(&[0x28, 0xb5, 0x2f, 0xfd]), MEDIA_TYPE_LAYER_ZSTD);
        assert_eq!(layer_media_type(b"bin/"), MEDIA_TYPE_LAYER_TAR);
    }
}
