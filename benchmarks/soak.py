"""Soak: does Health keep answering while the worker is busy with hostile-ish load?

    .venv/bin/python -m benchmarks.soak                    # 120 s against this checkout
    .venv/bin/python -m benchmarks.soak --seconds 30       # shorter
    .venv/bin/python -m benchmarks.soak --base /tmp/old    # A/B: another checkout, interleaved

For ``--seconds`` the bridge serves, all at once:

* 64 stream loops: ``ping_stream`` (80 %) / ``process_large_dataset``
  (synthetic, 1k..20k rows, some with rows) streams, a quarter of them in one of 16 sessions, each cancelled at a
  random moment or cut by a random deadline (50 ms .. 2 s), or read to the end;
* 4 echo loops: ``echo_payload`` of a random 1..10 MB value, and back;
* 2 session loops: ``store`` / ``retrieve`` in the 16 sessions;
* one Health probe every 20 ms, from a process of its own (so the load
  generator's event loop cannot delay it): its latency is the result. The
  load generator runs in a process of its own too (``--load-nice N`` lowers
  its priority: it shares the cores with the bridge).

Printed: Health p50 / p99 / max; where a Health call's time went (legs on the
machine's monotonic clock: probe send -> request parsed in the bridge ->
handler -> response serialized -> probe has it); the bridge's event loop as
``benchmarks.loopwatch`` saw it from inside (timer lag, turns, callbacks over
5 ms, protobuf parse/serialize on the loop per method); CPU of the bridge's
main thread and other threads and how long they waited for a core; page
faults; the CPU of the bridge, load generator and probe; the load achieved
(calls, chunks, echo MB per second) and the calls' outcomes. With ``--base``
the two checkouts run in turns (A B A B, ``--rounds`` each, ``--seconds``
split between them). Not part of ``make bench`` or the test suite (it takes
minutes); the machine is shared, so compare runs made side by side, and note
the load average printed beside each.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge._proto import snakepit_pb2_grpc as pb_grpc

from .procs import ROOT, Server
from .report import pct

MB = 1024 * 1024
_OPTS = [("grpc.max_send_message_length", 64 * MB), ("grpc.max_receive_message_length", 64 * MB)]


def _args(**values: object) -> dict[str, bytes]:

    return {k: v if isinstance(v, bytes) else json.dumps(v).encode() for k, v in values.items()}


async def _stream_loop(stub: pb_grpc.SnakepitBridgeStub, rng: random.Random, until: float, out: Counter,
                       ping_share: float) -> None:
    while time.monotonic() < until:
        if rng.random() < ping_share:
            command, args = "ping_stream", _args(count=rng.randint(1, 200), interval=rng.choice([0.001, 0.01, 0.05]))
        else:
            command, args = "process_large_dataset", _args(total_rows=rng.randint(1_000, 20_000),
                                                            chunk_size=rng.choice([100, 1000]),
                                                            include_rows=rng.random() < 0.3)
        timeout = rng.uniform(0.05, 2.0) if rng.random() < 0.4 else 10.0
        cancel_after = rng.uniform(0.0, 0.5) if rng.random() < 0.3 else None
        if rng.random() < 0.25:
            call = stub.ExecuteInSessionStream(pb.SessionRequest(session_id=f"s{rng.randrange(16)}", command=command,
                                                                 args=args), timeout=timeout)
        else:
            call = stub.ExecuteStream(pb.ExecuteRequest(command=command, args=args), timeout=timeout)
        started = time.monotonic()
        try:
            async for _chunk in call:
                out["chunks"] += 1
                if cancel_after is not None and time.monotonic() - started > cancel_after:
                    call.cancel()
                    out["stream cancelled"] += 1
                    break
            else:
                out["stream done"] += 1
        except grpc.aio.AioRpcError as exc:
            out[f"stream {exc.code().name}"] += 1
        except asyncio.CancelledError:
            out["stream cancelled"] += 1


async def _echo_loop(stub: pb_grpc.SnakepitBridgeStub, rng: random.Random, until: float, out: Counter) -> None:
    while time.monotonic() < until:
        size = rng.randint(1 * MB, 10 * MB)
        try:
            r = await stub.Execute(pb.ExecuteRequest(command="echo_payload", args={"v": rng.randbytes(size)},
                                                     arg_encodings={"v": "raw"}), timeout=30)
            out["echo ok" if r.success and len(r.result["v"]) == size else "echo wrong"] += 1
            out["echo MB"] += size // MB
        except grpc.aio.AioRpcError as exc:
            out[f"echo {exc.code().name}"] += 1


async def _session_loop(stub: pb_grpc.SnakepitBridgeStub, rng: random.Random, until: float, out: Counter) -> None:
    while time.monotonic() < until:
        sid = f"s{rng.randrange(16)}"
        try:
            await stub.ExecuteInSession(pb.SessionRequest(session_id=sid, command="store",
                                                          args=_args(key="k", value=rng.random())), timeout=5)
            r = await stub.ExecuteInSession(pb.SessionRequest(session_id=sid, command="retrieve", args=_args(key="k")),
                                            timeout=5)
            out["session ok" if r.success else "session failed"] += 1
        except grpc.aio.AioRpcError as exc:
            out[f"session {exc.code().name}"] += 1


def _probe(target: str, seconds: float) -> None:
    """Run as its own process (``--probe TARGET``), so that the load
    generator's own event loop cannot delay it: Health every 20 ms, then the
    latencies in ms and its own CPU seconds as JSON on stdout (a failed probe
    counts as 5000 ms)."""
    stub = pb_grpc.SnakepitBridgeStub(grpc.insecure_channel(target))
    stub.Health(pb.HealthRequest(), timeout=10)
    until, latencies, marks, overslept = time.monotonic() + seconds, [], [], []
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            stub.Health(pb.HealthRequest(), timeout=5)
            done = time.monotonic()
            latencies.append((done - started) * 1000)
            marks.append((started, done))
        except grpc.RpcError:
            latencies.append(5000.0)
            marks.append((started, math.nan))
        time.sleep(0.02)
        overslept.append((time.monotonic() - done - 0.02) * 1000)
    print(json.dumps({"health_ms": latencies, "marks": marks, "overslept_ms": overslept,
                      "cpu_s": time.process_time()}))


async def _load(target: str, seconds: float, seed: int, mix: argparse.Namespace) -> Counter:
    rng = random.Random(seed)
    until = time.monotonic() + seconds
    out: Counter = Counter()
    async with grpc.aio.insecure_channel(target, options=_OPTS) as channel:
        stub = pb_grpc.SnakepitBridgeStub(channel)
        tasks = [_stream_loop(stub, random.Random(rng.random()), until, out, mix.ping_share) for _ in range(64)]
        tasks += [_echo_loop(stub, random.Random(rng.random()), until, out) for _ in range(mix.echo_loops)]
        tasks += [_session_loop(stub, random.Random(rng.random()), until, out) for _ in range(2)]
        await asyncio.gather(*tasks)
    return out


def _run_load(target: str, seconds: float, seed: int, mix: argparse.Namespace) -> None:
    """Run as its own process (``--load TARGET``): the calls, then their
    outcomes and its own CPU seconds as JSON on stdout."""
    if mix.load_nice:
        os.nice(mix.load_nice)
    out = asyncio.run(_load(target, seconds, seed, mix))
    print(json.dumps({"outcomes": out, "cpu_s": time.process_time()}))


def _child(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "benchmarks.soak", *args], cwd=ROOT, stdout=subprocess.PIPE)


def _minor_faults(pid: int) -> int:
    """Page faults the kernel served without I/O (e.g. zero-filling freshly
    mapped memory for a large copy), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[7])


def run(script: Path, seconds: float, seed: int, mix: argparse.Namespace) -> dict[str, Any]:
    watch = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    cmd = [sys.executable, "-m", "benchmarks.loopwatch", watch,
           str(script), "--port", "0", "--log-level", "warning", "--max-message-mb", "64"]
    with Server(cmd) as server:
        cpu0, faults0 = server.cpu(), _minor_faults(server.pid)
        peak = [server.rss()]
        knobs = ["--seconds", str(seconds), "--seed", str(seed), "--ping-share", str(mix.ping_share),
                 "--echo-loops", str(mix.echo_loops), "--load-nice", str(mix.load_nice)]
        probe, load = _child("--probe", server.target, *knobs), _child("--load", server.target, *knobs)
        while load.poll() is None:
            peak.append(server.rss())
            time.sleep(0.5)
        loaded = json.loads(load.communicate()[0])
        probed = json.loads(probe.communicate()[0])
        cpu, faults = server.cpu() - cpu0, _minor_faults(server.pid) - faults0
        time.sleep(1.1)  # the watcher writes its figures every second
        loop = json.loads(Path(watch).read_text())
    Path(watch).unlink()
    return {"health_ms": probed["health_ms"], "marks": probed["marks"], "overslept_ms": probed["overslept_ms"],
            "outcomes": loaded["outcomes"], "cpu_s": cpu, "minor_faults": faults, "peak_rss_mb": max(peak) / MB, "loop": loop,
            "probe_cpu_s": probed["cpu_s"], "load_cpu_s": loaded["cpu_s"], "seconds": seconds, "load_nice": mix.load_nice}


def _hist_pct(hist: dict[str, int], p: float) -> float:
    """The ``p`` percentile of a histogram {value: count}."""
    total, seen = sum(hist.values()), 0
    for value, count in sorted((float(k), c) for k, c in hist.items()):
        seen += count
        if seen >= p / 100 * total:
            return value
    return math.nan


def _show_health_path(marks: list[list[float]], health: dict[str, list[float]]) -> None:
    """Where a Health call's time went: probe send -> request parsed in the
    bridge (C-core, poller, loop), -> handler started (the loop), -> response
    serialized (the loop), -> probe got it (loop, C-core, probe). Clocks are
    the machine's one CLOCK_MONOTONIC. The first Health (the probe's warm-up)
    has no mark on the probe's side."""
    parse, handler, ser = (health[k][1:] for k in ("parse", "handler", "serialize"))
    n = min(len(marks), len(parse), len(handler), len(ser))
    if n == 0:
        return
    legs = {"in (wire+poller+loop)": [], "parse->handler": [], "handler->serialize": [], "out (loop+wire)": []}
    for (sent, got), p, h, s in zip(marks[:n], parse, handler, ser, strict=False):
        legs["in (wire+poller+loop)"].append((p - sent) * 1000)
        legs["parse->handler"].append((h - p) * 1000)
        legs["handler->serialize"].append((s - h) * 1000)
        legs["out (loop+wire)"].append((got - s) * 1000)
    worst = sorted(range(n), key=lambda i: -(marks[i][1] - marks[i][0]))[: max(1, n // 100)]
    print("    Health legs p50/p99 ms:", "; ".join(f"{k} {pct(v, 50):.1f}/{pct(v, 99):.1f}" for k, v in legs.items()))
    print("    the worst 1 % of Health calls, mean ms per leg:",
          "; ".join(f"{k} {sum(v[i] for i in worst) / len(worst):.1f}" for k, v in legs.items()))


def _show(name: str, r: dict[str, Any]) -> None:
    h, loop, out, secs = r["health_ms"], r["loop"], r["outcomes"], r["seconds"]
    lag = loop["lag_ms"]
    turns = {str(int(k) / 10): v for k, v in loop["turn_tenth_ms"].items()}
    n_turns = sum(turns.values())
    callbacks = sum(int(k) * v for k, v in loop["turn_callbacks"].items())
    print(f"{name} (load {os.getloadavg()[0]:.2f}): Health n={len(h)} p50={pct(h, 50):.1f} p99={pct(h, 99):.1f} "
          f"max={max(h):.1f} ms")
    print(f"    bridge loop: lag p50={pct(lag, 50):.1f} p99={pct(lag, 99):.1f} max={max(lag):.1f} ms; "
          f"busy {loop['work_s'] / secs * 100:.0f} % of wall; {n_turns / secs:.0f} turns/s, "
          f"{callbacks / max(n_turns, 1):.1f} callbacks/turn, turn p99={_hist_pct(turns, 99):.1f} "
          f"p99.9={_hist_pct(turns, 99.9):.1f} max={max(map(float, turns)):.1f} ms")
    slow = sorted(loop["slow_callbacks"].items(), key=lambda kv: -kv[1][1])[:5]
    if slow:
        print("    slow callbacks (>5 ms: n, total, max ms):",
              "; ".join(f"{k} {int(v[0])}, {v[1]:.0f}, {v[2]:.0f}" for k, v in slow))
    codec = sorted(loop["codec"].items(), key=lambda kv: -kv[1][1])[:4]
    print("    protobuf on the loop (n, total, max ms, n > 5 ms):",
          "; ".join(f"{k} {int(v[0])}, {v[1]:.0f}, {v[2]:.0f}, {int(v[3])}" for k, v in codec))
    _show_health_path(r["marks"], loop["health"])
    print(f"    probe's own sleep overshoot: p99={pct(r['overslept_ms'], 99):.1f} max={max(r['overslept_ms']):.1f} ms")
    threads = loop["threads_cpu_s"]
    print(f"    loop turns: {loop['work_s']:.1f} s wall, {loop['work_cpu_s']:.1f} s on CPU; bridge threads on CPU / "
          f"waiting for a CPU: main {threads['main']:.1f} / {threads['main_waiting']:.1f} s, "
          f"others {threads['others']:.1f} / {threads['others_waiting']:.1f} s")
    names = sorted(((k[7:], v) for k, v in threads.items() if k.startswith("thread ")), key=lambda kv: -kv[1])
    print("    other threads by name (CPU s):", ", ".join(f"{k} {v:.1f}" for k, v in names[:6]))
    print(f"    CPU s/s: bridge {r['cpu_s'] / secs:.2f}, load generator {r['load_cpu_s'] / secs:.2f} "
          f"(nice {r.get('load_nice', 0)}), "
          f"probe {r['probe_cpu_s'] / secs:.2f}; bridge peak RSS {r['peak_rss_mb']:.0f} MB, "
          f"{r['minor_faults'] / secs:,.0f} page faults/s")
    calls = sum(v for k, v in out.items() if k not in ("chunks", "echo MB"))
    print(f"    load: {calls / secs:.0f} calls/s, {out['chunks'] / secs:.0f} chunks/s, "
          f"{out['echo MB'] / secs:.1f} echo MB/s each way")
    print("   ", dict(sorted(out.items())))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--base", type=Path, help="another checkout to compare with (interleaved)")
    p.add_argument("--rounds", type=int, default=2, help="with --base: turns each")
    p.add_argument("--ping-share", type=float, default=0.8,
                   help="share of streams that are ping_stream (the rest: process_large_dataset)")
    p.add_argument("--echo-loops", type=int, default=4, help="loops of 1-10 MB echoes")
    p.add_argument("--load-nice", type=int, default=0,
                   help="nice value of the load generator's process (it shares the 2 cores with the bridge)")
    p.add_argument("--probe", metavar="TARGET", help=argparse.SUPPRESS)  # internal: the Health prober process
    p.add_argument("--load", metavar="TARGET", help=argparse.SUPPRESS)  # internal: the load generator process
    ns = p.parse_args(argv)
    if ns.probe:
        _probe(ns.probe, ns.seconds)
        return 0
    if ns.load:
        _run_load(ns.load, ns.seconds, ns.seed, ns)
        return 0
    here = ROOT / "grpc_bridge.py"
    if ns.base is None:
        _show("this checkout", run(here, ns.seconds, ns.seed, ns))
        return 0
    slot = ns.seconds / (2 * ns.rounds)
    for i in range(ns.rounds):
        for name, script in (("base", ns.base / "grpc_bridge.py"), ("this", here)):
            _show(f"round {i + 1} {name}", run(script, slot, ns.seed + i, ns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
