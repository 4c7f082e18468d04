#!/usr/bin/env bash
# Remote build cache on the bench/ci_workload.sh workload (multi-stage,
# ~20,000 small files of context, busybox base on a loopback registry).
# Prints: the cold build; the cost of a `--cache-to` export with mode=min and
# mode=max (a warm build with the export minus the warm no-op rebuild, and
# the export time rbuild reports itself); and a fresh-store build with
# `--cache-from` (everything cached) vs the local no-op rebuild.
#   bash bench/remote_cache.sh           (RBUILD_SKIP_BUILD=1 to reuse target/release)
source "$(dirname "$0")/lib.sh"
[ -n "${RBUILD_SKIP_BUILD:-}" ] || build_release
start_registry

ctx=$WORK/ctx
if [ ! -f "$ctx/.complete" ]; then
  rm -rf "$ctx" && mkdir -p "$ctx/src"
  python3 - "$ctx/src" <<'PY'
import os, random, sys
root = sys.argv[1]; random.seed(42)
for d in range(200):
    dd = os.path.join(root, f"pkg{d:03d}"); os.makedirs(dd)
    for f in range(100):
        with open(os.path.join(dd, f"file{f:03d}.txt"), "wb") as fh:
            fh.write(bytes(random.getrandbits(8) for _ in range(2500)) + b"x" * 2500)
PY
  seq 1 300 > "$ctx/package-list.txt"
  touch "$ctx/.complete"
fi
cat > "$ctx/Dockerfile" <<DF
FROM $REGISTRY/busybox:latest AS base
RUN echo base > /base.txt
FROM base AS deps
COPY package-list.txt /app/
RUN wc -l < /app/package-list.txt > /app/deps.txt
FROM deps AS build
COPY src/ /app/src/
RUN find /app/src -type f | wc -l > /app/count.txt
FROM base
COPY --from=build /app/count.txt /app/deps.txt /app/
COPY --from=build /app/src /app/src
CMD ["cat", "/app/count.txt"]
DF
echo ".complete" > "$ctx/.dockerignore"
export SOURCE_DATE_EPOCH=1700000000

store=$WORK/rc-store; fresh=$WORK/rc-fresh
rm -rf "$store" "$fresh"; sync
b() { "$RBUILD" --root "$1" build --progress plain -o type=image,name=bench/rc:1 "${@:2}" "$ctx"; }
# export_secs LOGFILE: the export time rbuild printed ("exported cache: ... in Xs").
export_secs() { sed -n 's/.*exported cache: .* in \([0-9.]*\)s.*/\1/p' "$1" | tail -1; }

cold=$(seconds b "$store")
noop=$(seconds b "$store")
start=$(date +%s.%N); b "$store" --cache-to "type=registry,ref=$REGISTRY/cache:min,mode=min" > "$WORK/rc-min.log" 2>&1
t_min=$(echo "$(date +%s.%N) - $start" | bc -l)
start=$(date +%s.%N); b "$store" --cache-to "type=registry,ref=$REGISTRY/cache:max,mode=max" > "$WORK/rc-max.log" 2>&1
t_max=$(echo "$(date +%s.%N) - $start" | bc -l)
# Again: the intermediate layers now exist locally and in the registry.
start=$(date +%s.%N); b "$store" --cache-to "type=registry,ref=$REGISTRY/cache:max,mode=max" > "$WORK/rc-max2.log" 2>&1
t_max2=$(echo "$(date +%s.%N) - $start" | bc -l)
from=$(seconds b "$fresh" --cache-from "$REGISTRY/cache:max")
ran=$("$RBUILD" --root "$WORK/rc-fresh2" build --progress rawjson -o type=image,name=bench/rc:1 --cache-from "$REGISTRY/cache:max" "$ctx" 2>&1 | grep -c '"type":"started"' || true)
final_bytes=$(du -sb "$fresh/blobs" | cut -f1)
rm -rf "$WORK/rc-fresh2"

printf 'cold build:                          %8.3f s\n' "$cold"
printf 'local no-op rebuild:                 %8.3f s\n' "$noop"
printf 'export mode=min (first):   wall +%6.3f s over no-op, rbuild says %s s\n' "$(echo "$t_min - $noop" | bc -l)" "$(export_secs "$WORK/rc-min.log")"
printf 'export mode=max (first):   wall +%6.3f s over no-op, rbuild says %s s\n' "$(echo "$t_max - $noop" | bc -l)" "$(export_secs "$WORK/rc-max.log")"
printf 'export mode=max (again):   wall +%6.3f s over no-op, rbuild says %s s\n' "$(echo "$t_max2 - $noop" | bc -l)" "$(export_secs "$WORK/rc-max2.log")"
printf 'fresh store, --cache-from max:       %8.3f s (%s steps ran; store holds %s bytes of blobs)\n' "$from" "$ran" "$final_bytes"
printf 'ratio fresh --cache-from / no-op:    %8.2f\n' "$(echo "$from / $noop" | bc -l)"
rm -rf "$store" "$fresh"
