#!/usr/bin/env python3
"""Launch shim so an Elixir app can point Snakepit at ``priv/python/grpc_bridge.py``.

Same arguments and behaviour as the repository's ``grpc_bridge.py``
(``--port N`` for gRPC, ``--mode pool-worker`` for stdin/stdout).
"""
import os
import sys

# The package lives two folders up (the repository root); Snakepit starts us
# with the current directory set to this folder.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from snakepit_bridge.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
