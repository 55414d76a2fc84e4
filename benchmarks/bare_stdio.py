"""The baselines for stdio: minimal framed loops, no dispatch.

* default: reads a 4-byte big-endian length and that many bytes from stdin and
  writes the same frame to stdout, until EOF. What Erlang's ``{:packet, 4}``
  costs in Python with nothing on top.
* ``--answer json|msgpack``: also decodes each request and encodes an answer
  ``{"id", "success": true, "result": {"echoed": args}, "timestamp"}``, the
  least a worker speaking Snakepit's protocol must do per request.
* ``--answer P --asyncio``: the same on an asyncio event loop (a reader
  callback, non-blocking reads into one buffer): what any event-loop worker
  pays per request before it does anything of its own.

Every loop writes a frame with one ``writev`` (the reader wakes once and
nothing is copied), as the bridge does.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--answer", choices=["json", "msgpack"])
    p.add_argument("--asyncio", action="store_true", help="serve from an asyncio reader callback")
    ns = p.parse_args()
    respond = _answerer(ns.answer)
    if ns.asyncio:
        import asyncio  # only here: the blocking loop's start-up is a baseline too

        asyncio.run(_serve_on_loop(respond))
        return
    stdin = sys.stdin.buffer
    out = sys.stdout.fileno()
    while True:
        header = stdin.read(4)
        if len(header) < 4:
            return
        payload = respond(stdin.read(int.from_bytes(header, "big")))
        write_frame(out, len(payload).to_bytes(4, "big"), payload)


def _answerer(protocol: str | None) -> Callable[[bytes], bytes]:
    if protocol is None:
        return lambda payload: payload
    if protocol == "json":
        import orjson

        loads, dumps = orjson.loads, orjson.dumps
    else:
        import msgpack

        loads = lambda data: msgpack.unpackb(data, raw=False)  # noqa: E731
        dumps = lambda obj: msgpack.packb(obj, use_bin_type=True)  # noqa: E731

    def respond(payload: bytes) -> bytes:
        request = loads(payload)
        # .get: a negotiation frame (the start-up benchmark's first frame) has neither.
        return dumps({"id": request.get("id"), "success": True, "result": {"echoed": request.get("args")},
                      "timestamp": time.time()})

    return respond


async def _serve_on_loop(respond: Callable[[bytes], bytes]) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    fd, out = sys.stdin.fileno(), sys.stdout.fileno()
    os.set_blocking(fd, False)
    buf = bytearray()
    chunk = memoryview(bytearray(256 * 1024))
    done = loop.create_future()

    def readable() -> None:
        try:
            n = os.readv(fd, [chunk])
        except BlockingIOError:
            return
        if not n:
            loop.remove_reader(fd)
            done.set_result(None)
            return
        buf.extend(chunk[:n])
        while len(buf) >= 4:
            size = int.from_bytes(buf[:4], "big")
            if len(buf) < 4 + size:
                break
            payload = respond(bytes(buf[4:4 + size]))
            del buf[:4 + size]
            write_frame(out, len(payload).to_bytes(4, "big"), payload)  # blocking: a baseline may

    loop.add_reader(fd, readable)
    await done


def write_frame(fd: int, header: bytes, payload: bytes) -> None:
    """One writev for the frame, then plain writes for whatever the pipe did not take."""
    sent = os.writev(fd, [header, payload]) - len(header)
    if sent < 0:
        _write_all(fd, memoryview(header)[sent:])
        sent = 0
    _write_all(fd, memoryview(payload)[sent:])


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


if __name__ == "__main__":
    main()
