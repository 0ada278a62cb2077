"""The embedded target's state on disk: S3 objects and DynamoDB items survive from one command to the next."""

from __future__ import annotations

import time
from pathlib import Path

from stepml.embedded.state_store import StateStore
from tests.conftest import FakeAws


def _log_item(request_id: str, expires_at: float | str) -> dict[str, dict[str, str]]:
    return {"request_id": {"S": request_id}, "expires_at": {"N": str(expires_at)}, "rows": {"N": "1"}}


def _log_table(aws: FakeAws, name: str) -> str:
    aws.dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "request_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "request_id", "KeyType": "HASH"}],
    )
    return name


def _ids(aws: FakeAws, table: str) -> set[str]:
    items = aws.dynamodb.scan(TableName=table)["Items"]
    return {item["request_id"]["S"] for item in items}


def test_tables_round_trip_in_batches_and_drop_expired_items(aws: FakeAws, tmp_path: Path) -> None:
    table = _log_table(aws, "log-a")
    now = time.time()
    live = {f"live-{i:03d}" for i in range(61)}  # more than two BatchWriteItem calls' worth
    for request_id in live:
        aws.dynamodb.put_item(TableName=table, Item=_log_item(request_id, now + 3600))
    aws.dynamodb.put_item(TableName=table, Item=_log_item("expired", now - 1))
    not_a_number = {**_log_item("not-a-number", 0), "expires_at": {"S": "tomorrow"}}  # DynamoDB ignores it
    aws.dynamodb.put_item(TableName=table, Item=not_a_number)
    store = StateStore(tmp_path)

    assert store.save_table(aws.dynamodb, table, "expires_at") == 62
    restored_into = _log_table(aws, "log-b")
    (tmp_path / "dynamodb" / "log-a.json").rename(tmp_path / "dynamodb" / "log-b.json")
    assert store.restore_table(aws.dynamodb, restored_into, "expires_at") == 62

    assert _ids(aws, restored_into) == live | {"not-a-number"}
    stored = aws.dynamodb.get_item(TableName=restored_into, Key={"request_id": {"S": "live-007"}})["Item"]
    assert stored == _log_item("live-007", stored["expires_at"]["N"])


def test_items_that_expire_while_saved_are_not_restored(aws: FakeAws, tmp_path: Path) -> None:
    table = _log_table(aws, "log-c")
    soon = time.time() + 1
    aws.dynamodb.put_item(TableName=table, Item=_log_item("short-lived", soon))
    aws.dynamodb.put_item(TableName=table, Item=_log_item("long-lived", soon + 3600))
    store = StateStore(tmp_path)
    assert store.save_table(aws.dynamodb, table, "expires_at") == 2
    time.sleep(max(0.0, soon - time.time()) + 0.05)
    aws.dynamodb.delete_table(TableName=table)
    _log_table(aws, table)

    assert store.restore_table(aws.dynamodb, table, "expires_at") == 1
    assert _ids(aws, table) == {"long-lived"}


def test_a_table_without_ttl_keeps_everything(aws: FakeAws, tmp_path: Path) -> None:
    table = _log_table(aws, "registry-like")
    aws.dynamodb.put_item(TableName=table, Item=_log_item("old", 1))  # an attribute that is not a TTL here
    store = StateStore(tmp_path)
    assert store.save_table(aws.dynamodb, table) == 1
    aws.dynamodb.delete_table(TableName=table)
    _log_table(aws, table)
    assert store.restore_table(aws.dynamodb, table) == 1
    assert _ids(aws, table) == {"old"}


def test_objects_round_trip_with_awkward_keys_and_deletions(aws: FakeAws, tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    keys = {"models/a b/output/model.tar.gz": b"\x00\x01tar", "raw/ü%2F/x?.csv": b"a,b\n1,2\n", "gone.txt": b"x"}
    for key, body in keys.items():
        aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=body)
    assert store.save_bucket(aws.s3, aws.bucket) == 3
    assert store.save_bucket(aws.s3, aws.bucket) == 0  # unchanged objects are not written again
    aws.s3.delete_object(Bucket=aws.bucket, Key="gone.txt")
    store.save_bucket(aws.s3, aws.bucket)
    for key in keys:
        aws.s3.delete_object(Bucket=aws.bucket, Key=key)

    assert store.restore_bucket(aws.s3, aws.bucket) == 2
    listed = {o["Key"] for o in aws.s3.list_objects_v2(Bucket=aws.bucket)["Contents"]}
    assert listed == {"models/a b/output/model.tar.gz", "raw/ü%2F/x?.csv"}
    assert aws.s3.get_object(Bucket=aws.bucket, Key="raw/ü%2F/x?.csv")["Body"].read() == b"a,b\n1,2\n"
