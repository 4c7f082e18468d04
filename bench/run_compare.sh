#!/usr/bin/env bash
# Marginal cost of an uncached RUN step, several binaries interleaved build by
# build: each round, each binary builds a 1-RUN and a 50-RUN `RUN echo`
# Dockerfile with --no-cache; per binary, medians over the rounds of wall and
# CPU (user + sys of rbuild and everything it waited for), and
# (t(50) - t(1)) / 49.
# usage: ROUNDS=11 bash bench/run_compare.sh old=/path/to/rbuild new=target/release/rbuild

source "$(dirname "$0")/lib.sh"
start_registry
ROUNDS=${ROUNDS:-5}
one=$WORK/c-one; runs=$WORK/c-runs; mkdir -p "$one" "$runs"
printf 'FROM %s/busybox:latest\nRUN echo step 1\n' "$REGISTRY" > "$one/Dockerfile"
{ echo "FROM $REGISTRY/busybox:latest"; for i in $(seq 1 50); do echo "RUN echo step $i"; done; } > "$runs/Dockerfile"
declare -A BIN
names=()
for a in "$@"; do n=${a%%=*}; BIN[$n]=${a#*=}; names+=("$n"); rm -rf "$WORK/store-$n"; "${BIN[$n]}" --root "$WORK/store-$n" build --progress plain "$one" >/dev/null 2>&1; done
res=$WORK/res; rm -rf "$res"; mkdir -p "$res"
t() { local TIMEFORMAT='%R %U %S'; { time "$@" >/dev/null 2>&1; } 2>&1 | awk '{print $1, $2 + $3}'; }
for r in $(seq "$ROUNDS"); do
  for n in "${names[@]}"; do
    t "${BIN[$n]}" --root "$WORK/store-$n" build --no-cache --progress plain "$one" >> "$res/$n.one"
    t "${BIN[$n]}" --root "$WORK/store-$n" build --no-cache --progress plain "$runs" >> "$res/$n.runs"
  done
done
med() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for n in "${names[@]}"; do
  w1=$(awk '{print $1}' "$res/$n.one" | med); w50=$(awk '{print $1}' "$res/$n.runs" | med)
  c1=$(awk '{print $2}' "$res/$n.one" | med); c50=$(awk '{print $2}' "$res/$n.runs" | med)
  printf '%-8s 1 RUN %.3fs  50 RUN %.3fs  marginal wall %.2f ms  cpu %.2f ms  (50-RUN walls: %s)\n' "$n" "$w1" "$w50" \
    "$(echo "($w50 - $w1) * 1000 / 49" | bc -l)" "$(echo "($c50 - $c1) * 1000 / 49" | bc -l)" "$(awk '{printf "%s ", $1}' "$res/$n.runs")"
done
echo "load $(cut -d' ' -f1 /proc/loadavg)"
