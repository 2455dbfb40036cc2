"""The tokenizer part of a GGUF: tokens, their types, merges, special ids, the pre-tokenizer name,
``add_bos_token`` and the chat template.

Each field below has a way of being wrong without any error (``shared/docs/gguf-export-notes.md``):

- special added tokens must be typed CONTROL, or llama.cpp splits ``<|im_start|>`` into bytes;
- ``tokenizer.ggml.pre`` names llama.cpp's pre-tokenizer regex (``smollm``, ``llama-bpe``); the
  ``gguf`` library does not detect it, and ``default`` tokenizes digits and spaces differently;
- ``add_bos_token`` is written explicitly: llama.cpp's default depends on the pre-tokenizer;
- the chat template is the project's (``claude_rl.chat_format``) without ``{% generation %}`` tags,
  with the format's end token as EOS so that generation stops at the end of the assistant's turn.

Only byte-level BPE tokenizers (``tokenizer.json`` with a BPE model, GPT-2 style: SmolLM2, Llama 3)
are supported; the export's parity check tokenizes test strings both ways to catch a wrong guess.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from claude_rl.chat_format import FORMATS, format_for, strip_generation_markers
from claude_rl.export.errors import ExportError

# llama.cpp pre-tokenizer names this module can choose (llama.cpp knows many more; pass one with
# ``pre_tokenizer=`` for another tokenizer, and the parity check will say whether it fits).
SMOLLM = "smollm"
LLAMA3 = "llama-bpe"
# Tokens SmolLM's tokenizer inherits from StarCoder's: with ChatML's, a fingerprint of the family.
_SMOLLM_MARKERS = ("<|im_start|>", "<|im_end|>", "<repo_name>", "<file_sep>", "<jupyter_start>")


@dataclass(frozen=True)
class TokenizerMeta:
    fmt: str  # the project's chat format: chatml or llama3
    pre: str
    tokens: list[str]
    token_types: list[int]  # gguf.TokenType values
    merges: list[str]
    bos_id: int | None
    eos_id: int  # the format's end token: generation stops at the end of the assistant's turn
    pad_id: int | None
    unk_id: int | None
    add_bos: bool
    add_eos: bool
    chat_template: str

    def write(self, writer: Any) -> None:
        """Add every tokenizer key to a ``gguf.GGUFWriter``."""
        writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        writer.add_token_merges(self.merges)
        if self.bos_id is not None:
            writer.add_bos_token_id(self.bos_id)
        writer.add_eos_token_id(self.eos_id)
        writer.add_eot_token_id(self.eos_id)
        if self.pad_id is not None:
            writer.add_pad_token_id(self.pad_id)
        if self.unk_id is not None:
            writer.add_unk_token_id(self.unk_id)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        writer.add_chat_template(self.chat_template)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def detect_pre_tokenizer(hf_dir: Path, vocab: dict[str, int], fmt: str) -> str:
    """llama.cpp's pre-tokenizer name for the model in ``hf_dir``: ``llama-bpe`` for Llama 3
    (its header tokens), ``smollm`` for SmolLM/SmolLM2 (by name or by its tokenizer's special
    tokens). Anything else is refused rather than guessed."""
    if fmt == "llama3" or ("<|start_header_id|>" in vocab and "<|eot_id|>" in vocab):
        return LLAMA3
    config = _read_json(hf_dir / "config.json")
    tok_config = _read_json(hf_dir / "tokenizer_config.json")
    names = [
        config.get("_name_or_path"),
        config.get("_model_name_or_path"),
        tok_config.get("name_or_path"),
        hf_dir.name,
    ]
    if any(isinstance(n, str) and "smollm" in n.lower() for n in names):
        return SMOLLM
    if all(t in vocab for t in _SMOLLM_MARKERS):
        return SMOLLM
    raise ExportError(
        f"cannot tell which llama.cpp pre-tokenizer fits the tokenizer in {hf_dir} (known here: "
        f"{SMOLLM} for SmolLM2, {LLAMA3} for Llama 3): pass pre_tokenizer=<name>."
    )


def _adds_special(tok: Any) -> tuple[bool, bool]:
    """(adds BOS, adds EOS) when the HF tokenizer encodes plain text with special tokens on."""
    ids = tok("a", add_special_tokens=True)["input_ids"]
    plain = tok("a", add_special_tokens=False)["input_ids"]
    extra = len(ids) - len(plain)
    add_bos = extra > 0 and tok.bos_token_id is not None and ids[0] == tok.bos_token_id
    add_eos = extra > 0 and tok.eos_token_id is not None and ids[-1] == tok.eos_token_id
    return bool(add_bos), bool(add_eos)


def build(
    hf_dir: Path,
    vocab_size: int,
    *,
    fmt: str | None = None,
    pre_tokenizer: str | None = None,
    chat_template: str | None = None,
) -> TokenizerMeta:
    """Everything the GGUF needs from the tokenizer in ``hf_dir``, padded to ``vocab_size`` rows
    (the embedding matrix may be larger than the tokenizer)."""
    import gguf
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    fmt = fmt or format_for(tok)
    spec = FORMATS[fmt]
    vocab = tok.get_vocab()
    if spec.end_token not in vocab:
        raise ExportError(f"the tokenizer in {hf_dir} has no {spec.end_token} token ({fmt} format)")

    try:
        bpe = gguf.BpeVocab(hf_dir)
    except FileNotFoundError as e:
        raise ExportError(
            f"{hf_dir}: only byte-level BPE tokenizers (tokenizer.json, GPT-2 style) are supported: {e}"
        ) from e
    tokens = [t.decode("utf-8") if isinstance(t, bytes) else t for t, _score, _type in bpe.all_tokens()]
    if len(tokens) > vocab_size:
        raise ExportError(f"the tokenizer has {len(tokens)} tokens, more than the model's {vocab_size} rows")
    types = [int(gguf.TokenType.NORMAL)] * len(tokens)
    added = _read_json(hf_dir / "tokenizer.json").get("added_tokens") or []
    for item in added:
        i = item.get("id")
        if isinstance(i, int) and 0 <= i < len(tokens):
            # BpeVocab types every base-vocabulary id NORMAL: without CONTROL, llama.cpp's special
            # parsing does not see <|im_start|> and splits it into byte tokens.
            special = item.get("special", False)
            types[i] = int(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
    for i in range(len(tokens), vocab_size):  # embedding rows with no token behind them
        tokens.append(f"[PAD{i}]")
        types.append(int(gguf.TokenType.UNUSED))

    merges = gguf.SpecialVocab(hf_dir, load_merges=True).merges
    if not merges:
        raise ExportError(f"{hf_dir}/tokenizer.json has no BPE merges")
    add_bos, add_eos = _adds_special(tok)
    eos_id = vocab[spec.end_token]
    template = chat_template if chat_template is not None else strip_generation_markers(spec.template)
    return TokenizerMeta(
        fmt=fmt,
        pre=pre_tokenizer or detect_pre_tokenizer(hf_dir, vocab, fmt),
        tokens=tokens,
        token_types=types,
        merges=list(merges),
        bos_id=tok.bos_token_id,
        eos_id=eos_id,
        pad_id=tok.pad_token_id if tok.pad_token_id is not None else eos_id,
        unk_id=tok.unk_token_id,
        add_bos=add_bos,
        add_eos=add_eos,
        chat_template=template,
    )
