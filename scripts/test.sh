#!/usr/bin/env bash
# The whole test suite: set-up, then unit, conformance and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --deps-only
cargo test --locked --workspace 2>&1
