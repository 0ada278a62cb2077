"""EventBridge event patterns, for the rules infra/template.yaml declares on functions.

moto does not route S3's EventBridge events to targets, so the embedded runtime matches each event
against the template's rule patterns itself. Supported: literal values, ``prefix``, ``suffix``,
``exists`` and ``anything-but`` (a literal or a list) — the forms EventBridge documents; anything else
is rejected rather than silently matched.
"""

from __future__ import annotations

from typing import Any


class UnsupportedPattern(ValueError):
    """A pattern form the embedded runtime does not evaluate."""


def _matches_one(rule: Any, value: Any, present: bool) -> bool:
    if not isinstance(rule, dict):
        return present and value == rule
    if "prefix" in rule:
        return present and isinstance(value, str) and value.startswith(rule["prefix"])
    if "suffix" in rule:
        return present and isinstance(value, str) and value.endswith(rule["suffix"])
    if "exists" in rule:
        return present is bool(rule["exists"])
    if "anything-but" in rule:
        excluded = rule["anything-but"]
        excluded = excluded if isinstance(excluded, list) else [excluded]
        return present and value not in excluded
    raise UnsupportedPattern(f"event pattern rule {rule!r} is not supported by the embedded target")


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """Whether ``event`` matches the EventBridge ``pattern``."""
    for key, rule in pattern.items():
        present = isinstance(event, dict) and key in event
        value = event.get(key) if present else None
        if isinstance(rule, dict):
            if not present or not isinstance(value, dict) or not matches(rule, value):
                return False
        elif isinstance(rule, list):
            if not any(_matches_one(r, value, present) for r in rule):
                return False
        else:
            raise UnsupportedPattern(f"event pattern for {key!r} must be an object or a list, got {rule!r}")
    return True
