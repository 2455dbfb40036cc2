"""Episodes: raw hook records and transcripts → prompt → steps → answer (see claude_rl.schema)."""
