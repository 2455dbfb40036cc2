"""Quantize a full-precision GGUF through llama-cpp-python's ``llama_model_quantize`` binding.

The names are llama.cpp's file types (``q8_0``, ``q4_k_m``...), validated before anything heavy
is imported. Types that need an importance matrix (the ``iq*`` family) are left out: the export
has no calibration data. On a model whose width is not a multiple of 256 (SmolLM2's 576), k-quant
types fall back to q5_0/q8_0 for most tensors: expected, not an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from claude_rl.export.errors import ExportError

# name → gguf.LlamaFileType member (the same numbers as llama.cpp's llama_ftype).
QUANT_TYPES: dict[str, str] = {
    "q8_0": "MOSTLY_Q8_0",
    "q6_k": "MOSTLY_Q6_K",
    "q5_k_m": "MOSTLY_Q5_K_M",
    "q5_k_s": "MOSTLY_Q5_K_S",
    "q5_1": "MOSTLY_Q5_1",
    "q5_0": "MOSTLY_Q5_0",
    "q4_k_m": "MOSTLY_Q4_K_M",
    "q4_k_s": "MOSTLY_Q4_K_S",
    "q4_1": "MOSTLY_Q4_1",
    "q4_0": "MOSTLY_Q4_0",
    "q3_k_l": "MOSTLY_Q3_K_L",
    "q3_k_m": "MOSTLY_Q3_K_M",
    "q3_k_s": "MOSTLY_Q3_K_S",
    "q2_k": "MOSTLY_Q2_K",
}


def normalize_quants(quants: str | Iterable[str] | None) -> list[str]:
    """Lower-cased, de-duplicated quantization names (a comma-separated string works too);
    an unknown name raises ``ExportError`` listing the valid ones."""
    if quants is None:
        return []
    items = quants.split(",") if isinstance(quants, str) else list(quants)
    out: list[str] = []
    for raw in items:
        name = str(raw).strip().lower().replace("-", "_")
        if not name:
            continue
        if name not in QUANT_TYPES:
            raise ExportError(f"unknown quantization {raw!r}: valid names are {', '.join(QUANT_TYPES)}")
        if name not in out:
            out.append(name)
    return out


def quantize(src: Path, dst: Path, name: str, threads: int | None = None) -> None:
    """Write ``dst``: ``src`` (an F16/BF16/F32 GGUF) quantized to ``name``."""
    import ctypes
    import logging
    import os

    import gguf

    (name,) = normalize_quants([name])
    try:
        import llama_cpp
    except ImportError as e:
        raise ExportError(
            "quantizing needs llama-cpp-python (`pip install llama-cpp-python`; it compiles llama.cpp)"
        ) from e
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(getattr(gguf.LlamaFileType, QUANT_TYPES[name]))
    params.nthread = threads or min(os.cpu_count() or 1, 4)
    # llama.cpp logs every tensor (and, for a 576-wide model, a fallback warning for most of them)
    # through llama-cpp-python's logger: keep errors only while quantizing.
    log = logging.getLogger("llama-cpp-python")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    finally:
        log.setLevel(level)
    if rc != 0 or not dst.is_file():
        raise ExportError(f"llama_model_quantize failed for {name} (return code {rc}): see llama.cpp's log")
