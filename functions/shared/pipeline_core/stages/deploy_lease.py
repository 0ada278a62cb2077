"""AcquireDeployLease: one execution at a time changes a model's endpoint and registers what it deployed.

Runs of one model share its endpoint (``<prefix>-<model>-ep``). Unserialised, two runs can both find no
endpoint and both create it (the second fails), SageMaker refuses to update an endpoint that is still
updating, and a run that deploys first may register last, so the newest approved version (what the
registry calls the champion, and what the inference API reports) would not be the model the endpoint
serves. With the lease, FindEndpoint → Create/UpdateEndpoint → DescribeEndpoint → Register (or the
rollback in RecordFailure) run for one execution of a model at a time: versions are registered in the
order the models were deployed, and the endpoint serves the newest approved one.

A run that finds the lease taken fails with DeployLeaseBusyError, which the state machine retries with
backoff; Register and RecordFailure give the lease back. It expires after the state machine's own
timeout, so a lease left by an execution that was stopped (and never reached RecordFailure) cannot block
the model for longer than that execution could have run.

The champion/challenger comparison that lets a run deploy is made here, once the lease is held. Evaluate
compared the model with the champion of its time, but runs of one model can be evaluated side by side: if
a better one deploys and registers while this one waits for the lease, Evaluate's comparison is stale, and
deploying now would put a worse model on the endpoint (and make it the newest approved version, the
champion). So the holder reads the champion again (a strongly consistent read: the version registered
just before the lease was given back must be seen) and decides the gate again with Evaluate's own
:func:`~pipeline_core.stages.gate.decide_gate`. While a run holds the lease no other run can register an
approved version or roll one back, so this decision stays true until the run registers. A run that no
longer passes is *superseded*: it gives the lease back at once and goes to RegisterRejected (its model and
endpoint config, already created, stay: they cost nothing and are what its rejected version describes).

A run with manual approval registered its version (``pending_approval``) before a person approved it, so
its number was given before the deployment: if a newer version was approved in the meantime, deploying this
one would leave the endpoint serving an older version than the newest approved one (the champion, which the
registry and the inference API take for what the endpoint serves). Such a run is superseded too
(:func:`approved_too_late`); a new run of the model gets a new number.

Idempotent under retries without a stored result: a retried attempt (its response lost) takes the lease
again, as its holder or anew after a superseded attempt gave it back (waiting, like any run, if another
execution took it in between), reads the champion again and answers the same, or, if the champion changed
in between, what is now true. A superseded answer always leaves the lease free.
"""

from __future__ import annotations

from pydantic import BaseModel

from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.models import DeployLeaseResult, EvaluationResult, RunConfig
from pipeline_core.observability import logger
from pipeline_core.stages.gate import decide_gate
from pipeline_core.stages.identity import check_identity

# statemachine/pipeline.asl.json's TimeoutSeconds: no execution, so no lease holder, lives longer.
LEASE_SECONDS = 7200
ACTION = "acquire_deploy_lease"


class DeployLeaseEvent(BaseModel):
    """What the AcquireDeployLease state passes (see its Parameters in the ASL)."""

    action: str
    config: RunConfig
    execution_arn: str
    # Evaluate's result (QualityGate passed it). Optional only so that an execution of an older definition,
    # in flight while a new version of the function is deployed, still deploys as that definition meant.
    evaluation: EvaluationResult | None = None


def recheck_gate(evaluation: EvaluationResult, registry: ModelRegistry, model_name: str) -> EvaluationResult:
    """``evaluation`` decided again against the champion as it is now (call it holding the deploy lease).

    Evaluate's own result when nothing changed; otherwise its gate fields re-decided by ``decide_gate``,
    with a reason that says the champion changed since Evaluate (and, for a model that no longer passes,
    that it was superseded while it waited for the lease).
    """
    champion = registry.champion(model_name, consistent=True)
    gate = decide_gate(evaluation.primary_metric, evaluation.primary_value, evaluation.threshold, champion)
    if (gate.champion_version, gate.champion_value, gate.passed) == (
        evaluation.champion_version,
        evaluation.champion_value,
        evaluation.passed,
    ):
        return evaluation
    compared = (
        f"champion v{evaluation.champion_version}"
        if evaluation.champion_version is not None
        else "no comparable champion"
    )
    if gate.passed:
        reason = f"{gate.reason} (decided again under the deploy lease: Evaluate had compared with {compared})"
    else:
        because = gate.reason.removeprefix("rejected: ")
        reason = (
            f"superseded while waiting for the deploy lease: {because} "
            f"(registered after Evaluate had compared with {compared})"
        )
    return evaluation.model_copy(update={**gate.result_fields(), "reason": reason})


def approved_too_late(
    evaluation: EvaluationResult, registry: ModelRegistry, model_name: str, execution_arn: str
) -> EvaluationResult:
    """``evaluation``, or, when this execution's version waits for approval (pending_approval) and a newer
    version has been approved since it was registered, the same with the gate failed and the reason."""
    versions = registry.versions(model_name, consistent=True)
    own = next((r for r in versions if r.execution_arn == execution_arn and r.status == "pending_approval"), None)
    champion = next((r for r in versions if r.status == "approved"), None)
    if own is None or champion is None or champion.version < own.version:
        return evaluation
    reason = (
        f"superseded while waiting for approval: v{champion.version} was approved after v{own.version} was "
        f"registered for approval, and deploying v{own.version} now would leave the endpoint serving an older "
        "version than the newest approved one (a new run of this model gets a new version)"
    )
    return evaluation.model_copy(update={"passed": False, "reason": reason})


def acquire_deploy_lease(
    config: RunConfig,
    execution_arn: str,
    registry: ModelRegistry,
    evaluation: EvaluationResult | None = None,
    lease_seconds: int = LEASE_SECONDS,
) -> DeployLeaseResult:
    """Take the deploy lease of ``config.model_name`` for this execution (again, if it already has it), then
    decide the gate again; a superseded run gives the lease back before it answers.

    A run whose model name has been registered with another target or problem type since ValidateData and
    Evaluate checked it (``config.identity``; None in an execution of an older definition) gives the lease
    back and fails with ModelIdentityError: it must not deploy over another model.
    """
    model_name = config.require_model_name()
    lease = registry.acquire_deploy_lease(model_name, execution_arn, lease_seconds)
    if config.identity is not None:
        try:
            # under the lease no other run registers an approved version: this check holds until Register
            check_identity(registry, config.identity, consistent=True)
        except Exception:
            registry.release_deploy_lease(model_name, execution_arn)
            raise
    decided, superseded = None, False
    if evaluation is not None:
        decided = recheck_gate(evaluation, registry, model_name)
        if decided.passed and config.approval == "manual":
            decided = approved_too_late(decided, registry, model_name, execution_arn)
        if not decided.passed:
            # nothing to deploy: the next run of this model need not wait for this one
            registry.release_deploy_lease(model_name, execution_arn)
            superseded = True
            logger.info("superseded", extra={"model_name": model_name, "reason": decided.reason})
    return DeployLeaseResult(
        model_name=lease.model_name,
        holder=lease.holder,
        acquired_at=lease.acquired_at,
        expires_at=lease.expires_at,
        superseded=superseded,
        evaluation=decided,
    )
