"""Register: record the model version (approved, rejected or rolled back) in the registry and close the run.

The same function serves AcquireDeployLease (event ``action: acquire_deploy_lease``) and RequestApproval
(``action: request_approval``): the lease and the pending_approval version live in the registry table, which
this function is the one to write; so the version a person approves or rejects is written, waited on and
settled by one piece of code (``stages/register.py`` and ``stages/approval.py``). It also serves
PrepareRollout (``action: prepare_rollout``): the endpoint's rollback alarms, whose outcome Register records.
"""

from typing import Any

from pipeline_core.aws.cloudwatch import CloudWatch
from pipeline_core.aws.notifications import Notifier
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.runs import RunLog
from pipeline_core.aws.sagemaker import endpoint_control
from pipeline_core.errors import ConfigurationError
from pipeline_core.idempotency import run_once
from pipeline_core.models import (
    DataProfile,
    DeployLeaseResult,
    EvaluationResult,
    IngestResult,
    PreprocessResult,
    RegistrationResult,
    RolloutPlan,
    RunConfig,
    TrainingSummary,
)
from pipeline_core.observability import stage_handler
from pipeline_core.settings import require_env
from pipeline_core.stages import approval, deploy_lease, rollout
from pipeline_core.stages.register import register, request_approval

STATUSES = ("approved", "rejected", "rolled_back")


def lambda_handler(event: dict[str, Any], context: Any) -> Any:
    """The Register/RegisterRejected/RegisterRolledBack states, or AcquireDeployLease, RequestApproval and
    PrepareRollout when ``event["action"]`` says so."""
    action = event.get("action") if isinstance(event, dict) else None
    if action == deploy_lease.ACTION:
        return _acquire_deploy_lease(event, context)
    if action == approval.ACTION:
        return _request_approval(event, context)
    if action == rollout.ACTION:
        return _prepare_rollout(event, context)
    return _register_version(event, context)


@stage_handler("RequestApproval")
def _request_approval(event: dict[str, Any], context: Any) -> approval.ApprovalRequest:
    """Event: RequestApproval's Payload (``approval.ApprovalRequestEvent``: the run's state, ``task_token``,
    ``execution_started_at``). Registers the version as pending_approval, keeps the token, notifies; the
    state then waits for SendTaskSuccess/SendTaskFailure. Idempotent without a stored result: a retry gives
    the version the new attempt's token (see ``request_approval``)."""
    return request_approval(
        approval.ApprovalRequestEvent.model_validate(event),
        registry=ModelRegistry(require_env("MODEL_REGISTRY_TABLE")),
        runs=RunLog(require_env("RUNS_TABLE")),
        notifier=Notifier(require_env("NOTIFICATION_TOPIC_ARN")),
    )


@stage_handler("PrepareRollout")
def _prepare_rollout(event: dict[str, Any], context: Any) -> RolloutPlan:
    """Event: ``{"action": "prepare_rollout", "config"}``; result at ``$.rollout``. Idempotent: the alarms are
    put again as they are, and the plan is the same but for its start time."""
    return rollout.prepare_rollout(
        RunConfig.model_validate(event["config"]),
        cloudwatch=CloudWatch(),
        runs=RunLog(require_env("RUNS_TABLE")),
        alarm_actions=[require_env("ALARM_TOPIC_ARN")],
    )


@stage_handler("AcquireDeployLease")
def _acquire_deploy_lease(event: dict[str, Any], context: Any) -> DeployLeaseResult:
    """Event: ``{"action": "acquire_deploy_lease", "config", "evaluation", "execution_arn"}``; result at
    ``$.lease``, with the gate decided again under the lease (``superseded`` if the model no longer passes).

    Idempotent without a stored result: the lease is taken again by the execution that holds it (or anew,
    after a superseded attempt gave it back) and the champion read again.
    """
    parsed = deploy_lease.DeployLeaseEvent.model_validate(event)
    registry = ModelRegistry(require_env("MODEL_REGISTRY_TABLE"))
    return deploy_lease.acquire_deploy_lease(parsed.config, parsed.execution_arn, registry, parsed.evaluation)


@stage_handler("Register")
def _register_version(event: dict[str, Any], context: Any) -> RegistrationResult:
    """Event: ``{"config", "ingest", "data", "prep", "training", "evaluation", "execution_arn", "status"}``.

    Once per execution and status: a retried or duplicated invocation returns the version it registered.
    An approved registration gives back the model's deploy lease.
    """
    return RegistrationResult.model_validate(run_once(event, context, "[execution_arn, status]", _register))


def _register(event: dict[str, Any]) -> dict[str, Any]:
    status = event.get("status")
    if status not in STATUSES:
        raise ConfigurationError(
            f"the state machine must pass status {' or '.join(map(repr, STATUSES))}, got {status!r}"
        )
    config = RunConfig.model_validate(event["config"])
    runs = RunLog(require_env("RUNS_TABLE"))
    deployed = None
    if status != "rejected":
        deployed = rollout.deployment_rollout(
            config, status, runs=runs, cloudwatch=CloudWatch(), endpoints=endpoint_control()
        )
    return register(
        config,
        IngestResult.model_validate(event["ingest"]),
        DataProfile.model_validate(event["data"]),
        PreprocessResult.model_validate(event["prep"]),
        TrainingSummary.model_validate(event["training"]),
        EvaluationResult.model_validate(event["evaluation"]),
        str(event["execution_arn"]),
        status,
        registry=ModelRegistry(require_env("MODEL_REGISTRY_TABLE")),
        runs=runs,
        rollout=deployed,
    ).model_dump(mode="json")
