#!/usr/bin/env python3
"""Launch shim for Snakepit's GenericPythonV2 / GenericPythonMsgpack adapters.

They start ``python3 generic_bridge_v2.py --mode pool-worker [--protocol ...]``;
this runs the same worker as ``grpc_bridge.py`` and defaults to
``--mode pool-worker`` when no ``--mode`` is given. It works from this folder
or copied anywhere (see priv/README.md): below is how it finds the checkout.
Kept self-contained (no import from this folder) on purpose.
"""
import os
import sys

# This file may be a copy in another folder (e.g. Snakepit's own priv/python/,
# beside Snakepit's own snakepit_bridge/ package, with the current directory
# set to that folder), so it never imports what sits beside it: it finds this
# project's checkout and puts it first on sys.path. Where to look, in order:
#   1. SNAKEPIT_BRIDGE_HOME (the checkout's root);
#   2. the checkout this file sits in (<checkout>/priv/python/, symlinks followed);
#   3. the path `make install` records in the venv running us (<venv>/snakepit-bridge-home);
#   4. a snakepit_bridge installed in this Python (pip install snakepit-bridge).
HOME_ENV = "SNAKEPIT_BRIDGE_HOME"
HOME_FILE = "snakepit-bridge-home"
CONFIG_EXIT = 3  # snakepit_bridge.exitcodes.ExitCode.CONFIG


def _is_checkout(path):
    """Files only this project's checkout has together: its setup.py, the root
    grpc_bridge.py and a module of ours (Snakepit's own priv/python/ may hold a
    snakepit_bridge/cli.py and a copy of this shim, but none of the others)."""
    return all(os.path.isfile(os.path.join(path, *name)) for name in
               (("setup.py",), ("grpc_bridge.py",), ("snakepit_bridge", "_lifecycle.py")))


def _use_venv(home):
    """Re-run this script with the checkout's own .venv python when another one
    runs it (Snakepit starts ``python3``, which may lack grpcio and the rest):
    once, since that python's prefix is the venv."""
    python = os.path.join(home, ".venv", "bin", "python")
    if os.access(python, os.X_OK) and os.path.realpath(sys.prefix) != os.path.realpath(os.path.join(home, ".venv")):
        os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


def _fail(message):
    sys.stderr.write("snakepit-bridge: error: %s\n" % message)
    sys.stderr.flush()
    sys.exit(CONFIG_EXIT)


def _find_home():
    here = os.path.dirname(os.path.abspath(__file__))
    # Never what sits beside this file (nor the current directory, which is this folder).
    sys.path[:] = [p for p in sys.path if p not in ("", ".") and os.path.abspath(p) not in (here, os.path.realpath(here))]
    home = os.environ.get(HOME_ENV)
    if home:
        if not _is_checkout(home):
            _fail("%s=%s does not hold snakepit_bridge/ (it must be the snakepit-bridge checkout)" % (HOME_ENV, home))
        return home
    own = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    if _is_checkout(own):
        return own
    try:
        with open(os.path.join(sys.prefix, HOME_FILE), encoding="utf-8") as f:
            recorded = f.read().strip()
    except OSError:
        recorded = ""
    if recorded and _is_checkout(recorded):
        return recorded
    import importlib.util

    if importlib.util.find_spec("snakepit_bridge") is not None:
        return None  # installed in this Python
    _fail("cannot find snakepit-bridge from %s: set %s to its checkout, or run this script with the "
          "python of the checkout's .venv (`make install` records the checkout there)" % (__file__, HOME_ENV))


_home = _find_home()
if _home is not None:
    _use_venv(_home)
    sys.path.insert(0, _home)

from snakepit_bridge.cli import main  # noqa: E402


def _argv(args):
    if any(a == "--mode" or a.startswith("--mode=") for a in args) or any(a in ("-h", "--help") for a in args):
        return list(args)
    return ["--mode", "pool-worker", *args]


if __name__ == "__main__":
    sys.exit(main(_argv(sys.argv[1:])))
