"""Ingest: copy the dataset into raw/<run_id>/, hash it and record the run as RUNNING."""

from typing import Any

from pipeline_core.aws.clients import client
from pipeline_core.aws.definition_version import definition_version
from pipeline_core.aws.runs import RunLog
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.idempotency import run_once
from pipeline_core.models import IngestResult
from pipeline_core.observability import stage_handler
from pipeline_core.settings import require_env
from pipeline_core.stages.data_path import DataPathSettings
from pipeline_core.stages.ingest import IngestEvent, ingest


def _ingest(event: dict[str, Any]) -> dict[str, Any]:
    parsed = IngestEvent.model_validate(event)
    result = ingest(
        parsed.config,
        parsed.execution_arn,
        store=ObjectStore(),
        runs=RunLog(require_env("RUNS_TABLE")),
        settings=DataPathSettings.from_env(),
        definition_version=definition_version(client("stepfunctions"), parsed.execution_arn),
    )
    return result.model_dump(mode="json")


@stage_handler("Ingest")
def lambda_handler(event: dict[str, Any], context: Any) -> IngestResult:
    """Event: ``{"config", "execution_arn"}``; result: IngestResult (stored at ``$.ingest``).

    Once per execution: a retried or duplicated invocation returns the first one's result.
    """
    return IngestResult.model_validate(run_once(event, context, "execution_arn", _ingest))
