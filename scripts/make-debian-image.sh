#!/usr/bin/env bash
# Build a Debian bookworm base image as an OCI image layout (tag `latest`).
#
#   scripts/make-debian-image.sh OUT_DIR [MIRROR]
#
# The root filesystem is `debootstrap --variant=minbase bookworm` from MIRROR
# (default http://deb.debian.org/debian), one layer, packed by umoci (which
# keeps hard links, setuid bits, xattrs and the owners dpkg gave, e.g.
# /etc/shadow root:shadow 0640). The config sets PATH, Cmd ["bash"], os linux,
# architecture amd64, like Docker Hub's debian:bookworm.
#
# Unlike the busybox image this is not deterministic (debootstrap writes logs,
# dates and machine-ids), so callers cache the layout instead of rebuilding
# it: builder/tests/util builds it once per script version under target/tmp.
# Idempotent: the layout is built in a temp dir next to OUT_DIR and swapped
# in at the end. Needs root (debootstrap chroots and chowns), debootstrap and
# umoci, and the mirror.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 OUT_DIR [MIRROR]" >&2
  exit 2
fi
OUT=$1
MIRROR=${2:-http://deb.debian.org/debian}
EPOCH=1970-01-01T00:00:00Z

[ "$(id -u)" = 0 ] || { echo "$0: debootstrap needs root" >&2; exit 1; }
command -v umoci >/dev/null || { echo "$0: umoci not found (apt-get install umoci)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "$0: debootstrap not found (apt-get install debootstrap)" >&2; exit 1; }

OUT_PARENT=$(dirname "$OUT")
mkdir -p "$OUT_PARENT"
WORK=$(mktemp -d "$OUT_PARENT/.make-debian.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

L=$WORK/layout
umoci init --layout "$L"
umoci new --image "$L:latest"
umoci unpack --image "$L:latest" "$WORK/bundle" >/dev/null
R=$WORK/bundle/rootfs
rm -rf "$R"
debootstrap --variant=minbase bookworm "$R" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
  echo "$0: debootstrap from $MIRROR failed:" >&2
  tail -n 30 "$WORK/debootstrap.log" >&2
  exit 1
}
# What Docker Hub's image does too: no downloaded .debs or lists in the base,
# and sources.list pointing at the mirror the image was made from.
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* "$R"/var/log/* "$R"/tmp/*
echo "deb $MIRROR bookworm main" >"$R/etc/apt/sources.list"
# The machine-id is per machine, not per image.
: >"$R/etc/machine-id"
umoci repack --image "$L:latest" \
  --history.created "$EPOCH" --history.created_by "make-debian-image.sh: debootstrap --variant=minbase bookworm" \
  "$WORK/bundle"
umoci config --image "$L:latest" \
  --created "$EPOCH" --no-history \
  --os linux --architecture amd64 \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.cmd bash
umoci gc --layout "$L"

rm -rf "$OUT.old"
[ ! -e "$OUT" ] || mv "$OUT" "$OUT.old"
mv "$L" "$OUT"
rm -rf "$OUT.old"
