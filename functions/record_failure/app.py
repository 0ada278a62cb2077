"""RecordFailure: write the failed run's record and roll back an endpoint the run had changed."""

from typing import Any

from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.runs import RunLog
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.aws.sagemaker import endpoint_control
from pipeline_core.observability import stage_handler
from pipeline_core.settings import require_env
from pipeline_core.stages.record_failure import FailureSummary, record_failure


@stage_handler("RecordFailure")
def lambda_handler(event: dict[str, Any], context: Any) -> FailureSummary:
    """Event: ``{"failure": {"state", "error", "cause"}, "state", "execution_arn", "execution_name"}``."""
    return record_failure(
        event,
        runs=RunLog(require_env("RUNS_TABLE")),
        registry=lambda: ModelRegistry(require_env("MODEL_REGISTRY_TABLE")),
        # built only when a rollback is needed: an early failure needs neither SageMaker nor the registry
        endpoints=endpoint_control,
        # a rejected upload under incoming/ is copied to quarantine/ with its reason
        store=ObjectStore,
    )
