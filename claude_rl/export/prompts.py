"""The fixed inputs of the parity checks: plain text, conversations with tools, tokenizer probes.

The conversations are rendered through ``claude_rl.chat_format`` (never written out as text here),
so they follow the template wherever it goes. They cover what the export can get wrong: the
system turn with tools, an assistant turn with text and a call, parallel calls without text, one
tool turn per result, arguments with characters JSON escapes differ on (``&``, ``<``, quotes) and
keys out of alphabetical order, and non-ASCII text.
"""

from __future__ import annotations

from typing import Any

PLAIN_PROMPTS: dict[str, str] = {
    "plain_prose": "The old lighthouse keeper climbed the stairs every evening, and on the last night of",
    "plain_code": 'def fibonacci(n: int) -> int:\n    """The n-th Fibonacci number."""\n    if n < 2:\n',
}

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "Read",
            "description": "Read a file from the local filesystem.",
            "parameters": {
                "type": "object",
                "properties": {"file_path": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["file_path"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "Bash",
            "description": "Run a shell command and return its output.",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string"}, "timeout": {"type": "integer"}},
                "required": ["command"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "Grep",
            "description": "Search file contents with a regular expression.",
            "parameters": {
                "type": "object",
                "properties": {
                    "pattern": {"type": "string"},
                    "path": {"type": "string"},
                    "output_mode": {"type": "string", "enum": ["content", "files_with_matches", "count"]},
                },
                "required": ["pattern"],
            },
        },
    },
]


def _call(name: str, arguments: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# (name, messages, tools, add_generation_prompt): all of them check the chat template.
CONVERSATIONS: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]] | None, bool]] = [
    (
        "chat_tools_first_turn",
        [{"role": "user", "content": "Where does this project load its configuration file?"}],
        TOOLS,
        True,
    ),
    (
        "chat_tool_result",
        [
            {"role": "user", "content": "How many tests are in tests/test_app.py?"},
            {
                "role": "assistant",
                "content": "I will count the test functions in that file.",
                "tool_calls": [_call("Grep", {"pattern": "^def test_", "path": "tests/test_app.py"}, "c1")],
            },
            {
                "role": "tool",
                "tool_call_id": "c1",
                "content": "def test_start\ndef test_stop\ndef test_reload",
            },
        ],
        TOOLS,
        True,
    ),
    (
        "chat_parallel_calls",
        [
            {"role": "system", "content": "You are a careful assistant. Answer in one sentence."},
            {"role": "user", "content": "Is the build green, and what does setup.cfg say about flake8?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    # keys not in alphabetical order, and characters JSON libraries escape differently
                    _call("Bash", {"timeout": 60, "command": "make test && echo 'ok' > /tmp/status"}, "c2"),
                    _call("Read", {"file_path": "setup.cfg", "limit": 40}, "c3"),
                ],
            },
            {"role": "tool", "tool_call_id": "c2", "content": "12 passed in 0.4s\nok"},
            {"role": "tool", "tool_call_id": "c3", "content": "[flake8]\nmax-line-length = 100"},
            {
                "role": "assistant",
                "content": "Yes: 12 tests pass, and flake8 allows lines of up to 100 — café.",
            },
        ],
        TOOLS,
        False,
    ),
    (
        "chat_no_tools",
        [
            {"role": "user", "content": "Say hello."},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "And now in French, please."},
        ],
        None,
        True,
    ),
]

# The conversations whose logits are compared too (each position costs time on both sides): the
# system turn with tools, a call and its result, then the generation prompt; and a short chat.
LOGIT_CONVERSATIONS = ("chat_tool_result", "chat_no_tools")

# Texts tokenized by both tokenizers (no special tokens): digits, runs of spaces and newlines,
# punctuation, code, non-ASCII: where a wrong pre-tokenizer shows.
TOKENIZER_PROBES: list[str] = [
    "Hello world! How are you today?",
    "numbers: 7, 42, 1234567, 3.14159, 2024-01-31, 0x1F",
    "   leading spaces,\ttabs\tand\n\n\nblank lines\n",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n    pass\n",
    "unicode: naïve café, Straße, 日本語, emoji 🙂👍, — and … ",
    "it's, we're, they'll, I'd, CAN'T, don't",
    'json: {"a": [1, 2, {"b": null}], "c": "d\\n"}',
    "path/to/file_name.py:123:45: E501 line too long (120 > 110 characters)",
]
