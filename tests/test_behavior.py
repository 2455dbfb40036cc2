"""The behavior extractor (``claude_rl.episodes.behavior``), on episodes built by hand.

Covered: every task category from prompt wording (two or more prompts each, the seed example
among them) and from tool evidence; stated and missing reasons (None stays None, no invented
text); exploration depth with an edit, a writing Bash command and read-only SQL; self-corrections
(a failing SQL query fixed by a changed one, an empty grep followed by another pattern, an
identical retry that is not a correction, a sibling in the same message that is not a retry,
refused and cancelled calls that are not failures); parallel calls; every constraint kind from the user
and from Claude's text; answer shapes; determinism (also across hash seeds); and a hypothesis
property over random episodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claude_rl.episodes.behavior import (
    CATEGORIES,
    answer_shape,
    change_kind,
    classify_task,
    extract_behavior,
)
from claude_rl.schema import Episode, Provenance, Step, SubEpisode, ToolCall

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------
# Builder


def call(
    name: str,
    output: str | None = "ok",
    *,
    reason: str | None = None,
    thinking: str | None = None,
    is_error: bool = False,
    status: str | None = None,
    group: int | None = None,
    subagent: SubEpisode | None = None,
    **inputs: Any,
) -> dict[str, Any]:
    """One step, as keyword arguments: the tool input is the remaining keywords."""
    return {
        "name": name,
        "input": inputs,
        "output": output,
        "reason": reason,
        "thinking": thinking,
        "is_error": is_error,
        "status": status or ("error" if is_error else "ok"),
        "group": group,
        "subagent": subagent,
    }


def steps_of(calls: list[dict[str, Any]]) -> list[Step]:
    return [
        Step(
            index=i,
            reason=c["reason"],
            thinking=c["thinking"],
            call=ToolCall(
                tool_use_id=f"toolu_{i:03d}",
                name=c["name"],
                input=c["input"],
                output=c["output"],
                is_error=c["is_error"],
                status=c["status"],
                parallel_group=c["group"],
                subagent=c["subagent"],
            ),
        )
        for i, c in enumerate(calls)
    ]


def episode(prompt: str, calls: list[dict[str, Any]] = (), final_answer: str | None = None) -> Episode:
    return Episode(
        episode_id="sess-1:0",
        session_id="sess-1",
        index=0,
        prompt=prompt,
        steps=steps_of(list(calls)),
        final_answer=final_answer,
        provenance=Provenance(session_id="sess-1", sources=["manual"]),
    )


def sqlite(sql: str) -> str:
    return f'sqlite3 -header -column data/command_center.db "{sql}"'


TRANSFORMER_ANSWER = """\
**TX-1 vs TX-2 — both are 13.8 kV → 480 V main service transformers, but they differ in size.**

| | TX-1 | TX-2 |
|---|---|---|
| Rating | 2,500 kVA | 1,500 kVA |
| Cooling | ONAN (natural) | ONAF (forced air) |
| Peak load (7 days) | 78.2 % | 97.5 % |

**What matters:** TX-2 is running close to its rating with two open alarms; TX-1 has headroom.

Load % is computed against nameplate kVA in `app/loading.py` (`transformer_load_pct`)."""


def transformer_episode() -> Episode:
    """The seed's example: Read → Grep → Bash → Bash, read-only, answered with a table."""
    return episode(
        "What's the difference between transformer 1 and transformer 2?",
        [
            call(
                "Read",
                "CREATE TABLE assets (...);\nCREATE TABLE transformer_specs (...);",
                reason="Let me look at the database schema first.",
                file_path="/home/dev/command-center/db/schema.sql",
            ),
            call(
                "Grep",
                "app/loading.py:14:def transformer_load_pct(kw, rating_kva):",
                pattern="transformer|TRANSFORMER",
                path="/home/dev/command-center",
                output_mode="content",
            ),
            call(
                "Bash",
                "tag   rating_kva  cooling\nTX-1  2500.0  ONAN\nTX-2  1500.0  ONAF",
                reason="Now I'll pull both transformers' specs from the database.",
                command=sqlite(
                    "SELECT a.tag, t.rating_kva, t.cooling FROM assets a JOIN transformer_specs t "
                    "ON t.asset_id = a.id WHERE a.tag IN ('TX-1','TX-2');"
                ),
                description="Compare the two transformers' nameplate specs",
            ),
            call(
                "Bash",
                "tag   peak_load_pct  open_alarms\nTX-1  78.2  0\nTX-2  97.5  2",
                command=sqlite(
                    "SELECT a.tag, MAX(r.load_pct) AS peak_load_pct FROM assets a JOIN readings r "
                    "ON r.asset_id = a.id WHERE a.tag IN ('TX-1','TX-2') AND r.load_pct > 0 GROUP BY a.tag;"
                ),
            ),
        ],
        final_answer=TRANSFORMER_ANSWER,
    )


# ---------------------------------------------------------------------------------------------
# The seed example


def test_transformer_example():
    b = extract_behavior(transformer_episode())
    assert b["category"] == "compare"
    assert b["category_evidence"] == "difference between"
    assert b["tool_sequence"] == ["Read", "Grep", "Bash", "Bash"]
    assert b["tool_counts"] == {"Read": 1, "Grep": 1, "Bash": 2}
    chain = b["reasoning_chain"]
    assert [c["summary"] for c in chain[:2]] == [
        "/home/dev/command-center/db/schema.sql",
        "transformer|TRANSFORMER",
    ]
    assert chain[2]["summary"].startswith("sqlite3 -header -column data/command_center.db")
    assert len(chain[2]["summary"]) == 120
    assert [c["reason"] for c in chain] == [
        "Let me look at the database schema first.",
        None,
        "Now I'll pull both transformers' specs from the database.",
        None,
    ]
    assert (b["stated_reasons"], b["unstated_reasons"]) == (2, 2)
    # Only reads and SELECTs (a ">" inside the quoted SQL is not a redirection): nothing changes.
    assert b["exploration_depth"] == 4
    assert b["first_change_step"] is None
    assert b["self_corrections"] == [] and b["errors"] == 0
    assert b["parallel_groups"] == 0
    shape = b["answer_shape"]
    assert shape["has_table"] and shape["headings"] == 1 and shape["code_blocks"] == 0
    assert shape["style"] == ["table", "headings"]
    assert b["subagents"] == {"count": 0, "agents": []}


# ---------------------------------------------------------------------------------------------
# Categories

CATEGORY_PROMPTS = {
    "compare": [
        "What's the difference between transformer 1 and transformer 2?",
        "Compare the old and the new config loader",
        "TX-1 vs TX-2: which one runs hotter?",
        "How does the v2 store differ from the v1 one?",
    ],
    "lookup": [
        "How many alarms are open for TX-2?",
        "What is the value of rating_kva for TX-1?",
        "Show me the last 10 readings from the database",
        "Query the readings table for yesterday's peak",
    ],
    "code_search": [
        "Where is the retry logic defined?",
        "Which file handles authentication?",
        "Find all callers of load_config",
        "Search the repo for hard-coded ports",
    ],
    "explain": [
        "Explain how the capture hook works",
        "How does redaction handle JWTs?",
        "What does transcript_copy do?",
        "Can you walk me through the episode builder?",
    ],
    "debug": [
        "Fix the failing test in test_store.py",
        "I get a traceback when I start the server",
        "Why does claude-rl status fail on an empty home?",
        "Build fails with a linker error",
        "mix phx.server doesnt seem to start",
    ],
    "edit": [
        "Add a --json flag to the status command",
        "Refactor store.py to use pathlib",
        "Please rename load_config to read_config everywhere",
        "I'd like the default timeout changed, can you change it to 30s",
    ],
    "run_test": [
        "Run the test suite and report failures",
        "Build the project",
        "Does the test suite pass on Python 3.10?",
        "start phoenix in the background",
    ],
    "plan": [
        "Plan the migration to the new schema",
        "How should we approach caching the episodes?",
        "Design a format for training episodes",
        "How can I make this installable as a library with uv?",
    ],
    "other": [
        "Thanks, that's all!",
        "hello",
    ],
}


@pytest.mark.parametrize(
    ("expected", "prompt"), [(cat, p) for cat, prompts in CATEGORY_PROMPTS.items() for p in prompts]
)
def test_category_from_prompt(expected, prompt):
    assert classify_task(prompt, []) == expected
    b = extract_behavior(episode(prompt))
    assert b["category"] == expected
    if expected != "other":
        assert b["category_evidence"] != "tools"
        assert b["category_rule"] in ("lead_verb", "phrase")


def test_every_category_is_covered_by_prompts():
    assert set(CATEGORY_PROMPTS) == set(CATEGORIES)
    assert all(len(prompts) >= 2 for prompts in CATEGORY_PROMPTS.values())


def test_negated_phrases_do_not_decide_the_category():
    assert classify_task("Where is the timeout set? Don't change anything.", []) == "code_search"
    assert classify_task("Don't fix anything yet: where is the parser defined?", []) == "code_search"
    assert classify_task("No need to run the tests, just explain the retry loop", []) == "explain"


def test_the_request_comes_first():
    # The first sentence decides before the rest of the prompt; pasted code does not count.
    prompt = "Please analyze this codebase and create a CLAUDE.md file. Mention how errors are reported."
    assert classify_task(prompt, []) == "edit"
    assert (
        classify_task("```\nraise ValueError('bug: fix me')\n```\nWhat does this function do?", [])
        == "explain"
    )
    assert classify_task("Update: the build fails on main", []) == "debug"  # a noun, not the verb


def test_evidence_is_the_matched_phrase():
    b = extract_behavior(episode("Hmm, what's the DIFFERENCE  between these two configs?"))
    assert (b["category"], b["category_evidence"], b["category_rule"]) == (
        "compare",
        "difference between",
        "phrase",
    )
    b = extract_behavior(episode("Please refactor the store"))
    assert (b["category"], b["category_evidence"], b["category_rule"]) == ("edit", "refactor", "lead_verb")


@pytest.mark.parametrize(
    ("expected", "calls"),
    [
        (
            "edit",
            [call("Read", file_path="a.py"), call("Edit", file_path="a.py", old_string="x", new_string="y")],
        ),
        ("run_test", [call("Bash", "5 passed", command="python -m pytest -q tests/")]),
        ("run_test", [call("Bash", command="cd web && npm test"), call("Bash", command="cargo build")]),
        (
            "code_search",
            [
                call("Read", file_path="a.py"),
                call("Grep", pattern="def main"),
                call("Glob", pattern="**/*.py"),
            ],
        ),
        ("code_search", [call("Grep", pattern="x"), call("Bash", command="rg -n load_config src/")]),
        ("lookup", [call("Bash", command=sqlite("SELECT COUNT(*) FROM alarms;"))]),
        ("lookup", [call("WebSearch", query="sqlite window functions")]),
        ("plan", [call("Read", file_path="a.py"), call("ExitPlanMode", plan="1. do it")]),
        ("other", []),
        ("other", [call("Agent", description="look around", prompt="...")]),
    ],
)
def test_category_falls_back_to_tools(expected, calls):
    b = extract_behavior(episode("TX-1 and TX-2, please.", calls))
    assert (b["category"], b["category_evidence"], b["category_rule"]) == (expected, "tools", "tools")


def test_classify_task_with_names_only():
    assert classify_task("ok", ["Bash"]) == "run_test"
    assert classify_task("ok", ["Read", "Grep"]) == "code_search"
    assert classify_task("ok", ["Read", "Task", "Write"]) == "edit"
    assert classify_task("ok", []) == "other"
    assert classify_task("ok", ["Bash"], commands=["sqlite3 x.db 'select 1'"]) == "lookup"


# ---------------------------------------------------------------------------------------------
# Reasoning chain


def test_reasons_are_never_invented():
    ep = episode(
        "Where is the retry logic defined?",
        [
            call(
                "Grep",
                "src/retry.py:3:def retry(",
                reason="I'll search for the retry helper.",
                pattern="def retry",
            ),
            call("Read", "...", file_path="src/retry.py"),
            call("Read", "...", reason="   \n", file_path="src/backoff.py"),
            call(
                "Agent", "done", description="Survey backoff users", prompt="Find every caller of backoff()"
            ),
        ],
    )
    chain = extract_behavior(ep)["reasoning_chain"]
    assert chain[0]["reason"] == "I'll search for the retry helper." and chain[0]["stated"] is True
    for entry in chain[1:]:
        assert entry["reason"] is None and entry["stated"] is False
    assert [c["summary"] for c in chain] == [
        "def retry",
        "src/retry.py",
        "src/backoff.py",
        "Survey backoff users",
    ]
    # No text in the chain that Claude didn't write, other than the call's own input.
    written = {s.reason.strip() for s in ep.steps if s.reason and s.reason.strip()}
    assert {c["reason"] for c in chain if c["reason"] is not None} <= written
    b = extract_behavior(ep)
    assert (b["stated_reasons"], b["unstated_reasons"]) == (1, 3)


def test_summaries_are_one_line():
    command = "for f in *.py; do\n  echo $f\ndone  " + "x" * 200
    chain = extract_behavior(
        episode(
            "run it",
            [
                call("Bash", command=command),
                call("Write", file_path="/tmp/out.txt", content="hello"),
                call("TodoWrite", todos=[{"content": "a"}, {"content": "b"}]),
                call("mcp__db__query", sql="SELECT 1"),
                call("Mystery"),
            ],
        )
    )["reasoning_chain"]
    assert chain[0]["summary"] == " ".join(command.split())[:120] and "\n" not in chain[0]["summary"]
    assert [c["summary"] for c in chain[1:]] == ["/tmp/out.txt", "2 todos", "SELECT 1", None]


def test_parallel_calls_share_the_message_text_without_copying_it():
    ep = episode(
        "Explain the store",
        [
            call("Read", reason="Reading the three modules together.", group=0, file_path="store.py"),
            call("Read", group=0, file_path="schema.py"),
            call("Read", group=0, file_path="paths.py"),
            call("Grep", reason="Now the callers.", pattern="load_", group=1),
            call("Grep", pattern="open_", group=2),
            call("Glob", pattern="*.md", group=2),
            call("Read", file_path="README.md", group=3),
        ],
    )
    b = extract_behavior(ep)
    assert b["parallel_groups"] == 2
    assert b["parallel_calls"] == 5
    assert b["parallel_steps"] == [[0, 1, 2], [4, 5]]
    chain = b["reasoning_chain"]
    assert [c["shared_reason_step"] for c in chain] == [None, 0, 0, None, None, None, None]
    assert [c["reason"] for c in chain[1:3]] == [None, None]


# ---------------------------------------------------------------------------------------------
# Exploration depth


def test_exploration_depth_ends_at_the_first_edit():
    b = extract_behavior(
        episode(
            "Add a retry to the fetcher",
            [
                call("Grep", pattern="def fetch"),
                call("Read", file_path="src/fetch.py"),
                call("Edit", file_path="src/fetch.py", old_string="a", new_string="b"),
                call("Bash", command="pytest -q"),
                call("Write", file_path="tests/test_fetch.py", content="..."),
            ],
        )
    )
    assert b["exploration_depth"] == 2
    assert b["first_change_step"] == 2 and b["first_change_kind"] == "edit"
    assert b["change_steps"] == [2, 4]


def test_exploration_depth_ends_at_a_writing_bash_command():
    b = extract_behavior(
        episode(
            "Generate the report",
            [
                call("Bash", command="ls -la reports/"),
                call("Bash", command="cat config.yaml | grep -n port 2>&1"),
                call("Bash", command="python gen.py > reports/today.txt"),
            ],
        )
    )
    assert (b["exploration_depth"], b["first_change_step"], b["first_change_kind"]) == (2, 2, "shell")


def test_read_only_sql_changes_nothing_but_a_sql_write_does():
    reads = [
        call("Bash", command=sqlite("SELECT tag FROM assets WHERE load_pct > 80;")),
        call("Bash", command=sqlite("SELECT COUNT(*) FROM alarms") + " 2>/dev/null"),
        call("Bash", command="psql -c 'select * from users limit 5' > /dev/null 2>&1"),
    ]
    b = extract_behavior(episode("How many alarms are open?", reads))
    assert b["exploration_depth"] == 3 and b["first_change_step"] is None and b["change_steps"] == []
    b = extract_behavior(
        episode(
            "Clear the old alarms",
            [*reads, call("Bash", command=sqlite("DELETE FROM alarms WHERE cleared_at < '2024-01-01';"))],
        )
    )
    assert (b["exploration_depth"], b["first_change_step"], b["first_change_kind"]) == (3, 3, "sql")


@pytest.mark.parametrize(
    "command",
    [
        "echo hi > out.txt",
        "echo more >> log.txt",
        "rm -rf build/",
        "mv a.py b.py",
        "cp a.py /tmp/a.py",
        "mkdir -p out && touch out/x",
        "git add -A && git commit -m 'x'",
        "git push origin main",
        "sed -i 's/a/b/' file.txt",
        "pip install requests",
        "npm install",
        "cat <<'EOF' > notes.md\nhello\nEOF",
        "find . -name '*.pyc' -delete",
        "ls | xargs rm",
        'sqlite3 app.db "INSERT INTO t VALUES (1)"',
        "sqlite3 app.db 'UPDATE assets SET name = 1 WHERE id = 2'",
        "psql -c 'CREATE TABLE x (id int)'",
        "psql -c 'DROP TABLE x'",
        "mysql -e 'ALTER TABLE x ADD COLUMN y int'",
        "sqlite3 app.db <<'SQL'\nINSERT INTO t VALUES (2);\nSQL",
        "ruff check --fix .",
        "npx create-next-app@latest todo-app --typescript",
        "uv tool upgrade --reinstall mytool",
        "git checkout -b feature/x",
    ],
)
def test_writing_commands(command):
    assert change_kind(ToolCall(name="Bash", input={"command": command})) is not None


@pytest.mark.parametrize(
    "command",
    [
        "ls -la",
        "cat README.md",
        "grep -rn 'rm -rf' scripts/",
        "rg 'x > 1' src/",
        "git status && git log --oneline -5",
        "git diff HEAD~1",
        "pytest -q 2>&1 | tail -20",
        "python -c 'print(1 > 0)'",
        "sqlite3 app.db 'SELECT * FROM t WHERE a > 1'",
        "grep -n 'CREATE TABLE' db/schema.sql",
        "echo 'DELETE FROM users'",
        "python - <<'EOF'\nif x > 3:\n    print(x)\nEOF",
        "ls docs/rm",
        "command -v node >/dev/null && node --version",
        "BASE=$(git merge-base main HEAD) && git log --oneline $BASE..HEAD",
        "git stash list",
    ],
)
def test_read_only_commands(command):
    assert change_kind(ToolCall(name="Bash", input={"command": command})) is None


def test_other_changes():
    assert change_kind(ToolCall(name="MultiEdit", input={})) == "edit"
    assert change_kind(ToolCall(name="NotebookEdit", input={})) == "edit"
    assert change_kind(ToolCall(name="mcp__db__insert_row", input={})) == "mcp"
    assert change_kind(ToolCall(name="mcp__db__query", input={"sql": "DELETE FROM t"})) == "mcp"
    assert change_kind(ToolCall(name="mcp__db__query", input={"sql": "SELECT 1"})) is None
    sub = SubEpisode(steps=steps_of([call("Read", file_path="a"), call("Edit", file_path="a")]))
    assert change_kind(ToolCall(name="Task", input={}, subagent=sub)) == "subagent"
    assert (
        change_kind(ToolCall(name="Agent", input={}, subagent=SubEpisode(steps=steps_of([call("Read")]))))
        is None
    )


def test_nothing_changes_depth_is_the_number_of_calls():
    b = extract_behavior(episode("Explain x", [call("Read", file_path="a"), call("Grep", pattern="b")]))
    assert (b["exploration_depth"], b["first_change_step"]) == (2, None)
    b = extract_behavior(episode("Explain x"))
    assert (b["exploration_depth"], b["first_change_step"]) == (0, None)


# ---------------------------------------------------------------------------------------------
# Self-corrections


def test_failing_sql_query_fixed_by_a_changed_query():
    b = extract_behavior(
        episode(
            "What is the rating of TX-1?",
            [
                call(
                    "Bash",
                    "Exit code 1\nError: in prepare, no such column: rating",
                    is_error=True,
                    command=sqlite("SELECT rating FROM assets WHERE tag = 'TX-1';"),
                ),
                call("Read", file_path="db/schema.sql"),
                call(
                    "Bash",
                    "2500.0",
                    command=sqlite("SELECT rating_kva FROM transformer_specs WHERE asset_id = 1;"),
                ),
            ],
        )
    )
    assert b["self_corrections"] == [
        {
            "failed_step": 0,
            "retry_step": 2,
            "kind": "error",
            "tool": "Bash",
            "retry_tool": "Bash",
            "changed": ["command"],
        }
    ]
    assert b["errors"] == 1 and b["errors_not_retried"] == [] and b["repeated_identical"] == 0
    assert b["reasoning_chain"][0]["outcome"] == "error"


@pytest.mark.parametrize("empty_output", ["No matches found", "", "No files found", "Found 0 files"])
def test_empty_grep_then_a_different_pattern(empty_output):
    b = extract_behavior(
        episode(
            "Where is retry_count set?",
            [
                call("Grep", empty_output, pattern="retry_count =", path="src"),
                call("Grep", "src/net.py:12: self.retry_count = 3", pattern="retry_count", path="src"),
            ],
        )
    )
    assert b["self_corrections"] == [
        {
            "failed_step": 0,
            "retry_step": 1,
            "kind": "empty",
            "tool": "Grep",
            "retry_tool": "Grep",
            "changed": ["pattern"],
        }
    ]
    assert b["empty_results"] == 1 and b["empty_not_retried"] == []


def test_empty_grep_then_glob_is_the_same_family():
    b = extract_behavior(
        episode(
            "Find the config loader",
            [
                call("Grep", "No files found", pattern="load_config"),
                call("Glob", "src/config.py", pattern="**/config*.py"),
            ],
        )
    )
    [correction] = b["self_corrections"]
    assert (correction["tool"], correction["retry_tool"], correction["kind"]) == ("Grep", "Glob", "empty")
    assert correction["changed"] == ["pattern"]


def test_empty_sql_result_and_empty_query_stdout():
    b = extract_behavior(
        episode(
            "How many alarms does TX-9 have?",
            [
                call("Bash", "", command=sqlite("SELECT * FROM alarms WHERE asset_id = 9;")),
                call(
                    "Bash",
                    " count \n-------\n(0 rows)",
                    command="psql -c 'select * from alarms where tag = 9'",
                ),
                call("Bash", "", command="mkdir -p out"),  # a write with no output is not an empty result
            ],
        )
    )
    assert [c["outcome"] for c in b["reasoning_chain"]] == ["empty", "empty", "ok"]
    assert [(c["failed_step"], c["retry_step"], c["kind"]) for c in b["self_corrections"]] == [
        (0, 1, "empty"),
        (1, 2, "empty"),
    ]


def test_identical_retry_is_not_a_correction():
    command = "curl -s http://localhost:8080/health"
    b = extract_behavior(
        episode(
            "Run the health check",
            [
                call("Bash", "Exit code 7\ncurl: (7) Failed to connect", is_error=True, command=command),
                call("Bash", '{"ok": true}', command=command),
            ],
        )
    )
    assert b["self_corrections"] == []
    assert b["repeated_identical"] == 1 and b["reruns_after_change"] == 0
    assert b["errors_not_retried"] == [0]  # no later call with a changed input


def test_identical_rerun_after_a_fix_is_counted_apart():
    b = extract_behavior(
        episode(
            "Fix the failing test",
            [
                call("Bash", "Exit code 1\n1 failed", is_error=True, command="pytest -q"),
                call("Edit", file_path="src/a.py", old_string="x", new_string="y"),
                call("Bash", "3 passed", command="pytest -q"),
            ],
        )
    )
    assert b["self_corrections"] == []
    assert (b["repeated_identical"], b["reruns_after_change"]) == (0, 1)


def test_errors_not_retried_and_tool_use_errors():
    b = extract_behavior(
        episode(
            "Fix it",
            [
                call("Read", "<tool_use_error>File does not exist.</tool_use_error>", file_path="nope.py"),
                call("Grep", "a.py:1:x", pattern="x"),
                call(
                    "Edit",
                    "<tool_use_error>String to replace not found</tool_use_error>",
                    file_path="a.py",
                    old_string="q",
                ),
                call("Edit", "ok", file_path="a.py", old_string="x"),
            ],
        )
    )
    assert b["errors"] == 2
    assert b["errors_not_retried"] == [0]
    [correction] = b["self_corrections"]
    assert (correction["failed_step"], correction["retry_step"], correction["changed"]) == (
        2,
        3,
        ["old_string"],
    )


def test_a_sibling_in_the_same_message_is_not_a_retry():
    b = extract_behavior(
        episode(
            "Where is the session parsed?",
            [
                call("Grep", "No matches found", pattern="parse_session", group=0),
                call("Grep", "src/a.py:3:def load_session(", pattern="load_session", group=0),
                call("Grep", "src/a.py:9:", pattern="session_from", group=1),
            ],
        )
    )
    [correction] = b["self_corrections"]
    assert (correction["failed_step"], correction["retry_step"]) == (0, 2)


def test_description_is_not_part_of_the_input():
    b = extract_behavior(
        episode(
            "Fix the type errors",
            [
                call(
                    "Bash",
                    "Exit code 1\n3 errors",
                    is_error=True,
                    command="uv run pyright",
                    description="Type check",
                ),
                call("Edit", file_path="a.py", old_string="x", new_string="y"),
                call(
                    "Bash",
                    "Exit code 1\n1 error",
                    is_error=True,
                    command="uv run pyright",
                    description="Check again",
                ),
                call("Bash", "0 errors", command="uv run pyright", description="Type check once more"),
            ],
        )
    )
    assert b["self_corrections"] == []
    assert (b["reruns_after_change"], b["repeated_identical"]) == (1, 1)
    assert b["errors_not_retried"] == [0, 2]


def test_refused_and_cancelled_calls_are_not_failures():
    b = extract_behavior(
        episode(
            "Install the deps",
            [
                call(
                    "Bash",
                    "The user doesn't want to proceed with this tool use. The tool use was rejected.",
                    is_error=True,
                    command="npm install",
                ),
                call("Bash", "added 3 packages", command="pnpm install"),
                call(
                    "Read",
                    "<tool_use_error>File does not exist.</tool_use_error>",
                    file_path="x.json",
                    group=4,
                ),
                call(
                    "Read",
                    "<tool_use_error>Sibling tool call errored</tool_use_error>",
                    file_path="y.json",
                    group=4,
                ),
                call("Read", "{}", file_path="package.json"),
            ],
        )
    )
    assert [c["outcome"] for c in b["reasoning_chain"]] == ["denied", "ok", "error", "cancelled", "ok"]
    assert (b["errors"], b["denied"], b["cancelled"]) == (1, 1, 1)
    assert [(c["failed_step"], c["retry_step"]) for c in b["self_corrections"]] == [(2, 4)]


def test_interrupted_calls_are_not_failures():
    b = extract_behavior(
        episode(
            "Run it",
            [call("Bash", None, status="interrupted", command="sleep 100"), call("Bash", command="ls")],
        )
    )
    assert b["self_corrections"] == [] and b["errors"] == 0
    assert b["reasoning_chain"][0]["outcome"] == "interrupted"


# ---------------------------------------------------------------------------------------------
# Constraints


def kinds(b: dict[str, Any], source: str) -> dict[str, list[str | None]]:
    out: dict[str, list[str | None]] = {}
    for c in b["constraints"]:
        if c["source"] == source:
            out.setdefault(c["kind"], []).append(c["object"])
    return out


@pytest.mark.parametrize(
    ("prompt", "kind", "obj"),
    [
        ("Explain the capture flow. This is read-only.", "read_only", None),
        ("Where is the timeout set? Don't change anything.", "read_only", None),
        ("Explain the hook without modifying the code", "read_only", None),
        ("Check the schema but do not write to disk", "read_only", None),
        ("Add a --json flag, but don't modify schema.py.", "do_not_modify", "schema.py"),
        ("Rename the helper and leave the tests alone", "do_not_modify", "the tests"),
        ("Refactor the store; do not touch `claude_rl/capture.py`", "do_not_modify", "claude_rl/capture.py"),
        ("Refactor store.py to use pathlib", "use", "pathlib"),
        ("Count the rows using the sqlite3 CLI", "use", "the sqlite3 CLI"),
        ("Fetch it via the GitHub API", "use", "the GitHub API"),
        ("Search with `rg` please", "use", "rg"),
        ("I'd prefer black for formatting", "use", "black"),
        ("Parse the log and avoid regular expressions", "avoid", "regular expressions"),
        ("Write the loader without pandas", "avoid", "pandas"),
        ("Don't use subprocess in the hook", "avoid", "subprocess"),
        ("Use ripgrep instead of grep", "avoid", "grep"),
        ("Fix the bug only in src/fetch.py", "scope", "src/fetch.py"),
        ("Update just the README", "scope", "README"),
        ("Compare TX-1 and TX-2 as a table", "format", None),
        ("List the assets in JSON", "format", None),
        ("Briefly, what does store.py do?", "format", None),
        ("Explain the store in one sentence", "format", None),
    ],
)
def test_user_constraint(prompt, kind, obj):
    b = extract_behavior(episode(prompt))
    found = kinds(b, "user")
    assert kind in found, b["constraints"]
    assert obj in found[kind]
    for c in b["constraints"]:
        assert c["where"] == "prompt"
        assert " ".join(c["text"].split()).lower() in " ".join(prompt.split()).lower()  # quoted, not made up


def test_use_and_avoid_from_one_sentence():
    b = extract_behavior(episode("Use ripgrep instead of grep"))
    assert kinds(b, "user") == {"use": ["ripgrep"], "avoid": ["grep"]}


def test_phrases_that_are_not_constraints():
    for prompt in (
        "How to use the CLI?",
        "What's the use of this flag?",
        "Compare TX-1 with TX-2",
        "Explain how store.py is used",
    ):
        assert extract_behavior(episode(prompt))["constraints"] == [], prompt


def test_format_phrase_inside_a_longer_one_is_not_repeated():
    b = extract_behavior(episode("Explain it in one sentence"))
    assert [(c["kind"], c["text"]) for c in b["constraints"]] == [("format", "in one sentence")]


def test_constraints_noticed_by_claude():
    b = extract_behavior(
        episode(
            "How many alarms are open?",
            [
                call(
                    "Read",
                    reason="I'll keep this read-only and use sqlite3 to query the database.",
                    file_path="db/schema.sql",
                ),
                call(
                    "Grep",
                    reason="I'll focus on app/loading.py and avoid the vendored code.",
                    pattern="alarm",
                ),
                call(
                    "Bash",
                    reason="Since you asked, I won't modify data/command_center.db.",
                    command=sqlite("SELECT 1"),
                ),
            ],
            final_answer=(
                "Two alarms are open. I didn't change anything, and as you asked I'll answer briefly: both "
                "are on TX-2. The loader uses a cache instead of a dict, via `functools`."
            ),
        )
    )
    assistant = kinds(b, "assistant")
    assert assistant["read_only"] == [None, None]  # "read-only" (step 0), "didn't change anything" (answer)
    assert assistant["use"] == ["sqlite3"]
    assert assistant["scope"] == ["app/loading.py"]
    assert assistant["avoid"] == ["the vendored code"]
    assert assistant["do_not_modify"] == ["data/command_center.db"]
    assert assistant["format"] == [None]
    wheres = [c["where"] for c in b["constraints"]]
    assert wheres == ["step 0", "step 0", "step 1", "step 1", "step 2", "final_answer", "final_answer"]
    assert kinds(b, "user") == {}
    # Claude describing code ("uses a cache instead of a dict, via `functools`") is not a constraint.
    texts = " ".join(c["text"] for c in b["constraints"])
    assert "functools" not in texts and "instead" not in texts


def test_constraints_are_deduplicated_case_insensitively():
    b = extract_behavior(
        episode(
            "Don't modify schema.sql. Leave schema.sql alone. Use SQLite3, please use sqlite3. "
            "READ-ONLY, read-only.",
            [call("Read", reason="Keeping this read-only.", file_path="schema.sql")],
        )
    )
    assert kinds(b, "user") == {"do_not_modify": ["schema.sql"], "use": ["SQLite3"], "read_only": [None]}
    assert kinds(b, "assistant") == {"read_only": [None]}  # same phrase, other source: kept


# ---------------------------------------------------------------------------------------------
# Answer shape


def test_answer_shapes():
    table = answer_shape("| a | b |\n|---|:-:|\n| 1 | 2 |")
    assert table["has_table"] and table["tables"] == 1 and table["style"] == ["table"]
    assert not answer_shape("a | b\nno separator here")["has_table"]

    headings = answer_shape("# Title\n\nText.\n\n## Part two\n\n**Summary**\n\n**Bold:** not a title line")
    assert headings["headings"] == 3 and headings["style"] == ["headings"]

    listed = answer_shape("Steps:\n- one\n- two\n  * nested\n1. first\n2) second\n---\n")
    assert listed["list_items"] == 5 and listed["style"] == ["list"]

    code = answer_shape("Run this:\n\n```bash\n# not a heading\n- not a list\npytest -q\n```\n\nand `x`.")
    assert code["code_blocks"] == 1 and code["headings"] == 0 and code["list_items"] == 0
    assert code["inline_code"] == 1 and code["style"] == ["code"]

    plain = answer_shape("TX-2 is hotter.\nIt runs at 97.5 % peak load.")
    assert plain["style"] == ["plain"] and (plain["chars"], plain["words"], plain["lines"]) == (44, 10, 2)
    assert plain["paragraphs"] == 1 and not plain["has_table"]

    for empty in (None, ""):
        shape = answer_shape(empty)
        assert shape["present"] is False and shape["style"] == ["none"]
        assert (shape["chars"], shape["words"], shape["lines"], shape["headings"]) == (0, 0, 0, 0)
    assert extract_behavior(episode("hi", final_answer=None))["answer_shape"] == answer_shape(None)


# ---------------------------------------------------------------------------------------------
# Subagents


def test_subagents_with_their_tool_sequences():
    sub = SubEpisode(
        agent_type="Explore",
        steps=steps_of(
            [call("Glob", pattern="**/*.py"), call("Read", file_path="a.py"), call("Task", description="x")]
        ),
        final_answer="found it",
    )
    b = extract_behavior(
        episode(
            "Where are episodes built?",
            [
                call("Task", "found it", description="Find the episode builder", subagent=sub),
                call("Read", file_path="a.py"),
            ],
        )
    )
    assert b["tool_sequence"] == ["Agent", "Read"]
    assert b["subagents"] == {
        "count": 1,
        "agents": [
            {
                "step": 0,
                "agent_type": "Explore",
                "description": "Find the episode builder",
                "tool_sequence": ["Glob", "Read", "Agent"],
                "changes": False,
            }
        ],
    }


# ---------------------------------------------------------------------------------------------
# Determinism


def test_deterministic():
    ep = transformer_episode()
    first, second = extract_behavior(ep), extract_behavior(ep)
    assert first == second
    assert json.dumps(first) == json.dumps(second)
    copy = Episode.model_validate_json(ep.model_dump_json())
    assert json.dumps(extract_behavior(copy)) == json.dumps(first)
    # The stored form round-trips.
    stored = ep.model_copy(update={"behavior": first})
    assert Episode.model_validate_json(stored.model_dump_json()).behavior == first


def test_deterministic_across_hash_seeds():
    ep = transformer_episode().model_dump_json()
    code = (
        "import sys, json\n"
        "from claude_rl.schema import Episode\n"
        "from claude_rl.episodes.behavior import extract_behavior\n"
        "print(json.dumps(extract_behavior(Episode.model_validate_json(sys.stdin.read()))))\n"
    )
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", code],
            input=ep,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            check=True,
        )
        outputs.add(proc.stdout)
    assert len(outputs) == 1


# ---------------------------------------------------------------------------------------------
# Property: never raises, always a known category, always JSON

TOOL_NAMES = [
    "Read",
    "Grep",
    "Glob",
    "Bash",
    "Edit",
    "MultiEdit",
    "Write",
    "Task",
    "Agent",
    "TodoWrite",
    "WebFetch",
    "ExitPlanMode",
    "mcp__db__insert_row",
    "mcp__db__query",
]
SHELL_BITS = [
    "ls",
    "rm -rf",
    "> out",
    "2>&1",
    "'",
    '"',
    "<<EOF\n",
    "EOF",
    "sqlite3 db",
    "SELECT * FROM t",
    "INSERT INTO t",
    "|",
    "&&",
    "sed -i",
    "$(",
    "`",
    "\n",
    "git commit",
]
PROSE_BITS = [
    "compare",
    " vs ",
    "don't",
    "use",
    "avoid",
    "without",
    "only in",
    "just the",
    "leave",
    "alone",
    "read-only",
    "as a table",
    "fix",
    "where is",
    "how many",
    "`x`",
    '"',
    ".",
    ",",
    "\n",
    "**",
    "|---|",
    "```",
    "# ",
    "- ",
]

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
shellish = st.lists(st.sampled_from(SHELL_BITS) | st.text(max_size=8), max_size=10).map(" ".join)
proseish = st.lists(st.sampled_from(PROSE_BITS) | st.text(max_size=10), max_size=16).map(" ".join)
inputs = st.dictionaries(
    st.sampled_from(["command", "file_path", "pattern", "description", "sql", "query", "todos"])
    | st.text(max_size=6),
    shellish | values,
    max_size=4,
)
outputs = (
    st.none()
    | st.sampled_from(["", "No matches found", "(0 rows)", "<tool_use_error>x", "Exit code 2"])
    | st.text()
)


@st.composite
def tool_calls(draw, depth: int = 0) -> ToolCall:
    subagent = None
    if depth == 0 and draw(st.booleans()):
        subagent = SubEpisode(
            agent_type=draw(st.none() | st.text(max_size=8)),
            steps=draw(st.lists(steps(depth=1), max_size=3)),
        )
    return ToolCall(
        name=draw(st.sampled_from(TOOL_NAMES) | st.text(max_size=12)),
        input=draw(inputs),
        output=draw(outputs),
        is_error=draw(st.booleans()),
        status=draw(st.sampled_from(["ok", "error", "interrupted", "unanswered"])),
        parallel_group=draw(st.none() | st.integers(-2, 3)),
        subagent=subagent,
    )


@st.composite
def steps(draw, depth: int = 0) -> Step:
    return Step(
        index=draw(st.integers(-1, 50)),
        reason=draw(st.none() | proseish | st.text()),
        thinking=draw(st.none() | st.text(max_size=20)),
        call=draw(tool_calls(depth=depth)),
    )


@st.composite
def episodes(draw) -> Episode:
    return Episode(
        episode_id="s:0",
        session_id="s",
        index=0,
        prompt=draw(proseish | st.text()),
        steps=draw(st.lists(steps(), max_size=8)),
        final_answer=draw(st.none() | proseish | st.text()),
        provenance=Provenance(session_id="s"),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(episodes())
def test_never_raises_on_random_episodes(ep):
    b = extract_behavior(ep)
    assert b["category"] in CATEGORIES
    assert json.loads(json.dumps(b)) == b
    assert b == extract_behavior(ep)
    assert len(b["reasoning_chain"]) == len(ep.steps) == len(b["tool_sequence"])
    assert 0 <= b["exploration_depth"] <= len(ep.steps)
    for entry, step in zip(b["reasoning_chain"], ep.steps, strict=True):
        assert entry["reason"] is None or entry["reason"] == step.reason.strip()
        assert entry["stated"] == (entry["reason"] is not None)
    for c in b["constraints"]:
        assert c["kind"] in ("read_only", "do_not_modify", "use", "avoid", "scope", "format")
