"""The one error type the CLI reports as a single line (no traceback)."""

from __future__ import annotations


class CLIError(Exception):
    """Bad input given on the command line: the message says what was wrong and what to do."""
