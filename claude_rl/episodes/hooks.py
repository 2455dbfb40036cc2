"""Hook records of one session → episodes.

Hooks see every call that ran, with timings and structured results, but not the text Claude
wrote between calls (so ``Step.reason`` stays None here; the transcript fills it in when the two
are folded together). What they miss, per the reference doc: calls rejected at validation,
interrupts (no Stop), and on some versions subagent tool calls.
"""

from __future__ import annotations

import json
from typing import Any

from claude_rl.schema import Episode, Provenance, Step, SubEpisode, ToolCall, TraceRecord, normalize_tool_name
from claude_rl.tools.runtime import model_text

# Traces written by claude-rl itself (hand entry, the bundled samples) carry these payload fields:
# the stated reason of a call (hooks never see Claude's text), where the trace came from, and
# labels that go into Episode.meta.
MANUAL_FLAG = "claude_rl_manual"
REASON_FIELD = "claude_rl_reason"
SOURCE_FIELD = "claude_rl_source"  # "manual" or "samples"
META_FIELD = "claude_rl_meta"


# Tools whose structured result the local runtime renders exactly as Claude Code shows it.
_RUNTIME_TOOLS = frozenset({"Read", "Grep", "Glob", "Bash", "Edit", "Write"})


def tool_response_text(tool: str, response: Any) -> str | None:
    """The part of a structured ``tool_response`` the model reads, as text.

    For the core tools this is the runtime's rendering (numbered Read lines, "Found N files", …),
    so episodes from hooks, from transcripts and from the local agent show the model the same text.
    """
    if response is None:
        return None
    if tool in _RUNTIME_TOOLS and isinstance(response, dict):
        file = response.get("file")
        if tool == "Read" and isinstance(file, dict) and "totalLines" not in file:
            content = str(file.get("content") or "")
            response = {**response, "file": {**file, "totalLines": content.count("\n") + 1 if content else 0}}
        if tool == "Grep" and "mode" not in response:  # older results: the default mode is implied
            mode = "content" if isinstance(response.get("content"), str) else "files_with_matches"
            response = {**response, "mode": mode}
        if tool != "Bash" or "stdout" in response:
            return model_text(tool, response)
    if isinstance(response, str):
        return response
    if isinstance(response, list):  # MCP content blocks
        parts = [
            b.get("text", "[image]" if b.get("type") == "image" else "")
            for b in response
            if isinstance(b, dict)
        ]
        return "\n".join(p for p in parts if p)
    if not isinstance(response, dict):
        return json.dumps(response, ensure_ascii=False)
    if "stdout" in response:  # Bash: stdout holds stdout and stderr interleaved
        out = str(response.get("stdout") or "")
        err = str(response.get("stderr") or "")
        return out + (("\n" + err) if err and err not in out else "")
    file = response.get("file")
    if isinstance(file, dict) and "content" in file:  # Read
        return str(file.get("content") or "")
    if tool in ("Grep", "Glob"):
        if isinstance(response.get("content"), str):
            return response["content"]
        names = response.get("filenames")
        if isinstance(names, list):
            return "\n".join(str(n) for n in names) or "No files found"
    if tool == "Agent" and isinstance(response.get("content"), list):
        return "\n".join(str(b.get("text", "")) for b in response["content"] if isinstance(b, dict))
    if tool in ("Edit", "MultiEdit", "Write", "NotebookEdit"):
        path = response.get("filePath") or response.get("notebook_path") or ""
        return f"The file {path} has been updated." if path else json.dumps(response, ensure_ascii=False)
    if isinstance(response.get("result"), str):  # WebFetch
        return response["result"]
    return json.dumps(response, ensure_ascii=False)


class _Turn:
    def __init__(self, rec: TraceRecord, index: int) -> None:
        self.prompt_rec = rec
        self.index = index
        self.calls: dict[str, ToolCall] = {}  # by tool_use_id, or a synthetic key
        self.order: list[str] = []
        self.final: str | None = None
        self.status = "incomplete"
        self.ended_at: str | None = None
        self.group = 0
        self.last_event = ""
        self.subagents: dict[str, SubEpisode] = {}
        self.reasons: dict[str, str] = {}  # stated reasons of hand-entered traces (manual.py)

    def call_for(self, rec: TraceRecord, target: dict[str, ToolCall], order: list[str]) -> ToolCall:
        key = rec.tool_use_id or f"anon-{len(order)}"
        call = target.get(key)
        if call is None and rec.tool_use_id is None and rec.event != "PreToolUse":
            # Claude Code before 2.0.43 sent no tool_use_id: a result belongs to the oldest
            # unanswered call of the same tool with the same input.
            tool_input = rec.payload.get("tool_input")
            for k in order:
                c = target[k]
                if (
                    c.status == "unanswered"
                    and c.tool_use_id is None
                    and c.input == tool_input
                    and (c.raw_name or c.name) == rec.tool_name
                ):
                    return c
        if call is None:
            raw = rec.tool_name or "?"
            name = normalize_tool_name(raw)
            tool_input = rec.payload.get("tool_input")
            call = ToolCall(
                tool_use_id=rec.tool_use_id,
                name=name,
                raw_name=raw if raw != name else None,
                input=tool_input if isinstance(tool_input, dict) else {"value": tool_input},
                status="unanswered",
                timestamp=rec.ts,
                source="hooks",
            )
            target[key] = call
            order.append(key)
        return call


def fold_hook_records(
    records: list[TraceRecord], session_id: str, trace_path: str | None = None
) -> list[Episode]:
    """Episodes from one session's hook records, in capture order."""
    turns: list[_Turn] = []
    turn: _Turn | None = None
    model = cwd = None
    for rec in records:
        p = rec.payload
        cwd = cwd or p.get("cwd")
        if rec.event == "SessionStart":
            model = p.get("model") or model
            continue
        if rec.event == "UserPromptSubmit":
            turn = _Turn(rec, len(turns))
            turns.append(turn)
            continue
        if turn is None:
            continue  # events before the first prompt (or from a session resumed elsewhere)
        if rec.agent_id and rec.event in ("PreToolUse", "PostToolUse", "PostToolUseFailure"):
            sub = turn.subagents.setdefault(rec.agent_id, SubEpisode(agent_id=rec.agent_id))
            _apply_tool_event(rec, turn, sub)
            continue
        if rec.event in ("PreToolUse", "PostToolUse", "PostToolUseFailure"):
            _apply_tool_event(rec, turn, None)
        elif rec.event == "SubagentStart" and rec.agent_id:
            sub = turn.subagents.setdefault(rec.agent_id, SubEpisode(agent_id=rec.agent_id))
            sub.agent_type = p.get("agent_type") or sub.agent_type
        elif rec.event == "SubagentStop" and rec.agent_id:
            sub = turn.subagents.setdefault(rec.agent_id, SubEpisode(agent_id=rec.agent_id))
            sub.agent_type = p.get("agent_type") or sub.agent_type
            sub.final_answer = p.get("last_assistant_message") or sub.final_answer
            sub.transcript_path = p.get("agent_transcript_path") or sub.transcript_path
        elif rec.event == "Stop" and not rec.agent_id:
            turn.final = p.get("last_assistant_message") or turn.final
            turn.status, turn.ended_at = "completed", rec.ts
        elif rec.event == "StopFailure":
            turn.status, turn.ended_at = "error", rec.ts
    episodes = []
    for turn in turns:
        _attach_subagents(turn)
        steps = [
            Step(index=i, reason=turn.reasons.get(k), call=turn.calls[k]) for i, k in enumerate(turn.order)
        ]
        prompt_payload = turn.prompt_rec.payload
        episodes.append(
            Episode(
                episode_id=f"{session_id}:{turn.index}",
                session_id=session_id,
                index=turn.index,
                prompt=str(prompt_payload.get("prompt") or ""),
                prompt_uuid=prompt_payload.get("prompt_id"),
                started_at=turn.prompt_rec.ts,
                ended_at=turn.ended_at,
                steps=steps,
                final_answer=turn.final,
                meta=prompt_payload.get(META_FIELD)
                if isinstance(prompt_payload.get(META_FIELD), dict)
                else None,
                status=turn.status,  # type: ignore[arg-type]
                provenance=Provenance(
                    session_id=session_id,
                    sources=[_source_of(prompt_payload)],
                    trace_path=trace_path,
                    transcript_path=prompt_payload.get("transcript_path"),
                    model=model,
                    cwd=cwd,
                ),
            )
        )
    return episodes


def _source_of(payload: dict[str, Any]) -> str:
    source = payload.get(SOURCE_FIELD)
    if source in ("manual", "samples"):
        return str(source)
    return "manual" if payload.get(MANUAL_FLAG) else "hooks"


def _apply_tool_event(rec: TraceRecord, turn: _Turn, sub: SubEpisode | None) -> None:
    p = rec.payload
    if sub is None:
        target, order = turn.calls, turn.order
        # Parallel calls fire all their PreToolUse hooks before the first result arrives.
        if rec.event == "PreToolUse" and turn.last_event != "PreToolUse":
            turn.group += 1
        turn.last_event = rec.event
    else:
        target = {s.call.tool_use_id or f"anon-{i}": s.call for i, s in enumerate(sub.steps)}
        order = list(target)
    call = turn.call_for(rec, target, order)
    if p.get(MANUAL_FLAG) or p.get(SOURCE_FIELD):
        call.source = p.get(SOURCE_FIELD) if p.get(SOURCE_FIELD) in ("manual", "samples") else "manual"
        if isinstance(p.get(REASON_FIELD), str) and p[REASON_FIELD].strip() and sub is None:
            turn.reasons[order[-1] if rec.event == "PreToolUse" else ""] = p[REASON_FIELD].strip()
    if sub is None:
        call.parallel_group = call.parallel_group or turn.group
    elif call not in [s.call for s in sub.steps]:
        sub.steps.append(Step(index=len(sub.steps), call=call))
    if isinstance(p.get("duration_ms"), int | float):
        call.duration_ms = float(p["duration_ms"])
    if rec.event == "PostToolUse":
        call.raw_output = p.get("tool_response")
        call.output = tool_response_text(call.name, call.raw_output)
        call.status, call.is_error = "ok", False
    elif rec.event == "PostToolUseFailure":
        call.output = str(p.get("error") or "")
        call.is_error = True
        call.status = "interrupted" if p.get("is_interrupt") else "error"


def _attach_subagents(turn: _Turn) -> None:
    if not turn.subagents:
        return
    agent_calls = [turn.calls[k] for k in turn.order if turn.calls[k].name == "Agent"]
    unclaimed = dict(turn.subagents)
    for call in agent_calls:  # PostToolUse of the Agent tool names the agent it ran
        agent_id = call.raw_output.get("agentId") if isinstance(call.raw_output, dict) else None
        if agent_id in unclaimed:
            call.subagent = unclaimed.pop(agent_id)
            call.subagent.prompt = call.subagent.prompt or call.input.get("prompt")
    for call in agent_calls:  # otherwise in order of appearance
        if call.subagent is None and unclaimed:
            call.subagent = unclaimed.pop(next(iter(unclaimed)))
            call.subagent.prompt = call.subagent.prompt or call.input.get("prompt")
