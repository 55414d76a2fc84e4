"""priv/python shims copied where Snakepit's stock adapters look for them:
Snakepit's own priv/python/, beside Snakepit's own snakepit_bridge/ package,
started with the current directory set to that folder (CONTRACT.md §1)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from snakepit_bridge import testing
from snakepit_bridge.client import Client
from tests.bridge_process import ROOT
from tests.stdio_process import StdioBridge

PRIV = ROOT / "priv" / "python"
STOCK_ADAPTER = "snakepit_bridge.adapters.grpc_streaming.GRPCStreamingHandler"


@pytest.fixture
def snakepit_priv(tmp_path: Path) -> Path:
    """A fake Snakepit package's priv/python/ holding copies of both shims and a
    snakepit_bridge/ package that fails loudly if anything imports it."""
    folder = tmp_path / "deps" / "snakepit" / "priv" / "python"
    (folder / "snakepit_bridge").mkdir(parents=True)
    (folder / "snakepit_bridge" / "__init__.py").write_text(
        "raise ImportError('imported the neighbouring snakepit_bridge package')\n")
    (folder / "snakepit_bridge" / "cli.py").write_text("")  # no main(): what the issue saw
    for name in ("grpc_bridge.py", "generic_bridge_v2.py"):
        shutil.copy(PRIV / name, folder / name)
    return folder


def test_copied_grpc_shim_finds_the_checkout_from_the_environment(snakepit_priv):
    with testing.Bridge("--adapter", STOCK_ADAPTER, script=snakepit_priv / "grpc_bridge.py", cwd=snakepit_priv,
                        env={"SNAKEPIT_BRIDGE_HOME": str(ROOT)}) as b, Client(b.target) as c:
        assert c.execute("compute", {"operation": "add", "a": 2, "b": 3}).result["result"] == 5
        assert "neighbouring" not in b.stderr_text()


def test_copied_stdio_shim_finds_the_checkout_from_the_environment(snakepit_priv):
    with StdioBridge(protocol="msgpack", script=snakepit_priv / "generic_bridge_v2.py", mode_flag=False,
                     cwd=snakepit_priv, env={"SNAKEPIT_BRIDGE_HOME": str(ROOT)}) as b:
        assert b.call("echo", {"k": "v"})["result"]["echoed"] == {"k": "v"}


def test_copied_shim_run_by_the_venv_python_finds_the_checkout(snakepit_priv, monkeypatch):
    """No variable: `make install` recorded the checkout in the venv running the shim."""
    if not (Path(sys.prefix) / "snakepit-bridge-home").is_file():
        pytest.skip("needs `make install` (records the checkout in .venv/)")
    monkeypatch.delenv("SNAKEPIT_BRIDGE_HOME", raising=False)
    with testing.Bridge(script=snakepit_priv / "grpc_bridge.py", cwd=snakepit_priv) as b, Client(b.target) as c:
        assert c.execute("ping").success


def run_shim(python: str, shim: Path, env_home: str | None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("SNAKEPIT_BRIDGE_HOME", "PYTHONPATH")}
    if env_home is not None:
        env["SNAKEPIT_BRIDGE_HOME"] = env_home
    return subprocess.run([python, str(shim), "--port", "0"], cwd=shim.parent, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=20)


def test_a_wrong_home_is_a_clear_error(snakepit_priv, tmp_path):
    proc = run_shim(sys.executable, snakepit_priv / "grpc_bridge.py", str(tmp_path / "nowhere"))
    assert proc.returncode == 3 and proc.stdout == b""
    assert b"SNAKEPIT_BRIDGE_HOME=" in proc.stderr and b"nowhere" in proc.stderr
    assert b"neighbouring" not in proc.stderr


def test_no_checkout_found_is_a_clear_error(snakepit_priv):
    """A Python with neither the variable, nor a recorded checkout, nor the package."""
    base = getattr(sys, "_base_executable", None)
    if not base or Path(sys.prefix) == Path(sys.base_prefix):
        pytest.skip("needs a venv, and its base interpreter without snakepit_bridge")
    probe = subprocess.run([base, "-c", "import importlib.util as u; print(u.find_spec('snakepit_bridge') is None)"],
                           capture_output=True, text=True, cwd="/")
    if probe.stdout.strip() != "True":
        pytest.skip("the base interpreter has snakepit_bridge installed")
    for shim in ("grpc_bridge.py", "generic_bridge_v2.py"):
        proc = run_shim(base, snakepit_priv / shim, None)
        assert proc.returncode == 3 and proc.stdout == b"", proc.stderr
        assert b"cannot find snakepit-bridge" in proc.stderr and b"SNAKEPIT_BRIDGE_HOME" in proc.stderr
        assert b"neighbouring" not in proc.stderr


def test_copied_shim_run_by_another_python_uses_the_checkouts_venv(snakepit_priv):
    """Snakepit starts ``python3``, which may lack grpcio: with the checkout found
    (here from the variable), the shim re-runs itself with the checkout's .venv
    python, and the worker serves."""
    base = getattr(sys, "_base_executable", None)
    venv_python = ROOT / ".venv" / "bin" / "python"
    if not base or Path(sys.prefix) == Path(sys.base_prefix) or not venv_python.exists():
        pytest.skip("needs the checkout's .venv and its base interpreter")
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["SNAKEPIT_BRIDGE_HOME"] = str(ROOT)
    proc = subprocess.Popen([base, str(snakepit_priv / "grpc_bridge.py"), "--port", "0"], cwd=snakepit_priv,
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("GRPC_SERVER_READY_ON_PORT="), line
        with Client(f"127.0.0.1:{line.strip().split('=')[1]}") as c:
            assert c.execute("ping").success
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[0] == str(venv_python).encode()  # re-run by the venv's python
    finally:
        proc.terminate()
        proc.wait(10)


def test_home_pointing_at_snakepits_own_priv_is_a_clear_error(snakepit_priv):
    """Snakepit's priv/python/ holds a snakepit_bridge/cli.py and (here) a copy of
    the shim: not this checkout, so a clear error rather than its ImportError."""
    proc = run_shim(sys.executable, snakepit_priv / "grpc_bridge.py", str(snakepit_priv))
    assert proc.returncode == 3 and b"does not hold" in proc.stderr and b"neighbouring" not in proc.stderr
