"""SageMaker's blue/green deployment guardrails, as the stand-in plays them.

An UpdateEndpoint with a ``DeploymentConfig`` (BlueGreenUpdatePolicy) does not switch the endpoint at once:
the endpoint goes to ``Updating`` with a ``PendingDeploymentSummary`` naming the new endpoint config, and
the new fleet takes its share of the traffic step by step (:func:`pipeline_core.rollout.timeline`: a canary or
linear steps, each baking ``WaitIntervalInSeconds``, then ``TerminationWaitInSeconds`` of final baking). Each
DescribeEndpoint advances it by the wall clock and asks CloudWatch whether any alarm of the
``AutoRollbackConfiguration`` was in ALARM since the update began (their state history, so an alarm that
fired and cleared between two DescribeEndpoint calls still counts); if one was, the deployment is rolled
back: the endpoint is ``InService`` on its old config, as SageMaker leaves it, with a ``FailureReason``
naming the alarm. Once the timeline ends without an alarm, the endpoint serves the new config.

Where the stand-in differs from SageMaker (docs/rollout.md):

* It acts when asked (DescribeEndpoint, which the state machine polls every ``endpoint_poll_seconds``), not
  continuously: a rollback takes effect at the next DescribeEndpoint, and the runtime (``runtime.py``) follows
  the endpoint record, refreshed every second, shifting traffic by the clock in between.
* A step's share of traffic is the new fleet's share of the variant's instances (whole instances, rounded
  up); SageMaker routes by the instances it has turned on, which this approximates.
* SageMaker's ``FailureReason`` after a rollback is not documented (and may be empty); the stand-in's names
  the alarm. Rolling deployments (``RollingUpdatePolicy``) and multi-variant traffic shifting are refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline_core.aws.cloudwatch import AlarmFiring, parse_time
from pipeline_core.rollout import TrafficStep, timeline
from pipeline_core.standin.errors import ValidationException

# The endpoint record's own field for a deployment in progress (not part of DescribeEndpoint's answer).
DEPLOYMENT = "StandInDeployment"
FirstAlarm = Callable[[list[str], datetime, datetime], AlarmFiring | None]


def _instances(size: Mapping[str, Any], count: int) -> int:
    """A CapacitySize in instances of a variant of ``count`` (a percentage rounds up to whole instances)."""
    if size["Type"] == "INSTANCE_COUNT":
        return int(size["Value"])
    return math.ceil(count * int(size["Value"]) / 100)


def check_deployment_config(deployment: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """SageMaker's rules for a blue/green DeploymentConfig between endpoint configs ``old`` and ``new`` (what
    botocore's model cannot say; the request's shape was checked already)."""
    policy = deployment.get("BlueGreenUpdatePolicy")
    if deployment.get("RollingUpdatePolicy"):
        raise ValidationException(
            "the SageMaker stand-in supports BlueGreenUpdatePolicy deployments only, not RollingUpdatePolicy"
        )
    if not policy:
        if deployment.get("AutoRollbackConfiguration"):
            raise ValidationException("AutoRollbackConfiguration needs a BlueGreenUpdatePolicy (the stand-in's rule)")
        return
    old_variants = [v["VariantName"] for v in old["ProductionVariants"]]
    new_variants = [v["VariantName"] for v in new["ProductionVariants"]]
    if sorted(old_variants) != sorted(new_variants):
        raise ValidationException(
            f"a blue/green deployment needs the new endpoint configuration to have the old one's variant names "
            f"({', '.join(old_variants)}), not {', '.join(new_variants)}"
        )
    if len(new_variants) != 1:
        raise ValidationException("the SageMaker stand-in shifts traffic for single-variant endpoints only")
    routing = policy["TrafficRoutingConfiguration"]
    kind = routing["Type"]
    count = int(new["ProductionVariants"][0].get("InitialInstanceCount", 1))
    size_field = {"CANARY": "CanarySize", "LINEAR": "LinearStepSize"}.get(kind)
    for other in ("CanarySize", "LinearStepSize"):
        if other in routing and other != size_field:
            raise ValidationException(f"TrafficRoutingConfiguration of Type {kind} takes no {other}")
    if size_field:
        if size_field not in routing:
            raise ValidationException(f"TrafficRoutingConfiguration of Type {kind} needs {size_field}")
        size = routing[size_field]
        if size["Type"] == "CAPACITY_PERCENT" and not 1 <= size["Value"] <= 100:
            raise ValidationException(f"{size_field}.Value {size['Value']} is a percentage: 1-100")
        step = _instances(size, count)
        low, high = (1, count / 2) if kind == "CANARY" else (count / 10, count / 2)
        if not low <= step <= high:
            what = "at most 50%" if kind == "CANARY" else "10-50%"
            raise ValidationException(
                f"{size_field} must be {what} of the variant's instance count ({count}): it is {step} instance"
                f"{'s' if step != 1 else ''}"
            )
    steps = deployment_steps(deployment, count)
    waiting = steps[-1].start + steps[-1].seconds
    timeout = policy.get("MaximumExecutionTimeoutInSeconds")
    if timeout is not None and timeout <= waiting:
        raise ValidationException(
            f"MaximumExecutionTimeoutInSeconds ({timeout}) must be larger than the waiting the deployment adds up "
            f"to ({waiting:g} s of WaitIntervalInSeconds and TerminationWaitInSeconds)"
        )


def deployment_steps(deployment: Mapping[str, Any], instance_count: int) -> list[TrafficStep]:
    """The timeline of a blue/green DeploymentConfig for a variant of ``instance_count`` instances."""
    policy = deployment["BlueGreenUpdatePolicy"]
    routing = policy["TrafficRoutingConfiguration"]
    kind = routing["Type"]
    if kind == "ALL_AT_ONCE":
        shares = [1.0]
    else:
        step = _instances(routing["CanarySize" if kind == "CANARY" else "LinearStepSize"], instance_count)
        if kind == "CANARY":
            shares = [step / instance_count, 1.0]
        else:
            shares = [min(1.0, k * step / instance_count) for k in range(1, math.ceil(instance_count / step) + 1)]
    return timeline(shares, routing["WaitIntervalInSeconds"], policy.get("TerminationWaitInSeconds", 0))


def alarm_names(deployment: Mapping[str, Any]) -> list[str]:
    return [a["AlarmName"] for a in deployment.get("AutoRollbackConfiguration", {}).get("Alarms", [])]


def start(
    record: dict[str, Any], config_name: str, variants: list[dict[str, Any]], deployment: Mapping[str, Any], at: str
) -> dict[str, Any]:
    """The endpoint record once UpdateEndpoint started a blue/green deployment to ``config_name`` at ``at``:
    Updating, still serving its old config, the new one pending."""
    count = int(variants[0].get("CurrentInstanceCount", 1))
    steps = deployment_steps(deployment, count)
    return {
        **{k: v for k, v in record.items() if k != "FailureReason"},
        "EndpointStatus": "Updating",
        "LastModifiedTime": at,
        "LastDeploymentConfig": dict(deployment),
        "PendingDeploymentSummary": {
            "EndpointConfigName": config_name,
            "ProductionVariants": _pending_variants(variants, steps[0], at),
            "StartTime": at,
        },
        DEPLOYMENT: {
            "EndpointConfigName": config_name,
            "ProductionVariants": variants,
            "StartedAt": at,
            "Steps": [[s.start, s.seconds, s.share] for s in steps],
            "Alarms": alarm_names(deployment),
        },
    }


def _steps(deployment: Mapping[str, Any]) -> list[TrafficStep]:
    return [TrafficStep(start, seconds, share, "Baking") for start, seconds, share in deployment["Steps"]]


def _pending_variants(variants: list[dict[str, Any]], step: TrafficStep, started: str) -> list[dict[str, Any]]:
    since = (parse_time(started) + timedelta(seconds=step.start)).isoformat()
    return [
        {
            **{k: v for k, v in variant.items() if k in ("VariantName", "DeployedImages", "CurrentInstanceCount")},
            "DesiredInstanceCount": variant.get("DesiredInstanceCount", variant.get("CurrentInstanceCount", 1)),
            "VariantStatus": [
                {
                    "Status": step.phase,
                    "StatusMessage": f"{step.share:.0%} of the traffic on the new fleet, baking {step.seconds:g} s",
                    "StartTime": since,
                }
            ],
        }
        for variant in variants
    ]


def current_step(deployment: Mapping[str, Any], now: datetime) -> TrafficStep | None:
    """The step in effect at ``now``; None once the timeline has ended."""
    elapsed = (now - parse_time(deployment["StartedAt"])).total_seconds()
    return next((s for s in _steps(deployment) if elapsed < s.start + s.seconds), None)


def traffic_share(record: Mapping[str, Any], now: datetime) -> tuple[str, float] | None:
    """(the pending endpoint config, its share of the traffic) while a deployment is under way; None otherwise
    (the runtime's view, by the clock: a rollback is for DescribeEndpoint to decide)."""
    deployment = record.get(DEPLOYMENT)
    if not deployment:
        return None
    step = current_step(deployment, now)
    return deployment["EndpointConfigName"], 1.0 if step is None else step.share


def advance(record: dict[str, Any], now: datetime, first_alarm: FirstAlarm) -> dict[str, Any]:
    """The endpoint record at ``now``: rolled back if a rollback alarm was in ALARM since the deployment began,
    the new config served once its timeline ended, else the deployment still under way. A record without a
    deployment is returned as it is."""
    deployment = record.get(DEPLOYMENT)
    if not deployment:
        return record
    started = parse_time(deployment["StartedAt"])
    steps = _steps(deployment)
    ends = started + timedelta(seconds=steps[-1].start + steps[-1].seconds)
    firing = first_alarm(deployment["Alarms"], started, min(now, ends)) if deployment["Alarms"] else None
    at = now.astimezone(UTC).isoformat()
    base = {k: v for k, v in record.items() if k not in (DEPLOYMENT, "PendingDeploymentSummary")}
    if firing is not None:
        return {
            **base,
            "EndpointStatus": "InService",
            "LastModifiedTime": at,
            "FailureReason": (
                f"The deployment of endpoint configuration {deployment['EndpointConfigName']} was rolled back: "
                f"CloudWatch alarm {firing.name} was in ALARM at {firing.at.isoformat()} ({firing.reason})"
            ),
        }
    if now >= ends:
        return {
            **base,
            "EndpointConfigName": deployment["EndpointConfigName"],
            "ProductionVariants": deployment["ProductionVariants"],
            "EndpointStatus": "InService",
            "LastModifiedTime": at,
            "PreviousEndpointConfigNames": [
                *record.get("PreviousEndpointConfigNames", []),
                record["EndpointConfigName"],
            ],
        }
    step = current_step(deployment, now)
    assert step is not None  # now < ends
    pending = dict(record["PendingDeploymentSummary"])
    pending["ProductionVariants"] = _pending_variants(deployment["ProductionVariants"], step, deployment["StartedAt"])
    return {**record, "PendingDeploymentSummary": pending}


def in_progress(record: Mapping[str, Any]) -> str | None:
    """The endpoint config a deployment under way deploys, if one is."""
    deployment = record.get(DEPLOYMENT)
    return str(deployment["EndpointConfigName"]) if deployment else None
