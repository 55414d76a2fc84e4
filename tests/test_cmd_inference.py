"""batch_inference against the real bridge: the shipped model's predictions,
user weights (and their reload), malformed model files, lazy numpy, cancel."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from snakepit_bridge.models import DEFAULT_MODEL_PATH

BRIDGE_DATA_DIR = True  # the tests' files are under pytest's temp root (--data-dir)

pytestmark = pytest.mark.timeout(60)

OBVIOUS = {
    "I love this, it is absolutely wonderful": "positive",
    "Great product, works perfectly, highly recommended": "positive",
    "This is terrible, I hate it": "negative",
    "Awful service, the staff were rude and useless": "negative",
    "The meeting is scheduled for Monday at ten": "neutral",
    "The package arrived on Tuesday": "neutral",
}


def run(client, args, **kw):
    return list(client.stream("batch_inference", args, timeout_ms=kw.pop("timeout_ms", 30000), **kw))


def test_default_model_predicts_obvious_sentiment(client):
    items = list(OBVIOUS)
    chunks = run(client, {"batch_items": items})
    body, final = chunks[:-1], chunks[-1]
    assert len(body) == len(items) and all(not c.error for c in body)
    assert [c.data["index"] for c in body] == list(range(len(items)))
    assert [c.data["item"] for c in body] == items
    assert [c.data["prediction"] for c in body] == [OBVIOUS[t] for t in items]
    for c in body:
        probs = c.data["probabilities"]
        assert set(probs) == {"negative", "neutral", "positive"}
        assert sum(probs.values()) == pytest.approx(1.0)
        assert c.data["confidence"] == max(probs.values()) > 0.5
    assert final.is_final and not final.error
    summary = final.data
    assert summary["count"] == summary["predicted"] == len(items) and summary["errors"] == 0
    assert summary["class_counts"] == {"negative": 2, "neutral": 2, "positive": 2}
    assert summary["mean_confidence"] == pytest.approx(np.mean([c.data["confidence"] for c in body]))
    assert summary["elapsed_ms"] > 0 and summary["model"]["name"] == "sentiment.npz"


def test_bad_item_is_a_per_item_error_and_the_stream_goes_on(client):
    chunks = run(client, {"batch_items": ["great, I love it", 42, {"text": "terrible, I hate it"}],
                          "probabilities": False})
    assert chunks[0].data["prediction"] == "positive" and "probabilities" not in chunks[0].data
    assert not chunks[1].is_final and "item 1: this model takes strings" in chunks[1].error
    assert chunks[1].data == {"index": 1, "item": 42}
    assert chunks[2].data["prediction"] == "negative"
    assert chunks[3].data["errors"] == 1 and chunks[3].data["predicted"] == 2
    assert chunks[3].data["class_counts"] == {"negative": 1, "neutral": 0, "positive": 1}


def test_user_linear_model_matches_an_independent_softmax(client, tmp_path):
    w = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0], [-1.0, 0.0, 2.0]])
    b = np.array([0.1, -0.2, 0.0])
    path = tmp_path / "lin.npz"
    np.savez(path, kind=np.array("linear_v1"), weights=w, bias=b, labels=np.array(["a", "b", "c"]))
    items = [[1, 0, 0], [0, 3, 1], [0.5, 0.5, 4]]
    chunks = run(client, {"batch_items": items, "model_path": str(path)})
    for item, chunk in zip(items, chunks[:-1], strict=True):
        z = w @ np.array(item, dtype=float) + b
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        assert chunk.data["prediction"] == "abc"[int(np.argmax(p))]
        assert chunk.data["confidence"] == pytest.approx(float(p.max()), rel=1e-12)
    assert chunks[-1].data["model"] == {"name": "lin.npz", "kind": "linear_v1", "labels": ["a", "b", "c"], "features": 3}


def test_user_text_model_and_reload_after_rewrite(client, tmp_path):
    with np.load(DEFAULT_MODEL_PATH, allow_pickle=False) as z:
        w, b = z["weights"], z["bias"]
    path = tmp_path / "swapped.npz"
    # Same weights, labels renamed: proves the file is read, not the default.
    np.savez(path, weights=w, bias=b, labels=np.array(["sad", "meh", "glad"]))
    first = run(client, {"batch_items": ["I love it, wonderful"], "model_path": str(path)})
    assert first[0].data["prediction"] == "glad"
    # Rows reversed (positive first) under new names; an extra key is ignored.
    np.savez(path, weights=w[::-1], bias=b[::-1], labels=np.array(["GLAD", "MEH", "SAD"]), extra=np.zeros(3))
    second = run(client, {"batch_items": ["I love it, wonderful"], "model_path": str(path)})
    assert second[0].data["prediction"] == "GLAD"  # the rewritten file was loaded, not a stale cache


def bad_models(tmp: Path) -> list[tuple[Path, str]]:
    cases = []

    def npz(name, **arrays):
        p = tmp / name
        np.savez(p, **arrays)
        return p

    good = {"weights": np.zeros((2, 4)), "bias": np.zeros(2), "labels": np.array(["x", "y"])}
    text = tmp / "notes.npz"
    text.write_text("not a model")
    cases.append((text, "is not a .npz model archive (not a zip file)"))
    npy = tmp / "single.npz"
    np.save(npy, np.zeros(3))
    Path(str(npy) + ".npy").rename(npy)
    cases.append((npy, "is a single .npy array"))
    cases.append((npz("nokeys.npz", weights=np.zeros((2, 4))), "lacks key(s) ['bias', 'labels']"))
    cases.append((npz("shape.npz", **{**good, "bias": np.zeros(3)}), "'bias' must be a numeric array of shape (2,)"))
    cases.append((npz("w1d.npz", **{**good, "weights": np.zeros(4)}), "'weights' must be a numeric (C, D) array"))
    cases.append((npz("obj.npz", **{**good, "labels": np.array(["x", 1], dtype=object)}),
                  "key 'labels' cannot be loaded without pickle"))
    cases.append((npz("intlabels.npz", **{**good, "labels": np.array([0, 1])}), "'labels' must be a string array"))
    cases.append((npz("nan.npz", **{**good, "weights": np.full((2, 4), np.nan)}), "must be finite"))
    cases.append((npz("kind.npz", **good, kind=np.array("tree")), "unknown kind 'tree'"))
    return cases


def test_malformed_model_files_are_clear_errors(client, tmp_path):
    for path, needle in bad_models(tmp_path):
        chunks = run(client, {"batch_items": ["hello"], "model_path": str(path)})
        assert len(chunks) == 1 and chunks[0].is_final, path.name
        assert needle in chunks[0].error and str(path) in chunks[0].error, (path.name, chunks[0].error)
    missing = run(client, {"batch_items": ["hello"], "model_path": str(tmp_path / "none.npz")})
    assert "no such file" in missing[0].error
    assert client.execute("ping").success


@pytest.mark.parametrize("args, needle", [
    ({}, "'batch_items': missing (required)"),
    ({"batch_items": "one string"}, "'batch_items': Expected `list`, got `str`"),
    ({"batch_items": ["x"], "model_path": 7}, "'model_path': Expected `str | null`, got `int`"),
])
def test_bad_arguments(client, args, needle):
    chunks = run(client, args)
    assert len(chunks) == 1 and needle in chunks[0].error


def numpy_loaded(pid: int) -> bool:
    return any("numpy" in m.path for m in psutil.Process(pid).memory_maps())


def test_numpy_is_imported_only_when_the_command_runs(spawn_bridge):
    from snakepit_bridge.client import Client

    bridge = spawn_bridge()
    with Client(bridge.target) as client:
        client.wait_ready()
        assert client.execute("ping").success
        assert not numpy_loaded(bridge.pid)
        chunks = run(client, {"batch_items": ["fine"]})
        assert chunks[-1].is_final and not chunks[-1].error
        assert numpy_loaded(bridge.pid)


def test_throughput_and_cancel_of_a_big_batch(client):
    items = [f"item {i}: {'great and lovely' if i % 2 else 'bad and broken'}" for i in range(3000)]
    t0 = time.monotonic()
    chunks = run(client, {"batch_items": items, "probabilities": False})
    elapsed = time.monotonic() - t0
    assert chunks[-1].data["count"] == 3000
    assert chunks[-1].data["class_counts"]["positive"] == 1500 == chunks[-1].data["class_counts"]["negative"]
    print(f"\nbatch_inference: {3000 / elapsed:,.0f} items/s end to end")

    stream = client.stream("batch_inference", {"batch_items": items * 30}, timeout_ms=60000)
    assert next(stream).data["index"] == 0
    stream.cancel()
    deadline = time.monotonic() + 5
    while client.info(capabilities=False).stats.active_streams and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.info(capabilities=False).stats.active_streams == 0
