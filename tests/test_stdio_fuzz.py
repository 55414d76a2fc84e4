"""Fuzzing the stdio protocol with the real worker: no crash, no hang, stdout stays frames.

Hypothesis draws a corpus of requests (commands, arguments, opt-in flags) and
a seed; each example expands them into a batch of BATCH frames: valid
requests, mutated ones (bit flips, truncation, insertion, deletion,
duplication, splices) and random bytes, each framed with its true length.
After every batch a valid ping must get its answer (in-order requests are a
barrier, so every earlier frame has been dealt with by then). Two protocols x
EXAMPLES x BATCH frames = 100,000 frames per run, through one process per
protocol. A second test feeds unframed random byte streams (nonsense lengths)
and checks the worker ends cleanly: exit 0 at EOF, or ExitCode.PROTOCOL for a
length over the limit, never a crash or a hang.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.stdio_process import ROOT, StdioBridge, decode, encode, frame, split_frames

BATCH = 2000
EXAMPLES = 25
COMMANDS = ["ping", "echo", "compute", "info", "no_such_command", "", "PING"]

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
           | st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                           max_size=4), max_leaves=12)
requests = st.fixed_dictionaries(
    {"command": st.sampled_from(COMMANDS), "args": st.dictionaries(st.text(max_size=10), values, max_size=5)},
    optional={"stream": st.booleans(), "pipeline": st.booleans(), "timeout_ms": st.integers(0, 5000),
              "timestamp": st.just("2026-01-01T00:00:00Z"), "session_id": st.sampled_from(["", "fuzz-s1"])},
)


def _mutate(rnd: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    b = bytearray(data)
    op = rnd.randrange(7)
    if op == 0 and b:  # flip bits
        for _ in range(rnd.randint(1, 8)):
            i = rnd.randrange(len(b))
            b[i] ^= 1 << rnd.randrange(8)
    elif op == 1:  # truncate
        del b[rnd.randrange(len(b) + 1):]
    elif op == 2:  # insert random bytes
        i = rnd.randrange(len(b) + 1)
        b[i:i] = rnd.randbytes(rnd.randint(1, 16))
    elif op == 3 and b:  # delete a slice
        i = rnd.randrange(len(b))
        del b[i:i + rnd.randint(1, 16)]
    elif op == 4 and b:  # duplicate a slice
        i = rnd.randrange(len(b))
        b[i:i] = b[i:i + rnd.randint(1, 32)]
    elif op == 5:  # splice with another request
        other = rnd.choice(corpus)
        b = b[:rnd.randrange(len(b) + 1)] + other[rnd.randrange(len(other) + 1):]
    else:  # overwrite a byte with an interesting value
        if b:
            b[rnd.randrange(len(b))] = rnd.choice([0x00, 0xFF, 0x7F, 0x80, 0xC1, 0xDC, 0xDE, 0xDF, ord("{"), ord('"')])
    return bytes(b)


def _batch(rnd: random.Random, corpus: list[bytes]) -> list[bytes]:
    frames = []
    for _ in range(BATCH):
        roll = rnd.random()
        if roll < 0.3:
            frames.append(rnd.choice(corpus))
        elif roll < 0.85:
            frames.append(_mutate(rnd, rnd.choice(corpus), corpus))
        else:
            frames.append(rnd.randbytes(rnd.randint(0, 64)))
    return frames


@pytest.fixture(scope="module", params=["json", "msgpack"])
def fuzzed(request):
    """One worker per protocol receives every batch of that protocol."""
    with StdioBridge("--quiet", protocol=request.param) as b:
        b.ping_id = 10**12
        yield b
        b.close_stdin()
        assert b.wait(10) == 0, b.stderr_text()[-2000:]
        assert b.stray is None
        replies = [decode(payload, b.protocol) for payload in split_frames(bytes(b.stdout_bytes))]
        assert all(isinstance(r, dict) for r in replies)
        # The fuzz reached every path: served requests (beyond the pings), errors, streams.
        assert sum(r.get("success") is True for r in replies) > 10 * EXAMPLES
        assert sum(r.get("success") is False for r in replies) > 10 * EXAMPLES
        assert any("chunk_index" in r for r in replies)


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(corpus=st.lists(requests, min_size=3, max_size=12), ids=st.lists(st.integers(0, 2**62), min_size=12,
                                                                        max_size=12), seed=st.integers(0, 2**32))
def test_random_and_mutated_frames_never_break_the_worker(fuzzed, corpus, ids, seed):
    b = fuzzed
    encoded = [encode({"id": rid, **req}, b.protocol) for rid, req in zip(ids, corpus, strict=False)]  # ids outnumber requests
    rnd = random.Random(seed)
    frames = _batch(rnd, encoded)
    b.send_bytes(b"".join(frame(f) for f in frames))
    b.ping_id += 1
    b.request("ping", id=b.ping_id)
    while True:
        reply = b.recv(timeout=30)  # a hang shows up here
        assert isinstance(reply, dict) and "id" in reply, reply
        if reply["id"] == b.ping_id and "success" in reply:
            assert reply["success"] is True
            break
    assert b.proc.poll() is None, b.stderr_text()[-2000:]


@settings(max_examples=8, deadline=None, database=None)
@given(stream=st.binary(min_size=0, max_size=2000), protocol=st.sampled_from(["json", "msgpack"]))
def test_unframed_garbage_ends_cleanly(stream, protocol):
    argv = [sys.executable, str(ROOT / "grpc_bridge.py"), "--mode", "pool-worker", "--protocol", protocol,
            "--quiet", "--max-message-mb", "1"]
    proc = subprocess.run(argv, input=stream, capture_output=True, timeout=30, cwd=ROOT)
    assert proc.returncode in (0, 5), proc.stderr.decode()[-2000:]
    for payload in split_frames(proc.stdout):
        reply = decode(payload, protocol)
        assert isinstance(reply, dict) and reply.get("success") is False


def test_the_fuzz_corpus_is_well_formed():
    # The valid part of the corpus must really be valid, or the fuzz proves less.
    assert json.loads(encode({"id": 1, "command": "ping", "args": {}}, "json"))["command"] == "ping"
    assert msgpack.unpackb(encode({"id": 1, "command": "ping", "args": {}}, "msgpack"))["id"] == 1
