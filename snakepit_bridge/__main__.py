"""``python -m snakepit_bridge``: the same worker as ``grpc_bridge.py``."""
import sys

from .cli import main

sys.exit(main())
