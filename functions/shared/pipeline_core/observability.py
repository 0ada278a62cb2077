"""Powertools Logger, Metrics and Tracer for the pipeline's functions, built once per process.

Every handler is wrapped by :func:`stage_handler`, which logs the event with the execution name as the
correlation id, flushes metrics (EMF) and traces the call, then turns the stage's pydantic result into
the JSON the next state reads.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from pydantic import BaseModel

from pipeline_core.errors import StillRunning
from pipeline_core.settings import require_env

T = TypeVar("T")

# Per-model metrics (drift monitoring): their own namespace, the model's name as the only dimension, so an alarm
# on (namespace, metric, ModelName) finds them. CloudWatch identifies a metric by its exact set of dimensions:
# Powertools' default "service" dimension would make them metrics no such alarm sees.
MONITORING_NAMESPACE = "stepml/Monitoring"


class _Lazy:
    """Build a Powertools object on first use: its constructor reads the environment (service name,
    metrics namespace, log level), and a module must not read the environment at import time."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._instance: Any = None
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget the built object; the next use builds it again from the environment then."""
        with self._lock:
            self._instance = None

    def __getattr__(self, name: str) -> Any:
        if self._instance is None:
            with self._lock:
                if self._instance is None:
                    self._instance = self._factory()
        return getattr(self._instance, name)


# Service name and namespace come from POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE set by
# infra/template.yaml.
logger = cast(Logger, _Lazy(Logger))
metrics = cast(Metrics, _Lazy(Metrics))
tracer = cast(Tracer, _Lazy(Tracer))


def reset_observability() -> None:
    """Build Logger, Metrics and Tracer again on next use. A Lambda's environment never changes, so the
    handlers never call this; a process that runs handlers under several environments (tests) does."""
    for lazy in (logger, metrics, tracer):
        cast(_Lazy, lazy).reset()


def correlation_id_of(event: dict[str, Any]) -> str | None:
    """The execution name a state passed in (``execution_name`` or ``config.run_id``)."""
    if isinstance(event.get("execution_name"), str):
        return str(event["execution_name"])
    config = event.get("config")
    if isinstance(config, dict) and isinstance(config.get("run_id"), str):
        return str(config["run_id"])
    return None


Handler = Callable[[dict[str, Any], Any], Any]


def stage_handler(stage: str) -> Callable[[Callable[[dict[str, Any], Any], BaseModel | dict[str, Any]]], Handler]:
    """Wrap a stage's handler with logging, metrics and tracing; the result is returned as JSON."""

    def decorate(func: Callable[[dict[str, Any], Any], BaseModel | dict[str, Any]]) -> Handler:
        @functools.wraps(func)
        def handler(event: dict[str, Any], context: Any) -> Any:
            # Checked first: without a namespace the metrics flush below would fail and hide the stage's
            # own outcome.
            require_env("POWERTOOLS_METRICS_NAMESPACE")
            logger.set_correlation_id(correlation_id_of(event))
            logger.append_keys(stage=stage)
            started = time.perf_counter()
            try:
                with tracer.provider.in_subsegment(f"## {stage}"):
                    result = func(event, context)
            except StillRunning as running:
                logger.info("stage still running", extra={"error_type": type(running).__name__, "reason": str(running)})
                raise
            except Exception as error:
                logger.exception("stage failed", extra={"error_type": type(error).__name__})
                metrics.add_metric(name=f"{stage}Failed", unit=MetricUnit.Count, value=1)
                raise
            finally:
                metrics.add_metric(
                    name=f"{stage}Duration", unit=MetricUnit.Milliseconds, value=(time.perf_counter() - started) * 1000
                )
                metrics.flush_metrics(raise_on_empty_metrics=False)
            logger.info("stage succeeded")
            return result.model_dump(mode="json") if isinstance(result, BaseModel) else result

        return handler

    return decorate


def publish_model_metrics(model_name: str, values: list[tuple[str, MetricUnit, float]]) -> None:
    """Print ``values`` as one EMF document in :data:`MONITORING_NAMESPACE` with the only dimension ModelName
    (CloudWatch Logs turns it into metrics, on AWS and on the embedded target alike)."""
    if not values:
        return
    emitter = EphemeralMetrics(namespace=MONITORING_NAMESPACE, service="")  # service "": no service dimension
    emitter.add_dimension(name="ModelName", value=model_name)
    for name, unit, value in values:
        emitter.add_metric(name=name, unit=unit, value=value)
    emitter.flush_metrics()
