"""Which HF folder an export converts, and under which name.

The input may be:

- a training run folder ``<home>/models/<name>/`` (``merged/``, ``adapter/``, ``manifest.json``):
  its ``merged/`` folder is converted; a run that kept only its LoRA adapter is merged into its
  base model first (into a scratch folder that the export removes);
- a run's ``merged/`` folder itself (its parent is the run);
- any plain HF Llama folder (``config.json`` + safetensors + tokenizer), e.g. the materialized base
  model: its folder name names the output.

Run manifests are read as JSON: this stage never imports ``claude_rl.train``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from claude_rl.export.errors import ExportError

RUN_PREFIX = "llama-claude-"
# Finished runs only: training writes into ".tmp-<name>" and renames on success.
_RUN_NAME = re.compile(r"^llama-claude-[A-Za-z0-9._-]*-v(\d+)$")
MANIFEST = "manifest.json"
MERGED = "merged"
ADAPTER = "adapter"


@dataclass(frozen=True)
class ModelSource:
    hf_dir: Path  # the HF folder whose weights and tokenizer are converted
    name: str  # base of the output file names
    run_dir: Path | None  # the run folder, when the input is a training run
    manifest: dict[str, Any] | None
    merged_from_adapter: bool  # hf_dir was built here from adapter/ + the base model

    @property
    def default_out_dir(self) -> Path:
        """``<run folder>/gguf/``, or ``<folder>/gguf/`` for a plain HF folder."""
        return (self.run_dir or self.hf_dir) / "gguf"


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ExportError(f"{path} is not valid JSON: {e}") from e
    return data if isinstance(data, dict) else None


def _is_hf_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (
        (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
    )


def is_run_folder(folder: Path) -> bool:
    folder = Path(folder)
    if _is_hf_model(folder / MERGED):
        return True
    return (folder / ADAPTER / "adapter_config.json").is_file() and (folder / MANIFEST).is_file()


def resolve(model: Path | str, scratch: Path) -> ModelSource:
    """The folder to convert for ``model``; an adapter-only run is merged into ``scratch``."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such model folder")
    if folder.name == MERGED and is_run_folder(folder.parent):
        folder = folder.parent
    if is_run_folder(folder):
        manifest = _read_manifest(folder)
        name = str((manifest or {}).get("name") or folder.name)
        if _is_hf_model(folder / MERGED):
            return ModelSource(folder / MERGED, name, folder, manifest, merged_from_adapter=False)
        merged = merge_adapter(folder / ADAPTER, manifest or {}, scratch / "merged-from-adapter")
        return ModelSource(merged, name, folder, manifest, merged_from_adapter=True)
    if _is_hf_model(folder):
        return ModelSource(folder, folder.name, None, None, merged_from_adapter=False)
    raise ExportError(
        f"{folder} is neither a training run folder (merged/ or adapter/ + manifest.json) nor an HF "
        "model folder (config.json + model.safetensors)."
    )


def _base_of(adapter_dir: Path, manifest: dict[str, Any]) -> tuple[str, str]:
    """(the base model's folder, its name for ``load_tokenizer``) for an adapter."""
    from claude_rl.base_model import DEFAULT_MODEL, materialize

    base_name = str(manifest.get("base_model") or "")
    folder = manifest.get("base_model_folder")
    if folder and _is_hf_model(Path(folder)):
        return str(folder), base_name or str(folder)
    if base_name:
        return str(materialize(base_name)), base_name
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    path = cfg.get("base_model_name_or_path")
    if path and _is_hf_model(Path(path)):
        return str(path), str(path)
    return str(materialize(DEFAULT_MODEL)), DEFAULT_MODEL


def merge_adapter(adapter_dir: Path, manifest: dict[str, Any], target: Path) -> Path:
    """Merge a PEFT LoRA adapter into its base model and save the result (with the base's
    tokenizer and the project's chat template) as a plain HF folder ``target``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from claude_rl.base_model import load_tokenizer

    base_folder, base_name = _base_of(adapter_dir, manifest)
    # float32: the merge adds small LoRA products to the base weights; rounding happens once, at write.
    model = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    target.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(target), safe_serialization=True)
    load_tokenizer(base_name).save_pretrained(str(target))
    return target


def is_control(folder: Path | str) -> bool:
    """A null control (``claude-rl control``: manifest phase ``control``), never a "latest" model."""
    try:
        manifest = _read_manifest(Path(folder))
    except ExportError:
        return False
    return bool(manifest) and manifest.get("phase") == "control"


def latest_model(home: Path | str | None = None) -> Path:
    """The newest finished run ``<home>/models/llama-claude-*-vN`` (SFT and PPO runs alike; null
    controls never): highest N, then the most recently written manifest."""
    from claude_rl import paths

    models = paths.models_dir(home)
    found: list[tuple[int, float, Path]] = []
    if models.is_dir():
        for child in models.iterdir():
            m = _RUN_NAME.match(child.name)
            if m and child.is_dir() and is_run_folder(child) and not is_control(child):
                manifest = child / MANIFEST
                stamp = manifest.stat().st_mtime if manifest.is_file() else child.stat().st_mtime
                found.append((int(m.group(1)), stamp, child))
    if not found:
        raise ExportError(
            f"no trained model under {models} (looked for {RUN_PREFIX}*-vN run folders): train one "
            "with `claude-rl train`, or name a model folder."
        )
    return max(found, key=lambda t: (t[0], t[1]))[2]
