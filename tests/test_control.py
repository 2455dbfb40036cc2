"""Null controls (``claude-rl control``) on a tiny random Llama and a hand-made "RL run" of it: the
random control moves the same matrices, at low rank, to the run's KL; the negated one is the SFT
model minus the run's update; both are run folders the export takes; the KL is recomputed here
from the written weights, not read back from the module."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_export_fixtures import small_tokenizer, tiny_llama  # noqa: E402

from claude_rl.export import prompts  # noqa: E402
from claude_rl.export.source import is_run_folder  # noqa: E402
from claude_rl.train import control, grpo  # noqa: E402

CHANGED = ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight")


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in control.read_weights(folder).items()}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """<home>/models/{sft, llama-claude-ppo-v1} and a dataset of conversations with assistant turns."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("control-home")
    tok = small_tokenizer(root / "tok")
    sft = tiny_llama(root / "models" / "sft", tok)
    rows = [
        {"messages": messages, "tools": json.dumps(tools) if tools else None}
        for _name, messages, tools, _gen in prompts.CONVERSATIONS
        if any(m["role"] == "assistant" for m in messages)
    ]
    assert len(rows) >= 2
    ds = root / "datasets" / "tiny"
    ds.mkdir(parents=True)
    (ds / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    run = root / "models" / "llama-claude-ppo-v1"
    model = AutoModelForCausalLM.from_pretrained(str(sft), dtype=torch.float32)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name in CHANGED:  # a rank-2 "update" in two matrices, as LoRA would leave
            w = params[name]
            delta = torch.randn(w.shape[0], 2, generator=gen) @ torch.randn(2, w.shape[1], generator=gen)
            w.add_(0.02 * delta)
    model.save_pretrained(str(run / "merged"))
    tok.save_pretrained(str(run / "merged"))
    manifest = {
        "name": run.name,
        "phase": "ppo",
        "base_model": "tiny",
        "base_model_folder": str(sft),
        "sft_run": {"folder": str(sft), "name": "sft"},
        "dataset": {"folder": str(ds), "split": "train", "max_tool_tokens": 64},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def made(home) -> list[control.Control]:
    return control.make_controls(
        "llama-claude-ppo-v1", kinds=["random", "negated"], seeds=[1, 2], rank=2, home=home
    )


def _kl(moved: Path, base: Path, sequences) -> float:
    """Mean per-token KL(moved ‖ base) over the assistant tokens, computed from scratch."""
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(str(moved), dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, mask in sequences:
            x = torch.tensor([ids])
            p = torch.log_softmax(a(x).logits[0, :-1], -1)
            q = torch.log_softmax(b(x).logits[0, :-1], -1)
            for t, keep in enumerate(mask[1:]):
                if keep:
                    total += float((p[t].exp() * (p[t] - q[t])).sum())
                    count += 1
    return total / count


def test_controls_are_numbered_run_folders_the_export_takes(home, made):
    assert [c.folder.name for c in made] == [f"llama-claude-ctrl-v{n}" for n in (1, 2, 3)]
    assert [(c.kind, c.seed) for c in made] == [("random", 1), ("random", 2), ("negated", None)]
    assert not list((home / "models").glob(".tmp-*"))
    for c in made:
        assert is_run_folder(c.folder)
        assert (c.folder / "merged" / "tokenizer.json").is_file()
        m = json.loads((c.folder / "manifest.json").read_text())
        assert m["name"] == c.folder.name and m["phase"] == "control"
        assert m["control"]["kind"] == c.kind and m["control"]["run"]["name"] == "llama-claude-ppo-v1"
        # the runtime cuts tool results as the run's model learned them: the run's dataset is carried
        assert m["dataset"]["max_tool_tokens"] == 64
        assert m["control"]["kl"] == pytest.approx(c.kl) and m["control"]["run_kl"] == pytest.approx(c.run_kl)
        assert m["control"]["dtype"] == "float32"  # the run's precision


def test_random_controls_move_the_same_matrices_at_low_rank_to_the_runs_kl(home, made):
    sft = _weights(home / "models" / "sft")
    run = _weights(home / "models" / "llama-claude-ppo-v1" / "merged")
    tok = grpo.chat_tokenizer(home / "models" / "sft")
    sequences = control.calibration_sequences(tok, home / "datasets" / "tiny", 14, 1024)
    run_kl = _kl(home / "models" / "llama-claude-ppo-v1" / "merged", home / "models" / "sft", sequences)
    deltas = []
    for c in made[:2]:
        assert c.run_kl == pytest.approx(run_kl, rel=1e-4)
        assert abs(c.kl - run_kl) <= control.KL_TOLERANCE * run_kl
        # recomputed from the written weights
        assert _kl(c.folder / "merged", home / "models" / "sft", sequences) == pytest.approx(c.kl, rel=1e-3)
        moved = _weights(c.folder / "merged")
        changed = {k for k in sft if not torch.equal(moved[k], sft[k])}
        assert changed == set(CHANGED)
        for name in CHANGED:
            d = moved[name] - sft[name]
            assert int(torch.linalg.matrix_rank(d, rtol=1e-4)) <= 2
            # every matrix scaled by the same factor from the run's per-matrix norm
            ratio = float(d.norm() / (run[name] - sft[name]).norm())
            assert ratio == pytest.approx(c.scale, rel=1e-3)
        deltas.append(moved[CHANGED[0]] - sft[CHANGED[0]])
        # not the run's direction
        cos = torch.nn.functional.cosine_similarity(
            deltas[-1].flatten(), (run[CHANGED[0]] - sft[CHANGED[0]]).flatten(), dim=0
        )
        assert abs(float(cos)) < 0.5
    assert not torch.allclose(deltas[0], deltas[1])  # seeds give other directions


def test_the_negated_control_is_the_sft_model_minus_the_runs_update(home, made):
    sft = _weights(home / "models" / "sft")
    run = _weights(home / "models" / "llama-claude-ppo-v1" / "merged")
    neg = made[2]
    moved = _weights(neg.folder / "merged")
    for name in sft:
        assert torch.allclose(moved[name], 2 * sft[name] - run[name], atol=1e-6), name
    assert neg.scale == -1.0
    # the same size of move: KL equal to second order
    assert neg.kl == pytest.approx(neg.run_kl, rel=0.25)


def test_control_errors_say_what_is_wrong(home, tmp_path):
    with pytest.raises(control.ControlError, match="no run folder"):
        control.make_controls("llama-claude-ppo-v9", home=home)
    with pytest.raises(control.ControlError, match="expected some of random, negated"):
        control.make_controls("llama-claude-ppo-v1", kinds=["shuffled"], home=home)
    with pytest.raises(control.ControlError, match="at least one seed"):
        control.make_controls("llama-claude-ppo-v1", seeds=[], home=home)
    same = home / "models" / "llama-claude-ppo-v2"
    shutil.copytree(home / "models" / "sft", same / "merged")
    manifest = json.loads((home / "models" / "llama-claude-ppo-v1" / "manifest.json").read_text())
    (same / "manifest.json").write_text(json.dumps({**manifest, "name": same.name}))
    try:
        with pytest.raises(control.ControlError, match="nothing to match"):
            control.make_controls(same, home=home)
        (same / "manifest.json").write_text(json.dumps({**manifest, "dataset": {"folder": str(tmp_path)}}))
        with pytest.raises(control.ControlError, match="no train.jsonl"):
            control.make_controls(same, home=home)
    finally:
        shutil.rmtree(same)


def test_cli_makes_a_control_and_says_how_to_evaluate_it(home, made, monkeypatch):
    from typer.testing import CliRunner

    from claude_rl.cli import app

    monkeypatch.setenv("CLAUDE_RL_HOME", str(home))
    result = CliRunner().invoke(
        app, ["control", "llama-claude-ppo-v1", "--kinds", "random,negated", "--seeds", "7", "--rank", "1"]
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # rich wraps long lines
    # eval averages the random control only; probe takes both (it sets the negated one apart)
    assert "Wrote" in said and "--controls llama-claude-ctrl-v4 and" in said
    assert "claude-rl probe llama-claude-ppo-v1 --controls llama-claude-ctrl-v4,llama-claude-ctrl-v5" in said
    m = json.loads((home / "models" / "llama-claude-ctrl-v4" / "manifest.json").read_text())
    assert (m["control"]["seed"], m["control"]["rank"]) == (7, 1)
    bad = CliRunner().invoke(app, ["control", "llama-claude-ppo-v1", "--seeds", "x"])
    assert bad.exit_code == 2 and "comma-separated integers" in bad.output


def test_a_bf16_run_gets_bf16_controls(home, tmp_path):
    """An 8B run merged in bf16 gets controls in bf16 (not float32, twice the disk), rounded as the
    run's own weights were."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    source = home / "models" / "llama-claude-ppo-v1"
    run, sft_folder = tmp_path / "models" / source.name, tmp_path / "models" / "sft"
    for src, dst in ((source / "merged", run / "merged"), (home / "models" / "sft", sft_folder)):
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model*.safetensors*"))
        AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.bfloat16).save_pretrained(str(dst))
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["base_model_folder"] = manifest["sft_run"]["folder"] = str(sft_folder)
    (run / "manifest.json").write_text(json.dumps(manifest))
    (neg,) = control.make_controls(run.name, kinds=["negated"], home=tmp_path)
    with safe_open(str(neg.folder / "merged" / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    assert json.loads((neg.folder / "merged" / "config.json").read_text())["dtype"] == "bfloat16"
    assert json.loads((neg.folder / "manifest.json").read_text())["control"]["dtype"] == "bfloat16"
    sft, moved = _weights(sft_folder), _weights(run / "merged")
    written = control.read_weights(neg.folder / "merged")
    for name in CHANGED:  # SFT − (run − SFT), then rounded once to bf16
        assert torch.equal(written[name], (sft[name] - (moved[name] - sft[name])).to(torch.bfloat16))
    untouched = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(written[untouched], sft[untouched].to(torch.bfloat16))


@pytest.mark.parametrize(
    "curve", [lambda s: 0.003 * s**2, lambda s: 0.003 * s**3 + 1e-4 * s, lambda s: 0.2 * s**0.5]
)
def test_the_scale_search_reaches_the_target_whatever_the_kl_curve(curve):
    class Probe:
        calls = 0

        def kl(self, update, scale):
            self.calls += 1
            return curve(scale)

    probe = Probe()
    scale, kl = control.match_scale(probe, {}, 0.05)  # type: ignore[arg-type]
    assert abs(kl - 0.05) <= control.KL_TOLERANCE * 0.05 and kl == pytest.approx(curve(scale))
    assert probe.calls <= 12
    with pytest.raises(control.ControlError, match="did not move"):
        control.match_scale(probe, {}, 0.0)  # type: ignore[arg-type]
