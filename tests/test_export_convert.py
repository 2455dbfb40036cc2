"""The conversion's silent traps, checked against references derived here (fast, no files needed):
the Q/K permutation against rope computed both ways, rope settings, llama3 rope factors against
transformers, and the tokenizer keys of SmolLM2's real tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

from claude_rl.export import convert
from claude_rl.export.errors import ExportError


def _interleaved_rope(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """Rope as llama.cpp applies it for arch ``llama`` (GGML's "normal" mode): dimensions
    (2i, 2i+1) of each head rotate together by position × theta^(-2i/d)."""
    d = x.shape[-1]
    freqs = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    angles = positions[:, None] * freqs[None, :]  # (seq, d/2)
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


@pytest.fixture(scope="module")
def attention_weights():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    model = LlamaForCausalLM(config)
    attn = model.model.layers[0].self_attn
    return config, model, attn.q_proj.weight.detach().double(), attn.k_proj.weight.detach().double()


def _hf_scores(config, model, wq, wk, x):
    """Attention logits q·k per head after transformers' own rope (rotate-half layout)."""
    import torch
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    seq, heads, kv, d = x.shape[0], 4, 2, 8
    q = (x @ wq.T).view(seq, heads, d).transpose(0, 1)[None]
    k = (x @ wk.T).view(seq, kv, d).transpose(0, 1)[None]
    cos, sin = model.model.rotary_emb(x[None].float(), torch.arange(seq)[None])
    q, k = apply_rotary_pos_emb(q, k, cos.double(), sin.double())
    k = k.repeat_interleave(heads // kv, dim=1)
    return (q @ k.transpose(-1, -2))[0].numpy(), q[0].numpy()


def _llama_cpp_scores(wq, wk, x, permute: bool):
    seq, heads, kv, d = x.shape[0], 4, 2, 8
    wq, wk = wq.numpy(), wk.numpy()
    if permute:
        wq, wk = convert.permute_qk(wq, heads), convert.permute_qk(wk, kv)
    pos = np.arange(seq, dtype=np.float64)
    q = _interleaved_rope((x.numpy() @ wq.T).reshape(seq, heads, d), pos, 10000.0).transpose(1, 0, 2)
    k = _interleaved_rope((x.numpy() @ wk.T).reshape(seq, kv, d), pos, 10000.0).transpose(1, 0, 2)
    k = np.repeat(k, heads // kv, axis=0)
    return q @ k.transpose(0, 2, 1), q


def test_permuted_qk_with_interleaved_rope_gives_transformers_attention(attention_weights):
    import torch

    config, model, wq, wk = attention_weights
    # Scaled so that scores are O(1) (the weights are initialized with std 0.02).
    x = 30 * torch.randn(7, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    hf, hf_q = _hf_scores(config, model, wq, wk, x)
    ours, our_q = _llama_cpp_scores(wq, wk, x, permute=True)
    assert np.abs(hf).max() > 1
    # transformers computes cos/sin in float32: agreement to ~1e-6 relative, not 1e-15
    np.testing.assert_allclose(ours, hf, rtol=1e-5, atol=1e-5)
    # Stronger than equal scores: each rotated head is HF's with the same rows moved.
    for h in range(4):
        np.testing.assert_allclose(our_q[h], convert.permute_qk(hf_q[h].T, 1).T, rtol=1e-5, atol=1e-5)
    # And without the permutation llama.cpp's rope computes something else.
    broken, _ = _llama_cpp_scores(wq, wk, x, permute=False)
    assert np.abs(broken - hf).max() > 0.1


def test_unpermute_inverts_permute_for_weights_and_biases():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6 * 8, 5))
    b = rng.standard_normal(6 * 8)
    np.testing.assert_array_equal(convert.unpermute_qk(convert.permute_qk(w, 6), 6), w)
    np.testing.assert_array_equal(convert.unpermute_qk(convert.permute_qk(b, 6), 6), b)
    # rows of one head: (0..3 | 4..7) → pairs (0,4), (1,5), (2,6), (3,7)
    head = np.arange(8.0)
    assert convert.permute_qk(head, 1).tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    with pytest.raises(ExportError):
        convert.permute_qk(np.zeros((10, 3)), 4)


def _config(**over):
    base = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
    }
    return {**base, **over}


def test_rope_theta_is_read_from_rope_parameters_before_the_top_level():
    hp = convert.LlamaHparams.from_config(
        _config(rope_parameters={"rope_type": "default", "rope_theta": 1e5})
    )
    assert hp.rope_theta == 1e5 and hp.rope_type == "default"
    old = convert.LlamaHparams.from_config(_config(rope_theta=5e5))  # transformers 4.x layout
    assert old.rope_theta == 5e5
    assert convert.LlamaHparams.from_config(_config()).rope_theta == 10000.0
    assert old.head_dim == 16 and old.head_count_kv == 2 and not old.tie_word_embeddings


def test_unsupported_models_and_rope_types_are_refused():
    with pytest.raises(ExportError, match="rope_type"):
        convert.LlamaHparams.from_config(_config(rope_parameters={"rope_type": "yarn", "factor": 4.0}))
    with pytest.raises(ExportError, match="Llama"):
        convert.LlamaHparams.from_config(_config(model_type="mistral", architectures=["MistralForCausalLM"]))


def test_llama3_rope_factors_reproduce_transformers_inv_freq():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = {
        "rope_type": "llama3",
        "rope_theta": 10000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
    }
    config = LlamaConfig(hidden_size=128, num_attention_heads=4, rope_parameters=rope)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    hp = convert.LlamaHparams.from_config(_config(hidden_size=128, rope_parameters=rope))
    factors = hp.rope_freq_factors()
    plain = 1.0 / (10000.0 ** (np.arange(0, 32, 2) / 32))
    # llama.cpp divides each frequency by its factor
    np.testing.assert_allclose(plain / factors, scaled.numpy(), rtol=1e-5)
    assert factors.min() == 1.0 and factors.max() == 8.0  # both ends of the ramp are exercised
    assert convert.LlamaHparams.from_config(_config()).rope_freq_factors() is None


def test_smollm2_tokenizer_keys(tmp_path):
    """The real SmolLM2 tokenizer: smollm pre-tokenizer, ChatML specials CONTROL, no BOS added,
    EOS the end of turn, the project's template without generation markers."""
    import gguf

    from claude_rl.base_model import BaseModelMissing, load_tokenizer
    from claude_rl.chat_format import FORMATS, strip_generation_markers
    from claude_rl.export import tokenizer_meta

    try:
        tok = load_tokenizer()
    except BaseModelMissing as e:
        pytest.skip(str(e))
    tok.save_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    meta = tokenizer_meta.build(tmp_path, 49152)
    assert meta.fmt == "chatml" and meta.pre == "smollm"
    vocab = tok.get_vocab()
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>"):
        assert meta.token_types[vocab[special]] == gguf.TokenType.CONTROL, special
    assert meta.token_types[vocab["Hello"]] == gguf.TokenType.NORMAL
    assert meta.add_bos is False and meta.add_eos is False
    assert meta.eos_id == vocab["<|im_end|>"] and meta.bos_id == vocab["<|im_start|>"]
    assert meta.chat_template == strip_generation_markers(FORMATS["chatml"].template)
    assert "endgeneration" not in meta.chat_template and "{%- generation" not in meta.chat_template
    assert len(meta.tokens) == 49152 and len(meta.merges) > 40000


def test_an_unknown_tokenizer_needs_an_explicit_pre_tokenizer(tmp_path):
    from test_export_fixtures import small_tokenizer

    from claude_rl.export import tokenizer_meta

    small_tokenizer(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ExportError, match="pre_tokenizer"):
        tokenizer_meta.build(tmp_path, 600)
    meta = tokenizer_meta.build(tmp_path, 640, pre_tokenizer="gpt-2")
    # embedding rows beyond the tokenizer become unused placeholder tokens
    assert len(meta.tokens) == 640 and meta.tokens[-1] == "[PAD639]"
