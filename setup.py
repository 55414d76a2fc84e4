"""Packaging for snakepit-bridge: the Python worker daemon behind a Snakepit pool.

The protobuf and gRPC modules in ``snakepit_bridge/_proto`` are generated from
``protos/snakepit.proto`` while the package is built (see ``BuildPyWithProtos``),
not committed: the .proto is the one source of truth. The generated code needs a
grpcio and a protobuf at least as new as the grpcio-tools (and protobuf) that
generated it, so the package requires those versions as floors (``_built_with``).
"""
import os
import re
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PROTO = "protos/snakepit.proto"

CORE = [
    "grpcio>=1.60",
    "grpcio-health-checking>=1.60",
    "grpcio-reflection>=1.60",
    "grpcio-tools>=1.60",
    "protobuf>=4.25",
    "msgpack>=1.0",
    # Typed commands' decoding and checks; imported on the first typed call only.
    "msgspec>=0.18",
    "orjson>=3.10",
    "structlog>=23.1",
    "google-re2>=1.1",  # linear-time regexes for caller-supplied patterns (tail_and_analyze)
]


def _built_with(dist: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


# The generated code checks at import that grpcio and protobuf are at least as new as
# the grpcio-tools (and its protobuf) that generated it; so the package asks for them.
_TOOLS, _PROTOBUF = _built_with("grpcio-tools"), _built_with("protobuf")
if _TOOLS:
    CORE[CORE.index("grpcio>=1.60")] = f"grpcio>={_TOOLS}"
if _PROTOBUF:
    CORE[CORE.index("protobuf>=4.25")] = f"protobuf>={_PROTOBUF}"

EXTRAS = {
    "msgpack": ["msgpack>=1.0"],
    "numpy": ["numpy>=1.26"],
    "dev": [
        "pytest>=8",
        "pytest-asyncio>=0.23",
        "pytest-timeout>=2.2",
        "hypothesis>=6.90",
        "grpclib>=0.4.7",
        "psutil>=5.9",
        "numpy>=1.26",
        "matplotlib>=3.8",
        # `make lint` gates `make test`: the checkers are held to a minor release, so a
        # new release's new findings arrive with a deliberate bump, not in an unrelated CI run.
        "ruff~=0.17.6",
        "mypy~=2.4.1",
        "types-protobuf>=5.26",
        "grpc-stubs~=1.53.0",
    ],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})


def generate_protos(out_dir: str) -> None:
    """Run grpc_tools.protoc on the .proto into ``out_dir`` (what `make proto-python` does)."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    os.makedirs(out_dir, exist_ok=True)
    argv = ["grpc_tools.protoc", f"-I{HERE / 'protos'}", f"-I{well_known}", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", str(HERE / PROTO)]
    if protoc.main(argv) != 0:
        raise RuntimeError(f"grpc_tools.protoc failed on {PROTO}")
    # The generated _grpc module imports its sibling as a top-level module; make it
    # package-relative so the code lives inside snakepit_bridge (the Makefile's sed).
    grpc_py = Path(out_dir) / "snakepit_pb2_grpc.py"
    text = re.sub(r"^import snakepit_pb2 as", "from . import snakepit_pb2 as", grpc_py.read_text(), flags=re.M)
    grpc_py.write_text(text)


class BuildPyWithProtos(build_py):
    """build_py that also generates snakepit_bridge/_proto/snakepit_pb2*.py(i)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            # An editable install imports from the checkout: generate there (as make does).
            generate_protos(str(HERE / "snakepit_bridge" / "_proto"))
        else:
            generate_protos(os.path.join(self.build_lib, "snakepit_bridge", "_proto"))


setup(
    name="snakepit-bridge",
    version="0.4.0",
    description="Python worker daemon for Elixir Snakepit pools (gRPC and stdio)",
    python_requires=">=3.11",
    packages=find_packages(include=["snakepit_bridge", "snakepit_bridge.*"]),
    package_data={"snakepit_bridge": ["py.typed", "models/*.npz", "_proto/*.py", "_proto/*.pyi"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["snakepit-bridge=snakepit_bridge.cli:main"]},
    cmdclass={"build_py": BuildPyWithProtos},
)
