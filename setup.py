"""Packaging for snakepit-bridge: the Python worker daemon behind a Snakepit pool."""
from setuptools import find_packages, setup

CORE = [
    "grpcio>=1.60",
    "grpcio-health-checking>=1.60",
    "grpcio-reflection>=1.60",
    "grpcio-tools>=1.60",
    "protobuf>=4.25",
    "msgpack>=1.0",
    "orjson>=3.10",
    "structlog>=23.1",
    "google-re2>=1.1",  # linear-time regexes for caller-supplied patterns (tail_and_analyze)
]
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
    ],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

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
)
