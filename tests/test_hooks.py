"""Acceptance tests for the capture hook (``hooks/claude_rl_hook.py`` -> ``claude_rl.capture``).

What is checked, and how:

- recorded payloads (../shared/fixtures/claude-code/hook-payloads): a sample of them through the
  real hook process, all of them in-process through ``capture.handle``; the registered events the
  fixtures lack use payloads shaped per docs/claude-code-reference.md section 1;
- concurrency: 16 processes x 1,000 appends to one session file;
- kill -9 in the middle of a write: a torn last line is reported as partial, later appends land
  intact and the torn line stays the only damage;
- fuzz: hypothesis in-process (>= 2,000 examples in all) plus a seeded sample through the real
  hook process, each within 2 s;
- oversized fields, session id sanitizing, file modes, an unwritable store, the off switches.

Every trace line is read back with the store reader (``claude_rl.store``), never with ad-hoc JSON.
"""

from __future__ import annotations

import errno
import io
import itertools
import json
import multiprocessing
import os
import random
import re
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import ROOT, fixture_payloads, run_hook
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claude_rl import capture, paths
from claude_rl.store import TraceFile, parse_line, read_trace_file

FIXTURES = fixture_payloads()
needs_fixtures = pytest.mark.skipif(not FIXTURES, reason="../shared/fixtures/claude-code is not there")

# The kinds of errors-log entries bad stdin may produce; "internal_error" would be a capture bug.
STDIN_ERROR_KINDS = {"empty_stdin", "binary_stdin", "malformed_json", "non_object", "too_deep"}
TIME_LIMIT_S = 2.0


# ---------------------------------------------------------------------------------------------
# Helpers


def event_of(payload: dict[str, Any]) -> str:
    """The event name a recorded payload was sent for (the hook gets it as its argument too).

    The fasthooks recordings are logger output that renamed ``hook_event_name`` to ``event``.
    """
    for key in ("hook_event_name", "event"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return value
    return "Unknown"


def str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def session_file(home: Path, session_id: Any) -> Path:
    return paths.traces_dir(home) / f"{capture.sanitize_id(session_id)}.jsonl"


def failures_file() -> Path:
    return paths.fallback_state_dir() / "failures.jsonl"


def errors_file(home: Path) -> Path:
    return paths.capture_state_dir(home) / "errors.jsonl"


def size_of(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def check_record(record, payload: dict[str, Any], event: str) -> None:
    """The record's envelope matches the payload; the payload is whole unless cut or redacted."""
    assert record.v == capture.SCHEMA_VERSION
    assert record.event == event
    assert record.session_id == str_or_none(payload.get("session_id"))
    assert record.tool_use_id == str_or_none(payload.get("tool_use_id"))
    assert record.agent_id == str_or_none(payload.get("agent_id"))
    if not record.redactions and not record.truncated:
        assert record.payload == payload


def check_one_new_line(path: Path, before: int, payload: dict[str, Any], event: str):
    """Exactly one whole line was appended to ``path`` after offset ``before``; it is a record."""
    new = path.read_bytes()[before:]
    assert new.endswith(b"\n"), "the appended record is not a whole line"
    assert new.count(b"\n") == 1, f"{len(lines_of(new))} lines appended instead of one"
    record = parse_line(new)
    assert record is not None, f"the store reader rejects the line: {new[:300]!r}"
    check_record(record, payload, event)
    return record


def check_clean(tf: TraceFile) -> None:
    assert tf.corrupt_lines == 0
    assert not tf.partial_trailing
    assert tf.lines == len(tf.records)


def lines_of(data: bytes) -> list[bytes]:
    """``data`` split after each b"\\n" (a last unterminated piece kept as it is)."""
    return [line for line in re.split(b"(?<=\n)", data) if line]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def check_exactly_one_outcome(home: Path) -> str:
    """One stdin produced exactly one line: a readable record in traces/ or an errors-log entry."""
    traces = paths.traces_dir(home)
    errors = errors_file(home)
    allowed = {errors.resolve()}
    trace_lines: list[bytes] = []
    for path in files_under(home):
        if path.resolve() in allowed:
            continue
        assert path.parent.resolve() == traces.resolve(), f"file outside traces/: {path}"
        assert path.name.endswith(".jsonl")
        trace_lines += lines_of(path.read_bytes())
    error_lines = lines_of(errors.read_bytes()) if errors.exists() else []
    assert len(trace_lines) + len(error_lines) == 1, (trace_lines[:2], error_lines[:2])
    assert not failures_file().exists(), failures_file().read_text()
    if trace_lines:
        assert trace_lines[0].endswith(b"\n")
        assert parse_line(trace_lines[0]) is not None, trace_lines[0][:300]
        return "written"
    entry = json.loads(error_lines[0])
    assert entry["error"] in STDIN_ERROR_KINDS, entry
    return entry["error"]


def check_quiet_exit(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == b""
    assert result.stderr == b""


# ---------------------------------------------------------------------------------------------
# Recorded payloads


def subprocess_sample() -> list[tuple[str, dict[str, Any]]]:
    """The first payload of every recorded file and of every event, plus the biggest payload."""
    picked: dict[str, tuple[str, dict[str, Any]]] = {}
    seen: set[str] = set()
    for name, payload in FIXTURES:
        for key in (name.split("[")[0], "event:" + event_of(payload)):
            if key not in seen:
                seen.add(key)
                picked.setdefault(name, (name, payload))
    if FIXTURES:
        biggest = max(FIXTURES, key=lambda item: len(json.dumps(item[1])))
        picked.setdefault(biggest[0], biggest)
    return list(picked.values())


SUBPROCESS_SAMPLE = subprocess_sample()


@needs_fixtures
def test_subprocess_sample_covers_every_recorded_event_and_the_biggest_payload():
    events = {event_of(p) for _, p in FIXTURES}
    assert {event_of(p) for _, p in SUBPROCESS_SAMPLE} == events
    biggest = max(len(json.dumps(p)) for _, p in FIXTURES)
    assert max(len(json.dumps(p)) for _, p in SUBPROCESS_SAMPLE) == biggest
    assert len(SUBPROCESS_SAMPLE) <= 25


@needs_fixtures
@pytest.mark.parametrize("name,payload", SUBPROCESS_SAMPLE, ids=[n for n, _ in SUBPROCESS_SAMPLE])
def test_hook_process_exits_0_silently_and_appends_one_record_per_recorded_payload(name, payload, data_home):
    event = event_of(payload)
    path = session_file(data_home, payload.get("session_id"))
    result = run_hook(payload, event)
    check_quiet_exit(result)
    check_one_new_line(path, 0, payload, event)
    assert files_under(data_home) == [path]  # nothing else written: no errors log, no other file
    assert not failures_file().exists()
    tf = read_trace_file(path)
    check_clean(tf)
    assert len(tf.records) == 1


@needs_fixtures
def test_every_recorded_payload_appends_exactly_one_readable_record(data_home):
    written: Counter[Path] = Counter()
    for name, payload in FIXTURES:
        event = event_of(payload)
        path = session_file(data_home, payload.get("session_id"))
        before = size_of(path)
        assert capture.handle(json.dumps(payload).encode(), event, data_home) == "written", name
        check_one_new_line(path, before, payload, event)
        written[path] += 1
    assert sum(written.values()) == len(FIXTURES) >= 500
    assert set(files_under(data_home)) == set(written)  # no errors log, no stray files
    for path, count in written.items():
        tf = read_trace_file(path)
        check_clean(tf)
        assert len(tf.records) == count


COMMON = {
    "session_id": "9b1c2d3e-0000-4000-8000-00000000abcd",
    "transcript_path": "/home/user/.claude/projects/-home-user-proj/9b1c2d3e.jsonl",
    "cwd": "/home/user/proj",
}
# Registered events that the recorded fixtures lack, shaped per claude-code-reference.md section 1.
UNRECORDED_EVENTS: dict[str, dict[str, Any]] = {
    "StopFailure": {
        **COMMON,
        "permission_mode": "default",
        "hook_event_name": "StopFailure",
        "error": "rate_limit",
        "error_details": "429 Too Many Requests",
        "last_assistant_message": "API Error: Rate limit reached",
    },
    "SubagentStart": {
        **COMMON,
        "permission_mode": "default",
        "hook_event_name": "SubagentStart",
        "agent_id": "def456",
        "agent_type": "Explore",
    },
    "PostToolUseFailure": {
        **COMMON,
        "permission_mode": "acceptEdits",
        "hook_event_name": "PostToolUseFailure",
        "tool_name": "Bash",
        "tool_input": {"command": "npm test", "description": "Run test suite"},
        "tool_use_id": "toolu_01ABC123interrupt",
        "error": "Exit code 130\nInterrupted by user",
        "is_interrupt": True,
        "duration_ms": 4187,
    },
    "SessionEnd": {**COMMON, "hook_event_name": "SessionEnd", "reason": "prompt_input_exit"},
}


@needs_fixtures
def test_every_registered_event_is_covered_by_a_recorded_or_documented_payload():
    recorded = {event_of(p) for _, p in FIXTURES}
    assert set(capture.EVENTS) <= recorded | set(UNRECORDED_EVENTS)


@pytest.mark.parametrize("event", sorted(UNRECORDED_EVENTS))
def test_hook_process_records_registered_events_missing_from_fixtures(event, data_home):
    payload = UNRECORDED_EVENTS[event]
    path = session_file(data_home, payload["session_id"])
    check_quiet_exit(run_hook(payload, event))
    record = check_one_new_line(path, 0, payload, event)
    assert record.payload == payload
    if event == "SubagentStart":
        assert record.agent_id == "def456"
    if event == "PostToolUseFailure":
        assert record.tool_use_id == "toolu_01ABC123interrupt"
        assert record.payload["is_interrupt"] is True
    assert files_under(data_home) == [path]


# ---------------------------------------------------------------------------------------------
# Concurrency

WORKERS = 16
APPENDS = 1000
CONCURRENT_SESSION = "concurrent-session"


def filler(tool_use_id: str, size: int) -> str:
    unit = f"{tool_use_id} output line\n"
    return (unit * (size // len(unit) + 1))[:size]


def concurrent_payload(worker: int, i: int) -> dict[str, Any]:
    tool_use_id = f"toolu_w{worker:02d}_{i:04d}"
    if i % 40 == 7:  # ~200 KB in four fields below the 64k cut, so the line stays ~200 KB
        parts = [filler(tool_use_id, 50_000) for _ in range(4)]
    else:
        parts = [filler(tool_use_id, (worker * 7919 + i * 104729) % 6000)]
    return {
        "session_id": CONCURRENT_SESSION,
        "hook_event_name": "PostToolUse",
        "tool_name": "Bash",
        "tool_use_id": tool_use_id,
        "tool_input": {"command": f"echo {worker} {i}"},
        "tool_response": {"parts": parts, "interrupted": False},
    }


def _append_worker(root: str, worker: int, start) -> None:
    start.wait(30)
    for i in range(APPENDS):
        raw = json.dumps(concurrent_payload(worker, i)).encode()
        if capture.handle(raw, "PostToolUse", Path(root)) != "written":
            sys.exit(3)


def test_concurrent_appends_from_16_processes_keep_every_record_exactly_once(data_home):
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_append_worker, args=(str(data_home), w, start)) for w in range(WORKERS)]
    try:
        for proc in procs:
            proc.start()
        start.set()
        for proc in procs:
            proc.join(180)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    assert [proc.exitcode for proc in procs] == [0] * WORKERS

    path = session_file(data_home, CONCURRENT_SESSION)
    tf = read_trace_file(path)
    check_clean(tf)
    assert len(tf.records) == WORKERS * APPENDS
    ids = Counter(r.tool_use_id for r in tf.records)
    expected = {f"toolu_w{w:02d}_{i:04d}" for w in range(WORKERS) for i in range(APPENDS)}
    assert set(ids) == expected
    assert set(ids.values()) == {1}
    big = 0
    last_seen: dict[str, int] = {}
    for record in tf.records:
        worker, i = int(record.tool_use_id[7:9]), int(record.tool_use_id[10:])
        assert record.payload == concurrent_payload(worker, i)  # no bytes of another record inside
        assert i > last_seen.get(record.tool_use_id[:9], -1)  # one process's appends stay in order
        last_seen[record.tool_use_id[:9]] = i
        big += i % 40 == 7
    assert big == WORKERS * 25
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.unlink()  # ~130 MB; pytest keeps the temp folders of the last runs


# ---------------------------------------------------------------------------------------------
# Kill -9 in the middle of a write


def record_line(payload: dict[str, Any], event: str, scratch: Path) -> bytes:
    """The exact line the hook writes for ``payload`` (made in a scratch store)."""
    assert capture.handle(json.dumps(payload).encode(), event, scratch) == "written"
    return session_file(scratch, payload.get("session_id")).read_bytes()


def kill_payload(sid: str, tag: str, i: int, size: int = 2000) -> dict[str, Any]:
    tool_use_id = f"toolu_{tag}_{i:06d}"
    return {
        "session_id": sid,
        "hook_event_name": "PostToolUse",
        "tool_name": "Bash",
        "tool_use_id": tool_use_id,
        "tool_input": {"command": "make"},
        "tool_response": {"stdout": filler(tool_use_id, size)},
    }


@pytest.mark.parametrize("keep", ["1 byte", "half", "all but the closing brace", "all but the newline"])
def test_torn_append_is_one_partial_trailing_line_and_later_appends_land_intact(keep, data_home, tmp_path):
    sid = "torn-session"
    path = session_file(data_home, sid)
    for i in range(3):
        raw = json.dumps(kill_payload(sid, "before", i)).encode()
        assert capture.handle(raw, "PostToolUse", data_home) == "written"
    line = record_line(kill_payload(sid, "torn", 0), "PostToolUse", tmp_path / "scratch")
    cut_at = {"1 byte": 1, "half": len(line) // 2, "all but the closing brace": len(line) - 2}.get(
        keep, len(line) - 1
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line[:cut_at])  # what a writer killed mid-append leaves behind
    finally:
        os.close(fd)

    tf = read_trace_file(path)
    torn = keep != "all but the newline"  # a whole JSON object lacking only "\n" still reads
    assert tf.partial_trailing is torn
    assert tf.corrupt_lines == 0
    assert len(tf.records) == 3 + (not torn)

    later = [kill_payload(sid, "after", i) for i in range(3)]
    for payload in later:
        before = size_of(path)
        assert capture.handle(json.dumps(payload).encode(), "PostToolUse", data_home) == "written"
        new = path.read_bytes()[before:]
        if payload is later[0]:
            assert new.startswith(b"\n")  # the record starts on a fresh line
        assert parse_line(new.lstrip(b"\n")) is not None
    tf = read_trace_file(path)
    assert not tf.partial_trailing
    assert tf.corrupt_lines == int(torn)  # the torn line is the only damage
    ids = [r.tool_use_id for r in tf.records]
    assert ids[-3:] == [p["tool_use_id"] for p in later]
    assert ids[:3] == [f"toolu_before_{i:06d}" for i in range(3)]
    for record, payload in zip(tf.records[-3:], later, strict=True):
        check_record(record, payload, "PostToolUse")


TORN_WRITER = r"""
import fcntl, json, os, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from claude_rl import capture
root, line = Path(sys.argv[2]), Path(sys.argv[3]).read_bytes()
for i in range(3):
    p = {"session_id": "killed", "hook_event_name": "Stop", "tool_use_id": "toolu_%d" % i}
    assert capture.handle(json.dumps(p).encode(), "Stop", root) == "written"
fd = os.open(capture.trace_file(root, "killed"), os.O_WRONLY | os.O_APPEND)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, line[: len(line) // 2])
print("torn", flush=True)
time.sleep(60)
"""


def test_sigkill_while_holding_the_lock_mid_line_leaves_one_partial_line_and_frees_the_lock(
    data_home, tmp_path
):
    line_file = tmp_path / "line"
    line_file.write_bytes(record_line(kill_payload("killed", "torn", 0, 100_000), "Stop", tmp_path / "s"))
    proc = subprocess.Popen(
        [sys.executable, "-c", TORN_WRITER, str(ROOT), str(data_home), str(line_file)],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout.readline() == b"torn\n"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    path = session_file(data_home, "killed")
    tf = read_trace_file(path)
    assert tf.partial_trailing
    assert tf.corrupt_lines == 0
    assert [r.tool_use_id for r in tf.records] == ["toolu_0", "toolu_1", "toolu_2"]

    later = [kill_payload("killed", "after", i) for i in range(2)]
    for payload in later:  # the real hook, with a timeout: a lock left held would hang here
        check_quiet_exit(run_hook(payload, "PostToolUse", timeout=10))
    tf = read_trace_file(path)
    assert not tf.partial_trailing
    assert tf.corrupt_lines == 1
    assert [r.tool_use_id for r in tf.records] == ["toolu_0", "toolu_1", "toolu_2"] + [
        p["tool_use_id"] for p in later
    ]


LOOP_WRITER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from claude_rl import capture
root, tag = Path(sys.argv[2]), sys.argv[3]
parts = [("%s part %d " % (tag, k)) * 5000 for k in range(24)]  # ~1.3 MB lines, no field cut
i = 0
while True:
    p = {"session_id": "loop", "hook_event_name": "PostToolUse", "tool_use_id": "toolu_%s_%06d" % (tag, i),
         "tool_response": {"parts": parts}}
    assert capture.handle(json.dumps(p).encode(), "PostToolUse", root) == "written"
    i += 1
"""


def test_sigkill_at_random_moments_of_a_write_loop_damages_at_most_one_line_per_kill(data_home):
    path = session_file(data_home, "loop")
    rnd = random.Random(1126)
    tears = 0
    counts: list[int] = []
    for round_ in range(3):
        tag = f"r{round_}"
        start_size = size_of(path)
        proc = subprocess.Popen([sys.executable, "-c", LOOP_WRITER, str(ROOT), str(data_home), tag])
        try:
            deadline = time.monotonic() + 20
            while size_of(path) < start_size + 3_000_000 and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rnd.uniform(0, 0.05))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        assert proc.returncode == -signal.SIGKILL

        tf = read_trace_file(path)
        assert tf.corrupt_lines == tears  # earlier torn lines, now terminated; nothing else
        mine = [r.tool_use_id for r in tf.records if r.tool_use_id.startswith(f"toolu_{tag}_")]
        assert len(mine) >= 2
        assert mine == [f"toolu_{tag}_{i:06d}" for i in range(len(mine))]  # whole, in order, no gaps
        counts.append(len(mine))
        tears += tf.partial_trailing  # at most one partial line: the one being written

    later = [kill_payload("loop", "after", i) for i in range(3)]
    for payload in later:
        assert capture.handle(json.dumps(payload).encode(), "PostToolUse", data_home) == "written"
    tf = read_trace_file(path)
    assert not tf.partial_trailing
    assert tf.corrupt_lines == tears <= 3
    assert len(tf.records) == sum(counts) + 3
    for record, payload in zip(tf.records[-3:], later, strict=True):
        check_record(record, payload, "PostToolUse")


# ---------------------------------------------------------------------------------------------
# Fuzz: in-process with hypothesis (>= 2,000 examples over the tests below) and a seeded sample
# through the real hook process.

FUZZ = settings(
    deadline=int(TIME_LIMIT_S * 1000),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_example = itertools.count()

NASTY_IDS = [
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    ".",
    "",
    ".hidden",
    "a/b/../../c",
    "a\\..\\b",
    "nul\x00byte",
    "new\nline",
    "séssion-ü",
    "\ud800",
    "x" * 5000,
    "~root",
    "-rf",
]


class _Stdin:
    def __init__(self, raw: bytes) -> None:
        self.buffer = io.BytesIO(raw)


def fuzz_once(base: Path, raw: bytes, event: str = "PostToolUse") -> str:
    """Run ``capture.main`` on ``raw`` in a fresh store under ``base``; check the one outcome."""
    home = base / f"ex{next(_example)}"
    os.environ[paths.ENV_HOME] = str(home)  # the data_home fixture restores it after the test
    saved, saved_limit = sys.stdin, sys.getrecursionlimit()
    sys.stdin = _Stdin(raw)
    started = time.monotonic()
    try:
        assert capture.main([event] if event else []) == 0
    finally:
        sys.stdin = saved
        sys.setrecursionlimit(saved_limit)  # main() raises it for the hook process
    assert time.monotonic() - started < TIME_LIMIT_S
    return check_exactly_one_outcome(home)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()  # NaN and Infinity too: json.dumps writes them, and the hook's json reads them
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=25,
)
envelope_fields = {
    "session_id": json_values | st.sampled_from(NASTY_IDS),
    "hook_event_name": json_values | st.sampled_from(capture.EVENTS),
    "tool_use_id": json_values,
    "agent_id": json_values,
    "tool_name": json_values,
    "tool_input": json_values,
    "tool_response": json_values,
    "prompt": json_values,
    "error": json_values,
    "transcript_path": json_values,
}
wrong_typed_payloads = st.fixed_dictionaries({}, optional=envelope_fields).flatmap(
    lambda d: st.dictionaries(st.text(max_size=10), json_values, max_size=3).map(lambda extra: {**extra, **d})
)


def encode(value: Any, ascii_only: bool) -> bytes:
    # Lone surrogates are JSON escapes with ensure_ascii; otherwise they become invalid UTF-8.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@settings(FUZZ, max_examples=500)
@given(raw=st.binary(max_size=2048), event=st.sampled_from(("", *capture.EVENTS)))
def test_fuzz_random_bytes_exit_0_with_one_record_or_error_line(raw, event, tmp_path):
    fuzz_once(tmp_path, raw, event)


SMALL_FIXTURES = [p for _, p in FIXTURES if len(json.dumps(p)) < 20_000][:200] or [
    UNRECORDED_EVENTS["SessionEnd"]
]


@settings(FUZZ, max_examples=400)
@given(payload=st.sampled_from(SMALL_FIXTURES), fraction=st.floats(0, 1), junk=st.binary(max_size=8))
def test_fuzz_truncated_json_exit_0_with_one_error_line(payload, fraction, junk, tmp_path):
    raw = json.dumps(payload).encode()
    cut_raw = raw[: int(len(raw) * fraction)]
    if cut_raw == raw:
        cut_raw = raw[:-1]
    outcome = fuzz_once(tmp_path, cut_raw + junk, event_of(payload))
    if not junk:  # a strict prefix of a JSON object is never a whole one
        assert outcome in STDIN_ERROR_KINDS


@settings(FUZZ, max_examples=300)
@given(
    depth=st.integers(1, 6000) | st.sampled_from([254, 256, 999, 1000, 1001, 1023, 1025, 1500, 1999, 3000]),
    opener=st.sampled_from(["[", '{"a":', '{"tool_input":']),
    closed=st.booleans(),
    wrapped=st.booleans(),
)
def test_fuzz_deep_nesting_exit_0_with_one_record_or_error_line(depth, opener, closed, wrapped, tmp_path):
    closer = "]" if opener == "[" else "}"
    body = opener * depth + ("1" if opener != "[" else "") + (closer * depth if closed else "")
    text = '{"session_id":"deep","tool_response":' + body + "}" if wrapped else body
    outcome = fuzz_once(tmp_path, text.encode())
    if outcome == "written":
        # Readable by the store's orjson path (<= 1024 levels), not only by the stdlib json
        # fallback, which fails at the default recursion limit of a reader process.
        (path,) = files_under(paths.traces_dir(Path(os.environ[paths.ENV_HOME])))
        orjson.loads(path.read_bytes())
    if depth > capture.MAX_DEPTH:
        assert outcome != "written"


@settings(FUZZ, max_examples=100)
@given(
    size=st.integers(0, 3_000_000),
    char=st.sampled_from(["a", "é", "\n", "😀", "\\", '"', "\x00", "ab\n"]),
    field=st.sampled_from(["tool_response", "prompt", "session_id", "hook_event_name", "new_field"]),
)
def test_fuzz_huge_strings_exit_0_with_one_line_cut_to_size(size, char, field, tmp_path):
    payload = {"session_id": "huge", "hook_event_name": "PostToolUse", field: char * (size // len(char))}
    outcome = fuzz_once(tmp_path, json.dumps(payload, ensure_ascii=False).encode())
    assert outcome == "written"
    (path,) = files_under(paths.traces_dir(Path(os.environ[paths.ENV_HOME])))
    assert path.stat().st_size <= capture.DEFAULTS["max_record_chars"]  # cut, envelope included


@settings(FUZZ, max_examples=800)
@given(payload=wrong_typed_payloads, ascii_only=st.booleans(), event=st.sampled_from(("", *capture.EVENTS)))
def test_fuzz_wrong_types_exit_0_with_one_record_or_error_line(payload, ascii_only, event, tmp_path):
    outcome = fuzz_once(tmp_path, encode(payload, ascii_only), event)
    if ascii_only:
        assert outcome == "written"  # any JSON object is a record, whatever its field types


@settings(FUZZ, max_examples=300)
@given(value=json_values | st.sampled_from(NASTY_IDS) | st.text())
def test_sanitized_session_ids_are_plain_file_names(value):
    name = capture.sanitize_id(value)
    assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}", name), name
    assert name not in {".", ".."}


def seeded_stdin_cases() -> list[tuple[str, bytes]]:
    rnd = random.Random(20261126)
    payload = {**UNRECORDED_EVENTS["PostToolUseFailure"], "hook_event_name": "PostToolUse"}
    text = json.dumps(payload)
    cases = [
        ("empty", b""),
        ("whitespace", b" \n\t\n"),
        *[(f"random bytes {n}", rnd.randbytes(n)) for n in (1, 300, 100_000)],
        *[(f"truncated at {k}", text[:k].encode()) for k in sorted(rnd.sample(range(1, len(text)), 3))],
        ("5000-deep open arrays", b"[" * 5000),
        ("5000-deep closed arrays", b"[" * 5000 + b"]" * 5000),
        ("1500-deep arrays in a payload", b'{"session_id":"d","x":' + b"[" * 1500 + b"]" * 1500 + b"}"),
        ("5000-deep objects in a payload", b'{"session_id":"d","x":' + b'{"a":' * 5000 + b"1" + b"}" * 5001),
        (
            "10 MB tool_response",
            json.dumps({**payload, "tool_response": {"stdout": "y" * 10_000_000}}).encode(),
        ),
        ("tool_input is 5", json.dumps({**payload, "tool_input": 5}).encode()),
        ("session_id is 123", json.dumps({**payload, "session_id": 123}).encode()),
        ("session_id traversal", json.dumps({**payload, "session_id": "../../etc/passwd"}).encode()),
        ("event name is a list", json.dumps({**payload, "hook_event_name": ["Stop"]}).encode()),
        ("tool_use_id is an object", json.dumps({**payload, "tool_use_id": {"id": 1}}).encode()),
        ("top-level array", b"[1, 2, 3]"),
        ("top-level string", b'"PostToolUse"'),
        ("NaN and Infinity", b'{"session_id":"nan","x":NaN,"y":-Infinity,"z":1e400}'),
        ("lone surrogate", b'{"session_id":"sur","tool_response":"\\ud800 half a pair"}'),
        ("invalid UTF-8", text[:40].encode() + b"\xff\xfe" + text[40:].encode()),
        ("UTF-8 BOM", b"\xef\xbb\xbf" + text.encode()),
        ("huge integer", b'{"session_id":"int","n":' + b"9" * 5000 + b"}"),
    ]
    return cases


SEEDED_CASES = seeded_stdin_cases()


@pytest.mark.parametrize("name,raw", SEEDED_CASES, ids=[n for n, _ in SEEDED_CASES])
def test_hook_process_exits_0_silently_within_2s_on_bad_stdin(name, raw, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv(paths.ENV_HOME, str(home))
    started = time.monotonic()
    result = run_hook(raw, "PostToolUse")
    elapsed = time.monotonic() - started
    check_quiet_exit(result)
    assert elapsed < TIME_LIMIT_S, f"{name}: {elapsed:.2f} s"
    check_exactly_one_outcome(home)
    assert {p.parent.parent for p in files_under(tmp_path)} <= {home}  # nothing outside the store


# ---------------------------------------------------------------------------------------------
# Oversized fields, session ids, file modes


def test_50mb_tool_output_is_cut_to_head_and_tail_with_original_size_recorded(data_home):
    head = "".join(f"head line {i}\n" for i in range(5000))
    tail = "".join(f"tail line {i}\n" for i in range(5000))
    stdout = head + "m" * (50 * 2**20 - len(head) - len(tail)) + tail
    assert len(stdout) == 50 * 2**20
    payload = {**UNRECORDED_EVENTS["PostToolUseFailure"], "hook_event_name": "PostToolUse"}
    payload["tool_response"] = {"stdout": stdout, "stderr": "warning: x\n", "interrupted": False}
    raw = json.dumps(payload).encode()

    started = time.monotonic()
    result = run_hook(raw, "PostToolUse", timeout=60)
    elapsed = time.monotonic() - started
    check_quiet_exit(result)
    assert elapsed < TIME_LIMIT_S, f"50 MB payload took {elapsed:.2f} s"

    path = session_file(data_home, payload["session_id"])
    assert path.stat().st_size < 200_000
    tf = read_trace_file(path)
    check_clean(tf)
    (record,) = tf.records
    assert [(t.path, t.chars) for t in record.truncated] == [("tool_response.stdout", 50 * 2**20)]
    kept = record.payload["tool_response"]["stdout"]
    assert len(kept) <= capture.DEFAULTS["max_field_chars"] + 100
    kept_head, marker, kept_tail = re.split(r"(\[\.\.\. claude-rl: \d+ of \d+ characters cut \.\.\.\])", kept)
    assert f"of {50 * 2**20} characters cut" in marker
    assert head.startswith(kept_head) and len(kept_head) > 30_000  # head kept, cut at a line end
    assert tail.endswith(kept_tail) and len(kept_tail) > 30_000  # tail kept, from a line start
    assert kept_head.endswith("\n") and kept_tail.startswith("tail line ")
    assert record.payload["tool_response"]["stderr"] == "warning: x\n"
    assert record.payload["tool_input"] == payload["tool_input"]


def test_envelope_fields_are_cut_and_redacted_like_the_payload(data_home):
    token = "ghp_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"  # a fake GitHub token
    payload = {
        "session_id": "envelope",
        "hook_event_name": "E" * 5_000_000,
        "agent_id": "a" * 3_000_000,
        "tool_use_id": token,
    }
    assert capture.handle(json.dumps(payload).encode(), "Stop", data_home) == "written"
    line = session_file(data_home, "envelope").read_bytes()
    assert len(line) <= capture.DEFAULTS["max_record_chars"]
    assert token.encode() not in line
    record = parse_line(line)
    assert record is not None
    assert record.event == record.payload["hook_event_name"]
    assert record.agent_id == record.payload["agent_id"]
    assert record.tool_use_id == record.payload["tool_use_id"] != token
    cuts = {(t.path, t.chars) for t in record.truncated}
    assert cuts == {("hook_event_name", 5_000_000), ("agent_id", 3_000_000)}


def test_session_ids_cannot_place_trace_files_outside_traces_dir(data_home, tmp_path):
    ids: list[Any] = [*NASTY_IDS, 123, None, ["../x"], {"a": "b"}, "/" * 200, "../" * 50 + "etc/shadow"]
    for sid in ids:
        raw = json.dumps({"session_id": sid, "hook_event_name": "Stop"}).encode()
        assert capture.handle(raw, "Stop", data_home) == "written"
    check_quiet_exit(run_hook({"session_id": "../../../escaped", "hook_event_name": "Stop"}, "Stop"))

    traces = paths.traces_dir(data_home).resolve()
    files = files_under(tmp_path)
    assert files and all(p.resolve().parent == traces for p in files), files
    assert all(re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}\.jsonl", p.name) for p in files)
    records = [r for p in files for r in read_trace_file(p).records]
    assert len(records) == len(ids) + 1
    # the record keeps the id as sent; only the file name is sanitized
    assert sorted(map(repr, (r.session_id for r in records))) == sorted(
        map(repr, [sid if isinstance(sid, str) else None for sid in ids] + ["../../../escaped"])
    )


def test_store_dirs_are_0700_and_files_0600_whatever_the_umask(data_home):
    old = os.umask(0)
    try:
        capture.handle(b'{"session_id": "modes", "hook_event_name": "Stop"}', "Stop", data_home)
        capture.handle(b"not json", "Stop", data_home)
    finally:
        os.umask(old)
    check_quiet_exit(run_hook({"session_id": "modes2", "hook_event_name": "Stop"}, "Stop"))
    for folder in (data_home, paths.traces_dir(data_home), paths.capture_state_dir(data_home)):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    files = files_under(data_home)
    assert len(files) == 3
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


# ---------------------------------------------------------------------------------------------
# Unwritable store, off switches


def failure_entries() -> list[dict[str, Any]]:
    return [json.loads(line) for line in failures_file().read_text().splitlines()]


def test_file_where_traces_dir_should_be_exits_0_and_counts_a_failure(data_home):
    data_home.mkdir()
    blocker = paths.traces_dir(data_home)
    blocker.write_bytes(b"not a folder")
    payload = UNRECORDED_EVENTS["PostToolUseFailure"]
    for _ in range(2):
        check_quiet_exit(run_hook(payload, "PostToolUseFailure"))
    assert blocker.read_bytes() == b"not a folder"
    entries = failure_entries()
    assert len(entries) == 2
    for entry in entries:
        assert entry["event"] == "PostToolUseFailure"
        assert entry["store"] == str(data_home)
        assert entry["errno"] == errno.EEXIST
        assert "FileExistsError" in entry["error"]


def test_store_home_under_a_regular_file_exits_0_and_counts_a_failure(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv(paths.ENV_HOME, str(tmp_path / "a-file" / "home"))
    check_quiet_exit(run_hook({"session_id": "s", "hook_event_name": "Stop"}, "Stop"))
    check_quiet_exit(run_hook(b"{broken", "Stop"))  # the errors log is unwritable too
    entries = failure_entries()
    assert [e["errno"] for e in entries] == [errno.ENOTDIR, errno.ENOTDIR]
    assert [e["event"] for e in entries] == ["Stop", "Stop"]


def test_unwritable_store_and_state_dir_count_the_failure_in_tmpdir(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv(paths.ENV_HOME, str(tmp_path / "a-file" / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "a-file" / "state"))
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    check_quiet_exit(run_hook({"session_id": "s", "hook_event_name": "Stop"}, "Stop"))
    (fallback,) = files_under(tmpdir)
    assert fallback == tmpdir / f"claude-rl-{os.getuid()}" / "failures.jsonl"
    assert json.loads(fallback.read_text())["errno"] == errno.ENOTDIR


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_store_exits_0_and_counts_a_failure(data_home):
    data_home.mkdir()
    data_home.chmod(0o500)
    try:
        check_quiet_exit(run_hook({"session_id": "s", "hook_event_name": "Stop"}, "Stop"))
    finally:
        data_home.chmod(0o700)
    assert [e["errno"] for e in failure_entries()] == [errno.EACCES]


@pytest.mark.parametrize("value", ["0", "off", "false", "no", " OFF "])
def test_capture_env_off_writes_nothing_and_exits_0(value, data_home, tmp_path):
    for raw in (json.dumps(UNRECORDED_EVENTS["SessionEnd"]).encode(), b"{broken", b""):
        check_quiet_exit(run_hook(raw, "SessionEnd", env={"CLAUDE_RL_CAPTURE": value}))
    assert files_under(tmp_path) == []


def test_off_file_writes_nothing_and_exits_0(data_home, tmp_path):
    off = Path(capture.off_switch(data_home))
    off.parent.mkdir(parents=True)
    off.touch()
    for raw in (json.dumps(UNRECORDED_EVENTS["SessionEnd"]).encode(), b"{broken", b"\xff" * 10):
        check_quiet_exit(run_hook(raw, "SessionEnd"))
    assert files_under(tmp_path) == [off]
    off.unlink()  # and capture resumes once the switch is gone
    check_quiet_exit(run_hook(UNRECORDED_EVENTS["SessionEnd"], "SessionEnd"))
    assert len(read_trace_file(session_file(data_home, COMMON["session_id"])).records) == 1


def test_config_enabled_false_writes_nothing_and_exits_0(data_home, tmp_path):
    data_home.mkdir()
    paths.config_file(data_home).write_text('{"capture": {"enabled": false}}')
    check_quiet_exit(run_hook(UNRECORDED_EVENTS["SessionEnd"], "SessionEnd"))
    assert files_under(tmp_path) == [paths.config_file(data_home)]
