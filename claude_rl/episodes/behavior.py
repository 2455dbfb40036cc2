"""Behavior extractor (the seed's "reasoning extractor"): what Claude did in one episode, as data.

``extract_behavior(episode)`` returns a JSON-serializable dict, stored in ``Episode.behavior``.
It is deterministic (same episode → equal dict, in the same key and list order, whatever the hash
seed: nothing is ordered by iterating a set), uses only the standard library and
``claude_rl.schema``, runs in time linear in the episode's size, and never invents text: a step's
``reason`` is the text Claude wrote before the call, or ``None`` when it wrote none.

Keys (``BEHAVIOR_VERSION`` 1):

- ``category``, ``category_evidence`` (the matched phrase, lowercased, or ``"tools"``),
  ``category_rule`` (``"lead_verb"``, ``"phrase"`` or ``"tools"``): see ``classify_task``.
- ``tool_sequence``, ``tool_counts`` (by first appearance), ``calls``.
- ``reasoning_chain``: per call ``step`` (position in ``episode.steps``; equals ``Step.index`` in a
  well-formed episode), ``tool``, ``reason``, ``stated``, ``summary`` (one-line target of the call:
  file path, pattern, command's first 120 characters, description...), ``outcome``
  (ok/error/empty/denied/cancelled/interrupted/unanswered), ``parallel_group``,
  ``shared_reason_step`` (for an unstated call issued in the same assistant message as an earlier
  stated one: that step, whose text covers the whole message; the reason itself is not copied),
  ``has_thinking``.
- ``stated_reasons``, ``unstated_reasons``.
- ``exploration_depth``: calls before the first one that changes something (all calls when none
  does); ``first_change_step``, ``first_change_kind``, ``change_steps``. See ``change_kind``.
- ``self_corrections``: ``{"failed_step", "retry_step", "kind": "error"|"empty", "tool", "retry_tool",
  "changed"}``: a call that errored or came back empty (no match, no file, 0 rows, no output from a
  lookup command), followed by the next call of the same family (same tool; Grep↔Glob) issued in
  a later assistant message, with a different input (``changed``: the input keys that differ;
  ``description`` is a label and is ignored). ``repeated_identical`` counts identical retries with
  no change in between, ``reruns_after_change`` identical ones after a change (fix, then run the
  same command again). ``errors_not_retried`` / ``empty_not_retried``: failed calls with no later
  call of the family whose input differs. ``errors``, ``empty_results``: counts. A call the user or
  a permission rule refused (``denied``) or that Claude Code cancelled because a sibling failed
  (``cancelled``) is not a failure of Claude's approach: counted apart, never a correction.
- ``parallel_groups`` (assistant messages that issued ≥ 2 calls), ``parallel_calls`` (calls in
  them), ``parallel_steps`` (their steps, per group, in order of appearance).
- ``constraints``: ``{"kind", "text", "object", "source", "where"}`` found by patterns in the prompt
  (``source="user"``, ``where="prompt"``) and in the stated reasons (``"step N"``) and final answer
  (``"final_answer"``) (``source="assistant"``). Kinds: read_only ("read-only", "don't change
  anything"), do_not_modify ("don't modify X", "leave X alone"; ``object`` X), use ("use X", "via
  X", "prefer X", "with `X`"), avoid ("avoid X", "without X", "don't use X", "instead of X"), scope
  ("only in X", "just the X", "focus on X"), format ("as a table", "in JSON", "briefly", "one
  sentence"). ``text`` is the phrase as written. Deduplicated case-insensitively per source. See
  ``_scan_constraints`` for what counts in Claude's own text.
- ``answer_shape``: markdown shape of the final answer (table, headings, list items, code blocks,
  size); all zeros when there is no answer.
- ``subagents``: ``{"count", "agents": [{"step", "agent_type", "description", "tool_sequence",
  "changes"}]}`` for calls that started a subagent.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from claude_rl.schema import MUTATING_TOOLS, Episode, ToolCall, normalize_tool_name

BEHAVIOR_VERSION = 1

CATEGORIES = ("compare", "lookup", "code_search", "explain", "edit", "debug", "run_test", "plan", "other")

SUMMARY_CHARS = 120
# The category is read from the first this many characters of the prompt (fenced code removed).
CATEGORY_CHARS = 4_000
# Texts longer than this are scanned for constraints only up to here (pasted logs, huge answers).
SCAN_CHARS = 20_000
_MAX_NESTING = 8

# =============================================================================================
# Task category

# Politeness and filler at the start of a prompt, skipped before looking for the lead verb.
_LEAD_FILLER = re.compile(
    r"^(?:(?:please|pls|hey|hi|hello|ok(?:ay)?|so|now|then|also|claude|quickly|first|next|"
    r"can you|could you|would you|will you|can we|could we|i want you to|i need you to|"
    r"i['’]?d like you to|i would like you to|help me(?: to)?|let['’]?s|let us|go ahead and|"
    r"try to|you should|we need to|i need to|i want to)\b[\s,:;!.-]*)+",
    re.I,
)
# First word of the prompt (after filler) → category. Only verbs that rarely start another kind
# of request; "find" and "show" are left to the phrase rules.
_LEAD_VERBS = {
    "compare": "compare",
    "contrast": "compare",
    "diff": "compare",
    "explain": "explain",
    "describe": "explain",
    "summarize": "explain",
    "summarise": "explain",
    "walk": "explain",
    "fix": "debug",
    "debug": "debug",
    "diagnose": "debug",
    "troubleshoot": "debug",
    "plan": "plan",
    "design": "plan",
    "propose": "plan",
    "outline": "plan",
    "brainstorm": "plan",
    "architect": "plan",
    "locate": "code_search",
    "grep": "code_search",
    "search": "code_search",
    "query": "lookup",
    "count": "lookup",
    "lookup": "lookup",
    "add": "edit",
    "implement": "edit",
    "refactor": "edit",
    "rename": "edit",
    "change": "edit",
    "update": "edit",
    "modify": "edit",
    "edit": "edit",
    "remove": "edit",
    "delete": "edit",
    "create": "edit",
    "write": "edit",
    "move": "edit",
    "replace": "edit",
    "convert": "edit",
    "migrate": "edit",
    "port": "edit",
    "rewrite": "edit",
    "introduce": "edit",
    "extract": "edit",
    "bump": "edit",
    "upgrade": "edit",
    "run": "run_test",
    "start": "run_test",
    "launch": "run_test",
    "test": "run_test",
    "build": "run_test",
    "execute": "run_test",
    "compile": "run_test",
    "lint": "run_test",
    "benchmark": "run_test",
    "report": "run_test",
}
# A lead word followed by one of these is a noun subject ("Build fails ...", "Test is slow").
_NOT_A_VERB_AFTER = frozenset(
    "is are was were fails failed failing doesn't doesnt does has have seems broke breaks broken keeps "
    "takes should can will won't".split()
)

# Phrase rules, tried category by category in this order; the first category with a match that
# is not negated ("don't change anything") wins.
_PHRASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "compare",
        (
            r"\bdifferen(?:ce|ces|t)\s+between\b",
            r"\bcompar(?:e|es|ed|ing|ison|isons)\b",
            r"\s(?:vs\.?|versus)\s",
            r"\bdiffer(?:s|ed)?\s+from\b",
            r"\bhow\s+do(?:es)?\b.{1,80}?\bdiffer\b",
            r"\bwhich\s+(?:one\s+)?is\s+(?:better|faster|bigger|larger|smaller|newer|older)\b",
            r"\bpros\s+and\s+cons\b",
            r"\bcontrast\b",
        ),
    ),
    (
        "explain",
        (
            r"\bexplain",
            r"\bhow\s+does\b",
            r"\bhow\s+do\b.{1,80}?\bwork\b",
            r"\bhow\s+is\b.{1,80}?\b(?:used|implemented|computed|calculated|handled|structured|built)\b",
            r"\bwhat\s+does\b.{1,80}?\b(?:do|mean)\b",
            r"\bwhat(?:['’]s|\s+is)\s+the\s+(?:purpose|point|role|meaning)\b",
            r"\bwalk\s+me\s+through\b",
            r"\bdescribe\b",
            r"\b(?:help\s+me\s+|i\s+(?:need|want)\s+to\s+)understand\b",
            r"\bwhat\s+happens\s+when\b",
            r"\bsummar(?:y|ize|ise)\b",
        ),
    ),
    (
        "debug",
        (
            r"\bfix(?:es|ed|ing)?\b",
            r"\bbugs?\b",
            r"\berrors?\b",
            r"\bfail(?:s|ed|ing|ure|ures)?\b",
            r"\btraceback\b",
            r"\bstack\s*trace\b",
            r"\bexceptions?\b",
            r"\bcrash(?:es|ed|ing)?\b",
            r"\bbroken\b",
            r"\b(?:does(?:n['’]?t|nt|\s+not)|won['’]?t|can['’]?t)\s+(?:seem\s+to\s+)?(?:work|start|run|load|"
            r"compile|build|open|connect|render)\b",
            r"\bnot\s+working\b",
            r"\bdebug",
            r"\bregression\b",
        ),
    ),
    (
        "plan",
        (
            r"\bplan(?:s|ning)?\b",
            r"\bdesign\b",
            r"\bapproach\b",
            r"\barchitect",
            r"\bstrategy\b",
            r"\bhow\s+(?:should|would|could|can)\s+(?:we|i)\b",
            r"\bpropos(?:e|al)\b",
            r"\broadmap\b",
            r"\bbest\s+way\s+to\b",
        ),
    ),
    (
        "code_search",
        (
            r"\bwhere\s+(?:is|are|do|does|did|can)\b",
            r"\bwhere['’]s\b",
            r"\bfind\b(?!\s+out\b)",
            r"\bwhich\s+(?:file|files|module|modules|function|functions|class|classes|directory|"
            r"folder|line|lines|method|methods|component|components)\b",
            r"\blocate\b",
            r"\bsearch\b",
            r"\bgrep\b",
            r"\bdefined\b",
            r"\b(?:usages?|callers)\s+of\b",
            r"\bwho\s+calls\b",
        ),
    ),
    (
        "lookup",
        (
            r"\bhow\s+(?:many|much)\b",
            r"\bwhat(?:['’]s|\s+is|\s+are|\s+was|\s+were)\s+the\s+(?:value|values|count|number|total|sum|"
            r"average|mean|max|maximum|min|minimum|current|latest|status|state|rating)\b",
            r"\bvalues?\s+of\b",
            r"\bquery\b",
            r"\blook\s*up\b",
            r"\b(?:from|in)\s+the\s+(?:database|db|table)\b",
            r"\bdatabase\b",
            r"\bsql\b",
            r"\bshow\s+me\b.{1,80}?\b(?:rows|records|entries|table|db)\b",
        ),
    ),
    (
        "edit",
        (
            r"\badd(?:s|ed|ing)?\b",
            r"\bimplement",
            r"\brefactor",
            r"\brenam(?:e|ing)\b",
            r"\bchange\b",
            r"\bupdate\b",
            r"\bmodify\b",
            r"\bedit\b",
            r"\bremove\b",
            r"\bdelete\b",
            r"\bcreate\b",
            r"\bwrite\b",
            r"\bmove\b",
            r"\breplace\b",
            r"\bconvert\b",
            r"\bmigrate\b",
            r"\brewrite\b",
            r"\bclean\s+up\b",
            r"\bsupport\s+for\b",
        ),
    ),
    (
        "run_test",
        (
            r"\brun(?:s|ning)?\b",
            r"\btest(?:s|ing)?\b",
            r"\bbuild(?:s)?\b",
            r"\breport\b",
            r"\bexecute\b",
            r"\bcompile\b",
            r"\blint\b",
            r"\bpytest\b",
            r"\bbenchmark\b",
        ),
    ),
)
_SENTENCE_END = re.compile(r"[.?!](?:\s|$)|\n")
_PHRASE_RES = tuple((cat, tuple(re.compile(p, re.I) for p in pats)) for cat, pats in _PHRASES)
# A keyword is negated when one of these words stands in the three words before it, in its clause.
_NEG_WORDS = frozenset(
    "don't dont didn't didnt doesn't doesnt haven't hasn't never not no without won't wont can't cannot "
    "mustn't shouldn't avoid nor".split()
)

_READ_TOOLS = frozenset({"Read", "Grep", "Glob", "LS", "NotebookRead"})
_WEB_TOOLS = frozenset({"WebSearch", "WebFetch"})
_TEST_COMMAND = re.compile(
    r"\b(?:pytest|py\.test|tox|nox|nosetests|jest|vitest|mocha|karma|phpunit|rspec|ctest|"
    r"(?:npm|yarn|pnpm|bun)\s+(?:run\s+)?(?:test|build|lint|check|typecheck|ci)|"
    r"cargo\s+(?:test|build|check|clippy|bench)|go\s+(?:test|build|vet)|make|cmake|ninja|gradlew?|mvn|"
    r"dotnet\s+(?:test|build)|mypy|ruff|flake8|pylint|eslint|tsc|pyright|bazel|"
    r"swift\s+(?:test|build)|python3?\s+-m\s+(?:pytest|unittest|build|mypy|compileall))\b",
    re.I,
)


def classify_task(prompt: str, tool_names: list[str], commands: list[str] | None = None) -> str:
    """Task category of an episode, one of ``CATEGORIES``. Rules, in order:

    1. Lead verb: the first word of the prompt, after filler ("please", "can you", "let's"...),
       when it is an unambiguous request verb: compare/contrast/diff → compare; explain/describe/
       summarize/walk → explain; fix/debug/diagnose → debug; plan/design/propose/outline → plan;
       locate/grep/search → code_search; query/count/lookup → lookup; add/implement/refactor/
       rename/change/update/remove/create/write/... → edit; run/test/build/execute/compile/lint/
       report/start → run_test. Not when the next word makes it a noun ("Build fails ...").
    2. Phrases, first in the prompt's first sentence, then in the whole prompt (its first
       ``CATEGORY_CHARS`` characters, fenced code removed), category by category in this order:
       compare ("difference between", "compare", " vs ", "differ from"), explain ("explain",
       "how does", "what does ... do", "walk me through"), debug ("fix", "bug", "error", "fails",
       "traceback", "exception", "crash"), plan ("plan", "design", "approach", "how should we"),
       code_search ("where is", "find", "which file", "search", "defined"), lookup ("how many",
       "what is the value", "query", "from the database", "sql"), edit ("add", "implement",
       "refactor", "rename", "change", "update", "remove"), run_test ("run", "test", "build",
       "report", "compile"). The first category with a match wins. A phrase negated in its clause
       ("don't change anything", "no need to run tests") does not count.
    3. Tools (``tool_names``; Bash ``commands`` when given): an editing tool (MUTATING_TOOLS) →
       edit; ExitPlanMode → plan; Bash whose every command is a test/build/lint command → run_test
       (with no commands given: Bash alone → run_test); a SQL client in a Bash command → lookup;
       only web tools → lookup; only reads and searches (Read/Grep/Glob/LS, and Bash commands
       that only read) → code_search; otherwise (or no tools) other.
    """
    return _classify(prompt, tool_names, commands)[0]


def _classify(prompt: Any, tool_names: list[str], commands: list[str] | None) -> tuple[str, str, str]:
    """(category, evidence, rule): see ``classify_task``."""
    text = prompt if isinstance(prompt, str) else ""
    text = _FENCED.sub("\n", text[:SCAN_CHARS])[:CATEGORY_CHARS]
    lead = _lead_verb(text)
    if lead is not None:
        return _LEAD_VERBS[lead], lead, "lead_verb"
    end = _SENTENCE_END.search(text)
    first = text[: end.start()] if end is not None else text
    for part in (first, text) if len(first) < len(text) else (text,):
        for category, patterns in _PHRASE_RES:
            for pattern in patterns:
                for m in pattern.finditer(part):
                    if not _negated(part, m.start()):
                        return category, " ".join(m.group(0).lower().split()), "phrase"
    return _classify_by_tools([normalize_tool_name(n) for n in tool_names], commands), "tools", "tools"


def _lead_verb(text: str) -> str | None:
    rest = text.lstrip(" \t\r\n\"'`*>#-:([")
    rest = _LEAD_FILLER.sub("", rest, count=1)
    words = re.findall(r"[A-Za-z][A-Za-z'’]*", rest[:80])
    if not words:
        return None
    first = words[0].lower()
    if first not in _LEAD_VERBS:
        return None
    if not rest.lower().startswith(first):  # something other than a word came first
        return None
    if rest[len(first) : len(first) + 1] == ":":  # "Update: the build fails" is a noun
        return None
    if len(words) > 1 and words[1].lower().replace("’", "'") in _NOT_A_VERB_AFTER:
        return None
    if first == "walk" and not re.match(r"walk\s+(?:me\s+|us\s+)?through\b", rest, re.I):
        return None
    return first


_CLAUSE_BOUNDARY = re.compile(r"[;!?\n,:]|\.(?=\s)")


def _clause_words_before(text: str, pos: int, n: int) -> list[str]:
    """The last ``n`` words before ``pos`` within the same clause, lowercased."""
    prefix = text[max(0, pos - 120) : pos]
    cut = -1
    for m in _CLAUSE_BOUNDARY.finditer(prefix):
        cut = m.end()
    if cut >= 0:
        prefix = prefix[cut:]
    words = [w.strip("\"'`()[]*").lower().replace("’", "'") for w in prefix.split()]
    return [w for w in words if w][-n:]


def _negated(text: str, pos: int) -> bool:
    return any(w in _NEG_WORDS for w in _clause_words_before(text, pos, 3))


def _classify_by_tools(names: list[str], commands: list[str] | None) -> str:
    if not names:
        return "other"
    if any(n in MUTATING_TOOLS for n in names):
        return "edit"
    if "ExitPlanMode" in names:
        return "plan"
    has_bash = "Bash" in names
    if has_bash and commands is None:
        if all(n == "Bash" for n in names):
            return "run_test"
    elif has_bash and commands is not None:
        cmds = [c for c in commands if isinstance(c, str) and c.strip()]
        if cmds and all(_TEST_COMMAND.search(c) for c in cmds):
            return "run_test"
        if any(_SQL_CLIENT.search(c) for c in cmds):
            return "lookup"
    if all(n in _WEB_TOOLS for n in names):
        return "lookup"
    reads_only = all(
        n in _READ_TOOLS or (n == "Bash" and commands is not None) or n == "TodoWrite" for n in names
    )
    if reads_only and any(n in _READ_TOOLS or n == "Bash" for n in names):
        bash_ok = commands is None or all(
            _QUERY_PROGRAM.search(_strip_shell_text(c)) and not _bash_change(c)
            for c in commands
            if isinstance(c, str) and c.strip()
        )
        if bash_ok:
            return "code_search"
    return "other"


# =============================================================================================
# What changes something

_QUOTED = re.compile(r"'[^'\n]*'|\"(?:\\.|[^\"\\])*\"")
_HEREDOC = re.compile(r"(?<!<)<<(?!<)-?\s*(['\"]?)([A-Za-z_][\w-]*)\1[^\n]*\n")
# Command position: start of the command line, after ; & | ( $( ` { or a wrapper (sudo, xargs, -exec).
_CMD_POS = (
    r"(?:^|[;&|(\n`{]|\$\(|\bthen\s|\bdo\s|\belse\s|\bsudo\s|\bxargs(?:\s+-\S+)*\s|-exec\s|\btime\s|"
    r"\bnohup\s|\benv\s)\s*(?:[A-Za-z_]\w*=\S*\s+)*"
)
_WRITE_PROGRAM = re.compile(
    _CMD_POS + r"(?:rm|rmdir|mv|cp|mkdir|touch|ln|chmod|chown|chgrp|tee|dd|truncate|shred|unlink|install|"
    r"patch|rsync|scp|wget|black|isort)\b",
    re.M,
)
_WRITE_PATTERNS = re.compile(
    r"|".join(
        (
            r"\bsed\b[^;&|\n]*\s(?:-[a-zA-Z]*i|--in-place)",
            r"\bperl\b[^;&|\n]*\s-[a-zA-Z]*i",
            r"\bgit\s+(?:-[Cc]\s+\S+\s+|--\S+\s+)*(?:(?:commit|push|add|rm|mv|checkout|switch|reset|rebase|merge|"
            r"cherry-pick|revert|stash(?!\s+(?:list|show)\b)|apply|am|clean|restore|pull|init|clone)(?![\w-])|"
            r"tag\s+(?!-l\b|--list\b|-n\b)\S)",
            r"\b(?:pip3?|python3?\s+-m\s+pip|uv\s+pip)\s+(?:install|uninstall)\b",
            r"\buv\s+(?:add|remove|sync|lock|init|tool\s+(?:install|upgrade|uninstall))\b",
            r"\bpipx\s+(?:install|uninstall|upgrade|inject)\b",
            r"\b(?:npx|pnpm\s+dlx|yarn|bunx|npm\s+exec)\s+create[-\w]*|\b(?:npm|pnpm|yarn|bun)\s+(?:init|create)\b",
            r"\b(?:just|make|mise\s+run|task|(?:npm|pnpm|yarn|bun)\s+(?:run\s+)?)\s*(?:format|fmt|fix)\b",
            r"\bpoetry\s+(?:add|remove|install|update|lock)\b",
            r"\b(?:npm|pnpm|bun)\s+(?:install|i|ci|uninstall|remove|rm|update|add|link|publish)\b",
            r"\byarn\s+(?:add|install|remove|upgrade)\b",
            r"\bcargo\s+(?:install|add|remove|new|init|fmt)\b",
            r"\bgo\s+(?:install|get|mod\s+tidy)\b",
            r"\b(?:apt(?:-get)?|dnf|yum|apk|brew|pacman|conda|mamba|gem)\s+(?:install|remove|uninstall|purge|"
            r"upgrade|add)\b",
            r"\bmake\s+install\b",
            r"\b(?:docker|podman)\s+(?:rm|rmi|build|push|commit|tag)\b",
            r"\bkubectl\s+(?:apply|delete|create|patch|replace|scale)\b",
            r"\bterraform\s+(?:apply|destroy|import)\b",
            r"\bruff\s+format\b(?![^;&|\n]*--(?:check|diff))",
            r"\bgofmt\s+-w\b",
            r"--write\b|--fix\b",
            r"\bfind\b[^;&|\n]*\s-delete\b",
            r"\bcurl\b[^;&|\n]*\s(?:-o|-O|--output|--remote-name)\b",
        )
    )
)
_REDIRECT = re.compile(r"(?<![<>=\-])(?:\d+|&)?(?:>>?|>\|)(?![>=&])\s*([^\s;&|()<>]+)")
_HARMLESS_TARGETS = ("/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty")
_SQL_CLIENT = re.compile(
    r"\b(?:sqlite3?|psql|mysql|mariadb|duckdb|sqlcmd|clickhouse(?:-client)?|snowsql|cqlsh|trino|presto|"
    r"bq\s+query)\b|\.execute(?:many|script)?\s*\(",
    re.I,
)
_SQL_WRITE = re.compile(
    r"\b(?:insert\s+(?:or\s+\w+\s+)?into|update\s+[\w.\"`\[\]]+\s+set|delete\s+from|"
    r"create\s+(?:or\s+replace\s+)?(?:temp(?:orary)?\s+)?(?:unique\s+)?(?:table|index|view|database|schema|"
    r"trigger|extension|function|procedure|sequence|type)|"
    r"drop\s+(?:table|index|view|database|schema|trigger|column|function|procedure|sequence|type|extension)|"
    r"alter\s+(?:table|database|index|view|schema)|truncate\s+(?:table\s+)?\w|replace\s+into|merge\s+into|"
    r"grant\s|revoke\s|vacuum\b|attach\s+database)",
    re.I,
)
_MCP_WRITE_ACTION = re.compile(
    r"(?:^|_)(?:write|create|update|delete|insert|drop|remove|set|put|post|edit|modify|move|rename|upload|"
    r"commit|push|merge|execute)(?:_|$)",
    re.I,
)
_QUERY_PROGRAM = re.compile(
    _CMD_POS + r"(?:grep|egrep|fgrep|rg|ag|ack|find|fd|ls|tree|locate|which|whereis|type|cat|head|tail|"
    r"less|wc|jq|yq|awk|sqlite3?|psql|mysql|duckdb|git\s+(?:log|grep|ls-files|show|diff|status|branch)|"
    r"file|stat|du|pwd)\b",
    re.M,
)


def _strip_heredocs(cmd: str) -> str:
    """Drop heredoc bodies (``<<EOF ... EOF``), keeping the line that opens each."""
    out: list[str] = []
    pos = 0
    while True:
        m = _HEREDOC.search(cmd, pos)
        if m is None:
            out.append(cmd[pos:])
            return "".join(out)
        out.append(cmd[pos : m.end()])
        end = re.compile(r"^[ \t]*" + re.escape(m.group(2)) + r"[ \t]*$", re.M).search(cmd, m.end())
        if end is None:
            return "".join(out)
        pos = end.end()


@lru_cache(maxsize=4096)
def _strip_shell_text(cmd: str) -> str:
    """The command with heredoc bodies and quoted strings removed: what the shell itself acts on."""
    return _QUOTED.sub("''", _strip_heredocs(cmd))


@lru_cache(maxsize=4096)
def _bash_change(command: str) -> str | None:
    """'sql' or 'shell' when the Bash command changes something, else None."""
    if _SQL_CLIENT.search(command) and _SQL_WRITE.search(command):
        return "sql"
    shell = _strip_shell_text(command)
    for m in _REDIRECT.finditer(shell):
        target = m.group(1)
        if not target.startswith(_HARMLESS_TARGETS) and not target.startswith("/dev/fd/"):
            return "shell"
    if _WRITE_PROGRAM.search(shell) or _WRITE_PATTERNS.search(shell):
        return "shell"
    return None


def change_kind(call: ToolCall, _depth: int = 0) -> str | None:
    """How a call changes something outside the conversation, or None when it only reads.

    ``"edit"``: an editing tool (``MUTATING_TOOLS``). ``"shell"``: a Bash command that writes: an
    output redirection (``>``, ``>>``; not to /dev/null, ``2>&1`` and quoted text don't count),
    rm/mv/cp/mkdir/touch/tee/..., ``sed -i``, git commit/push/add/checkout/..., package installs,
    formatters that rewrite files. ``"sql"``: a SQL client (sqlite3, psql, mysql, ``.execute(``) with
    INSERT/UPDATE ... SET/DELETE FROM/CREATE/DROP/ALTER/...; a pure SELECT is not a change.
    ``"mcp"``: an MCP tool whose action names a write (``mcp__db__insert_row``), or whose
    ``sql``/``query`` input is a SQL write. ``"subagent"``: a subagent that changed something.
    """
    name = normalize_tool_name(call.name)
    if name in MUTATING_TOOLS:
        return "edit"
    inputs = call.input if isinstance(call.input, dict) else {}
    if name == "Bash":
        command = inputs.get("command")
        if isinstance(command, str):
            return _bash_change(command)
        return None
    if name.startswith("mcp__"):
        if _MCP_WRITE_ACTION.search(name.rsplit("__", 1)[-1]):
            return "mcp"
        for key in ("sql", "query", "statement"):
            value = inputs.get(key)
            if isinstance(value, str) and _SQL_WRITE.search(value):
                return "mcp"
    if call.subagent is not None and _depth < _MAX_NESTING:
        for step in call.subagent.steps:
            if change_kind(step.call, _depth + 1) is not None:
                return "subagent"
    return None


# =============================================================================================
# Outcomes

_EMPTY_OUTPUT = re.compile(
    r"^(?:no\s+(?:matches|files|results|output|content|rows|records|entries)(?:\s+found)?|"
    r"found\s+0\s+(?:files?|matches|results|total\s+occurrences)\b.*|\(?0\s+rows?(?:\s+returned)?\)?|"
    r"\((?:no\s+content|no\s+output|empty)\)|tool\s+ran\s+without\s+output(?:\s+or\s+errors)?|\[\]|\{\})\.?$",
    re.I | re.S,
)
_ZERO_ROWS_LAST_LINE = re.compile(r"^\(?0\s+rows?\)?$", re.I)
_EXIT_CODE = re.compile(r"^Exit code [1-9]\d*\b")
_EMPTY_CHECKED_TOOLS = frozenset({"Grep", "Glob", "LS", "WebSearch", "NotebookRead"})
# Error results that are not a failure of the call itself: the user or a permission rule refused
# it, or Claude Code cancelled it because a sibling in the same message failed.
_DENIED = re.compile(
    r"^(?:<tool_use_error>)?\s*(?:The user doesn['’]t want to (?:proceed|take this action)|"
    r"Claude requested permissions? to|This command requires approval|"
    r"Permission to use \S+ (?:has been|was) denied|"
    r"This Bash command contains multiple operations\. The following|"
    r"[^\n]{0,200}? was blocked\. For security)",
    re.I,
)
_CANCELLED = re.compile(r"^(?:<tool_use_error>)?\s*Sibling tool call errored", re.I)


def _is_error(call: ToolCall) -> bool:
    if call.is_error or call.status == "error":
        return True
    output = call.output
    if isinstance(output, str):
        head = output.lstrip()[:200]
        return head.startswith("<tool_use_error>") or bool(_EXIT_CODE.match(head))
    return False


def _is_empty_result(name: str, call: ToolCall) -> bool:
    """The call succeeded but found nothing (no match, no file, no row, no output from a query)."""
    output = call.output
    if call.status != "ok" or not isinstance(output, str):
        return False
    if name != "Bash" and name not in _EMPTY_CHECKED_TOOLS and not name.startswith("mcp__"):
        return False
    text = output.strip()
    found_nothing = (
        not text
        or (len(text) <= 200 and _EMPTY_OUTPUT.match(text) is not None)
        or _ZERO_ROWS_LAST_LINE.match(text[text.rfind("\n") + 1 :].strip()) is not None
    )
    if not found_nothing or name != "Bash":
        return found_nothing
    # Bash: only a command that looks something up counts ("mkdir out" prints nothing too).
    command = call.input.get("command") if isinstance(call.input, dict) else None
    if not isinstance(command, str) or _bash_change(command):
        return False
    return bool(_QUERY_PROGRAM.search(_strip_shell_text(command)) or _SQL_CLIENT.search(command))


def _outcome(name: str, call: ToolCall) -> str:
    """ok, error, empty, denied (refused by the user or a permission rule), cancelled (a sibling
    call in the same message failed), interrupted or unanswered."""
    if call.status in ("interrupted", "unanswered"):
        return call.status
    if _is_error(call):
        head = call.output.lstrip()[:300] if isinstance(call.output, str) else ""
        if _CANCELLED.match(head):
            return "cancelled"
        if _DENIED.match(head):
            return "denied"
        return "error"
    if _is_empty_result(name, call):
        return "empty"
    return "ok"


# =============================================================================================
# Reasoning chain

_SUMMARY_KEYS = {
    "Read": ("file_path", "path"),
    "Edit": ("file_path", "path"),
    "MultiEdit": ("file_path", "path"),
    "Write": ("file_path", "path"),
    "NotebookEdit": ("notebook_path", "file_path"),
    "NotebookRead": ("notebook_path", "file_path"),
    "Grep": ("pattern",),
    "Glob": ("pattern",),
    "LS": ("path",),
    "Bash": ("command",),
    "Agent": ("description", "prompt", "subagent_type"),
    "WebFetch": ("url",),
    "WebSearch": ("query",),
    "Skill": ("skill", "command"),
    "TaskOutput": ("bash_id", "task_id", "shell_id"),
    "TaskStop": ("shell_id", "task_id", "bash_id"),
    "ExitPlanMode": ("plan",),
}
_GENERIC_SUMMARY_KEYS = (
    "file_path",
    "path",
    "pattern",
    "command",
    "url",
    "query",
    "sql",
    "description",
    "subject",
    "prompt",
    "name",
)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:SUMMARY_CHARS]


def _summary(name: str, inputs: Any) -> str | None:
    """A compact one-line target of the call (file path, pattern, command, description, ...)."""
    if not isinstance(inputs, dict):
        return None
    if name == "TodoWrite" and isinstance(inputs.get("todos"), list):
        return f"{len(inputs['todos'])} todos"
    keys = _SUMMARY_KEYS.get(name, ()) + _GENERIC_SUMMARY_KEYS
    for key in keys:
        value = inputs.get(key)
        if isinstance(value, str) and value.strip():
            return _one_line(value)
    for value in inputs.values():
        if isinstance(value, str) and value.strip():
            return _one_line(value)
    return None


def _stated(reason: Any) -> str | None:
    if isinstance(reason, str) and reason.strip():
        return reason.strip()
    return None


# =============================================================================================
# Self-corrections

_FAMILY = {"Glob": "Grep"}
# Input keys that label a call without changing what it does; ignored when comparing inputs.
_COSMETIC_KEYS = frozenset({"description"})


def _canon(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, default=repr, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return repr(value)


def _substance(inputs: dict[str, Any]) -> dict[str, Any]:
    return {str(k): v for k, v in inputs.items() if str(k) not in _COSMETIC_KEYS}


def _changed_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    amap, bmap = _substance(a), _substance(b)
    keys = sorted(set(amap) | set(bmap))
    return [k for k in keys if k not in amap or k not in bmap or _canon(amap[k]) != _canon(bmap[k])]


def _self_corrections(
    names: list[str],
    inputs: list[dict[str, Any]],
    outcomes: list[str],
    changes: list[str | None],
    groups: list[int | None],
) -> dict[str, Any]:
    """Failed calls (error or empty) and what followed them. The retry is the next call of the
    same family issued in a later assistant message (a sibling in the same parallel group was sent
    before the result came back, so it cannot be a reaction to it). Linear in the number of calls."""
    n = len(names)
    canon = [_canon(_substance(i)) for i in inputs]
    by_family: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        by_family.setdefault(_FAMILY.get(name, name), []).append(i)
    retry: list[int | None] = [None] * n  # next family call in a later message
    differs_later: list[bool] = [False] * n  # some later-message family call has another input
    for positions in by_family.values():
        count = len(positions)
        after_group = [count] * count  # family index of the first call outside k's message
        next_diff = [count] * count  # family index of the first later call whose input differs from k's
        for k in range(count - 1, -1, -1):
            here = positions[k]
            if k + 1 < count:
                nxt = positions[k + 1]
                same_message = groups[here] is not None and groups[nxt] == groups[here]
                after_group[k] = after_group[k + 1] if same_message else k + 1
                next_diff[k] = k + 1 if canon[nxt] != canon[here] else next_diff[k + 1]
        for k, here in enumerate(positions):
            first = after_group[k]
            if first >= count:
                continue
            retry[here] = positions[first]
            differs_later[here] = canon[positions[first]] != canon[here] or next_diff[first] < count
    change_before = [0] * (n + 1)  # prefix counts of changing calls
    for i in range(n):
        change_before[i + 1] = change_before[i] + (1 if changes[i] else 0)

    corrections: list[dict[str, Any]] = []
    repeated = reruns = 0
    errors_not_retried: list[int] = []
    empty_not_retried: list[int] = []
    for i in range(n):
        kind = outcomes[i]
        if kind not in ("error", "empty"):
            continue
        j = retry[i]
        if j is not None and canon[j] != canon[i]:
            corrections.append(
                {
                    "failed_step": i,
                    "retry_step": j,
                    "kind": kind,
                    "tool": names[i],
                    "retry_tool": names[j],
                    "changed": _changed_keys(inputs[i], inputs[j]),
                }
            )
            continue
        if j is not None:
            if change_before[j] - change_before[i + 1] > 0:
                reruns += 1
            else:
                repeated += 1
        if not differs_later[i]:
            (errors_not_retried if kind == "error" else empty_not_retried).append(i)
    return {
        "self_corrections": corrections,
        "repeated_identical": repeated,
        "reruns_after_change": reruns,
        "errors_not_retried": errors_not_retried,
        "empty_not_retried": empty_not_retried,
    }


# =============================================================================================
# Constraints

_NEG = (
    r"(?:(?:do|did|does|have|has)n['’]?t|(?:do|did|does|have|has)\s+not|never|must\s+not|mustn['’]?t|should\s+not|shouldn['’]?t|won['’]?t|will\s+not|"
    r"can['’]?t|cannot|not)"
)
_CHANGE_VERBS = (
    r"(?:change|changing|modify|modifying|edit|editing|touch|touching|alter|altering|write|writing|"
    r"overwrite|overwriting|rewrite|rewriting|delete|deleting|remove|removing|rename|renaming|drop|dropping)"
)
_CHANGE_WORDS = frozenset(
    "change changing modify modifying edit editing touch touching alter altering write writing overwrite "
    "overwriting rewrite rewriting delete deleting remove removing rename renaming drop dropping making "
    "changes edits modifications any".split()
)
_GENERIC_OBJECTS = frozenset(
    {
        "",
        "anything",
        "any files",
        "any file",
        "any code",
        "any thing",
        "a thing",
        "nothing",
        "the code",
        "code",
        "the codebase",
        "the repo",
        "the repository",
        "files",
        "the files",
        "any of the files",
        "the working tree",
        "things",
        "stuff",
        "disk",
        "to disk",
        "anything else",
    }
)
_OBJECT_STOP = frozenset(
    "and or but instead to for when because unless so then if while since as just only please until "
    "before after with without rather except in on at from inside within across by".split()
)
_USE_REJECT_PREV = frozenset(
    "the a an of no any its for in whose their our my your his her good fair this that make what's whats "
    "is are was were be been being".split()
)
_QUESTION_WORDS = frozenset(("how", "when", "where", "why", "what"))
_USE_REJECT_OBJECT_START = frozenset("of to not case cases it this that them these those".split())
_CLAUSE_END = re.compile(r"[,;:!?\n()\[\]]|\.(?=\s|$)|\s[—–-]\s|—|–")

# Prefilter needles: a pattern runs only on text (lowercased) that holds one of its needles.
_N_NEG = ("n't", "n’t", "not", "never", "cannot", "without")
_N_CHANGE = ("chang", "modif", "edit", "touch", "alter", "writ", "delet", "remov", "renam", "drop")
_N_FORMAT_NOUNS = (
    "table", "json", "csv", "yaml", "list", "bullet", "diff", "patch", "one-liner", "markdown", "sentence",
    "line", "paragraph", "word", "plain text",
)  # fmt: skip
_COMMIT_WORDS = frozenset(
    "i i'll i'm i've i'd we we'll we're let let's keep keeping asked requested instructed wanted per should "
    "must need plan going".split()
)


def _re(pattern: str, first: str) -> re.Pattern[str]:
    """Case-insensitive pattern; ``first``: the letters a match can start with. The lookahead lets the
    regex engine skip ahead to those letters, which makes a scan about twice as fast."""
    return re.compile(f"(?=[{first}])" + pattern, re.I)


_NEG_FIRST = "dhmswcn"


_P_READ_ONLY = (
    (_re(r"\bread[- ]only\b", "r"), ("read",)),
    (_re(r"\bdry[- ]run\b", "d"), ("dry",)),
    (
        _re(
            r"\b"
            + _NEG
            + r"\s+(?:make|do|apply|commit)?\s*(?:any\s+)?(?:changes|edits|modifications|writes)\b",
            _NEG_FIRST,
        ),
        ("change", "edits", "modification", "writes"),
    ),
    (
        _re(
            r"\b(?:without(?:\s+making)?(?:\s+any)?|(?:make|with)\s+no)\s+(?:code\s+|file\s+)?"
            r"(?:changes|edits|modifications)\b",
            "wm",
        ),
        ("change", "edits", "modification"),
    ),
    (
        _re(
            r"\bno\s+(?:code\s+|file\s+)?(?:changes|edits|modifications|writes)\s+(?:please|allowed|at\s+all)\b",
            "n",
        ),
        ("change", "edits", "modification", "writes"),
    ),
)
_P_CHANGE_NEGATED = _re(
    r"\b(?:" + _NEG + r"|without)\s+(?:(?:ever|even|please|actually)\s+)?" + _CHANGE_VERBS + r"\b"
    r"(?:\s+(?:to|into|in)\b)?",
    _NEG_FIRST,
)
_P_LEAVE = _re(
    r"\b(?:leave|keep)\s+([^\n.,;:!?]{1,80}?)\s+(?:alone|as[- ]is|untouched|unchanged|intact)\b", "lk"
)
_P_AVOID = (
    (
        _re(
            r"\b" + _NEG + r"\s+(?:(?:ever|even|please)\s+)?(?:use|using|run|running|call|calling|install|"
            r"installing|import|importing|add|adding|introduce|spawn|invoke|rely\s+on|depend\s+on)\b",
            _NEG_FIRST,
        ),
        _N_NEG,
    ),
    (_re(r"\bavoid(?:ing|s)?(?:\s+using)?\b", "a"), ("avoid",)),
    (_re(r"\binstead\s+of(?:\s+using)?\b", "i"), ("instead",)),
)
_P_NO_GIT = _re(r"\b" + _NEG + r"\s+(?:git\s+)?(commit|push)\b", _NEG_FIRST)
_P_WITHOUT = _re(r"\bwithout(?:\s+using)?\b", "w")
_P_USE = _re(r"\b(?:use|using|prefer|via)\b", "upv")
_P_WITH = (
    _re(r"\bwith\s+(?:the\s+)?`([^`\n]{1,80})`", "w"),
    _re(
        r"\bwith\s+(?:the\s+)?([\w.+/-]{1,60})\s+(?:tool|cli|library|command|module|package|api|flag|option|binary)\b",
        "w",
    ),
)
_P_SCOPE = (
    (
        _re(
            r"\bonly\s+(?:in|within|under|inside|on|for|the|touch|change|modify|edit|look\s+at|search|consider|"
            r"check)\b",
            "o",
        ),
        ("only",),
    ),
    (_re(r"\bjust\s+(?:in|within|under|the)\b", "j"), ("just",)),
    (_re(r"\blimit(?:ed)?\s+(?:it\s+|this\s+|yourself\s+|the\s+\w+\s+)?to\b", "l"), ("limit",)),
    (_re(r"\brestrict(?:ed)?\s+(?:it\s+|this\s+|yourself\s+)?to\b", "r"), ("restrict",)),
    (_re(r"\bfocus\s+(?:only\s+)?on\b", "f"), ("focus",)),
)
_P_FORMAT = (
    (
        _re(
            r"\bas\s+(?:a\s+)?(?:markdown\s+)?(?:table|json|csv|yaml|bullet(?:ed)?\s+list|bullets|numbered\s+list|"
            r"list|diff|patch|one-liner|markdown)\b",
            "a",
        ),
        _N_FORMAT_NOUNS,
    ),
    (
        _re(
            r"\bin\s+(?:a\s+)?(?:markdown\s+)?(?:table|json|csv|yaml|bullet(?:ed)?\s+(?:list|points)|bullets|"
            r"numbered\s+list|one\s+(?:sentence|line|paragraph|word)|plain\s+text|markdown|"
            r"\d+\s+(?:words|sentences|lines|bullets))\b",
            "i",
        ),
        _N_FORMAT_NOUNS,
    ),
    (_re(r"\b(?:briefly|concisely|succinctly)\b", "bcs"), ("briefly", "concisely", "succinctly")),
    (_re(r"\bkeep\s+it\s+(?:short|brief|concise)\b", "k"), ("keep",)),
    (_re(r"\b(?:be\s+)?(?:brief|concise)\b", "bc"), ("brief", "concise")),
    (
        _re(r"\b(?:one|a\s+single|1)[- ](?:sentence|line|paragraph|word)\b", "oa1"),
        ("sentence", "line", "paragraph", "word"),
    ),
    (_re(r"\btl;?dr\b", "t"), ("tl",)),
    (_re(r"\bstep[- ]by[- ]step\b", "s"), ("step",)),
    (
        _re(r"\b(?:under|at\s+most|no\s+more\s+than)\s+\d+\s+(?:words|lines|sentences)\b", "uan"),
        ("words", "lines", "sentences"),
    ),
)
_FENCED = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?(?:^[ \t]*\1[ \t]*$|\Z)", re.M | re.S)
_KIND_ORDER = ("read_only", "do_not_modify", "use", "avoid", "scope", "format")


def _object_at(text: str, pos: int) -> tuple[str | None, int]:
    """The object of a constraint verb starting at ``pos``: a quoted string, or words up to the end
    of the clause (at most six, cut at a connective). Returns (object, end position)."""
    n = len(text)
    while pos < n and text[pos] in " \t":
        pos += 1
    if pos < n and text[pos] in '`"“':
        close = {"`": "`", '"': '"', "“": "”"}[text[pos]]
        end = text.find(close, pos + 1, pos + 200)
        if end > pos + 1:
            inner = " ".join(text[pos + 1 : end].split())
            return (inner or None), end + 1
    window = text[pos : pos + 200]
    m = _CLAUSE_END.search(window)
    if m is not None:
        window = window[: m.start()]
    words: list[str] = []
    consumed = 0
    for match in re.finditer(r"\S+", window):
        word = match.group(0)
        if word.lower().strip("`\"'") in _OBJECT_STOP or len(words) >= 6:
            break
        words.append(word)
        consumed = match.end()
    obj = " ".join(" ".join(words).strip("`\"'“”‘’.*").split())  # "** **" leaves no object
    return (obj or None), pos + consumed


Found = tuple[int, int, str, str, "str | None"]  # start, end, kind, text, object


def _constraint(kind: str, text: str, start: int, end: int, obj: str | None) -> Found:
    return start, end, kind, " ".join(text[start:end].split()), obj


def _matches(pattern: re.Pattern[str], text: str, low: str, needles: tuple[str, ...]):
    """``pattern.finditer(text)``, skipped when none of ``needles`` is in ``low`` (a cheap prefilter)."""
    if any(needle in low for needle in needles):
        return pattern.finditer(text)
    return ()


def _scan_constraints(text: str, assistant: bool = False) -> list[Found]:
    """(start, end, kind, text, object) for each constraint phrase in ``text``, in text order. A
    phrase inside a longer one of the same kind ("one sentence" in "in one sentence") is dropped.

    In Claude's text (``assistant``), use/avoid/scope/format phrases count only when Claude commits
    to them or echoes the user ("I'll use sqlite3", "as you asked, briefly"); Claude describing code
    ("the helper uses a cache, instead of a dict") is not a constraint. read_only and do_not_modify
    phrases always count ("I won't modify the schema", "I didn't change anything")."""
    text = _FENCED.sub("\n", text[:SCAN_CHARS])
    low = text.lower()
    found: list[Found] = []
    for pattern, needles in _P_READ_ONLY:
        for m in _matches(pattern, text, low, needles):
            found.append(_constraint("read_only", text, m.start(), m.end(), None))
    has_negation = any(n in low for n in _N_NEG)
    if has_negation:
        for m in _matches(_P_CHANGE_NEGATED, text, low, _N_CHANGE):
            obj, end = _object_at(text, m.end())
            if obj is None or obj.lower() in _GENERIC_OBJECTS:
                found.append(_constraint("read_only", text, m.start(), end, None))
            elif obj.split()[0].lower() not in _CHANGE_WORDS:
                found.append(_constraint("do_not_modify", text, m.start(), end, obj))
    for m in _matches(_P_LEAVE, text, low, ("leave", "keep")):
        obj = m.group(1).strip("`\"'“”‘’ ")
        if obj.lower() in _GENERIC_OBJECTS or obj.lower() in ("everything", "everything else"):
            found.append(_constraint("read_only", text, m.start(), m.end(), None))
        else:
            found.append(_constraint("do_not_modify", text, m.start(), m.end(), obj))
    for pattern, needles in _P_AVOID:
        if needles is _N_NEG and not has_negation:
            continue
        for m in _matches(pattern, text, low, needles):
            obj, end = _object_at(text, m.end())
            if obj is not None and obj.split()[0].lower() not in _CHANGE_WORDS:
                found.append(_constraint("avoid", text, m.start(), end, obj))
    if has_negation:
        for m in _matches(_P_NO_GIT, text, low, ("commit", "push")):
            found.append(_constraint("avoid", text, m.start(), m.end(), f"git {m.group(1).lower()}"))
    for m in _matches(_P_WITHOUT, text, low, ("without",)):
        obj, end = _object_at(text, m.end())
        if (
            not obj
            or not obj.split()
            or obj.lower() in _GENERIC_OBJECTS
            or obj.split()[0].lower() in _CHANGE_WORDS
        ):
            continue
        found.append(_constraint("avoid", text, m.start(), end, obj))
    for m in _matches(_P_USE, text, low, ("use", "using", "prefer", "via")):
        before = _clause_words_before(text, m.start(), 3)
        if any(w in _NEG_WORDS for w in before):
            continue  # "don't use X" is an avoid constraint
        if before and (
            before[-1] in _USE_REJECT_PREV
            or (before[-1] == "to" and len(before) > 1 and before[-2] in _QUESTION_WORDS)
        ):
            continue
        obj, end = _object_at(text, m.end())
        if not obj or not obj.split() or obj.split()[0].lower().strip("`\"'") in _USE_REJECT_OBJECT_START:
            continue
        found.append(_constraint("use", text, m.start(), end, obj))
    for pattern in _P_WITH:
        for m in _matches(pattern, text, low, ("with",)):
            found.append(_constraint("use", text, m.start(), m.end(), m.group(1).strip()))
    for pattern, needles in _P_SCOPE:
        for m in _matches(pattern, text, low, needles):
            obj, end = _object_at(text, m.end())
            if obj is not None:
                found.append(_constraint("scope", text, m.start(), end, obj))
    for pattern, needles in _P_FORMAT:
        for m in _matches(pattern, text, low, needles):
            found.append(_constraint("format", text, m.start(), m.end(), None))
    if assistant:
        found = [
            c
            for c in found
            if c[2] in ("read_only", "do_not_modify")
            or any(w in _COMMIT_WORDS for w in _clause_words_before(text, c[0], 8))
        ]
    found.sort(key=lambda c: (c[0], -c[1], _KIND_ORDER.index(c[2]), c[3]))
    kept: list[Found] = []
    reach: dict[str, int] = {}  # kind → furthest end of a kept phrase
    for item in found:
        end, kind = item[1], item[2]
        if end <= reach.get(kind, -1):
            continue
        kept.append(item)
        reach[kind] = max(end, reach.get(kind, -1))
    return kept


def _constraints(prompt: Any, reasons: list[tuple[int, str]], final_answer: Any) -> list[dict[str, Any]]:
    sources: list[tuple[str, str, str]] = []
    if isinstance(prompt, str):
        sources.append(("user", "prompt", prompt))
    sources.extend(("assistant", f"step {i}", r) for i, r in reasons)
    if isinstance(final_answer, str):
        sources.append(("assistant", "final_answer", final_answer))
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for source, where, text in sources:
        for _start, _end, kind, phrase, obj in _scan_constraints(text, assistant=source == "assistant"):
            key = (kind, (obj or phrase).lower(), source)
            if key in seen:
                continue
            seen.add(key)
            out.append({"kind": kind, "text": phrase, "object": obj, "source": source, "where": where})
    return out


# =============================================================================================
# Answer shape

_FENCE_LINE = re.compile(r"^\s{0,3}(```+|~~~+)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+\S")
_BOLD_TITLE = re.compile(r"^\s*(\*\*|__)(?=\S)(.+?)(?<=\S)\1\s*:?\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+\S")
_RULE = re.compile(r"^\s*([-*_])(?:\s*\1){2,}\s*$")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{1,}:?\s*(?:\|\s*:?-{1,}:?\s*)+\|?\s*$")
_INLINE_CODE = re.compile(r"`[^`\n]+`")


def answer_shape(text: str | None) -> dict[str, Any]:
    """Markdown shape of a final answer. Zeros (and ``style: ["none"]``) when there is none."""
    shape: dict[str, Any] = {
        "present": False,
        "has_table": False,
        "tables": 0,
        "headings": 0,
        "list_items": 0,
        "code_blocks": 0,
        "inline_code": 0,
        "paragraphs": 0,
        "chars": 0,
        "words": 0,
        "lines": 0,
        "style": ["none"],
    }
    if not isinstance(text, str) or not text.strip():
        if isinstance(text, str):
            shape["chars"] = len(text)
            shape["lines"] = len(text.splitlines())
        return shape
    lines = text.splitlines()
    in_code = False
    previous = ""
    paragraph_open = False
    for line in lines:
        if _FENCE_LINE.match(line):
            if not in_code:
                shape["code_blocks"] += 1
            in_code = not in_code
            paragraph_open = False
            previous = ""
            continue
        if in_code:
            continue
        stripped = line.strip()
        if not stripped:
            paragraph_open = False
            previous = ""
            continue
        if not paragraph_open:
            shape["paragraphs"] += 1
            paragraph_open = True
        if _TABLE_SEPARATOR.match(line) and "|" in line and "|" in previous:
            shape["tables"] += 1
        elif _HEADING.match(line):
            shape["headings"] += 1
        elif _BOLD_TITLE.match(line) and "**" not in _BOLD_TITLE.match(line).group(2):
            shape["headings"] += 1
        elif _LIST_ITEM.match(line) and not _RULE.match(line):
            shape["list_items"] += 1
        shape["inline_code"] += len(_INLINE_CODE.findall(line))
        previous = line
    shape["present"] = True
    shape["has_table"] = shape["tables"] > 0
    shape["chars"] = len(text)
    shape["words"] = len(text.split())
    shape["lines"] = len(lines)
    style = [
        label
        for label, on in (
            ("table", shape["has_table"]),
            ("headings", shape["headings"] > 0),
            ("list", shape["list_items"] > 0),
            ("code", shape["code_blocks"] > 0),
        )
        if on
    ]
    shape["style"] = style or ["plain"]
    return shape


# =============================================================================================
# The extractor


def extract_behavior(episode: Episode) -> dict[str, Any]:
    """Behavior of one episode as a JSON-serializable dict (see the module docstring)."""
    steps = list(episode.steps)
    calls = [s.call for s in steps]
    names = [normalize_tool_name(c.name) if isinstance(c.name, str) else "" for c in calls]
    inputs = [c.input if isinstance(c.input, dict) else {} for c in calls]
    outcomes = [_outcome(name, call) for name, call in zip(names, calls, strict=True)]
    changes = [change_kind(call) for call in calls]
    commands = [
        i["command"]
        for name, i in zip(names, inputs, strict=True)
        if name == "Bash" and isinstance(i.get("command"), str)
    ]

    category, evidence, rule = _classify(episode.prompt, names, commands)

    tool_counts: dict[str, int] = {}
    for name in names:
        tool_counts[name] = tool_counts.get(name, 0) + 1

    # Parallel groups: calls sharing a parallel_group were issued in one assistant message.
    group_members: dict[int, list[int]] = {}
    group_order: list[int] = []
    for i, call in enumerate(calls):
        group = call.parallel_group
        if group is None:
            continue
        if group not in group_members:
            group_members[group] = []
            group_order.append(group)
        group_members[group].append(i)
    parallel_steps = [group_members[g] for g in group_order if len(group_members[g]) >= 2]

    chain: list[dict[str, Any]] = []
    stated_in_group: dict[int, int] = {}
    reasons: list[tuple[int, str]] = []
    for i, (step, name, call) in enumerate(zip(steps, names, calls, strict=True)):
        reason = _stated(step.reason)
        group = call.parallel_group
        shared = None
        if reason is not None:
            reasons.append((i, reason))
            if group is not None:
                stated_in_group.setdefault(group, i)
        elif group is not None and len(group_members.get(group, ())) >= 2:
            shared = stated_in_group.get(group)
        chain.append(
            {
                "step": i,
                "tool": name,
                "reason": reason,
                "stated": reason is not None,
                "summary": _summary(name, call.input),
                "outcome": outcomes[i],
                "parallel_group": group,
                "shared_reason_step": shared,
                "has_thinking": isinstance(step.thinking, str) and bool(step.thinking.strip()),
            }
        )
    stated = sum(1 for c in chain if c["stated"])

    change_steps = [i for i, kind in enumerate(changes) if kind is not None]
    first_change = change_steps[0] if change_steps else None

    subagents = []
    for i, call in enumerate(calls):
        sub = call.subagent
        if sub is None:
            continue
        description = call.input.get("description") if isinstance(call.input, dict) else None
        subagents.append(
            {
                "step": i,
                "agent_type": sub.agent_type,
                "description": _one_line(description) if isinstance(description, str) else None,
                "tool_sequence": [normalize_tool_name(s.call.name) for s in sub.steps],
                "changes": changes[i] == "subagent",
            }
        )

    behavior: dict[str, Any] = {
        "version": BEHAVIOR_VERSION,
        "category": category,
        "category_evidence": evidence,
        "category_rule": rule,
        "calls": len(calls),
        "tool_sequence": names,
        "tool_counts": tool_counts,
        "reasoning_chain": chain,
        "stated_reasons": stated,
        "unstated_reasons": len(chain) - stated,
        "exploration_depth": first_change if first_change is not None else len(calls),
        "first_change_step": first_change,
        "first_change_kind": changes[first_change] if first_change is not None else None,
        "change_steps": change_steps,
    }
    groups = [call.parallel_group for call in calls]
    behavior.update(_self_corrections(names, inputs, outcomes, changes, groups))
    behavior["errors"] = outcomes.count("error")
    behavior["empty_results"] = outcomes.count("empty")
    behavior["denied"] = outcomes.count("denied")
    behavior["cancelled"] = outcomes.count("cancelled")
    behavior["parallel_groups"] = len(parallel_steps)
    behavior["parallel_calls"] = sum(len(g) for g in parallel_steps)
    behavior["parallel_steps"] = parallel_steps
    behavior["constraints"] = _constraints(episode.prompt, reasons, episode.final_answer)
    behavior["answer_shape"] = answer_shape(episode.final_answer)
    behavior["subagents"] = {"count": len(subagents), "agents": subagents}
    return behavior
