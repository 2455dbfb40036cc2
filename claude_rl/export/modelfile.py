"""An Ollama ``Modelfile`` next to the GGUF: ``ollama create <name> -f Modelfile`` imports it.

Ollama does not run Jinja: its TEMPLATE is a Go ``text/template`` over ``.System``, ``.Messages``
(``.Role``, ``.Content``, ``.ToolCalls`` with ``.Function.Name``/``.Function.Arguments``) and
``.Tools``. The Go template here is not written by hand: every literal piece of it (turn headers,
end tokens, the tools preamble, the default system prompt, separators between calls) is cut out of
renders of small sentinel conversations through ``claude_rl.chat_format``, so a change of the
project's template carries over, and a change this module cannot express raises ``ExportError``
instead of writing a template that silently disagrees.

What Ollama cannot reproduce exactly, by its design:

- past calls' arguments come from Go's ``json.Marshal`` (no spaces after ``:`` and ``,``, keys
  sorted, ``<>&`` escaped), where the project's template writes Python's ``json.dumps``;
- a tool's arguments are listed in Go's map order (sorted names), not the schema's order;
- Ollama merges consecutive messages of the same role (tool results excepted), joins all system
  messages into ``.System``, and leaves a final assistant message open (a prefill) rather than
  closing it.

Ollama itself is not installable on the build machine: the tests check the file's structure, that
the derived pieces rebuild ``chat_format.render``'s output, and (when a Go toolchain is present)
render the TEMPLATE with Go's ``text/template`` itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from claude_rl.chat_format import DEFAULT_SYSTEM_PROMPT, FORMATS, render, render_tool_call
from claude_rl.export.errors import ExportError

MODELFILE = "Modelfile"

# Sentinels: text no template writes by itself, located in the renders to cut the pieces out.
_S = "@@SYSTEM-7f3a@@"
_U = "@@USER-7f3a@@"
_A = "@@ASSISTANT-7f3a@@"
_R = "@@RESULT-7f3a@@"
# Sentinel tools covering every branch of a tool line: required and optional arguments, an enum,
# a list of types, an argument without a type, no description, no parameters.
_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "tool_1_7f3a",
            "description": "@@DESCRIPTION-1-7f3a@@",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "string"}, "mode": {"type": "string", "enum": ["x", "y"]}},
                "required": ["a"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "tool_2_7f3a",
            "description": "",
            "parameters": {"type": "object", "properties": {"b": {"type": ["integer", "null"]}, "c": {}}},
        },
    },
    {"type": "function", "function": {"name": "tool_3_7f3a", "description": "@@DESCRIPTION-3-7f3a@@"}},
]
_CALLS = [
    {"type": "function", "function": {"name": f"call_{i}_7f3a", "arguments": {"arg": f"@@ARG-{i}@@"}}}
    for i in (1, 2)
]


@dataclass(frozen=True)
class TemplatePieces:
    """The literal text around each variable part of a conversation in one chat format."""

    system_open: str
    system_open_tools: str  # llama3 announces "Environment: ipython" when tools are given
    default_system: str
    tools_intro: str
    tool_separator: str
    tools_outro: str
    system_close: str
    user_open: str
    user_close: str
    tool_open: str
    tool_close: str
    assistant_open: str
    assistant_close: str
    content_call_separator: str  # between the assistant's text and its first call
    call_separator: str  # between two calls
    call_open: str  # around the call's JSON body
    call_close: str
    call_key: str  # "arguments" or "parameters"
    generation_prompt: str


def _cannot(why: str) -> ExportError:
    return ExportError(f"cannot derive the Ollama template from claude_rl.chat_format: {why}")


def _split(text: str, marker: str, what: str) -> tuple[str, str]:
    if text.count(marker) != 1:
        raise _cannot(f"the {what} does not appear once in the render")
    head, tail = text.split(marker)
    return head, tail


def _after(longer: str, prefix: str, what: str) -> str:
    if not longer.startswith(prefix):
        raise _cannot(f"the template is not prefix-preserving ({what})")
    return longer[len(prefix) :]


def _arg_type(spec: dict[str, Any]) -> str:
    if spec.get("enum"):
        return "|".join(json.dumps(v, ensure_ascii=False) for v in spec["enum"])
    kind = spec.get("type")
    if isinstance(kind, str) and kind:
        return kind
    return "|".join(kind) if kind else "any"


def tool_line(tool: dict[str, Any]) -> str:
    """One tool's line as the Go template writes it: ``name(a: type, b?: type): description``.
    ``derive_pieces`` checks it against ``chat_format.render`` on the sentinel tools, so a change of
    the project's tool line stops the export here instead of shipping a different prompt."""
    fn = tool.get("function", tool)
    params = fn.get("parameters") or {}
    required = params.get("required") or []
    args = ", ".join(
        f"{key}{'' if key in required else '?'}: {_arg_type(spec)}"
        for key, spec in (params.get("properties") or {}).items()
    )
    description = f": {fn['description']}" if fn.get("description") else ""
    return f"{fn['name']}({args}){description}"


def derive_pieces(fmt: str = "chatml") -> TemplatePieces:
    """Cut the literal pieces of ``fmt``'s template out of ``chat_format.render`` outputs."""
    spec = FORMATS[fmt]

    def r(messages: list[dict[str, Any]], tools: Any = None, gen: bool = False) -> str:
        # BOS left out: llama.cpp (and so Ollama) adds it from the GGUF's add_bos_token.
        return render(messages, tools, fmt, add_generation_prompt=gen, bos_token="")

    system = [{"role": "system", "content": _S}]
    system_open, system_close = _split(r(system), _S, "system prompt")
    default_render = r([{"role": "user", "content": _U}])
    if not default_render.startswith(system_open + DEFAULT_SYSTEM_PROMPT + system_close):
        raise _cannot("the default system prompt is not where expected")

    system_open_tools, tail = _split(r(system, _TOOLS), _S, "system prompt (with tools)")
    body = _after(tail[::-1], system_close[::-1], "tools")[::-1]  # strip the system turn's close
    lines = [tool_line(t) for t in _TOOLS]
    tools_intro, rest = _split(body, lines[0], "first tool's line (has the tool line format changed?)")
    tool_separator, rest = _split(rest, lines[1], "second tool's line (has the tool line format changed?)")
    between, tools_outro = _split(rest, lines[2], "third tool's line (has the tool line format changed?)")
    one_tool = _after(r(system, _TOOLS[:1]), system_open_tools, "one tool")
    if between != tool_separator or one_tool != _S + tools_intro + lines[0] + tools_outro + system_close:
        raise _cannot("tools are not rendered one after another")

    base = system + [{"role": "user", "content": _U}]
    user_open, user_close = _split(_after(r(base), r(system), "user turn"), _U, "user message")

    text_only = _after(r(base + [{"role": "assistant", "content": _A}]), r(base), "assistant turn")
    assistant_open, assistant_close = _split(text_only, _A, "assistant message")

    c1, c2 = (render_tool_call(c["function"]["name"], c["function"]["arguments"], fmt) for c in _CALLS)
    key = spec.tool_call_key
    bodies = [json.dumps({"name": c["function"]["name"], key: c["function"]["arguments"]}) for c in _CALLS]
    call_open, call_close = _split(c1, bodies[0], "call's JSON")
    if c2 != call_open + bodies[1] + call_close:
        raise _cannot("calls are not framed the same way")

    with_calls = [{"role": "assistant", "content": _A, "tool_calls": _CALLS}]
    turn = _after(r(base + with_calls), r(base), "assistant turn with calls")
    head, rest = _split(turn, c1, "first call")
    if not head.startswith(assistant_open + _A):
        raise _cannot("calls do not follow the assistant's text")
    content_call_separator = head[len(assistant_open + _A) :]
    call_separator, tail = _split(rest, c2, "second call")
    if tail != assistant_close:
        raise _cannot("the assistant turn does not close after its calls")
    # Without text, the first call follows the header directly (no separator).
    calls_only = [{"role": "assistant", "content": "", "tool_calls": _CALLS}]
    calls_only_turn = _after(r(base + calls_only), r(base), "calls only")
    if calls_only_turn != assistant_open + c1 + call_separator + c2 + tail:
        raise _cannot("calls without text are framed differently")

    conv = base + with_calls
    tool_turn = _after(r(conv + [{"role": "tool", "content": _R}]), r(conv), "tool turn")
    tool_open, tool_close = _split(tool_turn, _R, "tool result")
    generation_prompt = _after(r(base, gen=True), r(base), "generation prompt")
    return TemplatePieces(
        system_open=system_open,
        system_open_tools=system_open_tools,
        default_system=DEFAULT_SYSTEM_PROMPT,
        tools_intro=tools_intro,
        tool_separator=tool_separator,
        tools_outro=tools_outro,
        system_close=system_close,
        user_open=user_open,
        user_close=user_close,
        tool_open=tool_open,
        tool_close=tool_close,
        assistant_open=assistant_open,
        assistant_close=assistant_close,
        content_call_separator=content_call_separator,
        call_separator=call_separator,
        call_open=call_open,
        call_close=call_close,
        call_key=key,
        generation_prompt=generation_prompt,
    )


def _go(text: str, trim: bool = False) -> str:
    """A Go template action printing ``text``. A JSON string is a valid Go string literal (its
    escapes are a subset of Go's), so all output text sits inside actions and ``{{-`` can trim the
    layout newlines of the template without touching what it prints."""
    if not text:
        return ""
    return ("{{- " if trim else "{{ ") + json.dumps(text, ensure_ascii=False) + " }}"


def go_template(fmt: str = "chatml") -> str:
    """The TEMPLATE of the Modelfile for ``fmt`` (Go ``text/template``, Ollama's variables)."""
    p = derive_pieces(fmt)
    # tool_line() in Go: Ollama's Properties is a map (visited in sorted key order), Type a list
    # of names, Required a list searched with a nested range (Go templates have no "in").
    tool = "".join(
        [
            "{{ $fn := $tool.Function }}{{ $fn.Name }}",
            _go("("),
            "{{ $first := true }}{{ range $key, $spec := $fn.Parameters.Properties }}",
            "{{ if not $first }}" + _go(", ") + "{{ end }}{{ $first = false }}{{ $key }}",
            "{{ $optional := true }}{{ range $fn.Parameters.Required }}",
            "{{ if eq . $key }}{{ $optional = false }}{{ end }}{{ end }}",
            "{{ if $optional }}" + _go("?") + "{{ end }}",
            _go(": "),
            "{{ if $spec.Enum }}{{ range $n, $v := $spec.Enum }}",
            "{{ if $n }}" + _go("|") + "{{ end }}{{ json $v }}{{ end }}",
            "{{ else if $spec.Type }}{{ range $n, $t := $spec.Type }}",
            "{{ if $n }}" + _go("|") + "{{ end }}{{ $t }}{{ end }}",
            "{{ else }}" + _go("any") + "{{ end }}",
            "{{ end }}",
            _go(")"),
            "{{ if $fn.Description }}" + _go(": ") + "{{ $fn.Description }}{{ end }}",
        ]
    )
    call = (
        _go(p.call_open + '{"name": ')
        + "{{ json $call.Function.Name }}"
        + _go(f', "{p.call_key}": ')
        + "{{ json $call.Function.Arguments }}"
        + _go("}" + p.call_close)
    )
    lines = [
        "{{- /* Generated by claude_rl.export.modelfile from claude_rl.chat_format (" + fmt + "). */ -}}",
        (
            _go(p.system_open, trim=True)
            if p.system_open_tools == p.system_open
            else "{{- if .Tools }}"
            + _go(p.system_open_tools)
            + "{{ else }}"
            + _go(p.system_open)
            + "{{ end }}"
        ),
        "{{- if .System }}{{ .System }}{{ else }}" + _go(p.default_system) + "{{ end }}",
        "{{- if .Tools }}"
        + _go(p.tools_intro)
        + "{{ range $i, $tool := .Tools }}{{ if $i }}"
        + _go(p.tool_separator)
        + "{{ end }}"
        + tool
        + "{{ end }}"
        + _go(p.tools_outro)
        + "{{ end }}",
        _go(p.system_close, trim=True),
        "{{- range $i, $m := .Messages }}",
        "{{- $last := eq (len (slice $.Messages $i)) 1 }}",
        '{{- if eq $m.Role "user" }}' + _go(p.user_open) + "{{ $m.Content }}" + _go(p.user_close),
        '{{- else if eq $m.Role "tool" }}' + _go(p.tool_open) + "{{ $m.Content }}" + _go(p.tool_close),
        '{{- else if eq $m.Role "assistant" }}' + _go(p.assistant_open) + "{{ $m.Content }}",
        "{{- range $j, $call := $m.ToolCalls }}{{ if $j }}"
        + _go(p.call_separator)
        + "{{ else if $m.Content }}"
        + _go(p.content_call_separator)
        + "{{ end }}"
        + call
        + "{{ end }}",
        # A final assistant message is a prefill for the model to continue: Ollama leaves it open.
        "{{- if not $last }}" + _go(p.assistant_close) + "{{ end }}",
        "{{- end }}",
        '{{- if and $last (ne $m.Role "assistant") }}' + _go(p.generation_prompt) + "{{ end }}",
        "{{- end }}",
    ]
    return "\n".join(line for line in lines if line)


def stop_tokens(fmt: str) -> list[str]:
    """The end token first, then the other turn-framing specials (a model that skips its end
    token still stops at the next header)."""
    spec = FORMATS[fmt]
    rest = [t for t in spec.special_tokens if t not in (spec.end_token, spec.bos_token)]
    return [spec.end_token, *rest]


def modelfile_text(gguf_name: str, fmt: str = "chatml", context_length: int | None = None) -> str:
    """The Modelfile for the GGUF ``gguf_name`` (a file name in the same folder).

    Sampling is greedy (temperature 0, no repeat penalty: Ollama's default of 1.1 would change
    the model's choices against what the export's parity checks measured)."""
    template = go_template(fmt)
    if '"""' in template:
        raise ExportError('the Ollama template would contain """, which ends a Modelfile TEMPLATE')
    lines = [
        f"# Ollama model built by claude-rl's GGUF export ({fmt} chat format).",
        f"# Import: ollama create <name> -f {MODELFILE}",
        f"FROM ./{gguf_name}",
        "",
        f'TEMPLATE """{template}"""',
        "",
    ]
    lines += [f"PARAMETER stop {json.dumps(tok)}" for tok in stop_tokens(fmt)]
    lines += ["PARAMETER temperature 0", "PARAMETER repeat_penalty 1"]
    if context_length:
        # Ollama's default context (2-4k tokens) is shorter than the tool schemas plus a few turns.
        lines.append(f"PARAMETER num_ctx {min(int(context_length), 8192)}")
    return "\n".join(lines) + "\n"
