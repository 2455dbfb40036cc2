"""Training stage: run configs now; the SFT trainer that reads them comes next (``claude-rl train``)."""
