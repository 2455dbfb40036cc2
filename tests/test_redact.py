"""Secret redaction in the capture hook (``claude_rl.redact`` through ``claude_rl.capture``).

What is checked, and how:

- catch rate: every fake secret of ``tests/secret_corpus.py`` (generated at run time, seeded), in
  every field position of a real hook payload (Bash command and stdout, Read file content, the
  user prompt, an MCP result as JSON text and as a nested object, Write content, a tool error,
  the last assistant message), is gone from the written record line: not as written, not
  JSON-escaped, and a ``[REDACTED:`` marker stands in the record. Payloads go through
  ``capture.handle`` in-process; a sample goes through the real hook process;
- pass-through rate: every ordinary snippet (code, logs, docs that name passwords, tokens and
  keys, or carry hashes and ids) comes back from ``redact_text`` unchanged with zero counts, and
  its hook record holds the payload as sent, with no ``redactions``;
- both rates are printed (and shown in the terminal even under output capture) and must be 100%;
- idempotence, the text kept around a secret, user patterns and excluded paths from config, a
  bad user pattern, a hypothesis property over fresh secrets in random text, and a 1 MB run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_hook
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from secret_corpus import FAMILIES, Gen, SecretCase, ordinary_corpus, secret_cases

from claude_rl import capture
from claude_rl.redact import MARKER, compile_user_rules, redact_text, redact_value

SECRETS = secret_cases()
ORDINARY = ordinary_corpus()

# ---------------------------------------------------------------------------------------------
# Hook payloads, one builder per field position


def _base(event: str, sid: str) -> dict[str, Any]:
    return {
        "session_id": sid,
        "transcript_path": f"/home/dev/.claude/projects/-home-dev-app/{sid}.jsonl",
        "cwd": "/home/dev/app",
        "permission_mode": "default",
        "hook_event_name": event,
    }


def _tool(event: str, sid: str, name: str, tool_input: dict[str, Any], **rest: Any) -> dict[str, Any]:
    return {
        **_base(event, sid),
        "tool_name": name,
        "tool_input": tool_input,
        "tool_use_id": "toolu_01Xb7",
        **rest,
    }


POSITIONS: dict[str, Callable[[str, str], dict[str, Any]]] = {
    "Bash tool_input.command": lambda t, sid: _tool(
        "PreToolUse", sid, "Bash", {"command": t, "description": "Run the command"}
    ),
    "Bash tool_response.stdout": lambda t, sid: _tool(
        "PostToolUse",
        sid,
        "Bash",
        {"command": "cat notes.txt"},
        tool_response={"stdout": t, "stderr": "", "interrupted": False, "isImage": False},
    ),
    "Read tool_response.file.content": lambda t, sid: _tool(
        "PostToolUse",
        sid,
        "Read",
        {"file_path": "/home/dev/app/config/settings.txt"},
        tool_response={
            "type": "text",
            "file": {
                "filePath": "/home/dev/app/config/settings.txt",
                "content": t,
                "numLines": t.count("\n") + 1,
            },
        },
    ),
    "UserPromptSubmit prompt": lambda t, sid: {**_base("UserPromptSubmit", sid), "prompt": t},
    "MCP tool_response[0].text (JSON text)": lambda t, sid: _tool(
        "PostToolUse",
        sid,
        "mcp__github__get_file_contents",
        {"owner": "acme", "repo": "api", "path": "docs/notes.md"},
        tool_response=[
            {
                "type": "text",
                "text": json.dumps(
                    {"name": "notes.md", "path": "docs/notes.md", "encoding": "utf-8", "content": t}
                ),
            }
        ],
    ),
    "MCP tool_response nested object": lambda t, sid: _tool(
        "PostToolUse",
        sid,
        "mcp__search__grep",
        {"query": "connection", "limit": 5},
        tool_response={
            "content": [{"type": "text", "text": "1 match"}],
            "structuredContent": {"results": [{"id": 1, "match": {"snippet": t, "line": 12}, "score": 0.91}]},
        },
    ),
    "Write tool_input.content": lambda t, sid: _tool(
        "PreToolUse", sid, "Write", {"file_path": "/home/dev/app/notes/setup.md", "content": t}
    ),
    "PostToolUseFailure error": lambda t, sid: _tool(
        "PostToolUseFailure", sid, "Bash", {"command": "./scripts/deploy.sh"}, error=t, is_interrupt=False
    ),
    "Stop last_assistant_message": lambda t, sid: {
        **_base("Stop", sid),
        "stop_hook_active": False,
        "last_assistant_message": t,
    },
}


def capture_record(payload: dict[str, Any], root: Path) -> tuple[str, dict[str, Any]]:
    """Run one payload through ``capture.handle``; return the record line as written, and parsed."""
    raw = json.dumps(payload).encode()
    assert capture.handle(raw, payload["hook_event_name"], root) == "written"
    data = (root / "traces" / f"{payload['session_id']}.jsonl").read_bytes()
    assert data.count(b"\n") == 1 and data.endswith(b"\n")
    line = data.decode("utf-8")
    return line, json.loads(line)


def escaped_forms(needle: str) -> set[str]:
    """The needle as written, and as it reads inside one and two levels of JSON strings."""
    once = json.dumps(needle)[1:-1]
    return {needle, once, json.dumps(once)[1:-1], json.dumps(needle, ensure_ascii=False)[1:-1]}


def leaks(case: SecretCase, text: str) -> list[str]:
    return [form for needle in case.needles() for form in escaped_forms(needle) if form in text]


def report(capsys: pytest.CaptureFixture[str], message: str) -> None:
    """Print a result line: captured (shown by -rA / -s) and straight to the terminal."""
    print(message)
    with capsys.disabled():
        print(f"\n[redaction] {message}")


# ---------------------------------------------------------------------------------------------
# The two rates


def test_corpora_are_big_enough():
    kinds = {case.kind for case in SECRETS}
    assert len(SECRETS) >= 60 and len(kinds) >= 20
    assert len(ORDINARY) >= 150
    assert len({case.secret for case in SECRETS}) == len(SECRETS)  # every value generated afresh


def test_corpora_are_deterministic():
    assert secret_cases() == SECRETS and ordinary_corpus() == ORDINARY
    assert secret_cases(7) != SECRETS


def test_every_secret_in_every_field_position_is_redacted(data_home, capsys):
    failures: list[str] = []
    total = 0
    for i, case in enumerate(SECRETS):
        for j, (position, build) in enumerate(POSITIONS.items()):
            total += 1
            line, record = capture_record(build(case.text, f"secret-{i:03d}-{j}"), data_home)
            left = leaks(case, line)
            if left or "[REDACTED:" not in line or not record.get("redactions"):
                failures.append(
                    f"{case.label} in {position}: left {left[:1]}, redactions {record.get('redactions')}"
                )
    caught = total - len(failures)
    report(
        capsys,
        f"secret catch rate: {caught}/{total} = {caught / total:.1%} "
        f"({len(SECRETS)} secrets of {len({c.kind for c in SECRETS})} kinds"
        f" x {len(POSITIONS)} field positions)",
    )
    assert not failures, "\n".join(failures[:25])


def test_ordinary_text_passes_unchanged(capsys):
    changed: list[str] = []
    for label, text in ORDINARY:
        out, counts = redact_text(text)
        if out != text or counts:
            diff = next(
                (
                    f"{a!r} -> {b!r}"
                    for a, b in zip(text.splitlines(), out.splitlines(), strict=False)
                    if a != b
                ),
                "",
            )
            changed.append(f"{label}: {counts} {diff}")
    passed = len(ORDINARY) - len(changed)
    report(
        capsys,
        f"ordinary pass-through rate: {passed}/{len(ORDINARY)} = {passed / len(ORDINARY):.1%} (redact_text)",
    )
    assert not changed, "\n".join(changed[:25])


def test_ordinary_text_in_every_field_position_is_recorded_as_sent(data_home, capsys):
    changed: list[str] = []
    total = 0
    for i, (label, text) in enumerate(ORDINARY):
        for j, (position, build) in enumerate(POSITIONS.items()):
            total += 1
            payload = build(text, f"ordinary-{i:03d}-{j}")
            _, record = capture_record(payload, data_home)
            if record["payload"] != payload or "redactions" in record:
                changed.append(f"{label} in {position}: {record.get('redactions')}")
    passed = total - len(changed)
    report(
        capsys,
        f"ordinary pass-through rate in hook records: {passed}/{total} = {passed / total:.1%} "
        f"({len(ORDINARY)} snippets x {len(POSITIONS)} field positions)",
    )
    assert not changed, "\n".join(changed[:25])


def test_each_secret_is_reported_under_its_kind():
    wrong = []
    for case in SECRETS:
        _, counts = redact_text(case.text)
        if not set(counts) & set(case.kinds):
            wrong.append(f"{case.label}: expected one of {case.kinds}, got {counts}")
    assert not wrong, "\n".join(wrong)


# ---------------------------------------------------------------------------------------------
# Through the real hook process


SUBPROCESS_SAMPLE = [
    ("aws/credentials-file", "Bash tool_response.stdout"),
    ("pem/rsa-cat", "Read tool_response.file.content"),
    ("github/prompt", "UserPromptSubmit prompt"),
    ("url/postgres", "Bash tool_input.command"),
    ("bearer/curl-verbose", "MCP tool_response[0].text (JSON text)"),
    ("env/.env-unquoted", "Write tool_input.content"),
    ("jwt/set-cookie", "MCP tool_response nested object"),
]


@pytest.mark.parametrize(("label", "position"), SUBPROCESS_SAMPLE)
def test_hook_process_redacts_before_writing(data_home, label, position):
    case = next(c for c in SECRETS if c.label == label)
    sid = f"hook-{label.replace('/', '-')}"
    payload = POSITIONS[position](case.text, sid)
    proc = run_hook(payload, payload["hook_event_name"])
    assert proc.returncode == 0 and proc.stdout == b""
    line = (data_home / "traces" / f"{sid}.jsonl").read_text(encoding="utf-8")
    assert not leaks(case, line)
    assert "[REDACTED:" in line and set(json.loads(line)["redactions"]) & set(case.kinds)


# ---------------------------------------------------------------------------------------------
# Shape of the output


def test_redaction_is_idempotent():
    for case in SECRETS:
        once, counts = redact_text(case.text)
        assert counts, case.label
        twice, again = redact_text(once)
        assert (twice, again) == (once, {}), case.label
    for _, text in ORDINARY[:40]:
        assert redact_text(redact_text(text)[0]) == (text, {})
    payload = POSITIONS["MCP tool_response nested object"](SECRETS[0].text, "s")
    once, _ = redact_value(payload)
    assert redact_value(once) == (once, {})


def _kept_cases() -> list[tuple[str, str, str]]:
    g = Gen(11)
    secrets = {
        "url_password": g.url_password(),
        "bearer_token": g.opaque_token(),
        "env_secret": g.password(),
        "github_token": g.github(),
        "secret_literal": g.hex(32),
        "basic_auth": g.password(symbols="!#%*+-.=?@^_~"),
        "aws_secret_key": g.aws_secret(),
        "aws_access_key": g.aws_access_key(),
        "stripe_key": g.stripe(),
    }
    templates = [
        ("url_password", "psql postgres://bob:{S}@db:5432/app -c 'select 1'"),
        ("url_password", "redis://:{S}@cache-01:6379/0"),
        ("bearer_token", 'curl -H "Authorization: Bearer {S}" https://api.acme.dev/v1/me'),
        ("env_secret", "DB_HOST=db\nDB_PASSWORD={S}\nDB_PORT=5432"),
        ("env_secret", 'export DB_PASSWORD="{S}"\nmake migrate'),
        ("env_secret", "database:\n  password: {S}  # rotated in June\n  pool: 5"),
        ("env_secret", "PGPASSWORD={S} psql -h db -U app"),
        ("github_token", "export GITHUB_TOKEN={S} && gh repo list acme"),
        ("secret_literal", '{"api_key": "{S}", "timeout": 30}'),
        ("secret_literal", '{\\"api_key\\": \\"{S}\\", \\"timeout\\": 30}'),
        ("basic_auth", "curl -u admin:{S} https://ci.acme.dev/api/json"),
        ("aws_secret_key", "aws_secret_access_key = {S}\nregion = us-east-1"),
        ("aws_access_key", "AccessKeyId: {S} (expires in 1h)"),
        ("stripe_key", "stripe.api_key = '{S}'"),
    ]
    return [
        pytest.param(
            kind, t.replace("{S}", secrets[kind]), t.replace("{S}", MARKER.format(kind)), id=f"{kind}-{i}"
        )
        for i, (kind, t) in enumerate(templates)
    ]


@pytest.mark.parametrize(("kind", "text", "expected"), _kept_cases())
def test_only_the_secret_is_replaced(kind, text, expected):
    out, counts = redact_text(text)
    assert out == expected
    assert counts == {kind: 1}


def _prefixed_tokens() -> list[tuple[str, str]]:
    g = Gen(23)
    return [
        ("aws_access_key", g.aws_access_key()),
        ("aws_access_key", g.aws_access_key("ASIA")),
        ("github_token", g.github("ghp_")),
        ("github_token", g.github("ghs_")),
        ("github_token", g.github_pat()),
        ("gitlab_token", g.gitlab()),
        ("anthropic_key", g.anthropic()),
        ("openai_key", g.openai_project()),
        ("openai_key", g.openai_legacy()),
        ("google_api_key", g.google_api()),
        ("google_oauth", g.google_client_secret()),
        ("google_oauth", g.google_access_token()),
        ("slack_token", g.slack_bot()),
        ("stripe_key", g.stripe("sk_live_")),
        ("stripe_key", g.stripe("rk_test_")),
        ("stripe_key", g.stripe_webhook()),
        ("huggingface_token", g.huggingface()),
        ("npm_token", g.npm()),
        ("pypi_token", g.pypi()),
        ("sendgrid_key", g.sendgrid()),
        ("jwt", g.jwt()),
    ]


@pytest.mark.parametrize(("kind", "token"), [pytest.param(k, t, id=k) for k, t in _prefixed_tokens()])
def test_prefixed_tokens_are_found_wherever_a_word_can_start(kind, token):
    for before in ("", " ", "=", ":", '"', "'", "(", "\t", "\\n", "\\t", "key=", "Token: ", "\\\\n"):
        out, counts = redact_text(f"{before}{token} and more")
        assert out == f"{before}[REDACTED:{kind}] and more" and counts == {kind: 1}, repr(before)


@pytest.mark.parametrize(
    ("kind", "token"),
    [pytest.param(k, t, id=k) for k, t in _prefixed_tokens() if k not in ("pypi_token", "sendgrid_key")],
)
def test_prefixed_tokens_inside_a_longer_word_are_left_alone(kind, token):
    # "risk-...", "xAKIA...": the prefix is part of another word, not the start of a token
    _, counts = redact_text(f"x{token}")
    assert kind not in counts


def test_private_key_block_is_replaced_whole():
    case = next(c for c in SECRETS if c.label == "pem/rsa-cat")
    out, counts = redact_text(f"before\n{case.secret}\nafter")
    assert out == "before\n[REDACTED:private_key]\nafter" and counts == {"private_key": 1}


def test_truncated_private_key_is_redacted_to_the_end():
    case = next(c for c in SECRETS if c.label == "pem/truncated")
    out, _ = redact_text(case.text)
    assert out == "$ head -c 700 keys/prod.pem\n[REDACTED:private_key]"


def test_secret_keys_in_json_objects_are_redacted_whatever_the_value():
    out, counts = redact_value({"user": "bob", "password": "hunter2", "nested": [{"client_secret": "abc"}]})
    assert out == {
        "user": "bob",
        "password": "[REDACTED:secret_field]",
        "nested": [{"client_secret": "[REDACTED:secret_field]"}],
    }
    assert counts == {"secret_field": 2}
    same = {"password": "${DB_PASSWORD}", "max_tokens": 4096, "token_type": "bearer"}
    assert redact_value(same) == (same, {})


# ---------------------------------------------------------------------------------------------
# User configuration


def write_config(root: Path, section: dict[str, Any]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"capture": section}))


CONFIG = {
    "redact_patterns": [{"name": "acme_id", "pattern": "ACME-[0-9]{6}"}],
    "exclude_paths": ["secrets/*", "*.pem"],
}


def test_user_pattern_is_redacted(data_home):
    write_config(data_home, CONFIG)
    payload = POSITIONS["Bash tool_response.stdout"](
        "customer ACME-482913 renewed; ACME-77 is not an id", "cfg"
    )
    line, record = capture_record(payload, data_home)
    assert "ACME-482913" not in line
    out = record["payload"]["tool_response"]["stdout"]
    assert out == "customer [REDACTED:acme_id] renewed; ACME-77 is not an id"
    assert record["redactions"] == {"acme_id": 1}


@pytest.mark.parametrize(
    "file_path", ["/home/dev/app/secrets/prod.env", "/home/dev/app/deploy/server.pem", "secrets/local.env"]
)
def test_read_of_an_excluded_path_keeps_the_call_and_drops_the_content(data_home, file_path):
    write_config(data_home, CONFIG)
    case = next(c for c in SECRETS if c.label == "env/.env-unquoted")
    payload = _tool(
        "PostToolUse",
        "excl",
        "Read",
        {"file_path": file_path},
        tool_response={"type": "text", "file": {"filePath": file_path, "content": case.text}},
    )
    line, record = capture_record(payload, data_home)
    assert not leaks(case, line) and "DB_HOST" not in line  # all of the content is gone
    assert record["excluded_path"] == file_path
    assert record["payload"]["tool_name"] == "Read"
    assert record["payload"]["tool_input"] == {"file_path": file_path}
    assert record["payload"]["tool_response"] == f"[EXCLUDED:{file_path}]"


def test_write_to_an_excluded_path_drops_the_content(data_home):
    write_config(data_home, CONFIG)
    payload = _tool(
        "PreToolUse", "excl-w", "Write", {"file_path": "/srv/app/tls/key.pem", "content": "anything"}
    )
    _, record = capture_record(payload, data_home)
    assert record["payload"]["tool_input"] == {
        "file_path": "/srv/app/tls/key.pem",
        "content": "[EXCLUDED:/srv/app/tls/key.pem]",
    }
    assert record["excluded_path"] == "/srv/app/tls/key.pem"


def test_paths_outside_the_exclusions_keep_their_content(data_home):
    write_config(data_home, CONFIG)
    payload = POSITIONS["Read tool_response.file.content"]("print('hello')\n", "incl")
    _, record = capture_record(payload, data_home)
    assert record["payload"] == payload and "excluded_path" not in record


def test_bad_user_pattern_does_not_break_capture(data_home):
    patterns = [{"name": "broken", "pattern": "([a-z"}, 42, {"name": "acme_id", "pattern": "ACME-[0-9]{6}"}]
    rules, problems = compile_user_rules(patterns)
    assert [r.kind for r in rules] == ["acme_id"] and len(problems) == 2
    write_config(data_home, {"redact_patterns": patterns})
    case = next(c for c in SECRETS if c.label == "github/export")
    payload = POSITIONS["Bash tool_input.command"](f"{case.text}  # ticket ACME-104233", "bad-rx")
    line, record = capture_record(payload, data_home)
    assert not leaks(case, line) and "ACME-104233" not in line
    assert record["redactions"] == {"github_token": 1, "acme_id": 1}


def test_bad_user_pattern_through_the_hook_process(data_home):
    write_config(data_home, {"redact_patterns": ["(unclosed", {"pattern": "ACME-[0-9]{6}"}]})
    payload = POSITIONS["UserPromptSubmit prompt"]("look up ACME-555123 please", "bad-rx-proc")
    proc = run_hook(payload, "UserPromptSubmit")
    assert proc.returncode == 0 and proc.stdout == b""
    record = json.loads((data_home / "traces" / "bad-rx-proc.jsonl").read_text())
    assert record["payload"]["prompt"] == "look up [REDACTED:custom_1] please"


# ---------------------------------------------------------------------------------------------
# Property: a fresh secret in random text never survives

_NOISE = st.text(max_size=120)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    family=st.integers(0, len(FAMILIES) - 1),
    seed=st.integers(0, 2**32 - 1),
    pick=st.integers(0, 99),
    before=_NOISE,
    after=_NOISE,
    sep=st.sampled_from(["\n", "\r\n", "\n\n", " \n", "\n\t"]),
    crlf=st.booleans(),
    unicode_head=st.booleans(),
    wrap=st.sampled_from(["text", "json-text", "nested-value"]),
)
def test_generated_secret_never_survives(family, seed, pick, before, after, sep, crlf, unicode_head, wrap):
    cases = list(FAMILIES[family](Gen(seed)))
    case = cases[pick % len(cases)]
    body = case.text.replace("\n", "\r\n") if crlf else case.text
    # "İ" lower-cases to two characters: the case-folding rules take their slow path
    text = ("İstanbul " if unicode_head else "") + before + sep + body + sep + after
    if wrap == "text":
        out, counts = redact_text(text)
    elif wrap == "json-text":
        out, counts = redact_text(json.dumps({"result": text}))
    else:
        value, counts = redact_value({"content": [{"type": "text", "text": text}], "meta": {"notes": [text]}})
        out = json.dumps(value)
    assert not leaks(case, out), case.label
    assert counts


# ---------------------------------------------------------------------------------------------
# Cost: a sanity run, not a timing assertion


def test_one_megabyte_of_ordinary_text(capsys):
    blob = "\n\n".join(text for _, text in ORDINARY)
    big = blob * (1_000_000 // len(blob) + 1)
    start = time.perf_counter()
    out, counts = redact_text(big)
    elapsed = time.perf_counter() - start
    assert out == big and counts == {}
    report(capsys, f"redact_text on {len(big) / 1e6:.1f} MB of ordinary text: {elapsed * 1000:.0f} ms")


def test_automaton_prefilter_redacts_exactly_like_the_plain_scans():
    """Bulk redaction (pyahocorasick) and the hooks' substring scans give identical output."""
    pytest.importorskip("ahocorasick")
    import random

    from claude_rl import redact

    plain = redact.Redactor()
    plain._automata = False  # the hook path: no automaton
    bulk = redact.Redactor()
    rng = random.Random(7)
    ordinary = [text for _label, text in ORDINARY]
    filler = "\n".join(ordinary)
    cases = [case.text for case in SECRETS] + ordinary
    for text in cases:
        at = rng.randrange(len(filler))
        long_text = filler[:at] + "\n" + text + "\n" + filler[at:]
        assert len(long_text) >= redact._AUTOMATON_MIN_CHARS
        c1: dict[str, int] = {}
        c2: dict[str, int] = {}
        assert bulk.text(long_text, c2) == plain.text(long_text, c1)
        assert c1 == c2
    assert bulk._automata  # the automaton path really ran
