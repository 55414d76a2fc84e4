"""The baselines for stdio: minimal framed loops, no dispatch.

* default: reads a 4-byte big-endian length and that many bytes from stdin and
  writes the same frame to stdout, until EOF. What Erlang's ``{:packet, 4}``
  costs in Python with nothing on top.
* ``--answer json|msgpack``: also decodes each request and encodes an answer
  ``{"id", "success": true, "result": {"echoed": args}, "timestamp"}``, the
  least a worker speaking Snakepit's protocol must do per request.
"""
from __future__ import annotations

import argparse
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--answer", choices=["json", "msgpack"])
    answer = p.parse_args().answer
    if answer == "json":
        import orjson

        loads, dumps = orjson.loads, orjson.dumps
    elif answer == "msgpack":
        import msgpack

        loads = lambda data: msgpack.unpackb(data, raw=False)  # noqa: E731
        dumps = lambda obj: msgpack.packb(obj, use_bin_type=True)  # noqa: E731
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = stdin.read(4)
        if len(header) < 4:
            return
        payload = stdin.read(int.from_bytes(header, "big"))
        if answer:
            request = loads(payload)
            payload = dumps({"id": request["id"], "success": True, "result": {"echoed": request["args"]},
                             "timestamp": time.time()})
            header = len(payload).to_bytes(4, "big")
        stdout.write(header)
        stdout.write(payload)
        stdout.flush()


if __name__ == "__main__":
    main()
