"""Hyperparameter tuning settings: the execution input's ``tuning``, the built-in search spaces and the
objective the Tune state ranks by.

ValidateInput turns :class:`TuningInput` into a :class:`~pipeline_core.models.TuningConfig` whose fields are
already in the shape of SageMaker's CreateHyperParameterTuningJob request, so the ASL's Tune state only
places them (the same request on AWS and for the local stand-in). See docs/tuning.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline_core.errors import InputValidationError
from pipeline_core.models import TuningConfig

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


# Hyperparameters the pipeline sets from the data, never tuned.
RESERVED_HYPERPARAMETERS = frozenset({"target", "problem_type", "seed"})


class TuningRangeInput(BaseModel):
    """A numeric search range of one hyperparameter (a list of values instead is a categorical range)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    min: int | float = Field(allow_inf_nan=False, description="lowest value")
    max: int | float = Field(allow_inf_nan=False, description="highest value")
    scale: Literal["linear", "log"] = Field(default="linear", description="log: search orders of magnitude")
    type: Literal["integer", "continuous"] | None = Field(
        default=None, description="default: integer when min and max are both integers"
    )

    @model_validator(mode="after")
    def _is_a_range(self) -> TuningRangeInput:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.scale == "log" and self.min <= 0:
            raise ValueError("a log scale needs min > 0")
        if self.type == "integer" and not (float(self.min).is_integer() and float(self.max).is_integer()):
            raise ValueError("an integer range needs integer min and max")
        return self

    def as_range(self) -> Range:
        integer = self.type == "integer" or (
            self.type is None and isinstance(self.min, int) and isinstance(self.max, int)
        )
        return Range(float(self.min), float(self.max), "integer" if integer else "continuous", self.scale)


class TuningInput(BaseModel):
    """Hyperparameter tuning: train several settings in parallel and go on with the best (on validation)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_trials: int = Field(default=6, ge=1, le=MAX_TRIALS, description="training jobs in all")
    max_parallel: int = Field(
        default=2, ge=1, le=MAX_PARALLEL, description="training jobs at a time (locally also at most the CPU cores)"
    )
    strategy: Literal["Bayesian", "Random"] = Field(
        default="Bayesian", description="SageMaker's search strategy; locally both sample at random"
    )
    ranges: dict[str, Any] | None = Field(
        default=None,
        description="name -> {min, max, scale: linear|log, type: integer|continuous} or a list of values; "
        "default: the trainer's built-in ranges",
    )
    objective_regex: str | None = Field(
        default=None,
        description="regex with one group that finds the validation score (maximised) in the trainer's output; "
        "default: the built-in trainer's f1_macro or r2",
    )

    @field_validator("objective_regex")
    @classmethod
    def _objective_regex_is_usable(cls, value: str | None) -> str | None:
        return None if value is None else check_objective_regex(value)

    @field_validator("ranges")
    @classmethod
    def _ranges_are_ranges(cls, value: dict[str, Any] | None) -> dict[str, TuningRangeInput | list[Any]] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must name at least one hyperparameter (or leave ranges out for the built-in ones)")
        checked: dict[str, TuningRangeInput | list[Any]] = {}
        for name, spec in value.items():
            if name in RESERVED_HYPERPARAMETERS or name.startswith(("sagemaker_", "_")):
                raise ValueError(f"{name!r} is set by the pipeline and cannot be tuned")
            if isinstance(spec, list):
                if not spec or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in spec):
                    raise ValueError(f"{name}: a list of values needs at least one, each a string or a number")
                checked[name] = list(spec)
            elif isinstance(spec, dict):
                try:
                    checked[name] = TuningRangeInput.model_validate(spec)
                except ValidationError as error:
                    problems = "; ".join(
                        ": ".join(
                            [".".join(map(str, e["loc"]))] * bool(e["loc"])
                            + [str(e["msg"]).removeprefix("Value error, ")]
                        )
                        for e in error.errors()
                    )
                    raise ValueError(f"{name}: {problems}") from None
            else:
                raise ValueError(f"{name}: must be {{min, max[, scale, type]}} or a list of values")
        return checked


def tuning_config(
    settings: TuningInput, job_name: str, fixed: set[str], problem_type: str | None, algorithm: str = "auto"
) -> TuningConfig:
    """The run's tuning settings. Ranges default to ``algorithm``'s built-in search space without the
    hyperparameters the input ``fixed``; a range given for a fixed one is an error (SageMaker refuses a
    hyperparameter both static and tuned)."""
    if settings.ranges is None:
        ranges = {k: v for k, v in default_ranges(algorithm, problem_type).items() if k not in fixed}
        if not ranges:
            raise InputValidationError(
                f"tuning: every hyperparameter of the built-in search space is fixed in hyperparameters "
                f"({', '.join(sorted(fixed))}); give tuning.ranges or leave some unset"
            )
    else:
        both = sorted(fixed & set(settings.ranges))
        if both:
            raise InputValidationError(
                f"tuning.ranges: {', '.join(both)} also fixed in hyperparameters; a hyperparameter is either "
                "fixed or tuned"
            )
        ranges = {k: v.as_range() if isinstance(v, TuningRangeInput) else v for k, v in settings.ranges.items()}
    return TuningConfig(
        job_name=job_name,
        strategy=settings.strategy,
        max_trials=settings.max_trials,
        max_parallel=min(settings.max_parallel, settings.max_trials),
        objective_metric=OBJECTIVE_METRIC,
        metric_definitions=metric_definitions(settings.objective_regex),
        parameter_ranges=parameter_ranges(ranges),
    )
