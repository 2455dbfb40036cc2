"""Schemas of what the store holds, validated when the store is read (never inside a hook).

Every record carries a schema version ``v``. Readers upgrade older versions in
``upgrade_record`` (one named step per change); files on disk are never rewritten.
Unknown fields are kept (``extra="allow"``): Claude Code adds payload fields between versions.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class Truncation(BaseModel):
    model_config = ConfigDict(extra="allow")

    path: str = Field(description="Dotted path of the field that was cut, e.g. tool_response.stdout")
    chars: int = Field(description="Length of the original string, in characters")


class TraceRecord(BaseModel):
    """One hook event as written by ``claude_rl.capture``."""

    model_config = ConfigDict(extra="allow")

    v: int = Field(description="Schema version of the record")
    ts: str = Field(description="Capture time, ISO 8601 UTC with milliseconds")
    event: str = Field(description="Hook event name, e.g. PreToolUse")
    session_id: str | None = Field(default=None, description="Claude Code session id")
    agent_id: str | None = Field(default=None, description="Subagent id when the event fired inside one")
    tool_use_id: str | None = Field(default=None, description="Claude Code's id of the tool call")
    payload: dict[str, Any] = Field(description="The hook's stdin JSON, truncated and redacted")
    redactions: dict[str, int] = Field(default_factory=dict, description="Secrets replaced, by kind")
    truncated: list[Truncation] = Field(default_factory=list, description="Fields cut to fit")
    excluded_path: str | None = Field(default=None, description="Path whose content was not captured")

    @property
    def tool_name(self) -> str | None:
        name = self.payload.get("tool_name")
        return name if isinstance(name, str) else None


def upgrade_record(data: dict[str, Any]) -> dict[str, Any]:
    """Bring an older record to the current schema. Version 1 is the first; nothing to do yet."""
    return data
