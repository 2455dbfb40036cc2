"""Scorers: how closely a candidate episode imitates a reference episode.

Every scorer is a plain function ``f(reference: Episode, candidate: Episode) -> float | None``: a
value in [0, 1] (1 = the candidate does what the reference did), or ``None`` where the part does
not apply to this pair (a reference that never queries a database has no "schema read before
query" part). The evaluator reports them; the RL phase sums them with weights (``weighted_sum``).
Candidates come from the local agent (``ToolCall.source == "runtime"``): they may have no steps,
no final answer, failed or malformed calls; no scorer raises on them.

Scorers (``SCORERS``, in this order):

- ``exact_match``: 1 when the tool-name sequences are equal (two empty sequences are equal), else 0.
- ``tool_sequence_similarity``: 1 - Levenshtein(ref names, cand names) / max(lengths); 1 when both
  are empty.
- ``tool_set_f1``: F1 of the sets of tool names used (order and counts ignored); 1 when both empty.
- ``first_tool_accuracy``: 1 when the first action is the same: the first tool's name, or answering
  without any tool.
- ``argument_similarity``: calls are aligned in order, a reference call only with a candidate call
  of the same tool (the order-preserving alignment that maximizes the summed similarity, a weighted
  longest common subsequence); each aligned pair scores the token similarity of its inputs, and the
  sum is divided by the longer sequence's length, so missing and extra calls count as 0. Inputs are
  normalized first: the workspace's virtual root (and the episode's ``cwd``) removed from paths,
  ``./`` dropped, words lowercased (SQL keywords and identifiers are case-insensitive) except inside
  single-quoted literals, whitespace and double quotes ignored; the similarity is the Dice overlap
  of word unigrams plus token bigrams (so word order matters a little). The main input of a tool
  (Bash ``command``, Grep/Glob ``pattern``, Read ``file_path``, ...) weighs 0.8, the other keys 0.2;
  ``description`` (a label) is ignored. Right tool with the wrong query scores low. ``None`` when
  the reference makes no call.
- ``reasoning_depth``: how alike the amount of stated reasoning is: the mean of min/max of the
  number of stated reasons (one per assistant message: a reason shared by parallel calls counts
  once) and min/max of their length, measured in distinct words per reason, capped at
  ``REASON_WORDS_CAP``. Saying more than the reference lowers it as much as saying less, and
  repeating words adds nothing, so padding never pays. ``None`` when neither episode makes a call.
- ``answer_similarity``: lexical similarity of the final answers: token F1 of the words (a few
  stop words left out) and, when either answer holds numbers (dates, times, values), F1 of the sets
  of numbers, weighted 0.6 (numbers carry the answer in this SQL workspace): ``0.6 * numbers +
  0.4 * text``. A text-similarity callable (an embedding model's cosine, say) can replace the word
  F1: ``make_answer_similarity(fn)``. 0 when the candidate has no answer; ``None`` when the
  reference has none.
- ``constraint_match``: constraints as the behavior extractor finds them. Two parts, averaged over
  those that apply: *acknowledged*, the share of the kinds of constraint the reference stated in its
  own text (read_only, use, avoid, ...) that the candidate states too; *respected*, the share of the
  user's checkable constraints (read-only, don't modify X, avoid X, answer format) that the
  candidate does not break, counting only those the reference kept. ``None`` when neither applies.
- ``self_correction``: 1 - max(0, give-up rate of the candidate - give-up rate of the reference),
  where the give-up rate is the share of failed calls (error, or empty result) never followed by a
  call of the same family with another input (``errors_not_retried`` / ``empty_not_retried`` of the
  behavior extractor). A failed call not retried lowers it; failing less than the reference does
  not. ``None`` when neither episode has a failed call.
- ``schema_read_before_query``: applies when the reference reads the database schema (schema file,
  ``CREATE TABLE`` grep, ``.schema``, ``PRAGMA table_info``, ``sqlite_master``, ...) before its first
  query: 1 when the candidate reads the schema too, before any query it makes, else 0. ``None``
  when the reference makes no query or queries before reading the schema.

Doing nothing earns nothing: a candidate with no call and no answer scores 0 on every part that
applies (the behavioral ones included, though it broke no constraint).

Only the schema and the behavior extractor (``claude_rl.episodes.behavior``, itself standard library
plus the schema) are imported.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from claude_rl.schema import Episode, Provenance, Step, ToolCall, normalize_tool_name

Scorer = Callable[[Episode, Episode], float | None]
TextSimilarity = Callable[[str, str], float]

BOOTSTRAP_SAMPLES = 1000  # intervals: percentile bootstrap, fixed seed (reports reproduce)
SEED = 0
CONFIDENCE = 0.95

# Where the workspace appears in recorded paths (``claude_rl.tools.runtime.VIRTUAL_ROOT``).
VIRTUAL_ROOTS = ("/workspace/command-center",)
REASON_WORDS_CAP = 50
NUMBER_WEIGHT = 0.6
PRIMARY_WEIGHT = 0.8

# =============================================================================================
# Per-episode features, computed once per episode by ``score_all``


class Features:
    """What the scorers read from one episode; the behavior dict is extracted on first use."""

    def __init__(self, episode: Episode) -> None:
        self.episode = episode
        self.calls: list[ToolCall] = [s.call for s in episode.steps]
        self.names = [normalize_tool_name(c.name) if isinstance(c.name, str) else "" for c in self.calls]
        roots = list(VIRTUAL_ROOTS)
        cwd = getattr(episode.provenance, "cwd", None)
        if isinstance(cwd, str) and cwd.strip() not in ("", "/") and cwd.rstrip("/") not in roots:
            roots.append(cwd.rstrip("/"))
        self.roots = tuple(roots)
        self._inputs: list[dict[str, Any]] | None = None
        self._behavior: dict[str, Any] | None = None

    @property
    def answer(self) -> str:
        text = self.episode.final_answer
        return text.strip() if isinstance(text, str) else ""

    @property
    def empty(self) -> bool:
        """No call and no answer: the candidate did nothing."""
        return not self.calls and not self.answer

    @property
    def inputs(self) -> list[dict[str, Any]]:
        """Normalized inputs per call: key → token Counter (text) or a plain value."""
        if self._inputs is None:
            self._inputs = [_normalized_input(c.input, self.roots) for c in self.calls]
        return self._inputs

    @property
    def behavior(self) -> dict[str, Any]:
        if self._behavior is None:
            from claude_rl.episodes.behavior import extract_behavior

            self._behavior = extract_behavior(self.episode)
        return self._behavior


def _did_nothing(ref: Features, cand: Features) -> bool:
    """The candidate made no call and gave no answer, where the reference did something."""
    return cand.empty and not ref.empty


def features(episode: Episode | Features) -> Features:
    return episode if isinstance(episode, Features) else Features(episode)


# =============================================================================================
# Sequence scorers


def levenshtein(a: list[Any], b: list[Any]) -> int:
    """Edit distance (insert, delete, substitute; each costs 1) between two sequences."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def _exact_match(ref: Features, cand: Features) -> float | None:
    return 1.0 if ref.names == cand.names else 0.0


def _sequence_similarity(ref: Features, cand: Features) -> float | None:
    longest = max(len(ref.names), len(cand.names))
    if longest == 0:
        return 1.0
    return 1.0 - levenshtein(ref.names, cand.names) / longest


def _f1(a: set[Any], b: set[Any]) -> float:
    if not a and not b:
        return 1.0
    if not a or not b:
        return 0.0
    return 2 * len(a & b) / (len(a) + len(b))


def _tool_set_f1(ref: Features, cand: Features) -> float | None:
    return _f1(set(ref.names), set(cand.names))


def _first_tool(ref: Features, cand: Features) -> float | None:
    first_ref = ref.names[0] if ref.names else None
    first_cand = cand.names[0] if cand.names else None
    return 1.0 if first_ref == first_cand else 0.0


# =============================================================================================
# Arguments

_TOKEN = re.compile(r"'[^'\n]*'|[\w.]+|[^\s\w'\"`]")
_HAS_WORD = re.compile(r"\w")
_DOT_SLASH = re.compile(r"(?<![\w./])\./")
_PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "Bash": ("command",),
    "Grep": ("pattern",),
    "Glob": ("pattern",),
    "Read": ("file_path",),
    "Edit": ("file_path", "old_string", "new_string"),
    "MultiEdit": ("file_path", "edits"),
    "Write": ("file_path", "content"),
    "NotebookEdit": ("notebook_path", "new_source"),
    "WebFetch": ("url",),
    "WebSearch": ("query",),
    "Agent": ("prompt",),
}
_IGNORED_KEYS = frozenset({"description"})


def _tokens(text: str, depth: int = 0) -> list[str]:
    out: list[str] = []
    for m in _TOKEN.finditer(text):
        token = m.group(0)
        if token.startswith("'") and len(token) >= 2:
            inner = token[1:-1]
            if depth == 0 and any(ch.isspace() for ch in inner):
                out.extend(_tokens(inner, depth + 1))  # a whole quoted SQL statement or sentence
            else:
                out.append(token)  # a literal: its case matters ('generator' vs 'Generator')
        else:
            out.append(token.lower())
    return out


def normalize_text(text: str, roots: Iterable[str] = VIRTUAL_ROOTS) -> str:
    """Paths under a workspace root made relative (``/workspace/command-center/db/x`` → ``db/x``)."""
    for root in roots:
        text = text.replace(root + "/", "").replace(root, ".")
    return _DOT_SLASH.sub("", text)


def text_tokens(text: str, roots: Iterable[str] = VIRTUAL_ROOTS) -> Counter[str]:
    """Word unigrams plus token bigrams of a normalized command, query, pattern or path."""
    tokens = _tokens(normalize_text(text, roots))
    bag: Counter[str] = Counter(t for t in tokens if _HAS_WORD.search(t))
    bag.update(f"{a}\x00{b}" for a, b in zip(tokens, tokens[1:], strict=False))
    return bag


def dice(a: Counter[str], b: Counter[str]) -> float:
    """Multiset overlap 2|a∩b| / (|a| + |b|); 1 when both are empty."""
    total = sum(a.values()) + sum(b.values())
    if total == 0:
        return 1.0
    return 2 * sum((a & b).values()) / total


def _normalized_value(value: Any, roots: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return text_tokens(value, roots)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    try:
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text_tokens(text, roots)


def _normalized_input(inputs: Any, roots: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(inputs, dict):
        return {}
    return {str(k): _normalized_value(v, roots) for k, v in inputs.items() if str(k) not in _IGNORED_KEYS}


def _value_similarity(a: Any, b: Any) -> float:
    if isinstance(a, Counter) and isinstance(b, Counter):
        return dice(a, b)
    if isinstance(a, Counter) or isinstance(b, Counter):
        return 0.0
    if isinstance(a, bool) or isinstance(b, bool):
        return 1.0 if a is b else 0.0
    return 1.0 if a == b else 0.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _call_similarity(tool: str, a: dict[str, Any], b: dict[str, Any]) -> float:
    """Similarity of two normalized inputs of the same tool (absent key = 0 for that key)."""
    keys = list(dict.fromkeys([*a, *b]))
    if not keys:
        return 1.0

    def sim(key: str) -> float:
        if key not in a or key not in b:
            return 0.0
        return _value_similarity(a[key], b[key])

    primary = [k for k in _PRIMARY_KEYS.get(tool, ()) if k in a or k in b]
    others = [k for k in keys if k not in primary]
    if not primary:
        return _mean([sim(k) for k in keys])
    main = _mean([sim(k) for k in primary])
    if not others:
        return main
    return PRIMARY_WEIGHT * main + (1 - PRIMARY_WEIGHT) * _mean([sim(k) for k in others])


def aligned_pairs(ref: Features, cand: Features) -> tuple[float, list[tuple[int, int, float]]]:
    """The order-preserving alignment of same-tool calls with the largest summed input similarity:
    (that sum, [(reference step, candidate step, similarity), ...])."""
    n, m = len(ref.names), len(cand.names)
    if n == 0 or m == 0:
        return 0.0, []
    ref_in, cand_in = ref.inputs, cand.inputs
    sims: dict[tuple[int, int], float] = {}
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        row, above = best[i], best[i - 1]
        for j in range(1, m + 1):
            value = max(above[j], row[j - 1])
            if ref.names[i - 1] == cand.names[j - 1]:
                s = _call_similarity(ref.names[i - 1], ref_in[i - 1], cand_in[j - 1])
                sims[(i - 1, j - 1)] = s
                value = max(value, above[j - 1] + s)
            row[j] = value
    pairs: list[tuple[int, int, float]] = []
    i, j = n, m
    while i > 0 and j > 0:
        s = sims.get((i - 1, j - 1))
        if s is not None and math.isclose(best[i][j], best[i - 1][j - 1] + s, abs_tol=1e-12):
            pairs.append((i - 1, j - 1, s))
            i, j = i - 1, j - 1
        elif best[i][j] == best[i - 1][j]:
            i -= 1
        else:
            j -= 1
    pairs.reverse()
    return best[n][m], pairs


def _argument_similarity(ref: Features, cand: Features) -> float | None:
    if not ref.names:
        return None
    total, _ = aligned_pairs(ref, cand)
    return min(1.0, total / max(len(ref.names), len(cand.names)))


# =============================================================================================
# Reasoning depth

_WORD = re.compile(r"\w+")


def stated_reasons(episode: Episode) -> list[str]:
    """The reasons written before calls, one per assistant message (parallel calls share one)."""
    out: list[str] = []
    previous_group: int | None = None
    previous_reason: str | None = None
    for step in episode.steps:
        reason = step.reason.strip() if isinstance(step.reason, str) else ""
        group = step.call.parallel_group
        same_message = group is not None and group == previous_group
        if reason and not (same_message and reason == previous_reason):
            out.append(reason)
        if reason:
            previous_reason = reason
        previous_group = group
    return out


def _ratio(a: float, b: float) -> float:
    if a == b:
        return 1.0
    return min(a, b) / max(a, b)


def _reasoning_depth(ref: Features, cand: Features) -> float | None:
    if not ref.calls and not cand.calls:
        return None
    if _did_nothing(ref, cand):
        return 0.0
    ref_reasons = stated_reasons(ref.episode)
    cand_reasons = stated_reasons(cand.episode)

    def words(reasons: list[str]) -> int:
        return sum(min(REASON_WORDS_CAP, len({w.lower() for w in _WORD.findall(r)})) for r in reasons)

    count = _ratio(len(ref_reasons), len(cand_reasons))
    length = _ratio(words(ref_reasons), words(cand_reasons))
    return (count + length) / 2


# =============================================================================================
# Final answer

_STOP_WORDS = frozenset(
    "a an the of and or to in on at for with is are was were be been it its this that these those by as "
    "from which there".split()
)
_ANSWER_TOKEN = re.compile(r"\w(?:[\w.%:/-]*\w)?")
# A colon next to a number is part of a time (``12:30``) only with digits on both sides: ``42: the
# count`` and ``count:42`` keep their 42.
_NUMBER = re.compile(
    r"(?<![\w./-])(?<!\d:)(?:\d{4}-\d{2}-\d{2}(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?|\d{1,2}:\d{2}(?::\d{2})?|"
    r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?)(?![\w/]|:\d|\.\d|-\d)"
)


def answer_numbers(text: str) -> set[str]:
    """The numbers, dates and times of a text, normalized (``1,200.50`` → ``1200.5``, ``07`` → ``7``)."""
    out: set[str] = set()
    for m in _NUMBER.finditer(text):
        token = m.group(0)
        if "-" in token[1:] or ":" in token:  # a date or a time: kept as written
            out.add(token.replace("T", " "))
            continue
        token = token.replace(",", "")
        try:
            value = float(token)
        except ValueError:
            continue
        if not math.isfinite(value):
            continue
        out.add(f"{value:.6f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value)))
    return out


def unseen_answer_numbers(episode: Episode) -> tuple[set[str], set[str]]:
    """(the final answer's numbers, those of them the run never saw): a number is seen when it is in
    the prompt, a call's input or a call's result. A diagnostic, not a scorer: a sum or an average
    is legitimately unseen (2 of the 29 held-out reference answers of the sample corpus are mostly
    unseen numbers), but an answer made mostly of unseen numbers was written without the data."""
    numbers = answer_numbers(episode.final_answer or "")
    if not numbers:
        return numbers, set()
    seen = answer_numbers(episode.prompt or "")
    for step in episode.steps:
        seen |= answer_numbers(json.dumps(step.call.input, default=str))
        seen |= answer_numbers(step.call.output or "")
    return numbers, numbers - seen


def answer_grounded(episode: Episode) -> bool | None:
    """False when most of the final answer's numbers appear nowhere the run could have read them
    (``unseen_answer_numbers``), True otherwise; None when the answer holds no number."""
    numbers, unseen = unseen_answer_numbers(episode)
    if not numbers:
        return None
    return len(unseen) * 2 <= len(numbers)


def answer_tokens(text: str) -> Counter[str]:
    return Counter(
        t for t in (m.group(0).lower() for m in _ANSWER_TOKEN.finditer(text)) if t not in _STOP_WORDS
    )


def token_f1(a: str, b: str) -> float:
    """Word-multiset F1 of two texts (1 when both have no words)."""
    return dice(answer_tokens(a), answer_tokens(b))


def _answer_similarity(
    ref: Features, cand: Features, text_similarity: TextSimilarity | None = None
) -> float | None:
    if not ref.answer:
        return None
    if not cand.answer:
        return 0.0
    if text_similarity is None:
        text = token_f1(ref.answer, cand.answer)
    else:
        text = float(text_similarity(ref.answer, cand.answer))
        text = 0.0 if not math.isfinite(text) else min(1.0, max(0.0, text))
    ref_numbers, cand_numbers = answer_numbers(ref.answer), answer_numbers(cand.answer)
    if not ref_numbers and not cand_numbers:
        return text
    return NUMBER_WEIGHT * _f1(ref_numbers, cand_numbers) + (1 - NUMBER_WEIGHT) * text


# =============================================================================================
# Behavior: constraints, self-correction, schema before query

_OBJECT_WORD = re.compile(r"[\w./-]+")
_OBJECT_STOP = frozenset(
    "the a an any this that these those my our your its file files folder directory table tables it them "
    "code".split()
)


def _object_words(obj: Any) -> list[str]:
    if not isinstance(obj, str):
        return []
    words = [w.strip("./-").lower() for w in _OBJECT_WORD.findall(obj)]
    return [w for w in words if len(w) > 1 and w not in _OBJECT_STOP]


def _input_text(call: ToolCall) -> str:
    try:
        return json.dumps(call.input, ensure_ascii=False, default=repr).lower()
    except (TypeError, ValueError, RecursionError):
        return repr(call.input).lower()


def _mentions(call: ToolCall, words: list[str]) -> bool:
    text = _input_text(call)
    return all(w in text for w in words)


def _changes(call: ToolCall) -> bool:
    from claude_rl.episodes.behavior import change_kind

    return change_kind(call) is not None


def _format_kept(text: str, ref: Features, cand: Features) -> bool | None:
    """Whether the candidate's answer has the format the constraint asks for (None: not checkable)."""
    from claude_rl.episodes.behavior import answer_shape

    shape = answer_shape(cand.answer or None)
    low = text.lower()
    if "table" in low:
        return bool(shape["has_table"])
    if "list" in low or "bullet" in low:
        return shape["list_items"] > 0
    if "json" in low or "yaml" in low or "csv" in low:
        return shape["code_blocks"] > 0 or cand.answer.startswith(("{", "["))
    if any(w in low for w in ("brief", "concise", "succinct", "short", "one sentence", "one line", "tl")):
        limit = max(60, 1.5 * len(ref.answer.split()))
        return bool(cand.answer) and len(cand.answer.split()) <= limit
    return None


def _kept(constraint: dict[str, Any], ref: Features, who: Features) -> bool | None:
    """Whether ``who`` keeps a user constraint; None when the constraint cannot be checked."""
    kind = constraint.get("kind")
    if kind == "read_only":
        return not any(_changes(c) for c in who.calls)
    if kind == "do_not_modify":
        words = _object_words(constraint.get("object"))
        if not words:
            return None
        return not any(_changes(c) and _mentions(c, words) for c in who.calls)
    if kind == "avoid":
        words = _object_words(constraint.get("object"))
        if not words:
            return None
        return not any(_mentions(c, words) for c in who.calls)
    if kind == "format":
        return _format_kept(str(constraint.get("text") or ""), ref, who)
    return None


def _constraint_match(ref: Features, cand: Features) -> float | None:
    constraints = ref.behavior.get("constraints") or []
    parts: list[float] = []
    stated = {c.get("kind") for c in constraints if c.get("source") == "assistant"}
    if stated:
        if _did_nothing(ref, cand):
            return 0.0
        cand_stated = {
            c.get("kind") for c in cand.behavior.get("constraints") or [] if c.get("source") == "assistant"
        }
        parts.append(len(stated & cand_stated) / len(stated))
    checks: list[bool] = []
    for c in constraints:
        if c.get("source") != "user" or _kept(c, ref, ref) is not True:
            continue
        kept = _kept(c, ref, cand)
        if kept is not None:
            checks.append(kept)
    if checks:
        if _did_nothing(ref, cand):
            return 0.0
        parts.append(sum(checks) / len(checks))
    return _mean(parts) if parts else None


def _give_ups(f: Features) -> tuple[int, int]:
    """(failed calls, failed calls never retried with another input)."""
    b = f.behavior
    failed = int(b.get("errors") or 0) + int(b.get("empty_results") or 0)
    gave_up = len(b.get("errors_not_retried") or []) + len(b.get("empty_not_retried") or [])
    return failed, min(gave_up, failed)


def _self_correction(ref: Features, cand: Features) -> float | None:
    ref_failed, ref_gave_up = _give_ups(ref)
    cand_failed, cand_gave_up = (0, 0) if not cand.calls else _give_ups(cand)
    if ref_failed == 0 and cand_failed == 0:
        return None
    if not cand.calls:
        return 0.0
    ref_rate = ref_gave_up / ref_failed if ref_failed else 0.0
    cand_rate = cand_gave_up / cand_failed if cand_failed else 0.0
    return 1.0 - max(0.0, cand_rate - ref_rate)


_SQL_CLIENT = re.compile(
    r"\b(?:sqlite3?|psql|mysql|mariadb|duckdb|sqlcmd|clickhouse(?:-client)?)\b|\.execute(?:many|script)?\s*\(",
    re.I,
)
_SQL_STATEMENT = re.compile(r"\b(?:select|with|insert|update|delete|replace)\b", re.I)
_SCHEMA_COMMAND = re.compile(
    r"(?:^|[\s\"'])\.(?:schema|tables|indexes|indices)\b|\bpragma\s+table_(?:x?info|list)\b|"
    r"\bsqlite_(?:master|schema)\b|\binformation_schema\b|\\d[t+]?\s|\bdescribe\s+\w|"
    r"\bshow\s+(?:tables|columns|create\s+table)\b",
    re.I,
)
_SCHEMA_FILE = re.compile(r"schema|\.sql\b|migrations?/", re.I)
_SCHEMA_PATTERN = re.compile(r"create\s+table|\bschema\b", re.I)
_SCHEMA_MCP = re.compile(r"schema|describe|list_tables|table_info", re.I)


def _is_query(name: str, call: ToolCall) -> bool:
    inputs = call.input if isinstance(call.input, dict) else {}
    if name == "Bash":
        command = inputs.get("command")
        if not isinstance(command, str) or not _SQL_CLIENT.search(command):
            return False
        return bool(_SQL_STATEMENT.search(_SCHEMA_COMMAND.sub(" ", command)))
    if name.startswith("mcp__"):
        return any(isinstance(inputs.get(k), str) for k in ("sql", "query", "statement"))
    return False


def _is_schema_read(name: str, call: ToolCall) -> bool:
    if call.is_error or call.status in ("error", "unanswered"):
        return False
    inputs = call.input if isinstance(call.input, dict) else {}

    def value(key: str) -> str:
        v = inputs.get(key)
        return v if isinstance(v, str) else ""

    if name == "Read":
        return bool(_SCHEMA_FILE.search(value("file_path")))
    if name == "Grep":
        return bool(_SCHEMA_PATTERN.search(value("pattern"))) or bool(
            _SCHEMA_FILE.search(value("path") + " " + value("glob"))
        )
    if name == "Glob":
        return bool(_SCHEMA_FILE.search(value("pattern")))
    if name == "Bash":
        command = value("command")
        if _SQL_CLIENT.search(command) and _SCHEMA_COMMAND.search(command):
            return True
        return bool(re.search(r"\b(?:cat|head|less|sed|grep|rg)\b[^|;&]*schema", command, re.I))
    if name.startswith("mcp__"):
        return bool(_SCHEMA_MCP.search(name.rsplit("__", 1)[-1]))
    return False


def schema_before_query(f: Features) -> tuple[bool, bool]:
    """(makes a query, reads the schema before its first query or without querying at all)."""
    first_query = next(
        (i for i, (n, c) in enumerate(zip(f.names, f.calls, strict=True)) if _is_query(n, c)), None
    )
    end = first_query if first_query is not None else len(f.calls)
    read = any(_is_schema_read(n, c) for n, c in zip(f.names[:end], f.calls[:end], strict=True))
    return first_query is not None, read


def _schema_read_before_query(ref: Features, cand: Features) -> float | None:
    ref_queries, ref_read = schema_before_query(ref)
    if not ref_queries or not ref_read:
        return None
    _, cand_read = schema_before_query(cand)
    return 1.0 if cand_read else 0.0


# =============================================================================================
# Registry

_IMPLEMENTATIONS: dict[str, Callable[[Features, Features], float | None]] = {
    "exact_match": _exact_match,
    "tool_sequence_similarity": _sequence_similarity,
    "tool_set_f1": _tool_set_f1,
    "first_tool_accuracy": _first_tool,
    "argument_similarity": _argument_similarity,
    "reasoning_depth": _reasoning_depth,
    "answer_similarity": _answer_similarity,
    "constraint_match": _constraint_match,
    "self_correction": _self_correction,
    "schema_read_before_query": _schema_read_before_query,
}


def _public(name: str, doc: str) -> Scorer:
    impl = _IMPLEMENTATIONS[name]

    def scorer(reference: Episode, candidate: Episode) -> float | None:
        return _clip(impl(features(reference), features(candidate)))

    scorer.__name__ = scorer.__qualname__ = name
    scorer.__doc__ = doc
    return scorer


def _clip(value: float | None) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value):
        return 0.0
    return min(1.0, max(0.0, float(value)))


exact_match = _public("exact_match", "1 when the tool-name sequences are equal, else 0.")
tool_sequence_similarity = _public(
    "tool_sequence_similarity", "1 - Levenshtein distance of the tool-name sequences / the longer length."
)
tool_set_f1 = _public("tool_set_f1", "F1 of the sets of tool names used.")
first_tool_accuracy = _public(
    "first_tool_accuracy", "1 when the first tool (or answering without one) is the same, else 0."
)
argument_similarity = _public(
    "argument_similarity",
    "Token similarity of the inputs of same-tool calls aligned in order; None without calls.",
)
reasoning_depth = _public(
    "reasoning_depth", "Similarity of the number and length of the stated reasons; None without calls."
)
constraint_match = _public(
    "constraint_match", "Constraints acknowledged like the reference, and the user's ones kept; None if none."
)
self_correction = _public(
    "self_correction", "1 - how much more often the candidate gives up on a failed call than the reference."
)
schema_read_before_query = _public(
    "schema_read_before_query",
    "1 when the candidate reads the schema before querying, where the reference does.",
)


def answer_similarity(
    reference: Episode, candidate: Episode, *, text_similarity: TextSimilarity | None = None
) -> float | None:
    """0.6 × F1 of the numbers (when either answer has some) + 0.4 × token F1 of the words, or of
    ``text_similarity(ref, cand)`` (clipped to [0, 1]) when given; None when the reference has no answer."""
    return _clip(_answer_similarity(features(reference), features(candidate), text_similarity))


def make_answer_similarity(text_similarity: TextSimilarity) -> Scorer:
    """An ``answer_similarity`` scorer whose text part is ``text_similarity`` (e.g. embedding cosine);
    put it in a registry copy to use it: ``score_all(r, c, scorers={**SCORERS, "answer_similarity": s})``."""

    def scorer(reference: Episode, candidate: Episode) -> float | None:
        return answer_similarity(reference, candidate, text_similarity=text_similarity)

    scorer.__name__ = scorer.__qualname__ = "answer_similarity"
    return scorer


SCORERS: dict[str, Scorer] = {
    "exact_match": exact_match,
    "tool_sequence_similarity": tool_sequence_similarity,
    "tool_set_f1": tool_set_f1,
    "first_tool_accuracy": first_tool_accuracy,
    "argument_similarity": argument_similarity,
    "reasoning_depth": reasoning_depth,
    "answer_similarity": answer_similarity,
    "constraint_match": constraint_match,
    "self_correction": self_correction,
    "schema_read_before_query": schema_read_before_query,
}
# The metrics a report leads with, in its order.
HEADLINE = (
    "tool_sequence_similarity",
    "exact_match",
    "first_tool_accuracy",
    "tool_set_f1",
    "argument_similarity",
    "answer_similarity",
    "reasoning_depth",
)
BEHAVIORAL = ("constraint_match", "self_correction", "schema_read_before_query")


def score_all(
    reference: Episode, candidate: Episode, scorers: Mapping[str, Scorer] | None = None
) -> dict[str, float | None]:
    """Every scorer of ``scorers`` (default ``SCORERS``) on the pair, by name. Each episode's features
    (normalized inputs, behavior) are computed once for the registry's own scorers."""
    chosen = SCORERS if scorers is None else scorers
    ref, cand = Features(reference), Features(candidate)
    out: dict[str, float | None] = {}
    for name, fn in chosen.items():
        if SCORERS.get(name) is fn and name in _IMPLEMENTATIONS:
            out[name] = _clip(_IMPLEMENTATIONS[name](ref, cand))
        else:
            out[name] = _clip(fn(reference, candidate))
    return out


def weighted_sum(
    scores: Mapping[str, float | None], weights: Mapping[str, float], normalize: bool = True
) -> float:
    """The RL reward: Σ weight × score over the scores that apply (None ones are skipped). With
    ``normalize`` the weights of the applicable scores are rescaled to sum to 1, so the reward stays
    in [0, 1] whichever parts apply."""
    total = 0.0
    used = 0.0
    for name, weight in weights.items():
        value = scores.get(name)
        if value is None or weight == 0:
            continue
        total += weight * value
        used += abs(weight)
    if not normalize:
        return total
    return total / used if used else 0.0


# --- episodes rebuilt from chat messages (dataset rows, trainer completions) ---------------------
# Shared by the evaluation (references from dataset rows) and the RL reward (rows and rollouts).

_FAILED = re.compile(r"^(?:<tool_use_error>|Error:|Error \(no message\)|Exit code [1-9])")
TRAINER_ERROR = re.compile(r"^\{'error': ")  # how TRL's tool loop reports an exception of a tool


def content_text(content: Any) -> str:
    """A message's content as text (a string, or the text of its content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def call_arguments(value: Any) -> dict[str, Any] | None:
    """A call's arguments as a dict; None when they are not a JSON object."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if value is None:
        return {}
    return dict(value) if isinstance(value, dict) else None


def failed_text(text: str) -> bool:
    """The tool result text says the call failed (error, non-zero exit, refusal, trainer error)."""
    head = text.lstrip()[:200]
    return bool(_FAILED.match(head) or TRAINER_ERROR.match(head))


def episode_from_messages(
    messages: Iterable[dict[str, Any]],
    meta: Mapping[str, Any] | None = None,
    *,
    episode_id: str | None = None,
) -> Episode:
    """A reference episode rebuilt from a dataset row's chat (``chat_format.episode_to_messages``
    inverted as far as the row keeps things): the first user turn is the prompt; each assistant
    turn with calls gives one step per call (its text is the first call's reason, calls of a turn
    share a parallel group); each tool turn is the result of the call it answers (by
    ``tool_call_id``, else in order); the last assistant turn without calls is the final answer.
    Turns marked ``"train": false`` (context repeated in a later part of a split row) are skipped."""
    meta = dict(meta or {})
    eid = episode_id or str(meta.get("episode_id") or "messages:0")
    session_id = str(meta.get("session_id") or eid.rsplit(":", 1)[0])
    try:
        index = int(eid.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        index = 0
    prompt = ""
    steps: list[Step] = []
    by_id: dict[str, ToolCall] = {}
    pending: list[ToolCall] = []
    skipped: set[str] = set()
    skip_results = 0
    final_answer: str | None = None
    turn = 0
    for m in messages:
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        if role == "user" and not prompt:
            prompt = content_text(m.get("content"))
        elif role == "assistant":
            calls = [c for c in m.get("tool_calls") or [] if isinstance(c, dict)]
            if m.get("train") is False:
                skipped.update(str(c.get("id")) for c in calls if c.get("id") is not None)
                skip_results = len(calls)
                pending = []
                continue
            skip_results = 0
            text = content_text(m.get("content")).strip()
            if not calls:
                final_answer = text or final_answer
                continue
            turn += 1
            pending = []
            for k, tc in enumerate(calls):
                fn = tc.get("function") if isinstance(tc.get("function"), dict) else tc
                call = ToolCall(
                    tool_use_id=str(tc["id"]) if tc.get("id") is not None else None,
                    name=str(fn.get("name") or ""),
                    input=call_arguments(fn.get("arguments", fn.get("parameters"))) or {},
                    status="unanswered",
                    parallel_group=turn,
                    source="samples",
                )
                if call.tool_use_id:
                    by_id[call.tool_use_id] = call
                pending.append(call)
                steps.append(Step(index=len(steps), reason=(text or None) if k == 0 else None, call=call))
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if call_id is not None and str(call_id) in skipped:
                continue
            if call_id is None and skip_results:
                skip_results -= 1
                continue
            call = by_id.get(str(call_id)) if call_id is not None else None
            if call is None:
                call = next((c for c in pending if c.status == "unanswered"), None)
            if call is None:
                continue
            text = content_text(m.get("content"))
            call.output = text
            call.is_error = failed_text(text)
            call.status = "error" if call.is_error else "ok"
    labels = {k: meta[k] for k in ("category", "template") if meta.get(k) is not None}
    labels["derived_from"] = "messages"
    return Episode(
        episode_id=eid,
        session_id=session_id,
        index=index,
        prompt=prompt,
        steps=steps,
        final_answer=final_answer,
        status="completed" if final_answer else "incomplete",
        provenance=Provenance(session_id=session_id, sources=["dataset"]),
        meta=labels,
    )


def mean_ci(
    values: list[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = SEED, confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """Mean and percentile-bootstrap interval (fixed seed): ``{"mean", "lo", "hi", "n"}``; the mean
    is None without values, and the interval is the mean itself with one value."""
    n = len(values)
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    mean = sum(values) / n
    if n == 1 or min(values) == max(values):
        return {"mean": mean, "lo": mean, "hi": mean, "n": n}
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(samples))
    tail = (1 - confidence) / 2
    lo = means[max(0, int(tail * samples))]
    hi = means[min(samples - 1, int((1 - tail) * samples) - 1)]
    return {"mean": mean, "lo": min(lo, mean), "hi": max(hi, mean), "n": n}
