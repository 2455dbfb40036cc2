"""Safety in front of the local tools: ``run_sandboxed(name, input, workspace, policy)``.

``claude_rl.tools.runtime.run_tool`` runs whatever it is given (Bash through an unrestricted
``bash -c``). The local agent runs the calls a model writes, so it goes through this module, which
refuses what the policy does not allow and runs Bash commands inside limits. Every refusal is an
``is_error`` ``ToolResult`` whose text says what was refused and why, so the model can read it and
try something else; nothing raises.

What ``SandboxPolicy`` enforces
-------------------------------

- Read-only by default: Edit, Write, MultiEdit and NotebookEdit are refused unless ``allow_edits``.
  Read, Grep and Glob are confined to the workspace by ``Workspace`` already; Grep is also refused
  when a symlink under the searched folder points out of the workspace (run_tool's walk would read
  the file it points to).
- Bash commands are checked before anything runs (``check_bash``). The command is split with a
  small bash lexer (quotes, escapes, operators) into simple commands joined by ``|``, ``&&``,
  ``||``, ``;`` and newlines. Refused: command substitution (``$(...)``, backticks), parameter and
  arithmetic expansion (only ``$?`` is allowed, never as a program name), subshells and groups,
  control structures, background jobs, here-documents and here-strings, process substitution,
  brace and tilde expansion, environment assignments other than locale/TZ/COLUMNS-style ones
  (``PATH=``, ``LD_PRELOAD=``, ``PYTHONPATH=`` ... are refused), programs called by path, and any
  program not in the allowlist (``DEFAULT_PROGRAMS``). Writing redirections (``>``, ``>>``,
  ``&>``, ``>|``, ``<>``) and ``tee`` need ``allow_edits`` and a target inside the workspace
  (``/dev/null`` is always fine). Every file argument of a program that takes files must resolve,
  symlinks followed, inside the workspace (unquoted globs are expanded to check each match; paths
  under the virtual root are mapped; ``cd`` is followed, and a later relative path must stay
  inside from every directory the shell may be in).
- Per-program rules: sqlite3 runs with ``-safe`` (no ``.shell``, ATTACH, ``writefile()``...) and,
  without edits, ``-readonly``; its SQL arguments are checked too (dot-commands from an allowlist;
  ATTACH, ``VACUUM INTO``, ``load_extension``, ``readfile``/``writefile``/``edit``/``fsdir`` and
  archive functions refused) and it may not read SQL from a pipe or a file. ``find`` without
  ``-exec``/``-execdir``/``-ok``/``-delete``/``-fprint*``/``-fls``/``-L``/``-follow``. ``sed``
  scripts are scanned (``e``, ``r``, ``R``, ``w``, ``W`` commands and the ``e``/``w`` flags of
  ``s`` refused), run with GNU sed's ``--sandbox``, and ``-i`` needs edits. ``sort -o``, ``uniq``
  with an output file, ``date -s`` and ``rg --pre``/``-z`` are refused.
- Programs that run arbitrary code (``python3``, ``awk``) are allowed only inside the OS sandbox
  (or with ``python_without_os_sandbox``); ``mkdir``/``touch``/``cp``/``mv`` only with edits.
- The OS sandbox (``os_sandbox="auto"``, Linux, root or unprivileged user namespaces, util-linux
  ``unshare``/``setpriv``): each command runs in new mount, network and PID namespaces, chrooted
  into a tmpfs root that holds only read-only binds of ``/usr`` (and the ``/bin``, ``/lib``
  links), a few ``/etc`` files (passwd, group, ld.so cache, localtime...), the Python installation
  and virtualenv that run claude-rl, ``/dev/null``-style devices, a fresh ``/proc``, a private
  size-limited ``/tmp``, and the workspace at its real path: read-only unless ``allow_edits``. All
  capabilities are dropped (bounding set cleared, no_new_privs) before the command starts, so it
  cannot remount, unmount or chroot out. No network at all (a new network namespace has no
  interfaces up). Nothing outside the workspace can be read except those system files, and
  nothing at all can be written outside the workspace and the private ``/tmp``.
- Limits: a wall-clock timeout (``timeout_s``, default 10 s; a ``timeout`` in the call may ask for
  up to ``max_timeout_s``) after which the whole process group (and PID namespace) is killed;
  output capped at ``max_output_chars`` (head and tail kept with a marker saying how much was cut),
  and a command that writes more than ``kill_after_output_bytes`` is stopped; ``ulimit`` caps on
  memory (``memory_limit_mb``) and file size (``max_file_mb``). The environment is the fixed one
  of ``runtime.bash_env``: nothing inherited but ``PATH``, ``HOME`` = the workspace, no proxies.

What it does not enforce
------------------------

- Without the OS sandbox (not Linux, no ``unshare``, namespaces disabled, or ``os_sandbox="off"``)
  there is no network isolation and no read-only filesystem: safety rests on the static checker.
  The checker only looks at the options it knows; an allowed program option that reads a file
  named in an option value it does not know (rather than a positional argument) is not
  path-checked. ``python3``/``awk`` are then refused unless ``python_without_os_sandbox``.
- Inside the OS sandbox, allowed programs (python3 in particular) may read the bound system files
  (``/usr``, the Python installation and virtualenv, a few ``/etc`` files) and use CPU and memory
  up to the limits; there is no cgroup, so the number of processes is not capped (the timeout and
  the PID namespace still end them all).
- With ``allow_edits`` the workspace is writable by any allowed program inside the sandbox (the
  point of edits), including python3 code.
- Read/Grep/Glob/Edit/Write run in-process (``run_tool``): they are confined by path checks, not
  by the OS sandbox, and have no timeout.
"""

from __future__ import annotations

import functools
import glob as globmod
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from claude_rl.tools.runtime import (
    EXIT1_OK_PROGRAMS,
    VIRTUAL_ROOT,
    ToolResult,
    Workspace,
    bash_env,
    model_text,
    run_tool,
)

EDIT_TOOLS = frozenset({"Edit", "Write", "MultiEdit", "NotebookEdit"})

# Programs a Bash command may run. Each has a rule in ``_PROGRAM_RULES`` below.
DEFAULT_PROGRAMS = frozenset(
    "sqlite3 grep egrep fgrep rg ls cat head tail wc sort uniq cut find echo printf pwd date sed tr nl "
    "diff stat du file column realpath basename dirname seq yes true false test [ cd tee "
    "python3 python awk mawk gawk mkdir touch cp mv".split()
)
# Programs that run code they are given: allowed only inside the OS sandbox.
CODE_PROGRAMS = frozenset({"python3", "python", "awk", "mawk", "gawk"})
# Programs that change files: allowed only with edits, on paths inside the workspace.
WRITE_PROGRAMS = frozenset({"mkdir", "touch", "cp", "mv"})
# Environment assignments a command may make (``LC_ALL=C sort ...``).
SAFE_ASSIGNMENTS = re.compile(r"(LC_[A-Z]+|LANG|LANGUAGE|TZ|COLUMNS|LINES|NO_COLOR|TERM)\Z")
RESERVED_WORDS = frozenset(
    "! [[ ]] { } if then else elif fi case esac for select while until do done function time coproc".split()
)
DEV_FILES = frozenset({"/dev/null", "/dev/zero", "/dev/stdin", "/dev/stdout", "/dev/stderr"})

# sqlite3: options without a value, options with one, and the dot-commands allowed.
SQLITE_FLAGS = frozenset(
    "header headers noheader column csv json line list box table markdown html tabs quote ascii "
    "readonly safe batch bail echo nofollow version help stats".split()
)
SQLITE_VALUE_OPTIONS = frozenset({"separator", "newline", "nullvalue", "cmd"})
SQLITE_DOT_COMMANDS = frozenset(
    "schema fullschema tables table indexes indices headers header mode width databases dbinfo show "
    "nullvalue separator print timer help eqp explain changes echo bail stats dump quit exit".split()
)
SQLITE_DOT_REASONS = {
    "shell": "it runs shell commands",
    "system": "it runs shell commands",
    "output": "it writes a file",
    "once": "it writes a file",
    "save": "it writes a file",
    "backup": "it writes a file",
    "excel": "it writes a file and starts a program",
    "import": "it reads a file into the database",
    "read": "it runs SQL from a file",
    "open": "it opens another database",
    "load": "it loads native code",
    "restore": "it overwrites the database",
    "cd": "it changes directory",
}
SQLITE_BAD_SQL = re.compile(
    r"\b(ATTACH|VACUUM\s+INTO|load_extension|readfile|writefile|edit\s*\(|fsdir|zipfile|sqlar_\w+)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class SandboxPolicy:
    """What the local agent's tool calls may do. The defaults are the safe ones."""

    allow_edits: bool = False
    timeout_s: float = 10.0  # Bash wall-clock limit when the call asks for none
    max_timeout_s: float = 60.0  # the most a call's own ``timeout`` (ms) can ask for
    max_output_chars: int = 16_000  # Bash output kept (head + tail)
    kill_after_output_bytes: int = 32 * 1024 * 1024  # a command writing more is stopped
    os_sandbox: Literal["auto", "require", "off"] = "auto"
    python_without_os_sandbox: bool = False  # allow python3/awk when the OS sandbox is unavailable
    programs: frozenset[str] = field(default=DEFAULT_PROGRAMS)
    memory_limit_mb: int | None = 2048  # ulimit -v of the command
    max_file_mb: int = 64  # ulimit -f: the largest file a command may write
    tmp_size_mb: int = 64  # size of the private /tmp inside the OS sandbox


# =============================================================================================
# The command checker


class CommandRefused(Exception):
    """A Bash command the policy does not allow; the message says what and why."""


@dataclass
class Word:
    text: str  # the value after quote removal ($? kept as written)
    start: int  # span in the command
    end: int
    quoted: bool = False
    glob: bool = False  # has unquoted * ? [
    dollar: bool = False  # has $?


@dataclass
class Redirect:
    op: str  # > >> >| &> &>> <> < >& <&
    fd: str
    target: Word


@dataclass
class SimpleCommand:
    joiner: str  # operator before it: "" | && || ;
    words: list[Word] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)


@dataclass(frozen=True)
class BashCheck:
    """The checker's verdict: ``command`` is what runs (with the sandbox's own flags inserted)."""

    allowed: bool
    reason: str = ""
    command: str = ""
    programs: tuple[str, ...] = ()


_WORD_BREAK = frozenset(" \t\n|&;()<>")


class _Lexer:
    def __init__(self, src: str) -> None:
        self.src = src
        self.items: list[Any] = []  # Word | ("op", str) | ("redir", op, fd)

    def run(self) -> list[Any]:
        s, i, n = self.src, 0, len(self.src)
        while i < n:
            c = s[i]
            if c in " \t":
                i += 1
            elif c == "\\" and s.startswith("\\\n", i):
                i += 2
            elif c == "\n":
                self.items.append(("op", ";"))
                i += 1
            elif c == "#":
                j = s.find("\n", i)
                i = n if j < 0 else j
            elif c in "|&;()":
                i = self._operator(i)
            elif c in "<>":
                i = self._redirect(i, "")
            else:
                word, i = self._word(i)
                if i < n and s[i] in "<>" and re.fullmatch(r"\d+", s[word.start : word.end]):
                    i = self._redirect(i, word.text)
                else:
                    self.items.append(word)
        return self.items

    def _operator(self, i: int) -> int:
        s = self.src
        if s.startswith(("&&", "||"), i):
            self.items.append(("op", s[i : i + 2]))
            return i + 2
        if s.startswith("|&", i):
            self.items.append(("op", "|"))
            return i + 2
        if s.startswith(";;", i):
            raise CommandRefused("case statements (;;) are not allowed")
        if s.startswith("&>", i):
            op = "&>>" if s.startswith("&>>", i) else "&>"
            return self._redirect_target(i + len(op), op, "")
        c = s[i]
        if c == "&":
            raise CommandRefused("background jobs (&) are not allowed")
        if c in "()":
            raise CommandRefused("subshells and grouping with ( ) are not allowed")
        self.items.append(("op", c))
        return i + 1

    def _redirect(self, i: int, fd: str) -> int:
        s = self.src
        if s.startswith("<<<", i):
            raise CommandRefused("here-strings (<<<) are not allowed")
        if s.startswith("<<", i):
            raise CommandRefused("here-documents (<<) are not allowed")
        if s.startswith(("<(", ">("), i):
            raise CommandRefused("process substitution <(...) / >(...) is not allowed")
        for op in (">>", ">|", ">&", "<&", "<>", ">", "<"):
            if s.startswith(op, i):
                return self._redirect_target(i + len(op), op, fd)
        raise AssertionError("unreachable")

    def _redirect_target(self, i: int, op: str, fd: str) -> int:
        s, n = self.src, len(self.src)
        while i < n and s[i] in " \t":
            i += 1
        if i >= n or s[i] in _WORD_BREAK:
            raise CommandRefused(f"redirection {op} has no target")
        target, i = self._word(i)
        self.items.append(("redir", Redirect(op, fd, target)))
        return i

    def _dollar(self, i: int, word: Word, out: list[str]) -> int:
        s, n = self.src, len(self.src)
        nxt = s[i + 1] if i + 1 < n else ""
        if s.startswith("$((", i):
            raise CommandRefused("arithmetic expansion $((...)) is not allowed")
        if nxt == "(":
            raise CommandRefused("command substitution $(...) is not allowed")
        if nxt == "{":
            raise CommandRefused("parameter expansion ${...} is not allowed")
        if nxt == "?":
            out.append("$?")
            word.dollar = True
            return i + 2
        if nxt and (nxt.isalnum() or nxt in "_@*#!$-"):
            m = re.match(r"[A-Za-z_]\w*|.", s[i + 1 :])
            name = m.group(0) if m else nxt
            raise CommandRefused(f"variable expansion (${name}) is not allowed; only $? is")
        out.append("$")
        return i + 1

    def _word(self, i: int) -> tuple[Word, int]:
        s, n = self.src, len(self.src)
        word = Word("", i, i)
        out: list[str] = []
        if s[i] == "~":
            raise CommandRefused("tilde expansion (~) is not allowed; use paths inside the workspace")
        while i < n and s[i] not in _WORD_BREAK:
            c = s[i]
            if c == "\\":
                if i + 1 >= n:
                    i += 1
                    continue
                if s[i + 1] == "\n":
                    i += 2
                    continue
                out.append(s[i + 1])
                word.quoted = True
                i += 2
            elif c == "'":
                j = s.find("'", i + 1)
                if j < 0:
                    raise CommandRefused("unterminated single quote")
                out.append(s[i + 1 : j])
                word.quoted = True
                i = j + 1
            elif c == '"' or s.startswith('$"', i):
                i = self._double_quoted(i + (2 if c == "$" else 1), word, out)
            elif s.startswith("$'", i):
                i = self._ansi_c(i + 2, word, out)
            elif c == "`":
                raise CommandRefused("command substitution with backticks is not allowed")
            elif c == "$":
                i = self._dollar(i, word, out)
            else:
                if c in "*?[":
                    word.glob = True
                elif c == "{":
                    m = re.match(r"\{[^\s{}|&;()<>]*\}", s[i:])
                    if m and ("," in m.group(0) or ".." in m.group(0)):
                        raise CommandRefused(f"brace expansion ({m.group(0)}) is not allowed")
                out.append(c)
                i += 1
        word.text = "".join(out)
        word.end = i
        return word, i

    def _double_quoted(self, i: int, word: Word, out: list[str]) -> int:
        s, n = self.src, len(self.src)
        word.quoted = True
        while i < n:
            c = s[i]
            if c == '"':
                return i + 1
            if c == "\\" and i + 1 < n and s[i + 1] in '$`"\\\n':
                if s[i + 1] != "\n":
                    out.append(s[i + 1])
                i += 2
            elif c == "`":
                raise CommandRefused("command substitution with backticks is not allowed")
            elif c == "$":
                i = self._dollar(i, word, out)
            else:
                out.append(c)
                i += 1
        raise CommandRefused("unterminated double quote")

    def _ansi_c(self, i: int, word: Word, out: list[str]) -> int:
        s, n = self.src, len(self.src)
        word.quoted = True
        escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0"}
        while i < n:
            c = s[i]
            if c == "'":
                return i + 1
            if c == "\\" and i + 1 < n:
                out.append(escapes.get(s[i + 1], "\\" + s[i + 1]))
                i += 2
            else:
                out.append(c)
                i += 1
        raise CommandRefused("unterminated $'...' quote")


def parse_bash(command: str) -> list[SimpleCommand]:
    """Split a command line into simple commands; raises ``CommandRefused`` for what is not allowed."""
    commands: list[SimpleCommand] = []
    current = SimpleCommand("")
    for item in _Lexer(command).run():
        if isinstance(item, Word):
            current.words.append(item)
        elif item[0] == "redir":
            current.redirects.append(item[1])
        else:
            op = item[1]
            if not current.words and not current.redirects:
                if op == ";" and current.joiner in ("", ";"):
                    continue  # empty line or a trailing ;
                raise CommandRefused(f"syntax error near {op!r}")
            commands.append(current)
            current = SimpleCommand(op)
    if current.words or current.redirects:
        commands.append(current)
    elif current.joiner not in ("", ";"):
        raise CommandRefused(f"the command ends with {current.joiner!r}")
    return commands


# --- paths ------------------------------------------------------------------------------------


class _Paths:
    """Checks that paths a command names stay inside the workspace, from every possible cwd."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.cwds: set[Path] = {ws.real}  # where the shell may be when the current command runs
        self.after_cd: set[Path] | None = None

    def _inside(self, path: Path) -> bool:
        real = Path(os.path.realpath(path))
        return real == self.ws.real or self.ws.real in real.parents

    def _candidates(self, text: str) -> list[Path]:
        virtual = self.ws.virtual.rstrip("/")
        if text == self.ws.virtual or (virtual and text.startswith(virtual + "/")):
            return [self.ws.real / text[len(virtual) :].lstrip("/")]
        if os.path.isabs(text):
            return [Path(text)]
        return [cwd / text for cwd in sorted(self.cwds)]

    def _glob_bases(self, text: str) -> list[tuple[Path, str]]:
        """(folder, pattern) pairs to expand ``text`` from, so the folder's own name is not a pattern."""
        virtual = self.ws.virtual.rstrip("/")
        if text == self.ws.virtual or (virtual and text.startswith(virtual + "/")):
            return [(self.ws.real, text[len(virtual) :].lstrip("/"))]
        if os.path.isabs(text):
            return [(Path("/"), text.lstrip("/"))]
        return [(cwd, text) for cwd in sorted(self.cwds)]

    def check(self, text: str, what: str, glob: bool = False) -> None:
        if text in DEV_FILES or text == "-" or not text:
            return
        for path in self._candidates(text):
            if not self._inside(path):
                raise CommandRefused(f"{what} {text!r} is outside the workspace {self.ws.virtual}")
        if not glob:
            return
        for base, pattern in self._glob_bases(text):
            for match in globmod.glob(pattern, root_dir=base) if pattern else []:
                if not self._inside(base / match):
                    shown = self.ws.hide_real_paths(str(base / match))
                    raise CommandRefused(
                        f"{what} {text!r} matches {shown!r}, which leads out of the workspace"
                    )

    def is_root(self, text: str) -> bool:
        return any(Path(os.path.realpath(p)) == self.ws.real for p in self._candidates(text))

    def cd(self, text: str | None) -> None:
        """Where the shell is after ``cd text`` succeeds (``after_cd``); checked against every cwd."""
        if text is None:
            self.after_cd = {self.ws.real}
            return
        if text == "-":
            raise CommandRefused("cd - is not allowed")
        self.check(text, "cd target")
        self.after_cd = {Path(os.path.realpath(p)) for p in self._candidates(text)}


# --- option parsing ---------------------------------------------------------------------------


@dataclass
class _Args:
    options: list[tuple[str, str | None]]
    positionals: list[Word]


def _split_args(args: list[Word], short_values: str = "", long_values: frozenset[str] = frozenset()) -> _Args:
    """Options and positionals, getopt style: ``-abc``, ``-nVALUE``, ``-n VALUE``, ``--x=V``, ``--``."""
    options: list[tuple[str, str | None]] = []
    positionals: list[Word] = []
    i = 0
    ended = False
    while i < len(args):
        w = args[i]
        t = w.text
        if ended or t == "-" or not t.startswith("-"):
            positionals.append(w)
        elif t == "--":
            ended = True
        elif t.startswith("--"):
            name, eq, value = t.partition("=")
            if eq:
                options.append((name, value))
            elif name in long_values and i + 1 < len(args):
                options.append((name, args[i + 1].text))
                i += 1
            else:
                options.append((name, None))
        else:
            j = 1
            while j < len(t):
                ch = t[j]
                if ch in short_values:
                    if j + 1 < len(t):
                        options.append(("-" + ch, t[j + 1 :]))
                    elif i + 1 < len(args):
                        options.append(("-" + ch, args[i + 1].text))
                        i += 1
                    else:
                        options.append(("-" + ch, None))
                    break
                options.append(("-" + ch, None))
                j += 1
        i += 1
    return _Args(options, positionals)


# --- per-program rules ------------------------------------------------------------------------


@dataclass
class _Context:
    ws: Workspace
    policy: SandboxPolicy
    paths: _Paths
    os_sandboxed: bool
    source: str = ""
    inserts: list[tuple[int, str]] = field(default_factory=list)
    features: dict[str, bool] = field(default_factory=dict)


# Programs whose positionals are all files, with their options that take a separate value.
_FILE_PROGRAMS: dict[str, tuple[str, frozenset[str]]] = {
    "cat": ("", frozenset()),
    "head": ("nc", frozenset({"--lines", "--bytes"})),
    "tail": ("ncs", frozenset({"--lines", "--bytes", "--sleep-interval", "--pid"})),
    "wc": ("", frozenset()),
    "ls": ("IwT", frozenset({"--ignore", "--hide", "--width", "--tabsize", "--sort", "--format"})),
    "sort": ("ktS", frozenset({"--key", "--field-separator", "--buffer-size", "--parallel"})),
    "uniq": ("fsw", frozenset({"--skip-fields", "--skip-chars", "--check-chars"})),
    "cut": ("dfbc", frozenset({"--delimiter", "--fields", "--bytes", "--characters", "--output-delimiter"})),
    "nl": ("bdfhilnsvw", frozenset()),
    "diff": ("CUIxXFL", frozenset({"--label", "--ignore-matching-lines", "--exclude"})),
    "stat": ("c", frozenset({"--format", "--printf"})),
    "du": ("dBtX", frozenset({"--max-depth", "--block-size", "--threshold", "--exclude"})),
    "file": ("mfFeP", frozenset({"--magic-file", "--files-from", "--separator", "--exclude"})),
    "column": ("scoNRHOWETld", frozenset()),
    "realpath": ("", frozenset()),
    "test": ("", frozenset()),
    "[": ("", frozenset()),
}
# Option values that name files, per program (checked like positionals).
_FILE_OPTIONS: dict[str, frozenset[str]] = {
    "wc": frozenset({"--files0-from"}),
    "sort": frozenset({"--files0-from"}),
    "du": frozenset({"-X", "--exclude-from", "--files0-from"}),
    "diff": frozenset({"-X", "--exclude-from", "--from-file", "--to-file"}),
    "file": frozenset({"-m", "--magic-file", "-f", "--files-from"}),
    "realpath": frozenset({"--relative-to", "--relative-base"}),
    "grep": frozenset({"-f", "--file", "--exclude-from"}),
    "date": frozenset({"-f", "--file", "-r", "--reference"}),
    "find": frozenset(),
}
_TEXT_PROGRAMS = frozenset(
    {"echo", "printf", "pwd", "seq", "yes", "true", "false", "basename", "dirname", "tr"}
)


def _check_file_option_values(prog: str, parsed: _Args, ctx: _Context) -> None:
    names = _FILE_OPTIONS.get(prog, frozenset())
    for name, value in parsed.options:
        named_file = re.search(r"file|from|dir|path|reference|relative", name) and name.startswith("--")
        if value is not None and (name in names or named_file):
            ctx.paths.check(value, f"{prog} {name} file")


def _rule_files(prog: str, args: list[Word], ctx: _Context) -> None:
    short, long_ = _FILE_PROGRAMS[prog]
    parsed = _split_args(args, short, long_)
    _check_file_option_values(prog, parsed, ctx)
    if prog == "sort":
        for name, _ in parsed.options:
            if name in ("-o", "--output"):
                raise CommandRefused("sort -o writes a file; sort prints to stdout here")
            if name in ("-T", "--temporary-directory", "--compress-program"):
                raise CommandRefused(f"sort {name} is not allowed")
    if prog == "uniq" and len(parsed.positionals) > 1:
        raise CommandRefused("uniq with an output file writes a file; uniq prints to stdout here")
    if prog in ("test", "["):
        for w in args:
            if w.text.startswith(("/", "./", "../")) or "/../" in w.text:
                ctx.paths.check(w.text, f"{prog} path", w.glob)
        return
    for w in parsed.positionals:
        if prog == "[" and w.text == "]":
            continue
        ctx.paths.check(w.text, f"{prog} argument", w.glob)


def _rule_text(prog: str, args: list[Word], ctx: _Context) -> None:
    return None


def _rule_date(prog: str, args: list[Word], ctx: _Context) -> None:
    parsed = _split_args(args, "dfrsI", frozenset({"--date", "--file", "--reference", "--set"}))
    for name, _ in parsed.options:
        if name in ("-s", "--set"):
            raise CommandRefused("date -s (setting the clock) is not allowed")
    _check_file_option_values(prog, parsed, ctx)


def _rule_cd(prog: str, args: list[Word], ctx: _Context) -> None:
    positional = [w for w in args if not w.text.startswith("-") or w.text == "-"]
    if len(positional) > 1:
        raise CommandRefused("cd takes one folder")
    ctx.paths.cd(positional[0].text if positional else None)


def _rule_grep(prog: str, args: list[Word], ctx: _Context) -> None:
    parsed = _split_args(
        args,
        "efmABCdD",
        frozenset(
            "--regexp --file --max-count --after-context --before-context --context --directories "
            "--devices --include --exclude --exclude-dir --exclude-from --label".split()
        ),
    )
    _check_file_option_values("grep", parsed, ctx)
    has_pattern = any(n in ("-e", "-f", "--regexp", "--file") for n, _ in parsed.options)
    files = parsed.positionals if has_pattern else parsed.positionals[1:]
    for w in files:
        ctx.paths.check(w.text, f"{prog} file", w.glob)


def _rule_rg(prog: str, args: list[Word], ctx: _Context) -> None:
    parsed = _split_args(
        args,
        "efgtTmABCMjE",
        frozenset(
            "--regexp --file --glob --iglob --type --type-not --max-count --after-context "
            "--before-context --context --max-columns --threads --encoding --type-add --ignore-file "
            "--sort --sortr --colors --replace".split()
        ),
    )
    for name, value in parsed.options:
        if name in ("--pre", "--pre-glob", "-z", "--search-zip", "--hostname-bin"):
            raise CommandRefused(f"rg {name} runs other programs; it is not allowed")
        if name in ("-f", "--file", "--ignore-file") and value is not None:
            ctx.paths.check(value, f"rg {name} file")
    has_pattern = any(n in ("-e", "-f", "--regexp", "--file") for n, _ in parsed.options)
    files = parsed.positionals if has_pattern else parsed.positionals[1:]
    for w in files:
        ctx.paths.check(w.text, "rg path", w.glob)


_FIND_REFUSED = {
    "-exec": "runs programs",
    "-execdir": "runs programs",
    "-ok": "runs programs",
    "-okdir": "runs programs",
    "-delete": "deletes files",
    "-fprint": "writes a file",
    "-fprint0": "writes a file",
    "-fprintf": "writes a file",
    "-fls": "writes a file",
    "-L": "follows symlinks out of the workspace",
    "-follow": "follows symlinks out of the workspace",
}
_FIND_FILE_TESTS = frozenset({"-newer", "-anewer", "-cnewer", "-samefile", "-files0-from"})


def _rule_find(prog: str, args: list[Word], ctx: _Context) -> None:
    i = 0
    while i < len(args) and (args[i].text in ("-H", "-P", "-D") or re.fullmatch(r"-O\d*", args[i].text)):
        i += 2 if args[i].text == "-D" else 1
    starts: list[Word] = []
    while i < len(args) and not (args[i].text.startswith("-") or args[i].text in ("(", "!", ")", ",")):
        starts.append(args[i])
        i += 1
    for w in args:
        if w.text in _FIND_REFUSED:
            raise CommandRefused(f"find {w.text} is not allowed: it {_FIND_REFUSED[w.text]}")
    for w in starts:
        ctx.paths.check(w.text, "find starting point", w.glob)
    for k, w in enumerate(args):
        if (w.text in _FIND_FILE_TESTS or w.text.startswith("-newer")) and k + 1 < len(args):
            ctx.paths.check(args[k + 1].text, f"find {w.text} file")


def _rule_tee(prog: str, args: list[Word], ctx: _Context) -> None:
    parsed = _split_args(args)
    if parsed.positionals and not ctx.policy.allow_edits:
        raise CommandRefused("tee writes files; edits are not allowed in this session")
    for w in parsed.positionals:
        ctx.paths.check(w.text, "tee file", w.glob)


def _rule_write_program(prog: str, args: list[Word], ctx: _Context) -> None:
    if not ctx.policy.allow_edits:
        raise CommandRefused(f"{prog} changes files; edits are not allowed in this session")
    parsed = _split_args(args, "mt" if prog in ("cp", "mv") else "m", frozenset({"--target-directory"}))
    for name, value in parsed.options:
        if name in ("-t", "--target-directory") and value is not None:
            ctx.paths.check(value, f"{prog} target")
    for w in parsed.positionals:
        ctx.paths.check(w.text, f"{prog} argument", w.glob)
        if prog == "mv" and ctx.paths.is_root(w.text):
            raise CommandRefused("moving the workspace itself is not allowed")


def _rule_code(prog: str, args: list[Word], ctx: _Context) -> None:
    if not ctx.os_sandboxed and not ctx.policy.python_without_os_sandbox:
        raise CommandRefused(
            f"{prog} runs arbitrary code and the OS sandbox is not available here; "
            "use sqlite3, grep, cat and the other tools instead"
        )
    if prog.startswith("python"):
        i = 0
        while i < len(args):
            t = args[i].text
            if t in ("-c", "-m") or not t.startswith("-") or t == "-":
                break
            if t in ("-W", "-X", "--check-hash-based-pycs"):
                i += 1
            i += 1
        if i < len(args) and not args[i].text.startswith("-"):
            ctx.paths.check(args[i].text, "python script", args[i].glob)
        return
    parsed = _split_args(args, "fvFW", frozenset())
    for name, value in parsed.options:
        if name == "-f" and value is not None:
            ctx.paths.check(value, "awk program file")
    has_file = any(n == "-f" for n, _ in parsed.options)
    for w in parsed.positionals if has_file else parsed.positionals[1:]:
        if "=" not in w.text:
            ctx.paths.check(w.text, "awk file", w.glob)


def _check_sql(text: str, ws: Workspace) -> None:
    stripped = text.strip()
    if stripped.startswith("."):
        name = stripped[1:].split(None, 1)[0] if len(stripped) > 1 else ""
        if name.lower() not in SQLITE_DOT_COMMANDS:
            why = SQLITE_DOT_REASONS.get(
                name.lower(), "it is not on the sandbox's list of read-only commands"
            )
            raise CommandRefused(f"the sqlite3 dot-command .{name} is not allowed: {why}")
        return
    m = SQLITE_BAD_SQL.search(text)
    if m:
        raise CommandRefused(
            f"SQL using {m.group(1).strip()} is not allowed (it reads or writes files outside the database)"
        )


def _rule_sqlite3(prog: str, args: list[Word], ctx: _Context, command: SimpleCommand, first: bool) -> None:
    i = 0
    positionals: list[Word] = []
    sql: list[str] = []
    while i < len(args):
        t = args[i].text
        if t.startswith("-"):  # the sqlite3 shell takes options anywhere on its command line
            name = t.lstrip("-").lower()
            if name in SQLITE_FLAGS:
                i += 1
                continue
            if name in SQLITE_VALUE_OPTIONS:
                if i + 1 >= len(args):
                    raise CommandRefused(f"sqlite3 {t} needs a value")
                if name == "cmd":
                    sql.append(args[i + 1].text)
                i += 2
                continue
            raise CommandRefused(f"sqlite3 option {t} is not allowed")
        positionals.append(args[i])
        i += 1
    if positionals:
        db = positionals[0].text
        if db not in ("", ":memory:"):
            path = db
            if db.startswith("file:"):
                path = db[5:].split("?", 1)[0]
                if path.startswith("//"):
                    path = path[2:]
            if path and path != ":memory:":
                ctx.paths.check(path, "sqlite3 database", positionals[0].glob)
        sql += [w.text for w in positionals[1:]]
    for text in sql:
        _check_sql(text, ctx.ws)
    if len(positionals) < 2 and not any(w.text.lower().lstrip("-") == "cmd" for w in args):
        if not first or any(r.op == "<" for r in command.redirects):
            raise CommandRefused("sqlite3 must get its SQL as an argument here, not from a pipe or a file")
    if any(r.op in ("<", "<&", "<>") and not r.target.text.isdigit() for r in command.redirects):
        raise CommandRefused("sqlite3 must get its SQL as an argument here, not from a file")
    flags = []
    if ctx.features.get("sqlite_safe", True):
        flags.append("-safe")
    if not ctx.policy.allow_edits:
        flags.append("-readonly")
    if flags:
        ctx.inserts.append((command.words[0].end, " " + " ".join(flags)))


_SED_SIMPLE = set("=dDgGhHlnNpPqQxzFL")


def _skip_regex(script: str, i: int, delim: str) -> int:
    n = len(script)
    while i < n:
        c = script[i]
        if c == "\\":
            i += 2
            continue
        if c == delim:
            return i + 1
        if c == "\n" and delim != "\n":
            break
        i += 1
    raise CommandRefused("sed script: unterminated regular expression")


def _skip_address(script: str, i: int) -> int:
    n = len(script)
    for _ in range(2):
        if i < n and script[i].isdigit():
            while i < n and (script[i].isdigit() or script[i] == "~"):
                i += 1
        elif i < n and script[i] == "$":
            i += 1
        elif i < n and script[i] == "/":
            i = _skip_regex(script, i + 1, "/")
            while i < n and script[i] in "IM":
                i += 1
        elif script.startswith("\\", i) and i + 1 < n:
            i = _skip_regex(script, i + 2, script[i + 1])
            while i < n and script[i] in "IM":
                i += 1
        else:
            break
        if i < n and script[i] == ",":
            i += 1
            if i < n and script[i] in "+~":
                i += 1
                while i < n and script[i].isdigit():
                    i += 1
                break
            continue
        break
    while i < n and script[i] in " \t!":
        i += 1
    return i


def check_sed_script(script: str) -> None:
    """Refuse sed commands that run programs or touch other files (e, r, R, w, W, s///e, s///w)."""
    i, n = 0, len(script)
    while i < n:
        c = script[i]
        if c in " \t\n;":
            i += 1
            continue
        i = _skip_address(script, i)
        if i >= n:
            break
        c = script[i]
        if c in "{}":
            i += 1
        elif c == "#":
            j = script.find("\n", i)
            i = n if j < 0 else j
        elif c in "sy":
            if i + 1 >= n:
                raise CommandRefused(f"sed script: incomplete {c} command")
            delim = script[i + 1]
            if delim in "\\\n":
                raise CommandRefused(f"sed script: bad delimiter in {c} command")
            i = _skip_regex(script, i + 2, delim)
            i = _skip_regex(script, i, delim)
            if c == "s":
                j = i
                while i < n and (script[i].isalnum()):
                    i += 1
                flags = script[j:i]
                if "e" in flags or "w" in flags:
                    raise CommandRefused(
                        "sed s///e and s///w are not allowed (they run commands or write files)"
                    )
        elif c in "rRwWe":
            raise CommandRefused(
                f"the sed {c} command is not allowed (it runs commands or reads/writes files)"
            )
        elif c in "aic":
            while i < n and script[i] != "\n":
                i += 2 if script[i] == "\\" else 1
        elif c in "bTtv:":
            i += 1
            while i < n and script[i] not in ";\n":
                i += 1
        elif c in _SED_SIMPLE:
            i += 1
            while i < n and script[i].isdigit():
                i += 1
        else:
            raise CommandRefused(f"sed script: the command {c!r} is not allowed here")


def _rule_sed(prog: str, args: list[Word], ctx: _Context, command: SimpleCommand) -> None:
    parsed = _split_args(args, "efl", frozenset({"--expression", "--file", "--line-length"}))
    scripts: list[str] = []
    in_place = False
    for name, value in parsed.options:
        if name in ("-e", "--expression") and value is not None:
            scripts.append(value)
        elif name in ("-f", "--file"):
            raise CommandRefused("sed -f (a script file) is not allowed; give the script as an argument")
        elif name == "-i" or name.startswith("--in-place"):
            in_place = True
    files = parsed.positionals
    if not scripts:
        if not files:
            raise CommandRefused("sed needs a script")
        scripts.append(files[0].text)
        files = files[1:]
    for script in scripts:
        check_sed_script(script)
    if in_place and not ctx.policy.allow_edits:
        raise CommandRefused("sed -i edits files; edits are not allowed in this session")
    for w in files:
        ctx.paths.check(w.text, "sed file", w.glob)
    if ctx.features.get("sed_sandbox", True):
        ctx.inserts.append((command.words[0].end, " --sandbox"))


_PROGRAM_RULES: dict[str, Any] = {
    **{p: _rule_files for p in _FILE_PROGRAMS},
    **{p: _rule_text for p in _TEXT_PROGRAMS},
    "date": _rule_date,
    "cd": _rule_cd,
    "grep": _rule_grep,
    "egrep": _rule_grep,
    "fgrep": _rule_grep,
    "rg": _rule_rg,
    "find": _rule_find,
    "tee": _rule_tee,
    **{p: _rule_write_program for p in WRITE_PROGRAMS},
    **{p: _rule_code for p in CODE_PROGRAMS},
}


def _program_name(text: str) -> str:
    return "python3" if re.fullmatch(r"python3(\.\d+)?", text) else text


def _check_redirects(command: SimpleCommand, ctx: _Context) -> None:
    for r in command.redirects:
        target = r.target
        if target.dollar:
            raise CommandRefused("redirections to expanded names are not allowed")
        if r.op in (">&", "<&") and (target.text.isdigit() or target.text == "-"):
            continue  # fd duplication or closing: 2>&1
        if r.op == "<":
            ctx.paths.check(target.text, "input file", target.glob)
            continue
        if target.text in DEV_FILES:
            continue
        if not ctx.policy.allow_edits:
            raise CommandRefused(
                f"the redirection {r.fd}{r.op} {target.text} writes a file; edits are not allowed in this "
                "session (output to /dev/null is fine)"
            )
        ctx.paths.check(target.text, "redirection target", target.glob)


def _check_simple(command: SimpleCommand, ctx: _Context, first_in_pipeline: bool) -> str | None:
    words = list(command.words)
    while words and re.match(r"[A-Za-z_]\w*=", ctx.source[words[0].start : words[0].end]):
        name = words[0].text.split("=", 1)[0]
        if not SAFE_ASSIGNMENTS.match(name):
            raise CommandRefused(
                f"setting {name} is not allowed (only locale, TZ and COLUMNS-style variables)"
            )
        words.pop(0)
    _check_redirects(command, ctx)
    if not words:
        return None
    head = words[0]
    if head.dollar:
        raise CommandRefused("a program name may not come from an expansion")
    if head.glob:
        raise CommandRefused("a program name may not contain glob characters")
    name = head.text
    if name in RESERVED_WORDS:
        raise CommandRefused(
            f"shell control structures ({name}) are not allowed; "
            "run simple commands joined with |, &&, || or ;"
        )
    if "/" in name:
        raise CommandRefused(f"programs must be called by name, not by path ({name})")
    prog = _program_name(name)
    known = prog in _PROGRAM_RULES or prog in ("sqlite3", "sed")
    if prog not in ctx.policy.programs or not known:
        allowed = ", ".join(sorted(ctx.policy.programs))
        raise CommandRefused(f"the program {name!r} is not allowed. Allowed programs: {allowed}")
    args = words[1:]
    if prog == "sqlite3":
        _rule_sqlite3(prog, args, ctx, command, first_in_pipeline)
    elif prog == "sed":
        _rule_sed(prog, args, ctx, command)
    else:
        _PROGRAM_RULES[prog](prog, args, ctx)
    return prog


def _check_all(commands: list[SimpleCommand], ctx: _Context, programs: list[str]) -> None:
    """Check each simple command with the folders the shell may be in when it runs.

    ``cd`` moves the shell for what follows it. After ``cd x && ...`` the rest of that ``&&`` chain
    runs in x; after ``;`` or ``||`` the shell may be in any folder seen so far (a cd may have
    failed), so paths must stay inside from all of them. A cd inside a pipeline runs in a subshell.
    """
    everywhere = {ctx.ws.real}
    current = {ctx.ws.real}
    after_success = current
    clean = True  # no || since the last ;
    for k, simple in enumerate(commands):
        in_pipeline = simple.joiner == "|" or (k + 1 < len(commands) and commands[k + 1].joiner == "|")
        if simple.joiner in ("", ";"):
            clean = True
        if simple.joiner == "||":
            clean = False
        if simple.joiner == "&&" and clean:
            current = after_success
        elif simple.joiner != "|":
            current = set(everywhere)
        ctx.paths.cwds = set(current)
        ctx.paths.after_cd = None
        prog = _check_simple(simple, ctx, simple.joiner != "|")
        if prog:
            programs.append(prog)
        after_success = current
        if ctx.paths.after_cd is not None and not in_pipeline:
            after_success = ctx.paths.after_cd
        everywhere |= after_success


@functools.lru_cache(maxsize=1)
def _features() -> dict[str, bool]:
    """Whether this machine's sqlite3 knows ``-safe`` and its sed ``--sandbox`` (probed once)."""

    def ok(argv: list[str], stdin: str = "") -> bool:
        try:
            proc = subprocess.run(argv, input=stdin.encode(), capture_output=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return False
        return proc.returncode == 0

    return {
        "sqlite_safe": ok(["sqlite3", "-safe", ":memory:", "SELECT 1"]),
        "sed_sandbox": ok(["sed", "--sandbox", "-n", "p"], "x\n"),
    }


def check_bash(
    command: str,
    workspace: Path | str | Workspace,
    policy: SandboxPolicy | None = None,
    *,
    os_sandboxed: bool | None = None,
) -> BashCheck:
    """Whether ``command`` may run under ``policy`` (never raises for any input string).

    ``os_sandboxed`` says whether the command will run inside the OS sandbox (it decides whether
    python3/awk are allowed); None probes this machine under the policy's ``os_sandbox`` setting.
    """
    policy = policy or SandboxPolicy()
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if not isinstance(command, str) or not command.strip():
        return BashCheck(False, "the command is empty")
    if "\0" in command:
        return BashCheck(False, "the command contains a NUL character")
    if os_sandboxed is None:
        os_sandboxed = policy.os_sandbox != "off" and os_sandbox_available()[0]
    ctx = _Context(ws, policy, _Paths(ws), os_sandboxed, source=command, features=_features())
    programs: list[str] = []
    try:
        commands = parse_bash(command)
        if not commands:
            return BashCheck(False, "the command is empty")
        _check_all(commands, ctx, programs)
    except CommandRefused as exc:
        return BashCheck(False, str(exc), programs=tuple(programs))
    except RecursionError:  # pragma: no cover - defensive
        return BashCheck(False, "the command is too complex")
    rewritten = command
    for pos, text in sorted(ctx.inserts, reverse=True):
        rewritten = rewritten[:pos] + text + rewritten[pos:]
    return BashCheck(True, "", rewritten, tuple(programs))


# =============================================================================================
# The OS sandbox

_ETC_FILES = (
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/alternatives",
    "/etc/magic",
    "/etc/magic.mime",
    "/etc/mime.types",
)

# Runs as PID 1 of the new namespaces: builds the root, then chroots and drops every capability.
_SETUP = r"""
set -u
die() { echo "sandbox setup failed: $*" >&2; exit 125; }
R=$1; WS=$2; RW=$3; LIMITS=$4; shift 4
ro() {
  $MOUNT -o remount,bind,ro,nosuid,nodev "$1" 2>/dev/null || $MOUNT -o remount,bind,ro "$1" || die "ro $1"
}
$MOUNT -t tmpfs -o mode=755,size=8m claude-rl-sandbox "$R" || die "tmpfs root"
mkdir -p "$R/dev" "$R/proc" "$R/tmp" || die "mkdir"
for n in null zero full random urandom; do
  [ -e "/dev/$n" ] || continue
  : > "$R/dev/$n" && $MOUNT --bind "/dev/$n" "$R/dev/$n" || die "/dev/$n"
done
$MOUNT -t proc -o nosuid,nodev,noexec proc "$R/proc" || die "proc"
$MOUNT -t tmpfs -o "mode=1777,size=${TMPSIZE}m,nosuid,nodev" tmp "$R/tmp" || die "tmp"
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  p=$1; shift
  if [ -L "$p" ] && [ "${p%/*}" = "" ]; then
    ln -s "$(readlink "$p")" "$R$p" || die "link $p"; continue
  fi
  if [ -d "$p" ]; then mkdir -p "$R$p" || die "mkdir $p"
  elif [ -e "$p" ]; then mkdir -p "$R${p%/*}" && : > "$R$p" || die "file $p"
  else continue; fi
  $MOUNT --bind "$p" "$R$p" || die "bind $p"
  ro "$R$p"
done
shift
mkdir -p "$R$WS" || die "mkdir workspace"
$MOUNT --bind "$WS" "$R$WS" || die "bind workspace"
[ "$RW" = 1 ] || ro "$R$WS"
$MOUNT -o remount,ro "$R" || die "read-only root"
exec $CHROOT "$R" $SETPRIV --bounding-set=-all --inh-caps=-all --ambient-caps=-all --no-new-privs -- \
  /bin/sh -c "$LIMITS"'; cd "$1" || exit 126; exec bash -c "$2"' sh "$WS" "$1"
"""


def _limits(policy: SandboxPolicy) -> str:
    parts = [f"ulimit -f {max(1, policy.max_file_mb) * 2048} 2>/dev/null"]
    if policy.memory_limit_mb:
        parts.append(f"ulimit -v {policy.memory_limit_mb * 1024} 2>/dev/null")
    return "; ".join(parts)


def _binds() -> list[str]:
    """Host paths bound read-only into the sandbox root (the top-level links are recreated)."""
    out: list[str] = []
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
        if os.path.lexists(top):
            out.append(top)
    out += [p for p in _ETC_FILES if os.path.exists(p)]
    for prefix in dict.fromkeys((sys.base_prefix, sys.prefix, sys.exec_prefix, sys.base_exec_prefix)):
        real = os.path.realpath(prefix)
        if not any(real == b or real.startswith(b.rstrip("/") + "/") for b in out if os.path.isdir(b)):
            out.append(real)
    return out


def _tools() -> dict[str, str] | None:
    found = {}
    for name in ("unshare", "mount", "chroot", "setpriv"):
        path = shutil.which(name) or next(
            (
                p
                for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}", f"/bin/{name}", f"/sbin/{name}")
                if os.path.exists(p)
            ),
            None,
        )
        if path is None:
            return None
        found[name] = path
    return found


def _sandbox_argv(ws_real: Path, root: str, command: str, policy: SandboxPolicy) -> list[str]:
    tools = _tools()
    assert tools is not None
    argv = [
        tools["unshare"],
        "--mount",
        "--net",
        "--pid",
        "--fork",
        "--kill-child",
        "--propagation",
        "private",
    ]
    if os.geteuid() != 0:
        argv.append("--map-root-user")
    setup = (
        f"MOUNT={shlex.quote(tools['mount'])}; CHROOT={shlex.quote(tools['chroot'])}; "
        f"SETPRIV={shlex.quote(tools['setpriv'])}; TMPSIZE={int(policy.tmp_size_mb)}\n" + _SETUP
    )
    rw = "1" if policy.allow_edits else "0"
    return [
        *argv,
        "--",
        "/bin/sh",
        "-c",
        setup,
        "sh",
        root,
        str(ws_real),
        rw,
        _limits(policy),
        *_binds(),
        "--",
        command,
    ]


@functools.lru_cache(maxsize=1)
def os_sandbox_available() -> tuple[bool, str]:
    """Whether commands can run in the OS sandbox here, and if not, why (probed once per process)."""
    if not sys.platform.startswith("linux"):
        return False, "not Linux"
    if _tools() is None:
        return False, "unshare, mount, chroot or setpriv is missing"
    probe_ws = Path(tempfile.mkdtemp(prefix="claude-rl-probe-"))
    root = tempfile.mkdtemp(prefix="claude-rl-root-")
    try:
        (probe_ws / "probe.txt").write_text("ok\n")
        argv = _sandbox_argv(probe_ws, root, "cat probe.txt && ! touch x 2>/dev/null", SandboxPolicy())
        proc = subprocess.run(argv, capture_output=True, timeout=20, env=bash_env(probe_ws), cwd=probe_ws)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"probe failed: {exc}"
    finally:
        shutil.rmtree(probe_ws, ignore_errors=True)
        try:
            os.rmdir(root)
        except OSError:
            pass
    if proc.returncode != 0 or proc.stdout.strip() != b"ok":
        detail = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        return False, detail[-1] if detail else f"probe exited {proc.returncode}"
    return True, "namespaces (mount, network, pid) + chroot + no capabilities"


# =============================================================================================
# Running a command


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


def _wait_group_gone(pgid: int, limit_s: float = 2.0) -> None:
    """Wait (briefly) until every process of a killed group has exited."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.01)


def _collect(
    proc: subprocess.Popen[bytes], limit_s: float, keep: int, kill_after: int
) -> tuple[bytes, bytes, int, str | None]:
    """Read the output as it comes: keep ``keep`` bytes of head and of tail, count the rest."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    head = bytearray()
    tail = bytearray()
    total = 0
    stop: str | None = None
    deadline = time.monotonic() + limit_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stop = "timeout"
            break
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.25))
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        total += len(chunk)
        if len(head) < keep:
            take = keep - len(head)
            head += chunk[:take]
            chunk = chunk[take:]
        if chunk:
            tail += chunk
            if len(tail) > keep:
                del tail[: len(tail) - keep]
        if total > kill_after:
            stop = "output"
            break
    if stop is None:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            stop = "timeout"
    if stop is not None:
        _kill_group(proc)
        proc.wait()
        _wait_group_gone(proc.pid)
    proc.stdout.close()
    return bytes(head), bytes(tail), total, stop


def _exit1_is_result(commands: list[str]) -> bool:
    return bool(commands) and commands[-1] in EXIT1_OK_PROGRAMS


def _refusal(message: str) -> ToolResult:
    text = f"<tool_use_error>Refused by the sandbox: {message}. Nothing was run.</tool_use_error>"
    return ToolResult(text, {"error": text, "is_interrupt": False, "sandbox_refused": True}, True)


def _run_bash(tool_input: dict[str, Any], ws: Workspace, policy: SandboxPolicy) -> ToolResult:
    command = tool_input.get("command")
    if not isinstance(command, str) or not command.strip():
        text = "<tool_use_error>InputValidationError: the required parameter `command` is missing"
        text += "</tool_use_error>"
        return ToolResult(text, {"error": text, "is_interrupt": False}, True)
    use_os = False
    if policy.os_sandbox != "off":
        use_os, why = os_sandbox_available()
        if not use_os and policy.os_sandbox == "require":
            return _refusal(f"the OS sandbox is required but not available here ({why})")
    verdict = check_bash(command, ws, policy, os_sandboxed=use_os)
    if not verdict.allowed:
        return _refusal(verdict.reason)
    limit = policy.timeout_s
    asked = tool_input.get("timeout")
    if isinstance(asked, int | float) and not isinstance(asked, bool) and asked > 0:
        limit = min(asked / 1000, policy.max_timeout_s)
    real_command = verdict.command
    if ws.virtual != "/":
        real_command = real_command.replace(ws.virtual, str(ws.real))
    root = tempfile.mkdtemp(prefix="claude-rl-root-") if use_os else None
    if root is not None:
        argv = _sandbox_argv(ws.real, root, real_command, policy)
    else:
        argv = ["/bin/sh", "-c", _limits(policy) + '; exec bash -c "$1"', "sh", real_command]
    try:
        proc = subprocess.Popen(
            argv,
            cwd=ws.real,
            env={**bash_env(ws.real), "TMPDIR": "/tmp"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        keep = max(policy.max_output_chars // 2, 1)
        head, tail, total, stop = _collect(proc, limit, keep, policy.kill_after_output_bytes)
    finally:
        if root is not None:
            try:
                os.rmdir(root)
            except OSError:
                pass
    out = _output_text(head, tail, total, ws)
    code = proc.returncode
    if stop == "timeout":
        text = f"Command timed out after {limit:g}s and was killed (sandbox time limit)" + (
            f"\n{out}" if out else ""
        )
        return ToolResult(text, {"error": text, "is_interrupt": False}, True)
    if stop == "output":
        text = (
            f"Command stopped: it wrote more than {policy.kill_after_output_bytes} bytes of output "
            "(sandbox output limit)" + (f"\n{out}" if out else "")
        )
        return ToolResult(text, {"error": text, "is_interrupt": False}, True)
    if code == 125 and out.startswith("sandbox setup failed"):
        text = f"<tool_use_error>The sandbox could not start: {out}</tool_use_error>"
        return ToolResult(text, {"error": text, "is_interrupt": False}, True)
    if code is not None and code < 0:
        code = 128 - code
    if code == 0 or (code == 1 and _exit1_is_result(list(verdict.programs))):
        raw = {"stdout": out, "stderr": "", "interrupted": False, "isImage": False}
        return ToolResult(model_text("Bash", raw), raw)
    text = f"Exit code {code}" + (f"\n{out}" if out else "")
    return ToolResult(text, {"error": text, "is_interrupt": False}, True)


def _output_text(head: bytes, tail: bytes, total: int, ws: Workspace) -> str:
    if total <= len(head) + len(tail):
        return ws.hide_real_paths((head + tail).decode("utf-8", errors="replace")).rstrip("\n")
    cut = total - len(head) - len(tail)
    first = ws.hide_real_paths(head.decode("utf-8", errors="replace"))
    last = ws.hide_real_paths(tail.decode("utf-8", errors="replace")).rstrip("\n")
    return f"{first}\n[... {cut} bytes of output cut here ...]\n{last}"


# =============================================================================================
# Entry point


def _escaping_symlink(top: Path, ws: Workspace) -> Path | None:
    if top.is_file() or not top.is_dir():
        return None
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                real = Path(os.path.realpath(path))
                if real != ws.real and ws.real not in real.parents:
                    return path
    return None


def run_sandboxed(
    name: str,
    tool_input: dict[str, Any],
    workspace: Path | str | Workspace,
    policy: SandboxPolicy | None = None,
    *,
    virtual_root: str = VIRTUAL_ROOT,
) -> ToolResult:
    """``run_tool`` behind ``policy``: refusals and limits as described in the module docstring."""
    policy = policy or SandboxPolicy()
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace, virtual_root)
    if not isinstance(tool_input, dict):
        return run_tool(name, tool_input, ws)
    if name in EDIT_TOOLS and not policy.allow_edits:
        return _refusal(
            f"{name} changes files and edits are not allowed in this session (read-only). "
            "Use Read, Grep, Glob or read-only Bash commands"
        )
    if name == "Bash":
        return _run_bash(tool_input, ws, policy)
    if name == "Grep":
        try:
            top = ws.to_real(tool_input.get("path") or ws.virtual, key="path")
        except Exception:  # the tool reports a bad path itself
            top = None
        link = _escaping_symlink(top, ws) if top is not None else None
        if link is not None:
            return _refusal(
                f"the search would follow the symlink {ws.virtual_path(link)}, "
                "which points out of the workspace"
            )
    return run_tool(name, tool_input, ws)
