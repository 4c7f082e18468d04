//! `-o/--output` as buildx spells it, and writing every requested output.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use rbuild_cache::store::Store;
use rbuild_solver::graph::Platform;
use tokio::runtime::Runtime;

use super::assemble::BuiltImage;
use crate::cli::BuildArgs;
use crate::export::{self, ImageBundle, PlatformImage};
use crate::progress::Printer;
use crate::registry::{ImageRef, RegistryClient};

/// One `--output`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// `image`, `registry`, `oci`, `docker`, `local`, `tar`.
    pub kind: String,
    /// Other attributes (`dest`, `name`, `push`, `tar`, `compression`...).
    pub attrs: BTreeMap<String, String>,
}

/// Parses `--output` values plus `--push`/`--load`; no output means the
/// local store (`type=image`).
pub fn parse_outputs(args: &BuildArgs) -> Result<Vec<Output>> {
    let mut outputs = Vec::new();
    for spec in &args.output {
        outputs.push(parse_output(spec)?);
    }
    if args.push {
        outputs.push(Output { kind: "registry".into(), attrs: BTreeMap::new() });
    }
    if args.load {
        bail!("`--load` needs a Docker daemon; use `-o type=docker,dest=FILE` and `docker load -i FILE`");
    }
    if outputs.is_empty() {
        outputs.push(Output { kind: "image".into(), attrs: BTreeMap::new() });
    }
    Ok(outputs)
}

fn parse_output(spec: &str) -> Result<Output> {
    // `-o DIR` is `type=local,dest=DIR`; `-o -` is a tar on stdout.
    if !spec.contains('=') {
        let kind = if spec == "-" { "tar" } else { "local" };
        return Ok(Output { kind: kind.into(), attrs: [("dest".to_string(), spec.to_string())].into() });
    }
    let mut kind = None;
    let mut attrs = BTreeMap::new();
    for part in spec.split(',') {
        let (k, v) =
            part.split_once('=').with_context(|| format!("invalid `--output {spec}`: `{part}` is not KEY=VALUE"))?;
        if k == "type" {
            kind = Some(v.to_string());
        } else {
            attrs.insert(k.to_string(), v.to_string());
        }
    }
    let kind = kind.with_context(|| format!("invalid `--output {spec}`: missing `type=`"))?;
    match kind.as_str() {
        "image" | "registry" => {}
        "oci" | "docker" | "local" | "tar" => {
            if !attrs.contains_key("dest") {
                bail!("`--output type={kind}` needs `dest=PATH`");
            }
        }
        other => bail!("unknown output type `{other}`: use image, registry, oci, docker, local or tar"),
    }
    Ok(Output { kind, attrs })
}

/// What the outputs produced, for `--iidfile` and `--metadata-file`.
pub struct ExportResult {
    /// Image ID (config digest, or the index digest for several platforms).
    pub image_id: String,
    /// buildx-style metadata.
    pub metadata: serde_json::Value,
}

/// Writes every output for the built images.
pub fn export_all(
    store: &Store,
    runtime: &Runtime,
    registry: &RegistryClient,
    images: &[BuiltImage],
    outputs: &[Output],
    args: &BuildArgs,
    printer: &Printer,
) -> Result<ExportResult> {
    let multi = images.len() > 1;
    let index = multi.then(|| {
        let entries: Vec<(Vec<u8>, Platform)> =
            images.iter().map(|i| (i.manifest.clone(), i.platform.clone())).collect();
        export::build_index(&entries)
    });
    let (top_digest, top_media_type) = match &index {
        Some(ix) => (store.write_blob(ix)?, "application/vnd.oci.image.index.v1+json"),
        None => (images[0].manifest_digest.clone(), "application/vnd.oci.image.manifest.v1+json"),
    };
    let mut names: Vec<String> = args.tags.clone();
    for o in outputs {
        if let Some(n) = o.attrs.get("name") {
            names.extend(n.split(',').map(str::to_string));
        }
    }
    let normalized: Vec<String> = names
        .iter()
        .map(|n| ImageRef::parse(n).map(|r| r.to_string()).map_err(|e| anyhow::anyhow!("invalid tag `{n}`: {e}")))
        .collect::<Result<_>>()?;

    for o in outputs {
        match o.kind.as_str() {
            "image" => {
                for n in &normalized {
                    store.set_tag(n, &top_digest)?;
                }
                let push = o.attrs.get("push").map(|v| v == "true").unwrap_or(false);
                if push {
                    push_all(runtime, registry, images, index.as_deref(), &normalized, printer)?;
                }
            }
            "registry" => {
                for n in &normalized {
                    store.set_tag(n, &top_digest)?;
                }
                push_all(runtime, registry, images, index.as_deref(), &normalized, printer)?;
            }
            "oci" | "docker" => {
                let dest = PathBuf::from(&o.attrs["dest"]);
                if multi && o.kind == "docker" {
                    bail!("docker-archive output holds one platform; use `type=oci` for several");
                }
                let bundle = ImageBundle {
                    images: images
                        .iter()
                        .map(|i| PlatformImage {
                            manifest: i.manifest.clone(),
                            config: i.config.clone(),
                            layers: i.layers.clone(),
                        })
                        .collect(),
                    index: index.clone(),
                    names: names.clone(),
                };
                printer.message(&format!("exporting to {} {}", o.kind, dest.display()));
                if o.kind == "oci" {
                    let tar = o.attrs.get("tar").map(|v| v != "false").unwrap_or(true);
                    export::export_oci(&bundle, &dest, tar)?;
                } else {
                    export::export_docker(&bundle, &dest)?;
                }
            }
            "local" | "tar" => {
                let dest = PathBuf::from(&o.attrs["dest"]);
                for image in images {
                    let target =
                        if multi { dest.join(image.platform.to_string().replace('/', "_")) } else { dest.clone() };
                    printer.message(&format!("exporting filesystem to {}", target.display()));
                    with_rootfs(store, &image.chain, |rootfs| {
                        if o.kind == "local" {
                            export::export_local(rootfs, &target).map(drop)?;
                        } else {
                            export::export_tar(rootfs, &target)?;
                        }
                        Ok(())
                    })?;
                }
            }
            _ => unreachable!("validated in parse_output"),
        }
    }
    let image_id = if multi { top_digest.clone() } else { images[0].config_digest.clone() };
    let mut metadata = serde_json::json!({
        "containerimage.digest": top_digest,
        "containerimage.config.digest": images[0].config_digest,
        "containerimage.descriptor": {
            "mediaType": top_media_type,
            "digest": top_digest,
            "size": index.as_ref().map(|i| i.len()).unwrap_or(images[0].manifest.len()),
        },
    });
    if !names.is_empty() {
        metadata["image.name"] = serde_json::Value::String(names.join(","));
    }
    Ok(ExportResult { image_id, metadata })
}

/// Runs `f` on a read-only merged view of `chain`.
fn with_rootfs<T>(
    store: &Store,
    chain: &[rbuild_cache::store::SnapshotId],
    f: impl FnOnce(&std::path::Path) -> Result<T>,
) -> Result<T> {
    let view = rbuild_solver::solve::ChainView::mount(store, chain, "rootfs")?;
    f(view.path())
}

fn push_all(
    runtime: &Runtime,
    registry: &RegistryClient,
    images: &[BuiltImage],
    index: Option<&[u8]>,
    names: &[String],
    printer: &Printer,
) -> Result<()> {
    if names.is_empty() {
        bail!("pushing needs an image name: pass `-t NAME` or `-o type=registry,name=NAME`");
    }
    for name in names {
        let r = ImageRef::parse(name).map_err(|e| anyhow::anyhow!("{e}"))?;
        printer.message(&format!("pushing {name}"));
        // Untagged: manifests of an index are pushed by digest first.
        let by_digest = ImageRef { tag: None, digest: None, ..r.clone() };
        for image in images {
            let layers: Vec<(String, u64, PathBuf)> =
                image.layers.iter().map(|(l, p)| (l.digest.clone(), l.size, p.clone())).collect();
            let target = if index.is_some() { &by_digest } else { &r };
            runtime
                .block_on(registry.push_image(
                    target,
                    &image.manifest,
                    "application/vnd.oci.image.manifest.v1+json",
                    (&image.config, &image.config_digest),
                    &layers,
                ))
                .map_err(|e| anyhow::anyhow!("pushing `{name}` ({}): {e}", image.platform))?;
        }
        if let Some(index) = index {
            runtime
                .block_on(registry.push_manifest(&r, index, "application/vnd.oci.image.index.v1+json"))
                .map_err(|e| anyhow::anyhow!("pushing the index of `{name}`: {e}"))?;
        }
    }
    Ok(())
}
