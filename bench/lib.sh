# Shared helpers for the benchmark scripts: a loopback registry with a
# busybox base image built from the busybox-static package.
set -euo pipefail
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# RBUILD=/path/to/rbuild runs the benchmarks against that binary (for
# before/after figures) instead of building the worktree's release binary.
RBUILD_GIVEN=${RBUILD:+1}
RBUILD=${RBUILD:-$ROOT_DIR/target/release/rbuild}
WORK=${BENCH_DIR:-/tmp/rbuild-bench}
mkdir -p "$WORK"

build_release() {
  [ -n "$RBUILD_GIVEN" ] && return 0
  (cd "$ROOT_DIR" && cargo build --release --locked -p rbuild >/dev/null 2>&1) || { echo "cargo build --release failed" >&2; exit 1; }
}

# start_registry: sets REGISTRY=127.0.0.1:PORT, pushes busybox:latest.
start_registry() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$WORK/registry"
  cat > "$WORK/registry/config.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $WORK/registry/data
http:
  addr: 127.0.0.1:$port
log:
  level: error
YML
  docker-registry serve "$WORK/registry/config.yml" > "$WORK/registry/log" 2>&1 &
  REGISTRY_PID=$!
  trap 'kill $REGISTRY_PID 2>/dev/null || true' EXIT
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.05; done
  REGISTRY=127.0.0.1:$port
  [ -d "$WORK/busybox-oci" ] || bash "$ROOT_DIR/scripts/make-busybox-image.sh" "$WORK/busybox-oci" >/dev/null
  skopeo copy -q --dest-tls-verify=false "oci:$WORK/busybox-oci:latest" "docker://$REGISTRY/busybox:latest"
}

# start_workload: start_registry, then the CI-style workload (context and
# Dockerfile, below) in ctx=$WORK/ctx on the registry's busybox.
start_workload() {
  start_registry
  ctx=$WORK/ctx
  make_workload_context "$ctx"
  write_workload_dockerfile "$ctx" "$REGISTRY/busybox:latest"
}

# seconds COMMAND...: wall-clock seconds of a command (output discarded).
seconds() {
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null 2>&1 || { echo "command failed: $*" >&2; "$@" 2>&1 | tail -20 >&2; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l | xargs printf '%.3f'
}

# write_workload_dockerfile DIR BASE: the CI-style workload's Dockerfile
# (four stages used, one unused that must never run) on base image BASE,
# and its .dockerignore.
write_workload_dockerfile() {
  cat > "$1/Dockerfile" <<DF
FROM $2 AS base
RUN echo base > /base.txt
FROM base AS deps
COPY package-list.txt /app/
RUN wc -l < /app/package-list.txt > /app/deps.txt
FROM base AS unused
RUN sleep 100
FROM deps AS build
COPY src/ /app/src/
RUN find /app/src -type f | wc -l > /app/count.txt
FROM base
COPY --from=build /app/count.txt /app/deps.txt /app/
COPY --from=build /app/src /app/src
CMD ["cat", "/app/count.txt"]
DF
  echo ".complete" > "$1/.dockerignore"
}

# make_workload_context DIR: the CI-style context (20,000 files of 5 KB, half
# random, in 200 directories, ~100 MB, plus package-list.txt), made once.
make_workload_context() {
  local ctx=$1
  [ -f "$ctx/.complete" ] && return 0
  rm -rf "$ctx" && mkdir -p "$ctx/src"
  python3 - "$ctx/src" <<'PY'
import os, random, sys
root = sys.argv[1]; random.seed(42)
for d in range(200):
    dd = os.path.join(root, f"pkg{d:03d}"); os.makedirs(dd)
    for f in range(100):
        with open(os.path.join(dd, f"file{f:03d}.txt"), "wb") as fh:
            fh.write(bytes(random.getrandbits(8) for _ in range(2500)) + b"x" * 2500)
PY
  seq 1 300 > "$ctx/package-list.txt"
  touch "$ctx/.complete"
}

# timed_json OUT COMMAND...: like `seconds`, keeping the command's output
# (a `--progress rawjson` build) in OUT for `breakdown`.
timed_json() {
  local out=$1 start end; shift
  start=$(date +%s.%N)
  "$@" >"$out" 2>&1 || { echo "command failed: $*" >&2; tail -20 "$out" >&2; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l | xargs printf '%.3f'
}

# breakdown OUT WALL [RUN-NAME]: the step breakdown of a rawjson build log
# (BuildKit SolveStatus lines): seconds in COPY/ADD steps, in RUN steps and
# in export (from the start of the "exporting to image" vertex to the end of
# the process, WALL seconds), and with RUN-NAME, the duration of the RUN
# step whose name contains it. Prints "copy run export [named-run]".
breakdown() {
  python3 - "$@" <<'PY'
import json, sys
from datetime import datetime
path, wall = sys.argv[1], float(sys.argv[2])
want = sys.argv[3] if len(sys.argv) > 3 else None
def ts(s):
    # RFC 3339 with nanoseconds: keep microseconds for fromisoformat.
    head, frac = s.rstrip("Z").split(".") if "." in s else (s.rstrip("Z"), "0")
    return datetime.fromisoformat(head).timestamp() + float("0." + frac)
names, started, completed, cached = {}, {}, {}, set()
first = None
for line in open(path, errors="replace"):
    try:
        status = json.loads(line)
    except ValueError:
        continue
    for v in status.get("vertexes") or []:
        d = v["digest"]
        names[d] = v.get("name", names.get(d, ""))
        if v.get("cached"):
            cached.add(d)
        if v.get("started"):
            started[d] = ts(v["started"])
            first = started[d] if first is None else min(first, started[d])
        if v.get("completed"):
            completed[d] = ts(v["completed"])
dur = {d: completed[d] - started[d] for d in completed if d in started and d not in cached}
def total(word):
    return sum(t for d, t in dur.items() if f" {word} " in f" {names.get(d, '')} ".replace("]", "] "))
copy = total("COPY") + total("ADD")
run = total("RUN")
export = 0.0
for d, n in names.items():
    if n.startswith("exporting to image") and d in started and d in completed:
        export += completed[d] - started[d]
out = [f"{copy:.3f}", f"{run:.3f}", f"{export:.3f}"]
if want:
    out.append(f"{sum(t for d, t in dur.items() if want in names.get(d, '')):.3f}")
print(" ".join(out))
PY
}
