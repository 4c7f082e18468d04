#!/usr/bin/env bash
# Cost of `RUN --mount=type=bind` of a 20,000-file context (200 dirs x 100
# files of 4 KiB): per uncached RUN step, the median of REPEAT (default 5)
# --no-cache builds of 20 such steps, minus the same build with 20 plain
# `RUN true` steps, divided by 20. Four variants: no .dockerignore (a bind
# of the checkout), a .dockerignore hiding 2,000 `*.log` files and a
# directory (whiteout mask layer), the same with `rw` (tmpfs upper), and a
# bind of one subdirectory. Figures are wall-clock and CPU time (user+sys of
# rbuild and its sandboxes: steadier than wall time on a loaded machine).
# Run against the release binary (RBUILD=... to compare another one).
#   bash bench/bind_context.sh
source "$(dirname "$0")/lib.sh"
[ -n "${RBUILD_SKIP_BUILD:-}" ] || build_release
start_registry
REPEAT=${REPEAT:-5}
STEPS=20
ctx=$WORK/bind-ctx
if [ ! -f "$ctx/.done" ]; then
  rm -rf "$ctx"
  python3 - "$ctx" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(200):
    p = os.path.join(root, "src", f"d{d:03}")
    os.makedirs(p)
    for f in range(100):
        name = f"f{f:03}.log" if f % 10 == 0 else f"f{f:03}.txt"
        with open(os.path.join(p, name), "wb") as fh:
            fh.write(bytes([d % 256]) * 4096)
os.makedirs(os.path.join(root, "secrets"))
open(os.path.join(root, "secrets", "key"), "w").write("k\n")
open(os.path.join(root, ".done"), "w").close()
PY
fi
store=$WORK/bind-store; rm -rf "$store"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# variant NAME RUN-LINE IGNORE: prints "WALL CPU", medians in seconds.
variant() {
  local name=$1 line=$2 ignore=$3 runs=$WORK/bind-times-$1
  { echo "FROM $REGISTRY/busybox:latest"; for i in $(seq 1 $STEPS); do echo "$line && echo $i"; done; } > "$ctx/Dockerfile"
  if [ -n "$ignore" ]; then printf '%s\n' $ignore > "$ctx/.dockerignore"; else rm -f "$ctx/.dockerignore"; fi
  "$RBUILD" --root "$store" build --progress plain "$ctx" >/dev/null 2>&1   # warm: base pulled, checksums cached
  : > "$runs"
  for _ in $(seq "$REPEAT"); do
    /usr/bin/time -f "%e %U %S" -a -o "$runs" "$RBUILD" --root "$store" build --no-cache --progress plain "$ctx" >/dev/null 2>&1 \
      || { echo "build failed: $name" >&2; exit 1; }
  done
  echo "$(awk '{print $1}' "$runs" | median) $(awk '{print $2 + $3}' "$runs" | median)"
}
read -r w_plain c_plain < <(variant plain "RUN true" "")
per() { echo "($1 - $2) * 1000 / $STEPS" | bc -l | xargs printf '%.1f'; }
row() {
  local w c
  read -r w c < <(variant "$1" "$2" "$3")
  printf '%-50s %8sms %8sms\n' "$4" "$(per "$w" "$w_plain")" "$(per "$c" "$c_plain")"
}
printf '%-50s %10s %10s\n' "per uncached RUN step, median of $REPEAT" "wall" "cpu"
printf '%-50s %9ss %9ss\n' "$STEPS x RUN true (whole build)" "$w_plain" "$c_plain"
row bind "RUN --mount=type=bind,target=/ctx true" "" "bind, no .dockerignore"
row mask "RUN --mount=type=bind,target=/ctx true" "**/*.log secrets" "bind, .dockerignore hides 2,001 entries"
row rw "RUN --mount=type=bind,target=/ctx,rw true" "**/*.log secrets" "bind rw, same .dockerignore"
row sub "RUN --mount=type=bind,source=src/d007,target=/ctx true" "**/*.log secrets" "bind of one 100-file subdir, same .dockerignore"
