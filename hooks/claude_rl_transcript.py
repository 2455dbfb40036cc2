#!/usr/bin/env python3
"""Claude Code async hook: copy the session transcript, redacted, into the claude-rl store.

Registered with ``"async": true`` on Stop, SubagentStop, PreCompact and SessionEnd, so Claude
Code never waits for it. Claude Code deletes transcripts after 30 days; the copy is incremental
(only new complete lines are read), so running it after every turn is cheap.
Always exits 0 and prints nothing.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.dont_write_bytecode = False

try:
    from claude_rl.transcript_copy import main
except BaseException:  # noqa: BLE001
    try:
        sys.stdin.buffer.read()
    except BaseException:  # noqa: BLE001
        pass
    sys.exit(0)

sys.exit(main())
