#!/usr/bin/env bash
# Differential compatibility tests (builder/tests/compat.rs) over the cases in
# testdata/compat/<case>/.
#
#   scripts/compat.sh                         check rbuild against the goldens
#                                             (as root also rootless, as CI does)
#   scripts/compat.sh --regen --reference docker
#                                             rewrite goldens from Docker/BuildKit
#                                             at $DOCKER_HOST (cases with a
#                                             `pinned` reason are skipped)
#   scripts/compat.sh --regen --reference rbuild
#                                             rewrite goldens from rbuild, to
#                                             review with `git diff` (never commit
#                                             them unreviewed: goldens are what
#                                             BuildKit produces)
#   scripts/compat.sh --cases a,b ...         only those cases
#
# Prints one line per case and `N passed, M failed`.
set -euo pipefail
cd "$(dirname "$0")/.."
regen="" reference="" cases=""
while [ $# -gt 0 ]; do
  case "$1" in
    --regen) regen=1 ;;
    --reference) reference=${2:?--reference needs docker or rbuild}; shift ;;
    --cases) cases=${2:?--cases needs a comma-separated list}; shift ;;
    *) echo "usage: $0 [--regen --reference docker|rbuild] [--cases a,b]" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$cases" ] && export COMPAT_CASES=$cases
if [ -n "$regen" ]; then
  case "$reference" in
    docker)
      command -v "${COMPAT_DOCKER:-docker}" >/dev/null || { echo "$0: no docker CLI (set COMPAT_DOCKER)" >&2; exit 1; }
      "${COMPAT_DOCKER:-docker}" version >/dev/null || { echo "$0: no Docker daemon at ${DOCKER_HOST:-the default socket}" >&2; exit 1; } ;;
    rbuild) ;;
    *) echo "$0: --regen needs --reference docker|rbuild" >&2; exit 2 ;;
  esac
  COMPAT_REGEN=$reference exec cargo test -p rbuild --test compat compat_cases_match_buildkit -- --exact --nocapture
fi
exec cargo test -p rbuild --test compat -- --nocapture --test-threads=1
