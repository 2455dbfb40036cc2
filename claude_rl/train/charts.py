"""The training runs' PNG charts: one matplotlib set-up for the SFT loss and the RL reward curves.

Figures are drawn on matplotlib's Agg canvas without pyplot, so no global figure state is kept
between runs (or threads); matplotlib is optional, and ``figure`` returns None without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def figure(rows: int, figsize: tuple[float, float], sharex: bool = False) -> tuple[Any, list[Any]] | None:
    """A figure and its ``rows`` axes stacked vertically; None when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=figsize)
    axes = fig.subplots(rows, 1, sharex=sharex, squeeze=False)[:, 0]
    return fig, list(axes)


def line(ax: Any, entries: Sequence[Mapping[str, Any]], key: str, **style: Any) -> None:
    """One curve of ``entry[key]`` against ``entry["step"]``; nothing when there are no entries."""
    if entries:
        ax.plot([e["step"] for e in entries], [e[key] for e in entries], **style)


def save(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
