"""GGUF export: a trained model (HF Llama folder) → GGUF files for llama.cpp and Ollama.

``export_gguf(model)`` writes into ``<run>/gguf/``: ``<name>.gguf`` (F16), one quantized file per
name in ``quants`` (``<name>-q8_0.gguf``...), an Ollama ``Modelfile`` and ``export.json`` (paths,
sizes, parity numbers, versions). The parity checks against transformers run as part of the export
and a failing file is never kept. Modules, in the order the export uses them:

- ``source``: which folder is converted (a run's ``merged/``, an adapter merged on the fly, a
  plain HF folder) and ``latest_model``;
- ``tokenizer_meta`` and ``convert``: the GGUF itself, with the ``gguf`` library;
- ``quantize``: llama.cpp's quantization through llama-cpp-python;
- ``parity`` (with its inputs in ``prompts``): the checks;
- ``modelfile``: the Ollama Modelfile, its template derived from ``claude_rl.chat_format``;
- ``pipeline``: ``export_gguf``, the temporary folder and the report.

Importing this package imports nothing heavy; torch, transformers, gguf and llama_cpp are
imported by the functions that need them.
"""

from __future__ import annotations

from claude_rl.export.errors import ExportError, ExportParityError
from claude_rl.export.pipeline import DEFAULT_QUANTS, ExportResult, export_gguf, summary_lines
from claude_rl.export.quantize import QUANT_TYPES, normalize_quants
from claude_rl.export.source import latest_model

__all__ = [
    "DEFAULT_QUANTS",
    "QUANT_TYPES",
    "ExportError",
    "ExportParityError",
    "ExportResult",
    "export_gguf",
    "latest_model",
    "normalize_quants",
    "summary_lines",
]
