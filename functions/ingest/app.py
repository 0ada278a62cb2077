"""Ingest: copy the dataset into raw/<run_id>/, hash it and record the run as RUNNING."""

from typing import Any

from pipeline_core.aws.runs import RunLog
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.models import IngestResult
from pipeline_core.observability import stage_handler
from pipeline_core.settings import require_env
from pipeline_core.stages.ingest import IngestEvent, ingest


@stage_handler("Ingest")
def lambda_handler(event: dict[str, Any], context: Any) -> IngestResult:
    """Event: ``{"config", "execution_arn"}``; result: IngestResult (stored at ``$.ingest``)."""
    parsed = IngestEvent.model_validate(event)
    return ingest(parsed.config, parsed.execution_arn, store=ObjectStore(), runs=RunLog(require_env("RUNS_TABLE")))
