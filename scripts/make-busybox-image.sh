#!/usr/bin/env bash
# Build a busybox base image as an OCI image layout (tag `latest`).
#
#   scripts/make-busybox-image.sh OUT_DIR [ARCH]
#
# The root filesystem is the static busybox of the `busybox-static` Debian
# package (/bin/busybox) plus one symlink per applet, /etc/passwd (root,
# nobody, user 1000), /etc/group, /tmp (1777) and /root. The config sets PATH,
# Cmd ["/bin/sh"], os linux and the given architecture (default amd64).
#
# ARCH only changes the config's `architecture`: the binary is always the
# host's busybox (there is no network to fetch another one). That is enough
# for platform-resolution tests; do not expect a non-host image to run.
#
# Deterministic: fixed mtimes, fixed created dates, sorted applet list, so the
# same busybox binary and ARCH give the same digests. Idempotent: the layout
# is built in a temp dir next to OUT_DIR and swapped in at the end.
# Needs: umoci, busybox-static. Works as root or (with --rootless) as a user.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 OUT_DIR [ARCH]" >&2
  exit 2
fi
OUT=$1
ARCH=${2:-amd64}
BUSYBOX=${BUSYBOX:-/bin/busybox}
EPOCH=1970-01-01T00:00:00Z

command -v umoci >/dev/null || { echo "$0: umoci not found (apt-get install umoci)" >&2; exit 1; }
[ -x "$BUSYBOX" ] || { echo "$0: $BUSYBOX not found (apt-get install busybox-static)" >&2; exit 1; }

ROOTLESS=()
[ "$(id -u)" = 0 ] || ROOTLESS=(--rootless)

OUT_PARENT=$(dirname "$OUT")
mkdir -p "$OUT_PARENT"
WORK=$(mktemp -d "$OUT_PARENT/.make-busybox.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Root filesystem.
R=$WORK/rootfs
mkdir -p "$R/bin" "$R/etc" "$R/tmp" "$R/root" "$R/home/user"
cp "$BUSYBOX" "$R/bin/busybox"
chmod 0755 "$R/bin/busybox"
for a in $("$BUSYBOX" --list | LC_ALL=C sort -u); do
  [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"
done
cat > "$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
user:x:1000:1000::/home/user:/bin/sh
EOF
cat > "$R/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
user:x:1000:
EOF
chmod 0644 "$R/etc/passwd" "$R/etc/group"
chmod 1777 "$R/tmp"
chmod 0700 "$R/root"
chmod 0755 "$R/bin" "$R/etc" "$R/home" "$R/home/user"
if [ "$(id -u)" = 0 ]; then
  chown -R 0:0 "$R"
  chown 1000:1000 "$R/home/user"
fi
# Fixed mtimes so the layer tar is the same on every run.
find "$R" -exec touch -h -d "$EPOCH" {} +

# Image: empty image, one layer with the rootfs, then the config.
L=$WORK/layout
umoci init --layout "$L"
umoci new --image "$L:latest"
# unpack + repack rather than `umoci insert DIR /`, which would put a "/"
# entry into the layer tar that some unpackers trip over.
umoci unpack "${ROOTLESS[@]}" --image "$L:latest" "$WORK/bundle" >/dev/null
rm -rf "$WORK/bundle/rootfs"
cp -a "$R" "$WORK/bundle/rootfs"
umoci repack --image "$L:latest" \
  --history.created "$EPOCH" --history.created_by "make-busybox-image.sh" \
  "$WORK/bundle"
umoci config --image "$L:latest" \
  --created "$EPOCH" --no-history \
  --os linux --architecture "$ARCH" \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.cmd /bin/sh
# umoci keeps superseded blobs around; drop them so the layout is minimal.
umoci gc --layout "$L"

rm -rf "$OUT.old"
[ ! -e "$OUT" ] || mv "$OUT" "$OUT.old"
mv "$L" "$OUT"
rm -rf "$OUT.old"
