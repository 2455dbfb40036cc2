"""``claude-rl probe`` on a tiny random Llama: a "run" made by real policy-gradient steps on its own
scored rollouts (rollouts that beat their group pushed up, the others down) must show a positive
reward alignment beyond its interval, its negated control a negative one; the held-out change in
NLL is recomputed here from fresh model loads, not read back from the module."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_export_fixtures import small_tokenizer, tiny_llama  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from claude_rl.chat_format import assistant_mask  # noqa: E402
from claude_rl.train import control, grpo, probe  # noqa: E402

SYSTEM = {"role": "system", "content": "You are a coding agent."}
PROMPTS = {
    "ep-a:0": "How many tests are in tests/test_app.py?",
    "ep-b:0": "Where does this project load its configuration file?",
}
UNSEEN = {"ep-z:0": "Which file sets the log level?"}  # a train prompt only another run sampled


def _call(name: str, args: dict, call_id: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def _completion(i: int) -> list[dict]:
    """Four different workflows: a call, its result, an answer."""
    calls = [
        ("Grep", {"pattern": "^def test_", "path": "tests/test_app.py"}),
        ("Read", {"file_path": "setup.cfg", "limit": 40}),
        ("Bash", {"command": "make test"}),
        ("Glob", {"pattern": "**/*.toml"}),
    ]
    name, args = calls[i]
    return [
        {
            "role": "assistant",
            "content": f"Step {i}: I will look.",
            "tool_calls": [_call(name, args, f"c{i}")],
        },
        {"role": "tool", "tool_call_id": f"c{i}", "content": f"result {i}\nline two"},
        {"role": "assistant", "content": ["Three tests.", "It is setup.cfg.", "Not sure.", "Nothing."][i]},
    ]


ADVANTAGES = [0.3, 0.1, -0.1, -0.3]  # reward less the group's mean, as GRPO's


def _rows(episodes: dict[str, str]) -> list[dict]:
    return [
        {
            "messages": [SYSTEM, {"role": "user", "content": text}, *_completion(k % 4)],
            "tools": None,
            "meta": {"episode_id": eid, "part": 0},
        }
        for k, (eid, text) in enumerate(episodes.items())
    ]


def _sequence(tok, messages) -> tuple[list[int], list[int]]:
    ids = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    return list(ids), list(assistant_mask(tok, messages, None))


def _mean_logp(model, ids, mask):
    x = torch.tensor([ids])
    logp = torch.log_softmax(model(x).logits[0, :-1], -1).gather(1, x[0, 1:, None])[:, 0]
    keep = torch.tensor(mask[1:], dtype=torch.bool)
    return logp[keep].mean()


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """<home>/models/{sft, llama-claude-ppo-v1 (trained on its rollouts), ctrl-v1, ctrl-v2}."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("probe-home")
    tok = small_tokenizer(root / "tok")
    sft = tiny_llama(root / "models" / "sft", tok)
    ds = root / "datasets" / "tiny"
    ds.mkdir(parents=True)
    (ds / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows({**PROMPTS, **UNSEEN})))
    held_out = {
        "ep-c:0": "Is the build green?",
        "ep-d:0": "What does setup.cfg say?",
        "ep-e:0": "List files.",
    }
    (ds / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(held_out)))

    rollouts = []
    for batch, eid in enumerate(PROMPTS):
        for i, adv in enumerate(ADVANTAGES):
            rollouts.append(
                {"batch": batch, "group": 0, "reference": eid, "advantage": adv, "completion": _completion(i)}
            )
    run = root / "models" / "llama-claude-ppo-v1"
    run.mkdir(parents=True)
    (run / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rollouts))

    # the run: policy-gradient steps on exactly these rollouts (advantage-weighted log-likelihood)
    model = AutoModelForCausalLM.from_pretrained(str(sft), dtype=torch.float32)
    seqs = [
        _sequence(tok, [SYSTEM, {"role": "user", "content": PROMPTS[r["reference"]]}, *r["completion"]])
        for r in rollouts
    ]
    opt = torch.optim.SGD([p for n, p in model.named_parameters() if "proj" in n], lr=0.05)
    for _ in range(8):
        opt.zero_grad()
        loss = -sum(r["advantage"] * _mean_logp(model, *s) for r, s in zip(rollouts, seqs, strict=True))
        loss.backward()
        opt.step()
    model.save_pretrained(str(run / "merged"))
    tok.save_pretrained(str(run / "merged"))
    manifest = {
        "name": run.name,
        "phase": "ppo",
        "base_model_folder": str(sft),
        "sft_run": {"folder": str(sft), "name": "sft"},
        "dataset": {"folder": str(ds), "split": "train"},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    control.make_controls(run.name, kinds=["random", "negated"], seeds=[1], rank=2, home=root)

    # another run's rollouts: the same four workflows after a prompt this run trained on (left out)
    # and after one it never saw (scored)
    other = root / "models" / "llama-claude-ppo-v2"
    shutil.copytree(sft, other / "merged")
    (other / "manifest.json").write_text(json.dumps({**manifest, "name": other.name}))
    (other / "rollouts.jsonl").write_text(
        "".join(
            json.dumps(
                {"batch": 0, "group": g, "reference": eid, "advantage": adv, "completion": _completion(i)}
            )
            + "\n"
            for g, eid in enumerate(["ep-a:0", *UNSEEN])
            for i, adv in enumerate(ADVANTAGES)
        )
    )
    return root


@pytest.fixture(scope="module")
def result(home) -> dict:
    return probe.probe(
        "llama-claude-ppo-v1",
        ["llama-claude-ctrl-v1", "llama-claude-ctrl-v2"],
        other_runs=["llama-claude-ppo-v2"],
        home=home,
    )


def test_a_run_trained_on_its_rollouts_aligns_with_their_advantages(result):
    run = result["models"]["llama-claude-ppo-v1"]
    assert run["role"] == "run" and result["rollouts"] == 8 and result["rows"] == 3
    a = run["reward_alignment"]
    assert a["groups"] == 2 and a["covariance"]["lo"] > 0
    assert a["pearson"] > 0.5 and a["above_group"] > a["below_group"]
    # the negated control (SFT minus the run's update) undoes it
    neg = result["models"]["llama-claude-ctrl-v2"]["reward_alignment"]
    assert neg["covariance"]["hi"] < 0
    assert result["models"]["llama-claude-ctrl-v1"]["role"] == "control"


def test_unseen_alignment_scores_only_prompts_the_run_never_trained_on(result):
    assert result["other_runs"] == ["llama-claude-ppo-v2"]
    assert (result["unseen_rollouts"], result["unseen_prompts"]) == (4, 1)  # ep-a's four left out
    # the same workflows, better and worse in the same order, after a new prompt: the run's
    # preference carries over, the negated control's is reversed
    run = result["models"]["llama-claude-ppo-v1"]["unseen_alignment"]
    assert run["groups"] == 1 and run["covariance"]["mean"] > 0 and run["pearson"] > 0.5
    assert result["models"]["llama-claude-ctrl-v2"]["unseen_alignment"]["covariance"]["mean"] < 0
    assert "unseen_alignment" in result["against_controls"]


def test_against_controls_is_the_run_less_the_random_controls_mean(result):
    # the negated control is reported but not averaged: it is the run's update reversed, not a null
    assert result["controls"] == ["llama-claude-ctrl-v1"]
    assert result["negated_controls"] == ["llama-claude-ctrl-v2"]
    assert result["models"]["llama-claude-ctrl-v2"]["role"] == "negated control"
    models, ac = result["models"], result["against_controls"]
    run, ctrl = models["llama-claude-ppo-v1"], models["llama-claude-ctrl-v1"]
    want = run["heldout_nll_change"]["mean"] - ctrl["heldout_nll_change"]["mean"]
    assert ac["heldout_nll_change"]["mean"] == pytest.approx(want)
    for key in ("reward_alignment", "unseen_alignment"):
        want = run[key]["covariance"]["mean"] - ctrl[key]["covariance"]["mean"]
        assert ac[key]["mean"] == pytest.approx(want)


def test_heldout_nll_change_recomputed_from_fresh_loads(home, result):
    from transformers import AutoModelForCausalLM

    tok = grpo.chat_tokenizer(home / "models" / "sft")
    rows = [json.loads(x) for x in (home / "datasets" / "tiny" / "test.jsonl").read_text().splitlines()]
    a = AutoModelForCausalLM.from_pretrained(str(home / "models" / "llama-claude-ppo-v1" / "merged")).eval()
    b = AutoModelForCausalLM.from_pretrained(str(home / "models" / "sft")).eval()
    with torch.no_grad():
        changes = [
            float(
                _mean_logp(b, *_sequence(tok, r["messages"])) - _mean_logp(a, *_sequence(tok, r["messages"]))
            )
            for r in rows
        ]
    stat = result["models"]["llama-claude-ppo-v1"]["heldout_nll_change"]
    assert stat["n"] == 3 and stat["mean"] == pytest.approx(sum(changes) / 3, rel=1e-4, abs=1e-6)
    assert stat["mean"] != 0


def test_reward_alignment_on_constructed_changes():
    seq = probe.Scored([0, 1], [0, 1])
    rollouts = [probe.Rollout(seq, a, (0, 0)) for a in (0.5, -0.5)] + [
        probe.Rollout(seq, a, (1, 0)) for a in (0.2, -0.2)
    ]
    got = probe.reward_alignment([0.1, -0.1, -0.3, 0.3], rollouts)
    assert got["per_group"] == pytest.approx([0.05, -0.06])
    assert got["covariance"]["mean"] == pytest.approx(-0.005)
    assert got["above_group"] == pytest.approx(-0.1) and got["below_group"] == pytest.approx(0.1)
    assert probe.per_token_change([(-2.0, 4), (-3.0, 3)], [(-4.0, 4), (-3.0, 3)]) == [0.5, 0.0]


def test_refuses_a_run_without_rollouts_a_foreign_control_and_an_unmoved_model(home, tmp_path):
    with pytest.raises(control.ControlError, match="rollouts.jsonl"):
        probe.probe("llama-claude-ctrl-v1", home=home)  # a control keeps no rollouts
    other = home / "models" / "llama-claude-ctrl-v9"
    shutil.copytree(home / "models" / "llama-claude-ctrl-v1", other)
    m = json.loads((other / "manifest.json").read_text())
    shutil.copytree(home / "models" / "sft", tmp_path / "another-sft")  # a model, but another one
    m["base_model_folder"] = str(tmp_path / "another-sft")
    (other / "manifest.json").write_text(json.dumps(m))
    try:
        with pytest.raises(control.ControlError, match="not comparable"):
            probe.probe("llama-claude-ppo-v1", [other.name], home=home)
        shutil.rmtree(other / "merged")
        shutil.copytree(home / "models" / "sft", other / "merged")
        m["base_model_folder"] = str(home / "models" / "sft")
        (other / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(control.ControlError, match="nothing to probe"):
            probe.probe("llama-claude-ppo-v1", [other.name], home=home)
        for block in ("random", {"kind": "shuffled"}, None):  # not a control `claude-rl control` made
            (other / "manifest.json").write_text(json.dumps({**m, "control": block}))
            with pytest.raises(control.ControlError, match="not a null control"):
                probe.probe("llama-claude-ppo-v1", [other.name], home=home)
    finally:
        shutil.rmtree(other)


def test_cli_writes_the_json_and_prints_the_table(home, monkeypatch):
    from claude_rl.cli import app

    monkeypatch.setenv("CLAUDE_RL_HOME", str(home))
    out = home / "probe-out.json"
    res = CliRunner().invoke(
        app, ["probe", "llama-claude-ppo-v1", "--controls", "llama-claude-ctrl-v1", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    written = json.loads(out.read_text())
    assert written["controls"] == ["llama-claude-ctrl-v1"] and "against_controls" in written
    assert "run − controls' mean" in res.output and "llama-claude-ppo-v1 (run)" in res.output
    bad = CliRunner().invoke(app, ["probe", "no-such-run"])
    assert bad.exit_code == 1
