"""The sandbox in front of the local tools: refusals, confinement to the workspace, limits."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claude_rl.tools.runtime import VIRTUAL_ROOT, copy_workspace, run_tool
from claude_rl.tools.sandbox import (
    BashCheck,
    CommandRefused,
    SandboxPolicy,
    check_bash,
    check_sed_script,
    os_sandbox_available,
    run_sandboxed,
)

ROOT = Path(__file__).resolve().parent.parent
WORKSPACE = ROOT / "data" / "workspace"
TRACES = ROOT / "data" / "samples" / "traces"
OS_SANDBOX = os_sandbox_available()[0]
needs_os_sandbox = pytest.mark.skipif(not OS_SANDBOX, reason=f"no OS sandbox: {os_sandbox_available()[1]}")
EDITS = SandboxPolicy(allow_edits=True)


@pytest.fixture
def ws(tmp_path) -> Path:
    return copy_workspace(WORKSPACE, tmp_path / "ws")


@pytest.fixture
def sentinel(tmp_path) -> Path:
    """A path beside the workspace (outside it) that nothing may create."""
    return tmp_path / "sentinel.txt"


def refused(result) -> bool:
    return result.is_error and "Refused by the sandbox" in result.output_text


def recorded_bash_commands() -> list[str]:
    commands = []
    for path in sorted(TRACES.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            payload = record.get("payload") or {}
            if record.get("event") == "PreToolUse" and payload.get("tool_name") == "Bash":
                commands.append(payload["tool_input"]["command"])
    return commands


# --- the recorded corpus --------------------------------------------------------------------------


def _writes(command: str) -> bool:
    """Whether a recorded command writes (those may be refused with edits off)."""
    return any(tok in command for tok in (" > ", ">>", " tee ", "sed -i", "touch ", "mkdir ", " mv ", " cp "))


def test_recorded_sample_commands_are_allowed_read_only(ws):
    commands = recorded_bash_commands()
    assert len(commands) > 100
    unique = sorted(set(commands))
    verdicts = {c: check_bash(c, ws, SandboxPolicy()) for c in unique}
    refused_ = {c: v.reason for c, v in verdicts.items() if not v.allowed}
    print(
        f"\n{len(commands)} recorded Bash commands ({len(unique)} distinct): "
        f"{len(unique) - len(refused_)} allowed, "
        f"{len(refused_)} refused by the default policy (OS sandbox: {OS_SANDBOX})"
    )
    for command, reason in refused_.items():
        print(f"  refused: {command[:100]!r}: {reason}")
    unexpected = {
        c: r
        for c, r in refused_.items()
        if not _writes(c) and not (not OS_SANDBOX and c.lstrip().startswith("python3"))
    }
    assert unexpected == {}


def test_recorded_commands_give_the_same_output_in_the_sandbox(ws):
    """A few recorded commands (one per program) run exactly as run_tool runs them."""
    commands = recorded_bash_commands()
    picks = [next(c for c in commands if c.startswith(p)) for p in ("sqlite3 -header", "sqlite3 db/")]
    if OS_SANDBOX:
        picks += [next(c for c in commands if "| sed -n" in c)]
        picks += [next(c for c in commands if "echo exit=$?" in c)]
    for command in picks:
        mine = run_sandboxed("Bash", {"command": command}, ws)
        plain = run_tool("Bash", {"command": command}, ws)
        assert (mine.output_text, mine.is_error) == (plain.output_text, plain.is_error), command


@pytest.mark.slow
def test_every_recorded_command_gives_the_same_output_in_the_sandbox(ws):
    for command in sorted(set(recorded_bash_commands())):
        if not check_bash(command, ws).allowed:
            continue
        mine = run_sandboxed("Bash", {"command": command}, ws)
        plain = run_tool("Bash", {"command": command}, ws)
        assert (mine.output_text, mine.is_error) == (plain.output_text, plain.is_error), command


# --- paths ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tool, tool_input",
    [
        ("Read", {"file_path": "../sentinel.txt"}),
        ("Read", {"file_path": "/etc/passwd"}),
        ("Read", {"file_path": f"{VIRTUAL_ROOT}/../../etc/passwd"}),
        ("Grep", {"pattern": "root", "path": "/etc"}),
        ("Glob", {"pattern": "*", "path": f"{VIRTUAL_ROOT}/.."}),
        ("Bash", {"command": "cat ../sentinel.txt"}),
        ("Bash", {"command": "cat /etc/passwd"}),
        ("Bash", {"command": f"cat {VIRTUAL_ROOT}/../x"}),
        ("Bash", {"command": "ls .."}),
        ("Bash", {"command": "cd .. && ls"}),
        ("Bash", {"command": "cd db; cat ../../x"}),
        ("Bash", {"command": "grep -r root /etc"}),
        ("Bash", {"command": "find / -name passwd"}),
        ("Bash", {"command": "sqlite3 /etc/x.db 'SELECT 1'"}),
        ("Bash", {"command": "head -n 1 < /etc/passwd"}),
        ("Bash", {"command": "cat ~/x"}),
    ],
)
def test_paths_outside_the_workspace_are_refused(ws, tool, tool_input):
    result = run_sandboxed(tool, tool_input, ws)
    assert result.is_error
    assert "outside the workspace" in result.output_text or "not allowed" in result.output_text


def test_symlinks_out_of_the_workspace_are_refused(ws, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET\n")
    (ws / "leak.txt").symlink_to(secret)
    (ws / "outside").symlink_to(tmp_path)
    for tool, tool_input in [
        ("Read", {"file_path": f"{VIRTUAL_ROOT}/leak.txt"}),
        ("Read", {"file_path": "outside/secret.txt"}),
        ("Grep", {"pattern": "SECRET"}),
        ("Bash", {"command": "cat leak.txt"}),
        ("Bash", {"command": "cat outside/secret.txt"}),
        ("Bash", {"command": "cat *.txt"}),
        ("Bash", {"command": "grep -r SECRET outside"}),
        ("Bash", {"command": "cd outside && cat secret.txt"}),
    ]:
        result = run_sandboxed(tool, tool_input, ws)
        assert result.is_error, (tool, tool_input)
        assert "TOP SECRET" not in result.output_text


# --- programs and shell features -------------------------------------------------------------------


@pytest.mark.parametrize(
    "command, why",
    [
        ("rm -rf db", "'rm' is not allowed"),
        ("curl http://example.com", "'curl' is not allowed"),
        ("wget -q http://example.com", "'wget' is not allowed"),
        ("bash -c ls", "'bash' is not allowed"),
        ("/bin/rm x", "by name"),
        ("sqlite3 db/command_center.db '.shell ls'", ".shell is not allowed"),
        ("sqlite3 db/command_center.db '.system ls'", ".system is not allowed"),
        ("sqlite3 db/command_center.db '.output x.txt'", ".output is not allowed"),
        ("sqlite3 db/command_center.db '.once x.txt'", ".once is not allowed"),
        ("sqlite3 db/command_center.db '.import x.csv t'", ".import is not allowed"),
        ("sqlite3 db/command_center.db \"ATTACH 'x.db' AS x\"", "ATTACH"),
        ("sqlite3 -cmd '.shell id' db/command_center.db 'SELECT 1'", ".shell"),
        ("sqlite3 db/command_center.db \"SELECT writefile('x', 'y')\"", "writefile"),
        ("sqlite3 -init x.sql db/command_center.db", "-init"),
        ("sqlite3 db/command_center.db -init x.sql 'SELECT 1'", "-init"),
        ("echo 'SELECT 1' | sqlite3 db/command_center.db", "as an argument"),
        ("echo $(id)", "command substitution"),
        ("echo `id`", "backticks"),
        ('echo "$(id)"', "command substitution"),
        ("echo ${HOME}", "parameter expansion"),
        ("echo $HOME", "variable expansion"),
        ("echo hi > notes.txt", "edits are not allowed"),
        ("echo hi >> notes.txt", "edits are not allowed"),
        ("ls &> notes.txt", "edits are not allowed"),
        ("echo hi | tee notes.txt", "tee writes files"),
        ("find . -delete", "-delete"),
        ("find . -name '*.py' -exec rm {} ;", "-exec"),
        ("find . -fprint out.txt", "-fprint"),
        ("sed -i 's/a/b/' README.md", "sed -i"),
        ("sed 's/a/b/w out.txt' README.md", "s///e and s///w"),
        ("sed '1e id' README.md", "sed e command"),
        ("sort -o out.txt README.md", "sort -o"),
        ("(ls)", "subshells"),
        ("{ ls; }", "control structures"),
        ("ls &", "background"),
        ("for f in a b; do cat f; done", "control structures"),
        ("cat <<EOF", "here-documents"),
        ("cat <(ls)", "process substitution"),
        ("echo {a,b}", "brace expansion"),
        ("PATH=/tmp:$PATH ls", "not allowed"),
        ("LD_PRELOAD=x.so ls", "setting LD_PRELOAD"),
        ("touch x", "edits are not allowed"),
        ("ls 'unterminated", "unterminated"),
        ("", "empty"),
    ],
)
def test_disallowed_commands_are_refused(ws, command, why):
    result = run_sandboxed("Bash", {"command": command}, ws)
    assert refused(result) or "missing" in result.output_text, result.output_text
    assert why in result.output_text or (why == "empty" and "missing" in result.output_text), (
        result.output_text
    )
    assert not (ws / "notes.txt").exists() and not (ws / "out.txt").exists() and not (ws / "x").exists()


@pytest.mark.parametrize(
    "command",
    [
        "ls -la",
        "cat README.md | head -n 3",
        "grep -rn 'TX-2' docs | wc -l",
        "find . -name '*.py' | sort",
        "sqlite3 -header -column db/command_center.db 'SELECT COUNT(*) FROM readings;'",
        "sqlite3 db/command_center.db '.schema assets'",
        f"sqlite3 {VIRTUAL_ROOT}/db/command_center.db 'SELECT 1'",
        f"cd {VIRTUAL_ROOT} && ls db",
        "cd app && ls && cd .. && ls docs",
        "ls nonexistent 2>/dev/null; echo exit=$?",
        "ls 2>&1 | head -n 2",
        "LC_ALL=C sort docs/alarms.md | uniq -c | head -n 3",
        "echo '$(not expanded)' `printf` 2>/dev/null || true",
        "cut -d / -f 1 README.md | head -n 1",
        "sed -n '2,3p' README.md",
        "date -u +%Y",
    ],
)
def test_read_only_commands_are_allowed(ws, command):
    verdict = check_bash(command, ws, SandboxPolicy(), os_sandboxed=OS_SANDBOX)
    if "`printf`" in command:
        assert not verdict.allowed  # backticks even around an allowed program
        return
    assert verdict.allowed, verdict.reason
    result = run_sandboxed("Bash", {"command": command}, ws)
    assert not result.is_error, result.output_text


def test_sqlite_runs_read_only_without_edits(ws):
    before = (ws / "db" / "command_center.db").read_bytes()
    verdict = check_bash("sqlite3 db/command_center.db 'DELETE FROM alarms'", ws)
    assert verdict.allowed and "-readonly" in verdict.command
    result = run_sandboxed("Bash", {"command": "sqlite3 db/command_center.db 'DELETE FROM alarms'"}, ws)
    assert result.is_error and "readonly" in result.output_text
    assert (ws / "db" / "command_center.db").read_bytes() == before


def test_python_needs_the_os_sandbox(ws):
    assert not check_bash("python3 -c 'print(1)'", ws, os_sandboxed=False).allowed
    allowed = check_bash(
        "python3 -c 'print(1)'", ws, SandboxPolicy(python_without_os_sandbox=True), os_sandboxed=False
    )
    assert allowed.allowed
    assert check_bash("python3 -m app.selfcheck", ws, os_sandboxed=True).allowed
    assert not check_bash("python3 ../x.py", ws, os_sandboxed=True).allowed


# --- limits -------------------------------------------------------------------------------------------


def test_runaway_output_is_capped(ws):
    policy = SandboxPolicy(max_output_chars=2000)
    result = run_sandboxed("Bash", {"command": "yes | head -c 10000000"}, ws, policy)
    assert not result.is_error
    assert len(result.output_text) < 2200
    assert "bytes of output cut here" in result.output_text
    assert result.output_text.startswith("y\ny\n") and result.output_text.endswith("y\ny")


def test_endless_output_is_stopped(ws):
    policy = SandboxPolicy(max_output_chars=1000, kill_after_output_bytes=1_000_000)
    result = run_sandboxed("Bash", {"command": "yes"}, ws, policy)
    assert result.is_error and "Command stopped" in result.output_text
    assert len(result.output_text) < 1300


@needs_os_sandbox
def test_python_output_is_capped(ws):
    command = "python3 -c \"print('x' * 5_000_000)\""
    result = run_sandboxed("Bash", {"command": command}, ws, SandboxPolicy(max_output_chars=4000))
    assert not result.is_error and len(result.output_text) < 4200


def _processes_mentioning(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_a_command_past_the_timeout_is_killed(ws):
    marker = f"hang-{uuid.uuid4().hex}.txt"
    (ws / marker).write_text("x\n")
    result = run_sandboxed("Bash", {"command": f"tail -f {marker}"}, ws, SandboxPolicy(timeout_s=1))
    assert result.is_error
    assert result.output_text.startswith("Command timed out after 1s and was killed")
    assert _processes_mentioning(marker) == []


@needs_os_sandbox
def test_a_sleeping_program_is_killed_with_its_children(ws):
    marker = uuid.uuid4().hex
    command = (
        f"python3 -c \"import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)\" {marker}"
    )
    result = run_sandboxed("Bash", {"command": command, "timeout": 1500}, ws, SandboxPolicy())
    assert result.output_text.startswith("Command timed out after 1.5s")
    assert _processes_mentioning(marker) == []


# --- nothing is written outside the workspace ---------------------------------------------------------


def test_nothing_is_written_outside_the_workspace(ws, sentinel):
    target = str(sentinel)
    attempts = [
        ("Bash", {"command": f"echo pwned > {target}"}),
        ("Bash", {"command": "echo pwned > ../sentinel.txt"}),
        ("Bash", {"command": f"echo pwned | tee {target}"}),
        ("Bash", {"command": f"cp README.md {target}"}),
        ("Bash", {"command": f"sed -n 'w {target}' README.md"}),
        ("Bash", {"command": f"find . -fprint {target}"}),
        (
            "Bash",
            {"command": f"sqlite3 db/command_center.db \"ATTACH '{target}' AS x; CREATE TABLE x.t(a);\""},
        ),
        ("Bash", {"command": f"sqlite3 {target} 'CREATE TABLE t(a)'"}),
        ("Write", {"file_path": target, "content": "pwned"}),
        ("Write", {"file_path": "../sentinel.txt", "content": "pwned"}),
        ("Edit", {"file_path": target, "old_string": "", "new_string": "pwned"}),
    ]
    if OS_SANDBOX:
        attempts.append(("Bash", {"command": f"python3 -c \"open('{target}', 'w').write('pwned')\""}))
        attempts.append(
            ("Bash", {"command": "python3 -c \"open('/tmp/x', 'w').write('ok')\""})
        )  # private /tmp
    for policy in (SandboxPolicy(), EDITS):
        for tool, tool_input in attempts:
            run_sandboxed(tool, tool_input, ws, policy)
            assert not sentinel.exists(), (tool, tool_input, policy.allow_edits)


@needs_os_sandbox
def test_the_os_sandbox_has_no_network_and_a_read_only_workspace(ws):
    probe = "import socket; socket.create_connection(('1.1.1.1', 53), timeout=2)"
    result = run_sandboxed("Bash", {"command": f'python3 -c "{probe}"'}, ws)
    assert result.is_error and "unreachable" in result.output_text.lower()
    result = run_sandboxed("Bash", {"command": "python3 -c \"open('new.txt', 'w')\""}, ws)
    assert result.is_error and "Read-only file system" in result.output_text
    assert not (ws / "new.txt").exists()
    result = run_sandboxed("Bash", {"command": "python3 -c \"open('new.txt', 'w').write('ok')\""}, ws, EDITS)
    assert not result.is_error and (ws / "new.txt").read_text() == "ok"


# --- edits ----------------------------------------------------------------------------------------------


def test_edits_are_refused_unless_allowed(ws):
    readme = ws / "README.md"
    original = readme.read_text()
    edit = {
        "file_path": f"{VIRTUAL_ROOT}/README.md",
        "old_string": original.splitlines()[0],
        "new_string": "# X",
    }
    for tool, tool_input in [
        ("Edit", edit),
        ("Write", {"file_path": f"{VIRTUAL_ROOT}/new.md", "content": "x"}),
        ("MultiEdit", {"file_path": f"{VIRTUAL_ROOT}/README.md", "edits": []}),
    ]:
        result = run_sandboxed(tool, tool_input, ws)
        assert refused(result) and "edits are not allowed" in result.output_text
    assert readme.read_text() == original and not (ws / "new.md").exists()

    assert not run_sandboxed("Edit", edit, ws, EDITS).is_error
    assert readme.read_text().startswith("# X")
    assert not run_sandboxed(
        "Write", {"file_path": f"{VIRTUAL_ROOT}/new.md", "content": "x"}, ws, EDITS
    ).is_error
    assert (ws / "new.md").read_text() == "x"
    result = run_sandboxed(
        "Bash", {"command": "echo hi > notes.txt && mkdir -p out && cp notes.txt out/"}, ws, EDITS
    )
    assert not result.is_error, result.output_text
    assert (ws / "out" / "notes.txt").read_text() == "hi\n"


# --- the checker itself ---------------------------------------------------------------------------------


def test_sed_scripts():
    for ok in ("p", "2,3p", "/a/,/b/d", "s/a/b/g", "s|a|b|2p", "1~2p", "$!N;P;D", "y/abc/xyz/", "/x/I{p;q}"):
        check_sed_script(ok)
    for bad in ("w out", "1r /etc/passwd", "s/a/b/e", "s/a/b/w x", "e id", "1W x", "R x"):
        with pytest.raises(CommandRefused):
            check_sed_script(bad)


DISALLOWED = [
    "rm",
    "curl",
    "wget",
    "bash",
    "sh",
    "zsh",
    "nc",
    "ssh",
    "scp",
    "dd",
    "chmod",
    "chown",
    "kill",
    "sudo",
    "env",
    "xargs",
    "eval",
    "exec",
    "source",
    ".",
    "perl",
    "ruby",
    "node",
    "git",
    "pip",
    "mount",
    "nohup",
    "timeout",
    "rsync",
    "tar",
    "ln",
    "shred",
    "truncate",
    "crontab",
]
SAFE_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 -._/=,:", max_size=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_the_checker_never_crashes(ws, text):
    verdict = check_bash(text, ws, os_sandboxed=True)
    assert isinstance(verdict, BashCheck)
    assert verdict.allowed or verdict.reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prefix=SAFE_TEXT,
    sep=st.sampled_from(["", "; ", " && ", " || ", " | ", "\n", "LC_ALL=C "]),
    program=st.sampled_from(DISALLOWED),
    args=SAFE_TEXT,
)
def test_a_disallowed_program_as_a_command_word_is_refused(ws, prefix, sep, program, args):
    command = (
        f"{prefix}{sep}" if sep.strip() in (";", "&&", "||", "|", "") and sep else sep
    ) + f"{program} {args}"
    if sep == "":
        command = f"{program} {args}"
    verdict = check_bash(command, ws, SandboxPolicy(allow_edits=True), os_sandboxed=True)
    assert not verdict.allowed, command


def test_refusals_say_what_and_why(ws):
    result = run_sandboxed("Bash", {"command": "rm -rf db"}, ws)
    assert result.output_text.startswith(
        "<tool_use_error>Refused by the sandbox: the program 'rm' is not allowed"
    )
    assert "Allowed programs:" in result.output_text and "Nothing was run" in result.output_text
    assert result.raw["sandbox_refused"] is True
    assert os.path.isdir(ws / "db")


@pytest.mark.parametrize(
    "command, allowed",
    [
        ("cd app && cat ../README.md", True),
        ("cd app && ls && cat ../README.md", True),
        ("cd app; cat ../README.md", False),  # if cd app failed, ../README.md is outside
        ("cd app || cat ../README.md", False),
        ("cd app; cd ..; ls", False),  # if cd app failed, cd .. leaves the workspace
        ("cd db || cd app && cat ../README.md", False),  # conservative: after || any folder seen counts
        ("cd app && cd .. && cd .. && ls", False),
        ("cd app | cat ../README.md", False),  # a cd in a pipeline moves nothing
    ],
)
def test_cd_is_followed(ws, command, allowed):
    assert check_bash(command, ws, os_sandboxed=True).allowed is allowed


def test_without_the_os_sandbox(ws):
    """os_sandbox="off": the checker alone, with the same limits."""
    off = SandboxPolicy(os_sandbox="off", timeout_s=1)
    result = run_sandboxed(
        "Bash", {"command": "sqlite3 db/command_center.db 'SELECT COUNT(*) FROM assets'"}, ws, off
    )
    assert not result.is_error and result.output_text.isdigit()
    result = run_sandboxed("Bash", {"command": "python3 -c 'print(1)'"}, ws, off)
    assert refused(result) and "OS sandbox is not available" in result.output_text
    marker = f"hang-{uuid.uuid4().hex}.txt"
    (ws / marker).write_text("x\n")
    result = run_sandboxed("Bash", {"command": f"cat README.md | tail -f {marker}"}, ws, off)
    assert result.output_text.startswith("Command timed out after 1s")
    assert _processes_mentioning(marker) == []
    result = run_sandboxed("Bash", {"command": "sqlite3 db/command_center.db 'DELETE FROM alarms'"}, ws, off)
    assert result.is_error and "readonly" in result.output_text
