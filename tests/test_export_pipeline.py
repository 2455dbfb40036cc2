"""Whole exports of a tiny random Llama (a second or two each): the files, what the GGUF says,
that parity passes when the conversion is right and fails, leaving nothing, when it is not."""

from __future__ import annotations

import json

import pytest
from test_export_fixtures import (
    SMALL_PRE_TOKENIZER,
    add_lora_adapter,
    small_tokenizer,
    tiny_llama,
    write_manifest,
)

from claude_rl.chat_format import FORMATS, strip_generation_markers
from claude_rl.export import ExportError, ExportParityError, export_gguf, summary_lines

pytest.importorskip("llama_cpp", reason="the export runs the GGUF with llama-cpp-python")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return small_tokenizer(tmp_path_factory.mktemp("small-tokenizer"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tok):
    return tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", tok)


def _export(model, out, **kw):
    kw.setdefault("quants", ())
    return export_gguf(model, out, pre_tokenizer=SMALL_PRE_TOKENIZER, **kw)


def _fields(path):
    import gguf

    reader = gguf.GGUFReader(str(path))
    fields = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    tensors = {t.name: t.tensor_type.name for t in reader.tensors}
    return fields, tensors


def test_export_writes_gguf_quant_modelfile_and_report(tiny, tok, tmp_path):
    out = tmp_path / "gguf"
    result = _export(tiny, out, quants=["q8_0"])
    assert sorted(p.name for p in out.iterdir()) == [
        "Modelfile",
        "export.json",
        "tiny-llama-q8_0.gguf",
        "tiny-llama.gguf",
    ]
    assert result.gguf == out / "tiny-llama.gguf" and result.quants == {"q8_0": out / "tiny-llama-q8_0.gguf"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left

    report = json.loads((out / "export.json").read_text())
    assert report["parity"]["passed"] and report["parity"]["failures"] == []
    f16 = report["parity"]["files"]["f16"]
    assert (
        f16["max_abs_dlogit"] <= 0.15 and f16["greedy_equal"] + f16["greedy_near_tie"] == f16["greedy_total"]
    )
    assert report["parity"]["files"]["q8_0"]["gate"] == "loose"
    assert report["parity"]["template"]["all_equal"] and report["parity"]["tokenizer"]["mismatches"] == []
    assert report["files"]["f16"]["bytes"] == (out / "tiny-llama.gguf").stat().st_size
    assert report["modelfile"]["from"] == "tiny-llama-q8_0.gguf"
    assert "FROM ./tiny-llama-q8_0.gguf" in (out / "Modelfile").read_text()
    assert report["versions"]["gguf"] and report["versions"]["llama-cpp-python"]
    text = "\n".join(summary_lines(result.report))
    assert "tiny-llama-q8_0.gguf" in text and "max|Δlogit|" in text and "ollama create tiny-llama" in text

    fields, tensors = _fields(out / "tiny-llama.gguf")
    assert fields["general.architecture"] == "llama" and fields["general.name"] == "tiny-llama"
    assert fields["llama.block_count"] == 2 and fields["llama.embedding_length"] == 64
    assert fields["llama.attention.head_count"] == 4 and fields["llama.attention.head_count_kv"] == 2
    assert fields["llama.rope.dimension_count"] == 16 and fields["llama.rope.freq_base"] == 10000.0
    assert fields["llama.feed_forward_length"] == 128 and fields["llama.context_length"] == 2048
    assert fields["tokenizer.ggml.pre"] == SMALL_PRE_TOKENIZER and fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.ggml.eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
    assert fields["tokenizer.ggml.token_type"][tok.convert_tokens_to_ids("<|im_start|>")] == 3  # CONTROL
    assert fields["tokenizer.chat_template"] == strip_generation_markers(FORMATS["chatml"].template)
    assert "output.weight" not in tensors  # tied embeddings
    assert tensors["token_embd.weight"] == "F16" and tensors["blk.0.attn_q.weight"] == "F16"
    assert tensors["blk.0.attn_norm.weight"] == "F32" and tensors["output_norm.weight"] == "F32"


def test_a_failed_parity_check_leaves_no_output_and_keeps_an_earlier_export(tiny, tmp_path):
    out = tmp_path / "gguf"
    with pytest.raises(ExportParityError) as err:
        _export(tiny, out, _permute_qk=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    numbers = err.value.report["files"]["f16"]
    assert numbers["max_abs_dlogit"] > 1 and not numbers["passed"]
    assert any("max |Δlogit|" in line for line in err.value.failures)

    _export(tiny, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(ExportParityError):
        _export(tiny, out, _permute_qk=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gguf"]


def test_a_template_that_differs_fails_the_template_check(tiny, tmp_path):
    template = strip_generation_markers(FORMATS["chatml"].template)
    broken = template.replace("'<|im_start|>tool\\n'", "'<|im_start|>user\\n'")  # would be a silent change
    if broken == template:  # the template no longer spells that turn this way: break it another way
        broken = "{{- 'x' }}" + template
    with pytest.raises(ExportParityError) as err:
        _export(tiny, tmp_path / "gguf", _chat_template=broken)
    assert not err.value.report["template"]["all_equal"]
    assert any(line.startswith("chat template") for line in err.value.failures)
    assert err.value.report["files"]["f16"]["max_abs_dlogit"] <= 0.15  # the weights were fine


@pytest.mark.parametrize("outtype", ["bf16", "f32"])
def test_other_outtypes_pass_parity(tiny, tmp_path, outtype):
    result = _export(tiny, tmp_path / "gguf", outtype=outtype)
    assert result.gguf.name == f"tiny-llama-{outtype}.gguf"
    _, tensors = _fields(result.gguf)
    assert tensors["blk.1.ffn_down.weight"] == outtype.upper()
    assert result.report["parity"]["tolerance_max_abs_dlogit"] == (0.75 if outtype == "bf16" else 0.15)


def test_llama3_rope_scaling_is_written_and_checked(tok, tmp_path, monkeypatch):
    rope = {
        "rope_type": "llama3",
        "rope_theta": 10000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,  # small, so the prompts reach the scaled range
    }
    model = tiny_llama(tmp_path / "tiny-llama3-rope", tok, rope=rope)
    result = _export(model, tmp_path / "ok")
    _, tensors = _fields(result.gguf)
    assert "rope_freqs.weight" in tensors

    from claude_rl.export import convert

    monkeypatch.setattr(convert.LlamaHparams, "rope_freq_factors", lambda self: None)  # forget the scaling
    with pytest.raises(ExportParityError):
        _export(model, tmp_path / "broken")


def test_a_run_with_only_an_adapter_is_merged_before_conversion(tiny, tmp_path, data_home):
    run = data_home / "models" / "llama-claude-bc-v3"
    add_lora_adapter(tiny, run / "adapter")
    write_manifest(run, base_model=str(tiny), base_model_folder=str(tiny))
    result = export_gguf(quants=(), pre_tokenizer=SMALL_PRE_TOKENIZER)  # latest model under the home
    assert result.out_dir == run / "gguf" and result.gguf.name == "llama-claude-bc-v3.gguf"
    report = result.report
    assert report["source"]["merged_from_adapter"] and report["parity"]["passed"]
    assert sorted(p.name for p in run.iterdir()) == ["adapter", "gguf", "manifest.json"]  # scratch removed


def test_a_run_is_found_by_its_name_under_the_home(tiny, data_home):
    # eval, control and probe take run names; export-gguf takes them too
    run = data_home / "models" / "llama-claude-ppo-v2"
    add_lora_adapter(tiny, run / "adapter")
    write_manifest(run, base_model=str(tiny), base_model_folder=str(tiny))
    result = export_gguf("llama-claude-ppo-v2", quants=(), pre_tokenizer=SMALL_PRE_TOKENIZER)
    assert result.out_dir == run / "gguf" and result.gguf.name == "llama-claude-ppo-v2.gguf"
    with pytest.raises(ExportError, match="llama-claude-ppo-v3: no such model folder here or under .*models"):
        export_gguf("llama-claude-ppo-v3", quants=())


def test_without_parity_checks_the_report_says_so(tiny, tmp_path):
    result = _export(tiny, tmp_path / "gguf", check_parity=False)
    assert result.report["parity"] == {"skipped": True}
    assert "parity checks skipped" in "\n".join(summary_lines(result.report))


def _numbers(max_d: float, not_near_tie: int = 0, greedy_equal: int = 4) -> dict[str, float]:
    return {
        "max_abs_dlogit": max_d,
        "top1_disagree_not_near_tie": not_near_tie,
        "top1_agree": 446 - not_near_tie,
        "positions": 446,
        "greedy_total": 4,
        "greedy_equal": greedy_equal,
        "greedy_near_tie": 0,
    }


def test_a_gate_failed_by_rounding_alone_says_so():
    from claude_rl.export.parity import strict_failures

    assert strict_failures("f16", _numbers(0.087), 0.15) == []
    # the PPO model's measured case: over the bound, everything else agreeing
    (only,) = strict_failures("f16", _numbers(0.163), 0.15)
    assert only.startswith("f16: max |Δlogit| 0.163 > 0.15") and "--outtype f32" in only
    # a broken conversion gets no such hint: far over the bound, or top-1 / greedy disagreeing
    for numbers in (
        _numbers(36.0, not_near_tie=315, greedy_equal=1),
        _numbers(1.5),
        _numbers(0.3, greedy_equal=3),
    ):
        assert not any("--outtype f32" in line for line in strict_failures("f16", numbers, 0.15))
    assert not any("--outtype f32" in line for line in strict_failures("f32", _numbers(0.2), 0.15))
