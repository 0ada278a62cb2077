"""Preprocess: clean the dataset and write seeded train/validation/test CSV splits for the training job."""

from typing import Any

from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.models import PreprocessResult
from pipeline_core.observability import stage_handler
from pipeline_core.stages.data_validation import Limits
from pipeline_core.stages.preprocess import PreprocessEvent, preprocess


@stage_handler("Preprocess")
def lambda_handler(event: dict[str, Any], context: Any) -> PreprocessResult:
    """Event: ``{"config", "ingest", "data"}``; result: PreprocessResult (stored at ``$.prep``)."""
    parsed = PreprocessEvent.model_validate(event)
    return preprocess(parsed.config, parsed.ingest, parsed.data, store=ObjectStore(), limits=Limits.from_env())
