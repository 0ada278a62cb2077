"""Bring the state an earlier stepml kept (JSON files and quoted S3 key files) into the durable store, once.

Before the local AWS owned its state, each command saved S3 objects under ``state/s3/<bucket>/``, DynamoDB
tables as ``state/dynamodb/<table>.json`` and executions as ``state/executions/<name>.json``. The first
start of the new local AWS loads them through its own APIs (so they are recorded like any write) and moves
the old folders aside into ``state/legacy-<time>/``; a file it cannot read is named and left there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from stepml.embedded.durable import DurableStore

LEGACY_FOLDERS = ("s3", "dynamodb", "executions")


def _epoch(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return value
    return value


def migrate_legacy_state(root: Path, client: Callable[[str], Any], stack: Any, store: DurableStore) -> list[str]:
    """Load the legacy folders under ``root`` through ``client`` and move them aside; notes for the user."""
    from stepml.embedded.runtime import put_items

    present = [root / name for name in LEGACY_FOLDERS if (root / name).exists()]
    if not present:
        return []
    notes: list[str] = []
    objects = items = executions = 0
    s3 = client("s3")
    for bucket in stack.buckets.values():
        folder = root / "s3" / bucket
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            s3.put_object(Bucket=bucket, Key=unquote(path.name), Body=path.read_bytes())
            objects += 1
    for table in stack.tables.values():
        path = root / "dynamodb" / f"{table.name}.json"
        if not path.exists():
            continue
        try:
            loaded = json.loads(path.read_text())
        except ValueError as error:
            notes.append(f"{path} could not be read ({error}); its items were not brought over")
            continue
        put_items(client("dynamodb"), table.name, loaded)
        items += len(loaded)
    for path in sorted((root / "executions").glob("*.json")) if (root / "executions").is_dir() else ():
        try:
            record = json.loads(path.read_text())
            record = {k: _epoch(v) if k in {"startDate", "stopDate"} else v for k, v in record.items()}
            record["events"] = [{**e, "timestamp": _epoch(e.get("timestamp"))} for e in record.get("events", [])]
            store.put_execution(record)
            executions += 1
        except (ValueError, KeyError, TypeError) as error:
            notes.append(f"{path} could not be read ({error}); that execution was not brought over")
    moved = root / f"legacy-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    moved.mkdir(parents=True, exist_ok=True)
    for folder in present:
        os.replace(folder, moved / folder.name)
    for manifest in root.glob("s3/*.manifest.json"):
        manifest.unlink(missing_ok=True)
    notes.insert(
        0,
        f"brought over the state an earlier stepml kept: {objects} objects, {items} items, {executions} "
        f"executions (the old files are in {moved})",
    )
    return notes
