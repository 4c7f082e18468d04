//! The image commands over the local store, with docker's names, flags and
//! output: `tag`, `rmi`, `inspect`, `history`, `save`, `load`.
//!
//! Names are normalised as docker does (`busybox` is
//! `docker.io/library/busybox:latest`); an image ID (or a unique prefix of
//! one, with or without `sha256:`) works wherever a name does.

use std::io::{IsTerminal as _, Write as _};
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use rbuild_cache::oci::{
    ImageConfig, Index, LayerDescriptor, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST, Manifest,
    Platform, is_index,
};
use rbuild_cache::store::Store;
use serde_json::{Value, json};

use super::store_cmds::human_size;
use crate::cli::{HistoryArgs, InspectArgs, LoadArgs, RmiArgs, SaveArgs, SaveFormat, TagArgs};
use crate::export::{ImageBundle, PlatformImage, export_docker, export_oci, write_docker_archive, write_oci_tar};
use crate::registry::ImageRef;

fn open(root: &Path) -> Result<Store> {
    Store::open(root).with_context(|| format!("opening store `{}`", root.display()))
}

/// A stored image as a name resolves to it.
pub(crate) struct Resolved {
    /// The top-level document (manifest or index) digest.
    pub top: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The tag the name matched (`None`: matched by ID).
    pub tag: Option<String>,
}

/// Image ID: the config digest of a manifest, the digest of an index.
fn image_id(store: &Store, top: &str) -> Result<String> {
    let bytes = store.read_blob(top)?;
    if document_is_index(&bytes) {
        return Ok(top.to_string());
    }
    let m: Manifest = serde_json::from_slice(&bytes).with_context(|| format!("stored manifest `{top}`"))?;
    Ok(m.config.digest)
}

fn document_is_index(bytes: &[u8]) -> bool {
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    v["mediaType"].as_str().is_some_and(is_index) || v.get("manifests").is_some()
}

/// Docker's short form of a normalised name (`docker.io/library/a:1` -> `a:1`).
pub(crate) fn familiar(name: &str) -> String {
    let short = name.strip_prefix("docker.io/").unwrap_or(name);
    if name.starts_with("docker.io/") {
        short.strip_prefix("library/").unwrap_or(short).to_string()
    } else {
        short.into()
    }
}

/// Resolves a name or image ID to a stored image.
pub(crate) fn resolve(store: &Store, name: &str) -> Result<Resolved> {
    if let Ok(r) = ImageRef::parse(name) {
        let normalised = r.to_string();
        for candidate in [normalised.as_str(), name] {
            if let Some(top) = store.tag(candidate)? {
                let bytes = store.read_blob(&top)?;
                return Ok(Resolved { top, bytes, tag: Some(candidate.to_string()) });
            }
        }
    }
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    if !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut found: Vec<String> = Vec::new();
        for (_, top) in store.tags()? {
            let id = image_id(store, &top)?;
            let matches = [id.as_str(), top.as_str()].iter().any(|d| d.trim_start_matches("sha256:").starts_with(hex));
            if matches && !found.contains(&top) {
                found.push(top);
            }
        }
        match found.as_slice() {
            [top] => {
                let bytes = store.read_blob(top)?;
                return Ok(Resolved { top: top.clone(), bytes, tag: None });
            }
            [] => {}
            _ => bail!("image ID prefix `{hex}` is ambiguous: give more digits"),
        }
    }
    bail!("No such image: {name}")
}

/// Every tag pointing at `top`.
fn tags_of(store: &Store, top: &str) -> Result<Vec<String>> {
    Ok(store.tags()?.into_iter().filter(|(_, d)| d == top).map(|(n, _)| n).collect())
}

pub fn tag(root: &Path, args: &TagArgs) -> Result<i32> {
    let store = open(root)?;
    let src = resolve(&store, &args.source)?;
    let dst = ImageRef::parse(&args.target).with_context(|| format!("invalid image name `{}`", args.target))?;
    if dst.digest.is_some() {
        bail!("refusing to create a tag with a digest reference: `{}`", args.target);
    }
    store.set_tag(&dst.to_string(), &src.top)?;
    Ok(0)
}

pub fn rmi(root: &Path, args: &RmiArgs) -> Result<i32> {
    let store = open(root)?;
    let mut code = 0;
    for name in &args.names {
        if let Err(e) = rmi_one(&store, name, args.force) {
            eprintln!("Error response from store: {e:#}");
            code = 1;
        }
    }
    Ok(code)
}

fn rmi_one(store: &Store, name: &str, force: bool) -> Result<()> {
    let image = resolve(store, name)?;
    let untag = match &image.tag {
        Some(t) => vec![t.clone()],
        None => {
            let tags = tags_of(store, &image.top)?;
            if tags.len() > 1 && !force {
                bail!(
                    "conflict: unable to delete {name} (must be forced) - image is referenced in multiple \
                     repositories: {}",
                    tags.iter().map(|t| familiar(t)).collect::<Vec<_>>().join(", ")
                );
            }
            tags
        }
    };
    for t in untag {
        store.remove_tag(&t)?;
        println!("Untagged: {}", familiar(&t));
    }
    if tags_of(store, &image.top)?.is_empty() {
        // The data stays until `rbuild prune` (or the automatic GC) needs the space.
        println!("Deleted: {}", image_id(store, &image.top)?);
    }
    Ok(())
}

/// One platform's manifest and config of a stored image.
struct StoredPlatform {
    digest: String,
    manifest_bytes: Vec<u8>,
    manifest: Manifest,
    config_bytes: Vec<u8>,
    config: ImageConfig,
    platform: Option<Platform>,
}

fn platforms_of(store: &Store, image: &Resolved) -> Result<(Option<Index>, Vec<StoredPlatform>)> {
    let read_one = |digest: &str, bytes: Vec<u8>, platform: Option<Platform>| -> Result<StoredPlatform> {
        let manifest: Manifest =
            serde_json::from_slice(&bytes).with_context(|| format!("stored manifest `{digest}` is malformed"))?;
        let config_bytes = store.read_blob(&manifest.config.digest)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .with_context(|| format!("stored config `{}` is malformed", manifest.config.digest))?;
        Ok(StoredPlatform {
            digest: digest.to_string(),
            manifest_bytes: bytes,
            manifest,
            config_bytes,
            config,
            platform,
        })
    };
    if document_is_index(&image.bytes) {
        let index: Index = serde_json::from_slice(&image.bytes)
            .with_context(|| format!("stored index `{}` is malformed", image.top))?;
        let mut out = Vec::new();
        for d in &index.manifests {
            // Attestation manifests are not images of a platform.
            if d.platform.as_ref().is_some_and(|p| p.os == "unknown") {
                continue;
            }
            out.push(read_one(&d.digest, store.read_blob(&d.digest)?, d.platform.clone())?);
        }
        Ok((Some(index), out))
    } else {
        Ok((None, vec![read_one(&image.top, image.bytes.clone(), None)?]))
    }
}

fn platform_of(p: &StoredPlatform) -> Platform {
    p.platform.clone().unwrap_or_else(|| Platform {
        os: p.config.os.clone(),
        architecture: p.config.architecture.clone(),
        variant: p.config.variant.clone(),
    })
}

/// The platform's image of a multi-platform one: `--platform`, else the host's.
fn pick_platform<'a>(platforms: &'a [StoredPlatform], wanted: Option<&str>, name: &str) -> Result<&'a StoredPlatform> {
    if platforms.len() == 1 && wanted.is_none() {
        return Ok(&platforms[0]);
    }
    let want = match wanted {
        Some(w) => Platform::try_parse(w)?,
        None => Platform::host(),
    };
    platforms.iter().find(|p| platform_of(p) == want).with_context(|| {
        format!(
            "image `{name}` has no `{want}` image (it has {}); choose one with `--platform`",
            platforms.iter().map(|p| platform_of(p).to_string()).collect::<Vec<_>>().join(", ")
        )
    })
}

pub fn inspect(root: &Path, args: &InspectArgs) -> Result<i32> {
    let store = open(root)?;
    if args.raw {
        let [name] = args.names.as_slice() else { bail!("`--raw` prints one image's document: give one name") };
        let image = resolve(&store, name)?;
        std::io::stdout().write_all(&image.bytes)?;
        return Ok(0);
    }
    let mut out = Vec::new();
    let mut code = 0;
    for name in &args.names {
        match inspect_one(&store, name) {
            Ok(v) => out.push(v),
            Err(e) => {
                eprintln!("Error: {e:#}");
                code = 1;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(code)
}

fn parsed(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

/// `docker image inspect`'s fields, plus the documents themselves (the
/// manifest or index, and per platform its manifest and config).
fn inspect_one(store: &Store, name: &str) -> Result<Value> {
    let image = resolve(store, name)?;
    let (index, platforms) = platforms_of(store, &image)?;
    let tags: Vec<String> = tags_of(store, &image.top)?.iter().map(|t| familiar(t)).collect();
    let per_platform = |p: &StoredPlatform| {
        json!({
            "Platform": platform_of(p).to_string(),
            "Digest": p.digest,
            "Manifest": parsed(&p.manifest_bytes),
            "Config": parsed(&p.config_bytes),
        })
    };
    let media_type = parsed(&image.bytes)["mediaType"].clone();
    let mut v = json!({
        "Id": image_id(store, &image.top)?,
        "RepoTags": tags,
        "Digest": image.top,
        "MediaType": media_type,
    });
    if index.is_some() {
        v["Index"] = parsed(&image.bytes);
        v["Platforms"] = Value::Array(platforms.iter().map(per_platform).collect());
    } else {
        let p = &platforms[0];
        let size: u64 = p.manifest.layers.iter().map(|l| l.size).sum();
        v["Created"] = json!(p.config.created);
        v["Author"] = json!(p.config.author);
        v["Architecture"] = json!(p.config.architecture);
        if let Some(variant) = &p.config.variant {
            v["Variant"] = json!(variant);
        }
        v["Os"] = json!(p.config.os);
        v["Size"] = json!(size);
        v["Config"] = parsed(&p.config_bytes)["config"].clone();
        v["RootFS"] = json!({"Type": "layers", "Layers": p.config.rootfs.diff_ids});
        v["Manifest"] = parsed(&p.manifest_bytes);
        v["ImageConfig"] = parsed(&p.config_bytes);
    }
    Ok(v)
}

/// docker's `units.HumanDuration`.
fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match () {
        _ if s < 1 => "Less than a second".into(),
        _ if s == 1 => "1 second".into(),
        _ if s < 60 => format!("{s} seconds"),
        _ if m == 1 => "About a minute".into(),
        _ if m < 60 => format!("{m} minutes"),
        _ if h == 1 => "About an hour".into(),
        _ if h < 48 => format!("{h} hours"),
        _ if h < 24 * 7 * 2 => format!("{d} days"),
        _ if h < 24 * 30 * 2 => format!("{} weeks", d / 7),
        _ if h < 24 * 365 * 2 => format!("{} months", d / 30),
        _ => format!("{} years", d / 365),
    }
}

fn created_since(created: Option<&str>, human: bool) -> String {
    let Some(c) = created else { return "N/A".into() };
    if !human {
        return c.to_string();
    }
    match chrono::DateTime::parse_from_rfc3339(c) {
        Ok(t) => format!("{} ago", human_duration(chrono::Utc::now().timestamp() - t.timestamp())),
        Err(_) => c.to_string(),
    }
}

/// docker's table writer: each column padded to its widest cell plus 3,
/// at least 20 wide (`tabwriter.NewWriter(out, 20, 1, 3, ' ', 0)`).
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .map(|w| (w + 3).max(20))
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}", w = width[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max - 1).collect();
    t.push('…');
    t
}

pub fn history(root: &Path, args: &HistoryArgs) -> Result<i32> {
    let store = open(root)?;
    let image = resolve(&store, &args.name)?;
    let (_, platforms) = platforms_of(&store, &image)?;
    let p = pick_platform(&platforms, args.platform.as_deref(), &args.name)?;
    let mut layers = p.manifest.layers.iter();
    let mut rows = Vec::new();
    for h in &p.config.history {
        let size = if h.empty_layer { 0 } else { layers.next().map_or(0, |l| l.size) };
        rows.push((h, size));
    }
    let top_id = image_id(&store, &p.digest)?;
    let short_id: String = top_id.trim_start_matches("sha256:").chars().take(12).collect();
    let mut table_rows = vec![["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"].map(String::from).to_vec()];
    let mut out = Vec::new();
    for (i, (h, size)) in rows.iter().rev().enumerate() {
        let id =
            if i == 0 { if args.no_trunc { top_id.clone() } else { short_id.clone() } } else { "<missing>".into() };
        // Docker shows a history line as written, with newlines and tabs collapsed.
        let by: String = h.created_by.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let by = if args.no_trunc { by } else { ellipsis(&by, 45) };
        let size = if args.human { human_size(*size) } else { size.to_string() };
        if args.quiet {
            out.push(id);
            continue;
        }
        table_rows.push(vec![id, created_since(h.created.as_deref(), args.human), by, size, h.comment.clone()]);
    }
    if args.quiet {
        for id in out {
            println!("{id}");
        }
    } else {
        print!("{}", table(&table_rows));
    }
    Ok(0)
}

/// The bundle `save` writes for `names`: one image (several names of it).
fn save_bundle(store: &Store, names: &[String], format: SaveFormat, platform: Option<&str>) -> Result<ImageBundle> {
    let mut resolved: Option<Resolved> = None;
    let mut tags = Vec::new();
    for name in names {
        let r = resolve(store, name)?;
        if let Some(t) = &r.tag {
            tags.push(t.clone());
        }
        match &resolved {
            Some(first) if first.top != r.top => bail!(
                "`{name}` is a different image from `{}`: rbuild saves one image (under any number of names) per \
                 archive",
                names[0]
            ),
            Some(_) => {}
            None => resolved = Some(r),
        }
    }
    let mut image = resolved.context("name at least one image to save")?;
    // Layers the store keeps deferred are compressed (once), as a push does.
    let printer = crate::progress::Printer::new(crate::progress::Mode::Plain);
    let bytes = crate::export::materialize(store, &image.bytes, &crate::export::PUSH_COMPRESSION, &printer)?;
    if bytes != image.bytes {
        image = Resolved { top: rbuild_cache::oci::sha256_digest(&bytes), bytes, tag: image.tag };
    }
    let (index, platforms) = platforms_of(store, &image)?;
    let to_image = |p: &StoredPlatform| PlatformImage {
        manifest: p.manifest_bytes.clone(),
        config: p.config_bytes.clone(),
        layers: p
            .manifest
            .layers
            .iter()
            .zip(p.config.rootfs.diff_ids.iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(l, diff)| {
                let d = LayerDescriptor {
                    digest: l.digest.clone(),
                    diff_id: diff.cloned().unwrap_or_default(),
                    size: l.size,
                    media_type: l.media_type.clone(),
                };
                (d, store.blob_path(&l.digest))
            })
            .collect(),
    };
    let docker_types = |bytes: &[u8]| {
        let t = parsed(bytes)["mediaType"].as_str().map(str::to_string).unwrap_or_default();
        t == MEDIA_TYPE_DOCKER_MANIFEST || t == MEDIA_TYPE_DOCKER_MANIFEST_LIST
    };
    let single = |p: &StoredPlatform| ImageBundle {
        images: vec![to_image(p)],
        index: None,
        names: tags.clone(),
        docker_media_types: docker_types(&p.manifest_bytes),
        top_annotations: Default::default(),
    };
    Ok(match (format, index) {
        (SaveFormat::Oci, Some(_)) if platform.is_none() => ImageBundle {
            images: platforms.iter().map(to_image).collect(),
            index: Some(image.bytes.clone()),
            names: tags.clone(),
            docker_media_types: docker_types(&image.bytes),
            top_annotations: Default::default(),
        },
        _ => single(pick_platform(&platforms, platform, &names[0])?),
    })
}

pub fn save(root: &Path, args: &SaveArgs) -> Result<i32> {
    let store = open(root)?;
    let bundle = save_bundle(&store, &args.names, args.format, args.platform.as_deref())?;
    match &args.output {
        Some(path) => match args.format {
            SaveFormat::Docker => export_docker(&bundle, path)?,
            SaveFormat::Oci => export_oci(&bundle, path, true)?,
        },
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("cowardly refusing to save to a terminal: use `-o FILE` or redirect standard output");
            }
            let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            match args.format {
                SaveFormat::Docker => write_docker_archive(&bundle, &mut w)?,
                SaveFormat::Oci => write_oci_tar(&bundle, &mut w)?,
            }
            w.flush()?;
        }
    }
    Ok(0)
}

pub fn load(root: &Path, args: &LoadArgs) -> Result<i32> {
    let store = open(root)?;
    let loaded = match &args.input {
        Some(path) => {
            let f = std::fs::File::open(path).with_context(|| format!("opening `{}`", path.display()))?;
            crate::import::import_archive(&store, std::io::BufReader::with_capacity(1 << 20, f))
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                bail!("requested load from stdin, but stdin is empty: use `-i FILE` or redirect standard input");
            }
            crate::import::import_archive(&store, std::io::BufReader::with_capacity(1 << 20, stdin.lock()))
        }
    }
    .with_context(|| {
        format!("loading {}", args.input.as_ref().map_or("standard input".into(), |p| format!("`{}`", p.display())))
    })?;
    let mut seen = std::collections::BTreeSet::new();
    for image in loaded {
        if image.names.is_empty() && seen.insert(image.image_id.clone()) {
            println!("Loaded image ID: {}", image.image_id);
        }
        for n in &image.names {
            println!("Loaded image: {}", familiar(n));
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(30), "30 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(10 * 86400), "10 days");
        assert_eq!(human_duration(56 * 365 * 86400), "56 years");
    }

    #[test]
    fn familiar_names() {
        assert_eq!(familiar("docker.io/library/busybox:latest"), "busybox:latest");
        assert_eq!(familiar("docker.io/me/app:1"), "me/app:1");
        assert_eq!(familiar("localhost:5000/app:1"), "localhost:5000/app:1");
    }

    #[test]
    fn table_pads_like_tabwriter() {
        let t = table(&[vec!["A".into(), "B".into()], vec!["long-value".into(), "x".into()]]);
        assert_eq!(t, format!("{:<20}B\n{:<20}x\n", "A", "long-value"));
    }
}
