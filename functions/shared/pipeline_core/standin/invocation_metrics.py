"""The endpoint metrics SageMaker publishes for every invocation, published by the stand-in's runtime.

SageMaker hosting publishes, per minute, ``AWS/SageMaker`` Invocations, Invocation5XXErrors and ModelLatency
(microseconds) with the dimensions EndpointName and VariantName, and again with EndpointConfigName added
(one series per fleet, which is how a blue/green deployment's two fleets can be told apart). The rollback
alarms (``pipeline_core.rollout.endpoint_alarms``) watch the first set, so on a local target they see what the
stand-in's models really did: a model that fails its requests raises Invocation5XXErrors, and the alarm fires.

Invocations are aggregated per minute in memory and published as statistic sets (SampleCount, Sum, Minimum,
Maximum) by a background thread every ``FLUSH_SECONDS``, and at exit, so a request never waits for
CloudWatch. A failed publish is logged and its data dropped (metrics are for watching; a request must not
fail for them). CloudWatch refuses PutMetricData in ``AWS/`` namespaces from an account: this publisher runs
only where the stand-in does, on local targets, standing in for SageMaker itself.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

NAMESPACE = "AWS/SageMaker"
FLUSH_SECONDS = 2.0
Publish = Callable[[str, Sequence[Mapping[str, Any]]], None]


@dataclass
class _Minute:
    invocations: int = 0
    errors: int = 0
    latency_sum: float = 0.0
    latency_min: float = float("inf")
    latency_max: float = 0.0

    def add(self, latency_us: float, error: bool) -> None:
        self.invocations += 1
        self.errors += int(error)
        self.latency_sum += latency_us
        self.latency_min = min(self.latency_min, latency_us)
        self.latency_max = max(self.latency_max, latency_us)


Key = tuple[str, str, str, int]  # endpoint, variant, endpoint config, minute (epoch seconds)


def metric_data(key: Key, minute: _Minute) -> list[dict[str, Any]]:
    """PutMetricData entries for one fleet's minute: each metric with and without EndpointConfigName."""
    endpoint, variant, config, start = key
    n = minute.invocations
    statistics = {
        "Invocations": ({"SampleCount": n, "Sum": n, "Minimum": 1, "Maximum": 1}, "None"),
        "Invocation5XXErrors": (
            {
                "SampleCount": n,
                "Sum": minute.errors,
                "Minimum": 0 if minute.errors < n else 1,
                "Maximum": 1 if minute.errors else 0,
            },
            "None",
        ),
        "ModelLatency": (
            {"SampleCount": n, "Sum": minute.latency_sum, "Minimum": minute.latency_min, "Maximum": minute.latency_max},
            "Microseconds",
        ),
    }
    base = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]
    dimension_sets = [base, [*base, {"Name": "EndpointConfigName", "Value": config}]]
    timestamp = datetime.fromtimestamp(start, UTC)
    return [
        {"MetricName": name, "Dimensions": dims, "Timestamp": timestamp, "StatisticValues": values, "Unit": unit}
        for name, (values, unit) in statistics.items()
        for dims in dimension_sets
    ]


class InvocationMetrics:
    """Aggregate invocations per minute and publish them (``publish(namespace, metric_data)``) in the background."""

    def __init__(
        self,
        publish: Publish,
        clock: Callable[[], float] = time.time,
        flush_seconds: float = FLUSH_SECONDS,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self._publish = publish
        self._clock = clock
        self._flush_seconds = flush_seconds
        self._on_error = on_error
        self._lock = threading.Lock()
        self._minutes: dict[Key, _Minute] = {}
        self._thread: threading.Thread | None = None

    def record(self, endpoint: str, variant: str, config: str, latency_us: float, error: bool) -> None:
        """Count one invocation of ``endpoint``'s ``variant`` served by the fleet of endpoint config ``config``."""
        minute = int(self._clock() // 60 * 60)
        with self._lock:
            self._minutes.setdefault((endpoint, variant, config, minute), _Minute()).add(latency_us, error)
            if self._thread is None and self._flush_seconds > 0:
                self._thread = threading.Thread(target=self._run, name="stepml-standin-metrics", daemon=True)
                self._thread.start()
                atexit.register(self.flush)

    def flush(self) -> int:
        """Publish what was recorded since the last flush; the number of metric data entries sent."""
        with self._lock:
            minutes, self._minutes = self._minutes, {}
        data = [entry for key, minute in sorted(minutes.items()) for entry in metric_data(key, minute)]
        if not data:
            return 0
        try:
            self._publish(NAMESPACE, data)
        except Exception as error:  # metrics are for watching: a request never fails for them
            if self._on_error:
                self._on_error(error)
            return 0
        return len(data)

    def _run(self) -> None:
        while True:
            time.sleep(self._flush_seconds)
            self.flush()
