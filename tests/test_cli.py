"""The CLI is a thin shell over one validated Config."""
from __future__ import annotations

import subprocess
import sys

import pytest

from snakepit_bridge.cli import parse_config
from snakepit_bridge.config import ConfigError
from tests.bridge_process import ROOT, SCRIPT


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)


def test_defaults_match_the_contract():
    c = parse_config([], environ={})
    assert (c.host, c.port, c.mode, c.binary_threshold, c.max_message_mb) == ("127.0.0.1", 50051, "grpc", 10240, 100)


def test_snakepit_launch_line_parses():
    c = parse_config(["--adapter", "snakepit_bridge.adapters.grpc_streaming.GRPCStreamingHandler", "--port", "50123"],
                     environ={})
    assert c.port == 50123 and c.adapter.endswith("GRPCStreamingHandler")


def test_plain_launch_lines_parse_as_argparse_does():
    """cli._plain skips building the parser for Snakepit's launch lines: same namespace, same defaults."""
    from snakepit_bridge import cli

    for argv in ([], ["--mode", "pool-worker"], ["--mode", "pool-worker", "--protocol", "msgpack", "--quiet"],
                 ["--adapter", "m.C", "--port", "50123"], ["--port", "0", "--log-level", "warning", "--log-format", "json"],
                 ["--mode", "pool-worker", "--no-parent-watch", "--mode", "grpc"]):
        assert vars(cli._plain(argv)) == vars(cli._parser().parse_args(argv)), argv
    for argv in (["--mode=pool-worker"], ["--mod", "pool-worker"], ["--port", "x"], ["--port", "-1"], ["--adapter"],
                 ["--protocol", "xml"], ["--adapter", "--quiet"], ["--help"], ["--host", "::1"]):
        assert cli._plain(argv) is None, argv


def test_non_loopback_host_needs_token_tls_or_insecure():
    with pytest.raises(ConfigError, match="non-loopback"):
        parse_config(["--host", "0.0.0.0"], environ={})
    assert parse_config(["--host", "0.0.0.0", "--insecure"], environ={}).host == "0.0.0.0"
    assert parse_config(["--host", "0.0.0.0"], environ={"SNAKEPIT_BRIDGE_AUTH_TOKEN": "t"}).auth_token == "t"


@pytest.mark.parametrize("args,code,needle", [
    (["--port", "notaport"], 2, "invalid int value"),
    (["--port", "70000"], 3, "port must be 0..65535"),
    (["--bogus-flag"], 2, "unrecognized arguments"),
    (["--host", "0.0.0.0"], 3, "refusing to listen"),
    (["--tls-cert", "x.pem"], 3, "--tls-cert and --tls-key go together"),
])
def test_bad_flags_exit_non_zero_with_a_clear_message(args, code, needle):
    proc = run(*args)
    assert proc.returncode == code
    assert needle in proc.stderr
    assert proc.stdout == ""


def test_help_lists_the_snakepit_flags():
    proc = run("--help")
    assert proc.returncode == 0
    for flag in ("--adapter", "--port", "--host", "--mode", "--protocol", "--binary-threshold"):
        assert flag in proc.stdout


def test_grpc_adapter_printing_at_import_cannot_touch_the_ready_line():
    # printing_adapter writes "loading model... " (no newline) and a print()
    # at import; both must go to stderr, leaving stdout to the ready line.
    from snakepit_bridge.client import Client
    from tests.bridge_process import READY, Bridge

    with Bridge("--adapter", "tests.printing_adapter", "--port", "0") as b:
        assert b.stdout_lines[0].startswith(READY)
        with Client(b.target) as c:
            r = c.execute("shout_stdio", {"text": "ok"})
            assert r.success and r.result == {"text": "OK"}
        assert b.stop() == 0
        rest = b.proc.stdout.read().decode()
        assert "loading model... " in b.stderr_text()
        assert "and from a handler" in b.stderr_text()
    assert b.stdout_lines == [f"{READY}{b.port}"] and rest == ""
