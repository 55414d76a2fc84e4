"""The lint gate: CI runs the README's test command, which lints before it tests,
and the rule set in pyproject.toml catches what it says it catches."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bridge_process import ROOT

RUFF = Path(sys.executable).with_name("ruff")


def test_ci_runs_exactly_the_readme_test_command():
    commands = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands == ["make test"]
    assert "make test " in (ROOT / "README.md").read_text()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_test_lints_before_it_tests():
    plan = subprocess.run(["make", "-n", "test"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    lines = plan.splitlines()
    ruff = next(i for i, line in enumerate(lines) if "ruff check" in line)
    mypy = next(i for i, line in enumerate(lines) if line.endswith("/mypy"))
    pytest_run = next(i for i, line in enumerate(lines) if "-m pytest" in line)
    assert ruff < pytest_run and mypy < pytest_run
    for path in ("snakepit_bridge", "tests", "benchmarks", "tools"):
        assert f" {path}" in lines[ruff]


@pytest.mark.skipif(not RUFF.exists(), reason="ruff is not installed (the dev extra)")
def test_the_rule_set_catches_pyflakes_bugbear_and_import_order(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import sys\n"
        "import os\n"                              # I001: not sorted
        "\n"
        "\n"
        "def f(x=[]):\n"                           # B006: mutable default
        "    fns = [lambda: i for i in x]\n"       # B023: closure over the loop variable
        "    return fns, undefined_name\n"         # F821
    )
    out = subprocess.run([str(RUFF), "check", "--config", str(ROOT / "pyproject.toml"), "--no-cache",
                          "--output-format", "concise", str(bad)], capture_output=True, text=True).stdout
    for code in ("I001", "F401", "B006", "B023", "F821"):
        assert code in out, out
