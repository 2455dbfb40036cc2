"""What a trained run's update did, teacher-forced, beside its null controls (``claude-rl probe``).

Why: the held-out evaluation decodes greedily, and on a small model the greedy paths sit on a
knife's edge, so a random move of an RL run's size scores like the run (``claude_rl.train.control``).
Three questions stay open there, and this module answers them without decoding, in minutes on CPU:

1. **Did the update follow its reward?** On the run's own scored rollouts (``rollouts.jsonl``),
   each rollout's change in mean log-probability per assistant token, the moved model against the
   model the run started from (``Δ``), against its advantage (``A``, the reward less its group's
   mean). The statistic is, per group, the mean of ``Δ · A`` (a within-group covariance: positive
   when the rollouts that beat their group became likelier than those that did not), averaged over
   groups with a bootstrap interval over groups; with the Pearson correlation of ``Δ`` and ``A``.
   A random null control sits near 0 (its direction is random); the negated one below it.
2. **Does that carry over to prompts the run never saw?** The same statistic on the scored
   rollouts of other RL runs from the same start model (``other_runs``), keeping only the prompts
   this run never generated for (``unseen_alignment``). Those rollouts were sampled and scored by
   the same reward, but the update never saw them.
3. **Did it move toward the recorded workflows it was not trained on?** The change in negative
   log-likelihood per assistant token of the held-out split's rows (the recorded Claude
   workflows), paired by row against the start model, with a bootstrap interval over rows. Every
   move away from a model trained to imitate those workflows raises it a little; what the run
   must show is a smaller rise than its controls'.

``against_controls``: the run less the mean of the random controls, paired by group (1, 2) and by
row (3). A negated control is reported but not averaged in: it is the run's update reversed, not a
null.

All are measured on the weights in each folder's ``merged/`` (one model in memory, its weights
swapped), on the rows and rollouts as the chat template renders them, cut at ``max_tokens``.
Rollout text is tokenized again, not the sampled ids, so a token split the sampler chose that the
tokenizer would not make is scored as the tokenizer makes it.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from claude_rl import paths
from claude_rl.scoring import mean_ci
from claude_rl.train.control import KINDS, ControlError, encode, find_run, read_weights
from claude_rl.train.grpo import ROLLOUTS, chat_tokenizer, load_prompts

PROBE_FILE = "probe.json"


@dataclass(frozen=True)
class Scored:
    """A tokenized conversation: ids and the assistant-token mask (what the loss trains on)."""

    ids: list[int]
    mask: list[int]


@dataclass(frozen=True)
class Rollout:
    sequence: Scored
    advantage: float
    group: tuple[str, int, int]  # (run, generated batch, group in it)
    reference: str = ""  # the episode id of the prompt


def _encode(tokenizer: Any, messages: list[dict[str, Any]], tools: Any, max_tokens: int) -> Scored:
    return Scored(*encode(tokenizer, messages, tools, max_tokens))


def reference_rows(tokenizer: Any, dataset: Path, split: str, max_tokens: int) -> list[Scored]:
    """The split's rows (the recorded workflows), each with assistant tokens to score."""
    path = dataset / f"{split}.jsonl"
    if not path.is_file():
        raise ControlError(f"{dataset}: no {split}.jsonl to score held-out workflows on")
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    out = [_encode(tokenizer, r["messages"], r.get("tools"), max_tokens) for r in rows]
    out = [s for s in out if any(s.mask[1:])]
    if not out:
        raise ControlError(f"{path}: no row has assistant tokens")
    return out


def run_rollouts(tokenizer: Any, run: Path, dataset: Path, max_tokens: int) -> list[Rollout]:
    """The run's scored rollouts, each rendered after the prompt it was generated for."""
    path = run / ROLLOUTS
    if not path.is_file():
        raise ControlError(f"{run}: no {ROLLOUTS} (only an RL run keeps its scored rollouts)")
    prompts = {p.episode_id: p for p in load_prompts(dataset, "train", use_source=False)}
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        prompt = prompts.get(str(row.get("reference")))
        completion = row.get("completion") or []
        if prompt is None or not completion or row.get("advantage") is None:
            continue
        seq = _encode(tokenizer, prompt.prompt + list(completion), prompt.tools, max_tokens)
        if any(seq.mask[1:]):
            group = (run.name, int(row.get("batch", 0)), int(row["group"]))
            out.append(Rollout(seq, float(row["advantage"]), group, str(row["reference"])))
    if not out:
        raise ControlError(f"{path}: no rollout of the run's training prompts to score")
    return out


class LogProbs:
    """Summed log-probability of the assistant tokens of each sequence under one model whose
    weights are swapped in from other folders (the start model's kept to restore)."""

    def __init__(self, start: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(
            str(start), dtype=torch.float32, local_files_only=True
        )
        self.model.eval()
        self.params = dict(self.model.named_parameters())
        self.start = {n: p.detach().clone() for n, p in self.params.items()}

    def load(self, folder: Path | None) -> int:
        """The start model's weights with those of ``folder`` over them (None: the start model).
        Returns how many tensors differ from the start model's."""
        import torch

        weights = read_weights(folder) if folder is not None else {}
        changed = 0
        with torch.no_grad():
            for name, p in self.params.items():
                w = weights.get(name)
                if w is not None and w.shape != p.shape:
                    raise ControlError(f"{folder}: {name} has shape {tuple(w.shape)}, not {tuple(p.shape)}")
                src = self.start[name] if w is None else w.to(p.dtype)
                changed += int(not torch.equal(src, self.start[name]))
                p.copy_(src)
        return changed

    def score(self, sequences: Iterable[Scored]) -> list[tuple[float, int]]:
        """(sum of log p over the assistant tokens, their count) per sequence."""
        import torch

        out = []
        with torch.no_grad():
            for s in sequences:
                ids = torch.tensor([s.ids])
                logp = torch.log_softmax(self.model(ids).logits[0, :-1].float(), dim=-1)
                picked = logp.gather(1, ids[0, 1:, None])[:, 0]
                keep = torch.tensor(s.mask[1:], dtype=torch.bool)
                out.append((float(picked[keep].sum()), int(keep.sum())))
        return out


def per_token_change(moved: Sequence[tuple[float, int]], start: Sequence[tuple[float, int]]) -> list[float]:
    """Per sequence: mean log p per assistant token, moved − start."""
    return [(a - b) / n for (a, n), (b, _) in zip(moved, start, strict=True)]


def reward_alignment(changes: Sequence[float], rollouts: Sequence[Rollout]) -> dict[str, Any]:
    """Per group, the mean of Δ·A; their mean over groups with a bootstrap interval; the Pearson
    correlation of Δ and A over all rollouts; Δ's mean over rollouts above and below their group."""
    groups: dict[tuple[str, int, int], list[float]] = {}
    for d, r in zip(changes, rollouts, strict=True):
        groups.setdefault(r.group, []).append(d * r.advantage)
    per_group = [sum(v) / len(v) for v in groups.values()]
    adv = [r.advantage for r in rollouts]
    above = [d for d, a in zip(changes, adv, strict=True) if a > 0]
    below = [d for d, a in zip(changes, adv, strict=True) if a < 0]
    return {
        "covariance": mean_ci(per_group),
        "per_group": per_group,
        "pearson": _pearson(list(changes), adv),
        "above_group": sum(above) / len(above) if above else None,
        "below_group": sum(below) / len(below) if below else None,
        "rollouts": len(rollouts),
        "groups": len(per_group),
    }


def _pearson(x: list[float], y: list[float]) -> float | None:
    try:
        return statistics.correlation(x, y)
    except statistics.StatisticsError:  # fewer than two points, or one side constant
        return None


def _control_kind(manifest: dict[str, Any]) -> str | None:
    control = manifest.get("control")
    return str(control.get("kind")) if isinstance(control, dict) and control.get("kind") else None


def probe(
    run: str | Path,
    controls: Iterable[str | Path] = (),
    *,
    other_runs: Iterable[str | Path] = (),
    split: str = "test",
    max_tokens: int = 2048,
    home: Path | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Measure the run and each control against the model the run started from (module doc).
    ``other_runs``: RL runs from the same start model whose rollouts on prompts this run never
    trained on are scored too (``unseen_alignment``: does the update generalize to prompts it did
    not see?). ``progress(model_name)`` is called before each model is scored."""
    home = Path(home or paths.home())
    found = find_run(run, home)
    given = [find_run(c, home) for c in controls]
    others = [find_run(o, home) for o in other_runs]
    for f in [*given, *others]:
        if f.sft_merged.resolve() != found.sft_merged.resolve():
            raise ControlError(
                f"{f.run.name} started from {f.sft_merged}, the run from {found.sft_merged}: not comparable"
            )
    for f in given:  # an RL run or a hand-made folder passed as a control would pass for a null
        if _control_kind(f.manifest) not in KINDS:
            raise ControlError(
                f"{f.run.name} is not a null control (its manifest has no control of a known kind): "
                f"make some with `claude-rl control {found.run.name}`"
            )
    named = [(f.run.name, f.merged) for f in given]
    # a negated control is the run's update reversed: reported, but not a null to average
    nulls = [f.run.name for f in given if _control_kind(f.manifest) == "random"]
    tok = chat_tokenizer(found.sft_merged)
    rows = reference_rows(tok, found.dataset, split, max_tokens)
    own = run_rollouts(tok, found.run, found.dataset, max_tokens)
    seen = {r.reference for r in own}
    unseen = [
        r for o in others for r in run_rollouts(tok, o.run, o.dataset, max_tokens) if r.reference not in seen
    ]
    lp = LogProbs(found.sft_merged)
    if progress:
        progress("start model")
    start_rows = lp.score(rows)
    start_own = lp.score(r.sequence for r in own)
    start_unseen = lp.score(r.sequence for r in unseen)
    models: dict[str, Any] = {}
    row_changes: dict[str, list[float]] = {}
    for name, folder in [(found.run.name, found.merged), *named]:
        if progress:
            progress(name)
        changed = lp.load(folder)
        if changed == 0:
            raise ControlError(f"{name}: its weights equal the start model's: there is nothing to probe")
        nll = [-d for d in per_token_change(lp.score(rows), start_rows)]  # NLL change = −Δ log p
        row_changes[name] = nll
        models[name] = {
            "role": "run" if folder == found.merged else ("control" if name in nulls else "negated control"),
            "changed_tensors": changed,
            "reward_alignment": reward_alignment(
                per_token_change(lp.score(r.sequence for r in own), start_own), own
            ),
            "heldout_nll_change": mean_ci(nll),
        }
        if unseen:
            models[name]["unseen_alignment"] = reward_alignment(
                per_token_change(lp.score(r.sequence for r in unseen), start_unseen), unseen
            )
    lp.load(None)
    result: dict[str, Any] = {
        "run": found.run.name,
        "run_folder": str(found.run),
        "start_model": str(found.sft_merged),
        "dataset": str(found.dataset),
        "split": split,
        "rows": len(rows),
        "assistant_tokens": sum(n for _, n in start_rows),
        "start_nll_per_token": -sum(a for a, _ in start_rows) / max(1, sum(n for _, n in start_rows)),
        "rollouts": len(own),
        "other_runs": [o.run.name for o in others],
        "unseen_rollouts": len(unseen),
        "unseen_prompts": len({r.reference for r in unseen}),
        "controls": nulls,
        "negated_controls": [n for n, _ in named if n not in nulls],
        "models": models,
    }
    if nulls:
        ctrl = [row_changes[n] for n in nulls]
        mine = row_changes[found.run.name]
        result["against_controls"] = {
            "heldout_nll_change": _less_mean(mine, ctrl),
            "reward_alignment": _alignment_against(models, "reward_alignment", found.run.name, nulls),
        }
        if unseen:
            result["against_controls"]["unseen_alignment"] = _alignment_against(
                models, "unseen_alignment", found.run.name, nulls
            )
    return result


def _less_mean(mine: Sequence[float], theirs: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Each of ``mine`` less the mean of the controls' values at the same place (paired)."""
    return mean_ci([m - sum(c) / len(c) for m, *c in zip(mine, *theirs, strict=True)])


def _alignment_against(models: dict[str, Any], key: str, run: str, controls: list[str]) -> dict[str, Any]:
    """The run's per-group Δ·A less the controls' mean, paired by group."""
    return _less_mean(models[run][key]["per_group"], [models[c][key]["per_group"] for c in controls])


def write(result: dict[str, Any], out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return out


__all__ = [
    "PROBE_FILE",
    "LogProbs",
    "Rollout",
    "Scored",
    "per_token_change",
    "probe",
    "reference_rows",
    "reward_alignment",
    "run_rollouts",
    "write",
]
