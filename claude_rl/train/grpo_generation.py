"""How GRPOTrainer's multi-turn tool loop generates, bounded the way the reward reads it.

TRL's tool loop (``GRPOTrainer._tool_call_loop``) calls ``generate`` once per tool turn for the
rows that are still calling tools, each time with ``max_new_tokens = max_completion_length``, and
cuts every row to its remaining completion budget only afterwards. One row that does not stop
(a long answer, text after its call, a row already near its budget) keeps the whole batch decoding
up to the full budget in every turn, and a row the runtime would have ended (the third identical
call: ``claude_rl.runtime``'s repeat rule, which the reward applies too) keeps calling tools for
nothing: the reward ignores all of it. On two CPU cores decoding is most of a generated batch.

``trainer_class()`` returns a ``trl.GRPOTrainer`` subclass that, inside the tool loop only:

- stops each row at its own remaining budget (``max_completion_length`` less what its completion
  already holds, tool results included), with a per-row ``StoppingCriteria``, so a batch ends
  when its last *useful* row ends; what a row keeps is exactly what TRL would have kept;
- ends a row whose environment reports that the runtime's repeat rule ended the rollout
  (``ReplayEnvironment.ended``): it generates nothing more, as the deployed agent would not.

With ``greedy_rollout`` set (the run config's ``greedy_rollout``), the first rollout of each group
is decoded greedily in every turn, as ``claude-rl eval`` and ``run`` decode, while the others are
sampled: each group then scores the path the deployed model takes against samples around it. Its
environment's ``greedy`` is set, so the reward log can tell it apart.

With ``guided_opening`` set (the run config's ``guided_opening``), the last rollout of each group
opens with the reference episode's first assistant turn, written token by token by a logits
processor that leaves only the reference's next token (``opening_tokens``); the tool results and
the rest of the rollout are the policy's own. Its tokens are trained like sampled ones: the group
advantage weighs them and the PPO ratio is taken against the policy's own probabilities of them at
generation time, so ``epsilon`` clips the step. This is off-policy guidance: where the policy's
samples never open the way the reference does (a Bash run on debug prompts), the group still
scores that opening against them. Its environment's ``guided`` is set, for the reward log.

With ``mask_opening`` set (the run config's ``mask_opening``), each rollout's first assistant turn
(its reasons and first calls, or the whole completion when it called no tool) is left out of the
loss (``after_opening``): the policy is trained on what it does with the tool results, not on how
it opens, which stays the SFT model's but for what shared LoRA weights carry over. The groups'
rewards still score the whole rollout. Why: where the samples never open the way the reference
does (Bash runs on debug prompts), training their openings can only push toward the openings
sampled. The run config refuses it together with ``guided_opening``, whose forced opening it would mask.

With ``merge_lora_for_generation`` (on by default) the LoRA adapter is folded into float32 base
weights for each ``generate`` call and taken out again before TRL's log-probability passes
(``merged_adapter``): the same policy, decoded as a plain model. Not where the weights are sharded
(FSDP, DeepSpeed), which TRL gathers only inside its own call.

It also records each ``generate`` call (rows, decode steps, seconds, rows stopped by the budget or
the repeat rule) in ``generation_log``, which the run's manifest summarizes. vLLM and continuous
batching are left as TRL runs them (their own schedulers; budgets are not applied there).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class GenerateCall:
    """One ``generate`` call of a generated batch: the first turn, or a tool turn."""

    step: int
    tool_turn: bool
    rows: int
    input_tokens: int  # longest input row
    decode_steps: int  # longest output row: how long the batch decoded
    seconds: float
    stopped_by_budget: int = 0
    ended_by_repeat: int = 0


def summarize(calls: list[GenerateCall]) -> dict[str, Any]:
    """Totals for the run's manifest: where generation time went."""
    if not calls:
        return {"calls": 0}
    turns = [c for c in calls if c.tool_turn]
    return {
        "calls": len(calls),
        "seconds": round(sum(c.seconds for c in calls), 1),
        "decode_steps": sum(c.decode_steps for c in calls),
        "first_turn_seconds": round(sum(c.seconds for c in calls if not c.tool_turn), 1),
        "tool_turn_seconds": round(sum(c.seconds for c in turns), 1),
        "tool_turn_calls": len(turns),
        "rows_stopped_by_budget": sum(c.stopped_by_budget for c in calls),
        "rows_ended_by_repeat": sum(c.ended_by_repeat for c in calls),
    }


def row_limits(
    rows: list[list[int]],
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    max_completion_length: int,
) -> list[tuple[int, int]]:
    """For each input row of a tool turn: (its sample's index in the batch, new tokens it may add).

    Rows are the tool loop's rows in batch order (a subsequence of the samples); each is its
    sample's prompt + completion so far + the tool results' suffix, so it is matched to the first
    sample, from where the last match left off, whose prompt + completion it starts with."""
    out: list[tuple[int, int]] = []
    start = 0
    for row in rows:
        for i in range(start, len(prompt_ids)):
            head = list(prompt_ids[i]) + list(completion_ids[i])
            if row[: len(head)] == head:
                used = len(row) - len(prompt_ids[i])
                out.append((i, max(0, max_completion_length - used)))
                start = i + 1
                break
        else:  # not found: leave the row to TRL's own limit
            out.append((-1, max_completion_length))
    return out


def _stopping_criteria(limits: list[int]) -> Any:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class RowBudget(StoppingCriteria):
        """Stops each row once it has generated its own number of tokens (at least one: generate
        always takes one step)."""

        def __init__(self) -> None:
            self.start: int | None = None
            self.limits = torch.tensor([max(1, n) for n in limits])

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            if self.start is None:  # first call: one token past the (padded) input
                self.start = input_ids.shape[1] - 1
            generated = input_ids.shape[1] - self.start
            return (generated >= self.limits.to(input_ids.device)).to(torch.bool)

    return StoppingCriteriaList([RowBudget()])


def _row_processors(greedy: list[bool], forced: list[list[int] | None]) -> Any:
    """The logits processors of one ``generate`` call: greedy rows, forced rows (either may be
    absent)."""
    from transformers import LogitsProcessorList

    out = LogitsProcessorList()
    if any(greedy):
        out.append(_greedy_rows(greedy))
    if any(f for f in forced):
        out.append(_forced_rows(forced))
    return out


def _forced_rows(forced: list[list[int] | None]) -> Any:
    from transformers import LogitsProcessor

    class ForcedRows(LogitsProcessor):
        """Makes each row with a token list write exactly those tokens, one per step, and then
        decode as configured (a list that ends on an end token ends the row there). Every other
        token gets -inf and the forced one 0, not its own score: an earlier processor (top-p) may
        already have set that to -inf."""

        def __init__(self) -> None:
            self.start: int | None = None

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            if self.start is None:  # first call: before the first new token
                self.start = input_ids.shape[1]
            step = input_ids.shape[1] - self.start
            for row, tokens in enumerate(forced):
                if tokens and step < len(tokens):
                    scores[row] = float("-inf")
                    scores[row, tokens[step]] = 0.0
            return scores

    return ForcedRows()


def _greedy_rows(rows: list[bool]) -> Any:
    import torch
    from transformers import LogitsProcessor

    class GreedyRows(LogitsProcessor):
        """Leaves only the most likely token to the rows marked greedy: sampling then picks it, as
        greedy decoding would (temperature and top-p keep the argmax, so where this runs among the
        other processors does not matter); the other rows sample as configured."""

        def __init__(self) -> None:
            self.rows = torch.tensor(rows, dtype=torch.bool)

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            best = scores.argmax(dim=-1, keepdim=True)
            only_best = torch.full_like(scores, float("-inf")).scatter(1, best, scores.gather(1, best))
            return torch.where(self.rows.to(scores.device)[:, None], only_best, scores)

    return GreedyRows()


def first_of_each_group(rows: list[list[int]]) -> set[int]:
    """Indices of the first row of each run of identical prompts: TRL's sampler puts a prompt's
    ``num_generations`` rollouts next to each other, so this is one rollout per group."""
    return {i for i, row in enumerate(rows) if i == 0 or row != rows[i - 1]}


def last_of_each_group(rows: list[list[int]]) -> set[int]:
    """Indices of the last row of each run of identical prompts (one rollout per group, another
    than ``first_of_each_group``'s when the group has two or more)."""
    return {i for i, row in enumerate(rows) if i == len(rows) - 1 or row != rows[i + 1]}


def opening_tokens(reference: Any, tokenizer: Any) -> list[int] | None:
    """The reference episode's first assistant turn (its reasons and first calls, through the end
    token) as token ids of ``tokenizer``, in the chat format of that tokenizer; None when the
    reference has no such turn or is missing."""
    if not reference:
        return None
    from claude_rl.chat_format import episode_to_messages, format_for, opening_turn_text
    from claude_rl.train.reward import reference_episode  # parsed once per reference, cached

    text = opening_turn_text(episode_to_messages(reference_episode(reference)), format_for(tokenizer))
    if text is None:
        return None
    return list(tokenizer.encode(text, add_special_tokens=False))


def after_opening(tool_mask: Any) -> Any:
    """``tool_mask`` (1: the policy's token, 0: a tool result's) with each row's first assistant turn,
    the tokens before its first tool result, set to 0 too; a row without tool results is all 0."""
    return tool_mask * ((tool_mask == 0).cumsum(dim=1) > 0).to(tool_mask.dtype)


@contextmanager
def _extra_generate_kwargs(model: Any, **extra: Any) -> Any:
    """Passes ``extra`` to ``model.generate`` for the duration (TRL calls it with its own kwargs)."""
    original = model.generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **kwargs, **extra)

    model.generate = generate
    try:
        yield
    finally:
        del model.generate  # the class's method again


def can_merge_for_generation(model: Any) -> bool:
    """Whether ``model``'s LoRA adapter can be folded into its base weights and taken out again
    without losing the base: a PEFT model whose parameters are all float32 (merging into bf16 or
    4-bit weights and subtracting again would not give the base weights back, and the KL term's
    reference is the base under the disabled adapter)."""
    import torch

    if not (hasattr(model, "merge_adapter") and hasattr(model, "unmerge_adapter")):
        return False
    return all(p.dtype == torch.float32 for p in model.parameters())


@contextmanager
def merged_adapter(model: Any, enabled: bool) -> Any:
    """The LoRA adapter folded into the base weights for the duration (``merge_lora_for_generation``).

    Why: decoding a rollout batch runs every layer once per new token, and an unmerged adapter adds
    two small matrix products per adapted linear layer to each of those calls (210 on the default
    model with ``all-linear``); folded in, a decode step is the plain model's (on 2 CPU cores 1.10×
    faster decoding, 1.13× prompt evaluation: ``bench/rollout_decode.py``). The same weights give
    the same distribution, up to float32 rounding; unmerging subtracts the same product again."""
    import torch

    merge = enabled and can_merge_for_generation(model)
    if merge:
        with torch.no_grad():
            model.merge_adapter()
    try:
        yield merge
    finally:
        if merge:
            with torch.no_grad():
                model.unmerge_adapter()


def trainer_class() -> type:
    """``trl.GRPOTrainer`` with budgeted tool turns (module docstring)."""
    import trl

    class BudgetedGRPOTrainer(trl.GRPOTrainer):  # type: ignore[misc, name-defined]
        generation_log: list[GenerateCall]

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.generation_log = []
            self.greedy_rollout = False
            self.guided_opening = False
            self.mask_opening = False
            self.merge_lora_for_generation = False
            self._loop_state: tuple[list[Any], list[Any]] | None = None
            self._greedy_samples: set[int] = set()

        def _generate_and_score_completions(self, inputs: Any) -> Any:
            out = super()._generate_and_score_completions(inputs)
            if self.mask_opening:
                import torch

                mask = out.get("tool_mask")
                mask = after_opening(torch.ones_like(out["completion_mask"]) if mask is None else mask)
                out["tool_mask"] = mask
                # TRL counted the loss tokens before: DAPO divides by this count
                kept = (out["completion_mask"] * mask).sum()
                out["num_items_in_batch"] = self.accelerator.gather(kept).sum()
            return out

        def _tool_call_loop(self, prompts, prompt_ids, completion_ids, *args: Any, **kwargs: Any):
            # TRL updates ``completion_ids`` in place as the turns go: keep the live lists.
            self._loop_state = (prompt_ids, completion_ids)
            try:
                return super()._tool_call_loop(prompts, prompt_ids, completion_ids, *args, **kwargs)
            finally:
                self._loop_state = None

        def _generate_single_turn(
            self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False
        ):
            started = time.monotonic()
            rows = [list(ids) for ids in prompt_ids]
            in_loop = self._loop_state is not None
            if self.use_vllm or self.use_transformers_continuous_batching:
                ids, logprobs = super()._generate_single_turn(
                    prompt_ids, images, multimodal_fields, num_generations, has_tool_images
                )
                self._record(in_loop, rows, ids, started)
                return ids, logprobs
            envs = self.environments or []
            extra: dict[str, Any] = {}
            forced: list[list[int] | None] = [None] * len(rows)
            if in_loop:
                limits = row_limits(rows, *self._loop_state, self.max_completion_length)
                ended = [0 <= i < len(envs) and bool(getattr(envs[i], "ended", False)) for i, _ in limits]
                budgets = [0 if e else n for e, (_, n) in zip(ended, limits, strict=True)]
                extra["stopping_criteria"] = _stopping_criteria(budgets)
                greedy = [i in self._greedy_samples for i, _ in limits]
            else:  # the first turn: a new batch, whose greedy and guided rollouts are chosen here
                training = self.model.training
                self._greedy_samples = set()
                guided: set[int] = set()
                if training and self.greedy_rollout:
                    self._greedy_samples = first_of_each_group(rows)
                if training and self.guided_opening:
                    guided = last_of_each_group(rows) - self._greedy_samples
                for i, env in enumerate(envs):
                    env.greedy = i in self._greedy_samples
                    env.guided = False
                    if i in guided:
                        forced[i] = opening_tokens(getattr(env, "reference", None), self.processing_class)
                        env.guided = forced[i] is not None
                greedy = [i in self._greedy_samples for i in range(len(rows))]
            if any(greedy) or any(f for f in forced):
                extra["logits_processor"] = _row_processors(greedy, forced)
            model = self.accelerator.unwrap_model(self.model_wrapped)
            # sharded weights (FSDP, DeepSpeed ZeRO) are gathered inside TRL's call: nothing to fold here
            merge = self.merge_lora_for_generation and not (self.is_fsdp_enabled or self.is_deepspeed_enabled)
            with _extra_generate_kwargs(model, **extra), merged_adapter(model, merge):
                ids, logprobs = super()._generate_single_turn(
                    prompt_ids, images, multimodal_fields, num_generations, has_tool_images
                )
            if not in_loop:
                self._record(False, rows, ids, started)
                return ids, logprobs
            ids = [[] if e else list(x) for e, x in zip(ended, ids, strict=True)]
            if logprobs is not None:
                logprobs = [[] if e else list(x) for e, x in zip(ended, logprobs, strict=True)]
            by_budget = sum(1 for e, n, x in zip(ended, budgets, ids, strict=True) if not e and len(x) >= n)
            self._record(True, rows, ids, started, by_budget, sum(ended))
            return ids, logprobs

        def _record(
            self,
            tool_turn: bool,
            rows: list[list[int]],
            ids: list[Any],
            started: float,
            by_budget: int = 0,
            by_repeat: int = 0,
        ) -> None:
            self.generation_log.append(
                GenerateCall(
                    step=int(self.state.global_step),
                    tool_turn=tool_turn,
                    rows=len(rows),
                    input_tokens=max((len(r) for r in rows), default=0),
                    decode_steps=max((len(x) for x in ids), default=0),
                    seconds=round(time.monotonic() - started, 3),
                    stopped_by_budget=by_budget,
                    ended_by_repeat=by_repeat,
                )
            )

    return BudgetedGRPOTrainer


__all__ = [
    "GenerateCall",
    "after_opening",
    "can_merge_for_generation",
    "first_of_each_group",
    "last_of_each_group",
    "merged_adapter",
    "opening_tokens",
    "row_limits",
    "summarize",
    "trainer_class",
]
