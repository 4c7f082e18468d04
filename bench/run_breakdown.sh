#!/usr/bin/env bash
# Where the time of an uncached RUN goes: 50 `RUN echo` steps built with
# RBUILD_SANDBOX_TRACE=1, whose marks (solver, sandbox init and pid 1 all
# read CLOCK_MONOTONIC) give, per phase, the median over the steps of the
# time since the previous mark. Run against the release binary (RBUILD=...
# for another one); extra build flags in RBUILD_FLAGS.
#   bash bench/run_breakdown.sh
source "$(dirname "$0")/lib.sh"
[ -n "${RBUILD_SKIP_BUILD:-}" ] || build_release
start_registry
store=$WORK/breakdown-store; rm -rf "$store"
ctx=$WORK/breakdown-ctx; mkdir -p "$ctx"
{ echo "FROM $REGISTRY/busybox:latest"; for i in $(seq 1 50); do echo "RUN echo step $i"; done; } > "$ctx/Dockerfile"
# shellcheck disable=SC2086
"$RBUILD" --root "$store" build --progress plain ${RBUILD_FLAGS:-} "$ctx" >/dev/null 2>&1   # pull the base once
# shellcheck disable=SC2086
RBUILD_SANDBOX_TRACE=1 "$RBUILD" --root "$store" build --no-cache --progress plain ${RBUILD_FLAGS:-} "$ctx" 2> "$WORK/breakdown.log" >/dev/null
python3 - "$WORK/breakdown.log" <<'PY'
import re, statistics, sys
marks = sorted((int(ns), label) for label, ns in re.findall(r"rbuild-trace (\S+) (\d+)", open(sys.argv[1]).read()))
steps, cur = [], None
for ns, label in marks:
    if label == "step":
        cur = [(ns, label)]
        steps.append(cur)
    elif cur is not None:
        cur.append((ns, label))
# The first step pays for starting the zygote; report it apart.
order, deltas, totals = [], {}, []
for s in steps[1:]:
    for (a, la), (b, lb) in zip(s, s[1:]):
        key = f"{la} -> {lb}"
        if key not in deltas:
            order.append(key)
        deltas.setdefault(key, []).append((b - a) / 1e6)
    totals.append((s[-1][0] - s[0][0]) / 1e6)
print(f"{len(steps)} steps; medians over steps 2..{len(steps)} (ms)")
for k in order:
    print(f"  {k:<28} {statistics.median(deltas[k]):7.3f}")
print(f"  {'step -> committed (total)':<28} {statistics.median(totals):7.3f}")
gaps = [(b[0][0] - a[-1][0]) / 1e6 for a, b in zip(steps[1:], steps[2:])]
if gaps:
    print(f"  {'committed -> next step':<28} {statistics.median(gaps):7.3f}")
if steps:
    print(f"  first step (starts the zygote) {(steps[0][-1][0] - steps[0][0][0]) / 1e6:7.3f}")
PY
