"""One worked example episode (the generator-alarms lookup) and builders, shared by the scorer and
reward tests: both score variations of the same reference."""

from __future__ import annotations

from typing import Any

from claude_rl.schema import Episode, Provenance, Step, ToolCall

ROOT = "/workspace/command-center"
PROMPT = "How many alarms did the generators raise, and with which codes?"
SCHEMA_GREP = {
    "pattern": "CREATE TABLE alarms",
    "path": f"{ROOT}/db/schema.sql",
    "output_mode": "content",
    "-A": 8,
}
QUERY = (
    'sqlite3 -header -column db/command_center.db "SELECT a.tag, al.code, al.severity FROM alarms al '
    "JOIN assets a ON a.id = al.asset_id WHERE a.kind = 'generator' ORDER BY al.raised_at;\""
)
ANSWER = (
    "The generators raised **4 alarms**, 2 of them warning or critical: GEN-2 FAIL_TO_START (critical) on "
    "2026-03-05 10:02 and GEN-1 FUEL_LOW (warning) on 2026-03-08 08:57."
)


def call(
    name: str, inputs: dict[str, Any], output: str = "ok", *, error: bool = False, group: int | None = None
) -> ToolCall:
    return ToolCall(
        name=name,
        input=inputs,
        output=output,
        is_error=error,
        status="error" if error else "ok",
        parallel_group=group,
        source="runtime",
    )


def episode(
    calls: list[tuple[ToolCall, str | None]], answer: str | None = ANSWER, prompt: str = PROMPT
) -> Episode:
    steps = [Step(index=i, reason=reason, call=c) for i, (c, reason) in enumerate(calls)]
    return Episode(
        episode_id="s:0",
        session_id="s",
        index=0,
        prompt=prompt,
        steps=steps,
        final_answer=answer,
        provenance=Provenance(session_id="s", sources=["runtime"]),
    )


def with_steps(ep: Episode, steps: list[tuple[ToolCall, str | None]], **update: Any) -> Episode:
    """``ep`` with other steps (and any other fields in ``update``)."""
    return ep.model_copy(
        update={"steps": [Step(index=i, reason=r, call=c) for i, (c, r) in enumerate(steps)], **update},
        deep=True,
    )
