//! `-o/--output` as a typed value: one variant per output type, each with
//! the attributes it understands.
//!
//! [`Output::from_attrs`] takes an already split `type=...,key=value` spec
//! (attributes BuildKit's exporters do not know are ignored, as BuildKit
//! does); [`parse_outputs`] reads the command line's `--output`, `--push`
//! and `--load`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rbuild_cache::layer::Compression;

use crate::cli::BuildArgs;

/// Errors in `--output` values.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A part of the spec is not `KEY=VALUE`.
    #[error("invalid `--output {spec}`: `{part}` is not KEY=VALUE")]
    NotKeyValue {
        /// The whole spec.
        spec: String,
        /// The offending part.
        part: String,
    },
    /// `type=` is missing.
    #[error("invalid `--output {spec}`: missing `type=`")]
    MissingType {
        /// The whole spec.
        spec: String,
    },
    /// The type is not one we export.
    #[error("unknown output type `{0}`: use image, registry, oci, docker, local or tar")]
    UnknownType(String),
    /// A file or directory output without `dest=`.
    #[error("`--output type={0}` needs `dest=PATH`")]
    MissingDest(&'static str),
    /// `compression=` names no compression we write.
    #[error("unknown compression `{0}`: use gzip, zstd or uncompressed")]
    UnknownCompression(String),
    /// `compression-level=` is not an integer.
    #[error("invalid compression-level `{value}`")]
    CompressionLevel {
        /// The value given.
        value: String,
        /// The parse error.
        #[source]
        source: std::num::ParseIntError,
    },
    /// `--load` needs a Docker daemon.
    #[error("`--load` needs a Docker daemon; use `-o type=docker,dest=FILE` and `docker load -i FILE`")]
    Load,
}

/// A layer compression named by `compression=`, before its level is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionKind {
    /// `gzip`.
    Gzip,
    /// `zstd`.
    Zstd,
    /// `uncompressed`.
    Uncompressed,
}

/// Attributes shared by the outputs that write an image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageAttrs {
    /// `name=a,b`: image names besides `-t`.
    pub names: Vec<String>,
    /// `compression=`.
    pub compression: Option<CompressionKind>,
    /// `compression-level=`.
    pub compression_level: Option<i32>,
    /// `oci-mediatypes=false`: push Docker schema-2 media types.
    pub docker_media_types: bool,
    /// `registry.insecure=true`: the image names' registries may be
    /// reached over plain HTTP.
    pub insecure: bool,
}

/// One `--output`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// `type=image`: the local store; also the registry with `push=true`.
    Image {
        /// Image attributes.
        image: ImageAttrs,
        /// `push=true`.
        push: bool,
    },
    /// `type=registry` (or `--push`): the local store and the registry.
    Registry {
        /// Image attributes.
        image: ImageAttrs,
    },
    /// `type=oci`: an OCI layout, as a tar file (default) or a directory.
    Oci {
        /// Image attributes.
        image: ImageAttrs,
        /// `dest=`.
        dest: PathBuf,
        /// `tar=` (default true).
        tar: bool,
    },
    /// `type=docker`: a docker-archive tar for `docker load`.
    Docker {
        /// Image attributes.
        image: ImageAttrs,
        /// `dest=`.
        dest: PathBuf,
    },
    /// `type=local`: the final filesystem copied into a directory.
    Local {
        /// `dest=`.
        dest: PathBuf,
    },
    /// `type=tar`: the final filesystem as a tar file (`dest=-`: stdout).
    Tar {
        /// `dest=`.
        dest: PathBuf,
    },
}

impl Output {
    /// The output for `type` and its other attributes.
    pub fn from_attrs(kind: &str, attrs: &BTreeMap<String, String>) -> Result<Output, OutputError> {
        let dest = |what: &'static str| attrs.get("dest").map(PathBuf::from).ok_or(OutputError::MissingDest(what));
        let flag = |key: &str, default: bool| attrs.get(key).map(|v| v == "true").unwrap_or(default);
        Ok(match kind {
            "image" => Output::Image { image: image_attrs(attrs)?, push: flag("push", false) },
            "registry" => Output::Registry { image: image_attrs(attrs)? },
            "oci" => Output::Oci {
                image: image_attrs(attrs)?,
                dest: dest("oci")?,
                tar: attrs.get("tar").map(|v| v != "false").unwrap_or(true),
            },
            "docker" => Output::Docker { image: image_attrs(attrs)?, dest: dest("docker")? },
            "local" => Output::Local { dest: dest("local")? },
            "tar" => Output::Tar { dest: dest("tar")? },
            other => return Err(OutputError::UnknownType(other.to_string())),
        })
    }

    /// Parses one `--output` value: `type=T,key=value,...`, or `DIR` (a
    /// local output) or `-` (a tar on stdout).
    pub fn parse(spec: &str) -> Result<Output, OutputError> {
        if !spec.contains('=') {
            let dest = PathBuf::from(spec);
            return Ok(if spec == "-" { Output::Tar { dest } } else { Output::Local { dest } });
        }
        let mut kind = None;
        let mut attrs = BTreeMap::new();
        for part in spec.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| OutputError::NotKeyValue { spec: spec.to_string(), part: part.to_string() })?;
            if k == "type" {
                kind = Some(v.to_string());
            } else {
                attrs.insert(k.to_string(), v.to_string());
            }
        }
        let kind = kind.ok_or_else(|| OutputError::MissingType { spec: spec.to_string() })?;
        Output::from_attrs(&kind, &attrs)
    }

    /// The image attributes of an output that writes an image.
    pub fn image_attrs(&self) -> Option<&ImageAttrs> {
        match self {
            Output::Image { image, .. }
            | Output::Registry { image }
            | Output::Oci { image, .. }
            | Output::Docker { image, .. } => Some(image),
            Output::Local { .. } | Output::Tar { .. } => None,
        }
    }
}

fn image_attrs(attrs: &BTreeMap<String, String>) -> Result<ImageAttrs, OutputError> {
    let compression = match attrs.get("compression").map(String::as_str) {
        None => None,
        Some("gzip") => Some(CompressionKind::Gzip),
        Some("zstd") => Some(CompressionKind::Zstd),
        Some("uncompressed") => Some(CompressionKind::Uncompressed),
        Some(other) => return Err(OutputError::UnknownCompression(other.to_string())),
    };
    let compression_level = attrs
        .get("compression-level")
        .map(|v| v.parse::<i32>().map_err(|source| OutputError::CompressionLevel { value: v.clone(), source }))
        .transpose()?;
    let names = attrs.get("name").map(|n| n.split(',').map(str::to_string).collect()).unwrap_or_default();
    Ok(ImageAttrs {
        names,
        compression,
        compression_level,
        docker_media_types: attrs.get("oci-mediatypes").is_some_and(|v| v == "false"),
        insecure: attrs.get("registry.insecure").is_some_and(|v| v == "true"),
    })
}

/// Parses `--output` values plus `--push`/`--load`; no output means the
/// local store (`type=image`).
pub fn parse_outputs(args: &BuildArgs) -> Result<Vec<Output>, OutputError> {
    let mut outputs = args.output.iter().map(|spec| Output::parse(spec)).collect::<Result<Vec<_>, _>>()?;
    if args.push {
        outputs.push(Output::Registry { image: ImageAttrs::default() });
    }
    if args.load {
        return Err(OutputError::Load);
    }
    if outputs.is_empty() {
        outputs.push(Output::Image { image: ImageAttrs::default(), push: false });
    }
    Ok(outputs)
}

/// The layer compression the outputs ask for (`compression=zstd`,
/// `compression-level=N`; a later output overrides an earlier one); gzip
/// level 6 by default. One compression per build: the layers are written
/// once and shared by every output.
pub fn compression_from_outputs(outputs: &[Output]) -> Compression {
    let mut compression = Compression::Gzip { level: 6 };
    for image in outputs.iter().filter_map(Output::image_attrs) {
        let level = image.compression_level;
        compression = match (image.compression, level) {
            (None, Some(l)) if matches!(compression, Compression::Gzip { .. }) => {
                Compression::Gzip { level: l.clamp(0, 9) as u32 }
            }
            (None, _) => compression,
            (Some(CompressionKind::Gzip), l) => Compression::Gzip { level: l.unwrap_or(6).clamp(0, 9) as u32 },
            (Some(CompressionKind::Zstd), l) => Compression::Zstd { level: l.unwrap_or(3) },
            (Some(CompressionKind::Uncompressed), _) => Compression::Uncompressed,
        };
    }
    compression
}

/// Every image name: `-t` tags, then each output's `name=` values.
pub fn image_names(tags: &[String], outputs: &[Output]) -> Vec<String> {
    let mut names = tags.to_vec();
    names.extend(outputs.iter().filter_map(Output::image_attrs).flat_map(|i| i.names.iter().cloned()));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_output_type() {
        assert_eq!(Output::parse("out").unwrap(), Output::Local { dest: "out".into() });
        assert_eq!(Output::parse("-").unwrap(), Output::Tar { dest: "-".into() });
        assert_eq!(
            Output::parse("type=oci,dest=x.tar,name=a:1,b:2,unknown-attr=1").unwrap_err().to_string(),
            "invalid `--output type=oci,dest=x.tar,name=a:1,b:2,unknown-attr=1`: `b:2` is not KEY=VALUE"
        );
        let Output::Oci { image, dest, tar } = Output::parse("type=oci,dest=x,tar=false,name=a:1").unwrap() else {
            panic!("not oci")
        };
        assert_eq!((image.names, dest, tar), (vec!["a:1".to_string()], PathBuf::from("x"), false));
        assert!(matches!(Output::parse("type=image,push=true").unwrap(), Output::Image { push: true, .. }));
        let Output::Registry { image } =
            Output::parse("type=registry,oci-mediatypes=false,registry.insecure=true").unwrap()
        else {
            panic!("not registry")
        };
        assert!(image.docker_media_types && image.insecure);
        let Output::Registry { image } = Output::parse("type=registry").unwrap() else { panic!("not registry") };
        assert!(!image.docker_media_types && !image.insecure);
        assert!(matches!(Output::parse("type=docker").unwrap_err(), OutputError::MissingDest("docker")));
        assert!(matches!(Output::parse("type=ftp").unwrap_err(), OutputError::UnknownType(_)));
        assert!(matches!(Output::parse("dest=x").unwrap_err(), OutputError::MissingType { .. }));
        assert!(matches!(Output::parse("type=image,compression=lz4").unwrap_err(), OutputError::UnknownCompression(_)));
        assert!(matches!(
            Output::parse("type=image,compression-level=high").unwrap_err(),
            OutputError::CompressionLevel { .. }
        ));
    }

    #[test]
    fn compression_follows_the_outputs() {
        let c = |specs: &[&str]| {
            compression_from_outputs(&specs.iter().map(|s| Output::parse(s).unwrap()).collect::<Vec<_>>())
        };
        assert_eq!(c(&[]), Compression::Gzip { level: 6 });
        assert_eq!(c(&["type=image,compression-level=12"]), Compression::Gzip { level: 9 });
        assert_eq!(c(&["type=image,compression=zstd"]), Compression::Zstd { level: 3 });
        assert_eq!(c(&["type=image,compression=zstd,compression-level=5"]), Compression::Zstd { level: 5 });
        assert_eq!(
            c(&["type=image,compression=zstd", "type=oci,dest=x,compression-level=1"]),
            Compression::Zstd { level: 3 }
        );
        assert_eq!(c(&["type=oci,dest=x,compression=uncompressed"]), Compression::Uncompressed);
        assert_eq!(c(&["type=local,dest=x,compression=zstd"]), Compression::Gzip { level: 6 });
    }
}
