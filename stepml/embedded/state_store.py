"""Keep the embedded AWS state (S3 objects, DynamoDB items, execution records) on disk between commands.

moto keeps everything in memory; a later command (``stepml runs``, ``stepml models``, ``stepml serve``)
must see what an earlier run produced. The store talks to the embedded AWS through its public APIs only,
so it does not depend on moto's internals.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote


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

    def save_table(self, dynamodb: Any, table: str) -> int:
        self.dynamodb_dir.mkdir(parents=True, exist_ok=True)
        items = [
            item for page in dynamodb.get_paginator("scan").paginate(TableName=table) for item in page.get("Items", [])
        ]
        text = json.dumps(items, sort_keys=True)
        path = self.dynamodb_dir / f"{table}.json"
        if not path.exists() or hashlib.sha256(path.read_bytes()).digest() != hashlib.sha256(text.encode()).digest():
            path.write_text(text)
        return len(items)

    def restore_table(self, dynamodb: Any, table: str) -> int:
        path = self.dynamodb_dir / f"{table}.json"
        if not path.exists():
            return 0
        items = json.loads(path.read_text())
        for item in items:
            dynamodb.put_item(TableName=table, Item=item)
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
