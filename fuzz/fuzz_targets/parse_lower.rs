//! Feeds arbitrary UTF-8 to the whole frontend: parse, typed instructions,
//! lowering with an in-memory base-image resolver, and the `--call`
//! outline/check paths. Any panic is a bug: bad input must be an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild_frontend::lower::{parse_and_lower, ImageConfigResolver, LowerOptions, ResolveError, ResolvedBase};
use rbuild_solver::graph::Platform;
use rbuild_cache::oci::ImageConfig;

/// Every image resolves to a small config; names containing `missing` fail
/// and names containing `onbuild` carry a trigger, so both paths are fuzzed.
struct Images;

impl ImageConfigResolver for Images {
    fn resolve_all(&self, requests: &[(String, Platform)]) -> Vec<Result<ResolvedBase, ResolveError>> {
        requests
            .iter()
            .map(|(r, p)| {
                if r.contains("missing") {
                    return Err(ResolveError::new("manifest unknown"));
                }
                let mut config =
                    ImageConfig { architecture: p.architecture.clone(), os: p.os.clone(), ..Default::default() };
                config.config.env = vec!["PATH=/bin".into()];
                config.config.working_dir = "/base".into();
                if r.contains("onbuild") {
                    config.config.on_build = vec!["RUN echo triggered".into(), "COPY a /a".into()];
                }
                Ok(ResolvedBase { reference: format!("docker.io/library/{r}@sha256:{}", "0".repeat(64)), config })
            })
            .collect()
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let opts = LowerOptions {
        build_platform: Platform::parse("linux/amd64").unwrap(),
        target_platform: Platform::parse("linux/arm64").unwrap(),
        ..Default::default()
    };
    let _ = parse_and_lower(text, &opts, &Images);
    if let Ok(df) = rbuild_frontend::instructions::parse_dockerfile(text, "Dockerfile") {
        let _ = rbuild_frontend::outline::targets(&df);
        let _ = rbuild_frontend::outline::outline(&df, &opts);
        let _ = rbuild_frontend::outline::check(&df, text, &opts).render("Dockerfile", text);
    }
});
