"""Monitor: compare the prediction log's recent inputs (or a file) with a model version's training baseline,
store the drift report and publish DriftedFeatures and DriftScoreMax (namespace stepml/Monitoring)."""

from typing import Any

from pipeline_core.aws.prediction_log import PredictionLog
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.errors import ModelNotFoundError
from pipeline_core.observability import logger, publish_model_metrics, stage_handler
from pipeline_core.settings import require_env
from pipeline_core.stages.dataset_file import Limits
from pipeline_core.stages.monitor import MonitorResult, MonitorSkipped, drift_metrics, monitor, parse_request


@stage_handler("Monitor")
def lambda_handler(event: dict[str, Any], context: Any) -> MonitorResult | MonitorSkipped:
    """Event: MonitorRequest (``{"model_name", "version"?, "data"?, "since_hours"?, "thresholds"?,
    "scheduled"?}``)."""
    request = parse_request(event)
    try:
        result = monitor(
            request,
            registry=ModelRegistry(require_env("MODEL_REGISTRY_TABLE")),
            store=ObjectStore(),
            prediction_log=PredictionLog(require_env("PREDICTION_LOG_TABLE")),
            bucket=require_env("DATA_BUCKET"),
            limits=Limits.from_env(),
        )
    except ModelNotFoundError as error:
        if not request.scheduled or request.version is not None:
            raise
        logger.info("nothing to monitor yet", extra={"model_name": request.model_name, "reason": str(error)})
        return MonitorSkipped(model_name=request.model_name, reason=str(error))
    publish_model_metrics(result.model_name, drift_metrics(result))
    return result
