"""ValidateShard: one shard's profile state, for the ValidateShards Distributed Map (one item per shard).

The state goes to S3 next to the shard and only its URI is returned; ValidateData (the MergeProfiles state)
merges the states in shard order. See :mod:`pipeline_core.stages.shards`.
"""

from typing import Any

from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.observability import stage_handler
from pipeline_core.stages.dataset_file import Limits
from pipeline_core.stages.shards import ShardResult, ValidateShardEvent, validate_shard


@stage_handler("ValidateShard")
def lambda_handler(event: dict[str, Any], context: Any) -> ShardResult:
    """Event: ``{"config", "shard": {"index", "uri"}}``; result: ShardResult."""
    parsed = ValidateShardEvent.model_validate(event)
    return validate_shard(parsed.config, parsed.shard, store=ObjectStore(), limits=Limits.from_env())
