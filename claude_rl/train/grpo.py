"""The RL phase (``claude-rl train --phase ppo``, alias ``grpo``): LoRA on the SFT model with TRL's
``GRPOTrainer``, multi-turn rollouts in a trace-replay environment, the behavioral reward.

``main(cfg)`` finds the SFT run to start from (the newest ``llama-claude-bc-vN`` with a ``merged/``
model, unless ``sft_model`` names one), takes the prompts of the dataset that run trained on, and
trains a LoRA adapter on the SFT model:

- PPO-style clipped-surrogate optimization in GRPOTrainer (TRL 1.x has no PPOTrainer):
  group-relative advantages over ``num_generations`` rollouts of each prompt instead of a learned
  critic, ``num_iterations`` ≥ 2 optimizer steps per generated batch so the ratio clipping
  (``epsilon``) acts, and a KL term (``beta`` > 0) to the SFT policy (the adapter disabled).
- Rollouts are multi-turn: GRPOTrainer's ``environment_factory`` gets one
  ``replay_env.ReplayEnvironment`` class per distinct tool list of the rows; a tool call that
  matches the recorded episode gets the recorded result, any other runs read-only in a sandboxed
  copy of the workspace (``claude_rl.train.replay_env``).
- The trainer is ``grpo_generation.trainer_class()``: GRPOTrainer whose tool turns stop each
  rollout at its own remaining completion budget and end a rollout the runtime's repeat rule
  ended, instead of decoding ``max_completion_length`` new tokens per turn for the whole batch;
  each ``generate`` call is logged (``metrics.generation`` in the manifest). With
  ``greedy_rollout`` it decodes one rollout per group greedily, as evaluation does; with
  ``guided_opening`` one rollout per group opens with the reference's first turn; with
  ``mask_opening`` the rollouts' first turns are left out of the loss; with
  ``merge_lora_for_generation`` rollouts decode with the adapter folded into the base weights.
- The reward is ``reward.make_behavioral_reward`` (weights from the config); the five parts are
  passed too with weight 0, so the trainer logs each one's mean and spread per step.
- The prompt is the row's system and user turns rendered with the row's tools, token for token
  what the SFT model saw (``schema_tokenizer``: the environment's tool methods carry the row's
  JSON schemas, which the chat template renders instead of schemas rebuilt from Python
  signatures; Grep's ``-i``/``-A`` arguments could not be Python parameters anyway).

Output, like the SFT run: ``<home>/models/<name>/`` (default ``llama-claude-ppo-vN``, never
overwritten) with ``adapter/``, ``merged/`` (the adapter merged into the SFT model, with the
tokenizer and the project's chat template), ``manifest.json`` (config, SFT run, dataset, metrics
with the reward parts per step and the groups skipped for zero reward spread, versions) and
``rewards.png`` (loss, KL, reward and its parts per step) and ``rollouts.jsonl`` (every scored
rollout: its messages, how it ended, its parts, reward and group advantage). Everything is written into
``.tmp-<name>/`` and renamed when the run succeeded; a failed run leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from claude_rl import paths
from claude_rl.scoring import episode_from_messages
from claude_rl.train import charts, grpo_generation, sft
from claude_rl.train.config import next_run_name
from claude_rl.train.grpo_config import (
    GRPORunConfig,
    check_runnable,
    load_grpo_config,
    on_cpu,
    to_grpo_kwargs,
)
from claude_rl.train.reward import PARTS, RewardLog, RewardSettings

__all__ = [
    "GRPOError",
    "GRPORunConfig",
    "NoSFTModelError",
    "PromptRow",
    "chat_tokenizer",
    "load_grpo_config",
    "load_prompts",
    "main",
    "schema_tokenizer",
]

PLOT = "rewards.png"
ROLLOUTS = "rollouts.jsonl"  # every scored rollout, one per line (reward.RewardLog)


class GRPOError(sft.TrainError):
    """An RL run that cannot start or did not finish; the message says what to change."""


class NoSFTModelError(GRPOError):
    """There is no SFT model to start from."""


# =============================================================================================
# Tools rendered from the environment's schemas


def tool_schemas(tools: list[Any] | None) -> list[Any] | None:
    """Tools as the chat template should see them: a callable carrying ``tool_schema`` (a
    ``ReplayEnvironment`` tool method) becomes that schema; such tools are put in their
    ``tool_position`` order (GRPOTrainer lists an environment's methods alphabetically)."""
    if not tools:
        return tools
    tools = list(tools)
    if not any(hasattr(t, "tool_schema") for t in tools):
        return tools
    order = sorted(range(len(tools)), key=lambda i: (getattr(tools[i], "tool_position", math.inf), i))
    return [
        json.loads(json.dumps(getattr(tools[i], "tool_schema", None)))
        if hasattr(tools[i], "tool_schema")
        else tools[i]
        for i in order
    ]


@lru_cache(maxsize=8)
def _schema_class(base: type) -> type:
    class SchemaTools(base):  # type: ignore[misc, valid-type]
        def apply_chat_template(self, conversation: Any, tools: Any = None, *args: Any, **kwargs: Any) -> Any:
            return super().apply_chat_template(conversation, tool_schemas(tools), *args, **kwargs)

        def parse_response(self, response: Any, schema: Any = None, **kwargs: Any) -> Any:
            if "tools" in kwargs:
                kwargs["tools"] = tool_schemas(kwargs["tools"])
            return super().parse_response(response, schema, **kwargs)

    SchemaTools.__name__ = base.__name__
    SchemaTools.__qualname__ = base.__qualname__
    return SchemaTools


def schema_tokenizer(tokenizer: Any) -> Any:
    """``tokenizer`` (changed in place and returned) rendering and parsing with ``tool_schemas``:
    GRPOTrainer passes the environment's tool methods to ``apply_chat_template`` and
    ``parse_response``; this makes them the row's schemas, in the row's order."""
    if not getattr(type(tokenizer), "_renders_tool_schemas", False):
        cls = _schema_class(type(tokenizer))
        cls._renders_tool_schemas = True
        tokenizer.__class__ = cls
    return tokenizer


# =============================================================================================
# Finding the SFT run and the prompts


def is_model_folder(folder: Path) -> bool:
    """An HF model folder: config.json and safetensors weights (one file or an index)."""
    return (folder / "config.json").is_file() and (
        (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
    )


def _read_manifest(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class SFTRun:
    folder: Path
    merged: Path
    manifest: dict[str, Any]


def find_sft_run(cfg: GRPORunConfig, home: Path) -> SFTRun:
    """The SFT run ``cfg.sft_model`` names (default: the newest ``<sft_prefix>-vN`` with a model)."""
    models = paths.models_dir(home)
    hint = "run `make train` first (or `claude-rl train --phase sft`), or set sft_model=<run folder>."
    if cfg.sft_model == "latest":
        pattern = re.compile(re.escape(cfg.sft_prefix) + r"-v(\d+)")
        found = []
        for child in models.iterdir() if models.is_dir() else []:
            m = pattern.fullmatch(child.name)
            if m and is_model_folder(child / "merged"):
                found.append((int(m.group(1)), child))
        if not found:
            raise NoSFTModelError(
                f"no SFT model under {models} (looked for {cfg.sft_prefix}-vN/merged/): {hint}"
            )
        folder = max(found)[1]
        return SFTRun(folder, folder / "merged", _read_manifest(folder))
    for candidate in paths.run_candidates(cfg.sft_model, home):
        if is_model_folder(candidate / "merged"):
            return SFTRun(candidate, candidate / "merged", _read_manifest(candidate))
        if is_model_folder(candidate):
            parent = candidate.parent if candidate.name == "merged" else candidate
            return SFTRun(parent, candidate, _read_manifest(parent))
    raise NoSFTModelError(f"sft_model {cfg.sft_model}: no model folder there or under {models}: {hint}")


def dataset_folder(cfg: GRPORunConfig, run: SFTRun) -> Path:
    if cfg.dataset != "sft":
        folder = Path(cfg.dataset).expanduser()
    else:
        named = (run.manifest.get("dataset") or {}).get("folder")
        if not named:
            raise GRPOError(
                f"the SFT run {run.folder} names no dataset in its manifest.json: "
                "set dataset=<dataset folder>."
            )
        folder = Path(named)
    if not (folder / f"{cfg.split}.jsonl").is_file():
        raise GRPOError(
            f"dataset {folder} has no {cfg.split}.jsonl: build one with `claude-rl dataset build`, "
            "or set dataset=<folder> / split=<split>."
        )
    return folder


@dataclass
class PromptRow:
    """One prompt of the RL run: the chat up to the user's request, its tools, the recorded episode
    (for the reward) and the recorded calls with their results (for the replay environment)."""

    prompt: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    reference: str  # Episode JSON
    replay: str  # replay_env.recorded_json
    episode_id: str
    meta: dict[str, Any]

    @property
    def tools_key(self) -> str:
        return json.dumps(self.tools, sort_keys=True)


def _source_episodes(folder: Path, home: Path) -> dict[str, Any]:
    """The dataset's source episodes by id, when the source can be read again (samples or the store)."""
    kind = (_read_manifest(folder).get("source") or {}).get("kind", "samples")
    if kind not in ("samples", "store"):
        return {}
    from claude_rl.dataset import DatasetError, load_source

    try:
        episodes, _ = load_source(kind, home)
    except (DatasetError, OSError):
        return {}
    return {ep.episode_id: ep for ep in episodes}


def load_prompts(
    folder: Path | str,
    split: str = "train",
    limit: int | None = None,
    seed: int = 42,
    home: Path | None = None,
    use_source: bool = True,
) -> list[PromptRow]:
    """The split's prompts, one per episode (parts of a split row joined). The reference is the
    dataset source's episode when it is still there with the same prompt, else the episode rebuilt
    from the row; the replayed results are the row's tool turns (what the SFT model saw)."""
    from claude_rl.train.replay_env import recorded_calls, recorded_json

    folder = Path(folder)
    rows = sft._read_jsonl(folder / f"{split}.jsonl")
    grouped: dict[str, list[dict[str, Any]]] = {}
    for i, row in enumerate(rows):
        eid = str((row.get("meta") or {}).get("episode_id") or f"{split}-row:{i}")
        grouped.setdefault(eid, []).append(row)
    source = _source_episodes(folder, Path(home or paths.home())) if use_source else {}
    out: list[PromptRow] = []
    for eid, parts in grouped.items():
        parts.sort(key=lambda r: int((r.get("meta") or {}).get("part") or 0))
        first = parts[0]
        head: list[dict[str, Any]] = []
        for m in first.get("messages") or []:
            if m.get("role") not in ("system", "user"):
                break
            head.append({"role": m["role"], "content": m.get("content") or ""})
        if not head or head[-1]["role"] != "user":
            continue  # a part that does not start at the prompt
        messages = [m for r in parts for m in r.get("messages") or []]
        meta = dict(first.get("meta") or {})
        tools = first.get("tools") or []
        tools = json.loads(tools) if isinstance(tools, str) else list(tools)
        rebuilt = episode_from_messages(messages, meta, episode_id=eid)
        episode = source.get(eid)
        reference = (
            episode if episode is not None and episode.prompt.strip() == rebuilt.prompt.strip() else rebuilt
        )
        out.append(
            PromptRow(
                prompt=head,
                tools=tools,
                reference=reference.model_dump_json(),
                replay=recorded_json(recorded_calls(messages)),
                episode_id=eid,
                meta=meta,
            )
        )
    if limit is not None and limit < len(out):
        picked = sorted(random.Random(seed).sample(range(len(out)), limit))
        out = [out[i] for i in picked]
    return out


def _dataset_max_tool_tokens(folder: Path) -> int | None:
    value = (_read_manifest(folder).get("options") or {}).get("max_tool_tokens")
    return int(value) if isinstance(value, int) else None


# =============================================================================================
# Metrics and plot


def _series(log_history: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [{"step": e["step"], "value": e[key]} for e in log_history if key in e and "step" in e]


def _metrics(log_history: list[dict[str, Any]], runtime: float, log: RewardLog, steps: int) -> dict[str, Any]:
    reward = _series(log_history, "reward")
    parts = {
        name: {
            "mean": _series(log_history, f"rewards/{name}/mean"),
            "std": _series(log_history, f"rewards/{name}/std"),
        }
        for name in PARTS
    }
    return {
        "steps": steps,
        "runtime_s": round(runtime, 1),
        "seconds_per_step": round(runtime / steps, 1) if steps else None,
        "reward_first": reward[0]["value"] if reward else None,
        "reward_last": reward[-1]["value"] if reward else None,
        "reward": reward,
        "reward_std": _series(log_history, "reward_std"),
        "parts": parts,
        "loss": _series(log_history, "loss"),
        "kl": _series(log_history, "kl"),
        "clip_ratio": _series(log_history, "clip_ratio/region_mean"),
        "frac_reward_zero_std": _series(log_history, "frac_reward_zero_std"),
        "tool_call_frequency": _series(log_history, "tools/call_frequency"),
        "tool_failure_frequency": _series(log_history, "tools/failure_frequency"),
        "completion_mean_length": _series(log_history, "completions/mean_length"),
        "completion_clipped_ratio": _series(log_history, "completions/clipped_ratio"),
        "groups": log.groups,
        "zero_spread_groups": log.zero_spread_groups,
        "generation_batches": log.batches,
    }


def plot_rewards(metrics: dict[str, Any], path: Path) -> bool:
    """Reward, its parts (mean per step), loss and KL into ``path``; False without matplotlib."""
    made = charts.figure(2, (8, 7), sharex=True)
    if made is None:
        return False
    fig, (top, bottom) = made
    if metrics["reward"]:
        steps = [e["step"] for e in metrics["reward"]]
        values = [e["value"] for e in metrics["reward"]]
        spread = [e["value"] for e in metrics["reward_std"]] or [0.0] * len(values)
        top.plot(steps, values, label="reward", marker="o", linewidth=2, color="black")
        if len(spread) == len(values):
            top.fill_between(
                steps,
                [v - s for v, s in zip(values, spread, strict=True)],
                [v + s for v, s in zip(values, spread, strict=True)],
                color="black",
                alpha=0.1,
            )
    for name, series in metrics["parts"].items():
        charts.line(top, series["mean"], "value", label=name, marker=".")
    top.set_ylabel("reward (mean per step)")
    top.set_ylim(-0.05, 1.05)
    top.legend(fontsize=7, loc="best")
    top.grid(alpha=0.3)
    charts.line(bottom, metrics["loss"], "value", label="loss", marker=".")
    charts.line(bottom, metrics["kl"], "value", label="KL to SFT", marker=".")
    bottom.set_xlabel("optimizer step")
    bottom.legend(fontsize=8)
    bottom.grid(alpha=0.3)
    fig.suptitle(f"zero-spread groups skipped: {metrics['zero_spread_groups']} of {metrics['groups']}")
    charts.save(fig, path)
    return True


# =============================================================================================
# The run


def _cuda_available() -> bool:
    return sft._cuda_available()


def _raise(problems: list[str]) -> None:
    sft._raise(problems, GRPOError)


def main(cfg: GRPORunConfig, home: Path | None = None) -> Path:
    """Train ``cfg`` and return the finished run folder ``<home>/models/<name>/``."""
    home = Path(home if home is not None else paths.home())
    cuda = _cuda_available()
    cpu = on_cpu(cfg, cuda)
    _raise(check_runnable(cfg, cuda))
    run = find_sft_run(cfg, home)
    folder = dataset_folder(cfg, run)
    prompts = load_prompts(folder, cfg.split, cfg.max_prompts, cfg.seed, home)
    if len(prompts) < cfg.prompts_per_step:
        raise GRPOError(
            f"{folder}/{cfg.split}.jsonl gives {len(prompts)} prompts, fewer than prompts_per_step "
            f"({cfg.prompts_per_step}): lower prompts_per_step or use a larger dataset."
        )
    workspace = Path(cfg.workspace).expanduser() if cfg.workspace else None
    if workspace is not None and not workspace.is_dir():
        raise GRPOError(f"workspace {workspace} is not a folder")

    models = paths.models_dir(home)
    name = next_run_name(cfg, models)  # type: ignore[arg-type]  # uses name / name_prefix only
    final = models / name
    if final.exists():
        raise GRPOError(f"{final} already exists: pick another name (runs are never overwritten).")
    tmp = models / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        _train(cfg, run, folder, prompts, workspace, tmp, name, cpu)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
    shutil.rmtree(tmp / "scratch", ignore_errors=True)
    os.replace(tmp, final)
    return final


def chat_tokenizer(folder: Path) -> Any:
    """The folder's tokenizer with the project's chat template (its assistant-token mask)."""
    from transformers import AutoTokenizer

    from claude_rl.chat_format import apply_to_tokenizer, format_for

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return apply_to_tokenizer(tok, format_for(tok))


def build_dataset(prompts: list[PromptRow]) -> tuple[Any, list[str]]:
    """The trainer's dataset (prompt, reference, replay, episode_id, and environment when the rows
    have several tool lists) and the distinct tool-list keys, in first-seen order."""
    from datasets import Dataset

    keys = list(dict.fromkeys(p.tools_key for p in prompts))
    records = []
    for p in prompts:
        record = {
            "prompt": p.prompt,
            "reference": p.reference,
            "replay": p.replay,
            "episode_id": p.episode_id,
        }
        if len(keys) > 1:
            record["environment"] = f"tools{keys.index(p.tools_key)}"
        records.append(record)
    return Dataset.from_list(records), keys


def environment_factories(
    prompts: list[PromptRow], defaults: dict[str, Any], created: list[Any] | None = None
) -> Any:
    """GRPOTrainer's ``environment_factory``: one factory (one tool list) or a dict by tool list."""
    from claude_rl.train.replay_env import environment_class

    tool_lists = {p.tools_key: p.tools for p in reversed(prompts)}  # the key sorts keys; keep the row's order
    keys = list(dict.fromkeys(p.tools_key for p in prompts))
    factories = {}
    for i, key in enumerate(keys):
        cls = environment_class(tool_lists[key], name=f"ReplayEnvironment{i}", **defaults)

        def factory(cls: type = cls) -> Any:
            env = cls()
            if created is not None:
                created.append(env)
            return env

        factories[f"tools{i}"] = factory
    return factories["tools0"] if len(keys) == 1 else factories


def step_generates(step: int, args: Any) -> bool:
    """Whether optimizer step ``step`` (1-based) generates a batch. TRL generates at the micro-steps
    ``k`` (0-based) with ``k % (steps_per_generation * num_iterations) == 0``; an optimizer step is
    ``gradient_accumulation_steps`` micro-steps. The other steps reuse the buffered batch."""
    accumulate = max(1, int(args.gradient_accumulation_steps))
    every = max(1, int(args.steps_per_generation or accumulate) * int(args.num_iterations))
    first = (step - 1) * accumulate
    return any(k % every == 0 for k in range(first, first + accumulate))


def time_budget_callback(minutes: float | None) -> Any:
    """A TrainerCallback that stops training before ``minutes`` would be exceeded by the next step,
    predicted as the longest step so far of the same kind: a step that generates a batch (minutes
    on a CPU) or one that reuses it (``num_iterations`` ≥ 2; a few minutes). Judging every step by
    the longest, a generating one, stopped runs before the reusing step their batch had already
    paid for (measured: a long CPU run that used its last batch once). Its ``stopped`` says
    whether it did."""
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self) -> None:
            self.limit = minutes * 60 if minutes else None
            self.started = self.last = time.monotonic()
            self.longest: dict[bool, float] = {}  # generating step? -> longest such step
            self.stopped = False

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = self.last = time.monotonic()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            now = time.monotonic()
            generated = step_generates(state.global_step, args)
            self.longest[generated] = max(self.longest.get(generated, 0.0), now - self.last)
            self.last = now
            upcoming = step_generates(state.global_step + 1, args)
            # A kind not seen yet (the first reusing step) is judged by the longest step seen.
            expected = self.longest.get(upcoming, max(self.longest.values()))
            if self.limit is not None and now - self.started + expected > self.limit:
                if state.global_step < state.max_steps:
                    self.stopped = True
                control.should_training_stop = True

    return TimeBudget()


def reward_settings(cfg: GRPORunConfig) -> RewardSettings:
    """The config's ``reward`` section as the reward's settings (a part left out weighs 0)."""
    return RewardSettings(
        weights={p: float(cfg.reward.weights.get(p, 0.0)) for p in PARTS},
        call_budget_factor=cfg.reward.call_budget_factor,
        call_budget_slack=cfg.reward.call_budget_slack,
        invalid_call_penalty=cfg.reward.invalid_call_penalty,
        repeated_call_penalty=cfg.reward.repeated_call_penalty,
        unseen_answer_penalty=cfg.reward.unseen_answer_penalty,
        broken_end_penalty=cfg.reward.broken_end_penalty,
        grounded_answer_bonus=cfg.reward.grounded_answer_bonus,
    )


def build_trainer(
    cfg: GRPORunConfig,
    model: Any,
    tokenizer: Any,
    prompts: list[PromptRow],
    output_dir: Path,
    cpu: bool,
    env_defaults: dict[str, Any],
    log: RewardLog | None = None,
    created: list[Any] | None = None,
    callbacks: list[Any] | None = None,
) -> Any:
    """A GRPOTrainer for ``cfg`` (LoRA from ``cfg.lora``, the behavioral reward, replay environments)."""
    import trl
    from peft import LoraConfig

    from claude_rl.train.reward import PART_FUNCTIONS, make_behavioral_reward

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # environment_factory is marked experimental
    dataset, _ = build_dataset(prompts)
    settings = reward_settings(cfg)
    reward_funcs = [make_behavioral_reward(settings, cfg.num_generations, log)] + [
        PART_FUNCTIONS[p] for p in PARTS
    ]
    kwargs = to_grpo_kwargs(cfg, cpu, output_dir=output_dir)
    kwargs["reward_weights"] = [1.0] + [0.0] * len(PARTS)  # the parts are logged, not counted twice
    args = trl.GRPOConfig(**kwargs)
    peft_config = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    trainer = grpo_generation.trainer_class()(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=schema_tokenizer(tokenizer),
        peft_config=peft_config,
        environment_factory=environment_factories(prompts, env_defaults, created),
        callbacks=callbacks,
    )
    trainer.greedy_rollout = cfg.greedy_rollout
    trainer.guided_opening = cfg.guided_opening
    trainer.mask_opening = cfg.mask_opening
    trainer.merge_lora_for_generation = cfg.merge_lora_for_generation
    return trainer


def _train(
    cfg: GRPORunConfig,
    run: SFTRun,
    folder: Path,
    prompts: list[PromptRow],
    workspace: Path | None,
    tmp: Path,
    name: str,
    cpu: bool,
) -> None:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from claude_rl.tools.sandbox import SandboxPolicy
    from claude_rl.train.reward import use_outcome_similarity

    transformers.set_seed(cfg.seed)
    tok = chat_tokenizer(run.merged)
    dtype = (
        torch.float32
        if cpu and cfg.precision in ("auto", "fp32")
        else {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "auto": torch.bfloat16}[
            cfg.precision
        ]
    )
    load_kwargs: dict[str, Any] = {"dtype": dtype}
    if cfg.attn_implementation:
        load_kwargs["attn_implementation"] = cfg.attn_implementation
    if cfg.lora.load_in_4bit:
        from transformers import BitsAndBytesConfig

        load_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=cfg.lora.bnb_4bit_quant_type,
            bnb_4bit_compute_dtype=getattr(torch, cfg.lora.bnb_4bit_compute_dtype),
            bnb_4bit_use_double_quant=cfg.lora.bnb_4bit_use_double_quant,
        )
    model = AutoModelForCausalLM.from_pretrained(str(run.merged), **load_kwargs)

    outcome = use_outcome_similarity(cfg.reward.outcome_similarity)
    max_tool_tokens = cfg.max_tool_tokens or _dataset_max_tool_tokens(folder)
    env_defaults = {
        "workspace": workspace,
        "policy": SandboxPolicy(timeout_s=cfg.tool_timeout_s),
        "max_tool_tokens": max_tool_tokens,
        "tokenizer": chat_tokenizer(run.merged),
        "scratch_dir": tmp / "scratch",
    }
    log = RewardLog(rollouts_path=tmp / ROLLOUTS)
    created: list[Any] = []
    budget = time_budget_callback(cfg.max_train_minutes)
    trainer = build_trainer(
        cfg, model, tok, prompts, tmp / "checkpoints", cpu, env_defaults, log, created, [budget]
    )
    started = time.monotonic()
    try:
        trainer.train()
    finally:
        for env in created:
            env._close()
    runtime = time.monotonic() - started

    trained = trainer.model
    trained.save_pretrained(str(tmp / "adapter"))
    merged = trained.merge_and_unload()
    merged.save_pretrained(str(tmp / "merged"), safe_serialization=True)
    chat_tokenizer(run.merged).save_pretrained(str(tmp / "merged"))

    metrics = _metrics(trainer.state.log_history, runtime, log, trainer.state.global_step)
    metrics["outcome_similarity"] = outcome
    metrics["generation"] = grpo_generation.summarize(trainer.generation_log)
    metrics["stopped_by_time_budget"] = budget.stopped
    plotted = plot_rewards(metrics, tmp / PLOT)
    ds_manifest = folder / "manifest.json"
    manifest = {
        "name": name,
        "phase": "ppo",
        "algorithm": "clipped-surrogate policy optimization in trl.GRPOTrainer (group-relative advantages, "
        "KL to the SFT policy, LoRA)",
        "config": cfg.model_dump(mode="json"),
        # The model the adapter applies to (export merges adapter/ into it).
        "base_model": run.manifest.get("base_model") or str(run.merged),
        "base_model_folder": str(run.merged),
        "sft_run": {
            "folder": str(run.folder),
            "name": run.manifest.get("name") or run.folder.name,
            "base_model_folder": run.manifest.get("base_model_folder"),
        },
        "dataset": {
            "folder": str(folder),
            "split": cfg.split,
            "manifest_sha256": sft._sha256(ds_manifest) if ds_manifest.is_file() else None,
            "prompts": len(prompts),
            "max_tool_tokens": max_tool_tokens,
        },
        "environment": {
            "workspace": str(workspace) if workspace else "data/workspace (bundled)",
            "sandbox": "read-only",
            "calls": _call_sources(log),
        },
        "device": "cpu" if cpu else "cuda",
        "metrics": metrics,
        "reward_plot": PLOT if plotted else "skipped: matplotlib is not installed",
        "versions": sft._versions(),
        "outputs": {"adapter": "adapter/", "merged": "merged/", "rollouts": ROLLOUTS},
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _call_sources(log: RewardLog) -> dict[str, int]:
    total: dict[str, int] = {}
    for batch in log.batches:
        for source, n in (batch.get("environment_calls") or {}).items():
            total[source] = total.get(source, 0) + n
    return total
