"""Interleaved A/B of stdio workers: ping round trips and server CPU per ping.

    .venv/bin/python -m benchmarks.ab_stdio                       # this checkout vs the bare loops
    .venv/bin/python -m benchmarks.ab_stdio --bridge old=/tmp/old/grpc_bridge.py --log-level warning

Each worker (this checkout's bridge, any ``--bridge NAME=SCRIPT``, the blocking
and asyncio decode-and-answer loops) answers ``--per`` pings in turn, for
``--rounds`` rounds, so the machine's swings hit all of them alike; medians of
the rounds, CPU as a mean over them. Not part of ``make bench``: a tool for
comparing two commits (check one out with ``git worktree add``) on one machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys

from .bench_stdio import FramedProcess, _pings
from .procs import BRIDGE, ROOT, cpu_seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", choices=["json", "msgpack"], default="json")
    p.add_argument("--bridge", action="append", default=[], metavar="NAME=SCRIPT",
                   help="another grpc_bridge.py to compare (repeatable)")
    p.add_argument("--log-level", default="info", help="for every bridge")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--per", type=int, default=400, help="pings per worker per round")
    ns = p.parse_args()
    bridge_args = ["--mode", "pool-worker", "--protocol", ns.protocol, "--log-level", ns.log_level]
    bare = [sys.executable, "-m", "benchmarks.bare_stdio", "--answer", ns.protocol]
    commands = {"blocking loop": bare, "asyncio loop": [*bare, "--asyncio"],
                "this checkout": [sys.executable, str(BRIDGE), *bridge_args]}
    for spec in ns.bridge:
        name, _, script = spec.partition("=")
        commands[name] = [sys.executable, script, *bridge_args]
    workers = {}
    try:
        for name, cmd in commands.items():
            w = FramedProcess(cmd, ns.protocol)
            w.call(w.request("ping", {}), timeout=20)
            _pings(w, 200, True)
            workers[name] = w
        rates: dict[str, list[float]] = {name: [] for name in workers}
        cpu: dict[str, list[float]] = {name: [] for name in workers}
        for _ in range(ns.rounds):
            for name, w in workers.items():
                before = cpu_seconds(w.proc.pid)
                rate, _ = _pings(w, ns.per, True)
                rates[name].append(rate)
                cpu[name].append((cpu_seconds(w.proc.pid) - before) / ns.per * 1e6)
    finally:
        for w in workers.values():
            w.close()
    base = statistics.median(rates["blocking loop"])
    print(f"{ns.protocol}, {ns.rounds} rounds of {ns.per} pings, bridges at --log-level {ns.log_level} ({ROOT})")
    for name in workers:
        rate = statistics.median(rates[name])
        print(f"{name:>16}: {rate:9,.0f} pings/s  {rate / base:5.2f}× the blocking loop  "
              f"server CPU {statistics.mean(cpu[name]):6.1f} µs/ping")


if __name__ == "__main__":
    main()
