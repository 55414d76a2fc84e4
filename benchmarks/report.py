"""Result records, the printed table, the JSON file, docs/performance.md and the plot."""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Row", "PayloadRow", "Results", "median", "pct"]

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def pct(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


@dataclass
class Row:
    """One figure for the bridge next to the same workload on the bare server."""

    section: str
    name: str
    unit: str
    bridge: float | None
    bare: float | None
    higher_is_better: bool = False
    bridge_cpu: float | None = None  # server CPU per op, in cpu_unit
    bare_cpu: float | None = None
    cpu_unit: str = "µs/call"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """The bridge's cost relative to the bare server's (1.0 = the same; 2.0 = twice the cost)."""
        if not self.bridge or not self.bare:
            return None
        return self.bare / self.bridge if self.higher_is_better else self.bridge / self.bare


@dataclass
class PayloadRow:
    encoding: str  # what the value is (json list, npy array, raw bytes, msgpack list, utf8 string)
    size: int  # nominal size
    wire_bytes: int  # the encoded value's actual size
    wire: str  # the encoding the bridge answered with
    codec_ms: float  # encode + decode once, in-process
    bridge_ms: float  # round trip, request pre-encoded, response not decoded
    bare_ms: float  # the same request on the bare servicer
    e2e_ms: float  # client encodes, round trip, client decodes
    bridge_cpu_ms: float
    bare_cpu_ms: float
    reps: int

    @property
    def ratio(self) -> float:
        return self.bridge_ms / self.bare_ms if self.bare_ms else math.nan


@dataclass
class Results:
    meta: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    payload: list[PayloadRow] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # section -> why

    def add(self, *rows: Row) -> None:
        self.rows.extend(rows)

    # -- output ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        rows = [{**asdict(r), "ratio": r.ratio} for r in self.rows]
        payload = [{**asdict(p), "ratio": p.ratio} for p in self.payload]
        return {"meta": self.meta, "rows": rows, "payload": payload, "unavailable": self.unavailable}

    def write_json(self, directory: Path, stamp: str) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json(), indent=2, default=str)
        (directory / "latest.json").write_text(text)
        path = directory / f"bench-{stamp}.json"
        path.write_text(text)
        return path

    def markdown(self) -> str:
        out: list[str] = []
        sections: dict[str, list[Row]] = {}
        for row in self.rows:
            sections.setdefault(row.section, []).append(row)
        out.append("| benchmark | bridge | bare | × bare | bridge CPU | bare CPU |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for section, rows in sections.items():
            out.append(f"| **{section}** | | | | | |")
            for r in rows:
                cpu_b = _num(r.bridge_cpu, r.cpu_unit) if r.bridge_cpu is not None else ""
                cpu_0 = _num(r.bare_cpu, r.cpu_unit) if r.bare_cpu is not None else ""
                name = f"{r.name} ({r.note})" if r.note else r.name
                out.append(f"| {name} | {_num(r.bridge, r.unit)} | {_num(r.bare, r.unit)} | "
                           f"{_ratio(r.ratio)} | {cpu_b} | {cpu_0} |")
        for section, why in self.unavailable.items():
            out.append(f"| **{section}** | unavailable: {why} | | | | |")
        if self.payload:
            out.append("")
            out.append("Payload echo (`bench_echo` on the bridge, `Execute` handing `args` back on the bare "
                       "servicer); times are medians per round trip, CPU is server CPU per call.")
            out.append("")
            out.append("| value | size | wire | codec ms | bridge ms | bare ms | × bare | e2e ms | "
                       "bridge CPU ms | bare CPU ms | reps |")
            out.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for p in self.payload:
                out.append(f"| {p.encoding} | {_size(p.size)} | {p.wire} | {p.codec_ms:.3g} | {p.bridge_ms:.3g} | "
                           f"{p.bare_ms:.3g} | {_ratio(p.ratio)} | {p.e2e_ms:.3g} | {p.bridge_cpu_ms:.3g} | "
                           f"{p.bare_cpu_ms:.3g} | {p.reps} |")
        return "\n".join(out)

    def text(self) -> str:
        """The table for the terminal: the markdown, which reads fine as text."""
        return self.markdown()

    def update_doc(self, doc: Path, plot_name: str | None) -> None:
        """Replace the generated block of ``doc`` (between the bench markers), keeping the prose."""
        block = [BEGIN, "", _meta_line(self.meta), "", self.markdown(), ""]
        if self.meta.get("goals"):
            block += ["Goals from the issues, checked against this run:", ""]
            block += [f"- {line}" for line in self.meta["goals"]] + [""]
        if plot_name:
            block += [f"![payload size against round-trip time per encoding]({plot_name})", ""]
        block.append(END)
        generated = "\n".join(block)
        text = doc.read_text() if doc.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            text = head + generated + tail
        else:
            text = text.rstrip() + "\n\n" + generated + "\n"
        doc.write_text(text)

    def plot(self, path: Path) -> bool:
        if not self.payload:
            return False
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
        encodings = list(dict.fromkeys(p.encoding for p in self.payload))
        for enc in encodings:
            rows = sorted((p for p in self.payload if p.encoding == enc), key=lambda p: p.wire_bytes)
            ax.plot([p.wire_bytes for p in rows], [p.bridge_ms for p in rows], marker="o", label=f"bridge: {enc}")
        bare = {}
        for p in self.payload:
            bare.setdefault(p.size, []).append((p.wire_bytes, p.bare_ms))
        points = sorted((median([b for b, _ in v]), median([m for _, m in v])) for v in bare.values())
        ax.plot([x for x, _ in points], [y for _, y in points], "k--", marker="x", label="bare grpcio servicer")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("payload size (bytes on the wire, one way)")
        ax.set_ylabel("echo round trip (ms, median)")
        ax.set_title("Payload echo: bridge per encoding vs bare servicer")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return True


def _meta_line(meta: dict[str, Any]) -> str:
    parts = []
    if "date" in meta:
        parts.append(f"Run of {meta['date']}")
    if "host_cpus" in meta:
        parts.append(f"{meta['host_cpus']} CPUs")
    if "loadavg" in meta:
        parts.append(f"load average {meta['loadavg']}")
    versions = ", ".join(f"{k} {meta[k]}" for k in ("python", "grpcio", "numpy") if k in meta)
    if versions:
        parts.append(versions)
    if "duration_s" in meta:
        parts.append(f"{meta['duration_s']:.0f} s" + (" (--quick)" if meta.get("quick") else ""))
    return " · ".join(parts) + "."


def _num(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}×"


def _size(n: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("KB", 1_000)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"
