//! OCI annotations on what an export writes, as BuildKit's image exporter
//! places them (`exporter/containerimage/annotations.go`): on each
//! platform's manifest, on the manifest's descriptor in the index, on the
//! index, and on the index's descriptor (an OCI layout's `index.json`).
//!
//! They arrive as exporter attribute keys (`annotation.KEY`,
//! `annotation-manifest[linux/arm64].KEY`, `annotation-index.KEY`...), the
//! form `--output` takes and `--annotation` / bake's `annotations` are
//! turned into ([`parse_spec`]).

use std::collections::BTreeMap;

use rbuild_cache::oci::{Platform, PlatformError};

/// Where an annotation goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnnotationKind {
    /// The image index (several platforms, or attestations).
    Index,
    /// The descriptor of the index (in an OCI layout's `index.json`).
    IndexDescriptor,
    /// Each platform's image manifest (the default).
    Manifest,
    /// The descriptor of each manifest in the index.
    ManifestDescriptor,
}

impl AnnotationKind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "index" => AnnotationKind::Index,
            "index-descriptor" => AnnotationKind::IndexDescriptor,
            "manifest" | "" => AnnotationKind::Manifest,
            "manifest-descriptor" => AnnotationKind::ManifestDescriptor,
            _ => return None,
        })
    }

    fn is_index(self) -> bool {
        matches!(self, AnnotationKind::Index | AnnotationKind::IndexDescriptor)
    }
}

/// One annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Annotation {
    /// Where it goes.
    pub kind: AnnotationKind,
    /// Only this platform's manifest (manifest kinds only).
    pub platform: Option<Platform>,
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// Why an annotation is refused.
#[derive(Debug, thiserror::Error)]
pub enum AnnotationError {
    /// Not `[TYPE[PLATFORM],...:]KEY=VALUE`.
    #[error("invalid annotation `{0}`: expected KEY=VALUE or TYPE[PLATFORM],...:KEY=VALUE")]
    Syntax(String),
    /// A type BuildKit does not know.
    #[error(
        "annotation `{spec}`: unknown type `{kind}`: use `manifest`, `manifest-descriptor`, `index` or `index-descriptor`"
    )]
    UnknownKind {
        /// The annotation as given.
        spec: String,
        /// The type.
        kind: String,
    },
    /// A bad platform in `[...]`.
    #[error("annotation `{spec}`")]
    Platform {
        /// The annotation as given.
        spec: String,
        /// Why.
        #[source]
        source: PlatformError,
    },
    /// `index[linux/amd64]`: an index is not per platform.
    #[error("annotation `{0}`: index annotations cannot name a platform")]
    IndexPlatform(String),
    /// A platform the build does not produce.
    #[error("invalid annotation: no platform {0} in this build")]
    NoSuchPlatform(Platform),
    /// Index annotations on an export that writes no index.
    #[error("index annotations not supported for single platform export (add a platform or an attestation)")]
    SinglePlatform,
    /// `oci-mediatypes=false`: Docker manifests have no descriptor or
    /// index annotations.
    #[error("cannot export annotations with `oci-mediatypes=false`")]
    DockerMediaTypes,
}

/// The annotations of one export, in the order given (a later one with the
/// same key wins).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageAnnotations {
    /// Every annotation.
    pub entries: Vec<Annotation>,
}

/// Parses an exporter attribute key (`annotation.K`,
/// `annotation-TYPE[PLATFORM].K`) with its value; `Ok(None)` for a key that
/// is not an annotation.
pub fn parse_attr(key: &str, value: &str) -> Result<Option<Annotation>, AnnotationError> {
    let Some(rest) = key.strip_prefix("annotation") else { return Ok(None) };
    if !rest.starts_with(['.', '-', '[']) {
        return Ok(None);
    }
    let bad = || AnnotationError::Syntax(format!("{key}={value}"));
    let (kind, rest) = match rest.strip_prefix('-') {
        Some(r) => {
            let end = r.find(['.', '[']).ok_or_else(bad)?;
            (&r[..end], &r[end..])
        }
        None => ("", rest),
    };
    if !kind.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
        return Err(bad());
    }
    let (platform, rest) = match rest.strip_prefix('[') {
        Some(r) => {
            let (p, r) = r.split_once(']').ok_or_else(bad)?;
            (Some(p), r)
        }
        None => (None, rest),
    };
    let k = rest.strip_prefix('.').filter(|k| !k.is_empty() && !k.chars().any(char::is_whitespace)).ok_or_else(bad)?;
    let spec = format!("{key}={value}");
    let kind = AnnotationKind::parse(kind)
        .ok_or_else(|| AnnotationError::UnknownKind { spec: spec.clone(), kind: kind.into() })?;
    let platform = match platform {
        None => None,
        Some(p) => {
            if kind.is_index() {
                return Err(AnnotationError::IndexPlatform(spec));
            }
            Some(Platform::try_parse(p).map_err(|source| AnnotationError::Platform { spec: spec.clone(), source })?)
        }
    };
    Ok(Some(Annotation { kind, platform, key: k.to_string(), value: value.to_string() }))
}

/// Parses a `--annotation` / bake `annotations` entry, buildx's
/// `[TYPE[PLATFORM],...:]KEY=VALUE`: one annotation per type named.
pub fn parse_spec(spec: &str) -> Result<Vec<Annotation>, AnnotationError> {
    let (k, v) = spec.split_once('=').ok_or_else(|| AnnotationError::Syntax(spec.to_string()))?;
    let Some((types, key)) = k.split_once(':') else {
        return parse_attr(&format!("annotation.{k}"), v).map(|a| a.into_iter().collect());
    };
    let mut out = Vec::new();
    for tp in types.split(',') {
        let attr = match tp.split_once('[') {
            Some((t, p)) => format!("annotation-{t}[{p}.{key}"),
            None => format!("annotation-{tp}.{key}"),
        };
        out.extend(parse_attr(&attr, v)?);
    }
    if out.is_empty() {
        return Err(AnnotationError::Syntax(spec.to_string()));
    }
    Ok(out)
}

impl ImageAnnotations {
    fn collect(&self, pick: impl Fn(&Annotation) -> bool) -> BTreeMap<String, String> {
        self.entries.iter().filter(|a| pick(a)).map(|a| (a.key.clone(), a.value.clone())).collect()
    }

    /// On the index.
    pub fn index(&self) -> BTreeMap<String, String> {
        self.collect(|a| a.kind == AnnotationKind::Index)
    }

    /// On the index's descriptor.
    pub fn index_descriptor(&self) -> BTreeMap<String, String> {
        self.collect(|a| a.kind == AnnotationKind::IndexDescriptor)
    }

    /// On `platform`'s manifest: those for every platform, then (winning)
    /// those naming it.
    pub fn manifest(&self, platform: &Platform) -> BTreeMap<String, String> {
        self.for_platform(AnnotationKind::Manifest, platform)
    }

    /// On `platform`'s manifest descriptor.
    pub fn manifest_descriptor(&self, platform: &Platform) -> BTreeMap<String, String> {
        self.for_platform(AnnotationKind::ManifestDescriptor, platform)
    }

    fn for_platform(&self, kind: AnnotationKind, platform: &Platform) -> BTreeMap<String, String> {
        let mut out = self.collect(|a| a.kind == kind && a.platform.is_none());
        out.extend(self.collect(|a| a.kind == kind && a.platform.as_ref() == Some(platform)));
        out
    }

    /// Checks the annotations against what the export writes, as BuildKit
    /// does: a named platform must be built, index annotations need an
    /// index, and Docker media types carry manifest annotations only.
    pub fn check(
        &self,
        platforms: &[Platform],
        has_index: bool,
        docker_media_types: bool,
    ) -> Result<(), AnnotationError> {
        for a in &self.entries {
            if let Some(p) = &a.platform
                && !platforms.contains(p)
            {
                return Err(AnnotationError::NoSuchPlatform(p.clone()));
            }
            if docker_media_types && a.kind != AnnotationKind::Manifest {
                return Err(AnnotationError::DockerMediaTypes);
            }
            if a.kind.is_index() && !has_index {
                return Err(AnnotationError::SinglePlatform);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::try_parse(s).unwrap()
    }

    #[test]
    fn attribute_keys_parse_as_buildkit_does() {
        let a = parse_attr("annotation.org.opencontainers.image.title", "t").unwrap().unwrap();
        assert_eq!(
            (a.kind, a.platform, a.key.as_str()),
            (AnnotationKind::Manifest, None, "org.opencontainers.image.title")
        );
        let a = parse_attr("annotation-manifest-descriptor[linux/arm64/v8].k", "v").unwrap().unwrap();
        assert_eq!((a.kind, a.platform), (AnnotationKind::ManifestDescriptor, Some(p("linux/arm64"))));
        assert_eq!(parse_attr("annotation-index.k", "v").unwrap().unwrap().kind, AnnotationKind::Index);
        assert!(parse_attr("compression", "zstd").unwrap().is_none());
        assert!(parse_attr("annotationx", "v").unwrap().is_none());
        assert!(matches!(parse_attr("annotation-bogus.k", "v"), Err(AnnotationError::UnknownKind { .. })));
        assert!(matches!(parse_attr("annotation-index[linux/amd64].k", "v"), Err(AnnotationError::IndexPlatform(_))));
        assert!(matches!(parse_attr("annotation-manifest[../x].k", "v"), Err(AnnotationError::Platform { .. })));
        assert!(matches!(parse_attr("annotation.", "v"), Err(AnnotationError::Syntax(_))));
        assert!(matches!(parse_attr("annotation-manifest[linux/amd64k", "v"), Err(AnnotationError::Syntax(_))));
    }

    #[test]
    fn specs_name_several_types() {
        let all = parse_spec("index,manifest[linux/amd64],manifest-descriptor:k=a=b").unwrap();
        let kinds: Vec<_> = all.iter().map(|a| (a.kind, a.platform.clone(), a.value.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (AnnotationKind::Index, None, "a=b"),
                (AnnotationKind::Manifest, Some(p("linux/amd64")), "a=b"),
                (AnnotationKind::ManifestDescriptor, None, "a=b"),
            ]
        );
        assert_eq!(parse_spec("k=v").unwrap()[0].kind, AnnotationKind::Manifest);
        assert!(parse_spec("novalue").is_err());
    }

    #[test]
    fn a_platform_specific_value_wins_for_that_platform_only() {
        let mut ann = ImageAnnotations::default();
        ann.entries.extend(parse_spec("manifest[linux/arm64]:k=arm").unwrap());
        ann.entries.extend(parse_spec("k=all").unwrap());
        assert_eq!(ann.manifest(&p("linux/arm64"))["k"], "arm");
        assert_eq!(ann.manifest(&p("linux/amd64"))["k"], "all");
        assert!(ann.index().is_empty());
        assert!(matches!(ann.check(&[p("linux/amd64")], true, false), Err(AnnotationError::NoSuchPlatform(_))));
        ann.entries.extend(parse_spec("index:i=1").unwrap());
        let both = [p("linux/amd64"), p("linux/arm64")];
        assert!(ann.check(&both, true, false).is_ok());
        assert!(matches!(ann.check(&both, false, false), Err(AnnotationError::SinglePlatform)));
        assert!(matches!(ann.check(&both, true, true), Err(AnnotationError::DockerMediaTypes)));
    }
}
