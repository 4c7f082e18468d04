#!/usr/bin/env bash
# Compress only what someone reads compressed (issue 11): a cold `-t app .`
# build whose RUN writes a ~300 MB layer of real files (an `apt-get
# install`-like tree: this machine's own /usr/lib/x86_64-linux-gnu, packed
# into the context as a tar and unpacked by the RUN), followed by a COPY
# and a CPU-bound RUN (a stand-in for a compile step). Medians of REPEAT
# (default 3) rounds, each round running every variant once (interleaved):
#   - cold `-t app` with layers compressed in the background as each step
#     commits (RBUILD_DEFER_LAYERS=0: how rbuild worked before deferred
#     layers), then `rbuild push` of it (upload only);
#   - cold `-t app` with deferred layers (the default: nothing compressed),
#     then `rbuild push` of it (compresses once, then uploads), then a
#     second `rbuild push` to another name (reuses the compressed blobs);
#   - cold `-o type=registry` (build and push in one, compressed as each
#     step commits);
#   - `compression=uncompressed` into the store (writes tar blobs: the floor
#     of any scheme that defers compression to the first push);
# and the wall time of each build's export phase (from "exporting layers"
# to the end) as rbuild's plain progress shows it.
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
# build VARIANT STORE ENV...: wall seconds of a cold build into STORE
# (wiped first); the export phase's seconds (plain progress timestamps are
# not printed, so it is measured as the time from the line "exporting
# layers" to the end) go to $WORK/big-VARIANT.x.
build() {
  local v=$1 store=$2 log=$WORK/big-$1.log s e x
  rm -rf "$store"; sync
  s=$(date +%s.%N)
  if ! env "${@:3}" "$RBUILD" --root "$store" build --progress plain ${EXTRA:--t bench/big:1} "$ctx" 2>&1 |
    while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done > "$log"; then
    tail -20 "$log" >&2; exit 1
  fi
  e=$(date +%s.%N)
  x=$(awk '/exporting layers/ {print $1; exit}' "$log")
  echo "$e - $x" | bc -l >> "$WORK/big-$v.x"
  echo "$e - $s" | bc -l >> "$WORK/big-$v.t"
}
# push VARIANT STORE DEST: wall seconds of `rbuild push bench/big:1 DEST`.
push() {
  local s e
  s=$(date +%s.%N)
  "$RBUILD" --root "$2" push --progress plain bench/big:1 "$3" > "$WORK/big-$1.log" 2>&1 ||
    { tail -20 "$WORK/big-$1.log" >&2; exit 1; }
  e=$(date +%s.%N)
  echo "$e - $s" | bc -l >> "$WORK/big-$1.t"
}
variants="eager eager-push deferred deferred-push deferred-push2 registry uncompressed"
for v in $variants; do : > "$WORK/big-$v.t"; : > "$WORK/big-$v.x"; done
for i in $(seq "$REPEAT"); do
  # A new repository per push: the registry has no link to the blobs yet,
  # so every push uploads.
  build eager "$WORK/big-store-e" RBUILD_DEFER_LAYERS=0
  push eager-push "$WORK/big-store-e" "$REGISTRY/bench/eager-$i-$$:1"
  rm -rf "$WORK/big-store-e"
  build deferred "$WORK/big-store-d"
  push deferred-push "$WORK/big-store-d" "$REGISTRY/bench/deferred-$i-$$:1"
  push deferred-push2 "$WORK/big-store-d" "$REGISTRY/bench/deferred2-$i-$$:1"
  grep -q "reusing its gzip-6 blob" "$WORK/big-deferred-push2.log" || { echo "second push recompressed" >&2; exit 1; }
  rm -rf "$WORK/big-store-d"
  EXTRA="-o type=registry,name=$REGISTRY/bench/registry-$i-$$:1" build registry "$WORK/big-store-r"
  rm -rf "$WORK/big-store-r"
  EXTRA="-o type=image,name=bench/big:1,compression=uncompressed" build uncompressed "$WORK/big-store-u"
  rm -rf "$WORK/big-store-u"
done
row() { printf '%-58s %8.2f s%s\n' "$1" "$(median < "$WORK/big-$2.t")" "${3:-}"; }
xp() { printf '   (export phase %5.2f s)' "$(median < "$WORK/big-$1.x")"; }
row "cold -t app, compressed while building (before)" eager "$(xp eager)"
row "  then rbuild push (upload only)" eager-push
row "cold -t app, deferred layers (now)" deferred "$(xp deferred)"
row "  then rbuild push (compress + upload)" deferred-push
row "  then rbuild push again, other name (reuse + upload)" deferred-push2
row "cold -o type=registry (build + push in one)" registry "$(xp registry)"
row "cold -t app, compression=uncompressed (floor)" uncompressed "$(xp uncompressed)"
