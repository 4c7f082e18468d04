//! Everything the frontend needs from a build request: the Dockerfile text,
//! `.dockerignore` patterns, build args, platforms, named contexts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use rbuild_frontend::lower::{LowerOptions, NamedContext};
use rbuild_solver::dockerignore;
use rbuild_solver::graph::Platform;

use crate::request::{BuildRequest, ContextSource, DockerfileSource};

/// The Dockerfile and the contexts of one build.
#[derive(Debug, Clone)]
pub struct FrontendInput {
    /// Dockerfile path as given (for messages).
    pub dockerfile_name: String,
    /// Dockerfile text.
    pub dockerfile: String,
    /// Main context directory.
    pub context_dir: PathBuf,
    /// `.dockerignore` patterns.
    pub dockerignore: Vec<String>,
    /// Local named contexts: name -> directory.
    pub local_contexts: BTreeMap<String, PathBuf>,
    /// Lowering options (platform filled per platform).
    pub lower: LowerOptions,
    /// Target platforms (at least one).
    pub platforms: Vec<Platform>,
}

/// Reads the Dockerfile and contexts `request` names.
pub fn load(request: &BuildRequest) -> Result<FrontendInput> {
    let context_dir = request.context.clone();
    if !context_dir.is_dir() {
        bail!("build context `{}` is not a directory", context_dir.display());
    }
    let (dockerfile_path, dockerfile_bytes) = match &request.dockerfile {
        DockerfileSource::Stdin => {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
                .context("failed to read the Dockerfile from stdin")?;
            (PathBuf::from("-"), b)
        }
        DockerfileSource::Path(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("failed to read Dockerfile `{}`", path.display()))?;
            (path.clone(), bytes)
        }
    };
    let dockerfile = utf8_text(dockerfile_bytes, &dockerfile_path.display().to_string())?;
    let dockerignore = read_dockerignore(&context_dir, &dockerfile_path)?;

    let mut named_contexts = BTreeMap::new();
    let mut local_contexts = BTreeMap::new();
    for (name, source) in &request.contexts {
        match source {
            ContextSource::Image(r) => {
                named_contexts.insert(name.clone(), NamedContext::Image(r.clone()));
            }
            // The other request's graph is filled in per platform by the
            // build that lowers both; until then (a `--call` method that
            // only reads the Dockerfile) an empty graph: scratch.
            ContextSource::Request(_) => {
                named_contexts.insert(name.clone(), NamedContext::Graph(Default::default()));
            }
            ContextSource::Local(dir) => {
                named_contexts.insert(name.clone(), NamedContext::Local);
                local_contexts.insert(name.clone(), dir.clone());
            }
        }
    }
    let platforms = request.platforms.clone();
    let lower = LowerOptions {
        target: request.target.clone(),
        build_args: request.args.clone(),
        build_platform: Platform::host(),
        target_platform: platforms[0].clone(),
        no_cache: request.no_cache,
        no_cache_filter: request.no_cache_filter.clone(),
        labels: request.labels.clone(),
        dockerignore: dockerignore.clone(),
        named_contexts,
        // Filled per build by the caller, which knows the other requests.
        context_origins: BTreeMap::new(),
        file_name: dockerfile_path.display().to_string(),
        default_network: request.run_limits.network,
        // Checked by the caller, which lowers for a build (not a graph dump).
        entitlements: None,
        ulimits: request.run_limits.ulimits.clone(),
        shm_size: request.run_limits.shm_size.unwrap_or(0),
        extra_hosts: request.run_limits.extra_hosts.clone(),
    };
    Ok(FrontendInput {
        dockerfile_name: dockerfile_path.display().to_string(),
        dockerfile,
        context_dir,
        dockerignore,
        local_contexts,
        lower,
        platforms,
    })
}

/// `<Dockerfile>.dockerignore` next to the Dockerfile wins over the
/// context's `.dockerignore`, as in BuildKit.
fn read_dockerignore(context: &Path, dockerfile: &Path) -> Result<Vec<String>> {
    let specific = PathBuf::from(format!("{}.dockerignore", dockerfile.display()));
    for candidate in [specific, context.join(".dockerignore")] {
        match std::fs::read(&candidate) {
            Ok(bytes) => {
                let text = utf8_text(bytes, &candidate.display().to_string())?;
                return Ok(dockerignore::parse_dockerignore(&text));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("failed to read `{}`", candidate.display())),
        }
    }
    Ok(Vec::new())
}

/// The file's text, or an error naming the line and column of the first
/// byte that is not UTF-8. Neither file is ever decoded lossily: that would
/// silently change a `RUN` line, and moby's pattern compiler rejects
/// invalid UTF-8 in `.dockerignore` patterns too.
fn utf8_text(bytes: Vec<u8>, name: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&valid[line_start..]).chars().count() + 1;
        let byte = e.as_bytes()[valid.len()];
        anyhow::anyhow!("{name}:{line}:{column}: invalid UTF-8 (byte 0x{byte:02x}): save the file as UTF-8")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_names_line_and_column() {
        let err = utf8_text(b"FROM busybox\nRUN echo caf\xe9\n".to_vec(), "Dockerfile").unwrap_err();
        assert_eq!(err.to_string(), "Dockerfile:2:13: invalid UTF-8 (byte 0xe9): save the file as UTF-8");
        let err = utf8_text(b"\xff".to_vec(), "x/.dockerignore").unwrap_err();
        assert_eq!(err.to_string(), "x/.dockerignore:1:1: invalid UTF-8 (byte 0xff): save the file as UTF-8");
        assert_eq!(utf8_text("ünï\n".into(), "f").unwrap(), "ünï\n");
    }
}
