//! `-o/--output` values as buildx parses them: one CSV record of
//! `key=value` fields with a `type=`, or a bare path (`-o DIR` is
//! `type=local,dest=DIR`, `-o -` a tar on stdout).

use std::path::PathBuf;

use super::csv;
use super::{RequestError, parse_bool, require_known};

/// The compression of image layers an output asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerCompression {
    /// `compression=`; `None`: the default (gzip).
    pub kind: Option<CompressionKind>,
    /// `compression-level=`.
    pub level: Option<i32>,
}

/// `compression=` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionKind {
    /// `gzip`.
    Gzip,
    /// `zstd`.
    Zstd,
    /// `uncompressed`.
    Uncompressed,
}

impl CompressionKind {
    /// The name as written in `compression=`.
    pub fn name(self) -> &'static str {
        match self {
            CompressionKind::Gzip => "gzip",
            CompressionKind::Zstd => "zstd",
            CompressionKind::Uncompressed => "uncompressed",
        }
    }
}

/// One requested output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputSpec {
    /// `type=image` (the local store), `type=registry` (= image with push).
    Image {
        /// `name=` image names (comma separated in the value).
        names: Vec<String>,
        /// Also push the names to their registries.
        push: bool,
        /// Layer compression.
        compression: LayerCompression,
    },
    /// `type=oci`: an OCI layout, a tar (default) or a directory (`tar=false`).
    Oci {
        /// `dest=`.
        dest: PathBuf,
        /// Write a tar rather than a directory.
        tar: bool,
        /// `name=` image names.
        names: Vec<String>,
        /// Layer compression.
        compression: LayerCompression,
    },
    /// `type=docker`: a docker-archive tar for `docker load`.
    Docker {
        /// `dest=`.
        dest: PathBuf,
        /// `name=` image names.
        names: Vec<String>,
        /// Layer compression.
        compression: LayerCompression,
    },
    /// `type=local`: the final filesystem copied into a directory.
    Local {
        /// `dest=`.
        dest: PathBuf,
    },
    /// `type=tar`: the final filesystem as a tar file.
    Tar {
        /// `dest=`.
        dest: PathBuf,
    },
}

const TYPES: &str = "image, registry, oci, docker, local, tar";
const IMAGE_KEYS: &[&str] = &["type", "name", "push", "compression", "compression-level"];
const OCI_KEYS: &[&str] = &["type", "dest", "tar", "name", "compression", "compression-level"];
const DOCKER_KEYS: &[&str] = &["type", "dest", "name", "compression", "compression-level"];
const FS_KEYS: &[&str] = &["type", "dest"];

const FLAG: &str = "--output";

impl OutputSpec {
    /// Parses one `--output` value.
    pub fn parse(spec: &str) -> Result<OutputSpec, RequestError> {
        if !spec.contains('=') {
            if spec.is_empty() {
                return Err(RequestError::MissingType { flag: FLAG, types: TYPES });
            }
            let dest = PathBuf::from(spec);
            return Ok(if spec == "-" { OutputSpec::Tar { dest } } else { OutputSpec::Local { dest } });
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
        require_known(FLAG, &kind, &attrs, valid)?;
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
            "image" => OutputSpec::Image { names, push: bool_attr("push", false)?, compression: compression(&attrs)? },
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
                OutputSpec::Image { names, push: true, compression: compression(&attrs)? }
            }
            "oci" => OutputSpec::Oci {
                dest: dest()?,
                tar: bool_attr("tar", true)?,
                names,
                compression: compression(&attrs)?,
            },
            "docker" => OutputSpec::Docker { dest: dest()?, names, compression: compression(&attrs)? },
            "local" => OutputSpec::Local { dest: dest()? },
            "tar" => OutputSpec::Tar { dest: dest()? },
            _ => unreachable!("type checked above"),
        })
    }

    /// The `type=` name.
    pub fn kind(&self) -> &'static str {
        match self {
            OutputSpec::Image { push: false, .. } => "image",
            OutputSpec::Image { push: true, .. } => "registry",
            OutputSpec::Oci { .. } => "oci",
            OutputSpec::Docker { .. } => "docker",
            OutputSpec::Local { .. } => "local",
            OutputSpec::Tar { .. } => "tar",
        }
    }
}

fn compression(attrs: &std::collections::BTreeMap<String, String>) -> Result<LayerCompression, RequestError> {
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
    Ok(LayerCompression { kind, level })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(names: &[&str], push: bool) -> OutputSpec {
        OutputSpec::Image {
            names: names.iter().map(|s| s.to_string()).collect(),
            push,
            compression: LayerCompression::default(),
        }
    }

    #[test]
    fn parses_outputs_as_buildx() {
        let table: Vec<(&str, OutputSpec)> = vec![
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
                OutputSpec::Image {
                    names: vec![],
                    push: false,
                    compression: LayerCompression { kind: Some(CompressionKind::Zstd), level: Some(5) },
                },
            ),
            (
                "type=oci,dest=out.tar",
                OutputSpec::Oci {
                    dest: "out.tar".into(),
                    tar: true,
                    names: vec![],
                    compression: LayerCompression::default(),
                },
            ),
            (
                "type=oci,\"dest=dir,with,commas\",tar=false,name=n",
                OutputSpec::Oci {
                    dest: "dir,with,commas".into(),
                    tar: false,
                    names: vec!["n".into()],
                    compression: LayerCompression::default(),
                },
            ),
            (
                "type=docker,dest=img.tar,compression=uncompressed",
                OutputSpec::Docker {
                    dest: "img.tar".into(),
                    names: vec![],
                    compression: LayerCompression { kind: Some(CompressionKind::Uncompressed), level: None },
                },
            ),
            ("type=local,dest=out", OutputSpec::Local { dest: "out".into() }),
            ("type=tar,dest=fs.tar", OutputSpec::Tar { dest: "fs.tar".into() }),
            ("out/dir", OutputSpec::Local { dest: "out/dir".into() }),
            ("-", OutputSpec::Tar { dest: "-".into() }),
        ];
        for (spec, want) in table {
            assert_eq!(OutputSpec::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}")), want, "spec {spec}");
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
                "`--output type=image`: unknown key `dest`; valid keys: type, name, push, compression, compression-level",
            ),
            ("type=local,dest=x,name=y", "`--output type=local`: unknown key `name`; valid keys: type, dest"),
            (
                "type=oci,dest=x,unpack=true",
                "`--output type=oci`: unknown key `unpack`; valid keys: type, dest, tar, name, compression, compression-level",
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
            let err = OutputSpec::parse(spec).expect_err(spec);
            assert_eq!(err.to_string(), *message, "spec {spec:?}");
        }
    }
}
