"""The step cache table: one item per step result, keyed by the hash of what determined it.

An item holds the step's state result as JSON text (not a DynamoDB map): it goes back into the state as it
came out, floats and all, and a DynamoDB item's 400 KB limit is above the 256 KiB a state result may have.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pipeline_core.aws.clients import client, transient_errors_as
from pipeline_core.models import CacheEntry


def _item(entry: CacheEntry) -> dict[str, Any]:
    return {
        "cache_key": {"S": entry.cache_key},
        "step": {"S": entry.step},
        "result": {"S": json.dumps(entry.result, sort_keys=True)},
        "outputs": {"L": [{"S": uri} for uri in entry.outputs]},
        "run_id": {"S": entry.run_id},
        "execution_arn": {"S": entry.execution_arn},
        "model_name": {"S": entry.model_name},
        "created_at": {"S": entry.created_at},
        "expires_at": {"N": str(entry.expires_at)},
        "key_parts": {"S": json.dumps(entry.key_parts, sort_keys=True)},
    }


def _entry(item: dict[str, Any]) -> CacheEntry:
    return CacheEntry(
        cache_key=item["cache_key"]["S"],
        step=item["step"]["S"],
        result=json.loads(item["result"]["S"]),
        outputs=[value["S"] for value in item.get("outputs", {}).get("L", [])],
        run_id=item["run_id"]["S"],
        execution_arn=item["execution_arn"]["S"],
        model_name=item["model_name"]["S"],
        created_at=item["created_at"]["S"],
        expires_at=int(item["expires_at"]["N"]),
        key_parts=json.loads(item["key_parts"]["S"]) if "key_parts" in item else {},
    )


class StepCache:
    """Get, put, list and delete step results; the table's key is ``cache_key``."""

    def __init__(self, table_name: str, dynamodb_client: Any | None = None) -> None:
        self._table = table_name
        self._ddb = dynamodb_client or client("dynamodb")

    def get(self, key: str) -> CacheEntry | None:
        """The entry under ``key``, expired or not (DynamoDB's TTL deletes lazily: the caller checks)."""
        with transient_errors_as(f"reading step cache entry {key[:12]}"):
            item = self._ddb.get_item(TableName=self._table, Key={"cache_key": {"S": key}}, ConsistentRead=True)
        found = item.get("Item")
        return _entry(found) if found else None

    def put(self, entry: CacheEntry) -> None:
        """Store ``entry``, replacing any under its key.

        Unconditional on purpose: two runs that computed the same key at once both produced a valid result
        (the key is everything that determines it), and a put replaces an item whole, so the last one wins
        and no reader ever sees a mix of the two. An entry whose outputs were deleted is replaced the same way.
        """
        with transient_errors_as(f"storing step cache entry {entry.cache_key[:12]}"):
            self._ddb.put_item(TableName=self._table, Item=_item(entry))

    def entries(self, step: str | None = None, model_name: str | None = None) -> list[CacheEntry]:
        """Every entry (newest first), optionally of one step or model. A scan: the table is small."""
        with transient_errors_as("listing the step cache"):
            pages = self._ddb.get_paginator("scan").paginate(TableName=self._table)
            found = [_entry(item) for page in pages for item in page.get("Items", [])]
        chosen = [
            e for e in found if (step is None or e.step == step) and (model_name is None or e.model_name == model_name)
        ]
        return sorted(chosen, key=lambda e: e.created_at, reverse=True)

    def delete(self, key: str) -> None:
        with transient_errors_as(f"deleting step cache entry {key[:12]}"):
            self._ddb.delete_item(TableName=self._table, Key={"cache_key": {"S": key}})

    def clear(self, model_name: str | None = None, step: str | None = None) -> int:
        """Delete the entries of ``model_name`` and/or ``step`` (all when both are None); how many went."""
        chosen = self.entries(step=step, model_name=model_name)
        for entry in chosen:
            self.delete(entry.cache_key)
        return len(chosen)


def is_expired(entry: CacheEntry, now: float | None = None) -> bool:
    """Whether ``entry`` is past its TTL (DynamoDB may still return it for up to a few days)."""
    return entry.expires_at <= (time.time() if now is None else now)
