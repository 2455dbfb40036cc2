"""Folding: hook records + transcript copy of a session → that session's episodes, on disk.

Hooks give timings and structured results; the transcript gives the text Claude wrote before each
call, calls the hooks never saw (validation rejections, some subagent calls) and answers of turns
that ended without a Stop. Episodes are matched by the tool_use ids they share (or, without
calls, by prompt text in order); within a matched episode calls are joined on tool_use_id, hook
results and timings win, the transcript fills gaps.

Episodes of a session live in ``<home>/episodes/<session>.jsonl``, one per line, rewritten
atomically when a fold changes them. ``<home>/episodes/_state.json`` remembers the size and
mtime of each session's inputs, so a fold (or a restarted ``watch``) skips unchanged sessions.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from claude_rl import paths
from claude_rl.episodes.hooks import fold_hook_records
from claude_rl.schema import Episode, Step, upgrade_episode
from claude_rl.store import dedupe_records, read_trace_file

EPISODES = "episodes"
STATE_FILE = "_state.json"


def episodes_dir(root: Path | None = None) -> Path:
    return (root or paths.home()) / EPISODES


# --- matching and merging --------------------------------------------------------------------


def _ids(ep: Episode) -> set[str]:
    return {s.call.tool_use_id for s in ep.steps if s.call.tool_use_id}


def _norm(text: str) -> str:
    return " ".join(text.split())


def merge_episode(tr: Episode, hk: Episode) -> Episode:
    """One episode from its transcript view and its hook view."""
    hook_calls = {s.call.tool_use_id: s.call for s in hk.steps if s.call.tool_use_id}
    # Hook records of Claude Code before 2.0.43 carry no tool_use_id: join those on tool and input.
    anonymous = [s.call for s in hk.steps if not s.call.tool_use_id]
    steps: list[Step] = []
    seen: set[str] = set()
    for step in tr.steps:
        call = step.call
        h = hook_calls.get(call.tool_use_id) if call.tool_use_id else None
        if h is None:
            h = next((a for a in anonymous if a.name == call.name and a.input == call.input), None)
            if h is not None:
                anonymous.remove(h)
                h.tool_use_id = call.tool_use_id
                hook_calls[call.tool_use_id or ""] = h
        if h is not None:
            seen.add(call.tool_use_id or "")
            update: dict[str, Any] = {"source": "both"}
            if h.duration_ms is not None:
                update["duration_ms"] = h.duration_ms
            if h.status != "unanswered":  # the hook saw the result: it wins
                update.update(output=h.output, raw_output=h.raw_output, is_error=h.is_error, status=h.status)
            if call.subagent is None and h.subagent is not None:
                update["subagent"] = h.subagent
            call = call.model_copy(update=update)
        steps.append(step.model_copy(update={"call": call}))
    # Calls only the hooks saw (the transcript lags): after the call that preceded them there.
    for i, hstep in enumerate(hk.steps):
        hid = hstep.call.tool_use_id
        if hid and hid in seen:
            continue
        prev_ids = [s.call.tool_use_id for s in hk.steps[:i] if s.call.tool_use_id in seen]
        at = len(steps)
        if prev_ids:
            at = next(j for j, s in enumerate(steps) if s.call.tool_use_id == prev_ids[-1]) + 1
        elif steps:
            at = 0
        steps.insert(at, hstep)
        if hid:
            seen.add(hid)
    steps = [s.model_copy(update={"index": i}) for i, s in enumerate(steps)]
    status = tr.status
    if hk.status == "completed" or (hk.status == "error" and tr.status == "incomplete"):
        status = hk.status
    prov = tr.provenance.model_copy(
        update={
            "sources": sorted(set(tr.provenance.sources) | set(hk.provenance.sources)),
            "trace_path": hk.provenance.trace_path,
            "model": tr.provenance.model or hk.provenance.model,
        }
    )
    return tr.model_copy(
        update={
            "steps": steps,
            "final_answer": hk.final_answer or tr.final_answer,
            "status": status,
            "started_at": hk.started_at or tr.started_at,
            "ended_at": hk.ended_at or tr.ended_at,
            "prompt_uuid": tr.prompt_uuid or hk.prompt_uuid,
            "provenance": prov,
        }
    )


def reconcile(transcript_eps: list[Episode], hook_eps: list[Episode]) -> list[Episode]:
    """Both views of a session's episodes → one list, in prompt order, re-indexed."""
    matched: dict[int, int] = {}  # transcript index -> hook index
    used: set[int] = set()
    for ti, tr in enumerate(transcript_eps):
        ids = _ids(tr)
        for hi, hk in enumerate(hook_eps):
            if hi not in used and ids and ids & _ids(hk):
                matched[ti] = hi
                used.add(hi)
                break
    # Episodes without calls: by prompt text, keeping order after the last match.
    for ti, tr in enumerate(transcript_eps):
        if ti in matched:
            continue
        floor = max((h for t, h in matched.items() if t < ti), default=-1)
        for hi in range(floor + 1, len(hook_eps)):
            if hi not in used and _norm(hook_eps[hi].prompt) == _norm(tr.prompt):
                matched[ti] = hi
                used.add(hi)
                break
    merged: list[tuple[float, Episode]] = []
    hook_pos = {hi: ti for ti, hi in matched.items()}
    for ti, tr in enumerate(transcript_eps):
        ep = merge_episode(tr, hook_eps[matched[ti]]) if ti in matched else tr
        merged.append((float(ti), ep))
    for hi, hk in enumerate(hook_eps):
        if hi in hook_pos:
            continue
        # A hook-only episode goes right after the transcript episode matched to its predecessor.
        prev = [hook_pos[h] for h in hook_pos if h < hi]
        merged.append(((max(prev) if prev else -1) + 0.5 + hi * 1e-6, hk))
    merged.sort(key=lambda item: item[0])
    out = []
    for i, (_, ep) in enumerate(merged):
        out.append(ep.model_copy(update={"index": i, "episode_id": f"{ep.session_id}:{i}"}))
    return out


# --- one session -----------------------------------------------------------------------------


@dataclass
class SessionInputs:
    session_id: str
    trace: Path | None = None
    transcript: Path | None = None
    subagents: list[Path] = field(default_factory=list)

    def files(self) -> list[Path]:
        return [p for p in (self.trace, self.transcript, *self.subagents) if p is not None]

    def signature(self) -> dict[str, list[int]]:
        sig = {}
        for p in self.files():
            try:
                st = p.stat()
            except OSError:
                continue
            sig[str(p)] = [st.st_size, st.st_mtime_ns]
        return sig


def session_inputs(root: Path | None = None) -> dict[str, SessionInputs]:
    """Every session the store knows, with its trace file and transcript copy."""
    root = root or paths.home()
    found: dict[str, SessionInputs] = {}
    traces = paths.traces_dir(root)
    if traces.is_dir():
        for p in sorted(traces.glob("*.jsonl")):
            found.setdefault(p.stem, SessionInputs(p.stem)).trace = p
    transcripts = paths.transcripts_dir(root)
    if transcripts.is_dir():
        for p in sorted(transcripts.glob("*.jsonl")):
            if "." in p.stem:  # <session>.<inode>.jsonl: an older copy kept aside
                continue
            inputs = found.setdefault(p.stem, SessionInputs(p.stem))
            inputs.transcript = p
            sub = transcripts / p.stem / "subagents"
            inputs.subagents = sorted(sub.glob("*.jsonl")) if sub.is_dir() else []
    return found


def build_session(inputs: SessionInputs, skipped: Counter[str] | None = None) -> list[Episode]:
    from claude_rl.episodes.behavior import extract_behavior
    from claude_rl.episodes.transcript import parse_transcript

    hook_eps: list[Episode] = []
    if inputs.trace is not None:
        tf = read_trace_file(inputs.trace)
        hook_eps = fold_hook_records(dedupe_records(tf.records), inputs.session_id, str(inputs.trace))
    transcript_eps: list[Episode] = []
    if inputs.transcript is not None:
        parsed = parse_transcript(inputs.transcript, inputs.subagents, session_id=inputs.session_id)
        transcript_eps = parsed.episodes
        if skipped is not None:
            skipped.update(parsed.skipped)
    episodes = reconcile(transcript_eps, hook_eps)
    return [ep.model_copy(update={"behavior": extract_behavior(ep)}) for ep in episodes]


def write_episodes(root: Path, session_id: str, episodes: list[Episode]) -> bool:
    """Write a session's episodes atomically; returns False when the file was already identical."""
    folder = episodes_dir(root)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = b"".join(orjson.dumps(ep.model_dump(mode="json")) + b"\n" for ep in episodes)
    path = folder / f"{session_id}.jsonl"
    if path.exists() and path.read_bytes() == data:
        return False
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return True


def read_episodes(root: Path | None = None, session_id: str | None = None) -> list[Episode]:
    folder = episodes_dir(root)
    if not folder.is_dir():
        return []
    files = [folder / f"{session_id}.jsonl"] if session_id else sorted(folder.glob("*.jsonl"))
    out = []
    for path in files:
        if not path.exists():
            continue
        for line in path.read_bytes().splitlines():
            if line.strip():
                out.append(Episode.model_validate(upgrade_episode(orjson.loads(line))))
    return out


# --- many sessions, with state ---------------------------------------------------------------


@dataclass
class FoldResult:
    sessions: int = 0
    folded: int = 0
    unchanged: int = 0
    episodes: int = 0
    new_episodes: int = 0
    tool_calls: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    skipped_lines: Counter[str] = field(default_factory=Counter)  # transcript lines that are not conversation


def _load_state(root: Path) -> dict[str, Any]:
    try:
        data = orjson.loads((episodes_dir(root) / STATE_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_state(root: Path, state: dict[str, Any]) -> None:
    folder = episodes_dir(root)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = folder / (STATE_FILE + ".tmp")
    tmp.write_bytes(orjson.dumps(state, option=orjson.OPT_SORT_KEYS))
    os.replace(tmp, folder / STATE_FILE)


def _count_calls(steps: list[Step]) -> int:
    return sum(1 + (_count_calls(s.call.subagent.steps) if s.call.subagent else 0) for s in steps)


def _fold_one(root: Path, inputs: SessionInputs) -> tuple[str, int, int, Counter[str], str | None]:
    """Build and write one session's episodes: (session, episodes, tool calls, skipped, error)."""
    skipped: Counter[str] = Counter()
    try:
        episodes = build_session(inputs, skipped)
        write_episodes(root, inputs.session_id, episodes)
    except Exception as exc:  # noqa: BLE001 - one bad session must not stop the others
        return inputs.session_id, 0, 0, skipped, f"{type(exc).__name__}: {exc}"
    calls = sum(_count_calls(ep.steps) for ep in episodes)
    return inputs.session_id, len(episodes), calls, skipped, None


# Below this many sessions, starting worker processes costs more than it saves.
PARALLEL_MIN_SESSIONS = 16


def run_parallel(fn: Any, jobs: list[tuple[Any, ...]], workers: int | None) -> Iterable[Any]:
    """``fn(*job)`` for each job, in worker processes when there are enough jobs and cores."""
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers <= 1 or len(jobs) < PARALLEL_MIN_SESSIONS:
        for job in jobs:
            yield fn(*job)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: the CLI may run threads (progress bars, watchdog) that fork would copy mid-lock.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(fn, *job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()


def fold(
    root: Path | None = None,
    sessions: Iterable[str] | None = None,
    *,
    force: bool = False,
    progress: Any = None,
    workers: int | None = None,
) -> FoldResult:
    """Fold every session whose inputs changed since the last fold (or those named).

    Sessions are independent, so many are folded in parallel (``workers``, default: all cores).
    """
    root = root or paths.home()
    known = session_inputs(root)
    wanted = list(sessions) if sessions is not None else list(known)
    state = _load_state(root)
    result = FoldResult()
    todo: list[tuple[Path, SessionInputs]] = []
    signatures: dict[str, dict[str, list[int]]] = {}
    for sid in dict.fromkeys(wanted):
        inputs = known.get(sid)
        if inputs is None:
            continue
        result.sessions += 1
        signatures[sid] = inputs.signature()
        previous = state.get(sid, {})
        if not force and previous.get("inputs") == signatures[sid]:
            result.unchanged += 1
            result.episodes += int(previous.get("episodes", 0))
            result.tool_calls += int(previous.get("tool_calls", 0))
            if progress:
                progress(sid)
            continue
        todo.append((root, inputs))
    for sid, n_episodes, calls, skipped, error in run_parallel(_fold_one, todo, workers):
        result.skipped_lines.update(skipped)
        if error is not None:
            result.errors[sid] = error
        else:
            previous = state.get(sid, {})
            result.folded += 1
            result.episodes += n_episodes
            result.new_episodes += max(0, n_episodes - int(previous.get("episodes", 0)))
            result.tool_calls += calls
            state[sid] = {"inputs": signatures[sid], "episodes": n_episodes, "tool_calls": calls}
        if progress:
            progress(sid)
    _save_state(root, state)
    return result
