"""LocalSageMaker: the SageMaker stand-in on local targets, one SageMaker API per function (STANDIN_ACTION)."""

import functools
from typing import Any

from pipeline_core.observability import Handler, stage_handler
from pipeline_core.settings import require_env
from pipeline_core.standin.actions import action, run_action
from pipeline_core.standin.store import DEFAULT_ACCOUNT, RecordStore

# Time kept back from the Lambda's own timeout to upload the artifacts and write the job record after
# train.py stops, so a long run fails as a TrainingFailedError rather than as a Lambda timeout.
UPLOAD_MARGIN_SECONDS = 30.0


def _account_of(context: Any) -> str:
    # arn:aws:lambda:<region>:<account>:function:<name>
    parts = str(getattr(context, "invoked_function_arn", "")).split(":")
    return parts[4] if len(parts) > 4 and parts[4] else DEFAULT_ACCOUNT


def _time_budget(context: Any) -> float | None:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    return max(1.0, remaining() / 1000 - UPLOAD_MARGIN_SECONDS)


@functools.cache
def _handler_for(action_name: str) -> Handler:
    action(action_name)  # an unknown action fails here, before any request is read

    @stage_handler(f"LocalSageMaker{action_name}")
    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        store = RecordStore.from_env(account=_account_of(context))
        return run_action(action_name, event, store, time_budget_seconds=_time_budget(context))

    return handle


def lambda_handler(event: dict[str, Any], context: Any) -> Any:
    """Answer ``event`` (the SageMaker API request from the state) with the API's response."""
    return _handler_for(require_env("STANDIN_ACTION"))(event, context)
