"""Evaluate: test metrics, the quality gate's inputs, evaluation.json and an HTML report with plots."""

from typing import Any

from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.models import (
    DataProfile,
    EvaluationResult,
    IngestResult,
    PreprocessResult,
    RunConfig,
    TrainingSummary,
)
from pipeline_core.observability import stage_handler
from pipeline_core.settings import require_env
from pipeline_core.stages.evaluate import evaluate


@stage_handler("Evaluate")
def lambda_handler(event: dict[str, Any], context: Any) -> EvaluationResult:
    """Event: ``{"config", "data", "prep", "training"}`` and, when the state machine passes them, ``ingest``
    and ``cache`` (the step cache's lookups)."""
    ingest = event.get("ingest")
    # the step cache's lookups before this state ($.cache): which earlier steps were reused, and from which run
    lookups = event.get("cache") or {}
    reused = {
        str(answer.get("step")): str(answer.get("from_run"))
        for answer in lookups.values()
        if isinstance(answer, dict) and answer.get("hit")
    }
    return evaluate(
        RunConfig.model_validate(event["config"]),
        DataProfile.model_validate(event["data"]),
        PreprocessResult.model_validate(event["prep"]),
        TrainingSummary.model_validate(event["training"]),
        ingest=IngestResult.model_validate(ingest) if ingest else None,
        store=ObjectStore(),
        registry=ModelRegistry(require_env("MODEL_REGISTRY_TABLE")),
        reused=reused,
    )
