"""Start-up: one worker at a time, and a start storm of a whole pool at once.

``startup(reps)``: spawn to ready, interleaved (bridge, bare, bridge, bare, ...),
so the machine's swings hit both alike:

* gRPC mode: spawn to the ``GRPC_SERVER_READY_ON_PORT=`` line, next to the bare
  grpc.aio servicer (:mod:`benchmarks.bare_grpc`);
* stdio mode: spawn to the answer of the negotiation frame a pool sends first
  (no ``--protocol``, CONTRACT.md §4), next to a bare blocking framed loop
  (:mod:`benchmarks.bare_stdio` ``--answer json``) answering the same frame.

``storm(n)``: ``n`` workers spawned at once as a Snakepit pool spawns them:
``--port`` drawn at random from a 100-port range (and a few workers asked for
the same port on purpose), stdin a pipe, all started before any is read. The
time is until every worker has printed its ready line and answered a Health
call on the port it reported; next to ``n`` bare grpc.aio servicers started
the same way (they bind another free port when theirs is taken, as the bridge
does). Run on its own: ``python -m benchmarks --only storm`` (``make bench-storm``);
64 processes at once load the machine for tens of seconds.
"""
from __future__ import annotations

import os
import random
import selectors
import subprocess
import sys
import time
from pathlib import Path

import grpc

from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge._proto import snakepit_pb2_grpc as pb_grpc
from snakepit_bridge.server import READY_PREFIX

from .bench_stdio import FramedProcess
from .procs import BRIDGE, ROOT, Server, bare_grpc_cmd, bridge_cmd
from .report import Row, median

NEGOTIATION = {"type": "protocol_negotiation", "supported": ["msgpack", "json"], "preferred": "msgpack",
               "timestamp": "2026-01-01T00:00:00Z"}


def _grpc_ready(cmd: list[str]) -> tuple[float, float]:
    """Spawn to the ready line (ms), and the CPU the process spent until then (ms)."""
    with Server(cmd) as s:
        return s.startup * 1000, s.cpu() * 1000


def _stdio_ready(cmd: list[str]) -> tuple[float, float]:
    w = FramedProcess(cmd, "json")
    try:
        reply = w.call(w.encode(NEGOTIATION), timeout=20)
        elapsed = (time.perf_counter() - w.started) * 1000
        if not isinstance(reply, dict):
            raise RuntimeError(f"unexpected answer to the negotiation frame: {reply!r}")
        return elapsed, w.cpu() * 1000
    finally:
        w.close()


def startup(reps: int, bridge_args: list[str], bridge: Path = BRIDGE) -> list[Row]:
    """Start-up per mode next to its bare baseline (``bridge``: the script to start)."""
    runs: dict[str, list[tuple[float, float]]] = {"grpc": [], "grpc0": [], "stdio": [], "stdio0": []}
    bare_stdio = [sys.executable, "-m", "benchmarks.bare_stdio", "--answer", "json"]
    for _ in range(reps):
        runs["grpc"].append(_grpc_ready([sys.executable, str(bridge), "--port", "0", *bridge_args]))
        runs["grpc0"].append(_grpc_ready(bare_grpc_cmd("--port", "0")))
        runs["stdio"].append(_stdio_ready([sys.executable, str(bridge), "--mode", "pool-worker"]))
        runs["stdio0"].append(_stdio_ready(bare_stdio))
    wall = {k: [w for w, _ in v] for k, v in runs.items()}
    cpu = {k: median([c for _, c in v]) for k, v in runs.items()}

    def row(name: str, key: str, goal: str) -> Row:
        b, z = wall[key], wall[key + "0"]
        return Row("Startup", name, "ms", median(b), median(z), bridge_cpu=cpu[key], bare_cpu=cpu[key + "0"],
                   cpu_unit="ms CPU", note=f"{goal}; {reps} interleaved runs, ranges {min(b):.0f}–{max(b):.0f} / "
                                           f"{min(z):.0f}–{max(z):.0f} ms")

    return [
        row("gRPC: spawn to ready line vs the bare grpc.aio servicer", "grpc", "goal ≤ 1.2×"),
        row("stdio: spawn to negotiation answered vs a blocking framed loop", "stdio", "goal ≤ 1.5×"),
    ]


# -- start storm ----------------------------------------------------------------------


def _storm_once(make_cmd, n: int, base_port: int, same: int, timeout: float) -> tuple[float, float, int]:
    """Seconds until all ``n`` printed their ready line, until all answered
    Health, and how many asked for an already-asked port."""
    rng = random.Random()
    ports = [rng.randrange(base_port, base_port + 100) for _ in range(n)]
    shared = rng.randrange(base_port, base_port + 100)
    for i in range(min(same, n)):
        ports[i] = shared
    clashes = n - len(set(ports))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    procs = [subprocess.Popen(make_cmd(port), cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL) for port in ports]
    try:
        ready: dict[int, int] = {}
        bufs = {p.stdout.fileno(): b"" for p in procs}
        with selectors.DefaultSelector() as sel:
            for p in procs:
                sel.register(p.stdout.fileno(), selectors.EVENT_READ, p)
            deadline = time.monotonic() + timeout
            while len(ready) < n and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=1.0):
                    data = os.read(key.fd, 4096)
                    if not data:
                        sel.unregister(key.fd)
                        continue
                    bufs[key.fd] += data
                    for line in bufs[key.fd].split(b"\n")[:-1]:
                        text = line.decode(errors="replace")
                        if text.startswith(READY_PREFIX):
                            ready[key.fd] = int(text[len(READY_PREFIX):])
                            sel.unregister(key.fd)
                            break
        all_ready = time.perf_counter() - t0
        if len(ready) < n:
            raise RuntimeError(f"only {len(ready)} of {n} workers ready within {timeout} s")
        for port in ready.values():
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                pb_grpc.SnakepitBridgeStub(ch).Health(pb.HealthRequest(worker_id="storm"), timeout=timeout,
                                                      wait_for_ready=True)
        if len(set(ready.values())) != n:
            raise RuntimeError("two workers reported the same port")
        return all_ready, time.perf_counter() - t0, clashes
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            for stream in (p.stdin, p.stdout):
                stream.close()


def storm(n: int = 64, rounds: int = 2, base_port: int = 50051, same: int = 4, timeout: float = 120.0) -> list[Row]:
    b_ready, b_all, z_ready, z_all, clashes = [], [], [], [], []
    for _ in range(rounds):  # take turns, as everywhere
        r, a, c = _storm_once(lambda port: bridge_cmd("--port", str(port)), n, base_port, same, timeout)
        b_ready.append(r)
        b_all.append(a)
        clashes.append(c)
        r, a, _ = _storm_once(lambda port: bare_grpc_cmd("--port", str(port)), n, base_port, same, timeout)
        z_ready.append(r)
        z_all.append(a)
    section = f"Start storm: {n} workers at once on a 100-port range"
    note = f"{rounds} rounds; {min(clashes)}–{max(clashes)} workers asked for a port already asked for"
    return [
        Row(section, "all ready lines printed", "s", median(b_ready), median(z_ready), note=note),
        Row(section, "all ready and answering Health", "s", median(b_all), median(z_all),
            note=f"bridge {min(b_all):.1f}–{max(b_all):.1f} s, bare {min(z_all):.1f}–{max(z_all):.1f} s"),
    ]
