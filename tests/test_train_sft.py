"""SFT runs: bad inputs fail before loading a model and leave no run folder; the tiny preset trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from claude_rl.cli import app
from claude_rl.train import sft
from claude_rl.train.config import CONFIGS_DIR, load_config
from claude_rl.train.first_tool import prompt_messages, reference_first_tool

TINY = CONFIGS_DIR / "sft-tiny.yaml"

ROW = {
    "messages": [
        {"role": "user", "content": "list files"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "Bash", "arguments": {"command": "ls"}}}
            ],
        },
        {"role": "tool", "content": "a.txt"},
        {"role": "assistant", "content": "a.txt", "train": False},
    ],
    "tools": "[]",
    "meta": {"session_id": "s"},
}


@pytest.fixture(autouse=True)
def _no_cuda(monkeypatch):
    monkeypatch.setattr(sft, "_cuda_available", lambda: False)


def _dataset(folder: Path, train_rows: int = 2, tokenizer: str = "smollm2-135m") -> Path:
    folder.mkdir(parents=True)
    for split, n in (("train", train_rows), ("validation", 1), ("test", 1)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(ROW) + "\n" for _ in range(n)))
    manifest = {"format": "messages", "options": {"tokenizer": tokenizer}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _no_run_folder(home: Path) -> None:
    models = home / "models"
    left = [p.name for p in models.iterdir() if p.name != "base"] if models.is_dir() else []
    assert left == []


def test_missing_dataset_folder(tmp_path, data_home):
    cfg = load_config(TINY, [f"dataset={tmp_path / 'nope'}"])
    with pytest.raises(sft.TrainError, match="does not exist|no train.jsonl"):
        sft.main(cfg, data_home)
    _no_run_folder(data_home)


def test_empty_train_split(tmp_path, data_home):
    folder = _dataset(tmp_path / "ds", train_rows=0)
    with pytest.raises(sft.TrainError, match="no training rows"):
        sft.main(load_config(TINY, [f"dataset={folder}"]), data_home)
    _no_run_folder(data_home)


def test_dataset_built_for_another_tokenizer(tmp_path, data_home):
    folder = _dataset(tmp_path / "ds", tokenizer="other-model")
    with pytest.raises(sft.TrainError, match="other-model tokenizer"):
        sft.main(load_config(TINY, [f"dataset={folder}"]), data_home)
    _no_run_folder(data_home)


def test_missing_validation_split_when_evaluating(tmp_path, data_home):
    folder = _dataset(tmp_path / "ds")
    (folder / "validation.jsonl").unlink()
    with pytest.raises(sft.TrainError, match="no validation rows"):
        sft.main(load_config(TINY, [f"dataset={folder}"]), data_home)
    _no_run_folder(data_home)


def test_qlora_on_cpu(tmp_path, data_home):
    folder = _dataset(tmp_path / "ds")
    cfg = load_config(TINY, [f"dataset={folder}", "lora.load_in_4bit=true", "device=auto", "precision=auto"])
    with pytest.raises(sft.TrainError, match="QLoRA"):
        sft.main(cfg, data_home)
    _no_run_folder(data_home)


def test_train_phase_ppo_without_an_sft_model_says_to_train_first():
    result = CliRunner().invoke(app, ["train", "--phase", "ppo"])
    assert result.exit_code == 1
    assert "make train" in result.output


def test_train_rejects_an_unknown_phase():
    result = CliRunner().invoke(app, ["train", "--phase", "dpo"])
    assert result.exit_code == 2
    assert "sft" in result.output and "ppo" in result.output


def test_train_cli_reports_config_errors():
    result = CliRunner().invoke(app, ["train", "--phase", "sft", "lerning_rate=1"])
    assert result.exit_code == 2
    assert "learning_rate" in result.output


def test_rows_are_normalized_for_arrow():
    row = sft._normalize(ROW)
    assert [m["train"] for m in row["messages"]] == [True, True, True, False]
    assert row["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"command": "ls"}'
    assert "meta" not in row
    assert ROW["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"command": "ls"}


def test_subsample_is_seeded_and_keeps_file_order():
    rows = [{"i": i} for i in range(20)]
    a, b = sft._subsample(rows, 5, 42), sft._subsample(rows, 5, 42)
    assert a == b and len(a) == 5
    assert [r["i"] for r in a] == sorted(r["i"] for r in a)
    assert sft._subsample(rows, None, 42) == rows


def test_first_tool_helpers():
    assert reference_first_tool(ROW["messages"]) == "Bash"
    assert prompt_messages(ROW["messages"]) == ROW["messages"][:1]


@pytest.mark.slow
def test_tiny_preset_trains_and_never_overwrites(tmp_path_factory):
    from safetensors.torch import load_file

    home = tmp_path_factory.mktemp("train-home")
    # Two rows at batch 2: both steps see the same batch, so the loss must go down at a high rate.
    cfg = load_config(TINY, ["max_train_rows=2", "max_eval_rows=1", "learning_rate=5e-3", "max_steps=2"])
    first = sft.main(cfg, home)
    assert first.name == "tiny-v1"
    assert {"adapter", "merged", "manifest.json"} <= {p.name for p in first.iterdir()}
    assert (first / "merged" / "model.safetensors").is_file()
    assert (first / "merged" / "tokenizer.json").is_file()
    adapter = load_file(str(first / "adapter" / "adapter_model.safetensors"))
    lora_b = [t for k, t in adapter.items() if "lora_B" in k]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: nonzero = trained
    manifest = json.loads((first / "manifest.json").read_text())
    m = manifest["metrics"]
    assert m["train_loss_last"] < m["train_loss_first"]
    assert m["eval_loss"] and m["tokens_seen"] > 0
    assert manifest["dataset"]["train_rows"] == 2
    assert set(manifest["versions"]) >= {"torch", "transformers", "trl", "peft"}

    second = sft.main(load_config(TINY, ["max_train_rows=2", "max_steps=1", "eval_strategy='no'"]), home)
    assert second.name == "tiny-v2"
    assert not any(p.name.startswith(".tmp-") for p in (home / "models").iterdir())


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("resume-home")
    overrides = ["max_train_rows=2", "max_steps=2", "save_steps=1", "eval_strategy='no'", "logging_steps=1"]
    cfg = load_config(TINY, overrides)

    def crash(*args, **kwargs):  # fails after training, with checkpoints on disk
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(sft, "plot_loss", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sft.main(cfg, home)
    kept = home / "models" / ".tmp-tiny-v1" / "checkpoints"
    assert sorted(p.name for p in kept.iterdir() if p.name.startswith("checkpoint-")) == [
        "checkpoint-1",
        "checkpoint-2",
    ]
    monkeypatch.undo()
    monkeypatch.setattr(sft, "_cuda_available", lambda: False)
    # The same config again: same automatic name, so it picks the kept checkpoint up.
    finished = sft.main(load_config(TINY, [*overrides[:1], "max_steps=3", *overrides[2:]]), home)
    assert finished.name == "tiny-v1"
    manifest = json.loads((finished / "manifest.json").read_text())
    assert manifest["resumed_from"].endswith("checkpoint-2")
    assert manifest["metrics"]["steps"] == 3
    assert not (home / "models" / ".tmp-tiny-v1").exists()
