"""Wall time of one capture-hook invocation against a bare Python start, measured in the same run.

Usage: ``make bench-hooks`` (or ``python bench/hook_latency.py [--runs N]``).

For PostToolUse payloads of 1 KB, 100 KB and 1 MB (a Read result made of real source text), each
run starts the hook exactly as Claude Code does (``python3 -S hooks/claude_rl_hook.py EVENT``,
payload on stdin) and waits for it to exit. Two kinds of text:

- *code*: Python's own standard-library sources, a realistic Read result;
- *dense*: claude-rl's redaction module and secret corpus, where every redaction rule's trigger
  fires (each rule's regex is compiled and run): the worst case, shown for transparency.
 The baseline is ``python3 -c pass`` with the same
interpreter, interleaved with the hook runs so machine noise hits both alike. Targets (issue 2):
p50 ≤ 1.3× the bare start, p95 ≤ 50 ms at 1 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOOK = ROOT / "hooks" / "claude_rl_hook.py"
# The interpreter behind the venv: what `python3` in Claude Code's environment would be.
PYTHON = getattr(sys, "_base_executable", sys.executable)


def source_text(size: int, kind: str = "code") -> str:
    """Real text of the given kind, ``size`` characters long."""
    if kind == "code":
        stdlib = Path(os.__file__).parent
        files = sorted(stdlib.glob("*.py"))
    else:
        files = [ROOT / "claude_rl" / "redact.py", ROOT / "tests" / "secret_corpus.py"]
    parts, total = [], 0
    for path in files:
        if total >= size:
            break
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        total += len(text)
    corpus = "".join(parts)
    return (corpus * (size // len(corpus) + 1))[:size]


def payload(size: int, kind: str = "code") -> bytes:
    content = source_text(size, kind)
    return json.dumps(
        {
            "session_id": "bench-session",
            "transcript_path": "/home/dev/.claude/projects/-home-dev-app/bench-session.jsonl",
            "cwd": "/home/dev/app",
            "permission_mode": "default",
            "hook_event_name": "PostToolUse",
            "tool_name": "Read",
            "tool_input": {"file_path": "/home/dev/app/big.py"},
            "tool_response": {
                "type": "text",
                "file": {"filePath": "/home/dev/app/big.py", "content": content},
            },
            "tool_use_id": "toolu_bench",
            "duration_ms": 3,
        }
    ).encode()


def timed(args: list[str], stdin: bytes | None, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(args, input=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{args} exited {proc.returncode}")
    return elapsed * 1000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60, help="invocations per payload size")
    args = parser.parse_args()
    sizes = {"1 KB": 1024, "100 KB": 100 * 1024, "1 MB": 1024 * 1024}
    payloads = {f"{name} code": payload(n, "code") for name, n in sizes.items()}
    payloads |= {f"{name} dense": payload(n, "dense") for name, n in sizes.items()}
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "CLAUDE_RL_HOME": home}
        env.pop("CLAUDE_RL_CAPTURE", None)
        hook = [PYTHON, "-S", str(HOOK), "PostToolUse"]
        for _ in range(3):  # warm up: page cache and __pycache__ of the capture modules
            timed(hook, payloads["1 KB code"], env)
        bare: list[float] = []
        hook_ms: dict[str, list[float]] = {name: [] for name in payloads}
        for _ in range(args.runs):
            bare.append(timed([PYTHON, "-c", "pass"], None, env))
            for name, data in payloads.items():
                hook_ms[name].append(timed(hook, data, env))
        written = sum(1 for _ in open(Path(home) / "traces" / "bench-session.jsonl", "rb"))
    b50, b95 = statistics.median(bare), pct(bare, 0.95)
    print(f"interpreter: {PYTHON} ({sys.version.split()[0]}), {os.cpu_count()} cores, {args.runs} runs each")
    print(f"| {'invocation':<22} | {'p50 ms':>7} | {'p95 ms':>7} | {'p50 / bare':>10} | {'p95 / bare':>10} |")
    print(f"|{'-' * 24}|{'-' * 9}|{'-' * 9}|{'-' * 12}|{'-' * 12}|")
    print(f"| {'python3 -c pass':<22} | {b50:>7.1f} | {b95:>7.1f} | {1.0:>10.2f} | {1.0:>10.2f} |")
    for name, values in hook_ms.items():
        h50, h95 = statistics.median(values), pct(values, 0.95)
        print(
            f"| {'hook, ' + name:<22} | {h50:>7.1f} | {h95:>7.1f} | {h50 / b50:>10.2f} | {h95 / b95:>10.2f} |"
        )
    print(f"records written: {written} (expected {3 + args.runs * len(payloads)})")
    for kind in ("code", "dense"):
        worst = max(statistics.median(v) for k, v in hook_ms.items() if k.endswith(kind)) / b50
        mb95 = pct(hook_ms[f"1 MB {kind}"], 0.95)
        verdict_50 = "met" if worst <= 1.3 else "MISSED"
        verdict_95 = "met" if mb95 <= 50 else "MISSED"
        print(
            f"{kind}: target p50 <= 1.3x bare start: worst {worst:.2f}x -> {verdict_50}; "
            f"target p95 <= 50 ms at 1 MB: {mb95:.1f} ms -> {verdict_95}"
        )


if __name__ == "__main__":
    main()
