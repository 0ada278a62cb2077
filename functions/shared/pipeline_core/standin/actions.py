"""The stand-in's SageMaker actions by API name: request in, the API's response out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline_core.errors import ConfigurationError
from pipeline_core.standin import endpoints, training, training_runner, transform, tuning
from pipeline_core.standin.store import RecordStore

Action = Callable[[RecordStore, dict[str, Any]], dict[str, Any]]

ACTIONS: dict[str, Action] = {
    "CreateTrainingJob": training_runner.start_training_job,
    "DescribeTrainingJob": training.describe_training_job,
    "CreateHyperParameterTuningJob": tuning.create_hyper_parameter_tuning_job,
    "DescribeHyperParameterTuningJob": tuning.describe_hyper_parameter_tuning_job,
    "ListTrainingJobsForHyperParameterTuningJob": tuning.list_training_jobs_for_hyper_parameter_tuning_job,
    "CreateModel": endpoints.create_model,
    "CreateEndpointConfig": endpoints.create_endpoint_config,
    "ListEndpoints": endpoints.list_endpoints,
    "CreateEndpoint": endpoints.create_endpoint,
    "UpdateEndpoint": endpoints.update_endpoint,
    "DescribeEndpoint": endpoints.describe_endpoint,
    "DeleteEndpoint": endpoints.delete_endpoint,
    "CreateTransformJob": transform.create_transform_job,
    "DescribeTransformJob": transform.describe_transform_job,
}


def action(name: str) -> Action:
    """The implementation of SageMaker API ``name``; an unknown one is a ConfigurationError."""
    try:
        return ACTIONS[name]
    except KeyError:
        raise ConfigurationError(
            f"STANDIN_ACTION={name!r} is not an action of the SageMaker stand-in; use one of {', '.join(ACTIONS)}"
        ) from None


def run_action(
    name: str, request: dict[str, Any], store: RecordStore, time_budget_seconds: float | None = None
) -> dict[str, Any]:
    """Run SageMaker API ``name`` on ``request`` (``time_budget_seconds`` bounds the jobs that train or transform)."""
    if name == "CreateTrainingJob":
        return training_runner.start_training_job(store, request, time_budget_seconds=time_budget_seconds)
    if name == "CreateHyperParameterTuningJob":
        return tuning.create_hyper_parameter_tuning_job(store, request, time_budget_seconds=time_budget_seconds)
    if name == "CreateTransformJob":
        return transform.create_transform_job(store, request, time_budget_seconds=time_budget_seconds)
    return action(name)(store, request)
