"""Reading the append-only trace store: one JSONL file per session under ``<home>/traces``.

Lines are validated here with pydantic (the hooks write without validating, to stay fast). A
line that does not parse is skipped and counted: a partial *last* line is what a writer killed
mid-append leaves behind (the next append starts on a fresh line, so it stays the only damage).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson
from pydantic import ValidationError

from claude_rl import paths
from claude_rl.schema import TraceRecord, upgrade_record


@dataclass
class TraceFile:
    path: Path
    records: list[TraceRecord] = field(default_factory=list)
    lines: int = 0
    corrupt_lines: int = 0  # complete lines that are not a valid record
    partial_trailing: bool = False  # the file ends in an unterminated, unparseable line

    @property
    def session_id(self) -> str:
        return self.path.stem


def parse_line(line: bytes) -> TraceRecord | None:
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        # The hook writes with the stdlib json when orjson is missing (``python3 -S``): lone
        # surrogates (``"\ud800"``) and NaN/Infinity are valid there but refused by orjson.
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):
            return None
    if not isinstance(data, dict):
        return None
    try:
        return TraceRecord.model_validate(upgrade_record(data))
    except ValidationError:
        return None


def read_trace_file(path: Path) -> TraceFile:
    result = TraceFile(path=path)
    data = path.read_bytes()
    if not data:
        return result
    lines = data.split(b"\n")
    terminated = data.endswith(b"\n")
    if terminated:
        lines.pop()  # the empty string after the final newline
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        result.lines += 1
        record = parse_line(line)
        if record is not None:
            result.records.append(record)
        elif i == len(lines) - 1 and not terminated:
            result.partial_trailing = True
        else:
            result.corrupt_lines += 1
    return result


def trace_files(root: Path | None = None) -> list[Path]:
    folder = paths.traces_dir(root)
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.jsonl"))


def iter_trace_files(root: Path | None = None) -> Iterator[TraceFile]:
    for path in trace_files(root):
        yield read_trace_file(path)


DUPLICATE_WINDOW_S = 2.0


def dedupe_records(records: list[TraceRecord]) -> list[TraceRecord]:
    """Drop a record whose event and payload repeat one captured moments before in the session.

    Two registrations of the hook (settings and plugin) fire together with byte-identical stdin;
    two real events never carry the same payload within a couple of seconds.
    """
    last_seen: dict[tuple[str, bytes], float] = {}
    out = []
    for rec in records:
        key = (rec.event, orjson.dumps(rec.payload, option=orjson.OPT_SORT_KEYS))
        when = _epoch(rec.ts)
        before = last_seen.get(key)
        last_seen[key] = when
        if before is not None and abs(when - before) <= DUPLICATE_WINDOW_S:
            continue
        out.append(rec)
    return out


def _epoch(ts: str) -> float:
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
