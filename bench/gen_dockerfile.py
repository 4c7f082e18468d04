#!/usr/bin/env python3
"""Writes a large synthetic Dockerfile for the parse+lower benchmark.

Usage: gen_dockerfile.py [OUT] [--instructions N] [--stages S]
Default: 5,000 instructions in 50 stages. Stage 0 is `FROM scratch`; every
later stage builds `FROM` the previous one or from scratch, and mixes RUN,
COPY, ENV, ARG, WORKDIR, LABEL and `COPY --from` of an earlier stage.
Deterministic (no randomness): the same arguments give the same file.
"""
import argparse
import sys


def generate(instructions: int, stages: int) -> str:
    per_stage = max(1, instructions // stages)
    lines = ["# syntax=docker/dockerfile:1", "ARG GLOBAL_VERSION=1.0"]
    count = 0
    for s in range(stages):
        base = "scratch" if s == 0 or s % 5 == 0 else f"stage{s - 1}"
        lines.append(f"FROM {base} AS stage{s}")
        count += 1
        for i in range(per_stage - 1):
            k = i % 8
            if k == 0:
                lines.append(f"RUN echo stage{s} step{i} $V{s} > /f{s}_{i}")
            elif k == 1:
                lines.append(f"COPY src/file{i}.txt /app/s{s}/")
            elif k == 2:
                lines.append(f"ENV V{s}=value{i} P{s}_{i}=\"$V{s}/x\"")
            elif k == 3:
                lines.append(f"ARG A{s}_{i}=default{i}")
            elif k == 4:
                lines.append(f"WORKDIR /work/s{s}/d{i}")
            elif k == 5:
                lines.append(f"LABEL com.example.s{s}.i{i}=\"label {i}\"")
            elif k == 6 and s > 0:
                lines.append(f"COPY --from=stage{(s * 7 + i) % s} /app /from{i}/")
            else:
                lines.append(f"RUN --mount=type=cache,target=/cache/{s} echo $A{s}_{max(0, i - 4)}")
            count += 1
    while count < instructions:
        lines.append(f"RUN echo pad{count}")
        count += 1
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", help="output file (default: stdout)")
    p.add_argument("--instructions", type=int, default=5000)
    p.add_argument("--stages", type=int, default=50)
    a = p.parse_args()
    text = generate(a.instructions, a.stages)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
