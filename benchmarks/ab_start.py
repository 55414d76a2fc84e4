"""Interleaved A/B of start-up: this checkout's bridge and another checkout's, each next to the bare baselines.

    .venv/bin/python -m benchmarks.ab_start --bridge previous=/tmp/old/grpc_bridge.py --reps 10

Per mode, spawn to ready (gRPC: the ready line; stdio: the answer to the
negotiation frame) and the CPU the process spent until then, for this
checkout, each ``--bridge`` and the bare servers, taking turns. Not part of
``make bench``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .bench_start import _grpc_ready, _stdio_ready
from .procs import BRIDGE, bare_grpc_cmd
from .report import median


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bridge", action="append", default=[], metavar="NAME=SCRIPT")
    p.add_argument("--reps", type=int, default=10)
    ns = p.parse_args()
    scripts = {"this checkout": BRIDGE, **{s.partition("=")[0]: Path(s.partition("=")[2]) for s in ns.bridge}}
    starters = {}
    for name, script in scripts.items():
        starters[f"gRPC {name}"] = (_grpc_ready, [sys.executable, str(script), "--port", "0"])
        starters[f"stdio {name}"] = (_stdio_ready, [sys.executable, str(script), "--mode", "pool-worker"])
    starters["gRPC bare aio"] = (_grpc_ready, bare_grpc_cmd("--port", "0"))
    starters["stdio bare loop"] = (_stdio_ready, [sys.executable, "-m", "benchmarks.bare_stdio", "--answer", "json"])
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in starters}
    for _ in range(ns.reps):
        for key, (start, cmd) in starters.items():
            got[key].append(start(cmd))
    base = {"gRPC": median([w for w, _ in got["gRPC bare aio"]]), "stdio": median([w for w, _ in got["stdio bare loop"]])}
    for key, runs in got.items():
        wall, cpu = [w for w, _ in runs], [c for _, c in runs]
        print(f"{key:>24}: {median(wall):6.0f} ms ({min(wall):.0f}–{max(wall):.0f})  "
              f"{median(wall) / base[key.split()[0]]:4.2f}× bare  CPU {median(cpu):5.0f} ms")


if __name__ == "__main__":
    main()
