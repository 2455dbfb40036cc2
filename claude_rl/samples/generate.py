"""Generate the sample corpus: run every template instance against the workspace, write hook traces.

    python -m claude_rl.samples.generate [--seed N] [--out DIR]

Each episode runs on a fresh scratch copy of ``data/workspace`` (edits never leak into the next
episode); every planned call goes through ``claude_rl.tools.runtime.run_tool`` and its real result
is recorded. Episodes are written as hook records (SessionStart, UserPromptSubmit, PreToolUse,
PostToolUse/PostToolUseFailure, Stop, SessionEnd), built by ``capture.build_record`` with the
default config so they are truncated and redacted exactly as captured sessions are, 1-3 episodes
per session, to ``<out>/traces/<session>.jsonl``, plus ``<out>/manifest.json`` with the counts.

Everything is deterministic for a seed: session, prompt and tool-use ids, the record timestamps
(a synthetic clock) and ``duration_ms`` (synthetic too) come from seeded generators, so
regenerating gives byte-identical files, given the same ``sqlite3`` and ``python3`` (their output
is part of the recorded results; the manifest names the versions used, ``tool_versions``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import subprocess
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from claude_rl import capture
from claude_rl.episodes.behavior import classify_task, extract_behavior
from claude_rl.episodes.hooks import META_FIELD, REASON_FIELD, SOURCE_FIELD, fold_hook_records
from claude_rl.redact import Redactor
from claude_rl.samples import build_workspace
from claude_rl.samples.templates import TEMPLATES, Call, Template
from claude_rl.schema import Episode, TraceRecord
from claude_rl.tools.runtime import VIRTUAL_ROOT, ToolResult, Workspace, bash_env, copy_workspace, run_tool

GENERATOR_VERSION = 2
DEFAULT_SEED = 7
CHECKOUT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = CHECKOUT / "data" / "samples"
WORKSPACE = build_workspace.WORKSPACE
WORKSPACE_LABEL = "data/workspace"
SOURCE = "samples"
# Share of stated reasons left out (real Claude does not always write text before a call).
UNSTATED_SHARE = 0.04
CLOCK_START = datetime(2026, 3, 16, 8, 30, tzinfo=timezone.utc)
CHARS_PER_TOKEN = 4
# Rough tool latencies for the synthetic duration_ms (milliseconds, low..high).
DURATIONS = {"Read": (2, 9), "Grep": (14, 60), "Glob": (8, 30), "Edit": (5, 18), "Write": (3, 10)}


@dataclass
class RecordedCall:
    tool: str
    input: dict[str, Any]
    result: ToolResult
    reason: str | None
    group: int
    tool_use_id: str = ""
    duration_ms: int = 0


@dataclass
class Sample:
    template: Template
    instance: int
    params: dict[str, Any]
    prompt: str
    calls: list[RecordedCall]
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def split(self) -> str:
        return "heldout_template" if self.template.heldout else "train"


def _rng(seed: int, *parts: Any) -> random.Random:
    """An independent generator per (seed, parts): changing one template leaves the others alone."""
    digest = hashlib.sha256(json.dumps([seed, *parts], sort_keys=True).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _tool_use_id(rng: random.Random) -> str:
    return "toolu_01" + "".join(_B62[int(rng.random() * 62)] for _ in range(22))


def is_empty_result(result: ToolResult) -> bool:
    """A successful call that found nothing (no match, no file, no rows)."""
    if result.is_error:
        return False
    text = result.output_text.strip()
    return not text or text in ("No matches found", "No files found")


def _check_expectation(template: str, index: int, step: int, call: Call, result: ToolResult) -> None:
    outcome = "error" if result.is_error else "empty" if is_empty_result(result) else "ok"
    if call.expect != "any" and outcome != call.expect:
        raise AssertionError(
            f"{template}[{index}] step {step} ({call.tool}) expected {call.expect}, got {outcome}:\n"
            f"{result.output_text[:600]}"
        )


def run_instance(template: Template, index: int, seed: int, workspace: Path = WORKSPACE) -> Sample:
    """Plan one instance, run its calls on a fresh scratch copy of the workspace, answer."""
    params = template.instances[index]
    rng = _rng(seed, template.name, index)
    plan = template.plan(rng, params)
    calls: list[RecordedCall] = []
    results: list[ToolResult] = []
    group = 0
    with tempfile.TemporaryDirectory(prefix="claude-rl-samples-") as tmp:
        ws = Workspace(copy_workspace(workspace, Path(tmp) / "command-center"), VIRTUAL_ROOT)
        for step, call in enumerate(plan.calls):
            tool_input = call.input(results) if callable(call.input) else call.input
            result = run_tool(call.tool, tool_input, ws)
            _check_expectation(template.name, index, step, call, result)
            results.append(result)
            if not (call.parallel and calls):
                group += 1
            reason = call.reason
            if reason is not None and not call.keep_reason and rng.random() < UNSTATED_SHARE:
                reason = None
            calls.append(RecordedCall(call.tool, tool_input, result, reason, group))
    commands = [str(c.input.get("command")) for c in calls if c.tool == "Bash"]
    category = classify_task(plan.prompt, [c.tool for c in calls], commands)
    if category != template.category:
        raise AssertionError(f"{template.name}[{index}]: prompt classifies as {category}: {plan.prompt!r}")
    answer = plan.answer(results).strip()
    meta = {
        "template": template.name,
        "category": template.category,
        "instance": index,
        "split_hint": "heldout_template" if template.heldout else "train",
        "workspace": WORKSPACE_LABEL,
    }
    return Sample(template, index, params, plan.prompt, calls, answer, meta)


# =============================================================================================
# Hook records


class _Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def advance(self, ms: float) -> str:
        self.now += timedelta(milliseconds=int(ms))
        return self.stamp()

    def stamp(self) -> str:
        return self.now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.now.microsecond // 1000:03d}Z"


def _duration(rng: random.Random, call: RecordedCall) -> int:
    if call.tool == "Bash":
        command = str(call.input.get("command", ""))
        low, high = (60, 240) if "python3" in command else (18, 90)
    else:
        low, high = DURATIONS.get(call.tool, (5, 30))
    return int(low + rng.random() * (high - low))


class _Writer:
    """Builds a session's trace lines exactly as the capture hook would, with synthetic times."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.cfg = dict(capture.DEFAULTS)
        self.redactor = Redactor()
        self.lines: list[bytes] = []

    def emit(self, event: str, ts: str, fields: dict[str, Any]) -> None:
        payload: dict[str, Any] = {
            "session_id": self.session_id,
            "cwd": VIRTUAL_ROOT,
            "hook_event_name": event,
        }
        payload.update(fields)
        line = capture.build_record(payload, event, self.cfg, self.redactor)
        record = json.loads(line)
        if record.get("redactions"):
            raise AssertionError(f"the store would redact a sample record ({event}): {record['redactions']}")
        record["ts"] = ts
        # The stdlib path of capture.dumps_line (never orjson, whose float format may differ).
        self.lines.append(
            json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        )


def session_lines(session_id: str, samples: list[Sample], rng: random.Random, start: datetime) -> bytes:
    w = _Writer(session_id)
    clock = _Clock(start)
    w.emit("SessionStart", clock.stamp(), {"source": "startup", SOURCE_FIELD: SOURCE})
    for n, sample in enumerate(samples):
        if n:
            clock.advance(20_000 + rng.random() * 90_000)
        prompt_id = _uuid(rng)
        w.emit(
            "UserPromptSubmit",
            clock.advance(400 + rng.random() * 600),
            {"prompt_id": prompt_id, "prompt": sample.prompt, SOURCE_FIELD: SOURCE, META_FIELD: sample.meta},
        )
        common = {"prompt_id": prompt_id}
        groups: dict[int, list[RecordedCall]] = {}
        for call in sample.calls:
            call.tool_use_id = _tool_use_id(rng)
            call.duration_ms = _duration(rng, call)
            groups.setdefault(call.group, []).append(call)
        for members in groups.values():
            clock.advance(1_500 + rng.random() * 4_500)  # the model writes the message
            issued = clock.now
            for call in members:
                pre: dict[str, Any] = {**common, "tool_name": call.tool, "tool_input": call.input}
                pre["tool_use_id"] = call.tool_use_id
                pre[SOURCE_FIELD] = SOURCE
                if call.reason is not None:
                    pre[REASON_FIELD] = call.reason
                w.emit("PreToolUse", clock.advance(3 + rng.random() * 12), pre)
            for call in members:
                done = max(clock.now, issued + timedelta(milliseconds=call.duration_ms))
                clock.now = done
                post: dict[str, Any] = {**common, "tool_name": call.tool, "tool_input": call.input}
                post.update(call.result.hook_fields())
                post["tool_use_id"] = call.tool_use_id
                post["duration_ms"] = call.duration_ms
                post[SOURCE_FIELD] = SOURCE
                w.emit(call.result.hook_event, clock.advance(2 + rng.random() * 6), post)
        clock.advance(3_000 + len(sample.answer) * 12 + rng.random() * 3_000)
        w.emit(
            "Stop",
            clock.stamp(),
            {
                **common,
                "stop_hook_active": False,
                "last_assistant_message": sample.answer,
                SOURCE_FIELD: SOURCE,
            },
        )
    clock.advance(5_000 + rng.random() * 25_000)
    w.emit("SessionEnd", clock.stamp(), {"reason": "prompt_input_exit", SOURCE_FIELD: SOURCE})
    return b"".join(w.lines)


# =============================================================================================
# The corpus


def episode_chars(sample: Sample) -> int:
    """Characters of the text a model trains on: prompt, reasons, calls, results, answer."""
    total = len(sample.prompt) + len(sample.answer)
    for call in sample.calls:
        total += len(call.reason or "") + len(call.tool)
        total += len(json.dumps(call.input, ensure_ascii=False)) + len(call.result.output_text)
    return total


def tool_versions() -> dict[str, str]:
    """Versions of the programs whose output the recorded Bash results contain."""
    env = bash_env(WORKSPACE)
    out: dict[str, str] = {}
    for name, command in (
        ("sqlite3", "sqlite3 --version"),
        ("python3", "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'"),
    ):
        try:
            proc = subprocess.run(
                ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=30
            )
            words = proc.stdout.split()
            out[name] = words[0] if proc.returncode == 0 and words else "missing"
        except (OSError, subprocess.SubprocessError):
            out[name] = "missing"
    return out


def all_samples(seed: int = DEFAULT_SEED, workspace: Path = WORKSPACE) -> list[Sample]:
    return [run_instance(t, i, seed, workspace) for t in TEMPLATES for i in range(len(t.instances))]


def _sessions(samples: list[Sample], seed: int) -> list[list[Sample]]:
    """Samples shuffled (seeded) and cut into sessions of 1-3; a session never mixes splits or
    corpus editions. Editions come in order, each after the sessions of the earlier ones, so
    templates added later leave the earlier sessions (their ids, contents and the dataset's
    train/test assignment of them) as they were: evaluations stay comparable across editions."""
    rng = _rng(seed, "sessions")
    out: list[list[Sample]] = []
    editions = sorted({s.template.edition for s in samples})
    for edition, split in [(e, sp) for e in editions for sp in ("train", "heldout_template")]:
        pool = [s for s in samples if s.split == split and s.template.edition == edition]
        for i in range(len(pool) - 1, 0, -1):  # Fisher-Yates on random(), stable across Python versions
            j = int(rng.random() * (i + 1))
            pool[i], pool[j] = pool[j], pool[i]
        while pool:
            size = 1 + int(rng.random() * 3)
            out.append(pool[:size])
            pool = pool[size:]
    return out


def fold_samples(traces: dict[str, bytes]) -> list[Episode]:
    """Episodes of the generated traces, folded the way ``claude-rl fold`` folds them."""
    episodes: list[Episode] = []
    for session_id, data in traces.items():
        records = [TraceRecord.model_validate(json.loads(line)) for line in data.splitlines() if line.strip()]
        for ep in fold_hook_records(records, session_id):
            episodes.append(ep.model_copy(update={"behavior": extract_behavior(ep)}))
    return episodes


def generate(
    seed: int = DEFAULT_SEED, out: Path = DEFAULT_OUT, workspace: Path = WORKSPACE
) -> dict[str, Any]:
    """Write ``<out>/traces/*.jsonl`` and ``<out>/manifest.json``; returns the manifest."""
    samples = all_samples(seed, workspace)
    sessions = _sessions(samples, seed)
    traces: dict[str, bytes] = {}
    id_rng = _rng(seed, "ids")
    for n, group in enumerate(sessions):
        session_id = _uuid(id_rng)
        start = CLOCK_START + timedelta(minutes=41 * n)
        traces[session_id] = session_lines(session_id, group, _rng(seed, "session", n), start)
    manifest = build_manifest(seed, samples, sessions, fold_samples(traces))
    trace_dir = out / "traces"
    if trace_dir.exists():
        shutil.rmtree(trace_dir)
    trace_dir.mkdir(parents=True)
    for session_id, data in sorted(traces.items()):
        (trace_dir / f"{session_id}.jsonl").write_bytes(data)
    (out / "manifest.json").write_text(
        json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return manifest


def build_manifest(
    seed: int, samples: list[Sample], sessions: list[list[Sample]], episodes: list[Episode]
) -> dict[str, Any]:
    templates: dict[str, dict[str, Any]] = {}
    for s in samples:
        entry = templates.setdefault(
            s.template.name, {"category": s.template.category, "split": s.split, "episodes": 0}
        )
        entry["episodes"] += 1
    chars = [episode_chars(s) for s in samples]
    stated = sum(1 for s in samples for c in s.calls if c.reason is not None)
    calls = sum(len(s.calls) for s in samples)
    behaviors = [ep.behavior or {} for ep in episodes]
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "workspace": WORKSPACE_LABEL,
        "virtual_root": VIRTUAL_ROOT,
        "tool_versions": tool_versions(),
        "episodes": len(samples),
        "sessions": len(sessions),
        "tool_calls": calls,
        "stated_reason_calls": stated,
        "unstated_reason_calls": calls - stated,
        "splits": dict(sorted(Counter(s.split for s in samples).items())),
        "categories": dict(sorted(Counter(s.template.category for s in samples).items())),
        "templates": dict(sorted(templates.items())),
        "heldout_templates": sorted({s.template.name for s in samples if s.template.heldout}),
        "self_correction_episodes": sum(1 for b in behaviors if b.get("self_corrections")),
        "parallel_episodes": sum(1 for b in behaviors if b.get("parallel_groups")),
        "total_chars": sum(chars),
        "est_tokens": sum(chars) // CHARS_PER_TOKEN,
        "episode_chars": {"min": min(chars), "max": max(chars), "mean": round(sum(chars) / len(chars))},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m claude_rl.samples.generate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: data/samples)")
    args = parser.parse_args(argv)
    manifest = generate(args.seed, args.out)
    print(
        f"{manifest['episodes']} episodes in {manifest['sessions']} sessions, "
        f"{len(manifest['templates'])} templates, {len(manifest['categories'])} categories, "
        f"~{manifest['est_tokens']} tokens ({manifest['total_chars']} chars) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
