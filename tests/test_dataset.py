"""The dataset builder: sources, filters, splits, truncation, manifest, and TRL accepting the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURES
from test_chat_format import expected_assistant_parts, make_episode, masked_runs
from typer.testing import CliRunner

from claude_rl import capture
from claude_rl import chat_format as cf
from claude_rl.cli import app
from claude_rl.dataset import (
    OMITTED_OUTPUT,
    SPLITS,
    BuildOptions,
    DatasetError,
    build_dataset,
    samples_traces_dir,
)
from claude_rl.episodes.hooks import MANUAL_FLAG, META_FIELD, SOURCE_FIELD
from claude_rl.episodes.manual import ManualCall, ManualTrace, payloads, write_manual_trace
from claude_rl.schema import Episode

REAL_SAMPLES = samples_traces_dir()
needs_corpus = pytest.mark.skipif(
    not (REAL_SAMPLES.is_dir() and any(REAL_SAMPLES.glob("*.jsonl"))),
    reason="data/samples/traces not built yet",
)
runner = CliRunner()

# A tiny corpus shaped like the bundled one: templates × instances, labels in Episode.meta.
TEMPLATES = {
    "find_definition": ("code_search", ["parser", "loader", "router"]),
    "run_tests": ("run_test", ["storage", "capture", "watcher"]),
    "fix_typo": ("edit", ["readme", "changelog", "license"]),
    "count_rows": ("lookup", ["orders", "users", "invoices"]),  # held out: a transfer test
}


def sample_trace(template: str, thing: str) -> ManualTrace:
    if template == "find_definition":
        return ManualTrace(
            prompt=f"Where is the {thing} defined?",
            calls=[
                ManualCall(
                    tool="Grep",
                    reason=f"Search for the {thing}.",
                    input={"pattern": f"class {thing}"},
                    result="src/a.py:3",
                ),
                ManualCall(tool="Glob", input={"pattern": f"**/{thing}*.py"}, result="src/a.py"),
                ManualCall(
                    tool="Read",
                    reason="Read it.",
                    input={"file_path": "/w/src/a.py"},
                    result="class X:\n    pass",
                ),
            ],
            final_answer=f"The {thing} is defined in `src/a.py`, line 3.",
        )
    if template == "run_tests":
        return ManualTrace(
            prompt=f"Run the {thing} tests and tell me what fails.",
            calls=[
                ManualCall(
                    tool="Bash",
                    reason="Run them.",
                    input={"command": f"pytest tests/test_{thing}.py -q"},
                    result="1 failed",
                    is_error=True,
                ),
                ManualCall(
                    tool="Read",
                    reason="Look at the failing test.",
                    input={"file_path": f"/w/tests/test_{thing}.py"},
                    result="def test(): assert 0",
                ),
            ],
            final_answer=f"One {thing} test fails: it asserts 0.",
        )
    if template == "fix_typo":
        return ManualTrace(
            prompt=f"Fix the typo 'teh' in the {thing}.",
            calls=[
                ManualCall(
                    tool="Grep",
                    reason="Find it.",
                    input={"pattern": "teh", "path": f"/w/{thing}.md"},
                    result="3:teh end",
                ),
                ManualCall(
                    tool="Edit",
                    reason="Fix it.",
                    input={"file_path": f"/w/{thing}.md", "old_string": "teh", "new_string": "the"},
                    result="ok",
                ),
            ],
            final_answer=f"Fixed the typo on line 3 of the {thing}.",
        )
    return ManualTrace(
        prompt=f"How many {thing} are in the database?",
        calls=[
            ManualCall(
                tool="mcp__db__query",
                reason="Count them.",
                input={"sql": f"SELECT count(*) FROM {thing}"},
                result="42",
            ),
        ],
        final_answer=f"There are 42 {thing}.",
    )


def write_fake_samples(root: Path) -> Path:
    """Sample traces written the way the bundled corpus is (hook records, source=samples, labels)."""
    for template, (category, things) in TEMPLATES.items():
        for i, thing in enumerate(things):
            sid = f"sample-{template}-{i}"
            events = payloads(sample_trace(template, thing), sid)
            if template == "find_definition":  # the first two calls issued together
                events = [events[i] for i in (0, 1, 3, 2, 4, *range(5, len(events)))]
            meta = {
                "template": template,
                "category": category,
                "split_hint": "heldout_template" if template == "count_rows" else "train",
            }
            for payload in events:
                payload.pop(MANUAL_FLAG)
                payload[SOURCE_FIELD] = "samples"
                if payload["hook_event_name"] == "UserPromptSubmit":
                    payload[META_FIELD] = meta
                assert (
                    capture.handle(json.dumps(payload).encode(), payload["hook_event_name"], root)
                    == "written"
                )
    return root / "traces"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    pytest.importorskip("transformers")
    from claude_rl.base_model import load_tokenizer

    return load_tokenizer(home=tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def fake_samples(tmp_path_factory) -> Path:
    return write_fake_samples(tmp_path_factory.mktemp("fake-corpus"))


def build(tok, tmp_path: Path, source: str, **kw):
    samples_dir = kw.pop("samples_dir", None)
    opts = BuildOptions(source=source, out=kw.pop("out", tmp_path / "ds"), **kw)
    return build_dataset(opts, home=tmp_path / "home", samples_dir=samples_dir, tokenizer=tok)


def read_rows(out: Path) -> dict[str, list[dict]]:
    return {
        s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text().splitlines()]
        if (out / f"{s}.jsonl").exists()
        else []
        for s in SPLITS
    }


def write_episodes(folder: Path, episodes: list[Episode]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "episodes.jsonl").write_text("".join(ep.model_dump_json() + "\n" for ep in episodes))
    return folder


# --- the corpus → a dataset TRL trains on ------------------------------------------------------


def sft_smoke(tok, out: Path, tmp_path: Path, rows: int = 4) -> None:
    """Load the folder with datasets, train 2 steps of a tiny model with TRL, check the loss mask."""
    pytest.importorskip("trl")
    import datasets
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    ds = datasets.load_dataset("json", data_dir=str(out), cache_dir=str(tmp_path / "hf-cache"))
    assert set(ds) <= set(SPLITS) and "train" in ds
    assert ds["train"].column_names == ["messages", "tools", "meta"]
    train = ds["train"].select(range(min(rows, len(ds["train"]))))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    args = SFTConfig(
        output_dir=str(tmp_path / "sft"),
        assistant_only_loss=True,
        max_steps=2,
        per_device_train_batch_size=2,
        max_length=8192,
        bf16=False,
        use_cpu=True,
        # trl-notes trap 1: on by default, slow on CPU (transformers 5 renamed gradient_checkpointing).
        activation_checkpointing=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(model=LlamaForCausalLM(config), args=args, train_dataset=train, processing_class=tok)
    result = trainer.train()
    assert result.global_step == 2 and result.training_loss > 0
    # The loss-bearing tokens (labels != -100, trl-notes trap 2) are the assistant's reasons, calls and
    # answer, nothing else.
    for i, row in enumerate(trainer.train_dataset):
        messages = train[i]["messages"]
        labels = row["labels"]
        runs = masked_runs(row["input_ids"], [int(x != -100) for x in labels], tok.decode)
        assert runs == expected_assistant_parts(messages, "chatml")
        trained = "".join(runs)
        said = json.dumps([m for m in messages if m["role"] == "assistant"], ensure_ascii=False)
        for m in messages:
            if m["role"] in ("system", "user") or (m["role"] == "tool" and m["content"] not in said):
                assert m["content"] not in trained


def test_sample_corpus_dataset_loads_and_trains_with_trl(tok, fake_samples, tmp_path):
    result = build(tok, tmp_path, "samples", samples_dir=fake_samples)
    m = result.manifest
    assert m["source"]["kind"] == "samples" and len(m["source"]["files"]) == 12
    assert m["counts"]["episodes_kept"] == 12 and sum(m["counts"]["rows"].values()) == 12
    sft_smoke(tok, result.out, tmp_path)


@needs_corpus
def test_bundled_sample_corpus_dataset_loads_and_trains_with_trl(tok, tmp_path):
    result = build(tok, tmp_path, "samples")
    m = result.manifest
    assert all(m["counts"]["rows"][s] > 0 for s in SPLITS)
    assert m["counts"]["split_reasons"].get("heldout_template", 0) > 0
    assert m["counts"]["over_length"]["dropped"] <= m["counts"]["episodes_read"] // 20
    sft_smoke(tok, result.out, tmp_path)
    rows = read_rows(result.out)
    heldout = {r["meta"]["template"] for r in rows["test"] if r["meta"]["split_reason"] == "heldout_template"}
    trained = {r["meta"]["template"] for s in ("train", "validation") for r in rows[s]}
    assert not heldout & trained
    # Rendering round trip on every episode of the corpus, in both formats.
    for row in (r for s in SPLITS for r in rows[s]):
        messages, tools = row["messages"], json.loads(row["tools"])
        for fmt in cf.FORMATS:
            for i, msg in enumerate(messages):
                if msg["role"] == "assistant":
                    prompt = cf.render(messages[:i], tools, fmt, add_generation_prompt=True)
                    turn = cf.render(messages[: i + 1], tools, fmt)[len(prompt) :]
                    content, calls = cf.parse_tool_calls(turn, fmt)
                    assert content == msg["content"]
                    assert [c["function"] for c in calls] == [
                        c["function"] for c in msg.get("tool_calls") or []
                    ]


def test_rows_are_trl_tool_calling_rows(tok, fake_samples, tmp_path):
    result = build(tok, tmp_path, "samples", samples_dir=fake_samples)
    row = next(r for r in read_rows(result.out)["train"] if r["meta"]["template"] == "find_definition")
    roles = [m["role"] for m in row["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool", "assistant", "tool", "assistant"]
    first = row["messages"][2]
    assert first["content"].startswith("Search for the") and len(first["tool_calls"]) == 2
    assert (
        first["tool_calls"][0]["type"] == "function" and first["tool_calls"][0]["function"]["name"] == "Grep"
    )
    assert [m["tool_call_id"] for m in row["messages"][3:5]] == [c["id"] for c in first["tool_calls"]]
    tools = json.loads(row["tools"])
    assert [t["function"]["name"] for t in tools] == ["Read", "Grep", "Glob", "Bash", "Edit", "Write"]
    meta = row["meta"]
    assert meta["category"] == "code_search" and meta["split_reason"] == "hash" and meta["parts"] == 1
    assert meta["episode_id"].startswith(meta["session_id"]) and meta["tokens"] > 0
    assert len(meta["tool_use_ids"]) == 3 and all(meta["tool_use_ids"])
    rendered = tok.apply_chat_template(row["messages"], tools=tools, tokenize=True, return_dict=False)
    assert len(rendered) == meta["tokens"]


def test_same_inputs_and_seed_give_a_byte_identical_dataset(tok, fake_samples, tmp_path):
    a = build(tok, tmp_path, "samples", samples_dir=fake_samples, out=tmp_path / "a")
    b = build(tok, tmp_path, "samples", samples_dir=fake_samples, out=tmp_path / "b")
    names = sorted(p.name for p in a.out.iterdir())
    assert names == sorted(p.name for p in b.out.iterdir()) and "manifest.json" in names
    for name in names:
        assert (a.out / name).read_bytes() == (b.out / name).read_bytes(), name
    manifest = json.loads((a.out / "manifest.json").read_text())
    assert str(tmp_path) not in json.dumps(manifest)  # no absolute paths, no timestamps
    assert manifest["files"]["train.jsonl"] and manifest["tools"]["Read"] == 6


def test_splits_by_session_with_held_out_templates_only_in_test(tok, fake_samples, tmp_path):
    for seed in (0, 1, 7):
        out = build(
            tok, tmp_path, "samples", samples_dir=fake_samples, seed=seed, out=tmp_path / f"s{seed}"
        ).out
        rows = read_rows(out)
        sessions = {s: {r["meta"]["session_id"] for r in rows[s]} for s in SPLITS}
        assert not sessions["train"] & sessions["validation"]
        assert not sessions["train"] & sessions["test"]
        assert not sessions["validation"] & sessions["test"]
        held = [r for s in SPLITS for r in rows[s] if r["meta"]["template"] == "count_rows"]
        assert len(held) == 3 and all(r["meta"]["split"] == "test" for r in held)
        assert all(r["meta"]["split_reason"] == "heldout_template" for r in held)
        for s in SPLITS:
            assert all(r["meta"]["split"] == s for r in rows[s])


def test_long_outputs_are_cut_and_long_episodes_split_or_dropped_and_counted(tok, tmp_path):
    long_output = make_episode(
        [
            (
                "Show the log.",
                "Bash",
                {"command": "cat build.log"},
                "\n".join(f"step {i} ok" for i in range(2000)),
                False,
                0,
            )
        ],
        session="s-log",
    )
    many_steps = make_episode(
        [
            (f"Read part {i} of the module.", "Read", {"file_path": f"/w/m{i}.py"}, "x = 1\n" * 40, False, i)
            for i in range(14)
        ],
        session="s-many",
    )
    huge_call = make_episode(
        [
            (
                "Write the file.",
                "Write",
                {"file_path": "/w/big.py", "content": "print('hello world')\n" * 700},
                "ok",
                False,
                0,
            )
        ],
        session="s-huge",
    )
    folder = write_episodes(tmp_path / "eps", [long_output, many_steps, huge_call])
    result = build(tok, tmp_path, str(folder), max_tokens=1800, max_tool_tokens=200)
    c = result.manifest["counts"]
    assert c["over_length"] == {
        "split_episodes": 1,
        "split_parts": c["over_length"]["split_parts"],
        "dropped": 1,
    }
    rows = [r for s in SPLITS for r in read_rows(result.out)[s]]
    assert {r["meta"]["session_id"] for r in rows} == {"s-log", "s-many"}
    assert c["tool_outputs_truncated"] == 1
    log_row = next(r for r in rows if r["meta"]["session_id"] == "s-log")
    cut = log_row["messages"][3]["content"]
    assert "tokens of output cut here" in cut and cut.startswith("step 0 ok") and cut.endswith("step 1999 ok")
    parts = sorted((r for r in rows if r["meta"]["session_id"] == "s-many"), key=lambda r: r["meta"]["part"])
    assert len(parts) == c["over_length"]["split_parts"] >= 2
    assert [r["meta"]["part"] for r in parts] == list(range(len(parts)))
    assert all(r["meta"]["tokens"] <= 1800 and r["meta"]["parts"] == len(parts) for r in parts)
    # Split at turn boundaries: every call and the answer trained exactly once, none cut mid-call.
    trained = [m for r in parts for m in r["messages"] if m["role"] == "assistant" and m.get("train", True)]
    assert trained == [m for m in cf.episode_to_messages(many_steps) if m["role"] == "assistant"]
    later = parts[1]["messages"]
    assert later[:2] == parts[0]["messages"][:2]  # the prompt is repeated
    context = [m for m in later if m.get("train") is False]
    assert context and all(m["role"] == "assistant" for m in context)
    assert any(m["role"] == "tool" and m["content"] == OMITTED_OUTPUT for m in later)
    for r in parts:
        tools = json.loads(r["tools"])
        mask = cf.assistant_mask(tok, r["messages"], tools)
        ids = tok.apply_chat_template(r["messages"], tools=tools, tokenize=True, return_dict=False)
        assert masked_runs(ids, mask, tok.decode) == expected_assistant_parts(r["messages"], "chatml")


def test_filters_and_near_duplicates(tok, tmp_path):
    def ep(session, prompt, category, steps=1, error=False, when="2025-06-01T10:00:00Z", final="Done."):
        calls = [
            (f"Step {i}.", "Bash", {"command": f"echo {i}"}, "ok", error and i == 0, i) for i in range(steps)
        ]
        return make_episode(
            calls, prompt=prompt, session=session, final=final, meta={"category": category}, started_at=when
        )

    episodes = [
        ep("a", "Run the tests in module 12", "run_test", steps=3),
        ep("b", "run the  tests in Module 12! ", "run_test", steps=3),  # near-duplicate of a
        ep("c", "Explain the capture pipeline", "explain", steps=0),
        ep("d", "Fix the failing build", "debug", steps=2, error=True),
        ep("e", "Plan the storage migration", "plan", steps=2, when="2024-01-05T09:00:00Z"),
        ep("f", "Look up the schema version", "lookup", steps=1, final=None),
        ep("g", "Explain the hook latency budget", "explain", steps=2),
    ]
    folder = write_episodes(tmp_path / "eps", episodes)
    m = build(tok, tmp_path, str(folder), out=tmp_path / "all").manifest
    assert m["counts"]["filtered_out"] == {"no_final_answer": 1}
    assert m["counts"]["near_duplicates"] == 1 and m["counts"]["episodes_kept"] == 5
    m = build(
        tok,
        tmp_path,
        str(folder),
        out=tmp_path / "filtered",
        min_steps=1,
        categories=("run_test", "debug", "plan"),
        since="2025-01-01",
        until="2025-12-31",
        exclude_errors=True,
    ).manifest
    assert m["counts"]["filtered_out"] == {
        "no_final_answer": 1,
        "min_steps": 1,
        "category": 1,
        "date_range": 1,
        "errors": 1,
    }
    kept = [r for s in SPLITS for r in read_rows(tmp_path / "filtered")[s]]
    assert [r["meta"]["session_id"] for r in kept] == ["a"]
    assert m["options"]["categories"] == ["debug", "plan", "run_test"]


def test_mcp_tool_schemas_are_inferred_from_use(tok, tmp_path):
    episodes = [
        make_episode(
            [("Get it.", "mcp__linear__get_issue", {"id": "ENG-1", "full": True}, "{}", False, 0)],
            session="m1",
        ),
        make_episode(
            [("Get it.", "mcp__linear__get_issue", {"id": "ENG-2", "limit": 3}, "{}", False, 0)],
            session="m2",
            prompt="Another issue please",
        ),
    ]
    out = build(tok, tmp_path, str(write_episodes(tmp_path / "eps", episodes))).out
    rows = [r for s in SPLITS for r in read_rows(out)[s]]
    assert len(rows) == 2
    for row in rows:
        tools = {t["function"]["name"]: t["function"] for t in json.loads(row["tools"])}
        assert list(tools)[:6] == ["Read", "Grep", "Glob", "Bash", "Edit", "Write"]
        mcp = tools["mcp__linear__get_issue"]
        assert mcp["description"] == "MCP tool get_issue of the linear server"
        assert mcp["parameters"]["properties"] == {
            "full": {"type": "boolean"},
            "id": {"type": "string"},
            "limit": {"type": "integer"},
        }
        assert mcp["parameters"]["required"] == ["id"]  # the only argument every call passed


def test_plan_format_rows(tok, fake_samples, tmp_path):
    result = build(tok, tmp_path, "samples", samples_dir=fake_samples, fmt="plan")
    assert result.out.name == "ds" and result.manifest["format"] == "plan"
    rows = [r for s in SPLITS for r in read_rows(result.out)[s]]
    assert len(rows) == 12
    row = next(r for r in rows if r["meta"]["template"] == "run_tests")
    assert set(row) == {"prompt", "reasoning_chain", "tool_sequence", "response", "category", "meta"}
    assert row["prompt"].startswith("Run the") and row["response"].startswith("One ")
    assert row["reasoning_chain"] == ["Run them.", "Look at the failing test."]
    first = row["tool_sequence"][0]
    assert first["tool"] == "Bash" and first["reasoning"] == "Run them." and first["outcome"] == "error"
    assert first["input"]["command"].startswith("pytest") and first["output"].startswith("Error")
    assert row["tool_sequence"][1]["outcome"] == "ok" and row["category"] == "run_test"


def test_store_source_folds_first_and_cli_writes_under_the_home(tok, data_home):
    write_manual_trace(
        ManualTrace(
            prompt="List the Python files",
            calls=[
                ManualCall(
                    tool="Glob", reason="Find them.", input={"pattern": "**/*.py"}, result="a.py\nb.py"
                )
            ],
            final_answer="There are two: a.py and b.py.",
        )
    )
    assert not (data_home / "episodes").exists()  # not folded yet
    result = runner.invoke(app, ["build-dataset", "--max-tool-tokens", "200"])
    assert result.exit_code == 0, result.output
    out = data_home / "datasets" / "store-messages"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["episodes_read"] == 1 and sum(manifest["counts"]["rows"].values()) == 1
    assert manifest["options"]["max_tool_tokens"] == 200 and manifest["source"]["kind"] == "store"
    assert "store-messages" in result.output and "1 kept" in result.output
    bad = runner.invoke(app, ["build-dataset", "--source", str(data_home / "missing")])
    assert bad.exit_code == 1 and "not 'store', 'samples'" in bad.output


def test_source_errors_and_a_home_as_path(tok, tmp_path):
    with pytest.raises(DatasetError, match="no sample traces"):
        build(tok, tmp_path, "samples", samples_dir=tmp_path / "nothing")
    with pytest.raises(DatasetError, match="--format"):
        build(tok, tmp_path, "store", fmt="text")
    if (FIXTURES / "transcripts").is_dir():
        from claude_rl.episodes.importer import import_transcripts

        other = tmp_path / "other-home"
        import_transcripts([FIXTURES / "transcripts" / "spotter__tool_heavy.jsonl"], other, workers=1)
        m = build(tok, tmp_path, str(other)).manifest
        assert m["source"]["kind"] == "path" and m["counts"]["episodes_read"] >= 1
