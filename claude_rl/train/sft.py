"""Supervised fine-tuning (``claude-rl train --phase sft``): LoRA on the base model with TRL.

``main(cfg)`` checks the config against the machine and the dataset before loading anything
heavy, trains with ``trl.SFTTrainer`` and writes one run folder ``<home>/models/<name>/``:

- ``adapter/``: the PEFT LoRA adapter;
- ``merged/``: the adapter merged into the base (safetensors) with the tokenizer and the
  project's chat template: loadable with ``AutoModelForCausalLM.from_pretrained`` alone;
- ``manifest.json``: the config, dataset manifest sha256, base model, metrics and versions;
- ``loss.png``: train and validation loss curves (when matplotlib is installed);
- ``tensorboard/``: TensorBoard logs (``tensorboard: true``).

Everything is written into ``<home>/models/.tmp-<name>/`` and renamed to ``<name>`` only when the
run succeeded, so a failed run never leaves a half-written model folder. On failure the temporary
folder is removed, unless it already holds a checkpoint: then it is kept so that the next run of
the same name resumes from it (``resume_from: auto``). Automatic names (``<prefix>-vN``) pick the
first N without a finished folder, so re-running after an interruption picks the same name and
resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from claude_rl import paths
from claude_rl.train import charts
from claude_rl.train.config import SFTRunConfig, check_runnable, next_run_name, to_trl_kwargs

SAMPLES = "samples"


class TrainError(RuntimeError):
    """A run that cannot start or did not finish; the message says what to change."""


# --- dataset ----------------------------------------------------------------------------------


def _samples_options(cfg: SFTRunConfig) -> dict[str, Any]:
    """How the samples dataset of ``cfg`` is built: rows longer than max_length are split into parts
    (rather than cut by the trainer), tool outputs cut to dataset_max_tool_tokens."""
    return {
        "tokenizer": cfg.base_model,
        "max_tokens": cfg.max_length,
        "max_tool_tokens": cfg.dataset_max_tool_tokens,
    }


def _samples_folder(cfg: SFTRunConfig, home: Path) -> Path:
    from claude_rl.base_model import DEFAULT_MODEL

    suffix = (
        ""
        if cfg.base_model == DEFAULT_MODEL
        else "-" + "".join(c if c.isalnum() or c in "._-" else "_" for c in cfg.base_model)
    )
    budget = f"len{cfg.max_length}-tool{cfg.dataset_max_tool_tokens}"
    return home / "datasets" / f"samples-messages{suffix}-{budget}"


def _built_with(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("options") or {}
    except (OSError, ValueError):
        return {}


def prepare_dataset(cfg: SFTRunConfig, home: Path) -> Path:
    """The dataset folder of ``cfg``: built from the bundled samples when ``dataset: samples``
    (again when the folder was built with other options)."""
    if cfg.dataset != SAMPLES:
        return Path(cfg.dataset).expanduser()
    folder = _samples_folder(cfg, home)
    options = _samples_options(cfg)
    built = _built_with(folder)
    if not (folder / "train.jsonl").is_file() or any(built.get(k) != v for k, v in options.items()):
        from claude_rl.dataset import BuildOptions, DatasetError, build_dataset

        try:
            build_dataset(BuildOptions(source="samples", out=folder, **options), home=home)
        except DatasetError as e:
            raise TrainError(f"could not build the samples dataset: {e}") from e
    return folder


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_dataset(folder: Path, cfg: SFTRunConfig) -> list[str]:
    """Why ``folder`` cannot be trained on with ``cfg`` (empty when it can)."""
    if not folder.is_dir():
        return [f"dataset folder {folder} does not exist: build one with `claude-rl build-dataset`."]
    problems = []
    train = folder / "train.jsonl"
    if not train.is_file() or not _read_jsonl(train):
        problems.append(f"dataset {folder} has no training rows (train.jsonl is missing or empty).")
    if cfg.eval_strategy != "no" and not _read_jsonl(folder / "validation.jsonl"):
        problems.append(
            f"dataset {folder} has no validation rows but eval_strategy is {cfg.eval_strategy}: "
            "build a dataset with a validation split, or set eval_strategy=no early_stopping_patience=null."
        )
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        problems.append(f"dataset {folder} has no manifest.json: build it with `claude-rl build-dataset`.")
    else:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        if data.get("format", "messages") != "messages":
            problems.append(f"dataset {folder} is in the {data.get('format')} format; SFT needs messages.")
        built_for = (data.get("options") or {}).get("tokenizer")
        if built_for != cfg.base_model:
            problems.append(
                f"dataset {folder} was built for the {built_for} tokenizer, not {cfg.base_model}: rebuild "
                f"it with --tokenizer {cfg.base_model} (row lengths and truncation depend on it)."
            )
    return problems


def _normalize(row: dict[str, Any]) -> dict[str, Any]:
    """A row Arrow can store without changing what the template renders.

    Arrow merges the keys of every message (and of every call's arguments) into one struct, filling
    the gaps with None: ``"train": None`` would render a trained turn as untrained context, and
    ``{"path": None}`` would add arguments. So every message gets an explicit ``train`` and the
    call arguments become JSON strings (the template splices strings in verbatim).
    """
    messages = []
    for m in row["messages"]:
        m = dict(m)
        m["train"] = bool(m.get("train", True))
        if m.get("tool_calls"):
            calls = []
            for call in m["tool_calls"]:
                fn = dict(call["function"])
                if not isinstance(fn.get("arguments"), str):
                    fn["arguments"] = json.dumps(fn.get("arguments") or {}, ensure_ascii=False)
                calls.append({**call, "function": fn})
            m["tool_calls"] = calls
        messages.append(m)
    return {"messages": messages, "tools": row["tools"]}


def _subsample(rows: list[dict[str, Any]], limit: int | None, seed: int) -> list[dict[str, Any]]:
    if limit is None or limit >= len(rows):
        return rows
    picked = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in picked]


def load_rows(folder: Path, split: str, limit: int | None, seed: int) -> list[dict[str, Any]]:
    """``split``'s rows (at most ``limit``, a seeded sample in file order), ready for a Dataset."""
    return [_normalize(r) for r in _subsample(_read_jsonl(folder / f"{split}.jsonl"), limit, seed)]


# --- run folder -------------------------------------------------------------------------------


def _latest_checkpoint(folder: Path) -> Path | None:
    ckpts = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1])) if ckpts else None


def _has_checkpoint(tmp: Path) -> bool:
    return (tmp / "checkpoints").is_dir() and _latest_checkpoint(tmp / "checkpoints") is not None


def _resume_point(cfg: SFTRunConfig, ckpt_dir: Path) -> str | None:
    if cfg.resume_from is None:
        return None
    if cfg.resume_from == "auto":
        latest = _latest_checkpoint(ckpt_dir) if ckpt_dir.is_dir() else None
        return str(latest) if latest else None
    if not Path(cfg.resume_from).is_dir():
        raise TrainError(f"resume_from {cfg.resume_from}: no such checkpoint folder")
    return cfg.resume_from


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _metrics(log_history: list[dict[str, Any]], runtime: float, tokens: int | None) -> dict[str, Any]:
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "eval_loss" not in e]
    evals = [{"step": e["step"], "eval_loss": e["eval_loss"]} for e in log_history if "eval_loss" in e]
    summary = next((e for e in reversed(log_history) if "train_runtime" in e), {})
    return {
        "train_loss_first": train[0][1] if train else None,
        "train_loss_last": train[-1][1] if train else None,
        "train_loss": [{"step": s, "loss": v} for s, v in train],
        "eval_loss": evals,
        "train_loss_mean": summary.get("train_loss"),
        "steps": summary.get("step") or (train[-1][0] if train else 0),
        "runtime_s": round(runtime, 1),
        "tokens_seen": tokens,
        "tokens_per_s": round(tokens / runtime, 1) if tokens and runtime > 0 else None,
    }


def plot_loss(metrics: dict[str, Any], path: Path) -> bool:
    """Train and validation loss against steps into ``path``; False when matplotlib is missing."""
    made = charts.figure(1, (7, 4))
    if made is None:
        return False
    fig, (ax,) = made
    charts.line(ax, metrics["train_loss"], "loss", label="train", marker=".")
    charts.line(ax, metrics["eval_loss"], "eval_loss", label="validation", marker="o")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    charts.save(fig, path)
    return True


# --- the run ----------------------------------------------------------------------------------


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def preflight(cfg: SFTRunConfig, home: Path, cuda: bool) -> list[str]:
    """Problems found without loading a model: the machine, then the dataset (when given as a path)."""
    problems = check_runnable(cfg, cuda)
    if cfg.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            problems.append("tensorboard: true needs the tensorboard package: pip install tensorboard.")
    if cfg.dataset != SAMPLES:
        # check_runnable already reports a missing train.jsonl and a tokenizer mismatch.
        seen = set(problems)
        problems += [p for p in check_dataset(Path(cfg.dataset).expanduser(), cfg) if p not in seen]
    return problems


def _raise(problems: list[str], error: type[TrainError] = TrainError) -> None:
    """``error`` listing every distinct problem, when there is any (shared with the RL phase)."""
    if problems:
        raise error("cannot train:\n" + "\n".join(f"  - {p}" for p in dict.fromkeys(problems)))


def main(cfg: SFTRunConfig, home: Path | None = None) -> Path:
    """Train ``cfg`` and return the finished run folder ``<home>/models/<name>/``."""
    home = Path(home if home is not None else paths.home())
    cuda = _cuda_available()
    on_cpu = cfg.device == "cpu" or (cfg.device == "auto" and not cuda)
    _raise(preflight(cfg, home, cuda))
    folder = prepare_dataset(cfg, home)
    _raise(check_dataset(folder, cfg))

    models = paths.models_dir(home)
    name = next_run_name(cfg, models)
    final = models / name
    if final.exists():
        raise TrainError(f"{final} already exists: pick another name (runs are never overwritten).")
    tmp = models / f".tmp-{name}"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        _train(cfg, home, folder, tmp, name, on_cpu)
    except BaseException:
        if not _has_checkpoint(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
    os.replace(tmp, final)
    return final


def _train(cfg: SFTRunConfig, home: Path, folder: Path, tmp: Path, name: str, on_cpu: bool) -> None:
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from claude_rl.base_model import load_tokenizer, materialize

    transformers.set_seed(cfg.seed)
    train_rows = load_rows(folder, "train", cfg.max_train_rows, cfg.seed)
    eval_rows = (
        load_rows(folder, "validation", cfg.max_eval_rows, cfg.seed) if cfg.eval_strategy != "no" else []
    )
    train_ds = Dataset.from_list(train_rows)
    eval_ds = Dataset.from_list(eval_rows) if eval_rows else None

    base = materialize(cfg.base_model, home)
    tok = load_tokenizer(cfg.base_model, home)
    # On CPU the weights stay fp32 and bf16 (when chosen) is autocast by the Trainer.
    dtype = (
        torch.float32
        if on_cpu
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
    model = AutoModelForCausalLM.from_pretrained(str(base), **load_kwargs)

    peft_config = None
    if cfg.lora.enabled:
        peft_config = LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules,
            task_type="CAUSAL_LM",
        )
    kwargs = to_trl_kwargs(cfg, on_cpu, output_dir=tmp / "checkpoints")
    if cfg.tensorboard:
        kwargs["logging_dir"] = str(tmp / "tensorboard")
    args = trl.SFTConfig(**kwargs)
    callbacks = []
    if cfg.early_stopping_patience is not None:
        callbacks.append(
            transformers.EarlyStoppingCallback(
                early_stopping_patience=cfg.early_stopping_patience,
                early_stopping_threshold=cfg.early_stopping_threshold,
            )
        )
    trainer = trl.SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tok,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    if len(trainer.train_dataset) == 0:
        raise TrainError(
            f"every training row was dropped: none has an assistant token within max_length "
            f"({cfg.max_length}); the system prompt and tool list alone are ~400 tokens with the "
            "default tokenizer, so raise max_length."
        )
    resume = _resume_point(cfg, tmp / "checkpoints")
    started = time.monotonic()
    trainer.train(resume_from_checkpoint=resume)
    runtime = time.monotonic() - started
    tokens = _count_trained_tokens(trainer)

    trained = trainer.model
    if cfg.lora.enabled:
        trained.save_pretrained(str(tmp / "adapter"))
        merged = trained.merge_and_unload()
    else:
        merged = trained
    merged.save_pretrained(str(tmp / "merged"), safe_serialization=True)
    tok.save_pretrained(str(tmp / "merged"))

    metrics = _metrics(trainer.state.log_history, runtime, tokens)
    plotted = plot_loss(metrics, tmp / "loss.png")
    ds_manifest = folder / "manifest.json"
    manifest = {
        "name": name,
        "phase": "sft",
        "config": cfg.model_dump(mode="json"),
        "base_model": cfg.base_model,
        "base_model_folder": str(base),
        "dataset": {
            "folder": str(folder),
            "manifest_sha256": _sha256(ds_manifest),
            "train_rows": len(train_rows),
            "eval_rows": len(eval_rows),
        },
        "resumed_from": resume,
        "device": "cpu" if on_cpu else "cuda",
        "metrics": metrics,
        "loss_plot": "loss.png" if plotted else "skipped: matplotlib is not installed",
        "versions": _versions(),
        "outputs": {"adapter": "adapter/" if cfg.lora.enabled else None, "merged": "merged/"},
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _count_trained_tokens(trainer: Any) -> int | None:
    """Tokens trained on (estimate): mean tokenized row length x rows the optimizer steps consumed."""
    try:
        ds = trainer.train_dataset
        mean = sum(len(ids) for ids in ds["input_ids"]) / max(len(ds), 1)
        per_step = trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps
        return int(mean * trainer.state.global_step * per_step)
    except Exception:  # an estimate only: never fail a finished run over it
        return None
