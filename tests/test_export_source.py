"""Which model an export picks and how its inputs are validated (no model files are loaded)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from test_export_fixtures import write_manifest

from claude_rl.export import QUANT_TYPES, ExportError, export_gguf, latest_model, normalize_quants, source


def _run(models: Path, name: str, kind: str = "merged", mtime: float | None = None) -> Path:
    run = models / name
    if kind == "merged":
        (run / "merged").mkdir(parents=True)
        (run / "merged" / "config.json").write_text("{}")
        (run / "merged" / "model.safetensors").write_bytes(b"")
    else:
        (run / "adapter").mkdir(parents=True)
        (run / "adapter" / "adapter_config.json").write_text("{}")
    write_manifest(run)
    if mtime is not None:
        os.utime(run / "manifest.json", (mtime, mtime))
    return run


def test_latest_model_takes_the_highest_version_across_sft_and_ppo_runs(data_home):
    models = data_home / "models"
    _run(models, "llama-claude-bc-v2")
    _run(models, "llama-claude-bc-v10", kind="adapter")  # numeric, not lexical order
    _run(models, "llama-claude-ppo-v3")
    _run(models, ".tmp-llama-claude-bc-v11")  # unfinished training run
    (models / "llama-claude-bc-v12").mkdir()  # no model inside
    (models / "base" / "smollm2-135m").mkdir(parents=True)
    assert latest_model(data_home) == models / "llama-claude-bc-v10"
    assert latest_model() == models / "llama-claude-bc-v10"  # CLAUDE_RL_HOME


def test_latest_model_is_never_a_null_control(data_home):
    models = data_home / "models"
    _run(models, "llama-claude-ppo-v2")
    control = _run(models, "llama-claude-ctrl-v5")
    write_manifest(control, phase="control")
    assert source.is_control(control) and not source.is_control(models / "llama-claude-ppo-v2")
    assert latest_model(data_home) == models / "llama-claude-ppo-v2"


def test_latest_model_breaks_ties_by_the_newest_manifest(data_home):
    models = data_home / "models"
    now = time.time()
    _run(models, "llama-claude-bc-v4", mtime=now - 100)
    _run(models, "llama-claude-ppo-v4", mtime=now)
    assert latest_model(data_home).name == "llama-claude-ppo-v4"


def test_latest_model_without_runs_says_what_to_do(data_home):
    with pytest.raises(ExportError, match="claude-rl train"):
        latest_model(data_home)


def test_resolve_picks_merged_and_names_outputs_after_the_run(data_home, tmp_path):
    run = _run(data_home / "models", "llama-claude-bc-v1")
    for given in (run, run / "merged"):
        src = source.resolve(given, tmp_path / "scratch")
        assert src.hf_dir == run / "merged" and src.name == "llama-claude-bc-v1"
        assert src.run_dir == run and src.default_out_dir == run / "gguf"
        assert not src.merged_from_adapter
    plain = tmp_path / "smollm2-135m"
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    (plain / "model.safetensors").write_bytes(b"")
    src = source.resolve(plain, tmp_path / "scratch")
    assert src.name == "smollm2-135m" and src.run_dir is None and src.default_out_dir == plain / "gguf"
    with pytest.raises(ExportError, match="neither"):
        source.resolve(data_home, tmp_path / "scratch")


def test_bad_arguments_fail_before_anything_is_written(data_home, tmp_path):
    with pytest.raises(ExportError, match="q4_k_m"):  # the message lists the valid names
        export_gguf(tmp_path, quants=["q7_z"])
    with pytest.raises(ExportError, match="outtype"):
        export_gguf(tmp_path, outtype="f8")
    with pytest.raises(ExportError, match="no such model folder"):
        export_gguf(tmp_path / "missing")
    assert list(tmp_path.iterdir()) == []


def test_quant_names_are_normalized_and_validated():
    assert normalize_quants("Q8_0, q4-k-m,q8_0") == ["q8_0", "q4_k_m"]
    assert normalize_quants(None) == [] and normalize_quants(()) == []
    assert {"q8_0", "q4_k_m", "q5_k_m", "q6_k"} <= set(QUANT_TYPES)
    with pytest.raises(ExportError) as err:
        normalize_quants(["iq2_xxs"])  # needs an importance matrix: not offered
    assert all(name in str(err.value) for name in QUANT_TYPES)
