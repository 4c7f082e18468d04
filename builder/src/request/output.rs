//! `-o/--output` values as buildx parses them: one CSV record of
//! `key=value` fields with a `type=`, or a bare path (`-o DIR` is
//! `type=local,dest=DIR`, `-o -` a tar on stdout).

use std::path::PathBuf;

use super::csv;
use super::{RequestError, parse_bool, require_known};

pub use crate::export::{CompressionKind, ImageAttrs, Output};

const TYPES: &str = "image, registry, oci, docker, local, tar";
const IMAGE_KEYS: &[&str] =
    &["type", "name", "push", "compression", "compression-level", "oci-mediatypes", "registry.insecure"];
const OCI_KEYS: &[&str] = &["type", "dest", "tar", "name", "compression", "compression-level", "oci-mediatypes"];
const DOCKER_KEYS: &[&str] = &["type", "dest", "name", "compression", "compression-level"];
const FS_KEYS: &[&str] = &["type", "dest"];

const FLAG: &str = "--output";

/// Parses one `--output` value.
pub fn parse(spec: &str) -> Result<Output, RequestError> {
    if !spec.contains('=') {
        if spec.is_empty() {
            return Err(RequestError::MissingType { flag: FLAG, types: TYPES });
        }
        let dest = PathBuf::from(spec);
        return Ok(if spec == "-" { Output::Tar { dest } } else { Output::Local { dest } });
    }
    let fields = csv::fields(spec).map_err(|source| RequestError::Csv { flag: FLAG, source })?;
    let mut attrs = std::collections::BTreeMap::new();
    for field in &fields {
        let (k, v) =
            csv::key_value(field).ok_or_else(|| RequestError::NotKeyValue { flag: FLAG, field: field.clone() })?;
        attrs.insert(k, v.to_string());
    }
    let kind = attrs.get("type").cloned().ok_or(RequestError::MissingType { flag: FLAG, types: TYPES })?;
    let valid = match kind.as_str() {
        "image" | "registry" => IMAGE_KEYS,
        "oci" => OCI_KEYS,
        "docker" => DOCKER_KEYS,
        "local" | "tar" => FS_KEYS,
        _ => return Err(RequestError::UnknownType { flag: FLAG, kind, types: TYPES }),
    };
    // `annotation.KEY`, `annotation-TYPE[PLATFORM].KEY` on image outputs.
    let mut annotations = Vec::new();
    if valid.contains(&"name") {
        for (k, v) in &attrs {
            if let Some(a) = crate::export::annotations::parse_attr(k, v).map_err(RequestError::Annotation)? {
                annotations.push(a);
            }
        }
    }
    let plain: std::collections::BTreeMap<String, String> = attrs
        .iter()
        .filter(|(k, _)| !valid.contains(&"name") || !k.starts_with("annotation"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    require_known(FLAG, &kind, &plain, valid)?;
    let names: Vec<String> = attrs
        .get("name")
        .map(|n| n.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    let dest = || {
        attrs.get("dest").filter(|d| !d.is_empty()).map(PathBuf::from).ok_or_else(|| RequestError::MissingKey {
            flag: FLAG,
            kind: kind.clone(),
            key: "dest",
        })
    };
    let bool_attr = |key: &'static str, default: bool| match attrs.get(key) {
        None => Ok(default),
        Some(v) => parse_bool(FLAG, key, v),
    };
    Ok(match kind.as_str() {
        "image" => Output::Image { image: image_attrs(names, &attrs, annotations)?, push: bool_attr("push", false)? },
        "registry" => {
            // `type=registry` is `type=image,push=true`; `push=false` contradicts it.
            if !bool_attr("push", true)? {
                return Err(RequestError::InvalidValue {
                    flag: FLAG,
                    key: "push",
                    value: "false".into(),
                    expected: "`true` for `type=registry` (use `type=image` not to push)",
                });
            }
            Output::Image { image: image_attrs(names, &attrs, annotations)?, push: true }
        }
        "oci" => {
            Output::Oci { dest: dest()?, tar: bool_attr("tar", true)?, image: image_attrs(names, &attrs, annotations)? }
        }
        // buildx: `type=docker` without `dest` loads into the local engine.
        "docker" if attrs.get("dest").is_none_or(|d| d.is_empty()) => {
            Output::Load { image: image_attrs(names, &attrs, annotations)? }
        }
        "docker" => Output::Docker { dest: dest()?, image: image_attrs(names, &attrs, annotations)? },
        "local" => Output::Local { dest: dest()? },
        "tar" => Output::Tar { dest: dest()? },
        _ => unreachable!("type checked above"),
    })
}

fn image_attrs(
    names: Vec<String>,
    attrs: &std::collections::BTreeMap<String, String>,
    annotations: Vec<crate::export::annotations::Annotation>,
) -> Result<ImageAttrs, RequestError> {
    let kind = match attrs.get("compression").map(String::as_str) {
        None => None,
        Some("gzip") => Some(CompressionKind::Gzip),
        Some("zstd") => Some(CompressionKind::Zstd),
        Some("uncompressed") => Some(CompressionKind::Uncompressed),
        Some(other) => {
            return Err(RequestError::InvalidValue {
                flag: FLAG,
                key: "compression",
                value: other.to_string(),
                expected: "gzip, zstd or uncompressed",
            });
        }
    };
    let level = match attrs.get("compression-level") {
        None => None,
        Some(v) => Some(v.parse::<i32>().map_err(|_| RequestError::InvalidValue {
            flag: FLAG,
            key: "compression-level",
            value: v.clone(),
            expected: "an integer",
        })?),
    };
    let flag = |key: &'static str, default: bool| match attrs.get(key) {
        None => Ok(default),
        Some(v) => parse_bool(FLAG, key, v),
    };
    Ok(ImageAttrs {
        names,
        compression: kind,
        compression_level: level,
        docker_media_types: !flag("oci-mediatypes", true)?,
        insecure: flag("registry.insecure", false)?,
        annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(names: &[&str], compression: Option<CompressionKind>, compression_level: Option<i32>) -> ImageAttrs {
        ImageAttrs {
            names: names.iter().map(|s| s.to_string()).collect(),
            compression,
            compression_level,
            ..Default::default()
        }
    }

    fn image(names: &[&str], push: bool) -> Output {
        Output::Image { image: attrs(names, None, None), push }
    }

    #[test]
    fn parses_outputs_as_buildx() {
        let table: Vec<(&str, Output)> = vec![
            ("type=image", image(&[], false)),
            ("type=image,\"name=a:1,b:2\",push=true", image(&["a:1", "b:2"], true)),
            ("\"type=image\",name=a:1", image(&["a:1"], false)),
            ("TYPE=image,Name=x", image(&["x"], false)),
            ("type=image,push=1", image(&[], true)),
            ("type=image,push=False", image(&[], false)),
            ("type=registry,name=r/x", image(&["r/x"], true)),
            ("type=registry,push=true", image(&[], true)),
            (
                "type=image,compression=zstd,compression-level=5",
                Output::Image { image: attrs(&[], Some(CompressionKind::Zstd), Some(5)), push: false },
            ),
            ("type=oci,dest=out.tar", Output::Oci { dest: "out.tar".into(), tar: true, image: attrs(&[], None, None) }),
            (
                "type=oci,\"dest=dir,with,commas\",tar=false,name=n",
                Output::Oci { dest: "dir,with,commas".into(), tar: false, image: attrs(&["n"], None, None) },
            ),
            (
                "type=docker,dest=img.tar,compression=uncompressed",
                Output::Docker { dest: "img.tar".into(), image: attrs(&[], Some(CompressionKind::Uncompressed), None) },
            ),
            ("type=local,dest=out", Output::Local { dest: "out".into() }),
            ("type=tar,dest=fs.tar", Output::Tar { dest: "fs.tar".into() }),
            ("out/dir", Output::Local { dest: "out/dir".into() }),
            ("-", Output::Tar { dest: "-".into() }),
        ];
        for (spec, want) in table {
            assert_eq!(parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}")), want, "spec {spec}");
        }
    }

    #[test]
    fn every_output_error_names_what_is_wrong() {
        let table: &[(&str, &str)] = &[
            ("", "`--output`: missing `type=` (one of image, registry, oci, docker, local, tar)"),
            ("dest=x", "`--output`: missing `type=` (one of image, registry, oci, docker, local, tar)"),
            (
                "type=cacheonly",
                "`--output`: unknown type `cacheonly`; valid types: image, registry, oci, docker, local, tar",
            ),
            (
                "type=image,dest=x",
                "`--output type=image`: unknown key `dest`; valid keys: type, name, push, compression, compression-level, oci-mediatypes, registry.insecure",
            ),
            ("type=local,dest=x,name=y", "`--output type=local`: unknown key `name`; valid keys: type, dest"),
            (
                "type=oci,dest=x,unpack=true",
                "`--output type=oci`: unknown key `unpack`; valid keys: type, dest, tar, name, compression, compression-level, oci-mediatypes",
            ),
            (
                "type=docker,dest=x,tar=false",
                "`--output type=docker`: unknown key `tar`; valid keys: type, dest, name, compression, compression-level",
            ),
            ("type=oci", "`--output type=oci` needs `dest=`"),
            ("type=tar,dest=", "`--output type=tar` needs `dest=`"),
            ("type=image,push", "`--output`: `push` is not KEY=VALUE"),
            ("type=image,push=yes", "`--output`: invalid `push=yes`: expected true or false"),
            ("type=oci,dest=x,tar=maybe", "`--output`: invalid `tar=maybe`: expected true or false"),
            (
                "type=registry,push=false",
                "`--output`: invalid `push=false`: expected `true` for `type=registry` (use `type=image` not to push)",
            ),
            (
                "type=image,compression=lz4",
                "`--output`: invalid `compression=lz4`: expected gzip, zstd or uncompressed",
            ),
            ("type=image,compression-level=high", "`--output`: invalid `compression-level=high`: expected an integer"),
            (
                "type=image,name=\"a,b\"",
                "`--output`: bare `\"` in unquoted field 2 (quote the whole field: `\"key=value\"`)",
            ),
            ("type=image,\"name=a", "`--output`: field 2 has no closing `\"`"),
        ];
        for (spec, message) in table {
            let err = parse(spec).expect_err(spec);
            assert_eq!(err.to_string(), *message, "spec {spec:?}");
        }
    }
}
