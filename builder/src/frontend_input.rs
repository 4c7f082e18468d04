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
    let (dockerfile_path, dockerfile) = match &request.dockerfile {
        DockerfileSource::Stdin => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            (PathBuf::from("-"), s)
        }
        DockerfileSource::Path(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read Dockerfile `{}`", path.display()))?;
            (path.clone(), text)
        }
    };
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
        match std::fs::read_to_string(&candidate) {
            Ok(text) => return Ok(dockerignore::parse_dockerignore(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("failed to read `{}`", candidate.display())),
        }
    }
    Ok(Vec::new())
}
