#!/usr/bin/env bash
# Per-RUN overhead: wall time of 50 uncached `RUN echo` steps on a busybox
# base, minus the same build without them, divided by 50. Each figure is the
# median of REPEAT (default 5) builds with --no-cache. Run against the release
# binary (RBUILD=... to compare another one); extra build flags in
# RBUILD_FLAGS (e.g. `--network=none`).
#   bash bench/run_overhead.sh
source "$(dirname "$0")/lib.sh"
[ -n "${RBUILD_SKIP_BUILD:-}" ] || build_release
start_registry
REPEAT=${REPEAT:-5}
store=$WORK/overhead-store; rm -rf "$store"
runs=$WORK/overhead-runs; mkdir -p "$runs"
{ echo "FROM $REGISTRY/busybox:latest"; for i in $(seq 1 50); do echo "RUN echo step $i"; done; } > "$runs/Dockerfile"
base=$WORK/overhead-base; mkdir -p "$base"; echo "FROM $REGISTRY/busybox:latest" > "$base/Dockerfile"
# One RUN: starts the network helper and the sandbox zygote, which the
# base-only build does not, so (50 RUN - 1 RUN) / 49 is the marginal cost of
# a step without their one-off start-up spread over the 50.
one=$WORK/overhead-one; mkdir -p "$one"; printf 'FROM %s/busybox:latest\nRUN echo step 1\n' "$REGISTRY" > "$one/Dockerfile"
# shellcheck disable=SC2086
"$RBUILD" --root "$store" build --progress plain ${RBUILD_FLAGS:-} "$runs" >/dev/null 2>&1   # pull the base once
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# shellcheck disable=SC2086
t_base=$(for _ in $(seq "$REPEAT"); do seconds "$RBUILD" --root "$store" build --no-cache --progress plain ${RBUILD_FLAGS:-} "$base"; echo; done | median)
# shellcheck disable=SC2086
t_runs=$(for _ in $(seq "$REPEAT"); do seconds "$RBUILD" --root "$store" build --no-cache --progress plain ${RBUILD_FLAGS:-} "$runs"; echo; done | median)
# shellcheck disable=SC2086
t_one=$(for _ in $(seq "$REPEAT"); do seconds "$RBUILD" --root "$store" build --no-cache --progress plain ${RBUILD_FLAGS:-} "$one"; echo; done | median)
marginal=$(echo "($t_runs - $t_one) * 1000 / 49" | bc -l | xargs printf '%.1f')
per_run=$(echo "($t_runs - $t_base) * 1000 / 50" | bc -l | xargs printf '%.1f')
# CPU time (user + sys of rbuild and everything it waited for: sandboxes,
# the network helper), which a loaded shared machine distorts far less than
# wall time. Median of REPEAT.
cpu() { local TIMEFORMAT='%U %S'; { time "$RBUILD" --root "$store" build --no-cache --progress plain ${RBUILD_FLAGS:-} "$1" >/dev/null 2>&1; } 2>&1 | awk '{print $1 + $2}'; }
c_base=$(for _ in $(seq "$REPEAT"); do cpu "$base"; done | median)
c_runs=$(for _ in $(seq "$REPEAT"); do cpu "$runs"; done | median)
cpu_per_run=$(echo "($c_runs - $c_base) * 1000 / 50" | bc -l | xargs printf '%.1f')
c_one=$(for _ in $(seq "$REPEAT"); do cpu "$one"; done | median)
cpu_marginal=$(echo "($c_runs - $c_one) * 1000 / 49" | bc -l | xargs printf '%.1f')
printf '%-40s %8ss\n' "base only (median of $REPEAT)" "$t_base"
printf '%-40s %8ss\n' "50 x RUN echo (median of $REPEAT)" "$t_runs"
printf '%-40s %8sms\n' "per uncached RUN step" "$per_run"
printf '%-40s %8sms (load %s)\n' "CPU per uncached RUN step" "$cpu_per_run" "$(cut -d' ' -f1 /proc/loadavg)"
printf '%-40s %8ss\n' "1 x RUN echo (median of $REPEAT)" "$t_one"
printf '%-40s %8sms\n' "marginal RUN step ((50 - 1 RUN) / 49)" "$marginal"
printf '%-40s %8sms\n' "marginal CPU per RUN step" "$cpu_marginal"
