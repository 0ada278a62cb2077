"""The stand-in's endpoint runtime: what the SageMaker scikit-learn inference container does, in process.

``invoke_endpoint`` follows endpoint → endpoint config → model → ``PrimaryContainer`` like SageMaker
hosting does, downloads and extracts ``ModelDataUrl`` (model.tar.gz), loads ``SAGEMAKER_PROGRAM``
(inference.py) from the ``SAGEMAKER_SUBMIT_DIRECTORY`` tarball, and calls its ``model_fn`` once per model
and ``predict_records`` (or ``predict_fn``) per request.

Loaded models stay warm in a process-wide cache keyed by ModelDataUrl. An endpoint's record is re-read at
most every ``STANDIN_ENDPOINT_REFRESH_SECONDS`` (default 1 s) so a hot path does not read S3 on each
call, yet an UpdateEndpoint is picked up without a restart: endpoint configs and models are immutable in
SageMaker, so an unchanged EndpointConfigName means an unchanged model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline_core.settings import optional_env
from pipeline_core.standin.endpoints import describe_endpoint, describe_endpoint_config, describe_model
from pipeline_core.standin.errors import ModelError
from pipeline_core.standin.store import RecordStore
from pipeline_core.standin.training import extract_tar_gz

DEFAULT_REFRESH_SECONDS = 1.0
# Each UpdateEndpoint brings a new model; the few most recent stay loaded, older ones are dropped.
MAX_MODELS = 4
MAX_SOURCES = 8


@dataclass
class _Source:
    """An extracted source tarball and its imported inference module."""

    module: ModuleType
    directory: tempfile.TemporaryDirectory[str] = field(repr=False)


@dataclass
class _Model:
    """A loaded model: model_fn's bundle and the inference module that serves it."""

    model_data_url: str
    bundle: Any
    module: ModuleType
    directory: tempfile.TemporaryDirectory[str] = field(repr=False)

    def predict(self, records: list[dict[str, Any]]) -> list[Any]:
        if hasattr(self.module, "predict_records"):
            return list(self.module.predict_records(self.bundle, records))
        import pandas as pd  # only the predict_fn path needs a frame

        return list(self.module.predict_fn(pd.DataFrame.from_records(records), self.bundle))


@dataclass
class _Route:
    """Which model an endpoint served when its record was last read."""

    endpoint_config_name: str
    model_key: tuple[str, str, str]
    checked_at: float


def _lru_put(cache: OrderedDict[Any, Any], key: Any, value: Any, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        _, evicted = cache.popitem(last=False)
        evicted.directory.cleanup()


class ModelServer:
    """Endpoint routes and loaded models, safe to share between threads (one instance per process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._routes: dict[tuple[str, str], _Route] = {}
        self._models: OrderedDict[tuple[str, str, str], _Model] = OrderedDict()
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
        model = self._model_for(store, endpoint_name, refresh_seconds)
        try:
            return model.predict(records)
        except Exception as error:
            # sagemaker-runtime reports any failure inside the container as ModelError, with its message.
            raise ModelError(
                f"endpoint {endpoint_name}: the model ({model.model_data_url}) failed on the request: "
                f"{type(error).__name__}: {error}"
            ) from error

    def _model_for(self, store: RecordStore, endpoint_name: str, refresh_seconds: float) -> _Model:
        route_key = (store.bucket, endpoint_name)
        now = self._clock()
        with self._lock:
            route = self._routes.get(route_key)
            if route and now - route.checked_at < refresh_seconds and route.model_key in self._models:
                self._models.move_to_end(route.model_key)
                return self._models[route.model_key]
        # Read outside the lock: a slow S3 read must not hold up requests to other endpoints.
        endpoint = describe_endpoint(store, {"EndpointName": endpoint_name})
        if route and route.endpoint_config_name == endpoint["EndpointConfigName"] and route.model_key in self._models:
            with self._lock:
                route.checked_at = now
                return self._models[route.model_key]
        model_key = self._resolve(store, endpoint_name, endpoint["EndpointConfigName"])
        with self._lock:
            model = self._models.get(model_key) or self._load(store, model_key)
            self._routes[route_key] = _Route(endpoint["EndpointConfigName"], model_key, now)
            return model

    @staticmethod
    def _resolve(store: RecordStore, endpoint_name: str, config_name: str) -> tuple[str, str, str]:
        """(ModelDataUrl, SAGEMAKER_SUBMIT_DIRECTORY, SAGEMAKER_PROGRAM) of the endpoint's model."""
        config = describe_endpoint_config(store, config_name)
        # SageMaker splits traffic between variants by weight; the stand-in serves the heaviest one.
        variant = max(config["ProductionVariants"], key=lambda v: float(v.get("InitialVariantWeight", 1.0)))
        container = describe_model(store, variant["ModelName"]).get("PrimaryContainer", {})
        environment = container.get("Environment", {})
        url, source = container.get("ModelDataUrl"), environment.get("SAGEMAKER_SUBMIT_DIRECTORY")
        if not url or not source:
            raise ModelError(
                f"endpoint {endpoint_name}: model {variant['ModelName']} needs PrimaryContainer.ModelDataUrl "
                "and Environment.SAGEMAKER_SUBMIT_DIRECTORY for the stand-in to serve it"
            )
        return url, source, environment.get("SAGEMAKER_PROGRAM", "inference.py")

    def _load(self, store: RecordStore, model_key: tuple[str, str, str]) -> _Model:
        """Download, extract and model_fn a model (called under the lock: loads are rare and one at a time
        avoids loading the same model twice)."""
        url, source_uri, program = model_key
        module = self._inference_module(store, source_uri, program)
        directory = tempfile.TemporaryDirectory(prefix="standin-model-")
        try:
            model_dir = extract_tar_gz(store.objects.read_bytes(url), Path(directory.name), url)
            bundle = module.model_fn(str(model_dir))
        except Exception as error:
            directory.cleanup()
            raise ModelError(f"could not load the model at {url}: {type(error).__name__}: {error}") from error
        model = _Model(url, bundle, module, directory)
        _lru_put(self._models, model_key, model, MAX_MODELS)
        return model

    def _inference_module(self, store: RecordStore, source_uri: str, program: str) -> ModuleType:
        """``program`` from the source tarball, imported under a name unique to the tarball's content."""
        data = store.objects.read_bytes(source_uri)
        digest = hashlib.sha256(data).hexdigest()
        cached = self._sources.get((digest, program))
        if cached is not None:
            return cached.module
        directory = tempfile.TemporaryDirectory(prefix="standin-code-")
        try:
            code_dir = extract_tar_gz(data, Path(directory.name), source_uri)
            path = code_dir / program
            if not path.is_file():
                raise ModelError(f"SAGEMAKER_PROGRAM {program} is not in {source_uri}")
            module = _import_path(path, f"_stepml_standin_{Path(program).stem}_{digest[:16]}", code_dir)
            for required in ("model_fn",):
                if not hasattr(module, required):
                    raise ModelError(f"{program} from {source_uri} defines no {required}")
            if not hasattr(module, "predict_records") and not hasattr(module, "predict_fn"):
                raise ModelError(f"{program} from {source_uri} defines neither predict_records nor predict_fn")
        except Exception:
            directory.cleanup()
            raise
        _lru_put(self._sources, (digest, program), _Source(module, directory), MAX_SOURCES)
        return module


def _import_path(path: Path, module_name: str, code_dir: Path) -> ModuleType:
    """Import ``path`` as ``module_name``; its folder is on sys.path while it runs, as in the container
    (a module it imports from there stays in sys.modules under its own name)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pickles and dataclasses look their module up here
    sys.path.insert(0, str(code_dir))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    finally:
        sys.path.remove(str(code_dir))
    return module


_SERVER = ModelServer()


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
    return _SERVER.invoke(store or RecordStore.from_env(), endpoint_name, records, refresh_seconds)


def reset_model_cache() -> None:
    """Drop every loaded model and endpoint route of this process."""
    _SERVER.clear()
