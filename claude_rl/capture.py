"""Capture: turn one Claude Code hook invocation into one line of the append-only trace store.

Standard library only (orjson when importable): this runs inside Claude Code's hooks on every tool
call, started as ``python3 -S hooks/claude_rl_hook.py EVENT``. Rules it keeps:

- it never raises and the process always exits 0 with nothing on stdout (exit 2 would block the
  tool call or feed stderr to the model; stdout JSON would be read as a hook decision);
- stdin is drained completely even when the payload is not used (Claude Code logs a broken pipe
  otherwise);
- oversized strings are cut (head + tail kept, original size recorded) *before* redaction, and
  secrets are redacted before anything is written;
- each record is one whole line appended under an exclusive ``flock``; if a crash left a partial
  last line, the next append starts on a fresh line, so later records stay intact;
- when the store cannot be written (read-only, disk full), the failure is counted in a fallback
  state folder that ``claude-rl status`` reads.

Record envelope (schema version 1)::

    {"v": 1, "ts": "2026-11-26T10:00:00.123Z", "event": "PostToolUse", "session_id": "...",
     "agent_id": null, "tool_use_id": "toolu_...", "payload": {...},
     "redactions": {"aws_access_key": 1}, "truncated": [{"path": "tool_response.stdout",
     "chars": 52428800}]}

``redactions`` and ``truncated`` are present only when non-empty.
"""

from __future__ import annotations

import os
import sys
import time

from claude_rl import paths
from claude_rl.redact import Counts, Redactor, compile_user_rules

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and pathlib cost more to import than the rest of the hook
    from pathlib import Path
    from typing import Any

_orjson: Any = None
_json: Any = None
# Under ``python3 -S`` importing orjson costs ~15 ms (it loads uuid, enum, dataclasses…), more
# than the stdlib parser spends on a megabyte; it pays only for payloads of several megabytes.
ORJSON_MIN_BYTES = 4 * 1024 * 1024


def use_orjson() -> None:
    """Switch to orjson when the interpreter has it (looked for in its own site-packages too)."""
    global _orjson
    if _orjson is not None:
        return
    try:
        import orjson

        _orjson = orjson
        return
    except ImportError:
        pass
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        site = os.path.join(prefix, "lib", version, "site-packages")
        if os.path.isdir(os.path.join(site, "orjson")):
            sys.path.append(site)
            try:
                import orjson
            except ImportError:
                sys.path.remove(site)
                continue
            _orjson = orjson
            return


def _stdlib_json() -> Any:
    global _json
    if _json is None:
        import json

        _json = json
    return _json


SCHEMA_VERSION = 1

# The events the hooks are registered for (settings and plugin). Tool events use matcher "*".
EVENTS = (
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PostToolUse",
    "PostToolUseFailure",
    "Stop",
    "StopFailure",
    "SubagentStart",
    "SubagentStop",
    "PreCompact",
    "SessionEnd",
)
TOOL_EVENTS = frozenset({"PreToolUse", "PostToolUse", "PostToolUseFailure"})
# Events after which a redacted copy of the transcript is taken (by the async transcript hook).
TRANSCRIPT_EVENTS = ("Stop", "SubagentStop", "PreCompact", "SessionEnd")

DEFAULTS: dict[str, Any] = {
    "enabled": True,
    # Strings longer than this are cut to head + marker + tail. Claude Code itself spills Bash
    # output over ~30k characters to a file, so 64k keeps every ordinary result whole.
    "max_field_chars": 65536,
    # Hard cap on one record; fields are cut harder until the line fits.
    "max_record_chars": 2_000_000,
    "exclude_paths": [],
    "redact_patterns": [],
}

_PATH_KEYS = ("file_path", "path", "notebook_path")
# Fields that carry file content or tool output: dropped for calls on excluded paths.
_CONTENT_KEYS = ("content", "old_string", "new_string", "new_source", "edits")


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def sanitize_id(value: Any, default: str = "unknown-session") -> str:
    """A session or agent id made safe as a file name (the protocol does not promise UUIDs)."""
    if not isinstance(value, str):
        return default
    out = "".join(c if (c.isascii() and (c.isalnum() or c in "._-")) else "_" for c in value[:128])
    out = out.lstrip(".")
    return out or default


def dumps_line(obj: Any) -> bytes:
    if _orjson is not None:
        try:
            return _orjson.dumps(obj) + b"\n"
        except TypeError:  # lone surrogates or big ints: the stdlib path copes
            pass
    text = _stdlib_json().dumps(obj, ensure_ascii=False, separators=(",", ":"))
    # A lone surrogate (legal in JSON text, not in UTF-8) becomes its JSON escape again.
    return text.encode("utf-8", "backslashreplace") + b"\n"


def loads(raw: bytes | str) -> Any:
    if _orjson is not None:
        try:
            return _orjson.loads(raw)
        except _orjson.JSONDecodeError:
            pass  # orjson rejects lone surrogates that json accepts; let json decide
    return _stdlib_json().loads(raw)


# ---------------------------------------------------------------------------------------------
# Config and the on/off switch


def load_config(root: str | Path) -> dict[str, Any]:
    cfg = dict(DEFAULTS)
    try:
        with open(os.path.join(root, paths.CONFIG), "rb") as fh:
            raw = fh.read()
    except OSError:
        return cfg
    try:
        data = loads(raw)
    except ValueError:
        return cfg
    section = data.get("capture") if isinstance(data, dict) else None
    if isinstance(section, dict):
        for key, default in DEFAULTS.items():
            value = section.get(key)
            if value is not None and isinstance(value, type(default)):
                cfg[key] = value
    return cfg


def off_switch(root: str | Path) -> str:
    return os.path.join(root, paths.CAPTURE_STATE, "off")


def capture_enabled(root: str | Path, cfg: dict[str, Any] | None = None) -> bool:
    if os.environ.get("CLAUDE_RL_CAPTURE", "").strip().lower() in {"0", "off", "false", "no"}:
        return False
    if os.path.exists(off_switch(root)):
        return False
    return bool((cfg or {}).get("enabled", True))


# ---------------------------------------------------------------------------------------------
# Shaping the payload: exclusions, truncation, redaction


def cut(s: str, limit: int) -> str:
    """Keep head and tail of ``s`` within ``limit`` characters, cutting at line ends if near."""
    half = max(limit // 2, 1)
    head, tail = s[:half], s[-half:]
    nl = head.rfind("\n", max(0, half - 2048))
    if nl > 0:
        head = head[: nl + 1]
    nl = tail.find("\n", 0, 2048)
    if nl >= 0:
        tail = tail[nl + 1 :]
    dropped = len(s) - len(head) - len(tail)
    return f"{head}[... claude-rl: {dropped} of {len(s)} characters cut ...]{tail}"


# Deepest nesting a payload may have: the store reader (orjson) refuses lines nested deeper than
# 1024 levels, and the record envelope adds one. Deeper payloads go to the errors log (too_deep).
MAX_DEPTH = 1000


def truncate(obj: Any, limit: int, found: list[dict[str, Any]], where: str = "", depth: int = 1) -> Any:
    """Cut every string longer than ``limit``; note each cut as {path, chars}."""
    if isinstance(obj, str):
        if len(obj) > limit:
            found.append({"path": where or "$", "chars": len(obj)})
            return cut(obj, limit)
        return obj
    if depth > MAX_DEPTH and isinstance(obj, (dict, list)):
        raise RecursionError(f"payload nested deeper than {MAX_DEPTH} levels")
    if isinstance(obj, dict):
        return {
            k: truncate(v, limit, found, f"{where}.{k}" if where else str(k), depth + 1)
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [truncate(v, limit, found, f"{where}[{i}]", depth + 1) for i, v in enumerate(obj)]
    return obj


def excluded_path(payload: dict[str, Any], patterns: list[str]) -> str | None:
    tool_input = payload.get("tool_input")
    if not patterns or not isinstance(tool_input, dict):
        return None
    import fnmatch  # only when the user configured exclusions

    for key in _PATH_KEYS:
        value = tool_input.get(key)
        if isinstance(value, str) and value:
            norm = value.replace("\\", "/")
            for pat in patterns:
                if isinstance(pat, str) and (fnmatch.fnmatch(norm, pat) or fnmatch.fnmatch(norm, f"*/{pat}")):
                    return norm
    return None


def drop_excluded_content(payload: dict[str, Any], path: str) -> None:
    marker = f"[EXCLUDED:{path}]"
    tool_input = payload.get("tool_input")
    if isinstance(tool_input, dict):
        for key in _CONTENT_KEYS:
            if key in tool_input:
                tool_input[key] = marker
    for key in ("tool_response", "error"):
        if key in payload:
            payload[key] = marker


def build_record(payload: dict[str, Any], event_hint: str, cfg: dict[str, Any], redactor: Redactor) -> bytes:
    skip = excluded_path(payload, cfg["exclude_paths"])
    if skip:
        drop_excluded_content(payload, skip)
    limit = max(int(cfg["max_field_chars"]), 256)
    while True:
        cuts: list[dict[str, Any]] = []
        shaped = truncate(payload, limit, cuts)
        counts: Counts = {}
        shaped = redactor.value(shaped, counts)
        # The envelope repeats payload fields: take them cut and redacted too (a 50 MB or secret
        # session_id must not reach the line whole).
        event = shaped.get("hook_event_name")
        if not isinstance(event, str) or not event:
            event = event_hint or "Unknown"
        record: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "ts": now_iso(),
            "event": event,
            "session_id": shaped.get("session_id") if isinstance(shaped.get("session_id"), str) else None,
            "agent_id": shaped.get("agent_id") if isinstance(shaped.get("agent_id"), str) else None,
            "tool_use_id": shaped.get("tool_use_id") if isinstance(shaped.get("tool_use_id"), str) else None,
            "payload": shaped,
        }
        if counts:
            record["redactions"] = counts
        if cuts:
            record["truncated"] = cuts
        if skip:
            record["excluded_path"] = skip
        line = dumps_line(record)
        if len(line) <= cfg["max_record_chars"] or limit <= 256:
            return line
        limit //= 4  # many medium fields add up: cut all of them harder


# ---------------------------------------------------------------------------------------------
# Writing


def ensure_dir(path: str | Path) -> None:
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o700, exist_ok=True)


def append_line(path: str | Path, line: bytes) -> None:
    """Append one whole line under an exclusive advisory lock.

    O_APPEND alone keeps small writes whole, but a megabyte line may be written in pieces; the
    lock keeps parallel PostToolUse hooks from interleaving. If the file does not end in a
    newline (a writer was killed mid-line), the record starts on a new line.
    """
    ensure_dir(os.path.dirname(path))
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows: plain O_APPEND
            pass
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        view = memoryview(line)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)  # closing releases the lock


def log_error(root: str | Path, kind: str, event: str, detail: str, raw: bytes | None = None) -> None:
    """One line in the errors log for stdin that could not become a record."""
    entry: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "ts": now_iso(),
        "event": event or None,
        "error": kind,
        "detail": detail[:300],
    }
    if raw is not None:
        entry["size"] = len(raw)
        head = raw[:200].decode("utf-8", "replace")
        entry["head"] = Redactor().text(head, {})
    append_line(os.path.join(root, paths.CAPTURE_STATE, "errors.jsonl"), dumps_line(entry))


def count_failure(root: str | Path, event: str, exc: BaseException) -> None:
    """Record a write failure somewhere other than the (unwritable) store; never raises."""
    entry = dumps_line(
        {
            "ts": now_iso(),
            "event": event or None,
            "store": str(root),
            "errno": getattr(exc, "errno", None),
            "error": f"{type(exc).__name__}: {exc}"[:300],
        }
    )
    import tempfile  # only on this rare path: it is slow to import

    for folder in (
        paths.fallback_state_str(),
        os.path.join(tempfile.gettempdir(), f"claude-rl-{os.getuid()}"),
    ):
        try:
            append_line(os.path.join(folder, "failures.jsonl"), entry)
            return
        except OSError:
            continue


def trace_file(root: str | Path, session_id: Any) -> str:
    return os.path.join(root, paths.TRACES, f"{sanitize_id(session_id)}.jsonl")


def handle(raw: bytes, event_hint: str, root: str | Path) -> str:
    """Process one hook invocation. Returns what happened (for tests); never raises."""
    try:
        cfg = load_config(root)
        if not capture_enabled(root, cfg):
            return "disabled"
        ensure_dir(root)
        if not raw.strip():
            log_error(root, "empty_stdin", event_hint, "no payload on stdin", raw)
            return "error"
        if len(raw) >= ORJSON_MIN_BYTES:
            use_orjson()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            log_error(root, "binary_stdin", event_hint, str(exc), raw)
            return "error"
        try:
            payload = loads(text)
        except (ValueError, RecursionError) as exc:
            log_error(root, "malformed_json", event_hint, str(exc), raw)
            return "error"
        if not isinstance(payload, dict):
            log_error(root, "non_object", event_hint, f"payload is a JSON {type(payload).__name__}", raw)
            return "error"
        rules, _problems = compile_user_rules(cfg["redact_patterns"])
        line = build_record(payload, event_hint, cfg, Redactor(rules))
        append_line(trace_file(root, payload.get("session_id")), line)
        return "written"
    except RecursionError as exc:
        return _safe_log(root, "too_deep", event_hint, str(exc), raw)
    except OSError as exc:
        count_failure(root, event_hint, exc)
        return "failed"
    except Exception as exc:  # noqa: BLE001 - a capture bug must never break Claude Code
        return _safe_log(root, "internal_error", event_hint, f"{type(exc).__name__}: {exc}", raw)


def _safe_log(root: str | Path, kind: str, event: str, detail: str, raw: bytes) -> str:
    try:
        log_error(root, kind, event, detail, raw)
        return "error"
    except OSError as exc:
        count_failure(root, event, exc)
        return "failed"
    except Exception:  # noqa: BLE001
        return "failed"


def read_stdin() -> bytes:
    try:
        return sys.stdin.buffer.read()
    except (OSError, ValueError, AttributeError):
        return b""


def main(argv: list[str] | None = None) -> int:
    """Hook entry point: ``claude_rl_hook.py [EVENT]``. Always returns 0."""
    args = sys.argv[1:] if argv is None else argv
    raw = read_stdin()
    try:
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 4000))
        handle(raw, args[0] if args else "", paths.home_and_source_str()[0])
    except BaseException:  # noqa: BLE001, S110 - the hook must exit 0 whatever happened
        pass
    return 0
