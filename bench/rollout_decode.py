"""Decode speed of an RL rollout batch with the LoRA adapter folded in, against the same adapter
unmerged (what TRL's generation path decodes).

Usage: ``python bench/rollout_decode.py [--model FOLDER] [--rows N] [--tokens N] [--repeats N]``.

The RL phase (``claude-rl train --phase ppo``) decodes its rollouts with ``model.generate`` on the
PEFT model; ``merge_lora_for_generation`` (on by default where the weights are float32) folds the
adapter into the base weights for the duration (``claude_rl.train.grpo_generation.merged_adapter``).
Both sides here get the same model (default: the bundled base model, materialized) under a LoRA of
the CPU presets' shape (r 16, all linear layers) with non-zero weights, the same batch of ``--rows``
copies of the rendered agent prompt, and sample at the presets' temperature (0.3) with
``min_new_tokens`` equal to ``max_new_tokens`` so both decode the same number of steps: once one
token (the prompt's evaluation, *prefill*) and once ``--tokens`` + 1; *decode* is the difference.
Repeats alternate between the sides so machine noise hits both alike; medians are reported, with
the greedy tokens of both compared as a check that the policy is the same. Writes
``bench/results/rollout_decode.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from claude_rl import base_model, chat_format  # noqa: E402
from claude_rl.tools.schemas import BUILTIN, CORE_TOOLS  # noqa: E402
from claude_rl.train.grpo_generation import merged_adapter  # noqa: E402

QUESTION = "Which alarms fired on transformer TX-2 last week, and what was its peak load?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="HF model folder (default: the base model)")
    ap.add_argument("--rows", type=int, default=12, help="rollouts per batch (the long CPU preset: 12)")
    ap.add_argument("--tokens", type=int, default=64, help="tokens to decode per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rollout_decode.json")
    args = ap.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    folder = Path(args.model or base_model.materialize())
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    with torch.no_grad():  # a trained adapter: zero B would make merging a no-op
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    model.eval()

    messages = [
        {"role": "system", "content": chat_format.DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": QUESTION},
    ]
    fmt = chat_format.format_for(tokenizer)
    prompt = chat_format.render(messages, [BUILTIN[n] for n in CORE_TOOLS], fmt, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    batch = ids.repeat(args.rows, 1)
    mask = torch.ones_like(batch)

    def generate(merge: bool, sample: bool, tokens: int) -> tuple[float, list[int]]:
        with merged_adapter(model, merge), torch.no_grad():
            started = time.perf_counter()
            out = model.generate(
                input_ids=batch if sample else ids,
                attention_mask=mask if sample else torch.ones_like(ids),
                do_sample=sample,
                temperature=0.3 if sample else None,
                top_k=0 if sample else None,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
            return time.perf_counter() - started, out[0, ids.shape[1] :].tolist()

    generate(False, True, 2)  # warm-up
    sides = ("unmerged", "merged")
    prefill: dict[str, list[float]] = {k: [] for k in sides}
    decode: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(args.repeats):
        for side in sides:
            first, _ = generate(side == "merged", True, 1)
            whole, _ = generate(side == "merged", True, args.tokens + 1)
            prefill[side].append(first)
            decode[side].append(whole - first)
        print(
            f"repeat {r + 1}: prefill unmerged {prefill['unmerged'][-1]:.1f} s, merged "
            f"{prefill['merged'][-1]:.1f} s; decode unmerged {decode['unmerged'][-1]:.1f} s, merged "
            f"{decode['merged'][-1]:.1f} s",
            flush=True,
        )
    same_greedy = generate(False, False, args.tokens)[1] == generate(True, False, args.tokens)[1]
    med_prefill = {k: statistics.median(v) for k, v in prefill.items()}
    med_decode = {k: statistics.median(v) for k, v in decode.items()}
    rate = {k: args.rows * args.tokens / v for k, v in med_decode.items()}
    ratio = med_decode["unmerged"] / med_decode["merged"]
    prefill_ratio = med_prefill["unmerged"] / med_prefill["merged"]
    result = {
        "bench": "rollout_decode",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": folder.name,
        "prompt_tokens": int(ids.shape[1]),
        "rows": args.rows,
        "tokens": args.tokens,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "prefill_seconds": prefill,
        "decode_seconds": decode,
        "median_prefill_seconds": med_prefill,
        "median_decode_seconds": med_decode,
        "decode_tokens_per_second": rate,
        "speedup_merged_decode": ratio,
        "speedup_merged_prefill": prefill_ratio,
        "same_greedy_tokens": same_greedy,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{args.rows} rows x {args.tokens} tokens after a {ids.shape[1]}-token prompt: decode unmerged "
        f"{rate['unmerged']:.1f} tok/s, merged {rate['merged']:.1f} tok/s, ratio {ratio:.2f}x; prefill "
        f"ratio {prefill_ratio:.2f}x; greedy tokens {'the same' if same_greedy else 'DIFFER'}"
    )
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0 if same_greedy else 1


if __name__ == "__main__":
    raise SystemExit(main())
