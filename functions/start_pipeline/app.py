"""StartPipeline: start a pipeline run for a data file uploaded under incoming/ (S3 event via EventBridge), or a
retraining run when an alarm watching a model (the drift alarm) goes to ALARM."""

from typing import Any

from pipeline_core.observability import stage_handler
from pipeline_core.stages.retrain import RetrainResult, is_alarm_event, retrain_on_alarm
from pipeline_core.stages.start_pipeline import StartPipelineResult, start_pipeline


@stage_handler("StartPipeline")
def lambda_handler(event: dict[str, Any], context: Any) -> StartPipelineResult | RetrainResult:
    """Event: S3 "Object Created" or "CloudWatch Alarm State Change" (EventBridge); result: started,
    already_started or ignored (with why)."""
    if is_alarm_event(event):
        return retrain_on_alarm(event)
    return start_pipeline(event)
