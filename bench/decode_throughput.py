"""Decode speed of the local agent's generation path against bare llama-cpp-python, same GGUF.

Usage: ``python bench/decode_throughput.py [--gguf FILE] [--tokens N] [--repeats N] [--threads N]``.

Both sides get the same rendered agent prompt (system prompt, the core tools, a user question,
rendered by ``claude_rl.chat_format``), tokenized the same way, decoded greedily for at most
``--tokens`` tokens, stopping at the same end tokens:

- *bare*: ``Llama.generate`` on a fresh cache, nothing else in the loop;
- *runtime*: ``claude_rl.runtime.LlamaCppModel.complete`` (what ``run_agent`` calls), cache reset
  before each repeat so both evaluate the whole prompt.

Decode speed counts the tokens after the first one over the time from the first to the last
(prompt evaluation excluded); repeats alternate between the two sides so machine noise hits both
alike, and the median is reported. The target is the runtime within 10% of bare. Then the KV-cache
reuse of a second turn is measured: the prompt-evaluation time of a turn that extends the first
one, with the cache kept (runtime) and from scratch. Writes ``bench/results/decode_throughput.json``.
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
from claude_rl.runtime import LlamaCppModel  # noqa: E402
from claude_rl.tools.runtime import VIRTUAL_ROOT  # noqa: E402
from claude_rl.tools.schemas import BUILTIN, CORE_TOOLS  # noqa: E402

QUESTION = (
    "Write a detailed maintenance plan for transformer TX-2 in the command center: list each check, "
    "why it matters and how often to do it."
)


def agent_messages() -> list[dict]:
    return [
        {"role": "system", "content": chat_format.DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": QUESTION},
    ]


def bare_decode(llm, tokens: list[int], max_tokens: int, stop_ids: set[int]) -> tuple[int, float]:
    """(decode steps, seconds) of a plain ``Llama.generate`` loop on a fresh cache."""
    llm.reset()
    n = 0
    t_first = t_last = None
    for token in llm.generate(
        tokens, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True
    ):
        now = time.perf_counter()
        if t_first is None:
            t_first = now
        t_last = now
        if token in stop_ids:
            break
        n += 1
        if n >= max_tokens:
            break
    steps = n if n < max_tokens else n - 1  # token k+1 needs k evaluations after the first
    return steps, (t_last - t_first) if t_first is not None else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, default=None, help="GGUF file (default: the bundled base model)")
    ap.add_argument("--tokens", type=int, default=64, help="tokens to decode per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads (default 1: a shared machine)")
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "decode_throughput.json")
    args = ap.parse_args()

    from llama_cpp import Llama

    gguf = args.gguf or base_model.default_gguf()
    ours = LlamaCppModel(gguf, n_ctx=args.n_ctx, n_threads=args.threads)
    bare = Llama(model_path=str(gguf), n_ctx=args.n_ctx, n_threads=args.threads, seed=0, verbose=False)
    tools = [BUILTIN[n] for n in CORE_TOOLS]
    prompt = chat_format.render(agent_messages(), tools, ours.fmt, add_generation_prompt=True)
    tokens = bare.tokenize(prompt.encode(), add_bos=False, special=True)
    assert tokens == ours.tokenize(prompt)

    bare_rates: list[float] = []
    ours_rates: list[float] = []
    texts = set()
    for r in range(args.repeats):
        steps, seconds = bare_decode(bare, tokens, args.tokens, ours.stop_ids)
        bare_rates.append(steps / seconds)
        ours.llm.reset()
        texts.add(ours.complete(prompt, args.tokens))
        stats = ours.last_stats
        ours_rates.append(stats["decode_steps"] / stats["decode_s"])
        print(
            f"repeat {r + 1}: bare {bare_rates[-1]:.1f} tok/s, runtime {ours_rates[-1]:.1f} tok/s "
            f"({stats['generated']} tokens, stopped: {stats['stopped']})",
            flush=True,
        )
    bare_med = statistics.median(bare_rates)
    ours_med = statistics.median(ours_rates)
    ratio = ours_med / bare_med

    # KV-cache reuse: a second turn that extends the first prompt.
    first = ours.complete(prompt, 16)
    messages = agent_messages() + [
        {
            "role": "assistant",
            "content": first.split("<tool_call>")[0].strip(),
            "tool_calls": [
                {"type": "function", "function": {"name": "Glob", "arguments": {"pattern": "**/*.md"}}}
            ],
        },
        {"role": "tool", "content": f"{VIRTUAL_ROOT}/README.md\n{VIRTUAL_ROOT}/docs/alarms.md"},
    ]
    second = chat_format.render(messages, tools, ours.fmt, add_generation_prompt=True)
    ours.complete(second, 1)
    reuse = dict(ours.last_stats)
    ours.llm.reset()
    ours.complete(second, 1)
    fresh = dict(ours.last_stats)

    result = {
        "bench": "decode_throughput",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "gguf": str(gguf.name),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "threads": args.threads,
        "prompt_tokens": len(tokens),
        "max_tokens": args.tokens,
        "repeats": args.repeats,
        "bare_tok_s": [round(x, 2) for x in bare_rates],
        "runtime_tok_s": [round(x, 2) for x in ours_rates],
        "bare_median_tok_s": round(bare_med, 2),
        "runtime_median_tok_s": round(ours_med, 2),
        "ratio_runtime_over_bare": round(ratio, 3),
        "within_10_percent": abs(ratio - 1) <= 0.10,
        "same_text_every_repeat": len(texts) == 1,
        "kv_reuse_second_turn": {
            "prompt_tokens": reuse["prompt_tokens"],
            "reused_tokens": reuse["reused"],
            "evaluated_with_reuse": reuse["evaluated"],
            "prompt_s_with_reuse": round(reuse["prompt_s"], 3),
            "prompt_s_fresh": round(fresh["prompt_s"], 3),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"decode: bare {bare_med:.1f} tok/s, runtime {ours_med:.1f} tok/s, ratio {ratio:.3f} "
        f"({'within' if result['within_10_percent'] else 'NOT within'} 10%)"
    )
    kv = result["kv_reuse_second_turn"]
    print(
        f"second turn: {kv['reused_tokens']}/{kv['prompt_tokens']} prompt tokens from the cache, "
        f"prompt eval {kv['prompt_s_with_reuse']}s vs {kv['prompt_s_fresh']}s fresh"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
