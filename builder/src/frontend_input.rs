//! Everything the frontend needs from the command line: the Dockerfile text,
//! `.dockerignore` patterns, build args, platforms, named contexts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use rbuild_frontend::dockerignore;
use rbuild_frontend::lower::{LowerOptions, NamedContext};
use rbuild_solver::graph::Platform;

use crate::cli::BuildArgs;

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

/// Reads the Dockerfile and contexts named by `args`.
pub fn load(args: &BuildArgs) -> Result<FrontendInput> {
    let context_dir = args.context.clone();
    if !context_dir.is_dir() {
        bail!("build context `{}` is not a directory", context_dir.display());
    }
    let dockerfile_path = match &args.file {
        Some(f) if f.as_os_str() == "-" => PathBuf::from("-"),
        Some(f) => f.clone(),
        None => context_dir.join("Dockerfile"),
    };
    let dockerfile_bytes = if dockerfile_path.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
            .context("failed to read the Dockerfile from stdin")?;
        b
    } else {
        std::fs::read(&dockerfile_path)
            .with_context(|| format!("failed to read Dockerfile `{}`", dockerfile_path.display()))?
    };
    let dockerfile = utf8_text(dockerfile_bytes, &dockerfile_path.display().to_string())?;
    let dockerignore = read_dockerignore(&context_dir, &dockerfile_path)?;

    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            // `--build-arg KEY` takes the value from the environment, as docker does.
            None => {
                if let Ok(v) = std::env::var(a) {
                    build_args.insert(a.clone(), v);
                }
            }
        }
    }
    let mut labels = BTreeMap::new();
    for l in &args.label {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let mut named_contexts = BTreeMap::new();
    let mut local_contexts = BTreeMap::new();
    for c in &args.build_context {
        let Some((name, value)) = c.split_once('=') else {
            bail!("invalid `--build-context {c}`: expected NAME=PATH or NAME=docker-image://REF");
        };
        if let Some(r) = value.strip_prefix("docker-image://") {
            named_contexts.insert(name.to_string(), NamedContext::Image(r.to_string()));
        } else if value.contains("://") {
            bail!("`--build-context {c}`: only local directories and docker-image:// are supported");
        } else {
            let dir = PathBuf::from(value);
            if !dir.is_dir() {
                bail!("`--build-context {c}`: `{value}` is not a directory");
            }
            named_contexts.insert(name.to_string(), NamedContext::Local);
            local_contexts.insert(name.to_string(), dir);
        }
    }
    let mut platforms = Vec::new();
    for p in args.platform.iter().flat_map(|p| p.split(',')) {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        platforms.push(Platform::try_parse(p).context("`--platform`: use os/arch[/variant], e.g. linux/amd64")?);
    }
    if platforms.is_empty() {
        platforms.push(Platform::host());
    }
    let lower = LowerOptions {
        target: args.target.clone(),
        build_args,
        build_platform: Platform::host(),
        target_platform: platforms[0].clone(),
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        labels,
        dockerignore: dockerignore.clone(),
        named_contexts,
        file_name: dockerfile_path.display().to_string(),
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
