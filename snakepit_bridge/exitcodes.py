"""Named exit codes of the bridge process."""
from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0  # clean shutdown: SIGTERM, EOF on stdin, parent gone
    ERROR = 1  # unexpected failure
    USAGE = 2  # bad command line (argparse's own code)
    CONFIG = 3  # valid flags that cannot work together, or an adapter that does not load
    PORT_IN_USE = 4  # --strict-port and the port is taken
    PROTOCOL = 5  # stdio: a frame the stream cannot recover from (e.g. over the size limit)
    FORCED = 130  # second signal during shutdown
