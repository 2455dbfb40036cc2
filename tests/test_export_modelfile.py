"""The Ollama Modelfile. Ollama itself is not installable here: these tests check the file's
structure, that the pieces its template is built from rebuild ``chat_format.render`` exactly, and
(slow tier, when a Go toolchain is installed) render the TEMPLATE with Go's own text/template, with
the same ``json`` function and message/tool shapes as Ollama."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest

from claude_rl.chat_format import FORMATS, render
from claude_rl.export import modelfile, prompts
from claude_rl.export.modelfile import TemplatePieces, derive_pieces, tool_line

FORMAT_NAMES = sorted(FORMATS)


def _ollama_like(
    p: TemplatePieces, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> str:
    """The Go template's logic in Python, on the derived pieces, with Python's JSON spacing: for a
    conversation ending in a user or tool turn it must equal ``chat_format.render``."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    out = (p.system_open_tools if tools else p.system_open) + (system or p.default_system)
    if tools:
        out += p.tools_intro + p.tool_separator.join(tool_line(t) for t in tools) + p.tools_outro
    out += p.system_close
    for m in messages:
        if m["role"] == "user":
            out += p.user_open + m["content"] + p.user_close
        elif m["role"] == "tool":
            out += p.tool_open + m["content"] + p.tool_close
        elif m["role"] == "assistant":
            out += p.assistant_open + (m.get("content") or "")
            for j, call in enumerate(m.get("tool_calls") or []):
                out += p.call_separator if j else (p.content_call_separator if m.get("content") else "")
                fn = call["function"]
                body = json.dumps({"name": fn["name"], p.call_key: fn["arguments"]}, ensure_ascii=False)
                out += p.call_open + body + p.call_close
            out += p.assistant_close
    return out + p.generation_prompt


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_derived_pieces_rebuild_the_project_template(fmt):
    p = derive_pieces(fmt)
    for _name, messages, tools, gen in prompts.CONVERSATIONS:
        if not gen:
            continue
        assert _ollama_like(p, messages, tools) == render(
            messages, tools, fmt, add_generation_prompt=True, bos_token=""
        )


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_modelfile_structure(fmt):
    text = modelfile.modelfile_text("llama-claude-bc-v1-q8_0.gguf", fmt, context_length=16384)
    lines = text.splitlines()
    assert "FROM ./llama-claude-bc-v1-q8_0.gguf" in lines
    body = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M)
    assert body, "TEMPLATE must be one triple-quoted block"
    template = body.group(1)
    assert "{%" not in template and "{#" not in template  # Go template, not Jinja
    # every block action is closed
    opened = len(re.findall(r"\{\{-? ?(?:if|range|with)\b", template))
    assert opened == len(re.findall(r"\{\{-? ?end ?-?\}\}", template))
    for var in (".Messages", ".Tools", ".System", ".ToolCalls", "$call.Function.Arguments"):
        assert var in template
    spec = FORMATS[fmt]
    stops = [json.loads(line.split(" ", 2)[2]) for line in lines if line.startswith("PARAMETER stop ")]
    assert stops[0] == spec.end_token and set(stops) >= {spec.end_token}
    assert "PARAMETER temperature 0" in lines and "PARAMETER repeat_penalty 1" in lines
    assert "PARAMETER num_ctx 8192" in lines  # capped
    # the literal text comes from chat_format, not from this module
    assert json.dumps(spec.assistant_header)[1:-1] in template
    assert json.dumps(FORMATS[fmt].end_token)[1:-1] in template


def test_tool_line_matches_the_template_for_the_parity_tools():
    rendered = render([{"role": "user", "content": "x"}], prompts.TOOLS, "chatml")
    for tool in prompts.TOOLS:
        assert "\n" + tool_line(tool) + "\n" in rendered


_GO_RENDERER = r"""
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

// Ollama's shapes (api.Message, api.Tool): a property's type is a list of names.
type PropertyType []string

func (p *PropertyType) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*p = PropertyType{one}
		return nil
	}
	var many []string
	err := json.Unmarshal(b, &many)
	*p = many
	return err
}

type Property struct {
	Type PropertyType `json:"type,omitempty"`
	Enum []any        `json:"enum,omitempty"`
}
type Parameters struct {
	Type       string              `json:"type"`
	Required   []string            `json:"required"`
	Properties map[string]Property `json:"properties"`
}
type ToolFunction struct {
	Name        string     `json:"name"`
	Description string     `json:"description"`
	Parameters  Parameters `json:"parameters"`
}
type Tool struct {
	Type     string       `json:"type"`
	Function ToolFunction `json:"function"`
}
type CallFunction struct {
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments"`
}
type ToolCall struct {
	Function CallFunction `json:"function"`
}
type Message struct {
	Role      string     `json:"role"`
	Content   string     `json:"content"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}
type Input struct {
	Template string    `json:"template"`
	Messages []Message `json:"messages"`
	Tools    []Tool    `json:"tools"`
}

func main() {
	var in Input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// Ollama's template functions and options (template/template.go)
	funcs := template.FuncMap{"json": func(v any) string { b, _ := json.Marshal(v); return string(b) }}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(in.Template)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	var system []string
	for _, m := range in.Messages {
		if m.Role == "system" {
			system = append(system, m.Content)
		}
	}
	var tools any
	if len(in.Tools) > 0 {
		tools = in.Tools
	}
	data := map[string]any{"System": strings.Join(system, "\n\n"), "Messages": in.Messages, "Tools": tools}
	if err := tmpl.Execute(os.Stdout, data); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(4)
	}
}
"""


def _go_json(value: Any) -> str:
    """What Go's json.Marshal writes: compact, with <, > and & escaped for HTML."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_go_renders_the_template_like_chat_format(fmt, tmp_path):
    """Go's text/template renders the TEMPLATE as chat_format renders the Jinja template, up to
    what Ollama does differently by design: call arguments in Go's JSON (compact, ``<>&`` escaped),
    tool arguments in sorted order (the parity tools list theirs sorted, except Grep, left out)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain (apt-get install golang-go) to run text/template")
    (tmp_path / "main.go").write_text(_GO_RENDERER)
    build = subprocess.run(
        [go, "build", "-o", str(tmp_path / "render"), "main.go"], cwd=tmp_path, capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr
    tools = [t for t in prompts.TOOLS if t["function"]["name"] != "Grep"]
    template = modelfile.go_template(fmt)
    for name, messages, _tools, _gen in prompts.CONVERSATIONS:
        convo = [m for m in messages if "Grep" not in json.dumps(m.get("tool_calls", []))]
        if convo[-1]["role"] == "assistant":
            convo = convo[:-1]  # Ollama leaves a final assistant turn open (a prefill)
        for with_tools in (tools, None):
            want = render(convo, with_tools, fmt, add_generation_prompt=True, bos_token="")
            for m in convo:
                for call in m.get("tool_calls") or []:
                    args = call["function"]["arguments"]
                    want = want.replace(json.dumps(args, ensure_ascii=False), _go_json(args))
            proc = subprocess.run(
                [str(tmp_path / "render")],
                input=json.dumps({"template": template, "messages": convo, "tools": with_tools or []}),
                capture_output=True,
                text=True,
            )
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout == want, (name, fmt, bool(with_tools))
