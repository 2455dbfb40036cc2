"""The ``claude-rl`` command line. Thin: each command calls one module and prints its result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from claude_rl import __version__, paths

app = typer.Typer(
    name="claude-rl",
    help=(
        "Capture Claude Code workflows through hooks into a local, redacted, append-only trace store, "
        "train a local model on them (SFT, then RL), export it to GGUF, run it as a sandboxed agent and "
        "evaluate it against the captured workflows. Data lives under CLAUDE_RL_HOME "
        "(`claude-rl home` prints where)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

ScopeOpt = Annotated[
    str,
    typer.Option(
        "--scope",
        help="Which Claude Code settings file: user (~/.claude/settings.json), project "
        "(.claude/settings.json) or local (.claude/settings.local.json, not committed).",
    ),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show the change as a diff; write nothing.")]
SettingsOpt = Annotated[
    Path | None, typer.Option("--settings", help="Edit this settings file instead of the one --scope names.")
]


def _version(value: bool) -> None:
    if value:
        console.print(f"claude-rl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


def _settings_target(scope: str, settings: Path | None) -> Path:
    from claude_rl.hook_settings import SettingsError, settings_path

    if settings is not None:
        return settings
    try:
        return settings_path(scope)
    except SettingsError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


@app.command("install-hooks")
def install_hooks(
    scope: ScopeOpt = "user",
    dry_run: DryRunOpt = False,
    settings: SettingsOpt = None,
    python: Annotated[str, typer.Option(help="Interpreter Claude Code runs the hooks with.")] = "python3",
) -> None:
    """Register the capture hooks in a Claude Code settings file (idempotent, keeps a backup)."""
    from claude_rl.hook_settings import SettingsError, install

    target = _settings_target(scope, settings)
    try:
        change = install(target, paths.CHECKOUT_DIR, dry_run=dry_run, python=python)
    except SettingsError as exc:
        err.print(f"[red]Refused:[/red] {exc}")
        raise typer.Exit(1) from exc
    _report(change, dry_run, "are already registered in", "[green]Registered[/green] the claude-rl hooks in")
    if change.changed and not dry_run:
        home, source = paths.home_and_source()
        console.print(
            f"Events will be stored under {home} ({source}). New Claude Code sessions pick this up."
        )
    if change.plugin_also_enabled:
        err.print(
            "[yellow]Note:[/yellow] the claude-rl plugin is also enabled in this file; each event would be "
            "captured twice (status counts duplicates once). Use one of the two."
        )


@app.command("uninstall-hooks")
def uninstall_hooks(
    scope: ScopeOpt = "user", dry_run: DryRunOpt = False, settings: SettingsOpt = None
) -> None:
    """Remove exactly the claude-rl hooks from a Claude Code settings file (keeps a backup)."""
    from claude_rl.hook_settings import SettingsError, uninstall

    target = _settings_target(scope, settings)
    try:
        change = uninstall(target, dry_run=dry_run)
    except SettingsError as exc:
        err.print(f"[red]Refused:[/red] {exc}")
        raise typer.Exit(1) from exc
    _report(change, dry_run, "are not in", "[green]Removed[/green] the claude-rl hooks from")


def _report(change: Any, dry_run: bool, unchanged: str, done: str) -> None:
    if not change.changed:
        console.print(f"claude-rl hooks {unchanged} {change.path}; nothing to do.")
    elif dry_run:
        console.print(change.diff() or "(no textual change)", markup=False, highlight=False)
        console.print(f"[yellow]Dry run:[/yellow] {change.path} was not changed.")
    else:
        console.print(f"{done} {change.path}.")
        if change.backup:
            console.print(f"Previous file kept as {change.backup}.")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Show what the trace store holds and how far it is from 50 / 500 / 1,000 traces."""
    from claude_rl.status import summarize

    summary = summarize()
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    _print_status(summary)


def _bar(pct: float, width: int = 30) -> str:
    filled = int(round(pct / 100 * width))
    return "█" * filled + "░" * (width - filled)


def _print_status(s: dict[str, Any]) -> None:
    state = "[green]on[/green]" if s["capture_enabled"] else "[red]off[/red]"
    console.print(
        Panel.fit(
            f"store: {s['home']} ({s['home_source']})\ncapture: {state}\n"
            f"sessions: {s['sessions']}   events: {s['records']}   tool calls: {s['tool_calls']}\n"
            f"completed turns: {s['turns_completed']}   traces (turns with tools): {s['traces']}"
            + (f"   failed turns: {s['turns_failed']}" if s["turns_failed"] else ""),
            title="claude-rl status",
        )
    )
    if s["events"]:
        table = Table(title="events by type", min_width=40)
        table.add_column("event")
        table.add_column("count", justify="right")
        for name, n in s["events"].items():
            table.add_row(name, str(n))
        tools = Table(title="tool calls by tool", min_width=40)
        tools.add_column("tool")
        tools.add_column("calls", justify="right")
        for name, n in list(s["tool_calls_by_tool"].items())[:20]:
            tools.add_row(name, str(n))
        console.print(table)
        console.print(tools)
    progress = Table(title="progress toward training milestones", show_header=False, box=None)
    for milestone, pct in s["progress"].items():
        progress.add_row(f"{int(milestone):>5,} traces", _bar(pct), f"{pct:5.1f} %")
    console.print(progress)
    health = [
        f"redactions: {sum(s['redactions'].values())}"
        + (f" ({', '.join(f'{k} {v}' for k, v in s['redactions'].items())})" if s["redactions"] else ""),
        f"truncated fields: {s['truncated_fields']}",
        f"malformed hook input: {sum(s['errors'].values())}"
        + (f" ({', '.join(f'{k} {v}' for k, v in s['errors'].items())})" if s["errors"] else ""),
        f"write failures: {s['capture_failures']}",
        f"damaged lines: {s['corrupt_lines'] + s['partial_trailing_lines']}",
        f"transcript copies: {s['transcript_copies']}",
    ]
    if s["duplicate_records"]:
        health.append(f"duplicate events ignored: {s['duplicate_records']}")
    console.print("   ".join(health))
    eps = s["episodes"]
    if eps["total"]:
        cats = Table(title=f"episodes: {eps['total']} ({eps['with_tools']} with tools)", min_width=40)
        cats.add_column("category")
        cats.add_column("episodes", justify="right")
        for name, n in eps["by_category"].items():
            cats.add_row(name, str(n))
        console.print(cats)
        console.print(
            f"diversity: {eps['categories_covered']}/{len(eps['by_category'])} categories, evenness "
            f"{eps['category_evenness']:.2f} (1 = even), "
            f"{eps['distinct_tool_sequences']} distinct tool sequences, {eps['distinct_tools']} tools"
        )
        if eps["thin_categories"]:
            console.print(
                f"[bold]next:[/bold] few examples of: {', '.join(eps['thin_categories'])}; "
                "ask Claude Code for such tasks too."
            )
    elif s["sessions"]:
        console.print("[bold]next:[/bold] `claude-rl fold` builds episodes from what was captured.")
    for step in s["next_steps"]:
        console.print(f"[bold]next:[/bold] {step}")


@app.command()
def capture(
    demo: Annotated[
        bool,
        typer.Option("--demo", help="Replay a recorded session through the real hook and show the records."),
    ] = False,
    on: Annotated[bool, typer.Option("--on", help="Turn capture back on.")] = False,
    off: Annotated[
        bool, typer.Option("--off", help="Turn capture off (the hooks stay installed, write nothing).")
    ] = False,
    store: Annotated[
        Path | None,
        typer.Option("--store", help="With --demo: keep the demo store here instead of a temp folder."),
    ] = None,
    interactive: Annotated[
        bool,
        typer.Option(
            "--interactive",
            help="Enter a trace by hand (prompt, each tool call with its reason and result, final answer) "
            "for a conversation that had no hooks.",
        ),
    ] = False,
) -> None:
    """Turn capture on or off, enter a trace by hand, or show what capture records (--demo)."""
    from claude_rl.capture import off_switch

    if sum([demo, on, off, interactive]) != 1:
        err.print("Choose one of --demo, --interactive, --on, --off.")
        raise typer.Exit(2)
    if interactive:
        _interactive()
        return
    home = paths.home()
    if on or off:
        switch = Path(off_switch(home))
        if off:
            switch.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            switch.touch()
            console.print(f"Capture is [red]off[/red] for {home} (remove {switch} or run --on to resume).")
        else:
            switch.unlink(missing_ok=True)
            console.print(f"Capture is [green]on[/green] for {home}.")
            if os.environ.get("CLAUDE_RL_CAPTURE", "").strip().lower() in {"0", "off", "false", "no"}:
                err.print(
                    "[yellow]CLAUDE_RL_CAPTURE is set to off in this environment; it still wins.[/yellow]"
                )
        return
    _demo(store)


def _read_block(label: str) -> str:
    """Multi-line text from the terminal, ended by a line holding only '.'."""
    console.print(f"{label} [dim](end with a line holding only '.')[/dim]")
    lines = []
    while True:
        line = typer.prompt("", default="", show_default=False, prompt_suffix="")
        if line.strip() == ".":
            return "\n".join(lines).strip()
        lines.append(line)


def _interactive() -> None:
    from pydantic import ValidationError

    from claude_rl.episodes.manual import ManualCall, ManualTrace, hint_for, write_manual_trace

    console.print("[bold]Enter a trace by hand.[/bold] It is stored like captured hook events (redacted).")
    prompt = typer.prompt("User prompt")
    calls: list[ManualCall] = []
    while True:
        tool = typer.prompt(
            f"Tool of call {len(calls) + 1} (empty when done)", default="", show_default=False
        )
        if not tool.strip():
            break
        reason = typer.prompt("  Stated reason (empty if Claude wrote none)", default="", show_default=False)
        while True:
            raw = typer.prompt(f"  Input as a JSON object, e.g. {hint_for(tool)}")
            try:
                tool_input = json.loads(raw)
                if not isinstance(tool_input, dict):
                    raise ValueError("not a JSON object")
                break
            except ValueError as exc:
                err.print(f"  [red]Not a JSON object ({exc}); try again.[/red]")
        result = _read_block("  Result")
        is_error = typer.confirm("  Did the call fail?", default=False)
        try:
            calls.append(
                ManualCall(
                    tool=tool, reason=reason or None, input=tool_input, result=result, is_error=is_error
                )
            )
        except ValidationError as exc:
            err.print(f"  [red]{exc.errors()[0]['msg']}; this call was not added.[/red]")
    answer = _read_block("Final answer")
    try:
        trace = ManualTrace(prompt=prompt, calls=calls, final_answer=answer)
    except ValidationError as exc:
        err.print(f"[red]Not saved: {exc}[/red]")
        raise typer.Exit(1) from exc
    session_id = write_manual_trace(trace)
    tools = " → ".join(c.tool for c in calls) or "no tools"
    console.print(
        f"[green]Saved[/green] session {session_id}: {tools}. Run `claude-rl fold` to build its episode."
    )


def _demo(store: Path | None) -> None:
    from claude_rl.store import read_trace_file, trace_files

    data = json.loads((paths.PACKAGE_DIR / "demo" / "transformer_session.json").read_text(encoding="utf-8"))
    payloads = data["payloads"]
    keep = store is not None
    root = store or Path(tempfile.mkdtemp(prefix="claude-rl-demo-"))
    hook = paths.CHECKOUT_DIR / "hooks" / "claude_rl_hook.py"
    env = {**os.environ, paths.ENV_HOME: str(root)}
    env.pop("CLAUDE_RL_CAPTURE", None)
    console.print(
        f"Replaying {len(payloads)} recorded hook events of the question "
        f"[bold]“{payloads[1]['prompt']}”[/bold] through {hook.relative_to(paths.CHECKOUT_DIR)} …"
    )
    for payload in payloads:
        proc = subprocess.run(
            [sys.executable, "-S", str(hook), payload["hook_event_name"]],
            input=json.dumps(payload).encode(),
            capture_output=True,
            env=env,
            timeout=30,
        )
        if proc.returncode != 0 or proc.stdout:
            err.print(f"[red]hook misbehaved on {payload['hook_event_name']}: rc={proc.returncode}[/red]")
            raise typer.Exit(1)
    files = trace_files(root)
    table = Table(title=f"what capture recorded ({files[0]})", show_lines=False)
    for col in ("#", "event", "tool", "input / result", "redacted"):
        table.add_column(col, overflow="fold")
    tf = read_trace_file(files[0])
    for i, rec in enumerate(tf.records, 1):
        p = rec.payload
        detail = ""
        if rec.event == "UserPromptSubmit":
            detail = p.get("prompt", "")
        elif rec.event == "PreToolUse":
            detail = _short(json.dumps(p.get("tool_input"), ensure_ascii=False), 110)
        elif rec.event == "PostToolUse":
            detail = "→ " + _short(_result_text(p.get("tool_response")), 110)
        elif rec.event == "Stop":
            detail = "answer: " + _short(p.get("last_assistant_message", ""), 110)
        elif rec.event in ("SessionStart", "SessionEnd"):
            detail = str(p.get("source") or p.get("reason") or "")
        redacted = ", ".join(f"{k}×{v}" for k, v in rec.redactions.items())
        table.add_row(str(i), rec.event, rec.tool_name or "", detail, redacted)
    console.print(table)
    tools = [r.tool_name for r in tf.records if r.event == "PreToolUse"]
    console.print(f"Tool sequence: [bold]{' → '.join(t or '?' for t in tools)}[/bold]")
    redactions = [r for r in tf.records if r.redactions]
    if redactions:
        rec = redactions[0]
        line = next(
            (ln for ln in _result_text(rec.payload.get("tool_response")).splitlines() if "[REDACTED" in ln),
            "",
        )
        console.print(f"Secrets never reach disk; the Grep result is stored as: [cyan]{line}[/cyan]")
    console.print(
        f"Stored {len(tf.records)} records in {root}"
        + ("" if keep else " (a temporary folder; pass --store DIR to keep it)")
    )


def _result_text(resp: Any) -> str:
    if isinstance(resp, dict):
        for key in ("stdout", "content"):
            if isinstance(resp.get(key), str):
                return resp[key]
        file = resp.get("file")
        if isinstance(file, dict) and isinstance(file.get("content"), str):
            return file["content"]
    return json.dumps(resp, ensure_ascii=False) if not isinstance(resp, str) else resp


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


@app.command("fold")
def fold_cmd(
    force: Annotated[bool, typer.Option("--force", help="Fold every session, changed or not.")] = False,
    session: Annotated[
        list[str] | None, typer.Option("--session", help="Fold only this session (repeatable).")
    ] = None,
) -> None:
    """Build episodes from the store (hook records + transcript copies), once."""
    from claude_rl.episodes.fold import fold

    result = fold(paths.home(), session or None, force=force)
    _print_fold(result)
    if result.errors:
        raise typer.Exit(1)


def _print_fold(result: Any) -> None:
    console.print(
        f"sessions: {result.sessions} (folded {result.folded}, unchanged {result.unchanged})   "
        f"episodes: {result.episodes} ({result.new_episodes} new)   tool calls: {result.tool_calls}"
    )
    if result.skipped_lines:
        shown = ", ".join(f"{k} {v}" for k, v in result.skipped_lines.most_common(8))
        console.print(f"transcript lines skipped (not conversation): {shown}")
    for sid, problem in result.errors.items():
        err.print(f"[red]could not fold {sid}:[/red] {problem}")


@app.command()
def watch(
    settle: Annotated[float, typer.Option(help="Seconds a session must be quiet before it is folded.")] = 2.0,
) -> None:
    """Follow the store and fold sessions as their turns end (Ctrl-C stops)."""
    from claude_rl.episodes.watch import watch as run_watch

    def report(sessions: list[str], result: Any) -> None:
        label = ", ".join(s[:12] for s in sessions) if sessions else "catch-up"
        console.print(f"[dim]{label}[/dim]  episodes {result.episodes} ({result.new_episodes} new)")

    console.print(f"Watching {paths.home()} … (Ctrl-C to stop)")
    run_watch(paths.home(), settle_s=settle, on_fold=report)
    console.print("Stopped.")


@app.command("import")
def import_cmd(
    sources: Annotated[
        list[Path] | None,
        typer.Argument(help="Transcript files or folders (default: Claude Code's projects folder)."),
    ] = None,
) -> None:
    """Backfill episodes from existing Claude Code transcripts (redacted, idempotent)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from claude_rl.episodes.importer import default_sources, discover, import_transcripts

    chosen = sources or default_sources()
    total = len(discover(chosen, Counter()))
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        copying = progress.add_task("copying sessions (redacted)", total=total)
        folding = progress.add_task("folding sessions", total=None)
        result = import_transcripts(
            chosen,
            on_file=lambda _name: progress.advance(copying),
            on_session=lambda _sid: progress.advance(folding),
        )
    if not result.files:
        console.print(f"No Claude Code transcripts found under {', '.join(str(s) for s in chosen)}.")
    console.print(
        f"Imported from {', '.join(str(s) for s in chosen)}: {result.files} files, "
        f"{result.sessions} sessions, {result.lines_copied} new transcript lines."
    )
    _print_fold(result.fold)
    if result.skipped:
        console.print("skipped: " + ", ".join(f"{k} ({v})" for k, v in result.skipped.most_common()))


@app.command()
def home(
    set_: Annotated[
        Path | None,
        typer.Option(
            "--set",
            help="Pin the data home to this folder for every claude-rl run of this user "
            "(the plugin copy Claude Code runs from its cache included).",
        ),
    ] = None,
    unset: Annotated[bool, typer.Option("--unset", help="Remove the pinned data home.")] = False,
) -> None:
    """Print where claude-rl keeps its data (and why), or pin it."""
    pin = paths.pin_file()
    if set_ is not None:
        pin.parent.mkdir(parents=True, exist_ok=True)
        pin.write_text(str(set_.expanduser().resolve()) + "\n", encoding="utf-8")
        console.print(f"Pinned the data home to {set_.expanduser().resolve()} (in {pin}).")
    elif unset:
        pin.unlink(missing_ok=True)
        console.print(f"Removed {pin}.")
    where, source = paths.home_and_source()
    sys.stdout.write(f"{where}\n")
    if set_ is None and not unset:
        err.print(
            f"({source}: "
            + {
                "env": f"from {paths.ENV_HOME}",
                "pinned": f"pinned in {pin}",
                "checkout": "the checkout's data/ folder",
                "user": "the per-user default",
            }[source]
            + ")"
        )


@app.command("build-dataset")
def build_dataset_cmd(
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="store (the episodes under the data home, folded first), samples (the bundled corpus) "
            "or PATH (a folder of episode JSONL files, or a claude-rl home).",
        ),
    ] = "store",
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default: <home>/datasets/<name>).")
    ] = None,
    fmt: Annotated[
        str,
        typer.Option("--format", help="messages (TRL conversational tool calling) or plan (flat, for RL)."),
    ] = "messages",
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Longest row in tokens; longer episodes are split or dropped.")
    ] = 4096,
    max_tool_tokens: Annotated[
        int, typer.Option("--max-tool-tokens", help="Tool outputs are cut (head + tail) to this many tokens.")
    ] = 384,
    tokenizer: Annotated[
        str, typer.Option("--tokenizer", help="Target tokenizer: smollm2-135m, a local folder or a hub id.")
    ] = "smollm2-135m",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the train/validation/test assignment.")] = 0,
    category: Annotated[
        list[str] | None, typer.Option("--category", help="Keep only this task category (repeatable).")
    ] = None,
    min_steps: Annotated[
        int, typer.Option("--min-steps", help="Keep episodes with at least N tool calls.")
    ] = 0,
    since: Annotated[
        str | None, typer.Option("--since", help="Keep episodes started on or after DATE.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Keep episodes started on or before DATE.")
    ] = None,
    exclude_errors: Annotated[
        bool, typer.Option("--exclude-errors", help="Drop episodes with a failed tool call.")
    ] = False,
    name: Annotated[
        str | None, typer.Option("--name", help="Dataset name (default: <source>-<format>).")
    ] = None,
) -> None:
    """Build a train/validation/test dataset from episodes (TRL tool-calling format, or plan)."""
    from claude_rl.base_model import BaseModelMissing
    from claude_rl.dataset import BuildOptions, DatasetError, build_dataset

    opts = BuildOptions(
        source=source,
        out=out,
        fmt=fmt,
        max_tokens=max_tokens,
        max_tool_tokens=max_tool_tokens,
        tokenizer=tokenizer,
        seed=seed,
        categories=tuple(category or ()),
        min_steps=min_steps,
        since=since,
        until=until,
        exclude_errors=exclude_errors,
        name=name,
    )
    try:
        result = build_dataset(opts)
    except (DatasetError, BaseModelMissing, OSError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    m = result.manifest
    c = m["counts"]
    table = Table(title=f"{m['name']} ({m['format']}, {m['chat_format']} template)", min_width=50)
    for col in ("split", "rows", "sessions", "tokens p50", "tokens max"):
        table.add_column(col, justify="right" if col != "split" else "left")
    for split, n in c["rows"].items():
        stats = m["token_lengths"][split]
        p50, top = str(stats.get("p50", "-")), str(stats.get("max", "-"))
        table.add_row(split, str(n), str(c["sessions"][split]), p50, top)
    console.print(table)
    filtered = ", ".join(f"{k} {v}" for k, v in c["filtered_out"].items()) or "none"
    over = c["over_length"]
    console.print(
        f"episodes: {c['episodes_read']} read, {c['episodes_kept']} kept; filtered out: {filtered}; "
        f"near-duplicates: {c['near_duplicates']}; over {opts.max_tokens} tokens: {over['split_episodes']} "
        f"split into {over['split_parts']} rows, {over['dropped']} dropped; "
        f"tool outputs cut: {c['tool_outputs_truncated']}"
    )
    console.print(f"Wrote {result.out} (manifest.json lists counts, histograms and source hashes).")


@app.command("train")
def train(
    phase: Annotated[
        str,
        typer.Option(
            "--phase",
            help="sft: behavioral cloning (LoRA, TRL SFTTrainer). ppo (alias grpo): the RL phase on the "
            "latest SFT model. TRL 1.x has no PPOTrainer: this is PPO's clipped-surrogate objective in "
            "TRL's GRPOTrainer, with group-relative advantages instead of a learned critic, "
            "num_iterations >= 2 so the ratio clipping (epsilon) is active, and a KL term to the SFT policy.",
        ),
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Run config YAML (default: configs/sft-cpu-default.yaml, or configs/grpo-cpu-default.yaml "
            "for --phase ppo).",
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE overrides, e.g. max_steps=4 lora.r=8.")
    ] = None,
    eval_first_tool: Annotated[
        bool,
        typer.Option(
            "--eval-first-tool/--no-eval-first-tool",
            help="After training, compare base vs trained first-tool accuracy on the test split.",
        ),
    ] = True,
) -> None:
    """Train a model on a built dataset; prints the run folder and its metrics."""
    if phase not in ("sft", "ppo", "grpo"):
        err.print(f"[red]--phase {phase}: expected sft or ppo (alias grpo).[/red]")
        raise typer.Exit(2)
    from claude_rl.base_model import BaseModelMissing
    from claude_rl.dataset import DatasetError
    from claude_rl.train.config import ConfigError, load_config
    from claude_rl.train.sft import TrainError

    if phase in ("ppo", "grpo"):
        _train_ppo(config, overrides)
        return
    try:
        cfg = load_config(config, tuple(overrides or ()))
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    from claude_rl.train.sft import main as run_sft

    try:
        folder = run_sft(cfg)
    except (TrainError, DatasetError, BaseModelMissing) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    m = manifest["metrics"]
    console.print(f"Wrote {folder}")
    evals = ", ".join(f"step {e['step']}: {e['eval_loss']:.4f}" for e in m["eval_loss"]) or "none"
    first, last = ("-" if v is None else f"{v:.4f}" for v in (m["train_loss_first"], m["train_loss_last"]))
    console.print(
        f"train loss {first} -> {last}"
        f" over {m['steps']} steps; validation loss {evals}; {m['runtime_s']} s, "
        f"{m['tokens_seen']} tokens ({m['tokens_per_s']} tokens/s); loss plot: {manifest['loss_plot']}"
    )
    if eval_first_tool:
        from claude_rl.train.first_tool import evaluate_folder, read_rows

        rows = read_rows(manifest["dataset"]["folder"], "test")
        if not rows:
            console.print("first-tool accuracy: skipped (the dataset has no test split)")
            return
        for label, model_folder in (("base", manifest["base_model_folder"]), ("trained", folder / "merged")):
            r = evaluate_folder(model_folder, rows)
            acc = "-" if r["first_tool_accuracy"] is None else f"{r['first_tool_accuracy']:.2f}"
            valid = "-" if r["valid_call_rate"] is None else f"{r['valid_call_rate']:.2f}"
            console.print(
                f"first-tool accuracy ({label}): {acc} on {r['rows']} test rows; valid calls {valid}"
            )


def _train_ppo(config: Path | None, overrides: list[str] | None) -> None:
    from claude_rl.train.config import ConfigError
    from claude_rl.train.grpo_config import load_grpo_config
    from claude_rl.train.sft import TrainError

    try:
        cfg = load_grpo_config(config, tuple(overrides or ()))
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    from claude_rl.train.grpo import main as run_grpo

    try:
        folder = run_grpo(cfg)
    except TrainError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    m = manifest["metrics"]

    def num(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}"

    console.print(f"Wrote {folder}")
    console.print(
        f"behavioral reward {num(m.get('reward_first'))} -> {num(m.get('reward_last'))} over "
        f"{m.get('steps')} steps ({m.get('runtime_s')} s, {m.get('seconds_per_step')} s/step); "
        f"{m.get('zero_spread_groups')} of {m.get('groups')} groups had zero reward spread"
        + ("; stopped by the time budget" if m.get("stopped_by_time_budget") else "")
        + f"; reward plot: {manifest.get('reward_plot')}"
    )


@app.command("control")
def control_cmd(
    run: Annotated[str, typer.Argument(help="The trained run (name under <home>/models, or its folder).")],
    kinds: Annotated[
        str,
        typer.Option(
            "--kinds",
            help="Comma-separated: random (a random rank-r update in each matrix the run changed, "
            "scaled to the run's KL to the model it started from) and/or negated (that model minus "
            "the run's update).",
        ),
    ] = "random",
    seeds: Annotated[
        str, typer.Option("--seeds", help="Comma-separated seeds: one random control each.")
    ] = "1,2",
    rank: Annotated[int, typer.Option("--rank", help="Rank of each random update.")] = 16,
    sequences: Annotated[
        int, typer.Option("--sequences", help="Train-split rows the KL is measured on (assistant tokens).")
    ] = 14,
) -> None:
    """Make null controls for a trained run: the model it started from moved as far as the run
    moved it (KL matched on the run's training split), in a direction no reward chose. Each is a
    run folder (llama-claude-ctrl-vN) to export and evaluate beside the run: pass them to
    `claude-rl eval --controls`, and a gain counts only where it beats them."""
    from claude_rl.train.control import ControlError, make_controls

    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()]
        made = make_controls(
            run,
            kinds=[k.strip() for k in kinds.split(",") if k.strip()],
            seeds=seed_list,
            rank=rank,
            sequences=sequences,
        )
    except ValueError as exc:
        err.print(f"[red]--seeds {seeds}: expected comma-separated integers ({exc})[/red]")
        raise typer.Exit(2) from exc
    except ControlError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    for c in made:
        what = f"seed {c.seed}" if c.kind == "random" else "the run's update reversed"
        console.print(
            f"Wrote {c.folder} ({c.kind}, {what}: scale {c.scale:.3f}, "
            f"KL {c.kl:.5f}; the run's {c.run_kl:.5f})"
        )
    names = ",".join(c.folder.name for c in made)
    nulls = ",".join(c.folder.name for c in made if c.kind == "random")  # a negated one is no null
    console.print(
        f"next: claude-rl eval --models {run},{names} --reuse <the SFT model's report> "
        f"--baseline <the SFT run>" + (f" --controls {nulls}" if nulls else "")
    )
    console.print(f"  and (teacher-forced, no decoding): claude-rl probe {run} --controls {names}")


@app.command("probe")
def probe_cmd(
    run: Annotated[str, typer.Argument(help="The RL run (name under <home>/models, or its folder).")],
    controls: Annotated[
        str,
        typer.Option(
            "--controls",
            help="Comma-separated controls of the run (claude-rl control): random ones are averaged "
            "into the null, a negated one is reported beside them.",
        ),
    ] = "",
    other_runs: Annotated[
        str,
        typer.Option(
            "--other-runs",
            help="Comma-separated RL runs from the same start model: their scored rollouts on prompts "
            "this run never trained on are scored too (does the update generalize?).",
        ),
    ] = "",
    split: Annotated[
        str, typer.Option("--split", help="Dataset split whose recorded workflows are scored.")
    ] = "test",
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Cut each sequence at this many tokens.")
    ] = 2048,
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write the JSON (default: <run>/probe.json).")
    ] = None,
) -> None:
    """Teacher-forced check of what an RL run's update did, beside its null controls, without
    decoding: did the rollouts that beat their group become likelier than those that did not (on
    the run's own rollouts.jsonl, and with --other-runs on other runs' rollouts of prompts this run
    never saw), and how much less likely did the held-out recorded workflows become (negative
    log-likelihood per assistant token, against the model the run started from)."""
    from claude_rl.train.control import ControlError
    from claude_rl.train.probe import PROBE_FILE, probe, write

    names = [c.strip() for c in controls.split(",") if c.strip()]
    try:
        result = probe(
            run,
            names,
            other_runs=[o.strip() for o in other_runs.split(",") if o.strip()],
            split=split,
            max_tokens=max_tokens,
            progress=lambda name: err.print(f"scoring {name} ..."),
        )
    except ControlError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    path = write(result, out or Path(result["run_folder"]) / PROBE_FILE)
    _print_probe(result)
    console.print(f"Wrote {path}")


def _print_probe(result: dict[str, Any]) -> None:
    def ci(stat: dict[str, Any], digits: int = 4) -> str:
        if stat.get("mean") is None:
            return "–"
        return f"{stat['mean']:+.{digits}f} [{stat['lo']:+.{digits}f}, {stat['hi']:+.{digits}f}]"

    others = (
        f"; {result['unseen_rollouts']} rollouts of {result['unseen_prompts']} unseen prompts from "
        + ", ".join(result["other_runs"])
        if result["other_runs"]
        else ""
    )
    console.print(
        f"{result['run']}: {result['rollouts']} scored rollouts{others}; {result['rows']} {result['split']} "
        f"rows, start model NLL {result['start_nll_per_token']:.3f} per assistant token"
    )
    for name, m in result["models"].items():
        parts = []
        for key, label in (
            ("reward_alignment", "reward alignment"),
            ("unseen_alignment", "on unseen prompts"),
        ):
            if key in m:
                a = m[key]
                r = "" if a["pearson"] is None else f" (r {a['pearson']:+.2f})"
                parts.append(f"{label} {ci(a['covariance'], 5)}{r}")
        parts.append(f"{result['split']} NLL change {ci(m['heldout_nll_change'])} per token")
        console.print(f"  {name} ({m['role']}): " + "; ".join(parts))
    if "against_controls" in result:
        ac = result["against_controls"]
        unseen = f"; on unseen prompts {ci(ac['unseen_alignment'], 5)}" if "unseen_alignment" in ac else ""
        console.print(
            f"  run − controls' mean: reward alignment {ci(ac['reward_alignment'], 5)}{unseen}; "
            f"{result['split']} NLL change {ci(ac['heldout_nll_change'])} per token"
        )


@app.command("export-gguf")
def export_gguf_cmd(
    model: Annotated[
        Path | None,
        typer.Argument(
            help="A run folder (data/models/llama-claude-bc-vN) or its name (llama-claude-bc-vN), "
            "its merged/ folder or an HF Llama folder; default: the newest llama-claude-*-vN run."
        ),
    ] = None,
    quant: Annotated[
        str, typer.Option("--quant", help="Comma-separated quantizations (q8_0, q4_k_m, ...); '' for none.")
    ] = "q8_0",
    outtype: Annotated[str, typer.Option("--outtype", help="Full-precision file: f16, bf16 or f32.")] = "f16",
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: <run>/gguf/).")] = None,
    no_parity: Annotated[
        bool, typer.Option("--no-parity", help="Skip the parity checks against transformers (not advised).")
    ] = False,
) -> None:
    """Write GGUF files (+ Ollama Modelfile) of a trained model. The export checks itself against
    transformers (next-token logits, greedy continuations, tokenizer and chat template) and fails,
    writing nothing, when they disagree."""
    from claude_rl.export import ExportError, ExportParityError, export_gguf, normalize_quants
    from claude_rl.export.pipeline import summary_lines

    try:
        result = export_gguf(
            model, out, quants=normalize_quants(quant), outtype=outtype, check_parity=not no_parity
        )
    except ExportParityError as exc:
        err.print(f"[red]{exc}[/red]")  # the message says what failed and that nothing was written
        raise typer.Exit(1) from exc
    except ExportError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    console.print("\n".join(summary_lines(result.report)))


@app.command("run")
def run_cmd(
    question: Annotated[str, typer.Argument(help="What to ask the local agent.")],
    model: Annotated[
        Path | None,
        typer.Option("--model", help="GGUF file (default: the newest export, else the embedded base model)."),
    ] = None,
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace", help="Folder the tools work in (default: a scratch copy of data/workspace)."
        ),
    ] = None,
    allow_edits: Annotated[
        bool, typer.Option("--allow-edits", help="Let Edit/Write and writing commands change the workspace.")
    ] = False,
    max_turns: Annotated[int | None, typer.Option("--max-turns", help="Most tool-using turns.")] = None,
) -> None:
    """Answer QUESTION with the local model as an agent (same tools and schemas, sandboxed: read-only
    unless --allow-edits, Bash through an allowlist, no network, nothing outside the workspace).
    The run is saved as an episode under <home>/runs/."""
    from claude_rl.runtime import run_cli

    try:
        run = run_cli(
            question, model_path=model, workspace=workspace, allow_edits=allow_edits, max_turns=max_turns
        )
    except (FileNotFoundError, ValueError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    if run.stop_reason == "error":
        raise typer.Exit(1)


def _names(text: str | None) -> list[str]:
    return [c.strip() for c in (text or "").split(",") if c.strip()]


def _practised_selection(
    practised_by: str | None, not_practised_by: str | None
) -> tuple[set[str] | None, set[str], list[str]]:
    """eval's --practised-by / --not-practised-by as (only, leave_out, report notes)."""
    from claude_rl.evaluate import practised_prompts

    only: set[str] | None = None
    leave_out: set[str] = set()
    why: list[str] = []
    if runs := _names(practised_by):
        only = set().union(*(practised_prompts(r) for r in runs))
        why.append(f"only the {len(only)} prompts practised by {', '.join(runs)} (RL rollouts)")
    if runs := _names(not_practised_by):
        leave_out = set().union(*(practised_prompts(r) for r in runs))
        why.append(f"without the {len(leave_out)} prompts practised by {', '.join(runs)} (RL rollouts)")
    return only, leave_out, why


@app.command("eval")
def eval_cmd(
    models: Annotated[
        str,
        typer.Option(
            "--models",
            help="Comma-separated: base (the base model), latest (newest run), run names, run folders or "
            ".gguf files. Unexported runs are exported first. 'none': only the --reuse reports' runs.",
        ),
    ] = "base,latest",
    reuse: Annotated[
        list[Path] | None,
        typer.Option(
            "--reuse",
            help="An earlier report folder whose models' runs are scored again (not re-run) and listed "
            "first; repeatable (a model in several with the same runs is taken once). E.g. the SFT "
            "model's report, to compare a new model with it.",
        ),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline", help="Model the paired per-prompt differences are taken against (default: first)."
        ),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Dataset split to evaluate on.")] = "test",
    dataset: Annotated[
        Path | None,
        typer.Option("--dataset", help="Dataset folder (default: the one the trained model was trained on)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="At most N prompts, spread over categories and split kinds.")
    ] = None,
    quant: Annotated[
        str | None, typer.Option("--quant", help="Evaluate this quantization's file (default: F16).")
    ] = None,
    max_turns: Annotated[int, typer.Option("--max-turns", help="Most tool-using turns per prompt.")] = 8,
    out: Annotated[
        Path | None, typer.Option("--out", help="Report folder (default: <home>/reports/<name>/).")
    ] = None,
    controls: Annotated[
        str | None,
        typer.Option(
            "--controls",
            help="Comma-separated models (run here or reused) that are null controls (claude-rl control): "
            "every other model but the baseline is also paired against their per-prompt mean.",
        ),
    ] = None,
    practised_by: Annotated[
        str | None,
        typer.Option(
            "--practised-by",
            help="Comma-separated RL runs: only the prompts their rollouts were drawn from (rollouts.jsonl). "
            "With --split train: did a run learn the prompts it practised?",
        ),
    ] = None,
    not_practised_by: Annotated[
        str | None,
        typer.Option(
            "--not-practised-by",
            help="Comma-separated RL runs: leave out the prompts their rollouts were drawn from. With "
            "--split train: training prompts those runs never saw in RL (held out from RL, not from SFT).",
        ),
    ] = None,
    samples: Annotated[
        int,
        typer.Option(
            "--samples",
            min=1,
            help="Runs per prompt and model, sampled at --temperature; a prompt scores its runs' mean. "
            "Default: one greedy run, as 'claude-rl run' decodes.",
        ),
    ] = 1,
    temperature: Annotated[
        float,
        typer.Option(
            "--temperature",
            min=0.0,
            help="Sampling temperature (no top-k/top-p cut); 0 is greedy. E.g. the RL preset's 0.3 with "
            "--samples 4: the expected reward the RL phase optimizes, with less of one greedy run's chance.",
        ),
    ] = 0.0,
) -> None:
    """Run each held-out prompt through the local agent per model and score it against the recorded
    episode (tool sequence, first tool, tool-set F1, arguments, answer, reasoning depth, ...);
    writes report.md, report.json and PNG charts. Also scores each run with the RL phase's behavioral
    reward, and with several models gives paired per-prompt differences against the first (or
    --baseline) with 95 % intervals, and against the mean of the --controls."""
    from claude_rl.evaluate import (
        EvalError,
        against_controls_lines,
        evaluate,
        headline_table,
        read_report,
        resolve_models,
        trained_dataset,
    )
    from claude_rl.export import ExportError
    from claude_rl.runtime import AgentConfig

    reuse = list(reuse or [])
    try:
        if models.strip() in ("", "none") and not reuse:
            raise EvalError("--models none evaluates only reused runs: name a report with --reuse")
        specs = [] if models.strip() in ("", "none") else resolve_models(models, quant=quant)
        folder, max_tool_tokens = trained_dataset(specs)
        if folder is None and reuse:  # the dataset the reused report was made on
            folder = paths.home() / "datasets" / read_report(reuse[0])["dataset"]
        only, leave_out, why = _practised_selection(practised_by, not_practised_by)
        budget = {"max_tool_tokens": max_tool_tokens} if max_tool_tokens else {}
        config = AgentConfig(max_turns=max_turns, **budget)
        report = evaluate(
            {s.label: s.gguf for s in specs},
            split=split,
            dataset_folder=dataset or folder,
            limit=limit,
            out_dir=out,
            config=config,
            reuse=reuse,
            baseline=baseline,
            controls=_names(controls),
            only=only,
            leave_out=leave_out,
            extra_notes=why,
            samples=samples,
            temperature=temperature,
        )
    except (EvalError, ExportError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(headline_table(report))
    for line in against_controls_lines(report):
        console.print(line)
    target = out or paths.home() / "reports" / report.name
    console.print(f"report: {target / 'report.md'}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
