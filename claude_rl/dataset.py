"""Episodes → a training dataset (``claude-rl build-dataset``).

Output: a folder loadable with ``datasets.load_dataset("json", data_dir=OUT)`` (or
``load_dataset(OUT)``) holding ``train.jsonl``, ``validation.jsonl`` and ``test.jsonl`` (a split
with no rows has no file) and ``manifest.json``.

Formats:

- ``messages`` (default): TRL's conversational tool-calling format, one row per episode (or per
  part of a long one): ``{"messages": [system, user, assistant (content + tool_calls), tool, ...,
  assistant (final)], "tools": "<JSON list of schemas>", "meta": {...}}``. ``tools`` is a JSON
  string (TRL parses it; a list of schemas would be merged across rows by Arrow): the core tools
  plus every tool the row calls, built-ins from ``claude_rl.tools.schemas``, MCP and other unknown
  tools inferred from every call of them in the corpus.
- ``plan``: the flat format for the RL phase and for reading: prompt, reasoning_chain,
  tool_sequence (tool, input, reasoning, outcome, output), response.

Tool outputs are cut head + tail to ``max_tool_tokens`` tokens of the target tokenizer, with a
visible marker. A row longer than ``max_tokens`` is split at assistant-turn boundaries: each later
part repeats the prompt and as many of the latest earlier turns as fit in half the room, as
untrained context (``"train": false``, their tool outputs replaced by a note); an episode one turn
of which cannot fit is dropped. Both are counted in the manifest. (``plan`` rows are never split:
an over-long one is dropped.)

Splits are by session (a session never spans two splits): sessions whose episodes carry
``meta.split_hint == "heldout_template"`` go to test (templates never seen in training: a
transfer test); the rest are assigned by a seeded hash, stratified by category. Near-duplicates
(same prompt once lowercased, digits and whitespace collapsed, and same tool sequence) keep the
first. The same inputs, options and seed give byte-identical files: rows are built in a fixed
order, the manifest holds source hashes and no timestamps or absolute paths.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from claude_rl import paths
from claude_rl.schema import Episode, upgrade_episode

SPLITS = ("train", "validation", "test")
FORMATS = ("messages", "plan")
HELDOUT_HINT = "heldout_template"
OMITTED_OUTPUT = "[output omitted: shown in an earlier part of this conversation]"
OMITTED_TURNS = "[{n} earlier turns of this task are not shown]"
MANIFEST_VERSION = 1


def samples_traces_dir() -> Path:
    """The bundled sample corpus: hook-record traces in ``<checkout>/data/samples/traces``."""
    return paths.CHECKOUT_DIR / "data" / "samples" / "traces"


@dataclass
class BuildOptions:
    source: str = "store"  # store | samples | a path
    out: Path | None = None
    fmt: str = "messages"
    max_tokens: int = 4096
    max_tool_tokens: int = 384
    tokenizer: str = "smollm2-135m"
    seed: int = 0
    categories: tuple[str, ...] = ()
    min_steps: int = 0
    since: str | None = None
    until: str | None = None
    exclude_errors: bool = False
    name: str | None = None
    validation_fraction: float = 0.1
    test_fraction: float = 0.1

    def source_kind(self) -> str:
        return self.source if self.source in ("store", "samples") else "path"

    def dataset_name(self) -> str:
        return self.name or f"{self.source_kind()}-{self.fmt}"


@dataclass
class BuildResult:
    out: Path
    manifest: dict[str, Any]
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class DatasetError(ValueError):
    pass


# --- sources ----------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hashes(files: Iterable[Path], base: Path) -> dict[str, str]:
    return {p.relative_to(base).as_posix(): _sha256(p) for p in sorted(files)}


def _read_episode_files(files: list[Path]) -> list[Episode]:
    out = []
    for path in files:
        for line in path.read_bytes().splitlines():
            if line.strip():
                out.append(Episode.model_validate(upgrade_episode(json.loads(line))))
    return out


def _is_home(folder: Path) -> bool:
    return any((folder / sub).is_dir() for sub in ("episodes", paths.TRACES, paths.TRANSCRIPTS))


def _fold_home(home: Path) -> tuple[list[Episode], dict[str, str]]:
    from claude_rl.episodes.fold import episodes_dir, fold, read_episodes

    result = fold(home)
    if result.errors:
        sid, problem = next(iter(sorted(result.errors.items())))
        raise DatasetError(f"could not fold session {sid} of {home}: {problem}")
    folder = episodes_dir(home)
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    return read_episodes(home), _hashes(files, folder)


def load_source(
    source: str, home: Path | None = None, samples_dir: Path | None = None
) -> tuple[list[Episode], dict[str, Any]]:
    """The episodes of ``source`` and a description of it (kind, file hashes; no absolute paths)."""
    if source == "store":
        episodes, hashes = _fold_home(Path(home or paths.home()))
        return episodes, {"kind": "store", "files": hashes}
    if source == "samples":
        traces = Path(samples_dir or samples_traces_dir())
        files = sorted(traces.glob("*.jsonl")) if traces.is_dir() else []
        if not files:
            raise DatasetError(
                f"no sample traces in {traces}: the bundled corpus is missing from this checkout"
            )
        tmp = Path(tempfile.mkdtemp(prefix="claude-rl-samples-"))
        try:
            dest = paths.traces_dir(tmp)
            dest.mkdir(parents=True)
            for f in files:
                shutil.copyfile(f, dest / f.name)
            episodes, _ = _fold_home(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return episodes, {"kind": "samples", "files": _hashes(files, traces)}
    path = Path(source).expanduser()
    if path.is_file():
        return _read_episode_files([path]), {"kind": "path", "files": {path.name: _sha256(path)}}
    if not path.is_dir():
        raise DatasetError(f"--source {source}: not 'store', 'samples', a folder or a file")
    if _is_home(path):
        episodes, hashes = _fold_home(path)
        return episodes, {"kind": "path", "files": hashes}
    files = sorted(path.glob("*.jsonl"))
    if not files:
        raise DatasetError(f"no episode files (*.jsonl) in {path}")
    return _read_episode_files(files), {"kind": "path", "files": _hashes(files, path)}


# --- selection --------------------------------------------------------------------------------


def _behavior(ep: Episode) -> dict[str, Any]:
    if ep.behavior is None:
        from claude_rl.episodes.behavior import extract_behavior

        ep.behavior = extract_behavior(ep)
    return ep.behavior


def category_of(ep: Episode) -> str:
    """The sample's label when it has one, else the behavior extractor's category."""
    meta = ep.meta or {}
    if isinstance(meta.get("category"), str) and meta["category"]:
        return meta["category"]
    return str(_behavior(ep).get("category") or "other")


def _sort_key(ep: Episode) -> tuple[str, str, int]:
    return (ep.started_at or "", ep.session_id, ep.index)


def _date_ok(ep: Episode, since: str | None, until: str | None) -> bool:
    if not since and not until:
        return True
    ts = ep.started_at or ""
    if not ts:
        return False
    if since and ts[: len(since)] < since:
        return False
    return not (until and ts[: len(until)] > until)


def select(episodes: list[Episode], opts: BuildOptions) -> tuple[list[Episode], Counter[str]]:
    """Filters, in a fixed order; the reason each dropped episode was dropped is counted."""
    dropped: Counter[str] = Counter()
    wanted = set(opts.categories)
    kept = []
    for ep in sorted(episodes, key=_sort_key):
        if not ep.prompt.strip():
            dropped["empty_prompt"] += 1
        elif not (ep.final_answer and ep.final_answer.strip()):
            dropped["no_final_answer"] += 1
        elif len(ep.steps) < opts.min_steps:
            dropped["min_steps"] += 1
        elif wanted and not ({category_of(ep), _behavior(ep).get("category")} & wanted):
            dropped["category"] += 1
        elif not _date_ok(ep, opts.since, opts.until):
            dropped["date_range"] += 1
        elif opts.exclude_errors and (ep.status == "error" or any(s.call.is_error for s in ep.steps)):
            dropped["errors"] += 1
        else:
            kept.append(ep)
    return kept, dropped


_PUNCT = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")


def normalize_prompt(text: str) -> str:
    """Case, punctuation and spacing do not make a new task; other names and numbers do
    ("compare TX-1 and TX-2" and "compare TX-1 and TX-3" are two tasks)."""
    return _SPACE.sub(" ", _PUNCT.sub(" ", text.lower())).strip()


def dedupe(episodes: list[Episode]) -> tuple[list[Episode], int]:
    """Near-duplicates (same normalized prompt and tool sequence): the first one is kept."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    out = []
    for ep in episodes:
        key = (normalize_prompt(ep.prompt), tuple(ep.tool_sequence))
        if key in seen:
            continue
        seen.add(key)
        out.append(ep)
    return out, len(episodes) - len(out)


def assign_splits(
    episodes: list[Episode], seed: int, validation_fraction: float = 0.1, test_fraction: float = 0.1
) -> dict[str, tuple[str, str]]:
    """session id → (split, reason): ``heldout_template`` (test), else ``hash`` (seeded, by category).

    Other hints (the bundled corpus marks the rest ``"train"``, meaning "not held out") do not pin
    a split: those sessions are spread over train, validation and test like captured ones."""
    sessions: dict[str, list[Episode]] = {}
    for ep in episodes:
        sessions.setdefault(ep.session_id, []).append(ep)
    out: dict[str, tuple[str, str]] = {}
    by_category: dict[str, list[str]] = {}
    for sid, eps in sorted(sessions.items()):
        if any((ep.meta or {}).get("split_hint") == HELDOUT_HINT for ep in eps):
            out[sid] = ("test", HELDOUT_HINT)
        else:
            first = min(eps, key=lambda e: e.index)
            by_category.setdefault(category_of(first), []).append(sid)
    for _cat, sids in sorted(by_category.items()):
        ranked = sorted(sids, key=lambda s: hashlib.sha256(f"{seed}\0{s}".encode()).hexdigest())
        n = len(ranked)
        for i, sid in enumerate(ranked):
            position = (i + 0.5) / n
            if position < validation_fraction:
                split = "validation"
            elif position < validation_fraction + test_fraction:
                split = "test"
            else:
                split = "train"
            out[sid] = (split, "hash")
    return out


# --- rows -------------------------------------------------------------------------------------


@dataclass
class _Stats:
    tool_outputs_cut: int = 0
    split_episodes: int = 0
    split_parts: int = 0
    over_length_dropped: int = 0


def _count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _units(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """(system + user head, then one unit per assistant message with the tool turns that follow it)."""
    head: list[dict[str, Any]] = []
    units: list[list[dict[str, Any]]] = []
    for m in messages:
        if m["role"] == "assistant":
            units.append([m])
        elif units:
            units[-1].append(m)
        else:
            head.append(m)
    return head, units


def _as_context(unit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An earlier turn repeated in a later part: not trained on, tool outputs left out."""
    out = []
    for m in unit:
        if m["role"] == "assistant":
            out.append({**m, "train": False})
        else:
            out.append({**m, "content": OMITTED_OUTPUT})
    return out


def _omitted_note(turns: int) -> dict[str, Any]:
    return {"role": "assistant", "content": OMITTED_TURNS.format(n=turns), "train": False}


def fit_messages(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    fmt: str,
    tokenizer: Any,
    max_tokens: int,
) -> list[tuple[list[dict[str, Any]], int]] | None:
    """The messages as one or more parts of at most ``max_tokens`` tokens each, with their token
    counts, or None when one turn cannot fit even alone (after the prompt).

    Parts split at assistant-turn boundaries. A later part starts with the system and user turns,
    then as many of the latest earlier turns as fit, as untrained context (a note says how many
    older ones are not shown), then the turns it trains on. Every turn is trained on exactly once.
    """
    from claude_rl.chat_format import render

    def size(msgs: list[dict[str, Any]]) -> int:
        return _count_tokens(tokenizer, render(msgs, tools, fmt))

    total = size(messages)
    if total <= max_tokens:
        return [(messages, total)]
    head, units = _units(messages)
    # The template renders message by message and every turn starts and ends with a special token,
    # so token counts add up: plan with per-turn counts, then check each part exactly.
    head_n = size(head)
    contexts = [_as_context(u) for u in units]
    unit_n = [size(head + u) - head_n for u in units]
    ctx_n = [size(head + c) - head_n for c in contexts]
    note_n = size(head + [_omitted_note(len(units))]) - head_n
    parts: list[tuple[list[dict[str, Any]], int]] = []
    start = 0
    while start < len(units):
        if head_n + unit_n[start] > max_tokens:
            return None
        # The most recent context that fits in half the room, leaving space for this part's turns.
        room = max_tokens - head_n
        budget = min(room - unit_n[start], room // 2)
        first, used = 0, sum(ctx_n[:start])
        while first < start and used + (note_n if first else 0) > budget:
            used -= ctx_n[first]
            first += 1
        n = head_n + used + (note_n if first else 0) + unit_n[start]
        end = start + 1
        while end < len(units) and n + unit_n[end] <= max_tokens:
            n += unit_n[end]
            end += 1
        context = ([_omitted_note(first)] if first else []) + [m for c in contexts[first:start] for m in c]
        part = head + context + [m for u in units[start:end] for m in u]
        exact = size(part)
        if exact > max_tokens:  # the estimate was off (a tokenizer merging across turns): be safe
            return None
        parts.append((part, exact))
        start = end
    return parts


def _truncate_outputs(
    messages: list[dict[str, Any]], tokenizer: Any, max_tool_tokens: int, stats: _Stats
) -> list[dict[str, Any]]:
    from claude_rl.chat_format import truncate_middle

    out = []
    for m in messages:
        if m["role"] == "tool":
            text, cut = truncate_middle(m["content"], max_tool_tokens, tokenizer)
            if cut:
                stats.tool_outputs_cut += 1
                m = {**m, "content": text}
        out.append(m)
    return out


def _meta(ep: Episode, split: str, reason: str) -> dict[str, Any]:
    meta = ep.meta or {}
    return {
        "episode_id": ep.episode_id,
        "session_id": ep.session_id,
        "category": category_of(ep),
        "template": meta.get("template"),
        "split": split,
        "split_reason": reason,
        "steps": len(ep.steps),
        "status": ep.status,
        "tool_use_ids": [s.call.tool_use_id for s in ep.steps],
    }


def _plan_row(ep: Episode, tokenizer: Any, max_tool_tokens: int) -> dict[str, Any]:
    from claude_rl.chat_format import tool_result_text, truncate_middle

    chain = _behavior(ep).get("reasoning_chain") or []
    outcome = {c.get("step"): c.get("outcome") for c in chain if isinstance(c, dict)}
    sequence = []
    for i, step in enumerate(ep.steps):
        output, _ = truncate_middle(tool_result_text(step.call), max_tool_tokens, tokenizer)
        sequence.append(
            {
                "step": i,
                "tool": step.call.name,
                "input": step.call.input,
                "reasoning": step.reason,
                "outcome": outcome.get(i, "error" if step.call.is_error else "ok"),
                "parallel_group": step.call.parallel_group,
                "tool_use_id": step.call.tool_use_id,
                "output": output,
            }
        )
    return {
        "prompt": ep.prompt,
        "reasoning_chain": [s.reason for s in ep.steps if s.reason],
        "tool_sequence": sequence,
        "response": ep.final_answer,
        "category": category_of(ep),
    }


def _schemas(inputs_by_tool: dict[str, list[dict[str, Any]]], used: Iterable[str]) -> list[dict[str, Any]]:
    from claude_rl.tools.schemas import schemas_for

    return schemas_for({name: inputs_by_tool.get(name, []) for name in used})


def _percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _length_stats(values: list[int]) -> dict[str, Any]:
    if not values:
        return {"rows": 0}
    return {
        "rows": len(values),
        "min": min(values),
        "max": max(values),
        "mean": round(sum(values) / len(values), 1),
        "p50": _percentile(values, 0.5),
        "p90": _percentile(values, 0.9),
        "p99": _percentile(values, 0.99),
    }


def _dumps(obj: Any, sort_keys: bool = False) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=sort_keys)


def build_dataset(
    opts: BuildOptions,
    *,
    home: Path | None = None,
    samples_dir: Path | None = None,
    tokenizer: Any = None,
) -> BuildResult:
    """Build the dataset ``opts`` describes; returns where it went and its manifest."""
    from claude_rl.chat_format import episode_to_messages, format_for, tool_inputs

    if opts.fmt not in FORMATS:
        raise DatasetError(f"--format {opts.fmt}: one of {', '.join(FORMATS)}")
    home = Path(home or paths.home())
    out = Path(opts.out) if opts.out else home / "datasets" / opts.dataset_name()
    if tokenizer is None:
        from claude_rl.base_model import load_tokenizer

        tokenizer = load_tokenizer(opts.tokenizer, home)
    chat_fmt = format_for(tokenizer)

    episodes, source = load_source(opts.source, home, samples_dir)
    selected, dropped = select(episodes, opts)
    selected, duplicates = dedupe(selected)
    splits = assign_splits(selected, opts.seed, opts.validation_fraction, opts.test_fraction)

    converted = [(ep, episode_to_messages(ep)) for ep in selected]
    inputs_by_tool: dict[str, list[dict[str, Any]]] = {}
    for _, messages in converted:
        for name, seen in tool_inputs(messages).items():
            inputs_by_tool.setdefault(name, []).extend(seen)

    stats = _Stats()
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    lengths: dict[str, list[int]] = {s: [] for s in SPLITS}
    categories: dict[str, Counter[str]] = {s: Counter() for s in SPLITS}
    tool_calls: Counter[str] = Counter()
    sessions: dict[str, set[str]] = {s: set() for s in SPLITS}
    split_reasons: Counter[str] = Counter()
    for ep, messages in converted:
        split, reason = splits[ep.session_id]
        used = list(tool_inputs(messages))
        tools = _schemas(inputs_by_tool, used)
        messages = _truncate_outputs(messages, tokenizer, opts.max_tool_tokens, stats)
        parts = fit_messages(messages, tools, chat_fmt, tokenizer, opts.max_tokens)
        if parts is None or (opts.fmt == "plan" and len(parts) > 1):
            stats.over_length_dropped += 1
            continue
        meta = _meta(ep, split, reason)
        if opts.fmt == "plan":
            row = _plan_row(ep, tokenizer, opts.max_tool_tokens)
            row["meta"] = {**meta, "tokens": parts[0][1]}
            rows[split].append(row)
            lengths[split].append(parts[0][1])
        else:
            if len(parts) > 1:
                stats.split_episodes += 1
                stats.split_parts += len(parts)
            tools_json = _dumps(tools)
            for k, (part, n_tokens) in enumerate(parts):
                part_meta = {**meta, "part": k, "parts": len(parts), "tokens": n_tokens}
                rows[split].append({"messages": part, "tools": tools_json, "meta": part_meta})
                lengths[split].append(n_tokens)
        categories[split][meta["category"]] += 1
        sessions[split].add(ep.session_id)
        split_reasons[reason] += 1
        tool_calls.update(s.call.name for s in ep.steps)

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for split in SPLITS:
        path = out / f"{split}.jsonl"
        if not rows[split]:
            path.unlink(missing_ok=True)
            continue
        data = "".join(_dumps(r) + "\n" for r in rows[split]).encode("utf-8")
        path.write_bytes(data)
        files[path.name] = hashlib.sha256(data).hexdigest()

    options = asdict(opts)
    options.pop("out")
    options.pop("source")
    options["categories"] = sorted(opts.categories)
    manifest = {
        "version": MANIFEST_VERSION,
        "name": opts.dataset_name(),
        "format": opts.fmt,
        "chat_format": chat_fmt,
        "source": source,
        "options": options,
        "counts": {
            "episodes_read": len(episodes),
            "filtered_out": dict(sorted(dropped.items())),
            "near_duplicates": duplicates,
            "episodes_kept": sum(split_reasons.values()),
            "over_length": {
                "split_episodes": stats.split_episodes,
                "split_parts": stats.split_parts,
                "dropped": stats.over_length_dropped,
            },
            "tool_outputs_truncated": stats.tool_outputs_cut,
            "rows": {s: len(rows[s]) for s in SPLITS},
            "sessions": {s: len(sessions[s]) for s in SPLITS},
            "split_reasons": dict(sorted(split_reasons.items())),
        },
        "token_lengths": {s: _length_stats(lengths[s]) for s in SPLITS},
        "categories": {s: dict(sorted(categories[s].items())) for s in SPLITS},
        "tools": dict(sorted(tool_calls.items(), key=lambda kv: (-kv[1], kv[0]))),
        "files": files,
    }
    (out / "manifest.json").write_text(_dumps(manifest, sort_keys=True) + "\n", encoding="utf-8")
    return BuildResult(out=out, manifest=manifest, rows=rows)
