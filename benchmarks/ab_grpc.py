"""Interleaved A/B of gRPC servers on unary ``ping``: rate and server CPU per call.

    .venv/bin/python -m benchmarks.ab_grpc                                  # this checkout vs the bare servicers
    .venv/bin/python -m benchmarks.ab_grpc --bridge old=/tmp/old/grpc_bridge.py --inflight 1,8,64

Servers: this checkout's bridge (default flags), any ``--bridge NAME=SCRIPT``,
the bare grpc.aio servicer, the bare sync (thread-pool) servicer and the raw
grpc.aio floor (:mod:`benchmarks.bare_grpc` ``--raw``: a generic handler, no
(de)serialization, a constant answer). Each answers ``--per`` pings in turn,
for ``--rounds`` rounds, so the machine's swings hit all of them alike;
medians of the rounds' rates, server CPU as a mean over all of them. Not part
of ``make bench``: a tool for comparing commits and server arrangements.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time

from snakepit_bridge._proto import snakepit_pb2_grpc as pb_grpc

from .bench_grpc import _unary, bare_request, bridge_request, channel
from .procs import BRIDGE, Server, bare_grpc_cmd


async def _run(servers: dict[str, Server], bridges: set[str], inflights: list[int], rounds: int, per: int) -> None:
    async with contextlib.AsyncExitStack() as stack:
        stubs = {name: pb_grpc.SnakepitBridgeStub(await stack.enter_async_context(channel(s)))
                 for name, s in servers.items()}
        reqs = {name: bridge_request("ping") if name in bridges else bare_request("ping") for name in servers}
        for name in servers:
            await _unary(stubs[name], reqs[name], 300, 8)
        for inflight in inflights:
            n = max(inflight, per // inflight * inflight)
            rates: dict[str, list[float]] = {name: [] for name in servers}
            cpu: dict[str, float] = {name: 0.0 for name in servers}
            for _ in range(rounds):
                for name, server in servers.items():
                    before = server.cpu()
                    elapsed, _ = await _unary(stubs[name], reqs[name], n, inflight)
                    rates[name].append(n / elapsed)
                    cpu[name] += server.cpu() - before
            base = {k: statistics.median(rates[k]) for k in ("bare aio", "bare sync")}
            base_cpu = cpu["bare aio"] / (n * rounds) * 1e6
            print(f"\n{inflight} in flight, {rounds} rounds of {n} pings")
            for name in servers:
                rate = statistics.median(rates[name])
                us = cpu[name] / (n * rounds) * 1e6
                print(f"{name:>18}: {rate:8,.0f} calls/s  {rate / base['bare aio']:5.2f}× bare aio  "
                      f"{rate / base['bare sync']:5.2f}× bare sync  server CPU {us:6.1f} µs/call "
                      f"({us / base_cpu:4.2f}× bare aio)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bridge", action="append", default=[], metavar="NAME=SCRIPT [FLAG ...]",
                   help="another grpc_bridge.py to compare, with flags after the script (repeatable)")
    p.add_argument("--args", default="", help="flags for this checkout's bridge, space-separated")
    p.add_argument("--inflight", default="1,8,64", help="comma-separated concurrency levels")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--per", type=int, default=600, help="pings per server per round")
    p.add_argument("--no-raw", action="store_true", help="leave out the raw grpc.aio floor")
    ns = p.parse_args()
    commands = {"this checkout": [sys.executable, str(BRIDGE), "--port", "0", *ns.args.split()]}
    for spec in ns.bridge:
        name, _, rest = spec.partition("=")
        script, *flags = rest.split()
        commands[name] = [*([sys.executable] if script.endswith(".py") else []), script, "--port", "0", *flags]
    bridges = set(commands)
    commands["bare aio"] = bare_grpc_cmd("--port", "0")
    commands["bare sync"] = bare_grpc_cmd("--port", "0", "--sync")
    if not ns.no_raw:
        commands["raw aio floor"] = bare_grpc_cmd("--port", "0", "--raw")
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(Server(cmd)) for name, cmd in commands.items()}
        t0 = time.perf_counter()
        asyncio.run(_run(servers, bridges, [int(x) for x in ns.inflight.split(",")], ns.rounds, ns.per))
        print(f"\n{time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
