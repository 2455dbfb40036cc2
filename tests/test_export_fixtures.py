"""Small models for the GGUF export tests (helpers only: no tests here).

The fast tier uses a tiny random Llama with a tiny byte-level BPE tokenizer (600 tokens, ChatML
specials) trained here in a fraction of a second, so that writing, reading back and running the
GGUF takes about a second. Its weights are drawn with ``initializer_range=0.2``: with the usual
0.02 the logits of a random model are so flat that even a broken Q/K layout stays within the
parity tolerance (measured: max |Δ| 0.0095), and the test would prove nothing.

Its pre-tokenizer is plain GPT-2 (``ByteLevel`` with its default regex), which llama.cpp calls
``gpt-2``: the exports of these models pass ``pre_tokenizer="gpt-2"``. SmolLM2's ``smollm``
detection is tested on the real tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SMALL_PRE_TOKENIZER = "gpt-2"


def small_tokenizer(folder: Path) -> Any:
    """A 600-token ChatML tokenizer with the project's template, saved into ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from claude_rl.chat_format import apply_to_tokenizer, render
    from claude_rl.export import prompts

    corpus = [render(m, t, "chatml") for _n, m, t, _g in prompts.CONVERSATIONS]
    corpus += list(prompts.PLAIN_PROMPTS.values()) + prompts.TOKENIZER_PROBES
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus * 3, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    apply_to_tokenizer(tok, "chatml")
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(folder))
    return tok


def tiny_llama(folder: Path, tokenizer: Any, *, seed: int = 0, rope: dict[str, Any] | None = None) -> Path:
    """A random 2-layer Llama (GQA: 4 heads, 2 KV heads, tied embeddings) saved with ``tokenizer``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rope_parameters=rope or {"rope_type": "default", "rope_theta": 10000.0},
        initializer_range=0.2,
    )
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    return folder


def add_lora_adapter(base: Path, adapter_dir: Path, *, seed: int = 1, scale: float = 0.05) -> None:
    """A LoRA adapter for ``base`` whose B matrices are small random values (not the zero init),
    so merging it really changes the model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, scale)
    peft_model.save_pretrained(str(adapter_dir))


def write_manifest(run: Path, **fields: Any) -> None:
    run.mkdir(parents=True, exist_ok=True)
    data = {
        "name": run.name,
        "phase": "sft",
        "outputs": {"adapter": "adapter/", "merged": "merged/"},
        **fields,
    }
    (run / "manifest.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
