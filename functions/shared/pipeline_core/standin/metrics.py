"""Training metrics from a job's log, the way SageMaker reads them: ``MetricDefinitions`` regexes.

SageMaker scans what the training container writes to stdout and stderr (its CloudWatch log) with each
``AlgorithmSpecification.MetricDefinitions`` regex; the first capture group is the value, and the last match
is the metric's final value (``FinalMetricDataList`` of DescribeTrainingJob, and the objective a tuning job
ranks its training jobs by).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline_core.standin.errors import ValidationException


def compile_definitions(definitions: Iterable[Mapping[str, Any]]) -> dict[str, re.Pattern[str]]:
    """``{metric name: regex}``; a regex that does not compile or captures nothing is a ValidationException."""
    compiled: dict[str, re.Pattern[str]] = {}
    for definition in definitions:
        name, regex = str(definition["Name"]), str(definition["Regex"])
        try:
            pattern = re.compile(regex)
        except re.error as error:
            raise ValidationException(
                f"MetricDefinitions {name!r}: regex {regex!r} does not compile: {error}"
            ) from None
        if pattern.groups < 1:
            raise ValidationException(
                f"MetricDefinitions {name!r}: regex {regex!r} has no capture group for the metric's value"
            )
        compiled[name] = pattern
    return compiled


def final_metric_values(definitions: Iterable[Mapping[str, Any]], lines: Iterable[str]) -> dict[str, float]:
    """The last value each metric's regex found in ``lines`` (metrics never matched are left out; a match
    that is not a finite number is skipped, as SageMaker drops values it cannot parse)."""
    patterns = compile_definitions(definitions)
    found: dict[str, float] = {}
    for line in lines:
        for name, pattern in patterns.items():
            for match in pattern.finditer(line):
                try:
                    value = float(match.group(1))
                except (TypeError, ValueError):
                    continue
                if math.isfinite(value):
                    found[name] = value
    return found
