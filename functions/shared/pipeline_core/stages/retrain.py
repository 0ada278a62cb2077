"""Retrain on an alarm: a "CloudWatch Alarm State Change" event into ALARM starts a run of the model it watches.

The drift alarm (infra/template.yaml, ``MonitorDriftAlarm``) watches ``stepml/Monitoring DriftedFeatures`` of
one model (dimension ``ModelName``). CloudWatch sends its state changes to EventBridge; a rule on that alarm
invokes StartPipeline, which hands the event here. The new run trains the model the way its champion (the
newest approved version) was trained: the champion's execution input, read back from Step Functions, with
``trigger`` saying which alarm started it. The dataset is the location the champion was trained from, read
again now: refresh that object with newly labelled data (or upload new data under ``incoming/``, which starts
a run of its own). An unchanged file reruns nothing: the step cache reuses every step and the champion stays.

EventBridge delivers at least once, so the execution name is derived from the alarm and the time of its state
change: a repeated event finds the run it already started.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel, Field

from pipeline_core.aws.clients import client, transient_errors_as
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.observability import logger
from pipeline_core.settings import optional_env, require_env
from pipeline_core.stages.start_pipeline import (
    EXECUTION_NAME_MAX,
    HASH_CHARS,
    EventModel,
    name_slug,
    start_execution,
)

ALARM_SOURCE = "aws.cloudwatch"
ALARM_DETAIL_TYPE = "CloudWatch Alarm State Change"
MODEL_DIMENSION = "ModelName"
# Fields of the champion's input that belong to that run alone, not to a retraining of the model.
_NOT_CARRIED_OVER = ("resume_of", "no_cache", "trigger")


class AlarmState(EventModel):
    value: str
    reason: str = ""
    timestamp: str = ""


class AlarmMetric(EventModel):
    namespace: str = ""
    name: str = ""
    dimensions: dict[str, str] = Field(default_factory=dict)


class AlarmMetricStat(EventModel):
    metric: AlarmMetric


class AlarmQuery(EventModel):
    id: str = ""
    metric_stat: AlarmMetricStat | None = Field(None, alias="metricStat")


class AlarmConfiguration(EventModel):
    metrics: list[AlarmQuery] = Field(default_factory=list)


class AlarmDetail(EventModel):
    alarm_name: str = Field(alias="alarmName", min_length=1)
    state: AlarmState
    configuration: AlarmConfiguration = Field(default_factory=AlarmConfiguration)


class AlarmStateChangeEvent(EventModel):
    """The EventBridge event CloudWatch sends when an alarm changes state (only the fields read here)."""

    source: str
    detail_type: str = Field(alias="detail-type")
    detail: AlarmDetail

    def model_name(self) -> str | None:
        """The ``ModelName`` dimension of the alarm's metric, if it has one."""
        for query in self.detail.configuration.metrics:
            if query.metric_stat and MODEL_DIMENSION in query.metric_stat.metric.dimensions:
                return query.metric_stat.metric.dimensions[MODEL_DIMENSION]
        return None


class RetrainResult(BaseModel):
    """What one alarm event did: a retraining run started, one already existed, or nothing (and why)."""

    status: Literal["started", "already_started", "ignored"]
    reason: str | None = None
    alarm_name: str
    model_name: str | None = None
    champion_version: int | None = None
    execution_name: str | None = None
    execution_arn: str | None = None


def is_alarm_event(event: Any) -> bool:
    """Whether ``event`` is a CloudWatch alarm state change (rather than an S3 upload)."""
    return isinstance(event, dict) and event.get("detail-type") == ALARM_DETAIL_TYPE


def retrain_execution_name(model_name: str, alarm_name: str, state_timestamp: str) -> str:
    """``retrain-<model>-<12 hex>``: the same alarm state change always yields the same name."""
    digest = hashlib.sha256(f"{alarm_name}\n{state_timestamp}".encode()).hexdigest()[:HASH_CHARS]
    slug = name_slug(model_name, EXECUTION_NAME_MAX - HASH_CHARS - len("retrain--"), "model")
    return f"retrain-{slug}-{digest}"


def retrain_input(champion_input: dict[str, Any], trigger: str) -> dict[str, Any]:
    """The champion's execution input without what only concerned its own run, with ``trigger`` set."""
    carried = {key: value for key, value in champion_input.items() if key not in _NOT_CARRIED_OVER}
    return {**carried, "trigger": trigger}


def _ignored(parsed: AlarmStateChangeEvent, reason: str, model_name: str | None = None) -> RetrainResult:
    logger.info("alarm event ignored", extra={"reason": reason, "alarm_name": parsed.detail.alarm_name})
    return RetrainResult(status="ignored", reason=reason, alarm_name=parsed.detail.alarm_name, model_name=model_name)


def retrain_on_alarm(
    event: dict[str, Any],
    sfn: Any | None = None,
    registry: ModelRegistry | None = None,
    environ: dict[str, str] | None = None,
) -> RetrainResult:
    """Start a retraining run of the model an alarm in ALARM watches; anything else is ignored, with why."""
    parsed = AlarmStateChangeEvent.model_validate(event)
    if parsed.source != ALARM_SOURCE or parsed.detail_type != ALARM_DETAIL_TYPE:
        return _ignored(parsed, f"event is {parsed.source!r} {parsed.detail_type!r}, not a CloudWatch alarm change")
    if parsed.detail.state.value != "ALARM":
        return _ignored(parsed, f"the alarm went to {parsed.detail.state.value}, not ALARM")
    if optional_env("RETRAIN_ON_ALARM", "true", environ).lower() != "true":
        return _ignored(parsed, "retraining on alarms is turned off (RETRAIN_ON_ALARM is not 'true')")
    model_name = parsed.model_name()
    if model_name is None:
        return _ignored(parsed, f"the alarm's metric has no {MODEL_DIMENSION} dimension: no model to retrain")

    registry = registry or ModelRegistry(require_env("MODEL_REGISTRY_TABLE", environ))
    champion = registry.champion(model_name, consistent=True)
    if champion is None:
        return _ignored(parsed, f"model {model_name} has no approved version to retrain from", model_name)
    sfn = sfn or client("stepfunctions")
    with transient_errors_as(f"reading the input of {champion.execution_arn}"):
        try:
            described = sfn.describe_execution(executionArn=champion.execution_arn)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ExecutionDoesNotExist":
                raise
            return _ignored(
                parsed,
                f"the execution that trained {model_name} v{champion.version} ({champion.execution_arn}) is no "
                "longer kept by Step Functions (90 days after it ended): start a run with the input you want",
                model_name,
            )
    trigger = f"alarm {parsed.detail.alarm_name} went to ALARM at {parsed.detail.state.timestamp}"
    execution_input = retrain_input(json.loads(described.get("input") or "{}"), trigger)
    name = retrain_execution_name(model_name, parsed.detail.alarm_name, parsed.detail.state.timestamp)
    state_machine_arn = require_env("STATE_MACHINE_ARN", environ)
    status, arn = start_execution(sfn, state_machine_arn, name, execution_input)
    logger.info(
        "retraining started" if status == "started" else "retraining already started for this alarm change",
        extra={"execution_name": name, "model_name": model_name, "champion_version": champion.version},
    )
    return RetrainResult(
        status="started" if status == "started" else "already_started",
        reason=trigger,
        alarm_name=parsed.detail.alarm_name,
        model_name=model_name,
        champion_version=champion.version,
        execution_name=name,
        execution_arn=arn,
    )
