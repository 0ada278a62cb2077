"""ValidateData: read the raw dataset and reject bad data with a message naming the column, row and value.

It also resolves the run's model identity (model name, target, problem type: the default model name is the
file and the target, known once the file is read) and refuses a name the registry holds for another model.
"""

from typing import Any

from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.models import DataProfile
from pipeline_core.observability import logger, stage_handler
from pipeline_core.settings import require_env
from pipeline_core.stages.data_validation import Limits, ValidateDataEvent, describe, validate_data
from pipeline_core.stages.identity import check_identity, resolve_identity


@stage_handler("ValidateData")
def lambda_handler(event: dict[str, Any], context: Any) -> DataProfile:
    """Event: ``{"config", "ingest"}`` (and ``"shards"``, the map's results, as the MergeProfiles state);
    result: DataProfile (stored at ``$.data``), with ``resolved`` the identity the UseModelIdentity state
    merges into ``$.config``."""
    parsed = ValidateDataEvent.model_validate(event)
    profile = validate_data(
        parsed.config, parsed.ingest, store=ObjectStore(), limits=Limits.from_env(), shards=parsed.shards
    )
    logger.info("dataset profiled", extra=describe(profile))
    resolved = resolve_identity(parsed.config, profile)
    registry = ModelRegistry(require_env("MODEL_REGISTRY_TABLE"))
    check_identity(registry, resolved.identity, dataset=parsed.config.dataset)
    return profile.model_copy(update={"resolved": resolved})
