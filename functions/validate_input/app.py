"""ValidateInput: check the execution input, fill in defaults and derive the run's names and S3 prefixes."""

from typing import Any

from pipeline_core.observability import stage_handler
from pipeline_core.stages.validate_input import ValidateInputResult, validate_input


@stage_handler("ValidateInput")
def lambda_handler(event: dict[str, Any], context: Any) -> ValidateInputResult:
    """Event: ``{"input", "execution_name", "execution_arn", "start_time"}``; result: ``{"config": RunConfig}``."""
    return validate_input(event)
