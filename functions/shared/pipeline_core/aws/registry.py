"""The model registry: one DynamoDB item per (model_name, version)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from pipeline_core.aws.clients import client, transient_errors_as
from pipeline_core.aws.dynamo import from_item, to_item
from pipeline_core.errors import RegistryConflictError
from pipeline_core.models import RegistryRecord


class ModelRegistry:
    """Register model versions and find the current champion.

    Versions are monotonic per model: a new version is ``latest + 1`` written with a condition that the
    item does not exist yet, so two concurrent registrations can never take the same number (the loser
    gets RegistryConflictError, which the state machine retries).
    """

    def __init__(self, table_name: str, dynamodb_client: Any | None = None) -> None:
        self._table = table_name
        self._ddb = dynamodb_client or client("dynamodb")

    def latest_version(self, model_name: str) -> int:
        with transient_errors_as(f"reading the latest version of {model_name}"):
            answer = self._ddb.query(
                TableName=self._table,
                KeyConditionExpression="model_name = :m",
                ExpressionAttributeValues={":m": {"S": model_name}},
                ScanIndexForward=False,
                Limit=1,
                ProjectionExpression="version",
            )
        items = answer.get("Items", [])
        return int(items[0]["version"]["N"]) if items else 0

    def register_model(self, record: dict[str, Any]) -> RegistryRecord:
        """Write ``record`` as the next version of its model and return it with the version set."""
        version = self.latest_version(record["model_name"]) + 1
        stored = RegistryRecord.model_validate({**record, "version": version})
        with transient_errors_as(f"registering {stored.model_name} v{version}"):
            try:
                self._ddb.put_item(
                    TableName=self._table,
                    Item=to_item(stored.model_dump()),
                    ConditionExpression="attribute_not_exists(version)",
                )
            except ClientError as error:
                if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                    raise RegistryConflictError(
                        f"version {version} of {stored.model_name} was registered concurrently"
                    ) from error
                raise
        return stored

    def versions(self, model_name: str | None = None) -> list[RegistryRecord]:
        """Every registered version (of one model, or of all), newest first."""
        with transient_errors_as("listing the model registry"):
            if model_name:
                pages = self._ddb.get_paginator("query").paginate(
                    TableName=self._table,
                    KeyConditionExpression="model_name = :m",
                    ExpressionAttributeValues={":m": {"S": model_name}},
                    ScanIndexForward=False,
                )
            else:
                pages = self._ddb.get_paginator("scan").paginate(TableName=self._table)
            records = [RegistryRecord.model_validate(from_item(i)) for p in pages for i in p.get("Items", [])]
        return sorted(records, key=lambda r: (r.model_name, -r.version))

    def champion(self, model_name: str) -> RegistryRecord | None:
        """The newest approved version: the model the endpoint serves."""
        return next((r for r in self.versions(model_name) if r.status == "approved"), None)

    def get(self, model_name: str, version: int) -> RegistryRecord | None:
        with transient_errors_as(f"reading {model_name} v{version}"):
            item = self._ddb.get_item(
                TableName=self._table,
                Key={"model_name": {"S": model_name}, "version": {"N": str(version)}},
            ).get("Item")
        return RegistryRecord.model_validate(from_item(item)) if item else None

    def set_status(self, model_name: str, version: int, status: str) -> None:
        with transient_errors_as(f"updating {model_name} v{version}"):
            self._ddb.update_item(
                TableName=self._table,
                Key={"model_name": {"S": model_name}, "version": {"N": str(version)}},
                UpdateExpression="SET #s = :s",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":s": {"S": status}},
            )
