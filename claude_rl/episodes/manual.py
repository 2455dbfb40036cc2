"""Traces entered by hand (``claude-rl capture --interactive``) for conversations with no hooks.

A hand-entered trace is validated as an Episode, then written to the store as the hook events
Claude Code would have sent (UserPromptSubmit, PreToolUse/PostToolUse per call, Stop), through
the same capture path: redaction, size limits and locking apply exactly as for live capture.
The stated reason of each call travels in the PreToolUse payload as ``claude_rl_reason``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

from claude_rl import capture, paths
from claude_rl.episodes.hooks import MANUAL_FLAG, REASON_FIELD
from claude_rl.schema import normalize_tool_name


class ManualCall(BaseModel):
    tool: str = Field(min_length=1, description="Tool name as Claude Code spells it: Read, Grep, Bash, ...")
    reason: str | None = Field(default=None, description="Why the call was made, as Claude stated it")
    input: dict[str, Any] = Field(default_factory=dict, description="The tool input (JSON object)")
    result: str = Field(default="", description="What the tool returned")
    is_error: bool = False

    @field_validator("tool")
    @classmethod
    def _known_shape(cls, v: str) -> str:
        v = v.strip()
        if not v.replace("_", "").replace("-", "").isalnum():
            raise ValueError("a tool name is letters, digits, '_' and '-' (mcp__server__tool is fine)")
        return v


class ManualTrace(BaseModel):
    prompt: str = Field(min_length=1)
    calls: list[ManualCall] = Field(default_factory=list)
    final_answer: str = Field(min_length=1)
    cwd: str | None = None


def payloads(trace: ManualTrace, session_id: str) -> list[dict[str, Any]]:
    base = {
        "session_id": session_id,
        "transcript_path": None,
        "cwd": trace.cwd or str(Path.cwd()),
        MANUAL_FLAG: True,
    }
    out: list[dict[str, Any]] = [{**base, "hook_event_name": "UserPromptSubmit", "prompt": trace.prompt}]
    for i, call in enumerate(trace.calls):
        tool_use_id = f"manual_{session_id[-12:]}_{i}"
        common = {**base, "tool_name": call.tool, "tool_input": call.input, "tool_use_id": tool_use_id}
        out.append({**common, "hook_event_name": "PreToolUse", REASON_FIELD: call.reason})
        if call.is_error:
            out.append({**common, "hook_event_name": "PostToolUseFailure", "error": call.result})
        else:
            out.append({**common, "hook_event_name": "PostToolUse", "tool_response": call.result})
    out.append(
        {
            **base,
            "hook_event_name": "Stop",
            "stop_hook_active": False,
            "last_assistant_message": trace.final_answer,
        }
    )
    return out


def write_manual_trace(trace: ManualTrace, root: Path | None = None) -> str:
    """Write the trace to the store; returns its session id."""
    root = root or paths.home()
    session_id = f"manual-{uuid.uuid4()}"
    for payload in payloads(trace, session_id):
        outcome = capture.handle(json.dumps(payload).encode(), payload["hook_event_name"], root)
        if outcome != "written":
            raise OSError(f"could not write the trace to {root} ({outcome}); see `claude-rl status`")
    return session_id


TOOL_HINTS = {
    "Read": '{"file_path": "/abs/path/file.py"}',
    "Grep": '{"pattern": "def compute", "path": "src", "output_mode": "content"}',
    "Glob": '{"pattern": "**/*.sql"}',
    "Bash": '{"command": "sqlite3 data/app.db \\"SELECT ...\\"", "description": "..."}',
    "Edit": '{"file_path": "/abs/path/file.py", "old_string": "...", "new_string": "..."}',
    "Write": '{"file_path": "/abs/path/file.py", "content": "..."}',
}


def hint_for(tool: str) -> str:
    return TOOL_HINTS.get(normalize_tool_name(tool), '{"key": "value"}')
