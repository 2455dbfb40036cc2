"""Null controls for an RL run (``claude-rl control RUN``): the SFT model moved as far as the run
moved it, in a direction the reward did not choose.

Why: evaluation decodes greedily, and a small model's greedy paths sit on a knife's edge: on the
CPU default's SFT model 18 of 29 held-out prompts end in a loop of identical calls, and almost any
move of the weights sends some of them another way. Measured 2026-12-07 (README, RL phase): a
random update of the size of a long RL run's scored +0.05 [+0.01, +0.10] held out on the
behavioral reward, paired against the SFT model, beyond the 95 % interval, as the best RL runs did
(one control of six; they ranged from −0.03 to +0.05, the twelve long runs from −0.02 to +0.07);
the paired interval is over prompts and says nothing about how much a same-size random move
changes the score. So an RL gain counts only where it beats controls like these (``claude-rl eval``
pairs a model against the mean of the controls given with ``--controls``).

Kinds:

- ``random``: in every weight matrix the run changed, a random rank-``rank`` update with the run's
  per-matrix Frobenius norm, all scaled by one factor (``match_scale``) so that the mean per-token
  KL(control ‖ SFT) over the assistant tokens of the run's training split matches the run's own.
  At equal norms a random direction moves the outputs far less (measured: the factor is 13-16).
- ``negated``: the SFT model minus the run's update: the same matrices, size and structure, the
  opposite direction; its KL is the run's to second order (measured within 3 %).

Output: ``<home>/models/llama-claude-ctrl-vN/`` (never overwritten) with ``merged/`` (the moved
weights, moved in float32 and written at the run's precision, with the SFT folder's tokenizer and
chat template) and ``manifest.json`` (phase ``control``: kind, seed, rank, scale, both KLs, the
precision, the run and the SFT run it was made from, and the run's dataset, so the runtime cuts
tool results as the run's model learned them). Export it with ``export-gguf`` and evaluate it like
any run; it is never the "latest" model that ``export-gguf``, ``eval`` or ``run`` pick by default.
Written into ``.tmp-<name>/`` and renamed when done.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from claude_rl import paths
from claude_rl.chat_format import assistant_mask
from claude_rl.train.config import next_free_name
from claude_rl.train.grpo import chat_tokenizer, is_model_folder
from claude_rl.train.sft import TrainError

KINDS = ("random", "negated")
NAME_PREFIX = "llama-claude-ctrl"
KL_TOLERANCE = 0.02  # relative: the scale search stops within 2 % of the run's KL


class ControlError(TrainError):
    """A control that cannot be made; the message says what to change."""


@dataclass(frozen=True)
class Control:
    folder: Path
    kind: str
    seed: int | None
    scale: float
    kl: float
    run_kl: float


@dataclass(frozen=True)
class RunFolders:
    run: Path
    merged: Path
    sft_merged: Path
    dataset: Path
    manifest: dict[str, Any]


def find_run(run: str | Path, home: Path) -> RunFolders:
    """The RL (or any trained) run ``run`` names: a folder, or a name under ``<home>/models``."""
    folder = next((c for c in paths.run_candidates(run, home) if is_model_folder(c / "merged")), None)
    if folder is None:
        models = paths.models_dir(home)
        raise ControlError(f"{run}: no run folder with a merged/ model here or under {models}")
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ControlError(f"{folder}: no readable manifest.json ({e})") from e
    sft = manifest.get("base_model_folder") or (manifest.get("sft_run") or {}).get("folder")
    sft_merged = Path(sft or "")
    if sft and not is_model_folder(sft_merged) and is_model_folder(sft_merged / "merged"):
        sft_merged = sft_merged / "merged"
    if not sft or not is_model_folder(sft_merged):
        raise ControlError(
            f"{folder}: its manifest names no model it started from that is still there ({sft})"
        )
    dataset = Path((manifest.get("dataset") or {}).get("folder") or "")
    if not (dataset / "train.jsonl").is_file():
        raise ControlError(f"{folder}: the dataset it trained on ({dataset}) has no train.jsonl any more")
    return RunFolders(folder, folder / "merged", sft_merged, dataset, manifest)


def read_weights(folder: Path) -> dict[str, Any]:
    """Every tensor of the safetensors files in ``folder`` (one file or an index of shards)."""
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    else:
        shards = ["model.safetensors"]
    out: dict[str, Any] = {}
    for shard in shards:
        out.update(load_file(str(folder / shard)))
    return out


def weight_update(run_weights: dict[str, Any], sft_weights: dict[str, Any]) -> dict[str, Any]:
    """run − SFT (float32) for every 2-D weight the run changed."""
    out = {}
    for name, w in run_weights.items():
        base = sft_weights.get(name)
        if base is None or w.dim() != 2 or w.shape != base.shape:
            continue
        delta = w.float() - base.float()
        if bool(delta.any()):
            out[name] = delta
    return out


def random_update(update: dict[str, Any], seed: int, rank: int) -> dict[str, Any]:
    """For each matrix of ``update``: a random rank-``rank`` matrix with the same Frobenius norm."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(update):
        d = update[name]
        r = min(rank, *d.shape)
        m = torch.randn(d.shape[0], r, generator=gen) @ torch.randn(r, d.shape[1], generator=gen)
        out[name] = m * (d.norm() / m.norm())
    return out


def encode(
    tokenizer: Any, messages: list[dict[str, Any]], tools: Any, max_tokens: int
) -> tuple[list[int], list[int]]:
    """Token ids of a conversation and its assistant-token mask (what the loss trains on), cut at
    ``max_tokens``; ``tools`` as a dataset row holds them (a list, or its JSON)."""
    tools = json.loads(tools) if isinstance(tools, str) else tools
    ids = tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=True, return_dict=True)
    mask = assistant_mask(tokenizer, messages, tools or None)
    return list(ids["input_ids"])[:max_tokens], list(mask)[:max_tokens]


def calibration_sequences(
    tokenizer: Any, dataset: Path, count: int, max_tokens: int
) -> list[tuple[list[int], list[int]]]:
    """``count`` rows spread evenly over the train split: token ids and assistant-token mask, cut
    at ``max_tokens``. The KL is measured on these tokens."""
    rows = [
        json.loads(x) for x in (dataset / "train.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()
    ]
    if not rows:
        raise ControlError(f"{dataset / 'train.jsonl'} is empty")
    step = max(1, len(rows) // max(1, count))
    out = [encode(tokenizer, row["messages"], row.get("tools"), max_tokens) for row in rows[::step][:count]]
    if not any(any(m[1:]) for _, m in out):
        raise ControlError(f"{dataset}: the sampled rows hold no assistant tokens to measure the KL on")
    return out


class KLProbe:
    """Mean per-token KL(model moved by ``scale`` × update ‖ the model as loaded) over the assistant
    tokens of ``sequences`` (exact, over the whole vocabulary; teacher-forced)."""

    def __init__(self, model: Any, sequences: list[tuple[list[int], list[int]]]) -> None:
        import torch

        self.model = model
        self.params = dict(model.named_parameters())
        self.batches = [
            (torch.tensor([ids]), torch.tensor(mask[1:], dtype=torch.bool)) for ids, mask in sequences
        ]
        self.base: dict[str, Any] = {}
        self.reference = self._logprobs()

    def _logprobs(self) -> list[Any]:
        import torch

        with torch.no_grad():
            return [
                torch.log_softmax(self.model(ids).logits[0, :-1].float(), dim=-1)[mask]
                for ids, mask in self.batches
            ]

    def apply(self, update: dict[str, Any], scale: float) -> None:
        """Set the weights to base + scale × update (the base is kept for ``restore``)."""
        import torch

        missing = [n for n in update if n not in self.params]
        if missing:
            raise ControlError(f"the model has no weights named {missing[:3]}")
        with torch.no_grad():
            for name, d in update.items():
                p = self.params[name]
                base = self.base.setdefault(name, p.detach().clone())
                p.copy_(base + scale * d.to(p.dtype))

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for name, base in self.base.items():
                self.params[name].copy_(base)

    def kl(self, update: dict[str, Any], scale: float = 1.0) -> float:
        self.apply(update, scale)
        try:
            moved = self._logprobs()
        finally:
            self.restore()
        total = sum(float((p.exp() * (p - q)).sum()) for p, q in zip(moved, self.reference, strict=True))
        return total / max(1, sum(len(p) for p in moved))


def match_scale(
    probe: KLProbe, update: dict[str, Any], target: float, max_rounds: int = 30
) -> tuple[float, float]:
    """The factor ``s`` with KL(s × update) within ``KL_TOLERANCE`` of ``target``, and the KL it
    gives. The KL is taken to follow a power of s locally (about s² for the small moves a control
    makes: the first guess), its exponent read off the last two points (a secant in log-log), so
    few forward passes do (measured: 3 for each of three seeds on a long run of the CPU model); a
    guess outside the bracket found so far is bisected instead."""
    if target <= 0:
        raise ControlError("the run did not move the model (KL 0): there is nothing to match")
    lo, hi = 0.0, math.inf
    s, power = 1.0, 2.0
    best: tuple[float, float] | None = None
    last: tuple[float, float] | None = None
    for _ in range(max_rounds):
        kl = probe.kl(update, s)
        if best is None or abs(kl - target) < abs(best[1] - target):
            best = (s, kl)
        if abs(kl - target) <= KL_TOLERANCE * target:
            break
        if kl < target:
            lo = s
        else:
            hi = s
        if last is not None and kl > 0 and last[1] > 0 and last[0] != s:
            slope = math.log(kl / last[1]) / math.log(s / last[0])
            power = slope if slope > 0.1 else power
        last = (s, kl)
        guess = s * (target / kl) ** (1 / power) if kl > 0 else s * 4
        if not lo < guess < hi:
            guess = (lo + hi) / 2 if hi < math.inf else s * 4
        if guess > 1e6:
            raise ControlError("no scale of the random update reaches the run's KL")
        s = guess
    assert best is not None
    return best


def _write(
    probe: KLProbe,
    update: dict[str, Any],
    scale: float,
    tokenizer_folder: Path,
    models: Path,
    manifest: dict[str, Any],
    dtype: Any,
) -> Path:
    import torch

    name = next_free_name(NAME_PREFIX, models)
    tmp = models / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        # tokenizer, chat template, generation config: as the SFT model's; weights written below
        shutil.copytree(
            tokenizer_folder, tmp / "merged", ignore=shutil.ignore_patterns("model*.safetensors*")
        )
        probe.apply(update, scale)
        try:
            # Moved in float32, written at the run's precision: a control of a bf16 8B run takes the
            # run's disk space, not twice it, and is rounded as the run's own weights were.
            state = None
            if dtype != torch.float32:
                state = {k: v.to(dtype) for k, v in probe.model.state_dict().items()}
            probe.model.save_pretrained(str(tmp / "merged"), safe_serialization=True, state_dict=state)
        finally:
            probe.restore()
        config = tmp / "merged" / "config.json"
        data = json.loads(config.read_text(encoding="utf-8"))
        data["dtype"] = str(dtype).removeprefix("torch.")
        config.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        manifest = {**manifest, "name": name}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        tmp.rename(models / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return models / name


def make_controls(
    run: str | Path,
    *,
    kinds: Iterable[str] = ("random",),
    seeds: Iterable[int] = (1,),
    rank: int = 16,
    sequences: int = 14,
    max_tokens: int = 1024,
    home: Path | None = None,
) -> list[Control]:
    """One control per kind (``random``: one per seed) for the run ``run``; see the module doc."""
    import torch
    from transformers import AutoModelForCausalLM

    kinds, seeds = list(kinds), [int(s) for s in seeds]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ControlError(f"kinds {unknown or kinds}: expected some of {', '.join(KINDS)}")
    if "random" in kinds and not seeds:
        raise ControlError("random controls need at least one seed")
    if rank < 1:
        raise ControlError("rank must be at least 1")
    home = Path(home or paths.home())
    found = find_run(run, home)
    run_weights = read_weights(found.merged)
    dtype = next((w.dtype for w in run_weights.values() if w.is_floating_point()), torch.float32)
    update = weight_update(run_weights, read_weights(found.sft_merged))
    del run_weights
    if not update:
        raise ControlError(f"{found.run}: its weights equal the SFT model's: there is nothing to match")
    tok = chat_tokenizer(found.sft_merged)
    model = AutoModelForCausalLM.from_pretrained(
        str(found.sft_merged), dtype=torch.float32, local_files_only=True
    )
    model.eval()
    probe = KLProbe(model, calibration_sequences(tok, found.dataset, sequences, max_tokens))
    run_kl = probe.kl(update)
    common = {
        "phase": "control",
        "algorithm": "a null control: the model the run started from, moved as far as the run moved it "
        "in a direction no reward chose (claude_rl.train.control)",
        "base_model": found.manifest.get("base_model"),
        "base_model_folder": str(found.sft_merged),
        "sft_run": found.manifest.get("sft_run"),
        "dataset": found.manifest.get("dataset"),
        "device": "cpu",
    }
    made = []
    for kind in kinds:
        for seed in seeds if kind == "random" else [None]:
            if kind == "random":
                moved = random_update(update, seed, rank)
                scale, kl = match_scale(probe, moved, run_kl)
            else:
                moved, scale = update, -1.0
                kl = probe.kl(moved, scale)
            control = {
                "kind": kind,
                "seed": seed,
                "rank": rank if kind == "random" else None,
                "scale": scale,
                "kl": kl,
                "run_kl": run_kl,
                "kl_tokens": sum(int(m.sum()) for _, m in probe.batches),
                "matrices": len(moved),
                "dtype": str(dtype).removeprefix("torch."),
                "run": {"name": found.manifest.get("name") or found.run.name, "folder": str(found.run)},
            }
            folder = _write(
                probe,
                moved,
                scale,
                found.sft_merged,
                paths.models_dir(home),
                {**common, "control": control},
                dtype,
            )
            made.append(Control(folder, kind, seed, scale, kl, run_kl))
    return made


__all__ = [
    "KINDS",
    "Control",
    "ControlError",
    "KLProbe",
    "calibration_sequences",
    "encode",
    "find_run",
    "make_controls",
    "match_scale",
    "random_update",
    "read_weights",
    "weight_update",
]
