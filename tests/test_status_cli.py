"""`claude-rl status`, `capture --demo/--on/--off` and `home`, end to end through the CLI."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from claude_rl import capture, paths
from claude_rl.cli import app
from claude_rl.status import summarize

runner = CliRunner()


def feed(root, payloads):
    for p in payloads:
        assert capture.handle(json.dumps(p).encode(), p.get("hook_event_name", ""), root) == "written"


def turn(sid: str, prompt: str, tools: list[str], *, start: int = 0) -> list[dict]:
    base = {"session_id": sid, "transcript_path": f"/t/{sid}.jsonl", "cwd": "/w"}
    out = [{**base, "hook_event_name": "UserPromptSubmit", "prompt": prompt}]
    for i, tool in enumerate(tools, start):
        tid = f"toolu_{sid}_{i}"
        out.append(
            {**base, "hook_event_name": "PreToolUse", "tool_name": tool, "tool_input": {}, "tool_use_id": tid}
        )
        out.append(
            {
                **base,
                "hook_event_name": "PostToolUse",
                "tool_name": tool,
                "tool_input": {},
                "tool_response": {"stdout": "ok"},
                "tool_use_id": tid,
            }
        )
    out.append(
        {
            **base,
            "hook_event_name": "Stop",
            "stop_hook_active": False,
            "last_assistant_message": f"re {prompt}",
        }
    )
    return out


def test_status_counts_sessions_events_tools_turns_and_traces(data_home):
    feed(data_home, turn("s1", "compare", ["Read", "Grep", "Bash", "Bash"]))
    feed(data_home, turn("s1", "thanks", []))  # a turn without tools is not a trace
    feed(data_home, turn("s2", "fix it", ["Read", "Edit"]))
    # the same hook registered twice (settings + plugin) writes each event twice
    feed(data_home, turn("s2", "dup", ["Glob"], start=10)[1:3] * 2)
    capture.handle(b"not json", "PreToolUse", data_home)
    s = summarize(data_home)
    assert s["sessions"] == 2
    assert s["tool_calls"] == 7
    assert s["tool_calls_by_tool"] == {"Read": 2, "Bash": 2, "Grep": 1, "Edit": 1, "Glob": 1}
    assert s["events"]["UserPromptSubmit"] == 3 and s["events"]["Stop"] == 3
    assert s["duplicate_records"] == 2
    assert s["turns_completed"] == 3 and s["traces"] == 2
    assert s["progress"] == {"50": 4.0, "500": 0.4, "1000": 0.2}
    assert s["errors"] == {"malformed_json": 1}


def test_status_json_and_rich_output(data_home):
    feed(data_home, turn("s1", "q", ["Read"]))
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["home"] == str(data_home) and data["home_source"] == "env"
    assert data["traces"] == 1 and data["tool_calls_by_tool"] == {"Read": 1}
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0
    for text in ("claude-rl status", "events by type", "tool calls by tool", "1,000 traces", "next:"):
        assert text in result.output


def test_status_on_empty_store_says_what_to_do(data_home):
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0
    assert "install-hooks" in result.output


def test_status_shows_write_failures(data_home):
    data_home.mkdir(parents=True)
    (data_home / "traces").write_text("a file where the traces folder should be")
    payload = turn("s1", "q", [])[0]
    assert capture.handle(json.dumps(payload).encode(), "UserPromptSubmit", data_home) == "failed"
    s = summarize(data_home)
    assert s["capture_failures"] == 1 and "Errno" in s["last_failure"]["error"]


def test_capture_off_and_on(data_home):
    assert runner.invoke(app, ["capture", "--off"]).exit_code == 0
    feed_result = capture.handle(json.dumps(turn("s1", "q", [])[0]).encode(), "", data_home)
    assert feed_result == "disabled"
    assert summarize(data_home)["capture_enabled"] is False
    assert runner.invoke(app, ["capture", "--on"]).exit_code == 0
    feed(data_home, turn("s1", "q", []))
    assert summarize(data_home)["records"] == 2
    assert runner.invoke(app, ["capture"]).exit_code == 2


def test_capture_demo_shows_the_transformer_workflow(tmp_path):
    store = tmp_path / "demo"
    result = runner.invoke(app, ["capture", "--demo", "--store", str(store)])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "Read → Grep → Bash → Bash" in output
    assert "What's the difference between transformer 1 and transformer 2?" in output
    s = summarize(store)
    assert s["traces"] == 1 and s["tool_calls"] == 4 and s["records"] == 12
    assert s["redactions"]  # the demo's Grep hits a config line holding an API key
    raw = b"".join(p.read_bytes() for p in paths.traces_dir(store).glob("*.jsonl"))
    assert b"glsa_k7Qp2vX9mR4tW8yZ3bN6cF1hJ5dL0sA2" not in raw


def test_home_resolution_order(tmp_path, monkeypatch):
    monkeypatch.delenv("CLAUDE_RL_HOME")
    where, source = paths.home_and_source()
    assert (where, source) == (paths.CHECKOUT_DIR / "data", "checkout")
    pinned = tmp_path / "pinned-home"
    assert runner.invoke(app, ["home", "--set", str(pinned)]).exit_code == 0
    assert paths.home_and_source() == (pinned.resolve(), "pinned")
    monkeypatch.setenv("CLAUDE_RL_HOME", str(tmp_path / "env-home"))
    assert paths.home_and_source() == (tmp_path / "env-home", "env")
    result = runner.invoke(app, ["home"])
    assert str(tmp_path / "env-home") in result.output.splitlines()
    monkeypatch.delenv("CLAUDE_RL_HOME")
    assert runner.invoke(app, ["home", "--unset"]).exit_code == 0
    assert paths.home_and_source()[1] == "checkout"


def test_plugin_cache_copy_does_not_write_into_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("CLAUDE_RL_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    cached = tmp_path / ".claude" / "plugins" / "cache" / "claude-rl-local" / "claude-rl" / "0.1.0"
    cached.mkdir(parents=True)
    (cached / "pyproject.toml").write_text("")
    (cached / "hooks").mkdir()
    monkeypatch.setattr(paths, "_CHECKOUT", str(cached))
    assert paths.home_and_source() == (tmp_path / "xdg-data" / "claude-rl", "user")


def test_version_and_help():
    assert "claude-rl 0.1.0" in runner.invoke(app, ["--version"]).output
    out = runner.invoke(app, ["--help"]).output
    for command in ("install-hooks", "uninstall-hooks", "status", "capture", "home"):
        assert command in out
