//! Shared helpers of the solver's conformance tests.

use std::path::PathBuf;

/// `shared/conformance/<sub>`: `shared/` sits next to the repository
/// checkout (two levels up from the crate; three from a `wt/<name>`
/// worktree). The nearest ancestor that has it wins; none is a failure, not
/// a skip.
pub fn conformance_dir(sub: &str) -> PathBuf {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .map(|dir| dir.join("shared/conformance").join(sub))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| panic!("conformance data `{sub}` not found above {}", crate_dir.display()))
}
