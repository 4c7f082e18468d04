//! Placeholder replaced by the outline helper's branch.
