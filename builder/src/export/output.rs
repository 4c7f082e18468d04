//! `-o/--output` as a typed value: one variant per output type, each with
//! the attributes it understands. `request::output` parses the command
//! line (buildx's CSV) into it.

use std::path::PathBuf;

use rbuild_cache::layer::Compression;

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
    /// `annotation.KEY=VALUE`, `annotation-TYPE[PLATFORM].KEY=VALUE`.
    pub annotations: Vec<super::annotations::Annotation>,
}

/// One `--output`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// `type=image`: the local store; also the registry with `push=true`
    /// (`type=registry`, `--push`).
    Image {
        /// Image attributes.
        image: ImageAttrs,
        /// `push=true`.
        push: bool,
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
    /// `--load` (`type=docker` without `dest=`): the image loaded into the
    /// local Docker engine or podman.
    Load {
        /// Image attributes.
        image: ImageAttrs,
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
    /// The image attributes of an output that writes an image.
    pub fn image_attrs(&self) -> Option<&ImageAttrs> {
        match self {
            Output::Image { image, .. }
            | Output::Oci { image, .. }
            | Output::Docker { image, .. }
            | Output::Load { image } => Some(image),
            Output::Local { .. } | Output::Tar { .. } => None,
        }
    }
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
            (Some(CompressionKind::Zstd), l) => Compression::zstd_buildkit_level(l),
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

    fn image(compression: Option<CompressionKind>, compression_level: Option<i32>) -> Output {
        Output::Image { image: ImageAttrs { compression, compression_level, ..Default::default() }, push: false }
    }

    #[test]
    fn compression_follows_the_outputs() {
        use CompressionKind::*;
        assert_eq!(compression_from_outputs(&[]), Compression::Gzip { level: 6 });
        assert_eq!(compression_from_outputs(&[image(None, Some(12))]), Compression::Gzip { level: 9 });
        assert_eq!(compression_from_outputs(&[image(Some(Zstd), None)]), Compression::Zstd { level: 3 });
        // BuildKit's speed classes: 5 is the default speed, 8 the better one.
        assert_eq!(compression_from_outputs(&[image(Some(Zstd), Some(5))]), Compression::Zstd { level: 3 });
        assert_eq!(compression_from_outputs(&[image(Some(Zstd), Some(8))]), Compression::Zstd { level: 7 });
        assert_eq!(
            compression_from_outputs(&[image(Some(Zstd), None), image(None, Some(1))]),
            Compression::Zstd { level: 3 }
        );
        assert_eq!(compression_from_outputs(&[image(Some(Uncompressed), None)]), Compression::Uncompressed);
        assert_eq!(compression_from_outputs(&[Output::Local { dest: "x".into() }]), Compression::Gzip { level: 6 });
    }
}
