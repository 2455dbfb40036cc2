"""Scorers: identity, what each part reacts to (and what it ignores), empty candidates, properties."""

from __future__ import annotations

import math

import pytest
from episode_examples import ANSWER, QUERY, ROOT, SCHEMA_GREP, call, episode, with_steps
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claude_rl import scoring
from claude_rl.schema import Episode, ToolCall


def reference() -> Episode:
    return episode(
        [
            (
                call("Grep", SCHEMA_GREP, "db/schema.sql:46:CREATE TABLE alarms ("),
                "Check the alarms table first.",
            ),
            (
                call("Bash", {"command": QUERY, "description": "Generator alarms"}, "GEN-2|FAIL_TO_START"),
                "Generators are `kind = 'generator'` in assets.",
            ),
            (call("Read", {"file_path": f"{ROOT}/docs/alarms.md"}, "# Alarms"), "What the codes mean."),
        ]
    )


def applicable(scores: dict[str, float | None]) -> dict[str, float]:
    return {k: v for k, v in scores.items() if v is not None}


# --- identity ---------------------------------------------------------------------------------


def test_reference_scores_one_on_itself():
    ref = reference()
    scores = scoring.score_all(ref, ref)
    assert set(scores) == set(scoring.SCORERS)
    assert all(v == 1.0 for v in applicable(scores).values()), scores
    assert scores["schema_read_before_query"] == 1.0
    assert scores["self_correction"] is None  # nothing failed on either side
    assert scores["constraint_match"] is None  # no constraint anywhere


def test_registry_and_public_functions_agree():
    ref = reference()
    cand = with_steps(ref, [(s.call, s.reason) for s in reversed(ref.steps)])
    all_scores = scoring.score_all(ref, cand)
    for name, fn in scoring.SCORERS.items():
        assert fn(ref, cand) == all_scores[name], name
        assert fn.__name__ == name and fn.__doc__
    assert list(scoring.HEADLINE) == [n for n in scoring.HEADLINE if n in scoring.SCORERS]


@pytest.fixture(scope="module")
def sample_episodes() -> list[Episode]:
    from claude_rl.dataset import load_source, samples_traces_dir

    if not any(samples_traces_dir().glob("*.jsonl")):
        pytest.skip("data/samples/traces not built")
    episodes, _ = load_source("samples")
    return episodes


def test_every_sample_episode_scores_one_on_itself(sample_episodes):
    seen: set[str] = set()
    for ep in sample_episodes:
        scores = scoring.score_all(ep, ep)
        bad = {k: v for k, v in applicable(scores).items() if v != 1.0}
        assert not bad, (ep.episode_id, bad)
        seen |= set(applicable(scores))
    assert seen == set(scoring.SCORERS)  # every part applies somewhere in the corpus


# --- what each part reacts to ------------------------------------------------------------------


def test_reversed_order_lowers_sequence_scores_but_not_the_tool_set():
    ref = reference()
    cand = with_steps(ref, [(s.call, s.reason) for s in reversed(ref.steps)])
    scores = scoring.score_all(ref, cand)
    assert scores["exact_match"] == 0.0
    assert scores["tool_sequence_similarity"] < 1.0
    assert scores["first_tool_accuracy"] == 0.0
    assert scores["tool_set_f1"] == 1.0
    assert scores["answer_similarity"] == 1.0


def test_missing_schema_read_lowers_exactly_that_part():
    ref = reference()
    other_grep = call("Grep", {"pattern": "generator", "path": "app"}, "app/alarms.py:3: generator")
    cand = with_steps(
        ref, [(other_grep, "Look for generators.")] + [(s.call, s.reason) for s in ref.steps[1:]]
    )
    scores = scoring.score_all(ref, cand)
    assert scores["schema_read_before_query"] == 0.0
    for name in ("exact_match", "tool_sequence_similarity", "tool_set_f1", "first_tool_accuracy"):
        assert scores[name] == 1.0, name
    assert scores["answer_similarity"] == 1.0
    assert scores["argument_similarity"] < 1.0  # the Grep has other arguments


def test_schema_read_after_the_query_does_not_count():
    ref = reference()
    steps = [(s.call, s.reason) for s in ref.steps]
    cand = with_steps(ref, [steps[1], steps[0], steps[2]])
    assert scoring.schema_read_before_query(ref, cand) == 0.0
    sqlite_schema = call("Bash", {"command": 'sqlite3 db/command_center.db ".schema alarms"'}, "CREATE TABLE")
    cand = with_steps(ref, [(sqlite_schema, "Schema first."), steps[1], steps[2]])
    assert scoring.schema_read_before_query(ref, cand) == 1.0
    no_query = episode([(call("Read", {"file_path": "app/report.py"}), None)])
    assert scoring.schema_read_before_query(no_query, cand) is None  # the reference never queries


def test_wrong_sql_with_the_right_tools_lowers_argument_similarity():
    ref = reference()
    wrong = call("Bash", {"command": 'sqlite3 db/command_center.db "SELECT * FROM readings LIMIT 5;"'})
    steps = [(s.call, s.reason) for s in ref.steps]
    cand = with_steps(ref, [steps[0], (wrong, steps[1][1]), steps[2]])
    scores = scoring.score_all(ref, cand)
    assert scores["tool_sequence_similarity"] == 1.0 and scores["exact_match"] == 1.0
    assert scores["argument_similarity"] < 0.8
    # the query alone: right tool, wrong query scores low
    one_ref = episode([(ref.steps[1].call, None)])
    one_cand = episode([(wrong, None)])
    assert scoring.argument_similarity(one_ref, one_cand) < 0.35


def test_argument_normalization_paths_case_and_whitespace():
    a = episode([(call("Read", {"file_path": f"{ROOT}/db/schema.sql"}), None)])
    for path in ("db/schema.sql", "./db/schema.sql", f"{ROOT}/db/schema.sql"):
        b = episode([(call("Read", {"file_path": path}), None)])
        assert scoring.argument_similarity(a, b) == 1.0, path
    q1 = episode(
        [(call("Bash", {"command": "sqlite3 db/x.db \"SELECT tag FROM assets WHERE kind = 'ups'\""}), None)]
    )
    q2 = episode(
        [(call("Bash", {"command": "sqlite3  db/x.db \"select tag\n  from ASSETS where KIND='ups'\""}), None)]
    )
    assert scoring.argument_similarity(q1, q2) == 1.0
    q3 = episode(
        [(call("Bash", {"command": "sqlite3 db/x.db \"SELECT tag FROM assets WHERE kind = 'UPS'\""}), None)]
    )
    assert scoring.argument_similarity(q1, q3) < 1.0  # a literal's case matters
    described = episode(
        [(call("Bash", {"command": q1.steps[0].call.input["command"], "description": "x"}), None)]
    )
    assert scoring.argument_similarity(q1, described) == 1.0  # the label is ignored


def test_argument_alignment_pairs_same_tool_calls_in_order():
    ref = reference()
    extra = call("Glob", {"pattern": "**/*.md"})
    steps = [(s.call, s.reason) for s in ref.steps]
    cand = with_steps(ref, [steps[0], (extra, None), steps[1], steps[2]])
    total, pairs = scoring.aligned_pairs(scoring.Features(ref), scoring.Features(cand))
    assert [(i, j) for i, j, _ in pairs] == [(0, 0), (1, 2), (2, 3)]
    assert total == pytest.approx(3.0)
    assert scoring.argument_similarity(ref, cand) == pytest.approx(3 / 4)  # the extra call counts as 0


def test_wrong_number_lowers_answer_similarity():
    ref = reference()
    wrong = ref.model_copy(update={"final_answer": ANSWER.replace("4 alarms", "5 alarms")})
    right_reworded = ref.model_copy(
        update={
            "final_answer": "4 alarms from the generators; 2 were warning or critical: GEN-2 FAIL_TO_START "
            "(critical, 2026-03-05 10:02), GEN-1 FUEL_LOW (warning, 2026-03-08 08:57)."
        }
    )
    s_wrong = scoring.answer_similarity(ref, wrong)
    s_right = scoring.answer_similarity(ref, right_reworded)
    assert s_wrong < 0.9
    assert s_right > s_wrong  # other words, same numbers beats the same words with a wrong number


def test_answer_numbers_normalization():
    assert scoring.answer_numbers("1,200.50 kW and 07 units, 40 % at 12:00 on 2026-03-05") == {
        "1200.5",
        "7",
        "40",
        "12:00",
        "2026-03-05",
    }
    assert scoring.answer_numbers("TX-1 and GEN-2 in v1.2.3") == set()
    assert scoring.answer_numbers("no numbers") == set()
    # a colon beside a number makes a time only with digits on both sides
    assert scoring.answer_numbers("sensor 12: 3.5 kW, count:42, 17: done") == {"12", "3.5", "42", "17"}
    assert scoring.answer_numbers("from 12:30:45 to 123:45") == {"12:30:45"}


def test_an_answer_is_grounded_when_its_numbers_were_read():
    rows = "GEN-2|FAIL_TO_START|critical|2026-03-05 10:02\nGEN-1|FUEL_LOW|warning|2026-03-08 08:57"
    answer = "4 alarms: GEN-2 on 2026-03-05 10:02, GEN-1 on 2026-03-08 08:57."
    read = episode([(call("Bash", {"command": QUERY}, rows), "Query the alarms.")], answer=answer)
    numbers, unseen = scoring.unseen_answer_numbers(read)
    assert numbers == {"4", "2026-03-05 10:02", "2026-03-08 08:57"}
    assert unseen == {"4"}  # a count the model worked out: unseen, but one of three
    assert scoring.answer_grounded(read) is True

    # The same answer after reading only the schema: its dates and times came from nowhere.
    schema_only = episode(
        [(call("Grep", SCHEMA_GREP, "CREATE TABLE alarms ("), "Schema first.")], answer=answer
    )
    assert scoring.unseen_answer_numbers(schema_only)[1] == numbers
    assert scoring.answer_grounded(schema_only) is False

    # Numbers the prompt or a call's input holds count as seen; no number, no verdict.
    from_prompt = episode([], answer="None since 2026-03-05.", prompt="Alarms since 2026-03-05?")
    assert scoring.answer_grounded(from_prompt) is True
    assert scoring.answer_grounded(episode([], answer="None raised.")) is None
    assert scoring.answer_grounded(episode([], answer=None)) is None


def test_pluggable_text_similarity():
    ref = reference()
    cand = ref.model_copy(update={"final_answer": "Four alarms in total: 4."})
    plugged = scoring.make_answer_similarity(lambda a, b: 1.0)
    lexical = scoring.answer_similarity(ref, cand)
    assert plugged(ref, cand) > lexical
    scores = scoring.score_all(ref, cand, scorers={**scoring.SCORERS, "answer_similarity": plugged})
    assert scores["answer_similarity"] == plugged(ref, cand)
    assert scoring.answer_similarity(ref, cand, text_similarity=lambda a, b: 7.0) <= 1.0  # clipped


def test_failed_call_not_retried_lowers_self_correction():
    ref = reference()
    steps = [(s.call, s.reason) for s in ref.steps]
    failed = call("Bash", {"command": QUERY}, "Error: in prepare, no such column: al.code", error=True)
    given_up = with_steps(ref, [steps[0], (failed, steps[1][1]), steps[2]])
    assert scoring.self_correction(ref, given_up) == 0.0
    fixed = call("Bash", {"command": QUERY.replace("al.code", "al.kind")}, "GEN-2|FAIL_TO_START")
    retried = with_steps(ref, [steps[0], (failed, steps[1][1]), (fixed, "Wrong column; retry."), steps[2]])
    assert scoring.self_correction(ref, retried) == 1.0
    # a reference that corrected itself, and a candidate that never failed: nothing to correct
    assert scoring.self_correction(retried, ref) == 1.0
    assert scoring.self_correction(retried, retried) == 1.0


def test_constraints_kept_and_acknowledged():
    prompt = "Don't change any files. How many alarms did the generators raise?"
    ref = reference().model_copy(update={"prompt": prompt})
    assert scoring.constraint_match(ref, ref) == 1.0
    write = call("Write", {"file_path": "notes.md", "content": "4 alarms"}, "File created")
    breaks = with_steps(ref, [(s.call, s.reason) for s in ref.steps] + [(write, "Save the answer.")])
    assert scoring.constraint_match(ref, breaks) == 0.0
    # the reference says it stays read-only; a candidate that does not say so loses that part
    said = ref.model_copy(deep=True)
    said.steps[0].reason = "I'll keep this read-only and only look at the schema."
    assert scoring.constraint_match(said, said) == 1.0
    assert scoring.constraint_match(said, ref) == 0.5


def test_reasoning_depth_padding_does_not_pay():
    ref = reference()
    padded = ref.model_copy(deep=True)
    for step in padded.steps:
        step.reason = (step.reason or "") + " " + " ".join(f"filler{i}" for i in range(200))
    repeated = ref.model_copy(deep=True)
    for step in repeated.steps:
        step.reason = " ".join([step.reason or ""] * 20)
    silent = ref.model_copy(deep=True)
    for step in silent.steps:
        step.reason = None
    assert scoring.reasoning_depth(ref, padded) < 1.0
    assert scoring.reasoning_depth(ref, repeated) == 1.0  # repeating words adds nothing
    assert scoring.reasoning_depth(ref, silent) == 0.0
    assert scoring.reasoning_depth(silent, silent) == 1.0


def test_parallel_calls_share_one_reason():
    a = call("Grep", {"pattern": "x"}, group=1)
    b = call("Grep", {"pattern": "y"}, group=1)
    ep = episode([(a, "Look for both."), (b, "Look for both.")])
    assert scoring.stated_reasons(ep) == ["Look for both."]


def test_empty_candidate_scores_zero_without_crashing():
    ref = reference()
    empty = episode([], answer=None)
    scores = scoring.score_all(ref, empty)
    assert all(v == 0.0 for v in applicable(scores).values()), scores
    assert scores["argument_similarity"] == 0.0 and scores["answer_similarity"] == 0.0
    silent = episode([], answer="")
    assert all(v == 0.0 for v in applicable(scoring.score_all(ref, silent)).values())
    # an empty reference, and a candidate with failed, malformed and unanswered calls
    weird = episode(
        [
            (call("Bash", {"command": 3}, "<tool_use_error>bad</tool_use_error>", error=True), None),
            (ToolCall(name="Nope", input={"x": [1, {"y": None}]}, status="unanswered"), ""),
        ],
        answer=None,
    )
    for pair in ((ref, weird), (weird, ref), (empty, weird), (weird, empty), (empty, empty)):
        for value in scoring.score_all(*pair).values():
            assert value is None or 0.0 <= value <= 1.0


def test_weighted_sum_skips_parts_that_do_not_apply():
    scores = {"a": 1.0, "b": 0.0, "c": None}
    assert scoring.weighted_sum(scores, {"a": 1, "b": 1, "c": 5}) == 0.5
    assert scoring.weighted_sum(scores, {"a": 2, "b": 1}, normalize=False) == 2.0
    assert scoring.weighted_sum({}, {"a": 1}) == 0.0


# --- properties --------------------------------------------------------------------------------

TOOLS = ("Read", "Grep", "Glob", "Bash", "Edit", "Write")
words = st.sampled_from(
    [
        "SELECT",
        "tag",
        "FROM",
        "alarms",
        "db/schema.sql",
        "'GEN-1'",
        "12",
        "3.5",
        "schema",
        "WHERE",
        "=",
        "*",
        "ok",
    ]
)
text = st.lists(words, max_size=8).map(" ".join)
inputs = st.dictionaries(
    st.sampled_from(["command", "pattern", "file_path", "path", "limit", "description", "content"]),
    st.one_of(text, st.integers(-3, 3), st.booleans(), st.none()),
    max_size=3,
)


@st.composite
def episodes(draw) -> Episode:
    n = draw(st.integers(0, 5))
    calls = []
    for _ in range(n):
        error = draw(st.booleans())
        c = ToolCall(
            name=draw(st.sampled_from(TOOLS)),
            input=draw(inputs),
            output=draw(st.one_of(st.none(), text, st.just("No matches found"))),
            is_error=error,
            status="error" if error else "ok",
            parallel_group=draw(st.one_of(st.none(), st.integers(0, 2))),
            source="runtime",
        )
        calls.append((c, draw(st.one_of(st.none(), text))))
    answer = draw(st.one_of(st.none(), text))
    prompt = draw(st.sampled_from(["Count the alarms.", "Don't change anything; use sqlite3.", "Fix it"]))
    return episode(calls, answer=answer, prompt=prompt)


PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(episodes(), episodes())
def test_scores_are_in_unit_interval(a, b):
    for value in scoring.score_all(a, b).values():
        assert value is None or (0.0 <= value <= 1.0 and not math.isnan(value))


@PROPS
@given(episodes())
def test_identity_scores_one(a):
    assert all(v == 1.0 for v in applicable(scoring.score_all(a, a)).values())


@PROPS
@given(episodes(), episodes())
def test_symmetric_parts(a, b):
    ab, ba = scoring.score_all(a, b), scoring.score_all(b, a)
    for name in ("exact_match", "tool_sequence_similarity", "tool_set_f1", "first_tool_accuracy"):
        assert ab[name] == pytest.approx(ba[name]), name
    if a.steps and b.steps:
        assert ab["argument_similarity"] == pytest.approx(ba["argument_similarity"])
    if (a.steps or (a.final_answer or "").strip()) and (b.steps or (b.final_answer or "").strip()):
        assert ab["reasoning_depth"] == pytest.approx(ba["reasoning_depth"])
    if (a.final_answer or "").strip() and (b.final_answer or "").strip():
        assert ab["answer_similarity"] == pytest.approx(ba["answer_similarity"])
