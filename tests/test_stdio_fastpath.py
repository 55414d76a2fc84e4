"""Requests answered on the spot (inline handlers, in the loop callback that
read them) mixed with requests served by tasks: order, ids, errors and the
per-call log line stay exactly what Snakepit 0.3 expects. Plus the frame
reader itself, in process over real pipes."""
from __future__ import annotations

import asyncio
import fcntl
import json
import os
import termios

import pytest

from snakepit_bridge.transports._framing import READ_AHEAD, FrameReader, FrameTooLarge, TruncatedFrame
from tests.stdio_process import StdioBridge, encode, frame

ADAPTER = ("--adapter", "tests.stdio_process")

# (command, args, expected success): inline, thread, coroutine, session and unknown commands.
MIX = [
    ("ping", {}, True),
    ("echo", {"i": 1}, True),
    ("compute", {"operation": "add", "a": 1, "b": 2}, True),
    ("t_sleep", {"seconds": 0.01}, True),
    ("ping", {"worker_id": "w"}, True),
    ("store", {"session_id": "fast-s1", "key": "k", "value": 5}, True),
    ("compute", {"operation": "divide", "a": 1, "b": 0}, False),
    ("no_such_command", {}, False),
    ("info", {}, True),
]


@pytest.mark.parametrize("protocol", ["json", "msgpack"])
def test_a_burst_of_mixed_requests_is_answered_in_order(protocol):
    """Sent in one write, so the reader holds many frames at once: inline ones
    are answered in its callback, the others by tasks, and still in order."""
    with StdioBridge(*ADAPTER, protocol=protocol) as b:
        plan = MIX * 15
        ids, data = [], b""
        for command, args, _ in plan:
            rid = b.new_id()
            ids.append(rid)
            data += frame(encode({"id": rid, "command": command, "args": args}, protocol))
        b.send_bytes(data)
        answers = [b.recv() for _ in ids]
        assert [a["id"] for a in answers] == ids
        assert [a["success"] for a in answers] == [ok for _, _, ok in plan]
        by_command = {command: a for (command, _, _), a in zip(plan, answers, strict=True)}
        assert by_command["compute"]["error"] == "division by zero"
        assert "no_such_command" in by_command["no_such_command"]["error"]
        assert by_command["info"]["result"]["total_requests"] >= len(MIX)
        assert b.call("retrieve", {"session_id": "fast-s1", "key": "k"})["result"]["value"] == 5


def test_every_call_still_logs_one_line():
    with StdioBridge(*ADAPTER, "--log-format", "json", protocol="json") as b:
        ids = [str(b.call(command, args)["id"]) for command, args, _ in MIX]
        b.close_stdin()
        assert b.wait(5) == 0
        lines = [json.loads(line) for line in b.stderr_text().splitlines() if line.startswith("{")]
    calls = [line for line in lines if line.get("event") == "call" and line["request_id"] in ids]
    assert [c["command"] for c in calls] == [command for command, _, _ in MIX]
    assert [c["outcome"] for c in calls] == ["ok" if ok else "error" for _, _, ok in MIX]
    assert all(isinstance(c["duration_ms"], float) for c in calls)


# -- the frame reader, in process ------------------------------------------------------


async def _frames(reader: FrameReader, count: int, timeout: float = 5.0) -> list:
    """Take ``count`` frames, waiting for the reader's callback between takes."""
    got: list = []
    woke = asyncio.Event()
    reader.on_ready = woke.set
    async with asyncio.timeout(timeout):
        while len(got) < count:
            payload = reader.take()
            if payload is None:
                woke.clear()
                await woke.wait()
                continue
            got.append(payload)
    return got


async def test_reader_reassembles_frames_written_a_byte_at_a_time():
    r, w = os.pipe()
    reader = FrameReader(r, 1 << 20)
    payloads = [b"", b"a", b"hello" * 100, bytes(range(256))]
    data = b"".join(frame(p) for p in payloads)

    async def trickle():
        for i in range(len(data)):
            os.write(w, data[i:i + 1])
            if i % 7 == 0:
                await asyncio.sleep(0)
        os.close(w)

    writer = asyncio.create_task(trickle())
    assert [bytes(p) for p in await _frames(reader, len(payloads))] == payloads
    await writer
    await _until(lambda: reader.ended)
    reader.close()


async def test_reader_hands_a_large_frame_over_whole_in_its_own_buffer():
    r, w = os.pipe()
    reader = FrameReader(r, 16 << 20)
    big = os.urandom(3 * READ_AHEAD + 17)
    data = frame(b"small") + frame(big) + frame(b"after")

    async def feed():
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        while view:
            view = view[await loop.run_in_executor(None, os.write, w, view[:65536]):]
        os.close(w)

    feeder = asyncio.create_task(feed())
    small, large, after = await _frames(reader, 3)
    await feeder
    assert (small, after) == (b"small", b"after")
    assert isinstance(large, bytearray) and large == big
    reader.close()


async def test_reader_refuses_an_oversized_header_before_its_payload():
    r, w = os.pipe()
    reader = FrameReader(r, 1000)
    os.write(w, (1001).to_bytes(4, "big"))
    with pytest.raises(FrameTooLarge) as err:
        await _frames(reader, 1)
    assert (err.value.declared, err.value.limit) == (1001, 1000)
    os.close(w)
    reader.close()


@pytest.mark.parametrize("tail,message", [(b"\x00\x00", "frame header"), (b"\x00\x00\x00\x09abc", "3 payload bytes")])
async def test_reader_reports_eof_inside_a_frame_once(tail, message):
    r, w = os.pipe()
    reader = FrameReader(r, 1000)
    os.write(w, frame(b"whole") + tail)
    os.close(w)
    assert await _frames(reader, 1) == [b"whole"]
    await _until(lambda: reader.eof)
    with pytest.raises(TruncatedFrame, match=message):
        reader.take()
    assert reader.take() is None and reader.ended
    reader.close()


async def test_reader_reads_no_further_ahead_than_its_buffer():
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)  # room for all of it: the pipe must not be what stops it
    reader = FrameReader(r, 1 << 20)
    count = (2 * READ_AHEAD) // 104 + 10
    os.write(w, frame(b"x" * 100) * count)  # nobody takes: the reader must stop reading
    await _until(lambda: not reader._reading)  # paused, its buffer full
    unread = int.from_bytes(fcntl.ioctl(r, termios.FIONREAD, b"\0" * 4), "little")
    assert unread >= count * 104 - READ_AHEAD
    os.close(w)
    assert len(await _frames(reader, count)) == count  # taking frees room: the rest is read
    reader.close()


async def test_reader_serves_a_regular_file_through_a_thread(tmp_path):
    path = tmp_path / "frames.bin"
    path.write_bytes(b"".join(frame(b"%d" % i) for i in range(50)))
    fd = os.open(path, os.O_RDONLY)
    reader = FrameReader(fd, 1000)
    assert await _frames(reader, 50) == [b"%d" % i for i in range(50)]
    await _until(lambda: reader.ended)
    reader.close()


async def _until(condition, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 -- polls a plain attribute; there is no event to await
            await asyncio.sleep(0.005)
