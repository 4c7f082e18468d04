//! Predefined ARGs: the platform ARGs BuildKit defines in the global scope
//! and the proxy ARGs that may be passed without being declared.

use rbuild_solver::graph::Platform;

/// Proxy ARGs: usable in RUN without an `ARG` line, and kept out of the
/// history (they often carry credentials).
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// `BUILDPLATFORM`, `TARGETPLATFORM` and their parts.
#[derive(Clone, Debug)]
pub struct BuiltinArgs {
    values: Vec<(&'static str, String)>,
}

impl BuiltinArgs {
    /// The builtin values for a build on `build` producing `target`.
    pub fn new(build: &Platform, target: &Platform) -> Self {
        let values = vec![
            ("BUILDPLATFORM", build.to_string()),
            ("BUILDOS", build.os.clone()),
            ("BUILDARCH", build.architecture.clone()),
            ("BUILDVARIANT", build.variant.clone().unwrap_or_default()),
            ("TARGETPLATFORM", target.to_string()),
            ("TARGETOS", target.os.clone()),
            ("TARGETARCH", target.architecture.clone()),
            ("TARGETVARIANT", target.variant.clone().unwrap_or_default()),
        ];
        BuiltinArgs { values }
    }

    /// The value of a builtin ARG.
    pub fn get(&self, name: &str) -> Option<String> {
        self.values.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
    }

    /// Names of all builtin ARGs.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.values.iter().map(|(k, _)| *k)
    }
}
