"""Every shipped run preset validates and maps onto TRL; bad input fails with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from claude_rl.train.config import (
    CONFIGS_DIR,
    DEFAULT_CONFIG,
    ConfigError,
    SFTRunConfig,
    check_runnable,
    cpu_has_bf16,
    load_config,
    next_run_name,
    to_trl_kwargs,
)

PRESETS = sorted(CONFIGS_DIR.glob("sft-*.yaml"))
ACCELERATE = sorted((CONFIGS_DIR / "accelerate").glob("*.yaml"))
CPU_PRESETS = [p for p in PRESETS if not load_config(p).requires_cuda]


def test_the_expected_presets_ship():
    names = {p.name for p in PRESETS}
    assert {
        "sft-cpu-default.yaml",
        "sft-cpu-demo.yaml",
        "sft-llama31-8b-lora.yaml",
        "sft-llama31-8b-qlora.yaml",
        "sft-tiny.yaml",
    } <= names
    assert {p.name for p in ACCELERATE} == {"fsdp.yaml", "deepspeed_zero3.yaml"}
    assert DEFAULT_CONFIG.is_file()


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_preset_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, SFTRunConfig)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_preset_begins_with_the_command_that_runs_it(path):
    lines = path.read_text().splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    assert header, f"{path.name} has no header comment"
    text = "\n".join(header)
    assert f"claude-rl train --phase sft --config configs/{path.name}" in text
    assert "=" in text.split(f"configs/{path.name}", 2)[-1], "no override example"
    if path == DEFAULT_CONFIG:
        assert "make train" in text


def test_every_field_has_a_description():
    from claude_rl.train.config import LoraSettings

    for model in (SFTRunConfig, LoraSettings):
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name}"


def test_overrides_are_typed_and_reach_sections():
    cfg = load_config(
        DEFAULT_CONFIG, ["lora.r=8", "learning_rate=5e-4", "max_steps=null", "tensorboard=true"]
    )
    assert cfg.lora.r == 8 and cfg.lora.alpha == 32  # the rest of the section is kept
    assert cfg.learning_rate == 5e-4 and cfg.max_steps is None and cfg.tensorboard is True


def test_no_path_means_the_cpu_default():
    assert load_config(None) == load_config(DEFAULT_CONFIG)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["lerning_rate=1e-4"], "did you mean 'learning_rate'"),
        (["lora.rank=8"], "lora.rank: unknown setting"),
        (["lora.r=many"], "lora.r"),
        (["max_steps"], "not key=value"),
        (["precision=bf32"], "precision"),
        (["early_stopping_patience=2", "eval_steps=5", "save_steps=8"], "multiple of eval_steps"),
    ],
)
def test_bad_overrides_fail_with_a_clear_message(overrides, expected):
    with pytest.raises(ConfigError, match="invalid run config|not key=value") as err:
        load_config(DEFAULT_CONFIG, overrides)
    assert expected in str(err.value)


def test_a_typo_in_a_yaml_file_fails(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("base_model: smollm2-135m\nbatch_szie: 4\n")
    with pytest.raises(ConfigError, match=r"batch_szie: unknown setting"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_qlora_is_refused_without_cuda_with_the_preset_to_use():
    cfg = load_config(CONFIGS_DIR / "sft-llama31-8b-qlora.yaml")
    assert cfg.requires_cuda
    problems = check_runnable(cfg, cuda_available=False)
    assert any("QLoRA" in p and "configs/sft-cpu-default.yaml" in p for p in problems)


def test_gpu_lora_preset_is_refused_without_cuda():
    cfg = load_config(CONFIGS_DIR / "sft-llama31-8b-lora.yaml")
    assert cfg.requires_cuda
    assert any("device is cuda" in p for p in check_runnable(cfg, cuda_available=False))


def test_fp16_needs_cuda_and_bf16_on_cpu_needs_native_support(monkeypatch):
    from claude_rl.train import config as config_module

    fp16 = load_config(DEFAULT_CONFIG, ["precision=fp16"])
    assert fp16.requires_cuda
    assert any("fp16 needs a CUDA GPU" in p for p in check_runnable(fp16, cuda_available=False))
    bf16 = load_config(DEFAULT_CONFIG, ["precision=bf16"])
    monkeypatch.setattr(config_module, "cpu_has_bf16", lambda: False)
    assert any("emulated" in p for p in check_runnable(bf16, cuda_available=False))
    assert not to_trl_kwargs(load_config(DEFAULT_CONFIG, ["precision=auto"]), on_cpu=True)["bf16"]
    monkeypatch.setattr(config_module, "cpu_has_bf16", lambda: True)
    assert check_runnable(bf16, cuda_available=False) == []
    assert to_trl_kwargs(load_config(DEFAULT_CONFIG, ["precision=auto"]), on_cpu=True)["bf16"]


@pytest.mark.parametrize("path", CPU_PRESETS, ids=lambda p: p.name)
def test_cpu_presets_are_runnable_without_cuda(path):
    assert check_runnable(load_config(path), cuda_available=False) == []


def test_a_dataset_built_for_another_tokenizer_is_flagged(tmp_path):
    (tmp_path / "train.jsonl").write_text("{}\n")
    (tmp_path / "manifest.json").write_text(json.dumps({"options": {"tokenizer": "smollm2-135m"}}))
    cfg = load_config(DEFAULT_CONFIG, [f"dataset={tmp_path}"])
    assert check_runnable(cfg, cuda_available=False) == []
    other = cfg.model_copy(update={"base_model": "some/other-model"})
    assert any("built for the smollm2-135m tokenizer" in p for p in check_runnable(other, False))
    missing = cfg.model_copy(update={"dataset": str(tmp_path / "nope")})
    assert any("no train.jsonl" in p for p in check_runnable(missing, False))


@pytest.mark.parametrize("path", CPU_PRESETS, ids=lambda p: p.name)
def test_cpu_presets_build_a_valid_trl_config(path, tmp_path):
    trl = pytest.importorskip("trl")
    args = trl.SFTConfig(**to_trl_kwargs(load_config(path), on_cpu=True, output_dir=tmp_path))
    assert args.use_cpu and not args.fp16
    assert not args.gradient_checkpointing  # off on CPU: it only costs time there
    assert args.assistant_only_loss
    assert args.report_to in ([], "none", None)


def test_trl_kwargs_follow_the_device():
    gpu = load_config(CONFIGS_DIR / "sft-llama31-8b-lora.yaml")
    kwargs = to_trl_kwargs(gpu, on_cpu=False)
    assert kwargs["bf16"] and kwargs["activation_checkpointing"] and not kwargs["use_cpu"]
    assert kwargs["report_to"] == ["tensorboard"] and kwargs["load_best_model_at_end"]
    assert kwargs["packing"] and kwargs["padding_free"]
    forced = load_config(DEFAULT_CONFIG, ["gradient_checkpointing=true", "precision=auto"])
    assert to_trl_kwargs(forced, on_cpu=True)["activation_checkpointing"]
    assert to_trl_kwargs(forced, on_cpu=True)["bf16"] == cpu_has_bf16()


def test_checkpointing_goes_by_the_name_the_installed_transformers_knows(monkeypatch):
    """transformers 5.2x renamed gradient_checkpointing to activation_checkpointing; an older 5.x
    (the GPU machine here has 5.17) refuses the new name, so the kwargs follow the installed one."""
    pytest.importorskip("transformers")
    import transformers

    from claude_rl.train import config as config_module

    gpu = load_config(CONFIGS_DIR / "sft-llama31-8b-lora.yaml")

    class Old:
        __dataclass_fields__ = {"gradient_checkpointing": None, "gradient_checkpointing_kwargs": None}

    config_module.checkpointing_arg.cache_clear()
    monkeypatch.setattr(transformers, "TrainingArguments", Old)
    try:
        kwargs = to_trl_kwargs(gpu, on_cpu=False)
    finally:
        config_module.checkpointing_arg.cache_clear()
    assert kwargs["gradient_checkpointing"] and "activation_checkpointing" not in kwargs
    assert kwargs["gradient_checkpointing_kwargs"] == {"use_reentrant": False}


def test_run_names_follow_the_series(tmp_path):
    cfg = load_config(DEFAULT_CONFIG)
    assert next_run_name(cfg, tmp_path / "models") == "llama-claude-bc-v1"
    (tmp_path / "models" / "llama-claude-bc-v1").mkdir(parents=True)
    assert next_run_name(cfg, tmp_path / "models") == "llama-claude-bc-v2"
    assert next_run_name(cfg.model_copy(update={"name": "mine"}), tmp_path / "models") == "mine"


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_configs_parse_with_the_expected_keys(path):
    text = path.read_text()
    assert text.startswith("#")
    assert f"accelerate launch --config_file configs/accelerate/{path.name} -m claude_rl train" in text
    data = yaml.safe_load(text)
    assert data["num_machines"] == 1 and data["mixed_precision"] == "bf16"
    if path.name == "fsdp.yaml":
        assert data["distributed_type"] == "FSDP"
        assert data["fsdp_config"]["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert data["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    else:
        assert data["distributed_type"] == "DEEPSPEED" and data["deepspeed_config"]["zero_stage"] == 3
    accelerate = pytest.importorskip("accelerate.commands.config.config_args")
    assert accelerate.load_config_from_file(str(path)).distributed_type.value == data["distributed_type"]


def test_configs_dir_is_the_checkout_folder():
    assert CONFIGS_DIR == Path(__file__).resolve().parent.parent / "configs"
