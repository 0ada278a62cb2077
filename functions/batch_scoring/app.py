"""BatchScoring: the batch scoring state machine's PrepareBatch and AssembleBatch states (``event["action"]``)."""

import functools
from typing import Any

from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.aws.sagemaker import model_catalog
from pipeline_core.errors import ConfigurationError
from pipeline_core.models import Contract
from pipeline_core.observability import stage_handler
from pipeline_core.settings import optional_env, require_env
from pipeline_core.stages import batch_scoring
from pipeline_core.stages.inference_api import read_feature_kinds


def lambda_handler(event: dict[str, Any], context: Any) -> Any:
    """``{"action": "prepare", "input", "execution_name"}`` or ``{"action": "assemble", "state"}`` (the state
    data: ``prep``, and ``transform`` unless the file had no rows to transform)."""
    action = event.get("action") if isinstance(event, dict) else None
    if action == "prepare":
        return _prepare(event, context)
    if action == "assemble":
        return _assemble(event, context)
    raise ConfigurationError(f"BatchScoring: action must be prepare or assemble, got {action!r}")


@stage_handler("PrepareBatch")
def _prepare(event: dict[str, Any], context: Any) -> Contract:
    objects = ObjectStore()
    limit = optional_env("BATCH_MAX_INPUT_BYTES", str(batch_scoring.DEFAULT_MAX_INPUT_BYTES))
    try:
        max_input_bytes = int(limit)
    except ValueError:
        raise ConfigurationError(f"BATCH_MAX_INPUT_BYTES must be a number of bytes, got {limit!r}") from None
    return batch_scoring.prepare(
        event.get("input"),
        str(event["execution_name"]),
        require_env("ENDPOINT_NAME_PREFIX"),  # stepml-<Stage>: the transform job's name starts with it
        require_env("DATA_BUCKET"),
        ModelRegistry(require_env("MODEL_REGISTRY_TABLE")),
        model_catalog(),
        objects,
        functools.partial(read_feature_kinds, objects),
        max_input_bytes,
    )


@stage_handler("AssembleBatch")
def _assemble(event: dict[str, Any], context: Any) -> Contract:
    state = event["state"]
    transform = state.get("transform")
    return batch_scoring.assemble_output(
        batch_scoring.BatchPlan.model_validate(state["prep"]),
        batch_scoring.TransformSummary.model_validate(transform) if transform else None,
        ObjectStore(),
    )
