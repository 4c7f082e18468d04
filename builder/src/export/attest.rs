//! Build attestations, stored as BuildKit stores them
//! (`exporter/containerimage/writer.go`, `docs/attestations/
//! attestation-storage.md`): per platform image, one attestation manifest
//! whose layers are in-toto statements (`application/vnd.in-toto+json`,
//! annotated with their predicate type) and whose config is an image config
//! for `unknown/unknown`; the index lists it after the images, with platform
//! `unknown/unknown` and the annotations `vnd.docker.reference.type:
//! attestation-manifest` and `vnd.docker.reference.digest: <image manifest>`.
//!
//! The one attestation rbuild makes is SLSA provenance v1, in BuildKit's
//! shape (`solver/llbsolver/provenance`): build type, the Dockerfile as
//! config source, the frontend request (build args, labels and target; with
//! `mode=max` also the ids — never the values — of secrets and SSH agents),
//! the local contexts by name, the builder platform, and the base images as
//! resolved dependencies (purl + digest). What BuildKit adds in `max` mode
//! that rbuild does not: the LLB build config, layer source maps and the
//! Dockerfile's text.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rbuild_cache::oci::{LayerDescriptor, MEDIA_TYPE_CONFIG, Platform, sha256_digest};
use rbuild_cache::store::Store;
use serde_json::{Value, json};

use super::ExportError;
use super::image::IndexEntry;

/// In-toto statement layer media type.
pub const MEDIA_TYPE_IN_TOTO: &str = "application/vnd.in-toto+json";
/// SLSA provenance v1 predicate type.
pub const PREDICATE_SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// in-toto statement v1 `_type`.
const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// BuildKit's build type for SLSA v1 provenance.
const BUILD_TYPE: &str = "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";
/// Index annotation naming what an entry is.
pub const ANN_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// Index annotation naming the manifest an attestation describes.
pub const ANN_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

/// How much provenance to record (BuildKit's `mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvenanceMode {
    /// Timestamps, frontend, materials; no build args, labels, secrets.
    Min,
    /// Also build args, labels and the ids of secrets and SSH agents.
    Max,
}

/// The attestations a build asks for (`--attest`, `--provenance`, bake
/// `attest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attestations {
    /// `type=provenance`, with its mode.
    pub provenance: Option<ProvenanceMode>,
}

/// Why an attestation request is refused.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// Not `type=...,key=value...`.
    #[error("invalid attestation `{0}`: expected `type=provenance[,mode=min|max]`")]
    Syntax(String),
    /// `type=sbom`: rbuild has no SBOM generator.
    #[error(
        "`type=sbom` attestations are not supported by rbuild (it has no SBOM scanner); remove it, or disable it with `type=sbom,disabled=true`"
    )]
    Sbom,
    /// Another type.
    #[error("unknown attestation type `{0}`: rbuild makes `provenance`")]
    UnknownType(String),
    /// A provenance attribute rbuild does not know or honour.
    #[error("attestation `{spec}`: unsupported attribute `{key}` (rbuild knows `mode` and `disabled`)")]
    UnknownAttr {
        /// The attestation as given.
        spec: String,
        /// The key.
        key: String,
    },
    /// `mode=` other than `min`, `max` (or `full`).
    #[error("attestation `{0}`: invalid mode: use `min` or `max`")]
    Mode(String),
    /// `oci-mediatypes=false`.
    #[error("cannot export attestations with `oci-mediatypes=false`")]
    DockerMediaTypes,
}

fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

impl Attestations {
    /// Adds one `--attest` / bake `attest` value (`type=provenance,mode=max`,
    /// `type=sbom,disabled=true`); a later one of a type replaces an earlier.
    pub fn add(&mut self, spec: &str) -> Result<(), AttestError> {
        let mut kind = None;
        let mut disabled = false;
        let mut mode = ProvenanceMode::Max;
        let mut unknown = None;
        for field in spec.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let (k, v) = field.split_once('=').ok_or_else(|| AttestError::Syntax(spec.to_string()))?;
            match k.trim().to_ascii_lowercase().as_str() {
                "type" => kind = Some(v.to_string()),
                "disabled" => disabled = go_bool(v).ok_or_else(|| AttestError::Syntax(spec.to_string()))?,
                "mode" => {
                    mode = match v {
                        "min" => ProvenanceMode::Min,
                        "max" | "full" => ProvenanceMode::Max,
                        _ => return Err(AttestError::Mode(spec.to_string())),
                    }
                }
                other => unknown = unknown.or(Some(other.to_string())),
            }
        }
        match kind.as_deref() {
            Some("provenance") => {
                if let Some(key) = unknown.filter(|_| !disabled) {
                    return Err(AttestError::UnknownAttr { spec: spec.to_string(), key });
                }
                self.provenance = (!disabled).then_some(mode);
                Ok(())
            }
            Some("sbom") if disabled => Ok(()),
            Some("sbom") => Err(AttestError::Sbom),
            Some(other) => Err(AttestError::UnknownType(other.to_string())),
            None => Err(AttestError::Syntax(spec.to_string())),
        }
    }

    /// buildx's `--provenance VALUE` shorthand: `true`/`false`, or
    /// `mode=...` attributes.
    pub fn add_provenance_flag(&mut self, value: &str) -> Result<(), AttestError> {
        match go_bool(value) {
            Some(true) => self.add("type=provenance"),
            Some(false) => self.add("type=provenance,disabled=true"),
            None => self.add(&format!("type=provenance,{value}")),
        }
    }
}

/// What the provenance of one build says about its request.
#[derive(Clone, Debug, Default)]
pub struct ProvenanceRequest {
    /// The Dockerfile as the user named it.
    pub dockerfile: String,
    /// `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
    /// `--label`s.
    pub labels: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// Secret ids (never values).
    pub secret_ids: Vec<String>,
    /// SSH agent ids.
    pub ssh_ids: Vec<String>,
    /// Names of the local contexts (`context`, `--build-context` names).
    pub locals: Vec<String>,
    /// RFC 3339 start of the build.
    pub started: String,
    /// RFC 3339 end of the build.
    pub finished: String,
    /// An id for this invocation.
    pub invocation_id: String,
}

/// `pkg:docker/...` for an image reference as BuildKit's `RefToPURL`
/// writes it: the familiar name (namespace / name), the tag as version and
/// the platform as a qualifier; a digest-pinned reference gets a `digest`
/// qualifier instead of a tag.
pub fn image_purl(reference: &str, platform: Option<&Platform>) -> String {
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    let (repo, tag) = match name.rfind(':') {
        Some(i) if !name[i + 1..].contains('/') => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    };
    let familiar = repo
        .strip_prefix("docker.io/library/")
        .or_else(|| repo.strip_prefix("docker.io/"))
        .or_else(|| repo.strip_prefix("index.docker.io/library/"))
        .unwrap_or(repo);
    let mut out = format!("pkg:docker/{familiar}");
    let tag = match (tag, digest) {
        (Some(t), _) => Some(t),
        (None, None) => Some("latest"),
        (None, Some(_)) => None,
    };
    if let Some(t) = tag {
        out.push('@');
        out.push_str(t);
    }
    let mut qualifiers = Vec::new();
    if let Some(d) = digest {
        qualifiers.push(format!("digest={}", d.replace(':', "%3A")));
    }
    if let Some(p) = platform {
        qualifiers.push(format!("platform={}", p.to_string().replace('/', "%2F")));
    }
    if !qualifiers.is_empty() {
        out.push('?');
        out.push_str(&qualifiers.join("&"));
    }
    out
}

/// The SLSA v1 provenance predicate of one platform's build. `bases` are
/// the pinned base image references (`REF:TAG@sha256:...`) with the
/// platform each was pulled for.
pub fn provenance_predicate(req: &ProvenanceRequest, mode: ProvenanceMode, bases: &[(String, Platform)]) -> Value {
    let mut args = serde_json::Map::new();
    let mut incomplete_request = false;
    for (k, v) in &req.build_args {
        if mode == ProvenanceMode::Max {
            args.insert(format!("build-arg:{k}"), json!(v));
        } else {
            incomplete_request = true;
        }
    }
    for (k, v) in &req.labels {
        if mode == ProvenanceMode::Max {
            args.insert(format!("label:{k}"), json!(v));
        } else {
            incomplete_request = true;
        }
    }
    if let Some(t) = &req.target {
        args.insert("target".into(), json!(t));
    }
    let mut request = serde_json::Map::new();
    request.insert("frontend".into(), json!("dockerfile.v0"));
    if !args.is_empty() {
        request.insert("args".into(), Value::Object(args));
    }
    if mode == ProvenanceMode::Max {
        if !req.secret_ids.is_empty() {
            request
                .insert("secrets".into(), json!(req.secret_ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>()));
        }
        if !req.ssh_ids.is_empty() {
            request.insert("ssh".into(), json!(req.ssh_ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>()));
        }
    }
    if !req.locals.is_empty() {
        request.insert("locals".into(), json!(req.locals.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut resolved = Vec::new();
    for (reference, platform) in bases {
        let Some((name, digest)) = reference.split_once('@') else { continue };
        if !seen.insert((name.to_string(), platform.clone())) {
            continue;
        }
        let Some(hex) = digest.strip_prefix("sha256:") else { continue };
        resolved.push(json!({"uri": image_purl(name, Some(platform)), "digest": {"sha256": hex}}));
    }
    let mut definition = json!({
        "buildType": BUILD_TYPE,
        "externalParameters": {
            "configSource": {"path": req.dockerfile},
            "request": Value::Object(request),
        },
        "internalParameters": {"builderPlatform": Platform::host().to_string()},
    });
    if !resolved.is_empty() {
        definition["resolvedDependencies"] = Value::Array(resolved);
    }
    json!({
        "buildDefinition": definition,
        "runDetails": {
            "builder": {"id": ""},
            "metadata": {
                "invocationId": req.invocation_id,
                "startedOn": req.started,
                "finishedOn": req.finished,
                "buildkit_metadata": {},
                "buildkit_completeness": {
                    "request": !incomplete_request,
                    // Local contexts are not materials (BuildKit says the same).
                    "resolvedDependencies": req.locals.is_empty(),
                },
            },
        },
    })
}

/// The in-toto statement of `predicate` about `subjects` (name, sha256 hex).
pub fn statement(predicate: &Value, subjects: &[(String, String)]) -> Value {
    let subject: Vec<Value> = subjects.iter().map(|(n, hex)| json!({"name": n, "digest": {"sha256": hex}})).collect();
    json!({
        "_type": STATEMENT_V1,
        "predicateType": PREDICATE_SLSA_PROVENANCE_V1,
        "subject": subject,
        "predicate": predicate,
    })
}

/// The subjects of an attestation over a filesystem tree, as BuildKit's
/// local exporter makes them: every regular file (walked in name order,
/// symlinks not followed), by its path relative to `root` and its sha256.
pub fn file_subjects(root: &std::path::Path) -> std::io::Result<Vec<(String, String)>> {
    use sha2::Digest as _;
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(root.join(&rel))?.collect::<Result<Vec<_>, _>>()?;
        names.sort_by_key(|e| e.file_name());
        // Directories are pushed in reverse so they pop in name order.
        let mut dirs = Vec::new();
        for entry in names {
            let path = rel.join(entry.file_name());
            let ft = entry.file_type()?;
            if ft.is_dir() {
                dirs.push(path);
            } else if ft.is_file() {
                use std::io::Read as _;
                let mut hasher = sha2::Sha256::new();
                let mut file = std::fs::File::open(root.join(&path))?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
                out.push((path.to_string_lossy().into_owned(), hex::encode(hasher.finalize())));
            }
        }
        stack.extend(dirs.into_iter().rev());
    }
    out.sort();
    Ok(out)
}

/// An attestation manifest written to the store, ready for the exporters.
#[derive(Clone, Debug)]
pub struct AttestationImage {
    /// Manifest bytes.
    pub manifest: Vec<u8>,
    /// Config bytes.
    pub config: Vec<u8>,
    /// Config digest.
    pub config_digest: String,
    /// The statements, as layers with their blob files.
    pub layers: Vec<(LayerDescriptor, PathBuf)>,
    /// Its entry in the index.
    pub entry: IndexEntry,
}

/// The `unknown/unknown` platform of attestation manifests.
pub fn attestation_platform() -> Platform {
    Platform { os: "unknown".into(), architecture: "unknown".into(), variant: None }
}

/// Writes the provenance statement for one image (its manifest digest and
/// platform; `names` become its subjects) and the attestation manifest
/// holding it into the store.
pub fn write_attestation(
    store: &Store,
    predicate: &Value,
    image_manifest_digest: &str,
    image_platform: &Platform,
    names: &[String],
) -> Result<AttestationImage, ExportError> {
    let hex = image_manifest_digest.strip_prefix("sha256:").unwrap_or(image_manifest_digest);
    let subjects: Vec<(String, String)> =
        names.iter().map(|n| (image_purl(n, Some(image_platform)), hex.to_string())).collect();
    let bytes = serde_json::to_vec(&statement(predicate, &subjects))
        .map_err(|source| ExportError::Encode { what: "provenance", source })?;
    let digest = store.write_blob(&bytes)?;
    let layer = LayerDescriptor {
        digest: digest.clone(),
        diff_id: digest.clone(),
        size: bytes.len() as u64,
        media_type: MEDIA_TYPE_IN_TOTO.into(),
    };
    let platform = attestation_platform();
    let config = serde_json::to_vec(&json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [digest]},
    }))
    .map_err(|source| ExportError::Encode { what: "attestation config", source })?;
    let config_digest = store.write_blob(&config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": rbuild_cache::oci::MEDIA_TYPE_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": MEDIA_TYPE_IN_TOTO,
            "digest": digest,
            "size": bytes.len(),
            "annotations": {"in-toto.io/predicate-type": PREDICATE_SLSA_PROVENANCE_V1},
        }],
    }))
    .map_err(|source| ExportError::Encode { what: "attestation manifest", source })?;
    let manifest_digest = store.write_blob(&manifest)?;
    debug_assert_eq!(manifest_digest, sha256_digest(&manifest));
    let entry = IndexEntry {
        manifest: manifest.clone(),
        platform,
        annotations: BTreeMap::from([
            (ANN_REFERENCE_DIGEST.to_string(), image_manifest_digest.to_string()),
            (ANN_REFERENCE_TYPE.to_string(), "attestation-manifest".to_string()),
        ]),
    };
    let path = store.blob_path(&digest);
    Ok(AttestationImage { manifest, config, config_digest, layers: vec![(layer, path)], entry })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::try_parse(s).unwrap()
    }

    #[test]
    fn purls_as_buildkit_writes_them() {
        assert_eq!(
            image_purl("docker.io/library/alpine:latest", Some(&p("linux/amd64"))),
            "pkg:docker/alpine@latest?platform=linux%2Famd64"
        );
        assert_eq!(image_purl("127.0.0.1:5000/ns/app:1", None), "pkg:docker/127.0.0.1:5000/ns/app@1");
        assert_eq!(
            image_purl("docker.io/me/app", Some(&p("linux/arm64"))),
            "pkg:docker/me/app@latest?platform=linux%2Farm64"
        );
    }

    #[test]
    fn attest_specs_parse_as_buildx_passes_them() {
        let mut a = Attestations::default();
        a.add("type=provenance,mode=min").unwrap();
        assert_eq!(a.provenance, Some(ProvenanceMode::Min));
        a.add("type=provenance").unwrap();
        assert_eq!(a.provenance, Some(ProvenanceMode::Max), "BuildKit's default mode is max");
        a.add_provenance_flag("false").unwrap();
        assert_eq!(a.provenance, None);
        a.add_provenance_flag("mode=min").unwrap();
        assert_eq!(a.provenance, Some(ProvenanceMode::Min));
        assert!(matches!(a.add("type=sbom"), Err(AttestError::Sbom)));
        a.add("type=sbom,disabled=true").unwrap();
        assert!(matches!(a.add("type=provenance,mode=huge"), Err(AttestError::Mode(_))));
        assert!(matches!(a.add("type=provenance,builder-id=x"), Err(AttestError::UnknownAttr { .. })));
        assert!(matches!(a.add("type=vex"), Err(AttestError::UnknownType(_))));
        assert!(matches!(a.add("mode=max"), Err(AttestError::Syntax(_))));
    }

    #[test]
    fn min_mode_keeps_build_args_labels_and_secret_ids_out() {
        let req = ProvenanceRequest {
            dockerfile: "Dockerfile".into(),
            build_args: BTreeMap::from([("A".into(), "1".into())]),
            labels: BTreeMap::from([("l".into(), "v".into())]),
            secret_ids: vec!["tok".into()],
            locals: vec!["context".into()],
            ..Default::default()
        };
        let bases = [("docker.io/library/busybox:latest@sha256:abcd".to_string(), p("linux/amd64"))];
        let min = provenance_predicate(&req, ProvenanceMode::Min, &bases).to_string();
        assert!(!min.contains("build-arg:A") && !min.contains("label:l") && !min.contains("tok"), "{min}");
        let max = provenance_predicate(&req, ProvenanceMode::Max, &bases);
        let r = &max["buildDefinition"]["externalParameters"]["request"];
        assert_eq!(r["args"]["build-arg:A"], "1");
        assert_eq!(r["secrets"][0]["id"], "tok");
        let dep = &max["buildDefinition"]["resolvedDependencies"][0];
        assert_eq!(dep["uri"], "pkg:docker/busybox@latest?platform=linux%2Famd64");
        assert_eq!(dep["digest"]["sha256"], "abcd");
    }
}
