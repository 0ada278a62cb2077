"""CreateHyperParameterTuningJob of the stand-in: a bounded number of training jobs, some at a time, each a
normal CreateTrainingJob (its script in its own process), ranked by the objective metric read from its log.

Where it differs from SageMaker (also in docs/tuning.md):

* ``Bayesian`` and ``Random`` both sample at random: a Latin hypercube over the ranges (each range cut
  into as many strata as there are training jobs, every stratum used once), so a handful of trials
  still spreads over the whole space. There is no Bayesian model of the objective; ``Hyperband`` and
  ``Grid`` are refused.
* Training jobs run ``min(MaxParallelTrainingJobs, CPU cores)`` at a time, and only while the time budget
  (what is left of the stand-in Lambda's timeout) lasts: a job is not started with less than
  ``MIN_TRIAL_SECONDS`` left, and one still running when it ends is stopped.
* ``ScalingType`` ``Auto`` is taken as ``Linear``; early stopping, warm start and ``Autotune`` are not run.
* Training jobs are named ``<tuning job>-<NNN>-<8 hex>`` as SageMaker names them, but the hex comes from
  the tuning job's name, and the samples from its ``RandomSeed`` (else its name): a retried request
  finds its completed training jobs and does not train them again.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from pipeline_core.errors import PipelineError, TuningFailedError
from pipeline_core.observability import logger
from pipeline_core.standin import training
from pipeline_core.standin.errors import ResourceInUse, ResourceNotFound, ValidationException
from pipeline_core.standin.metrics import compile_definitions
from pipeline_core.standin.store import RecordStore, now_iso, same_request, validate_request

KIND = "hyper-parameter-tuning-jobs"
# SageMaker's pattern for tuning job names: at most 32 characters, so a training job name fits in 63.
_TUNING_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}$")
LOCAL_STRATEGIES = ("Bayesian", "Random")
# A training job started with less time than this left would only be stopped (train.py alone imports
# pandas and scikit-learn for a few seconds).
MIN_TRIAL_SECONDS = 20.0
# A failure reason of the tuning job lists each training job's reason, cut to this many characters.
TRIAL_REASON_CHARS = 400
# TrainingJobDefinition fields that are CreateTrainingJob fields too (the rest describe the tuning).
_TRAINING_FIELDS = (
    "AlgorithmSpecification",
    "RoleArn",
    "InputDataConfig",
    "VpcConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "StoppingCondition",
    "EnableNetworkIsolation",
    "EnableInterContainerTrafficEncryption",
    "EnableManagedSpotTraining",
    "CheckpointConfig",
    "RetryStrategy",
    "Environment",
)
# Kept in the record for ListTrainingJobsForHyperParameterTuningJob; not part of the Describe answer.
_SUMMARIES = "StandInTrainingJobSummaries"
_NOTES = "StandInNotes"


@dataclass(frozen=True)
class ParameterRange:
    """One range of ``ParameterRanges``: ``kind`` is integer, continuous or categorical."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    scaling: str = "Linear"
    values: tuple[str, ...] = ()

    def at(self, u: float) -> str:
        """The value at ``u`` in [0, 1) of the range (as SageMaker passes it: a string)."""
        if self.kind == "categorical":
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        if self.kind == "integer":
            # Each integer gets an equal share of [0, 1) (of its log on a log scale).
            low, high = self.low, self.high + 1
            value = (
                math.exp(_lerp(math.log(low), math.log(high), u))
                if self.scaling == "Logarithmic"
                else _lerp(low, high, u)
            )
            return str(min(int(self.high), max(int(self.low), math.floor(value))))
        if self.scaling == "Logarithmic":
            return repr(math.exp(_lerp(math.log(self.low), math.log(self.high), u)))
        if self.scaling == "ReverseLogarithmic":  # dense near 1: a log scale of 1 - x
            return repr(1.0 - math.exp(_lerp(math.log(1.0 - self.high), math.log(1.0 - self.low), 1.0 - u)))
        return repr(_lerp(self.low, self.high, u))


def _lerp(low: float, high: float, u: float) -> float:
    return low + (high - low) * u


def _number(name: str, field: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValidationException(f"ParameterRanges {name!r}: {field} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValidationException(f"ParameterRanges {name!r}: {field} {text!r} is not a finite number")
    return value


def parse_ranges(ranges: Mapping[str, Any]) -> list[ParameterRange]:
    """The request's ``ParameterRanges``, checked as SageMaker checks them."""
    if ranges.get("AutoParameters"):
        raise ValidationException("ParameterRanges.AutoParameters (Autotune) is not run by the stand-in")
    parsed: list[ParameterRange] = []
    for kind, key in (("integer", "IntegerParameterRanges"), ("continuous", "ContinuousParameterRanges")):
        for spec in ranges.get(key, []):
            name = spec["Name"]
            low, high = _number(name, "MinValue", spec["MinValue"]), _number(name, "MaxValue", spec["MaxValue"])
            scaling = spec.get("ScalingType", "Auto")
            scaling = "Linear" if scaling == "Auto" else scaling
            if kind == "integer" and not (low.is_integer() and high.is_integer()):
                raise ValidationException(f"IntegerParameterRanges {name!r}: MinValue and MaxValue must be integers")
            if low > high:
                raise ValidationException(f"ParameterRanges {name!r}: MinValue {low:g} is above MaxValue {high:g}")
            if scaling == "Logarithmic" and low <= 0:
                raise ValidationException(f"ParameterRanges {name!r}: a Logarithmic scale needs MinValue > 0")
            if scaling == "ReverseLogarithmic" and (kind == "integer" or low < 0 or high >= 1):
                raise ValidationException(
                    f"ParameterRanges {name!r}: ReverseLogarithmic needs a continuous range within 0 <= x < 1"
                )
            parsed.append(ParameterRange(name, kind, low, high, scaling))
    for spec in ranges.get("CategoricalParameterRanges", []):
        if not spec["Values"]:
            raise ValidationException(f"CategoricalParameterRanges {spec['Name']!r}: Values is empty")
        parsed.append(ParameterRange(spec["Name"], "categorical", values=tuple(str(v) for v in spec["Values"])))
    names = [r.name for r in parsed]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValidationException(f"ParameterRanges name {', '.join(duplicates)} more than once")
    if not parsed:
        raise ValidationException("ParameterRanges has no range to tune")
    return parsed


def sample_hyperparameters(ranges: Sequence[ParameterRange], count: int, seed: int) -> list[dict[str, str]]:
    """``count`` settings of ``ranges``: a Latin hypercube (each range's [0, 1) cut into ``count`` strata,
    one random point in each, strata shuffled per range), so few samples still cover every range."""
    rng = random.Random(seed)
    samples: list[dict[str, str]] = [{} for _ in range(count)]
    for parameter in ranges:
        strata = list(range(count))
        rng.shuffle(strata)
        for sample, stratum in zip(samples, strata, strict=True):
            sample[parameter.name] = parameter.at((stratum + rng.random()) / count)
    return samples


def training_job_name(tuning_job_name: str, number: int) -> str:
    """``<tuning job>-<NNN>-<8 hex>``, SageMaker's form; the hex is derived, not random (see module doc)."""
    digest = hashlib.sha256(f"{tuning_job_name}/{number}".encode()).hexdigest()[:8]
    return f"{tuning_job_name}-{number:03d}-{digest}"


def _seed(config: Mapping[str, Any], name: str) -> int:
    if "RandomSeed" in config:
        return int(config["RandomSeed"])
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")


@dataclass
class _Plan:
    """A checked request: what to run and how to rank it."""

    name: str
    definition: dict[str, Any]
    objective_name: str
    maximize: bool
    samples: list[dict[str, str]]
    parallel: int


def _plan(request: Mapping[str, Any], cpu_count: int) -> _Plan:
    name = request["HyperParameterTuningJobName"]
    if not _TUNING_NAME.match(name):
        raise ValidationException(
            f"hyper-parameter-tuning-job name {name!r} must match {_TUNING_NAME.pattern} (at most 32 characters)"
        )
    config = request["HyperParameterTuningJobConfig"]
    if config["Strategy"] not in LOCAL_STRATEGIES:
        raise ValidationException(
            f"Strategy {config['Strategy']!r}: the stand-in runs {' and '.join(LOCAL_STRATEGIES)} (as random search)"
        )
    definition = request.get("TrainingJobDefinition")
    if definition is None:
        raise ValidationException("the stand-in needs TrainingJobDefinition (TrainingJobDefinitions is not run)")
    objective = config.get("HyperParameterTuningJobObjective")
    if objective is None:
        raise ValidationException(f"Strategy {config['Strategy']} needs HyperParameterTuningJobObjective")
    metrics = compile_definitions(definition["AlgorithmSpecification"].get("MetricDefinitions") or [])
    if objective["MetricName"] not in metrics:
        raise ValidationException(
            f"objective metric {objective['MetricName']!r} is not in TrainingJobDefinition.AlgorithmSpecification."
            f"MetricDefinitions ({', '.join(metrics) or 'none'})"
        )
    limits = config["ResourceLimits"]
    if "MaxNumberOfTrainingJobs" not in limits:
        raise ValidationException("ResourceLimits.MaxNumberOfTrainingJobs is required by the stand-in")
    count, parallel = int(limits["MaxNumberOfTrainingJobs"]), int(limits["MaxParallelTrainingJobs"])
    if count < 1 or parallel < 1:
        raise ValidationException("ResourceLimits: MaxNumberOfTrainingJobs and MaxParallelTrainingJobs must be >= 1")
    ranges = parse_ranges(config.get("ParameterRanges", {}))
    static = definition.get("StaticHyperParameters", {})
    both = sorted(r.name for r in ranges if r.name in static)
    if both:
        raise ValidationException(f"hyperparameter(s) {both} are both static and tuned")
    return _Plan(
        name=name,
        definition=dict(definition),
        objective_name=objective["MetricName"],
        maximize=objective["Type"] == "Maximize",
        samples=sample_hyperparameters(ranges, count, _seed(config, name)),
        parallel=max(1, min(parallel, count, cpu_count)),
    )


def _training_request(plan: _Plan, number: int, tuned: Mapping[str, str], tags: Any) -> dict[str, Any]:
    """The CreateTrainingJob request of training job ``number`` (from 1)."""
    request: dict[str, Any] = {key: plan.definition[key] for key in _TRAINING_FIELDS if key in plan.definition}
    request["TrainingJobName"] = training_job_name(plan.name, number)
    request["HyperParameters"] = {
        **plan.definition.get("StaticHyperParameters", {}),
        **tuned,
        training.TUNING_OBJECTIVE_PARAMETER: plan.objective_name,
    }
    if tags:
        request["Tags"] = tags  # SageMaker tags a tuning job's training jobs with its tags
    return request


def _summary(
    plan: _Plan, request: Mapping[str, Any], tuned: Mapping[str, str], store: RecordStore, errors: Mapping[str, str]
) -> dict[str, Any]:
    """HyperParameterTrainingJobSummary of a finished training job (``errors``: the error of each job that
    raised one, for a job refused before it had a record)."""
    name = request["TrainingJobName"]
    record = store.get("training-jobs", name) or {}
    if name in errors and "FailureReason" not in record:
        record = {**record, "TrainingJobStatus": "Failed", "FailureReason": errors[name]}
    status = record.get("TrainingJobStatus", "Failed")
    summary: dict[str, Any] = {
        "TrainingJobName": name,
        "TrainingJobArn": store.arn("training-jobs", name),
        "TuningJobName": plan.name,
        "CreationTime": record.get("CreationTime", now_iso()),
        "TrainingJobStatus": status,
        "TunedHyperParameters": dict(tuned),
    }
    for key in ("TrainingStartTime", "TrainingEndTime", "FailureReason"):
        if key in record:
            summary[key] = record[key]
    values = {m["MetricName"]: m["Value"] for m in record.get("FinalMetricDataList", [])}
    if status == "Completed" and plan.objective_name in values:
        summary["ObjectiveStatus"] = "Succeeded"
        summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "Type": "Maximize" if plan.maximize else "Minimize",
            "MetricName": plan.objective_name,
            "Value": values[plan.objective_name],
        }
    else:
        summary["ObjectiveStatus"] = "Failed"
        if status == "Completed":
            summary["FailureReason"] = (
                f"the objective metric {plan.objective_name} was not found in the training job's output "
                "(no line matched its MetricDefinitions regex)"
            )
    return summary


def _counters(summaries: Sequence[Mapping[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
    """(TrainingJobStatusCounters, ObjectiveStatusCounters); a failed job is a NonRetryableError, as a
    failing script is to SageMaker."""
    jobs = {"Completed": 0, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0, "Stopped": 0}
    objectives = {"Succeeded": 0, "Pending": 0, "Failed": 0}
    for summary in summaries:
        status = summary["TrainingJobStatus"]
        jobs["NonRetryableError" if status == "Failed" else status] += 1
        objectives[summary["ObjectiveStatus"]] += 1
    return jobs, objectives


def _run_training_jobs(
    store: RecordStore,
    plan: _Plan,
    tags: Any,
    deadline: float | None,
    base_env: Mapping[str, str] | None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Run the plan's training jobs, ``plan.parallel`` at a time; (summaries in job order, notes)."""
    notes: list[str] = []
    errors: dict[str, str] = {}

    def run(request: dict[str, Any], budget: float | None) -> None:
        name = request["TrainingJobName"]
        try:
            training.create_training_job(store, request, time_budget_seconds=budget, base_env=base_env)
        except PipelineError as error:  # one failed training job does not fail the tuning job
            errors[name] = f"{type(error).__name__}: {error}"
            logger.info("tuning: training job failed", extra={"training_job": name, "error": errors[name]})

    pending = list(enumerate(plan.samples, start=1))
    started: list[tuple[dict[str, Any], dict[str, str]]] = []
    running: set[Future[None]] = set()
    with ThreadPoolExecutor(max_workers=plan.parallel, thread_name_prefix=f"tune-{plan.name}") as pool:
        while pending or running:
            while pending and len(running) < plan.parallel:
                budget = None if deadline is None else deadline - time.monotonic()
                if budget is not None and budget < MIN_TRIAL_SECONDS:
                    notes.append(
                        f"{len(pending)} of {len(plan.samples)} training jobs were not started: the stand-in's "
                        f"time budget (its Lambda's timeout) had less than {MIN_TRIAL_SECONDS:g} s left"
                    )
                    pending = []
                    break
                number, tuned = pending.pop(0)
                request = _training_request(plan, number, tuned, tags)
                started.append((request, tuned))
                running.add(pool.submit(run, request, budget))
            if running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()  # anything but a PipelineError is a bug: let it out
    return [_summary(plan, request, tuned, store, errors) for request, tuned in started], notes


def create_hyper_parameter_tuning_job(
    store: RecordStore,
    request: dict[str, Any],
    time_budget_seconds: float | None = None,
    base_env: Mapping[str, str] | None = None,
    cpu_count: int | None = None,
) -> dict[str, Any]:
    """CreateHyperParameterTuningJob run to the end: DescribeHyperParameterTuningJob with status
    ``Completed`` (what ``createHyperParameterTuningJob.sync`` returns) when at least one training job
    produced the objective metric; otherwise the job is ``Failed`` and TuningFailedError names each
    training job's reason. ``time_budget_seconds`` bounds the whole tuning job (see the module doc).
    """
    validate_request("CreateHyperParameterTuningJob", request)
    plan = _plan(request, cpu_count or os.cpu_count() or 1)
    existing = store.get(KIND, plan.name)
    if existing is not None:
        if not same_request(existing, request):
            raise ResourceInUse(f"Hyperparameter tuning job names must be unique within an account: {plan.name}")
        if existing["HyperParameterTuningJobStatus"] == "Completed":
            logger.info("tuning job already completed; returning it", extra={"tuning_job": plan.name})
            return _described(existing)
        # An earlier attempt was cut off or failed: run again; completed training jobs are not retrained.

    created = existing["CreationTime"] if existing else now_iso()
    record: dict[str, Any] = {
        **{key: value for key, value in request.items() if key != "Tags"},
        "HyperParameterTuningJobArn": store.arn(KIND, plan.name),
        "HyperParameterTuningJobStatus": "InProgress",
        "CreationTime": created,
        "LastModifiedTime": created,
        "TrainingJobStatusCounters": _counters([])[0],
        "ObjectiveStatusCounters": _counters([])[1],
    }
    store.put(KIND, plan.name, record)
    started = time.monotonic()
    deadline = None if time_budget_seconds is None else started + time_budget_seconds
    logger.info(
        "tuning started",
        extra={"tuning_job": plan.name, "training_jobs": len(plan.samples), "parallel": plan.parallel},
    )
    summaries, notes = _run_training_jobs(store, plan, request.get("Tags"), deadline, base_env)

    jobs, objectives = _counters(summaries)
    scored = [s for s in summaries if s["ObjectiveStatus"] == "Succeeded"]
    ended = now_iso()
    record.update(
        TrainingJobStatusCounters=jobs,
        ObjectiveStatusCounters=objectives,
        HyperParameterTuningEndTime=ended,
        LastModifiedTime=ended,
        ConsumedResources={"RuntimeInSeconds": max(1, round(time.monotonic() - started))},
        **{_SUMMARIES: summaries, _NOTES: notes},
    )
    if not scored:
        reasons = "; ".join(
            f"{s['TrainingJobName']}: {str(s.get('FailureReason', s['TrainingJobStatus']))[-TRIAL_REASON_CHARS:]}"
            for s in summaries
        )
        reason = f"no training job of {plan.name} produced the objective metric {plan.objective_name}: " + (
            reasons or "; ".join(notes)
        )
        record.update(HyperParameterTuningJobStatus="Failed", FailureReason=reason)
        store.put(KIND, plan.name, record)
        raise TuningFailedError(reason)

    def objective(summary: Mapping[str, Any]) -> float:
        value = float(summary["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
        return value if plan.maximize else -value

    # The first of equally good jobs wins: the order of the samples, not of completion, decides.
    best = max(scored, key=objective)
    record.update(HyperParameterTuningJobStatus="Completed", BestTrainingJob=best)
    store.put(KIND, plan.name, record)
    logger.info(
        "tuning completed",
        extra={"tuning_job": plan.name, "best_training_job": best["TrainingJobName"], "counters": jobs, "notes": notes},
    )
    return _described(record)


def _described(record: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if not key.startswith("StandIn")}


def _record(store: RecordStore, name: str) -> dict[str, Any]:
    record = store.get(KIND, name) if _TUNING_NAME.match(name) else None
    if record is None:
        raise ResourceNotFound(f"Amazon SageMaker can't find a tuning job with name {name}")
    return record


def describe_hyper_parameter_tuning_job(store: RecordStore, request: dict[str, Any]) -> dict[str, Any]:
    """DescribeHyperParameterTuningJob; a missing job is SageMaker's ResourceNotFound."""
    validate_request("DescribeHyperParameterTuningJob", request)
    return _described(_record(store, request["HyperParameterTuningJobName"]))


def list_training_jobs_for_hyper_parameter_tuning_job(store: RecordStore, request: dict[str, Any]) -> dict[str, Any]:
    """ListTrainingJobsForHyperParameterTuningJob (every job in one page; ``StatusEquals`` is honoured)."""
    validate_request("ListTrainingJobsForHyperParameterTuningJob", request)
    summaries = _record(store, request["HyperParameterTuningJobName"]).get(_SUMMARIES, [])
    wanted = request.get("StatusEquals")
    return {"TrainingJobSummaries": [s for s in summaries if wanted is None or s["TrainingJobStatus"] == wanted]}
