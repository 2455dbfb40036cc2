"""The bundled sample corpus: a small workspace (``data/workspace``) and episodes recorded against it.

- ``build_workspace``: builds the workspace's SQLite database from its schema and seeded data.
- ``templates``: task templates; each turns (rng, instance) into a prompt, planned tool calls with
  stated reasons, and a final answer computed from the calls' real results.
- ``generate``: runs every template instance through ``claude_rl.tools.runtime`` on a fresh copy
  of the workspace and writes hook-format traces to ``data/samples/traces`` plus a manifest.
"""
