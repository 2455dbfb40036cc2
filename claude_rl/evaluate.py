"""Evaluation: run held-out prompts through the local agent and score them against the recorded episodes.

``evaluate(models, split="test")`` reads the rows of a built dataset's split (``<dataset>/test.jsonl``);
each row's ``meta.episode_id`` names its reference episode, taken from the dataset's source (the
bundled samples, or the store) when that episode is still there with the same prompt, and otherwise
rebuilt from the row's messages (``episode_from_messages``). Every prompt runs once per model on a
fresh temporary copy of the workspace (default: the checkout's ``data/workspace``), with edits
allowed inside that copy, through ``claude_rl.runtime.run_agent`` (or an injected runner with the
same signature); the run's episode is scored with ``claude_rl.scoring.score_all``. Decoding is
greedy by default; with ``samples``/``temperature`` each prompt runs several times per model,
sampled, and a prompt's score is the mean of its runs (``prompt_means``).

Aggregates, per model: the mean and a 95 % bootstrap interval (``BOOTSTRAP_SAMPLES`` resamples,
fixed seed, percentile method) of every score over the prompts where it applies, overall, per
category, and per split reason: ``hash`` rows are held-out instances of task shapes the model
trained on, ``heldout_template`` rows are task shapes it never saw (transfer). Also stop reasons,
the valid-call rate (calls whose input the tools accepted: not a ``<tool_use_error>``) and the
mean number of turns. Each run is also scored with the RL phase's behavioral reward
(``behavioral_reward``: ``claude_rl.train.reward.score_rollout``), and with several models the
summary holds ``paired``: every other model's per-prompt differences against a baseline (the first
model by default), with bootstrap intervals; given null controls (``claude-rl control``: the
baseline moved as far as a trained model moved it, in a random direction), ``against_controls``
pairs each trained model against their per-prompt mean. ``reuse`` takes the runs of an earlier
report's models and scores them again instead of running those models (``reuse_report``).

Output, in ``out_dir`` (default ``<home>/reports/<name>/``): ``report.json`` (everything, per-prompt
rows included), ``report.md`` (headline table with the models side by side, trained shapes vs
transfer, per category, per prompt with the reference and candidate tool sequences),
``headline.png``, ``splits.png``, ``categories.png`` (skipped with a note when matplotlib is
missing) and ``candidates/<model>.jsonl``: the candidate episodes, in the episode schema. With the
real runtime each run is also written with ``runtime.write_run`` (``<home>/runs/``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from claude_rl import paths, scoring
from claude_rl.schema import Episode, Provenance, ToolCall
from claude_rl.scoring import BOOTSTRAP_SAMPLES, CONFIDENCE, SEED, episode_from_messages, mean_ci

REPORT_VERSION = 1
REWARD = "behavioral_reward"  # the RL phase's reward of the run (claude_rl.train.reward)
METRICS = (*scoring.SCORERS, REWARD)
HEADLINE = (*scoring.HEADLINE, REWARD)
BEHAVIORAL = scoring.BEHAVIORAL
SPLIT_REASONS = ("hash", "heldout_template")
SHORT_SPLIT = {"hash": "trained shapes", "heldout_template": "transfer"}
SPLIT_LABELS = {
    "hash": "trained shapes (held-out instances)",
    "heldout_template": "transfer (held-out shapes)",
}
LABELS = {
    "tool_sequence_similarity": "tool-sequence similarity",
    "exact_match": "exact match",
    "first_tool_accuracy": "first-tool accuracy",
    "tool_set_f1": "tool-set F1",
    "argument_similarity": "argument similarity",
    "answer_similarity": "answer similarity",
    "reasoning_depth": "reasoning depth",
    "constraint_match": "constraint match",
    "self_correction": "self-correction",
    "schema_read_before_query": "schema before query",
    REWARD: "behavioral reward",
}
SHORT = {
    "tool_sequence_similarity": "seq",
    "exact_match": "exact",
    "first_tool_accuracy": "first",
    "tool_set_f1": "set F1",
    "argument_similarity": "args",
    "answer_similarity": "answer",
    "reasoning_depth": "depth",
    "constraint_match": "constr",
    "self_correction": "self-corr",
    "schema_read_before_query": "schema",
    REWARD: "reward",
}
TOOL_USE_ERROR = "<tool_use_error>"
GREEDY = {"samples": 1, "temperature": 0.0}  # a report's decoding: runs per prompt and model, temperature

Runner = Callable[..., Any]  # run_agent(prompt, model, workspace, config, *, session_id=...) -> AgentRun
RunWriter = Callable[..., Path]  # write_run(run, home=None) -> Path


class EvalError(ValueError):
    pass


# =============================================================================================
# References


@dataclass
class Reference:
    """One prompt to evaluate: its reference episode and the dataset row's labels."""

    episode: Episode
    meta: dict[str, Any]
    origin: str  # "episode" (the source's episode) or "messages" (rebuilt from the row)

    @property
    def category(self) -> str:
        return str(self.meta.get("category") or "other")

    @property
    def split_reason(self) -> str:
        return str(self.meta.get("split_reason") or "hash")


def read_split(dataset_folder: Path, split: str = "test") -> list[dict[str, Any]]:
    path = Path(dataset_folder) / f"{split}.jsonl"
    if not path.is_file():
        raise EvalError(f"{path} not found: build the dataset first (claude-rl build-dataset)")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def _source_episodes(dataset_folder: Path, home: Path | None) -> list[Episode]:
    """The episodes of the dataset's source, when it can be read again (samples or the store)."""
    from claude_rl.dataset import DatasetError, load_source

    manifest_path = Path(dataset_folder) / "manifest.json"
    kind = "samples"
    if manifest_path.is_file():
        try:
            kind = json.loads(manifest_path.read_text(encoding="utf-8"))["source"]["kind"]
        except (ValueError, KeyError, TypeError):
            kind = "samples"
    if kind not in ("samples", "store"):
        return []
    try:
        episodes, _ = load_source(kind, home)
    except (DatasetError, OSError):
        return []
    return episodes


def _spread(refs: list[Reference], limit: int | None) -> list[Reference]:
    """At most ``limit`` references, taken in turn from each (split reason, category) group so that
    a short run still covers trained shapes and transfer; file order within a group."""
    if limit is None or limit >= len(refs):
        return refs
    groups: dict[tuple[str, str], list[Reference]] = {}
    for ref in refs:
        groups.setdefault((ref.split_reason, ref.category), []).append(ref)
    # split reasons alternate first, then categories: (hash, a), (heldout, a), (hash, b), ...
    rank: dict[str, int] = {}
    order = []
    for key in sorted(groups, key=lambda k: (_split_order(k[0]), k[1])):
        rank[key[0]] = rank.get(key[0], -1) + 1
        order.append((rank[key[0]], _split_order(key[0]), key))
    order = [key for _, _, key in sorted(order)]
    picked: list[Reference] = []
    depth = 0
    while len(picked) < limit:
        for key in order:
            if depth < len(groups[key]) and len(picked) < limit:
                picked.append(groups[key][depth])
        depth += 1
    chosen = {id(r) for r in picked}
    return [r for r in refs if id(r) in chosen]


def practised_prompts(run: Path | str, home: Path | None = None) -> set[str]:
    """The reference episode ids an RL run's rollouts were drawn from (the ``reference`` of every row
    of its ``rollouts.jsonl``): the training prompts that run practised. ``run``: a run folder, or a
    name looked up as every command does (``paths.run_candidates``)."""
    from claude_rl.train.grpo import ROLLOUTS  # the file name the RL phase writes (no torch import)

    found = next((c / ROLLOUTS for c in paths.run_candidates(run, home) if (c / ROLLOUTS).is_file()), None)
    if found is None:
        raise EvalError(f"{run}: no {ROLLOUTS} here or under {paths.models_dir(home)} (not an RL run)")
    ids: set[str] = set()
    for number, line in enumerate(found.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            ids.add(str(json.loads(line)["reference"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise EvalError(f"{found}:{number}: not a scored rollout ({exc})") from exc
    if not ids:
        raise EvalError(f"{found} has no rollouts")
    return ids


def select_references(
    refs: list[Reference], only: Iterable[str] | None = None, leave_out: Iterable[str] = ()
) -> list[Reference]:
    """The references whose episode id is in ``only`` (all when None) and not in ``leave_out``."""
    keep = None if only is None else set(only)
    drop = set(leave_out)
    return [
        r for r in refs if (keep is None or r.episode.episode_id in keep) and r.episode.episode_id not in drop
    ]


def load_references(
    dataset_folder: Path,
    split: str = "test",
    limit: int | None = None,
    episodes: Iterable[Episode] | None = None,
    home: Path | None = None,
) -> list[Reference]:
    """The split's prompts with their reference episodes, one per episode (parts of a split row are
    joined). ``episodes``: where to look the references up (default: the dataset's source)."""
    rows = read_split(dataset_folder, split)
    grouped: dict[str, list[dict[str, Any]]] = {}
    for i, row in enumerate(rows):
        meta = row.get("meta") or {}
        eid = str(meta.get("episode_id") or f"{split}-row:{i}")
        grouped.setdefault(eid, []).append(row)
    pool = list(episodes) if episodes is not None else _source_episodes(dataset_folder, home)
    index = {ep.episode_id: ep for ep in pool}
    refs: list[Reference] = []
    for eid, parts in grouped.items():
        parts.sort(key=lambda r: int((r.get("meta") or {}).get("part") or 0))
        meta = dict(parts[0].get("meta") or {})
        messages = [m for r in parts for m in (r.get("messages") or [])]
        rebuilt = episode_from_messages(messages, meta, episode_id=eid)
        ep = index.get(eid)
        if ep is not None and ep.prompt.strip() == rebuilt.prompt.strip():
            refs.append(Reference(episode=ep, meta=meta, origin="episode"))
        else:
            refs.append(Reference(episode=rebuilt, meta=meta, origin="messages"))
    return _spread(refs, limit)


# =============================================================================================
# Running


@dataclass
class PromptResult:
    """One prompt run by one model, scored."""

    model: str
    episode_id: str
    prompt: str
    category: str
    template: str | None
    split_reason: str
    reference_tools: list[str]
    candidate_tools: list[str]
    scores: dict[str, float | None]
    stop_reason: str
    turns: int
    calls: int
    valid_calls: int
    seconds: float
    reference_answer: str | None = None
    candidate_answer: str | None = None
    reference_origin: str = "episode"
    run_path: str | None = None
    error: str | None = None
    answer_grounded: bool | None = None  # scoring.answer_grounded: None when no number in the answer
    sample: int = 0  # which of the prompt's sampled runs (0 when greedy: one run per prompt)


@dataclass
class EvalReport:
    """What ``evaluate`` returns and ``report.json`` holds (``to_dict``)."""

    name: str
    split: str
    dataset: str
    models: list[str]
    created_at: str
    results: list[PromptResult]
    summary: dict[str, Any]
    out_dir: Path | None = None
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    decoding: dict[str, Any] = field(default_factory=lambda: dict(GREEDY))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "name": self.name,
            "created_at": self.created_at,
            "split": self.split,
            "dataset": self.dataset,
            "decoding": self.decoding,
            "models": self.models,
            "metrics": list(METRICS),
            "headline": list(HEADLINE),
            "confidence": CONFIDENCE,
            "bootstrap_samples": BOOTSTRAP_SAMPLES,
            "seed": SEED,
            "summary": self.summary,
            "prompts": [dataclasses.asdict(r) for r in self.results],
            "files": self.files,
            "notes": self.notes,
        }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


def _load_model(value: Any, cache: dict[str, Any], name: str, temperature: float = 0.0) -> Any:
    """A path (str or Path) becomes a ``runtime.LlamaCppModel`` (sampling at ``temperature`` when
    it is above 0), loaded once; anything else is taken as a ``CompletionModel`` already."""
    if not isinstance(value, (str, Path)):
        return value
    if name not in cache:
        from claude_rl.runtime import LlamaCppModel

        cache[name] = LlamaCppModel(Path(value), temperature=temperature)
    return cache[name]


def sample_seed(episode_id: str, sample: int) -> int:
    """The sampling seed of a prompt's ``sample``-th run: the same for every model and report, so
    models are compared on the same random draws (and a subset of prompts draws what the whole did)."""
    return zlib.crc32(f"{episode_id}#{sample}".encode())


def _decoding_text(decoding: Mapping[str, Any]) -> str:
    samples, temperature = int(decoding["samples"]), float(decoding["temperature"])
    if samples == 1 and temperature == 0:
        return "greedy decoding"
    return f"{samples} sample{'s' if samples > 1 else ''} per prompt at temperature {temperature:g}"


def _decoding(samples: int, temperature: float) -> dict[str, Any]:
    if samples < 1:
        raise EvalError(f"samples must be at least 1 (got {samples})")
    if temperature < 0:
        raise EvalError(f"temperature must be 0 (greedy) or more (got {temperature})")
    if samples > 1 and temperature == 0:
        raise EvalError("several samples per prompt need a temperature above 0 (greedy runs repeat)")
    return {"samples": samples, "temperature": temperature}


def _agent_config(config: Any) -> Any:
    """The runtime's ``AgentConfig`` with edits allowed (they land in a throwaway copy)."""
    if config is None:
        try:
            from claude_rl.runtime import AgentConfig
        except ImportError:
            return None
        return AgentConfig(allow_edits=True)
    if dataclasses.is_dataclass(config) and any(f.name == "allow_edits" for f in dataclasses.fields(config)):
        return dataclasses.replace(config, allow_edits=True)
    return config


def _empty_episode(ref: Episode, session_id: str) -> Episode:
    return Episode(
        episode_id=f"{session_id}:0",
        session_id=session_id,
        index=0,
        prompt=ref.prompt,
        status="error",
        provenance=Provenance(session_id=session_id, sources=["runtime"]),
    )


def _turns(run: Any, episode: Episode) -> int:
    """Assistant turns: from the run's messages when it has them, else from the episode."""
    messages = getattr(run, "messages", None)
    if isinstance(messages, list) and messages:
        count = 0
        for m in messages:
            role = m.get("role") if isinstance(m, dict) else getattr(m, "role", None)
            count += role == "assistant"
        return count
    groups = 0
    previous: object = object()
    for step in episode.steps:
        group = step.call.parallel_group
        if group is None or group != previous:
            groups += 1
        previous = group
    return groups + (1 if episode.final_answer and episode.final_answer.strip() else 0)


def valid_call(call: ToolCall) -> bool:
    """The tools accepted the call's name and input (a command that ran and failed is still valid)."""
    if call.status == "unanswered":
        return False
    text = call.output if isinstance(call.output, str) else ""
    return not (call.is_error and text.lstrip().startswith(TOOL_USE_ERROR))


def behavioral_reward(
    reference: Episode, candidate: Episode, text_similarity: scoring.TextSimilarity | None = None
) -> float:
    """The RL phase's behavioral reward of a run (``claude_rl.train.reward.score_rollout``, the
    seed's weights and guards): calls the tools refused (malformed, unknown tool, bad input) count
    as invalid (the invalid-call penalty) and are left out of the scored episode, as in training."""
    from claude_rl.train.reward import Rollout, score_rollout

    kept = [s for s in candidate.steps if valid_call(s.call)]
    episode = candidate.model_copy(
        update={"steps": [s.model_copy(update={"index": i}) for i, s in enumerate(kept)]}
    )
    rollout = Rollout(episode, valid_calls=len(kept), invalid_calls=len(candidate.steps) - len(kept))
    return score_rollout(reference, rollout, text_similarity=text_similarity).reward


def score_candidate(
    reference: Episode, candidate: Episode, text_similarity: scoring.TextSimilarity | None = None
) -> dict[str, float | None]:
    """Every scorer of ``claude_rl.scoring`` plus the behavioral reward, for one run."""
    scores = scoring.score_all(reference, candidate)
    scores[REWARD] = behavioral_reward(reference, candidate, text_similarity)
    return scores


def _default_workspace() -> Path:
    return paths.CHECKOUT_DIR / "data" / "workspace"


def scored_result(
    ref: Reference, model: str, episode: Episode, scores: dict[str, float | None], **run: Any
) -> PromptResult:
    """One report row: the reference's labels, the candidate's tools and answer, its scores and the
    run's facts (``stop_reason``, ``turns``, ``calls``, ``valid_calls``, ``seconds``, ...)."""
    return PromptResult(
        model=model,
        episode_id=ref.episode.episode_id,
        prompt=ref.episode.prompt,
        category=ref.category,
        template=ref.meta.get("template"),
        split_reason=ref.split_reason,
        reference_tools=ref.episode.tool_sequence,
        candidate_tools=episode.tool_sequence,
        scores=scores,
        reference_answer=ref.episode.final_answer,
        candidate_answer=episode.final_answer,
        reference_origin=ref.origin,
        answer_grounded=scoring.answer_grounded(episode),
        **run,
    )


def run_prompt(
    ref: Reference,
    model_name: str,
    model: Any,
    runner: Runner,
    workspace: Path,
    config: Any,
    session_id: str,
    text_similarity: scoring.TextSimilarity | None = None,
) -> tuple[PromptResult, Any, Episode]:
    """Run one reference prompt on a fresh copy of ``workspace`` and score it: (result, run, episode)."""
    from claude_rl.tools.runtime import copy_workspace

    started = time.perf_counter()
    run: Any = None
    error: str | None = None
    with tempfile.TemporaryDirectory(prefix="claude-rl-eval-") as tmp:
        copy = copy_workspace(workspace, Path(tmp) / "workspace")
        try:
            run = runner(ref.episode.prompt, model, copy, config, session_id=session_id)
        except Exception as exc:  # one failed prompt does not end the evaluation
            error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    episode = run if isinstance(run, Episode) else getattr(run, "episode", None)
    if not isinstance(episode, Episode):
        episode = _empty_episode(ref.episode, session_id)
        if error is None:
            error = "the runner returned no episode"
    stop_reason = str(getattr(run, "stop_reason", None) or ("error" if error else "unknown"))
    calls = [s.call for s in episode.steps]
    result = scored_result(
        ref,
        model_name,
        episode,
        score_candidate(ref.episode, episode, text_similarity),
        stop_reason=stop_reason,
        turns=_turns(run, episode),
        calls=len(calls),
        valid_calls=sum(valid_call(c) for c in calls),
        seconds=round(seconds, 3),
        error=error,
    )
    return result, run, episode


# =============================================================================================
# Aggregation


def prompt_means(results: Iterable[PromptResult]) -> dict[str, dict[str, float | None]]:
    """Per prompt (episode id), each metric's mean over the given runs of it: one run per prompt
    when decoding is greedy, the samples' mean when it samples. Every interval and paired
    difference is taken over these, so samples of one prompt never count as separate prompts."""
    runs: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        runs.setdefault(r.episode_id, []).append(r.scores)
    out: dict[str, dict[str, float | None]] = {}
    for eid, scores in runs.items():
        out[eid] = {}
        for name in METRICS:
            values = [v for sc in scores if (v := sc.get(name)) is not None]
            out[eid][name] = sum(values) / len(values) if values else None
    return out


def _metric_block(results: list[PromptResult]) -> dict[str, Any]:
    means = prompt_means(results)
    metrics = {}
    for name in METRICS:
        metrics[name] = mean_ci([v for m in means.values() if (v := m[name]) is not None])
    return {"prompts": len(means), "metrics": metrics}


def summarize(
    results: list[PromptResult], models: list[str], baseline: str | None = None, controls: Iterable[str] = ()
) -> dict[str, Any]:
    """Per model: overall, per split reason and per category score blocks, plus run statistics;
    with several models, ``paired``: each other model's per-prompt differences against
    ``baseline`` (default: the first model); with ``controls`` (null controls, ``claude-rl
    control``), ``against_controls``: each model that is neither the baseline nor a control, paired
    against the controls' per-prompt mean (``paired_against_controls``)."""
    out: dict[str, Any] = {}
    for model in models:
        mine = [r for r in results if r.model == model]
        block = _metric_block(mine)
        calls = sum(r.calls for r in mine)
        valid = sum(r.valid_calls for r in mine)
        by_split = {}
        for reason in sorted({r.split_reason for r in mine}, key=_split_order):
            by_split[reason] = _metric_block([r for r in mine if r.split_reason == reason])
        by_category = {}
        for category in sorted({r.category for r in mine}):
            by_category[category] = _metric_block([r for r in mine if r.category == category])
        out[model] = {
            "prompts": block["prompts"],
            "runs": len(mine),
            "overall": block["metrics"],
            "by_split": by_split,
            "by_category": by_category,
            "stop_reasons": dict(sorted(Counter(r.stop_reason for r in mine).items())),
            "errors": sum(1 for r in mine if r.error),
            "calls": calls,
            "valid_calls": valid,
            "valid_call_rate": valid / calls if calls else None,
            "mean_turns": sum(r.turns for r in mine) / len(mine) if mine else None,
            "mean_calls": calls / len(mine) if mine else None,
            "mean_seconds": sum(r.seconds for r in mine) / len(mine) if mine else None,
            "answers_with_numbers": sum(1 for r in mine if r.answer_grounded is not None),
            "answers_mostly_unseen_numbers": sum(1 for r in mine if r.answer_grounded is False),
        }
    if len(models) > 1:
        base = baseline or models[0]
        if base not in models:
            raise EvalError(f"baseline {base!r} is not one of the models ({', '.join(models)})")
        out["paired"] = {
            "baseline": base,
            "models": {m: paired_differences(results, base, m) for m in models if m != base},
        }
    controls = list(controls)
    if controls:
        base = baseline or models[0]
        _check_controls(controls, models, base)
        out["against_controls"] = {
            "controls": controls,
            "models": {
                m: paired_against_controls(results, controls, m)
                for m in models
                if m not in controls and m != base
            },
        }
    return out


def _check_controls(controls: list[str], models: list[str], baseline: str | None) -> None:
    missing = [c for c in controls if c not in models]
    if missing:
        raise EvalError(f"control {', '.join(missing)} is not one of the models ({', '.join(models)})")
    if baseline in controls:
        raise EvalError(f"the baseline {baseline!r} cannot also be a control")


def paired_against_controls(results: list[PromptResult], controls: list[str], model: str) -> dict[str, Any]:
    """``model`` − the mean of ``controls`` per metric, paired by prompt (the controls' mean over
    those scored on the prompt): mean and bootstrap interval. Null controls move the baseline as
    far as the model moved it, in a direction no reward chose (``claude_rl.train.control``): an
    interval above 0 is a gain that such a move does not explain."""
    mine = prompt_means(r for r in results if r.model == model)
    theirs: dict[str, list[Mapping[str, Any]]] = {}
    for control in controls:
        for eid, scores in prompt_means(r for r in results if r.model == control).items():
            theirs.setdefault(eid, []).append(scores)
    out = {}
    for name in METRICS:
        diffs = []
        for eid, scores in mine.items():
            values = [c[name] for c in theirs.get(eid, []) if c.get(name) is not None]
            if scores.get(name) is not None and values:
                diffs.append(scores[name] - sum(values) / len(values))
        out[name] = mean_ci(diffs)
    return out


def paired_differences(results: list[PromptResult], a: str, b: str) -> dict[str, Any]:
    """``b − a`` per metric over the prompts both models were scored on (paired by prompt): mean and
    bootstrap interval of the per-prompt differences. An interval that excludes 0 is a difference
    the prompt-to-prompt noise does not explain; comparing two separate intervals is weaker."""
    scores_a = prompt_means(r for r in results if r.model == a)
    scores_b = prompt_means(r for r in results if r.model == b)
    out = {}
    for name in METRICS:
        diffs = [
            sb[name] - sa[name]
            for eid, sb in scores_b.items()
            if (sa := scores_a.get(eid)) is not None and sb.get(name) is not None and sa.get(name) is not None
        ]
        out[name] = mean_ci(diffs)
    return out


def _split_order(reason: str) -> tuple[int, str]:
    return (SPLIT_REASONS.index(reason) if reason in SPLIT_REASONS else len(SPLIT_REASONS), reason)


# =============================================================================================
# Writing


def _fmt(stat: Mapping[str, Any] | None, ci: bool = True, signed: bool = False) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    spec = "+.2f" if signed else ".2f"
    if not ci or stat.get("n", 0) < 2:
        return f"{stat['mean']:{spec}}"
    return f"{stat['mean']:{spec}} [{stat['lo']:{spec}}, {stat['hi']:{spec}}]"


def _rate(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _unseen(stats: Mapping[str, Any]) -> str:
    """ "k of n": answers with numbers, most of which the run never saw (reports older than this
    count show "–")."""
    if "answers_with_numbers" not in stats:
        return "–"
    return f"{stats['answers_mostly_unseen_numbers']} of {stats['answers_with_numbers']}"


def _cell(text: Any, limit: int = 120) -> str:
    s = " ".join(str(text if text is not None else "").split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _report_dict(report: EvalReport | Mapping[str, Any]) -> dict[str, Any]:
    return report.to_dict() if isinstance(report, EvalReport) else dict(report)


def headline_table(report: EvalReport | Mapping[str, Any]) -> str:
    """The headline metrics, models side by side, as plain text (mean [95 % interval])."""
    data = _report_dict(report)
    models: list[str] = list(data["models"])
    summary = data["summary"]
    rows: list[list[str]] = [["prompts", *[str(summary[m]["prompts"]) for m in models]]]
    for name in HEADLINE:
        rows.append([LABELS[name], *[_fmt(summary[m]["overall"].get(name)) for m in models]])
    rows.append(["valid-call rate", *[_rate(summary[m]["valid_call_rate"]) for m in models]])
    rows.append(["mean turns", *[_rate(summary[m]["mean_turns"], 1) for m in models]])
    rows.append(["answers made of unseen numbers", *[_unseen(summary[m]) for m in models]])
    header = ["metric", *models]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def against_controls_lines(report: EvalReport | Mapping[str, Any]) -> list[str]:
    """One line per model paired against the null controls: its behavioral reward minus theirs."""
    against = _report_dict(report)["summary"].get("against_controls") or {}
    return [
        f"{m} − the controls' mean, behavioral reward: {_fmt(diffs.get(REWARD), signed=True)}"
        for m, diffs in (against.get("models") or {}).items()
    ]


def render_markdown(report: EvalReport | Mapping[str, Any], charts: Iterable[str] = ()) -> str:
    data = _report_dict(report)
    models: list[str] = list(data["models"])
    summary = data["summary"]
    prompts = data["prompts"]
    n_prompts = len({p["episode_id"] for p in prompts})
    decoding = data.get("decoding") or GREEDY
    out = [
        f"# Evaluation: {data['name']}",
        "",
        f"Split `{data['split']}` of `{data['dataset']}`: {n_prompts} prompts, models "
        + ", ".join(f"`{m}`" for m in models)
        + f". Means with {int(CONFIDENCE * 100)} % bootstrap intervals ({BOOTSTRAP_SAMPLES} resamples, "
        f"seed {SEED}) over the prompts where a score applies. {_decoding_text(decoding).capitalize()}"
        + ("." if decoding == GREEDY else ": a prompt's score is the mean of its samples' scores."),
        "",
        "## Headline",
        "",
    ]
    rows = [[LABELS[n], *[_fmt(summary[m]["overall"].get(n)) for m in models]] for n in HEADLINE]
    out += _table(["metric", *models], rows)
    out += ["", "### Behavior", ""]
    rows = [
        [
            LABELS[n],
            *[f"{_fmt(summary[m]['overall'].get(n))} (n={summary[m]['overall'][n]['n']})" for m in models],
        ]
        for n in BEHAVIORAL
    ]
    out += _table(["metric", *models], rows)
    out += ["", "### Runs", ""]
    rows = [
        ["valid-call rate", *[_rate(summary[m]["valid_call_rate"]) for m in models]],
        ["mean turns", *[_rate(summary[m]["mean_turns"], 1) for m in models]],
        ["mean calls", *[_rate(summary[m]["mean_calls"], 1) for m in models]],
        ["mean seconds", *[_rate(summary[m]["mean_seconds"], 1) for m in models]],
        ["errors", *[str(summary[m]["errors"]) for m in models]],
        ["answers made of unseen numbers", *[_unseen(summary[m]) for m in models]],
        [
            "stop reasons",
            *[", ".join(f"{k} {v}" for k, v in summary[m]["stop_reasons"].items()) for m in models],
        ],
    ]
    out += _table(["", *models], rows)

    paired_block = summary.get("paired") or {}
    paired = paired_block.get("models") or {}
    if paired:
        base = paired_block.get("baseline", models[0])
        out += ["", f"### Paired differences against `{base}`", ""]
        out.append(
            f"Per-prompt differences (model minus `{base}`), mean and 95 % bootstrap interval; "
            "an interval that excludes 0 is a change the prompt-to-prompt noise does not explain."
        )
        out.append("")
        rows = [[LABELS[n], *[_fmt(paired[m].get(n), signed=True) for m in paired]] for n in HEADLINE]
        out += _table(["metric", *[f"{m} − {base}" for m in paired]], rows)

    against = summary.get("against_controls") or {}
    if against.get("models"):
        controls = against["controls"]
        out += ["", "### Against the null controls", ""]
        out.append(
            "Per-prompt differences against the mean of the null controls "
            f"({', '.join(f'`{c}`' for c in controls)}): "
            "the baseline moved as far as the trained model moved it, in a direction no reward chose "
            "(`claude-rl control`). Their own paired differences above are the spread such a move gives; "
            "an interval here that excludes 0 is a change it does not explain."
        )
        out.append("")
        rows = [
            [LABELS[n], *[_fmt(against["models"][m].get(n), signed=True) for m in against["models"]]]
            for n in HEADLINE
        ]
        out += _table(["metric", *[f"{m} − controls" for m in against["models"]]], rows)

    out += ["", "## Trained shapes vs transfer", ""]
    out.append(
        "`hash`: held-out instances of task shapes seen in training; `heldout_template`: task shapes "
        "never trained on (transfer)."
    )
    out.append("")
    reasons = sorted({p["split_reason"] for p in prompts}, key=_split_order)
    header = ["metric"]
    for m in models:
        for reason in reasons:
            n = summary[m]["by_split"].get(reason, {}).get("prompts", 0)
            header.append(f"{m}: {SPLIT_LABELS.get(reason, reason)} (n={n})")
    rows = []
    for name in HEADLINE + BEHAVIORAL:
        row = [LABELS[name]]
        for m in models:
            for reason in reasons:
                row.append(_fmt(summary[m]["by_split"].get(reason, {}).get("metrics", {}).get(name)))
        rows.append(row)
    out += _table(header, rows)

    out += ["", "## Per category", ""]
    for m in models:
        out += [f"### {m}", ""]
        rows = []
        for category, block in summary[m]["by_category"].items():
            rows.append(
                [
                    f"{category} (n={block['prompts']})",
                    *[_fmt(block["metrics"].get(n), ci=False) for n in HEADLINE],
                ]
            )
        out += _table(["category", *[SHORT[n] for n in HEADLINE]], rows)
        out.append("")

    charts = list(charts)
    if charts:
        out += ["## Charts", ""]
        out += [f"![{Path(c).stem}]({c})" for c in charts]
        out.append("")

    out += ["## Per prompt", ""]
    rows = []
    order = {eid: i for i, eid in enumerate(dict.fromkeys(p["episode_id"] for p in prompts))}
    by_prompt = sorted(prompts, key=lambda p: (order[p["episode_id"]], models.index(p["model"])))
    for k, p in enumerate(by_prompt):
        s = p["scores"]
        rows.append(
            [
                str(k + 1),
                _cell(p["model"], 30),
                _cell(p["category"], 20),
                SHORT_SPLIT.get(p["split_reason"], p["split_reason"]),
                _cell(p["prompt"], 80),
                _cell(" → ".join(p["reference_tools"]) or "(none)", 80),
                _cell(" → ".join(p["candidate_tools"]) or "(none)", 80),
                *[
                    _rate(s.get(n))
                    for n in ("tool_sequence_similarity", "argument_similarity", "answer_similarity")
                ],
                _cell(p["stop_reason"] + (f" ({p['error']})" if p.get("error") else ""), 60),
            ]
        )
    out += _table(
        [
            "#",
            "model",
            "category",
            "split",
            "prompt",
            "reference tools",
            "candidate tools",
            "seq",
            "args",
            "answer",
            "stop",
        ],
        rows,
    )
    notes = data.get("notes") or []
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def write_charts(report: EvalReport | Mapping[str, Any], out_dir: Path) -> list[Path]:
    """headline.png, splits.png and categories.png (matplotlib's Agg canvas; no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = _report_dict(report)
    models: list[str] = list(data["models"])
    summary = data["summary"]
    written: list[Path] = []

    def bars(ax: Any, groups: list[str], series: list[tuple[str, list[Mapping[str, Any] | None]]]) -> None:
        width = 0.8 / max(1, len(series))
        for k, (label, stats) in enumerate(series):
            xs = [i - 0.4 + width * (k + 0.5) for i in range(len(groups))]
            means = [_nan((s or {}).get("mean")) for s in stats]
            lower = [0.0 if s is None or s.get("mean") is None else s["mean"] - s["lo"] for s in stats]
            upper = [0.0 if s is None or s.get("mean") is None else s["hi"] - s["mean"] for s in stats]
            ax.bar(xs, means, width, label=label, yerr=[lower, upper], capsize=3)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))

    def save(fig: Any, name: str) -> None:
        FigureCanvasAgg(fig)
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=110, bbox_inches="tight")
        written.append(path)

    fig = Figure(figsize=(max(6.0, 1.1 * len(HEADLINE) * max(1, len(models)) ** 0.5), 4.2))
    ax = fig.add_subplot(1, 1, 1)
    bars(
        ax,
        [LABELS[n] for n in HEADLINE],
        [(m, [summary[m]["overall"].get(n) for n in HEADLINE]) for m in models],
    )
    ax.set_title(f"Headline metrics, mean and {int(CONFIDENCE * 100)} % interval")
    save(fig, "headline.png")

    reasons = sorted({p["split_reason"] for p in data["prompts"]}, key=_split_order)
    fig = Figure(figsize=(8.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    series = []
    for m in models:
        for reason in reasons:
            block = summary[m]["by_split"].get(reason, {}).get("metrics", {})
            label = f"{m}: {SHORT_SPLIT.get(reason, reason)}"
            series.append((label, [block.get(n) for n in HEADLINE]))
    bars(ax, [LABELS[n] for n in HEADLINE], series)
    ax.set_title("Trained shapes vs transfer")
    save(fig, "splits.png")

    categories = sorted({c for m in models for c in summary[m]["by_category"]})
    shown = ("tool_sequence_similarity", "argument_similarity", "answer_similarity")
    fig = Figure(figsize=(max(6.0, 0.9 * len(categories) + 2), 3.2 * len(shown)))
    for k, name in enumerate(shown):
        ax = fig.add_subplot(len(shown), 1, k + 1)
        bars(
            ax,
            categories,
            [
                (m, [summary[m]["by_category"].get(c, {}).get("metrics", {}).get(name) for c in categories])
                for m in models
            ],
        )
        ax.set_title(f"{LABELS[name]} by category", fontsize=9)
    save(fig, "categories.png")
    return written


def write_report(report: EvalReport, out_dir: Path) -> dict[str, Path]:
    """report.json, report.md and the charts in ``out_dir``; returns them by name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    charts: list[Path] = []
    try:
        charts = write_charts(report, out_dir)
    except ImportError:
        report.notes.append("charts skipped: matplotlib is not installed (pip install matplotlib)")
    for chart in charts:
        files[chart.name] = chart
    md = out_dir / "report.md"
    js = out_dir / "report.json"
    files["report.md"] = md
    files["report.json"] = js
    report.out_dir = out_dir
    report.files = {**report.files, **{k: v.name for k, v in files.items()}}
    md.write_text(render_markdown(report, [c.name for c in charts]), encoding="utf-8")
    js.write_text(json.dumps(report.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return files


# =============================================================================================
# Reusing an earlier report's runs


def read_report(report_dir: Path) -> dict[str, Any]:
    path = Path(report_dir) / "report.json"
    if not path.is_file():
        raise EvalError(f"{report_dir}: no report.json (not an eval report folder)")
    return json.loads(path.read_text(encoding="utf-8"))


def _same_runs(a: list[Episode], b: list[Episode]) -> bool:
    """The same runs: per prompt, the same steps and final answer (metadata aside)."""
    return len(a) == len(b) and all(
        x.steps == y.steps and x.final_answer == y.final_answer for x, y in zip(a, b, strict=True)
    )


def reuse_report(
    report_dir: Path,
    references: list[Reference],
    text_similarity: scoring.TextSimilarity | None = None,
    decoding: Mapping[str, Any] = GREEDY,
) -> tuple[dict[str, list[Episode]], list[PromptResult]]:
    """The runs of an earlier report's models (its ``candidates/<model>.jsonl``), scored again
    against ``references`` with today's scorers, without running the models again: greedy runs of
    an unchanged GGUF repeat themselves, so a baseline need not be re-run to compare a new model
    with it. Every reference must have a run in the report with the same prompt (same split and
    dataset), and the report must have decoded as ``decoding`` says (greedy, or as many samples at
    the same temperature). Returns (model → its candidate episodes in reference order, results)."""
    report_dir = Path(report_dir)
    data = read_report(report_dir)
    theirs = data.get("decoding") or GREEDY
    if (int(theirs["samples"]), float(theirs["temperature"])) != (
        int(decoding["samples"]),
        float(decoding["temperature"]),
    ):
        mine = _decoding_text(decoding)
        raise EvalError(f"{report_dir} decoded with {_decoding_text(theirs)}, this evaluation with {mine}")
    samples = int(decoding["samples"])
    episodes_of: dict[str, list[Episode]] = {}
    results: list[PromptResult] = []
    for model in data.get("models", []):
        rows = [p for p in data.get("prompts", []) if p.get("model") == model]
        path = report_dir / "candidates" / f"{_slug(model)}.jsonl"
        if not path.is_file():
            raise EvalError(f"{report_dir}: no candidates/{path.name} for {model}")
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(lines) != len(rows):
            raise EvalError(f"{path}: {len(lines)} runs for {len(rows)} prompts of {model}")
        runs = {
            (row["episode_id"], int(row.get("sample", 0))): (row, Episode.model_validate_json(line))
            for row, line in zip(rows, lines, strict=True)
        }
        wanted = [(r.episode.episode_id, k) for r in references for k in range(samples)]
        missing = list(dict.fromkeys(eid for eid, k in wanted if (eid, k) not in runs))
        if missing:
            raise EvalError(
                f"{report_dir}: {model} has no run for {len(missing)} of the {len(references)} prompts "
                f"(first: {missing[0]}); it was made on another split or dataset"
            )
        mine: list[Episode] = []
        for ref, k in ((ref, k) for ref in references for k in range(samples)):
            row, episode = runs[(ref.episode.episode_id, k)]
            if row.get("prompt") != ref.episode.prompt:
                raise EvalError(f"{report_dir}: {model}'s prompt for {ref.episode.episode_id} differs")
            mine.append(episode)
            results.append(
                scored_result(
                    ref,
                    model,
                    episode,
                    score_candidate(ref.episode, episode, text_similarity),
                    stop_reason=row.get("stop_reason", "unknown"),
                    turns=int(row.get("turns", 0)),
                    calls=int(row.get("calls", len(episode.steps))),
                    valid_calls=int(row.get("valid_calls", 0)),
                    seconds=float(row.get("seconds", 0.0)),
                    run_path=row.get("run_path"),
                    error=row.get("error"),
                    sample=k,
                )
            )
        episodes_of[model] = mine
    return episodes_of, results


# =============================================================================================
# Entry point


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]eval[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=False,
    )


def evaluate(
    models: Mapping[str, Any],
    split: str = "test",
    dataset_folder: Path | None = None,
    limit: int | None = None,
    out_dir: Path | None = None,
    workspace: Path | None = None,
    config: Any = None,
    *,
    runner: Runner | None = None,
    run_writer: RunWriter | None = None,
    references: list[Reference] | None = None,
    episodes: Iterable[Episode] | None = None,
    name: str | None = None,
    home: Path | None = None,
    progress: bool = True,
    reuse: Iterable[Path] = (),
    baseline: str | None = None,
    outcome: str = "embedding",
    controls: Iterable[str] = (),
    only: Iterable[str] | None = None,
    leave_out: Iterable[str] = (),
    extra_notes: Iterable[str] = (),
    samples: int = 1,
    temperature: float = 0.0,
) -> EvalReport:
    """Run the split's prompts through every model and write the report (see the module docstring).

    ``models``: name → a GGUF path (loaded with ``runtime.LlamaCppModel``) or a ``CompletionModel``.
    ``runner``: ``run_agent``'s signature (default ``claude_rl.runtime.run_agent``); with the default
    runner each run is also written with ``runtime.write_run`` unless ``run_writer`` says otherwise.
    ``references``: skip reading the dataset; ``episodes``: where to look references up.
    ``reuse``: earlier report folders whose models' runs are scored again and listed first
    (``reuse_report``); ``baseline``: the model the paired differences are taken against (default:
    the first). ``outcome``: how the behavioral reward compares answer texts (``"embedding"``,
    all-MiniLM-L6-v2 as in training, falling back to ``"lexical"``). ``controls``: models (run or
    reused) that are null controls; the others are also paired against their mean. ``only`` /
    ``leave_out``: reference episode ids to keep / drop (``select_references``, before ``limit``),
    e.g. ``practised_prompts`` of an RL run. ``extra_notes``: lines for the report's notes (what
    was chosen and why). ``samples`` / ``temperature``: run every prompt ``samples`` times per
    model, sampling at ``temperature`` (default: once, greedy, as ``claude-rl run`` decodes); a
    prompt's score is its samples' mean (``prompt_means``), and the k-th sample of a prompt draws
    with ``sample_seed`` in every model.
    """
    reuse = [Path(r) for r in reuse]
    decoding = _decoding(samples, temperature)
    if not models and not reuse:
        raise EvalError("no models to evaluate")
    home = Path(home) if home is not None else paths.home()
    stamp = datetime.now(timezone.utc)
    name = name or f"eval-{stamp.strftime('%Y%m%d-%H%M%S')}"
    dataset_folder = (
        Path(dataset_folder) if dataset_folder is not None else home / "datasets" / "samples-messages"
    )
    if references is None:
        references = load_references(dataset_folder, split, None, episodes, home)
    leave_out = set(leave_out)
    total = len(references)
    references = _spread(select_references(list(references), only, leave_out), limit)
    chosen = only is not None or bool(leave_out)
    if not references:
        raise EvalError(f"no{' chosen' if chosen else ''} prompts in the {split} split of {dataset_folder}")
    workspace = Path(workspace) if workspace is not None else _default_workspace()
    if not workspace.is_dir():
        raise EvalError(f"workspace {workspace} is not a folder")
    from claude_rl.train.reward import outcome_similarity

    similarity = outcome_similarity(outcome)
    results: list[PromptResult] = []
    reused: dict[str, list[Episode]] = {}
    for folder in reuse:
        episodes_of, rows = reuse_report(folder, references, similarity, decoding)
        # a report made with --reuse carries the reused model's runs too: taken once when they agree
        same = {m for m, eps in episodes_of.items() if m in reused and _same_runs(reused[m], eps)}
        twice = sorted((set(episodes_of) - same) & (set(reused) | set(models)))
        if twice:
            raise EvalError(
                f"model {', '.join(twice)} is named twice (reused and run, or reused twice with other runs)"
            )
        reused.update({m: eps for m, eps in episodes_of.items() if m not in same})
        results += [r for r in rows if r.model not in same]
    if baseline is not None and baseline not in [*reused, *models]:
        raise EvalError(f"baseline {baseline!r} is not one of the models ({', '.join([*reused, *models])})")
    controls = list(controls)
    names = [*reused, *models]
    if controls:  # before any model runs
        _check_controls(controls, names, baseline or names[0])
    if runner is None and models:
        from claude_rl.runtime import run_agent

        runner = run_agent
        if run_writer is None:
            from claude_rl.runtime import write_run

            run_writer = write_run
    agent_config = _agent_config(config)
    out_dir = Path(out_dir) if out_dir is not None else home / "reports" / name
    out_dir.mkdir(parents=True, exist_ok=True)

    notes: list[str] = list(extra_notes)
    if chosen:
        notes.append(f"{len(references)} of the {split} split's {total} prompts chosen")
    if reused:
        notes.append(f"runs of {', '.join(reused)} reused from {', '.join(map(str, reuse))}")
    loaded: dict[str, Any] = {}
    candidates_dir = out_dir / "candidates"
    candidates_dir.mkdir(exist_ok=True)
    for model_name, episodes_run in reused.items():
        text = "".join(e.model_dump_json() + "\n" for e in episodes_run)
        (candidates_dir / f"{_slug(model_name)}.jsonl").write_text(text, encoding="utf-8")
    with _progress(progress and bool(models)) as bar:
        task = bar.add_task("", total=len(references) * len(models) * samples)
        for model_name, model_value in models.items():
            model = _load_model(model_value, loaded, model_name, temperature)
            lines: list[str] = []
            for k, ref, j in ((k, ref, j) for k, ref in enumerate(references) for j in range(samples)):
                bar.update(task, description=f"{model_name} · {ref.category} · {ref.episode.episode_id}")
                session_id = f"{_slug(name)}-{_slug(model_name)}-{k:04d}" + (f"-s{j}" if samples > 1 else "")
                if temperature > 0 and hasattr(model, "reseed"):
                    model.reseed(sample_seed(ref.episode.episode_id, j))
                result, run, episode = run_prompt(
                    ref, model_name, model, runner, workspace, agent_config, session_id, similarity
                )
                result.sample = j
                eval_meta = {"model": model_name, "reference": ref.episode.episode_id, "report": name}
                if decoding != GREEDY:
                    eval_meta |= {"sample": j, "temperature": temperature}
                episode.meta = {**(episode.meta or {}), "eval": eval_meta}
                if run_writer is not None and run is not None and result.error is None:
                    try:
                        result.run_path = str(run_writer(run, home=home))
                    except Exception as exc:  # the report still gets written
                        notes.append(f"{model_name} {ref.episode.episode_id}: write_run failed: {exc}")
                lines.append(episode.model_dump_json() + "\n")
                results.append(result)
                bar.advance(task)
            (candidates_dir / f"{_slug(model_name)}.jsonl").write_text("".join(lines), encoding="utf-8")
            loaded.pop(model_name, None)  # a loaded GGUF is freed before the next model loads
            model = None
    origins = Counter(r.origin for r in references)
    if origins.get("messages"):
        notes.append(f"{origins['messages']} reference episodes were rebuilt from the dataset rows' messages")
    report = EvalReport(
        name=name,
        split=split,
        dataset=dataset_folder.name,
        models=names,
        created_at=stamp.isoformat(timespec="seconds"),
        results=results,
        summary=summarize(results, names, baseline, controls),
        notes=notes,
        files={f"candidates/{_slug(m)}.jsonl": f"candidates/{_slug(m)}.jsonl" for m in names},
        decoding=decoding,
    )
    write_report(report, out_dir)
    return report


# --- which models and which dataset (the CLI's defaults) ----------------------------------------


@dataclass
class ModelSpec:
    """One model of an ``eval`` run: its label, the GGUF it runs from and the run folder (if any)."""

    label: str
    gguf: Path
    run_folder: Path | None = None


def _exported(folder: Path, home: Path, quant: str | None) -> Path:
    """The full-precision GGUF (or ``quant``'s file) of an HF model or run folder, exporting it first
    (with its parity checks) when it has not been exported yet, or not with that quantization."""
    from claude_rl.export import export_gguf

    report = folder / "gguf" / "export.json"
    files = json.loads(report.read_text(encoding="utf-8")).get("files", {}) if report.is_file() else {}
    key = quant or next((k for k in ("f16", "bf16", "f32") if k in files), None)
    if key is not None and key in files:
        return folder / "gguf" / files[key]["file"]
    result = export_gguf(folder, quants=[quant] if quant else [], home=home)
    return result.quants[quant] if quant else result.gguf


def resolve_models(spec: str, home: Path | None = None, quant: str | None = None) -> list[ModelSpec]:
    """``base,latest`` (the default), run names, run folders or ``.gguf`` paths → GGUF files.

    ``base`` is the base model of the latest run (default: the embedded SmolLM2-135M-Instruct,
    materialized and exported at the same precision as the trained model, so the comparison is
    like for like); ``latest`` the newest ``llama-claude-*-vN`` run. Unexported runs are exported
    first (F16, with parity checks)."""
    from claude_rl.export import latest_model

    home = Path(home) if home is not None else paths.home()
    out: list[ModelSpec] = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        if item.endswith(".gguf"):
            path = Path(item).expanduser()
            if not path.is_file():
                raise EvalError(f"{path}: no such GGUF file")
            out.append(ModelSpec(path.stem, path))
            continue
        if item == "base":
            from claude_rl.base_model import DEFAULT_MODEL, materialize

            base_name = DEFAULT_MODEL
            try:
                manifest = json.loads((latest_model(home) / "manifest.json").read_text(encoding="utf-8"))
                base_name = manifest.get("base_model") or DEFAULT_MODEL
            except Exception:  # no trained run yet: the default base model
                pass
            folder = Path(materialize(base_name, home))
            out.append(ModelSpec("base", _exported(folder, home, quant)))
            continue
        found = [latest_model(home)] if item == "latest" else paths.run_candidates(item, home)
        folder = next((c for c in found if c.is_dir()), None)
        if folder is None:
            models = paths.models_dir(home)
            raise EvalError(f"{item}: not a run name under {models}, a folder or a .gguf file")
        out.append(ModelSpec(folder.name, _exported(folder, home, quant), folder))
    if not out:
        raise EvalError("no models named")
    return out


def trained_dataset(specs: Iterable[ModelSpec]) -> tuple[Path | None, int | None]:
    """The dataset folder the (first) trained model was trained on and its tool-output budget, so
    the held-out split and the runtime's cutting of tool results match training."""
    from claude_rl.runtime import training_dataset

    for spec in specs:
        found = training_dataset(spec.run_folder) if spec.run_folder else None
        if found:
            return found[0], found[1].get("max_tool_tokens")
    return None, None
