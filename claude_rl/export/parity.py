"""Does the GGUF compute what the HF model computes? Measured on fixed prompts, run by the export.

Four checks, each catching a different silent conversion bug (``shared/docs/gguf-export-notes.md``):

1. **Logits** (full-precision file, gated strictly): llama.cpp's next-token logits against
   transformers' (float32) at every position of every prompt (the same token ids on both
   sides): max |Δlogit| ≤ ``tolerance``, and every top-1 disagreement must be a near tie (the HF
   logits of the two tokens within 2 × tolerance, which max |Δ| ≤ tolerance already implies).
   Measured on SmolLM2-135M: F16 0.087 (446/446 top-1); the Q/K permutation skipped, 36 (131/446).
   Top-1 on the last token alone is not a check: the broken layout still agreed on 3 of 4 prompts.
2. **Greedy continuations** (``greedy_tokens`` tokens): equal, unless the first divergence is at a
   near tie.
3. **Tokenizer**: probe strings tokenized by llama.cpp and by the HF tokenizer give the same ids
   (a wrong ``tokenizer.ggml.pre`` changes digits, spaces and newlines).
4. **Chat template**: the template read back from the written file (``gguf.GGUFReader``), rendered
   by llama-cpp-python's ``Jinja2ChatFormatter`` and tokenized by llama.cpp with special tokens
   parsed, gives the same ids as the HF tokenizer's ``apply_chat_template``.

Quantized files get the logit and greedy measurements too, with bounds that catch a broken file,
not a lossy one: a top-1 agreement rate and a mean KL(HF ‖ GGUF) (``QUANT_MIN_TOP1``,
``QUANT_MAX_KL``); their max |Δ| and greedy results are reported, not gated.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from claude_rl.chat_format import render
from claude_rl.export import prompts as P
from claude_rl.export.errors import ExportError

# Max |Δlogit| between a full-precision GGUF and transformers, over every position. Measured on
# SmolLM2-135M (446 positions): F32 0.039 (not 0: llama.cpp's KV cache is F16), F16 0.087, BF16
# 0.44 (8 mantissa bits; top-1 443/446, the rest near ties). A broken conversion gives 1-40.
TOLERANCE = {"f32": 0.15, "f16": 0.15, "bf16": 0.75}
# Loose bounds for quantized files, the same for every type: they catch a broken file, not a lossy
# one. Measured on SmolLM2-135M (446 positions; top-1 rate / mean KL): q8_0 0.97 / 0.005, q6_k
# 0.94 / 0.013, q5_k_m 0.83 / 0.084, q4_k_m 0.86 / 0.065, q4_0 0.71 / 0.35, q3_k_m 0.80 / 0.15,
# q2_k 0.65 / 0.44 (quality does not follow the bit count: 576-wide rows make most k-quant tensors
# fall back to other types). The F16 file with the Q/K permutation skipped: 0.29 / 2.7.
QUANT_MIN_TOP1 = 0.5
QUANT_MAX_KL = 1.0
GREEDY_TOKENS = 16


def parity_threads() -> int:
    """Threads for both engines: half the cores, at most 4. The checks run small batches and
    single-token steps, where threads spin-wait on each other: on a 2-core machine already busy
    with another job, 2 threads made the HF reference 12x slower than 1 (69 s against 6 s)."""
    import os

    return max(1, min((os.cpu_count() or 1) // 2, 4))


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class ParityInputs:
    """Token ids of the logit prompts (from the HF tokenizer) and the HF reference results."""

    names: list[str]
    ids: list[list[int]]
    hf_logits: list[np.ndarray] = field(default_factory=list)  # (positions, vocab) float32
    hf_greedy: list[list[int]] = field(default_factory=list)


def _load_hf(hf_dir: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    model.eval()
    return tok, model


def _chat_ids(tok: Any, messages: list[dict[str, Any]], tools: Any, gen: bool) -> list[int]:
    out = tok.apply_chat_template(
        messages, tools=tools, tokenize=True, add_generation_prompt=gen, return_dict=True
    )
    return list(out["input_ids"])


def logit_prompts(tok: Any, fmt: str) -> tuple[list[str], list[list[int]]]:
    """The plain texts and ``prompts.LOGIT_CONVERSATIONS``, as HF token ids."""
    names, ids = [], []
    for name, text in P.PLAIN_PROMPTS.items():
        names.append(name)
        ids.append(list(tok(text, add_special_tokens=True)["input_ids"]))
    for name, messages, tools, gen in P.CONVERSATIONS:
        if name in P.LOGIT_CONVERSATIONS:
            names.append(name)
            ids.append(_chat_ids(tok, messages, tools, gen))
    return names, ids


def _hf_reference(model: Any, inputs: ParityInputs, greedy_tokens: int) -> None:
    import torch

    with torch.no_grad():
        for ids in inputs.ids:
            out = model(torch.tensor([ids]), use_cache=True)
            inputs.hf_logits.append(out.logits[0].float().numpy())
            cache, nxt, gen = out.cache, int(out.logits[0, -1].argmax()), []
            for _ in range(greedy_tokens):
                gen.append(nxt)
                step = model(torch.tensor([[nxt]]), cache=cache, use_cache=True)
                cache, nxt = step.cache, int(step.logits[0, -1].argmax())
            inputs.hf_greedy.append(gen)


def open_gguf(path: Path, n_ctx: int) -> Any:
    """A llama-cpp-python model on the CPU that keeps the logits of every position."""
    try:
        from llama_cpp import Llama
    except ImportError as e:
        raise ExportError(
            "the parity checks run the GGUF with llama-cpp-python, which is not installed "
            "(`pip install llama-cpp-python`), or pass check_parity=False"
        ) from e

    threads = parity_threads()
    try:
        # logits_all: without it llama-cpp-python 0.3.x leaves `scores` unfilled for earlier positions.
        return Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=0,
            logits_all=True,
            verbose=False,
        )
    except (ValueError, RuntimeError) as e:
        raise ExportError(
            f"llama.cpp cannot load {path.name} ({e}): an unknown tokenizer.ggml.pre name or a "
            "tensor llama.cpp does not expect"
        ) from e


def _gguf_run(llm: Any, ids: list[int], n: int) -> tuple[np.ndarray, list[int]]:
    """The logits at every prompt position, then ``n`` greedy tokens continuing from the prompt
    (one evaluation of the prompt serves both)."""
    llm.reset()
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    return logits, out


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def compare_logits(hf: np.ndarray, gg: np.ndarray, tolerance: float) -> dict[str, Any]:
    """Numbers for one prompt: max |Δ| (all positions and the last), top-1 agreement, KL."""
    delta = np.abs(hf - gg)
    hf_top, gg_top = hf.argmax(-1), gg.argmax(-1)
    rows = np.arange(len(hf))
    # How far apart HF put the two candidates where the top-1 differs: a near tie if ≤ 2 × tol.
    margins = hf[rows, hf_top] - hf[rows, gg_top]
    disagree = hf_top != gg_top
    lp, lq = _log_softmax(hf), _log_softmax(gg)
    kl = (np.exp(lp) * (lp - lq)).sum(-1)
    return {
        "positions": int(len(hf)),
        "max_abs_dlogit": round(float(delta.max()), 4),
        "last_token_max_abs_dlogit": round(float(delta[-1].max()), 4),
        "top1_agree": int((~disagree).sum()),
        "top1_disagree_not_near_tie": int((disagree & (margins > 2 * tolerance)).sum()),
        "mean_kl": float(kl.mean()),
        "max_kl": float(kl.max()),
    }


def _greedy_result(hf_logits_fn: Any, hf: list[int], gg: list[int], tolerance: float) -> dict[str, Any]:
    """Equal, or where the first divergence is and whether it is a near tie for HF."""
    if hf == gg:
        return {"equal": True}
    first = next(i for i, (a, b) in enumerate(zip(hf, gg, strict=True)) if a != b)
    margin = hf_logits_fn(first, hf[first], gg[first])
    return {
        "equal": False,
        "first_divergence": first,
        "hf_margin": round(margin, 4),
        "near_tie": margin <= 2 * tolerance,
    }


def _hf_margin_fn(model: Any, ids: list[int], hf_greedy: list[int]) -> Any:
    """A function (step, hf_token, other_token) → HF logit gap at that greedy step (computed lazily)."""

    def margin(step: int, a: int, b: int) -> float:
        import torch

        with torch.no_grad(), _torch_threads(parity_threads()):
            logits = model(torch.tensor([ids + hf_greedy[:step]])).logits[0, -1].float().numpy()
        return float(logits[a] - logits[b])

    return margin


def measure_file(
    llm: Any, model: Any, inputs: ParityInputs, tolerance: float, greedy_tokens: int
) -> dict[str, Any]:
    """Logit and greedy numbers of one GGUF against the HF reference, over all logit prompts."""
    per_prompt = []
    for name, ids, hf_logits, hf_greedy in zip(
        inputs.names, inputs.ids, inputs.hf_logits, inputs.hf_greedy, strict=True
    ):
        gg_logits, gg_greedy = _gguf_run(llm, ids, greedy_tokens)
        numbers = compare_logits(hf_logits, gg_logits, tolerance)
        numbers["greedy"] = _greedy_result(
            _hf_margin_fn(model, ids, hf_greedy), hf_greedy, gg_greedy, tolerance
        )
        per_prompt.append({"prompt": name, **numbers})
    positions = sum(p["positions"] for p in per_prompt)
    agree = sum(p["top1_agree"] for p in per_prompt)
    return {
        "max_abs_dlogit": max(p["max_abs_dlogit"] for p in per_prompt),
        "last_token_max_abs_dlogit": max(p["last_token_max_abs_dlogit"] for p in per_prompt),
        "top1_agree": agree,
        "positions": positions,
        "top1_rate": round(agree / positions, 4),
        "top1_disagree_not_near_tie": sum(p["top1_disagree_not_near_tie"] for p in per_prompt),
        "mean_kl": round(sum(p["mean_kl"] * p["positions"] for p in per_prompt) / positions, 5),
        "greedy_equal": sum(p["greedy"]["equal"] for p in per_prompt),
        "greedy_near_tie": sum((not p["greedy"]["equal"]) and p["greedy"]["near_tie"] for p in per_prompt),
        "greedy_total": len(per_prompt),
        "greedy_tokens": greedy_tokens,
        "per_prompt": [
            {**p, "mean_kl": round(p["mean_kl"], 5), "max_kl": round(p["max_kl"], 4)} for p in per_prompt
        ],
    }


# Below this max |Δlogit|, with top-1 and greedy agreeing, a failed gate is rounding, not a broken
# conversion (those measured 1-40).
ROUNDING_ONLY_BELOW = 1.0


def strict_failures(label: str, numbers: dict[str, Any], tolerance: float) -> list[str]:
    out = []
    if numbers["max_abs_dlogit"] > tolerance:
        out.append(f"{label}: max |Δlogit| {numbers['max_abs_dlogit']} > {tolerance}")
    if numbers["top1_disagree_not_near_tie"]:
        out.append(
            f"{label}: top-1 differs at {numbers['top1_disagree_not_near_tie']} positions, not near ties "
            f"(agreement {numbers['top1_agree']}/{numbers['positions']})"
        )
    bad = numbers["greedy_total"] - numbers["greedy_equal"] - numbers["greedy_near_tie"]
    if bad:
        out.append(f"{label}: greedy continuations differ on {bad} of {numbers['greedy_total']} prompts")
    if len(out) == 1 and label in ("f16", "bf16") and numbers["max_abs_dlogit"] < ROUNDING_ONLY_BELOW:
        # Measured: a PPO model at learning rate 1e-3 gave 0.163 in F16 (0.042 in F32), its
        # base 0.079; the rounding error depends on the weights, not only on the conversion.
        out[0] += (
            f" (top-1 and greedy agree: {label.upper()} rounding of this model's weights, not a broken "
            "conversion; --outtype f32 keeps full precision)"
        )
    return out


def quant_failures(label: str, numbers: dict[str, Any]) -> list[str]:
    out = []
    if numbers["top1_rate"] < QUANT_MIN_TOP1:
        out.append(f"{label}: top-1 agreement {numbers['top1_rate']} < {QUANT_MIN_TOP1}")
    if numbers["mean_kl"] > QUANT_MAX_KL:
        out.append(f"{label}: mean KL {numbers['mean_kl']} > {QUANT_MAX_KL}")
    return out


def check_tokenizer(llm: Any, tok: Any) -> dict[str, Any]:
    mismatches = []
    for text in P.TOKENIZER_PROBES:
        hf = list(tok(text, add_special_tokens=False)["input_ids"])
        gg = list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
        if hf != gg:
            mismatches.append({"text": text, "hf": hf, "gguf": gg})
    return {"probes": len(P.TOKENIZER_PROBES), "mismatches": mismatches}


def read_gguf_template(path: Path) -> str:
    """The chat template stored in a GGUF file, read back with ``gguf.GGUFReader``."""
    import gguf

    field_ = gguf.GGUFReader(str(path)).get_field(gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    if field_ is None:
        return ""
    return str(field_.contents())


def check_template(llm: Any, tok: Any, template: str) -> dict[str, Any]:
    """Each conversation rendered by llama-cpp-python's formatter from the GGUF's template and
    tokenized by llama.cpp, against ``apply_chat_template`` of the HF tokenizer."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def text_of(token: int) -> str:
        return llm.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""

    bos, eos = text_of(llm.token_bos()), text_of(llm.token_eos())
    results = []
    for name, messages, tools, gen in P.CONVERSATIONS:
        formatter = Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, add_generation_prompt=gen
        )
        response = formatter(messages=messages, tools=tools)
        prompt = response.prompt
        # Tokenized the way llama-cpp-python's chat handler does: special tokens parsed, BOS added
        # only when the formatter says the template did not write the special tokens itself.
        gg = list(llm.tokenize(prompt.encode("utf-8"), add_bos=not response.added_special, special=True))
        hf = _chat_ids(tok, messages, tools, gen)
        hf_text = tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=gen)
        entry: dict[str, Any] = {"conversation": name, "tokens": len(hf), "equal": gg == hf}
        if gg != hf:
            first = next(
                (i for i, (a, b) in enumerate(zip(gg, hf, strict=False)) if a != b), min(len(gg), len(hf))
            )
            text_diff = next(
                (i for i, (a, b) in enumerate(zip(prompt, hf_text, strict=False)) if a != b), None
            )
            entry.update(
                first_token_diff=first,
                gguf_tokens=len(gg),
                text_equal=prompt == hf_text,
                first_char_diff=text_diff,
                gguf_text_near_diff=prompt[max(0, (text_diff or 0) - 40) : (text_diff or 0) + 40],
                hf_text_near_diff=hf_text[max(0, (text_diff or 0) - 40) : (text_diff or 0) + 40],
            )
        results.append(entry)
    return {"conversations": results, "all_equal": all(r["equal"] for r in results)}


def project_render_equals_hf(tok: Any, fmt: str) -> bool:
    """Whether the HF tokenizer's template renders the parity conversations like the project's."""
    for _name, messages, tools, gen in P.CONVERSATIONS:
        hf = tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=gen)
        if hf != render(messages, tools, fmt, add_generation_prompt=gen):
            return False
    return True


class ParityChecker:
    """Loads the HF model once, computes its reference results once, then checks GGUF files.

    ``check_full`` gates strictly (logits, greedy, tokenizer, template); ``check_quant`` loosely.
    ``failures`` collects one line per failed check; ``report()`` has every number.
    """

    def __init__(self, hf_dir: Path, fmt: str, tolerance: float, greedy_tokens: int = GREEDY_TOKENS):
        self.fmt = fmt
        self.tolerance = tolerance
        self.greedy_tokens = greedy_tokens
        self.tok, self.model = _load_hf(hf_dir)
        names, ids = logit_prompts(self.tok, fmt)
        self.inputs = ParityInputs(names, ids)
        with _torch_threads(parity_threads()):
            _hf_reference(self.model, self.inputs, greedy_tokens)
        longest = max(len(i) for i in ids) + greedy_tokens + 8
        self.n_ctx = -(-longest // 64) * 64
        self.failures: list[str] = []
        self.files: dict[str, Any] = {}
        self.tokenizer: dict[str, Any] | None = None
        self.template: dict[str, Any] | None = None
        self.hf_template_is_project = project_render_equals_hf(self.tok, fmt)

    def check_full(self, path: Path, label: str) -> list[str]:
        llm = open_gguf(path, self.n_ctx)
        try:
            numbers = measure_file(llm, self.model, self.inputs, self.tolerance, self.greedy_tokens)
            failures = strict_failures(label, numbers, self.tolerance)
            self.tokenizer = check_tokenizer(llm, self.tok)
            if self.tokenizer["mismatches"]:
                texts = [m["text"][:30] for m in self.tokenizer["mismatches"]]
                failures.append(
                    f"tokenizer: llama.cpp tokenizes {len(texts)} probe texts differently: {texts}"
                )
            self.template = check_template(llm, self.tok, read_gguf_template(path))
            if not self.template["all_equal"]:
                bad = [c["conversation"] for c in self.template["conversations"] if not c["equal"]]
                hint = (
                    ""
                    if self.hf_template_is_project
                    else " (the model folder's chat template is not the current claude_rl.chat_format one: "
                    "a model trained with an older template; retrain it, or export with "
                    "check_parity=False to ship the current template anyway)"
                )
                failures.append(f"chat template: the GGUF's template tokenizes differently for {bad}{hint}")
        finally:
            llm.close()
        numbers["gate"] = "strict"
        numbers["passed"] = not failures
        self.files[label] = numbers
        self.failures += failures
        return failures

    def check_quant(self, path: Path, label: str) -> list[str]:
        llm = open_gguf(path, self.n_ctx)
        try:
            numbers = measure_file(llm, self.model, self.inputs, self.tolerance, self.greedy_tokens)
        finally:
            llm.close()
        failures = quant_failures(label, numbers)
        bounds = {"min_top1_rate": QUANT_MIN_TOP1, "max_mean_kl": QUANT_MAX_KL}
        numbers.update(gate="loose", bounds=bounds, passed=not failures)
        self.files[label] = numbers
        self.failures += failures
        return failures

    def report(self) -> dict[str, Any]:
        return {
            "passed": not self.failures,
            "failures": list(self.failures),
            "tolerance_max_abs_dlogit": self.tolerance,
            "greedy_tokens": self.greedy_tokens,
            "reference": "transformers, float32, same token ids",
            "prompts": [
                {"name": n, "tokens": len(i)} for n, i in zip(self.inputs.names, self.inputs.ids, strict=True)
            ],
            "hf_template_is_project": self.hf_template_is_project,
            "files": self.files,
            "tokenizer": self.tokenizer,
            "template": self.template,
        }
