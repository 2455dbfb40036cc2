"""Import throughput: tool calls per second through ``claude-rl import``, end to end.

Usage: ``make bench-import`` (or ``python bench/import_throughput.py [--min-calls N]``).

The real transcript fixtures (``../shared/fixtures/claude-code/transcripts``, 799 tool_use
blocks) are laid out as Claude Code does (``<project>/<session>.jsonl`` with subagents in
``<session>/subagents/``) and repeated under fresh session ids until at least ``--min-calls``
tool calls (default 50,000). The import then redacts and copies every line, parses, folds,
extracts behavior and writes episodes. Baseline, measured in the same run on the same files:
reading every line and parsing it with orjson, the floor any importer pays. Target (issue 3):
≥ 2,000 tool calls/s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures" / "claude-code" / "transcripts"


def session_of(path: Path) -> str | None:
    for line in path.read_bytes().splitlines():
        try:
            sid = orjson.loads(line).get("sessionId")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if sid:
            return sid
    return None


def tool_uses(path: Path) -> int:
    ids = set()
    for line in path.read_bytes().splitlines():
        try:
            msg = orjson.loads(line).get("message") or {}
        except (orjson.JSONDecodeError, AttributeError):
            continue
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):
            ids |= {b.get("id") for b in content if isinstance(b, dict) and b.get("type") == "tool_use"}
    return len(ids)


def plan() -> tuple[list[Path], dict[Path, list[Path]], int]:
    """Main transcripts, their subagent files, and the tool_use count of one copy of the corpus.

    Subagent files whose session is not in the corpus are left out (nothing to attach them to).
    """
    files = sorted(FIXTURES.glob("*.jsonl"))
    mains = [f for f in files if "__agent-" not in f.name]
    agents = [f for f in files if "__agent-" in f.name]
    by_session = {session_of(m): m for m in mains}
    children: dict[Path, list[Path]] = {m: [] for m in mains}
    for a in agents:
        owner = by_session.get(session_of(a))
        if owner is not None:
            children[owner].append(a)
    per_rep = sum(tool_uses(m) + sum(tool_uses(a) for a in children[m]) for m in mains)
    return mains, children, per_rep


def layout(dest: Path, reps: int) -> int:
    """Write ``reps`` copies of the corpus as Claude Code projects; return the tool_use count."""
    mains, children, per_rep = plan()
    for r in range(reps):
        project = dest / f"-bench-project-{r}"
        project.mkdir(parents=True)
        for m in mains:
            sid = str(uuid.UUID(int=(r << 32) + mains.index(m)))
            shutil.copyfile(m, project / f"{sid}.jsonl")
            if children[m]:
                sub = project / sid / "subagents"
                sub.mkdir(parents=True)
                for a in children[m]:
                    shutil.copyfile(a, sub / a.name.split("__", 1)[1])
    return per_rep * reps


def baseline(src: Path) -> float:
    start = time.perf_counter()
    for path in src.rglob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            try:
                orjson.loads(line)
            except orjson.JSONDecodeError:
                pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-calls", type=int, default=50_000)
    args = parser.parse_args()
    if not FIXTURES.is_dir():
        raise SystemExit(f"fixtures not found at {FIXTURES}")
    reps = -(-args.min_calls // plan()[2])
    with tempfile.TemporaryDirectory() as tmp:
        src, home = Path(tmp) / "projects", Path(tmp) / "home"
        calls = layout(src, reps)
        size_mb = sum(p.stat().st_size for p in src.rglob("*.jsonl")) / 1e6
        os.environ["CLAUDE_RL_HOME"] = str(home)
        from claude_rl.episodes.importer import import_transcripts

        base = baseline(src)
        start = time.perf_counter()
        result = import_transcripts([src], home)
        elapsed = time.perf_counter() - start
        again = time.perf_counter()
        second = import_transcripts([src], home)
        again = time.perf_counter() - again
    rate = calls / elapsed
    print(f"corpus: {reps} x the fixture transcripts = {calls:,} tool calls, {size_mb:,.0f} MB")
    print(f"machine: {os.cpu_count()} cores")
    print(f"| {'step':<34} | {'seconds':>8} | {'tool calls/s':>12} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 14}|")
    print(f"| {'baseline: read + orjson every line':<34} | {base:>8.1f} | {calls / base:>12,.0f} |")
    print(f"| {'claude-rl import (first run)':<34} | {elapsed:>8.1f} | {rate:>12,.0f} |")
    print(f"| {'claude-rl import (second run)':<34} | {again:>8.1f} | {calls / again:>12,.0f} |")
    print(f"import / baseline time: {elapsed / base:.1f}x")
    print(
        f"episodes: {result.fold.episodes:,}, tool calls in episodes: {result.fold.tool_calls:,}; "
        f"second run added {second.fold.new_episodes} episodes and copied {second.lines_copied} lines"
    )
    print(f"target >= 2,000 tool calls/s: {rate:,.0f} -> {'met' if rate >= 2000 else 'MISSED'}")


if __name__ == "__main__":
    main()
