"""stdio benchmarks: ping round trips/s and 1 MB echo, JSON and MessagePack,
next to a bare framed loop (:mod:`benchmarks.bare_stdio`).

The worker is started as GenericPythonV2 / GenericPythonMsgpack start it
(``--mode pool-worker --protocol json|msgpack``, plus ``--log-level warning``
as ``priv/config/stdio.exs`` ships it; once more at the default level) and
counts as ready when the init ping is answered (CONTRACT.md §4). The goal's
baseline is the decode-and-answer loop, the least any worker speaking the
protocol does; the asyncio loop shows what an event loop itself costs and the
echo loop what bare framing costs. The client does the same encoding and
decoding work against all of them.
"""
from __future__ import annotations

import os
import selectors
import struct
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

import msgpack
import orjson

from .procs import BRIDGE, ROOT, cpu_seconds
from .report import Row, median

_HEADER = struct.Struct(">I")


class Unavailable(Exception):
    """The stdio worker did not start or did not answer as the contract says."""


class FramedProcess:
    """A child process spoken to in 4-byte length-prefixed frames."""

    def __init__(self, cmd: list[str], protocol: str) -> None:
        self.protocol = protocol
        self.stderr = tempfile.TemporaryFile()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.fd = self.proc.stdout.fileno()
        self.buf = bytearray()
        self.next_id = 0

    def encode(self, obj) -> bytes:
        return orjson.dumps(obj) if self.protocol == "json" else msgpack.packb(obj, use_bin_type=True)

    def decode(self, data: bytes):
        return orjson.loads(data) if self.protocol == "json" else msgpack.unpackb(data, raw=False)

    def send_frame(self, payload: bytes) -> None:
        self.proc.stdin.write(_HEADER.pack(len(payload)))
        self.proc.stdin.write(payload)
        self.proc.stdin.flush()

    def _fill(self, n: int, deadline: float) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd, selectors.EVENT_READ)
            while len(self.buf) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    raise Unavailable(f"no complete frame within the timeout; stderr: {self.stderr_tail()}")
                data = os.read(self.fd, max(65536, n - len(self.buf)))
                if not data:
                    raise Unavailable(f"worker exited (code {self.proc.poll()}); stderr: {self.stderr_tail()}")
                self.buf += data

    def recv_frame(self, timeout: float = 30.0) -> bytes:
        deadline = time.monotonic() + timeout
        self._fill(4, deadline)
        (n,) = _HEADER.unpack_from(self.buf)
        self._fill(4 + n, deadline)
        payload = bytes(self.buf[4:4 + n])
        del self.buf[:4 + n]
        return payload

    def request(self, command: str, args: dict) -> bytes:
        self.next_id += 1
        return self.encode({"id": self.next_id, "command": command, "args": args,
                            "timestamp": datetime.now(timezone.utc).isoformat()})

    def call(self, frame: bytes, timeout: float = 30.0):
        self.send_frame(frame)
        return self.decode(self.recv_frame(timeout))

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stderr_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-600:].strip()

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # EOF: the worker should exit on its own
            self.proc.wait(3)
        except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
            self.proc.kill()
            self.proc.wait(5)
        self.proc.stdout.close()
        self.stderr.close()


def start_worker(protocol: str, *extra: str) -> tuple[FramedProcess, float]:
    """Spawn the bridge in pool-worker mode; returns it and the spawn-to-init-ping time (ms)."""
    w = FramedProcess([sys.executable, str(BRIDGE), "--mode", "pool-worker", "--protocol", protocol, *extra],
                      protocol)
    try:
        reply = w.call(w.request("ping", {"worker_id": "bench", "initialization": True}), timeout=20)
    except Unavailable:
        w.close()
        raise
    if not isinstance(reply, dict) or not reply.get("success") or reply.get("id") != w.next_id:
        w.close()
        raise Unavailable(f"unexpected init reply: {str(reply)[:200]}")
    return w, (time.perf_counter() - w.started) * 1000


def start_bare(protocol: str, *extra: str) -> tuple[FramedProcess, float]:
    """A bare loop (:mod:`benchmarks.bare_stdio` with ``extra`` arguments)."""
    w = FramedProcess([sys.executable, "-m", "benchmarks.bare_stdio", *extra], protocol)
    w.call(w.request("ping", {"worker_id": "bench", "initialization": True}), timeout=20)
    return w, (time.perf_counter() - w.started) * 1000


def _pings(w: FramedProcess, n: int, bare: bool) -> tuple[float, float]:
    frames = [w.request("ping", {}) for _ in range(n)]
    cpu = w.cpu()
    t0 = time.perf_counter()
    for frame in frames:
        reply = w.call(frame)
        if not bare and not reply.get("success"):
            raise Unavailable(f"ping failed: {reply}")
    elapsed = time.perf_counter() - t0
    return n / elapsed, (w.cpu() - cpu) / n * 1e6


def _echo(w: FramedProcess, data: str, reps: int, bare: bool) -> tuple[float, float]:
    times = []
    cpu = w.cpu()
    for _ in range(reps):
        frame = w.request("echo", {"data": data})
        t0 = time.perf_counter()
        reply = w.call(frame)
        times.append((time.perf_counter() - t0) * 1000)
        if not bare and not reply.get("success"):
            raise Unavailable(f"echo failed: {str(reply)[:300]}")
    return median(times), (w.cpu() - cpu) / reps * 1000


#: The processes each protocol's section runs side by side: (key, bridge?, extra arguments).
#: "bridge" is the worker as priv/config/stdio.exs starts it (--log-level warning: only
#: failed calls log); "bridge_info" the default level, one log line per call.
PROCESSES = (
    ("bridge", True, ("--log-level", "warning")),
    ("bridge_info", True, ()),
    ("answer", False, ("--answer", "{p}")),
    ("asyncio", False, ("--answer", "{p}", "--asyncio")),
    ("echo", False, ()),
)


def stdio(pings: int, echo_reps: int) -> list[Row]:
    rows = []
    data = "x" * 1_000_000
    # The worker and the bare loops take turns in short rounds, so the load
    # changes of a shared 2-core machine hit all of them alike; medians of the rounds.
    rounds = 10
    for protocol in ("json", "msgpack"):
        label = "JSON" if protocol == "json" else "MessagePack"
        procs: dict[str, tuple[FramedProcess, bool]] = {}
        ready: dict[str, float] = {}
        try:
            for key, is_bridge, extra in PROCESSES:
                args = [a.format(p=protocol) for a in extra]
                w, ready[key] = start_worker(protocol, *args) if is_bridge else start_bare(protocol, *args)
                procs[key] = (w, not is_bridge)
            for w, bare in procs.values():
                _pings(w, 100, bare)
            ping = {k: [] for k in procs}
            for _ in range(rounds):
                for key, (w, bare) in procs.items():
                    ping[key].append(_pings(w, pings // rounds, bare))
            for w, bare in procs.values():
                _echo(w, data, 2, bare)
            big = {k: [] for k in procs}
            for _ in range(echo_reps):
                for key, (w, bare) in procs.items():
                    big[key].append(_echo(w, data, 1, bare))
        finally:
            for w, _ in procs.values():
                w.close()
        rate = {k: median([r for r, _ in v]) for k, v in ping.items()}
        # CPU is read in clock ticks (10 ms): a mean over all rounds, not a median of coarse ones.
        cpu = {k: sum(c for _, c in v) / len(v) for k, v in ping.items()}
        ms = {k: median([m for m, _ in v]) for k, v in big.items()}
        cpu_ms = {k: sum(c for _, c in v) / echo_reps * 1000 for k, v in big.items()}
        section = f"stdio, {label} (goal: within 10% of a bare framed loop)"

        # Called within this iteration; the defaults bind this iteration's values all the same.
        def ping_row(name: str, key: str, bare: str, rate=rate, cpu=cpu, section=section) -> Row:
            return Row(section, name, "calls/s", rate[key], rate[bare], higher_is_better=True,
                       bridge_cpu=cpu[key], bare_cpu=cpu[bare])

        def echo_row(name: str, bare: str, ms=ms, cpu_ms=cpu_ms, section=section) -> Row:
            return Row(section, name, "ms", ms["bridge"], ms[bare], bridge_cpu=cpu_ms["bridge"], bare_cpu=cpu_ms[bare])

        rows += [
            Row(section, "spawn to init ping answered (vs the echo loop)", "ms", ready["bridge"], ready["echo"]),
            ping_row("ping round trips vs a decode-and-answer loop", "bridge", "answer"),
            ping_row("ping round trips vs the same loop on asyncio", "bridge", "asyncio"),
            ping_row("ping round trips vs the echo loop", "bridge", "echo"),
            ping_row("ping round trips at --log-level info vs a decode-and-answer loop", "bridge_info", "answer"),
            echo_row("1 MB string echo vs a decode-and-answer loop", "answer"),
            echo_row("1 MB string echo vs the echo loop", "echo"),
        ]
    return rows
