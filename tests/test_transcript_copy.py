"""The async transcript hook: incremental, redacted copies of real Claude Code transcripts."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from conftest import FIXTURES, TRANSCRIPT_HOOK, run_hook

from claude_rl import paths, transcript_copy

TRANSCRIPTS = FIXTURES / "transcripts"
MAIN = TRANSCRIPTS / "claude-code-log__ef958aa1-0e93-49f0-bb71-150f63befcd1.jsonl"
SUBAGENTS = sorted(TRANSCRIPTS.glob("claude-code-log__agent-a*.jsonl"))
FAKE_KEY = "AKIA" + "Q7XW3ZP4LM2N8RT5"  # built here so no key-shaped literal sits in the repo


def lines(path: Path) -> list[bytes]:
    return [ln for ln in path.read_bytes().splitlines() if ln.strip()]


@pytest.fixture
def session(tmp_path) -> tuple[Path, str]:
    """A Claude Code projects folder holding one real session and its subagents."""
    sid = "ef958aa1-0e93-49f0-bb71-150f63befcd1"
    project = tmp_path / "projects" / "-experiments-worktrees"
    project.mkdir(parents=True)
    main = project / f"{sid}.jsonl"
    shutil.copy(MAIN, main)
    sub = project / sid / "subagents"
    sub.mkdir(parents=True)
    for path in SUBAGENTS[:3]:
        shutil.copy(path, sub / path.name.split("__", 1)[1])
    return main, sid


def stop_payload(main: Path, sid: str, event: str = "Stop") -> dict:
    return {
        "session_id": sid,
        "transcript_path": str(main),
        "cwd": "/x",
        "hook_event_name": event,
        "stop_hook_active": False,
        "last_assistant_message": "done",
    }


def test_copy_has_every_line_of_main_and_subagent_transcripts(session, data_home):
    main, sid = session
    proc = run_hook(stop_payload(main, sid), script=TRANSCRIPT_HOOK)
    assert proc.returncode == 0 and proc.stdout == b""
    copy = paths.transcripts_dir(data_home) / f"{sid}.jsonl"
    assert len(lines(copy)) == len(lines(main))
    for src, dst in zip(lines(main), lines(copy), strict=True):
        assert json.loads(dst).get("uuid") == json.loads(src).get("uuid")
    for sub in (main.with_suffix("") / "subagents").iterdir():
        copied = paths.transcripts_dir(data_home) / sid / "subagents" / sub.name
        assert len(lines(copied)) == len(lines(sub))
    assert oct(copy.stat().st_mode & 0o777) == "0o600"


def test_copy_is_incremental_and_never_duplicates(session, data_home):
    main, sid = session
    root = data_home
    assert transcript_copy.handle(json.dumps(stop_payload(main, sid)).encode(), root) > 0
    copy = paths.transcripts_dir(root) / f"{sid}.jsonl"
    before = len(lines(copy))
    assert transcript_copy.handle(json.dumps(stop_payload(main, sid)).encode(), root) == 0
    extra = {"type": "user", "uuid": "u-new", "message": {"role": "user", "content": "one more"}}
    with open(main, "a") as fh:
        fh.write(json.dumps(extra) + "\n")
        fh.write('{"type": "assistant", "uuid": "half-writ')  # the writer is mid-line
    assert transcript_copy.handle(json.dumps(stop_payload(main, sid)).encode(), root) == 1
    assert len(lines(copy)) == before + 1
    with open(main, "a") as fh:
        fh.write('ten"}\n')
    assert transcript_copy.handle(json.dumps(stop_payload(main, sid, "SessionEnd")).encode(), root) == 1
    assert json.loads(lines(copy)[-1])["uuid"] == "half-written"


def test_secrets_in_transcripts_are_redacted(session, data_home):
    main, sid = session
    line = {
        "type": "user",
        "uuid": "u-secret",
        "toolUseResult": {"stdout": f"export AWS_ACCESS_KEY_ID={FAKE_KEY}"},
        "message": {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t", "content": f"key {FAKE_KEY}"}],
        },
    }
    with open(main, "a") as fh:
        fh.write(json.dumps(line) + "\n")
        fh.write("not json but has " + FAKE_KEY + "\n")
    transcript_copy.handle(json.dumps(stop_payload(main, sid)).encode(), data_home)
    data = (paths.transcripts_dir(data_home) / f"{sid}.jsonl").read_text()
    assert FAKE_KEY not in data
    assert "[REDACTED:aws_access_key]" in data
    assert json.loads(data.splitlines()[-1])["type"] == "claude-rl-unparsed"


def test_parallel_copiers_copy_each_line_once(session, data_home):
    main, sid = session
    raw = json.dumps(stop_payload(main, sid)).encode()
    threads = [threading.Thread(target=transcript_copy.handle, args=(raw, data_home)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(lines(paths.transcripts_dir(data_home) / f"{sid}.jsonl")) == len(lines(main))


def test_replaced_transcript_starts_a_new_copy(session, data_home):
    main, sid = session
    raw = json.dumps(stop_payload(main, sid)).encode()
    transcript_copy.handle(raw, data_home)
    main.unlink()
    main.write_text(json.dumps({"type": "user", "uuid": "fresh"}) + "\n")
    assert transcript_copy.handle(raw, data_home) == 1
    folder = paths.transcripts_dir(data_home)
    assert [json.loads(x)["uuid"] for x in lines(folder / f"{sid}.jsonl")] == ["fresh"]
    assert len(list(folder.glob(f"{sid}.*.jsonl"))) == 1  # the old copy is kept


def test_subagent_stop_copies_the_agent_transcript(tmp_path, data_home):
    agent = tmp_path / "agent-a64ca7a.jsonl"
    shutil.copy(SUBAGENTS[0], agent)
    payload = {
        "session_id": "s1",
        "transcript_path": str(tmp_path / "missing.jsonl"),
        "hook_event_name": "SubagentStop",
        "agent_id": "a64ca7a",
        "agent_transcript_path": str(agent),
    }
    assert run_hook(payload, script=TRANSCRIPT_HOOK).returncode == 0
    copied = paths.transcripts_dir(data_home) / "s1" / "subagents" / "agent-a64ca7a.jsonl"
    assert len(lines(copied)) == len(lines(agent))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b"{",
        b'{"transcript_path": 5}',
        b'{"transcript_path": "/nonexistent/x.jsonl", "session_id": "s"}',
    ],
)
def test_bad_input_exits_zero_and_writes_nothing(raw, data_home):
    proc = run_hook(raw, script=TRANSCRIPT_HOOK)
    assert proc.returncode == 0 and proc.stdout == b""
    assert not paths.transcripts_dir(data_home).exists()
