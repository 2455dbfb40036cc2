"""claude-rl: capture Claude Code workflows and train a local model to reproduce them.

This module stays import-light on purpose: the capture hooks import ``claude_rl.paths``,
``claude_rl.redact`` and ``claude_rl.capture`` on every tool call of Claude Code, and importing
the package must not pull anything beyond the standard library.
"""

__version__ = "0.1.0"
