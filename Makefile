# Every target makes its own virtual environment; nothing is installed globally.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROTO_DIR := src/distaff/serialization
GEN_DIR   := $(PROTO_DIR)/_generated

.PHONY: demo test lint proto proto-check bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest -q -m "not soak" -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/mypy --strict
	$(VENV)/bin/lint-imports

proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -I$(PROTO_DIR) --python_out=$(GEN_DIR) \
		--pyi_out=$(GEN_DIR) $(PROTO_DIR)/distaff.proto

proto-check: $(STAMP)
	@tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -I$(PROTO_DIR) --python_out=$$tmp \
		--pyi_out=$$tmp $(PROTO_DIR)/distaff.proto && \
	for f in distaff_pb2.py distaff_pb2.pyi; do \
		cmp -s $$tmp/$$f $(GEN_DIR)/$$f || { echo "stale generated code: $(GEN_DIR)/$$f (run make proto)"; rm -rf $$tmp; exit 1; }; \
	done; rm -rf $$tmp; echo "generated code is fresh"

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench
	$(PY) -m bench.balancing

soak: $(STAMP)
	$(PY) -m pytest -q -m soak -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info
