#!/usr/bin/env bash
# Two target platforms in one solve: wall time of a `--platform
# linux/amd64,linux/arm64` build whose per-platform RUN (in a `FROM
# --platform=$BUILDPLATFORM` stage, so no emulation is needed) sleeps 2 s,
# next to the same build for one platform. Solved together the two RUNs
# overlap, so two platforms cost about what one does (< 3 s); solved one
# after the other they took > 4 s. Median of REPEAT (default 3) builds with
# --no-cache. RBUILD=... to time another binary.
#   bash bench/multiplatform_overlap.sh
source "$(dirname "$0")/lib.sh"
[ -n "${RBUILD_SKIP_BUILD:-}" ] || build_release
start_registry
REPEAT=${REPEAT:-3}
store=$WORK/overlap-store; rm -rf "$store"
ctx=$WORK/overlap-ctx; mkdir -p "$ctx"
cat > "$ctx/Dockerfile" <<DF
FROM --platform=\$BUILDPLATFORM $REGISTRY/busybox:latest AS build
ARG TARGETARCH
RUN sleep 2 && echo \$TARGETARCH > /arch
FROM scratch
COPY --from=build /arch /arch
DF
"$RBUILD" --root "$store" build --progress plain "$ctx" >/dev/null 2>&1   # pull the base once
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
t_one=$(for _ in $(seq "$REPEAT"); do seconds "$RBUILD" --root "$store" build --no-cache --progress plain --platform linux/amd64 "$ctx"; echo; done | median)
t_two=$(for _ in $(seq "$REPEAT"); do seconds "$RBUILD" --root "$store" build --no-cache --progress plain --platform linux/amd64,linux/arm64 "$ctx"; echo; done | median)
printf '%-50s %8ss\n' "1 platform, RUN sleep 2 (median of $REPEAT)" "$t_one"
printf '%-50s %8ss\n' "2 platforms, RUN sleep 2 each (median of $REPEAT)" "$t_two"
