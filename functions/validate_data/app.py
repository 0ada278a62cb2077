"""ValidateData: read the raw dataset and reject bad data with a message naming the column, row and value."""

from typing import Any

from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.models import DataProfile
from pipeline_core.observability import logger, stage_handler
from pipeline_core.stages.data_validation import Limits, ValidateDataEvent, describe, validate_data


@stage_handler("ValidateData")
def lambda_handler(event: dict[str, Any], context: Any) -> DataProfile:
    """Event: ``{"config", "ingest"}``; result: DataProfile (stored at ``$.data``)."""
    parsed = ValidateDataEvent.model_validate(event)
    profile = validate_data(parsed.config, parsed.ingest, store=ObjectStore(), limits=Limits.from_env())
    logger.info("dataset profiled", extra=describe(profile))
    return profile
