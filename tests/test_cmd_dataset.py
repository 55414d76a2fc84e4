"""process_large_dataset against the real bridge: exact numbers (checked against
an independent computation), flat memory on a big file, synthetic mode,
cancellation and bad input."""
from __future__ import annotations

import csv
import math
import random
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

BRIDGE_DATA_DIR = True  # the tests' files are under pytest's temp root (--data-dir)

pytestmark = pytest.mark.timeout(90)

MESSY = ["", "n/a", "nan", "inf", "-inf", "abc", " "]


def write_messy_csv(path: Path, rows: int, seed: int = 7) -> None:
    """Integers, decimals, a group column, dirty cells, ragged rows, blank lines
    and quoted fields holding commas and newlines."""
    rnd = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "amount", "qty", "region", "comment"])
        for i in range(rows):
            amount = f"{rnd.uniform(-1000, 1000):.3f}"
            qty = str(rnd.randint(-20, 200))
            if rnd.random() < 0.05:
                amount = rnd.choice(MESSY)
            if rnd.random() < 0.03:
                qty = rnd.choice(MESSY)
            comment = rnd.choice(["ok", "has, comma", "two\nlines", 'a "quote"'])
            row = [str(i), amount, qty, f"r{rnd.randint(0, 6)}", comment]
            if rnd.random() < 0.01:
                row = row[:3]  # ragged: an error row
            w.writerow(row)
            if rnd.random() < 0.01:
                f.write("\n")  # blank line: ignored


def reference(path: Path, numeric: list[str], drop: bool, transform=None, group_by: str | None = None) -> dict:
    """The documented rules, computed independently over the whole file."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        idx = [header.index(c) for c in numeric]
        values = {c: [] for c in numeric}
        groups: Counter[str] = Counter()
        read = kept = skipped = errors = dirty = 0
        for row in reader:
            if not row:
                continue
            read += 1
            if len(row) != len(header):
                errors += 1
                continue
            parsed = []
            for j in idx:
                try:
                    x = float(row[j])
                    parsed.append(x if math.isfinite(x) else None)
                except ValueError:
                    parsed.append(None)
            if None in parsed:
                dirty += 1
                if drop:
                    skipped += 1
                    continue
            kept += 1
            for c, x in zip(numeric, parsed, strict=True):
                if x is not None:
                    values[c].append(transform(x) if transform else x)
            if group_by:
                groups[row[header.index(group_by)]] += 1
    cols = {c: {"count": len(v), "sum": math.fsum(v), "min": min(v), "max": max(v)} for c, v in values.items()}
    return {"read": read, "kept": kept, "skipped": skipped, "errors": errors, "dirty": dirty,
            "columns": cols, "groups": dict(groups)}


def check_final(final: dict, ref: dict) -> None:
    stats = final["final_stats"]
    assert (stats["rows_read"], stats["processed"], stats["skipped"], stats["errors"], stats["dirty_rows"]) == (
        ref["read"], ref["kept"], ref["skipped"], ref["errors"], ref["dirty"])
    for name, want in ref["columns"].items():
        got = stats["aggregates"]["columns"][name]
        assert (got["count"], got["min"], got["max"]) == (want["count"], want["min"], want["max"]), name
        assert got["sum"] == pytest.approx(want["sum"], rel=1e-12, abs=1e-9), name
        assert got["mean"] == pytest.approx(want["sum"] / want["count"], rel=1e-12, abs=1e-9), name
    assert stats["aggregates"]["groups"] == ref["groups"]


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "messy.csv"
    write_messy_csv(path, 3000)
    return path


def test_exact_numbers_drop_mode(client, messy):
    chunks = list(client.stream("process_large_dataset", {
        "file_path": str(messy), "chunk_size": 128, "operations": ["clean", "aggregate"], "group_by": "region",
    }, timeout_ms=30000))
    ref = reference(messy, ["id", "amount", "qty"], drop=True, group_by="region")
    body, final = chunks[:-1], chunks[-1]
    assert final.is_final and not final.error
    assert [c.data["chunk_number"] for c in body] == list(range(1, len(body) + 1))
    assert [c.data["rows_in_chunk"] for c in body[:-1]] == [128] * (len(body) - 1)
    assert sum(c.data["rows_in_chunk"] for c in body) == ref["read"]
    assert [c.data["processed_rows"] for c in body] == [min(128 * (i + 1), ref["read"]) for i in range(len(body))]
    assert body[-1].data["total_rows"] == ref["read"] and body[-1].data["total_rows_estimated"] is False
    assert body[-1].data["progress_percent"] == 100.0
    assert all(c.data["total_rows_estimated"] for c in body[:-1])
    assert all(0 < c.data["progress_percent"] <= 100 and c.data["memory_usage_mb"] > 0 for c in body)
    assert final.data["final_stats"]["numeric_columns"] == ["id", "amount", "qty"]
    assert ref["skipped"] > 50 and ref["errors"] > 5  # the file really is messy
    check_final(final.data, ref)


def test_exact_numbers_count_mode_with_transform(client, messy):
    chunks = list(client.stream("process_large_dataset", {
        "file_path": str(messy), "chunk_size": 500,
        "operations": {"clean": {"mode": "count"}, "transform": {"kind": "scale", "factor": 2.5, "offset": -1},
                       "aggregate": {"group_by": "region"}},
    }, timeout_ms=30000))
    ref = reference(messy, ["id", "amount", "qty"], drop=False, transform=lambda x: x * 2.5 - 1, group_by="region")
    assert ref["skipped"] == 0 and ref["dirty"] > 50
    check_final(chunks[-1].data, ref)


def test_signed_log1p_on_chosen_columns_and_rows_in_chunks(client, tmp_path):
    path = tmp_path / "small.csv"
    path.write_text("a,b,g\n-3,10,x\n0,e,y\n8,-1,x\n")
    chunks = list(client.stream("process_large_dataset", {
        "file_path": str(path), "chunk_size": 2, "include_rows": True, "numeric_columns": ["a", "b"],
        "operations": {"transform": {"kind": "signed_log1p", "columns": ["a"]}, "aggregate": {}},
    }, timeout_ms=30000))
    rows = chunks[0].data["rows"] + chunks[1].data["rows"]
    assert rows[0] == {"a": -math.log1p(3), "b": 10.0, "g": "x"}
    assert rows[1] == {"a": 0.0, "b": None, "g": "y"}  # no clean: dirty row kept, bad cell null
    cols = chunks[-1].data["final_stats"]["aggregates"]["columns"]
    assert cols["a"]["sum"] == pytest.approx(-math.log1p(3) + math.log1p(8))
    assert (cols["b"]["count"], cols["b"]["sum"]) == (2, 9.0)


def test_count_rows_makes_every_total_exact(client, messy):
    ref = reference(messy, ["id", "amount", "qty"], drop=True)
    chunks = list(client.stream("process_large_dataset", {"file_path": str(messy), "chunk_size": 700,
                                                          "count_rows": True}, timeout_ms=30000))
    body = chunks[:-1]
    assert {c.data["total_rows"] for c in body} == {ref["read"]}
    assert not any(c.data["total_rows_estimated"] for c in body)


def test_synthetic_mode(client):
    chunks = list(client.stream("process_large_dataset", {"total_rows": 1000, "chunk_size": 300,
                                                          "group_by": "category"}, timeout_ms=30000))
    body, final = chunks[:-1], chunks[-1].data
    assert [c.data["rows_in_chunk"] for c in body] == [300, 300, 300, 100]
    assert [c.data["progress_percent"] for c in body] == [30.0, 60.0, 90.0, 100.0]
    assert {c.data["total_rows"] for c in body} == {1000}
    values = [((i * 7919) % 1000) / 10 for i in range(1000)]
    col = final["final_stats"]["aggregates"]["columns"]["value"]
    assert (col["count"], col["min"], col["max"]) == (1000, min(values), max(values))
    assert col["sum"] == pytest.approx(math.fsum(values), rel=1e-12)
    assert final["final_stats"]["aggregates"]["groups"] == {f"c{k}": 250 for k in range(4)}


def test_execute_collects_the_chunks(client):
    r = client.execute("process_large_dataset", {"total_rows": 10, "chunk_size": 5})
    assert r.success and r.result["chunk_count"] == 3
    assert r.result["chunks"][-1]["final_stats"]["processed"] == 10


@pytest.mark.parametrize("args, needle", [
    ({"total_rows": 10, "chunk_size": 0}, "'chunk_size': Expected `int` >= 1, got 0"),
    ({"total_rows": 10, "chunk_size": "big"}, "'chunk_size': Expected `int`, got `str`"),
    ({"total_rows": -1}, "'total_rows': Expected `int` >= 0, got -1"),
    ({"total_rows": 10, "operations": ["sort"]}, "unknown operation 'sort'"),
    ({"total_rows": 10, "operations": {"transform": {"kind": "cube"}}}, "transform 'kind' must be one of"),
    ({"total_rows": 10, "group_by": "nope"}, "'group_by': no column 'nope'"),
    ({"file_path": "/definitely/not/here.csv"}, "is outside the data directories (--data-dir)"),
])
def test_bad_arguments(client, args, needle):
    chunks = list(client.stream("process_large_dataset", args, timeout_ms=10000))
    assert len(chunks) == 1 and chunks[0].is_final
    assert needle in chunks[0].error
    assert client.execute("ping").success


def test_missing_file_is_not_found(client, tmp_path):
    r = client.execute("process_large_dataset", {"file_path": str(tmp_path / "not-here.csv")})
    assert not r.success and "no such file" in r.error


def write_big_csv(path: Path, target_bytes: int) -> int:
    """~target_bytes of simple rows, written in blocks (fast); returns the row count."""
    block_rows = 20000
    n = 0
    with open(path, "w") as f:
        f.write("id,price,qty,region,note\n")
        while f.tell() < target_bytes:
            f.write("".join(f"{i},{(i * 37) % 100000 / 100},{i % 517 - 50},r{i % 9},row number {i}\n"
                            for i in range(n, n + block_rows)))
            n += block_rows
    return n


def test_big_file_memory_stays_flat_and_cancel_closes_it(spawn_bridge, tmp_path):
    from snakepit_bridge.client import Client

    path = tmp_path / "big.csv"
    rows = write_big_csv(path, 40 * 1024 * 1024)
    bridge = spawn_bridge("--data-dir", str(tmp_path))
    proc = psutil.Process(bridge.pid)
    with Client(bridge.target) as client:
        client.wait_ready()
        warm = list(client.stream("process_large_dataset", {"total_rows": 20000, "chunk_size": 5000,
                                                           "group_by": "category"}, timeout_ms=30000))
        assert warm[-1].is_final and not warm[-1].error
        base = proc.memory_info().rss
        peak, estimates = base, []
        t0 = time.monotonic()
        for chunk in client.stream("process_large_dataset", {"file_path": str(path), "chunk_size": 10000,
                                                             "group_by": "region",
                                                             "operations": ["clean", "transform", "aggregate"]},
                                   timeout_ms=60000):
            peak = max(peak, proc.memory_info().rss)
            if not chunk.is_final and chunk.data["chunk_number"] == len(estimates) + 1:
                estimates.append((chunk.data["total_rows"], chunk.data["total_rows_estimated"]))
            final = chunk
        elapsed = time.monotonic() - t0
        assert final.is_final and not final.error
        assert final.data["final_stats"]["processed"] == rows
        assert final.data["final_stats"]["aggregates"]["groups"] == {f"r{k}": len(range(k, rows, 9)) for k in range(9)}
        delta_mb = (peak - base) / 2**20
        print(f"\n{path.stat().st_size / 2**20:.0f} MB, {rows} rows in {elapsed:.1f}s "
              f"({rows / elapsed:,.0f} rows/s), RSS delta {delta_mb:.1f} MB")
        assert delta_mb < 40, f"RSS grew by {delta_mb:.1f} MB reading a 40 MB file"
        mid_total, mid_estimated = estimates[len(estimates) // 2]
        assert mid_estimated and abs(mid_total - rows) / rows < 0.05

        stream = client.stream("process_large_dataset", {"file_path": str(path), "chunk_size": 1000},
                               timeout_ms=60000)
        assert next(stream).data["chunk_number"] == 1
        assert str(path) in {f.path for f in proc.open_files()}
        stream.cancel()
        deadline = time.monotonic() + 5
        while str(path) in {f.path for f in proc.open_files()} and time.monotonic() < deadline:
            time.sleep(0.02)
        assert str(path) not in {f.path for f in proc.open_files()}, "CSV still open after cancel"
        assert client.execute("ping").success


def test_group_counts_are_capped(client):
    chunks = list(client.stream("process_large_dataset", {
        "total_rows": 100, "chunk_size": 7, "operations": {"aggregate": {"group_by": "id", "max_groups": 10}},
    }, timeout_ms=30000))
    agg = chunks[-1].data["final_stats"]["aggregates"]
    assert agg["groups_truncated"] is True
    assert agg["groups"] == {**{str(i): 1 for i in range(10)}, "__other__": 90}
    assert "id" not in agg["columns"]  # the group column is never numeric


def test_headerless_file_with_another_delimiter(client, tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("1;2.5;a\n2;;b\n3;4;a\n")
    chunks = list(client.stream("process_large_dataset", {
        "file_path": str(path), "has_header": False, "delimiter": ";", "group_by": "col3",
    }, timeout_ms=30000))
    stats = chunks[-1].data["final_stats"]
    assert stats["columns"] == ["col1", "col2", "col3"]
    assert (stats["rows_read"], stats["processed"], stats["skipped"]) == (3, 2, 1)
    assert stats["aggregates"]["columns"]["col2"]["sum"] == 6.5
    assert stats["aggregates"]["groups"] == {"a": 2}


@pytest.mark.parametrize("rows,chunk_size", [(200_000, 20_000), (100, 10)])
def test_estimates_measure_bytes_and_rows_at_the_same_point(client, tmp_path, rows, chunk_size):
    # The file position used to be read after a one-chunk lookahead (and the
    # decoder's read-ahead) while rows were counted to the current chunk: the
    # first of ten chunks said 19% and half the total; a small file said
    # total_rows == processed_rows on every chunk.
    path = tmp_path / "even.csv"
    with open(path, "w") as f:
        f.write("id,price,region\n")
        # Rows of one width, so the byte fraction is the row fraction.
        f.writelines(f"{i:06d},{(i * 37) % 100000 / 100:08.2f},r{i % 9}\n" for i in range(rows))
    chunks = [c.data for c in client.stream("process_large_dataset", {"file_path": str(path), "chunk_size": chunk_size},
                                            timeout_ms=60000) if not c.is_final]
    assert len(chunks) == rows // chunk_size
    for c in chunks[:-1]:
        true_percent = 100.0 * c["processed_rows"] / rows
        assert c["total_rows_estimated"] is True
        assert abs(c["progress_percent"] - true_percent) < 3, (c, true_percent)
        assert abs(c["total_rows"] - rows) / rows < 0.10, c
    assert abs(chunks[0]["progress_percent"] - 100.0 * chunk_size / rows) < 3
    assert chunks[-1]["total_rows"] == rows and chunks[-1]["progress_percent"] == 100.0
