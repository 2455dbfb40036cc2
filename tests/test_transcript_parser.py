"""Transcript parser: real fixtures (acceptance), property tests, and focused unit tests.

Acceptance (issue): every transcript in ../shared/fixtures/claude-code/transcripts/ parses with zero
errors; for each, the tool calls in its episodes equal the tool_use blocks in the file (main +
subagent files), and every call is paired with its result or marked as unanswered.
"""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claude_rl.episodes.transcript import (
    TranscriptParse,
    find_subagent_files,
    parse_lines,
    parse_transcript,
)
from claude_rl.schema import Episode, Step, ToolCall

TRANSCRIPTS = FIXTURES / "transcripts"
ERROR_REASONS = ("bad_json", "truncated_last_line", "not_object")

# ---------------------------------------------------------------------------------------------
# Independent reading of the fixtures (raw JSON walk; no parser code)


def _objects(path: Path) -> list[dict]:
    out = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            d = orjson.loads(line)
            if isinstance(d, dict):
                out.append(d)
    return out


def _blocks(path: Path, kind: str) -> list[dict]:
    found = []
    for d in _objects(path):
        msg = d.get("message")
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):
            found += [b for b in content if isinstance(b, dict) and b.get("type") == kind]
    return found


def _tool_use_ids(path: Path) -> set[str]:
    return {b["id"] for b in _blocks(path, "tool_use")}


def _result_ids(path: Path) -> set[str]:
    return {b["tool_use_id"] for b in _blocks(path, "tool_result")}


def _session_of(path: Path) -> str | None:
    return next((d["sessionId"] for d in _objects(path) if d.get("sessionId")), None)


def _is_subagent_file(path: Path) -> bool:
    """A file whose conversation lines are all sidechain lines of one agent."""
    lines = [d for d in _objects(path) if d.get("type") in ("user", "assistant")]
    return bool(lines) and all(d.get("isSidechain") and d.get("agentId") for d in lines)


def _agent_id(path: Path) -> str:
    return next(d["agentId"] for d in _objects(path) if d.get("agentId"))


def _groups() -> dict[Path, list[Path]]:
    """Main transcript → its subagent files (by sessionId). Subagent files whose session is not
    in the folder (parent over 2 MB, not collected) are their own group, parsed standalone."""
    files = sorted(TRANSCRIPTS.glob("*.jsonl"))
    subs = [f for f in files if _is_subagent_file(f)]
    mains = [f for f in files if f not in subs]
    by_session = {_session_of(m): m for m in mains}
    groups: dict[Path, list[Path]] = {m: [] for m in mains}
    for s in subs:
        owner = by_session.get(_session_of(s))
        if owner is None:
            groups[s] = []
        else:
            groups[owner].append(s)
    return groups


GROUPS = _groups()


def _layout(tmp: Path, main: Path, subs: list[Path]) -> tuple[Path, list[Path]]:
    """Rebuild Claude Code's layout: 8-hex agent ids (2.0.x) as flat siblings, newer ones under
    ``<session>/subagents/``."""
    if not subs:
        dest = tmp / main.name
        shutil.copyfile(main, dest)
        return dest, []
    sid = _session_of(main)
    dest = tmp / f"{sid}.jsonl"
    shutil.copyfile(main, dest)
    placed = []
    for s in subs:
        aid = _agent_id(s)
        folder = tmp if len(aid) == 8 else tmp / sid / "subagents"
        folder.mkdir(parents=True, exist_ok=True)
        placed.append(folder / f"agent-{aid}.jsonl")
        shutil.copyfile(s, placed[-1])
    return dest, placed


def _all_calls(steps: list[Step]) -> list[ToolCall]:
    out = []
    for s in steps:
        out.append(s.call)
        if s.call.subagent is not None:
            out += _all_calls(s.call.subagent.steps)
    return out


def _episode_calls(parse: TranscriptParse) -> list[ToolCall]:
    return [c for e in parse.episodes for c in _all_calls(e.steps)]


def test_fixture_groups_cover_the_folder():
    files = {p for main, subs in GROUPS.items() for p in (main, *subs)}
    assert files == set(TRANSCRIPTS.glob("*.jsonl"))
    total = sum(len(_tool_use_ids(p)) for p in files)
    assert total == 799  # SOURCES.md


@pytest.mark.parametrize("main", sorted(GROUPS), ids=lambda p: p.name)
def test_every_fixture_parses_and_every_tool_use_is_a_call(main: Path, tmp_path: Path):
    subs = GROUPS[main]
    path, placed = _layout(tmp_path, main, subs)
    assert sorted(find_subagent_files(path)) == sorted(placed)
    parse = parse_transcript(path)

    errors = {k: v for k, v in parse.skipped.items() if k in ERROR_REASONS or k.startswith("unknown_type:")}
    assert errors == {}
    expected: set[str] = set()
    results: set[str] = set()
    for f in (main, *subs):
        expected |= _tool_use_ids(f)
        results |= _result_ids(f)
    calls = _episode_calls(parse)
    assert parse.tool_uses == len(expected)
    assert len(calls) == len(expected)
    assert {c.tool_use_id for c in calls} == expected
    for c in calls:
        if c.tool_use_id in results:
            assert c.output is not None and c.status in ("ok", "error", "interrupted"), c
        else:
            assert c.status in ("unanswered", "interrupted") and c.output is None, c
    assert parse.paired == len(expected & results)
    assert parse.paired + parse.unanswered == parse.tool_uses
    for e in parse.episodes:  # everything round-trips through the schema
        assert Episode.model_validate(orjson.loads(orjson.dumps(e.model_dump(mode="json")))) == e


def test_parser_throughput(capsys):
    data = [(str(p), p.read_bytes().splitlines(keepends=True)) for p in sorted(TRANSCRIPTS.glob("*.jsonl"))]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        calls = sum(parse_lines(lines, source_path=name).tool_uses for name, lines in data)
        best = min(best, time.perf_counter() - start)
    assert calls == 799
    with capsys.disabled():
        print(f"\ntranscript parser: {calls} calls in {best * 1000:.1f} ms = {calls / best:,.0f} calls/s")
    assert calls / best >= 2000  # the end-to-end import target; the parser alone does far more


# ---------------------------------------------------------------------------------------------
# Real fixtures in detail


def test_hello_world_fixture_in_detail():
    parse = parse_transcript(TRANSCRIPTS / "claude-reliability__hello-world-script-transcript.jsonl")
    assert parse.skipped == Counter({"type:queue-operation": 1, "meta": 1})
    [ep] = parse.episodes
    assert ep.episode_id == "de3b8b19-5bc0-4a2a-934a-1b6806567e25:0"
    assert ep.prompt == 'Write a shell script called hello.sh that prints "Hello world" and run it.'
    assert ep.tool_sequence == ["Write", "Bash"]
    write, bash = (s.call for s in ep.steps)
    assert write.input["file_path"] == "/tmp/tmp74wiyiny/hello.sh"
    assert write.output == "File created successfully at: /tmp/tmp74wiyiny/hello.sh"
    assert bash.input["command"] == "chmod +x /tmp/tmp74wiyiny/hello.sh && /tmp/tmp74wiyiny/hello.sh"
    assert bash.output == "Hello world" and bash.raw_output["stdout"] == "Hello world"
    assert [s.reason for s in ep.steps] == [None, None]  # Claude wrote nothing before either call
    assert (write.parallel_group, bash.parallel_group) == (0, 1)
    # The stop hook's feedback (isMeta) is not a prompt; the answer after it is the final one.
    assert ep.final_answer == (
        "I have fully completed the task.\n\n**Summary:** Created `/tmp/tmp74wiyiny/hello.sh` - a shell "
        'script that prints "Hello world" - and executed it successfully. The script outputs `Hello world` '
        "as expected."
    )
    assert ep.status == "completed"
    assert ep.provenance.claude_code_version == "2.1.14"
    assert ep.provenance.model == "claude-opus-4-5-20251101"
    assert ep.provenance.cwd == "/tmp/tmp74wiyiny"
    assert ep.started_at == "2026-01-21T06:20:30.861Z" and ep.ended_at == "2026-01-21T06:20:44.516Z"


def test_spotter_short_fixture_rejected_calls_and_interrupt():
    parse = parse_transcript(TRANSCRIPTS / "spotter__short.jsonl")
    [ep] = parse.episodes
    assert ep.prompt == "mix phx.server doesnt seem to start"
    assert ep.tool_sequence == ["Bash", "Glob"]
    bash, glob = ep.steps
    # One API message split over 5 lines (empty text, thinking, text, two tool_use), results between.
    assert bash.call.parallel_group == glob.call.parallel_group == 0
    assert bash.reason == "Let me check the project structure and try running the server to see the error."
    assert bash.thinking.startswith("The user is having trouble starting their Phoenix server.")
    assert glob.reason is None and glob.thinking is None
    for s in ep.steps:
        assert s.call.is_error and s.call.status == "error"
        assert s.call.output.startswith("The user doesn't want to proceed with this tool use.")
    assert ep.status == "interrupted" and ep.final_answer is None
    assert parse.skipped["interrupt_marker"] == 1


def test_inline_sidechains_of_old_versions_attach_to_task_calls():
    """1.0.x wrote Task subagent turns into the main file (isSidechain, no agentId)."""
    parse = parse_transcript(TRANSCRIPTS / "claude-code-viewer__fe5e1c67-53e7-4862-81ae-d0e013e3270b.jsonl")
    first = parse.episodes[0]
    assert first.prompt == "/orchestrator create TODO app by Next.js"  # slash command, then work
    agents = [s.call for s in first.steps if s.call.name == "Agent"]
    assert len(agents) == 5 and all(c.raw_name == "Task" for c in agents)
    assert all(c.subagent is not None for c in agents)
    for c in agents:
        assert c.subagent.prompt == c.input["prompt"].strip()
        assert c.subagent.agent_type == "general-purpose"
        assert len(c.subagent.steps) == c.raw_output["totalToolUseCount"]
        assert c.subagent.final_answer
    assert [c.parallel_group for c in agents] == [2, 2, 2, 4, 4]


def test_new_layout_subagents_attach_by_agent_id(tmp_path: Path):
    main = TRANSCRIPTS / "claude-code-log__ef958aa1-0e93-49f0-bb71-150f63befcd1.jsonl"
    path, placed = _layout(tmp_path, main, GROUPS[main])
    parse = parse_transcript(path)
    agents = [s.call for e in parse.episodes for s in e.steps if s.call.name == "Agent"]
    assert len(agents) == 6
    for c in agents:
        assert c.raw_name is None  # already called Agent in 2.1.114
        assert c.subagent.agent_id == c.raw_output["agentId"]
        assert c.subagent.transcript_path == str(
            path.parent / path.stem / "subagents" / f"agent-{c.subagent.agent_id}.jsonl"
        )
        assert c.subagent.agent_type == "general-purpose"
        assert len(c.subagent.steps) == c.raw_output["totalToolUseCount"]


def test_flat_layout_warmup_sidechains_are_orphans(tmp_path: Path):
    main = TRANSCRIPTS / "claude-code-log__cb2e607c-c758-415a-8b45-c49e4631906a.jsonl"
    path, placed = _layout(tmp_path, main, GROUPS[main])
    assert len(placed) == 2 and all(p.parent == tmp_path for p in placed)
    parse = parse_transcript(path)
    [task] = [s.call for e in parse.episodes for s in e.steps if s.call.name == "Agent"]
    assert task.raw_name == "Task" and task.subagent.agent_id == "ea02459f"
    assert task.subagent.agent_type == "Plan" and len(task.subagent.steps) == 14
    assert parse.skipped["orphan_subagent"] == 1  # the "Warmup" sidechain


def test_mid_turn_compaction_fixture():
    parse = parse_transcript(TRANSCRIPTS / "entireio-cli__a6e4c2a0fbd1-0-full.jsonl")
    assert [e.prompt[:30] for e in parse.episodes] == [
        "for the change in cmd/entire/c",
        "the issue is still that this w",
    ]
    # Auto-compaction in the middle of the second turn: the summary is not a prompt, the work after
    # it continues the same episode. "No response requested." (<synthetic>) after /exit is dropped.
    assert parse.skipped["compact_summary"] == 1 and parse.skipped["compact_boundary"] == 1
    assert parse.skipped["synthetic"] == 1
    assert parse.episodes[1].tool_sequence == ["Read", "Read", "Edit", "Bash", "Bash", "Bash"]
    assert parse.episodes[1].final_answer.startswith("All tests pass and no lint issues.")


# ---------------------------------------------------------------------------------------------
# Property tests over real fixtures: perturbations give the same episodes (or a counted skip)

PROPERTY_FILES = [
    "spotter__short.jsonl",
    "spotter__tool_heavy.jsonl",
    "claude-reliability__coverage-test-fix-transcript.jsonl",
    "fasthooks__sample_main_transcript.jsonl",
    "entireio-cli__a6e4c2a0fbd1-0-full.jsonl",
    "claude-code-log__ef958aa1-0e93-49f0-bb71-150f63befcd1.jsonl",
]
_RAW = {
    name: (
        (TRANSCRIPTS / name).read_bytes().splitlines(keepends=True),
        {str(s): s.read_bytes().splitlines(keepends=True) for s in GROUPS[TRANSCRIPTS / name]},
    )
    for name in PROPERTY_FILES
}


def _signature(parse: TranscriptParse):
    def steps(ss):
        return [
            (
                s.index,
                s.reason,
                s.thinking,
                s.call.tool_use_id,
                s.call.name,
                s.call.raw_name,
                s.call.status,
                s.call.output,
                s.call.is_error,
                s.call.parallel_group,
                s.call.timestamp,
                None
                if s.call.subagent is None
                else (
                    s.call.subagent.agent_id,
                    s.call.subagent.prompt,
                    s.call.subagent.final_answer,
                    steps(s.call.subagent.steps),
                ),
            )
            for s in ss
        ]

    return [
        (
            e.episode_id,
            e.prompt,
            e.prompt_uuid,
            e.status,
            e.final_answer,
            e.after_compaction,
            e.started_at,
            e.ended_at,
            e.provenance.model,
            steps(e.steps),
        )
        for e in parse.episodes
    ]


def _line_obj(line: bytes) -> dict | None:
    try:
        d = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return d if isinstance(d, dict) else None


def _perturb(
    lines: list[bytes], rnd: random.Random, shuffle: bool, dups: int, unknown: int
) -> tuple[list[bytes], int]:
    out = list(lines)
    if shuffle:  # shuffle the lines of each API message among the positions they occupy
        positions: dict[str, list[int]] = defaultdict(list)
        for i, line in enumerate(out):
            d = _line_obj(line)
            msg = d.get("message") if d else None
            if d and d.get("type") == "assistant" and isinstance(msg, dict) and msg.get("id"):
                positions[msg["id"]].append(i)
        for idx in positions.values():
            picked = [out[i] for i in idx]
            rnd.shuffle(picked)
            for i, line in zip(idx, picked, strict=True):
                out[i] = line
    added = 0
    for _ in range(dups):  # re-append a line (same uuid) somewhere after the original
        i = rnd.randrange(len(out))
        d = _line_obj(out[i])
        if d and d.get("uuid"):
            line = out[i] if out[i].endswith(b"\n") else out[i] + b"\n"
            out.insert(rnd.randint(i + 1, len(out)), line)
            added += 1
    for k in range(unknown):  # line types from a future Claude Code
        line = orjson.dumps({"type": "future-thing", "uuid": f"future-{k}", "payload": {"x": k}}) + b"\n"
        out.insert(rnd.randint(0, len(out)), line)
    if out and not out[-1].endswith(b"\n"):
        out[-1] += b"\n"
    return out, added


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(PROPERTY_FILES),
    rnd=st.randoms(use_true_random=False),
    shuffle=st.booleans(),
    dups=st.integers(0, 6),
    unknown=st.integers(0, 3),
    cut=st.booleans(),
)
def test_perturbed_transcripts_give_the_same_episodes(name, rnd, shuffle, dups, unknown, cut):
    lines, subs = _RAW[name]
    base = lines[:-1] if cut else lines
    expected = parse_lines(base, source_path=name, subagents=subs)

    mutated, added = _perturb(base, rnd, shuffle, dups, unknown)
    mutated_subs = {}
    for key, sub in subs.items():
        mutated_subs[key], n = _perturb(sub, rnd, shuffle, dups // 2, 0)
        added += n
    if cut:  # the writer was still appending the last line when we read
        last = lines[-1].rstrip(b"\n")
        mutated.append(last[: rnd.randint(1, len(last) - 1)])
    got = parse_lines(mutated, source_path=name, subagents=mutated_subs)

    assert _signature(got) == _signature(expected)
    assert (got.tool_uses, got.paired, got.unanswered) == (
        expected.tool_uses,
        expected.paired,
        expected.unanswered,
    )
    extra = got.skipped - expected.skipped
    explained = Counter(
        {"duplicate_line": added, "unknown_type:future-thing": unknown, "truncated_last_line": int(cut)}
    )
    assert extra == +explained


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.recursive(
                st.none()
                | st.booleans()
                | st.integers(-(2**63), 2**63 - 1)
                | st.text(max_size=8)
                | st.sampled_from(
                    ["user", "assistant", "tool_use", "tool_result", "text", "image", "thinking", "Task"]
                ),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(
                        st.sampled_from(
                            [
                                "type",
                                "message",
                                "content",
                                "uuid",
                                "parentUuid",
                                "id",
                                "name",
                                "text",
                                "tool_use_id",
                                "isMeta",
                                "isSidechain",
                                "timestamp",
                                "version",
                                "toolUseResult",
                                "input",
                                "model",
                            ]
                        ),
                        inner,
                        max_size=5,
                    )
                ),
                max_leaves=12,
            ).map(lambda v: orjson.dumps(v)),
        ),
        max_size=12,
    )
)
def test_arbitrary_lines_never_crash(lines):
    parse = parse_lines(lines)
    assert parse.paired + parse.unanswered == parse.tool_uses


# ---------------------------------------------------------------------------------------------
# Unit tests on hand-written lines


class T:
    """Builds transcript lines the way Claude Code writes them (one block per assistant line)."""

    def __init__(self, session: str = "sess-1", version: str = "2.1.50") -> None:
        self.session, self.version = session, version
        self.lines: list[dict] = []
        self.n = 0
        self.last: str | None = None

    def add(self, d: dict, parent: str | None | bool = True) -> str:
        self.n += 1
        uid = f"u{self.n}"
        d = {
            "parentUuid": self.last if parent is True else parent,
            "sessionId": self.session,
            "version": self.version,
            "cwd": "/work",
            "gitBranch": "main",
            "uuid": uid,
            "timestamp": f"2026-01-01T00:{self.n // 60:02d}:{self.n % 60:02d}.000Z",
            **d,
        }
        self.lines.append(d)
        self.last = uid
        return uid

    def prompt(self, content, **kw) -> str:
        return self.add({"type": "user", "message": {"role": "user", "content": content}, **kw})

    def assistant(self, mid: str, *blocks: dict, model: str = "claude-opus-4-6", **kw) -> list[str]:
        return [
            self.add(
                {
                    "type": "assistant",
                    "requestId": f"req-{mid}",
                    "message": {"id": mid, "model": model, "role": "assistant", "content": [b]},
                    **kw,
                }
            )
            for b in blocks
        ]

    def result(self, tid: str, content, is_error: bool | None = None, tur=None, **kw) -> str:
        block = {"type": "tool_result", "tool_use_id": tid, "content": content}
        if is_error is not None:
            block["is_error"] = is_error
        extra = {"toolUseResult": tur} if tur is not None else {}
        return self.add({"type": "user", "message": {"role": "user", "content": [block]}, **extra, **kw})

    def encoded(self) -> list[bytes]:
        return [orjson.dumps(d) + b"\n" for d in self.lines]

    def parse(self, **kw) -> TranscriptParse:
        return parse_lines(self.encoded(), **kw)


def text(t: str) -> dict:
    return {"type": "text", "text": t}


def thinking(t: str) -> dict:
    return {"type": "thinking", "thinking": t, "signature": "sig"}


def use(tid: str, name: str = "Bash", **inp) -> dict:
    return {"type": "tool_use", "id": tid, "name": name, "input": inp or {"command": "ls"}}


def test_split_message_merged_in_block_order_and_results_paired_by_id():
    t = T()
    t.prompt("list and count")
    t.assistant(
        "m1",
        thinking("plan it"),
        text("I'll list, then count."),
        use("a", command="ls"),
        use("b", command="wc -l"),
    )
    t.result("b", "42")  # results out of order
    t.result("a", "x.py")
    t.assistant("m2", text("42 lines."))
    [ep] = t.parse().episodes
    a, b = ep.steps
    assert (a.call.tool_use_id, a.call.output, b.call.tool_use_id, b.call.output) == ("a", "x.py", "b", "42")
    assert a.reason == "I'll list, then count." and a.thinking == "plan it"
    assert b.reason is None and b.thinking is None  # nothing written between the two calls
    assert a.call.parallel_group == b.call.parallel_group == 0
    assert ep.final_answer == "42 lines." and ep.status == "completed"


def test_lines_of_one_message_written_out_of_order_are_reordered():
    t = T()
    t.prompt("go")
    t.assistant("m1", text("first"), use("a"), text("second"), use("b"))
    t.result("a", "1")
    t.result("b", "2")
    ordered = t.parse()
    lines = t.encoded()
    lines[1:5] = [lines[4], lines[2], lines[1], lines[3]]
    shuffled = parse_lines(lines)
    assert _signature(shuffled) == _signature(ordered)
    assert [s.reason for s in shuffled.episodes[0].steps] == ["first", "second"]


def test_interleaved_results_inside_one_message():
    """2.1.x runs a tool while the model is still streaming: results sit between the lines."""
    t = T()
    t.prompt("go")
    t.assistant("m1", text("step one"), use("a"))
    t.result("a", "ok-a")
    t.assistant("m1", use("b"))
    t.result("b", "ok-b")
    t.assistant("m2", use("c"))
    t.result("c", "ok-c")
    t.assistant("m3", text("done"))
    [ep] = t.parse().episodes
    assert [s.call.parallel_group for s in ep.steps] == [0, 0, 1]
    assert [s.call.output for s in ep.steps] == ["ok-a", "ok-b", "ok-c"]
    assert ep.final_answer == "done"


def test_reason_is_text_since_previous_call_across_messages_or_none():
    t = T()
    t.prompt("fix it")
    t.assistant("m1", text("Looking at the code."))
    t.assistant("m2", thinking(""), text("Reading the file."), use("a", "Read", file_path="/x"))
    t.result("a", "content")
    t.assistant("m3", use("b", "Edit", file_path="/x"))
    t.result("b", "edited")
    t.assistant("m4", thinking("   "), text("Fixed."))
    [ep] = t.parse().episodes
    assert ep.steps[0].reason == "Looking at the code.\n\nReading the file."
    assert ep.steps[0].thinking is None  # empty thinking blocks are ignored
    assert ep.steps[1].reason is None
    assert ep.final_answer == "Fixed."


def test_episode_without_answer_is_incomplete_and_unanswered_calls_are_counted():
    t = T()
    t.prompt("run")
    t.assistant("m1", use("a"))
    parse = t.parse()
    [ep] = parse.episodes
    assert ep.steps[0].call.status == "unanswered" and ep.steps[0].call.output is None
    assert ep.status == "incomplete" and ep.final_answer is None
    assert (parse.tool_uses, parse.paired, parse.unanswered) == (1, 0, 1)


def test_interrupted_turn():
    t = T()
    t.prompt("long job")
    t.assistant("m1", use("a"), use("b"))
    t.result("a", "[Request interrupted by user for tool use]", is_error=True)
    t.prompt([text("[Request interrupted by user for tool use]")])
    t.prompt("never mind, do this instead")
    t.assistant("m2", text("Sure."))
    parse = t.parse()
    first, second = parse.episodes
    assert first.status == "interrupted" and first.final_answer is None
    assert [s.call.status for s in first.steps] == ["interrupted", "interrupted"]
    assert first.steps[0].call.is_error
    assert (parse.paired, parse.unanswered) == (1, 1)
    assert second.prompt == "never mind, do this instead" and second.status == "completed"
    assert second.index == 1 and second.episode_id == "sess-1:1"


def test_plain_interrupt_text_marks_the_episode():
    t = T()
    t.prompt("think hard")
    t.assistant("m1", text("Partial"))
    t.prompt("[Request interrupted by user]")
    [ep] = t.parse().episodes
    assert ep.status == "interrupted"


def test_compaction_summary_is_not_a_prompt_and_marks_the_next_episode():
    t = T()
    t.prompt("first task")
    t.assistant("m1", text("done 1"))
    t.add(
        {
            "type": "system",
            "subtype": "compact_boundary",
            "content": "Conversation compacted",
            "compactMetadata": {"trigger": "manual", "preTokens": 1000},
            "logicalParentUuid": t.last,
        },
        parent=None,
    )
    t.prompt(
        "This session is being continued from a previous conversation...",
        isCompactSummary=True,
        isVisibleInTranscriptOnly=True,
    )
    t.prompt(
        "Caveat: The messages below were generated by the user while running local commands.", isMeta=True
    )
    t.prompt(
        "<command-name>/compact</command-name>\n<command-message>compact</command-message>\n<command-args></command-args>"
    )
    t.prompt("<local-command-stdout>Compacted</local-command-stdout>")
    t.prompt("second task")
    t.assistant("m2", text("done 2"))
    parse = t.parse()
    assert [(e.prompt, e.after_compaction) for e in parse.episodes] == [
        ("first task", False),
        ("second task", True),
    ]
    assert parse.skipped["compact_summary"] == 1 and parse.skipped["compact_boundary"] == 1
    assert parse.skipped["meta"] == 1 and parse.skipped["command_wrapper"] == 2


def test_tool_renames_keep_the_raw_name():
    t = T()
    t.prompt("go")
    t.assistant(
        "m1",
        use("a", "Task", prompt="explore", subagent_type="Explore"),
        use("b", "BashOutput", bash_id="1"),
        use("c", "KillShell", shell_id="1"),
        use("d", "Read", file_path="/x"),
    )
    steps = t.parse().episodes[0].steps
    assert [(s.call.name, s.call.raw_name) for s in steps] == [
        ("Agent", "Task"),
        ("TaskOutput", "BashOutput"),
        ("TaskStop", "KillShell"),
        ("Read", None),
    ]


def _subagent_lines(agent_id: str, prompt: str, session: str = "sess-1") -> list[bytes]:
    s = T(session=session)
    s.prompt(prompt, isSidechain=True, agentId=agent_id)
    s.assistant(
        "sm1",
        text("Searching."),
        use(f"{agent_id}-s1", "Grep", pattern="foo"),
        isSidechain=True,
        agentId=agent_id,
    )
    s.result(f"{agent_id}-s1", "a.py", isSidechain=True, agentId=agent_id)
    s.assistant("sm2", text("Found it in a.py."), isSidechain=True, agentId=agent_id)
    for d in s.lines:
        d["uuid"] = f"{agent_id}-{d['uuid']}"
        d["parentUuid"] = d["parentUuid"] and f"{agent_id}-{d['parentUuid']}"
    return s.encoded()


def test_subagent_attached_by_agent_id_and_orphans_counted():
    t = T()
    t.prompt("where is foo?")
    t.assistant("m1", use("a", "Task", description="find", prompt="Find foo", subagent_type="Explore"))
    t.result(
        "a",
        [text("It is in a.py.")],
        tur={"status": "completed", "agentId": "abc123", "content": [text("It is in a.py.")]},
    )
    t.assistant("m2", text("foo is in a.py."))
    parse = t.parse(
        subagents={
            "s/subagents/agent-abc123.jsonl": _subagent_lines("abc123", "Find foo"),
            "s/subagents/agent-warm.jsonl": _subagent_lines("warm", "Warmup"),
        }
    )
    [ep] = parse.episodes
    call = ep.steps[0].call
    assert call.name == "Agent" and call.raw_name == "Task" and call.output == "It is in a.py."
    sub = call.subagent
    assert (sub.agent_id, sub.agent_type, sub.prompt) == ("abc123", "Explore", "Find foo")
    assert sub.transcript_path == "s/subagents/agent-abc123.jsonl"
    assert [s.call.name for s in sub.steps] == ["Grep"] and sub.steps[0].reason == "Searching."
    assert sub.final_answer == "Found it in a.py."
    assert parse.skipped["orphan_subagent"] == 1
    assert parse.tool_uses == 3  # the orphan's call is counted, not attached
    assert (parse.paired, parse.unanswered) == (3, 0)


def test_subagent_attached_by_prompt_when_no_agent_id():
    t = T()
    t.prompt("where is foo?")
    t.assistant("m1", use("a", "Agent", prompt="Find foo\n", subagent_type="Explore"))  # no result yet
    parse = t.parse(subagents={"agent-x1.jsonl": _subagent_lines("x1", "Find foo")})
    call = parse.episodes[0].steps[0].call
    assert call.status == "unanswered" and call.subagent.agent_id == "x1"
    assert "orphan_subagent" not in parse.skipped


def test_find_subagent_files_both_layouts(tmp_path: Path):
    main = tmp_path / "sess-1.jsonl"
    t = T()
    t.prompt("hi")
    main.write_bytes(b"".join(t.encoded()))
    new = tmp_path / "sess-1" / "subagents"
    new.mkdir(parents=True)
    (new / "agent-a1.jsonl").write_bytes(b"".join(_subagent_lines("a1", "x")))
    (tmp_path / "agent-0badc0de.jsonl").write_bytes(b"".join(_subagent_lines("0badc0de", "y")))
    (tmp_path / "agent-other.jsonl").write_bytes(b"".join(_subagent_lines("other", "z", session="sess-2")))
    assert find_subagent_files(main) == [new / "agent-a1.jsonl", tmp_path / "agent-0badc0de.jsonl"]
    assert parse_transcript(main).skipped["orphan_subagent"] == 2


def test_image_results_and_image_prompts():
    t = T()
    t.prompt(
        [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            text("what is in this screenshot?"),
        ]
    )
    t.assistant("m1", use("a", "Read", file_path="/x.png"))
    t.result(
        "a",
        [text("Read image"), {"type": "image", "source": {"type": "base64", "data": "AAAA"}}],
        tur={"type": "image", "file": {"base64": "AAAA"}},
    )
    t.assistant("m2", text("A cat."))
    [ep] = t.parse().episodes
    assert ep.prompt == "[image]\n\nwhat is in this screenshot?"
    assert ep.steps[0].call.output == "Read image\n[image]"
    assert ep.steps[0].call.raw_output == {"type": "image", "file": {"base64": "AAAA"}}


def test_error_results_unwrapped_and_flagged():
    t = T()
    t.prompt("edit")
    t.assistant("m1", use("a", "Edit", file_path="/x"))
    t.result(
        "a",
        "<tool_use_error>String to replace not found in file.</tool_use_error>",
        is_error=True,
        tur="Error: String to replace not found in file.",
    )
    t.assistant("m2", use("b", "Bash", command="false"))
    t.result("b", "Exit code 1", is_error=True)
    t.assistant("m3", text("Both failed."))
    [ep] = t.parse().episodes
    a, b = (s.call for s in ep.steps)
    assert (a.output, a.is_error, a.status) == ("String to replace not found in file.", True, "error")
    assert a.raw_output == "Error: String to replace not found in file."
    assert (b.output, b.is_error, b.status) == ("Exit code 1", True, "error")
    assert ep.status == "completed"


def test_synthetic_api_error_turn():
    t = T()
    t.prompt("go")
    t.assistant(
        "m1", text("API Error: 500 Internal server error"), model="<synthetic>", isApiErrorMessage=True
    )
    parse = t.parse()
    [ep] = parse.episodes
    assert ep.status == "error" and ep.final_answer is None and ep.provenance.model is None
    assert parse.skipped["synthetic"] == 1

    t.prompt(
        "Continue",
    )  # a new prompt: new episode; the retry answers it
    t.assistant("m2", text("Done."))
    assert [e.status for e in t.parse().episodes] == ["error", "completed"]


def test_synthetic_error_followed_by_real_answer_is_completed():
    t = T()
    t.prompt("go")
    t.assistant("m1", use("a"))
    t.result("a", "ok")
    t.assistant("m2", text("API Error: Connection error."), model="<synthetic>", isApiErrorMessage=True)
    t.assistant("m3", text("All done."))
    [ep] = t.parse().episodes
    assert ep.status == "completed" and ep.final_answer == "All done."


def test_not_prompts_and_noise_are_skipped_and_counted():
    t = T()
    t.add({"type": "file-history-snapshot", "messageId": "x", "snapshot": {}})
    t.add({"type": "queue-operation", "operation": "enqueue"})
    t.add({"type": "brand-new-type", "data": 1})
    t.prompt(
        "Caveat: The messages below were generated by the user while running local commands. DO NOT",
        isMeta=True,
    )
    t.prompt("<bash-input>ls</bash-input>")
    t.prompt("<bash-stdout>a.py</bash-stdout><bash-stderr></bash-stderr>")
    t.prompt("<system-reminder>You have todos.</system-reminder>")
    t.prompt(
        [
            text("<ide_opened_file>The user opened a.py</ide_opened_file>"),
            text("explain a.py"),
            text("<system-reminder>be brief</system-reminder>"),
        ]
    )
    t.add({"type": "progress", "data": {"type": "hook_progress"}})
    t.assistant("m1", text("It prints hello."))
    t.add({"type": "system", "subtype": "stop_hook_summary", "hookCount": 1})
    lines = [b"not json at all\n", *t.encoded(), b"[1, 2]\n", b'{"type": "assistant", "mess']
    parse = parse_lines(lines)
    [ep] = parse.episodes
    assert ep.prompt == "explain a.py" and ep.final_answer == "It prints hello."
    assert parse.skipped == Counter(
        {
            "bad_json": 1,
            "truncated_last_line": 1,
            "not_object": 1,
            "unknown_type:brand-new-type": 1,
            "type:file-history-snapshot": 1,
            "type:queue-operation": 1,
            "type:progress": 1,
            "type:system": 1,
            "meta": 1,
            "command_wrapper": 2,
            "system_reminder": 1,
        }
    )


def test_slash_command_with_work_is_the_prompt_local_commands_make_no_episode():
    t = T()
    t.prompt(
        "<command-name>/clear</command-name>\n<command-message>clear</command-message>\n<command-args></command-args>"
    )
    t.prompt("<local-command-stdout></local-command-stdout>")
    t.prompt(
        "<command-message>review is running…</command-message>\n<command-name>/review</command-name>\n"
        "<command-args>PR 12</command-args>"
    )
    t.prompt([text("Review the pull request ...")], isMeta=True)
    t.assistant("m1", use("a", "Bash", command="gh pr view 12"))
    t.result("a", "diff")
    t.assistant("m2", text("Looks good."))
    [ep] = t.parse().episodes
    assert ep.prompt == "/review PR 12" and ep.tool_sequence == ["Bash"] and ep.status == "completed"


def test_duplicated_lines_and_duplicate_tool_use_ids_count_once():
    t = T()
    t.prompt("go")
    t.assistant("m1", use("a"))
    t.result("a", "1")
    t.assistant("m2", text("done"))
    lines = t.encoded()
    parse = parse_lines([lines[0], lines[1], lines[1], lines[2], lines[3], lines[2]])
    assert parse.skipped["duplicate_line"] == 2 and parse.tool_uses == 1
    replay = dict(t.lines[1], uuid="u-replay")  # same tool_use id on another line (a replayed message)
    parse = parse_lines([*lines, orjson.dumps(replay)])
    assert parse.skipped["duplicate_tool_use"] == 1 and parse.tool_uses == 1


def test_episode_ids_provenance_and_given_session_id():
    t = T(session="abc", version="2.0.76")
    t.prompt("one")
    t.assistant("m1", text("1"), model="claude-haiku-4-5")
    t.prompt("two")
    t.assistant("m2", text("2"), model="claude-opus-4-6")
    parse = t.parse(source_path="/p/abc.jsonl")
    assert [e.episode_id for e in parse.episodes] == ["abc:0", "abc:1"]
    p = parse.episodes[0].provenance
    assert (
        p.session_id,
        p.sources,
        p.transcript_path,
        p.claude_code_version,
        p.model,
        p.cwd,
        p.git_branch,
    ) == ("abc", ["transcript"], "/p/abc.jsonl", "2.0.76", "claude-haiku-4-5", "/work", "main")
    assert parse.episodes[1].provenance.model == "claude-opus-4-6"
    assert parse.episodes[0].steps == [] and parse.episodes[0].started_at == "2026-01-01T00:00:01.000Z"
    assert [e.episode_id for e in t.parse(session_id="other").episodes] == ["other:0", "other:1"]


def test_truncated_last_line_in_a_file(tmp_path: Path):
    t = T()
    t.prompt("go")
    t.assistant("m1", text("done"))
    path = tmp_path / "sess-1.jsonl"
    path.write_bytes(b"".join(t.encoded()) + b'{"type":"user","message":{"content":"ha')
    parse = parse_transcript(path)
    assert parse.skipped == Counter({"truncated_last_line": 1})
    assert [e.final_answer for e in parse.episodes] == ["done"]
