"""The trace-replay environment: recorded calls get recorded results, other read-only calls run for
real in a sandboxed copy of the workspace, writes and path escapes are refused."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from claude_rl.tools.sandbox import SandboxPolicy
from claude_rl.tools.schemas import BUILTIN, CORE_TOOLS
from claude_rl.train.replay_env import (
    RecordedCall,
    ReplayEnvironment,
    call_key,
    default_workspace,
    environment_class,
    recorded_calls,
    recorded_json,
)

ROOT = "/workspace/command-center"
WORKSPACE = default_workspace()
pytestmark = pytest.mark.skipif(not (WORKSPACE / "db").is_dir(), reason="data/workspace is missing")

SCHEMA_GREP = {"pattern": "CREATE TABLE alarms", "path": f"{ROOT}/db/schema.sql", "output_mode": "content"}
RECORDED = [
    RecordedCall("Grep", SCHEMA_GREP, "db/schema.sql:46:CREATE TABLE alarms (  [recorded]"),
    RecordedCall(
        "Bash",
        {"command": "python3 -m app.selfcheck", "description": "Run checks"},
        "Error: Exit code 1\nFAIL",
        True,
    ),
    RecordedCall(
        "Edit",
        {"file_path": f"{ROOT}/app/alarms.py", "old_string": "a", "new_string": "b"},
        "edited [recorded]",
    ),
    RecordedCall(
        "Bash", {"command": "python3 -m app.selfcheck", "description": "Rerun"}, "6 passed [recorded]"
    ),
]


def env_class(**defaults):
    return environment_class([BUILTIN[n] for n in CORE_TOOLS], **defaults)


@pytest.fixture
def env(tmp_path):
    e = env_class(scratch_dir=tmp_path / "scratch")()
    e.reset(replay=recorded_json(RECORDED), prompt=[{"role": "user", "content": "x"}], reference="{}")
    yield e
    e._close()


def test_tool_methods_are_the_rows_tools_with_their_schemas():
    cls = env_class()
    methods = [
        name for name, _ in inspect.getmembers(cls, predicate=inspect.isfunction) if not name.startswith("_")
    ]
    assert sorted(methods) == sorted([*CORE_TOOLS, "reset"])
    grep = cls.Grep
    assert grep.__name__ == "Grep" and grep.tool_schema == BUILTIN["Grep"] and grep.tool_position == 1
    assert cls().tool_names == list(CORE_TOOLS)
    with pytest.raises(ValueError, match="cannot be environment methods"):
        environment_class([{"type": "function", "function": {"name": "reset"}}])


def test_recorded_calls_get_recorded_results(env):
    # the same call written differently: real path instead of relative, a label, extra spaces
    assert env.Grep(pattern="CREATE TABLE alarms", path="db/schema.sql", output_mode="content").endswith(
        "[recorded]"
    )
    assert env.calls[-1].source == "replay" and not env.calls[-1].is_error
    # two recorded results for one call: handed out in order, the last one again after that
    first = env.Bash(command="python3  -m app.selfcheck")
    assert first.startswith("Error: Exit code 1") and env.calls[-1].is_error
    assert env.Bash(command="python3 -m app.selfcheck", description="again") == "6 passed [recorded]"
    assert env.Bash(command="python3 -m app.selfcheck") == "6 passed [recorded]"
    assert [c.source for c in env.calls] == ["replay"] * 4


def test_unrecorded_read_only_calls_run_in_the_sandbox(env):
    out = env.Bash(command="sqlite3 db/command_center.db \"SELECT tag FROM assets WHERE tag = 'GEN-1';\"")
    assert out == "GEN-1" and env.calls[-1].source == "sandbox"
    read = env.Read(file_path=f"{ROOT}/README.md")
    assert "Command center" in read and env.calls[-1].source == "sandbox"
    assert "db/schema.sql" in env.Glob(pattern="db/*.sql")
    grep = env.Grep(pattern="CREATE TABLE assets", path="db")
    assert "schema.sql" in grep and "[recorded]" not in grep
    # a failure is reported as the SFT data shows one
    failed = env.Bash(command='sqlite3 db/command_center.db "SELECT nope FROM assets;"')
    assert failed.startswith("Error: Exit code 1") and env.calls[-1].is_error


def test_writes_and_escapes_are_refused(env, tmp_path):
    source_before = (WORKSPACE / "README.md").read_text()
    for text in (
        env.Write(file_path=f"{ROOT}/notes.md", content="x"),
        env.Edit(file_path=f"{ROOT}/README.md", old_string="Command", new_string="Control"),
        env.Bash(command="echo hi > notes.md"),
        env.Bash(command="rm README.md"),
        env.Bash(command='sqlite3 db/command_center.db "DELETE FROM assets;"'),
        env.Read(file_path="/etc/passwd"),
        env.Read(file_path=f"{ROOT}/../../etc/passwd"),
        env.Bash(command="cat /etc/passwd"),
        env.Grep(pattern="root", path="/etc"),
    ):
        assert text.startswith(("<tool_use_error>", "Error:")), text
    assert all(c.is_error for c in env.calls)
    sources = [c.source for c in env.calls]
    # sqlite3 runs -readonly: the DELETE runs and the database refuses it; everything else never runs
    assert sources == ["refused"] * 4 + ["sandbox"] + ["refused"] * 4
    assert "readonly database" in env.calls[4].output
    copy = env._workspace.real
    assert not (copy / "notes.md").exists() and (copy / "README.md").read_text() == source_before
    assert (WORKSPACE / "README.md").read_text() == source_before
    assert not (WORKSPACE / "notes.md").exists()


def test_the_policy_is_read_only_whatever_is_passed(tmp_path):
    env = env_class(policy=SandboxPolicy(allow_edits=True), scratch_dir=tmp_path)()
    env.reset()
    assert env.Write(file_path="notes.md", content="x").startswith("<tool_use_error>")
    assert env.calls[-1].source == "refused"
    env._close()


def test_a_replayed_recorded_edit_is_applied_to_the_private_copy(env):
    target = "app/alarms.py"
    original = (WORKSPACE / target).read_text()
    old = original.splitlines()[0]
    recorded = RecordedCall(
        "Edit", {"file_path": f"{ROOT}/{target}", "old_string": old, "new_string": "# edited"}, "ok"
    )
    env.reset(replay=[recorded])
    assert env.Edit(file_path=target, old_string=old, new_string="# edited") == "ok"
    assert env._workspace.real.joinpath(target).read_text().startswith("# edited")
    assert (WORKSPACE / target).read_text() == original


def test_each_rollout_gets_a_fresh_copy(env):
    env.Bash(command="ls")
    first = env._workspace.real
    assert first.is_dir()
    env.reset(replay=None)
    assert env.calls == [] and env.recorded == [] and not first.exists()
    env.Read(file_path="README.md")
    assert env._workspace.real != first and env.calls[0].source == "sandbox"


def test_the_runtimes_repeat_rule_ends_the_rollout(env):
    """The third identical call is refused with the runtime's text and ends the rollout, as the
    deployed agent's repeat rule does; another input, or a fresh rollout, starts counting again."""
    from claude_rl.schema import refused_repeat_text

    query = 'sqlite3 db/command_center.db "SELECT nope FROM assets;"'
    assert env.Bash(command=query).startswith("Error:") and not env.ended
    assert env.Bash(command=query + " ").startswith("Error:")  # another input: not the same call
    assert env.Bash(command=query).startswith("Error:") and not env.ended
    assert env.Bash(command=query) == refused_repeat_text(2) and env.ended
    assert [c.source for c in env.calls] == ["sandbox"] * 3 + ["repeat"]
    env.reset(replay=None)
    assert not env.ended
    # a call the recorded episode itself makes three times is not cut (as in the reward)
    read = RecordedCall("Read", {"file_path": "README.md"}, "recorded")
    env.reset(replay=[read, read, read])
    for _ in range(3):
        assert env.Read(file_path="README.md") == "recorded"
    assert not env.ended


def test_outputs_are_cut_like_the_dataset(tmp_path):
    env = env_class(max_tool_tokens=20, scratch_dir=tmp_path)()
    env.reset()
    out = env.Read(file_path=f"{ROOT}/db/schema.sql")
    assert "of output cut here" in out and len(out) < 200
    env._close()


def test_recorded_calls_from_a_dataset_row():
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": "Look.",
            "tool_calls": [
                {
                    "id": "a",
                    "type": "function",
                    "function": {"name": "Read", "arguments": {"file_path": "x"}},
                },
                {
                    "id": "b",
                    "type": "function",
                    "function": {"name": "Bash", "arguments": '{"command": "ls"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "a", "name": "Read", "content": "1\tx"},
        {"role": "tool", "tool_call_id": "b", "name": "Bash", "content": "Error: Exit code 2\nno"},
        {"role": "assistant", "content": "done"},
    ]
    calls = recorded_calls(messages)
    assert [(c.name, c.input, c.output, c.is_error) for c in calls] == [
        ("Read", {"file_path": "x"}, "1\tx", False),
        ("Bash", {"command": "ls"}, "Error: Exit code 2\nno", True),
    ]
    assert json.loads(recorded_json(calls))[1]["is_error"] is True


def test_call_key_normalization():
    assert call_key("Read", {"file_path": f"{ROOT}/db/x.sql"}) == call_key(
        "Read", {"file_path": "./db/x.sql"}
    )
    assert call_key("Bash", {"command": "ls  -la", "description": "a"}) == call_key(
        "Bash", {"command": "ls -la"}
    )
    assert call_key("Grep", {"pattern": "x", "-i": None}) == call_key("Grep", {"pattern": "x"})
    assert call_key("Grep", {"pattern": "x"}) != call_key("Glob", {"pattern": "x"})
    assert call_key("Bash", {"command": "ls"}) != call_key("Bash", {"command": "ls -a"})


def test_scratch_copies_are_removed(tmp_path):
    scratch = tmp_path / "scratch"
    env = env_class(scratch_dir=scratch)()
    env.reset()
    env.Bash(command="ls")
    assert any(scratch.iterdir())
    env._close()
    assert not any(scratch.iterdir())
    assert isinstance(env, ReplayEnvironment) and Path(env.workspace_source) == WORKSPACE
