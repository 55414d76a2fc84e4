"""The wheel built from a fresh clone is a working package.

A copy of the checkout as git would clone it (no generated ``_proto`` modules, no
venv) is built with ``pip wheel``; the wheel goes into a new venv whose only other
path is this venv's site-packages (for grpcio and friends, so nothing is
downloaded; a path added by a ``.pth`` line does not run that directory's own
``.pth`` files, so the editable checkout stays out of reach). Then the installed
console script serves and the installed client calls it, both run from outside
the checkout.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from snakepit_bridge.testing import read_ready_port
from tests.bridge_process import ROOT


def _fresh_clone(dest: Path) -> None:
    """Tracked and new (not ignored) files of this checkout, as they are on disk."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                 cwd=ROOT, check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for name in filter(None, listing.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv with the wheel built from a fresh clone installed in it; returns its bin/."""
    tmp = tmp_path_factory.mktemp("wheel")
    clone, wheels, env_dir = tmp / "clone", tmp / "dist", tmp / "venv"
    _fresh_clone(clone)
    assert not list((clone / "snakepit_bridge" / "_proto").glob("*_pb2*")), "the copy must lack generated code"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(clone)],
                   cwd=tmp, check=True, capture_output=True)
    (wheel,) = wheels.glob("snakepit_bridge-*.whl")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    env_python = env_dir / "bin" / "python"
    subprocess.run([*pip, "--python", str(env_python), "install", "--no-deps", "--no-index", str(wheel)],
                   cwd=tmp, check=True, capture_output=True)
    site = subprocess.run([str(env_python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return env_dir / "bin"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")} | {"PYTHONUNBUFFERED": "1"}


def test_the_installed_package_is_the_wheel_not_the_checkout(installed, tmp_path):
    out = subprocess.run([str(installed / "python"), "-c", "import snakepit_bridge._proto.snakepit_pb2_grpc as g, "
                          "snakepit_bridge as s; print(s.__file__)"],
                         cwd=tmp_path, env=_env(), check=True, capture_output=True, text=True).stdout
    assert Path(out.strip()).is_relative_to(installed.parent)
    assert not Path(out.strip()).is_relative_to(ROOT)


def test_console_script_serves_and_the_client_calls_it(installed, tmp_path):
    proc = subprocess.Popen([str(installed / "snakepit-bridge"), "--port", "0"], cwd=tmp_path, env=_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        port = read_ready_port(proc.stdout, timeout=20)
        assert port, f"no ready line; exit={proc.poll()}"
        call = subprocess.run([str(installed / "python"), "-m", "snakepit_bridge.client", "--port", str(port),
                               "call", "ping", "{}"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                              timeout=30)
        assert call.returncode == 0, call.stderr
        reply = json.loads(call.stdout)
        assert reply["success"] and reply["result"]["message"] == "pong"
    finally:
        proc.kill()
        proc.wait(5)
        for stream in (proc.stdin, proc.stdout):
            assert stream is not None
            stream.close()


def test_the_wheel_requires_the_grpcio_and_protobuf_its_code_was_generated_for(installed):
    """The generated code refuses older runtimes than the grpcio-tools (and
    protobuf) that generated it: the metadata must not allow them."""
    from importlib.metadata import version

    (dist,) = (installed.parent / "lib").glob("python3*/site-packages/snakepit_bridge-*.dist-info")
    requires = [line.split(":", 1)[1].strip() for line in (dist / "METADATA").read_text().splitlines()
                if line.startswith("Requires-Dist:")]
    assert f"grpcio>={version('grpcio-tools')}" in requires, requires
    assert f"protobuf>={version('protobuf')}" in requires, requires
