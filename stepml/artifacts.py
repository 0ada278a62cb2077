"""Which S3 objects belong to which run, found from its records; and how much one run keeps.

A run's prefixes come from its records, never from naming rules alone: the URIs in its registry item, its
run record (``input_pointers`` for a failed run) and its training job's description (the processed
channels, the output path). Each URI counts through its deepest folder named after the run id or the
training job, at least two levels deep (``raw/<run>/``, ``processed/<run>/``, ``models/<job>/``,
``datasets/<run>/`` where the CLI staged the run's file). Uploads (``incoming/``) and ``quarantine/``
(both expire by lifecycle rules), ``code/`` (shared) and the stand-in's ``_sagemaker/`` records (SageMaker
resources, not artifacts) never count, whatever a record says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from botocore.exceptions import ClientError
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.runs import RunLog
from pipeline_core.models import RegistryRecord
from pipeline_core.standin.errors import ValidationException
from pipeline_core.standin.store import Kind, RecordStore

from stepml.targets import StackOutputs

NEVER_COLLECTED = ("incoming/", "quarantine/", "code/", "_sagemaker/")
# The run record's input_pointers (written by RecordFailure) that name S3 objects or prefixes.
POINTER_URIS = (
    "dataset",
    "raw_uri",
    "processed_prefix",
    "train_uri",
    "validation_uri",
    "test_uri",
    "model_artifact",
    "evaluation_uri",
    "report_uri",
)
RECORD_KINDS = ("training-jobs", "models", "endpoint-configs")


class UnknownServingError(Exception):
    """What an endpoint serves cannot be established (its config or model cannot be read)."""


class StackTarget(Protocol):
    """Anything that gives clients and the stack's outputs (every stepml target does)."""

    @property
    def outputs(self) -> StackOutputs: ...

    def client(self, service: str) -> Any: ...


@dataclass(frozen=True)
class StoredObject:
    """One version (or delete marker, size 0) of one key."""

    key: str
    version_id: str | None
    size: int


class ResourceRecords(Protocol):
    """SageMaker's Describe* answers for training jobs, models, endpoint configs and endpoints."""

    def describe(self, kind: str, name: str) -> dict[str, Any] | None: ...

    def endpoint_names(self) -> set[str]: ...


class StandInRecords:
    """The SageMaker stand-in's records in the data bucket (local targets)."""

    def __init__(self, bucket: str, s3: Any) -> None:
        self._store = RecordStore(bucket, s3)

    def describe(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return self._store.get(cast(Kind, kind), name)
        except ValidationException:  # a name SageMaker refuses names no resource
            return None

    def endpoint_names(self) -> set[str]:
        return {r["EndpointName"] for r in self._store.list("endpoints")}


class SageMakerRecords:
    """Real SageMaker (the aws target)."""

    _CALLS = {
        "training-jobs": ("describe_training_job", "TrainingJobName"),
        "models": ("describe_model", "ModelName"),
        "endpoint-configs": ("describe_endpoint_config", "EndpointConfigName"),
        "endpoints": ("describe_endpoint", "EndpointName"),
    }

    def __init__(self, sagemaker: Any) -> None:
        self._sagemaker = sagemaker

    def describe(self, kind: str, name: str) -> dict[str, Any] | None:
        method, parameter = self._CALLS[kind]
        try:
            return dict(getattr(self._sagemaker, method)(**{parameter: name}))
        except ClientError as error:
            # SageMaker answers a missing resource with ValidationException ("Could not find ...")
            if error.response.get("Error", {}).get("Code") == "ValidationException":
                return None
            raise

    def endpoint_names(self) -> set[str]:
        return set()  # the account may hold other stacks' endpoints: the registry names this stack's


def resource_records(target: StackTarget) -> ResourceRecords:
    """Real SageMaker on the aws target, the stand-in's records on the local ones."""
    if getattr(target, "name", None) == "aws":
        return SageMakerRecords(target.client("sagemaker"))
    return StandInRecords(target.outputs.data_bucket, target.client("s3"))


def served_artifacts(records: ResourceRecords, endpoint_names: Iterable[str]) -> dict[str, str]:
    """Model artifact URI → the endpoint that serves it, or would serve it again after a rollback (the
    config it had before its last update; only the stand-in records it)."""
    served: dict[str, str] = {}
    for name in sorted(set(endpoint_names) | records.endpoint_names()):
        endpoint = records.describe("endpoints", name)
        if endpoint is None:
            continue
        previous = list(endpoint.get("PreviousEndpointConfigNames") or [])[-1:]
        for config_name, live in [(endpoint.get("EndpointConfigName"), True), *((p, False) for p in previous)]:
            config = records.describe("endpoint-configs", str(config_name)) if config_name else None
            variants = config.get("ProductionVariants", []) if config else []
            models = [records.describe("models", str(v.get("ModelName"))) for v in variants]
            if live and (config is None or None in models):
                raise UnknownServingError(
                    f"cannot tell which model endpoint {name} serves (config {config_name} or its "
                    "models cannot be read): nothing is collected"
                )
            for model in filter(None, models):
                for container in [model.get("PrimaryContainer") or {}, *model.get("Containers", [])]:
                    if container.get("ModelDataUrl"):
                        served[container["ModelDataUrl"]] = (
                            f"served by endpoint {name} (config {config_name})"
                            if live
                            else f"what endpoint {name} returns to on a rollback (config {config_name})"
                        )
    return served


def attributed_prefix(uri: str, bucket: str, names: Iterable[str]) -> str | None:
    """The deepest folder of ``uri`` named after one of ``names`` (a run id or job), two levels deep or
    more, in ``bucket`` and outside the prefixes that hold no run's artifacts; None when there is none."""
    head = f"s3://{bucket}/"
    if not uri.startswith(head) or uri[len(head) :].startswith(NEVER_COLLECTED):
        return None
    parts = uri[len(head) :].split("/")
    wanted = {n for n in names if n}
    for depth in range(len(parts) - 1, 1, -1):
        if parts[depth - 1] in wanted:
            return "/".join(parts[:depth]) + "/"
    return None


def run_prefixes(
    bucket: str, run_id: str, version: RegistryRecord | None, run: Mapping[str, Any] | None, records: ResourceRecords
) -> list[str]:
    """Every prefix the run's records attribute to it (see :func:`attributed_prefix`)."""
    uris: list[Any] = []
    pointers: Mapping[str, Any] = {}
    if version is not None:
        uris += [version.model_artifact, version.dataset_uri, version.evaluation_uri, version.report_uri]
        uris += [version.baseline_uri]  # under processed/<run>/ when this run made it (not reused from the cache)
    if run is not None:
        pointers = run.get("input_pointers") or {}
        uris += [run.get("dataset"), run.get("raw_uri"), run.get("report_uri")]
        uris += [pointers.get(k) for k in POINTER_URIS]
    job_name = version.training_job_name if version else pointers.get("training_job_name")
    job = records.describe("training-jobs", job_name) if isinstance(job_name, str) else None
    if job:
        uris += [c.get("DataSource", {}).get("S3DataSource", {}).get("S3Uri") for c in job.get("InputDataConfig", [])]
        output_path = job.get("OutputDataConfig", {}).get("S3OutputPath")
        uris += [f"{output_path.rstrip('/')}/{job_name}/" if output_path else None]
        uris += [job.get("ModelArtifacts", {}).get("S3ModelArtifacts")]
    names = [run_id, job_name if isinstance(job_name, str) else ""]
    found = {attributed_prefix(u, bucket, names) for u in uris if isinstance(u, str)}
    return sorted(p for p in found if p)


def run_id_of(version: RegistryRecord) -> str:
    """The run that registered ``version``: its execution's name (ValidateInput's run_id)."""
    return version.execution_arn.rsplit(":", 1)[-1]


def stored_objects(s3: Any, bucket: str, prefix: str) -> list[StoredObject]:
    """Every version and delete marker under ``prefix``."""
    found = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        found += [StoredObject(v["Key"], v.get("VersionId"), int(v.get("Size", 0))) for v in page.get("Versions", [])]
        found += [StoredObject(m["Key"], m.get("VersionId"), 0) for m in page.get("DeleteMarkers", [])]
    return found


@dataclass(frozen=True)
class PrefixUsage:
    """What a run keeps under one prefix: keys, stored versions (of those keys) and their bytes."""

    prefix: str
    keys: int
    versions: int
    bytes: int


def run_footprint(target: StackTarget, run_id: str, records: ResourceRecords | None = None) -> list[PrefixUsage]:
    """How much run ``run_id`` keeps, per prefix its records attribute to it, plus the stand-in's records
    of its training job, model and endpoint config (ValidateInput gives all three the job's name)."""
    bucket, s3, ddb = target.outputs.data_bucket, target.client("s3"), target.client("dynamodb")
    records = records or resource_records(target)
    run = RunLog(target.outputs.runs_table, ddb).get_run(run_id)
    registry = ModelRegistry(target.outputs.registry_table, ddb)
    model = run.get("model_name") if run else None
    version = next((v for v in registry.versions(model) if run_id_of(v) == run_id), None) if model else None
    usage = []
    for prefix in run_prefixes(bucket, run_id, version, run, records):
        found = stored_objects(s3, bucket, prefix)
        usage.append(PrefixUsage(prefix, len({o.key for o in found}), len(found), sum(o.size for o in found)))
    job = version.training_job_name if version else ((run or {}).get("input_pointers") or {}).get("training_job_name")
    standin_keys = [f"_sagemaker/{kind}/{job}.json" for kind in RECORD_KINDS] if job else []
    for key in standin_keys if isinstance(records, StandInRecords) else []:
        found = [o for o in stored_objects(s3, bucket, key) if o.key == key]
        if found:
            usage.append(PrefixUsage(key, 1, len(found), sum(o.size for o in found)))
    return usage
