"""The training runs' PNG charts are drawn from their metrics (matplotlib's Agg canvas)."""

from __future__ import annotations

import pytest

from claude_rl.train import charts, grpo, sft

pytest.importorskip("matplotlib")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def series(*values):
    return [{"step": i + 1, "value": v} for i, v in enumerate(values)]


def test_sft_loss_chart_is_a_png(tmp_path):
    metrics = {
        "train_loss": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}],
        "eval_loss": [{"step": 2, "eval_loss": 1.7}],
    }
    assert sft.plot_loss(metrics, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes().startswith(PNG_MAGIC)


def test_rl_reward_chart_is_a_png_when_some_series_are_empty(tmp_path):
    metrics = {
        "reward": series(0.2, 0.3),
        "reward_std": series(0.1, 0.1),
        "parts": {"tool_alignment": {"mean": series(0.4, 0.5)}, "constraints": {"mean": []}},
        "loss": series(0.01, 0.02),
        "kl": [],
        "zero_spread_groups": 1,
        "groups": 6,
    }
    assert grpo.plot_rewards(metrics, tmp_path / "rewards.png")
    assert (tmp_path / "rewards.png").read_bytes().startswith(PNG_MAGIC)


def test_line_draws_one_curve_per_non_empty_series():
    fig, (ax,) = charts.figure(1, (4, 3))
    charts.line(ax, series(1.0, 2.0, 3.0), "value", label="a")
    charts.line(ax, [], "value", label="b")
    (curve,) = ax.get_lines()
    assert list(curve.get_xdata()) == [1, 2, 3] and list(curve.get_ydata()) == [1.0, 2.0, 3.0]
