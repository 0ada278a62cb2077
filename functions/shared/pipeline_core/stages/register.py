"""Register: write this run's model as the next version in the registry and close the run record.

Three outcomes reach it: ``approved`` (deployed: the endpoint serves this run's model), ``rejected`` (the gate
said no, a person rejected it, or the run was superseded under the deploy lease) and ``rolled_back`` (deployed,
but SageMaker's deployment guardrail rolled the endpoint back to what it served before; the run then fails with
DeploymentRolledBack, and RecordFailure closes the run record).

With manual approval the version is written earlier, as ``pending_approval``, by RequestApproval
(:func:`request_approval`), and Register, RegisterRejected or RegisterRolledBack settles that same version
(``stages/approval.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline_core.aws.notifications import Notifier
from pipeline_core.aws.registry import PENDING_APPROVAL, ModelRegistry
from pipeline_core.aws.runs import RunLog, utc_now
from pipeline_core.errors import ApprovalStateError
from pipeline_core.models import (
    DataProfile,
    EvaluationResult,
    IngestResult,
    PreprocessResult,
    RegistrationResult,
    RegistryRecord,
    RegistryStatus,
    RolloutRecord,
    RunConfig,
    TrainingSummary,
)
from pipeline_core.stages import approval as approvals
from pipeline_core.stages.identity import check_identity
from pipeline_core.stages.lineage import column_rows, feature_roles


def registry_entry(
    config: RunConfig,
    ingest: IngestResult,
    data: DataProfile,
    prep: PreprocessResult,
    training: TrainingSummary,
    evaluation: EvaluationResult,
    execution_arn: str,
    status: RegistryStatus,
    rollout: RolloutRecord | None = None,
) -> dict[str, object]:
    """The registry record for this run, without its version (the registry assigns it)."""
    # a rolled-back version names the endpoint and config it was deployed with, though neither serves it
    deployed = status in ("approved", "rolled_back")
    lineage = evaluation.lineage
    return {
        "model_name": config.require_model_name(),
        "status": status,
        "problem_type": data.problem_type,
        "target": data.target,
        # the columns training saw, after Preprocess (what an inference request must carry)
        "feature_columns": prep.feature_columns,
        "class_labels": data.class_labels,
        "metrics": evaluation.metrics,
        "primary_metric": evaluation.primary_metric,
        "model_artifact": training.ModelArtifacts,
        # the immutable raw copy: dataset_sha256 is the hash of exactly these bytes
        "dataset_uri": ingest.raw_uri,
        "dataset_sha256": ingest.sha256,
        "training_job_name": training.TrainingJobName,
        "endpoint_name": config.endpoint_name if deployed else None,
        "endpoint_config_name": config.endpoint_config_name if deployed else None,
        "execution_arn": execution_arn,
        "evaluation_uri": evaluation.evaluation_uri,
        "report_uri": evaluation.report_uri,
        "created_at": utc_now(),
        # why it was approved or rejected; for a run superseded under the deploy lease, that reason
        # (GateUnderLease put AcquireDeployLease's decision in $.evaluation)
        "gate_reason": evaluation.reason,
        # lineage: what trained the model, next to dataset_sha256 (what it was trained on)
        "trainer": lineage.trainer if lineage else None,
        "code_uri": lineage.code_uri if lineage else None,
        "code_sha256": lineage.code_sha256 if lineage else None,
        "code_version_id": lineage.code_version_id if lineage else None,
        # which definition of the pipeline produced it (the version Ingest learned)
        "definition_version": ingest.definition_version,
        "image": training.image,
        "hyperparameters": training.hyperparameters or prep.hyperparameters,
        # each feature's role, as evaluation.json gives it (Preprocess's roles, else ValidateData's profile)
        "column_roles": feature_roles(column_rows(data, prep), prep.feature_columns),
        # what monitoring compares new data with (the train split's statistics, written by Preprocess)
        "baseline_uri": prep.baseline_uri,
        # how the endpoint update's rollout ended (a rolled-back version always has one)
        "rollout": rollout.model_dump(mode="json") if rollout else None,
    }


def find_registration(registry: ModelRegistry, model_name: str, execution_arn: str) -> RegistryRecord | None:
    """The version this execution already registered, if any."""
    return next((r for r in registry.versions(model_name) if r.execution_arn == execution_arn), None)


def find_same_model(
    registry: ModelRegistry, model_name: str, training_job_name: str, status: str
) -> RegistryRecord | None:
    """The version an earlier run registered for this very model (same training job, same decision): a rerun
    that reused the training job from the step cache returns it rather than adding a second version."""
    return next(
        (r for r in registry.versions(model_name) if r.training_job_name == training_job_name and r.status == status),
        None,
    )


def register(
    config: RunConfig,
    ingest: IngestResult,
    data: DataProfile,
    prep: PreprocessResult,
    training: TrainingSummary,
    evaluation: EvaluationResult,
    execution_arn: str,
    status: RegistryStatus,
    *,
    registry: ModelRegistry,
    runs: RunLog,
    rollout: RolloutRecord | None = None,
) -> RegistrationResult:
    """Register the model (once per execution) and mark the run SUCCEEDED (a rolled-back one: see below).

    Idempotent under the state machine's Retry: a version already written by this execution is returned
    instead of a second one. Checking before writing is enough because one execution's attempts at this
    state never overlap (Step Functions starts a retry only after the previous attempt has ended), so an
    earlier attempt's write is always visible to the check; writes from *other* executions are kept apart
    by the registry's conditional put, whose RegistryConflictError the state machine retries.

    An approved model was deployed under the model's deploy lease (AcquireDeployLease); it is given back
    once the version and the run record are written, so the next run's deployment follows this version. So is
    a rolled-back one: the endpoint is settled on the previous model. A rolled-back run is not SUCCEEDED: the
    state machine goes on to RecordFailure (DeploymentRolledBack), which closes the run record; this one
    records the version and the rollout on it. Each rollback is its own version: a later run of the same
    training job that is rolled back again is not the same event.
    """
    model_name = config.require_model_name()
    record = find_registration(registry, model_name, execution_arn)
    reused_version = False
    # the gate's reason, or, once this run's approval is decided, the version's own (who decided, and why)
    reason = evaluation.reason
    if record is not None and record.status == PENDING_APPROVAL:
        # this run asked for approval (RequestApproval): its decision settles that same version
        record = approvals.settle_pending(registry, record, status, config, evaluation, rollout=rollout)
        reason = record.gate_reason or reason
    elif record is not None and record.approval is not None and record.approval.status != "pending":
        reason = record.gate_reason or reason  # a retry after this run settled its approval
    # a decision without its pending version: RequestApproval timed out before its function recorded the request
    unrecorded = approvals.unrecorded(config, evaluation, status) if record is None else None
    if record is None and unrecorded is None and status != "rolled_back":
        record = find_same_model(registry, model_name, training.TrainingJobName, status)
        reused_version = record is not None
    if record is None:
        if config.identity is not None:
            # a rejected run holds no lease: another model may have taken the name since Evaluate
            check_identity(registry, config.identity, consistent=True)
        entry = registry_entry(config, ingest, data, prep, training, evaluation, execution_arn, status, rollout)
        entry["reused_steps"] = (runs.get_run(config.run_id) or {}).get("reused_steps") or {}
        if unrecorded is not None:
            decided, reason = unrecorded
            entry.update(approval=decided.model_dump(mode="json"), gate_reason=reason)
        record = registry.register_model(entry)
    # this run's own approval (a version an earlier run registered keeps that run's, which is not this run's)
    approval = record.approval if record.execution_arn == execution_arn else None
    closing = {} if status == "rolled_back" else {"status": "SUCCEEDED", "finished_at": utc_now()}
    runs.update_run(
        config.run_id,
        model_name=record.model_name,
        model_version=record.version,
        registry_status=record.status,
        endpoint_name=record.endpoint_name,
        primary_metric=evaluation.primary_metric,
        primary_value=evaluation.primary_value,
        gate_reason=reason,
        approval=approval.model_dump(mode="json") if approval else None,
        report_uri=evaluation.report_uri,
        execution_arn=execution_arn,
        reused_version=reused_version or None,
        rollout=record.rollout.model_dump(mode="json") if record.rollout else None,
        **closing,
    )
    if status in ("approved", "rolled_back"):
        registry.release_deploy_lease(model_name, execution_arn)
    return RegistrationResult(
        model_name=record.model_name,
        version=record.version,
        status=record.status,
        endpoint_name=record.endpoint_name,
        model_artifact=record.model_artifact,
        reused_version=reused_version,
        gate_reason=reason,
        approval=approval,
        rollout=record.rollout,
    )


def request_approval(
    event: approvals.ApprovalRequestEvent,
    *,
    registry: ModelRegistry,
    runs: RunLog,
    notifier: Notifier,
    now: datetime | None = None,
) -> approvals.ApprovalRequest:
    """RequestApproval: register the model as a pending_approval version, keep the task token the run waits
    on, and publish the notification that says how to approve or reject it.

    Idempotent under the state's Retry: a retried attempt finds the version its execution registered and
    gives it the new attempt's token (each attempt waits on its own) and a new deadline (each attempt's
    timeout starts anew); the notification goes out again with that token.
    """
    config, evaluation, execution_arn = event.config, event.evaluation, event.execution_arn
    moment = now or datetime.now(UTC)
    model_name = config.require_model_name()
    pending = approvals.pending_record(config, moment, event.execution_started_at)
    # strongly consistent: a retry may come a second after the attempt that wrote the version
    versions = registry.versions(model_name, consistent=True)
    record = next((r for r in versions if r.execution_arn == execution_arn), None)
    if record is None:
        if config.identity is not None:
            check_identity(registry, config.identity, consistent=True)
        entry = registry_entry(
            config, event.ingest, event.data, event.prep, event.training, evaluation, execution_arn, PENDING_APPROVAL
        )
        entry["reused_steps"] = (runs.get_run(config.run_id) or {}).get("reused_steps") or {}
        entry["approval"] = pending.model_dump(mode="json")
        record = registry.register_model(entry)
    elif record.status != PENDING_APPROVAL:
        raise ApprovalStateError(
            f"{model_name} v{record.version} of this execution is {record.status}: it cannot wait for approval again"
        )
    registry.await_approval(model_name, record.version, event.task_token, pending.model_dump(mode="json"))
    record = record.model_copy(update={"approval": pending})
    runs.update_run(
        config.run_id,
        model_name=model_name,
        model_version=record.version,
        registry_status=PENDING_APPROVAL,
        approval=pending.model_dump(mode="json"),
        execution_arn=execution_arn,
    )
    notifier.publish(*approvals.notification(record, evaluation, event.task_token))
    approve, reject = approvals.commands(model_name, record.version)
    return approvals.ApprovalRequest(
        model_name=model_name,
        version=record.version,
        execution_arn=execution_arn,
        deadline=pending.deadline,
        timeout_seconds=pending.timeout_seconds,
        approve_command=approve,
        reject_command=reject,
    )
