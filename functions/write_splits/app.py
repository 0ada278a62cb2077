"""WriteSplits: the sharded Preprocess's last step, the shards' parts gathered into the split files,
columns.json and baseline.json the single Preprocess writes. See :mod:`pipeline_core.stages.shard_preprocess`.
"""

from typing import Any

from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.models import PreprocessResult
from pipeline_core.observability import stage_handler
from pipeline_core.stages.shard_preprocess import WriteSplitsEvent, write_splits_stage


@stage_handler("WriteSplits")
def lambda_handler(event: dict[str, Any], context: Any) -> PreprocessResult:
    """Event: ``{"config", "ingest", "data", "plan", "parts"}``; result: PreprocessResult (``$.prep``)."""
    parsed = WriteSplitsEvent.model_validate(event)
    return write_splits_stage(parsed.config, parsed.ingest, parsed.data, parsed.plan, parsed.parts, store=ObjectStore())
