"""Where a run name points: the one lookup that train, export-gguf, eval, control and probe share."""

from __future__ import annotations

from pathlib import Path

from claude_rl import paths


def test_models_dir_is_under_the_given_home_or_the_resolved_one(tmp_path, monkeypatch):
    assert paths.models_dir(tmp_path) == tmp_path / "models"
    monkeypatch.setenv(paths.ENV_HOME, str(tmp_path / "home"))
    assert paths.models_dir() == tmp_path / "home" / "models"


def test_a_relative_name_is_tried_as_given_then_under_the_home(tmp_path):
    assert paths.run_candidates("llama-claude-ppo-v4", tmp_path) == [
        Path("llama-claude-ppo-v4"),
        tmp_path / "models" / "llama-claude-ppo-v4",
    ]
    assert paths.run_candidates(Path("llama-claude-bc-v1") / "merged", tmp_path)[-1] == (
        tmp_path / "models" / "llama-claude-bc-v1" / "merged"
    )


def test_an_absolute_or_home_relative_path_is_only_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert paths.run_candidates(tmp_path / "elsewhere" / "run", tmp_path / "home") == [
        tmp_path / "elsewhere" / "run"
    ]
    assert paths.run_candidates("~/runs/bc", tmp_path / "home") == [tmp_path / "runs" / "bc"]
