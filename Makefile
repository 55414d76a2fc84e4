# snakepit-bridge developer commands. Everything runs inside .venv/, built from
# a system Python 3.11; `make install` is idempotent and quick when nothing changed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTO_OUT := snakepit_bridge/_proto
PROTO_GEN := $(PROTO_OUT)/snakepit_pb2.py $(PROTO_OUT)/snakepit_pb2_grpc.py
PORT   ?= 50051
# Everything ruff checks (its rules are in pyproject.toml); mypy checks the package.
LINT_PATHS := snakepit_bridge tests benchmarks tools priv/python grpc_bridge.py setup.py

.PHONY: install proto-python run lint test bench bench-storm clean

# Byte-compiled ahead: where PYTHONDONTWRITEBYTECODE is set, every worker
# start would otherwise compile the package from source (~80 ms of startup).
# The venv also records where this checkout is (<venv>/snakepit-bridge-home), so a
# copy of priv/python/*.py run by this venv's python finds it (see priv/README.md).
install: $(STAMP) $(PROTO_GEN)
	$(BIN)/python -m compileall -q snakepit_bridge
	echo "$(CURDIR)" > $(VENV)/snakepit-bridge-home

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[all]'
	touch $@

proto-python: $(STAMP)
	rm -f $(PROTO_GEN)
	$(MAKE) --no-print-directory $(PROTO_GEN)

# The generated _grpc module imports its sibling as a top-level module; make it
# package-relative so the code lives inside snakepit_bridge.
$(PROTO_GEN) &: protos/snakepit.proto $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=$(PROTO_OUT) \
		--pyi_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) protos/snakepit.proto
	sed -i 's/^import snakepit_pb2 as/from . import snakepit_pb2 as/' $(PROTO_OUT)/snakepit_pb2_grpc.py

run: install
	$(BIN)/python grpc_bridge.py --port $(PORT)

# Lint first, so CI (which runs `make test`) fails on a new finding.
lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy

test: install lint
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m benchmarks

# 64 workers spawned at once beside 64 bare servicers (not part of `make bench`).
bench-storm: install
	$(BIN)/python -m benchmarks --only storm --no-docs

clean:
	rm -rf $(VENV) $(PROTO_GEN) $(PROTO_OUT)/*.pyi .pytest_cache .mypy_cache .ruff_cache *.egg-info build dist
