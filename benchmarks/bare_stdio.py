"""The baseline for stdio: a minimal framed loop that hands every frame back.

Reads a 4-byte big-endian length and that many bytes from stdin, writes the
same frame to stdout, until EOF. No decoding, no dispatch: what Erlang's
``{:packet, 4}`` costs in Python with nothing on top.
"""
import sys


def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = stdin.read(4)
        if len(header) < 4:
            return
        payload = stdin.read(int.from_bytes(header, "big"))
        stdout.write(header)
        stdout.write(payload)
        stdout.flush()


if __name__ == "__main__":
    main()
