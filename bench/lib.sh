# Shared helpers for the benchmark scripts: a loopback registry with a
# busybox base image built from the busybox-static package.
set -euo pipefail
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RBUILD=${RBUILD:-$ROOT_DIR/target/release/rbuild}
WORK=${BENCH_DIR:-/tmp/rbuild-bench}
mkdir -p "$WORK"

build_release() {
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

# seconds COMMAND...: wall-clock seconds of a command (output discarded).
seconds() {
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null 2>&1 || { echo "command failed: $*" >&2; "$@" 2>&1 | tail -20 >&2; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l | xargs printf '%.3f'
}
