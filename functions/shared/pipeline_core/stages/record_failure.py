"""RecordFailure: write a failed run's record, undo an endpoint change the run had already made, and give
back the model's deploy lease if the run held it (see ``stages/deploy_lease.py``).

The state data reaching this stage is whatever the run had built when it failed: a failure in
ValidateInput carries only the raw execution input, later ones carry ``config`` and the results of the
states that ran. Every read here tolerates a missing or oddly typed key, because raising would lose the
record of the original failure.

Once per execution: the last write sets ``failure_handled_at`` on the run record, and a RecordFailure
retried after that (its response lost, a timeout after the writes) returns the recorded summary. Acting
again would not roll back twice (the endpoint no longer serves this run's config), but it would overwrite
the record's rollback sentence with "left as it is" and copy a quarantined upload again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.runs import RunLog, utc_now
from pipeline_core.aws.s3 import ObjectStore, S3Uri
from pipeline_core.aws.sagemaker import EndpointControl
from pipeline_core.errors import TransientError
from pipeline_core.models import FailureRecord, RegistryRecord
from pipeline_core.observability import logger
from pipeline_core.stages.approval import close_after_failure

# Step Functions caps a Cause at 32,768 characters and DynamoDB an item at 400 KB; the run record also
# travels back into the state (256 KiB). 8,000 characters (at most 32 KB of UTF-8) keeps the error's
# message (the head) and where it was raised (the tail of a stack trace).
MAX_CAUSE_CHARS = 8000
_CAUSE_TAIL_CHARS = 2000

# States that run once the endpoint may have been created or switched to this run's endpoint config.
# EndpointDeployFailed and DeploymentRolledBack report themselves as DescribeEndpoint; Notify catches its own
# errors, so it never arrives here, but it is after the change too.
ENDPOINT_CHANGING_STATES = frozenset(
    {
        "CreateEndpoint",
        "UpdateEndpoint",
        "UpdateEndpointWithRollout",
        "DescribeEndpoint",
        "EndpointDeployFailed",
        "RegisterRolledBack",
        "Register",
        "Notify",
    }
)
# The error of a run whose endpoint update SageMaker's deployment guardrail rolled back (the state machine's
# DeploymentRolledBack state): the endpoint already serves what it served before, and stays as it is.
DEPLOYMENT_ROLLED_BACK = "DeploymentRolledBack"


class FailureSummary(FailureRecord):
    """What RecordFailure returns (stored at ``$.failure_record``): the record plus rollback outcome."""

    status: str = "FAILED"
    failed_at: str
    rollback: str | None = None
    quarantine_uri: str | None = None


def truncate_cause(cause: str, limit: int = MAX_CAUSE_CHARS) -> str:
    """``cause`` cut to ``limit`` characters, keeping its head and tail and saying how much was cut."""
    if len(cause) <= limit:
        return cause
    cut = len(cause) - limit
    marker = f"\n… [{cut} characters cut to fit the run record] …\n"
    head = limit - _CAUSE_TAIL_CHARS - len(marker)
    return cause[:head] + marker + cause[-_CAUSE_TAIL_CHARS:]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _as_text(value: Any, default: str) -> str:
    if value is None or value == "":
        return default
    return value if isinstance(value, str) else repr(value)


def input_pointers(state: Mapping[str, Any]) -> dict[str, str]:
    """Where the failed run's inputs and outputs are, from whatever the state data holds."""
    config, ingest, prep = _mapping(state.get("config")), _mapping(state.get("ingest")), _mapping(state.get("prep"))
    training, evaluation = _mapping(state.get("training")), _mapping(state.get("evaluation"))
    raw_input = _mapping(state.get("input"))  # ValidateInput's own event shape, should it ever arrive here
    candidates = {
        "dataset": config.get("dataset") or state.get("dataset") or raw_input.get("dataset"),
        "model_name": config.get("model_name") or state.get("model_name"),
        "raw_uri": ingest.get("raw_uri"),
        "dataset_sha256": ingest.get("sha256"),
        "processed_prefix": config.get("processed_prefix"),
        "train_uri": prep.get("train_uri"),
        "validation_uri": prep.get("validation_uri"),
        "test_uri": prep.get("test_uri"),
        "training_job_name": training.get("TrainingJobName") or config.get("training_job_name"),
        "model_artifact": training.get("ModelArtifacts"),
        "evaluation_uri": evaluation.get("evaluation_uri"),
        "report_uri": evaluation.get("report_uri"),
        "endpoint_name": config.get("endpoint_name"),
        "endpoint_config_name": config.get("endpoint_config_name"),
    }
    return {key: text for key, value in candidates.items() if (text := _text(value))}


def endpoint_was_touched(state: Mapping[str, Any], failed_state: str) -> bool:
    """Whether the run may have created the endpoint or switched it to its own endpoint config."""
    if isinstance(state.get("endpoint"), Mapping):
        return True  # only DescribeEndpoint, after Create/UpdateEndpoint, sets $.endpoint
    return "existing" in state and failed_state in ENDPOINT_CHANGING_STATES


def previous_champion(
    registry: ModelRegistry, model_name: str, execution_arn: str | None, endpoint_config: str | None
) -> RegistryRecord | None:
    """The newest approved version deployed by another execution (this run's own one does not count;
    endpoint config names are unique per execution, so either key identifies it)."""
    return next(
        (
            r
            for r in registry.versions(model_name)
            if r.status == "approved"
            and (execution_arn is None or r.execution_arn != execution_arn)
            and (endpoint_config is None or r.endpoint_config_name != endpoint_config)
        ),
        None,
    )


def roll_back_endpoint(
    endpoints: EndpointControl,
    registry: ModelRegistry,
    *,
    model_name: str,
    endpoint_name: str,
    run_endpoint_config: str | None,
    execution_arn: str | None,
) -> str:
    """Point ``endpoint_name`` back at the champion's endpoint config, or delete it if there is none.

    Returns a sentence saying what was done. The endpoint is left alone when it no longer serves this
    run's endpoint config: a failed UpdateEndpoint keeps the old config, and another execution of the
    same model may own what is there now.
    """
    described = endpoints.describe_endpoint(endpoint_name)
    if described is None:
        return f"endpoint {endpoint_name} does not exist: nothing to roll back"
    serving = _text(described.get("EndpointConfigName"))
    pending = _text(_mapping(described.get("PendingDeploymentSummary")).get("EndpointConfigName"))
    if pending and run_endpoint_config and pending == run_endpoint_config:
        # SageMaker refuses UpdateEndpoint while an update is under way, and nothing can stop one
        return (
            f"endpoint {endpoint_name} is still updating to this run's {run_endpoint_config} "
            f"({described.get('EndpointStatus')}): it could not be rolled back; once it is InService, point it back "
            f"at {serving} (aws sagemaker update-endpoint --endpoint-name {endpoint_name} --endpoint-config-name "
            f"{serving}) if it serves {run_endpoint_config}"
        )
    if serving and run_endpoint_config and serving != run_endpoint_config:
        return f"endpoint {endpoint_name} serves {serving}, not this run's {run_endpoint_config}: left as it is"

    # this run may have registered itself as approved before failing (e.g. on the run record)
    for record in registry.versions(model_name):
        if execution_arn and record.execution_arn == execution_arn and record.status == "approved":
            registry.set_status(model_name, record.version, "rolled_back")
    champion = previous_champion(registry, model_name, execution_arn, run_endpoint_config)
    status = described.get("EndpointStatus")
    if champion is None:
        endpoints.delete_endpoint(endpoint_name)
        return f"endpoint {endpoint_name} deleted: no earlier approved model"
    if not champion.endpoint_config_name:
        return (
            f"endpoint {endpoint_name} not rolled back: champion v{champion.version} has no endpoint config "
            "recorded; redeploy it by hand"
        )
    if status == "Failed":
        # SageMaker allows only DeleteEndpoint on a Failed endpoint
        endpoints.delete_endpoint(endpoint_name)
        return (
            f"endpoint {endpoint_name} deleted: it was Failed, which SageMaker cannot update; champion "
            f"v{champion.version} ({champion.endpoint_config_name}) must be redeployed"
        )
    endpoints.update_endpoint(endpoint_name, champion.endpoint_config_name)
    return f"endpoint {endpoint_name} rolled back to model v{champion.version} ({champion.endpoint_config_name})"


# The state that takes the model's deploy lease (released here when a run fails while holding it).
DEPLOY_LEASE_STATE = "AcquireDeployLease"

# Errors that mean "this file cannot be used": an uploaded file with one of them is quarantined.
QUARANTINE_ERRORS = frozenset({"DataValidationError"})
INCOMING_PREFIX = "incoming/"


def quarantine_upload(store: ObjectStore, summary: FailureSummary, dataset_uri: str | None) -> str | None:
    """Copy a rejected upload (under incoming/) to ``quarantine/<run_id>/`` with the reason beside it.

    The uploaded object itself is left where it is (nothing is lost); the quarantine copy and its
    ``.reason.json`` say it was rejected and why, so an operator finds rejected files in one place.
    """
    if summary.error not in QUARANTINE_ERRORS or not dataset_uri:
        return None
    source = S3Uri.parse(dataset_uri)
    if not source.key.startswith(INCOMING_PREFIX):
        return None
    name = source.key.rsplit("/", 1)[-1]
    target = S3Uri(source.bucket, f"quarantine/{summary.run_id}/{name}")
    store.copy(dataset_uri, str(target))
    reason = {
        "source": dataset_uri,
        "run_id": summary.run_id,
        "execution_arn": summary.execution_arn,
        "failed_state": summary.failed_state,
        "error": summary.error,
        "cause": summary.cause,
        "failed_at": summary.failed_at,
    }
    store.write_bytes(f"{target}.reason.json", json.dumps(reason, indent=1).encode(), "application/json")
    return str(target)


def earlier_summary(runs: RunLog, run_id: str, execution_arn: str | None) -> FailureSummary | None:
    """What an earlier, finished RecordFailure of this execution recorded, if there was one."""
    if execution_arn is None:
        return None  # nothing tells this execution's record apart from another's
    record = runs.get_run(run_id)
    if not record or not record.get("failure_handled_at") or record.get("execution_arn") != execution_arn:
        return None
    try:
        fields = {key: record[key] for key in FailureSummary.model_fields if record.get(key) is not None}
        return FailureSummary.model_validate(fields | {"run_id": run_id})
    except ValueError:
        return None  # an odd record: handle the failure again rather than lose it


def record_failure(
    event: Mapping[str, Any],
    *,
    runs: RunLog,
    registry: Callable[[], ModelRegistry],
    endpoints: Callable[[], EndpointControl],
    store: Callable[[], ObjectStore] | None = None,
) -> FailureSummary:
    """Record the failure on the run and roll back the endpoint if the run had changed it.

    ``registry`` and ``endpoints`` are factories: they are built only when a rollback (or the release of
    the model's deploy lease) is needed, so an early failure needs neither the registry table nor SageMaker.
    """
    failure = _mapping(event.get("failure"))
    state = _mapping(event.get("state"))
    config = _mapping(state.get("config"))
    execution_arn = _text(event.get("execution_arn"))
    run_id = (
        _text(config.get("run_id"))
        or _text(event.get("execution_name"))
        or (execution_arn.rsplit(":", 1)[-1] if execution_arn else None)
        or "unknown-run"
    )
    failed_state = _as_text(failure.get("state"), "unknown state")
    model_name = _text(config.get("model_name"))
    earlier = earlier_summary(runs, run_id, execution_arn)
    if earlier is not None:
        logger.info("failure already recorded by an earlier attempt", extra={"run_id": run_id})
        # the earlier attempt may have ended before giving the lease back (it is released after the record)
        _release_deploy_lease(registry, state, failed_state, model_name, execution_arn)
        return earlier
    summary = FailureSummary(
        run_id=run_id,
        failed_state=failed_state,
        error=_as_text(failure.get("error"), "UnknownError"),
        cause=truncate_cause(_as_text(failure.get("cause"), "no cause given")),
        execution_arn=execution_arn,
        input_pointers=input_pointers(state),
        failed_at=utc_now(),
    )
    # the failure itself is on record before any rollback is attempted
    record_fields = summary.model_dump(exclude={"run_id", "rollback"})
    # model_name is None before ValidateData resolved a default one (update_run leaves None fields out); a run
    # that failed later is found by its model, as `stepml gc --model` looks runs up
    runs.update_run(run_id, **record_fields, model_name=model_name, finished_at=summary.failed_at)
    if store is not None:
        quarantined = quarantine_upload(store(), summary, summary.input_pointers.get("dataset"))
        if quarantined:
            runs.update_run(run_id, quarantine_uri=quarantined)
            summary = summary.model_copy(update={"quarantine_uri": quarantined})

    if model_name and execution_arn and config.get("approval") == "manual":
        # a version left waiting for approval (or approved, not deployed) is rejected: nothing waits any more
        closed = close_after_failure(
            registry(), model_name, execution_arn, failed_state, summary.error,
            _mapping(state.get("evaluation")).get("approval"),
        )  # fmt: skip
        if closed is not None and closed.approval is not None:
            logger.info("pending approval closed", extra={"model_name": model_name, "version": closed.version})
            runs.update_run(run_id, approval=closed.approval.model_dump(mode="json"))
    endpoint_name = _text(config.get("endpoint_name"))
    if not (endpoint_name and model_name and endpoint_was_touched(state, failed_state)):
        runs.update_run(run_id, failure_handled_at=utc_now())
        _release_deploy_lease(registry, state, failed_state, model_name, execution_arn)
        return summary
    if summary.error == DEPLOYMENT_ROLLED_BACK:
        # SageMaker's deployment guardrail has put the endpoint back already: a second rollback here could only
        # undo something else (and the registry records this version as rolled back: Register did that)
        serving = _text(_mapping(state.get("endpoint")).get("EndpointConfigName"))
        rollback = (
            f"endpoint {endpoint_name} was rolled back by SageMaker's deployment guardrail"
            + (f" and serves {serving} again" if serving else "")
            + ": left as it is"
        )
        runs.update_run(run_id, rollback=rollback, failure_handled_at=utc_now())
        _release_deploy_lease(registry, state, failed_state, model_name, execution_arn)
        return summary.model_copy(update={"rollback": rollback})
    try:
        rollback = roll_back_endpoint(
            endpoints(),
            registry(),
            model_name=model_name,
            endpoint_name=endpoint_name,
            run_endpoint_config=_text(config.get("endpoint_config_name")),
            execution_arn=execution_arn,
        )
    except TransientError:
        raise  # the state machine retries RecordFailure; the record above is an idempotent upsert
    except Exception as error:  # a failed rollback must not hide the run's own failure
        logger.exception("rollback failed", extra={"endpoint_name": endpoint_name})
        rollback = f"rollback of endpoint {endpoint_name} failed: {type(error).__name__}: {error}"
    runs.update_run(run_id, rollback=rollback, failure_handled_at=utc_now())
    logger.info("rollback", extra={"rollback": rollback})
    # after the rollback: the next run of this model must see the endpoint as it is left here
    _release_deploy_lease(registry, state, failed_state, model_name, execution_arn)
    return summary.model_copy(update={"rollback": rollback})


def may_hold_deploy_lease(state: Mapping[str, Any], failed_state: str) -> bool:
    """Whether the run may hold its model's deploy lease: it took it (``$.lease``), or failed taking it
    (an attempt that took it and then timed out leaves no ``$.lease``)."""
    return isinstance(state.get("lease"), Mapping) or failed_state == DEPLOY_LEASE_STATE


def _release_deploy_lease(
    registry: Callable[[], ModelRegistry],
    state: Mapping[str, Any],
    failed_state: str,
    model_name: str | None,
    execution_arn: str | None,
) -> None:
    if model_name and execution_arn and may_hold_deploy_lease(state, failed_state):
        released = registry().release_deploy_lease(model_name, execution_arn)
        logger.info("deploy lease", extra={"model_name": model_name, "released": released})
