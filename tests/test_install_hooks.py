"""install-hooks / uninstall-hooks on real settings files, and the shipped hook declarations."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from claude_rl import paths
from claude_rl.capture import EVENTS, TOOL_EVENTS, TRANSCRIPT_EVENTS
from claude_rl.cli import app
from claude_rl.hook_settings import hook_entries, install, is_ours, uninstall

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

# A settings file as a user might have it: other hooks on the same events, other settings.
EXISTING = {
    "model": "opus",
    "permissions": {"allow": ["Bash(git status)"], "deny": ["Read(./.env)"]},
    "env": {"FOO": "bar"},
    "hooks": {
        "PreToolUse": [
            {
                "matcher": "Bash",
                "hooks": [{"type": "command", "command": "~/bin/check-bash.sh", "timeout": 5}],
            }
        ],
        "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}],
        "Notification": [{"hooks": [{"type": "command", "command": "say hi"}]}],
    },
    "statusLine": {"type": "command", "command": "echo hi"},
}


def write(path: Path, data) -> str:
    text = json.dumps(data, indent=4) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def test_round_trip_keeps_other_hooks_and_is_idempotent(tmp_path):
    settings = tmp_path / "settings.json"
    original = write(settings, EXISTING)

    first = install(settings, ROOT)
    assert first.changed and first.backup is not None
    assert first.backup.read_text() == original  # the backup is the file as it was
    merged = json.loads(settings.read_text())
    # every other setting and hook is still there
    for key in ("model", "permissions", "env", "statusLine"):
        assert merged[key] == EXISTING[key]
    assert merged["hooks"]["PreToolUse"][0] == EXISTING["hooks"]["PreToolUse"][0]
    assert merged["hooks"]["Stop"][0] == EXISTING["hooks"]["Stop"][0]
    assert merged["hooks"]["Notification"] == EXISTING["hooks"]["Notification"]
    # ours are registered for every capture event
    for event in EVENTS:
        ours = [h for g in merged["hooks"][event] for h in g["hooks"] if is_ours(h)]
        assert ours, event
        assert any(f'claude_rl_hook.py" {event}' in h["command"] for h in ours)

    text_after_first = settings.read_text()
    second = install(settings, ROOT)
    assert not second.changed
    assert settings.read_text() == text_after_first  # re-merge: byte-identical, no new backup
    assert len(list(tmp_path.glob("settings.json.claude-rl-backup-*"))) == 1

    removed = uninstall(settings)
    assert removed.changed
    assert json.loads(settings.read_text()) == EXISTING  # identical apart from formatting
    assert not uninstall(settings).changed


def test_install_into_missing_file_and_uninstall_leaves_empty_object(tmp_path):
    settings = tmp_path / "new" / "settings.json"
    change = install(settings, ROOT)
    assert change.changed and change.backup is None
    assert set(json.loads(settings.read_text())["hooks"]) == set(EVENTS)
    uninstall(settings)
    assert json.loads(settings.read_text()) == {}


def test_reinstall_from_moved_checkout_replaces_old_entries(tmp_path):
    settings = tmp_path / "settings.json"
    write(settings, EXISTING)
    install(settings, Path("/old/place/claude-rl"))
    install(settings, ROOT)
    merged = json.loads(settings.read_text())
    commands = [h["command"] for groups in merged["hooks"].values() for g in groups for h in g["hooks"]]
    assert not any("/old/place" in c for c in commands)
    assert sum(1 for c in commands if "claude_rl_hook.py" in c) == len(EVENTS)


def test_invalid_json_is_refused_and_left_untouched(tmp_path):
    settings = tmp_path / "settings.json"
    settings.write_text('{"hooks": {,}')
    result = runner.invoke(app, ["install-hooks", "--settings", str(settings)])
    assert result.exit_code == 1
    assert "not valid JSON" in result.output and "Nothing was changed" in result.output
    assert settings.read_text() == '{"hooks": {,}'
    assert not list(tmp_path.glob("*.claude-rl-backup-*"))
    settings.write_text("[1, 2]")
    result = runner.invoke(app, ["uninstall-hooks", "--settings", str(settings)])
    assert result.exit_code == 1 and "not an object" in result.output


def test_dry_run_prints_diff_and_writes_nothing(tmp_path):
    settings = tmp_path / "settings.json"
    original = write(settings, EXISTING)
    result = runner.invoke(app, ["install-hooks", "--settings", str(settings), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "claude_rl_hook.py" in result.output and "+" in result.output
    assert settings.read_text() == original


def test_scopes_pick_the_documented_files(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.chdir(tmp_path)
    for scope, expected in [
        ("user", tmp_path / "cfg" / "settings.json"),
        ("project", tmp_path / ".claude" / "settings.json"),
        ("local", tmp_path / ".claude" / "settings.local.json"),
    ]:
        result = runner.invoke(app, ["install-hooks", "--scope", scope])
        assert result.exit_code == 0, result.output
        assert "claude_rl_hook.py" in expected.read_text()
        result = runner.invoke(app, ["uninstall-hooks", "--scope", scope])
        assert result.exit_code == 0
        assert "claude_rl" not in expected.read_text()
    assert runner.invoke(app, ["install-hooks", "--scope", "global"]).exit_code == 2


def test_tool_events_match_every_tool_and_transcript_copy_is_async():
    entries = hook_entries("/x")
    for event in TOOL_EVENTS:
        assert entries[event][0]["matcher"] == "*"
    for event in EVENTS:
        handlers = entries[event][0]["hooks"]
        assert handlers[0]["command"].startswith("python3 -S ")
        assert not handlers[0].get("async")  # capture is synchronous so events keep their order
        copier = [h for h in handlers if "claude_rl_transcript.py" in h["command"]]
        assert bool(copier) == (event in TRANSCRIPT_EVENTS)
        assert all(h["async"] is True for h in copier)


def test_shipped_plugin_and_example_match_the_generator():
    plugin = json.loads((ROOT / "hooks" / "hooks.json").read_text())
    assert plugin["hooks"] == hook_entries("${CLAUDE_PLUGIN_ROOT}")
    example = json.loads((ROOT / "settings.example.json").read_text())
    assert example["hooks"] == hook_entries("/path/to/claude-rl")
    manifest = json.loads((ROOT / ".claude-plugin" / "plugin.json").read_text())
    assert manifest["name"] == "claude-rl"
    # hooks/hooks.json is loaded automatically; declaring it again double-fires every hook
    assert "hooks" not in manifest
    market = json.loads((ROOT / ".claude-plugin" / "marketplace.json").read_text())
    assert [p["name"] for p in market["plugins"]] == ["claude-rl"]
    assert market["plugins"][0]["source"] == "./"


def test_plugin_command_runs_the_hook_from_the_plugin_root(tmp_path, data_home):
    """Expand ${CLAUDE_PLUGIN_ROOT} as Claude Code does and run the command through sh."""
    import subprocess

    plugin = json.loads((ROOT / "hooks" / "hooks.json").read_text())
    command = plugin["hooks"]["PreToolUse"][0]["hooks"][0]["command"].replace(
        "${CLAUDE_PLUGIN_ROOT}", str(ROOT)
    )
    payload = {
        "session_id": "s-plugin",
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": "ls"},
        "tool_use_id": "toolu_1",
        "cwd": "/tmp",
        "transcript_path": "/x",
    }
    proc = subprocess.run(["sh", "-c", command], input=json.dumps(payload).encode(), capture_output=True)
    assert proc.returncode == 0 and proc.stdout == b""
    assert (paths.traces_dir(data_home) / "s-plugin.jsonl").read_text().count("\n") == 1
