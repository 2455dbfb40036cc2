"""Test setup: every test gets its own data home, so no test can touch real user data.

Tiers: the default run (`make test`) is fast and offline; `-m slow` runs the real small model;
`-m gpu` tests skip without CUDA.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOOK = ROOT / "hooks" / "claude_rl_hook.py"
TRANSCRIPT_HOOK = ROOT / "hooks" / "claude_rl_transcript.py"
# ../shared sits beside the checkout in development and in CI.
FIXTURES = ROOT.parent / "shared" / "fixtures" / "claude-code"


@pytest.fixture(autouse=True)
def data_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "claude-rl-home"
    monkeypatch.setenv("CLAUDE_RL_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.delenv("CLAUDE_RL_CAPTURE", raising=False)
    return home


def run_hook(
    payload: bytes | str | dict,
    event: str = "",
    env: dict | None = None,
    timeout: float = 10,
    script: Path = HOOK,
):
    """Run a hook script the way Claude Code does: a fresh `python3 -S` process, payload on stdin."""
    import subprocess

    if isinstance(payload, dict):
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    args = [sys.executable, "-S", str(script)] + ([event] if event else [])
    return subprocess.run(
        args, input=payload, capture_output=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def fixture_payloads() -> list[tuple[str, dict]]:
    """Every recorded hook payload in ../shared/fixtures/claude-code/hook-payloads."""
    folder = FIXTURES / "hook-payloads"
    out: list[tuple[str, dict]] = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        items = data if isinstance(data, list) else [data]
        out += [(f"{path.name}[{i}]", item) for i, item in enumerate(items) if isinstance(item, dict)]
    for path in sorted(folder.glob("*.jsonl")):
        for i, line in enumerate(path.read_text().splitlines()):
            if line.strip():
                out.append((f"{path.name}[{i}]", json.loads(line)))
    return out
