"""Folding hook records and transcripts into episodes; fold, import, watch and hand-entered traces."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT
from typer.testing import CliRunner

from claude_rl import capture, paths
from claude_rl.cli import app
from claude_rl.episodes.fold import build_session, fold, read_episodes, reconcile, session_inputs
from claude_rl.episodes.hooks import fold_hook_records
from claude_rl.episodes.importer import import_transcripts
from claude_rl.redact import Redactor
from claude_rl.schema import (
    Episode,
    Provenance,
    Step,
    ToolCall,
    episode_json_schema,
    trace_record_json_schema,
)
from claude_rl.store import read_trace_file
from claude_rl.transcript_copy import copy_file

runner = CliRunner()
TRANSCRIPTS = FIXTURES / "transcripts"
SID = "c45af7b1-cb7c-4e51-93db-8cbb250a877a"  # fasthooks: hook log and transcript of one real session


def load_recorded_session(home: Path, *, hooks: bool = True, transcript: bool = True) -> None:
    """The fasthooks fixture session: its hook log through the real capture path, its transcript copied."""
    if hooks:
        for line in (
            (FIXTURES / "hook-payloads" / "fasthooks__sample_hook_logs.jsonl").read_text().splitlines()
        ):
            entry = json.loads(line)
            entry["hook_event_name"] = entry.pop("event")  # the logger renamed it; restore the stdin shape
            entry.pop("ts", None)
            assert capture.handle(json.dumps(entry).encode(), entry["hook_event_name"], home) == "written"
    if transcript:
        copy_file(
            TRANSCRIPTS / "fasthooks__sample_main_transcript.jsonl",
            paths.transcripts_dir(home) / f"{SID}.jsonl",
            Redactor(),
            capture.DEFAULTS["max_field_chars"],
        )


def sequences(episodes: list[Episode]) -> list[list[str]]:
    return [[s.call.tool_use_id or s.call.name for s in ep.steps] for ep in episodes]


def test_hooks_alone_transcript_alone_and_both_agree_where_both_see(tmp_path):
    homes = {name: tmp_path / name for name in ("hooks", "transcript", "both")}
    load_recorded_session(homes["hooks"], transcript=False)
    load_recorded_session(homes["transcript"], hooks=False)
    load_recorded_session(homes["both"])
    eps = {name: build_session(session_inputs(home)[SID]) for name, home in homes.items()}

    def names(episodes):
        return [[s.call.name for s in ep.steps] for ep in episodes if ep.steps]

    # The hook log has no tool_use ids (an old logger), so compare tool names per episode.
    assert names(eps["hooks"]) == names(eps["transcript"]) == names(eps["both"])
    assert sum(len(ep.steps) for ep in eps["both"]) == 10
    both = eps["both"]
    # gaps filled from the transcript: stated reasons (hooks never see Claude's text) ...
    assert all(s.reason is None for ep in eps["hooks"] for s in ep.steps)
    assert any(s.reason for ep in both for s in ep.steps)
    # ... and results of the two calls whose PostToolUse never fired (failures on this old version)
    hook_unanswered = [s for ep in eps["hooks"] for s in ep.steps if s.call.status == "unanswered"]
    assert len(hook_unanswered) == 2
    assert all(s.call.status != "unanswered" for ep in both for s in ep.steps)
    # the hooks' final answers and the transcript's prompts agree on the same turns
    assert [ep.prompt for ep in both if ep.steps] == [ep.prompt for ep in eps["transcript"] if ep.steps]
    assert {src for ep in both for src in ep.provenance.sources} == {"hooks", "transcript"}


def _call(tid: str, name: str = "Read", **kw) -> ToolCall:
    return ToolCall(tool_use_id=tid, name=name, input={"file_path": f"/{tid}"}, **kw)


def _episode(calls: list[ToolCall], source: str, prompt: str = "p", **kw) -> Episode:
    return Episode(
        episode_id="s:0",
        session_id="s",
        index=0,
        prompt=prompt,
        steps=[
            Step(index=i, call=c, reason=kw.pop("reason", None) if i == 0 else None)
            for i, c in enumerate(calls)
        ],
        provenance=Provenance(session_id="s", sources=[source]),
        **kw,
    )


def test_merge_prefers_hook_results_and_fills_gaps_from_both_sides():
    transcript = _episode(
        [
            _call("t1", output="from transcript", source="transcript"),
            _call("t2", output="rejected at validation", is_error=True, status="error", source="transcript"),
        ],
        "transcript",
        reason="Read the schema first",
        final_answer="partial",
    )
    hooks = _episode(
        [
            _call("t1", output="from hook", duration_ms=12.0, source="hooks"),
            _call("t3", name="Bash", output="lagging call", source="hooks"),
        ],
        "hooks",
        final_answer="full answer",
        status="completed",
    )
    [merged] = reconcile([transcript], [hooks])
    # t3 followed t1 in the hook stream, so it goes right after t1
    assert [s.call.tool_use_id for s in merged.steps] == ["t1", "t3", "t2"]
    by_id = {s.call.tool_use_id: s for s in merged.steps}
    assert by_id["t1"].call.output == "from hook" and by_id["t1"].call.duration_ms == 12.0
    assert by_id["t1"].call.source == "both" and by_id["t1"].reason == "Read the schema first"
    assert by_id["t2"].call.source == "transcript" and by_id["t2"].call.is_error  # hooks never saw it
    assert by_id["t3"].call.source == "hooks"  # the transcript had not caught up yet
    assert merged.final_answer == "full answer" and merged.status == "completed"
    assert [s.index for s in merged.steps] == [0, 1, 2]


def test_unmatched_episodes_from_either_side_are_kept_in_order():
    t = [_episode([_call("a")], "transcript", prompt="one"), _episode([], "transcript", prompt="two")]
    h = [
        _episode([_call("a")], "hooks", prompt="one"),
        _episode([], "hooks", prompt="two"),
        _episode([_call("z")], "hooks", prompt="three"),
    ]
    merged = reconcile(t, h)
    assert [ep.prompt for ep in merged] == ["one", "two", "three"]
    assert [ep.episode_id for ep in merged] == ["s:0", "s:1", "s:2"]


def test_hook_fold_pairs_failures_subagents_and_parallel_groups():
    base = {"session_id": "s", "cwd": "/w", "transcript_path": "/t.jsonl"}
    events = [
        {"hook_event_name": "UserPromptSubmit", "prompt": "compare a and b"},
        {
            "hook_event_name": "PreToolUse",
            "tool_name": "Read",
            "tool_input": {"file_path": "/a"},
            "tool_use_id": "r1",
        },
        {
            "hook_event_name": "PreToolUse",
            "tool_name": "Read",
            "tool_input": {"file_path": "/b"},
            "tool_use_id": "r2",
        },
        {
            "hook_event_name": "PostToolUse",
            "tool_name": "Read",
            "tool_input": {"file_path": "/b"},
            "tool_use_id": "r2",
            "tool_response": {"type": "text", "file": {"content": "B"}},
            "duration_ms": 3,
        },
        {
            "hook_event_name": "PostToolUse",
            "tool_name": "Read",
            "tool_input": {"file_path": "/a"},
            "tool_use_id": "r1",
            "tool_response": {"type": "text", "file": {"content": "A"}},
        },
        {
            "hook_event_name": "PreToolUse",
            "tool_name": "Bash",
            "tool_input": {"command": "false"},
            "tool_use_id": "b1",
        },
        {
            "hook_event_name": "PostToolUseFailure",
            "tool_name": "Bash",
            "tool_input": {"command": "false"},
            "tool_use_id": "b1",
            "error": "Exit code 1",
        },
        {
            "hook_event_name": "PreToolUse",
            "tool_name": "Task",
            "tool_input": {"prompt": "look"},
            "tool_use_id": "g1",
        },
        {"hook_event_name": "SubagentStart", "agent_id": "ag1", "agent_type": "Explore"},
        {
            "hook_event_name": "PreToolUse",
            "tool_name": "Grep",
            "tool_input": {"pattern": "x"},
            "tool_use_id": "s1",
            "agent_id": "ag1",
        },
        {
            "hook_event_name": "PostToolUse",
            "tool_name": "Grep",
            "tool_input": {"pattern": "x"},
            "tool_use_id": "s1",
            "agent_id": "ag1",
            "tool_response": {"filenames": ["f.py"], "numFiles": 1},
        },
        {"hook_event_name": "SubagentStop", "agent_id": "ag1", "last_assistant_message": "found f.py"},
        {
            "hook_event_name": "PostToolUse",
            "tool_name": "Task",
            "tool_input": {"prompt": "look"},
            "tool_use_id": "g1",
            "tool_response": {
                "status": "completed",
                "agentId": "ag1",
                "content": [{"type": "text", "text": "f.py"}],
            },
        },
        {"hook_event_name": "Stop", "last_assistant_message": "A differs from B"},
    ]
    from claude_rl.schema import TraceRecord

    records = [
        TraceRecord(
            v=1,
            ts=f"2026-01-01T00:00:{i:02d}.000Z",
            event=e["hook_event_name"],
            session_id="s",
            agent_id=e.get("agent_id"),
            tool_use_id=e.get("tool_use_id"),
            payload={**base, **e},
        )
        for i, e in enumerate(events)
    ]
    [ep] = fold_hook_records(records, "s")
    assert ep.tool_sequence == ["Read", "Read", "Bash", "Agent"]
    r1, r2, b1, g1 = (s.call for s in ep.steps)
    assert r1.parallel_group == r2.parallel_group != b1.parallel_group
    assert (r1.output, r2.output, r2.duration_ms) == (
        "     1\tA",
        "     1\tB",
        3.0,
    )  # as Claude Code shows it
    assert b1.is_error and b1.status == "error" and b1.output == "Exit code 1"
    assert g1.raw_name == "Task" and g1.subagent is not None
    assert g1.subagent.agent_type == "Explore" and g1.subagent.final_answer == "found f.py"
    assert [s.call.name for s in g1.subagent.steps] == ["Grep"]
    assert g1.subagent.steps[0].call.output.splitlines()[-1] == "f.py"
    assert ep.final_answer == "A differs from B" and ep.status == "completed"


def test_fold_writes_episodes_and_skips_unchanged_sessions(data_home):
    load_recorded_session(data_home)
    first = fold(data_home)
    assert first.folded == 1 and first.episodes >= 5 and first.tool_calls == 10
    episodes = read_episodes(data_home)
    assert len(episodes) == first.episodes and all(ep.behavior for ep in episodes)
    path = data_home / "episodes" / f"{SID}.jsonl"
    mtime = path.stat().st_mtime_ns
    second = fold(data_home)
    assert (second.folded, second.unchanged, second.new_episodes) == (0, 1, 0)
    assert path.stat().st_mtime_ns == mtime
    forced = fold(data_home, force=True)
    assert forced.folded == 1 and path.read_bytes() == path.read_bytes()
    result = runner.invoke(app, ["fold"])
    assert result.exit_code == 0 and "unchanged 1" in result.output


def test_import_backfills_redacts_and_is_idempotent(tmp_path, data_home):
    projects = tmp_path / "projects" / "-home-dev-app"
    projects.mkdir(parents=True)
    for name in (
        "spotter__short.jsonl",
        "claude-reliability__coverage-test-fix-transcript.jsonl",
        "fasthooks__sample_main_transcript.jsonl",
    ):
        shutil.copy(TRANSCRIPTS / name, projects / name.split("__", 1)[1])
    secret = "ghp_" + "Zq8" * 12  # built here: no token-shaped literal in the repo
    with open(projects / "short.jsonl", "a") as fh:
        fh.write(
            json.dumps(
                {
                    "type": "user",
                    "uuid": "u-x",
                    "sessionId": "short",
                    "message": {"role": "user", "content": f"use the token {secret} to push"},
                }
            )
            + "\n"
        )
    (projects / "empty.jsonl").write_text("")
    first = import_transcripts([tmp_path / "projects"], data_home)
    assert first.sessions == 3 and first.fold.episodes > 0 and first.fold.tool_calls > 0
    assert first.skipped["empty_transcript"] == 1
    copied = b"".join(p.read_bytes() for p in paths.transcripts_dir(data_home).rglob("*.jsonl"))
    assert secret.encode() not in copied and b"[REDACTED:github_token]" in copied
    episodes = read_episodes(data_home)
    assert any("[REDACTED:github_token]" in ep.prompt for ep in episodes)
    second = import_transcripts([tmp_path / "projects"], data_home)
    assert second.lines_copied == 0 and second.fold.new_episodes == 0 and second.fold.folded == 0
    assert read_episodes(data_home) == episodes

    result = runner.invoke(app, ["import", str(tmp_path / "projects")])
    assert result.exit_code == 0, result.output
    assert "0 new transcript lines" in result.output and "skipped: empty_transcript (1)" in result.output


def test_import_attaches_subagent_files(tmp_path, data_home):
    sid = "ef958aa1-0e93-49f0-bb71-150f63befcd1"
    project = tmp_path / "projects" / "-experiments-worktrees"
    (project / sid / "subagents").mkdir(parents=True)
    shutil.copy(TRANSCRIPTS / f"claude-code-log__{sid}.jsonl", project / f"{sid}.jsonl")
    for agent in TRANSCRIPTS.glob("claude-code-log__agent-a*.jsonl"):
        if sid in agent.read_text():
            shutil.copy(agent, project / sid / "subagents" / agent.name.split("__", 1)[1])
    result = import_transcripts([tmp_path / "projects"], data_home)
    assert result.files > 1
    subs = [s.call.subagent for ep in read_episodes(data_home) for s in ep.steps if s.call.subagent]
    assert subs and any(sub.steps for sub in subs)


def test_watch_folds_a_session_when_its_turn_ends_and_restarts_without_refolding(data_home):
    from claude_rl.episodes.watch import watch

    def run(stop: threading.Event) -> threading.Thread:
        t = threading.Thread(
            target=watch, args=(data_home,), kwargs={"settle_s": 0.2, "poll_s": 0.05, "stop": stop}
        )
        t.start()
        return t

    stop = threading.Event()
    thread = run(stop)
    time.sleep(0.3)
    load_recorded_session(data_home, transcript=False)
    target = data_home / "episodes" / f"{SID}.jsonl"
    deadline = time.monotonic() + 10
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(5)
    assert target.exists() and not thread.is_alive()
    mtime = target.stat().st_mtime_ns
    folds: list = []
    stop2 = threading.Event()
    from claude_rl.episodes import watch as watch_mod

    t2 = threading.Thread(
        target=watch_mod.watch,
        args=(data_home,),
        kwargs={"settle_s": 0.2, "stop": stop2, "on_fold": lambda s, r: folds.append(r)},
    )
    t2.start()
    time.sleep(0.5)
    stop2.set()
    t2.join(5)
    assert folds and folds[0].folded == 0 and folds[0].unchanged == 1
    assert target.stat().st_mtime_ns == mtime


def test_watch_stops_cleanly_on_ctrl_c(data_home):
    env = {**os.environ, "CLAUDE_RL_HOME": str(data_home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "claude_rl", "watch"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # A child inherits an ignored SIGINT (as a background job of a script has it, or after a
        # library in this test process ignored it), and Python then never raises KeyboardInterrupt:
        # give the child the default disposition a terminal's Ctrl-C meets.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # Wait until it follows the store (its catch-up fold is printed), however loaded the machine is.
    first = b""
    deadline = time.monotonic() + 60
    while b"catch-up" not in first and time.monotonic() < deadline:
        first += proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    out = first + out
    assert proc.returncode == 0, err.decode()
    assert b"Stopped." in out


def test_interactive_capture_writes_a_valid_trace(data_home):
    answers = (
        "\n".join(
            [
                "What's the difference between transformer 1 and transformer 2?",
                "Read",
                "Schema first",
                '{"file_path": "/w/db/schema.sql"}',
                "CREATE TABLE assets (...);",
                ".",
                "n",
                "Bash",
                "",
                "not json",
                '{"command": "sqlite3 db \\"SELECT 1\\""}',
                "1",
                ".",
                "n",
                "",
                "TX-2 is smaller.",
                ".",
            ]
        )
        + "\n"
    )
    result = runner.invoke(app, ["capture", "--interactive"], input=answers)
    assert result.exit_code == 0, result.output
    assert "Saved" in result.output and "Read → Bash" in result.output
    fold(data_home)
    [ep] = read_episodes(data_home)
    assert ep.tool_sequence == ["Read", "Bash"] and ep.provenance.sources == ["manual"]
    assert ep.steps[0].reason == "Schema first" and ep.steps[1].reason is None
    assert ep.final_answer == "TX-2 is smaller." and ep.steps[0].call.source == "manual"
    assert ep.behavior["category"] == "compare"
    [tf] = [read_trace_file(p) for p in paths.traces_dir(data_home).glob("*.jsonl")]
    assert [r.event for r in tf.records][:2] == ["UserPromptSubmit", "PreToolUse"]


def test_interactive_capture_refuses_an_invalid_trace(data_home):
    result = runner.invoke(app, ["capture", "--interactive"], input="a prompt\n\n.\n")
    assert result.exit_code == 1 and "Not saved" in result.output
    assert not paths.traces_dir(data_home).exists()


def test_status_reports_episode_categories_and_diversity(data_home):
    load_recorded_session(data_home)
    fold(data_home)
    result = runner.invoke(app, ["status", "--json"])
    eps = json.loads(result.output)["episodes"]
    assert eps["total"] == len(read_episodes(data_home)) and sum(eps["by_category"].values()) == eps["total"]
    assert 0 < eps["category_evenness"] <= 1 and eps["distinct_tools"] == 3
    text = runner.invoke(app, ["status"]).output
    assert "diversity:" in text and "episodes:" in text


@pytest.mark.parametrize(
    ("name", "schema"), [("episode", episode_json_schema), ("trace-record", trace_record_json_schema)]
)
def test_json_schemas_in_docs_are_current(name, schema):
    on_disk = json.loads((ROOT / "docs" / f"{name}.schema.json").read_text())
    assert on_disk == schema(), "run `make schema`"


def test_parallel_import_matches_serial_import(tmp_path, monkeypatch):
    from claude_rl.episodes import fold as fold_mod

    projects = tmp_path / "projects" / "-p"
    projects.mkdir(parents=True)
    for path in sorted(TRANSCRIPTS.glob("*.jsonl"))[:6]:
        if "__agent-" not in path.name:
            shutil.copy(path, projects / path.name)
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    import_transcripts([tmp_path / "projects"], serial, workers=1)
    monkeypatch.setattr(fold_mod, "PARALLEL_MIN_SESSIONS", 1)
    result = import_transcripts([tmp_path / "projects"], parallel, workers=2)
    assert result.fold.folded == result.sessions > 1

    def comparable(home):  # provenance names the home's own transcript copy
        return [ep.model_dump(exclude={"provenance": {"transcript_path"}}) for ep in read_episodes(home)]

    assert comparable(parallel) == comparable(serial)
    for copy in paths.transcripts_dir(serial).rglob("*.jsonl"):
        twin = paths.transcripts_dir(parallel) / copy.relative_to(paths.transcripts_dir(serial))
        assert twin.read_bytes() == copy.read_bytes()
