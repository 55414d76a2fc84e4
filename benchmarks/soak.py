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
  generator's event loop cannot delay it): its latency is the result.

Printed: Health p50 / p99 / max, calls and their outcomes, the bridge's CPU
seconds and peak RSS. With ``--base`` the two checkouts run in turns
(A B A B, ``--rounds`` each, ``--seconds`` split between them). Not part of
``make bench`` or the test suite (it takes minutes); the machine is shared, so
compare runs made side by side, not across days.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from pathlib import Path

import grpc

from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge._proto import snakepit_pb2_grpc as pb_grpc

from .procs import ROOT, Server
from .report import pct

MB = 1024 * 1024
_OPTS = [("grpc.max_send_message_length", 64 * MB), ("grpc.max_receive_message_length", 64 * MB)]


def _args(**values: object) -> dict[str, bytes]:
    import json

    return {k: v if isinstance(v, bytes) else json.dumps(v).encode() for k, v in values.items()}


async def _stream_loop(stub: pb_grpc.SnakepitBridgeStub, rng: random.Random, until: float, out: Counter) -> None:
    while time.monotonic() < until:
        if rng.random() < 0.8:
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
    latencies in ms as JSON on stdout (a failed probe counts as 5000 ms)."""
    import json

    stub = pb_grpc.SnakepitBridgeStub(grpc.insecure_channel(target))
    stub.Health(pb.HealthRequest(), timeout=10)
    until, latencies = time.monotonic() + seconds, []
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            stub.Health(pb.HealthRequest(), timeout=5)
            latencies.append((time.perf_counter() - started) * 1000)
        except grpc.RpcError:
            latencies.append(5000.0)
        time.sleep(0.02)
    print(json.dumps(latencies))


async def _load(target: str, seconds: float, seed: int) -> tuple[list[float], Counter]:
    import json
    import subprocess

    rng = random.Random(seed)
    until = time.monotonic() + seconds
    out: Counter = Counter()
    probe = await asyncio.create_subprocess_exec(sys.executable, "-m", "benchmarks.soak", "--probe", target,
                                                 "--seconds", str(seconds), cwd=ROOT, stdout=subprocess.PIPE)
    async with grpc.aio.insecure_channel(target, options=_OPTS) as channel:
        stub = pb_grpc.SnakepitBridgeStub(channel)
        tasks = [_stream_loop(stub, random.Random(rng.random()), until, out) for _ in range(64)]
        tasks += [_echo_loop(stub, random.Random(rng.random()), until, out) for _ in range(4)]
        tasks += [_session_loop(stub, random.Random(rng.random()), until, out) for _ in range(2)]
        await asyncio.gather(*tasks)
    stdout, _ = await probe.communicate()
    return json.loads(stdout), out


def run(script: Path, seconds: float, seed: int) -> dict[str, object]:
    cmd = [sys.executable, str(script), "--port", "0", "--log-level", "warning", "--max-message-mb", "64"]
    with Server(cmd) as server:
        cpu0 = server.cpu()
        peak = [server.rss()]

        async def main() -> tuple[list[float], Counter]:
            async def watch_rss() -> None:
                while True:
                    peak.append(server.rss())
                    await asyncio.sleep(0.5)

            watcher = asyncio.ensure_future(watch_rss())
            try:
                return await _load(server.target, seconds, seed)
            finally:
                watcher.cancel()

        latencies, out = asyncio.run(main())
        cpu = server.cpu() - cpu0
    return {"health_ms": latencies, "outcomes": out, "cpu_s": cpu, "peak_rss_mb": max(peak) / MB}


def _show(name: str, r: dict[str, object]) -> None:
    h = r["health_ms"]  # type: ignore[assignment]
    print(f"{name}: Health n={len(h)} p50={pct(h, 50):.1f} ms p99={pct(h, 99):.1f} ms max={max(h):.1f} ms; "
          f"bridge CPU {r['cpu_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB")
    print("   ", dict(sorted(r["outcomes"].items())))  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--base", type=Path, help="another checkout to compare with (interleaved)")
    p.add_argument("--rounds", type=int, default=2, help="with --base: turns each")
    p.add_argument("--probe", metavar="TARGET", help=argparse.SUPPRESS)  # internal: the Health prober process
    ns = p.parse_args(argv)
    if ns.probe:
        _probe(ns.probe, ns.seconds)
        return 0
    here = ROOT / "grpc_bridge.py"
    if ns.base is None:
        _show("this checkout", run(here, ns.seconds, ns.seed))
        return 0
    slot = ns.seconds / (2 * ns.rounds)
    for i in range(ns.rounds):
        for name, script in (("base", ns.base / "grpc_bridge.py"), ("this", here)):
            _show(f"round {i + 1} {name}", run(script, slot, ns.seed + i))
    return 0


if __name__ == "__main__":
    sys.exit(main())
