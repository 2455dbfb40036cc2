"""The one place that decides where claude-rl keeps its data.

Standard library only, and no ``pathlib`` on the hook path: the capture hooks import this module
on every tool call, and importing pathlib (with the ``re``/``urllib`` modules it pulls in) costs
more than the rest of the hook. The hooks use the ``*_str`` functions; everything else gets
``pathlib.Path`` objects from the functions without the suffix.

Resolution order for the data home:

1. ``CLAUDE_RL_HOME`` in the environment;
2. a pinned path in ``$XDG_CONFIG_HOME/claude-rl/home`` (written by ``claude-rl home --set``), so a
   plugin copy that Claude Code runs from its cache writes where the CLI reads;
3. the checkout's ``data/`` folder when the package runs from a source checkout (not from Claude
   Code's plugin cache, which is replaced on every plugin update);
4. ``$XDG_DATA_HOME/claude-rl`` (``~/.local/share/claude-rl``).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

ENV_HOME = "CLAUDE_RL_HOME"
_PACKAGE = os.path.dirname(os.path.realpath(__file__))
_CHECKOUT = os.path.dirname(_PACKAGE)

# Sub-folders of the home, one per pipeline stage (see docs/design.md).
TRACES = "traces"  # raw hook events, one JSONL file per session
TRANSCRIPTS = "transcripts"  # redacted copies of Claude Code session transcripts
CAPTURE_STATE = "capture"  # errors log, the on/off switch
CONFIG = "config.json"  # user configuration (JSON, so the stdlib-only hooks can read it)
MODELS = "models"  # trained runs (llama-claude-*-vN), null controls, base models under base/


def __getattr__(name: str) -> Path:
    # PACKAGE_DIR / CHECKOUT_DIR as Path objects, built on first use (module __getattr__, PEP 562).
    if name in ("PACKAGE_DIR", "CHECKOUT_DIR"):
        from pathlib import Path

        return Path(_PACKAGE if name == "PACKAGE_DIR" else _CHECKOUT)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _xdg(var: str, *default: str) -> str:
    return os.environ.get(var) or os.path.join(os.path.expanduser("~"), *default)


def pin_file_str() -> str:
    """File holding a pinned data home (one line: an absolute path)."""
    return os.path.join(_xdg("XDG_CONFIG_HOME", ".config"), "claude-rl", "home")


def _in_plugin_cache(path: str) -> bool:
    parts = os.path.normpath(path).split(os.sep)
    return any(parts[i : i + 2] == ["plugins", "cache"] for i in range(len(parts) - 1))


def _is_checkout(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "pyproject.toml")) and os.path.isdir(os.path.join(path, "hooks"))


def home_and_source_str() -> tuple[str, str]:
    """The data home and where it came from: env, pinned, checkout or user."""
    env = os.environ.get(ENV_HOME)
    if env:
        return os.path.expanduser(env), "env"
    try:
        with open(pin_file_str(), encoding="utf-8") as fh:
            pinned = fh.read().strip()
    except OSError:
        pinned = ""
    if pinned:
        return os.path.expanduser(pinned), "pinned"
    if _is_checkout(_CHECKOUT) and not _in_plugin_cache(_CHECKOUT):
        return os.path.join(_CHECKOUT, "data"), "checkout"
    return os.path.join(_xdg("XDG_DATA_HOME", ".local", "share"), "claude-rl"), "user"


def fallback_state_str() -> str:
    """Where a hook counts failures when the store itself cannot be written."""
    return os.path.join(_xdg("XDG_STATE_HOME", ".local", "state"), "claude-rl")


# --- pathlib views for the CLI and the later stages ---------------------------------------------


def home_and_source() -> tuple[Path, str]:
    from pathlib import Path

    where, source = home_and_source_str()
    return Path(where), source


def home() -> Path:
    return home_and_source()[0]


def _under(root: Path | str | None, name: str) -> Path:
    from pathlib import Path

    return Path(root if root is not None else home()) / name


def traces_dir(root: Path | str | None = None) -> Path:
    return _under(root, TRACES)


def transcripts_dir(root: Path | str | None = None) -> Path:
    return _under(root, TRANSCRIPTS)


def capture_state_dir(root: Path | str | None = None) -> Path:
    return _under(root, CAPTURE_STATE)


def config_file(root: Path | str | None = None) -> Path:
    return _under(root, CONFIG)


def models_dir(root: Path | str | None = None) -> Path:
    return _under(root, MODELS)


def run_candidates(run: Path | str, root: Path | str | None = None) -> list[Path]:
    """Where the model or run ``run`` names may be, in the order to look: the path as given, then,
    for a relative one (``llama-claude-ppo-v4``, ``llama-claude-bc-v1/merged``), the same under
    ``<home>/models``. Every command that takes a run by name (train's sft_model, export-gguf, eval,
    control, probe) looks through this list, so a name means the same folder to all of them."""
    from pathlib import Path

    given = Path(run).expanduser()
    if given.is_absolute():
        return [given]
    return [given, models_dir(root) / given]


def pin_file() -> Path:
    from pathlib import Path

    return Path(pin_file_str())


def fallback_state_dir() -> Path:
    from pathlib import Path

    return Path(fallback_state_str())
