"""The one place that knows how a conversation with tools becomes text (and tokens).

Training (SFT and GRPO), the GGUF export and the local runtime all render through the templates
here, so a tool call looks the same everywhere. Two formats:

- ``chatml`` (the default model, SmolLM2): ``<|im_start|>role\\n...<|im_end|>\\n``. The system turn
  lists the tools inside ``<tools>``, one compact signature line each
  (``Grep(pattern: string, path?: string, ...): description``); an assistant turn is its text, then
  each call as ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``; every tool result
  gets its own ``<|im_start|>tool`` turn. SmolLM2's shipped template drops tools and tool calls
  without a word, which is why the project owns its template.
- ``llama3`` (Llama 3.1): headers ``<|start_header_id|>role<|end_header_id|>\\n\\n``, turns end with
  ``<|eot_id|>``, tool results in the ``ipython`` role, calls in Llama 3.1's JSON convention
  ``{"name": ..., "parameters": {...}}``, one per line (Meta's template allows one call per turn;
  this one allows several, for Claude's parallel calls).

Both templates mark the assistant's part of each assistant turn (text, calls, end-of-turn token)
with ``{% generation %}``, so ``return_assistant_tokens_mask`` (TRL's ``assistant_only_loss``)
trains on exactly those tokens; the newline after ``<|im_end|>`` stays outside. They are
prefix-preserving (rendering ``messages[:k]`` gives a prefix of rendering ``messages``), render the
same tool list whether tools come as JSON schemas or as Python functions (name, description,
parameters only), and an assistant message with ``"train": false`` is rendered without the markers
(context that is not trained on, used for the later parts of a split episode).

Pure functions and template strings: importing this module imports nothing heavy (jinja2 is
imported when something is rendered; transformers only by the functions that take a tokenizer).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from claude_rl.schema import Episode, ToolCall

DEFAULT_SYSTEM_PROMPT = (
    "You are a coding agent working in the user's project. Use the tools to read files, search the "
    "code, run commands and make edits. Before each tool call, say briefly why you make it. When you "
    "have what you need, answer the user directly."
)

# No placeholder example call here: a small model copies ``{"name": <tool name>, ...}`` verbatim
# (measured: an early SFT run of the default model wrote exactly that instead of a call).
_CHATML_TOOLS_INTRO = (
    '\n\n# Tools\n\nTo call a tool, write a JSON object with its "name" and its "arguments" (an '
    "object) between <tool_call> and </tool_call> tags. Each result comes back in a tool turn. "
    "The tools (arguments marked ? are optional):\n<tools>"
)
_LLAMA3_TOOLS_INTRO = (
    "\n\nYou have access to the following functions (arguments marked ? are optional). To call a "
    'function, respond with JSON: {"name": function name, "parameters": dictionary of argument name '
    "and its value}. Do not use variables. For several calls, write one JSON object per line.\n\n"
)


def _lit(text: str) -> str:
    """A Jinja string literal (JSON escapes are valid Jinja escapes)."""
    return json.dumps(text)


# The templates. All literal output is inside {{ }} and every tag trims the whitespace before it,
# so they render the same with or without trim_blocks/lstrip_blocks (transformers sets both;
# llama.cpp's engine need not). @SYSTEM@ and @TOOLS_INTRO@ are filled in below.
_PREAMBLE = r"""
{%- if messages and messages[0].role == 'system' -%}
  {%- set system_message = messages[0].content or '' -%}
  {%- set loop_messages = messages[1:] -%}
{%- else -%}
  {%- set system_message = @SYSTEM@ -%}
  {%- set loop_messages = messages -%}
{%- endif -%}
{#- One tool as the model sees it, as a compact signature line:
    Name(required: type, optional?: type, mode?: "a"|"b"): description.
    Only names, types, enums and required-ness: a JSON schema with per-argument descriptions costs
    ~4x the tokens (Grep alone ~340) and the rows are mostly system prompt then. The same line
    whether the tool came as {"type": "function", "function": {...}} (datasets), as a bare function
    schema, or from a Python function (TRL, via transformers' get_json_schema, whose docstring
    descriptions and "return" entry are left out here). -#}
{%- macro arg_type(spec) -%}
  {%- if spec.enum is defined and spec.enum -%}
    {%- for value in spec.enum -%}
      {%- if not loop.first -%}{{- '|' }}{%- endif -%}{{- value | tojson }}
    {%- endfor -%}
  {%- elif spec.type is defined and spec.type is string -%}{{- spec.type }}
  {%- elif spec.type is defined and spec.type -%}{{- spec.type | join('|') }}
  {%- else -%}{{- 'any' }}
  {%- endif -%}
{%- endmacro -%}
{%- macro tool_line(tool) -%}
  {%- set fn = tool.function if tool.function is defined else tool -%}
  {%- set params = fn.parameters or {} -%}
  {%- set required = params.required or [] -%}
  {{- fn.name + '(' }}
  {%- for key, spec in (params.properties or {}).items() -%}
    {%- if not loop.first -%}{{- ', ' }}{%- endif -%}
    {{- key + ('' if key in required else '?') + ': ' + arg_type(spec) }}
  {%- endfor -%}
  {{- ')' }}
  {%- if fn.description -%}{{- ': ' + fn.description }}{%- endif -%}
{%- endmacro -%}
{%- macro call_json(call, key) -%}
  {%- set fn = call.function if call.function is defined else call -%}
  {%- if fn.arguments is string -%}
    {{- '{"name": ' + (fn.name | tojson) + ', "' + key + '": ' + fn.arguments + '}' }}
  {%- else -%}
    {{- {'name': fn.name, key: fn.arguments or {}} | tojson }}
  {%- endif -%}
{%- endmacro -%}
{%- macro text(content) -%}
  {%- if content is string -%}{{- content }}{%- elif content -%}{{- content | tojson }}{%- endif -%}
{%- endmacro -%}
"""

CHATML_TEMPLATE = (
    (
        _PREAMBLE
        + r"""
{%- macro assistant_body(message) -%}
  {%- if message.content -%}{{- message.content }}{%- endif -%}
  {%- for call in message.tool_calls or [] -%}
    {%- if message.content or not loop.first -%}{{- '\n' }}{%- endif -%}
    {{- '<tool_call>\n' + call_json(call, 'arguments') + '\n</tool_call>' }}
  {%- endfor -%}
  {{- '<|im_end|>' }}
{%- endmacro -%}
{{- '<|im_start|>system\n' + system_message }}
{%- if tools -%}
  {{- @TOOLS_INTRO@ }}
  {%- for tool in tools -%}{{- '\n' + tool_line(tool) }}{%- endfor -%}
  {{- '\n</tools>' }}
{%- endif -%}
{{- '<|im_end|>\n' }}
{%- for message in loop_messages -%}
  {%- if message.role == 'assistant' -%}
    {{- '<|im_start|>assistant\n' }}
    {%- if message.train is defined and not message.train -%}
      {{- assistant_body(message) }}
    {%- else -%}
      {%- generation -%}{{- assistant_body(message) }}{%- endgeneration -%}
    {%- endif -%}
    {{- '\n' }}
  {%- else -%}
    {{- '<|im_start|>' + message.role + '\n' + text(message.content) + '<|im_end|>\n' }}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' }}{%- endif -%}
"""
    )
    .replace("@SYSTEM@", _lit(DEFAULT_SYSTEM_PROMPT))
    .replace("@TOOLS_INTRO@", _lit(_CHATML_TOOLS_INTRO))
    .strip()
)

LLAMA3_TEMPLATE = (
    (
        "{{- bos_token or '' }}"
        + _PREAMBLE
        + r"""
{%- macro assistant_body(message) -%}
  {%- if message.content -%}{{- message.content }}{%- endif -%}
  {%- for call in message.tool_calls or [] -%}
    {%- if loop.first and message.content -%}{{- '\n\n' }}{%- elif not loop.first -%}{{- '\n' }}{%- endif -%}
    {{- call_json(call, 'parameters') }}
  {%- endfor -%}
  {{- '<|eot_id|>' }}
{%- endmacro -%}
{{- '<|start_header_id|>system<|end_header_id|>\n\n' }}
{%- if tools -%}{{- 'Environment: ipython\n\n' }}{%- endif -%}
{{- system_message }}
{%- if tools -%}
  {{- @TOOLS_INTRO@ }}
  {%- for tool in tools -%}
    {%- if not loop.first -%}{{- '\n' }}{%- endif -%}
    {{- tool_line(tool) }}
  {%- endfor -%}
{%- endif -%}
{{- '<|eot_id|>' }}
{%- for message in loop_messages -%}
  {%- if message.role == 'assistant' -%}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
    {%- if message.train is defined and not message.train -%}
      {{- assistant_body(message) }}
    {%- else -%}
      {%- generation -%}{{- assistant_body(message) }}{%- endgeneration -%}
    {%- endif -%}
  {%- else -%}
    {%- set role = 'ipython' if message.role == 'tool' else message.role -%}
    {{- '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + text(message.content) + '<|eot_id|>' }}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif -%}
"""
    )
    .replace("@SYSTEM@", _lit(DEFAULT_SYSTEM_PROMPT))
    .replace("@TOOLS_INTRO@", _lit(_LLAMA3_TOOLS_INTRO))
    .strip()
)

# A tag opens a call only where a JSON object follows it. The policy learned to quote the tag in
# its prose ("the readings column is `<tool_call>`."); read as an opening, the quote swallowed the
# real call written after it, that call failed to parse and greedy runs looped on the error to the
# turn limit (measured: README "RL phase"). The runtime, the reward and TRL's parser (the response
# template below) all read calls by this one rule.
CHATML_CALL_OPEN = r"<tool_call>(?=\s*\{)"

# Response templates for transformers' ``parse_response`` (TRL's GRPO tool loop): where the
# assistant turn starts, tool calls as repeated JSON regions, the rest is content up to the end token.
CHATML_RESPONSE_TEMPLATE: dict[str, Any] = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open_pattern": CHATML_CALL_OPEN,
            "close_pattern": r"</tool_call>\s*",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text"},
    },
}
LLAMA3_RESPONSE_TEMPLATE: dict[str, Any] = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "fields": {
        "tool_calls": {
            "open_pattern": r'\{"name":\s*"(?P<name>[^"]+)",\s*"parameters":\s*',
            # Compact JSON never holds a raw newline: a call ends at "}" + newline or the end token.
            "close_pattern": r"\}(?:[ \t]*\n|(?=<\|eot_id\|>)|$)",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": {"name": "{name}", "arguments": "{content}"}},
        },
        "content": {"close_pattern": r"<\|eot_id\|>\s*", "content": "text"},
    },
}


@dataclass(frozen=True)
class ChatFormat:
    name: str
    template: str
    response_template: dict[str, Any]
    end_token: str  # ends every turn; the assistant's is trained
    assistant_header: str  # the generation prompt
    tool_call_key: str  # "arguments" or "parameters"
    bos_token: str = ""
    special_tokens: tuple[str, ...] = field(default_factory=tuple)


FORMATS: dict[str, ChatFormat] = {
    "chatml": ChatFormat(
        name="chatml",
        template=CHATML_TEMPLATE,
        response_template=CHATML_RESPONSE_TEMPLATE,
        end_token="<|im_end|>",
        assistant_header="<|im_start|>assistant\n",
        tool_call_key="arguments",
        special_tokens=("<|im_start|>", "<|im_end|>"),
    ),
    "llama3": ChatFormat(
        name="llama3",
        template=LLAMA3_TEMPLATE,
        response_template=LLAMA3_RESPONSE_TEMPLATE,
        end_token="<|eot_id|>",
        assistant_header="<|start_header_id|>assistant<|end_header_id|>\n\n",
        tool_call_key="parameters",
        bos_token="<|begin_of_text|>",
        special_tokens=("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
}

_LLAMA3_NAME = re.compile(r"llama[-_ ]?3", re.I)


def format_for(tokenizer_or_name: Any) -> str:
    """``chatml`` or ``llama3``: from a model name/path, or from the special tokens of a tokenizer."""
    if isinstance(tokenizer_or_name, str):
        return "llama3" if _LLAMA3_NAME.search(tokenizer_or_name) else "chatml"
    vocab: Any = {}
    get_vocab = getattr(tokenizer_or_name, "get_vocab", None)
    if callable(get_vocab):
        vocab = get_vocab()
    if "<|start_header_id|>" in vocab and "<|eot_id|>" in vocab:
        return "llama3"
    if "<|im_start|>" in vocab and "<|im_end|>" in vocab:
        return "chatml"
    name = getattr(tokenizer_or_name, "name_or_path", "") or ""
    return format_for(str(name))


def strip_generation_markers(template: str) -> str:
    """The template without ``{% generation %}`` tags (for engines that do not know them: llama.cpp)."""
    return re.sub(r"\{%-?\s*(?:end)?generation\s*-?%\}", "", template)


# --- rendering without transformers -----------------------------------------------------------


@lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    """The template compiled the way transformers compiles chat templates (same options and filters)."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _Generation(Extension):  # {% generation %}: renders its body; transformers also records where
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys=False
    ):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def _tool_schemas(tools: Iterable[Any] | None) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    out = []
    for tool in tools:
        if callable(tool):  # a Python function, the way TRL passes tools: same conversion as transformers
            from transformers.utils import get_json_schema

            tool = get_json_schema(tool)
        out.append(tool)
    return out


def render(
    messages: list[dict[str, Any]],
    tools: Iterable[Any] | None = None,
    fmt: str = "chatml",
    *,
    add_generation_prompt: bool = False,
    bos_token: str | None = None,
) -> str:
    """The text ``tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)`` gives with
    the project's template for ``fmt`` (tested equal), without loading a tokenizer."""
    spec = FORMATS[fmt]
    return _compiled(spec.template).render(
        messages=messages,
        tools=_tool_schemas(tools),
        add_generation_prompt=add_generation_prompt,
        bos_token=spec.bos_token if bos_token is None else bos_token,
        eos_token=spec.end_token,
    )


def render_tool_call(name: str, arguments: dict[str, Any] | str, fmt: str = "chatml") -> str:
    """One call as the assistant writes it (the text between the framing of its turn)."""
    spec = FORMATS[fmt]
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    body = f'{{"name": {json.dumps(name, ensure_ascii=False)}, "{spec.tool_call_key}": {args}}}'
    return f"<tool_call>\n{body}\n</tool_call>" if fmt == "chatml" else body


# --- episodes → messages ----------------------------------------------------------------------

OUTPUT_CUT_MARKER = "[... {n} {unit} of output cut here ...]"
NO_OUTPUT = "(no output)"
UNANSWERED = "(no result: the call was interrupted before it returned)"


def truncate_middle(text: str, limit: int, tokenizer: Any = None) -> tuple[str, int]:
    """Keep the head and the tail of ``text`` within ``limit`` tokens of ``tokenizer`` (characters
    when None), with a visible marker saying how much was cut. Returns (text, units cut)."""
    unit = "tokens" if tokenizer is not None else "characters"
    if tokenizer is None:
        n = len(text)
        if n <= limit:
            return text, 0
        keep = max(limit - 40, 2)
        head, tail = keep - keep // 2, keep // 2
        cut = n - head - tail
        marker = OUTPUT_CUT_MARKER.format(n=cut, unit=unit)
        return f"{text[:head]}\n{marker}\n{text[n - tail :] if tail else ''}", cut
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = enc["offset_mapping"]
    n = len(offsets)
    if n <= limit:
        return text, 0
    keep = max(limit - 16, 2)  # room for the marker
    head, tail = keep - keep // 2, keep // 2
    cut = n - head - tail
    head_end = offsets[head - 1][1]
    tail_start = offsets[n - tail][0] if tail else len(text)
    marker = OUTPUT_CUT_MARKER.format(n=cut, unit=unit)
    return f"{text[:head_end]}\n{marker}\n{text[tail_start:]}", cut


def tool_result_text(call: ToolCall) -> str:
    """A call's result as the model reads it; a failed call says so."""
    if call.status == "unanswered":
        return UNANSWERED
    text = call.output if call.output is not None else ""
    if call.is_error or call.status == "error":
        head = text.lstrip().lower()
        if not (head.startswith("error") or head.startswith("<tool_use_error>")):
            text = f"Error: {text}" if text else "Error (no message)"
    return text if text.strip() else NO_OUTPUT


def _groups(episode: Episode) -> list[list[Any]]:
    """Steps grouped by assistant message: consecutive steps sharing a parallel group."""
    groups: list[list[Any]] = []
    for step in episode.steps:
        g = step.call.parallel_group
        if groups and g is not None and groups[-1][-1].call.parallel_group == g:
            groups[-1].append(step)
        else:
            groups.append([step])
    return groups


def episode_to_messages(
    episode: Episode,
    max_tool_chars: int | None = None,
    *,
    system: str | None = DEFAULT_SYSTEM_PROMPT,
) -> list[dict[str, Any]]:
    """The episode as a chat: system, user prompt, per assistant message its stated reasons and
    calls followed by one tool turn per call, then the final answer (when there is one)."""
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": episode.prompt})
    for group in _groups(episode):
        reasons = list(dict.fromkeys(s.reason.strip() for s in group if s.reason and s.reason.strip()))
        calls = []
        results = []
        for step in group:
            call = step.call
            call_id = call.tool_use_id or f"call_{episode.index}_{step.index}"
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": dict(call.input)},
                }
            )
            text = tool_result_text(call)
            if max_tool_chars is not None:
                text, _ = truncate_middle(text, max_tool_chars)
            results.append({"role": "tool", "tool_call_id": call_id, "name": call.name, "content": text})
        messages.append({"role": "assistant", "content": "\n\n".join(reasons), "tool_calls": calls})
        messages.extend(results)
    if episode.final_answer and episode.final_answer.strip():
        messages.append({"role": "assistant", "content": episode.final_answer.strip()})
    return messages


def opening_turn_text(messages: list[dict[str, Any]], fmt: str = "chatml") -> str | None:
    """The first assistant turn of ``messages`` as the model writes it after the generation
    prompt: its text and calls, through the turn's end token (what a completion of the prompt
    before it would be, token for token once tokenized). None when the first assistant turn makes
    no tool call (or there is none). The template is prefix-preserving (tested), so this is the
    rendered chat up to that turn less the rendered prompt before it."""
    first = next((k for k, m in enumerate(messages) if m.get("role") == "assistant"), None)
    if first is None or not messages[first].get("tool_calls"):
        return None
    head = render(messages[:first], fmt=fmt, add_generation_prompt=True)
    full = render(messages[: first + 1], fmt=fmt)
    if not full.startswith(head):
        raise ValueError("the chat template is not prefix-preserving for this chat")
    tail = full[len(head) :]
    end = FORMATS[fmt].end_token
    return tail[: tail.index(end) + len(end)]


def tool_inputs(messages: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Tool name → the arguments it was called with, over the assistant messages (for schemas)."""
    seen: dict[str, list[dict[str, Any]]] = {}
    for m in messages:
        for call in m.get("tool_calls") or []:
            fn = call.get("function", call)
            args = fn.get("arguments")
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except ValueError:
                    args = {}
            seen.setdefault(fn["name"], []).append(args if isinstance(args, dict) else {})
    return seen


# --- parsing what the model wrote -------------------------------------------------------------

_CHATML_CALL = re.compile(CHATML_CALL_OPEN + r"\s*(.*?)\s*(?:</tool_call>|\Z)", re.S)
# Left in the content, these were meant as calls: a block opened on JSON that did not parse, or a
# tagged block with something other than JSON in it. A lone tag in the prose is text.
_CHATML_ATTEMPT = re.compile(
    CHATML_CALL_OPEN + r".*?(?:</tool_call>|\Z)|<tool_call>(?:(?!<tool_call>).)*?</tool_call>", re.S
)


def _as_call(obj: Any, key: str) -> dict[str, Any] | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get(key, obj.get("arguments", obj.get("parameters", {})))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return None
    return {"type": "function", "function": {"name": obj["name"], "arguments": args}}


def parse_tool_calls(text: str, fmt: str = "chatml") -> tuple[str, list[dict[str, Any]]]:
    """An assistant turn's text → (its content, its tool calls), the inverse of rendering it.

    ``text`` is what follows the assistant header (generated text), with or without the end token.
    A call whose JSON does not parse, or has no name, stays in the content as text.
    """
    spec = FORMATS[fmt]
    end = text.find(spec.end_token)
    if end >= 0:
        text = text[:end]
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    if fmt == "chatml":
        pos = 0
        for m in _CHATML_CALL.finditer(text):
            call = None
            try:
                call = _as_call(json.loads(m.group(1)), spec.tool_call_key)
            except ValueError:
                pass
            kept.append(text[pos : m.start()])
            if call is None:
                kept.append(m.group(0))
            else:
                calls.append(call)
            pos = m.end()
        kept.append(text[pos:])
    else:
        decoder = json.JSONDecoder()
        pos = 0
        i = text.find('{"name"')
        while i >= 0:
            try:
                obj, stop = decoder.raw_decode(text, i)
            except ValueError:
                obj, stop = None, i + 1
            call = _as_call(obj, spec.tool_call_key)
            if call is not None:
                kept.append(text[pos:i])
                calls.append(call)
                pos = stop
            i = text.find('{"name"', max(stop, i + 1))
        kept.append(text[pos:])
    content = "".join(kept).strip()
    return content, calls


def unparsed_calls(content: str, fmt: str = "chatml") -> list[str]:
    """The tool-call attempts ``parse_tool_calls`` left in ``content`` because they did not parse."""
    if fmt == "chatml":
        return _CHATML_ATTEMPT.findall(content)
    i = content.find('{"name"')
    return [content[i:]] if i >= 0 else []


# --- tokenizers -------------------------------------------------------------------------------


def assistant_mask(tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None) -> list[int]:
    """1 for each token the loss trains on (the assistant's text, calls and end token), else 0."""
    out = tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    return list(out["assistant_masks"])


def apply_to_tokenizer(tokenizer: Any, fmt: str | None = None) -> Any:
    """Give ``tokenizer`` the project's chat template for ``fmt`` (detected when None), its end
    token as EOS, and the response template TRL's GRPO tool loop parses generations with."""
    fmt = fmt or format_for(tokenizer)
    spec = FORMATS[fmt]
    tokenizer.chat_template = spec.template
    vocab = tokenizer.get_vocab()
    if spec.end_token in vocab and tokenizer.eos_token != spec.end_token:
        tokenizer.eos_token = spec.end_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.response_template = json.loads(json.dumps(spec.response_template))
    return tokenizer
