"""PreprocessShard: one shard's kept rows rendered as the split files' lines, with the baseline's partial
statistics, for the PreprocessShards Distributed Map. See :mod:`pipeline_core.stages.shard_preprocess`."""

from typing import Any

from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.observability import stage_handler
from pipeline_core.stages.dataset_file import Limits
from pipeline_core.stages.shard_preprocess import PartResult, PreprocessShardEvent, preprocess_shard_stage


@stage_handler("PreprocessShard")
def lambda_handler(event: dict[str, Any], context: Any) -> PartResult:
    """Event: ``{"config", "data", "plan", "shard": {"index", "uri"}}``; result: PartResult."""
    parsed = PreprocessShardEvent.model_validate(event)
    return preprocess_shard_stage(parsed.data, parsed.plan, parsed.shard, store=ObjectStore(), limits=Limits.from_env())
