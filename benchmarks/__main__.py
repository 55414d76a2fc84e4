"""``make bench``: run every benchmark once, print the table, write JSON and the docs.

    .venv/bin/python -m benchmarks                # everything (< 5 min on 2 cores)
    .venv/bin/python -m benchmarks --quick        # fewer repetitions, for a smoke run
    .venv/bin/python -m benchmarks --only unary,stdio --no-docs
    .venv/bin/python -m benchmarks --only storm       # the start storm (not in the default run)

Writes ``benchmarks/results/latest.json`` (and a timestamped copy), and unless
``--no-docs`` the generated block of ``docs/performance.md`` and
``docs/payload_rtt.png``. A section that cannot run (say the stdio transport is
missing) is reported as unavailable; the others still run.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import time
import traceback
from datetime import datetime, timezone

from . import bench_client, bench_dispatch, bench_grpc, bench_payload, bench_start, bench_stdio
from .procs import ROOT, Server, bare_grpc_cmd, bridge_cmd
from .report import Results, Row

SECTIONS = ("startup", "dispatch", "unary", "streams", "first", "cancel", "lead", "payload", "stdio", "client",
            "storm")
#: 64 workers spawned at once load the shared machine for tens of seconds: only on request.
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s != "storm")
BRIDGE_ARGS = ["--adapter", "benchmarks.handlers"]


def _find(results: Results, section_prefix: str, name_prefix: str) -> Row | None:
    for row in results.rows:
        if row.section.startswith(section_prefix) and row.name.startswith(name_prefix):
            return row
    return None


def goals(results: Results, baseline: dict) -> list[str]:
    """The issue goals, each with the figure that meets or misses it."""
    out = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    row = _find(results, "Startup", "spawn to ready vs")
    if row and row.ratio:
        out.append(f"Startup within 2.5× of `python -c \"import grpc\"`: {row.ratio:.2f}× ({verdict(row.ratio <= 2.5)})")
    for name, goal in (("gRPC: spawn to ready line", 1.2), ("stdio: spawn to negotiation", 1.5)):
        row = _find(results, "Startup", name)
        if row and row.ratio:
            out.append(f"{name} within {goal}× of its bare baseline: {row.ratio:.2f}× ({verdict(row.ratio <= goal)}); "
                       f"CPU until ready {row.bridge_cpu:.0f} vs {row.bare_cpu:.0f} ms")
    for label in ("sequential", "8 in flight", "64 in flight"):
        aio = _find(results, "Unary ping", f"{label}: throughput")
        sync = _find(results, "Unary ping", f"{label}: throughput vs the sync servicer")
        if aio and aio.bridge_cpu and aio.bare_cpu:
            cpu = aio.bridge_cpu / aio.bare_cpu
            fastest = max(aio.bare, sync.bare if sync else 0)
            out.append(f"Unary ping, {label}: server CPU {cpu:.2f}× the bare aio servicer's (goal ≤ 1.1×: "
                       f"{verdict(cpu <= 1.1)}); rate {aio.bridge / fastest:.2f}× the faster bare servicer "
                       f"(goal ≥ 1: {verdict(aio.bridge >= fastest)})")
    for p in results.payload:
        if p.size == 10_000_000 and ("npy" in p.encoding or "raw" in p.encoding):
            cpu = p.bridge_cpu_ms / p.bare_cpu_ms if p.bare_cpu_ms else float("nan")
            out.append(f"10 MB echo within 2× of the bare servicer, {p.encoding}: {p.ratio:.2f}× wall "
                       f"({verdict(p.ratio <= 2)}); server CPU {cpu:.2f}× the bare servicer's")
    if baseline.get("json") and baseline.get("npy"):
        speed = baseline["json"] / baseline["npy"]
        out.append(f"1 MiB of floats at least 5× faster than JSON everything (end to end, npy): {speed:.1f}× "
                   f"({verdict(speed >= 5)})")
        if baseline.get("msgpack"):
            out.append(f"… the same list sent as MessagePack: {baseline['json'] / baseline['msgpack']:.1f}× faster")
    for row in results.rows:
        if row.section.startswith("stdio") and not row.name.startswith("spawn") and row.ratio:
            out.append(f"{row.section.split(' (')[0]}, {row.name}: {(row.ratio - 1) * 100:+.0f}% "
                       f"(goal within +10%: {verdict(row.ratio <= 1.10)})")
    for row in results.rows:
        if row.section.startswith("Typed commands") and row.bridge is not None and row.bare is not None:
            added = row.bridge - row.bare
            out.append(f"Typed 5-argument command, {row.name.split(', ', 1)[1]}: {added:+.1f} µs per call over "
                       f"untyped (goal at most +10: {verdict(added <= 10)})")
    row = _find(results, "First chunk", "async generator: p50")
    if row and row.bridge is not None:
        out.append(f"First chunk of a 1,000,000-item stream in a few ms: {row.bridge:.2f} ms p50")
    for kind in ("async generator", "sync generator"):
        p95 = _find(results, "Cancel to finalizer", f"{kind}: p95")
        worst = _find(results, "Cancel to finalizer", f"{kind}: max")
        if p95 and worst and p95.bridge is not None:
            out.append(f"Cancel to finalizer within 10 ms, {kind}: p95 {p95.bridge:.2f} ms ({verdict(p95.bridge <= 10)}), "
                       f"worst {worst.bridge:.2f} ms of {_cancel_reps(results)} (bare servicer worst {worst.bare:.2f} ms)")
    return out


def _cancel_reps(results: Results) -> int:
    return results.meta.get("cancel_reps", 0)


def run(only: set[str], quick: bool) -> tuple[Results, dict]:
    results = Results()
    baseline: dict = {}
    reps = 2 if quick else 5
    results.meta["cancel_reps"] = 10 if quick else 100

    def section(name: str, label: str, func) -> None:
        if name not in only:
            return
        t0 = time.perf_counter()
        print(f"[bench] {label} ...", file=sys.stderr, flush=True)
        try:
            func()
        except Exception as exc:  # noqa: BLE001 - one broken section must not sink the run
            results.unavailable[label] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            traceback.print_exc()
        print(f"[bench] {label}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    section("startup", "Startup", lambda: results.add(*bench_grpc.startup(reps, BRIDGE_ARGS),
                                                       *bench_start.startup(2 * reps, [])))
    section("dispatch", "In-process dispatch", lambda: results.add(*bench_dispatch.dispatch(2000 if quick else 5000)))

    grpc_sections = {"unary", "streams", "first", "cancel", "lead", "payload", "client"} & only
    if grpc_sections:
        with contextlib.ExitStack() as stack:
            try:
                bridge = stack.enter_context(Server(bridge_cmd("--port", "0", *BRIDGE_ARGS)))
                bare = stack.enter_context(Server(bare_grpc_cmd("--port", "0")))
                sync = stack.enter_context(Server(bare_grpc_cmd("--port", "0", "--sync")))
            except RuntimeError as exc:  # the bridge does not start: say so, still run stdio
                results.unavailable["gRPC sections"] = str(exc).splitlines()[0][:200]
                traceback.print_exc()
            else:
                _grpc_sections(section, results, baseline, bridge, bare, sync, only, quick)

    section("stdio", "stdio", lambda: results.add(*bench_stdio.stdio(500 if quick else 3000, 5 if quick else 20)))
    section("storm", "Start storm", lambda: results.add(*bench_start.storm(16 if quick else 64)))
    return results, baseline


def _grpc_sections(section, results: Results, baseline: dict, bridge: Server, bare: Server, sync: Server,
                   only: set[str], quick: bool) -> None:
    section("unary", "Unary ping",
            lambda: results.add(*asyncio.run(bench_grpc.unary(bridge, bare, 2000 if quick else 6000, sync=sync))))
    section("streams", "Streams",
            lambda: results.add(*asyncio.run(bench_grpc.streams(bridge, bare, 8000 if quick else 24000))))
    section("first", "First chunk",
            lambda: results.add(*asyncio.run(bench_grpc.first_chunk(bridge, bare, 5 if quick else 20))))
    section("cancel", "Cancel to finalizer",
            lambda: results.add(*asyncio.run(bench_grpc.cancellation(bridge, bare, results.meta["cancel_reps"]))))
    section("lead", "Producer lead", lambda: results.add(*asyncio.run(bench_grpc.producer_lead(bridge, bare))))
    section("client", "Client pull",
            lambda: results.add(*bench_client.pull(bridge, 200 if quick else 400, 50, 1 if quick else 3)))

    def payload() -> None:
        with Server(bridge_cmd("--port", "0", *BRIDGE_ARGS, "--binary-threshold",
                               str(bench_payload.JSON_EVERYTHING))) as json_bridge:
            rows, figures = bench_payload.json_baseline(bridge, json_bridge, bare, quick)
            results.add(*rows)
            baseline.update(figures)
            results.payload.extend(bench_payload.payload(bridge, json_bridge, bare, quick))

    section("payload", "Payload echo", payload)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description="Run the benchmark suite.")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run; figures are noisier)")
    p.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)}")
    p.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md and the plot (never rewritten with --only)")
    ns = p.parse_args(argv)
    only = set(ns.only.split(",")) if ns.only else set(DEFAULT_SECTIONS)
    unknown = only - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")
    os.chdir(ROOT)

    import grpc
    import numpy

    started = time.perf_counter()
    now = datetime.now(timezone.utc)
    load_before = os.getloadavg()
    results, baseline = run(only, ns.quick)
    load_after = os.getloadavg()
    results.meta.update({
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "host_cpus": os.cpu_count(),
        "loadavg": f"{load_before[0]:.1f} before, {load_after[0]:.1f} after",
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "numpy": numpy.__version__,
        "duration_s": round(time.perf_counter() - started, 1),
        "quick": ns.quick,
        "sections": sorted(only),
    })
    results.meta["goals"] = goals(results, baseline)

    print(results.text())
    print()
    for line in results.meta["goals"]:
        print(f"- {line}")
    path = results.write_json(ROOT / "benchmarks" / "results", now.strftime("%Y%m%dT%H%M%SZ"))
    print(f"\nJSON: {path.relative_to(ROOT)}")
    if not ns.no_docs and not ns.only:  # a partial run must not overwrite the committed table
        plotted = results.plot(ROOT / "docs" / "payload_rtt.png")
        results.update_doc(ROOT / "docs" / "performance.md", "payload_rtt.png" if plotted else None)
        print("docs: docs/performance.md" + (", docs/payload_rtt.png" if plotted else ""))
    print(f"total {results.meta['duration_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
