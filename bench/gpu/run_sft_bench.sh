#!/usr/bin/env bash
# SFT throughput on the GPU machine: the one command to run there, from the repo root, with `.whl`
# carried (liger-kernel, bitsandbytes; the image has torch, transformers, peft, accelerate, triton):
#     bash bench/gpu/run_sft_bench.sh
# It installs the carried wheels to /tmp/site, prints the card, and runs bench/sft_throughput.py,
# which re-measures the anchor's baseline (../shared/gpu/anchor_sft.py, setting A) as its first row,
# so no other script is needed. Log: $OUT/sft_bench.log, results: $OUT/sft_bench.json.
# Env passes through (CONFIGS=, COMPILE=0 to drop the torch.compile row, BUDGET_S=, ...).
set -uo pipefail
cd "$(dirname "$0")/../.."
export OUT="${OUT:-/tmp/sft_bench_out}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} \
    || { echo "installing the carried wheels failed"; exit 1; }
else
  echo "no .whl/ here (carry it): liger-kernel and bitsandbytes missing, the script falls back and says so"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv || true
export PYTHONUNBUFFERED=1
export COMPILE="${COMPILE:-1}"
timeout 480 python3 bench/sft_throughput.py 2>&1 | tee "$OUT/sft_bench.log"
rc=${PIPESTATUS[0]}
[ "$rc" = 124 ] && echo "timed out after 480 s: rows finished so far are in $OUT/sft_bench.json"
exit "$rc"
