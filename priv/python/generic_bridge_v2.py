#!/usr/bin/env python3
"""Launch shim for Snakepit's GenericPythonV2 / GenericPythonMsgpack adapters.

They start ``python3 generic_bridge_v2.py --mode pool-worker [--protocol ...]``;
this runs the same worker as ``grpc_bridge.py`` and defaults to
``--mode pool-worker`` when no ``--mode`` is given.
"""
import os
import sys

# The package lives two folders up (the repository root); Snakepit starts us
# with the current directory set to this folder.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from snakepit_bridge.cli import main  # noqa: E402


def _argv(args):
    if any(a == "--mode" or a.startswith("--mode=") for a in args) or any(a in ("-h", "--help") for a in args):
        return list(args)
    return ["--mode", "pool-worker", *args]


if __name__ == "__main__":
    sys.exit(main(_argv(sys.argv[1:])))
