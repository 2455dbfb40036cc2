"""Registering the capture hooks in Claude Code settings files, and removing exactly ours.

Our handlers are recognised by the hook script they run (``claude_rl_hook.py`` /
``claude_rl_transcript.py``), so an uninstall finds them even after the checkout moved. Merging
keeps every other hook and setting; writing keeps a backup of the previous file and refuses a
file that is not valid JSON rather than guessing.

The same generator writes ``settings.example.json`` and the plugin's ``hooks/hooks.json``
(``python -m claude_rl.hook_settings`` rewrites both; a test keeps them in sync).
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from claude_rl.capture import EVENTS, TOOL_EVENTS, TRANSCRIPT_EVENTS

HOOK_SCRIPT = "claude_rl_hook.py"
TRANSCRIPT_SCRIPT = "claude_rl_transcript.py"
OUR_SCRIPTS = (HOOK_SCRIPT, TRANSCRIPT_SCRIPT)
CAPTURE_TIMEOUT_S = 10  # the hook takes tens of milliseconds; the cap only guards a stuck disk
TRANSCRIPT_TIMEOUT_S = 120
SCOPES = ("user", "project", "local")


class SettingsError(Exception):
    """A settings file we must not touch (invalid JSON, not an object)."""


def hook_entries(root: str, python: str = "python3") -> dict[str, list[dict[str, Any]]]:
    """Our matcher groups, per event, with scripts under ``root`` (a path or ``${CLAUDE_PLUGIN_ROOT}``)."""
    entries: dict[str, list[dict[str, Any]]] = {}
    for event in EVENTS:
        handlers: list[dict[str, Any]] = [
            {
                "type": "command",
                "command": f'{python} -S "{root}/hooks/{HOOK_SCRIPT}" {event}',
                "timeout": CAPTURE_TIMEOUT_S,
            }
        ]
        if event in TRANSCRIPT_EVENTS:
            handlers.append(
                {
                    "type": "command",
                    "command": f'{python} -S "{root}/hooks/{TRANSCRIPT_SCRIPT}"',
                    "async": True,
                    "timeout": TRANSCRIPT_TIMEOUT_S,
                }
            )
        group: dict[str, Any] = {"hooks": handlers}
        if event in TOOL_EVENTS:
            group = {"matcher": "*", **group}
        entries[event] = [group]
    return entries


def is_ours(handler: Any) -> bool:
    if not isinstance(handler, dict):
        return False
    command = " ".join(str(p) for p in [handler.get("command", ""), *(handler.get("args") or [])])
    return any(script in command for script in OUR_SCRIPTS)


def _our_groups(groups: list[Any]) -> list[Any]:
    return [g for g in groups if isinstance(g, dict) and any(is_ours(h) for h in g.get("hooks") or [])]


def remove_ours(settings: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``settings`` without our handlers; containers emptied by the removal go too."""
    out = copy.deepcopy(settings)
    hooks = out.get("hooks")
    if not isinstance(hooks, dict):
        return out
    touched = False
    for event in list(hooks):
        groups = hooks[event]
        if not isinstance(groups, list):
            continue
        kept_groups = []
        for group in groups:
            inner = group.get("hooks") if isinstance(group, dict) else None
            if isinstance(inner, list) and any(is_ours(h) for h in inner):
                touched = True
                rest = [h for h in inner if not is_ours(h)]
                if rest:
                    kept_groups.append({**group, "hooks": rest})
                continue
            kept_groups.append(group)
        if touched and not kept_groups and groups:
            del hooks[event]
        else:
            hooks[event] = kept_groups
    if touched and not hooks:
        del out["hooks"]
    return out


def merge_ours(settings: dict[str, Any], entries: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """A copy of ``settings`` with our groups; events already carrying exactly ours are left as is."""
    out = copy.deepcopy(settings)
    hooks = out.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise SettingsError('"hooks" in the settings file is not an object; fix it by hand first')
    for event, groups in entries.items():
        current = hooks.get(event)
        if current is not None and not isinstance(current, list):
            raise SettingsError(f'"hooks.{event}" in the settings file is not a list; fix it by hand first')
        current = current or []
        if _our_groups(current) == groups:
            continue
        kept = remove_ours({"hooks": {event: current}}).get("hooks", {}).get(event, [])
        hooks[event] = [*kept, *copy.deepcopy(groups)]
    # Our events that are no longer registered (an older version's) lose our handlers.
    for event in list(hooks):
        if event not in entries and isinstance(hooks[event], list) and _our_groups(hooks[event]):
            cleaned = remove_ours({"hooks": {event: hooks[event]}}).get("hooks", {})
            if event in cleaned:
                hooks[event] = cleaned[event]
            else:
                del hooks[event]
    return out


def settings_path(scope: str, project_dir: Path | None = None) -> Path:
    if scope not in SCOPES:
        raise SettingsError(f"unknown scope {scope!r}; use one of {', '.join(SCOPES)}")
    if scope == "user":
        config_dir = os.environ.get("CLAUDE_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".claude")
        return Path(config_dir) / "settings.json"
    base = (project_dir or Path.cwd()) / ".claude"
    return base / ("settings.json" if scope == "project" else "settings.local.json")


def load_settings(path: Path) -> tuple[dict[str, Any], str]:
    """The parsed settings and the original text ('' for a missing file)."""
    if not path.exists():
        return {}, ""
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return {}, text
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). "
            "Nothing was changed; fix the file or move it away, then run again."
        ) from exc
    if not isinstance(data, dict):
        raise SettingsError(f"{path} holds a JSON {type(data).__name__}, not an object. Nothing was changed.")
    return data, text


def render(settings: dict[str, Any]) -> str:
    return json.dumps(settings, indent=2, ensure_ascii=False) + "\n"


@dataclass
class Change:
    path: Path
    before: str
    after: str
    changed: bool
    backup: Path | None = None
    plugin_also_enabled: bool = False

    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                self.before.splitlines(keepends=True),
                self.after.splitlines(keepends=True),
                fromfile=f"{self.path} (now)",
                tofile=f"{self.path} (after)",
            )
        )


def _write(path: Path, text: str) -> Path | None:
    backup = None
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = path.with_name(f"{path.name}.claude-rl-backup-{stamp}")
        n = 1
        while backup.exists():
            backup = path.with_name(f"{path.name}.claude-rl-backup-{stamp}-{n}")
            n += 1
        shutil.copy2(path, backup)
    tmp = path.with_name(path.name + ".claude-rl-tmp")
    tmp.write_text(text, encoding="utf-8")
    if backup is not None:
        shutil.copymode(backup, tmp)
    os.replace(tmp, path)
    return backup


def _plugin_enabled(settings: dict[str, Any]) -> bool:
    enabled = settings.get("enabledPlugins")
    return isinstance(enabled, dict) and any(
        str(k).startswith("claude-rl@") and v for k, v in enabled.items()
    )


def install(path: Path, root: Path, *, dry_run: bool = False, python: str = "python3") -> Change:
    settings, before = load_settings(path)
    merged = merge_ours(settings, hook_entries(str(root), python))
    changed = merged != settings
    after = render(merged) if changed else before
    change = Change(path, before, after, changed, plugin_also_enabled=_plugin_enabled(settings))
    if changed and not dry_run:
        change.backup = _write(path, after)
    return change


def uninstall(path: Path, *, dry_run: bool = False) -> Change:
    settings, before = load_settings(path)
    cleaned = remove_ours(settings)
    changed = cleaned != settings
    after = render(cleaned) if changed else before
    change = Change(path, before, after, changed)
    if changed and not dry_run:
        change.backup = _write(path, after)
    return change


def write_examples(checkout: Path) -> None:
    """Regenerate settings.example.json and hooks/hooks.json from ``hook_entries``."""
    example = {"hooks": hook_entries("/path/to/claude-rl")}
    (checkout / "settings.example.json").write_text(render(example), encoding="utf-8")
    plugin = {
        "description": "claude-rl: append every Claude Code hook event, redacted, to the local trace store",
        "hooks": hook_entries("${CLAUDE_PLUGIN_ROOT}"),
    }
    (checkout / "hooks" / "hooks.json").write_text(render(plugin), encoding="utf-8")


if __name__ == "__main__":
    from claude_rl import paths

    write_examples(paths.CHECKOUT_DIR)
