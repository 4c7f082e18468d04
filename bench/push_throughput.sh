#!/usr/bin/env bash
# Push throughput: `rbuild push` of an image with a ~200 MB incompressible
# layer vs `skopeo copy` of the same image (from an OCI layout) to the same
# kind of loopback registry. Each run gets a fresh registry (so neither tool
# can mount a blob a previous run left); figures are the median of REPEAT
# (default 3) runs. Prints both MB/s and the ratio (target: >= 70 %).
#   bash bench/push_throughput.sh        (SIZE_MB=200 REPEAT=3 by default)
source "$(dirname "$0")/lib.sh"
[ -n "${RBUILD_SKIP_BUILD:-}" ] || build_release
REPEAT=${REPEAT:-3}
SIZE_MB=${SIZE_MB:-200}
start_registry   # the build's base image lives here
BASE_REGISTRY=$REGISTRY

ctx=$WORK/push-ctx; store=$WORK/push-store; layout=$WORK/push-oci
rm -rf "$ctx" "$store" "$layout"; mkdir -p "$ctx"
dd if=/dev/urandom of="$ctx/big" bs=1M count="$SIZE_MB" status=none
printf 'FROM %s/busybox:latest\nCOPY big /big\n' "$BASE_REGISTRY" > "$ctx/Dockerfile"
"$RBUILD" --root "$store" build --progress plain -t local/big:1 \
  -o "type=image" -o "type=oci,dest=$layout,tar=false" "$ctx" >/dev/null 2>&1
# Bytes of the image: config + layers (the same blobs for both tools).
bytes=$(python3 - "$layout" <<'PY'
import json, sys
d = sys.argv[1]
idx = json.load(open(f"{d}/index.json"))
m = json.load(open(f"{d}/blobs/" + idx["manifests"][0]["digest"].replace(":", "/")))
print(m["config"]["size"] + sum(l["size"] for l in m["layers"]))
PY
)
tag=$(python3 -c "import json;print(json.load(open('$layout/index.json'))['manifests'][0].get('annotations',{}).get('org.opencontainers.image.ref.name','latest'))")

# fresh_registry: a new empty registry; sets REG and REG_PID.
fresh_registry() {
  local port dir
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  dir=$WORK/push-reg-$port; rm -rf "$dir"; mkdir -p "$dir"
  printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s/data\nhttp:\n  addr: 127.0.0.1:%s\nlog:\n  level: error\n' "$dir" "$port" > "$dir/config.yml"
  docker-registry serve "$dir/config.yml" > "$dir/log" 2>&1 &
  REG_PID=$!; REG=127.0.0.1:$port; REG_DIR=$dir
  for _ in $(seq 100); do curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.05; done
}
stop_registry() { kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; rm -rf "$REG_DIR"; }

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
t_rbuild=$(for _ in $(seq "$REPEAT"); do
  fresh_registry
  seconds "$RBUILD" --root "$store" push --progress plain local/big:1 "$REG/big:1"; echo
  stop_registry
done | median)
t_skopeo=$(for _ in $(seq "$REPEAT"); do
  fresh_registry
  seconds skopeo copy -q --dest-tls-verify=false "oci:$layout:$tag" "docker://$REG/big:1"; echo
  stop_registry
done | median)
mbs() { echo "$bytes / 1000000 / $1" | bc -l | xargs printf '%.1f'; }
printf '%-44s %8s MB\n' "image size (config + layers)" "$(echo "$bytes / 1000000" | bc -l | xargs printf '%.1f')"
printf '%-44s %8ss %8s MB/s\n' "rbuild push (median of $REPEAT)" "$t_rbuild" "$(mbs "$t_rbuild")"
printf '%-44s %8ss %8s MB/s\n' "skopeo copy oci: -> docker:// (median of $REPEAT)" "$t_skopeo" "$(mbs "$t_skopeo")"
printf '%-44s %8s %%\n' "rbuild / skopeo throughput" "$(echo "$t_skopeo * 100 / $t_rbuild" | bc -l | xargs printf '%.0f')"
