"""Settings read from the function's environment, at call time and never at import time."""

from __future__ import annotations

import os

from pipeline_core.errors import ConfigurationError


def require_env(name: str, environ: dict[str, str] | None = None) -> str:
    """The value of environment variable ``name``; a missing or empty one is a ConfigurationError."""
    source = os.environ if environ is None else environ
    value = source.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set; the function cannot run without it")
    return value


def optional_env(name: str, default: str, environ: dict[str, str] | None = None) -> str:
    """The value of ``name``, or ``default`` when unset (for tuning knobs only, never resource names)."""
    source = os.environ if environ is None else environ
    return source.get(name, "").strip() or default
