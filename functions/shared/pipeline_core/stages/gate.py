"""The quality gate: a candidate's primary metric against the threshold and the champion.

Evaluate decides it first (``stages/evaluate.py``), against the champion it reads then. AcquireDeployLease
decides it again once it holds the model's deploy lease (``stages/deploy_lease.py``), against the champion
as it is then: only the lease holder can register an approved version, so that decision cannot go stale
before the run deploys. Both use :func:`decide_gate`. This module imports neither pandas nor numpy, so the
Register function (which serves AcquireDeployLease, and has neither in its package) can use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipeline_core.models import RegistryRecord

# the threshold when the input sets none: by problem family (classification is gated on f1_macro, regression on r2)
DEFAULT_THRESHOLD: dict[str, float] = {"classification": 0.6, "regression": 0.3}


def gate_threshold(requested: float | None, problem_type: str) -> float:
    """The run's quality threshold: the input's, else the default of the problem's family."""
    if requested is not None:
        return requested
    return DEFAULT_THRESHOLD["regression" if problem_type == "regression" else "classification"]


# The gate's fields as EvaluationResult (``$.evaluation``) and evaluation.json's "gate" object carry them.
RESULT_FIELDS = ("primary_value", "threshold", "champion_version", "champion_value", "passed", "reason")


@dataclass(frozen=True)
class GateDecision:
    """The quality gate's inputs and the decision the state machine's QualityGate Choice repeats."""

    primary_metric: str
    primary_value: float
    threshold: float
    champion_version: int | None
    champion_value: float
    passed: bool
    reason: str

    def result_fields(self) -> dict[str, Any]:
        """The decision under EvaluationResult's names (``RESULT_FIELDS``)."""
        return {name: getattr(self, name) for name in RESULT_FIELDS}


def _pair(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` formatted so that different values never print the same."""
    for digits in (4, 6, 10):
        left, right = f"{a:.{digits}f}", f"{b:.{digits}f}"
        if left != right or a == b:
            return left, right
    return repr(a), repr(b)


def decide_gate(primary_metric: str, value: float, threshold: float, champion: RegistryRecord | None) -> GateDecision:
    """Compare ``value`` with the threshold and with the champion (when it used the same metric).

    An incomparable or absent champion's value is the threshold itself, so the Choice's second
    comparison (``primary_value >= champion_value``) cannot change its outcome.
    """
    champion_value = threshold
    champion_version: int | None = None
    note = "no earlier approved model to compare with"
    if champion is not None:
        theirs = champion.metrics.get(primary_metric)
        if champion.primary_metric == primary_metric and theirs is not None and math.isfinite(theirs):
            champion_value, champion_version = float(theirs), champion.version
        else:
            note = f"champion v{champion.version} was measured by {champion.primary_metric}, not comparable"
    meets_threshold = value >= threshold
    beats_champion = value >= champion_value
    shown, shown_threshold = _pair(value, threshold)
    if champion_version is not None:
        shown_vs_champion, shown_champion = _pair(value, champion_value)
        champion_part = f"champion v{champion_version} {shown_champion}"
    passed = meets_threshold and beats_champion
    if passed:
        against = f"≥ {champion_part}" if champion_version is not None else f"({note})"
        reason = f"{primary_metric} {shown} ≥ threshold {shown_threshold} and {against}"
    else:
        failures = []
        if not meets_threshold:
            failures.append(f"{primary_metric} {shown} < threshold {shown_threshold}")
        if not beats_champion and champion_version is not None:
            failures.append(f"{primary_metric} {shown_vs_champion} < {champion_part}")
        reason = "rejected: " + " and ".join(failures)
    return GateDecision(primary_metric, value, threshold, champion_version, champion_value, passed, reason)
