"""The project's chat format: templates, rendering, tool-call parsing and the loss mask."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURES

from claude_rl import chat_format as cf
from claude_rl.schema import Episode, Provenance, Step, ToolCall
from claude_rl.tools.schemas import BUILTIN, schemas_for

TRANSCRIPTS = FIXTURES / "transcripts"
needs_fixtures = pytest.mark.skipif(not TRANSCRIPTS.is_dir(), reason="../shared/fixtures is not there")


def make_episode(
    steps: list[tuple[str | None, str, dict, str, bool, int | None]],
    *,
    prompt: str = "Where is the config loaded, and is there a test for it?",
    final: str | None = "It is loaded in `claude_rl/capture.py`; no test covers it yet.",
    session: str = "s-hand",
    index: int = 0,
    meta: dict | None = None,
    started_at: str | None = "2025-06-01T10:00:00.000Z",
) -> Episode:
    """steps: (reason, tool, input, output, is_error, parallel_group)."""
    return Episode(
        episode_id=f"{session}:{index}",
        session_id=session,
        index=index,
        prompt=prompt,
        started_at=started_at,
        steps=[
            Step(
                index=i,
                reason=reason,
                call=ToolCall(
                    tool_use_id=f"toolu_{session}_{index}_{i}",
                    name=tool,
                    input=inp,
                    output=out,
                    is_error=err,
                    status="error" if err else "ok",
                    parallel_group=group,
                ),
            )
            for i, (reason, tool, inp, out, err, group) in enumerate(steps)
        ],
        final_answer=final,
        provenance=Provenance(session_id=session),
        meta=meta,
    )


def two_call_episode() -> Episode:
    """Two calls issued in parallel (one reason), one of them failing, an MCP call, then the answer."""
    return make_episode(
        [
            (
                "Let me find where the config is read and look for tests.",
                "Grep",
                {"pattern": "load_config", "output_mode": "files_with_matches"},
                "claude_rl/capture.py\nclaude_rl/importer.py",
                False,
                0,
            ),
            (None, "Glob", {"pattern": "tests/**/test_config*.py"}, "No files found", False, 0),
            (
                "Reading the loader.",
                "Read",
                {"file_path": "/repo/claude_rl/capture.py", "limit": 40},
                "File does not exist.",
                True,
                1,
            ),
            ("Check the tracker.", "mcp__linear__get_issue", {"id": "ENG-12", "full": True}, "{}", False, 2),
        ]
    )


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    pytest.importorskip("transformers")
    from claude_rl.base_model import load_tokenizer

    return load_tokenizer(home=tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def fixture_episodes(tmp_path_factory) -> list[Episode]:
    if not TRANSCRIPTS.is_dir():
        return []
    from claude_rl.episodes.fold import read_episodes
    from claude_rl.episodes.importer import import_transcripts

    home = tmp_path_factory.mktemp("fixture-home")
    import_transcripts([TRANSCRIPTS], home, workers=1)
    return read_episodes(home)


@pytest.fixture(scope="module")
def conversations(fixture_episodes) -> list[tuple[list[dict], list[dict]]]:
    """(messages, tools) of every fixture episode and the hand-built one."""
    out = []
    for ep in [two_call_episode(), *fixture_episodes]:
        messages = cf.episode_to_messages(ep, max_tool_chars=2000)
        out.append((messages, schemas_for(cf.tool_inputs(messages))))
    return out


def llama3_tokenizer(texts: list[str]):
    """A tiny byte-level BPE tokenizer with Llama 3's special tokens (Llama 3.1 can't be downloaded here)."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
    ]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"
    )
    return cf.apply_to_tokenizer(fast)


def masked_runs(ids: list[int], mask: list[int], decode) -> list[str]:
    runs, cur = [], []
    for token, bit in zip(ids, mask, strict=True):
        if bit:
            cur.append(token)
        elif cur:
            runs.append(decode(cur))
            cur = []
    if cur:
        runs.append(decode(cur))
    return runs


def expected_assistant_parts(messages: list[dict], fmt: str) -> list[str]:
    """What the loss must cover, written out independently of the templates."""
    out = []
    for m in messages:
        if m["role"] != "assistant" or m.get("train") is False:
            continue
        calls = []
        for c in m.get("tool_calls") or []:
            fn = c["function"]
            if fmt == "chatml":
                body = json.dumps({"name": fn["name"], "arguments": fn["arguments"]}, ensure_ascii=False)
                calls.append(f"<tool_call>\n{body}\n</tool_call>")
            else:
                calls.append(
                    json.dumps({"name": fn["name"], "parameters": fn["arguments"]}, ensure_ascii=False)
                )
        content = m.get("content") or ""
        if fmt == "chatml":
            out.append("\n".join(([content] if content else []) + calls) + "<|im_end|>")
        else:
            sep = "\n\n" if content and calls else ""
            out.append(content + sep + "\n".join(calls) + "<|eot_id|>")
    return out


# --- messages from episodes -------------------------------------------------------------------


def test_episode_to_messages_groups_parallel_calls_and_marks_errors():
    messages = cf.episode_to_messages(two_call_episode())
    roles = [m["role"] for m in messages]
    assert roles == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    first = messages[2]
    assert first["content"] == "Let me find where the config is read and look for tests."
    assert [c["function"]["name"] for c in first["tool_calls"]] == ["Grep", "Glob"]
    assert [c["id"] for c in first["tool_calls"]] == [
        messages[3]["tool_call_id"],
        messages[4]["tool_call_id"],
    ]
    assert first["tool_calls"][0]["function"]["arguments"] == {
        "pattern": "load_config",
        "output_mode": "files_with_matches",
    }
    assert messages[3]["name"] == "Grep" and messages[3]["content"].startswith("claude_rl/capture.py")
    assert messages[6]["content"] == "Error: File does not exist."  # the model sees that it failed
    assert messages[-1] == {"role": "assistant", "content": two_call_episode().final_answer}
    no_reason = make_episode([(None, "Bash", {"command": "ls"}, "", False, None)], final=None)
    msgs = cf.episode_to_messages(no_reason, system=None)
    assert msgs[0]["role"] == "user" and msgs[1]["content"] == "" and msgs[2]["content"] == cf.NO_OUTPUT
    assert msgs[-1]["role"] == "tool"  # no final answer recorded: none invented


def test_truncate_middle_keeps_head_and_tail_with_a_marker(tok):
    text = "\n".join(f"line {i}: " + "word " * 8 for i in range(400))
    cut, n = cf.truncate_middle(text, 100, tok)
    assert n > 0 and "tokens of output cut here" in cut
    assert cut.startswith("line 0:") and cut.endswith(text[-30:])
    assert len(tok(cut, add_special_tokens=False)["input_ids"]) <= 100
    assert cf.truncate_middle("short", 100, tok) == ("short", 0)
    chars, n = cf.truncate_middle("x" * 1000, 100)
    assert n > 0 and "characters of output cut here" in chars and len(chars) < 160


# --- the templates ----------------------------------------------------------------------------


def test_golden_rendering_of_a_two_call_turn():
    messages = cf.episode_to_messages(two_call_episode())[:5]
    tool = {"type": "function", "function": {"name": "Grep", "description": "Search.", "parameters": {}}}
    assert cf.render(messages, [tool], "chatml") == (
        "<|im_start|>system\n" + cf.DEFAULT_SYSTEM_PROMPT + cf._CHATML_TOOLS_INTRO + "\n"
        "Grep(): Search.\n</tools><|im_end|>\n"
        "<|im_start|>user\nWhere is the config loaded, and is there a test for it?<|im_end|>\n"
        "<|im_start|>assistant\nLet me find where the config is read and look for tests.\n"
        '<tool_call>\n{"name": "Grep", "arguments": {"pattern": "load_config", "output_mode": '
        '"files_with_matches"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "Glob", "arguments": {"pattern": "tests/**/test_config*.py"}}\n</tool_call>'
        "<|im_end|>\n"
        "<|im_start|>tool\nclaude_rl/capture.py\nclaude_rl/importer.py<|im_end|>\n"
        "<|im_start|>tool\nNo files found<|im_end|>\n"
    )
    llama = cf.render(messages, [tool], "llama3")
    assert llama.startswith(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython"
    )
    assert (
        "<|start_header_id|>assistant<|end_header_id|>\n\nLet me find where the config is read and look for "
        'tests.\n\n{"name": "Grep", "parameters": {"pattern": "load_config", "output_mode": '
        '"files_with_matches"}}\n{"name": "Glob", "parameters": {"pattern": "tests/**/test_config*.py"}}'
        "<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\nclaude_rl/capture.py"
    ) in llama


@needs_fixtures
@pytest.mark.parametrize("fmt", ["chatml", "llama3"])
def test_round_trip_render_then_parse_gives_the_same_calls_for_every_episode(conversations, fmt):
    checked = 0
    for messages, tools in conversations:
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            prompt = cf.render(messages[:i], tools, fmt, add_generation_prompt=True)
            full = cf.render(messages[: i + 1], tools, fmt)
            assert full.startswith(prompt)
            content, calls = cf.parse_tool_calls(full[len(prompt) :], fmt)
            assert content == (m["content"] or "").strip()
            expected = [{"type": "function", "function": c["function"]} for c in m.get("tool_calls") or []]
            assert calls == expected
            checked += len(calls)
    assert checked > 500  # every call of every fixture episode


@needs_fixtures
@pytest.mark.parametrize("fmt", ["chatml", "llama3"])
def test_templates_are_prefix_preserving(conversations, fmt):
    for messages, tools in conversations[:12]:
        full = cf.render(messages, tools, fmt)
        for k in range(1, len(messages)):
            assert full.startswith(cf.render(messages[:k], tools, fmt))


@needs_fixtures
@pytest.mark.parametrize("fmt", ["chatml", "llama3"])
def test_opening_turn_text_is_the_first_assistant_turn_and_parses_to_its_calls(conversations, fmt):
    """What the guided opening forces: the first assistant turn, through the end token, exactly
    as the template renders it after the generation prompt (tools or not), parsing back to that
    turn's calls; None when the first assistant turn calls nothing."""
    end = cf.FORMATS[fmt].end_token
    checked = 0
    for messages, tools in conversations[:40]:
        first = next(k for k, m in enumerate(messages) if m["role"] == "assistant")
        text = cf.opening_turn_text(messages, fmt)
        if not messages[first].get("tool_calls"):
            assert text is None
            continue
        checked += 1
        assert text is not None and text.endswith(end) and text.count(end) == 1
        prompt = cf.render(messages[:first], tools, fmt, add_generation_prompt=True)
        assert cf.render(messages[: first + 1], tools, fmt).startswith(prompt + text)
        content, calls = cf.parse_tool_calls(text, fmt)
        expected = [{"type": "function", "function": c["function"]} for c in messages[first]["tool_calls"]]
        assert calls == expected
        assert content == (messages[first]["content"] or "").strip()
    assert checked >= 10
    plain = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."}]
    assert cf.opening_turn_text(plain, fmt) is None
    assert cf.opening_turn_text(plain[:1], fmt) is None


@needs_fixtures
def test_render_equals_the_tokenizer_template(tok, conversations):
    for messages, tools in conversations:
        assert tok.apply_chat_template(messages, tools=tools, tokenize=False) == cf.render(messages, tools)
        gen = tok.apply_chat_template(messages[:2], tools=tools, tokenize=False, add_generation_prompt=True)
        assert gen == cf.render(messages[:2], tools, add_generation_prompt=True)
    stripped = cf.strip_generation_markers(cf.CHATML_TEMPLATE)
    assert "endgeneration" not in stripped and "{%- generation" not in stripped
    messages, tools = conversations[0]
    assert tok.apply_chat_template(
        messages, tools=tools, tokenize=False, chat_template=stripped
    ) == cf.render(messages, tools)


def test_parse_tool_calls_is_tolerant():
    bad = 'Looking.\n<tool_call>\n{"name": "Read", "arguments": {file_path: 1}\n</tool_call><|im_end|>'
    content, calls = cf.parse_tool_calls(bad, "chatml")
    assert calls == [] and "<tool_call>" in content and "file_path" in content
    cut = (
        'Reading.\n<tool_call>\n{"name": "Read", "arguments": {"file_path": "/a"}}'  # stopped before the tag
    )
    assert cf.parse_tool_calls(cut, "chatml") == (
        "Reading.",
        [{"type": "function", "function": {"name": "Read", "arguments": {"file_path": "/a"}}}],
    )
    assert cf.parse_tool_calls("Just an answer.<|im_end|>\n<|im_start|>user", "chatml") == (
        "Just an answer.",
        [],
    )
    llama = (
        'Let me look.\n\n{"name": "Glob", "parameters": {"pattern": "*.py"}}\n{"name": "Bash", "parameters": '
    )
    content, calls = cf.parse_tool_calls(llama + "<|eot_id|>", "llama3")
    assert [c["function"]["name"] for c in calls] == ["Glob"] and content.startswith("Let me look.")
    assert '{"name": "Bash"' in content  # the malformed second call stays as text


QUOTED_TAG_PROSE = [
    "`app/config/alarms.py` is `<tool_call>`. Checking the readings column.",  # seen in a PPO model's run
    "The readings column is `<tool_call>`.",
    "I call tools with <tool_call> tags, like this:",
    "<tool_call> is the tag.",
]
READ_CALL = {"type": "function", "function": {"name": "Read", "arguments": {"file_path": "/a"}}}


@pytest.mark.parametrize("prose", QUOTED_TAG_PROSE)
def test_a_tag_quoted_in_prose_is_text_and_the_call_after_it_parses(prose):
    """The tag opens a call only where JSON follows it: the quote must not swallow the real call."""
    text = f"{prose}\n{cf.render_tool_call('Read', {'file_path': '/a'})}<|im_end|>"
    assert cf.parse_tool_calls(text, "chatml") == (prose, [READ_CALL])
    assert cf.unparsed_calls(prose) == []  # nothing meant as a call is left behind
    # alone, the quote is an answer; a broken call after it is still an attempt
    assert cf.parse_tool_calls(prose + "<|im_end|>", "chatml") == (prose, [])
    broken = f'{prose}\n<tool_call>\n{{"name": "Read", "arguments": {{"file_path": '
    content, calls = cf.parse_tool_calls(broken, "chatml")
    assert calls == [] and cf.unparsed_calls(content) == [broken[len(prose) + 1 :].strip()]


def test_unparsed_calls_are_json_opened_blocks_or_tagged_blocks_without_json():
    assert cf.unparsed_calls('Looking.\n<tool_call>\n{"name": "Read", "arguments": {x}}\n</tool_call>') == [
        '<tool_call>\n{"name": "Read", "arguments": {x}}\n</tool_call>'
    ]
    assert cf.unparsed_calls("<tool_call>\nRead README.md\n</tool_call>") == [
        "<tool_call>\nRead README.md\n</tool_call>"
    ]
    two = '<tool_call>\n{"name": "Re</tool_call>\n<tool_call>\n{"name": "Gl'
    assert cf.unparsed_calls(two) == ['<tool_call>\n{"name": "Re</tool_call>', '<tool_call>\n{"name": "Gl']
    assert cf.unparsed_calls("Answer: `<tool_call>` then `</tool_call>`? No.") == [
        "<tool_call>` then `</tool_call>"
    ]
    assert cf.unparsed_calls('Done.\n{"name": "Read", "parameters": {', "llama3") == [
        '{"name": "Read", "parameters": {'
    ]
    assert cf.unparsed_calls("Done.", "llama3") == []


def test_python_function_tools_render_like_the_dataset_schemas():
    def Read(file_path: str, offset: int = 0, limit: int = 0) -> str:  # noqa: N802 - the tool's name
        """Read a file from the workspace. Returns its lines with line numbers.

        Args:
            file_path: Absolute path of the file to read
            offset: Line number to start reading from
            limit: Number of lines to read
        """
        return ""

    pytest.importorskip("transformers")
    messages = [{"role": "user", "content": "Read setup.py"}]
    for fmt in cf.FORMATS:
        assert cf.render(messages, [Read], fmt) == cf.render(messages, [BUILTIN["Read"]], fmt)


def test_format_for_names_and_tokenizers(tok):
    assert cf.format_for("smollm2-135m") == "chatml"
    assert cf.format_for("meta-llama/Llama-3.1-8B-Instruct") == "llama3"
    assert cf.format_for("/models/llama3.1-8b") == "llama3"
    assert cf.format_for(tok) == "chatml"
    assert cf.format_for(llama3_tokenizer(["hello world"])) == "llama3"


# --- tokenizers: the shipped template, the mask, TRL's checks --------------------------------


def test_smollm2_shipped_template_drops_tool_calls_and_ours_keeps_them(tok):
    """Why the project owns its template: SmolLM2's own one silently drops tools and tool calls."""
    from transformers import AutoTokenizer

    shipped = AutoTokenizer.from_pretrained(str(Path(tok.name_or_path)), local_files_only=True)
    assert shipped.chat_template != tok.chat_template and "tool" not in shipped.chat_template
    messages = cf.episode_to_messages(two_call_episode())[:5]
    tools = [BUILTIN["Grep"], BUILTIN["Glob"]]
    theirs = shipped.apply_chat_template(messages, tools=tools, tokenize=False)
    ours = tok.apply_chat_template(messages, tools=tools, tokenize=False)
    for needle in ('"pattern": "load_config"', "tests/**/test_config*.py", "<tools>", "Search file contents"):
        assert needle not in theirs
        assert needle in ours
    from trl.chat_template_utils import supports_tool_calling

    assert not supports_tool_calling(shipped)
    assert supports_tool_calling(tok)


def test_loss_mask_covers_exactly_the_assistant_parts(tok):
    messages = cf.episode_to_messages(two_call_episode())
    tools = schemas_for(cf.tool_inputs(messages))
    mask = cf.assistant_mask(tok, messages, tools)
    ids = tok.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=True)["input_ids"]
    runs = masked_runs(ids, mask, tok.decode)
    assert runs == expected_assistant_parts(messages, "chatml")
    trained = "".join(runs)
    for m in messages:
        if m["role"] in ("system", "user", "tool"):
            assert m["content"] not in trained
    # An untrained (context) assistant turn is rendered identically but carries no loss.
    context = [*messages[:2], {**messages[2], "train": False}, *messages[3:]]
    assert cf.render(context, tools) == cf.render(messages, tools)
    runs = masked_runs(ids, cf.assistant_mask(tok, context, tools), tok.decode)
    assert (
        runs == expected_assistant_parts(context, "chatml")
        and len(runs) == len(expected_assistant_parts(messages, "chatml")) - 1
    )


def test_trl_accepts_the_chatml_template_and_parses_generations(tok):
    from trl.chat_template_utils import (
        is_chat_template_prefix_preserving,
        is_chat_template_stop_token_trained,
        parse_response,
        supports_tool_calling,
    )

    assert supports_tool_calling(tok) and is_chat_template_prefix_preserving(tok)
    assert is_chat_template_stop_token_trained(tok)
    assert tok.eos_token == "<|im_end|>" and tok.response_template == cf.CHATML_RESPONSE_TEMPLATE
    messages = cf.episode_to_messages(two_call_episode())
    tools = schemas_for(cf.tool_inputs(messages))
    prompt = tok.apply_chat_template(
        messages[:2], tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    full = tok.apply_chat_template(messages[:3], tools=tools, tokenize=True, return_dict=False)
    parsed = parse_response(tok, full[len(prompt) :], prefix=prompt)
    assert parsed["content"] == messages[2]["content"]
    assert parsed["tool_calls"] == [
        {"type": "function", "function": c["function"]} for c in messages[2]["tool_calls"]
    ]
    broken = tok('<tool_call>\n{"name": "Read", "argu</tool_call><|im_end|>', add_special_tokens=False)[
        "input_ids"
    ]
    assert "tool_calls" not in parse_response(tok, broken, prefix=prompt)  # malformed JSON: plain text
    # TRL's parser reads calls by the runtime's rule: a tag quoted in prose is text
    for prose in QUOTED_TAG_PROSE:
        text = f"{prose}\n{cf.render_tool_call('Read', {'file_path': '/a'})}<|im_end|>"
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert parse_response(tok, ids, prefix=prompt) == {
            "role": "assistant",
            "content": prose,
            "tool_calls": [READ_CALL],
        }
        content, calls = cf.parse_tool_calls(text)
        assert (content, calls) == (prose, [READ_CALL])
        alone = tok(prose + "<|im_end|>", add_special_tokens=False)["input_ids"]
        assert parse_response(tok, alone, prefix=prompt) == {"role": "assistant", "content": prose}


def test_llama3_format_with_a_minimal_tokenizer():
    messages = cf.episode_to_messages(two_call_episode())
    tools = schemas_for(cf.tool_inputs(messages))
    tok3 = llama3_tokenizer([cf.render(messages, tools, "llama3")])
    assert tok3.eos_token == "<|eot_id|>" and tok3.response_template == cf.LLAMA3_RESPONSE_TEMPLATE
    assert tok3.apply_chat_template(messages, tools=tools, tokenize=False) == cf.render(
        messages, tools, "llama3"
    )
    out = tok3.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=True)
    runs = masked_runs(out["input_ids"], cf.assistant_mask(tok3, messages, tools), tok3.decode)
    assert runs == expected_assistant_parts(messages, "llama3")
    from trl.chat_template_utils import (
        is_chat_template_prefix_preserving,
        is_chat_template_stop_token_trained,
        parse_response,
        supports_tool_calling,
    )

    assert supports_tool_calling(tok3) and is_chat_template_prefix_preserving(tok3)
    assert is_chat_template_stop_token_trained(tok3)
    prompt = tok3.apply_chat_template(
        messages[:2], tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    full = tok3.apply_chat_template(messages[:3], tools=tools, tokenize=True, return_dict=False)
    parsed = parse_response(tok3, full[len(prompt) :], prefix=prompt)
    assert parsed["tool_calls"] == [
        {"type": "function", "function": c["function"]} for c in messages[2]["tool_calls"]
    ]


def test_base_model_tokenizer_is_cached_under_the_home_and_paths_load_offline(tok, data_home, monkeypatch):
    from claude_rl import base_model

    folder = Path(tok.name_or_path)
    assert folder.parts[-3:] == ("models", "base", "smollm2-135m")
    assert (folder / "tokenizer.json").is_file() and tok.model_max_length == base_model.DEFAULT_CONTEXT
    again = base_model.load_tokenizer(str(folder))  # any other name or path: local files only
    assert again.chat_template == cf.CHATML_TEMPLATE and len(again) == len(tok)
    fresh = base_model.load_tokenizer()  # the default, into this test's (empty) home
    assert (base_model.base_dir() / "tokenizer.json").is_file() and fresh.chat_template == cf.CHATML_TEMPLATE
    monkeypatch.setattr(base_model, "GGUF_PACKAGE", "no_such_package_for_claude_rl")
    with pytest.raises(base_model.BaseModelMissing, match="make install-train"):
        base_model.default_gguf()


def test_tool_line_is_a_compact_signature_for_schemas_and_python_functions():
    from claude_rl.tools.schemas import BUILTIN

    text = cf.render([{"role": "user", "content": "hi"}], [BUILTIN["Grep"], BUILTIN["Read"]], "chatml")
    assert (
        "\nRead(file_path: string, offset?: integer, limit?: integer): "
        "Read a file from the workspace. Returns its lines with line numbers.\n</tools>"
    ) in text
    assert 'output_mode?: "content"|"files_with_matches"|"count"' in text
    assert "Regular expression to search for" not in text  # argument descriptions are left out

    def lookup(table: str, limit: int = 10) -> str:
        """Look a table up.

        Args:
            table: The table's name.
            limit: How many rows.
        """
        return table

    schema = {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a table up.",
            "parameters": {
                "type": "object",
                "properties": {"table": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["table"],
            },
        },
    }
    for fmt in ("chatml", "llama3"):
        assert cf.render([{"role": "user", "content": "x"}], [lookup], fmt) == cf.render(
            [{"role": "user", "content": "x"}], [schema], fmt
        )
        assert "lookup(table: string, limit?: integer): Look a table up." in cf.render(
            [{"role": "user", "content": "x"}], [schema], fmt
        )
