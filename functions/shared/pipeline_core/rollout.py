"""Safe rollout settings: the execution input's ``rollout``, the DeploymentConfig it becomes, the endpoint's
rollback alarms, and the timeline of traffic steps both the docs and the SageMaker stand-in follow.

An endpoint update with a rollout is SageMaker's blue/green deployment with deployment guardrails: the new
model's fleet (green) takes the traffic in steps (canary, linear, or all at once), each step bakes while
CloudWatch alarms on the endpoint watch it, and an alarm in ALARM rolls the endpoint back to the old fleet
(blue). ValidateInput turns :class:`RolloutInput` into a :class:`~pipeline_core.models.RolloutConfig`;
PrepareRollout creates the alarms (:func:`endpoint_alarms`) and builds the request's DeploymentConfig
(:func:`deployment_config`). See docs/rollout.md.

SageMaker's limits (UpdateEndpoint's API reference and the deployment guardrails guide): WaitIntervalInSeconds
and TerminationWaitInSeconds 0-3600; MaximumExecutionTimeoutInSeconds 600-28800 and larger than the waiting
times; a canary at most 50% of the variant's instances, a linear step 10-50% of them; 1-10 rollback alarms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline_core.models import RolloutConfig, RolloutStrategy

STRATEGIES: tuple[RolloutStrategy, ...] = ("canary", "linear", "all_at_once")
# SageMaker's API limits (botocore's model of UpdateEndpoint: WaitIntervalInSeconds, TerminationWaitInSeconds,
# MaximumExecutionTimeoutInSeconds).
MAX_WAIT_SECONDS = 3600
MIN_TIMEOUT_SECONDS = 600
# SageMaker allows 28800; a run's execution (statemachine/pipeline.asl.json TimeoutSeconds, 7200) and the deploy
# lease it holds meanwhile (stages/deploy_lease.py) must outlast the rollout, with training before it.
MAX_TIMEOUT_SECONDS = 3600
# What the timeout leaves beyond the waiting itself by default: provisioning the new fleet, shifting traffic.
TIMEOUT_MARGIN_SECONDS = 600
MAX_INSTANCES = 20
DEFAULT_WAIT_SECONDS = 300
DEFAULT_BAKING_SECONDS = 300
DEFAULT_MAX_5XX_ERRORS = 0
DEFAULT_MAX_MODEL_LATENCY_MS = 500.0
# The alarms' metrics: SageMaker publishes them per minute, per EndpointName and VariantName.
ALARM_PERIOD_SECONDS = 60
VARIANT_NAME = "AllTraffic"  # the variant CreateEndpointConfig names (statemachine/pipeline.asl.json)


class RolloutInput(BaseModel):
    """How an endpoint update shifts traffic to the new model; every field has a default."""

    model_config = ConfigDict(extra="forbid", strict=True)

    strategy: RolloutStrategy = Field(
        default="canary",
        description="canary (a part of the traffic, then the rest), linear (equal steps) or all_at_once",
    )
    instance_count: int | None = Field(
        default=None,
        ge=1,
        le=MAX_INSTANCES,
        description="instances of the endpoint; default 2 for canary and linear (a canary is at most half of "
        "them), 1 for all_at_once",
    )
    step_instances: int | None = Field(
        default=None,
        ge=1,
        description="instances of the new fleet turned on per step: the canary (at most half of instance_count) "
        "or each linear step (10-50% of instance_count); default 1",
    )
    wait_seconds: int = Field(
        default=DEFAULT_WAIT_SECONDS,
        ge=0,
        le=MAX_WAIT_SECONDS,
        description="baking time of each step (all_at_once: of the one step) while the alarms watch",
    )
    baking_seconds: int = Field(
        default=DEFAULT_BAKING_SECONDS,
        ge=0,
        le=MAX_WAIT_SECONDS,
        description="final baking once all traffic is on the new model, before the old fleet is dropped",
    )
    timeout_seconds: int | None = Field(
        default=None,
        ge=MIN_TIMEOUT_SECONDS,
        le=MAX_TIMEOUT_SECONDS,
        description="the whole deployment's limit; more than the waiting it adds up to (default: that plus 600)",
    )
    max_5xx_errors: int = Field(
        default=DEFAULT_MAX_5XX_ERRORS,
        ge=0,
        description="rollback when the endpoint answers more 5XX errors than this in a minute",
    )
    max_model_latency_ms: float = Field(
        default=DEFAULT_MAX_MODEL_LATENCY_MS,
        gt=0,
        le=60_000,
        allow_inf_nan=False,
        description="rollback when the model's average latency over a minute exceeds this (milliseconds)",
    )

    @model_validator(mode="after")
    def _steps_fit_the_fleet(self) -> RolloutInput:
        rollout_config(self)  # every rule of SageMaker's, with its own message
        return self


def rollout_input_schema(schema: dict[str, Any]) -> None:
    """The execution input's ``rollout`` also takes a strategy's name alone (its defaults); say so."""
    schema["anyOf"].insert(-1, {"enum": list(STRATEGIES), "type": "string"})


def parse_rollout(value: Any) -> Any:
    """``"canary"`` (a strategy's name) means that strategy with every default."""
    return {"strategy": value} if isinstance(value, str) else value


def rollout_config(request: RolloutInput) -> RolloutConfig:
    """The run's rollout with every default filled in; a ValueError names what breaks SageMaker's rules."""
    strategy = request.strategy
    count = request.instance_count or (1 if strategy == "all_at_once" else 2)
    if strategy == "all_at_once":
        if request.step_instances not in (None, count):
            raise ValueError("step_instances: all_at_once turns on every instance at once; leave it out")
        step = count
    else:
        step = request.step_instances or 1
        low, high = (1, count // 2) if strategy == "canary" else (math.ceil(count / 10), count // 2)
        what = "a canary is at most 50%" if strategy == "canary" else "a linear step is 10-50%"
        if count < 2:
            raise ValueError(
                f"instance_count: {strategy} needs at least 2 instances ({what} of the endpoint's instances); "
                "use instance_count 2 or more, or strategy all_at_once"
            )
        if not low <= step <= high:
            raise ValueError(
                f"step_instances {step}: {what} of the endpoint's {count} instances, so {low}"
                + (f"-{high}" if high > low else "")
            )
    steps = traffic_steps(strategy, count, step)
    waiting = total_wait_seconds(steps, request.wait_seconds, request.baking_seconds)
    timeout = request.timeout_seconds
    if timeout is None:
        timeout = max(MIN_TIMEOUT_SECONDS, waiting + TIMEOUT_MARGIN_SECONDS)
        if timeout > MAX_TIMEOUT_SECONDS:
            raise ValueError(
                f"the rollout waits {waiting} s in all ({describe_steps(steps, request.wait_seconds)}, then "
                f"{request.baking_seconds} s final baking); with {TIMEOUT_MARGIN_SECONDS} s to provision the new "
                f"fleet that is more than the {MAX_TIMEOUT_SECONDS} s a run allows a rollout: shorten wait_seconds "
                "or baking_seconds, or use fewer steps"
            )
    elif timeout <= waiting:
        raise ValueError(
            f"timeout_seconds {timeout} must be larger than the {waiting} s the rollout waits "
            f"({describe_steps(steps, request.wait_seconds)}, then {request.baking_seconds} s final baking)"
        )
    return RolloutConfig(
        strategy=strategy,
        instance_count=count,
        step_instances=step,
        wait_seconds=request.wait_seconds,
        baking_seconds=request.baking_seconds,
        timeout_seconds=timeout,
        max_5xx_errors=request.max_5xx_errors,
        max_model_latency_ms=request.max_model_latency_ms,
    )


# --- the timeline ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrafficStep:
    """One step of a rollout: from ``start`` seconds after it began, ``share`` of the traffic (0-1) goes to the
    new fleet, for ``seconds``; ``phase`` is what DescribeEndpoint's VariantStatus calls it."""

    start: float
    seconds: float
    share: float
    phase: Literal["ActivatingTraffic", "Baking"]


def traffic_steps(strategy: RolloutStrategy, instance_count: int, step_instances: int) -> list[float]:
    """The new fleet's share of the traffic after each step (the last is 1.0). SageMaker turns on whole
    instances: a step of 1 of 2 instances is half of the traffic."""
    if strategy == "all_at_once":
        return [1.0]
    if strategy == "canary":
        return [step_instances / instance_count, 1.0]
    shares, active = [], 0
    while active < instance_count:
        active = min(instance_count, active + step_instances)
        shares.append(active / instance_count)
    return shares


def timeline(shares: list[float], wait_seconds: float, baking_seconds: float) -> list[TrafficStep]:
    """When each share holds. A step that leaves traffic on the old fleet bakes ``wait_seconds``; once all of it
    is on the new fleet, the final baking is ``baking_seconds`` (all_at_once, whose one step takes everything,
    bakes ``wait_seconds`` first). This is how the stand-in reads SageMaker's guide, whose wording leaves the
    exact phase lengths open."""
    steps: list[TrafficStep] = []
    at = 0.0
    for share in shares:
        if share < 1.0 or len(shares) == 1:
            steps.append(TrafficStep(at, wait_seconds, share, "Baking"))
            at += wait_seconds
    steps.append(TrafficStep(at, baking_seconds, 1.0, "Baking"))
    return steps


def total_wait_seconds(shares: list[float], wait_seconds: float, baking_seconds: float) -> int:
    """How long the rollout waits in all (its timeline's end)."""
    last = timeline(shares, wait_seconds, baking_seconds)[-1]
    return math.ceil(last.start + last.seconds)


def describe_steps(shares: list[float], wait_seconds: int) -> str:
    """``50% for 300 s`` per step before the last, for messages."""
    parts = [f"{round(share * 100):g}% for {wait_seconds} s" for share in shares if share < 1.0 or len(shares) == 1]
    return ", ".join(parts)


# --- what PrepareRollout sends --------------------------------------------------------------------------


@dataclass(frozen=True)
class AlarmDefinition:
    """One CloudWatch metric alarm on the endpoint (PutMetricAlarm's request, without the actions)."""

    name: str
    description: str
    metric_name: str
    statistic: str
    threshold: float
    dimensions: tuple[tuple[str, str], ...]

    def request(self, actions: list[str]) -> dict[str, Any]:
        return {
            "AlarmName": self.name,
            "AlarmDescription": self.description,
            "Namespace": "AWS/SageMaker",
            "MetricName": self.metric_name,
            "Dimensions": [{"Name": name, "Value": value} for name, value in self.dimensions],
            "Statistic": self.statistic,
            "Period": ALARM_PERIOD_SECONDS,
            "EvaluationPeriods": 1,
            "Threshold": self.threshold,
            "ComparisonOperator": "GreaterThanThreshold",
            # no traffic is no evidence against the new model
            "TreatMissingData": "notBreaching",
            "AlarmActions": actions,
            "OKActions": actions,
        }


def alarm_names(endpoint_name: str) -> tuple[str, str]:
    """The endpoint's rollback alarms: its 5XX errors and its model latency."""
    return f"{endpoint_name}-5xx-errors", f"{endpoint_name}-model-latency"


def endpoint_alarms(endpoint_name: str, rollout: RolloutConfig) -> list[AlarmDefinition]:
    """The alarms on ``endpoint_name``'s AWS/SageMaker metrics that roll a deployment back."""
    errors, latency = alarm_names(endpoint_name)
    dimensions = (("EndpointName", endpoint_name), ("VariantName", VARIANT_NAME))
    return [
        AlarmDefinition(
            errors,
            f"stepml: more than {rollout.max_5xx_errors} 5XX errors a minute on {endpoint_name}; rolls a deployment "
            "back",
            "Invocation5XXErrors",
            "Sum",
            float(rollout.max_5xx_errors),
            dimensions,
        ),
        AlarmDefinition(
            latency,
            f"stepml: average model latency over {rollout.max_model_latency_ms:g} ms on {endpoint_name}; rolls a "
            "deployment back",
            "ModelLatency",
            "Average",
            # ModelLatency is in microseconds
            rollout.max_model_latency_ms * 1000,
            dimensions,
        ),
    ]


def deployment_config(rollout: RolloutConfig, alarms: list[str]) -> dict[str, Any]:
    """UpdateEndpoint's DeploymentConfig: blue/green with the rollout's traffic routing and auto-rollback on
    ``alarms``."""
    routing: dict[str, Any] = {
        "Type": rollout.strategy.upper(),
        "WaitIntervalInSeconds": rollout.wait_seconds,
    }
    size = {"Type": "INSTANCE_COUNT", "Value": rollout.step_instances}
    if rollout.strategy == "canary":
        routing["CanarySize"] = size
    elif rollout.strategy == "linear":
        routing["LinearStepSize"] = size
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": rollout.baking_seconds,
            "MaximumExecutionTimeoutInSeconds": rollout.timeout_seconds,
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": name} for name in alarms]},
    }
