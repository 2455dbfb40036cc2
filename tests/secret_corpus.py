"""Corpora for the redaction tests: realistic fake secrets, and ordinary text that must pass.

Secrets are generated at run time from their format rules by a seeded ``random.Random``, so the
corpus is the same on every run and no secret-looking literal sits in the repository (secret
scanners and push protection would flag one). Every generated value is random: none of them is
a real credential.

``secret_cases(seed)`` returns :class:`SecretCase` items: the kind of secret, the exact value that
must disappear, and a realistic text around it (a config file, a command, a log, a prompt).
``ordinary_corpus(seed)`` returns ``(label, text)`` pairs of code, logs and docs that mention
passwords, tokens, keys and auth by name, or carry hashes, ids and base64, and hold no secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

UPPER = string.ascii_uppercase
LOWER = string.ascii_lowercase
DIGITS = string.digits
HEX = "0123456789abcdef"
ALNUM = UPPER + LOWER + DIGITS
B64 = ALNUM + "+/"
B64URL = ALNUM + "-_"
# Symbols a password manager puts in passwords, minus quotes, backslashes, brackets, ``$`` and
# shell operators (a value holding those would need quoting in the contexts used below).
PW_SYMBOLS = "!#%*+-.:=?@^_~"
URL_PW_SYMBOLS = "-._~!*"

# Built from parts so that no PEM header literal sits in this file.
PRIVATE_KEY = "PRIVATE" + " KEY"


@dataclass(frozen=True)
class SecretCase:
    kind: str  # the kind of secret, named as the redaction marker names it
    secret: str  # the exact value that must disappear
    text: str  # realistic text that contains it
    label: str  # where the text comes from, for failure messages
    also: tuple[str, ...] = ()  # other redaction kinds that may rightly catch it first

    @property
    def kinds(self) -> tuple[str, ...]:
        return (self.kind, *self.also)

    def needles(self) -> list[str]:
        """Substrings that must not survive redaction.

        The secret itself; for a long one also its tail and middle (a match that stopped early
        and left the rest behind still leaks); for a multi-line one (a PEM block) each line of
        key material.
        """
        if "\n" in self.secret:
            return [line for line in self.secret.splitlines() if len(line) >= 16 and "-----" not in line]
        out = [self.secret]
        n = len(self.secret)
        if n >= 20:
            out += [self.secret[-12:], self.secret[n // 2 - 6 : n // 2 + 6]]
        return out


class Gen:
    """Random values in the formats of real credentials."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def chars(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def alnum_with_digit(self, n: int, alphabet: str = ALNUM) -> str:
        """``n`` characters with at least one digit, one upper and one lower-case letter."""
        while True:
            s = self.chars(alphabet, n)
            if any(c.isdigit() for c in s) and any(c.isupper() for c in s) and any(c.islower() for c in s):
                return s

    def password(self, n: int | None = None, symbols: str = PW_SYMBOLS) -> str:
        """A password manager's password: every class, starting with a letter or digit."""
        n = n or self.rng.randint(14, 24)
        while True:
            body = [self.rng.choice(UPPER), self.rng.choice(LOWER), self.rng.choice(DIGITS)]
            body += [self.rng.choice(symbols)] if symbols else []
            body += [self.rng.choice(ALNUM + symbols) for _ in range(n - len(body))]
            self.rng.shuffle(body)
            s = "".join(body)
            if s[0].isalnum() and ".." not in s and "**" not in s:
                return s

    def hex(self, n: int) -> str:
        return self.chars(HEX, n)

    def b64_bytes(self, n: int, urlsafe: bool = False) -> str:
        raw = bytes(self.rng.getrandbits(8) for _ in range(n))
        enc = base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)
        return enc.decode()

    def word(self) -> str:
        return self.rng.choice(["alice", "bob", "deploy", "ci-bot", "svc_orders", "admin", "jenkins", "app"])

    def host(self) -> str:
        return self.rng.choice(
            ["db.internal", "10.0.4.12", "pg-primary.prod.svc", "localhost", "db-01.acme.dev"]
        )

    # -- formats of real credentials ---------------------------------------------------------

    def aws_access_key(self, prefix: str = "AKIA") -> str:
        return prefix + self.chars(UPPER + DIGITS, 16)

    def aws_secret(self) -> str:
        return self.alnum_with_digit(40, ALNUM + "+/")

    def github(self, prefix: str = "ghp_") -> str:
        return prefix + self.alnum_with_digit(36)

    def github_pat(self) -> str:
        return "github_pat_11" + self.chars(UPPER + DIGITS, 20) + "_" + self.alnum_with_digit(59)

    def gitlab(self) -> str:
        return "glpat-" + self.alnum_with_digit(20, ALNUM + "-_")

    def anthropic(self) -> str:
        return "sk-ant-api03-" + self.alnum_with_digit(93, B64URL) + "AA"

    def openai_project(self) -> str:
        return "sk-proj-" + self.alnum_with_digit(156, B64URL)

    def openai_legacy(self) -> str:
        return "sk-" + self.alnum_with_digit(20) + "T3BlbkFJ" + self.alnum_with_digit(20)

    def google_api(self) -> str:
        return "AIza" + self.alnum_with_digit(35, B64URL)

    def google_client_secret(self) -> str:
        return "GOCSPX-" + self.alnum_with_digit(28, B64URL)

    def google_access_token(self) -> str:
        return "ya29.a0" + self.alnum_with_digit(150, B64URL)

    def slack_bot(self, prefix: str = "xoxb-") -> str:
        return f"{prefix}{self.chars(DIGITS, 12)}-{self.chars(DIGITS, 13)}-{self.alnum_with_digit(24)}"

    def slack_webhook(self) -> str:
        team = "T" + self.chars(UPPER + DIGITS, 8)
        hook = "B" + self.chars(UPPER + DIGITS, 10)
        return f"https://hooks.slack.com/services/{team}/{hook}/{self.alnum_with_digit(24)}"

    def stripe(self, prefix: str = "sk_live_") -> str:
        return prefix + "51" + self.alnum_with_digit(97)

    def stripe_webhook(self) -> str:
        return "whsec_" + self.alnum_with_digit(32)

    def huggingface(self) -> str:
        return "hf_" + self.alnum_with_digit(34)

    def npm(self) -> str:
        return "npm_" + self.alnum_with_digit(36)

    def pypi(self) -> str:
        # the macaroon every PyPI token starts with: b"\x02\x01\x08pypi.org" in base64
        head = base64.b64encode(b"\x02\x01\x08pypi.org").decode()[:15]
        return "pypi-" + head + self.alnum_with_digit(150, B64URL)

    def sendgrid(self) -> str:
        return f"SG.{self.alnum_with_digit(22, B64URL)}.{self.alnum_with_digit(43, B64URL)}"

    def jwt(self) -> str:
        def part(obj: dict) -> str:
            return (
                base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode().rstrip("=")
            )

        iat = self.rng.randint(1_700_000_000, 1_760_000_000)
        header = part({"alg": self.rng.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"})
        claims = {
            "sub": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "iat": iat,
            "exp": iat + 900,
        }
        if self.rng.random() < 0.5:
            claims["scope"] = "read:orders write:orders"
        return f"{header}.{part(claims)}.{self.b64_bytes(32, urlsafe=True).rstrip('=')}"

    def opaque_token(self) -> str:
        while True:  # no "..": it reads as an elided value in docs ("Bearer eyJhbGci...")
            tok = self.alnum_with_digit(self.rng.randint(32, 64), ALNUM + "-._~")
            if ".." not in tok:
                return tok

    def url_password(self) -> str:
        pw = self.password(self.rng.randint(14, 22), URL_PW_SYMBOLS)
        if self.rng.random() < 0.4:  # a percent-encoded @ or # in the middle
            i = self.rng.randint(2, len(pw) - 2)
            pw = pw[:i] + self.rng.choice(["%40", "%23", "%2F"]) + pw[i:]
        return pw

    def pem_body(self, der_prefix: bytes, nbytes: int, width: int = 64) -> list[str]:
        raw = der_prefix + bytes(self.rng.getrandbits(8) for _ in range(nbytes))
        b64 = base64.b64encode(raw).decode()
        return [b64[i : i + width] for i in range(0, len(b64), width)]


def _pem(label: str, lines: list[str], headers: str = "") -> str:
    name = f"{label} {PRIVATE_KEY}".strip()
    return f"-----BEGIN {name}-----\n{headers}" + "\n".join(lines) + f"\n-----END {name}-----"


# ---------------------------------------------------------------------------------------------
# Secret cases, one family per function


def _aws(g: Gen) -> Iterator[SecretCase]:
    akid, secret = g.aws_access_key(), g.aws_secret()
    creds = (
        f"[default]\naws_access_key_id = {akid}\naws_secret_access_key = {secret}\nregion = us-east-1\n\n"
        "[staging]\nrole_arn = arn:aws:iam::381492660315:role/deploy\nsource_profile = default\n"
    )
    yield SecretCase("aws_access_key", akid, creds, "aws/credentials-file")
    yield SecretCase("aws_secret_key", secret, creds, "aws/credentials-file")

    akid, secret = g.aws_access_key("ASIA"), g.aws_secret()
    session = "IQoJb3JpZ2luX2VjE" + g.alnum_with_digit(340, B64)
    sts = json.dumps(
        {
            "Credentials": {
                "AccessKeyId": akid,
                "SecretAccessKey": secret,
                "SessionToken": session,
                "Expiration": "2025-06-12T18:22:41+00:00",
            },
            "AssumedRoleUser": {
                "AssumedRoleId": "AROAVZQX3EXAMPLEROLE:ci",
                "Arn": "arn:aws:sts::381492660315:assumed-role/deploy/ci",
            },
        },
        indent=4,
    )
    yield SecretCase("aws_access_key", akid, sts, "aws/sts-assume-role-output")
    yield SecretCase("secret_literal", secret, sts, "aws/sts-assume-role-output", ("aws_secret_key",))
    yield SecretCase("secret_literal", session, sts, "aws/sts-session-token")

    akid, secret = g.aws_access_key(), g.aws_secret()
    env = (
        f"export AWS_ACCESS_KEY_ID={akid}\nexport AWS_SECRET_ACCESS_KEY={secret}\n"
        "export AWS_DEFAULT_REGION=eu-west-1\naws s3 ls s3://acme-build-artifacts/releases/"
    )
    yield SecretCase("aws_secret_key", secret, env, "aws/shell-exports", ("env_secret",))

    akid, secret = g.aws_access_key(), g.aws_secret()
    code = (
        "import boto3\n\n"
        f's3 = boto3.client(\n    "s3",\n    aws_access_key_id="{akid}",\n'
        f'    aws_secret_access_key="{secret}",\n    region_name="us-west-2",\n)\n'
        's3.upload_file("build/report.pdf", "acme-reports", "2025/q2/report.pdf")\n'
    )
    yield SecretCase("aws_access_key", akid, code, "aws/boto3-inline")
    yield SecretCase("aws_secret_key", secret, code, "aws/boto3-inline", ("secret_literal",))


def _github(g: Gen) -> Iterator[SecretCase]:
    tok = g.github("ghs_")
    yield SecretCase(
        "github_token",
        tok,
        f"git clone https://x-access-token:{tok}@github.com/acme/deploy-scripts.git /tmp/deploy-scripts",
        "github/clone-url",
        ("url_password",),
    )
    tok = g.github("ghp_")
    yield SecretCase(
        "github_token", tok, f"export GITHUB_TOKEN={tok}\ngh pr list --state open --limit 20", "github/export"
    )
    pat = g.github_pat()
    yield SecretCase(
        "github_token",
        pat,
        f"origin\thttps://octocat:{pat}@github.com/acme/api.git (fetch)\n"
        f"origin\thttps://octocat:{pat}@github.com/acme/api.git (push)\n",
        "github/git-remote-v",
        ("url_password",),
    )
    tok = g.github("ghp_")
    yield SecretCase(
        "github_token",
        tok,
        f"my PAT is {tok} - can you push the release branch for me? git keeps asking for a password",
        "github/prompt",
    )
    tok = g.github("gho_")
    yield SecretCase(
        "github_token",
        tok,
        f"github.com:\n    users:\n        octocat:\n            oauth_token: {tok}\n"
        f"    oauth_token: {tok}\n    git_protocol: https\n    user: octocat\n",
        "github/gh-hosts-yml",
        ("env_secret",),
    )


def _gitlab(g: Gen) -> Iterator[SecretCase]:
    tok = g.gitlab()
    yield SecretCase(
        "gitlab_token",
        tok,
        f'curl --header "PRIVATE-TOKEN: {tok}" "https://gitlab.example.com/api/v4/projects?membership=true"',
        "gitlab/curl-header",
    )
    tok = g.gitlab()
    yield SecretCase(
        "gitlab_token",
        tok,
        f"git push https://oauth2:{tok}@gitlab.com/platform/infra.git HEAD:main",
        "gitlab/push-url",
        ("url_password",),
    )


def _ai_keys(g: Gen) -> Iterator[SecretCase]:
    key = g.anthropic()
    yield SecretCase(
        "anthropic_key",
        key,
        f"ANTHROPIC_API_KEY={key}\nANTHROPIC_MODEL=claude-sonnet-4-5\n",
        "anthropic/.env",
    )
    key = g.anthropic()
    yield SecretCase(
        "anthropic_key",
        key,
        "curl https://api.anthropic.com/v1/messages \\\n"
        f'  -H "x-api-key: {key}" \\\n  -H "anthropic-version: 2023-06-01" \\\n'
        '  -H "content-type: application/json" \\\n'
        '  -d \'{"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": [{"role": "user", "content":'
        ' "hi"}]}\'',
        "anthropic/curl",
    )
    key = g.anthropic()
    yield SecretCase(
        "anthropic_key",
        key,
        f'import anthropic\n\nclient = anthropic.Anthropic(api_key="{key}")\n',
        "anthropic/python",
        ("secret_literal",),
    )
    key = g.openai_project()
    yield SecretCase(
        "openai_key",
        key,
        "Traceback (most recent call last):\n"
        '  File "/home/dev/app/summarize.py", line 41, in <module>\n'
        "    resp = client.chat.completions.create(model=MODEL, messages=msgs)\n"
        "openai.AuthenticationError: Error code: 401 - {'error': {'message': 'Incorrect API key "
        f"provided: {key}. You can find your API key at https://platform.openai.com/account/api-keys.', "
        "'type': 'invalid_request_error', 'param': None, 'code': 'invalid_api_key'}}",
        "openai/traceback",
    )
    key = g.openai_legacy()
    yield SecretCase(
        "openai_key", key, f'OPENAI_API_KEY="{key}"\nOPENAI_ORG=org-acme\n', "openai/.env-quoted"
    )
    key = g.openai_project()
    yield SecretCase(
        "openai_key",
        key,
        f'import OpenAI from "openai";\n\nconst openai = new OpenAI({{ apiKey: "{key}" }});\n',
        "openai/js",
        ("secret_literal",),
    )


def _google(g: Gen) -> Iterator[SecretCase]:
    key = g.google_api()
    yield SecretCase(
        "google_api_key",
        key,
        "const firebaseConfig = {\n"
        f'  apiKey: "{key}",\n  authDomain: "acme-web-7f3c1.firebaseapp.com",\n'
        '  projectId: "acme-web-7f3c1",\n  storageBucket: "acme-web-7f3c1.appspot.com",\n'
        '  messagingSenderId: "480213775512",\n};\n',
        "google/firebase-config",
    )
    key = g.google_api()
    yield SecretCase(
        "google_api_key",
        key,
        "curl -s 'https://maps.googleapis.com/maps/api/geocode/json?address=1600+Amphitheatre+Parkway"
        f"&key={key}' | jq '.results[0].geometry'",
        "google/maps-url",
        ("url_password",),
    )
    secret = g.google_client_secret()
    yield SecretCase(
        "google_oauth",
        secret,
        json.dumps(
            {
                "installed": {
                    "client_id": "480213775512-5kq0v3h1rsd8e2m7.apps.googleusercontent.com",
                    "project_id": "acme-web-7f3c1",
                    "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                    "token_uri": "https://oauth2.googleapis.com/token",
                    "client_secret": secret,
                    "redirect_uris": ["http://localhost"],
                }
            }
        ),
        "google/client-secret-json",
        ("secret_literal",),
    )
    tok = g.google_access_token()
    yield SecretCase(
        "google_oauth",
        tok,
        f'curl -H "Authorization: Bearer {tok}" https://www.googleapis.com/drive/v3/files?pageSize=10',
        "google/access-token",
        ("bearer_token",),
    )


def _slack(g: Gen) -> Iterator[SecretCase]:
    tok = g.slack_bot()
    yield SecretCase(
        "slack_token", tok, f"SLACK_BOT_TOKEN={tok}\nSLACK_CHANNEL=#deploys\n", "slack/.env", ("env_secret",)
    )
    tok = g.slack_bot("xoxp-")
    yield SecretCase(
        "slack_token",
        tok,
        f'from slack_sdk import WebClient\n\nclient = WebClient(token="{tok}")\n'
        'client.chat_postMessage(channel="#deploys", text="build 1432 is green")\n',
        "slack/python",
        ("secret_literal",),
    )
    hook = g.slack_webhook()
    yield SecretCase(
        "slack_webhook",
        hook,
        "curl -X POST -H 'Content-type: application/json' "
        f'--data \'{{"text":"Deploy of api@4.12.0 finished"}}\' {hook}',
        "slack/webhook-curl",
    )


def _stripe(g: Gen) -> Iterator[SecretCase]:
    key = g.stripe("sk_live_")
    yield SecretCase(
        "stripe_key",
        key,
        f"STRIPE_PUBLISHABLE_KEY=pk_live_51Hx\nSTRIPE_SECRET={key}\n",
        "stripe/.env",
        ("env_secret",),
    )
    key = g.stripe("sk_test_")
    yield SecretCase(
        "stripe_key",
        key,
        f'import stripe\n\nstripe.api_key = "{key}"\nstripe.Customer.list(limit=3)\n',
        "stripe/python",
        ("secret_literal",),
    )
    key = g.stripe("rk_live_")
    yield SecretCase(
        "stripe_key", key, f"stripe customers list --limit 5 --api-key {key}", "stripe/cli-restricted-key"
    )
    secret = g.stripe_webhook()
    yield SecretCase(
        "stripe_key",
        secret,
        "> Ready! You are using Stripe API Version [2024-06-20]. "
        f"Your webhook signing secret is {secret} (^C to quit)",
        "stripe/listen-output",
    )


def _registries(g: Gen) -> Iterator[SecretCase]:
    tok = g.huggingface()
    yield SecretCase(
        "huggingface_token",
        tok,
        f"huggingface-cli login --token {tok} --add-to-git-credential",
        "huggingface/cli-login",
    )
    tok = g.huggingface()
    yield SecretCase(
        "huggingface_token",
        tok,
        f"HF_TOKEN={tok} python train.py --model meta-llama/Llama-3.2-1B --epochs 3",
        "huggingface/inline-env",
        ("env_secret",),
    )
    tok = g.npm()
    yield SecretCase(
        "npm_token",
        tok,
        f"registry=https://registry.npmjs.org/\n//registry.npmjs.org/:_authToken={tok}\nsave-exact=true\n",
        "npm/.npmrc",
    )
    tok = g.pypi()
    yield SecretCase(
        "pypi_token",
        tok,
        f"[distutils]\nindex-servers =\n    pypi\n\n[pypi]\nusername = __token__\npassword = {tok}\n",
        "pypi/.pypirc",
        ("env_secret",),
    )
    key = g.sendgrid()
    yield SecretCase(
        "sendgrid_key",
        key,
        f"SENDGRID_API_KEY={key}\nMAIL_FROM=noreply@acme.dev\n",
        "sendgrid/.env",
        ("env_secret",),
    )


def _jwt(g: Gen) -> Iterator[SecretCase]:
    tok = g.jwt()
    yield SecretCase(
        "jwt",
        tok,
        "HTTP/1.1 200 OK\nContent-Type: application/json\n"
        f"Set-Cookie: session={tok}; Path=/; HttpOnly; Secure; SameSite=Lax\n\n"
        '{"ok": true, "user": {"id": 4821, "email": "dana@example.com"}}',
        "jwt/set-cookie",
    )
    tok = g.jwt()
    yield SecretCase(
        "jwt",
        tok,
        f'localStorage.setItem("access_token", "{tok}");',
        "jwt/local-storage",
        ("secret_literal",),
    )
    tok = g.jwt()
    yield SecretCase(
        "jwt",
        tok,
        f"2025-06-11T09:14:22.481Z DEBUG auth.middleware decoded token {tok} for user_id=4821 in 0.4ms",
        "jwt/log-line",
    )
    tok = g.jwt()
    yield SecretCase(
        "jwt",
        tok,
        f"curl -s https://api.acme.dev/v1/me -H 'Authorization: Bearer {tok}'",
        "jwt/bearer",
        ("bearer_token",),
    )


def _http_auth(g: Gen) -> Iterator[SecretCase]:
    tok = g.opaque_token()
    yield SecretCase(
        "bearer_token",
        tok,
        f'curl -sS -H "Authorization: Bearer {tok}" https://api.acme.dev/v1/invoices?status=open | jq length',
        "bearer/curl",
    )
    tok = g.opaque_token()
    yield SecretCase(
        "bearer_token",
        tok,
        "*   Trying 104.18.22.113:443...\n* Connected to api.acme.dev (104.18.22.113) port 443\n"
        "> GET /v1/projects HTTP/2\n> Host: api.acme.dev\n> User-Agent: curl/8.5.0\n"
        f"> Accept: */*\n> Authorization: Bearer {tok}\n>\n< HTTP/2 200\n< content-type: application/json\n",
        "bearer/curl-verbose",
    )
    tok = g.opaque_token()
    yield SecretCase(
        "bearer_token",
        tok,
        f'headers = {{"Authorization": "Bearer {tok}", "Accept": "application/json"}}\n'
        'resp = requests.get(f"{BASE_URL}/deployments", headers=headers, timeout=10)\n',
        "bearer/python-headers",
    )
    tok = g.opaque_token()
    yield SecretCase(
        "bearer_token",
        tok,
        f"POST /v2/deployments HTTP/1.1\nHost: deploy.internal.acme.dev\nAuthorization: Bearer {tok}\n"
        'Content-Type: application/json\nContent-Length: 58\n\n{"service": "api", "version": "4.12.0"}',
        "bearer/raw-request",
    )
    user, pw = g.word(), g.password()
    cred = base64.b64encode(f"{user}:{pw}".encode()).decode()
    yield SecretCase(
        "basic_auth",
        cred,
        f"> GET /api/json?tree=jobs[name,color] HTTP/1.1\n> Host: jenkins.acme.dev\n"
        f"> Authorization: Basic {cred}\n> User-Agent: curl/8.5.0\n",
        "basic/header",
    )
    user, pw = g.word(), g.password()
    cred = base64.b64encode(f"{user}:{pw}".encode()).decode()
    yield SecretCase(
        "basic_auth",
        cred,
        f'req.add_header("Authorization", "Basic {cred}")\nwith urllib.request.urlopen(req) as resp:\n',
        "basic/python",
    )
    user, pw = g.word(), g.password(symbols="!#%*+-.=?@^_~")
    yield SecretCase(
        "basic_auth",
        pw,
        f"curl -u {user}:{pw} https://jenkins.acme.dev/job/api/lastBuild/api/json",
        "basic/curl-u",
    )
    user, pw = g.word(), g.password()
    yield SecretCase(
        "basic_auth",
        pw,
        f'curl --user "{user}:{pw}" -X POST https://registry.acme.dev/v2/token',
        "basic/curl-user-quoted",
    )


def _urls(g: Gen) -> Iterator[SecretCase]:
    pw = g.url_password()
    yield SecretCase(
        "url_password",
        pw,
        f"psql postgres://{g.word()}:{pw}@{g.host()}:5432/orders -c 'select count(*) from orders'",
        "url/postgres",
    )
    pw = g.url_password()
    yield SecretCase(
        "url_password",
        pw,
        f"DATABASE_URL=postgresql://app:{pw}@pg-primary.prod.svc:5432/app?sslmode=require\n"
        "REDIS_URL=redis://cache:6379/0\n",
        "url/.env-database-url",
        ("env_secret",),
    )
    pw = g.url_password()
    yield SecretCase(
        "url_password",
        pw,
        f"remote: Enumerating objects: 5, done.\nTo https://deploy:{pw}@git.acme.dev/platform/infra.git\n"
        "   3f9c2ab..8e41d07  main -> main\n",
        "url/https-git",
    )
    pw = g.url_password()
    yield SecretCase(
        "url_password",
        pw,
        f'CELERY_BROKER_URL = "redis://:{pw}@cache-01.internal:6379/0"\n',
        "url/redis-no-user",
    )
    pw = g.url_password()
    cluster = g.chars(LOWER + DIGITS, 5)
    yield SecretCase(
        "url_password",
        pw,
        "const uri ="
        f' "mongodb+srv://svc_orders:{pw}@cluster0.{cluster}.mongodb.net/?retryWrites=true&w=majority";\n'
        "const client = new MongoClient(uri);\n",
        "url/mongodb-srv",
    )
    pw = g.url_password()
    yield SecretCase(
        "url_password",
        pw,
        "[2025-06-11 09:14:22,481: ERROR/MainProcess] consumer: Cannot connect to"
        f" amqp://guest:{pw}@rabbitmq:5672//: "
        "[Errno 111] Connection refused.",
        "url/amqp-log",
    )
    pw = g.password(symbols=URL_PW_SYMBOLS)
    yield SecretCase(
        "url_password",
        pw,
        f"spring.datasource.url=jdbc:postgresql://db:5432/app?user=app&password={pw}&ssl=true\n",
        "url/jdbc-query",
    )
    pw = g.password(16, symbols="!*-._~") + "@" + g.password(6, symbols="")
    yield SecretCase(
        "url_password", pw, f"mysql://root:{pw}@localhost:3306/shop", "url/unencoded-at-in-password"
    )


def _private_keys(g: Gen) -> Iterator[SecretCase]:
    rsa = _pem("RSA", g.pem_body(b"\x30\x82\x04\xa4\x02\x01\x00\x02\x82\x01\x01\x00", 1180))
    yield SecretCase("private_key", rsa, f"$ cat ~/.ssh/deploy_rsa\n{rsa}\n$ ", "pem/rsa-cat")
    ec = _pem("EC", g.pem_body(b"\x30\x77\x02\x01\x01\x04\x20", 112))
    yield SecretCase("private_key", ec, f"# server TLS key, do not commit\n{ec}\n", "pem/ec-file")
    ssh = _pem("OPENSSH", g.pem_body(b"openssh-key-v1\x00\x00\x00\x00\x04none", 380, width=70))
    yield SecretCase("private_key", ssh, ssh + "\n", "pem/openssh")
    pkcs8 = _pem("", g.pem_body(b"\x30\x82\x04\xbd\x02\x01\x00\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7", 1200))
    yield SecretCase(
        "private_key",
        pkcs8,
        f"const signingKey = `{pkcs8}`;\nexport default signingKey;\n",
        "pem/pkcs8-js-template",
    )
    enc = _pem(
        "RSA",
        g.pem_body(b"\x9f\x11", 1190),
        headers=f"Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,{g.hex(32).upper()}\n\n",
    )
    yield SecretCase("private_key", enc, enc, "pem/rsa-encrypted")
    # A block cut short (a truncated tool output): no END line.
    lines = g.pem_body(b"\x30\x82\x04\xa4\x02\x01\x00\x02\x82\x01\x01\x00", 1180)[:9]
    partial = f"-----BEGIN RSA {PRIVATE_KEY}-----\n" + "\n".join(lines) + "\n" + g.chars(B64, 23)
    yield SecretCase("private_key", partial, f"$ head -c 700 keys/prod.pem\n{partial}", "pem/truncated")
    gcp_lines = g.pem_body(b"\x30\x82\x04\xbd\x02\x01\x00\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7", 1200)
    gcp_pem = _pem("", gcp_lines) + "\n"
    sa = json.dumps(
        {
            "type": "service_account",
            "project_id": "acme-data-prod",
            "private_key_id": g.hex(40),
            "private_key": gcp_pem,
            "client_email": "etl-runner@acme-data-prod.iam.gserviceaccount.com",
            "client_id": "104835521077214339817",
            "token_uri": "https://oauth2.googleapis.com/token",
        },
        indent=2,
    )
    yield SecretCase("private_key", gcp_pem, sa, "pem/gcp-service-account-json")


def _assignments(g: Gen) -> Iterator[SecretCase]:
    pw, session, api = g.password(), g.hex(64), g.alnum_with_digit(32)
    dotenv = (
        "# --- database ---\nAPP_ENV=production\nDB_HOST=db.internal\nDB_PORT=5432\nDB_USER=app\n"
        f'DB_PASSWORD={pw}\n\n# --- sessions ---\nSESSION_SECRET="{session}"\nSESSION_TTL=86400\n'
        f"API_KEY='{api}'\nLOG_LEVEL=info\n"
    )
    yield SecretCase("env_secret", pw, dotenv, "env/.env-unquoted")
    yield SecretCase("env_secret", session, dotenv, "env/.env-double-quoted")
    yield SecretCase("env_secret", api, dotenv, "env/.env-single-quoted")
    pw = g.password()
    yield SecretCase(
        "env_secret",
        pw,
        f"export REGISTRY_PASSWORD='{pw}'\ndocker login registry.acme.dev -u ci",
        "env/export-quoted",
    )
    tok = g.alnum_with_digit(40, ALNUM + "-_")
    yield SecretCase(
        "env_secret", tok, f"export SENTRY_AUTH_TOKEN={tok}\nsentry-cli releases new 4.12.0", "env/export"
    )
    pw = g.password()
    yield SecretCase(
        "env_secret",
        pw,
        f"PGPASSWORD={pw} psql -h db.internal -U app -d app -c 'select count(*) from orders'",
        "env/inline-command",
    )
    pw = g.password()
    yield SecretCase(
        "env_secret",
        pw,
        f"docker run -d --name pg -e POSTGRES_PASSWORD={pw} -p 5432:5432 postgres:16",
        "env/docker-run-e",
    )
    pw = g.password()
    yield SecretCase(
        "env_secret",
        pw,
        f"config/.env.production:3:DB_USER=app\nconfig/.env.production:4:DB_PASSWORD={pw}\n"
        "config/.env.example:4:DB_PASSWORD=\n",
        "env/grep-output",
    )
    key = g.alnum_with_digit(32)
    yield SecretCase(
        "env_secret", key, f'$env:ACME_API_KEY = "{key}"\n.\\deploy.ps1 -Stage prod', "env/powershell"
    )
    pw = g.password()
    yield SecretCase(
        "env_secret",
        pw,
        "services:\n  db:\n    image: postgres:16\n    environment:\n      POSTGRES_USER: app\n"
        f'      POSTGRES_PASSWORD: {pw}\n    ports:\n      - "5432:5432"\n',
        "env/docker-compose-yaml",
    )
    pw = g.password()
    yield SecretCase(
        "env_secret",
        pw,
        f"database:\n  host: db.internal\n  port: 5432\n  username: app\n  password: {pw}\n  pool: 10\n",
        "env/yaml-password",
    )
    pw = g.password()
    yield SecretCase(
        "env_secret",
        pw,
        f"spring.datasource.url=jdbc:postgresql://db:5432/app\nspring.datasource.username=app\n"
        f"spring.datasource.password={pw}\n",
        "env/java-properties",
    )
    pw = g.password()
    yield SecretCase(
        "env_secret", pw, f"[client]\nuser = backup\npassword = {pw}\nhost = db.internal\n", "env/my-cnf"
    )
    base = g.hex(128)
    yield SecretCase("env_secret", base, f"production:\n  secret_key_base: {base}\n", "env/rails-secrets-yml")
    key = g.hex(32)
    yield SecretCase(
        "secret_literal",
        key,
        json.dumps({"service": "geocoder", "api_key": key, "timeout_ms": 2500}, indent=2),
        "literal/json-api-key",
    )
    tok = "1//0g" + g.alnum_with_digit(98, B64URL)
    yield SecretCase(
        "secret_literal",
        tok,
        json.dumps(
            {
                "access_token": "ya29.a0" + g.alnum_with_digit(150, B64URL),
                "refresh_token": tok,
                "token_type": "Bearer",
                "expires_in": 3599,
            }
        ),
        "literal/json-refresh-token",
    )
    django = "django-insecure-" + g.chars(LOWER + DIGITS + "!@#$%^&*(-_=+)", 50)
    yield SecretCase(
        "env_secret",
        django,
        f'# SECURITY WARNING: keep the secret key used in production secret!\nSECRET_KEY = "{django}"\n\n'
        "# SECURITY WARNING: don't run with debug turned on in production!\nDEBUG = True\n",
        "literal/django-secret-key",
        ("secret_literal",),
    )
    pw = g.password()
    yield SecretCase(
        "secret_literal",
        pw,
        f'db_username = "app"\ndb_password = "{pw}"\ninstance_class = "db.t4g.medium"\n',
        "literal/terraform-tfvars",
    )
    secret = g.hex(48)
    yield SecretCase(
        "secret_literal",
        secret,
        f"module.exports = {{\n  port: 8080,\n  jwtSecret: '{secret}',\n  tokenTtl: '15m',\n}};\n",
        "literal/js-config",
    )


FAMILIES: tuple[Callable[[Gen], Iterator[SecretCase]], ...] = (
    _aws,
    _github,
    _gitlab,
    _ai_keys,
    _google,
    _slack,
    _stripe,
    _registries,
    _jwt,
    _http_auth,
    _urls,
    _private_keys,
    _assignments,
)


def secret_cases(seed: int = 20250611) -> list[SecretCase]:
    g = Gen(seed)
    return [case for family in FAMILIES for case in family(g)]


# ---------------------------------------------------------------------------------------------
# Ordinary text: code, logs and docs that must pass unchanged

_P = PRIVATE_KEY

ORDINARY: tuple[str, ...] = (
    # --- Python -----------------------------------------------------------------------------
    'import getpass\n\npassword = getpass.getpass("Password: ")\n'
    "conn = connect(user=user, password=password)",
    'token = request.headers.get("Authorization")\nif token is None:\n    abort(401)',
    "def verify_token(token: str) -> dict:\n"
    '    return jwt.decode(token, settings.SECRET_KEY, algorithms=["HS256"])',
    'api_key = os.environ["API_KEY"]',
    "MAX_TOKENS=4096",
    'token_type = "bearer"',
    'cache_key = f"user:{uid}"',
    'SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY")\nDEBUG = os.environ.get("DEBUG") == "1"\n'
    'ALLOWED_HOSTS = ["api.acme.dev"]',
    "AUTH_PASSWORD_VALIDATORS = [\n"
    '    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},\n'
    '    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},\n]',
    'PASSWORD_HASHERS = [\n    "django.contrib.auth.hashers.Argon2PasswordHasher",\n'
    '    "django.contrib.auth.hashers.PBKDF2PasswordHasher",\n]',
    "class TokenResponse(BaseModel):\n    access_token: str\n    refresh_token: Optional[str] = None\n"
    '    token_type: str = "bearer"\n    expires_in: int',
    "class Settings(BaseSettings):\n    database_url: str\n    secret_key: SecretStr\n"
    '    access_token_expire_minutes: int = 30\n\n    model_config = SettingsConfigDict(env_file=".env")',
    'oauth2_scheme = OAuth2PasswordBearer(tokenUrl="token")',
    "def hash_password(password: str) -> str:\n"
    "    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()",
    "if not secrets.compare_digest(provided_token, expected_token):\n"
    '    raise HTTPException(status_code=401, detail="Invalid token")',
    "secret = secrets.token_hex(32)\nstore.put(user_id, secret)",
    'tokens = tokenizer.encode(text)\nmax_tokens = min(len(tokens), 2048)\nprint(f"{len(tokens)} tokens")',
    'parser.add_argument("--api-key", default=os.getenv("OPENAI_API_KEY"),\n'
    '                    help="API key (defaults to $OPENAI_API_KEY)")',
    'response = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)',
    'key = hashlib.sha256(f"{user_id}:{path}".encode()).hexdigest()',
    "def test_login_rejects_bad_password(client):\n"
    '    resp = client.post("/login", json={"username": "alice", "password": "wrong"})\n'
    "    assert resp.status_code == 401",
    'assert user.check_password("correct horse battery staple")',
    'logger.info("Refreshing access token for user %s", user.id)',
    "TOKEN_EXPIRY_SECONDS = 3600\nPASSWORD_RESET_TIMEOUT = 259200",
    'CSRF_COOKIE_NAME = "csrftoken"\nCSRF_HEADER_NAME = "HTTP_X_CSRFTOKEN"',
    'API_KEY_HEADER = "X-API-Key"\nCSRF_TOKEN_HEADER = "X-CSRF-Token"',
    "SECRET_KEY = get_random_secret_key()",
    'JWT_SECRET_KEY = os.environ["JWT_SECRET_KEY"]\nJWT_ALGORITHM = "HS256"\n'
    "ACCESS_TOKEN_EXPIRE_MINUTES = 30",
    '_PATH_KEYS = ("file_path", "path", "notebook_path")\n_SECRET_KEYS = ("password", "token")',
    'session = boto3.Session(profile_name="dev")\ncreds = session.get_credentials()\n'
    'print(creds.access_key[:4] + "****")',
    'for key, value in sorted(config.items()):\n    print(f"{key}={value}")',
    'with open(os.path.expanduser("~/.config/acme/token")) as fh:\n    token = fh.read().strip()',
    "from cryptography.hazmat.primitives import serialization\n\n"
    "private_key = serialization.load_pem_private_key(pem_bytes, password=None)\n"
    "public_key = private_key.public_key()",
    f'if not pem.startswith(b"-----BEGIN RSA {_P}-----"):\n    raise ValueError("not an RSA key")',
    f'PEM_HEADER = "-----BEGIN {_P}-----"\nPEM_FOOTER = "-----END {_P}-----"',
    "client = OpenAI(api_key=API_KEY)\nresp = client.responses.create(model=MODEL, input=prompt)",
    "auth = HTTPBasicAuth(username, password)\nr = requests.get(url, auth=auth)",
    "    password: str\n    remember_me: bool = False",
    '@router.post("/token", response_model=TokenResponse)\n'
    "async def login(form: OAuth2PasswordRequestForm = Depends()) -> TokenResponse:",
    'def rotate_api_key(account_id: int) -> str:\n    """Revoke the old key and return a new one."""',
    # --- JavaScript / TypeScript --------------------------------------------------------------
    'const token = req.headers.authorization?.split(" ")[1];',
    "export async function refreshAccessToken(refreshToken: string): Promise<TokenPair> {",
    "const apiKey = process.env.STRIPE_SECRET_KEY;\n"
    'if (!apiKey) throw new Error("STRIPE_SECRET_KEY is not set");',
    "const user = await prisma.user.create({\n  data: {\n    email,\n    password: hashedPassword,\n  },\n"
    "});",
    "const res = await fetch(`${API}/me`, {\n  headers: { Authorization: `Bearer ${session.accessToken}` },\n"
    "});",
    'localStorage.removeItem("token");',
    'const [password, setPassword] = useState("");',
    '<input type="password" name="password" autoComplete="current-password" />',
    'const token = jwt.sign({ sub: user.id }, process.env.JWT_SECRET!, { expiresIn: "15m" });',
    'function requireAuth(req, res, next) {\n  const header = req.get("authorization") || "";\n'
    '  if (!header.startsWith("Bearer ")) return res.status(401).json({ error: "missing bearer token" });\n'
    "  next();\n}",
    "interface Credentials {\n  username: string;\n  password: string;\n  apiKey?: string;\n}",
    "const config = {\n  token: req.headers.authorization,\n  secret: process.env.SESSION_SECRET,\n};",
    "axios.get(url, { auth: { username: user, password: pass } });",
    '"dependencies": {\n    "jsonwebtoken": "^9.0.2",\n    "bcryptjs": "^2.4.3",\n    "passport": "^0.7.0"\n'
    "  }",
    "const PASSWORD_MIN_LENGTH = 12;\nconst TOKEN_REFRESH_MARGIN_MS = 60_000;",
    "if (error.response?.status === 401) {\n  await refreshToken();\n  return retry(request);\n}",
    # --- Go, Rust, Java, Ruby, PHP, C# ---------------------------------------------------------
    'token := r.Header.Get("Authorization")\nif !strings.HasPrefix(token, "Bearer ") {\n'
    '\thttp.Error(w, "unauthorized", http.StatusUnauthorized)\n\treturn\n}',
    'type Config struct {\n\tDatabaseURL string        `env:"DATABASE_URL"`\n'
    '\tAPIKey      string        `env:"API_KEY,required"`\n'
    '\tTokenTTL    time.Duration `env:"TOKEN_TTL" envDefault:"15m"`\n}',
    "hashed, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)",
    'cfg := aws.Config{\n\t\tRegion:      "us-east-1",\n'
    '\t\tCredentials: credentials.NewStaticCredentialsProvider(key, secret, ""),\n\t}',
    "\t\tAccessKey: cfg.AccessKey,\n\t\tSecretKey: cfg.SecretKey,",
    'let api_key = std::env::var("API_KEY").expect("API_KEY must be set");',
    'String token = jwtUtil.generateToken(userDetails);\n@Value("${jwt.secret}")\nprivate String secret;',
    "Rails.application.credentials.dig(:aws, :secret_access_key)",
    "$password = password_hash($_POST['password'], PASSWORD_DEFAULT);",
    "var token = await _tokenService.CreateTokenAsync(user, cancellationToken);",
    # --- SQL ------------------------------------------------------------------------------------
    "CREATE TABLE users (\n  id BIGSERIAL PRIMARY KEY,\n  email TEXT NOT NULL UNIQUE,\n"
    "  password_hash TEXT NOT NULL,\n  created_at TIMESTAMPTZ NOT NULL DEFAULT now()\n);",
    "CREATE TABLE api_tokens (\n  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),\n"
    "  user_id BIGINT REFERENCES users(id),\n  token_hash CHAR(64) NOT NULL,\n  last_used_at TIMESTAMPTZ\n"
    ");\n"
    "CREATE INDEX api_tokens_token_hash_idx ON api_tokens (token_hash);",
    "SELECT id, email FROM users WHERE password_reset_token IS NOT NULL AND password_reset_expires < now();",
    "ALTER TABLE accounts ADD COLUMN secret_question VARCHAR(255);",
    "UPDATE sessions SET revoked = true WHERE token_id = $1;",
    "ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES"
    " customers(id);",
    # --- shell commands -----------------------------------------------------------------------
    "export GITHUB_TOKEN=$(gh auth token)",
    "curl -sS -H \"Authorization: Bearer $API_TOKEN\" https://api.example.com/v1/projects | jq '.[].name'",
    'docker run --rm -u 1000:1000 -v "$PWD":/work -w /work node:20 npm ci',
    "git push -u origin feature/token-refresh",
    "ps -u postgres -o pid,etime,cmd",
    "ssh -i ~/.ssh/id_ed25519 deploy@10.0.3.17 'sudo systemctl restart api'",
    'read -rsp "Password: " DB_PASSWORD && export DB_PASSWORD',
    "openssl genrsa -out private.pem 2048 && openssl rsa -in private.pem -pubout -out public.pem",
    "aws sts get-caller-identity --profile staging",
    "pip install 'python-jose[cryptography]' 'passlib[bcrypt]'",
    'echo "$DOCKER_PASSWORD" | docker login -u "$DOCKER_USERNAME" --password-stdin',
    "gh secret set NPM_TOKEN < token.txt",
    "vault kv get -field=password secret/data/prod/postgres",
    'grep -rn "api_key" src/ | head -20',
    "env | grep -i token | cut -d= -f1",
    'ssh-keygen -t ed25519 -C "dev@example.com" -f ~/.ssh/id_ed25519 -N ""',
    "kubectl create secret generic db-creds --from-env-file=.env.prod --dry-run=client -o yaml",
    "export API_KEY=<your key>\nexport ANTHROPIC_API_KEY=...",
    'if [ -z "${GITHUB_TOKEN:-}" ]; then\n  echo "GITHUB_TOKEN is not set" >&2\n  exit 1\nfi',
    'TOKEN=$(curl -s -X POST "$AUTH_URL/token" -d "grant_type=client_credentials" | jq -r .access_token)',
    'curl -u "$JENKINS_USER:$JENKINS_TOKEN" https://jenkins.acme.dev/api/json',
    'echo "NPM_TOKEN=${{ secrets.NPM_TOKEN }}" >> "$GITHUB_ENV"\necho "TOKEN=$TOKEN" >> .env.ci',
    "docker build --build-arg NPM_TOKEN=${NPM_TOKEN} --secret id=npmrc,src=$HOME/.npmrc -t api:dev .",
    'curl "https://api.nasa.gov/planetary/apod?api_key=DEMO_KEY&date=2025-06-11"',
    "static const int SECRET_KEY_SIZE = 32;\nassert TOKEN_PATTERN == PATTERN_V2",
    'print(f"API_KEY={api_key[:4]}****")',
    # --- tool outputs ---------------------------------------------------------------------------
    "total 64\ndrwxr-xr-x  9 dev staff   288 Jun 11 09:12 .\ndrwxr-xr-x 34 dev staff  1088 Jun  3 17:40 ..\n"
    "-rw-r--r--  1 dev staff   412 Jun 11 09:12 .env.example\n"
    "-rw-------  1 dev staff   389 Jun 10 16:02 .env\n"
    "drwxr-xr-x 13 dev staff   416 Jun 11 09:14 .git\n-rw-r--r--  1 dev staff    97 May 28 11:20 .gitignore\n"
    "drwx------  4 dev staff   128 Jun  2 10:31 secrets\n"
    "-rw-r--r--  1 dev staff  2210 Jun 11 09:01 README.md",
    "src/auth/jwt.py:14:def create_access_token(data: dict, expires_delta: timedelta | None = None) -> str:\n"
    "src/auth/jwt.py:27:    encoded_jwt = jwt.encode(to_encode, SECRET_KEY, algorithm=ALGORITHM)\n"
    'src/config.py:8:SECRET_KEY = os.environ["SECRET_KEY"]\n'
    'tests/test_auth.py:52:    token = create_access_token({"sub": "alice"})',
    ".env.example:3:API_KEY=your-api-key-here\n.env.example:4:DB_PASSWORD=changeme\n"
    ".env.example:5:STRIPE_SECRET_KEY=sk_test_...\n.env.example:6:OPENAI_API_KEY=",
    "============================= test session starts ==============================\n"
    "platform linux -- Python 3.12.3, pytest-8.2.1, pluggy-1.5.0\ncollected 14 items\n\n"
    "tests/test_auth.py::test_expired_token_is_rejected PASSED                  [  7%]\n"
    "tests/test_auth.py::test_refresh_token_rotates PASSED                      [ 14%]\n"
    "tests/test_auth.py::test_bad_password_returns_401 FAILED                   [ 21%]\n\n"
    "E       AssertionError: assert 500 == 401\n"
    "E        +  where 500 = <Response [500]>.status_code\n",
    'Traceback (most recent call last):\n  File "/app/auth.py", line 88, in verify\n'
    '    payload = jwt.decode(token, key, algorithms=["RS256"])\n'
    "jwt.exceptions.ExpiredSignatureError: Signature has expired",
    "requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: https://api.github.com/user",
    "npm WARN deprecated request@2.88.2: request has been deprecated, see"
    " https://github.com/request/request/issues/3142\n"
    "added 412 packages, and audited 413 packages in 9s\n\n58 packages are looking for funding\n"
    "  run `npm fund` for details\n\nfound 0 vulnerabilities",
    "Collecting pyjwt[crypto]>=2.8\n  Downloading PyJWT-2.8.0-py3-none-any.whl (22 kB)\n"
    "Collecting cryptography>=3.4.0\n"
    "  Downloading cryptography-42.0.5-cp39-abi3-manylinux_2_28_x86_64.whl (4.6 MB)\n"
    "Successfully installed cffi-1.16.0 cryptography-42.0.5 pycparser-2.22 pyjwt-2.8.0",
    "go: downloading github.com/golang-jwt/jwt/v5 v5.2.1\ngo: downloading golang.org/x/crypto v0.23.0",
    "   Compiling ring v0.17.8\n   Compiling jsonwebtoken v9.3.0\n"
    "    Finished `dev` profile [unoptimized + debuginfo] "
    "target(s) in 41.32s",
    "src/auth/token.ts(42,7): error TS2322: Type 'string | undefined' is not assignable to type 'string'.\n"
    "  Type 'undefined' is not assignable to type 'string'.",
    "/home/dev/app/src/api/client.ts\n  12:7  warning  'apiKey' is assigned a value but never used  "
    "@typescript-eslint/no-unused-vars\n\n✖ 1 problem (0 errors, 1 warning)",
    "On branch feature/token-refresh\nChanges not staged for commit:\n"
    '  (use "git add <file>..." to update what will be committed)\n\tmodified:   src/auth/middleware.py\n'
    "\tmodified:   tests/test_auth.py",
    " src/auth/middleware.py | 24 ++++++++++++++++++------\n"
    " tests/test_auth.py     | 31 +++++++++++++++++++++++++++++++\n"
    " 2 files changed, 49 insertions(+), 6 deletions(-)",
    "diff --git a/src/auth/jwt.py b/src/auth/jwt.py\n@@ -10,7 +10,8 @@ from .settings import settings\n"
    '-def create_token(user_id):\n+def create_token(user_id: int, *, token_type: str = "access") -> str:\n'
    '+    ttl = settings.access_ttl if token_type == "access" else settings.refresh_ttl',
    "      Name                    Value             Type    Location\n"
    "      ----                    -----             ----    --------\n"
    "   profile                <not set>             None    None\n"
    "access_key     ****************QX7D shared-credentials-file\n"
    "secret_key     ****************9fLm shared-credentials-file\n"
    "    region                us-east-1      config-file    ~/.aws/config",
    "github.com\n  ✓ Logged in to github.com account octocat (keyring)\n  - Active account: true\n"
    "  - Git operations protocol: https\n  - Token: gho_************************************\n"
    "  - Token scopes: 'gist', 'read:org', 'repo', 'workflow'",
    "Login Succeeded\nWARNING! Your password will be stored unencrypted in /home/dev/.docker/config.json.\n"
    "Configure a credential helper to remove this warning.",
    "NAME                  TYPE                                  DATA   AGE\n"
    "db-credentials        Opaque                                2      41d\n"
    "default-token-x7k2p   kubernetes.io/service-account-token   3      212d",
    "Name:         db-credentials\nNamespace:    prod\nType:  Opaque\n\nData\n====\npassword:  16 bytes\n"
    "username:  3 bytes",
    '  # aws_db_instance.main will be updated in-place\n  ~ resource "aws_db_instance" "main" {\n'
    '      ~ password = (sensitive value)\n        id       = "prod-main"\n    }',
    '{"level":"warn","ts":1718097262.41,"caller":"auth/middleware.go:88","msg":"token expired",'
    '"user_id":"u_81723","exp":1718097100}',
    "2025-06-11T09:14:22.481Z INFO  auth.middleware token validated user_id=4821 scopes=read:repo,write:repo",
    'level=info msg="refreshing token" provider=github expires_in=3599',
    'DEBUG urllib3.connectionpool: https://api.github.com:443 "GET /user HTTP/1.1" 200 1307',
    '10.0.3.17 - - [11/Jun/2025:09:14:22 +0000] "POST /oauth/token HTTP/1.1" 200 612 "-"'
    ' "python-requests/2.32.3"',
    '< HTTP/2 401\n< www-authenticate: Bearer realm="api", error="invalid_token"\n'
    "< content-type: application/json",
    'HTTP/1.1 401 Unauthorized\nWWW-Authenticate: Basic realm="Restricted Area"\nContent-Length: 0',
    "> GET /v1/me HTTP/2\n> Host: api.example.com\n> user-agent: curl/8.4.0\n> accept: */*\n>\n< HTTP/2 200",
    "warning: Authentication failed for 'https://github.com/acme/api.git/'\n"
    "fatal: could not read Username for 'https://github.com': terminal prompts disabled",
    "Permission denied (publickey).\nfatal: Could not read from remote repository.",
    "PASS  src/auth/__tests__/token.test.ts\n  token\n    ✓ signs with the configured secret (4 ms)\n"
    "    ✓ rejects a token signed with another key (2 ms)\n\nTests:       2 passed, 2 total",
    "ERROR: Could not find a version that satisfies the requirement passlib==2.0 (from versions: 1.7.4)",
    # --- config files -----------------------------------------------------------------------------
    "auth:\n  provider: oidc\n  issuer: https://auth.example.com/\n  client_id: web-dashboard\n"
    "  token_ttl: 15m\n  password_min_length: 12",
    "env:\n  - name: DB_PASSWORD\n    valueFrom:\n      secretKeyRef:\n        name: db-credentials\n"
    "        key: password",
    "jobs:\n  publish:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n"
    "      - run: npm publish\n        env:\n          NODE_AUTH_TOKEN: ${{ secrets.NPM_TOKEN }}\n"
    "          GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}",
    'variable "db_password" {\n  type      = string\n  sensitive = true\n}\n\n'
    'resource "aws_db_instance" "main" {\n  username = "app"\n  password = var.db_password\n}',
    'ansible_user: deploy\nansible_become_password: "{{ vault_become_password }}"',
    "[database]\nhost = db.internal\nport = 5432\nuser = app\npassword_file = /run/secrets/db_password",
    "DATABASE_URL=postgresql://user:password@localhost:5432/app\nSECRET_KEY=change-me\n"
    "STRIPE_SECRET_KEY=sk_test_...\nOPENAI_API_KEY=\nDEBUG=true",
    "DB_PASSWORD_FILE=/run/secrets/db_password\nTOKEN_URL=https://oauth2.googleapis.com/token\n"
    "GOOGLE_APPLICATION_CREDENTIALS=/var/secrets/google/key.json\nTOKENIZERS_PARALLELISM=false",
    "API_KEY=********\nSESSION_SECRET=<generated at deploy>\n"
    "REDIS_URL=redis://:${REDIS_PASSWORD}@redis:6379/0",
    'auth_basic "Restricted";\nauth_basic_user_file /etc/nginx/.htpasswd;',
    '[tool.poetry.dependencies]\npython = "^3.11"\npyjwt = "^2.8"\n'
    'passlib = { version = "^1.7", extras = ["bcrypt"] }',
    ".env\n.env.*\n!.env.example\n*.pem\nsecrets/\ncredentials.json",
    "# Secrets live in AWS Secrets Manager; the app reads them at start-up.\n"
    "SECRETS_MANAGER_REGION=us-east-1",
    "[credential]\n\thelper = osxkeychain\n[user]\n\tname = Dana Whitfield\n\temail = dana@example.com",
    # --- docs and chat ------------------------------------------------------------------------------
    "## Authentication\n\nAll requests use Bearer tokens. Set your API key in the `ACME_API_KEY` environment "
    "variable, or pass it with `--api-key`. Basic authentication is still accepted for legacy clients.",
    "```bash\nexport ACME_API_KEY=<your key>\n"
    'curl -H "Authorization: Bearer $ACME_API_KEY" https://api.acme.dev/v1/me\n```',
    "Send the token in the `Authorization` header:\n\n```\nAuthorization: Bearer <token>\n```",
    "To connect, use a URL such as `postgresql://user:password@localhost:5432/mydb` and replace the parts.",
    "Use `curl -u username:password https://example.com/api` for endpoints that require HTTP Basic auth.",
    f"Paste the contents of your key file, starting with `-----BEGIN OPENSSH {_P}-----`, into the form.",
    "A JWT looks like `xxxxx.yyyyy.zzzzz`: a header, a payload and a signature, each base64url-encoded.",
    "- Fix: refresh tokens are now rotated on every use (#482)\n- Passwords are hashed with Argon2id (#490)",
    "Add token refresh to the auth middleware and make sure expired bearer tokens return 401 instead of 500.",
    "Why does `curl -u` ask for a password when I pass only a user name?",
    "I've updated `verify_token` to check the `exp` claim. The secret key is now read from "
    "`settings.SECRET_KEY`, so rotating it no longer needs a deploy.",
    "The session cookie is signed, not encrypted: never put the password or API tokens in it.",
    "We use Basic authentication only behind the VPN; public endpoints take Bearer authentication.",
    "Rotate the key in the dashboard (Settings → API keys → Revoke), then update the secret in Vault.",
    "# TODO: move the API key to Secret Manager before the audit",
    # --- identifiers, hashes and ids ------------------------------------------------------------
    "Signed-off-by: Jane Doe <jane.doe@example.org>\nCo-authored-by: Sam Ortiz <sam@acme.dev>",
    "https://github.com/acme/api/pull/1234\nhttps://api.example.com/v2/users?page=2&per_page=50\n"
    "git@github.com:acme/widgets.git\nssh://git@gitlab.example.com:2222/team/app.git\n"
    "http://localhost:8080/health",
    "arn:aws:iam::381492660315:role/deploy\narn:aws:s3:::acme-build-artifacts/releases/*",
    "-----BEGIN CERTIFICATE-----\nsubject=CN = api.acme.dev\nissuer=C = US, O = Let's Encrypt, CN = R11",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK8b3h9QnY2xWc5m0fZpLrE6VuTq1JdNs4GaHk7yXoP dev@laptop",
    "background-image:"
    ' url("data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciLz4=");',
)


def _ordinary_generated(g: Gen) -> Iterator[tuple[str, str]]:
    rng = g.rng
    authors = [
        ("Dana Whitfield", "dana@example.com"),
        ("Sam Ortiz", "sam@acme.dev"),
        ("Priya Raman", "priya@acme.dev"),
    ]
    subjects = [
        "Fix token refresh race in auth middleware",
        "Hash passwords with Argon2id",
        "Add API key rotation endpoint",
        "Bump jsonwebtoken from 9.0.1 to 9.0.2",
        "Read the secret key from the environment",
        "Return 401 for expired bearer tokens",
        "Document Basic authentication for legacy clients",
    ]
    for i in range(4):
        lines = [f"{g.hex(7)} {rng.choice(subjects)}" for _ in range(8)]
        yield f"generated/git-log-oneline-{i}", "\n".join(lines)
    for i in range(4):
        name, email = rng.choice(authors)
        sha = g.hex(40)
        yield (
            f"generated/git-log-{i}",
            f"commit {sha}\nMerge: {g.hex(7)} {g.hex(7)}\nAuthor: {name} <{email}>\n"
            f"Date:   Wed Jun {rng.randint(1, 28)} 09:{rng.randint(10, 59)}:14 2025 +0200\n\n"
            f"    {rng.choice(subjects)}\n\n    Reviewed-by: {rng.choice(authors)[0]}",
        )
    for i in range(3):
        ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(6)]
        yield f"generated/uuids-{i}", "\n".join(f"request_id={u} status=200" for u in ids)
    for i in range(3):
        files = ["dist/api-4.12.0.tar.gz", "dist/api-4.12.0-py3-none-any.whl", "SHA256SUMS.asc"]
        yield (
            f"generated/sha256sum-{i}",
            "\n".join(f"{hashlib.sha256(g.hex(16).encode()).hexdigest()}  {f}" for f in files),
        )
    for i in range(3):
        digest = hashlib.sha256(g.hex(32).encode()).hexdigest()
        yield (
            f"generated/docker-pull-{i}",
            f"3.12-slim: Pulling from library/python\n{g.hex(12)}: Pull complete\n"
            f"{g.hex(12)}: Pull complete\n"
            f"Digest: sha256:{digest}\nStatus: Downloaded newer image for python:3.12-slim\n"
            f"docker.io/library/python@sha256:{digest}",
        )
    for i in range(3):
        png = base64.b64encode(
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(rng.getrandbits(8) for _ in range(600))
        )
        yield f"generated/base64-image-{i}", f'<img alt="chart" src="data:image/png;base64,{png.decode()}" />'
    for i in range(3):
        integrity = base64.b64encode(bytes(rng.getrandbits(8) for _ in range(64))).decode()
        yield (
            f"generated/package-lock-{i}",
            '"node_modules/jsonwebtoken": {\n  "version": "9.0.2",\n'
            '  "resolved": "https://registry.npmjs.org/jsonwebtoken/-/jsonwebtoken-9.0.2.tgz",\n'
            f'  "integrity": "sha512-{integrity}",\n  "license": "MIT"\n}}',
        )
    for i in range(2):
        yield (
            f"generated/pip-hashes-{i}",
            f"cryptography==42.0.5 \\\n    --hash=sha256:{hashlib.sha256(g.hex(8).encode()).hexdigest()} \\\n"
            f"    --hash=sha256:{hashlib.sha256(g.hex(8).encode()).hexdigest()}",
        )
    for i in range(2):
        yield (
            f"generated/cargo-lock-{i}",
            '[[package]]\nname = "jsonwebtoken"\nversion = "9.3.0"\n'
            'source = "registry+https://github.com/rust-lang/crates.io-index"\n'
            f'checksum = "{hashlib.sha256(g.hex(8).encode()).hexdigest()}"',
        )
    for i in range(2):
        blob = base64.b64encode(bytes(rng.getrandbits(8) for _ in range(96))).decode()
        yield (
            f"generated/thumbnail-json-{i}",
            json.dumps(
                {"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "thumbnail": blob, "w": 64}
            ),
        )


def ordinary_corpus(seed: int = 20250611) -> list[tuple[str, str]]:
    out = [(f"ordinary/{i:03d}", text) for i, text in enumerate(ORDINARY)]
    out += list(_ordinary_generated(Gen(seed)))
    return out
