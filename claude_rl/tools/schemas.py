"""JSON schemas of Claude Code's built-in tools, in the function-calling shape trainers expect.

Claude Code never passes its tool definitions to hooks or transcripts, so these are written from
the tool input tables in ``../shared/docs/claude-code-reference.md`` §6 (descriptions are ours).
MCP tools (``mcp__<server>__<tool>``) are inferred from how they were called
(``infer_schema``). The dataset, the trainers, the GGUF chat template and the local runtime all
take their tool list from here, so a tool looks the same everywhere.
"""

from __future__ import annotations

from typing import Any


def _fn(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


def _s(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _i(description: str) -> dict[str, Any]:
    return {"type": "integer", "description": description}


def _b(description: str) -> dict[str, Any]:
    return {"type": "boolean", "description": description}


BUILTIN: dict[str, dict[str, Any]] = {
    "Read": _fn(
        "Read",
        "Read a file from the workspace. Returns its lines with line numbers.",
        {
            "file_path": _s("Absolute path of the file to read"),
            "offset": _i("Line number to start reading from"),
            "limit": _i("Number of lines to read"),
        },
        ["file_path"],
    ),
    "Grep": _fn(
        "Grep",
        "Search file contents with a regular expression (ripgrep syntax).",
        {
            "pattern": _s("Regular expression to search for"),
            "path": _s("File or folder to search in (default: the workspace)"),
            "glob": _s("Only search files matching this glob, e.g. *.py"),
            "type": _s("Only search files of this type, e.g. py, sql"),
            "output_mode": {
                "type": "string",
                "enum": ["content", "files_with_matches", "count"],
                "description": "content: matching lines; files_with_matches: paths; count: matches per file",
            },
            "-i": _b("Case-insensitive search"),
            "-n": _b("Show line numbers (content mode)"),
            "-A": _i("Lines of context after each match"),
            "-B": _i("Lines of context before each match"),
            "-C": _i("Lines of context around each match"),
            "head_limit": _i("Return at most this many lines or files"),
            "multiline": _b("Let patterns span lines"),
        },
        ["pattern"],
    ),
    "Glob": _fn(
        "Glob",
        "Find files by name pattern, e.g. **/*.sql. Returns matching paths.",
        {"pattern": _s("Glob pattern to match"), "path": _s("Folder to search in (default: the workspace)")},
        ["pattern"],
    ),
    "Bash": _fn(
        "Bash",
        "Run a shell command in the workspace and return its output.",
        {
            "command": _s("The command to run"),
            "description": _s("What the command does, in a few words"),
            "timeout": _i("Timeout in milliseconds (max 600000)"),
        },
        ["command"],
    ),
    "Edit": _fn(
        "Edit",
        "Replace an exact string in a file. old_string must occur exactly once unless replace_all.",
        {
            "file_path": _s("Absolute path of the file to edit"),
            "old_string": _s("The exact text to replace"),
            "new_string": _s("The text to put in its place"),
            "replace_all": _b("Replace every occurrence"),
        },
        ["file_path", "old_string", "new_string"],
    ),
    "Write": _fn(
        "Write",
        "Write a file, replacing it if it exists.",
        {
            "file_path": _s("Absolute path of the file to write"),
            "content": _s("The full content of the file"),
        },
        ["file_path", "content"],
    ),
    "MultiEdit": _fn(
        "MultiEdit",
        "Apply several exact-string replacements to one file, in order.",
        {
            "file_path": _s("Absolute path of the file to edit"),
            "edits": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "old_string": _s("The exact text to replace"),
                        "new_string": _s("The text to put in its place"),
                        "replace_all": _b("Replace every occurrence"),
                    },
                    "required": ["old_string", "new_string"],
                },
            },
        },
        ["file_path", "edits"],
    ),
    "NotebookEdit": _fn(
        "NotebookEdit",
        "Replace, insert or delete a cell of a Jupyter notebook.",
        {
            "notebook_path": _s("Absolute path of the notebook"),
            "new_source": _s("The new source of the cell"),
            "cell_id": _s("Id of the cell to edit"),
            "cell_type": {"type": "string", "enum": ["code", "markdown"], "description": "Type of the cell"},
            "edit_mode": {
                "type": "string",
                "enum": ["replace", "insert", "delete"],
                "description": "What to do",
            },
        },
        ["notebook_path", "new_source"],
    ),
    "WebFetch": _fn(
        "WebFetch",
        "Fetch a URL and answer a question about its content.",
        {"url": _s("The URL to fetch"), "prompt": _s("What to extract from the page")},
        ["url", "prompt"],
    ),
    "WebSearch": _fn(
        "WebSearch",
        "Search the web.",
        {
            "query": _s("The search query"),
            "allowed_domains": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Only these domains",
            },
            "blocked_domains": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Never these domains",
            },
        },
        ["query"],
    ),
    "Agent": _fn(
        "Agent",
        "Start a subagent on a self-contained task and return its final report.",
        {
            "description": _s("A few words on the task"),
            "prompt": _s("The full task for the subagent"),
            "subagent_type": _s("Kind of agent, e.g. Explore, general-purpose"),
        },
        ["description", "prompt"],
    ),
    "TodoWrite": _fn(
        "TodoWrite",
        "Write the task list for the current work.",
        {
            "todos": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "content": _s("The task"),
                        "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
                        "activeForm": _s("The task in present continuous form"),
                    },
                    "required": ["content", "status"],
                },
            }
        },
        ["todos"],
    ),
}

# The tools the local agent can run (claude_rl/tools/runtime) and the dataset offers by default.
CORE_TOOLS = ("Read", "Grep", "Glob", "Bash", "Edit", "Write")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def infer_schema(name: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """A schema for a tool we have no definition of (MCP tools), from the inputs it was called with.

    A property is required when every observed call passed it.
    """
    props: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    for call in inputs:
        for key, value in call.items():
            seen[key] = seen.get(key, 0) + 1
            props.setdefault(key, {"type": _json_type(value)})
    required = sorted(k for k, n in seen.items() if n == len(inputs))
    server, _, tool = name.removeprefix("mcp__").partition("__")
    description = f"MCP tool {tool} of the {server} server" if tool else f"Tool {name}"
    return _fn(name, description, dict(sorted(props.items())), required)


def schemas_for(
    calls: dict[str, list[dict[str, Any]]], include: tuple[str, ...] = CORE_TOOLS
) -> list[dict[str, Any]]:
    """Schemas for the tools in ``include`` plus every tool named in ``calls`` (name → inputs seen)."""
    names = list(dict.fromkeys([*include, *sorted(calls)]))
    return [BUILTIN[n] if n in BUILTIN else infer_schema(n, calls.get(n, [])) for n in names]
