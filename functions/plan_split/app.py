"""PlanSplit: the sharded Preprocess's pass 1, the target column of every shard and the seeded split of the kept
rows, written as a plan per shard for the PreprocessShards map. See :mod:`pipeline_core.stages.shard_preprocess`.
"""

from typing import Any

from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.observability import logger, stage_handler
from pipeline_core.stages.dataset_file import Limits
from pipeline_core.stages.shard_preprocess import PlanResult, PlanSplitEvent, plan_split_stage
from pipeline_core.stages.shards import ShardSettings


@stage_handler("PlanSplit")
def lambda_handler(event: dict[str, Any], context: Any) -> PlanResult:
    """Event: ``{"config", "ingest", "data"}``; result: PlanResult (stored at ``$.plan``)."""
    parsed = PlanSplitEvent.model_validate(event)
    result = plan_split_stage(
        parsed.config,
        parsed.ingest,
        parsed.data,
        store=ObjectStore(),
        settings=ShardSettings.from_env(),
        limits=Limits.from_env(),
        memory_mb=int(context.memory_limit_in_mb),  # the function's MemorySize, as Lambda reports it
    )
    logger.info("split planned", extra={"plan": result.uri, "whole_file": result.whole_file})
    return result
