#!/usr/bin/env bash
# Installs every Debian package rbuild's tests and examples need, then builds
# the release binary. Idempotent; run as root (or with sudo available).
set -euo pipefail
packages=(busybox-static docker-registry docker.io podman skopeo umoci uidmap passt slirp4netns jq git xz-utils bzip2 zstd curl passwd python3 bc procps libbz2-dev liblzma-dev pkg-config openssl gcc libc6-dev tmux debootstrap time)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
# The distribution registry package starts a system service on :5000; tests
# start their own on free loopback ports, so stop the system one if it runs.
if command -v systemctl >/dev/null 2>&1; then systemctl stop docker-registry 2>/dev/null || true; fi
# The default RUN network (pasta or slirp4netns) opens /dev/net/tun inside
# rbuild's user namespace; Debian's udev makes it 0666, some container hosts
# leave it 0600, which only real root can use.
if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO chmod 0666 /dev/net/tun
fi
cd "$(dirname "$0")/.."
# `--deps-only`: the test script builds what it tests itself.
if [ "${1:-}" != "--deps-only" ]; then
  cargo build --release --locked -p rbuild
  # Man pages from the CLI definitions (`man -M target/man rbuild-build`).
  target/release/rbuild debug man target/man/man1
fi
