"""StepCache: the Lookup* and Remember* states around Preprocess, Train (or Tune) and Evaluate.

``action: lookup`` answers whether an earlier run's result can be reused (``$.cache.<step>``); ``action:
store`` keeps this run's result for later runs. The logic is in pipeline_core/stages/step_cache.py.
"""

from typing import Any

from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.runs import RunLog
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.aws.step_cache import StepCache
from pipeline_core.models import CacheLookup
from pipeline_core.observability import logger, stage_handler
from pipeline_core.settings import optional_env, require_env
from pipeline_core.stages import step_cache


def lambda_handler(event: dict[str, Any], context: Any) -> Any:
    """A Lookup* state (``action: lookup``) or a Remember* state (``action: store``)."""
    if isinstance(event, dict) and event.get("action") == "store":
        return _remember(event, context)
    return _lookup(event, context)


@stage_handler("StepCacheLookup")
def _lookup(event: dict[str, Any], context: Any) -> CacheLookup:
    """Event: ``{"action": "lookup", "step", "config", "execution_arn", ...}`` (see StepCacheEvent)."""
    parsed = step_cache.StepCacheEvent.model_validate(event)
    answer = step_cache.lookup(
        parsed,
        cache=StepCache(require_env("STEP_CACHE_TABLE")),
        store=ObjectStore(),
        runs=RunLog(require_env("RUNS_TABLE")),
        registry=ModelRegistry(require_env("MODEL_REGISTRY_TABLE")),
    )
    logger.info("step cache", extra={"step": answer.step, "hit": answer.hit, "reason": answer.reason})
    return answer


@stage_handler("StepCacheStore")
def _remember(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Event: ``{"action": "store", "step", "config", "execution_arn", "lookup", "result"}``."""
    parsed = step_cache.StepCacheEvent.model_validate(event)
    ttl_days = int(optional_env("STEP_CACHE_TTL_DAYS", str(step_cache.DEFAULT_TTL_DAYS)))
    entry = step_cache.remember(
        parsed, cache=StepCache(require_env("STEP_CACHE_TABLE")), store=ObjectStore(), ttl_days=ttl_days
    )
    return {"key": entry.cache_key, "outputs": len(entry.outputs), "expires_at": entry.expires_at}
