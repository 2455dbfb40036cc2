"""The default base model becomes a plain safetensors folder the Trainer accepts (slow: loads it)."""

from __future__ import annotations

import pytest

from claude_rl import base_model


def test_other_names_pass_through_unchanged(tmp_path):
    assert base_model.materialize("meta-llama/Llama-3.1-8B-Instruct", tmp_path) == (
        "meta-llama/Llama-3.1-8B-Instruct"
    )
    assert not (tmp_path / "models").exists()


@pytest.mark.slow
def test_materialized_model_is_plain_and_matches_the_gguf(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    try:
        gguf = base_model.default_gguf()
    except base_model.BaseModelMissing as e:
        pytest.skip(str(e))
    folder = base_model.materialize(home=tmp_path)
    assert folder == base_model.base_dir(home=tmp_path)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "temporary folder left behind"
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert base_model.materialize(home=tmp_path) == folder  # second call: already complete, skipped
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime

    plain = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    assert not getattr(plain, "is_quantized", False)
    assert getattr(plain.config, "quantization_config", None) is None
    original = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name).eval()

    tok = base_model.load_tokenizer(home=tmp_path)
    ids = tok("def add(a, b):\n    return", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a = plain(ids).logits.float()
        b = original(ids).logits.float()
    assert (a - b).abs().max().item() < 1e-3
    assert torch.equal(a[0, -1].argmax(), b[0, -1].argmax())
