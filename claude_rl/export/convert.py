"""HF Llama-architecture folder (safetensors) → one GGUF file, with the ``gguf`` library.

No llama.cpp convert script is involved: ``gguf.GGUFWriter`` writes the file, the library's tensor
name map for ``MODEL_ARCH.LLAMA`` names the tensors, and ``tokenizer_meta`` fills the tokenizer
keys. What the library leaves to us, and what goes silently wrong when missed
(``shared/docs/gguf-export-notes.md``):

- Q and K projections are permuted from HF's rotate-half layout to the interleaved pairs that
  llama.cpp's rope (arch ``llama``) rotates (``permute_qk``);
- rope theta is read from ``config.rope_parameters`` (transformers 5) before the old top-level
  ``rope_theta``: without it llama.cpp assumes 10000;
- tied embeddings: no ``output.weight``, llama.cpp reuses ``token_embd``;
- 1-D tensors (norms, biases) stay F32 whatever the outtype.

Tensors are converted and written one at a time, so memory stays at about one tensor beyond the
open safetensors files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from claude_rl.export.errors import ExportError

if TYPE_CHECKING:
    import numpy as np

OUTTYPES = ("f16", "bf16", "f32")
_SKIPPED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some old checkpoints saved: recomputed by llama.cpp


def permute_qk(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the rows of a q_proj/k_proj weight (or bias) from HF's layout to llama.cpp's.

    HF's rope rotates the pair (i, i + d/2) of each head of size d ("rotate half"); llama.cpp's
    rope for arch ``llama`` rotates (2i, 2i + 1). Moving row i + d/2 next to row i in every head
    makes both compute the same attention scores (q·k is unchanged by the same reordering of q
    and k). ``n_head`` is the number of heads of that projection: n_head for q, n_kv_head for k.
    """
    rows = weight.shape[0]
    if rows % n_head or (rows // n_head) % 2:
        raise ExportError(f"cannot permute a {weight.shape} projection into {n_head} heads of even size")
    half = rows // n_head // 2
    return weight.reshape(n_head, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def unpermute_qk(weight: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of ``permute_qk`` (llama.cpp's layout back to HF's)."""
    half = weight.shape[0] // n_head // 2
    return weight.reshape(n_head, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


@dataclass(frozen=True)
class LlamaHparams:
    context_length: int
    embedding_length: int
    block_count: int
    feed_forward_length: int
    head_count: int
    head_count_kv: int
    head_dim: int
    rms_norm_eps: float
    vocab_size: int
    rope_theta: float
    rope_type: str  # "default", "linear" or "llama3"
    rope: dict[str, Any]  # the rope parameters as the config gives them
    tie_word_embeddings: bool

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LlamaHparams:
        archs = config.get("architectures") or []
        if config.get("model_type") != "llama" and "LlamaForCausalLM" not in archs:
            raise ExportError(
                f"only Llama-architecture models are supported (model_type {config.get('model_type')!r})"
            )
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        # transformers 5 keeps rope settings (theta included) in rope_parameters; 4.x kept
        # rope_theta at the top level and scaling in rope_scaling.
        rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
        theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
        rope_type = str(rope.get("rope_type") or rope.get("type") or "default")
        if rope_type not in ("default", "linear", "llama3"):
            raise ExportError(f"rope_type {rope_type!r} is not supported here (default, linear, llama3)")
        return cls(
            context_length=int(config.get("max_position_embeddings") or 2048),
            embedding_length=hidden,
            block_count=int(config["num_hidden_layers"]),
            feed_forward_length=int(config["intermediate_size"]),
            head_count=heads,
            head_count_kv=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            vocab_size=int(config["vocab_size"]),
            rope_theta=float(theta),
            rope_type=rope_type,
            rope=rope,
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        )

    def write(self, writer: Any) -> None:
        import gguf

        writer.add_context_length(self.context_length)
        writer.add_embedding_length(self.embedding_length)
        writer.add_block_count(self.block_count)
        writer.add_feed_forward_length(self.feed_forward_length)
        writer.add_head_count(self.head_count)
        writer.add_head_count_kv(self.head_count_kv)
        writer.add_rope_dimension_count(self.head_dim)
        if self.head_dim * self.head_count != self.embedding_length:
            writer.add_key_length(self.head_dim)
            writer.add_value_length(self.head_dim)
        writer.add_rope_freq_base(self.rope_theta)
        writer.add_layer_norm_rms_eps(self.rms_norm_eps)
        writer.add_vocab_size(self.vocab_size)
        if self.rope_type == "linear":
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(self.rope["factor"]))

    def rope_freq_factors(self) -> np.ndarray | None:
        """Llama 3.1's rope scaling as llama.cpp takes it: one divisor per rotary frequency (the
        ``rope_freqs`` tensor), the same smooth ramp transformers applies to ``inv_freq``."""
        import numpy as np

        if self.rope_type != "llama3":
            return None
        factor = float(self.rope["factor"])
        low = float(self.rope.get("low_freq_factor", 1.0))
        high = float(self.rope.get("high_freq_factor", 4.0))
        old_ctx = float(self.rope.get("original_max_position_embeddings", 8192))
        exponents = np.arange(0, self.head_dim, 2, dtype=np.float64) / self.head_dim
        inv_freq = 1.0 / (self.rope_theta**exponents)
        out = []
        for freq in inv_freq:
            wavelen = 2 * math.pi / freq
            if wavelen < old_ctx / high:  # high frequencies: unchanged
                out.append(1.0)
            elif wavelen > old_ctx / low:  # low frequencies: slowed down by the full factor
                out.append(factor)
            else:  # in between: interpolate the frequency, then express it as a divisor
                smooth = (old_ctx / wavelen - low) / (high - low)
                out.append(1.0 / ((1 - smooth) / factor + smooth))
        return np.asarray(out, dtype=np.float32)


def read_config(hf_dir: Path) -> dict[str, Any]:
    path = hf_dir / "config.json"
    if not path.is_file():
        raise ExportError(f"{hf_dir} has no config.json")
    return json.loads(path.read_text(encoding="utf-8"))


def _safetensors_files(hf_dir: Path) -> list[Path]:
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [hf_dir / f for f in dict.fromkeys(weight_map.values())]
    single = hf_dir / "model.safetensors"
    if single.is_file():
        return [single]
    raise ExportError(f"{hf_dir} has no model.safetensors (only safetensors checkpoints are supported)")


def _iter_tensor_names(files: list[Path]) -> Iterator[tuple[Path, str, list[int]]]:
    from safetensors import safe_open

    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                yield path, name, list(f.get_slice(name).get_shape())


def _load(path: Path, name: str) -> Any:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(name)


@dataclass(frozen=True)
class _Planned:
    src: Path | None  # None: computed here (rope_freqs)
    hf_name: str
    gguf_name: str
    shape: list[int]
    kind: str  # "f32" or the outtype
    permute_heads: int | None


def _plan(hp: LlamaHparams, hf_dir: Path, outtype: str, permute: bool) -> list[_Planned]:
    import gguf

    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, hp.block_count)
    planned: list[_Planned] = []
    for path, name, shape in _iter_tensor_names(_safetensors_files(hf_dir)):
        if name.endswith(_SKIPPED_SUFFIXES):
            continue
        if name == "lm_head.weight" and hp.tie_word_embeddings:
            continue  # tied: llama.cpp falls back to token_embd when output.weight is absent
        new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ExportError(f"{name}: no GGUF name for this tensor (is this a plain Llama model?)")
        heads = None
        if permute and name.endswith(("q_proj.weight", "q_proj.bias")):
            heads = hp.head_count
        elif permute and name.endswith(("k_proj.weight", "k_proj.bias")):
            heads = hp.head_count_kv
        # Norm weights and biases are tiny and precision-sensitive: F32 (llama.cpp expects it).
        kind = "f32" if len(shape) == 1 else outtype
        planned.append(_Planned(path, name, new, shape, kind, heads))
    names = {p.gguf_name for p in planned}
    if "output.weight" not in names and not hp.tie_word_embeddings:
        raise ExportError("the model has no lm_head.weight and does not tie its embeddings")
    factors = hp.rope_freq_factors()
    if factors is not None:
        rope_name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        planned.append(_Planned(None, "rope_freqs", rope_name, list(factors.shape), "f32", None))
    return planned


_BYTES = {"f32": 4, "f16": 2, "bf16": 2}


def _as_gguf_array(tensor: Any, kind: str) -> np.ndarray:
    """The array whose bytes are written for a torch tensor stored as ``kind``."""
    import numpy as np
    import torch

    if kind == "bf16":
        # torch rounds to nearest even; the 16-bit words are written as they are.
        return tensor.to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint16)
    if kind == "f16":
        return tensor.to(torch.float32).numpy().astype(np.float16)
    return tensor.to(torch.float32).numpy().astype(np.float32, copy=False)


def write_gguf(
    hf_dir: Path,
    out_path: Path,
    tokenizer: Any,
    *,
    name: str,
    outtype: str = "f16",
    permute: bool = True,
) -> dict[str, Any]:
    """Write the model in ``hf_dir`` to ``out_path`` and return a summary for the report.

    ``tokenizer`` is a ``tokenizer_meta.TokenizerMeta``. ``permute=False`` skips the Q/K
    permutation: the file then loads and runs but computes the wrong attention; it exists only
    so tests can prove that the parity check catches that.
    """
    import gguf
    import numpy as np
    import torch

    if outtype not in OUTTYPES:
        raise ExportError(f"unknown outtype {outtype!r}: choose one of {', '.join(OUTTYPES)}")
    hf_dir = Path(hf_dir)
    hp = LlamaHparams.from_config(read_config(hf_dir))
    planned = _plan(hp, hf_dir, outtype, permute)
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    }[outtype]

    writer = gguf.GGUFWriter(str(out_path), arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name)
        writer.add_file_type(int(file_type))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        hp.write(writer)
        tokenizer.write(writer)
        ggml = gguf.GGMLQuantizationType
        # (numpy dtype of the bytes written, GGML type): BF16 goes out as raw 16-bit words.
        kinds = {"f32": (np.float32, ggml.F32), "f16": (np.float16, ggml.F16), "bf16": (np.uint16, ggml.BF16)}
        for p in planned:
            n = int(np.prod(p.shape)) if p.shape else 1
            dtype, qtype = kinds[p.kind]
            writer.add_tensor_info(p.gguf_name, p.shape, np.dtype(dtype), n * _BYTES[p.kind], raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        n_params = 0
        for p in planned:
            if p.src is None:
                tensor = torch.from_numpy(hp.rope_freq_factors())
            else:
                tensor = _load(p.src, p.hf_name)
                n_params += tensor.numel()
            if p.permute_heads:
                tensor = torch.from_numpy(permute_qk(tensor.to(torch.float32).numpy(), p.permute_heads))
            writer.write_tensor_data(_as_gguf_array(tensor, p.kind))
    finally:
        writer.close()
    return {
        "outtype": outtype,
        "tensors": len(planned),
        "parameters": n_params,
        "qk_permuted": permute,
        "hparams": {
            "context_length": hp.context_length,
            "embedding_length": hp.embedding_length,
            "block_count": hp.block_count,
            "feed_forward_length": hp.feed_forward_length,
            "head_count": hp.head_count,
            "head_count_kv": hp.head_count_kv,
            "head_dim": hp.head_dim,
            "rope_theta": hp.rope_theta,
            "rope_type": hp.rope_type,
            "rms_norm_eps": hp.rms_norm_eps,
            "vocab_size": hp.vocab_size,
            "tied_embeddings": hp.tie_word_embeddings,
        },
    }
