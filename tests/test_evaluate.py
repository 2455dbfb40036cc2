"""The evaluator with scripted runners on real test rows of the bundled samples: report files,
numbers that recompute, a perfect runner at 1.0, a silent one at 0, splits, charts, references."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from claude_rl import evaluate as ev
from claude_rl import paths, scoring
from claude_rl.dataset import BuildOptions, build_dataset, load_source, samples_traces_dir
from claude_rl.schema import Episode, Provenance

PNG = b"\x89PNG\r\n\x1a\n"
PERFECT_MODEL = object()
LIMIT = 6

pytestmark = pytest.mark.skipif(
    not any(samples_traces_dir().glob("*.jsonl")), reason="data/samples/traces not built"
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    pytest.importorskip("transformers")
    from claude_rl.base_model import _has_tokenizer, base_dir, load_tokenizer

    checkout_home = paths.CHECKOUT_DIR / "data"
    if _has_tokenizer(base_dir(home=checkout_home)):  # read only; nothing is written there
        return load_tokenizer(home=checkout_home)
    return load_tokenizer(home=tmp_path_factory.mktemp("tok-home"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tokenizer) -> Path:
    out = tmp_path_factory.mktemp("ds") / "samples-messages"
    build_dataset(
        BuildOptions(source="samples", out=out), home=tmp_path_factory.mktemp("home"), tokenizer=tokenizer
    )
    return out


@pytest.fixture(scope="module")
def sample_episodes() -> list[Episode]:
    return load_source("samples")[0]


@pytest.fixture(scope="module")
def references(dataset, sample_episodes) -> list[ev.Reference]:
    return ev.load_references(dataset, "test", LIMIT, sample_episodes)


@dataclass
class FakeRun:
    episode: Episode
    stop_reason: str
    messages: list[dict[str, Any]] = field(default_factory=list)


class Perfect:
    """Returns the reference episode, as a runtime run would record it."""

    def __init__(self, refs: list[ev.Reference]) -> None:
        self.by_prompt = {r.episode.prompt: r.episode for r in refs}
        self.workspaces: list[Path] = []
        self.configs: list[Any] = []

    def __call__(self, prompt, model, workspace, config=None, *, session_id=None, **_):
        assert (Path(workspace) / "db" / "command_center.db").is_file()
        (Path(workspace) / "db" / "scratch.txt").write_text("edits land in the copy")
        self.workspaces.append(Path(workspace))
        self.configs.append(config)
        ep = self.by_prompt[prompt].model_copy(deep=True)
        for step in ep.steps:
            step.call.source = "runtime"
        ep = ep.model_copy(update={"session_id": session_id, "episode_id": f"{session_id}:0"})
        turns = [{"role": "assistant"}] * (len(ep.steps) + 1)
        return FakeRun(episode=ep, stop_reason="answer", messages=turns)


def silent(prompt, model, workspace, config=None, *, session_id=None, **_):
    ep = Episode(
        episode_id=f"{session_id}:0",
        session_id=session_id,
        index=0,
        prompt=prompt,
        final_answer="",
        provenance=Provenance(session_id=session_id, sources=["runtime"]),
    )
    return SimpleNamespace(episode=ep, stop_reason="no_tool_call", messages=[{"role": "assistant"}])


@pytest.fixture(scope="module")
def report(tmp_path_factory, references) -> tuple[ev.EvalReport, Perfect, list[str]]:
    out = tmp_path_factory.mktemp("report")
    perfect = Perfect(references)
    written: list[str] = []

    def both(prompt, model, workspace, config=None, **kw):
        return (perfect if model is PERFECT_MODEL else silent)(prompt, model, workspace, config, **kw)

    def writer(run, home=None):
        written.append(run.episode.session_id)
        return Path(home or ".") / "runs" / f"{run.episode.session_id}.jsonl"

    rep = ev.evaluate(
        {"perfect": PERFECT_MODEL, "silent": object()},
        references=references,
        out_dir=out,
        runner=both,
        run_writer=writer,
        name="unit",
        home=tmp_path_factory.mktemp("eval-home"),
        progress=False,
    )
    return rep, perfect, written


# --- references ---------------------------------------------------------------------------------


def test_references_come_from_the_bundled_episodes_and_cover_both_splits(references, dataset):
    assert len(references) == LIMIT
    assert {r.origin for r in references} == {"episode"}
    assert {r.split_reason for r in references} == {"hash", "heldout_template"}
    rows = ev.read_split(dataset, "test")
    ids = {(row["meta"]["episode_id"], row["meta"]["category"]) for row in rows}
    assert {(r.episode.episode_id, r.category) for r in references} <= ids


def test_references_rebuilt_from_messages_when_no_episode_matches(dataset, sample_episodes):
    rebuilt = ev.load_references(dataset, "test", None, episodes=[])
    assert rebuilt and {r.origin for r in rebuilt} == {"messages"}
    index = {e.episode_id: e for e in sample_episodes}
    for ref in rebuilt:
        original = index[ref.episode.episode_id]
        assert ref.episode.prompt == original.prompt
        assert ref.episode.tool_sequence == original.tool_sequence
        assert ref.episode.final_answer == original.final_answer.strip()
        for a, b in zip(ref.episode.steps, original.steps, strict=True):
            assert a.call.input == b.call.input
        # scored against its source episode, the rebuilt one is the same task done the same way
        scores = scoring.score_all(original, ref.episode)
        for name in ("exact_match", "tool_sequence_similarity", "argument_similarity", "answer_similarity"):
            assert scores[name] == 1.0, (ref.episode.episode_id, name)


def test_episode_from_messages_round_trip_and_errors(sample_episodes):
    from claude_rl.chat_format import episode_to_messages

    ep = next(e for e in sample_episodes if any(s.call.is_error for s in e.steps))
    back = ev.episode_from_messages(episode_to_messages(ep), {"episode_id": ep.episode_id})
    assert back.episode_id == ep.episode_id and back.session_id == ep.session_id and back.index == ep.index
    assert [s.call.is_error for s in back.steps] == [s.call.is_error for s in ep.steps]
    assert back.steps[0].reason == ep.steps[0].reason
    # arguments as a JSON string, a call with no result, context turns of a later part skipped
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "old", "train": False, "tool_calls": [{"id": "c0", "function": {}}]},
        {"role": "tool", "tool_call_id": "c0", "content": "[omitted]"},
        {
            "role": "assistant",
            "content": "Look.",
            "tool_calls": [{"id": "c1", "function": {"name": "Grep", "arguments": '{"pattern": "x"}'}}],
        },
        {"role": "assistant", "content": "Done: 3."},
    ]
    e = ev.episode_from_messages(messages)
    assert e.tool_sequence == ["Grep"] and e.steps[0].call.input == {"pattern": "x"}
    assert e.steps[0].call.status == "unanswered" and e.final_answer == "Done: 3."


def test_limit_spreads_over_groups(dataset, sample_episodes):
    every = ev.load_references(dataset, "test", None, sample_episodes)
    assert len(every) == len({row["meta"]["episode_id"] for row in ev.read_split(dataset, "test")})
    two = ev.load_references(dataset, "test", 2, sample_episodes)
    assert {r.split_reason for r in two} == {"hash", "heldout_template"}


# --- the report ---------------------------------------------------------------------------------


def test_report_files_exist_and_charts_are_pngs(report):
    rep, _, _ = report
    out = rep.out_dir
    for name in ("report.json", "report.md", "headline.png", "splits.png", "categories.png"):
        assert (out / name).is_file(), name
    for name in ("headline.png", "splits.png", "categories.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000
    md = (out / "report.md").read_text()
    for heading in ("## Headline", "## Trained shapes vs transfer", "## Per category", "## Per prompt"):
        assert heading in md
    assert "| metric | perfect | silent |" in md
    assert "Grep → Bash" in md  # reference tool sequences in the per-prompt rows
    perfect = rep.summary["perfect"]
    unseen = f"{perfect['answers_mostly_unseen_numbers']} of {perfect['answers_with_numbers']}"
    assert f"| answers made of unseen numbers | {unseen} | 0 of 0 |" in md


def test_report_json_numbers_equal_recomputation(report):
    rep, _, _ = report
    data = json.loads((rep.out_dir / "report.json").read_text())
    assert data["models"] == ["perfect", "silent"]
    assert len(data["prompts"]) == 2 * LIMIT
    for model in data["models"]:
        rows = [p for p in data["prompts"] if p["model"] == model]
        summary = data["summary"][model]
        assert summary["prompts"] == len(rows)
        groups = {"overall": (summary["overall"], rows)}
        for reason, block in summary["by_split"].items():
            groups[reason] = (block["metrics"], [p for p in rows if p["split_reason"] == reason])
            assert block["prompts"] == len(groups[reason][1])
        for category, block in summary["by_category"].items():
            groups[category] = (block["metrics"], [p for p in rows if p["category"] == category])
        for label, (metrics, members) in groups.items():
            for name in scoring.SCORERS:
                values = [p["scores"][name] for p in members if p["scores"][name] is not None]
                stat = metrics[name]
                assert stat["n"] == len(values), (model, label, name)
                if values:
                    assert stat["mean"] == pytest.approx(sum(values) / len(values)), (model, label, name)
                    assert stat["lo"] <= stat["mean"] + 1e-12 <= stat["hi"] + 2e-12
                else:
                    assert stat["mean"] is None
        calls = sum(p["calls"] for p in rows)
        assert summary["calls"] == calls
        assert summary["answers_with_numbers"] == sum(p["answer_grounded"] is not None for p in rows)
        assert summary["answers_mostly_unseen_numbers"] == sum(p["answer_grounded"] is False for p in rows)
        assert summary["mean_turns"] == pytest.approx(sum(p["turns"] for p in rows) / len(rows))
    # the per-prompt scores are score_all of the reference and the written candidate
    candidates = [
        Episode.model_validate_json(line)
        for line in (rep.out_dir / "candidates" / "perfect.jsonl").read_text().splitlines()
    ]
    assert len(candidates) == LIMIT
    assert all(c.meta["eval"]["model"] == "perfect" for c in candidates)


def test_perfect_runner_scores_one_and_silent_runner_zero(report):
    rep, perfect, written = report
    perfect_scores = rep.summary["perfect"]["overall"]
    for name in scoring.SCORERS:
        if perfect_scores[name]["n"]:
            assert perfect_scores[name]["mean"] == 1.0, name
    silent_scores = rep.summary["silent"]["overall"]
    for name in scoring.SCORERS:
        if silent_scores[name]["n"]:
            assert silent_scores[name]["mean"] == pytest.approx(0.0, abs=1e-9), name
    assert rep.summary["perfect"]["valid_call_rate"] == 1.0
    assert rep.summary["silent"]["valid_call_rate"] is None
    assert rep.summary["perfect"]["stop_reasons"] == {"answer": LIMIT}
    assert rep.summary["silent"]["stop_reasons"] == {"no_tool_call": LIMIT}
    assert rep.summary["silent"]["mean_turns"] == 1.0
    # the perfect runner replays the references: their answers are as grounded as the references'
    assert [r.answer_grounded for r in rep.results if r.model == "perfect"] == [
        scoring.answer_grounded(perfect.by_prompt[r.prompt]) for r in rep.results if r.model == "perfect"
    ]
    assert rep.summary["perfect"]["answers_with_numbers"] > 0
    assert rep.summary["silent"]["answers_with_numbers"] == 0
    # fresh workspace copies, edits allowed there only, and every run written
    assert len(set(perfect.workspaces)) == LIMIT and not any(w.exists() for w in perfect.workspaces)
    assert not (ev._default_workspace() / "db" / "scratch.txt").exists()
    assert len(written) == 2 * LIMIT
    assert all(r.run_path for r in rep.results)


def test_per_split_breakdown_present(report):
    rep, _, _ = report
    for model in ("perfect", "silent"):
        splits = rep.summary[model]["by_split"]
        assert list(splits) == ["hash", "heldout_template"]
        assert sum(b["prompts"] for b in splits.values()) == LIMIT
        assert rep.summary[model]["by_category"]


def test_headline_table_lists_models_side_by_side(report):
    rep, _, _ = report
    table = ev.headline_table(rep)
    header = table.splitlines()[0]
    assert header.split() == ["metric", "perfect", "silent"]
    for name in scoring.HEADLINE:
        assert ev.LABELS[name] in table
    assert ev.headline_table(json.loads((rep.out_dir / "report.json").read_text())) == table


def test_a_failing_runner_is_recorded_and_the_rest_still_runs(tmp_path, references):
    perfect = Perfect(references)
    calls = {"n": 0}

    def flaky(prompt, model, workspace, config=None, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("model crashed")
        return perfect(prompt, model, workspace, config, **kw)

    rep = ev.evaluate(
        {"m": object()}, references=references[:3], out_dir=tmp_path / "r", runner=flaky, progress=False
    )
    first, *rest = rep.results
    assert first.error == "RuntimeError: model crashed" and first.stop_reason == "error"
    assert first.scores["tool_sequence_similarity"] == 0.0
    assert all(r.error is None and r.scores["exact_match"] == 1.0 for r in rest)
    assert rep.summary["m"]["errors"] == 1
    assert (tmp_path / "r" / "report.md").is_file()


def test_default_out_dir_is_under_home_reports(data_home, references):
    rep = ev.evaluate({"m": object()}, references=references[:1], runner=silent, progress=True, name="named")
    assert rep.out_dir == data_home / "reports" / "named"
    assert (data_home / "reports" / "named" / "report.json").is_file()


def test_agent_config_gets_edits_allowed():
    @dataclass
    class Config:
        max_turns: int = 8
        allow_edits: bool = False

    assert ev._agent_config(Config()).allow_edits is True
    assert ev._agent_config(Config(max_turns=3)).max_turns == 3


def test_mean_ci_is_deterministic_and_brackets_the_mean():
    values = [0.0, 0.5, 1.0, 1.0, 0.25]
    a, b = ev.mean_ci(values), ev.mean_ci(values)
    assert a == b and a["n"] == 5
    assert a["lo"] <= a["mean"] <= a["hi"]
    assert ev.mean_ci([]) == {"mean": None, "lo": None, "hi": None, "n": 0}
    assert ev.mean_ci([0.3]) == {"mean": 0.3, "lo": 0.3, "hi": 0.3, "n": 1}


# --- behavioral reward, paired differences, reusing a report -------------------------------------


def test_every_run_gets_the_rl_phase_behavioral_reward(report, references):
    from claude_rl.train.reward import Rollout, outcome_similarity, score_rollout

    rep, _, _ = report
    perfect = [r for r in rep.results if r.model == "perfect"]
    silent_rows = [r for r in rep.results if r.model == "silent"]
    # imitating the reference exactly earns the whole reward, doing nothing earns none
    assert all(r.scores[ev.REWARD] == pytest.approx(1.0, abs=1e-3) for r in perfect)
    assert all(r.scores[ev.REWARD] == 0.0 for r in silent_rows)
    assert rep.summary["perfect"]["overall"][ev.REWARD]["n"] == LIMIT
    assert ev.LABELS[ev.REWARD] in ev.headline_table(rep)
    # it is the trainer's own function of the same pair
    lines = (rep.out_dir / "candidates" / "perfect.jsonl").read_text().splitlines()
    for ref, line, row in zip(references, lines, perfect, strict=True):
        candidate = Episode.model_validate_json(line)
        expected = score_rollout(
            ref.episode,
            Rollout(candidate, valid_calls=len(candidate.steps)),
            text_similarity=outcome_similarity("embedding"),
        ).reward
        assert row.scores[ev.REWARD] == pytest.approx(expected)


def test_refused_calls_pay_the_invalid_call_penalty(references):
    from claude_rl.runtime import INVALID_CALL
    from claude_rl.schema import Step, ToolCall
    from claude_rl.train.reward import RewardSettings

    ref = next(r.episode for r in references if len(r.episode.steps) >= 2)
    clean = ev.behavioral_reward(ref, ref)
    bad = ToolCall(
        name=INVALID_CALL,
        input={"_raw": "{broken"},
        output="<tool_use_error>the call could not be parsed</tool_use_error>",
        is_error=True,
        status="error",
        source="runtime",
    )
    steps = [*ref.steps, Step(index=len(ref.steps), reason=None, call=bad)]
    noisy = ref.model_copy(update={"steps": steps})
    assert clean == pytest.approx(1.0, abs=1e-3)
    # the refused call is left out of the scored episode and costs exactly the invalid-call penalty
    assert ev.behavioral_reward(ref, noisy) == pytest.approx(clean - RewardSettings().invalid_call_penalty)


def test_paired_differences_against_the_first_model(report):
    rep, _, _ = report
    paired = rep.summary["paired"]
    assert paired["baseline"] == "perfect" and list(paired["models"]) == ["silent"]
    diffs = paired["models"]["silent"]
    by_id = {(r.model, r.episode_id): r.scores for r in rep.results}
    for name in ev.METRICS:
        values = [
            by_id[("silent", eid)][name] - by_id[("perfect", eid)][name]
            for (model, eid) in by_id
            if model == "perfect"
            and by_id[("silent", eid)][name] is not None
            and by_id[("perfect", eid)][name] is not None
        ]
        assert diffs[name]["n"] == len(values), name
        if values:
            assert diffs[name]["mean"] == pytest.approx(sum(values) / len(values)), name
            assert diffs[name]["lo"] <= diffs[name]["mean"] <= diffs[name]["hi"]
    assert diffs[ev.REWARD]["hi"] < 0  # silent is worse than perfect beyond the noise
    md = (rep.out_dir / "report.md").read_text()
    assert "### Paired differences against `perfect`" in md and "silent − perfect" in md


def test_a_reused_report_is_rescored_not_rerun(report, references, tmp_path):
    rep, _, _ = report

    def never(*_a, **_k):
        raise AssertionError("a reused model must not run")

    again = ev.evaluate(
        {},
        references=references,
        out_dir=tmp_path / "again",
        runner=never,
        reuse=[rep.out_dir],
        progress=False,
    )
    assert again.models == ["perfect", "silent"]
    old = {(r.model, r.episode_id): r for r in rep.results}
    for r in again.results:
        before = old[(r.model, r.episode_id)]
        assert r.scores == pytest.approx(before.scores)
        assert (r.stop_reason, r.turns, r.calls, r.candidate_tools) == (
            before.stop_reason,
            before.turns,
            before.calls,
            before.candidate_tools,
        )
    for name in ("perfect", "silent"):  # the new report carries the runs, so it can be reused too
        copied = (tmp_path / "again" / "candidates" / f"{name}.jsonl").read_text()
        assert copied.count("\n") == LIMIT
    assert any("reused from" in n for n in again.notes)

    # a new model runs after the reused ones; the differences are taken against the chosen baseline
    both = ev.evaluate(
        {"fresh": object()},
        references=references,
        out_dir=tmp_path / "both",
        runner=silent,
        reuse=[tmp_path / "again"],
        baseline="silent",
        progress=False,
    )
    assert both.models == ["perfect", "silent", "fresh"]
    assert both.summary["paired"]["baseline"] == "silent"
    assert both.summary["paired"]["models"]["fresh"][ev.REWARD]["mean"] == 0.0
    assert both.summary["paired"]["models"]["perfect"][ev.REWARD]["lo"] > 0


def test_reuse_refuses_other_prompts_twice_named_models_and_unknown_baselines(report, references, tmp_path):
    rep, _, _ = report
    with pytest.raises(ev.EvalError, match="another split or dataset"):
        extra = references[0].episode.model_copy(update={"episode_id": "not-in-the-report:0"})
        ev.evaluate(
            {},
            references=[*references, ev.Reference(extra, references[0].meta, "episode")],
            out_dir=tmp_path / "a",
            reuse=[rep.out_dir],
            progress=False,
        )
    with pytest.raises(ev.EvalError, match="named twice"):
        ev.evaluate(
            {"silent": object()},
            references=references,
            out_dir=tmp_path / "b",
            runner=silent,
            reuse=[rep.out_dir],
            progress=False,
        )
    with pytest.raises(ev.EvalError, match="baseline"):
        ev.evaluate(
            {},
            references=references,
            out_dir=tmp_path / "c",
            reuse=[rep.out_dir],
            baseline="x",
            progress=False,
        )
    with pytest.raises(ev.EvalError, match="no report.json"):
        ev.evaluate({}, references=references, out_dir=tmp_path / "d", reuse=[tmp_path], progress=False)


def test_a_model_in_two_reused_reports_is_taken_once_when_its_runs_agree(report, references, tmp_path):
    rep, perfect, _ = report
    twice = ev.evaluate(
        {},
        references=references,
        out_dir=tmp_path / "twice",
        reuse=[rep.out_dir, rep.out_dir],
        progress=False,
    )
    assert twice.models == ["perfect", "silent"] and len(twice.results) == 2 * LIMIT

    def perfect_runner(prompt, model, workspace, config=None, **kw):
        return perfect(prompt, model, workspace, config, **kw)

    # "silent" again, but with other runs: refused rather than silently merged
    ev.evaluate(
        {"silent": object()},
        references=references,
        out_dir=tmp_path / "other",
        runner=perfect_runner,
        progress=False,
    )
    with pytest.raises(ev.EvalError, match="reused twice with other runs"):
        ev.evaluate(
            {},
            references=references,
            out_dir=tmp_path / "x",
            reuse=[rep.out_dir, tmp_path / "other"],
            progress=False,
        )


def test_controls_pair_a_model_against_their_mean_per_prompt(report, references, tmp_path):
    """Null controls: one as silent as the baseline, one as perfect as the model: their mean is
    halfway, so the model's lead over the controls is half its lead over the baseline."""
    rep, perfect, _ = report

    def by_model(prompt, model, workspace, config=None, **kw):
        return (perfect if model is PERFECT_MODEL else silent)(prompt, model, workspace, config, **kw)

    out = ev.evaluate(
        {"ctrl-silent": object(), "ctrl-perfect": PERFECT_MODEL},
        references=references,
        out_dir=tmp_path / "controls",
        runner=by_model,
        reuse=[rep.out_dir],
        baseline="silent",
        controls=["ctrl-silent", "ctrl-perfect"],
        progress=False,
    )
    against = out.summary["against_controls"]
    assert against["controls"] == ["ctrl-silent", "ctrl-perfect"]
    assert list(against["models"]) == ["perfect"]  # not the baseline, not the controls
    lead = out.summary["paired"]["models"]["perfect"][ev.REWARD]["mean"]
    assert lead > 0.3
    vs_controls = against["models"]["perfect"][ev.REWARD]
    assert vs_controls["n"] == LIMIT and vs_controls["mean"] == pytest.approx(lead / 2)
    assert vs_controls["lo"] <= vs_controls["mean"] <= vs_controls["hi"]
    md = (tmp_path / "controls" / "report.md").read_text()
    assert "### Against the null controls" in md and "perfect − controls" in md
    assert json.loads((tmp_path / "controls" / "report.json").read_text())["summary"]["against_controls"]
    (line,) = ev.against_controls_lines(out)
    assert line.startswith("perfect − the controls' mean, behavioral reward: +")

    kwargs = dict(references=references, runner=by_model, reuse=[rep.out_dir], progress=False)
    with pytest.raises(ev.EvalError, match="not one of the models"):
        ev.evaluate({"c": object()}, out_dir=tmp_path / "a", controls=["nope"], **kwargs)
    with pytest.raises(ev.EvalError, match="cannot also be a control"):
        ev.evaluate({"c": object()}, out_dir=tmp_path / "b", baseline="silent", controls=["silent"], **kwargs)


def _cli_home(rep: ev.EvalReport, dataset: Path, tmp_path: Path, monkeypatch) -> Path:
    """A home whose datasets/ holds the report's dataset, set as CLAUDE_RL_HOME."""
    home = tmp_path / "home"
    (home / "datasets").mkdir(parents=True)
    (home / "datasets" / rep.dataset).symlink_to(dataset, target_is_directory=True)
    monkeypatch.setenv("CLAUDE_RL_HOME", str(home))
    return home


def test_cli_compares_reused_runs_without_running_a_model(report, dataset, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from claude_rl.cli import app

    rep, _, _ = report
    _cli_home(rep, dataset, tmp_path, monkeypatch)
    out = tmp_path / "cli-report"
    args = ["eval", "--models", "none", "--reuse", str(rep.out_dir), "--baseline", "silent"]
    result = CliRunner().invoke(app, [*args, "--limit", str(LIMIT), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "behavioral reward" in result.output
    data = json.loads((out / "report.json").read_text())
    assert data["models"] == ["perfect", "silent"]
    assert data["summary"]["paired"]["baseline"] == "silent"
    assert data["summary"]["paired"]["models"]["perfect"][ev.REWARD]["mean"] > 0.9
    bad = CliRunner().invoke(app, ["eval", "--models", "none", "--reuse", str(tmp_path / "nowhere")])
    assert bad.exit_code == 1 and "no report.json" in " ".join(bad.output.split())
    alone = CliRunner().invoke(app, ["eval", "--models", "none"])
    assert alone.exit_code == 1 and "--reuse" in " ".join(alone.output.split())


# --- the prompts an RL run practised --------------------------------------------------------------


def _rl_run(folder: Path, ids: list[str]) -> Path:
    folder.mkdir(parents=True)
    rows = [{"batch": 0, "group": i // 2, "reference": eid, "reward": 0.5} for i, eid in enumerate(ids * 2)]
    (folder / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_practised_prompts_reads_a_runs_rollouts_by_name_or_folder(tmp_path):
    home = tmp_path / "home"
    run = _rl_run(paths.models_dir(home) / "llama-claude-ppo-v3", ["a:0", "b:1", "a:0"])
    assert ev.practised_prompts(run) == {"a:0", "b:1"}
    assert ev.practised_prompts("llama-claude-ppo-v3", home) == {"a:0", "b:1"}
    with pytest.raises(ev.EvalError, match="no rollouts.jsonl here or under"):
        ev.practised_prompts("llama-claude-bc-v1", home)
    (run / "rollouts.jsonl").write_text('{"reference": "a:0"}\n{"batch": 1}\n')
    with pytest.raises(ev.EvalError, match=r"rollouts.jsonl:2: not a scored rollout"):
        ev.practised_prompts(run)
    (run / "rollouts.jsonl").write_text("\n")
    with pytest.raises(ev.EvalError, match="has no rollouts"):
        ev.practised_prompts(run)


def test_only_and_leave_out_choose_the_prompts_before_the_limit(references, tmp_path):
    ids = [r.episode.episode_id for r in references]
    picked = ev.select_references(references, only=ids[:3], leave_out=[ids[1]])
    assert [r.episode.episode_id for r in picked] == [ids[0], ids[2]]
    assert ev.select_references(references) == references

    rep = ev.evaluate(
        {"silent": object()},
        references=references,
        only=ids[:4],
        leave_out=[ids[0]],
        limit=2,
        extra_notes=["why these"],
        out_dir=tmp_path / "chosen",
        runner=silent,
        progress=False,
    )
    assert {r.episode_id for r in rep.results} <= set(ids[1:4]) and len(rep.results) == 2
    assert rep.notes[:2] == ["why these", f"2 of the test split's {LIMIT} prompts chosen"]
    with pytest.raises(ev.EvalError, match="no chosen prompts"):
        ev.evaluate({"silent": object()}, references=references, only=[], runner=silent, progress=False)


def test_cli_evaluates_the_prompts_a_run_practised_or_never_saw(report, dataset, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from claude_rl.cli import app

    rep, _, _ = report
    home = _cli_home(rep, dataset, tmp_path, monkeypatch)
    reused = [r.episode_id for r in rep.results if r.model == "perfect"]
    every = [r.episode.episode_id for r in ev.load_references(dataset, "test")]
    _rl_run(paths.models_dir(home) / "llama-claude-ppo-v1", reused[:2])
    _rl_run(tmp_path / "other-run", [e for e in every if e not in reused[2:5]])
    base = ["eval", "--models", "none", "--reuse", str(rep.out_dir)]

    out = tmp_path / "practised"
    result = CliRunner().invoke(app, [*base, "--practised-by", "llama-claude-ppo-v1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "report.json").read_text())
    assert sorted({p["episode_id"] for p in data["prompts"]}) == sorted(reused[:2])
    assert "only the 2 prompts practised by llama-claude-ppo-v1 (RL rollouts)" in data["notes"]

    # the complement of two runs' prompts: the reused report's runs cover exactly what is left
    out = tmp_path / "unseen"
    gone = f"llama-claude-ppo-v1,{tmp_path / 'other-run'}"
    result = CliRunner().invoke(app, [*base, "--not-practised-by", gone, "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "report.json").read_text())
    assert sorted({p["episode_id"] for p in data["prompts"]}) == sorted(reused[2:5])

    bad = CliRunner().invoke(app, [*base, "--practised-by", "llama-claude-ppo-v9"])
    assert bad.exit_code == 1 and "not an RL run" in " ".join(bad.output.split())


# --- several sampled runs per prompt -------------------------------------------------------------------


class Coin:
    """A model the evaluator reseeds before each sampled run; the runner below answers like the
    reference when the seed is even and says nothing when it is odd."""

    def __init__(self) -> None:
        self.seeds: list[int] = []

    def reseed(self, seed: int) -> None:
        self.seeds.append(seed)


def test_sampled_runs_are_averaged_per_prompt_and_drawn_alike_for_every_model(references, tmp_path):
    perfect = Perfect(references)

    def runner(prompt, model, workspace, config=None, **kw):
        if isinstance(model, Coin):
            return (perfect if model.seeds[-1] % 2 == 0 else silent)(prompt, model, workspace, config, **kw)
        return silent(prompt, model, workspace, config, **kw)

    a, b = Coin(), Coin()
    rep = ev.evaluate(
        {"a": a, "b": b, "mute": object()},
        references=references,
        samples=3,
        temperature=0.5,
        out_dir=tmp_path / "sampled",
        runner=runner,
        progress=False,
    )
    ids = [r.episode.episode_id for r in references]
    assert a.seeds == b.seeds == [ev.sample_seed(e, j) for e in ids for j in range(3)]
    assert len(set(a.seeds)) == len(a.seeds)
    assert len(rep.results) == 3 * 3 * LIMIT and {r.sample for r in rep.results} == {0, 1, 2}
    summary = rep.summary["a"]
    assert (summary["prompts"], summary["runs"]) == (LIMIT, 3 * LIMIT)
    # per prompt: the share of even seeds among its three draws, scored 1 (perfect) or 0 (silent)
    share = {e: sum(ev.sample_seed(e, j) % 2 == 0 for j in range(3)) / 3 for e in ids}
    means = ev.prompt_means(r for r in rep.results if r.model == "a")
    assert {e: m["tool_sequence_similarity"] for e, m in means.items()} == pytest.approx(share)
    overall = summary["overall"]["tool_sequence_similarity"]
    assert overall["n"] == LIMIT and overall["mean"] == pytest.approx(sum(share.values()) / LIMIT)
    paired = rep.summary["paired"]["models"]["mute"]["tool_sequence_similarity"]
    assert paired["n"] == LIMIT and paired["mean"] == pytest.approx(-overall["mean"])
    assert rep.summary["paired"]["models"]["b"]["tool_sequence_similarity"]["mean"] == 0.0
    data = json.loads((tmp_path / "sampled" / "report.json").read_text())
    assert data["decoding"] == {"samples": 3, "temperature": 0.5}
    assert "3 samples per prompt at temperature 0.5" in (tmp_path / "sampled" / "report.md").read_text()

    # reused in an evaluation that decodes the same way: every sample rescored, none run again
    again = ev.evaluate(
        {}, references=references, samples=3, temperature=0.5, reuse=[tmp_path / "sampled"], progress=False
    )

    def rounded(results):
        return {
            (r.model, r.episode_id, r.sample): {k: v and round(v, 9) for k, v in r.scores.items()}
            for r in results
        }

    assert rounded(again.results) == rounded(rep.results)
    # ... and refused where the decoding differs: greedy runs are not samples
    with pytest.raises(ev.EvalError, match="decoded with 3 samples per prompt at temperature 0.5, this "):
        ev.evaluate({}, references=references, reuse=[tmp_path / "sampled"], progress=False)


def test_greedy_reports_stay_greedy_and_bad_decodings_are_refused(report, references):
    rep, _, _ = report
    assert rep.decoding == ev.GREEDY and {r.sample for r in rep.results} == {0}
    assert "Greedy decoding." in (rep.out_dir / "report.md").read_text()
    for samples, temperature, message in ((2, 0.0, "need a temperature above 0"), (0, 0.3, "at least 1")):
        with pytest.raises(ev.EvalError, match=message):
            ev.evaluate({"m": object()}, references=references, samples=samples, temperature=temperature)
    with pytest.raises(ev.EvalError, match="greedy decoding, this evaluation with 2 samples"):
        ev.evaluate({}, references=references, samples=2, temperature=0.3, reuse=[rep.out_dir])
