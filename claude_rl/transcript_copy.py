"""Copy Claude Code session transcripts, redacted, into ``<home>/transcripts``.

Standard library only; started by ``hooks/claude_rl_transcript.py`` as an *async* hook, so Claude
Code never waits for it (reading the transcript inside a blocking hook is both slow and racy: the
transcript is written asynchronously and lags the hooks).

The copy is incremental. Transcripts are append-only JSONL, so each run reads from the byte offset
where the last run stopped, up to the last complete line, and appends the redacted lines to the
copy. The offset lives in a sidecar file next to the copy and is updated under the same lock, so
two copiers racing on one transcript (Stop and SubagentStop fire together) never duplicate lines.
A transcript that shrank or was replaced (another inode) is copied again from the start into a
fresh copy; the old copy is kept beside it.

Layout: ``transcripts/<session>.jsonl`` and ``transcripts/<session>/subagents/agent-<id>.jsonl``
(the same shape as Claude Code's own ``projects/<project>/`` folder).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from claude_rl import paths
from claude_rl.capture import (
    capture_enabled,
    count_failure,
    dumps_line,
    ensure_dir,
    load_config,
    loads,
    log_error,
    sanitize_id,
    truncate,
)
from claude_rl.redact import SECRET_KEY_SUFFIXES, Redactor, compile_user_rules

# Read at most this much per run, so one run stays short; the next run continues.
MAX_BYTES_PER_RUN = 256 * 1024 * 1024


def copy_file(source: Path, dest: Path, redactor: Redactor, max_field_chars: int) -> int:
    """Append the new complete lines of ``source`` to ``dest``, redacted. Returns lines copied."""
    ensure_dir(dest.parent)
    state_path = dest.with_name(dest.name + ".offset")
    fd = os.open(dest, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows
            pass
        state = _read_state(state_path)
        st = source.stat()
        offset = int(state.get("offset", 0))
        if state and (state.get("inode") != st.st_ino or st.st_size < offset):
            # A different or truncated transcript: keep the old copy, start a new one.
            os.close(fd)
            fd = -1
            os.replace(dest, dest.with_name(f"{dest.stem}.{int(state.get('inode', 0))}.jsonl"))
            state_path.unlink(missing_ok=True)
            return copy_file(source, dest, redactor, max_field_chars)
        if st.st_size <= offset:
            return 0
        with open(source, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read(min(st.st_size - offset, MAX_BYTES_PER_RUN))
        end = chunk.rfind(b"\n")
        if end < 0:
            return 0  # only a partial line so far: the writer is still on it
        chunk = chunk[: end + 1]
        out = bytearray()
        copied = 0
        for line in chunk.splitlines():
            if not line.strip():
                continue
            out += redact_line(line, redactor, max_field_chars)
            copied += 1
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            out[:0] = b"\n"
        view = memoryview(bytes(out))
        while view:
            view = view[os.write(fd, view) :]
        _write_state(state_path, {"source": str(source), "inode": st.st_ino, "offset": offset + len(chunk)})
        return copied
    finally:
        if fd >= 0:
            os.close(fd)


def redact_line(line: bytes, redactor: Redactor, max_field_chars: int) -> bytes:
    """One transcript line, redacted exactly as the hooks redact a payload.

    Fast path: the rules also match inside JSON-escaped text, so most lines are redacted as raw
    text without a parse/serialize round trip. The slow path (parse, cut, redact every string,
    serialize) is taken when a field may need cutting, when a JSON key looks secret (the hooks
    redact such a field's value whatever it looks like), or when a replacement broke the JSON.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and len(text) <= max_field_chars and not _has_secret_key(text):
        new = redactor.text(text, {})
        if new is text:
            return line.rstrip(b"\r\n") + b"\n"
        try:
            loads(new)
            return new.encode("utf-8") + b"\n"
        except (ValueError, RecursionError):
            pass
    try:
        obj = loads(line)
    except (ValueError, RecursionError):
        # Keep the line's place in the copy, but never its unredacted bytes.
        raw = line.decode("utf-8", "replace")
        return dumps_line({"type": "claude-rl-unparsed", "raw": redactor.text(raw, {})})
    obj = truncate(obj, max_field_chars, [])
    return dumps_line(redactor.value(obj, {}))


def _has_secret_key(text: str) -> bool:
    low = text.lower()
    return any(suffix + '"' in low for suffix in SECRET_KEY_SUFFIXES)


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, dumps_line(state))
    finally:
        os.close(fd)
    os.replace(tmp, path)


def sources_for(payload: dict[str, Any]) -> list[tuple[Path, str]]:
    """(transcript, destination relative to transcripts/) pairs this event should copy."""
    sid = sanitize_id(payload.get("session_id"))
    found: list[tuple[Path, str]] = []
    main = payload.get("transcript_path")
    if isinstance(main, str) and main:
        main_path = Path(os.path.expanduser(main))
        found.append((main_path, f"{sid}.jsonl"))
        # Subagent files live in <session>/subagents/ (new layout); copying them all at each
        # event also catches subagents whose SubagentStop never fired.
        sub_dir = main_path.with_suffix("") / "subagents"
        if sub_dir.is_dir():
            for sub in sorted(sub_dir.glob("agent-*.jsonl")):
                found.append((sub, f"{sid}/subagents/{sanitize_id(sub.stem, 'agent')}.jsonl"))
    agent = payload.get("agent_transcript_path")
    if isinstance(agent, str) and agent:
        agent_path = Path(os.path.expanduser(agent))
        rel = f"{sid}/subagents/{sanitize_id(agent_path.stem, 'agent')}.jsonl"
        if all(r != rel for _, r in found):
            found.append((agent_path, rel))
    return found


def handle(raw: bytes, root: Path) -> int:
    """Copy what the event's payload points to. Returns lines copied; never raises."""
    try:
        cfg = load_config(root)
        if not capture_enabled(root, cfg):
            return 0
        payload = loads(raw)
        if not isinstance(payload, dict):
            return 0
        rules, _ = compile_user_rules(cfg["redact_patterns"])
        redactor = Redactor(rules)
        total = 0
        for source, rel in sources_for(payload):
            if source.is_file():
                total += copy_file(
                    source, paths.transcripts_dir(root) / rel, redactor, cfg["max_field_chars"]
                )
        return total
    except OSError as exc:
        count_failure(root, "transcript_copy", exc)
    except Exception as exc:  # noqa: BLE001 - never break Claude Code
        try:
            log_error(root, "transcript_copy_failed", "transcript_copy", f"{type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001, S110
            pass
    return 0


def main() -> int:
    try:
        raw = sys.stdin.buffer.read()
    except (OSError, ValueError, AttributeError):
        return 0
    try:
        handle(raw, paths.home())
    except BaseException:  # noqa: BLE001, S110
        pass
    return 0
