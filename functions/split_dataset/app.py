"""SplitDataset: cut a large CSV into shards in S3 and write the manifest the ValidateShards map reads.

Only on the sharded path (Ingest's ``path`` is ``"sharded"``: the object is over ShardThresholdBytes); see
:mod:`pipeline_core.stages.shards`.
"""

from typing import Any

from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.observability import logger, stage_handler
from pipeline_core.stages.dataset_file import Limits
from pipeline_core.stages.shards import ShardSettings, SplitDatasetEvent, SplitResult, split_dataset


@stage_handler("SplitDataset")
def lambda_handler(event: dict[str, Any], context: Any) -> SplitResult:
    """Event: ``{"config", "ingest"}``; result: SplitResult (stored at ``$.shards``)."""
    parsed = SplitDatasetEvent.model_validate(event)
    result = split_dataset(
        parsed.ingest, store=ObjectStore(), settings=ShardSettings.from_env(), limits=Limits.from_env()
    )
    logger.info("dataset split", extra={"shards": result.count, "whole_file": result.whole_file})
    return result
