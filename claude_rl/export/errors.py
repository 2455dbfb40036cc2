"""Errors of the GGUF export: each message says what went wrong and what to do about it."""

from __future__ import annotations

from typing import Any


class ExportError(RuntimeError):
    """The export cannot run (no model, an unsupported model, an unknown quantization name...)."""


class ExportParityError(ExportError):
    """A written GGUF does not compute what the HF model computes; nothing was kept.

    ``report`` holds every number that was measured (the same dict ``export.json`` would have had
    under ``"parity"``), ``failures`` one line per check that failed.
    """

    def __init__(self, failures: list[str], report: dict[str, Any]):
        self.failures = list(failures)
        self.report = report
        lines = "\n  - ".join(self.failures)
        super().__init__(f"GGUF parity check failed; nothing was written:\n  - {lines}")
