"""Schemas of what the store holds, validated when the store is read (never inside a hook).

Every record carries a schema version ``v``. Readers upgrade older versions in
``upgrade_record`` (one named step per change); files on disk are never rewritten.
Unknown fields are kept (``extra="allow"``): Claude Code adds payload fields between versions.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any, Literal

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


# =============================================================================================
# Episodes: one user prompt → the ordered steps Claude took → the final answer.
# Built from hook records and transcripts by ``claude_rl.episodes``; stored one per line in
# ``<home>/episodes/<session>.jsonl``.

EPISODE_SCHEMA_VERSION = 1

# Tools renamed across Claude Code versions: old name → current name. The recorded name stays in
# ``ToolCall.raw_name``.
TOOL_RENAMES = {
    "Task": "Agent",
    "BashOutput": "TaskOutput",
    "AgentOutputTool": "TaskOutput",
    "KillBash": "TaskStop",
    "KillShell": "TaskStop",
}
# Tools that change something outside the conversation (the end of "exploration").
MUTATING_TOOLS = frozenset({"Edit", "MultiEdit", "Write", "NotebookEdit"})

# The runtime ends a run at the REPEAT_LIMIT-th call identical (tool and exact arguments) to earlier
# ones, without running it; the RL reward scores a rollout as cut at the same call.
REPEAT_LIMIT = 3


def exact_call_key(name: str, arguments: Any) -> str:
    """The identity the runtime's repeat rule counts: the tool and its arguments exactly as given."""
    return json.dumps([name, arguments], sort_keys=True, ensure_ascii=False, default=str)


def repeats_allowed(calls: Iterable[tuple[str, Any]]) -> set[str]:
    """The ``exact_call_key`` of the (name, arguments) calls a reference makes ``REPEAT_LIMIT`` times
    or more: imitating it there is not cut by the RL reward or the replay environment."""
    counts = Counter(exact_call_key(name, arguments) for name, arguments in calls)
    return {key for key, n in counts.items() if n >= REPEAT_LIMIT}


def refused_repeat_text(made: int) -> str:
    """The tool result of the call the repeat rule refuses (``made`` identical calls before it)."""
    return f"Not run: this exact call was already made {made} times with the same result. The run stops here."


def normalize_tool_name(name: str) -> str:
    return TOOL_RENAMES.get(name, name)


class ToolCall(BaseModel):
    """One tool call: what Claude asked for and what came back."""

    model_config = ConfigDict(extra="allow")

    tool_use_id: str | None = Field(default=None, description="Claude Code's id, joins every stage")
    name: str = Field(description="Tool name, normalized across versions (Task → Agent, ...)")
    raw_name: str | None = Field(default=None, description="The name as recorded, when it was renamed")
    input: dict[str, Any] = Field(default_factory=dict, description="The tool input as Claude wrote it")
    output: str | None = Field(default=None, description="The result as the model saw it, as text")
    raw_output: Any = Field(default=None, description="Structured result (tool_response / toolUseResult)")
    is_error: bool = Field(default=False, description="The call failed (error result or PostToolUseFailure)")
    status: Literal["ok", "error", "interrupted", "unanswered"] = Field(
        default="ok", description="unanswered: no result was recorded (interrupt, crash, missing hook)"
    )
    duration_ms: float | None = Field(default=None, description="Wall time, from hooks when available")
    parallel_group: int | None = Field(
        default=None, description="Calls sharing a group were issued in one assistant message (in parallel)"
    )
    timestamp: str | None = Field(default=None, description="When the call was issued")
    source: Literal["hooks", "transcript", "both", "manual", "samples", "runtime"] = Field(
        default="transcript", description="Where the call was seen"
    )
    subagent: SubEpisode | None = Field(default=None, description="Work done by a subagent this call started")


class Step(BaseModel):
    """A tool call with the text Claude wrote before it (its stated reason)."""

    model_config = ConfigDict(extra="allow")

    index: int = Field(description="Position in the episode, from 0")
    reason: str | None = Field(
        default=None, description="Assistant text written before the call; None when Claude wrote none"
    )
    thinking: str | None = Field(default=None, description="Visible thinking before the call, when recorded")
    call: ToolCall


class SubEpisode(BaseModel):
    """What a subagent (Agent/Task tool) did."""

    model_config = ConfigDict(extra="allow")

    agent_id: str | None = None
    agent_type: str | None = None
    prompt: str | None = None
    steps: list[Step] = Field(default_factory=list)
    final_answer: str | None = None
    transcript_path: str | None = None


class Provenance(BaseModel):
    model_config = ConfigDict(extra="allow")

    session_id: str
    sources: list[str] = Field(default_factory=list, description="hooks, transcript, manual, runtime")
    transcript_path: str | None = Field(default=None, description="Transcript the episode was read from")
    trace_path: str | None = Field(default=None, description="Trace store file the hook records came from")
    claude_code_version: str | None = None
    model: str | None = None
    cwd: str | None = None
    git_branch: str | None = None


class Episode(BaseModel):
    """One user prompt → steps → final answer: the unit a model learns from."""

    model_config = ConfigDict(extra="allow")

    v: int = Field(default=EPISODE_SCHEMA_VERSION, description="Episode schema version")
    episode_id: str = Field(description="<session id>:<index of the prompt in the session>")
    session_id: str
    index: int = Field(description="Index of the prompt within the session")
    prompt: str
    prompt_uuid: str | None = Field(
        default=None, description="Transcript uuid or hook prompt_id of the prompt"
    )
    started_at: str | None = None
    ended_at: str | None = None
    steps: list[Step] = Field(default_factory=list)
    final_answer: str | None = None
    status: Literal["completed", "interrupted", "error", "incomplete"] = Field(
        default="completed",
        description="interrupted by the user, ended on an API error, or still open (no answer yet)",
    )
    after_compaction: bool = Field(default=False, description="The prompt came after a context compaction")
    provenance: Provenance
    behavior: dict[str, Any] | None = Field(default=None, description="Output of the behavior extractor")
    meta: dict[str, Any] | None = Field(
        default=None, description="Labels from the source, e.g. a sample's template, category and split"
    )

    @property
    def tool_sequence(self) -> list[str]:
        return [s.call.name for s in self.steps]


def upgrade_episode(data: dict[str, Any]) -> dict[str, Any]:
    """Bring an older episode record to the current schema (version 1 is the first)."""
    return data


def episode_json_schema() -> dict[str, Any]:
    return Episode.model_json_schema()


def trace_record_json_schema() -> dict[str, Any]:
    return TraceRecord.model_json_schema()


ToolCall.model_rebuild()

if __name__ == "__main__":  # python -m claude_rl.schema: rewrite the JSON Schemas in docs/
    import json
    from pathlib import Path

    docs = Path(__file__).resolve().parent.parent / "docs"
    docs.mkdir(exist_ok=True)
    for name, schema in (("episode", episode_json_schema()), ("trace-record", trace_record_json_schema())):
        (docs / f"{name}.schema.json").write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
