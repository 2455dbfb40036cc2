"""The real default model (SmolLM2-135M-Instruct, materialized from the bundled GGUF): exported
F16 + q8_0 it passes parity; a wrong chat template and a skipped Q/K permutation each fail it;
a LoRA-merged model in a run folder passes. Minutes on 2 CPU cores."""

from __future__ import annotations

import json

import pytest
from test_export_fixtures import write_manifest

from claude_rl.export import ExportParityError, export_gguf

pytestmark = pytest.mark.slow
pytest.importorskip("llama_cpp", reason="the export runs the GGUF with llama-cpp-python")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from claude_rl.base_model import BaseModelMissing, materialize

    try:
        return materialize(home=tmp_path_factory.mktemp("home"))
    except BaseModelMissing as e:
        pytest.skip(str(e))


def _summary(numbers):
    keys = (
        "max_abs_dlogit",
        "top1_agree",
        "positions",
        "mean_kl",
        "greedy_equal",
        "greedy_near_tie",
        "greedy_total",
    )
    return {k: numbers[k] for k in keys}


def test_default_model_f16_and_q8_0_pass_parity(base, tmp_path):
    result = export_gguf(base, tmp_path / "gguf", quants=["q8_0"])
    parity = result.report["parity"]
    print("\nF16:", json.dumps(_summary(parity["files"]["f16"])))
    print("q8_0:", json.dumps(_summary(parity["files"]["q8_0"])))
    print("durations:", json.dumps(result.report["duration_s"]))
    f16 = parity["files"]["f16"]
    assert f16["max_abs_dlogit"] <= 0.15 and f16["top1_disagree_not_near_tie"] == 0
    assert f16["greedy_equal"] + f16["greedy_near_tie"] == f16["greedy_total"]
    assert parity["files"]["q8_0"]["top1_rate"] >= 0.9
    assert parity["template"]["all_equal"] and parity["tokenizer"]["mismatches"] == []
    assert result.report["tokenizer"]["pre_tokenizer"] == "smollm"
    assert result.gguf.name == "smollm2-135m.gguf" and result.quants["q8_0"].name == "smollm2-135m-q8_0.gguf"


def test_the_shipped_smollm2_template_fails_the_template_check(base, tmp_path):
    """SmolLM2's own template (which drops tools and tool calls) in place of the project's."""
    import gguf

    from claude_rl.base_model import default_gguf

    shipped = gguf.GGUFReader(str(default_gguf())).get_field(gguf.Keys.Tokenizer.CHAT_TEMPLATE).contents()
    with pytest.raises(ExportParityError) as err:
        export_gguf(base, tmp_path / "gguf", quants=(), _chat_template=shipped)
    report = err.value.report
    assert not report["template"]["all_equal"] and report["files"]["f16"]["max_abs_dlogit"] <= 0.15
    assert not (tmp_path / "gguf").exists()


def test_skipping_the_qk_permutation_fails_the_logit_check(base, tmp_path):
    with pytest.raises(ExportParityError) as err:
        export_gguf(base, tmp_path / "gguf", quants=(), _permute_qk=False)
    numbers = err.value.report["files"]["f16"]
    print("\nF16 without the Q/K permutation:", json.dumps(_summary(numbers)))
    assert numbers["max_abs_dlogit"] > 1 and numbers["top1_disagree_not_near_tie"] > 0
    assert not (tmp_path / "gguf").exists()


def test_a_lora_merged_run_passes_parity(base, data_home):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02)  # non-zero: the merge changes the model
    merged = peft_model.merge_and_unload()
    run = data_home / "models" / "llama-claude-bc-v1"
    merged.save_pretrained(str(run / "merged"), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(run / "merged"))
    write_manifest(run, base_model="smollm2-135m", base_model_folder=str(base))

    # the merge moved the logits well beyond the parity tolerance
    ids = torch.tensor([[1, 9690, 198, 28120, 905]])
    with torch.no_grad():
        before = AutoModelForCausalLM.from_pretrained(str(base)).eval()(ids).logits
        after = AutoModelForCausalLM.from_pretrained(str(run / "merged")).eval()(ids).logits
    assert (before - after).abs().max() > 0.5

    result = export_gguf(quants=())  # the newest run under the home
    f16 = result.report["parity"]["files"]["f16"]
    print("\nLoRA-merged F16:", json.dumps(_summary(f16)))
    assert result.out_dir == run / "gguf" and result.gguf.name == "llama-claude-bc-v1.gguf"
    assert result.report["parity"]["passed"]
