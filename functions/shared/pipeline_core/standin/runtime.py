"""The stand-in's endpoint runtime: what the SageMaker scikit-learn inference container does, in process.

``invoke_endpoint`` follows endpoint → endpoint config → model → ``PrimaryContainer`` like SageMaker
hosting does, downloads and extracts ``ModelDataUrl`` (model.tar.gz), loads ``SAGEMAKER_PROGRAM``
(inference.py) from the ``SAGEMAKER_SUBMIT_DIRECTORY`` tarball, and calls its ``model_fn`` once per model
and ``predict_records`` (or ``predict_fn``) per request.

Loaded models stay warm in a process-wide cache keyed by ModelDataUrl. An endpoint's record is re-read at
most every ``STANDIN_ENDPOINT_REFRESH_SECONDS`` (default 1 s) so a hot path does not read S3 on each
call, yet an UpdateEndpoint is picked up without a restart: endpoint configs and models are immutable in
SageMaker, so an unchanged EndpointConfigName means an unchanged model.

While a blue/green deployment is under way (``rollout.py``), each request goes to the new fleet's model with
the probability of its current share of the traffic, else to the old one, as SageMaker routes requests
between the fleets. Every invocation is counted in the AWS/SageMaker metrics SageMaker publishes
(``invocation_metrics.py``), which the endpoint's rollback alarms watch.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import random
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline_core.aws.cloudwatch import CloudWatch
from pipeline_core.errors import ConfigurationError
from pipeline_core.observability import logger
from pipeline_core.settings import optional_env
from pipeline_core.standin import rollout
from pipeline_core.standin.archives import extract_tar_gz
from pipeline_core.standin.endpoints import describe_endpoint_config, describe_model
from pipeline_core.standin.errors import ModelError, ValidationException
from pipeline_core.standin.invocation_metrics import InvocationMetrics
from pipeline_core.standin.store import RecordStore
from pipeline_core.trainer_contract import serving_problem

DEFAULT_REFRESH_SECONDS = 1.0
# Each UpdateEndpoint brings a new model; the few most recent stay loaded, older ones are dropped.
MAX_MODELS = 4
MAX_SOURCES = 8


@dataclass
class _Source:
    """An extracted source tarball, its imported serving module and the modules it imported from its own
    directory (kept out of sys.modules between calls, so two trainers' ``model.py`` never meet)."""

    module: ModuleType
    directory: tempfile.TemporaryDirectory[str] = field(repr=False)
    code_dir: Path
    local_names: frozenset[str]
    modules: dict[str, ModuleType] = field(default_factory=dict, repr=False)


@dataclass
class LoadedModel:
    """A loaded model: model_fn's bundle and the inference module that serves it."""

    model_data_url: str
    bundle: Any
    source: _Source
    directory: tempfile.TemporaryDirectory[str] = field(repr=False)

    @property
    def module(self) -> ModuleType:
        return self.source.module

    def predict(self, records: list[dict[str, Any]]) -> list[Any]:
        module = self.module
        if hasattr(module, "predict_records"):
            return list(module.predict_records(self.bundle, records))
        if hasattr(module, "input_fn"):
            # what the inference API sends an endpoint on AWS, through the trainer's own deserialiser
            data = module.input_fn(json.dumps({"instances": records}), "application/json")
        else:
            import pandas as pd  # only this path needs a frame

            data = pd.DataFrame.from_records(records)
        prediction = module.predict_fn(data, self.bundle)
        if not hasattr(module, "output_fn"):
            return list(prediction)
        answer = module.output_fn(prediction, "application/json")
        body = answer[0] if isinstance(answer, tuple) else answer  # (body, content type) or the body alone
        payload = json.loads(body)
        if not isinstance(payload, dict) or not isinstance(payload.get("predictions"), list):
            raise ValueError(f'output_fn must answer {{"predictions": [...]}} to the inference API, not {body!s:.200}')
        return list(payload["predictions"])

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        """One request through the serving code as the scikit-learn container's handler runs it:
        ``input_fn`` -> ``predict_fn`` -> ``output_fn``; returns (body, content type).

        The container has default decoders for JSON, CSV and NPY only, which a batch transform's JSON Lines
        would not get through; so serving code without ``input_fn``/``output_fn`` is refused here, naming what
        is missing, rather than answered in a way SageMaker would not.
        """
        module = self.module
        missing = [name for name in ("input_fn", "predict_fn", "output_fn") if not hasattr(module, name)]
        if missing:
            raise ValueError(
                f"the serving code defines no {', '.join(missing)}: it cannot answer {content_type} requests "
                "(the scikit-learn container's defaults read JSON, CSV and NPY only)"
            )
        data = module.input_fn(body, content_type)
        prediction = module.predict_fn(data, self.bundle)
        answer = module.output_fn(prediction, accept)
        text, answered = answer if isinstance(answer, tuple) else (answer, accept)
        return (text.encode() if isinstance(text, str) else bytes(text)), str(answered)


ModelKey = tuple[str, str, str]  # (ModelDataUrl, SAGEMAKER_SUBMIT_DIRECTORY, SAGEMAKER_PROGRAM)


def container_key(store: RecordStore, model_name: str, where: str) -> tuple[str, str, str]:
    """(ModelDataUrl, SAGEMAKER_SUBMIT_DIRECTORY, SAGEMAKER_PROGRAM) of SageMaker model ``model_name``."""
    container = describe_model(store, model_name).get("PrimaryContainer", {})
    environment = container.get("Environment", {})
    url, source = container.get("ModelDataUrl"), environment.get("SAGEMAKER_SUBMIT_DIRECTORY")
    if not url or not source:
        raise ModelError(
            f"{where}: model {model_name} needs PrimaryContainer.ModelDataUrl "
            "and Environment.SAGEMAKER_SUBMIT_DIRECTORY for the stand-in to serve it"
        )
    return url, source, environment.get("SAGEMAKER_PROGRAM", "inference.py")


@dataclass
class _Route:
    """Which models an endpoint served when its record was last read: its config's, and during a blue/green
    deployment the pending config's too (``record`` says which share of the traffic goes where, and when)."""

    record: dict[str, Any]
    variant_name: str
    model_keys: dict[str, ModelKey]  # endpoint config name -> model
    checked_at: float

    @property
    def endpoint_config_name(self) -> str:
        return str(self.record["EndpointConfigName"])


def _lru_put(cache: OrderedDict[Any, Any], key: Any, value: Any, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        _, evicted = cache.popitem(last=False)
        evicted.directory.cleanup()


class ModelServer:
    """Endpoint routes and loaded models, safe to share between threads (one instance per process)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        metrics: InvocationMetrics | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._draw = draw
        self.metrics = metrics
        self._lock = threading.RLock()
        self._routes: dict[tuple[str, str], _Route] = {}
        self._models: OrderedDict[ModelKey, LoadedModel] = OrderedDict()
        self._sources: OrderedDict[tuple[str, str], _Source] = OrderedDict()

    def clear(self) -> None:
        """Forget every route and model (tests; a new moto account reuses bucket names)."""
        with self._lock:
            for model in self._models.values():
                model.directory.cleanup()
            for source in self._sources.values():
                source.directory.cleanup()
            self._routes.clear()
            self._models.clear()
            self._sources.clear()

    def invoke(
        self, store: RecordStore, endpoint_name: str, records: list[dict[str, Any]], refresh_seconds: float
    ) -> list[Any]:
        """Predictions of the model ``endpoint_name`` serves, one per record."""
        route = self._route_for(store, endpoint_name, refresh_seconds)
        config_name = self._fleet(route)
        with self._lock:
            key = route.model_keys[config_name]
            model = self._models.get(key) or self._load(store, key)
            self._models.move_to_end(key)
        started = time.perf_counter()
        try:
            predictions = model.predict(records)
        except Exception as error:
            self._count(route, config_name, started, error=True)
            # sagemaker-runtime reports any failure inside the container as ModelError, with its message.
            raise ModelError(
                f"endpoint {endpoint_name}: the model ({model.model_data_url}) failed on the request: "
                f"{type(error).__name__}: {error}"
            ) from error
        self._count(route, config_name, started, error=False)
        return predictions

    def _fleet(self, route: _Route) -> str:
        """The endpoint config whose fleet answers this request: the pending one with its share's probability."""
        shifting = rollout.traffic_share(route.record, self._wall_clock())
        if shifting is not None and shifting[0] in route.model_keys and self._draw() < shifting[1]:
            return shifting[0]
        return route.endpoint_config_name

    def _count(self, route: _Route, config_name: str, started: float, error: bool) -> None:
        if self.metrics is not None:
            latency_us = (time.perf_counter() - started) * 1e6
            self.metrics.record(route.record["EndpointName"], route.variant_name, config_name, latency_us, error)

    def _route_for(self, store: RecordStore, endpoint_name: str, refresh_seconds: float) -> _Route:
        route_key = (store.bucket, endpoint_name)
        now = self._clock()
        with self._lock:
            route = self._routes.get(route_key)
            if route and now - route.checked_at < refresh_seconds:
                return route
        # Read outside the lock: a slow S3 read must not hold up requests to other endpoints. The record as
        # stored: a deployment advances (and rolls back) when DescribeEndpoint looks at it, not here.
        record = store.get("endpoints", endpoint_name)
        if record is None:
            raise ValidationException(f'Could not find endpoint "{store.arn("endpoints", endpoint_name)}".')
        configs = [record["EndpointConfigName"]]
        pending = rollout.in_progress(record)
        if pending:
            configs.append(pending)
        known = route.model_keys if route else {}
        keys = {name: known.get(name) or self._resolve(store, endpoint_name, name) for name in configs}
        variant = (
            str(record["ProductionVariants"][0]["VariantName"]) if record.get("ProductionVariants") else "AllTraffic"
        )
        fresh = _Route(record, variant, keys, now)
        with self._lock:
            self._routes[route_key] = fresh
            for key in keys.values():
                if key not in self._models:
                    self._load(store, key)
        return fresh

    @staticmethod
    def _resolve(store: RecordStore, endpoint_name: str, config_name: str) -> ModelKey:
        """(ModelDataUrl, SAGEMAKER_SUBMIT_DIRECTORY, SAGEMAKER_PROGRAM) of the endpoint's model."""
        config = describe_endpoint_config(store, config_name)
        # SageMaker splits traffic between variants by weight; the stand-in serves the heaviest one.
        variant = max(config["ProductionVariants"], key=lambda v: float(v.get("InitialVariantWeight", 1.0)))
        return container_key(store, variant["ModelName"], f"endpoint {endpoint_name}")

    def model_named(self, store: RecordStore, model_name: str) -> LoadedModel:
        """The SageMaker model ``model_name`` loaded as a container would load it (what a transform job runs);
        kept warm with the endpoints' models."""
        model_key = container_key(store, model_name, f"model {model_name}")
        with self._lock:
            model = self._models.get(model_key) or self._load(store, model_key)
            self._models.move_to_end(model_key)
            return model

    def _load(self, store: RecordStore, model_key: ModelKey) -> LoadedModel:
        """Download, extract and model_fn a model (called under the lock: loads are rare and one at a time
        avoids loading the same model twice)."""
        url, source_uri, program = model_key
        source = self._inference_source(store, source_uri, program)
        directory = tempfile.TemporaryDirectory(prefix="standin-model-")
        try:
            model_dir = extract_tar_gz(store.objects.read_bytes(url), Path(directory.name), url)
            with source_modules(source):  # a pickle's classes resolve against this trainer's own modules
                bundle = source.module.model_fn(str(model_dir))
        except Exception as error:
            directory.cleanup()
            raise ModelError(f"could not load the model at {url}: {type(error).__name__}: {error}") from error
        model = LoadedModel(url, bundle, source, directory)
        _lru_put(self._models, model_key, model, MAX_MODELS)
        return model

    def _inference_source(self, store: RecordStore, source_uri: str, program: str) -> _Source:
        """``program`` from the source tarball, imported under a name unique to the tarball's content."""
        data = store.objects.read_bytes(source_uri)
        digest = hashlib.sha256(data).hexdigest()
        cached = self._sources.get((digest, program))
        if cached is not None:
            return cached
        directory = tempfile.TemporaryDirectory(prefix="standin-code-")
        try:
            code_dir = extract_tar_gz(data, Path(directory.name), source_uri)
            problem = serving_problem(code_dir, program)
            if problem:
                raise ModelError(f"{problem} ({source_uri})")
            source = _import_source(code_dir, program, f"_stepml_standin_{Path(program).stem}_{digest[:16]}", directory)
        except Exception:
            directory.cleanup()
            raise
        _lru_put(self._sources, (digest, program), source, MAX_SOURCES)
        return source


def local_module_names(code_dir: Path) -> frozenset[str]:
    """The top-level module names ``code_dir`` provides (``model`` for model.py, packages by folder name)."""
    names = {path.stem for path in code_dir.glob("*.py")}
    names |= {path.name for path in code_dir.iterdir() if path.is_dir() and path.name.isidentifier()}
    return frozenset(names)


# sys.modules and sys.path are process-wide: one source's modules are swapped in at a time.
_SWAP_LOCK = threading.RLock()


@contextlib.contextmanager
def source_modules(source: _Source) -> Iterator[None]:
    """While inside: ``source``'s own modules are the ones ``import model`` (or a pickle naming ``model.X``)
    finds, its directory is first on sys.path; on leaving, what it imported from there is kept with the
    source and sys.modules is as it was (a module of that name from elsewhere comes back)."""

    def own(name: str) -> bool:
        return name.split(".", 1)[0] in source.local_names

    with _SWAP_LOCK:
        shadowed = {name: module for name, module in sys.modules.items() if own(name)}
        for name in shadowed:
            del sys.modules[name]
        sys.modules.update(source.modules)
        sys.path.insert(0, str(source.code_dir))
        try:
            yield
        finally:
            sys.path.remove(str(source.code_dir))
            imported = {name: module for name, module in sys.modules.items() if own(name)}
            for name in imported:
                del sys.modules[name]
            source.modules.update(imported)
            sys.modules.update(shadowed)


def _import_source(
    code_dir: Path, program: str, module_name: str, directory: tempfile.TemporaryDirectory[str]
) -> _Source:
    """Import ``program`` as ``module_name`` with its folder on sys.path, as in the container; the modules it
    imports from there stay with the returned source, not in sys.modules."""
    path = code_dir / program
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    source = _Source(module, directory, code_dir, local_module_names(code_dir))
    # under its unique name for pickles and dataclasses that look their module up; under its own name (train)
    # only while its source is swapped in
    sys.modules[module_name] = module
    if "/" not in program:
        source.modules[Path(program).stem] = module
    try:
        with source_modules(source):
            spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return source


def _publish_failed(error: Exception) -> None:
    logger.warning(
        "could not publish the endpoint's AWS/SageMaker metrics", extra={"error": f"{type(error).__name__}: {error}"}
    )


METRICS_SETTING = "STANDIN_ENDPOINT_METRICS"
_SERVER = ModelServer()


def _metrics_enabled() -> bool:
    """``STANDIN_ENDPOINT_METRICS`` is ``on`` where the stand-in serves for a local target (infra/template.yaml
    sets it for the Inference function there); elsewhere (a test calling the runtime) nothing is published."""
    setting = optional_env(METRICS_SETTING, "off")
    if setting not in ("on", "off"):
        raise ConfigurationError(f"{METRICS_SETTING} must be on or off, got {setting!r}")
    return setting == "on"


def invoke_endpoint(
    endpoint_name: str,
    records: list[dict[str, Any]],
    store: RecordStore | None = None,
    refresh_seconds: float | None = None,
) -> list[Any]:
    """Predictions of the model ``endpoint_name`` serves, one per record (records in DATA_BUCKET unless
    ``store`` is given). A missing endpoint is ValidationException; a failing model, ModelError."""
    if refresh_seconds is None:
        refresh_seconds = float(optional_env("STANDIN_ENDPOINT_REFRESH_SECONDS", str(DEFAULT_REFRESH_SECONDS)))
    if _SERVER.metrics is None and _metrics_enabled():
        # CloudWatch's client is built on the first flush
        _SERVER.metrics = InvocationMetrics(
            lambda namespace, data: CloudWatch().put_metric_data(namespace, data), on_error=_publish_failed
        )
    return _SERVER.invoke(store or RecordStore.from_env(), endpoint_name, records, refresh_seconds)


def reset_model_cache() -> None:
    """Drop every loaded model and endpoint route of this process."""
    _SERVER.clear()


def transform_model(store: RecordStore, model_name: str) -> LoadedModel:
    """SageMaker model ``model_name`` loaded for a transform job (ModelError if it cannot be loaded)."""
    return _SERVER.model_named(store, model_name)
