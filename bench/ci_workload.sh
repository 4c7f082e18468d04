#!/usr/bin/env bash
# The CI-style workload of issue 3, against the release binary:
#   multi-stage Dockerfile with an unused stage, ~20,000 small files
#   (~100 MB) of context, a busybox base on a loopback registry.
# Prints cold build, no-op rebuild, one-file-changed rebuild, per-RUN
# sandbox overhead, and the two-parallel-sleeps overlap check.
source "$(dirname "$0")/lib.sh"
build_release
start_registry

ctx=$WORK/ctx
make_workload_context "$ctx"
write_workload_dockerfile "$ctx" "$REGISTRY/busybox:latest"
files=$(find "$ctx/src" -type f | wc -l); size=$(du -sm "$ctx/src" | cut -f1)
echo "context: $files files, ${size} MB"

store=$WORK/store; rm -rf "$store"; sync   # as ../shared/peers does before its cold build
logs=$WORK/logs; mkdir -p "$logs"
cold=$(timed_json "$logs/cold.json" "$RBUILD" --root "$store" build --progress rawjson -t bench:cold "$ctx")
noop=$(timed_json "$logs/noop.json" "$RBUILD" --root "$store" build --progress rawjson -t bench:cold "$ctx")
echo "changed $(date +%s%N)" >> "$ctx/src/pkg100/file050.txt"
onefile=$(timed_json "$logs/onefile.json" "$RBUILD" --root "$store" build --progress rawjson -t bench:cold "$ctx")
read -r cold_copy cold_run cold_export < <(breakdown "$logs/cold.json" "$cold")
read -r one_copy one_run one_export one_dep < <(breakdown "$logs/onefile.json" "$onefile" "find /app/src -type f")
# The floor of a one-file change: re-running the RUN that reads the file
# and exporting the layers that changed; the rest is overhead.
floor=$(echo "1.3 * ($one_dep + $one_export)" | bc -l | xargs printf '%.3f')

# Per-RUN overhead: 50 uncached `RUN true` minus 50 bare process runs.
runs=$WORK/runs; mkdir -p "$runs"
{ echo "FROM $REGISTRY/busybox:latest"; for i in $(seq 1 50); do echo "RUN true # $i"; done; } > "$runs/Dockerfile"
"$RBUILD" --root "$store" build --progress plain "$runs" >/dev/null 2>&1   # pull the base once
base_only=$WORK/base-only; mkdir -p "$base_only"; echo "FROM $REGISTRY/busybox:latest" > "$base_only/Dockerfile"
t_base=$(seconds "$RBUILD" --root "$store" build --no-cache --progress plain "$base_only")
t_runs=$(seconds "$RBUILD" --root "$store" build --no-cache --progress plain "$runs")
t_bare=$(python3 - <<'PY'
import subprocess, time
n = 50; t = time.perf_counter()
for _ in range(n): subprocess.run(["/bin/busybox", "true"])
print(f"{(time.perf_counter() - t):.4f}")
PY
)
per_run=$(echo "($t_runs - $t_base - $t_bare) * 1000 / 50" | bc -l | xargs printf '%.1f')

# Independent stages overlap: two `sleep 2` stages.
par=$WORK/par; mkdir -p "$par"
cat > "$par/Dockerfile" <<DF
FROM $REGISTRY/busybox:latest AS a
RUN sleep 2 && echo a > /a
FROM $REGISTRY/busybox:latest AS b
RUN sleep 2 && echo b > /b
FROM $REGISTRY/busybox:latest
COPY --from=a /a /a
COPY --from=b /b /b
DF
t_par=$(seconds "$RBUILD" --root "$store" build --no-cache --progress plain "$par")

printf '%-34s %8s   (COPY %ss, RUN %ss, export %ss)\n' "cold build" "${cold}s" "$cold_copy" "$cold_run" "$cold_export"
printf '%-34s %8s\n' "no-op rebuild" "${noop}s"
printf '%-34s %8s   (COPY %ss, RUN %ss, export %ss)\n' "one source file changed" "${onefile}s" "$one_copy" "$one_run" "$one_export"
printf '%-34s %8s   (dependent RUN %ss + export %ss; %s)\n' "  bound: 1.3 x (RUN + export)" "${floor}s" \
  "$one_dep" "$one_export" "$(echo "$onefile <= $floor" | bc -l | sed 's/1/holds/;s/0/does NOT hold/')"
printf '%-34s %8s\n' "per uncached RUN step (overhead)" "${per_run}ms"
printf '%-34s %8s\n' "two parallel 'sleep 2' stages" "${t_par}s"
