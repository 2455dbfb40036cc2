"""The SFT run config: one typed model, YAML presets in ``configs/``, ``key=value`` overrides.

A preset holds only the values that differ from the defaults below, and begins with a comment
giving the command that runs it. Every field carries a description (the reference for preset
writers); unknown keys are refused (``extra="forbid"``), so a typo fails loudly instead of being
ignored. ``check_runnable`` turns machine mismatches (a GPU-only preset without CUDA) into clear
messages before anything heavy loads; ``to_trl_kwargs`` maps the config onto ``trl.SFTConfig``,
applying the CPU traps measured in ``../shared/docs/trl-notes.md`` (TRL defaults to bf16 and
gradient checkpointing; the first raises on CPU, the second only slows it down).
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field, model_validator

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_CONFIG = CONFIGS_DIR / "sft-cpu-default.yaml"
CPU_PRESET = "configs/sft-cpu-default.yaml"
GPU_LORA_PRESET = "configs/sft-llama31-8b-lora.yaml"


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says what to change."""


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="Train LoRA adapters; false fine-tunes every weight (more memory, no QLoRA)."
    )
    r: int = Field(16, ge=1, description="Adapter rank: higher fits more, costs memory and time.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (the update is scaled by alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: str | list[str] = Field(
        "all-linear",
        description='Modules that get adapters: "all-linear" (PEFT shortcut) or a list of module names.',
    )
    load_in_4bit: bool = Field(
        False,
        description="QLoRA: load the frozen base in 4-bit with bitsandbytes (CUDA only; ~4x less memory).",
    )
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field(
        "nf4",
        description="4-bit data type; NF4 is the QLoRA paper's choice for normally distributed weights.",
    )
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16"] = Field(
        "bfloat16", description="Dtype the 4-bit weights are dequantized to for each matmul."
    )
    bnb_4bit_use_double_quant: bool = Field(
        True, description="Quantize the quantization constants too (saves ~0.4 bits per weight)."
    )

    @model_validator(mode="after")
    def _qlora_needs_lora(self) -> LoraSettings:
        if self.load_in_4bit and not self.enabled:
            raise ValueError("lora.load_in_4bit (QLoRA) needs lora.enabled: a 4-bit base cannot be trained")
        return self


class SFTRunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # --- what to train on ---
    base_model: str = Field(
        "smollm2-135m",
        description='"smollm2-135m" (the bundled GGUF, materialized once into a safetensors folder), '
        "a local model folder, or an already-downloaded hub id.",
    )
    dataset: str = Field(
        "samples",
        description="A dataset folder from `claude-rl dataset build` (train/validation/test.jsonl + "
        'manifest.json), or "samples": build one from the bundled sample corpus.',
    )
    name: str | None = Field(
        None, description="Run name (output under data/models/<name>/); default: the next <name_prefix>-vN."
    )
    name_prefix: str = Field(
        "llama-claude-bc", description="Prefix of automatic run names: llama-claude-bc-v1, -v2, ..."
    )
    max_train_rows: int | None = Field(
        None, ge=1, description="Train on the first N training rows only (a time budget for CPU demos)."
    )
    max_eval_rows: int | None = Field(
        None,
        ge=1,
        description="Evaluate on the first N validation rows only (each eval costs forward passes).",
    )
    max_length: int = Field(
        2048, ge=16, description="Tokens per row (per packed sequence with packing); longer rows are cut."
    )
    dataset_max_tool_tokens: int = Field(
        384,
        ge=16,
        description='Building the "samples" dataset: cut each tool output to this many tokens (head + '
        "tail). The local runtime cuts tool results the same way, so keep it for evaluation.",
    )

    # --- model and adapters ---
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA / QLoRA adapter settings.")
    attn_implementation: str | None = Field(
        None,
        description='Attention kernel ("sdpa", "flash_attention_2", "eager", ...); None lets transformers '
        "choose. Packing without cross-example attention needs a varlen kernel (flash attention).",
    )

    # --- optimization ---
    per_device_train_batch_size: int = Field(2, ge=1, description="Rows per device per forward pass.")
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Forward passes per optimizer step (effective batch = batch x this x devices)."
    )
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    num_train_epochs: float = Field(1.0, gt=0, description="Passes over the training rows (max_steps wins).")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps; None: epochs."
    )
    warmup_steps: float = Field(
        0.0, ge=0, description="Linear warmup: optimizer steps, or a fraction of all steps when below 1."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
    ] = Field("cosine", description="Learning-rate schedule after warmup.")
    seed: int = Field(
        42, description="Seed for weight init of adapters, shuffling and dropout (reproducible)."
    )

    # --- sequence handling ---
    packing: bool = Field(
        False, description="Pack several rows into each max_length sequence (fewer pad tokens; GPU)."
    )
    padding_free: bool = Field(
        False,
        description="Concatenate the batch without padding (a flash-attention kernel keeps rows apart).",
    )

    # --- hardware and precision ---
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description='"auto": CUDA when available, else CPU. "cuda" refuses to run without a GPU.'
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description='"auto": bf16 on CUDA; on CPU bf16 autocast (fp32 weights) when the CPU computes bf16 '
        "natively (AVX512-BF16 or AMX: measured 1.6x faster LoRA steps than fp32 on such a CPU), else fp32. "
        "fp16 needs CUDA.",
    )
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto",
        description='Recompute activations in backward to save memory. "auto": on for CUDA, off on CPU '
        "(where memory is plentiful and it only costs time); true forces it everywhere.",
    )

    # --- evaluation, early stopping, checkpoints ---
    eval_strategy: Literal["no", "steps", "epoch"] = Field(
        "steps", description="When to compute validation loss."
    )
    eval_on_start: bool = Field(
        True,
        description="Also evaluate before the first step: the validation loss of the starting model, so "
        "the curve shows whether training lowered it.",
    )
    eval_steps: int = Field(
        50, ge=1, description='Optimizer steps between evaluations (eval_strategy "steps").'
    )
    early_stopping_patience: int | None = Field(
        3, ge=1, description="Stop after this many evaluations without improvement; None: never stop early."
    )
    early_stopping_threshold: float = Field(
        0.0, ge=0, description="Minimum validation-loss decrease that counts as an improvement."
    )
    save_steps: int = Field(
        50,
        ge=1,
        description="Optimizer steps between checkpoints (a multiple of eval_steps with early stopping).",
    )
    save_total_limit: int | None = Field(
        2, ge=1, description="Checkpoints kept (the best one is always kept); None keeps all."
    )
    resume_from: str | None = Field(
        "auto",
        description='"auto": resume from the run folder\'s latest checkpoint if there is one; a checkpoint '
        "path; or None to always start fresh.",
    )

    # --- logging ---
    logging_steps: int = Field(5, ge=1, description="Optimizer steps between loss log lines.")
    tensorboard: bool = Field(False, description="Write TensorBoard logs into the run folder.")

    @computed_field(description="True when the run cannot work without CUDA (QLoRA, fp16, device cuda).")
    @property
    def requires_cuda(self) -> bool:
        return self.lora.load_in_4bit or self.device == "cuda" or self.precision == "fp16"

    @model_validator(mode="after")
    def _consistent(self) -> SFTRunConfig:
        if self.early_stopping_patience is not None:
            if self.eval_strategy == "no":
                raise ValueError(
                    "early_stopping_patience needs evaluation: set eval_strategy, or patience to null"
                )
            if self.eval_strategy == "steps" and self.save_steps % self.eval_steps:
                raise ValueError(
                    f"with early stopping, save_steps ({self.save_steps}) must be a multiple of eval_steps "
                    f"({self.eval_steps}): the best checkpoint is picked among evaluated ones"
                )
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.name or self.name_prefix):
            raise ValueError("name / name_prefix may hold only letters, digits, '.', '_' and '-'")
        return self


# --- loading ----------------------------------------------------------------------------------


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node = child
    node[last] = value


def _field_names(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        names.append(prefix + name)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            names += _field_names(info.annotation, f"{prefix}{name}.")
    return names


def explain_validation(
    err: ValidationError, source: str, model: type[BaseModel], what: str = "run config"
) -> str:
    """A pydantic error as lines a user can act on; unknown keys get the closest known setting."""
    known = _field_names(model)
    lines = [f"invalid {what} ({source}):"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(where, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(f"  {where}: unknown setting{hint}")
        else:
            lines.append(f"  {where}: {e['msg']}")
    return "\n".join(lines)


def load_yaml_config(
    model: type[Any],
    path: Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    example: str = "lora.r=8",
    what: str = "run config",
) -> Any:
    """``model`` validated from the YAML file ``path`` with ``key=value`` overrides applied.

    Override values are parsed as YAML, so ``lora.r=8 learning_rate=5e-4 max_steps=null`` are an
    int, a float and None; dotted keys reach into sections. Every problem is a ``ConfigError``.
    """
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (for example {example})")
        _set_dotted(data, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    source = str(path) + (f" + overrides {' '.join(overrides)}" if overrides else "")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(explain_validation(e, source, model, what)) from None


def load_config(path: Path | str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> SFTRunConfig:
    """The SFT config in ``path`` (default: the CPU preset) with ``key=value`` overrides applied."""
    return load_yaml_config(SFTRunConfig, Path(path) if path is not None else DEFAULT_CONFIG, overrides)


# --- checks and mapping -----------------------------------------------------------------------


def _on_cpu(cfg: SFTRunConfig, cuda_available: bool) -> bool:
    return cfg.device == "cpu" or (cfg.device == "auto" and not cuda_available)


def check_runnable(cfg: SFTRunConfig, cuda_available: bool) -> list[str]:
    """Why ``cfg`` cannot run on this machine (empty when it can)."""
    problems = []
    if not cuda_available:
        if cfg.lora.load_in_4bit:
            problems.append(
                "QLoRA (lora.load_in_4bit) needs a CUDA GPU and none is available: use "
                f"{CPU_PRESET} on this machine, or {GPU_LORA_PRESET} on a GPU without bitsandbytes."
            )
        if cfg.precision == "fp16":
            problems.append(
                "precision fp16 needs a CUDA GPU and none is available: set precision=auto or use "
                f"{CPU_PRESET}."
            )
        if cfg.precision == "bf16" and not cpu_has_bf16():
            problems.append(
                "precision bf16 on a CPU without native bf16 (AVX512-BF16 or AMX) would be emulated and "
                "slow: set precision=auto (fp32 here)."
            )
        if cfg.device == "cuda":
            problems.append(
                f"device is cuda but no CUDA GPU is available: set device=auto or use {CPU_PRESET}."
            )
    elif cfg.device == "cpu" and cfg.requires_cuda:
        problems.append("device is cpu but the config needs CUDA (QLoRA or fp16): set device=auto.")
    if cfg.lora.load_in_4bit and importlib.util.find_spec("bitsandbytes") is None:
        problems.append("QLoRA needs bitsandbytes: pip install -e '.[gpu]'.")
    if cfg.dataset != "samples":
        folder = Path(cfg.dataset)
        if not (folder / "train.jsonl").is_file():
            problems.append(
                f"dataset {folder} has no train.jsonl: build one with `claude-rl dataset build`, "
                "or set dataset=samples."
            )
        manifest = folder / "manifest.json"
        if manifest.is_file():
            import json

            built_for = json.loads(manifest.read_text(encoding="utf-8")).get("options", {}).get("tokenizer")
            if built_for and built_for != cfg.base_model:
                problems.append(
                    f"dataset {folder} was built for the {built_for} tokenizer, not {cfg.base_model}: "
                    f"rebuild it with --tokenizer {cfg.base_model} (row lengths and truncation depend on it)."
                )
    return problems


def next_run_name(cfg: SFTRunConfig, models_dir: Path) -> str:
    """``cfg.name``, or the first ``<name_prefix>-vN`` not yet in ``models_dir``."""
    return cfg.name or next_free_name(cfg.name_prefix, models_dir)


def next_free_name(prefix: str, models_dir: Path) -> str:
    """The first ``<prefix>-vN`` not yet in ``models_dir``."""
    taken = {p.name for p in models_dir.iterdir()} if models_dir.is_dir() else set()
    n = 1
    while f"{prefix}-v{n}" in taken:
        n += 1
    return f"{prefix}-v{n}"


@lru_cache(maxsize=1)
def checkpointing_arg() -> str:
    """TrainingArguments' name for activation recomputation: ``activation_checkpointing`` from
    transformers 5.2x on, ``gradient_checkpointing`` before (and a deprecated alias after)."""
    from transformers import TrainingArguments

    fields = getattr(TrainingArguments, "__dataclass_fields__", {})
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16), read from /proc/cpuinfo.

    Where it does, PyTorch's bf16 matmuls run on it (measured 2.0 TFLOP/s against 0.26 for fp32 on
    the 2-core development VM) and autocast makes a LoRA step ~1.6x faster; elsewhere bf16 is
    emulated, so CPU runs stay fp32. Other systems (no /proc/cpuinfo) report False.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def to_trl_kwargs(cfg: SFTRunConfig, on_cpu: bool, output_dir: Path | str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``trl.SFTConfig`` (the model, dataset and LoRA are the trainer's)."""
    if cfg.precision == "auto":
        bf16, fp16 = (not on_cpu) or cpu_has_bf16(), False
    else:
        bf16, fp16 = cfg.precision == "bf16", cfg.precision == "fp16"
    checkpointing = (not on_cpu) if cfg.gradient_checkpointing == "auto" else cfg.gradient_checkpointing
    early = cfg.early_stopping_patience is not None
    kwargs: dict[str, Any] = {
        "use_cpu": on_cpu,
        "bf16": bf16,
        "fp16": fp16,
        # transformers 5.2x name; the older gradient_checkpointing is a deprecated alias (TRL defaults it on).
        checkpointing_arg(): checkpointing,
        # Loss on the assistant's tokens only: the template's {% generation %} markers become labels.
        "assistant_only_loss": True,
        "max_length": cfg.max_length,
        "packing": cfg.packing,
        "padding_free": cfg.padding_free,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "per_device_eval_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "learning_rate": cfg.learning_rate,
        "num_train_epochs": cfg.num_train_epochs,
        "max_steps": cfg.max_steps if cfg.max_steps is not None else -1,
        "warmup_steps": cfg.warmup_steps,
        "weight_decay": cfg.weight_decay,
        "lr_scheduler_type": cfg.lr_scheduler_type,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "eval_strategy": cfg.eval_strategy,
        "eval_steps": cfg.eval_steps,
        "eval_on_start": cfg.eval_on_start and cfg.eval_strategy != "no",
        # Early stopping keeps the best checkpoint, so saving must follow the evaluation schedule.
        "save_strategy": cfg.eval_strategy if early else "steps",
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "load_best_model_at_end": early,
        "metric_for_best_model": "eval_loss" if early else None,
        "greater_is_better": False if early else None,
        "logging_steps": cfg.logging_steps,
        "report_to": ["tensorboard"] if cfg.tensorboard else "none",
        "dataloader_pin_memory": not on_cpu,
    }
    if checkpointing:
        kwargs[f"{checkpointing_arg()}_kwargs"] = {"use_reentrant": False}
    if output_dir is not None:
        kwargs["output_dir"] = str(output_dir)
    return kwargs
