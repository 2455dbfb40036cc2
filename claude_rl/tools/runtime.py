"""Local implementations of Claude Code's core tools (Read, Grep, Glob, Bash, Edit, Write).

``run_tool(name, input, workspace)`` runs one tool call against a folder on disk and returns a
``ToolResult``: the text the model reads (``output_text``), the structured result in Claude Code's
``tool_response`` shape (``raw``, per ``shared/docs/claude-code-reference.md`` §6), and whether the
call failed (``is_error``). The bundled sample corpus is produced with it, its tests replay every
recorded call with it, and the local agent and the RL replay environment run their tool calls
through it, so one call gives the same result everywhere.

Paths. Tools see the workspace under a fixed *virtual root* (``VIRTUAL_ROOT``,
``/workspace/command-center``), so recorded episodes do not depend on where the folder lies on
disk: a path under the virtual root maps to the real folder, a relative path is taken from the
workspace root, and anything that resolves (symlinks followed) outside the workspace is refused.
Paths in results are shown under the virtual root again (Grep shows them relative to it, as
Claude Code shows them relative to its working directory).

Determinism. Results carry no timings. Grep and Glob sort their matches by path (Claude Code sorts
by modification time, which a fresh copy of a workspace does not keep). Bash runs ``bash -c`` in the
workspace with a small fixed environment (``LC_ALL=C``, ``TZ=UTC``, ``HOME`` = the workspace, no
``.pyc`` files, the running interpreter's folder first on ``PATH``), with stdout and stderr
interleaved, trailing newlines removed and the real workspace path replaced by the virtual root.

Failures. ``is_error`` results have ``raw = {"error": text, "is_interrupt": False}``: the fields of
the PostToolUseFailure hook payload, which Claude Code sends instead of a ``tool_response``. A Bash
command that exits non-zero fails with text starting ``Exit code N`` (exit 1 of grep, rg, find,
diff, test and ``git diff``/``git grep`` is a result, not a failure). Validation failures of the
other tools are wrapped in ``<tool_use_error>`` as Claude Code wraps them.

Not modelled: Claude Code's "read the file before editing it" rule (``run_tool`` is stateless),
images, notebooks and PDFs, background commands.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VIRTUAL_ROOT = "/workspace/command-center"
TOOLS = ("Read", "Grep", "Glob", "Bash", "Edit", "Write")

READ_DEFAULT_LIMIT = 2000
READ_MAX_LINE_CHARS = 2000
GREP_MAX_LINE_CHARS = 500
GLOB_MAX_FILES = 100
BASH_DEFAULT_TIMEOUT_S = 120.0
BASH_MAX_TIMEOUT_S = 600.0
BASH_MAX_OUTPUT_CHARS = 30_000
EDIT_SNIPPET_CONTEXT = 4
EDIT_SNIPPET_INTRO = "Here's the result of running `cat -n` on a snippet of the edited file:"
BINARY_SNIFF_BYTES = 8192
# Exit status 1 of these programs means "nothing found" or "differs", not a failure.
EXIT1_OK_PROGRAMS = frozenset({"grep", "egrep", "fgrep", "rg", "find", "diff", "test", "["})
# Folders and files never copied into a scratch workspace (build residue).
SCRATCH_IGNORE = ("__pycache__", "*.pyc", ".pytest_cache", ".DS_Store")

# Grep ``type`` → file name globs (a subset of ripgrep's type list).
FILE_TYPES: dict[str, tuple[str, ...]] = {
    "py": ("*.py", "*.pyi"),
    "python": ("*.py", "*.pyi"),
    "sql": ("*.sql",),
    "md": ("*.md", "*.markdown"),
    "markdown": ("*.md", "*.markdown"),
    "ini": ("*.ini", "*.cfg"),
    "toml": ("*.toml",),
    "json": ("*.json", "*.jsonl"),
    "yaml": ("*.yml", "*.yaml"),
    "sh": ("*.sh", "*.bash"),
    "txt": ("*.txt",),
    "csv": ("*.csv",),
    "js": ("*.js", "*.mjs", "*.cjs"),
    "ts": ("*.ts", "*.tsx"),
    "rust": ("*.rs",),
    "go": ("*.go",),
    "c": ("*.c", "*.h"),
    "cpp": ("*.cpp", "*.cc", "*.hpp", "*.h"),
    "java": ("*.java",),
    "html": ("*.html", "*.htm"),
    "css": ("*.css",),
}


@dataclass(frozen=True)
class ToolResult:
    """One tool call's result: what the model reads, the structured result, and failure."""

    output_text: str
    raw: dict[str, Any] = field(default_factory=dict)
    is_error: bool = False

    @property
    def hook_event(self) -> str:
        """The hook event Claude Code fires for this result."""
        return "PostToolUseFailure" if self.is_error else "PostToolUse"

    def hook_fields(self) -> dict[str, Any]:
        """The result fields of that hook's payload: ``tool_response``, or ``error``/``is_interrupt``."""
        if self.is_error:
            return {"error": self.output_text, "is_interrupt": bool(self.raw.get("is_interrupt", False))}
        return {"tool_response": self.raw}


class ToolError(Exception):
    """A call that fails; the message is what the model reads."""


def _tool_use_error(message: str) -> ToolError:
    return ToolError(f"<tool_use_error>{message}</tool_use_error>")


# =============================================================================================
# Paths


class Workspace:
    """A real folder seen under a virtual root."""

    def __init__(self, root: Path | str, virtual_root: str = VIRTUAL_ROOT) -> None:
        self.real = Path(root).resolve()
        self.virtual = virtual_root.rstrip("/") or "/"
        if not self.real.is_dir():
            raise FileNotFoundError(f"workspace {root} is not a folder")

    def to_real(self, path: Any, key: str = "file_path") -> Path:
        """The real path for a path the model wrote; refuses paths outside the workspace."""
        if not isinstance(path, str) or not path.strip():
            raise _tool_use_error(f"InputValidationError: {key} must be a non-empty string")
        text = path.strip()
        if text == self.virtual or text.startswith(self.virtual.rstrip("/") + "/"):
            candidate = self.real / text[len(self.virtual) :].lstrip("/")
        elif os.path.isabs(text):
            candidate = Path(text)
        else:
            candidate = self.real / text
        resolved = candidate.resolve()  # follows symlinks, also of a missing file's parents
        if not self.inside(resolved):
            raise _tool_use_error(f"Path {text} is outside the workspace {self.virtual}; access denied.")
        return resolved

    def virtual_path(self, real: Path) -> str:
        rel = self.relative(real)
        return self.virtual if rel == "." else f"{self.virtual.rstrip('/')}/{rel}"

    def relative(self, real: Path) -> str:
        return real.relative_to(self.real).as_posix()

    def hide_real_paths(self, text: str) -> str:
        """Show the real workspace path as the virtual root in command output."""
        for form in dict.fromkeys((str(self.real), os.path.realpath(self.real))):
            text = re.sub(re.escape(form) + r"(?![\w.-])", lambda _: self.virtual, text)
        return text

    def inside(self, resolved: Path) -> bool:
        """Whether a resolved path (symlinks followed) is the workspace or below it."""
        return resolved == self.real or self.real in resolved.parents

    def walk(self, top: Path) -> list[Path]:
        """Files under ``top``, sorted by path; hidden files and folders are skipped (as ripgrep does).

        Linked folders are not entered (``os.walk``'s default) and a linked file that resolves
        outside the workspace is left out, so Grep and Glob never read or list past the root."""
        if top.is_file():
            return [top]
        out: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                path = Path(dirpath) / name
                if not name.startswith(".") and (not path.is_symlink() or self.inside(path.resolve())):
                    out.append(path)
        return sorted(out, key=lambda p: self.relative(p))


def copy_workspace(src: Path | str, dest: Path | str) -> Path:
    """A scratch copy of a workspace (without build residue such as ``__pycache__``)."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(*SCRATCH_IGNORE))
    return dest


# =============================================================================================
# Globs


def _expand_braces(pattern: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        return [pattern]
    out: list[str] = []
    for alt in m.group(1).split(","):
        out += _expand_braces(pattern[: m.start()] + alt + pattern[m.end() :])
    return out


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regex over ``/``-separated paths: ``**`` crosses folders, ``*`` and ``?`` don't."""
    parts: list[str] = []
    for alt in _expand_braces(pattern):
        i, out = 0, []
        while i < len(alt):
            c = alt[i]
            if alt.startswith("**/", i):
                out.append("(?:.*/)?")
                i += 3
            elif alt.startswith("**", i):
                out.append(".*")
                i += 2
            elif c == "*":
                out.append("[^/]*")
                i += 1
            elif c == "?":
                out.append("[^/]")
                i += 1
            elif c == "[":
                end = alt.find("]", i + 1)
                if end < 0:
                    out.append(re.escape(c))
                    i += 1
                else:
                    body = alt[i + 1 : end]
                    if body.startswith("!"):
                        body = "^" + body[1:]
                    out.append(f"[{body}]")
                    i = end + 1
            else:
                out.append(re.escape(c))
                i += 1
        parts.append("".join(out))
    return re.compile("(?:" + "|".join(parts) + r")\Z")


def _file_filter(glob: Any, type_: Any) -> Any:
    """A predicate on (relative path) for Grep's ``glob`` and ``type``; ripgrep's rules: a glob
    without ``/`` matches the file name, one with ``/`` the path."""
    checks: list[Any] = []
    if isinstance(glob, str) and glob.strip():
        globs = [g for g in re.split(r"[\s,](?![^{]*\})", glob.strip()) if g]
        compiled = [(g.lstrip("/"), glob_regex(g.lstrip("/"))) for g in globs]

        def by_glob(rel: str) -> bool:
            name = rel.rsplit("/", 1)[-1]
            return any(rx.match(rel if "/" in g else name) for g, rx in compiled)

        checks.append(by_glob)
    if isinstance(type_, str) and type_.strip():
        names = FILE_TYPES.get(type_.strip().lower(), (f"*.{type_.strip()}",))
        rxs = [glob_regex(n) for n in names]
        checks.append(lambda rel: any(rx.match(rel.rsplit("/", 1)[-1]) for rx in rxs))
    return lambda rel: all(check(rel) for check in checks)


def _text_of(path: Path) -> str | None:
    """A file's text, or None for a binary file (a NUL byte near the start, as ripgrep decides)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:BINARY_SNIFF_BYTES]:
        return None
    return data.decode("utf-8", errors="replace")


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


# =============================================================================================
# Input helpers


def _required_str(inp: dict[str, Any], key: str, allow_empty: bool = False) -> str:
    value = inp.get(key)
    if not isinstance(value, str) or (not allow_empty and not value):
        raise _tool_use_error(
            f"InputValidationError: the required parameter `{key}` is missing or not a string"
        )
    return value


def _int(inp: dict[str, Any], key: str, default: int | None = None, minimum: int = 0) -> int | None:
    value = inp.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _tool_use_error(f"InputValidationError: `{key}` must be a number")
    try:
        number = int(value)
    except ValueError as exc:
        raise _tool_use_error(f"InputValidationError: `{key}` must be a number") from exc
    return max(number, minimum)


def _flag(inp: dict[str, Any], key: str, default: bool = False) -> bool:
    value = inp.get(key)
    return default if value is None else bool(value)


# =============================================================================================
# Read


def _read(inp: dict[str, Any], ws: Workspace) -> ToolResult:
    path = ws.to_real(_required_str(inp, "file_path"))
    shown = ws.virtual_path(path)
    if not path.exists():
        raise _tool_use_error(f"File does not exist: {shown}")
    if path.is_dir():
        raise ToolError(f"EISDIR: illegal operation on a directory, read '{shown}'")
    text = _text_of(path)
    if text is None:
        raise _tool_use_error(f"This tool cannot read binary files: {shown}")
    lines = _lines(text)
    offset = _int(inp, "offset", 1, minimum=1) or 1
    limit = _int(inp, "limit", READ_DEFAULT_LIMIT, minimum=1) or READ_DEFAULT_LIMIT
    chunk = [line[:READ_MAX_LINE_CHARS] for line in lines[offset - 1 : offset - 1 + limit]]
    raw = {
        "type": "text",
        "file": {
            "filePath": shown,
            "content": "\n".join(chunk),
            "numLines": len(chunk),
            "startLine": offset,
            "totalLines": len(lines),
        },
    }
    return ToolResult(model_text("Read", raw), raw)


def _numbered(lines: list[str], first: int) -> str:
    return "\n".join(f"{first + i:>6}\t{line}" for i, line in enumerate(lines))


# =============================================================================================
# Grep


def _grep(inp: dict[str, Any], ws: Workspace) -> ToolResult:
    pattern = _required_str(inp, "pattern")
    flags = re.IGNORECASE if _flag(inp, "-i") else 0
    multiline = _flag(inp, "multiline")
    if multiline:
        flags |= re.DOTALL | re.MULTILINE
    try:
        rx = re.compile(pattern, flags)
    except re.error as exc:
        raise _tool_use_error(f"Invalid regular expression {pattern!r}: {exc}") from exc
    top = ws.to_real(inp.get("path") or ws.virtual, key="path")
    if not top.exists():
        raise _tool_use_error(f"Path does not exist: {ws.virtual_path(top)}")
    mode = inp.get("output_mode") or "files_with_matches"
    if mode not in ("content", "files_with_matches", "count"):
        raise _tool_use_error(
            "InputValidationError: output_mode must be one of content, files_with_matches, count"
        )
    keep = _file_filter(inp.get("glob"), inp.get("type"))
    head_limit = _int(inp, "head_limit")
    skip = _int(inp, "offset", 0) or 0
    explicit_file = top.is_file()
    files = [p for p in ws.walk(top) if explicit_file or keep(ws.relative(p))]

    matched: list[tuple[str, list[str], list[int]]] = []  # (relative path, lines, matching line indices)
    for path in files:
        text = _text_of(path)
        if text is None:
            continue
        lines = _lines(text)
        if multiline:
            hits: set[int] = set()
            starts = [0]
            for line in lines:
                starts.append(starts[-1] + len(line) + 1)
            for m in rx.finditer(text):
                first = _line_at(starts, m.start())
                last = _line_at(starts, max(m.start(), m.end() - 1))
                hits.update(range(first, min(last, len(lines) - 1) + 1))
            found = sorted(hits)
        else:
            found = [i for i, line in enumerate(lines) if rx.search(line)]
        if found:
            matched.append((ws.relative(path), lines, found))

    if mode == "files_with_matches":
        names = [rel for rel, _, _ in matched]
        names, applied = _page(names, skip, head_limit)
        raw: dict[str, Any] = {"mode": "files_with_matches", "filenames": names, "numFiles": len(names)}
        _note_paging(raw, applied, skip)
        return ToolResult(model_text("Grep", raw), raw)
    if mode == "count":
        entries = [f"{rel}:{len(found)}" for rel, _, found in matched]
        entries, applied = _page(entries, skip, head_limit)
        total = sum(int(e.rsplit(":", 1)[1]) for e in entries)
        raw = {
            "mode": "count",
            "numFiles": len(entries),
            "filenames": [],
            "content": "\n".join(entries),
            "numMatches": total,
        }
        _note_paging(raw, applied, skip)
        return ToolResult(model_text("Grep", raw), raw)

    numbers = _flag(inp, "-n", True)
    context = _int(inp, "-C", None)
    if context is None:
        context = _int(inp, "context", None)
    after = _int(inp, "-A", context or 0) or 0
    before = _int(inp, "-B", context or 0) or 0
    out: list[str] = []
    for rel, lines, found in matched:
        hits = set(found)
        shown: list[int] = []
        for i in found:
            for j in range(max(0, i - before), min(len(lines), i + after + 1)):
                if not shown or j > shown[-1]:
                    shown.append(j)
        previous = None
        for j in shown:
            if (before or after) and out and (previous is None or j > previous + 1):
                out.append("--")
            sep = ":" if j in hits else "-"
            text = lines[j][:GREP_MAX_LINE_CHARS]
            out.append(f"{rel}{sep}{j + 1}{sep}{text}" if numbers else f"{rel}{sep}{text}")
            previous = j
    out, applied = _page(out, skip, head_limit)
    raw = {"mode": "content", "numFiles": 0, "filenames": [], "content": "\n".join(out), "numLines": len(out)}
    _note_paging(raw, applied, skip)
    return ToolResult(model_text("Grep", raw), raw)


def _line_at(starts: list[int], pos: int) -> int:
    lo, hi = 0, len(starts) - 1
    while lo < hi:  # last line whose start is <= pos
        mid = (lo + hi + 1) // 2
        if starts[mid] <= pos:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _page(items: list[str], skip: int, limit: int | None) -> tuple[list[str], int | None]:
    items = items[skip:]
    if limit and len(items) > limit:
        return items[:limit], limit
    return items, None


def _note_paging(raw: dict[str, Any], applied_limit: int | None, skip: int) -> None:
    if applied_limit is not None:
        raw["appliedLimit"] = applied_limit
    if skip:
        raw["appliedOffset"] = skip


# =============================================================================================
# Glob


def _glob(inp: dict[str, Any], ws: Workspace) -> ToolResult:
    pattern = _required_str(inp, "pattern").strip()
    top = ws.to_real(inp.get("path") or ws.virtual, key="path")
    if not top.is_dir():
        raise _tool_use_error(f"Directory does not exist: {ws.virtual_path(top)}")
    prefix = ws.virtual.rstrip("/") + "/"
    if pattern.startswith(prefix):  # an absolute pattern under the workspace
        top, pattern = ws.real, pattern[len(prefix) :]
    rx = glob_regex(pattern.lstrip("/") if not os.path.isabs(pattern) else pattern)
    found = [p for p in ws.walk(top) if rx.match(p.relative_to(top).as_posix())]
    names = [ws.virtual_path(p) for p in found]
    truncated = len(names) > GLOB_MAX_FILES
    names = names[:GLOB_MAX_FILES]
    raw = {"filenames": names, "numFiles": len(names), "truncated": truncated}
    return ToolResult(model_text("Glob", raw), raw)


# =============================================================================================
# Bash


def bash_env(root: Path) -> dict[str, str]:
    """The fixed environment Bash commands run in (nothing from the caller but PATH)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH") or os.defpath])
    return {
        "PATH": path,
        "HOME": str(root),
        "PWD": str(root),
        "LC_ALL": "C",
        "LANG": "C",
        "TZ": "UTC",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "COLUMNS": "120",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONUNBUFFERED": "1",
    }


def _exit1_is_result(command: str) -> bool:
    """Exit 1 of the command's last program means "no match" or "differs" (grep, find, diff...)."""
    last = re.split(r"\|\|?|&&|;|\n", command.strip())[-1].strip()
    words = [w for w in last.split() if not re.match(r"^[A-Za-z_]\w*=", w)]
    if not words:
        return False
    program = os.path.basename(words[0])
    if program in EXIT1_OK_PROGRAMS:
        return True
    return program == "git" and len(words) > 1 and words[1] in ("diff", "grep")


def _bash(inp: dict[str, Any], ws: Workspace, timeout_s: float) -> ToolResult:
    command = _required_str(inp, "command")
    timeout_ms = _int(inp, "timeout")
    limit = min(timeout_ms / 1000, BASH_MAX_TIMEOUT_S) if timeout_ms else timeout_s
    real_command = command.replace(ws.virtual, str(ws.real)) if ws.virtual != "/" else command
    proc = subprocess.Popen(
        ["bash", "-c", real_command],
        cwd=ws.real,
        env=bash_env(ws.real),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    timed_out = False
    try:
        data, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        data, _ = proc.communicate()
    out = ws.hide_real_paths(data.decode("utf-8", errors="replace")).rstrip("\n")
    if len(out) > BASH_MAX_OUTPUT_CHARS:
        cut = len(out) - BASH_MAX_OUTPUT_CHARS
        out = out[:BASH_MAX_OUTPUT_CHARS] + f"\n\n... [{cut} characters truncated] ..."
    if timed_out:
        text = f"Command timed out after {limit:g}s" + (f"\n{out}" if out else "")
        return ToolResult(text, {"error": text, "is_interrupt": False}, True)
    code = proc.returncode
    if code == 0 or (code == 1 and _exit1_is_result(command)):
        raw = {"stdout": out, "stderr": "", "interrupted": False, "isImage": False}
        return ToolResult(model_text("Bash", raw), raw)
    text = f"Exit code {code}" + (f"\n{out}" if out else "")
    return ToolResult(text, {"error": text, "is_interrupt": False}, True)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


# =============================================================================================
# Edit and Write


def structured_patch(before: str, after: str, context: int = 3) -> list[dict[str, Any]]:
    """Hunks in Claude Code's ``structuredPatch`` shape (unified diff, lines prefixed ' ', '-', '+')."""
    hunks: list[dict[str, Any]] = []
    diff = difflib.unified_diff(_lines(before), _lines(after), n=context, lineterm="")
    for line in diff:
        if line.startswith(("---", "+++")) and not hunks:
            continue
        m = re.match(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", line)
        if m:
            hunks.append(
                {
                    "oldStart": int(m.group(1)),
                    "oldLines": int(m.group(2) or 1),
                    "newStart": int(m.group(3)),
                    "newLines": int(m.group(4) or 1),
                    "lines": [],
                }
            )
        elif hunks:
            hunks[-1]["lines"].append(line)
    return hunks


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def _edit(inp: dict[str, Any], ws: Workspace) -> ToolResult:
    path = ws.to_real(_required_str(inp, "file_path"))
    old = _required_str(inp, "old_string", allow_empty=True)
    new = _required_str(inp, "new_string", allow_empty=True)
    replace_all = _flag(inp, "replace_all")
    shown = ws.virtual_path(path)
    if old == new:
        raise _tool_use_error("No changes to make: old_string and new_string are exactly the same.")
    if path.is_dir():
        raise _tool_use_error(f"Cannot edit a directory: {shown}")
    if not path.exists():
        if old != "":
            raise _tool_use_error(f"File does not exist: {shown}")
        path.parent.mkdir(parents=True, exist_ok=True)
        original = ""
    else:
        text = _text_of(path)
        if text is None:
            raise _tool_use_error(f"Cannot edit a binary file: {shown}")
        original = text
        if old == "":
            raise _tool_use_error("Cannot create new file - file already exists.")
    count = original.count(old) if old else 1
    if count == 0:
        raise _tool_use_error(f"String to replace not found in file.\nString: {old}")
    if count > 1 and not replace_all:
        raise _tool_use_error(
            f"Found {count} matches of the string to replace, but replace_all is false. To replace all "
            "occurrences, set replace_all to true. To replace only one occurrence, please provide more "
            f"context to uniquely identify the instance.\nString: {old}"
        )
    updated = _apply_edit(original, old, new, replace_all)
    _write_text(path, updated)
    raw = {
        "filePath": shown,
        "oldString": old,
        "newString": new,
        "originalFile": original,
        "structuredPatch": structured_patch(original, updated),
        "userModified": False,
        "replaceAll": replace_all,
    }
    return ToolResult(model_text("Edit", raw), raw)


def _apply_edit(original: str, old: str, new: str, replace_all: bool) -> str:
    if old == "":
        return new
    return original.replace(old, new) if replace_all else original.replace(old, new, 1)


def _write(inp: dict[str, Any], ws: Workspace) -> ToolResult:
    path = ws.to_real(_required_str(inp, "file_path"))
    content = _required_str(inp, "content", allow_empty=True)
    shown = ws.virtual_path(path)
    if path.is_dir():
        raise _tool_use_error(f"Cannot write to a directory: {shown}")
    original = _text_of(path) if path.exists() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_text(path, content)
    raw = {
        "type": "update" if original is not None else "create",
        "filePath": shown,
        "content": content,
        "structuredPatch": structured_patch(original, content) if original is not None else [],
        "originalFile": original,
    }
    return ToolResult(model_text("Write", raw), raw)


# =============================================================================================
# What the model reads


def model_text(tool: str, raw: Any) -> str:
    """The text the model reads for a successful call, rebuilt from its ``tool_response``.

    Read: ``cat -n`` numbered lines (``{n:>6}\\t{line}``); Grep: the matching lines, or "Found N
    files" and the paths, or per-file counts; Glob: the paths; Bash: the interleaved output; Edit:
    the updated notice and a numbered snippet around the change; Write: created/updated notice.
    """
    if not isinstance(raw, dict):
        return "" if raw is None else str(raw)
    if tool == "Read":
        file = raw.get("file") or {}
        content = str(file.get("content") or "")
        start = int(file.get("startLine") or 1)
        total = int(file.get("totalLines") or 0)
        if total == 0:
            return "<system-reminder>Warning: the file exists but the contents are empty.</system-reminder>"
        if not content and start > total:
            return (
                "<system-reminder>Warning: the file exists but is shorter than the provided offset "
                f"({start}). The file has {total} lines.</system-reminder>"
            )
        return _numbered(content.split("\n"), start)
    if tool == "Grep":
        mode = raw.get("mode")
        if mode == "files_with_matches":
            names = raw.get("filenames") or []
            if not names:
                return "No files found"
            noun = "file" if len(names) == 1 else "files"
            return f"Found {len(names)} {noun}\n" + "\n".join(names)
        if mode == "count":
            content = str(raw.get("content") or "")
            if not content:
                return "No matches found"
            files = int(raw.get("numFiles") or 0)
            total = int(raw.get("numMatches") or 0)
            noun = "file" if files == 1 else "files"
            return f"{content}\n\nFound {total} total occurrences across {files} {noun}."
        return str(raw.get("content") or "") or "No matches found"
    if tool == "Glob":
        names = raw.get("filenames") or []
        if not names:
            return "No files found"
        text = "\n".join(names)
        if raw.get("truncated"):
            text += "\n(Results are truncated. Consider using a more specific path or pattern.)"
        return text
    if tool == "Bash":
        out = str(raw.get("stdout") or "")
        err = str(raw.get("stderr") or "")
        return out + (("\n" + err) if err and err not in out else "")
    if tool == "Edit":
        path = raw.get("filePath", "")
        original = str(raw.get("originalFile") or "")
        new_string = str(raw.get("newString") or "")
        updated = _apply_edit(
            original, str(raw.get("oldString") or ""), new_string, bool(raw.get("replaceAll"))
        )
        snippet = _edit_snippet(original, updated, str(raw.get("oldString") or ""), new_string)
        return f"The file {path} has been updated. {EDIT_SNIPPET_INTRO}\n{snippet}"
    if tool == "Write":
        path = raw.get("filePath", "")
        if raw.get("type") == "create":
            return f"File created successfully at: {path}"
        return f"The file {path} has been updated successfully."
    return str(raw)


def _edit_snippet(original: str, updated: str, old: str, new: str) -> str:
    lines = _lines(updated)
    at = original.find(old) if old else 0
    first = original.count("\n", 0, max(at, 0))
    last = first + max(new.count("\n"), 0)
    lo = max(0, first - EDIT_SNIPPET_CONTEXT)
    hi = min(len(lines), last + EDIT_SNIPPET_CONTEXT + 1)
    return _numbered(lines[lo:hi], lo + 1)


# =============================================================================================
# Entry point


def run_tool(
    name: str,
    tool_input: dict[str, Any],
    workspace: Path | str | Workspace,
    *,
    virtual_root: str = VIRTUAL_ROOT,
    timeout_s: float = BASH_DEFAULT_TIMEOUT_S,
) -> ToolResult:
    """Run one tool call against ``workspace``; never raises for a bad call (it is an error result)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace, virtual_root)
    if not isinstance(tool_input, dict):
        text = "<tool_use_error>InputValidationError: the tool input must be an object</tool_use_error>"
        return ToolResult(text, {"error": text, "is_interrupt": False}, True)
    try:
        if name == "Read":
            return _read(tool_input, ws)
        if name == "Grep":
            return _grep(tool_input, ws)
        if name == "Glob":
            return _glob(tool_input, ws)
        if name == "Bash":
            return _bash(tool_input, ws, timeout_s)
        if name == "Edit":
            return _edit(tool_input, ws)
        if name == "Write":
            return _write(tool_input, ws)
        raise _tool_use_error(f"Error: No such tool available: {name}")
    except ToolError as exc:
        text = str(exc)
    except OSError as exc:
        text = f"<tool_use_error>{type(exc).__name__}: {exc.strerror or exc}</tool_use_error>"
        text = ws.hide_real_paths(text)
    return ToolResult(text, {"error": text, "is_interrupt": False}, True)
