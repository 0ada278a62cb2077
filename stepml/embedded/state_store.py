"""Keep the embedded AWS state (S3 objects, DynamoDB items, execution records) on disk between commands.

moto keeps everything in memory; a later command (``stepml runs``, ``stepml models``, ``stepml serve``)
must see what an earlier run produced. The store talks to the embedded AWS through its public APIs only,
so it does not depend on moto's internals.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

# DynamoDB's BatchWriteItem takes at most 25 put or delete requests.
BATCH_WRITE_LIMIT = 25


def _expired(item: dict[str, Any], ttl_attribute: str, now: float) -> bool:
    """Whether a DynamoDB item's TTL attribute (epoch seconds, type N) lies in the past."""
    value = item.get(ttl_attribute, {}).get("N")
    try:
        return value is not None and float(value) < now
    except ValueError:  # DynamoDB ignores a TTL attribute that is not a number; so do we
        return False


def _unexpired(items: list[dict[str, Any]], ttl_attribute: str | None) -> list[dict[str, Any]]:
    """``items`` without those past their TTL (all of them when the table has no TTL attribute)."""
    if not ttl_attribute:
        return items
    now = time.time()
    return [item for item in items if not _expired(item, ttl_attribute, now)]


class StateStore:
    """Save and restore buckets and tables under ``root`` (``s3/<bucket>/...``, ``dynamodb/<table>.json``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.s3_dir = root / "s3"
        self.dynamodb_dir = root / "dynamodb"
        self.executions_dir = root / "executions"

    # S3 keys may hold characters a file system dislikes; each key becomes one quoted file name.
    @staticmethod
    def _file_for(bucket_dir: Path, key: str) -> Path:
        return bucket_dir / quote(key, safe="")

    def save_bucket(self, s3: Any, bucket: str) -> int:
        bucket_dir = self.s3_dir / bucket
        bucket_dir.mkdir(parents=True, exist_ok=True)
        manifest_path = bucket_dir.with_suffix(".manifest.json")
        manifest: dict[str, str] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        seen: dict[str, str] = {}
        written = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                key, etag = item["Key"], item["ETag"]
                seen[key] = etag
                target = self._file_for(bucket_dir, key)
                if manifest.get(key) == etag and target.exists():
                    continue  # unchanged since the last save
                target.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
                written += 1
        for key in set(manifest) - set(seen):
            self._file_for(bucket_dir, key).unlink(missing_ok=True)
        manifest_path.write_text(json.dumps(seen, indent=0, sort_keys=True))
        return written

    def restore_bucket(self, s3: Any, bucket: str) -> int:
        bucket_dir = self.s3_dir / bucket
        if not bucket_dir.is_dir():
            return 0
        count = 0
        for path in sorted(bucket_dir.iterdir()):
            s3.put_object(Bucket=bucket, Key=unquote(path.name), Body=path.read_bytes())
            count += 1
        return count

    def save_table(self, dynamodb: Any, table: str, ttl_attribute: str | None = None) -> int:
        """Write the table's items to disk; items past their TTL are left out, as DynamoDB deletes them."""
        self.dynamodb_dir.mkdir(parents=True, exist_ok=True)
        items = [
            item for page in dynamodb.get_paginator("scan").paginate(TableName=table) for item in page.get("Items", [])
        ]
        items = _unexpired(items, ttl_attribute)
        text = json.dumps(items, sort_keys=True)
        path = self.dynamodb_dir / f"{table}.json"
        if not path.exists() or hashlib.sha256(path.read_bytes()).digest() != hashlib.sha256(text.encode()).digest():
            path.write_text(text)
        return len(items)

    def restore_table(self, dynamodb: Any, table: str, ttl_attribute: str | None = None) -> int:
        """Put the saved items back (those past their TTL are skipped), 25 per BatchWriteItem call."""
        path = self.dynamodb_dir / f"{table}.json"
        if not path.exists():
            return 0
        items = json.loads(path.read_text())
        items = _unexpired(items, ttl_attribute)
        # One request per item made a start-up with a long prediction log take minutes; a batch is
        # DynamoDB's limit of 25 puts.
        for start in range(0, len(items), BATCH_WRITE_LIMIT):
            requests = [{"PutRequest": {"Item": item}} for item in items[start : start + BATCH_WRITE_LIMIT]]
            pending: dict[str, Any] = {table: requests}
            while pending:
                answer = dynamodb.batch_write_item(RequestItems=pending)
                pending = answer.get("UnprocessedItems") or {}
        return len(items)

    def save_execution(self, name: str, record: dict[str, Any]) -> Path:
        """Keep an execution's description and history (moto forgets executions when the process ends)."""
        self.executions_dir.mkdir(parents=True, exist_ok=True)
        path = self.executions_dir / f"{name}.json"
        path.write_text(json.dumps(record, indent=1, default=str))
        return path

    def executions(self) -> list[dict[str, Any]]:
        if not self.executions_dir.is_dir():
            return []
        records = [json.loads(p.read_text()) for p in self.executions_dir.glob("*.json")]
        return sorted(records, key=lambda r: str(r.get("startDate", "")), reverse=True)

    def execution(self, name: str) -> dict[str, Any] | None:
        path = self.executions_dir / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def wipe(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
