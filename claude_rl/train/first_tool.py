"""First-tool accuracy: does the model pick the reference's first tool? (cheap, greedy, held-out rows)

Used at the end of ``claude-rl train`` to compare the base and the trained model on the test split.
Each row is cut after its first user prompt, rendered with the project's chat template (with the
row's tools) and a generation prompt, greedily continued, and parsed with
``chat_format.parse_tool_calls``; the first call's tool name is compared with the reference's first
assistant tool call. Rows whose reference makes no tool call are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from claude_rl.chat_format import format_for, parse_tool_calls


def reference_first_tool(messages: list[dict[str, Any]]) -> str | None:
    for m in messages:
        if m.get("role") == "assistant" and m.get("tool_calls"):
            return m["tool_calls"][0]["function"]["name"]
    return None


def prompt_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages up to and including the first user prompt."""
    out = []
    for m in messages:
        out.append(m)
        if m.get("role") == "user":
            break
    return out


def read_rows(folder: Path | str, split: str = "test") -> list[dict[str, Any]]:
    path = Path(folder) / f"{split}.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def first_tool_accuracy(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], max_new_tokens: int = 96, n: int = 12
) -> dict[str, Any]:
    """{"rows", "first_tool_accuracy", "valid_call_rate", "details"} over at most ``n`` rows."""
    import torch

    fmt = format_for(tokenizer)
    details = []
    model.eval()
    for row in rows:
        if len(details) >= n:
            break
        if (row.get("meta") or {}).get("part", 0):  # later parts of a split episode start mid-task
            continue
        expected = reference_first_tool(row["messages"])
        if expected is None:
            continue
        tools = json.loads(row["tools"]) if isinstance(row.get("tools"), str) else row.get("tools")
        ids = tokenizer.apply_chat_template(
            prompt_messages(row["messages"]),
            tools=tools,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
        ids = {k: v.to(model.device) for k, v in ids.items()}
        with torch.no_grad():
            out = model.generate(
                **ids,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=False)
        _, calls = parse_tool_calls(text, fmt)
        got = calls[0]["function"]["name"] if calls else None
        details.append({"expected": expected, "got": got, "valid_call": bool(calls), "text": text[:300]})
    total = len(details)
    return {
        "rows": total,
        "first_tool_accuracy": sum(d["got"] == d["expected"] for d in details) / total if total else None,
        "valid_call_rate": sum(d["valid_call"] for d in details) / total if total else None,
        "details": details,
    }


def evaluate_folder(model_folder: Path | str, rows: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """``first_tool_accuracy`` of the model saved in ``model_folder`` (its own tokenizer and template)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from claude_rl.chat_format import apply_to_tokenizer

    tok = apply_to_tokenizer(AutoTokenizer.from_pretrained(str(model_folder), local_files_only=True))
    model = AutoModelForCausalLM.from_pretrained(str(model_folder), local_files_only=True)
    return first_tool_accuracy(model, tok, rows, **kwargs)
