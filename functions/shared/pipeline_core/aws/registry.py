"""The model registry: one DynamoDB item per (model_name, version), and each model's deploy lease.

Versions start at 1. The item at version 0 (``LEASE_VERSION``) is not a model version: it holds the
model's deploy lease, which lets one execution at a time change the model's endpoint and register the
version it deployed (see :meth:`ModelRegistry.acquire_deploy_lease`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from pipeline_core.aws.clients import client, transient_errors_as
from pipeline_core.aws.dynamo import from_item, to_item
from pipeline_core.errors import ApprovalStateError, DeployLeaseBusyError, RegistryConflictError
from pipeline_core.models import RegistryRecord

LEASE_VERSION = 0
# The task token a pending_approval version's run waits on: an item attribute outside RegistryRecord, so that
# listings (`stepml models --json`) do not print it; removed when the version is approved or rejected.
APPROVAL_TOKEN = "approval_task_token"
PENDING_APPROVAL = "pending_approval"


def is_model_version(item: dict[str, Any]) -> bool:
    """Whether a raw registry item (DynamoDB attribute values) is a model version, not a deploy lease."""
    return int(item.get("version", {}).get("N", LEASE_VERSION)) != LEASE_VERSION


@dataclass(frozen=True)
class DeployLease:
    """Who may change a model's endpoint now, and until when (epoch seconds)."""

    model_name: str
    holder: str
    acquired_at: str
    expires_at: int


def _lease_of(item: dict[str, Any]) -> DeployLease | None:
    """The deploy lease a raw lease item (DynamoDB attribute values) holds, if it has a holder."""
    if "lease_holder" not in item:
        return None
    return DeployLease(
        item["model_name"]["S"],
        item["lease_holder"]["S"],
        item.get("lease_acquired_at", {}).get("S", "?"),
        int(item.get("lease_expires_at", {}).get("N", "0")),
    )


def _conditional_check_failed(error: ClientError) -> bool:
    return bool(error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


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

    def _lease_key(self, model_name: str) -> dict[str, Any]:
        return {"model_name": {"S": model_name}, "version": {"N": str(LEASE_VERSION)}}

    def acquire_deploy_lease(
        self, model_name: str, holder: str, lease_seconds: int, now: float | None = None
    ) -> DeployLease:
        """Take ``model_name``'s deploy lease for ``holder`` (an execution ARN), or raise DeployLeaseBusyError.

        One conditional write: free, expired, or already ``holder``'s (a retried acquire keeps it).
        """
        moment = time.time() if now is None else now
        lease = DeployLease(
            model_name,
            holder,
            datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds"),
            int(moment) + lease_seconds,
        )
        with transient_errors_as(f"taking the deploy lease of {model_name}"):
            try:
                self._ddb.update_item(
                    TableName=self._table,
                    Key=self._lease_key(model_name),
                    UpdateExpression="SET lease_holder = :h, lease_acquired_at = :a, lease_expires_at = :e",
                    ConditionExpression=(
                        "attribute_not_exists(lease_holder) OR lease_holder = :h OR lease_expires_at < :now"
                    ),
                    ExpressionAttributeValues={
                        ":h": {"S": holder},
                        ":a": {"S": lease.acquired_at},
                        ":e": {"N": str(lease.expires_at)},
                        ":now": {"N": str(int(moment))},
                    },
                )
            except ClientError as error:
                if not _conditional_check_failed(error):
                    raise
                current = self.deploy_lease(model_name)
                held_by = (
                    f"execution {current.holder} (since {current.acquired_at}, lease until "
                    f"{datetime.fromtimestamp(current.expires_at, UTC).isoformat(timespec='seconds')})"
                    if current
                    else "another execution"
                )
                raise DeployLeaseBusyError(
                    f"the endpoint of model {model_name} is being changed by {held_by}; this run waits its turn"
                ) from error
        return lease

    def deploy_lease(self, model_name: str) -> DeployLease | None:
        """The current holder of ``model_name``'s deploy lease, if any (expired or not)."""
        with transient_errors_as(f"reading the deploy lease of {model_name}"):
            item = self._ddb.get_item(TableName=self._table, Key=self._lease_key(model_name)).get("Item")
        return _lease_of(item) if item else None

    def release_deploy_lease(self, model_name: str, holder: str) -> bool:
        """Give back ``model_name``'s deploy lease if ``holder`` has it; False if it did not (nothing done)."""
        with transient_errors_as(f"releasing the deploy lease of {model_name}"):
            try:
                self._ddb.update_item(
                    TableName=self._table,
                    Key=self._lease_key(model_name),
                    UpdateExpression="REMOVE lease_holder, lease_acquired_at, lease_expires_at",
                    ConditionExpression="lease_holder = :h",
                    ExpressionAttributeValues={":h": {"S": holder}},
                )
            except ClientError as error:
                if _conditional_check_failed(error):
                    return False
                raise
        return True

    def deploy_leases(self) -> list[DeployLease]:
        """Every model's deploy lease that has a holder."""
        with transient_errors_as("listing deploy leases"):
            pages = self._ddb.get_paginator("scan").paginate(
                TableName=self._table,
                FilterExpression="version = :lease AND attribute_exists(lease_holder)",
                ExpressionAttributeValues={":lease": {"N": str(LEASE_VERSION)}},
            )
            leases = [_lease_of(i) for p in pages for i in p.get("Items", [])]
        return [lease for lease in leases if lease is not None]

    def versions(self, model_name: str | None = None, *, consistent: bool = False) -> list[RegistryRecord]:
        """Every registered version (of one model, or of all), newest first.

        ``consistent``: a strongly consistent read, which sees every write that succeeded before it (a default
        DynamoDB read may miss one made in the last second or so).
        """
        with transient_errors_as("listing the model registry"):
            if model_name:
                pages = self._ddb.get_paginator("query").paginate(
                    TableName=self._table,
                    KeyConditionExpression="model_name = :m",
                    ExpressionAttributeValues={":m": {"S": model_name}},
                    ScanIndexForward=False,
                    ConsistentRead=consistent,
                )
            else:
                pages = self._ddb.get_paginator("scan").paginate(TableName=self._table, ConsistentRead=consistent)
            items = [i for p in pages for i in p.get("Items", []) if is_model_version(i)]
            records = [RegistryRecord.model_validate(from_item(i)) for i in items]
        return sorted(records, key=lambda r: (r.model_name, -r.version))

    def champion(self, model_name: str, *, consistent: bool = False) -> RegistryRecord | None:
        """The newest approved version: the model the endpoint serves (``consistent``: see :meth:`versions`)."""
        return next((r for r in self.versions(model_name, consistent=consistent) if r.status == "approved"), None)

    def get(self, model_name: str, version: int) -> RegistryRecord | None:
        if version == LEASE_VERSION:
            return None
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

    def await_approval(self, model_name: str, version: int, task_token: str, approval: dict[str, Any]) -> None:
        """Keep on a pending_approval version the task token its run waits on (the newest attempt's: a retried
        RequestApproval gets a new one) and the approval request; ApprovalStateError if it is not pending."""
        with transient_errors_as(f"recording the approval request of {model_name} v{version}"):
            try:
                self._ddb.update_item(
                    TableName=self._table,
                    Key={"model_name": {"S": model_name}, "version": {"N": str(version)}},
                    UpdateExpression=f"SET {APPROVAL_TOKEN} = :t, approval = :a",
                    ConditionExpression="#s = :pending",
                    ExpressionAttributeNames={"#s": "status"},
                    ExpressionAttributeValues={
                        ":t": {"S": task_token},
                        ":a": to_item({"a": approval})["a"],
                        ":pending": {"S": PENDING_APPROVAL},
                    },
                )
            except ClientError as error:
                if not _conditional_check_failed(error):
                    raise
                raise ApprovalStateError(
                    f"{model_name} v{version} is no longer pending_approval: its approval request cannot be renewed"
                ) from error

    def approval_token(self, model_name: str, version: int) -> str | None:
        """The task token the run of a pending_approval version waits on (a strongly consistent read)."""
        with transient_errors_as(f"reading the approval token of {model_name} v{version}"):
            item = self._ddb.get_item(
                TableName=self._table,
                Key={"model_name": {"S": model_name}, "version": {"N": str(version)}},
                ProjectionExpression=APPROVAL_TOKEN,
                ConsistentRead=True,
            ).get("Item")
        return str(item[APPROVAL_TOKEN]["S"]) if item and APPROVAL_TOKEN in item else None

    def settle_approval(
        self, model_name: str, version: int, status: str, fields: dict[str, Any], task_token: str | None = None
    ) -> RegistryRecord | None:
        """Turn a pending_approval version into ``status`` with ``fields`` (None values left as they are) and
        forget its task token; None (nothing written) if it is not pending_approval, or, with ``task_token``,
        if its run no longer waits on that token."""
        values = {k: v for k, v in fields.items() if v is not None}
        item = to_item(values)
        names = {"#s": "status", **{f"#f{i}": name for i, name in enumerate(item)}}
        expression = {":s": {"S": status}, ":pending": {"S": PENDING_APPROVAL}}
        expression.update({f":v{i}": value for i, value in enumerate(item.values())})
        condition = "#s = :pending"
        if task_token is not None:
            condition += f" AND {APPROVAL_TOKEN} = :t"
            expression[":t"] = {"S": task_token}
        assignments = ", ".join(["#s = :s", *(f"#f{i} = :v{i}" for i in range(len(item)))])
        with transient_errors_as(f"settling the approval of {model_name} v{version}"):
            try:
                answer = self._ddb.update_item(
                    TableName=self._table,
                    Key={"model_name": {"S": model_name}, "version": {"N": str(version)}},
                    UpdateExpression=f"SET {assignments} REMOVE {APPROVAL_TOKEN}",
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=expression,
                    ReturnValues="ALL_NEW",
                )
            except ClientError as error:
                if _conditional_check_failed(error):
                    return None
                raise
        return RegistryRecord.model_validate(from_item(answer["Attributes"]))
