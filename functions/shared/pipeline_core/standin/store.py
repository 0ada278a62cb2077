"""The stand-in's records: one JSON object per resource under ``s3://DATA_BUCKET/_sagemaker/``.

Records live in S3 rather than in memory so the stand-in behaves the same on LocalStack (each action is a
separate Lambda container) and on the embedded target (whose S3 state persists between runs). Each record
is the Describe* response of the real API, with timestamps as ISO 8601 strings because they travel as JSON.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import botocore.session
from botocore.exceptions import ClientError
from botocore.validate import ParamValidator

from pipeline_core.aws.clients import client, transient_errors_as
from pipeline_core.aws.s3 import ObjectStore, S3Uri
from pipeline_core.errors import DatasetNotFoundError
from pipeline_core.settings import require_env
from pipeline_core.standin.errors import ValidationException

Kind = Literal[
    "training-jobs", "hyper-parameter-tuning-jobs", "models", "endpoint-configs", "endpoints", "transform-jobs"
]

PREFIX = "_sagemaker"
# LocalStack's account; the handler passes the real one from the Lambda context when it has it.
DEFAULT_ACCOUNT = "000000000000"
# SageMaker's pattern for job, model, endpoint and endpoint config names (max 63 characters).
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_ARN_RESOURCE = {
    "training-jobs": "training-job",
    "hyper-parameter-tuning-jobs": "hyper-parameter-tuning-job",
    "models": "model",
    "endpoint-configs": "endpoint-config",
    "endpoints": "endpoint",
    "transform-jobs": "transform-job",
}


def now_iso() -> str:
    """The current UTC time as SageMaker's timestamps, serialised for JSON."""
    return datetime.now(UTC).isoformat()


@functools.cache
def sagemaker_service_model() -> Any:
    """SageMaker's API model as botocore ships it, loaded once per process (the embedded target's
    forkserver loads it before forking workers, so a stand-in's cold start does not parse it again)."""
    return botocore.session.get_session().get_service_model("sagemaker")


def validate_request(operation: str, request: Mapping[str, Any]) -> None:
    """Check ``request`` against SageMaker's API model for ``operation``, as boto3 would before sending.

    Catches what a real call would reject (unknown or missing fields, wrong types, too-long names), so a
    mistake in the ASL's Parameters fails on the local target too, not first on AWS.
    """
    shape = sagemaker_service_model().operation_model(operation).input_shape
    report = ParamValidator().validate(dict(request), shape)
    if report.has_errors():
        raise ValidationException(f"invalid {operation} request: {report.generate_report()}")


def check_name(kind: Kind, name: str) -> str:
    """``name`` if SageMaker accepts it (it also becomes part of an S3 key here)."""
    if not _NAME.match(name):
        raise ValidationException(
            f"{_ARN_RESOURCE[kind]} name {name!r} must match {_NAME.pattern} "
            "(letters, digits and hyphens, at most 63 characters)"
        )
    return name


def same_request(record: Mapping[str, Any], request: Mapping[str, Any]) -> bool:
    """Whether ``record`` was created by exactly ``request`` (Tags are not part of a Describe response)."""
    return all(record.get(key) == value for key, value in request.items() if key != "Tags")


class RecordStore:
    """Read and write the stand-in's records; the S3 client is injected (tests pass a moto-backed one)."""

    def __init__(
        self,
        bucket: str,
        s3_client: Any | None = None,
        region: str | None = None,
        account: str = DEFAULT_ACCOUNT,
    ) -> None:
        self.bucket = bucket
        self._s3 = s3_client or client("s3")
        self.objects = ObjectStore(self._s3)
        self.region = region or self._s3.meta.region_name or "us-east-1"
        self.account = account

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> RecordStore:
        """The store in the function's ``DATA_BUCKET``."""
        return cls(require_env("DATA_BUCKET", None if environ is None else dict(environ)), **kwargs)

    def uri(self, kind: Kind, name: str) -> str:
        return f"s3://{self.bucket}/{PREFIX}/{kind}/{check_name(kind, name)}.json"

    def arn(self, kind: Kind, name: str) -> str:
        """The resource's ARN; SageMaker lower-cases the name in ARNs."""
        return f"arn:aws:sagemaker:{self.region}:{self.account}:{_ARN_RESOURCE[kind]}/{name.lower()}"

    def get(self, kind: Kind, name: str) -> dict[str, Any] | None:
        """The record of ``name``, or None if there is none."""
        try:
            record: dict[str, Any] = json.loads(self.objects.read_bytes(self.uri(kind, name)))
        except DatasetNotFoundError:
            return None
        return record

    def put(self, kind: Kind, name: str, record: Mapping[str, Any]) -> dict[str, Any]:
        body = json.dumps(record, indent=1, sort_keys=True).encode()
        self.objects.write_bytes(self.uri(kind, name), body, "application/json")
        return dict(record)

    def delete(self, kind: Kind, name: str) -> None:
        location = S3Uri.parse(self.uri(kind, name))
        with transient_errors_as(f"deleting {location}"):
            try:
                self._s3.delete_object(Bucket=location.bucket, Key=location.key)
            except ClientError as error:
                if error.response["Error"]["Code"] not in {"NoSuchKey", "404"}:
                    raise

    def list(self, kind: Kind) -> list[dict[str, Any]]:
        """Every record of ``kind`` (one S3 read each: fine for the handful a local target holds)."""
        records = []
        for uri in self.objects.list_uris(f"s3://{self.bucket}/{PREFIX}/{kind}/"):
            if uri.endswith(".json"):
                try:
                    records.append(json.loads(self.objects.read_bytes(uri)))
                except DatasetNotFoundError:  # deleted between listing and reading
                    continue
        return records
