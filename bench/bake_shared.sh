#!/usr/bin/env bash
# `rbuild bake` of a group of 4 targets sharing a base stage whose RUN takes
# about 2 s (each target then adds its own small RUN and COPY from its own
# context directory): the wall time of the whole group, next to the slowest
# of the 4 targets built alone. All targets go to one solve, so the shared
# RUN runs once and the group costs about one target (goal: ratio <= 1.15;
# built one target after another, the 2 s RUN was paid 4 times). Median of
# REPEAT (default 3) runs with --no-cache (every RUN executes). RBUILD=... to
# time another binary.
#   bash bench/bake_shared.sh
source "$(dirname "$0")/lib.sh"
[ -n "${RBUILD_SKIP_BUILD:-}" ] || build_release
start_registry
REPEAT=${REPEAT:-3}
store=$WORK/bake-shared-store; rm -rf "$store"
proj=$WORK/bake-shared; rm -rf "$proj"; mkdir -p "$proj"
targets="api web worker cli"
for t in $targets; do
  mkdir -p "$proj/$t"
  echo "$t" > "$proj/$t/own.txt"
  cat > "$proj/$t/Dockerfile" <<DF
FROM $REGISTRY/busybox:latest AS base
RUN sleep 2 && echo shared > /shared
FROM base
COPY own.txt /own.txt
RUN cat /shared /own.txt > /both
DF
done
{
  echo "group \"default\" { targets = [$(printf '"%s",' $targets | sed 's/,$//')] }"
  for t in $targets; do
    printf 'target "%s" {\n  context = "%s"\n  tags    = ["bench/%s:latest"]\n}\n' "$t" "$t" "$t"
  done
} > "$proj/docker-bake.hcl"
cd "$proj"
"$RBUILD" --root "$store" bake --progress plain >/dev/null 2>&1   # pull the base once
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
bake_median() {
  for _ in $(seq "$REPEAT"); do seconds "$RBUILD" --root "$store" bake --no-cache --progress plain "$@"; echo; done | median
}
slowest=0; slowest_name=
for t in $targets; do
  s=$(bake_median "$t")
  printf '%-50s %8ss\n' "target $t alone (median of $REPEAT)" "$s"
  if [ "$(echo "$s > $slowest" | bc -l)" = 1 ]; then slowest=$s; slowest_name=$t; fi
done
group=$(bake_median)
printf '%-50s %8ss\n' "group of 4 targets, one solve (median of $REPEAT)" "$group"
printf '%-50s %8ss\n' "slowest single target ($slowest_name)" "$slowest"
printf '%-50s %8s\n' "ratio group / slowest single (goal <= 1.15)" "$(echo "$group / $slowest" | bc -l | xargs printf '%.2f')"
