"""Register: record the model version (approved or rejected) in the registry and close the run."""

from typing import Any

from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.runs import RunLog
from pipeline_core.errors import ConfigurationError
from pipeline_core.idempotency import run_once
from pipeline_core.models import (
    DataProfile,
    EvaluationResult,
    IngestResult,
    PreprocessResult,
    RegistrationResult,
    RunConfig,
    TrainingSummary,
)
from pipeline_core.observability import stage_handler
from pipeline_core.settings import require_env
from pipeline_core.stages.register import register


@stage_handler("Register")
def lambda_handler(event: dict[str, Any], context: Any) -> RegistrationResult:
    """Event: ``{"config", "ingest", "data", "prep", "training", "evaluation", "execution_arn", "status"}``.

    Once per execution and status: a retried or duplicated invocation returns the version it registered.
    """
    return RegistrationResult.model_validate(run_once(event, context, "[execution_arn, status]", _register))


def _register(event: dict[str, Any]) -> dict[str, Any]:
    status = event.get("status")
    if status not in ("approved", "rejected"):
        raise ConfigurationError(f"the state machine must pass status 'approved' or 'rejected', got {status!r}")
    return register(
        RunConfig.model_validate(event["config"]),
        IngestResult.model_validate(event["ingest"]),
        DataProfile.model_validate(event["data"]),
        PreprocessResult.model_validate(event["prep"]),
        TrainingSummary.model_validate(event["training"]),
        EvaluationResult.model_validate(event["evaluation"]),
        str(event["execution_arn"]),
        status,
        registry=ModelRegistry(require_env("MODEL_REGISTRY_TABLE")),
        runs=RunLog(require_env("RUNS_TABLE")),
    ).model_dump(mode="json")
