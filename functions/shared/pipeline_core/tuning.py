"""Hyperparameter tuning settings: the built-in search spaces and the objective the Tune state ranks by.

ValidateInput turns the execution input's ``tuning`` into a :class:`~pipeline_core.models.TuningConfig`
whose fields are already in the shape of SageMaker's CreateHyperParameterTuningJob request, so the ASL's
Tune state only places them (the same request on AWS and for the local stand-in).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pipeline_core.errors import InputValidationError

Kind = Literal["integer", "continuous"]
Scale = Literal["linear", "log"]

# The metric the tuning job maximises. The built-in trainer prints one line of validation metrics
# ("[train] validation metrics: f1_macro=0.9123, accuracy=0.9333, ..." or "... r2=0.8512, ..."), and the
# gate's primary metric (f1_macro for classification, r2 for regression) is what the tuning maximises.
OBJECTIVE_METRIC = "validation:objective"
_NUMBER = r"(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"
BUILT_IN_OBJECTIVE_REGEX = r"\[train\] validation metrics:.*?\b(?:f1_macro|r2)=" + _NUMBER
BUILT_IN_METRIC_DEFINITIONS: tuple[dict[str, str], ...] = (
    {"Name": OBJECTIVE_METRIC, "Regex": BUILT_IN_OBJECTIVE_REGEX},
    {"Name": "validation:f1_macro", "Regex": r"\[train\] validation metrics:.*?\bf1_macro=" + _NUMBER},
    {"Name": "validation:r2", "Regex": r"\[train\] validation metrics:.*?\br2=" + _NUMBER},
)
# SageMaker's limits on a metric regex and on a tuning job's training jobs.
REGEX_MAX = 500
MAX_TRIALS = 100
MAX_PARALLEL = 10


@dataclass(frozen=True)
class Range:
    """A numeric search range; ``kind`` integer or continuous, ``scale`` linear or log."""

    low: float
    high: float
    kind: Kind
    scale: Scale = "linear"


# Per built-in algorithm; "auto" tunes the gradient boosting it starts from (train.py's default family).
_GRADIENT_BOOSTING: dict[str, Range | list[str]] = {
    "learning_rate": Range(0.02, 0.3, "continuous", "log"),
    "max_leaf_nodes": Range(8, 64, "integer"),
    "min_samples_leaf": Range(5, 50, "integer"),
    "l2_regularization": Range(0.0, 1.0, "continuous"),
}
# C for the classifiers (LogisticRegression), alpha for the regressors (Ridge).
_LINEAR_CLASSIFICATION: dict[str, Range | list[str]] = {"C": Range(0.01, 100.0, "continuous", "log")}
_LINEAR_REGRESSION: dict[str, Range | list[str]] = {"alpha": Range(0.01, 100.0, "continuous", "log")}
BUILT_IN_ALGORITHMS = ("auto", "gradient-boosting", "linear", "text")


def default_ranges(algorithm: str, problem_type: str | None) -> dict[str, Range | list[str]]:
    """The built-in search space of ``algorithm``. For linear and text the problem type picks C or alpha;
    before it is known (ValidateInput, no ``problem_type`` in the input) both are searched and the trainer
    uses the one its estimator has."""
    if algorithm in ("auto", "gradient-boosting"):
        return dict(_GRADIENT_BOOSTING)
    if algorithm in ("linear", "text"):
        if problem_type == "classification":
            return dict(_LINEAR_CLASSIFICATION)
        if problem_type == "regression":
            return dict(_LINEAR_REGRESSION)
        return {**_LINEAR_CLASSIFICATION, **_LINEAR_REGRESSION}
    raise InputValidationError(
        f"tuning: trainer {algorithm!r} has no built-in search space; give tuning.ranges "
        f"(built-in ones: {', '.join(BUILT_IN_ALGORITHMS)})"
    )


def _text(value: float, kind: Kind) -> str:
    return str(int(value)) if kind == "integer" else repr(float(value))


def parameter_ranges(ranges: Mapping[str, Range | list[str]]) -> dict[str, list[dict[str, Any]]]:
    """``ranges`` as SageMaker's ParameterRanges (values as strings; only the kinds that occur)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name in sorted(ranges):
        spec = ranges[name]
        if isinstance(spec, Range):
            key = "IntegerParameterRanges" if spec.kind == "integer" else "ContinuousParameterRanges"
            out.setdefault(key, []).append(
                {
                    "Name": name,
                    "MinValue": _text(spec.low, spec.kind),
                    "MaxValue": _text(spec.high, spec.kind),
                    "ScalingType": "Logarithmic" if spec.scale == "log" else "Linear",
                }
            )
        else:
            out.setdefault("CategoricalParameterRanges", []).append({"Name": name, "Values": [str(v) for v in spec]})
    return out


def metric_definitions(objective_regex: str | None) -> list[dict[str, str]]:
    """MetricDefinitions of the training jobs: the built-in trainer's, or the user's objective regex."""
    if objective_regex is None:
        return [dict(d) for d in BUILT_IN_METRIC_DEFINITIONS]
    return [{"Name": OBJECTIVE_METRIC, "Regex": objective_regex}]


def check_objective_regex(regex: str) -> str:
    """``regex`` if SageMaker can use it: it compiles, has one capture group, and is at most 500 characters."""
    if len(regex) > REGEX_MAX:
        raise ValueError(f"must be at most {REGEX_MAX} characters (SageMaker's limit)")
    try:
        groups = re.compile(regex).groups
    except re.error as error:
        raise ValueError(f"is not a valid regular expression: {error}") from None
    if groups != 1:
        raise ValueError(f"must have exactly one capture group, the metric's value (it has {groups})")
    return regex
