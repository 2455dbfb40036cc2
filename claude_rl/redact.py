"""Secret redaction, applied by the capture hooks before anything touches disk.

Standard library only: this runs inside Claude Code's hooks on every tool call.

Each rule has *triggers*: cheap substring tests that must hit before its regular expression is
compiled or run. Most strings contain no trigger, so the common case costs a few ``in`` checks
and no regex work at all; this keeps a hook on a 1 MB tool output inside its time budget.

A secret is replaced by ``[REDACTED:<kind>]``. Where a secret sits behind a visible name
(``PASSWORD=...``, ``Authorization: Bearer ...``, ``https://user:...@host``) only the secret part
is replaced, so the captured workflow still reads naturally. Redaction is idempotent: markers
never match a rule.

Secrets are also found in JSON-escaped text (an MCP tool returns a JSON document as a string, so
line breaks read ``\\n`` and quotes ``\\"``) and in CRLF text. Where matching needs a regular
expression, patterns open with a literal (a token prefix, the secret word of a name) so that the
regex engine jumps between candidates; context a literal-first pattern cannot see (does the name
start a line?) is checked in Python at each candidate (``Rule.at``).

Rules are tuned so that ordinary code and logs pass unchanged (``tests/test_redact.py`` measures
both the catch rate on a corpus of fake secrets and the false-positive rate on ordinary text).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs more to import than a hook's whole run: annotations only
    import re
    from collections.abc import Callable, Iterable
    from typing import Any

MARKER = "[REDACTED:{}]"


class _LazyPattern:
    """A regular expression compiled on first use.

    Importing ``re`` (with ``enum`` behind it) is a third of a hook's start-up; a payload that
    meets no trigger never needs it.
    """

    __slots__ = ("source", "flags", "_rx")

    def __init__(self, source: str, flags: int = 0) -> None:
        self.source, self.flags, self._rx = source, flags, None

    def __getattr__(self, name: str) -> Any:
        if self._rx is None:
            import re

            self._rx = re.compile(self.source, self.flags)
        return getattr(self._rx, name)


_MARKER_PREFIX = "[REDACTED"

Counts = dict[str, int]


class Rule:
    """One kind of secret: triggers (substring pre-filter), a pattern, and which group is secret.

    ``check`` accepts or rejects the secret a match found; ``at`` accepts or rejects the place
    where the match starts (given the text and that index), for what a pattern that opens with a
    literal cannot see: whether the name around a keyword starts a word or a line.

    ``fold=True`` matches a lower-case pattern against the lower-cased text: case-insensitive,
    but several times faster than ``(?i)``, under which the regex engine folds every character it
    compares. Where lower-casing changes the length of the text (a few non-ASCII letters),
    positions would not line up, and the pattern runs with ``re.IGNORECASE`` on the text itself.
    """

    __slots__ = (
        "kind",
        "triggers",
        "lower_triggers",
        "source",
        "flags",
        "group",
        "check",
        "at",
        "fold",
        "near",
    )
    __slots__ += ("_rx", "_rx_ci")

    def __init__(
        self,
        kind: str,
        pattern: str,
        triggers: Iterable[str] = (),
        *,
        lower_triggers: Iterable[str] = (),
        flags: int = 0,
        group: int | str = 0,
        check: Callable[[str], bool] | None = None,
        at: Callable[[str, int], bool] | None = None,
        fold: bool = False,
        near: Iterable[str] = (),
    ) -> None:
        self.kind = kind
        self.triggers = tuple(triggers)
        self.lower_triggers = tuple(lower_triggers)
        self.source = pattern
        self.flags = flags
        self.group = group
        self.check = check
        self.at = at
        self.fold = fold
        # Sharper lower-case triggers for the automaton path: a match is impossible unless one of
        # these occurs (e.g. "token" followed by ':' or '=', never the "tokens" of usage fields).
        self.near = tuple(near)
        self._rx: re.Pattern[str] | None = None  # compiled on first use
        self._rx_ci: re.Pattern[str] | None = None

    @property
    def rx(self) -> re.Pattern[str]:
        # Compiled on first use: a hook process that never meets a trigger never pays for it.
        if self._rx is None:
            import re

            self._rx = re.compile(self.source, self.flags)
        return self._rx

    @property
    def rx_ci(self) -> re.Pattern[str]:
        if self._rx_ci is None:
            import re

            self._rx_ci = re.compile(self.source, self.flags | re.IGNORECASE)
        return self._rx_ci

    def may_match(self, text: str, lower: Callable[[], str]) -> bool:
        if not self.triggers and not self.lower_triggers:
            return True
        if any(t in text for t in self.triggers):
            return True
        if self.lower_triggers:
            low = lower()
            return any(t in low for t in self.lower_triggers)
        return False


# ---------------------------------------------------------------------------------------------
# Value checks: keep ordinary code (``password = input()``, ``token_type = "bearer"``) unchanged.

# Words that stand in for a secret in docs, examples and templates.
_PLACEHOLDER_WORDS = frozenset(
    "password passwd pass pwd secret token apikey key changeme changeit example placeholder redacted"
    " hidden masked none null nil undefined true false yes no on off required optional todo tbd empty".split()
)
# ... and words that mark a template value: your-api-key-here, YOUR_TOKEN, example-password
_PLACEHOLDER_PARTS = frozenset("your example placeholder changeme replaceme redacted".split())
_WORD_SPLIT = _LazyPattern(r"[^A-Za-z0-9]+")
_ENV_VAR_NAME = _LazyPattern(r"[A-Z]+(?:_[A-Z]+)+")
# $VAR, ${VAR}, $(cmd), %(name)s, %VAR%, <your key>, {{ var }}, ****, a YAML alias (*db_password)
_REFERENCE = _LazyPattern(r"\$[{(A-Za-z_]|%\(|%\w+%|[<{]|\*\*|\*[A-Za-z_][\w-]*\Z")
# Unquoted values that are code, not literals: calls, subscripts, attribute chains, identifiers
# ending an argument or statement (``password: hashedPassword,``), tuples and lists.
_CODE_CALL = _LazyPattern(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*[(\[]")
_CODE_CHAIN = _LazyPattern(r"[A-Za-z_$][A-Za-z_$]*(?:\.[A-Za-z_$][A-Za-z_$]*)+[,;]?")
_CODE_IDENT_END = _LazyPattern(r"[A-Za-z_$][\w$]*[,;]")
# 4096, 60_000, 3600s, 15m: a number or a duration (a setting, when short)
_NUMBER = _LazyPattern(r"\d[\d_]*(?:\.\d+)?(?:ms|s|m|h|d|w)?[,;]?")
# /run/secrets/db_password, ~/.config/gcloud/key.json: where a secret is, not the secret
_PATH = _LazyPattern(r"(?:~|\.{1,2})?/[\w.-]+(?:/[\w.-]+)+/?")


def _is_path(value: str) -> bool:
    """A file path; not a random key that happens to hold slashes (an AWS secret key may)."""
    if not _PATH.fullmatch(value):
        return False
    random_part = any(
        any(c.isupper() for c in part) and any(c.islower() for c in part) and any(c.isdigit() for c in part)
        for part in value.split("/")
    )
    return not random_part


def _is_placeholder(value: str) -> bool:
    """A template value, a variable reference, a masked value or one already redacted."""
    v = value.strip().strip("'\"`")
    if not v or v.startswith(("…", "...", _MARKER_PREFIX)) or _REFERENCE.match(v):
        return True
    low = v.lower()
    if low.replace("-", "").replace("_", "").replace(" ", "") in _PLACEHOLDER_WORDS:
        return True
    if "..." in v or "…" in v or "****" in v:  # elided or masked: sk-..., ****a1b2
        return True
    for word in _WORD_SPLIT.split(low):
        if word in _PLACEHOLDER_PARTS or (len(word) >= 4 and set(word) == {"x"}):  # sk_live_xxxxxxxx
            return True
    if set(v) <= {"*", "x", "X", ".", "#", "-"}:  # masked already: ******** or xxxx
        return True
    return bool(_ENV_VAR_NAME.fullmatch(v))  # API_TOKEN: a name standing for the value


def _looks_like_code(value: str) -> bool:
    v = value.strip()
    if not v or v[0] in "([{":
        return True
    return bool(_CODE_CALL.match(v) or _CODE_CHAIN.fullmatch(v) or _CODE_IDENT_END.fullmatch(v))


def _looks_like_secret_value(value: str) -> bool:
    """A literal that is plausibly a credential rather than code, a word or a placeholder."""
    v = value.strip("'\"")
    if len(v) < 8 or _is_placeholder(v) or _is_path(v):
        return False
    if any(c.isspace() for c in v):
        return False
    has_digit = any(c.isdigit() for c in v)
    has_alpha = any(c.isalpha() for c in v)
    has_symbol = any(not c.isalnum() for c in v)
    # Words and identifiers (``changeme``, ``get_token``) are code; a credential mixes classes
    # or is long and random-looking.
    return (has_digit and has_alpha) or (has_alpha and has_symbol and len(v) >= 12) or len(v) >= 24


def _unquoted_secret_value(value: str) -> bool:
    """As ``_looks_like_secret_value``, for an unquoted value that may be an expression."""
    value = value.rstrip("\\")  # the first backslash of a doubly escaped \\n after the value
    return not _looks_like_code(value) and _looks_like_secret_value(value)


def _is_basic_credential(b64: str) -> bool:
    import base64
    import binascii

    try:
        raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    return ":" in text and text.isprintable()


def _not_placeholder(value: str) -> bool:
    return not _is_placeholder(value)


def _looks_like_token(value: str) -> bool:
    """A bearer token: random-looking (digits or mixed case), not prose or a placeholder."""
    if _is_placeholder(value):
        return False
    has_digit = any(c.isdigit() for c in value)
    return has_digit or (any(c.isupper() for c in value) and any(c.islower() for c in value))


def _env_value_is_secret(value: str) -> bool:
    """A .env value behind a secret-looking name: anything but a setting, flag or placeholder."""
    v = value.strip()
    if len(v) < 4 or _is_placeholder(v):
        return False
    # MAX_TOKENS=4096, TOKEN_TTL=3600, SESSION_TOKEN_LIFETIME=15m: settings, not secrets
    if _NUMBER.fullmatch(v) and len(v) < 12:
        return False
    return not _is_path(v)


def _env_unquoted_is_secret(value: str) -> bool:
    # SECRET_KEY = os.environ["SECRET_KEY"], _PATH_KEYS = ("file_path", ...): code, not a value
    value = value.rstrip("\\")
    return not _looks_like_code(value) and _env_value_is_secret(value)


_TOKEN_CHARS = "A-Za-z0-9_"
_TOKEN_DASH = "A-Za-z0-9_-"


def _token(head: str, rest: str, word: str = _TOKEN_CHARS, width: int | None = None) -> str:
    """``head`` (a literal, or a pattern of ``width`` characters) then ``rest``, not inside a word.

    A token may start after a non-word character, or right after a JSON escape (``\\n``) of text
    that was serialised into a string (MCP servers return JSON documents as text). The test looks
    behind the head rather than ahead of it: a pattern that opens with a literal lets the regex
    engine jump to candidate positions, one that opens with a look-behind runs at every position
    of the text (tens of times slower on a 1 MB output).
    """
    n = len(head) if width is None else width
    return f"{head}(?:(?<![{word}].{{{n}}})|(?<=\\\\[nrt].{{{n}}})){rest}"


# Quotes, escaped or not: ``"api_key": "..."`` and ``{\"api_key\": \"...\"}`` inside a string
# (or a string inside that: JSON text in a JSON field of an MCP result).
_Q = r"\\*[\"']"

# Names that mark a value as secret. Upper-case .env names may use the loose ``_KEY``/``_PASS``
# endings (the .env convention); code and JSON keys need a strong word, since ``cache_key`` or
# ``sort_key`` in ordinary code hold no secret.
# The patterns open with the secret word, so that the regex engine jumps from candidate to candidate;
# ``at`` then checks that the rest of the name before the word starts a word or a line.
_ENV_SECRET_NAME = (
    r"(?:SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY"
    r"|CREDENTIALS?|_PASS|_PWD|_KEY|_AUTH)[A-Z0-9_]*"
    # ... but not settings about a secret: TOKEN_URL, API_KEY_HEADER, DB_PASSWORD_FILE, ...
    + "".join(
        f"(?<!_{s})"
        for s in (
            "URL URI FILE PATH DIR HEADER NAME TYPE TTL LENGTH LEN SIZE EXPIRY EXPIRES ALGORITHM"
            " ENDPOINT PREFIX FIELD PARAM ID ENABLED TIMEOUT LIFETIME MS MINUTES SECONDS HOURS DAYS"
            " REGION VERSION MODE"
        ).split()
    )
)
_ENV_TRIGGERS = ("SECRET", "TOKEN", "PASSW", "PASSPHRASE", "KEY", "CREDENTIAL", "_PASS", "_PWD", "_AUTH")
_ENV_PREFIX = r"(" + _ENV_SECRET_NAME + r"[ \t]*=[ \t]*)"
_UPPER, _LOWER, _DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz", "0123456789"
_ENV_NAME_CHARS = frozenset(_UPPER + _DIGITS + "_")
_KEY_CHARS = frozenset(_UPPER + _LOWER + _DIGITS + "_.-")


def _after_escape(text: str, i: int) -> bool:
    """``text[i]`` follows a JSON escape (``\\n``, ``\\t``) of text serialised into a string."""
    return i >= 2 and text[i - 2] == "\\" and text[i - 1] in "nrt"


def _env_name_at_word_start(text: str, i: int) -> bool:
    """The upper-case name around ``text[i]`` starts a line or a shell word.

    ``PGPASSWORD=... psql``, ``docker run -e "DB_PASSWORD=..."``, ``export X=...``, a ``file:line:``
    prefix of grep output; not ``settings.SECRET_KEY = ...`` or ``myTOKEN=...``.
    """
    while i > 0 and text[i - 1] in _ENV_NAME_CHARS:
        i -= 1
    if i == 0 or text[i - 1].isspace() or text[i - 1] in "\"'`;&|(:":
        return True
    return _after_escape(text, i)


def _skip_blanks_back(text: str, i: int) -> int:
    while i > 0:
        if text[i - 1] in " \t":
            i -= 1
        elif i >= 2 and text[i - 2 : i] == "\\t":
            i -= 2
        else:
            break
    return i


def _key_at_line_start(text: str, i: int) -> bool:
    """The key around ``text[i]`` is the first thing on its line (after indentation or ``- ``)."""
    while i > 0 and text[i - 1] in _KEY_CHARS and not _after_escape(text, i):
        i -= 1
    i = _skip_blanks_back(text, i)
    if i > 0 and text[i - 1] == "-":  # a YAML list item
        i = _skip_blanks_back(text, i - 1)
    return i == 0 or text[i - 1] in "\n\r" or (i >= 2 and text[i - 2] == "\\" and text[i - 1] in "nr")


# The secret word ends the name (``api_key``, ``"SecretAccessKey"``); whatever precedes it
# (``db_``, ``aws_``) need not be matched, which keeps this cheap on large inputs.
_STRONG_WORD = (
    r"(?:secret(?:_?key(?:_base)?)?|token|password|passwd|passphrase|api_?key|access_?key|private_?key|auth_?key"
    r"|signing_?key"
    r"|credentials?)"
)
_STRONG_TRIGGERS = ("secret", "token", "passw", "passphrase", "key", "credential")
# Every spelling _STRONG_WORD matches, and every character that can follow it in the two rules
# below ([ \t]*[:=] and (?:\\*["'])?\s*(?:=|:|=>)).
_STRONG_SPELLINGS = (
    "secret", "secret_key", "secretkey", "secret_key_base", "secretkey_base", "token", "password", "passwd",
    "passphrase", "api_key", "apikey", "access_key", "accesskey", "private_key", "privatekey", "auth_key",
    "authkey", "signing_key", "signingkey", "credential", "credentials",
)  # fmt: skip
_STRONG_NEAR = tuple(w + c for w in _STRONG_SPELLINGS for c in "\\\"' \t\n\r\f\v=:")


RULES: list[Rule] = [
    Rule(
        "private_key",
        # A header followed by key material (not a header quoted in code or docs). Also matches a
        # block cut short by truncation (no END line): redact to the end.
        r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
        r"(?=(?:\s|\\+[nr])*(?:[A-Za-z0-9+/=]{16}|[A-Za-z-]+: ))[\s\S]*?"
        r"(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
        ("PRIVATE KEY",),
    ),
    Rule(
        "aws_access_key",
        _token("A", r"(?:KIA|SIA|BIA|CCA|3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])"),
        ("AKIA", "ASIA", "ABIA", "ACCA", "A3T"),
    ),
    Rule(
        "aws_secret_key",
        r"(aws_?secret_?(?:access_?)?key(?:\\*[\"'])?[ \t]*[:=][ \t]*(?:\\*[\"'])?)"
        r"([a-z0-9/+=]{40})(?![a-z0-9/+=])",
        lower_triggers=("secret",),
        group=2,
        fold=True,
    ),
    Rule(
        "github_token",
        _token("g", r"(?:h[pousr]_[A-Za-z0-9]{36,255}|ithub_pat_[A-Za-z0-9_]{22,255})"),
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    Rule(
        "gitlab_token",
        _token("g", r"l(?:pat|dt|rt|ptt|soat|cbt|imt|ft)-[A-Za-z0-9_-]{20,}", _TOKEN_DASH),
        ("glpat-", "gldt-", "glrt-", "glptt-", "glsoat-", "glcbt-", "glimt-", "glft-"),
    ),
    Rule("gitlab_token", _token("G", r"R1348941[A-Za-z0-9_-]{20,}", _TOKEN_DASH), ("GR1348941",)),
    Rule("anthropic_key", _token("s", r"k-ant-[A-Za-z0-9_-]{20,}", _TOKEN_DASH), ("sk-ant-",)),
    Rule(
        "openai_key",
        _token("s", r"k-(?:proj-|svcacct-|admin-|None-)?(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,}", _TOKEN_DASH),
        ("sk-",),
    ),
    Rule("google_api_key", _token("A", r"Iza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", _TOKEN_DASH), ("AIza",)),
    Rule(
        "google_oauth",
        _token("[Gy]", r"(?:(?<=G)OCSPX-[A-Za-z0-9_-]{20,}|(?<=y)a29\.[0-9A-Za-z_-]{20,})", _TOKEN_DASH, 1),
        ("GOCSPX-", "ya29."),
    ),
    Rule(
        "slack_webhook",
        r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/]{20,}",
        ("hooks.slack.com",),
    ),
    Rule(
        "slack_token",
        _token("x", r"(?:ox[abposrec]-[A-Za-z0-9-]{10,}|app-\d-[A-Za-z0-9-]{10,})", _TOKEN_DASH),
        ("xox", "xapp-"),
    ),
    Rule("stripe_key", _token("[sr]k_(?:live|test)_", r"[A-Za-z0-9]{16,}", width=8), ("_live_", "_test_")),
    Rule("stripe_key", _token("whsec_", r"[A-Za-z0-9]{24,}"), ("whsec_",)),
    Rule("huggingface_token", _token("h", r"f_[A-Za-z0-9]{34,}"), ("hf_",)),
    Rule("npm_token", _token("n", r"pm_[A-Za-z0-9]{36}(?![A-Za-z0-9])"), ("npm_",)),
    Rule("pypi_token", r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{40,}", ("pypi-AgEI",)),
    Rule("sendgrid_key", r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}", ("SG.",)),
    Rule(
        "jwt",
        _token("e", r"yJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", _TOKEN_DASH),
        ("eyJ",),
    ),
    Rule(
        "bearer_token",
        "(" + _token("bearer", r"[ \t]+", "a-z0-9_") + r")([a-z0-9._~+/-]{16,}=*)",
        lower_triggers=("bearer",),
        group=2,
        check=_looks_like_token,
        fold=True,
    ),
    Rule(
        "basic_auth",
        "(" + _token("basic", r"[ \t]+", "a-z0-9_") + r")([a-z0-9+/]{8,}={0,2})(?![a-z0-9+/=])",
        lower_triggers=("basic",),
        group=2,
        check=_is_basic_credential,
        fold=True,
    ),
    Rule(
        "basic_auth",
        # curl -u user:password / --user user:password (not docker's -u uid:gid)
        r"((?:-u(?<![^\s]-u)|--user(?<![^\s]--user))(?:[ \t]+|=)(?:\\*['\"])?(?!\d+:\d+\b)[^\s:'\"\\]+:)"
        r"((?:[^\s'\"\\]|\\(?![nrt'\"]))+)",
        ("-u ", "--user"),
        group=2,
        check=_not_placeholder,
    ),
    Rule(
        "url_password",
        # scheme://user:password@host; the user may be empty (redis://:password@host), and the
        # password runs to the last @ before the host (an unencoded @ in it leaks nothing).
        r"(://[^\s:/@'\"\\]*:)([^\s/'\"\\?#]+)(@)(?=[^\s@/'\"\\]*(?:[/:?#\s'\"\\]|$))",
        ("://",),
        group=2,
        check=_not_placeholder,
    ),
    Rule(
        "url_password",
        # credentials in a query string: jdbc:...?user=app&password=..., ...?access_token=...
        r"([?&;](?:password|passwd|pwd|access_token|refresh_token|id_token|api_?key|client_secret"
        r"|secret|token)=)([^&\s#'\"\\]+)",
        ("://",),
        group=2,
        check=_env_value_is_secret,
        fold=True,
    ),
    Rule(
        "env_secret",
        # .env-style and shell assignments, quoted: NAME="value", export NAME='value'
        _ENV_PREFIX + r"(?P<q>" + _Q + r")(?P<v>(?:(?!(?P=q))[^\n])*)(?P=q)",
        _ENV_TRIGGERS,
        group="v",
        check=_env_value_is_secret,
        at=_env_name_at_word_start,
    ),
    Rule(
        "env_secret",
        # ... and unquoted: NAME=value, PGPASSWORD=value psql ...
        _ENV_PREFIX + r"(?P<v>(?:[^\s\\\"'`]|\\(?![nrt\"']))+)",
        _ENV_TRIGGERS,
        group="v",
        check=_env_unquoted_is_secret,
        at=_env_name_at_word_start,
    ),
    Rule(
        "env_secret",
        # YAML / INI / properties in config files: password: s3cr3t-value, - token: ...
        r"(?m)(" + _STRONG_WORD + r"[ \t]*[:=][ \t]*)"
        r"((?:[^\s'\"\\]|\\(?![nrt]))+)(?=(?:[ \t]+#[^\n]*)?[ \t\r]*(?:$|\\[nr]))",
        lower_triggers=_STRONG_TRIGGERS,
        group=2,
        check=_unquoted_secret_value,
        at=_key_at_line_start,
        fold=True,
        near=_STRONG_NEAR,
    ),
    Rule(
        "secret_literal",
        # "api_key": "..." in JSON, api_key = "..." in code, password: '...' in YAML
        _STRONG_WORD + r"(?:\\*[\"'])?\s*(?:=|:|=>)\s*(?P<q>" + _Q + r")(?P<v>[^\"'\s]{8,}?)(?P=q)",
        lower_triggers=_STRONG_TRIGGERS,
        group="v",
        check=_looks_like_secret_value,
        fold=True,
        near=_STRONG_NEAR,
    ),
]

# Keys of JSON objects whose string value is a secret whatever it looks like (nested JSON in
# tool inputs and MCP tool outputs: {"password": "hunter2"}).
SECRET_KEY_SUFFIXES = tuple(
    "password passwd passphrase secret token apikey api_key api-key accesskey access_key privatekey"
    " private_key credential credentials client_secret".split()
)
_NOT_SECRET_KEYS = frozenset({"max_token", "next_token_id", "csrf_token_name"})


def secret_key(key: str) -> bool:
    k = key.lower()
    return k.endswith(SECRET_KEY_SUFFIXES) and k not in _NOT_SECRET_KEYS


def compile_user_rules(patterns: Iterable[Any]) -> tuple[list[Rule], list[str]]:
    """Rules from config: ``{"name": ..., "pattern": ...}`` or a bare pattern string.

    Returns the rules and one message per pattern that could not be compiled (never raises: a bad
    pattern in config must not break capture).
    """
    import re

    rules: list[Rule] = []
    problems: list[str] = []
    for i, item in enumerate(patterns or ()):
        if isinstance(item, str):
            name, pattern = f"custom_{i}", item
        elif isinstance(item, dict) and isinstance(item.get("pattern"), str):
            name = str(item.get("name") or f"custom_{i}")
            pattern = item["pattern"]
        else:
            problems.append(f"pattern {i}: not a string or {{name, pattern}} object")
            continue
        try:
            rule = Rule(name, pattern)
            rule.rx  # noqa: B018 - compile now to report errors
        except re.error as exc:
            problems.append(f"pattern {name!r}: {exc}")
            continue
        rules.append(rule)
    return rules, problems


def _near_hit(
    low: str, triggers: tuple[str, ...], spellings: tuple[str, ...], follow: frozenset[str]
) -> bool:
    """Does a trigger occur where a rule could match: a word ending in one of ``spellings`` and
    followed by one of ``follow``? (The plain-scan twin of the automaton's "near" words.)"""
    n = len(low)
    for t in triggers:
        pos = low.find(t)
        while pos >= 0:
            end = pos + len(t)
            while end < n and (low[end].isalnum() or low[end] == "_"):
                end += 1
            if end < n and low[end] in follow and low.endswith(spellings, 0, end):
                return True
            pos = low.find(t, end)
    return False


_AUTOMATON_MIN_CHARS = 2048  # below this the plain substring tests are cheaper than an automaton pass


class Redactor:
    """Applies the built-in rules plus user rules to strings and nested JSON values."""

    def __init__(self, extra_rules: Iterable[Rule] = ()) -> None:
        self.rules = [*RULES, *extra_rules]
        # Rules with the same triggers share one pre-filter test per string (slot).
        slots: dict[tuple[tuple[str, ...], tuple[str, ...]], int] = {}
        self._plan = [
            (
                rule,
                slots.setdefault((rule.triggers, rule.lower_triggers), len(slots)),
                rule.triggers,
                rule.lower_triggers,
            )
            for rule in self.rules
        ]
        self._nslots = len(slots)
        self._slot_triggers = {slot: (trig, low) for _, slot, trig, low in self._plan}
        self._automata: tuple[Any, Any] | None | bool = None  # None: not tried yet; False: unavailable
        # Slots whose every rule has sharper "near" words: (spellings, characters that may follow).
        near_of: dict[int, set[str] | None] = {}
        for rule, slot, _trig, _low in self._plan:
            if not rule.near:
                near_of[slot] = None
            elif near_of.get(slot, set()) is not None:
                near_of[slot] = near_of.get(slot, set()) | set(rule.near)  # type: ignore[operator]
        self._near = {
            slot: (tuple(sorted({w[:-1] for w in words})), frozenset(w[-1] for w in words))
            for slot, words in near_of.items()
            if words
        }

    def _aho(self) -> tuple[Any, Any] | None:
        """Aho-Corasick automata over all triggers (pyahocorasick), when installed.

        Bulk redaction (``claude-rl import``) scans megabytes: one pass finding every trigger
        beats one substring scan per trigger by ~3x. The hooks (``python3 -S``, stdlib only)
        never have it and keep the plain scans; both paths redact the same text identically
        (tests/test_redact.py checks it on the whole corpus).
        """
        if self._automata is None:
            try:
                import ahocorasick
            except ImportError:
                self._automata = False
                return None
            exact: dict[str, set[int]] = {}
            folded: dict[str, set[int]] = {}
            near_of: dict[int, set[str]] = {}
            for rule, slot, _trig, _low in self._plan:
                if rule.near:
                    near_of.setdefault(slot, set()).update(rule.near)
                else:
                    near_of[slot] = set()  # one rule without sharper words: keep the plain ones
            for slot, (trig, low) in self._slot_triggers.items():
                for word in trig:
                    exact.setdefault(word, set()).add(slot)
                for word in near_of.get(slot) or low:
                    folded.setdefault(word, set()).add(slot)
            built = []
            for words in (exact, folded):
                automaton = ahocorasick.Automaton()
                for word, slots in words.items():
                    automaton.add_word(word, tuple(sorted(slots)))
                if words:
                    automaton.make_automaton()
                built.append(automaton if words else None)
            self._automata = (built[0], built[1])
        return self._automata or None

    def _hits_by_automaton(
        self, s: str, lower: Callable[[], str], automata: tuple[Any, Any]
    ) -> list[bool | None]:
        exact, folded = automata
        hit: list[bool | None] = [False] * self._nslots
        if exact is not None:
            for _, slots in exact.iter(s):
                for slot in slots:
                    hit[slot] = True
        if folded is not None and any(
            low and not hit[slot] for slot, (_t, low) in self._slot_triggers.items()
        ):
            for _, slots in folded.iter(lower()):
                for slot in slots:
                    hit[slot] = True
        for slot, (trig, low) in self._slot_triggers.items():
            if not trig and not low:
                hit[slot] = True
        return hit

    def text(self, s: str, counts: Counts) -> str:
        low: list[str] = []

        def lower() -> str:
            if not low:
                low.append(s.lower())
            return low[0]

        # The trigger tests run inline (no call per rule): on the many short strings of a
        # payload they are most of the cost. Long strings go through the automata when present.
        hit: list[bool | None] = [None] * self._nslots
        if len(s) >= _AUTOMATON_MIN_CHARS and self._automata is not False:
            automata = self._aho()
            if automata is not None:
                hit = self._hits_by_automaton(s, lower, automata)
        for rule, slot, triggers, lower_triggers in self._plan:
            may = hit[slot]
            if may is None:
                may = not triggers and not lower_triggers
                for t in triggers:
                    if t in s:
                        may = True
                        break
                if not may and lower_triggers:
                    lowered = lower()
                    for t in lower_triggers:
                        if t in lowered:
                            may = True
                            break
                    if may and slot in self._near:
                        may = _near_hit(lowered, lower_triggers, *self._near[slot])
                hit[slot] = may
            if not may:
                continue
            new = _apply(rule, s, counts, lower)
            if new is not s:
                s = new
                low.clear()
        return s

    def value(self, obj: Any, counts: Counts) -> Any:
        """Redact every string in a JSON value (dicts, lists, scalars); returns the new value."""
        if isinstance(obj, str):
            return self.text(obj, counts) if obj else obj
        if isinstance(obj, dict):
            out = {}
            for k, v in obj.items():
                if isinstance(v, str) and v and isinstance(k, str) and secret_key(k):
                    if not v.startswith(("$", "{", "<", "*", _MARKER_PREFIX)):  # a reference, not a value
                        counts["secret_field"] = counts.get("secret_field", 0) + 1
                        out[k] = MARKER.format("secret_field")
                        continue
                out[k] = self.value(v, counts)
            return out
        if isinstance(obj, list):
            return [self.value(v, counts) for v in obj]
        return obj


def _apply(rule: Rule, s: str, counts: Counts, lower: Callable[[], str]) -> str:
    """Replace the secret group of each accepted match; ``s`` itself when nothing changed."""
    if rule.fold:
        low = lower()
        matches = rule.rx.finditer(low) if len(low) == len(s) else rule.rx_ci.finditer(s)
    else:
        matches = rule.rx.finditer(s)
    parts: list[str] = []
    pos = 0
    for m in matches:
        start, end = m.span(rule.group)
        if end <= start:  # the group took no part, or matched nothing
            continue
        secret = s[start:end]
        if secret.startswith(_MARKER_PREFIX) or (rule.check is not None and not rule.check(secret)):
            continue
        if rule.at is not None and not rule.at(s, m.start()):
            continue
        parts.append(s[pos:start])
        parts.append(MARKER.format(rule.kind))
        pos = end
    if not parts:
        return s
    parts.append(s[pos:])
    counts[rule.kind] = counts.get(rule.kind, 0) + len(parts) // 2
    return "".join(parts)


_default: Redactor | None = None


def default_redactor() -> Redactor:
    global _default
    if _default is None:
        _default = Redactor()
    return _default


def redact_text(s: str) -> tuple[str, Counts]:
    counts: Counts = {}
    return default_redactor().text(s, counts), counts


def redact_value(obj: Any) -> tuple[Any, Counts]:
    counts: Counts = {}
    return default_redactor().value(obj, counts), counts
