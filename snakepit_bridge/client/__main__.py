"""``python -m snakepit_bridge.client``: see :func:`snakepit_bridge.client.main`."""
import sys

from ._cli import main

sys.exit(main())
