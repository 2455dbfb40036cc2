"""What the store holds: the numbers behind ``claude-rl status``.

A *trace* is a completed prompt → answer turn (UserPromptSubmit … Stop) that used at least one
tool: the unit later issues turn into training episodes. Duplicate events (the same hook
registered twice, e.g. in settings and as a plugin) are counted once.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from claude_rl import paths
from claude_rl.capture import capture_enabled, load_config
from claude_rl.store import dedupe_records, iter_trace_files

MILESTONES = (50, 500, 1000)
TOOL_EVENTS = ("PreToolUse", "PostToolUse", "PostToolUseFailure")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        data = path.read_bytes()
    except OSError:
        return []
    out = []
    for line in data.splitlines():
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def summarize(root: Path | None = None) -> dict[str, Any]:
    root = root or paths.home()
    home, source = (root, "given") if root != paths.home() else paths.home_and_source()
    events: Counter[str] = Counter()
    tools: Counter[str] = Counter()
    redactions: Counter[str] = Counter()
    sessions = records_total = truncated = corrupt = partial = duplicates = 0
    turns_completed = traces = turns_failed = 0
    for tf in iter_trace_files(root):
        sessions += 1
        corrupt += tf.corrupt_lines
        partial += int(tf.partial_trailing)
        records = dedupe_records(tf.records)
        duplicates += len(tf.records) - len(records)
        records_total += len(records)
        call_ids: set[str] = set()
        open_turn = False
        turn_calls = 0
        has_pre = any(r.event == "PreToolUse" for r in records)
        for rec in records:
            events[rec.event] += 1
            redactions.update(rec.redactions)
            truncated += len(rec.truncated)
            if rec.event in TOOL_EVENTS:
                # A call is its tool_use_id; without one (old Claude Code) count PreToolUse only.
                new = (
                    (rec.tool_use_id not in call_ids)
                    if rec.tool_use_id
                    else (rec.event == "PreToolUse" or not has_pre)
                )
                if rec.tool_use_id:
                    call_ids.add(rec.tool_use_id)
                if new:
                    tools[rec.tool_name or "?"] += 1
                    turn_calls += 1
            elif rec.event == "UserPromptSubmit":
                open_turn, turn_calls = True, 0
            elif rec.event == "Stop" and rec.agent_id is None and open_turn:
                turns_completed += 1
                traces += int(turn_calls > 0)
                open_turn = False
            elif rec.event == "StopFailure" and open_turn:
                turns_failed += 1
                open_turn = False
    errors = Counter(str(e.get("error")) for e in _read_jsonl(paths.capture_state_dir(root) / "errors.jsonl"))
    failures = [
        f for f in _read_jsonl(paths.fallback_state_dir() / "failures.jsonl") if f.get("store") == str(root)
    ]
    episodes = episode_summary(root)
    # Imported sessions have episodes but no hook records: count their completed tool-using turns.
    traces = max(traces, episodes["completed_with_tools"])
    transcripts = paths.transcripts_dir(root)
    transcript_files = len(list(transcripts.rglob("*.jsonl"))) if transcripts.is_dir() else 0
    enabled = capture_enabled(root, load_config(root))
    return {
        "home": str(home),
        "home_source": source,
        "capture_enabled": enabled,
        "sessions": sessions,
        "records": records_total,
        "duplicate_records": duplicates,
        "events": dict(events.most_common()),
        "tool_calls": sum(tools.values()),
        "tool_calls_by_tool": dict(tools.most_common()),
        "turns_completed": turns_completed,
        "turns_failed": turns_failed,
        "traces": traces,
        "progress": {str(m): round(min(traces / m, 1.0) * 100, 1) for m in MILESTONES},
        "redactions": dict(redactions.most_common()),
        "truncated_fields": truncated,
        "errors": dict(errors.most_common()),
        "capture_failures": len(failures),
        "last_failure": failures[-1] if failures else None,
        "corrupt_lines": corrupt,
        "partial_trailing_lines": partial,
        "transcript_copies": transcript_files,
        "next_steps": next_steps(traces, sessions + episodes["sessions"], enabled, len(failures)),
        "episodes": episodes,
    }


def episode_summary(root: Path) -> dict[str, Any]:
    """Folded episodes by category and status, and how diverse they are.

    Diversity is what the seed asks of a corpus: many task kinds, not one workflow repeated. It is
    reported as the categories covered, the normalized entropy of the category mix (1.0 = even),
    and how many distinct tool sequences and tools the episodes use.
    """
    from claude_rl.episodes.behavior import CATEGORIES
    from claude_rl.episodes.fold import read_episodes

    episodes = read_episodes(root)
    categories: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    sequences: set[tuple[str, ...]] = set()
    tools: set[str] = set()
    with_tools = completed_with_tools = 0
    sessions: set[str] = set()
    for ep in episodes:
        sessions.add(ep.session_id)
        completed_with_tools += bool(ep.steps) and ep.status == "completed"
        categories[(ep.behavior or {}).get("category", "other")] += 1
        statuses[ep.status] += 1
        seq = tuple(ep.tool_sequence)
        sequences.add(seq)
        tools.update(seq)
        with_tools += bool(seq)
    total = sum(categories.values())
    entropy = -sum((n / total) * math.log(n / total) for n in categories.values()) if total else 0.0
    evenness = entropy / math.log(len(CATEGORIES)) if total else 0.0
    return {
        "total": total,
        "with_tools": with_tools,
        "completed_with_tools": completed_with_tools,
        "sessions": len(sessions),
        "by_category": {c: categories.get(c, 0) for c in CATEGORIES},
        "by_status": dict(statuses.most_common()),
        "categories_covered": sum(1 for c in CATEGORIES if categories.get(c)),
        "category_evenness": round(evenness, 3),
        "distinct_tool_sequences": len(sequences),
        "distinct_tools": len(tools),
        "thin_categories": [c for c in CATEGORIES if c != "other" and categories.get(c, 0) < 5],
    }


def next_steps(traces: int, sessions: int, enabled: bool, failures: int) -> list[str]:
    steps = []
    if not enabled:
        steps.append("Capture is off: `claude-rl capture --on` turns it back on.")
    if failures:
        steps.append("Some events could not be written (see last_failure): check disk space and permissions.")
    if sessions == 0:
        steps.append(
            "Nothing captured yet. Register the hooks (`claude-rl install-hooks --scope user`, or install "
            "the plugin), then use Claude Code as usual. `claude-rl capture --demo` shows what gets recorded."
        )
    elif traces < MILESTONES[0]:
        steps.append(
            f"Keep using Claude Code: {MILESTONES[0] - traces} more traces reach the first milestone "
            f"({MILESTONES[0]}), enough to try behavioral cloning."
        )
    elif traces < MILESTONES[1]:
        steps.append(
            f"{MILESTONES[1] - traces} more traces reach {MILESTONES[1]}, where training starts to "
            "transfer workflows to new prompts. Vary the kind of tasks you ask."
        )
    elif traces < MILESTONES[2]:
        steps.append(
            f"{MILESTONES[2] - traces} more traces reach {MILESTONES[2]}, a good base for the RL phase."
        )
    else:
        steps.append("Enough traces for both training phases.")
    return steps
