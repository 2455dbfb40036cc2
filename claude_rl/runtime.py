"""The local agent: a model writes tool calls, the sandbox runs them, until it answers.

``run_agent(prompt, model, workspace)`` renders the chat with ``claude_rl.chat_format`` (the same
template training used), asks the model for the assistant's next turn, parses its tool calls,
runs them through ``claude_rl.tools.sandbox.run_sandboxed`` (read-only unless edits are allowed)
and feeds each result back as a tool turn, until the model answers without calling a tool or a
limit is hit. The run comes back as an ``AgentRun`` whose ``episode`` is a ``schema.Episode`` (calls
with ``source="runtime"``), written by ``write_run`` to ``<home>/runs/<session_id>.jsonl`` in the
store's episode format.

Models implement ``CompletionModel`` (``complete(prompt, max_tokens) -> str``: greedy, stops at the
format's end token, returns the generated text). ``LlamaCppModel`` runs a GGUF with
llama-cpp-python: the prompt is tokenized with special tokens parsed and no BOS added (the rendered
prompt carries what it needs), decoding is greedy, and the KV cache is kept across turns. The
template is prefix-preserving, so each turn's prompt extends the previous one and only the new
tokens are evaluated (``last_stats["reused"]`` counts the tokens whose cache was kept).

Stop reasons: ``answered`` (a turn without tool calls: its text is the final answer),
``max_turns`` (``AgentConfig.max_turns`` tool-using turns), ``repeated_call`` (the same call with
the same arguments asked for ``repeat_limit`` times; the last one is not run), ``context_full``
(the next prompt leaves fewer than ``min_new_tokens`` of the context), ``error`` (the model
failed). A tool call that cannot be run (JSON that does not parse, an unknown tool, missing or
mistyped arguments) is answered with an error tool turn the model can read, and counts as a turn.

The CLI calls ``run_cli(question, model_path=..., workspace=..., allow_edits=..., max_turns=...)``.
The default model is the newest exported GGUF (``<home>/models/<run>/gguf/*.gguf``: the folder
with the newest file, an F16 file preferred, else its newest file), else the bundled base model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from claude_rl import chat_format, paths
from claude_rl.schema import (
    REPEAT_LIMIT,
    Episode,
    Provenance,
    Step,
    ToolCall,
    exact_call_key,
    refused_repeat_text,
)
from claude_rl.tools.runtime import VIRTUAL_ROOT, Workspace, copy_workspace
from claude_rl.tools.sandbox import SandboxPolicy, run_sandboxed
from claude_rl.tools.schemas import BUILTIN, CORE_TOOLS

StopReason = Literal["answered", "max_turns", "repeated_call", "context_full", "error"]
INVALID_CALL = "invalid_tool_call"  # the name a call that could not be parsed is recorded under


class ContextFull(RuntimeError):
    """The prompt does not leave room in the model's context for the next turn."""


@runtime_checkable
class CompletionModel(Protocol):
    """A model the agent can drive: greedy completion of a rendered prompt up to the end token.

    Optional attributes the runtime uses when present: ``fmt`` (the chat format), ``name`` (for the
    episode's provenance), ``last_stats`` (token counts and timings of the last call),
    ``offsets_tokenizer`` (a tokenizer ``chat_format.truncate_middle`` accepts, to cut tool results
    in tokens). ``complete`` raises ``ContextFull`` when the prompt does not fit.
    """

    def complete(self, prompt: str, max_tokens: int) -> str: ...


# =============================================================================================
# llama-cpp-python


class _OffsetsTokenizer:
    """A llama.cpp vocabulary seen as the HF tokenizer call ``truncate_middle`` makes (offsets)."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm

    def __call__(self, text: str, **_: Any) -> dict[str, Any]:
        data = text.encode("utf-8")
        ids = self._llm.tokenize(data, add_bos=False, special=False) if data else []
        pieces = [self._llm.detokenize([t]) for t in ids]
        if b"".join(pieces) != data:
            raise ValueError("token pieces do not rebuild the text")
        char_at = [0] * (len(data) + 1)  # byte offset → character offset
        pos = 0
        for k, ch in enumerate(text):
            for _ in range(len(ch.encode("utf-8"))):
                char_at[pos] = k
                pos += 1
        char_at[pos] = len(text)
        offsets = []
        start = 0
        for piece in pieces:
            end = start + len(piece)
            offsets.append((char_at[start], char_at[end]))
            start = end
        return {"input_ids": ids, "offset_mapping": offsets}


class LlamaCppModel:
    """A GGUF model run with llama-cpp-python; greedy, KV cache reused across turns.

    ``temperature`` > 0 samples instead (no top-k, top-p or min-p cut: the distribution GRPO's
    rollouts are drawn from at that temperature); each ``complete`` call draws with its own seed,
    derived from the one ``reseed`` set and the number of calls since, so a run is reproducible
    (up to a reused cache prefix, which can change the logits' last bits and with them a draw).

    ``reuse_cache`` keeps the KV cache of the longest common prefix between the previous call and
    this one (``Llama.generate``'s prefix match), so a turn evaluates only what the last tool
    results added. ``reuse_generated`` also keeps the cache of the tokens generated last turn
    (saves up to ``max_new_tokens`` evaluations a turn, but the output may then differ from a
    fresh evaluation at a near-tie; see ``complete``).
    """

    def __init__(
        self,
        gguf_path: Path | str,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int = 0,
        fmt: str | None = None,
        *,
        reuse_cache: bool = True,
        reuse_generated: bool = False,
        n_batch: int = 512,
        temperature: float = 0.0,
    ) -> None:
        from llama_cpp import Llama

        if temperature < 0:
            raise ValueError(f"temperature {temperature} < 0")
        self.temperature = temperature
        self._seed = seed
        self._calls = 0
        self.path = Path(gguf_path)
        self.name = self.path.name
        self.reuse_cache = reuse_cache
        self.reuse_generated = reuse_generated
        self.llm = Llama(
            model_path=str(self.path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_batch=n_batch,
            seed=seed,
            verbose=False,
        )
        self.n_ctx = self.llm.n_ctx()
        self.fmt = fmt or self._detect_format()
        self.end_token = chat_format.FORMATS[self.fmt].end_token
        self.stop_ids = {self.llm.token_eos()}
        end_ids = self.tokenize(self.end_token)
        if len(end_ids) == 1:
            self.stop_ids.add(end_ids[0])
        self.last_stats: dict[str, Any] = {}
        self.offsets_tokenizer = _OffsetsTokenizer(self.llm)

    def _detect_format(self) -> str:
        def single(token: str) -> bool:
            return len(self.llm.tokenize(token.encode(), add_bos=False, special=True)) == 1

        if single("<|start_header_id|>") and single("<|eot_id|>"):
            return "llama3"
        if single("<|im_start|>") and single("<|im_end|>"):
            return "chatml"
        label = str(self.llm.metadata.get("general.name", "")) if hasattr(self.llm, "metadata") else ""
        return chat_format.format_for(f"{self.path.name} {label}")

    def reseed(self, seed: int) -> None:
        """Start the sampling seeds of the next ``complete`` calls from ``seed`` (e.g. per run)."""
        self._seed = seed
        self._calls = 0

    def _sampling(self) -> dict[str, Any]:
        if self.temperature == 0:
            return {"top_k": 1, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0, "temp": 0.0}
        self.llm.set_seed((self._seed * 1_000_003 + self._calls) % 2**32)
        self._calls += 1
        return {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0, "temp": self.temperature}

    def tokenize(self, text: str) -> list[int]:
        """Special tokens parsed, no BOS added (a rendered prompt carries its own)."""
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def _detokenize(self, ids: list[int]) -> str:
        try:
            data = self.llm.detokenize(ids, special=True)
        except TypeError:  # older llama-cpp-python without ``special``
            data = self.llm.detokenize(ids)
        return data.decode("utf-8", errors="replace")

    def _cached_prefix(self, tokens: list[int]) -> int:
        """How many leading prompt tokens ``Llama.generate`` will take from the KV cache."""
        n = self.llm.n_tokens
        if n <= 0:
            return 0
        cached = self.llm.input_ids[:n]
        common = 0
        for a, b in zip(cached, tokens, strict=False):
            if a != b:
                break
            common += 1
        return common - 1 if common == len(tokens) else common  # one token is replayed for logits

    def complete(self, prompt: str, max_tokens: int) -> str:
        tokens = self.tokenize(prompt)
        room = self.n_ctx - len(tokens)
        if room < 1:
            raise ContextFull(f"the prompt has {len(tokens)} tokens; the context holds {self.n_ctx}")
        max_tokens = min(max_tokens, room)
        t0 = time.perf_counter()
        if not self.reuse_cache:
            self.llm.reset()  # the next eval drops the whole cache
        reused = self._cached_prefix(tokens)
        out: list[int] = []
        t_first = t_last = None
        stopped = "length"
        for token in self.llm.generate(
            tokens,
            **self._sampling(),
            repeat_penalty=1.0,
            reset=True,  # llama-cpp-python keeps the cached prefix and evaluates the rest
        ):
            now = time.perf_counter()
            if t_first is None:
                t_first = now
            t_last = now
            if token in self.stop_ids:
                stopped = "end"
                break
            out.append(token)
            if len(out) >= max_tokens:
                break
        t_end = time.perf_counter()
        if not self.reuse_generated:
            # Keep only the prompt's cache: the generated tokens were evaluated one at a time, and
            # llama.cpp's one-token kernels differ from its batched ones in the last bits, enough
            # to flip a later greedy near-tie. Evaluated again in a batch with the next prompt,
            # the output is the one a fresh evaluation gives.
            if self.llm.n_tokens > len(tokens):
                self.llm.n_tokens = len(tokens)
                if hasattr(self.llm, "_requires_eval"):
                    self.llm._requires_eval = True  # the logits are no longer those of n_tokens
        text = self._detokenize(out)
        cut = text.find(self.end_token)
        if cut >= 0:
            text, stopped = text[:cut], "end"
        n_decode_steps = len(out) + (1 if stopped == "end" else 0) - 1
        self.last_stats = {
            "prompt_tokens": len(tokens),
            "reused": reused,
            "evaluated": len(tokens) - reused,
            "generated": len(out),
            "stopped": stopped,
            "prompt_s": (t_first or t_end) - t0,
            "decode_s": (t_last - t_first) if t_first is not None and t_last is not None else 0.0,
            "decode_steps": max(n_decode_steps, 0),
            "total_s": t_end - t0,
        }
        return text


# =============================================================================================
# The agent loop


@dataclass
class AgentConfig:
    """Limits of one run. ``policy`` (when given) replaces the sandbox fields below it."""

    max_turns: int = 8  # tool-using assistant turns
    max_new_tokens: int = 256  # per assistant turn
    max_tool_tokens: int = 512  # a tool result is cut (head + tail kept) to this many tokens
    min_new_tokens: int = 32  # stop with context_full when the context has less room than this
    repeat_limit: int = REPEAT_LIMIT  # the same call asked for this many times stops the run
    fmt: str | None = None  # chat format; default: the model's, else chatml
    allow_edits: bool = False
    tool_timeout_s: float = 10.0
    max_output_chars: int = 16_000
    os_sandbox: Literal["auto", "require", "off"] = "auto"
    policy: SandboxPolicy | None = None

    def sandbox_policy(self) -> SandboxPolicy:
        if self.policy is not None:
            return self.policy
        return SandboxPolicy(
            allow_edits=self.allow_edits,
            timeout_s=self.tool_timeout_s,
            max_output_chars=self.max_output_chars,
            os_sandbox=self.os_sandbox,
        )


@dataclass
class AgentRun:
    """One run: the episode, the chat as rendered, why it stopped, token counts and timings."""

    episode: Episode
    messages: list[dict[str, Any]]
    stop_reason: StopReason
    turns: int  # assistant turns generated (tool-using and the answer)
    tool_turns: int
    prompt_tokens: int = 0  # summed over turns
    reused_tokens: int = 0  # prompt tokens whose KV cache was kept
    generated_tokens: int = 0
    generate_s: float = 0.0
    tool_s: float = 0.0
    total_s: float = 0.0
    error: str | None = None
    turn_stats: list[dict[str, Any]] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return self.episode.session_id

    @property
    def final_answer(self) -> str | None:
        return self.episode.final_answer


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _tool_name(schema: dict[str, Any]) -> str:
    return (schema.get("function") or schema)["name"]


def _parameters(schema: dict[str, Any]) -> dict[str, Any]:
    return (schema.get("function") or schema).get("parameters") or {}


_JSON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
}


def _argument_error(name: str, args: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> str | None:
    """Why a parsed call cannot run (unknown tool, missing or mistyped arguments), or None."""
    if name not in schemas:
        available = ", ".join(schemas)
        return (
            f"<tool_use_error>Error: No such tool available: {name}. Available tools: {available}"
            "</tool_use_error>"
        )
    params = _parameters(schemas[name])
    missing = [k for k in params.get("required", []) if k not in args]
    if missing:
        return (
            f"<tool_use_error>InputValidationError: {name} failed because the required parameter "
            f"`{missing[0]}` is missing</tool_use_error>"
        )
    for key, value in args.items():
        spec = (params.get("properties") or {}).get(key)
        expected = _JSON_TYPES.get((spec or {}).get("type", ""))
        if expected is None:
            continue
        if isinstance(value, bool) and expected is not bool:
            ok = False
        else:
            ok = isinstance(value, expected)
        if not ok and spec and spec.get("type") in ("integer", "number") and isinstance(value, str):
            ok = value.strip().lstrip("-").isdigit()  # "5" for 5: the tools accept it
        if not ok:
            return (
                f"<tool_use_error>InputValidationError: {name} failed because the parameter `{key}` "
                f"should be of type {spec['type']}</tool_use_error>"
            )
    return None


def _malformed_message(raw: str, fmt: str, cut_off: bool) -> str:
    body = raw
    if fmt == "chatml":
        body = raw.removeprefix("<tool_call>").removesuffix("</tool_call>").strip()
    problem = "it is not valid JSON"
    try:
        obj = json.loads(body)
    except ValueError as exc:
        problem = f"it is not valid JSON ({exc})"
    else:
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            problem = 'it has no "name" string'
        else:
            problem = f'its "{chat_format.FORMATS[fmt].tool_call_key}" is not a JSON object'
    if cut_off:
        problem = "it was cut off by the length limit of a turn; write shorter calls"
    example = chat_format.render_tool_call("Read", {"file_path": f"{VIRTUAL_ROOT}/README.md"}, fmt)
    return (
        f"<tool_use_error>Could not read your tool call: {problem}. Write each call as:\n{example}"
        "</tool_use_error>"
    )


def _tokenizer_of(model: Any) -> Any:
    return getattr(model, "offsets_tokenizer", None)


def _cut(text: str, limit: int, tokenizer: Any) -> str:
    if tokenizer is not None:
        try:
            return chat_format.truncate_middle(text, limit, tokenizer)[0]
        except Exception:  # a tokenizer that cannot give offsets: cut in characters instead
            pass
    return chat_format.truncate_middle(text, limit * 4)[0]


def run_agent(
    prompt: str,
    model: CompletionModel,
    workspace: Path | str | Workspace,
    config: AgentConfig | None = None,
    *,
    tools: Iterable[dict[str, Any]] | None = None,
    system: str | None = None,
    session_id: str | None = None,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> AgentRun:
    """Run the agent on ``prompt`` in ``workspace`` until it answers or hits a limit.

    ``on_event(kind, data)`` is called with ``("assistant", {"text", "calls"})``, ``("tool", {"name",
    "input", "output", "is_error"})`` and ``("stop", {"reason"})`` as the run goes (for the CLI).
    """
    config = config or AgentConfig()
    policy = config.sandbox_policy()
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    fmt = config.fmt or getattr(model, "fmt", None) or "chatml"
    tool_list = list(tools) if tools is not None else [BUILTIN[n] for n in CORE_TOOLS]
    schemas = {_tool_name(t): t for t in tool_list}
    session_id = session_id or str(uuid.uuid4())
    tokenizer = _tokenizer_of(model)
    emit = on_event or (lambda kind, data: None)

    messages: list[dict[str, Any]] = [
        {"role": "system", "content": chat_format.DEFAULT_SYSTEM_PROMPT if system is None else system},
        {"role": "user", "content": prompt},
    ]
    steps: list[Step] = []
    seen: Counter[str] = Counter()
    started = _now()
    t_run = time.perf_counter()
    run = AgentRun(
        episode=Episode(  # replaced at the end
            episode_id=f"{session_id}:0",
            session_id=session_id,
            index=0,
            prompt=prompt,
            provenance=Provenance(session_id=session_id),
        ),
        messages=messages,
        stop_reason="error",
        turns=0,
        tool_turns=0,
    )
    final_answer: str | None = None
    stop: StopReason | None = None

    while stop is None:
        text_prompt = chat_format.render(messages, tool_list, fmt, add_generation_prompt=True)
        room = _room(model, text_prompt)
        if room is not None and room < config.min_new_tokens:
            stop = "context_full"
            break
        t0 = time.perf_counter()
        try:
            completion = model.complete(text_prompt, config.max_new_tokens)
        except ContextFull:
            stop = "context_full"
            break
        except Exception as exc:  # the model failed: end the run, keep what was done
            run.error = f"{type(exc).__name__}: {exc}"
            stop = "error"
            break
        run.generate_s += time.perf_counter() - t0
        stats = dict(getattr(model, "last_stats", None) or {})
        run.turn_stats.append(stats)
        run.prompt_tokens += int(stats.get("prompt_tokens", 0))
        run.reused_tokens += int(stats.get("reused", 0))
        run.generated_tokens += int(stats.get("generated", 0))
        run.turns += 1

        content, calls = chat_format.parse_tool_calls(completion, fmt)
        malformed = chat_format.unparsed_calls(content, fmt)
        if not calls and not malformed:
            final_answer = content.strip()
            messages.append({"role": "assistant", "content": final_answer})
            emit("assistant", {"text": final_answer, "calls": []})
            stop = "answered"
            break

        run.tool_turns += 1
        turn = run.tool_turns
        group = turn if len(calls) + len(malformed) > 1 else None
        emit("assistant", {"text": content, "calls": calls})
        assistant: dict[str, Any] = {"role": "assistant", "content": content, "tool_calls": []}
        results: list[dict[str, Any]] = []
        reason: str | None = content.strip() or None
        repeated = False
        cut_off = stats.get("stopped") == "length"

        for raw in malformed:
            text = _malformed_message(raw, fmt, cut_off)
            call = ToolCall(
                tool_use_id=f"call_{turn}_{len(results)}",
                name=INVALID_CALL,
                input={"text": raw},
                output=text,
                is_error=True,
                status="error",
                parallel_group=group,
                timestamp=_now(),
                source="runtime",
            )
            steps.append(Step(index=len(steps), reason=reason, call=call))
            reason = None
            results.append(
                {
                    "role": "tool",
                    "tool_call_id": call.tool_use_id,
                    "name": INVALID_CALL,
                    "content": chat_format.tool_result_text(call),
                }
            )
            emit("tool", {"name": INVALID_CALL, "input": {"text": raw}, "output": text, "is_error": True})

        for parsed in calls:
            fn = parsed["function"]
            name, args = fn["name"], fn["arguments"]
            call_id = f"call_{turn}_{len(results)}"
            assistant["tool_calls"].append(
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            )
            key = exact_call_key(name, args)
            seen[key] += 1
            t1 = time.perf_counter()
            stamp = _now()
            raw_output: Any = None
            # The repeat rule comes first, as in the RL reward's cut: a call repeated with the same
            # bad arguments is a loop too, not a fresh mistake to explain again.
            if seen[key] >= config.repeat_limit:
                output = refused_repeat_text(seen[key] - 1)
                is_error, repeated = True, True
            elif (problem := _argument_error(name, args, schemas)) is not None:
                output, is_error = problem, True
            else:
                try:
                    result = run_sandboxed(name, args, ws, policy)
                    output, is_error, raw_output = result.output_text, result.is_error, result.raw
                except Exception as exc:  # a tool that breaks: the model reads it, the run goes on
                    output, is_error = f"<tool_use_error>{type(exc).__name__}: {exc}</tool_use_error>", True
            elapsed = time.perf_counter() - t1
            run.tool_s += elapsed
            output = _cut(output, config.max_tool_tokens, tokenizer)
            call = ToolCall(
                tool_use_id=call_id,
                name=name,
                input=dict(args),
                output=output,
                raw_output=raw_output,
                is_error=is_error,
                status="error" if is_error else "ok",
                duration_ms=round(elapsed * 1000, 1),
                parallel_group=group,
                timestamp=stamp,
                source="runtime",
            )
            steps.append(Step(index=len(steps), reason=reason, call=call))
            reason = None
            results.append(
                {
                    "role": "tool",
                    "tool_call_id": call_id,
                    "name": name,
                    "content": chat_format.tool_result_text(call),
                }
            )
            emit("tool", {"name": name, "input": args, "output": output, "is_error": is_error})

        if not assistant["tool_calls"]:
            assistant.pop("tool_calls")
        messages.append(assistant)
        messages.extend(results)
        if repeated:
            stop = "repeated_call"
        elif run.tool_turns >= config.max_turns:
            stop = "max_turns"

    run.stop_reason = stop
    run.total_s = time.perf_counter() - t_run
    emit("stop", {"reason": stop, "error": run.error})
    status = {"answered": "completed", "error": "error"}.get(stop, "incomplete")
    run.episode = Episode(
        episode_id=f"{session_id}:0",
        session_id=session_id,
        index=0,
        prompt=prompt,
        started_at=started,
        ended_at=_now(),
        steps=steps,
        final_answer=final_answer,
        status=status,
        provenance=Provenance(
            session_id=session_id,
            sources=["runtime"],
            model=str(getattr(model, "name", None) or type(model).__name__),
            cwd=ws.virtual,
        ),
        meta={
            "source": "runtime",
            "stop_reason": stop,
            "error": run.error,
            "fmt": fmt,
            "turns": run.turns,
            "tool_turns": run.tool_turns,
            "allow_edits": policy.allow_edits,
            "max_turns": config.max_turns,
            "prompt_tokens": run.prompt_tokens,
            "reused_tokens": run.reused_tokens,
            "generated_tokens": run.generated_tokens,
            "generate_s": round(run.generate_s, 3),
            "tool_s": round(run.tool_s, 3),
            "total_s": round(run.total_s, 3),
        },
    )
    return run


def _room(model: Any, text_prompt: str) -> int | None:
    """Tokens left in the context after ``text_prompt``, when the model can count them."""
    count = getattr(model, "count_tokens", None)
    n_ctx = getattr(model, "n_ctx", None)
    if not callable(count) or not isinstance(n_ctx, int):
        return None
    return n_ctx - count(text_prompt)


# =============================================================================================
# Storing runs


def runs_dir(home: Path | str | None = None) -> Path:
    return Path(home if home is not None else paths.home()) / "runs"


def write_run(run: AgentRun, home: Path | str | None = None) -> Path:
    """Write the run's episode to ``<home>/runs/<session_id>.jsonl`` (one Episode JSON per line)."""
    folder = runs_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{run.episode.session_id}.jsonl"
    fd, tmp = tempfile.mkstemp(prefix=".run-", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(run.episode.model_dump_json() + "\n")
    os.replace(tmp, target)
    return target


def read_run(path: Path | str) -> list[Episode]:
    with open(path, encoding="utf-8") as fh:
        return [Episode.model_validate_json(line) for line in fh if line.strip()]


# =============================================================================================
# The CLI entry point


def latest_exported_gguf(home: Path | str | None = None) -> Path | None:
    """The newest exported GGUF: among ``<home>/models/*/gguf/`` the folder holding the most
    recently written file; in it an F16 file if there is one, else its newest file. Null controls
    (``claude-rl control``) are left out: they are for evaluation, not for use."""
    from claude_rl.export.source import is_control

    root = paths.models_dir(home)
    files = [p for p in root.glob("*/gguf/*.gguf") if p.is_file() and not is_control(p.parent.parent)]
    if not files:
        return None
    newest = max(files, key=lambda p: p.stat().st_mtime)
    same_run = [p for p in files if p.parent == newest.parent]
    f16 = [p for p in same_run if "f16" in p.name.lower()]
    return max(f16 or same_run, key=lambda p: p.stat().st_mtime)


def resolve_model(model_path: Path | str | None = None, home: Path | str | None = None) -> Path:
    """``model_path`` if given, else the newest exported GGUF, else the bundled base GGUF."""
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist")
        return path
    from claude_rl import base_model

    return latest_exported_gguf(home) or base_model.default_gguf()


def bundled_workspace() -> Path:
    return paths.CHECKOUT_DIR / "data" / "workspace"


def training_dataset(run_folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The dataset folder a run (``<home>/models/<name>/``) was trained on and the options it was
    built with (run manifest → the dataset's manifest); None when either is missing."""
    try:
        run = json.loads((Path(run_folder) / "manifest.json").read_text(encoding="utf-8"))
        folder = Path((run.get("dataset") or {}).get("folder") or "")
        options = json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("options") or {}
    except (OSError, ValueError, AttributeError):
        return None
    return folder, options


def trained_tool_budget(gguf: Path) -> int | None:
    """The ``max_tool_tokens`` the model in ``gguf`` was trained with, when the file lies in a run
    folder's ``gguf/``: the agent cuts tool results the same way, so the model reads them as it
    learned them. None when unknown."""
    found = training_dataset(Path(gguf).resolve().parent.parent)
    budget = found[1].get("max_tool_tokens") if found else None
    return budget if isinstance(budget, int) else None


def run_cli(
    question: str,
    *,
    model_path: Path | str | None = None,
    workspace: Path | str | None = None,
    allow_edits: bool = False,
    max_turns: int | None = None,
    home: Path | str | None = None,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    echo: Callable[[str], None] = print,
) -> AgentRun:
    """``claude-rl run "question"``: run the agent, print its steps and answer, save the run.

    ``workspace`` None runs in a scratch copy of the bundled workspace (deleted afterwards, edits
    included: pass a folder to keep them). Returns the run; it is written with ``write_run``.
    """
    model_file = resolve_model(model_path, home)
    echo(f"model: {model_file}")
    model = LlamaCppModel(model_file, n_ctx=n_ctx, n_threads=n_threads)
    config = AgentConfig(allow_edits=allow_edits)
    budget = trained_tool_budget(model_file)
    if budget is not None:
        config = replace(config, max_tool_tokens=budget)
    if max_turns is not None:
        config = replace(config, max_turns=max_turns)

    def show(kind: str, data: dict[str, Any]) -> None:
        if kind == "assistant" and data["calls"] and data["text"]:
            echo(data["text"])
        elif kind == "tool":
            args = json.dumps(data["input"], ensure_ascii=False)
            echo(f"→ {data['name']} {args[:200]}")
            lines = str(data["output"]).splitlines()
            preview = "\n".join("  " + line for line in lines[:8])
            more = f"\n  ... ({len(lines) - 8} more lines)" if len(lines) > 8 else ""
            echo(("  (error)\n" if data["is_error"] else "") + preview + more)

    scratch: str | None = None
    if workspace is None:
        scratch = tempfile.mkdtemp(prefix="claude-rl-run-")
        ws_path = copy_workspace(bundled_workspace(), Path(scratch) / "command-center")
    else:
        ws_path = Path(workspace)
    try:
        run = run_agent(question, model, ws_path, config, on_event=show)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if run.final_answer:
        echo("\n" + run.final_answer)
    path = write_run(run, home)
    echo(
        f"\n[{run.stop_reason}] {run.tool_turns} tool turns, {run.generated_tokens} tokens generated, "
        f"{run.total_s:.1f}s; saved {path}"
    )
    return run
