"""Trace-replay environment for multi-turn RL rollouts (GRPOTrainer's ``environment_factory``).

One environment instance serves one rollout at a time; GRPOTrainer creates a pool of them and
calls ``reset(**row)`` before each rollout with the dataset row's columns. Its tool methods (one
per tool the prompt offers, named after the tool) are what the trainer calls when the policy
writes a tool call:

- a call that matches a call of the recorded episode gets the recorded result, as the model saw it
  in the SFT data (the row's tool turn: same truncation, same ``Error:`` prefix). Matching is on
  the tool name and the input, normalized: the ``description`` label and empty values dropped,
  paths under the workspace's virtual root made relative, ``./`` and runs of whitespace ignored.
  Several recorded calls with the same key are handed out in recorded order (the last one again
  when they run out), so "run the tests, fix, run them again" replays both results;
- any other call runs for real, through ``claude_rl.tools.sandbox.run_sandboxed`` with a read-only
  ``SandboxPolicy``, against a private copy of the bundled workspace (``data/workspace``, copied
  with ``claude_rl.tools.runtime.copy_workspace`` on the first such call of each rollout, removed
  at the next ``reset``). So the policy can explore, and it is scored on what it actually did.
  Writes (Edit, Write, writing Bash commands) and paths outside the workspace are refused with an
  error result the model reads; nothing raises into the trainer;
- a recorded edit that the policy repeats exactly is also applied to the private copy (edits on,
  for that one call), so later real reads see the file as the reference did;
- the ``REPEAT_LIMIT``-th call identical (``exact_call_key``) to earlier ones is refused with the
  runtime's text, as ``claude_rl.runtime`` refuses it, and ``ended`` turns true: the deployed agent
  stops there, the reward cuts the rollout there, and the trainer (``grpo_generation``) generates
  nothing more for it. Calls the recorded episode itself makes that often are exempt, as in the
  reward.

Results are cut head + tail to ``max_tool_tokens`` (the dataset's ``max_tool_tokens``; tokens of
``tokenizer``, or 4 characters per token without one), the way the dataset cut the recorded ones.
Every call is kept in ``calls`` (``CallRecord``: tool, input, text, error, and its source:
``replay``, ``sandbox``, ``refused`` or ``repeat``) for the reward's logs.

``environment_class(tool_schemas)`` builds the class GRPOTrainer gets: one method per tool, each
carrying its JSON schema (``tool_schema``) and position (``tool_position``), so that the prompt
lists exactly the tools of the SFT row, in the same order and with the same signatures
(``schema_tokenizer`` in ``claude_rl.train.grpo`` renders them from those attributes).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from claude_rl import paths
from claude_rl.chat_format import tool_result_text, truncate_middle
from claude_rl.schema import (
    MUTATING_TOOLS,
    REPEAT_LIMIT,
    ToolCall,
    exact_call_key,
    normalize_tool_name,
    refused_repeat_text,
    repeats_allowed,
)
from claude_rl.tools.runtime import VIRTUAL_ROOT, Workspace, copy_workspace
from claude_rl.tools.sandbox import SandboxPolicy, run_sandboxed

CHARS_PER_TOKEN = 4
IGNORED_KEYS = frozenset({"description"})


def default_workspace() -> Path:
    """The bundled workspace the sample episodes were recorded in (``data/workspace``)."""
    return paths.CHECKOUT_DIR / "data" / "workspace"


@dataclass(frozen=True)
class RecordedCall:
    """One call of the recorded episode and the result the model saw."""

    name: str
    input: dict[str, Any]
    output: str
    is_error: bool = False


@dataclass(frozen=True)
class CallRecord:
    """One call the policy made in a rollout."""

    name: str
    input: dict[str, Any]
    output: str
    is_error: bool
    source: str  # replay | sandbox | refused | repeat


# =============================================================================================
# Matching


def _normalize_value(value: Any, roots: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        text = value.strip()
        for root in roots:
            text = text.replace(root + "/", "").replace(root, ".")
        text = " ".join(text.split())
        while text.startswith("./"):
            text = text[2:]
        return text.replace(" ./", " ")
    if isinstance(value, dict):
        return {
            str(k): _normalize_value(v, roots) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
        }
    if isinstance(value, list):
        return [_normalize_value(v, roots) for v in value]
    return value


def call_key(name: str, tool_input: Mapping[str, Any] | None, roots: Iterable[str] = (VIRTUAL_ROOT,)) -> str:
    """What makes two calls "the same call" for replay: the tool and its normalized input."""
    roots = tuple(r.rstrip("/") for r in roots)
    inputs = {
        str(k): _normalize_value(v, roots)
        for k, v in (tool_input or {}).items()
        if str(k) not in IGNORED_KEYS and v is not None and v != ""
    }
    return json.dumps([normalize_tool_name(name), inputs], sort_keys=True, ensure_ascii=False, default=repr)


def recorded_calls(messages: Iterable[dict[str, Any]]) -> list[RecordedCall]:
    """The calls of a dataset row (joined parts of a split row) with the tool text that answered
    each; context turns repeated from an earlier part (``"train": false``) are skipped."""
    from claude_rl.scoring import episode_from_messages, failed_text

    episode = episode_from_messages(messages)
    out = []
    for step in episode.steps:
        call = step.call
        if call.output is None:
            continue
        out.append(RecordedCall(call.name, dict(call.input), call.output, failed_text(call.output)))
    return out


def _as_recorded(value: Any) -> list[RecordedCall]:
    if value is None:
        return []
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    out = []
    for item in value:
        if isinstance(item, RecordedCall):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(
                RecordedCall(
                    str(item.get("name") or ""),
                    dict(item.get("input") or {}),
                    str(item.get("output") or ""),
                    bool(item.get("is_error", False)),
                )
            )
    return out


def recorded_json(calls: Iterable[RecordedCall]) -> str:
    """Recorded calls as the JSON string a dataset column holds (Arrow keeps strings as they are)."""
    return json.dumps([dataclasses.asdict(c) for c in calls], ensure_ascii=False)


# =============================================================================================
# The environment


class ReplayEnvironment:
    """Replays recorded results and runs other calls read-only in a sandboxed workspace copy.

    Public methods other than ``reset`` become tools in GRPOTrainer, so this base class has none:
    ``environment_class`` adds the tool methods. Use ``_call(name, input)`` to call a tool directly.
    """

    tool_schemas: ClassVar[list[dict[str, Any]]] = []

    def __init__(
        self,
        workspace: Path | str | None = None,
        policy: SandboxPolicy | None = None,
        max_tool_tokens: int | None = None,
        tokenizer: Any = None,
        scratch_dir: Path | str | None = None,
        virtual_root: str = VIRTUAL_ROOT,
    ) -> None:
        self.workspace_source = Path(workspace) if workspace is not None else default_workspace()
        # Read-only whatever the caller passed: writes are refused in rollouts.
        self.policy = dataclasses.replace(policy or SandboxPolicy(), allow_edits=False)
        self.max_tool_tokens = max_tool_tokens
        self.tokenizer = tokenizer
        self.scratch_dir = Path(scratch_dir) if scratch_dir is not None else None
        self.virtual_root = virtual_root
        self._recorded: list[RecordedCall] = []
        self._used: dict[str, int] = {}
        self._calls: list[CallRecord] = []
        self._seen: Counter[str] = Counter()
        self._exempt: set[str] = set()
        self._ended = False
        # Set by the trainer for the rollout it decodes greedily (grpo_generation): read by the
        # reward log only.
        self.greedy = False
        # Set by the trainer for the rollout whose first turn it forces to the reference's opening
        # (grpo_generation, ``guided_opening``): read by the reward log only.
        self.guided = False
        self.reference: Any = None
        self._scratch: Path | None = None
        self._workspace: Workspace | None = None
        self._finalizer: Any = None

    # --- what the trainer and the reward read ---

    @property
    def tool_names(self) -> list[str]:
        return [s.get("function", s)["name"] for s in self.tool_schemas]

    @property
    def calls(self) -> list[CallRecord]:
        return list(self._calls)

    @property
    def recorded(self) -> list[RecordedCall]:
        return list(self._recorded)

    @property
    def ended(self) -> bool:
        """True once the runtime's repeat rule ended this rollout (module docstring)."""
        return self._ended

    def reset(self, replay: Any = None, reference: Any = None, **kwargs: Any) -> None:
        """Start a rollout: the row's recorded calls (``replay`` column: ``recorded_json``), a fresh
        workspace copy on the first real call. Returns None (nothing is added to the prompt). The
        row's reference episode (``reference`` column) is kept for the trainer's guided opening."""
        self._drop_workspace()
        self.reference = reference
        self._recorded = _as_recorded(replay)
        self._used = {}
        self._calls = []
        self._seen = Counter()
        self._exempt = repeats_allowed((c.name, c.input) for c in self._recorded)
        self._ended = False
        return None

    # --- calls ---

    def _call(self, name: str, tool_input: Mapping[str, Any] | None) -> str:
        """Run one tool call of the policy and return the text the model reads."""
        tool_input = dict(tool_input or {})
        key = exact_call_key(name, tool_input)
        self._seen[key] += 1
        if self._seen[key] >= REPEAT_LIMIT and key not in self._exempt:
            self._ended = True
            text = refused_repeat_text(self._seen[key] - 1)
            self._calls.append(CallRecord(name, tool_input, text, True, "repeat"))
            return text
        recorded = self._match(name, tool_input)
        if recorded is not None:
            if normalize_tool_name(name) in MUTATING_TOOLS:
                self._apply_edit(name, tool_input)
            self._calls.append(CallRecord(name, tool_input, recorded.output, recorded.is_error, "replay"))
            return recorded.output
        result = run_sandboxed(name, tool_input, self._ensure_workspace(), self.policy)
        refused = bool(result.raw.get("sandbox_refused")) or "is outside the workspace" in result.output_text
        call = ToolCall(name=name, input=tool_input, output=result.output_text, is_error=result.is_error)
        text = self._cut(tool_result_text(call))
        source = "refused" if refused else "sandbox"
        self._calls.append(CallRecord(name, tool_input, text, bool(result.is_error), source))
        return text

    def _match(self, name: str, tool_input: Mapping[str, Any]) -> RecordedCall | None:
        roots = (self.virtual_root,)
        key = call_key(name, tool_input, roots)
        same = [c for c in self._recorded if call_key(c.name, c.input, roots) == key]
        if not same:
            return None
        used = self._used.get(key, 0)
        self._used[key] = used + 1
        return same[min(used, len(same) - 1)]

    def _apply_edit(self, name: str, tool_input: dict[str, Any]) -> None:
        """Apply a replayed recorded edit to the private copy (its recorded result is what is shown)."""
        try:
            run_sandboxed(
                name, tool_input, self._ensure_workspace(), dataclasses.replace(self.policy, allow_edits=True)
            )
        except Exception:  # the copy may differ from the reference's; the replayed text stands
            pass

    def _cut(self, text: str) -> str:
        if self.max_tool_tokens is None:
            return text
        if self.tokenizer is None:
            return truncate_middle(text, self.max_tool_tokens * CHARS_PER_TOKEN)[0]
        return truncate_middle(text, self.max_tool_tokens, self.tokenizer)[0]

    # --- the private workspace copy ---

    def _ensure_workspace(self) -> Workspace:
        if self._workspace is None:
            if self.scratch_dir is not None:
                self.scratch_dir.mkdir(parents=True, exist_ok=True)
            self._scratch = Path(tempfile.mkdtemp(prefix="claude-rl-replay-", dir=self.scratch_dir))
            self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._scratch), True)
            real = copy_workspace(self.workspace_source, self._scratch / "workspace")
            self._workspace = Workspace(real, self.virtual_root)
        return self._workspace

    def _drop_workspace(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # removes the scratch folder
        self._finalizer = None
        self._scratch = None
        self._workspace = None

    def _close(self) -> None:
        self._drop_workspace()


def _tool_method(name: str, schema: dict[str, Any], position: int) -> Any:
    fn_schema = schema.get("function", schema)

    def tool(self: ReplayEnvironment, **arguments: Any) -> str:
        return self._call(name, arguments)

    tool.__name__ = name
    tool.__qualname__ = f"ReplayEnvironment.{name}"
    tool.__doc__ = str(fn_schema.get("description") or name)
    tool.tool_schema = schema  # type: ignore[attr-defined]
    tool.tool_position = position  # type: ignore[attr-defined]
    return tool


def environment_class(
    tool_schemas: list[dict[str, Any]], name: str = "ReplayEnvironment", **defaults: Any
) -> type[ReplayEnvironment]:
    """A ``ReplayEnvironment`` subclass with one tool method per schema (in the given order), whose
    constructor takes ``defaults`` (workspace, max_tool_tokens, tokenizer, ...) when called with no
    arguments, as GRPOTrainer's ``environment_factory`` does."""
    names = [s.get("function", s)["name"] for s in tool_schemas]
    reserved = [
        n for n in names if n.startswith("_") or n in ("reset", "get_reward") or hasattr(ReplayEnvironment, n)
    ]
    if reserved:
        raise ValueError(f"tool names that cannot be environment methods: {reserved}")
    namespace: dict[str, Any] = {
        n: _tool_method(n, s, i) for i, (n, s) in enumerate(zip(names, tool_schemas, strict=True))
    }
    namespace["tool_schemas"] = [json.loads(json.dumps(s)) for s in tool_schemas]

    def __init__(self: ReplayEnvironment, **kwargs: Any) -> None:  # noqa: N807 - the class's constructor
        ReplayEnvironment.__init__(self, **{**defaults, **kwargs})

    namespace["__init__"] = __init__
    return type(name, (ReplayEnvironment,), namespace)
