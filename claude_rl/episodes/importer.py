"""Backfill episodes from transcripts already on disk (``claude-rl import``).

A new user has weeks of sessions under ``~/.claude/projects``: importing them takes the store from
zero to hundreds of traces on day one. Each transcript (and its subagent files) is copied into
``<home>/transcripts`` through the same incremental, redacting copier the async hook uses, then
its session is folded. Both steps are idempotent: a second import copies no line and folds no
session, so it adds nothing.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from claude_rl import paths
from claude_rl.capture import capture_enabled, load_config, sanitize_id
from claude_rl.episodes.fold import FoldResult, fold, run_parallel
from claude_rl.redact import Redactor, compile_user_rules
from claude_rl.transcript_copy import copy_file


def default_sources() -> list[Path]:
    """Claude Code's projects folder (``CLAUDE_CONFIG_DIR`` moves it), plus the older location."""
    config = os.environ.get("CLAUDE_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".claude")
    found = [Path(config) / "projects"]
    legacy = Path(os.path.expanduser("~")) / ".config" / "claude" / "projects"
    if legacy.is_dir():
        found.append(legacy)
    return found


@dataclass
class Discovered:
    session_id: str
    main: Path
    subagents: list[Path] = field(default_factory=list)


def discover(sources: Iterable[Path], skipped: Counter[str]) -> list[Discovered]:
    """Main session transcripts under ``sources`` with their subagent files.

    New layout: ``<project>/<session>.jsonl`` + ``<project>/<session>/subagents/agent-*.jsonl``.
    Old layout: ``agent-*.jsonl`` beside the session file, linked by the sessionId in its lines.
    """
    mains: dict[str, Discovered] = {}
    loose_agents: list[Path] = []
    for source in sources:
        source = Path(source).expanduser()
        if source.is_file():
            files = [source]
        elif source.is_dir():
            files = sorted(source.rglob("*.jsonl"))
        else:
            skipped["missing_path"] += 1
            continue
        for f in files:
            if f.parent.name == "subagents":
                continue  # picked up with their session
            if f.name.startswith("agent-"):
                loose_agents.append(f)
                continue
            sid = sanitize_id(f.stem)
            if sid in mains:
                skipped["duplicate_session_file"] += 1
                continue
            sub_dir = f.with_suffix("") / "subagents"
            subs = sorted(sub_dir.glob("agent-*.jsonl")) if sub_dir.is_dir() else []
            mains[sid] = Discovered(sid, f, subs)
    for agent in loose_agents:
        owner = _session_of(agent)
        if owner and owner in mains:
            mains[owner].subagents.append(agent)
        else:
            skipped["subagent_without_session"] += 1
    return list(mains.values())


def _session_of(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    marker = b'"sessionId":"'
    at = head.find(marker)
    if at < 0:
        marker = b'"sessionId": "'
        at = head.find(marker)
    if at < 0:
        return None
    end = head.find(b'"', at + len(marker))
    return sanitize_id(head[at + len(marker) : end].decode("utf-8", "replace")) if end > 0 else None


@dataclass
class ImportResult:
    files: int = 0
    sessions: int = 0
    lines_copied: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    fold: FoldResult = field(default_factory=FoldResult)


def import_transcripts(
    sources: Iterable[Path] | None = None,
    root: Path | None = None,
    *,
    on_file: Callable[[str], None] | None = None,
    on_session: Callable[[str], None] | None = None,
    workers: int | None = None,
) -> ImportResult:
    """Copy (redacted) and fold every session found under ``sources``; sessions run in parallel."""
    root = root or paths.home()
    result = ImportResult()
    cfg = load_config(root)
    if not capture_enabled(root, cfg):
        result.skipped["capture_off"] += 1
        return result
    found = discover(sources if sources is not None else default_sources(), result.skipped)
    jobs = [(item, root) for item in found]
    touched: list[str] = []
    for session_id, files, copied, problems, non_empty in run_parallel(_copy_session, jobs, workers):
        result.files += files
        result.lines_copied += copied
        result.skipped.update(problems)
        if non_empty:
            touched.append(session_id)
        else:
            result.skipped["empty_transcript"] += 1
        if on_file:
            on_file(session_id)
    result.sessions = len(touched)
    result.fold = fold(root, touched, progress=on_session, workers=workers)
    return result


def _copy_session(item: Discovered, root: Path) -> tuple[str, int, int, Counter[str], bool]:
    """Copy one session's transcript and subagent files, redacted (runs in a worker process)."""
    cfg = load_config(root)
    rules, _ = compile_user_rules(cfg["redact_patterns"])
    redactor = Redactor(rules)
    transcripts = paths.transcripts_dir(root)
    main = transcripts / f"{item.session_id}.jsonl"
    pairs = [(item.main, main)]
    pairs += [
        (sub, transcripts / item.session_id / "subagents" / f"{sanitize_id(sub.stem, 'agent')}.jsonl")
        for sub in item.subagents
    ]
    copied = 0
    problems: Counter[str] = Counter()
    for source, dest in pairs:
        try:
            copied += copy_file(source, dest, redactor, cfg["max_field_chars"])
        except OSError as exc:
            problems[f"unreadable: {type(exc).__name__}"] += 1
    return item.session_id, len(pairs), copied, problems, dest_exists(main)


def dest_exists(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False
