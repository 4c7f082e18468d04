#!/usr/bin/env bash
# Compress only what someone reads compressed (issue 11): a cold `-t app .`
# build whose RUN writes a ~300 MB layer of real files (an `apt-get
# install`-like tree: this machine's own /usr/lib/x86_64-linux-gnu, packed
# into the context as a tar and unpacked by the RUN), followed by a COPY
# and a CPU-bound RUN (a stand-in for a compile step). Output: the local
# store only. Median of REPEAT (default 3) cold builds of each of
#   - layers compressed at export, after the last step (RBUILD_BACKGROUND_LAYERS=0,
#     how rbuild worked before),
#   - layers compressed in the background as each step commits (the default),
#   - `compression=uncompressed` (no compression at all: the floor of any
#     scheme that defers compression to the first push),
# and the wall time of the export phase (from "exporting layers" to the end)
# as rbuild's plain progress shows it.
#   bash bench/big_layer.sh        (RBUILD_SKIP_BUILD=1 to reuse target/release)
source "$(dirname "$0")/lib.sh"
[ -n "${RBUILD_SKIP_BUILD:-}" ] || build_release
start_registry
REPEAT=${REPEAT:-3}
MB=${BIG_LAYER_MB:-300}

ctx=$WORK/big-ctx
if [ ! -f "$ctx/.complete-$MB" ]; then
  rm -rf "$ctx"; mkdir -p "$ctx"
  # Real binaries, libraries and data files up to ~MB megabytes.
  (cd / && find usr/lib/x86_64-linux-gnu -type f -size -20M -printf '%s %p\n' | sort -k2 |
     awk -v max=$((MB * 1000000)) '{ if (tot + $1 > max) exit; tot += $1; print $2 }') > "$ctx/files.txt"
  tar -cf "$ctx/usr.tar" -C / -T "$ctx/files.txt"
  echo "app v1" > "$ctx/app.txt"
  touch "$ctx/.complete-$MB"
fi
cat > "$ctx/Dockerfile" <<DF
FROM $REGISTRY/busybox:latest
RUN --mount=type=bind,source=usr.tar,target=/tmp/usr.tar tar -xf /tmp/usr.tar -C /
COPY app.txt /app/
RUN i=0; while [ \$i -lt 400000 ]; do i=\$((i+1)); done; echo built > /app/built
DF
printf '.complete*\nfiles.txt\n' > "$ctx/.dockerignore"
echo "layer: $(du -sm --apparent-size "$ctx/usr.tar" | cut -f1) MB of real files; $(nproc) CPUs; load $(cut -d' ' -f1 /proc/loadavg)"
export SOURCE_DATE_EPOCH=1700000000

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# one VARIANT ENV...: wall seconds of a cold build; the export phase's
# seconds (plain progress timestamps are not printed, so it is measured as
# the time from the line "exporting layers" to the end) in $WORK/big-export.
one() {
  local store=$WORK/big-store log=$WORK/big-$1.log s e x
  rm -rf "$store"; sync
  s=$(date +%s.%N)
  env "${@:2}" "$RBUILD" --root "$store" build --progress plain ${EXTRA:--t bench/big:1} "$ctx" 2>&1 |
    while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done > "$log"
  e=$(date +%s.%N)
  grep -q "writing image" "$log" || { tail -20 "$log" >&2; exit 1; }
  x=$(awk '/exporting layers/ {print $1; exit}' "$log")
  echo "$e - $x" | bc -l >> "$WORK/big-$1.x"
  echo "$e - $s" | bc -l
}
for v in export background uncompressed; do : > "$WORK/big-$v.t"; : > "$WORK/big-$v.x"; done
for _ in $(seq "$REPEAT"); do
  one export RBUILD_BACKGROUND_LAYERS=0 >> "$WORK/big-export.t"
  one background RBUILD_BACKGROUND_LAYERS=1 >> "$WORK/big-background.t"
  EXTRA="-o type=image,name=bench/big:1,compression=uncompressed" one uncompressed RBUILD_BACKGROUND_LAYERS=1 >> "$WORK/big-uncompressed.t"
done
rm -rf "$WORK/big-store"
for v in export background uncompressed; do
  printf '%-44s %8.2f s   (export phase %5.2f s)\n' "cold -t app, layers compressed: $v" \
    "$(median < "$WORK/big-$v.t")" "$(median < "$WORK/big-$v.x")"
done
