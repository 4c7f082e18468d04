//! What a resolved target means for its build (buildx `toBuildOpt`): the
//! context directory, the Dockerfile path (relative to the context unless
//! absolute or `cwd://`), named contexts, entitlements, network mode,
//! attestations, and exports with the target's annotations folded in.

use std::collections::BTreeMap;
use std::path::Path;

use super::entries::Export;
use super::functions::clean_path;
use super::resolve::is_remote;
use super::target::Target;

/// A target's inputs that are not bake's business to interpret further.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildInputs {
    /// The build context (a local path, or a remote URL).
    pub context_path: String,
    /// The Dockerfile path (joined onto a local context).
    pub dockerfile_path: String,
    /// `dockerfile-inline`, when given.
    pub dockerfile_inline: Option<String>,
    /// Named contexts: name -> path, `target:NAME`, `docker-image://REF`, URL.
    pub named_contexts: BTreeMap<String, String>,
    /// Entitlements the target needs.
    pub allow: Vec<String>,
    /// `network`, or empty.
    pub network_mode: String,
    /// Attestations by type; `None` for a disabled one.
    pub attests: BTreeMap<String, Option<String>>,
    /// Outputs, each with the annotations as `annotation...` attributes.
    pub exports: Vec<Export>,
}

/// Why a target cannot be built as written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputsError {
    /// `context = "-"` or `dockerfile = "-"`.
    #[error("{0} from stdin not allowed in bake")]
    Stdin(&'static str),
    /// A malformed annotation.
    #[error("invalid annotation {0:?}, expected key=value (optionally TYPE[PLATFORM],...:key=value)")]
    Annotation(String),
}

/// An annotation as an exporter attribute key and value (buildx
/// `ParseAnnotations` + `AnnotationKey.String`).
fn annotation_attrs(a: &str) -> Result<Vec<(String, String)>, InputsError> {
    let bad = || InputsError::Annotation(a.to_string());
    let (k, v) = a.split_once('=').ok_or_else(bad)?;
    let Some((types, key)) = k.split_once(':') else {
        return Ok(vec![(format!("annotation.{k}"), v.to_string())]);
    };
    let mut out = Vec::new();
    for tp in types.split(',') {
        let (kind, platform) = match tp.split_once('[') {
            Some((t, rest)) => (t, Some(rest.strip_suffix(']').ok_or_else(bad)?)),
            None => (tp, None),
        };
        if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            return Err(bad());
        }
        let mut name = format!("annotation-{kind}");
        if let Some(p) = platform {
            name.push_str(&format!("[{p}]"));
        }
        out.push((format!("{name}.{key}"), v.to_string()));
    }
    Ok(out)
}

/// The build inputs of `t`; `cwd` resolves `cwd://` Dockerfile paths.
pub fn build_inputs(t: &Target, cwd: &Path) -> Result<BuildInputs, InputsError> {
    if t.context.as_deref() == Some("-") {
        return Err(InputsError::Stdin("context"));
    }
    if t.dockerfile.as_deref() == Some("-") {
        return Err(InputsError::Stdin("dockerfile"));
    }
    let mut context = t.context.clone().unwrap_or_else(|| ".".into());
    if !context.starts_with("cwd://") && !is_remote(&context) {
        context = clean_path(&context);
    }
    let mut dockerfile = t.dockerfile.clone().unwrap_or_else(|| "Dockerfile".into());
    if !dockerfile.starts_with("cwd://") {
        dockerfile = clean_path(&dockerfile);
    }
    if let Some(v) = dockerfile.strip_prefix("cwd://") {
        let p = clean_path(v);
        dockerfile = if p.starts_with('/') { p } else { clean_path(&format!("{}/{p}", cwd.display())) };
    }
    if let Some(v) = context.strip_prefix("cwd://") {
        context = clean_path(v);
    }
    if !is_remote(&context) && !dockerfile.starts_with('/') {
        dockerfile = clean_path(&format!("{context}/{dockerfile}"));
    }
    let named_contexts = t
        .contexts
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.strip_prefix("cwd://").map(clean_path).unwrap_or_else(|| v.clone())))
        .collect();
    let mut annotations = Vec::new();
    for a in t.annotations.iter().flatten() {
        annotations.extend(annotation_attrs(a)?);
    }
    let exports = t
        .output
        .iter()
        .flatten()
        .map(|e| {
            let mut e = e.clone();
            e.attrs.extend(annotations.iter().cloned());
            e
        })
        .collect();
    let mut attests = BTreeMap::new();
    for a in t.attest.iter().flatten() {
        if attests.contains_key(&a.kind) {
            continue;
        }
        attests.insert(a.kind.clone(), if a.disabled { None } else { Some(a.canonical()) });
    }
    Ok(BuildInputs {
        context_path: context,
        dockerfile_path: dockerfile,
        dockerfile_inline: t.dockerfile_inline.clone(),
        named_contexts,
        allow: t.entitlements.clone().unwrap_or_default(),
        network_mode: t.network.clone().unwrap_or_default(),
        attests,
        exports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_become_exporter_attributes() {
        assert_eq!(annotation_attrs("foo=bar").unwrap(), [("annotation.foo".to_string(), "bar".to_string())]);
        assert_eq!(
            annotation_attrs("manifest[linux/amd64],index:k=v").unwrap(),
            [
                ("annotation-manifest[linux/amd64].k".to_string(), "v".to_string()),
                ("annotation-index.k".to_string(), "v".to_string())
            ]
        );
        assert!(annotation_attrs("novalue").is_err());
    }

    #[test]
    fn dockerfile_is_relative_to_the_context() {
        let t = Target { context: Some("app".into()), dockerfile: Some("Dockerfile.x".into()), ..Default::default() };
        let b = build_inputs(&t, Path::new("/w")).unwrap();
        assert_eq!((b.context_path.as_str(), b.dockerfile_path.as_str()), ("app", "app/Dockerfile.x"));
        let t =
            Target { context: Some("app".into()), dockerfile: Some("cwd://d/Dockerfile".into()), ..Default::default() };
        assert_eq!(build_inputs(&t, Path::new("/w")).unwrap().dockerfile_path, "/w/d/Dockerfile");
    }
}
