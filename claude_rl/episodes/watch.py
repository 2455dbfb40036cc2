"""``claude-rl watch``: follow the store and fold sessions as their turns end.

A watchdog observer reports writes under ``traces/`` and ``transcripts/``. A session is folded
once its files have been quiet for ``settle_s`` seconds (a turn writes many events in a burst).
Folding is deterministic and keyed on the inputs' size and mtime (``fold._state.json``), so a
restarted watcher folds only what changed while it was away, and never folds a session twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from claude_rl import paths
from claude_rl.episodes.fold import FoldResult, fold


def session_of(path: str, root: Path) -> str | None:
    """The session a changed file belongs to, or None for files that are not inputs."""
    p = Path(path)
    if p.suffix != ".jsonl":
        return None
    try:
        rel = p.relative_to(root)
    except ValueError:
        return None
    parts = rel.parts
    if len(parts) == 2 and parts[0] in (paths.TRACES, paths.TRANSCRIPTS):
        return p.stem
    if len(parts) == 4 and parts[0] == paths.TRANSCRIPTS and parts[2] == "subagents":
        return parts[1]
    return None


class _Pending(FileSystemEventHandler):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.due: dict[str, float] = {}

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            sid = session_of(str(path), self.root) if path else None
            if sid:
                with self.lock:
                    self.due[sid] = time.monotonic()

    def take_settled(self, settle_s: float) -> list[str]:
        now = time.monotonic()
        with self.lock:
            ready = [sid for sid, t in self.due.items() if now - t >= settle_s]
            for sid in ready:
                del self.due[sid]
        return ready


def watch(
    root: Path | None = None,
    *,
    settle_s: float = 2.0,
    poll_s: float = 0.5,
    stop: threading.Event | None = None,
    on_fold: Callable[[list[str], FoldResult], None] | None = None,
) -> None:
    """Fold what changed while nobody watched, then follow the store until ``stop`` is set.

    Ctrl-C (KeyboardInterrupt) also stops it cleanly: the observer thread is joined.
    """
    root = (root or paths.home()).resolve()
    for folder in (paths.traces_dir(root), paths.transcripts_dir(root)):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    stop = stop or threading.Event()
    observer = None
    # Everything after the folders exist is inside the try: a Ctrl-C that lands during the catch-up
    # fold or while the observer starts stops cleanly too. The observer is a daemon thread, so an
    # interrupted start never leaves a thread the interpreter would wait for at exit.
    try:
        first = fold(root)
        if on_fold:
            on_fold([], first)
        handler = _Pending(root)
        observer = Observer()
        observer.daemon = True
        observer.schedule(handler, str(root), recursive=True)
        observer.start()
        while not stop.is_set():
            stop.wait(poll_s)
            ready = handler.take_settled(settle_s)
            if ready:
                result = fold(root, ready)
                if on_fold:
                    on_fold(ready, result)
    except KeyboardInterrupt:
        pass
    finally:
        if observer is not None:
            observer.stop()
            if observer.is_alive():
                observer.join(timeout=5)
