#!/usr/bin/env bash
# The whole test suite: set-up, formatting and lints (as CI runs them), then
# unit, conformance and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --deps-only
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace 2>&1
