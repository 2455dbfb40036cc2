"""Held-out evaluation of a merged training run on a GPU, all prompts at once (a sweep's scorer).

    python bench/gpu/hf_eval.py RUN_FOLDER --dataset DATASET_FOLDER --out OUT_DIR [--tool-tokens 192]

``claude-rl eval`` runs the exported GGUF through llama.cpp, one prompt after another: the number
users get, ~10 minutes per model on 2 CPU cores. A recipe sweep needs the same scores for several
runs in minutes, so here every held-out prompt runs its own agent loop (``runtime.run_agent``,
the real sandboxed tools, the same scorers and report as ``claude-rl eval``) in a thread, and the
threads' completions are batched into one left-padded greedy ``generate`` on the GPU. Greedy
decoding of the merged HF model matches the F16 GGUF's top-1 (export parity: 446/446 positions);
padding can still flip a near-tie, so treat the result as the sweep's ranking, and measure the
chosen recipe with ``claude-rl eval``.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from claude_rl import chat_format, evaluate  # noqa: E402
from claude_rl.runtime import AgentConfig, ContextFull, run_agent  # noqa: E402


class BatchedHF:
    """``CompletionModel`` shared by many agent threads: requests wait ``window_s`` for company,
    then run as one batch."""

    def __init__(
        self, folder: Path, device: str = "cuda", window_s: float = 0.05, dtype: str = "bfloat16"
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.name = folder.name
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, dtype))
        self.device = device
        self.model.to(device).eval()
        self.n_ctx = 8192
        self.fmt = chat_format.format_for(self.tokenizer)
        end = chat_format.FORMATS[self.fmt].end_token
        ids = {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids(end)}
        self.stop_ids = sorted(t for t in ids if isinstance(t, int) and t >= 0)
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
        )
        self.offsets_tokenizer = self.tokenizer
        self.window_s = window_s
        self.requests: queue.Queue = queue.Queue()
        self.batches: list[int] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def complete(self, prompt: str, max_tokens: int) -> str:
        tokens = self.tokenize(prompt)
        if len(tokens) >= self.n_ctx:
            raise ContextFull(f"the prompt has {len(tokens)} tokens; the context holds {self.n_ctx}")
        done: queue.Queue = queue.Queue(maxsize=1)
        self.requests.put((tokens, max_tokens, done))
        ok, value = done.get()
        if not ok:
            raise value
        return value

    def _serve(self) -> None:
        while True:
            batch = [self.requests.get()]
            deadline = time.perf_counter() + self.window_s
            while (left := deadline - time.perf_counter()) > 0:
                try:
                    batch.append(self.requests.get(timeout=left))
                except queue.Empty:
                    break
            try:
                outputs = self._generate([b[0] for b in batch], max(b[1] for b in batch))
                for (_, limit, done), ids in zip(batch, outputs, strict=True):
                    done.put((True, self._cut(ids, limit)))
            except Exception as exc:  # every waiting agent gets the error
                for _, _, done in batch:
                    done.put((False, exc))

    def _cut(self, ids: list[int], limit: int) -> str:
        ids = ids[:limit]
        for k, t in enumerate(ids):
            if t in self.stop_ids:
                ids = ids[:k]
                break
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def _generate(self, prompts: list[list[int]], max_new: int) -> list[list[int]]:
        torch = self.torch
        self.batches.append(len(prompts))
        width = max(len(p) for p in prompts)
        print(f"batch {len(prompts)} x {width} tokens, {max_new} new", file=sys.stderr, flush=True)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        with torch.inference_mode():
            out = self.model.generate(
                ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max_new,
                do_sample=False,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
            )
        return [row[width:].tolist() for row in out.cpu()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a training run folder (its merged/ is evaluated)")
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tool-tokens", type=int, default=192)
    ap.add_argument("--workspace", type=Path, default=ROOT / "data" / "workspace")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--limit", type=int, default=None, help="evaluate this many prompts (a smoke run)")
    args = ap.parse_args()

    folder = args.run / "merged" if (args.run / "merged").is_dir() else args.run
    model = BatchedHF(folder, device=args.device, dtype=args.dtype)
    name = args.run.name
    refs = evaluate.load_references(args.dataset, "test", limit=args.limit)
    config = AgentConfig(max_tool_tokens=args.tool_tokens, allow_edits=True)
    started = time.perf_counter()

    def one(k_ref: tuple[int, Any]) -> Any:
        k, ref = k_ref
        return evaluate.run_prompt(ref, name, model, run_agent, args.workspace, config, f"{name}-{k:04d}")[0]

    with ThreadPoolExecutor(max_workers=len(refs)) as pool:
        results = list(pool.map(one, enumerate(refs)))
    report = evaluate.EvalReport(
        name=f"hf-{name}",
        split="test",
        dataset=args.dataset.name,
        models=[name],
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        results=results,
        summary=evaluate.summarize(results, [name]),
        notes=[
            f"bench/gpu/hf_eval.py: transformers bf16 on CUDA, batched greedy ({len(model.batches)} batches)"
        ],
    )
    evaluate.write_report(report, args.out)
    seconds = time.perf_counter() - started
    summary = report.summary[name]
    line = {k: v.get("mean") for k, v in summary["overall"].items() if isinstance(v, dict)}
    transfer = summary["by_split"].get("heldout_template", {}).get("metrics", {})
    seq_transfer = (transfer.get("tool_sequence_similarity") or {}).get("mean")
    print(
        json.dumps(
            {
                "run": name,
                "seconds": round(seconds, 1),
                **line,
                "seq_transfer": seq_transfer,
                "stops": summary["stop_reasons"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
