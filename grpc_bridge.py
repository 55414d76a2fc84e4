#!/usr/bin/env python3
"""Snakepit worker entry point: ``python3 grpc_bridge.py --port N`` (gRPC) or
``--mode pool-worker`` (stdio). All of it lives in ``snakepit_bridge.cli``."""
import os
import sys

# Run from a checkout without installing: the package sits beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from snakepit_bridge.cli import main

if __name__ == "__main__":
    sys.exit(main())
