"""StartPipeline: start a pipeline run for a data file uploaded under incoming/ (S3 event via EventBridge)."""

from typing import Any

from pipeline_core.observability import stage_handler
from pipeline_core.stages.start_pipeline import StartPipelineResult, start_pipeline


@stage_handler("StartPipeline")
def lambda_handler(event: dict[str, Any], context: Any) -> StartPipelineResult:
    """Event: S3 "Object Created" (EventBridge); result: started, already_started or ignored (with why)."""
    return start_pipeline(event)
