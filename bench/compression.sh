#!/usr/bin/env bash
# Layer compression throughput: rbuild's write_layer vs the single-threaded
# CLI tools on the same bytes.
#
#   bench/compression.sh [SIZE_MB]        (default 100)
#
# Builds a mixed corpus (half pseudo-English text, half random bytes, in
# files of assorted sizes), then times
#   - `gzip -6` and `zstd -3 -T1`/`-T2` over the layer's tar (the
#     single-pass limit of this machine),
#   - rbuild's compressor alone (`write-layer --compress-only` on the very
#     tar the layer writer streams, so both compress the same bytes)
#     and rbuild's layer writer (walk + tar + both sha256 + compression in
#     one pass) with gzip-6 / zstd-3 at 1 and 2 threads, printing the
#     writer's throughput as a share of the compressor's (issue 11: >= 90 %)
#     and the digests (the same for both thread counts).
# The rbuild side uses `rbuild debug write-layer` (build it with
# `cargo build --release` first).
# MB here are 10^6 bytes of input (the uncompressed corpus).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb=${1:-100}
# CORPUS_DIR=dir keeps the corpus there (and reuses it on the next run), for
# comparing binaries on the very same bytes.
if [ -n "${CORPUS_DIR:-}" ]; then
  work=$CORPUS_DIR; mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/rbuild-bench.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi
corpus="$work/corpus"
make_corpus() {
rm -rf "$corpus"
mkdir -p "$corpus/text" "$corpus/random"

half=$((size_mb * 1000000 / 2))
# Text: words from a fixed vocabulary, deterministic (srand(42)), in files
# of ~350 KB on average.
export CORPUS="$corpus"
awk -v total="$half" 'BEGIN {
  srand(42)
  n = split("the of and to in is that for it as with was on be by this are from at or an have not which but all were when we there can more if out so what about into than them only other new some could time these two may then do first any my now such like our over man me even most made after also did many before must through back years where much your way well down should because each just those people how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three", w, " ")
  bytes = 0; file = 0; out = ""
  while (bytes < total) {
    line = ""
    for (i = 0; i < 12; i++) line = line w[int(rand() * n) + 1] " "
    if (out == "" || rand() < 0.0002) {
      if (out != "") close(out)
      file++; out = sprintf("%s/text/t%04d.txt", ENVIRON["CORPUS"], file)
    }
    print line > out
    bytes += length(line) + 1
  }
}'
# Random: files of 4 KiB .. 4 MiB from /dev/urandom.
left=$half; i=0
while [ "$left" -gt 0 ]; do
  sz=$(( 4096 << (i % 11) )); [ "$sz" -gt "$left" ] && sz=$left
  head -c "$sz" /dev/urandom > "$corpus/random/r$(printf %05d "$i").bin"
  left=$((left - sz)); i=$((i + 1))
done
touch "$work/corpus.done"
}
[ -f "$work/corpus.done" ] || make_corpus
bytes=$(du -sb --apparent-size "$corpus" | cut -f1)
echo "corpus: $bytes bytes in $(find "$corpus" -type f | wc -l) files; $(nproc) CPUs"

now() { date +%s.%N; }
mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.1f", b / 1e6 / s }'; }
report() { printf '%-34s %8s MB/s  %6.2f s  ratio %.3f\n' "$1" "$(mbps "$2")" "$2" "$(awk -v c="$3" -v b="$bytes" 'BEGIN{print c/b}')"; }

rbuild=${RBUILD:-target/release/rbuild} # RBUILD=path compares another binary
[ -x "$rbuild" ] || { echo "build rbuild first: cargo build --release" >&2; exit 1; }
# The very bytes the layer writer compresses: rbuild's own (uncompressed)
# layer tar of the tree, entries sorted by name, which GNU tar's are not.
# The compressor alone and the CLI tools read this file.
"$rbuild" debug write-layer --compression uncompressed --output "$work/layer.tar" "$corpus" > /dev/null
cat "$work/layer.tar" > /dev/null # warm the page cache
for tool in "gzip -6 -c" "zstd -3 -T1 -c -q" "zstd -3 -T2 -c -q"; do
  t0=$(now); out=$($tool < "$work/layer.tar" | wc -c); t1=$(now)
  report "cli: $tool" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "$out"
done

# Each figure is the best of REPEAT (default 3) runs: the machine is shared.
REPEAT=${REPEAT:-3}
best() { local b=""; for _ in $(seq "$REPEAT"); do t0=$(now); "$@" > "$work/out.json"; t1=$(now)
  t=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}'); if [ -z "$b" ] || awk -v t="$t" -v b="$b" 'BEGIN{exit !(t<b)}'; then b=$t; cp "$work/out.json" "$work/best.json"; fi; done; echo "$b"; }
for c in gzip zstd; do
  for t in 1 2; do
    # The compressor alone (same encoder, level and threads) on the layer's
    # tar, then the layer writer (walk + tar + both digests + compression)
    # on the tree itself: the same bytes in, so the same blob out.
    t_alone=$(best "$rbuild" debug write-layer --compress-only --compression "$c" --threads "$t" "$work/layer.tar")
    size_alone=$(jq -r .size "$work/best.json")
    report "compressor alone $c t=$t" "$t_alone" "$size_alone"
    t_layer=$(best "$rbuild" debug write-layer --compression "$c" --threads "$t" "$corpus")
    size_layer=$(jq -r .size "$work/best.json")
    report "rbuild write_layer $c t=$t" "$t_layer" "$size_layer"
    echo "  $(jq -r .digest "$work/best.json")"
    [ "$size_alone" = "$size_layer" ] || echo "  ERROR: the compressor alone wrote $size_alone bytes, the layer writer $size_layer" >&2
    awk -v a="$t_alone" -v l="$t_layer" -v c="$c" -v t="$t" 'BEGIN {
      r = a / l * 100; printf "  export/compressor %s t=%s: %.0f %% (target >= 90 %%): %s\n", c, t, r, (r >= 90 ? "met" : "not met") }'
  done
done
