# Every target makes its own virtual environment; nothing is installed globally.
# `make test PYTHON=python3.13` uses another interpreter (found on PATH or
# under ~/.pyenv/versions) in its own environment, .venv-3.13.
PYTHON ?= python3
PYTHON_BIN := $(shell scripts/find-python $(PYTHON))
ifeq ($(PYTHON_BIN),)
$(error no working Python interpreter for PYTHON=$(PYTHON))
endif
ifeq ($(origin PYTHON),file)
VENV ?= .venv
else
VENV ?= .venv-$(shell $(PYTHON_BIN) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
endif
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# the demo needs distaff alone, not the test, lint and dev tools;
# test-fast (CI on other interpreters) needs the test tools only
BASE_STAMP := $(VENV)/.installed-base
TEST_STAMP := $(VENV)/.installed-test
PROTO_DIR := src/distaff/serialization
GEN_DIR   := $(PROTO_DIR)/_generated

.PHONY: demo test test-fast lint proto proto-check bench soak clean

$(PY):
	$(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test,lint,dev]'
	touch $(STAMP)

$(BASE_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $(BASE_STAMP)

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	touch $(TEST_STAMP)

demo: $(BASE_STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest -q -m "not soak" -p no:cacheprovider

# the suite without the slow tests (hypothesis over processes, bench smoke,
# chaos, soak) and the multi-host network namespaces
test-fast: $(TEST_STAMP)
	$(PY) -m pytest -q -m "not soak and not slow and not netns" -p no:cacheprovider

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
	$(PY) -m bench.scaling --reps 2

soak: $(STAMP)
	$(PY) -m pytest -q -m soak -p no:cacheprovider

clean:
	rm -rf .venv .venv-* build *.egg-info src/*.egg-info
