"""Tools: the JSON schemas of Claude Code's tools, and local implementations that run them."""
