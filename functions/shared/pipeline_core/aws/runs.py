"""Run records: one DynamoDB item per execution, from Ingest to success or failure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipeline_core.aws.clients import client, transient_errors_as
from pipeline_core.aws.dynamo import from_item, to_item


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunLog:
    """Record what each run did; the table's key is ``run_id`` (the execution name)."""

    def __init__(self, table_name: str, dynamodb_client: Any | None = None) -> None:
        self._table = table_name
        self._ddb = dynamodb_client or client("dynamodb")

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set ``fields`` on the run's record, creating it if needed (an upsert, so retries are safe)."""
        fields = {k: v for k, v in fields.items() if v is not None}
        fields["updated_at"] = utc_now()
        item = to_item(fields)
        names = {f"#f{i}": name for i, name in enumerate(item)}
        values = {f":v{i}": value for i, value in enumerate(item.values())}
        assignments = ", ".join(f"#f{i} = :v{i}" for i in range(len(item)))
        with transient_errors_as(f"updating run {run_id}"):
            self._ddb.update_item(
                TableName=self._table,
                Key={"run_id": {"S": run_id}},
                UpdateExpression=f"SET {assignments}",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with transient_errors_as(f"reading run {run_id}"):
            item = self._ddb.get_item(TableName=self._table, Key={"run_id": {"S": run_id}}).get("Item")
        return from_item(item) if item else None

    def runs(self) -> list[dict[str, Any]]:
        with transient_errors_as("listing runs"):
            pages = self._ddb.get_paginator("scan").paginate(TableName=self._table)
            records = [from_item(i) for p in pages for i in p.get("Items", [])]
        return sorted(records, key=lambda r: str(r.get("started_at", "")), reverse=True)
