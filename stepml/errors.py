"""The CLI's error for a problem the user can fix, in a module of its own: command modules outside cli.py raise
the very class the entry point catches, also when cli.py runs as ``__main__`` (``python -m stepml.cli``)."""

from __future__ import annotations


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""
