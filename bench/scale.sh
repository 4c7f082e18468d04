#!/usr/bin/env bash
# How cost grows (issue 11), against the release binary:
#   contexts of 20k, 100k and 200k files: cold build, no-op rebuild and
#     one-file-changed rebuild wall time, and peak memory (/usr/bin/time -v);
#   base chains of 10, 60 and 120 layers: the time of one uncached RUN;
#   8, 32 and 64 independent stages: wall time against the sum of their RUNs.
# Checks: no-op of 200k files at most 12x that of 20k, peak memory at most
# 300 MB at 200k files. SCALE_SIZES="20000 100000" picks other sizes;
# SCALE_CONTEXTS_ONLY=1 stops after the context table.
source "$(dirname "$0")/lib.sh"
build_release
start_registry
sizes=${SCALE_SIZES:-20000 100000 200000}

# make_context DIR N: N files of 1 KB (half random) in directories of 100.
make_context() {
  local dir=$1 n=$2
  [ -f "$dir/.complete" ] && return 0
  rm -rf "$dir" && mkdir -p "$dir/src"
  python3 - "$dir/src" "$n" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2]); random.seed(n)
for i in range(n):
    d = os.path.join(root, f"d{i // 100:05d}")
    if i % 100 == 0:
        os.makedirs(d)
    with open(os.path.join(d, f"f{i % 100:03d}.txt"), "wb") as fh:
        fh.write(random.randbytes(512) + b"x" * 512)
PY
  echo ".complete" > "$dir/.dockerignore"
  touch "$dir/.complete"
}

# write_dockerfile DIR: the context's Dockerfile (the registry's port is
# new on every run).
write_dockerfile() {
  cat > "$1/Dockerfile" <<DF
FROM $REGISTRY/busybox:latest
COPY src/ /app/src/
RUN find /app/src -type f | wc -l > /app/count.txt
DF
}

# measured OUT COMMAND...: wall seconds; peak RSS (KB) in OUT.rss.
measured() {
  local out=$1; shift
  local start end
  start=$(date +%s.%N)
  /usr/bin/time -v -o "$out.time" "$@" >"$out" 2>&1 || { echo "command failed: $*" >&2; tail -20 "$out" >&2; exit 1; }
  end=$(date +%s.%N)
  awk -F': ' '/Maximum resident set size/ {print $2}' "$out.time" > "$out.rss"
  echo "$end - $start" | bc -l | xargs printf '%.3f'
}

logs=$WORK/scale-logs; mkdir -p "$logs"
printf '%-10s %9s %9s %11s %14s %14s\n' files cold no-op one-change "peak MB cold" "peak MB no-op"
declare -A NOOP PEAK
for n in $sizes; do
  ctx=$WORK/scale-ctx-$n
  make_context "$ctx" "$n"
  write_dockerfile "$ctx"
  # A new store per size, all removed at the end: ext4 skips inodes freed
  # in the last seconds when allocating, so creating files right after
  # deleting a large store costs superlinearly more (seen in perf as
  # `recently_deleted`), which is not what this measures.
  store=$WORK/scale-store-$n; rm -rf "$store"
  cold=$(measured "$logs/cold-$n" "$RBUILD" --root "$store" build --progress rawjson -t scale:$n "$ctx")
  noop=$(measured "$logs/noop-$n" "$RBUILD" --root "$store" build --progress rawjson -t scale:$n "$ctx")
  echo "changed $(date +%s%N)" >> "$ctx/src/d00000/f050.txt"
  one=$(measured "$logs/one-$n" "$RBUILD" --root "$store" build --progress rawjson -t scale:$n "$ctx")
  rss_cold=$(( $(cat "$logs/cold-$n.rss") / 1024 )); rss_noop=$(( $(cat "$logs/noop-$n.rss") / 1024 ))
  rss_one=$(( $(cat "$logs/one-$n.rss") / 1024 ))
  peak=$(( rss_cold > rss_one ? rss_cold : rss_one )); peak=$(( peak > rss_noop ? peak : rss_noop ))
  NOOP[$n]=$noop; PEAK[$n]=$peak
  printf '%-10s %8ss %8ss %10ss %14s %14s\n' "$n" "$cold" "$noop" "$one" "$rss_cold" "$rss_noop"
done
rm -rf "$WORK"/scale-store-*
store=$WORK/scale-store-runs; rm -rf "$store"
first=$(echo "$sizes" | awk '{print $1}'); last=$(echo "$sizes" | awk '{print $NF}')
if [ "$first" != "$last" ]; then
  ratio=$(echo "${NOOP[$last]} / ${NOOP[$first]}" | bc -l | xargs printf '%.1f')
  files_ratio=$(( last / first ))
  printf 'no-op %s vs %s files: %sx (files x%s; bound 12x: %s)\n' "$last" "$first" "$ratio" "$files_ratio" \
    "$(echo "$ratio <= 12" | bc -l | sed 's/1/holds/;s/0/does NOT hold/')"
fi
printf 'peak memory at %s files: %s MB (bound 300 MB: %s)\n' "$last" "${PEAK[$last]}" \
  "$( [ "${PEAK[$last]}" -le 300 ] && echo holds || echo 'does NOT hold')"

[ -n "${SCALE_CONTEXTS_ONLY:-}" ] && exit 0

# One uncached RUN over base chains of 10, 60 and 120 layers: the chain is
# built (and cached) once, then only the last RUN's text changes.
echo
printf '%-14s %14s\n' "base layers" "uncached RUN"
for layers in 10 60 120; do
  dir=$WORK/chain-$layers; rm -rf "$dir"; mkdir -p "$dir"
  { echo "FROM $REGISTRY/busybox:latest"; for i in $(seq 2 "$layers"); do echo "RUN echo $i > /layer$i"; done; } > "$dir/Dockerfile.base"
  { cat "$dir/Dockerfile.base"; echo "RUN echo warm > /top"; } > "$dir/Dockerfile"
  "$RBUILD" --root "$store" build --progress plain "$dir" >/dev/null 2>&1
  { cat "$dir/Dockerfile.base"; echo "RUN echo $(date +%s%N) > /top"; } > "$dir/Dockerfile"
  "$RBUILD" --root "$store" build --progress rawjson "$dir" > "$logs/chain-$layers" 2>&1
  top=$(breakdown "$logs/chain-$layers" 0 "> /top" | awk '{printf "%.1f", $4 * 1000}')
  printf '%-14s %12sms\n' "$layers" "$top"
done

# Independent stages: K stages each `RUN sleep 0.3`, all copied into the
# last one; wall time of the build against the sum of the RUN times.
echo
jobs=$(nproc)
printf '%-8s %9s %12s %18s\n' stages wall "sum of RUNs" "sum / jobs ($jobs)"
for k in 8 32 64; do
  dir=$WORK/stages-$k; rm -rf "$dir"; mkdir -p "$dir"
  {
    for i in $(seq 1 "$k"); do printf 'FROM %s/busybox:latest AS s%s\nRUN sleep 0.3 && echo %s > /o\n' "$REGISTRY" "$i" "$i"; done
    echo "FROM $REGISTRY/busybox:latest"
    for i in $(seq 1 "$k"); do echo "COPY --from=s$i /o /o$i"; done
  } > "$dir/Dockerfile"
  wall=$(timed_json "$logs/stages-$k" "$RBUILD" --root "$store" build --no-cache --progress rawjson "$dir")
  read -r _ runs _ < <(breakdown "$logs/stages-$k" "$wall")
  printf '%-8s %8ss %11ss %17ss\n' "$k" "$wall" "$runs" "$(echo "$runs / $jobs" | bc -l | xargs printf '%.3f')"
done
rm -rf "$store"
