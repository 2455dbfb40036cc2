"""The RL phase: presets validate, the GRPO prompt of a row is token for token the SFT prompt, a run
without an SFT model fails clearly; slow: a real GRPOTrainer run writes a complete run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from claude_rl.chat_format import episode_to_messages, tool_inputs
from claude_rl.train import grpo
from claude_rl.train.config import CONFIGS_DIR, ConfigError
from claude_rl.train.grpo_config import (
    DEFAULT_GRPO_CONFIG,
    GRPORunConfig,
    check_runnable,
    load_grpo_config,
    to_grpo_kwargs,
)

PRESETS = sorted(CONFIGS_DIR.glob("grpo-*.yaml"))


@pytest.fixture(autouse=True)
def _no_cuda(monkeypatch):
    monkeypatch.setattr(grpo, "_cuda_available", lambda: False)


# --- presets and config ---------------------------------------------------------------------------


def test_the_expected_presets_ship():
    assert {p.name for p in PRESETS} >= {
        "grpo-cpu-default.yaml",
        "grpo-cpu-long.yaml",
        "grpo-llama31-8b.yaml",
    }
    assert DEFAULT_GRPO_CONFIG.is_file()


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_preset_validates_and_maps_onto_trl(path):
    import trl

    cfg = load_grpo_config(path)
    assert isinstance(cfg, GRPORunConfig)
    assert cfg.num_iterations >= 2 and cfg.beta > 0 and cfg.epsilon > 0 and cfg.lora.enabled
    assert cfg.prompts_per_step >= 2  # several prompts per step
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert f"--config configs/{path.name}" in text and "claude-rl train --phase ppo" in text
    assert "=" in text.split(f"configs/{path.name}", 2)[-1], "no override example"
    if not cfg.requires_cuda:
        args = trl.GRPOConfig(**to_grpo_kwargs(cfg, True, output_dir="/tmp/unused"), reward_weights=[1.0] * 6)
        assert args.num_iterations == cfg.num_iterations and args.beta == cfg.beta
        assert args.generation_batch_size % cfg.num_generations == 0
        assert args.generation_batch_size // cfg.num_generations == cfg.prompts_per_step
        assert not args.bf16 and args.use_cpu
        assert check_runnable(cfg, False) == []
    else:
        assert any("CUDA" in p for p in check_runnable(cfg, False))


def test_micro_batches_split_one_generated_batch():
    import trl

    cfg = load_grpo_config(None, ["prompts_per_step=3", "num_generations=4", "micro_batch_size=4"])
    assert cfg.passes_per_batch == 3
    args = trl.GRPOConfig(**to_grpo_kwargs(cfg, True, output_dir="/tmp/unused"), reward_weights=[1.0] * 6)
    # twelve rollouts generated at once, three passes of four, one optimizer step
    assert args.generation_batch_size == 12 and args.per_device_train_batch_size == 4
    assert args.steps_per_generation == 3 and args.gradient_accumulation_steps == 3
    whole = load_grpo_config(None, ["prompts_per_step=3", "num_generations=4"])
    kwargs = to_grpo_kwargs(whole, True, output_dir="/tmp/unused")
    assert kwargs["per_device_train_batch_size"] == 12 and kwargs["gradient_accumulation_steps"] == 1
    with pytest.raises(ConfigError, match="micro_batch_size"):
        load_grpo_config(None, ["prompts_per_step=3", "num_generations=4", "micro_batch_size=5"])


def test_which_steps_generate_follows_trl_schedule():
    import trl

    long = load_grpo_config(CONFIGS_DIR / "grpo-cpu-long.yaml")  # 12 rollouts in passes of 2, 2 iterations
    args = trl.GRPOConfig(**to_grpo_kwargs(long, True, output_dir="/tmp/unused"), reward_weights=[1.0] * 6)
    # as logged by the long runs: steps 1, 3, 5, 7 generated, 2, 4, 6 reused the batch
    pattern = [grpo.step_generates(s, args) for s in range(1, 8)]
    assert pattern == [True, False, True, False, True, False, True]
    three = load_grpo_config(None, ["num_iterations=3"])
    args3 = trl.GRPOConfig(**to_grpo_kwargs(three, True, output_dir="/tmp/unused"), reward_weights=[1.0] * 6)
    assert [grpo.step_generates(s, args3) for s in range(1, 7)] == [True, False, False, True, False, False]


def _steps_run_under_budget(monkeypatch, minutes: float | None, durations: list[float]) -> tuple[int, bool]:
    """Drive the time-budget callback with steps of the given lengths (seconds) on a fake clock,
    generation every other step; how many steps ran, and whether the budget stopped the run."""
    from types import SimpleNamespace

    clock = [0.0]
    monkeypatch.setattr(grpo.time, "monotonic", lambda: clock[0])
    callback = grpo.time_budget_callback(minutes)
    args = SimpleNamespace(gradient_accumulation_steps=6, steps_per_generation=6, num_iterations=2)
    state = SimpleNamespace(global_step=0, max_steps=len(durations))
    control = SimpleNamespace(should_training_stop=False)
    callback.on_train_begin(args, state, control)
    for took in durations:
        clock[0] += took
        state.global_step += 1
        callback.on_step_end(args, state, control)
        if control.should_training_stop:
            break
    return state.global_step, callback.stopped


def test_time_budget_judges_the_next_step_by_its_kind(monkeypatch):
    minute = 60.0
    # generating steps of 15 minutes, reusing steps of 4 (the long CPU preset's shape)
    shape = [15 * minute, 4 * minute] * 4
    # after step 3 (34 min) the next step reuses the batch: 38 <= 40, so it runs; then a generating
    # step would end at 53 > 40: stop. Judged by the longest step (15 min) it stopped after step 3.
    assert _steps_run_under_budget(monkeypatch, 40, shape) == (4, True)
    # the first reusing step has no measure of its own yet: judged by the longest step seen
    assert _steps_run_under_budget(monkeypatch, 25, shape) == (1, True)
    assert _steps_run_under_budget(monkeypatch, 31, shape) == (2, True)
    # a budget that holds every step does not stop the run
    assert _steps_run_under_budget(monkeypatch, 120, shape) == (8, False)
    assert _steps_run_under_budget(monkeypatch, None, shape) == (8, False)


def test_cpu_default_is_sized_for_twenty_minutes():
    cfg = load_grpo_config(DEFAULT_GRPO_CONFIG)
    text = DEFAULT_GRPO_CONFIG.read_text()
    assert "20 minutes" in text and cfg.device == "cpu" and cfg.precision == "fp32"
    assert cfg.gradient_checkpointing is False
    assert cfg.max_steps // cfg.num_iterations * cfg.rollouts_per_step <= 80  # rollouts in the whole run


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match="num_iterations"):
        load_grpo_config(None, ["num_iterations=1"])
    with pytest.raises(ConfigError, match="beta"):
        load_grpo_config(None, ["beta=0"])
    with pytest.raises(ConfigError, match="did you mean 'num_generations'"):
        load_grpo_config(None, ["num_generation=4"])
    with pytest.raises(ConfigError, match="key=value"):
        load_grpo_config(None, ["max_steps"])
    with pytest.raises(ConfigError, match="not found"):
        load_grpo_config("nope.yaml")
    with pytest.raises(ConfigError, match="lora.enabled"):
        load_grpo_config(None, ["lora.enabled=false"])
    with pytest.raises(ConfigError, match="exclude each other"):
        load_grpo_config(None, ["guided_opening=true", "mask_opening=true"])
    cfg = load_grpo_config(None, ["max_steps=3", "lora.r=4", "reward.outcome_similarity=lexical"])
    assert (cfg.max_steps, cfg.lora.r, cfg.reward.outcome_similarity) == (3, 4, "lexical")


def test_no_sft_model_fails_clearly(data_home):
    cfg = load_grpo_config()
    with pytest.raises(grpo.NoSFTModelError, match="make train"):
        grpo.main(cfg, data_home)
    with pytest.raises(grpo.NoSFTModelError, match="make train"):
        grpo.main(load_grpo_config(None, ["sft_model=llama-claude-bc-v9"]), data_home)
    assert issubclass(grpo.GRPOError, grpo.sft.TrainError)
    models = data_home / "models"
    assert not models.exists() or not any(
        p.name.startswith(("llama-claude-ppo", ".tmp")) for p in models.iterdir()
    )


def _fake_model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_text("")
    return folder


def test_latest_sft_run_and_its_dataset(data_home, tmp_path):
    models = data_home / "models"
    for n in (1, 2, 10):
        _fake_model(models / f"llama-claude-bc-v{n}" / "merged")
    _fake_model(models / "llama-claude-ppo-v3" / "merged")
    (models / "llama-claude-bc-v11").mkdir()  # unfinished: no model
    run = grpo.find_sft_run(load_grpo_config(), data_home)
    assert run.folder.name == "llama-claude-bc-v10" and run.merged == run.folder / "merged"
    named = grpo.find_sft_run(
        load_grpo_config(None, [f"sft_model={models / 'llama-claude-bc-v2' / 'merged'}"]), data_home
    )
    assert named.folder.name == "llama-claude-bc-v2"
    for spec in ("llama-claude-bc-v1", "llama-claude-bc-v1/merged"):  # names under <home>/models
        by_name = grpo.find_sft_run(load_grpo_config(None, [f"sft_model={spec}"]), data_home)
        assert by_name.folder == models / "llama-claude-bc-v1" and by_name.merged == by_name.folder / "merged"
    with pytest.raises(grpo.GRPOError, match="names no dataset"):
        grpo.dataset_folder(load_grpo_config(), run)
    (run.folder / "manifest.json").write_text(json.dumps({"dataset": {"folder": str(tmp_path / "ds")}}))
    run = grpo.find_sft_run(load_grpo_config(), data_home)
    with pytest.raises(grpo.GRPOError, match="no train.jsonl"):
        grpo.dataset_folder(load_grpo_config(), run)


# --- prompts: GRPO renders exactly what SFT trained on ------------------------------------------


def _sample_rows(n: int) -> list[dict[str, Any]]:
    """Dataset rows (messages, tools, meta) built the way claude_rl.dataset builds them."""
    from claude_rl.dataset import load_source
    from claude_rl.tools.schemas import schemas_for

    episodes, _ = load_source("samples")
    rows = []
    for ep in episodes[:n]:
        messages = episode_to_messages(ep)
        tools = schemas_for(tool_inputs(messages))
        rows.append({"messages": messages, "tools": json.dumps(tools), "meta": {"episode_id": ep.episode_id}})
    # one row with another tool list (an MCP tool): the trainer gets one environment per tool list
    extra = json.loads(json.dumps(rows[0]))
    extra["meta"]["episode_id"] = "mcp-session:0"
    mcp = {
        "type": "function",
        "function": {
            "name": "mcp__db__query",
            "description": "Run SQL.",
            "parameters": {"type": "object", "properties": {"sql": {"type": "string"}}, "required": ["sql"]},
        },
    }
    extra["tools"] = json.dumps([*json.loads(extra["tools"]), mcp])
    rows.append(extra)
    return rows


def _write_dataset(folder: Path, rows: list[dict[str, Any]], max_tool_tokens: int = 384) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = {
        "format": "messages",
        "options": {"tokenizer": "smollm2-135m", "max_tool_tokens": max_tool_tokens},
        "source": {"kind": "samples"},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from claude_rl.base_model import BaseModelMissing, load_tokenizer

    try:
        return load_tokenizer("smollm2-135m", tmp_path_factory.mktemp("tok-home"))
    except BaseModelMissing as e:
        pytest.skip(str(e))


def tiny_llama(tokenizer):
    """A one-layer random Llama over the real vocabulary: enough for TRL to build the trainer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=8192,
    )
    return LlamaForCausalLM(config)


def test_long_preset_leaves_room_for_whole_workflows(tokenizer):
    """Tool results count toward the completion length: the long preset's budget must hold the
    median recorded workflow (calls, results cut as the demo SFT dataset cuts them, answer), or
    most rollouts are cut before they answer and the reward pays for stopping early."""
    from claude_rl.chat_format import render, truncate_middle
    from claude_rl.dataset import load_source
    from claude_rl.tools.schemas import schemas_for
    from claude_rl.train.config import load_config

    max_tool_tokens = load_config(CONFIGS_DIR / "sft-cpu-demo.yaml").dataset_max_tool_tokens
    lengths = []
    for ep in load_source("samples")[0]:
        messages = episode_to_messages(ep)
        for m in messages:
            if m["role"] == "tool":
                m["content"] = truncate_middle(m["content"], max_tool_tokens, tokenizer)[0]
        tools = schemas_for(tool_inputs(messages))
        first = max(i for i, m in enumerate(messages) if m["role"] == "user") + 1
        prompt = render(messages[:first], tools, add_generation_prompt=True)
        whole = render(messages, tools)
        assert whole.startswith(prompt)
        lengths.append(len(tokenizer(whole[len(prompt) :], add_special_tokens=False)["input_ids"]))
    lengths.sort()
    median = lengths[len(lengths) // 2]
    long = load_grpo_config(CONFIGS_DIR / "grpo-cpu-long.yaml")
    assert 500 < median <= long.max_completion_length, (median, long.max_completion_length)


def test_grpo_prompts_equal_the_sft_prompts_token_for_token(tokenizer, tmp_path):
    rows = _sample_rows(4)
    folder = _write_dataset(tmp_path / "ds", rows)
    prompts = grpo.load_prompts(folder, "train", home=tmp_path)
    assert len(prompts) == 5 and prompts[0].prompt == rows[0]["messages"][:2]
    tiny = tiny_llama(tokenizer)
    cfg = load_grpo_config(None, ["num_generations=2", "prompts_per_step=1", "max_steps=1"])
    trainer = grpo.build_trainer(
        cfg, tiny, tokenizer, prompts, tmp_path / "out", True, {"max_tool_tokens": 64}
    )
    # two tool lists: a dict of environments, rows routed by their "environment" column
    assert set(trainer._env_tools) == {"tools0", "tools1"}
    assert [t.__name__ for t in trainer._env_tools["tools0"]] == sorted(
        t.__name__ for t in trainer._env_tools["tools0"]
    )
    trainer._batch_environments = [f"tools{int(p.episode_id == 'mcp-session:0')}" for p in prompts]
    prompt_ids, _, _ = trainer._tokenize_prompts([p.prompt for p in prompts])
    by_id = {r["meta"]["episode_id"]: r for r in rows}
    for p, ids in zip(prompts, prompt_ids, strict=True):
        row = by_id[p.episode_id]
        sft_ids = tokenizer.apply_chat_template(
            row["messages"], tools=json.loads(row["tools"]), tokenize=True, return_dict=False
        )
        sft_prompt = tokenizer.apply_chat_template(
            row["messages"][:2],
            tools=json.loads(row["tools"]),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
        assert list(ids) == list(sft_prompt) == list(sft_ids[: len(ids)]), p.episode_id
    text = tokenizer.decode(prompt_ids[0])
    assert "Grep(pattern: string, path?: string" in text and "-i?: boolean" in text
    # tool calls the policy writes are parsed with the row's schemas (integers typed as integers)
    call = '<tool_call>\n{"name": "Grep", "arguments": {"pattern": "x", "-A": 3}}\n</tool_call><|im_end|>'
    ids = tokenizer(call, add_special_tokens=False)["input_ids"]
    from trl.chat_template_utils import parse_response

    parsed = parse_response(
        trainer.processing_class, ids, prefix=list(prompt_ids[0]), tools=trainer._env_tools["tools0"]
    )
    assert parsed["tool_calls"][0]["function"] == {"name": "Grep", "arguments": {"pattern": "x", "-A": 3}}


def test_prompts_join_split_rows_and_carry_the_recorded_calls(tmp_path):
    rows = _sample_rows(2)[:1]
    part1 = json.loads(json.dumps(rows[0]))
    part1["meta"]["part"] = 1
    part1["messages"] = part1["messages"][:2] + [
        {"role": "assistant", "content": "[earlier turns]", "train": False}
    ]
    folder = _write_dataset(tmp_path / "ds", [part1, rows[0] | {"meta": {**rows[0]["meta"], "part": 0}}])
    [p] = grpo.load_prompts(folder, "train", home=tmp_path)
    replay = json.loads(p.replay)
    reference = json.loads(p.reference)
    assert [c["name"] for c in replay] == [s["call"]["name"] for s in reference["steps"]]
    assert p.prompt[-1]["role"] == "user"
    assert grpo.load_prompts(folder, "train", limit=1, home=tmp_path)[0].episode_id == p.episode_id


def test_the_tool_loop_replays_runs_and_refuses_through_the_trainer(tokenizer, tmp_path):
    """GRPOTrainer's own multi-turn loop with a scripted policy (generation replaced, everything else
    real): a recorded call gets the recorded result, an unrecorded read runs in the sandbox, a write
    is refused, the results are fed back, and the reward scores what was actually done."""
    from claude_rl.chat_format import render_tool_call
    from claude_rl.train.reward import RewardLog

    rows = _sample_rows(4)[:4]
    folder = _write_dataset(tmp_path / "ds", rows)
    prompts = [p for p in grpo.load_prompts(folder, "train", home=tmp_path) if json.loads(p.replay)][:1]
    first = json.loads(prompts[0].replay)[0]
    tiny = tiny_llama(tokenizer)
    cfg = load_grpo_config(
        None, ["num_generations=2", "prompts_per_step=1", "max_steps=1", "max_completion_length=1024"]
    )
    log, created = RewardLog(), []
    defaults = {"max_tool_tokens": 64, "tokenizer": tokenizer, "scratch_dir": tmp_path / "scratch"}
    trainer = grpo.build_trainer(
        cfg, tiny, tokenizer, prompts, tmp_path / "out", True, defaults, log, created
    )
    query = "sqlite3 db/command_center.db \"SELECT tag FROM assets WHERE tag = 'TX-3';\""

    def policy(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        out = []
        for i, ids in enumerate(prompt_ids):
            turns = tokenizer.decode(ids).count("<|im_start|>tool")
            if turns == 0 and i % 2 == 0:
                text = "As recorded.\n" + render_tool_call(first["name"], first["input"])
            elif turns == 0:
                text = "Something else.\n" + render_tool_call("Bash", {"command": query})
            elif turns == 1:
                text = "Save it.\n" + render_tool_call("Write", {"file_path": "notes.md", "content": "x"})
            else:
                text = "Done."
            out.append(tokenizer(text + "<|im_end|>", add_special_tokens=False)["input_ids"])
        return out, None

    trainer._generate_single_turn = policy
    trainer.model.train()
    row = dict(trainer.train_dataset[0])
    trainer._generate_and_score_completions([row, dict(row)])
    calls = [[(c.name, c.source) for c in env.calls] for env in trainer.environments]
    assert calls == [
        [(first["name"], "replay"), ("Write", "refused")],
        [("Bash", "sandbox"), ("Write", "refused")],
    ]
    assert trainer.environments[0].calls[0].output == first["output"]
    assert trainer.environments[1].calls[0].output == "TX-3"
    assert trainer._metrics["train"]["tools/call_frequency"] == [2.0]
    batch = log.batches[-1]
    assert batch["valid_calls"] == 4 and batch["invalid_calls"] == 0
    assert batch["environment_calls"] == {"replay": 1, "sandbox": 1, "refused": 2}
    assert batch["tool_use_alignment_applies"] == 2
    for env in created:
        env._close()


def test_tool_turns_decode_only_what_each_row_can_keep(tokenizer, tmp_path):
    """Real generation in the tool turns (a tiny random model, which never stops by itself): each
    row stops at its own remaining completion budget instead of decoding ``max_completion_length``
    new tokens and being cut afterwards, and a row that the runtime's repeat rule ended generates
    nothing more."""
    from claude_rl.chat_format import render_tool_call
    from claude_rl.train.grpo_generation import GenerateCall, row_limits, summarize

    rows = _sample_rows(4)[:4]
    folder = _write_dataset(tmp_path / "ds", rows)
    prompts = [p for p in grpo.load_prompts(folder, "train", home=tmp_path) if json.loads(p.replay)][:1]
    budget = 256
    cfg = load_grpo_config(
        None, ["num_generations=3", "prompts_per_step=1", "max_steps=1", f"max_completion_length={budget}"]
    )
    defaults = {"max_tool_tokens": 16, "tokenizer": tokenizer, "scratch_dir": tmp_path / "scratch"}
    created: list[Any] = []
    trainer = grpo.build_trainer(
        cfg, tiny_llama(tokenizer), tokenizer, prompts, tmp_path / "out", True, defaults, None, created
    )
    read = render_tool_call("Read", {"file_path": "README.md"})
    first_turn = [
        "Read it.\n" + read,  # short: most of the budget left
        "Read it, " + "after a long preamble " * 18 + "\n" + read,  # little left
        "Read it.\n" + read + read + read,  # the third identical call: the runtime stops here
    ]
    real = type(trainer)._generate_single_turn
    first_ids: list[list[int]] = []

    def policy(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if trainer._loop_state is None:  # the first turn is scripted, the tool turns are real
            out = [tokenizer(t + "<|im_end|>", add_special_tokens=False)["input_ids"] for t in first_turn]
            first_ids.extend(out)
            return out, None
        return real(trainer, prompt_ids, images, multimodal_fields, num_generations, has_tool_images)

    trainer._generate_single_turn = policy
    trainer.model.train()
    row = dict(trainer.train_dataset[0])
    out = trainer._generate_and_score_completions([dict(row) for _ in range(3)])
    assert [env.ended for env in trainer.environments] == [False, False, True]
    assert [c.source for c in trainer.environments[2].calls] == ["sandbox", "sandbox", "repeat"]
    turns = [c for c in trainer.generation_log if c.tool_turn]
    assert turns and all(isinstance(c, GenerateCall) for c in turns)
    first = turns[0]
    assert first.rows == 3 and first.ended_by_repeat == 1
    # TRL alone would decode `budget` new tokens here; the batch stops at the largest budget left
    # (the first turn and the tool results of row 0 used some), and each row at its own
    assert first.stopped_by_budget == 2
    assert first.decode_steps <= budget - len(first_ids[0]) and len(turns) == 1
    # the two rows filled their budgets exactly (as TRL's cut would leave them), the ended row
    # holds nothing after its tool results
    lengths = [int(n) for n in out["completion_mask"].sum(dim=1).tolist()]
    assert lengths[:2] == [budget, budget]
    ended_text = tokenizer.decode(out["completion_ids"][2][: int(lengths[2])])
    assert ended_text.rstrip().endswith("<|im_start|>assistant")
    assert summarize(trainer.generation_log)["rows_ended_by_repeat"] == 1
    # rows are matched to their samples in batch order, from the prompt and the completion so far
    assert row_limits([[1, 2, 9, 9], [1, 2, 3, 9]], [[1], [1], [1]], [[2], [2, 3], [2, 3]], 10) == [
        (0, 7),
        (1, 7),
    ]
    for env in created:
        env._close()


def _one_group_trainer(tokenizer, tmp_path, overrides):
    """A trainer on one sample prompt with recorded calls, a tiny random model, one group of three
    rollouts sampled at temperature 1, and a reward log writing ``rollouts.jsonl``."""
    from claude_rl.train.reward import RewardLog

    folder = _write_dataset(tmp_path / "ds", _sample_rows(4)[:4])
    prompts = [p for p in grpo.load_prompts(folder, "train", home=tmp_path) if json.loads(p.replay)][:1]
    cfg = load_grpo_config(
        None, ["num_generations=3", "prompts_per_step=1", "max_steps=1", "temperature=1.0", *overrides]
    )
    defaults = {"max_tool_tokens": 16, "tokenizer": tokenizer, "scratch_dir": tmp_path / "scratch"}
    log, created = RewardLog(rollouts_path=tmp_path / "rollouts.jsonl"), []
    trainer = grpo.build_trainer(
        cfg, tiny_llama(tokenizer), tokenizer, prompts, tmp_path / "out", True, defaults, log, created
    )
    return trainer, prompts, log, created


def test_a_greedy_rollout_per_group_decodes_as_eval_does(tokenizer, tmp_path):
    """With ``greedy_rollout``, real generation (a tiny random model, sampling at temperature 1):
    the first rollout of the group is, in the first turn and in the tool turns, exactly what greedy
    decoding of its input gives; the others are sampled; the reward log marks the greedy rollout
    and reports its advantage."""
    import torch

    from claude_rl.chat_format import render_tool_call
    from claude_rl.train.grpo_generation import first_of_each_group

    trainer, prompts, log, created = _one_group_trainer(
        tokenizer, tmp_path, ["max_completion_length=128", "greedy_rollout=true"]
    )
    assert trainer.greedy_rollout is True
    real = type(trainer)._generate_single_turn
    turns: list[tuple[bool, list[list[int]], list[list[int]]]] = []
    scripted = tokenizer(
        "Read it.\n" + render_tool_call("Read", {"file_path": "README.md"}) + "<|im_end|>",
        add_special_tokens=False,
    )["input_ids"]

    def policy(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        ids, logprobs = real(trainer, prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        turns.append((trainer._loop_state is not None, [list(r) for r in prompt_ids], ids))
        if script_first_turn and trainer._loop_state is None:  # a call, so that tool turns follow
            return [list(scripted) for _ in ids], None
        return ids, logprobs

    def greedy(row: list[int], n: int) -> list[int]:
        model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
        with torch.no_grad():
            out = model.generate(
                torch.tensor([row]),
                attention_mask=torch.ones(1, len(row), dtype=torch.long),
                do_sample=False,
                max_new_tokens=n,
                min_new_tokens=n,
            )
        return out[0, len(row) :].tolist()

    trainer._generate_single_turn = policy
    trainer.model.train()
    row = dict(trainer.train_dataset[0])
    for script_first_turn in (False, True):
        turns.clear()
        trainer._generate_and_score_completions([dict(row) for _ in range(3)])
        assert [env.greedy for env in trainer.environments] == [True, False, False]
        checked = [(t, r, ids) for t, r, ids in turns if t == script_first_turn]
        assert checked, "the turn to check was generated"
        for _, inputs, ids in checked:
            assert ids[0] == greedy(inputs[0], len(ids[0]))  # the greedy rollout
            assert ids[1] != greedy(inputs[1], len(ids[1])) and ids[2] != ids[1]  # sampled ones

    batch = log.batches[-1]
    assert batch["greedy_rollouts"] == 1
    written = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert [r["greedy"] for r in written[-3:]] == [True, False, False]
    assert batch["greedy_advantage"] == pytest.approx(written[-3]["advantage"])
    # the greedy rollouts are only chosen in training; TRL's sampler groups a prompt's rollouts
    trainer.model.eval()
    trainer._generate_and_score_completions([dict(row) for _ in range(3)])
    assert [env.greedy for env in trainer.environments] == [False, False, False]
    assert first_of_each_group([[1, 2], [1, 2], [3], [3], [1, 2]]) == {0, 2, 4}
    for env in created:
        env._close()


def test_a_guided_rollout_per_group_opens_as_the_reference_does(tokenizer, tmp_path):
    """With ``guided_opening``, real generation (a tiny random model, sampling at temperature 1):
    the last rollout of the group writes the reference's first assistant turn token for token, its
    call is parsed and replayed with the recorded result, and the rest is the policy's own; the
    other rollouts are sampled; the reward log marks the guided rollout and reports its advantage.
    Not in eval, and not with the guidance off."""
    from claude_rl.chat_format import episode_to_messages, opening_turn_text
    from claude_rl.schema import Episode
    from claude_rl.train.grpo_generation import last_of_each_group, opening_tokens

    trainer, prompts, log, created = _one_group_trainer(
        tokenizer, tmp_path, ["max_completion_length=256", "guided_opening=true"]
    )
    assert trainer.guided_opening is True
    reference = Episode.model_validate_json(prompts[0].reference)
    opening = opening_turn_text(episode_to_messages(reference))
    assert opening is not None and opening.endswith("<|im_end|>") and "<tool_call>" in opening
    forced = opening_tokens(prompts[0].reference, tokenizer)
    assert forced == tokenizer.encode(opening, add_special_tokens=False)
    first_call = reference.steps[0].call

    trainer.model.train()
    row = dict(trainer.train_dataset[0])
    out = trainer._generate_and_score_completions([dict(row) for _ in range(3)])
    assert [env.guided for env in trainer.environments] == [False, False, True]
    pairs = zip(out["completion_ids"], out["completion_mask"], strict=True)
    completions = [ids[mask.bool()].tolist() for ids, mask in pairs]
    assert completions[2][: len(forced)] == forced  # the reference's opening, then tool results
    assert completions[0][: len(forced)] != forced and completions[1][: len(forced)] != forced
    guided_env = trainer.environments[2]
    assert guided_env.calls and guided_env.calls[0].name == first_call.name
    assert guided_env.calls[0].source == "replay"  # the recorded call, with its recorded result

    batch = log.batches[-1]
    assert batch["guided_rollouts"] == 1
    written = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert [r["guided"] for r in written[-3:]] == [False, False, True]
    assert batch["guided_advantage"] == pytest.approx(written[-1]["advantage"])
    # only in training, and not at all with the guidance off
    trainer.model.eval()
    trainer._generate_and_score_completions([dict(row) for _ in range(3)])
    assert [env.guided for env in trainer.environments] == [False, False, False]
    trainer.model.train()
    trainer.guided_opening = False
    trainer._generate_and_score_completions([dict(row) for _ in range(3)])
    assert [env.guided for env in trainer.environments] == [False, False, False]
    assert last_of_each_group([[1, 2], [1, 2], [3], [3], [1, 2]]) == {1, 3, 4}
    assert opening_tokens(None, tokenizer) is None
    for env in created:
        env._close()


# --- slow: a real run ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_real_grpo_run_writes_a_complete_run_folder(tmp_path_factory):
    """Two optimizer steps (one generated batch used twice) with the base SmolLM2 as the "SFT" policy:
    its materialized folder stands in for llama-claude-bc-v1/merged (training an SFT model first
    would add minutes and test nothing more here)."""
    import shutil

    from safetensors.torch import load_file

    from claude_rl.base_model import BaseModelMissing, materialize

    home = tmp_path_factory.mktemp("grpo-home")
    try:
        base = Path(materialize("smollm2-135m", home))
    except BaseModelMissing as e:
        pytest.skip(str(e))
    run = home / "models" / "llama-claude-bc-v1"
    shutil.copytree(base, run / "merged")
    dataset = _write_dataset(home / "datasets" / "tiny", _sample_rows(3)[:3], max_tool_tokens=64)
    (run / "manifest.json").write_text(
        json.dumps({"name": run.name, "base_model": "smollm2-135m", "dataset": {"folder": str(dataset)}})
    )
    cfg = load_grpo_config(
        None,
        [
            "max_steps=2",
            "num_generations=2",
            "prompts_per_step=2",
            "max_completion_length=48",
            "max_tool_calling_iterations=2",
            "lora.r=4",
        ],
    )
    out = grpo.main(cfg, home)
    assert out.name == "llama-claude-ppo-v1"
    names = {p.name for p in out.iterdir()}
    assert {"adapter", "merged", "manifest.json", "rewards.png", "rollouts.jsonl"} <= names
    assert (out / "merged" / "model.safetensors").is_file() and (out / "merged" / "tokenizer.json").is_file()
    assert "tool_call" in (out / "merged" / "chat_template.jinja").read_text()
    assert load_file(str(out / "adapter" / "adapter_model.safetensors"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["phase"] == "ppo" and manifest["base_model_folder"] == str(run / "merged")
    m = manifest["metrics"]
    assert m["steps"] == 2 and m["reward"] and m["kl"]
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == sum(b["completions"] for b in m["generation_batches"]) > 0
    assert all(r["end"] in {"answered", "repeat", "invalid_call", "unfinished"} for r in rollouts)
    assert set(m["parts"]) == {
        "constraint_detection",
        "tool_use_alignment",
        "self_correction",
        "outcome_equivalence",
        "reasoning_depth",
    }
    assert m["parts"]["outcome_equivalence"]["mean"]  # logged per step
    assert m["groups"] == 2 and 0 <= m["zero_spread_groups"] <= 2  # one batch of 2 prompts
    assert m["generation_batches"][0]["completions"] == 4
    assert not any(p.name.startswith(".tmp") for p in (home / "models").iterdir())
    with pytest.raises(grpo.GRPOError, match="already exists"):
        grpo.main(load_grpo_config(None, ["name=llama-claude-ppo-v1"]), home)


def test_after_opening_masks_each_rows_first_turn():
    import torch

    from claude_rl.train.grpo_generation import after_opening

    # 1: the policy's token, 0: a tool result's; the first turn is what precedes the first 0
    tool_mask = torch.tensor([[1, 1, 0, 0, 1, 1, 0, 1], [1, 1, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1, 1]])
    assert after_opening(tool_mask).tolist() == [
        [0, 0, 0, 0, 1, 1, 0, 1],
        [0, 0, 0, 0, 0, 0, 0, 0],  # no tool result: the whole completion is the opening
        [0, 1, 1, 1, 1, 1, 1, 1],
    ]


def test_mask_opening_leaves_the_first_turn_out_of_the_loss(tokenizer, tmp_path):
    """With ``mask_opening``, real generation and TRL's own loss: the tokens of each rollout's first
    assistant turn are 0 in the loss mask, the tool turns' tokens are kept, the DAPO token count is
    the masked one; a batch whose rollouts never called a tool has nothing to learn from."""
    import torch

    from claude_rl.chat_format import render_tool_call

    trainer, prompts, log, created = _one_group_trainer(
        tokenizer, tmp_path, ["max_completion_length=128", "mask_opening=true", "beta=0.04"]
    )
    assert trainer.mask_opening is True
    real = type(trainer)._generate_single_turn
    first = tokenizer(
        "Read it.\n" + render_tool_call("Read", {"file_path": "README.md"}) + "<|im_end|>",
        add_special_tokens=False,
    )["input_ids"]

    def policy(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if script_first_turn and trainer._loop_state is None:  # a call, so that tool turns follow
            return [list(first) for _ in prompt_ids], None
        return real(trainer, prompt_ids, images, multimodal_fields, num_generations, has_tool_images)

    trainer._generate_single_turn = policy
    trainer.model.train()
    row = dict(trainer.train_dataset[0])
    model = trainer.model
    trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps  # as in train()

    script_first_turn = True
    out = trainer._generate_and_score_completions([dict(row) for _ in range(3)])
    mask, kept = out["tool_mask"], out["completion_mask"] * out["tool_mask"]
    for r in range(3):
        assert mask[r, : len(first)].sum() == 0  # the opening
        assert mask[r, len(first)] == 0  # the tool result that follows it
        assert kept[r].sum() > 0  # the turn after the tool result is trained
    assert int(out["num_items_in_batch"]) == int(kept.sum())
    loss = trainer.compute_loss(model, out)
    assert torch.isfinite(loss)
    # the same batch without the mask trains the opening tokens too
    trainer.mask_opening = False
    unmasked = trainer._generate_and_score_completions([dict(row) for _ in range(3)])
    assert unmasked["tool_mask"][:, : len(first)].min() == 1

    trainer.mask_opening = True
    script_first_turn = False  # a tiny random model writes no call: every rollout is all opening
    out = trainer._generate_and_score_completions([dict(row) for _ in range(3)])
    assert out["tool_mask"].sum() == 0 and int(out["num_items_in_batch"]) == 0
    model.zero_grad()
    loss = trainer.compute_loss(model, out)
    loss.backward()
    assert loss.item() == 0.0
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(float(g.abs().max()) == 0.0 for g in grads)
    for env in created:
        env._close()


def _lora_layers(model):
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def test_merged_adapter_decodes_the_same_policy_and_gives_the_base_back(tokenizer):
    """``merged_adapter`` folds a trained (non-zero) LoRA into float32 base weights: greedy decoding
    and the logits are the unmerged model's up to rounding, and after many merges the base weights
    are back within float32 rounding. bf16 weights and plain models are left alone."""
    import torch
    from peft import LoraConfig, get_peft_model

    from claude_rl.train.grpo_generation import can_merge_for_generation, merged_adapter

    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(tiny_llama(tokenizer), lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.eval()
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    ids = torch.tensor([tokenizer("Find every caller of headroom_kva.")["input_ids"]])

    def decode():
        with torch.no_grad():
            logits = model(ids).logits
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=12,
                min_new_tokens=12,
            )
        return logits, out[0, ids.shape[1] :].tolist()

    logits, tokens = decode()
    with torch.no_grad(), model.disable_adapter():
        plain = model(ids).logits
    assert float((logits - plain).abs().max()) > 1e-3  # the adapter changes the policy
    with merged_adapter(model, True) as merged:
        assert merged and all(layer.merged for layer in _lora_layers(model))
        merged_logits, merged_tokens = decode()
    assert not any(layer.merged for layer in _lora_layers(model))
    assert merged_tokens == tokens
    assert torch.allclose(merged_logits, logits, atol=1e-4)
    for _ in range(50):
        with merged_adapter(model, True):
            pass
    for n, p in model.named_parameters():
        if n in base:
            assert torch.allclose(p, base[n], atol=1e-5), n
    assert torch.allclose(decode()[0], logits, atol=1e-5)

    with merged_adapter(model, False) as merged:
        assert not merged and not any(layer.merged for layer in _lora_layers(model))
    assert not can_merge_for_generation(tiny_llama(tokenizer))  # no adapter to fold
    assert not can_merge_for_generation(model.to(torch.bfloat16))


def test_rollouts_decode_merged_and_the_loss_passes_run_unmerged(tokenizer, tmp_path):
    """In the trainer, with ``merge_lora_for_generation`` (the default), the forward calls of
    ``generate`` see the adapter folded in, the log-probability passes (old policy, KL reference
    with the adapter disabled) see it unmerged, and nothing stays merged; off, nothing merges."""
    import torch

    trainer, prompts, log, created = _one_group_trainer(
        tokenizer, tmp_path, ["max_completion_length=32", "beta=0.04"]
    )
    assert trainer.merge_lora_for_generation is True
    model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    seen: list[tuple[bool, bool]] = []  # (inside generate, merged)
    in_generate = [False]
    real_generate = type(model).generate

    def generate(self, *args, **kwargs):
        in_generate[0] = True
        try:
            return real_generate(self, *args, **kwargs)
        finally:
            in_generate[0] = False

    hook = model.get_base_model().register_forward_pre_hook(
        lambda module, args: seen.append((in_generate[0], all(x.merged for x in _lora_layers(model))))
    )
    trainer.model.train()
    row = dict(trainer.train_dataset[0])
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(type(model), "generate", generate)
            trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps
            trainer._generate_and_score_completions([dict(row) for _ in range(3)])
            assert {m for g, m in seen if g} == {True}  # every decode step merged
            assert {m for g, m in seen if not g} == {False}  # old-policy and reference passes
            assert not any(x.merged for x in _lora_layers(model))
            seen.clear()
            trainer.is_fsdp_enabled = True  # sharded weights: TRL gathers them inside its call
            trainer._generate_and_score_completions([dict(row) for _ in range(3)])
            assert seen and not any(m for _, m in seen)
            seen.clear()
            trainer.is_fsdp_enabled = False
            trainer.merge_lora_for_generation = False
            trainer._generate_and_score_completions([dict(row) for _ in range(3)])
            assert seen and not any(m for _, m in seen)
    finally:
        hook.remove()
        for env in created:
            env._close()
