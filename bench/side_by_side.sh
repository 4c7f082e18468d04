#!/usr/bin/env bash
# rbuild, BuildKit (Debian's docker.io: dockerd 20.10 with BuildKit 0.8) and
# buildah 1.28 side by side on the CI-style workload of ci_workload.sh, in
# one run, with ../shared/peers' scripts (they are not part of the project):
# cold build, no-op rebuild, one source file changed. The peers' scripts
# need the base on 127.0.0.1:5000 (registry-and-base.sh starts it) and edit
# src/pkg007/f00007.txt, which the workload gets for them.
#   PEERS=DIR (default ../shared/peers), RBUILD=binary, BENCH_DIR=scratch.
# Installs the peers' packages when missing (root). Prints one table.
source "$(dirname "$0")/lib.sh"
build_release
PEERS=${PEERS:-$ROOT_DIR/../shared/peers}
[ -d "$PEERS" ] || { echo "$0: no peers scripts at $PEERS (set PEERS=)" >&2; exit 1; }
need=()
for p in docker.io buildah docker-registry skopeo umoci busybox-static qemu-user-static bc; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
[ ${#need[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
export BENCH_DIR=$WORK/peers
bash "$PEERS/registry-and-base.sh" >/dev/null

wl=$WORK/side-by-side
rm -rf "$wl"; make_workload_context "$wl"
mkdir -p "$wl/src/pkg007" && echo "the file the peers' scripts change" > "$wl/src/pkg007/f00007.txt"
write_workload_dockerfile "$wl" "127.0.0.1:5000/busybox:latest"
echo "context: $(find "$wl/src" -type f | wc -l) files, $(du -sm "$wl/src" | cut -f1) MB"

# rbuild, the same three scenarios as the peers' scripts time.
store=$WORK/side-store; rm -rf "$store"; sync
b() { "$RBUILD" --root "$store" build --progress quiet -t w1 "$wl" >/dev/null; }
declare -A T
T[rbuild-cold]=$(seconds b); T[rbuild-noop]=$(seconds b)
f=$wl/src/pkg007/f00007.txt; cp "$f" "$f.orig"; echo change-$RANDOM >> "$f"
T[rbuild-one-change]=$(seconds b); mv "$f.orig" "$f"

for peer in buildkit buildah; do
  while read -r tool scenario secs; do T[$tool-$scenario]=$secs; done < <(bash "$PEERS/$peer.sh" "$wl" 2>/dev/null || true)
done
printf '%-10s %10s %10s %12s\n' "" cold no-op one-change
for tool in rbuild buildkit buildah; do
  row=("$tool")
  for s in cold noop one-change; do row+=("$(printf '%.2fs' "${T[$tool-$s]:-0}")"); done
  printf '%-10s %10s %10s %12s\n' "${row[@]}"
done
