#!/usr/bin/env bash
# Parse+lower benchmark: generates a 5,000-instruction, 50-stage Dockerfile,
# builds the release binary and runs `rbuild debug graph --timings` N times,
# printing the `parse+lower: X.XXX ms` line the binary writes to stderr and
# the median. Target: under 20 ms.
#
# Usage: bench/parse_lower.sh [N]   (default 10)
# RBUILD_BENCH_EXAMPLE=1 uses the frontend's `parse_lower` example instead
# (in-memory resolver, per-phase times) when the binary lacks --timings.
set -euo pipefail
n=${1:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 "$root/bench/gen_dockerfile.py" "$work/Dockerfile"
mkdir -p "$work/context"

times=()
if [[ "${RBUILD_BENCH_EXAMPLE:-0}" == 1 ]]; then
    cargo build --quiet --release -p rbuild-frontend --example parse_lower --manifest-path "$root/Cargo.toml"
    out=$("$root/target/release/examples/parse_lower" "$work/Dockerfile" "$n" 2>&1 >/dev/null)
    mapfile -t times < <(sed -n 's/^parse+lower: \([0-9.]*\) ms$/\1/p' <<<"$out")
    "$root/target/release/examples/parse_lower" "$work/Dockerfile" 1 2>/dev/null
else
    cargo build --quiet --release -p rbuild --manifest-path "$root/Cargo.toml"
    bin="$root/target/release/rbuild"
    for _ in $(seq "$n"); do
        line=$("$bin" debug graph --timings -f "$work/Dockerfile" "$work/context" 2>&1 >/dev/null | grep '^parse+lower:' || true)
        [[ -n "$line" ]] || { echo "no 'parse+lower:' line on stderr; does 'rbuild debug graph' support --timings?" >&2; exit 1; }
        times+=("$(sed 's/^parse+lower: \([0-9.]*\) ms$/\1/' <<<"$line")")
    done
fi
for t in "${times[@]}"; do echo "parse+lower: $t ms"; done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median of %d runs: %.3f ms (target < 20 ms)\n", NR, a[int((NR+1)/2)]}'
