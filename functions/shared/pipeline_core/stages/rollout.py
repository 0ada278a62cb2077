"""PrepareRollout, and how a deployment's rollout ended (for Register).

PrepareRollout runs before an endpoint update that has a rollout (``$.config.rollout``): it creates, or
updates, the endpoint's two rollback alarms (PutMetricAlarm is idempotent: the same request leaves the
alarm as it is, state included) and returns the DeploymentConfig that UpdateEndpointWithRollout passes to
SageMaker. The plan is also written to the run record (``rollout_plan``), where Register finds it: Register
follows a run that never prepared a rollout too (a first deployment, or an update without one), and the
state data only holds ``$.rollout`` after PrepareRollout.

When the endpoint is InService again, either it serves this run's endpoint config (the rollout completed)
or it does not: SageMaker rolled the deployment back (an alarm fired, or the new fleet failed to come up).
:func:`rollout_record` says which, which alarm was in ALARM first during the rollout (from the alarms'
state history: by the time the rollback is over the alarm may be OK again) and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pipeline_core.aws.cloudwatch import CloudWatch, parse_time
from pipeline_core.aws.runs import RunLog, utc_now
from pipeline_core.aws.sagemaker import EndpointControl
from pipeline_core.errors import ConfigurationError
from pipeline_core.models import RolloutPlan, RolloutRecord, RunConfig
from pipeline_core.observability import logger
from pipeline_core.rollout import deployment_config, describe_steps, endpoint_alarms, traffic_steps

ACTION = "prepare_rollout"
PLAN_FIELD = "rollout_plan"  # the run record's attribute


def prepare_rollout(
    config: RunConfig, *, cloudwatch: CloudWatch, runs: RunLog, alarm_actions: list[str]
) -> RolloutPlan:
    """Put the endpoint's rollback alarms and plan the update's DeploymentConfig (recorded on the run)."""
    rollout = config.rollout
    if rollout is None or not config.endpoint_name:
        raise ConfigurationError(
            "PrepareRollout needs $.config.rollout and $.config.endpoint_name: the state machine calls it only for "
            "a run with a rollout, after ValidateData resolved the endpoint"
        )
    alarms = endpoint_alarms(config.endpoint_name, rollout)
    for alarm in alarms:
        cloudwatch.put_alarm(alarm.request(alarm_actions))
    names = [alarm.name for alarm in alarms]
    plan = RolloutPlan(
        strategy=rollout.strategy,
        endpoint_name=config.endpoint_name,
        alarms=names,
        deployment_config=deployment_config(rollout, names),
        started_at=utc_now(),
    )
    runs.update_run(config.run_id, **{PLAN_FIELD: plan.model_dump(mode="json")})
    logger.info("rollout prepared", extra={"endpoint_name": config.endpoint_name, "alarms": names})
    return plan


def recorded_plan(run: Mapping[str, Any] | None) -> RolloutPlan | None:
    """The plan PrepareRollout wrote on the run record, if it ran (and what it wrote still reads)."""
    stored = (run or {}).get(PLAN_FIELD)
    if not isinstance(stored, Mapping):
        return None
    try:
        return RolloutPlan.model_validate(stored)
    except ValueError:
        logger.warning("the run record's rollout plan does not read; the rollout is recorded without it")
        return None


def _plan_words(config: RunConfig) -> str:
    rollout = config.rollout
    if rollout is None:
        return "all at once"
    shares = traffic_steps(rollout.strategy, rollout.instance_count, rollout.step_instances)
    return (
        f"{rollout.strategy} ({describe_steps(shares, rollout.wait_seconds)}, {rollout.baking_seconds} s final baking)"
    )


def rollout_record(
    config: RunConfig,
    status: Literal["approved", "rolled_back"],
    plan: RolloutPlan | None,
    described: Mapping[str, Any] | None,
    cloudwatch: CloudWatch,
    now: datetime | None = None,
) -> RolloutRecord | None:
    """How this run's deployment ended. ``described``: DescribeEndpoint's answer now (for a rollback).

    An approved run that prepared no rollout (a first deployment creates the endpoint: nothing to shift
    from; or an update without a rollout) has no record. A run whose update was rolled back always has one.
    """
    moment = now or datetime.now(UTC)
    endpoint = str(config.endpoint_name)
    target = config.endpoint_config_name
    if status == "approved":
        if plan is None:
            return None
        return RolloutRecord(
            strategy=plan.strategy,
            outcome="completed",
            endpoint_name=endpoint,
            endpoint_config_name=target,
            serving_config_name=target,
            alarms=plan.alarms,
            reason=f"{_plan_words(config)}: every step baked without a rollback alarm in ALARM",
            started_at=plan.started_at,
            ended_at=moment.isoformat(timespec="seconds"),
        )
    serving = str((described or {}).get("EndpointConfigName") or "") or None
    failure = str((described or {}).get("FailureReason") or "") or None
    firing = cloudwatch.first_alarm(plan.alarms, parse_time(plan.started_at), moment) if plan else None
    if failure:
        reason = failure
    elif firing is not None:
        reason = f"alarm {firing.name} was in ALARM at {firing.at.isoformat(timespec='seconds')}: {firing.reason}"
    else:
        reason = (
            f"SageMaker kept endpoint {endpoint} on {serving or 'its previous configuration'}: the update to {target} "
            "did not complete, and gave no FailureReason"
        )
    return RolloutRecord(
        strategy=plan.strategy if plan else None,
        outcome="rolled_back",
        endpoint_name=endpoint,
        endpoint_config_name=target,
        serving_config_name=serving,
        alarms=plan.alarms if plan else [],
        alarm=firing.name if firing else None,
        alarm_at=firing.at.isoformat(timespec="seconds") if firing else None,
        reason=reason,
        started_at=plan.started_at if plan else None,
        ended_at=moment.isoformat(timespec="seconds"),
    )


def deployment_rollout(
    config: RunConfig,
    status: Literal["approved", "rolled_back"],
    *,
    runs: RunLog,
    cloudwatch: CloudWatch,
    endpoints: EndpointControl,
) -> RolloutRecord | None:
    """:func:`rollout_record` with the plan from the run record and, for a rollback, the endpoint as it is."""
    plan = recorded_plan(runs.get_run(config.run_id))
    if status == "approved" and plan is None:
        return None
    described = endpoints.describe_endpoint(str(config.endpoint_name)) if status == "rolled_back" else None
    return rollout_record(config, status, plan, described, cloudwatch)
