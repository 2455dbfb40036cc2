#!/usr/bin/env python3
"""Claude Code hook: append this event to the claude-rl trace store.

Registered for every capture event (hooks/hooks.json, settings.example.json, `claude-rl
install-hooks`) as ``python3 -S <this file> <EventName>``. ``-S`` skips site-packages: the hook
is standard-library only, and skipping ``site`` saves most of Python's start-up time.

Exit status is always 0 and nothing is printed: exit 2 would block the tool call or be shown to
the model, and stdout could be read as a hook decision.
"""

import os
import sys

# The checkout (or the plugin copy) holds the stdlib-only capture modules next to this folder.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.dont_write_bytecode = False  # cache compiled modules even where PYTHONDONTWRITEBYTECODE is set

try:
    from claude_rl.capture import main
except BaseException:  # noqa: BLE001 - a broken install must not break Claude Code
    try:
        sys.stdin.buffer.read()  # drain stdin so Claude Code sees no broken pipe
    except BaseException:  # noqa: BLE001
        pass
    sys.exit(0)

sys.exit(main())
