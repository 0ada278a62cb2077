"""The local AWS's durable store: atomic writes, checked reads, recovery, and what is written through."""

from __future__ import annotations

import errno
import json
import time
from pathlib import Path
from typing import Any

import pytest

from stepml.embedded.durable import CHUNK, DurableStore, StateWriteError, atomic_write, item_key
from stepml.embedded.executions import ExecutionArchive
from stepml.embedded.recording import StateRecorder
from stepml.embedded.template import TableSpec
from tests.conftest import FakeAws


def test_objects_round_trip_and_identical_contents_share_one_file(tmp_path: Path) -> None:
    store = DurableStore(tmp_path)
    store.put_object("b", "a/x.csv", b"same", "text/csv", {"k": "v"})
    store.put_object("b", "a/y.csv", b"same")
    [x, y] = store.objects("b")
    assert (x.key, x.content_type, x.metadata, x.size) == ("a/x.csv", "text/csv", {"k": "v"}, 4)
    assert x.sha256 == y.sha256 and len(list((tmp_path / "blobs").glob("*/*"))) == 1
    assert store.read_object(x) == b"same"
    store.delete_object("b", "a/x.csv")
    assert [o.key for o in store.objects()] == ["a/y.csv"]


def test_a_damaged_or_missing_blob_is_named_and_never_returned(tmp_path: Path) -> None:
    store = DurableStore(tmp_path)
    damaged = store.put_object("b", "model.tar.gz", b"x" * 1000)
    missing = store.put_object("b", "other", b"y" * 10)
    blob = tmp_path / "blobs" / damaged.sha256[:2] / damaged.sha256
    blob.write_bytes(b"x" * 500)
    (tmp_path / "blobs" / missing.sha256[:2] / missing.sha256).unlink()
    assert store.read_object(damaged) is None and store.read_object(missing) is None
    assert any("s3://b/model.tar.gz" in n and "damaged" in n and "500 bytes" in n for n in store.notes)
    assert any("s3://b/other" in n and "missing" in n for n in store.notes)
    assert not blob.exists() and blob.with_name(f"{blob.name}.damaged").exists()


def test_items_keep_the_last_write_and_leave_out_those_past_their_ttl(tmp_path: Path) -> None:
    store = DurableStore(tmp_path)
    now = time.time()
    live = {"id": {"S": "live"}, "expires_at": {"N": str(now + 3600)}}
    gone = {"id": {"S": "gone"}, "expires_at": {"N": str(now - 1)}}
    odd = {"id": {"S": "odd"}, "expires_at": {"S": "tomorrow"}}  # DynamoDB ignores a TTL that is no number
    store.put_items("t", [(item_key({"id": i["id"]}), i) for i in (live, gone, odd)], "expires_at")
    assert sorted(i["id"]["S"] for i in store.items("t")) == ["live", "odd"]
    store.put_items("t", [(item_key({"id": {"S": "odd"}}), None)], "expires_at")
    assert [i["id"]["S"] for i in store.items("t")] == ["live"]
    assert store.drop_expired_items() == 1


def test_a_database_that_is_not_one_is_moved_aside_and_a_new_one_opened(tmp_path: Path) -> None:
    store = DurableStore(tmp_path)
    store.put_items("t", [("k", {"id": {"S": "k"}})], None)
    store.close()
    (tmp_path / "local.db").write_bytes(b"this is not SQLite" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"local.db{suffix}").unlink(missing_ok=True)
    reopened = DurableStore(tmp_path)
    assert reopened.items("t") == []
    [note] = reopened.notes
    assert "local.db was damaged (file is not a database)" in note and "lost: objects" in note
    assert len(list(tmp_path.glob("local.db.damaged-*"))) == 1


def test_a_failed_write_leaves_no_temporary_file_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "dir" / "file"

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", full)
    with pytest.raises(StateWriteError, match=r"cannot write .*file: No space left on device") as caught:
        atomic_write(target, b"data")
    assert isinstance(caught.value.__cause__, OSError) and caught.value.__cause__.errno == errno.ENOSPC
    assert list((tmp_path / "dir").iterdir()) == []


def test_the_recorder_stores_what_moto_holds_after_each_kind_of_write(aws: FakeAws, tmp_path: Path) -> None:
    store = DurableStore(tmp_path)
    table = TableSpec("Registry", aws.registry_table, [{"AttributeName": "model_name", "KeyType": "HASH"},
                      {"AttributeName": "version", "KeyType": "RANGE"}], [])  # fmt: skip
    clients = {"s3": aws.s3, "dynamodb": aws.dynamodb}
    recorder = StateRecorder(store, clients.__getitem__, {aws.bucket}, {"Registry": table})
    item = {"model_name": {"S": "iris"}, "version": {"N": "1"}, "status": {"S": "pending"}}
    aws.dynamodb.put_item(TableName=aws.registry_table, Item=item)
    update: dict[str, Any] = {
        "TableName": aws.registry_table,
        "Key": {"model_name": {"S": "iris"}, "version": {"N": "1"}},
        "UpdateExpression": "SET #s = :s",
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {":s": {"S": "approved"}},
    }
    aws.dynamodb.update_item(**update)
    recorder.sync_items(recorder.dynamodb_keys_changed("UpdateItem", update))
    assert store.items(aws.registry_table) == [{**item, "status": {"S": "approved"}}]
    batch = {"RequestItems": {aws.registry_table: [{"DeleteRequest": {"Key": update["Key"]}}], "elsewhere": []}}
    aws.dynamodb.batch_write_item(RequestItems={aws.registry_table: batch["RequestItems"][aws.registry_table]})
    recorder.sync_items(recorder.dynamodb_keys_changed("BatchWriteItem", batch))
    assert store.items(aws.registry_table) == []

    aws.put("raw/x.csv", b"a,b\n1,2\n")
    environ = {"REQUEST_METHOD": "PUT", "PATH_INFO": f"/{aws.bucket}/raw/x.csv", "HTTP_HOST": "127.0.0.1:1"}
    recorder.sync_objects(recorder.s3_keys_changed(environ, b""))
    assert [(o.key, store.read_object(o)) for o in store.objects()] == [("raw/x.csv", b"a,b\n1,2\n")]
    aws.s3.delete_objects(Bucket=aws.bucket, Delete={"Objects": [{"Key": "raw/x.csv"}]})
    body = b"<Delete><Object><Key>raw/x.csv</Key></Object></Delete>"
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": f"/{aws.bucket}", "QUERY_STRING": "delete", "HTTP_HOST": "h"}
    recorder.sync_objects(recorder.s3_keys_changed(environ, body))
    assert store.objects() == []
    # a part of a multipart upload or a tag changes no object's content
    part = {"REQUEST_METHOD": "PUT", "PATH_INFO": f"/{aws.bucket}/k", "QUERY_STRING": "partNumber=1&uploadId=u"}
    assert recorder.s3_keys_changed(part, b"") == []


def test_the_recorder_stores_each_item_as_getitem_answers_it(aws: FakeAws, tmp_path: Path) -> None:
    # read from moto's backend in this process, not through BatchGetItem: the stored item must still be
    # exactly what a client reading the table gets, whatever the attribute types
    store = DurableStore(tmp_path)
    table = TableSpec("Registry", aws.registry_table, [{"AttributeName": "model_name", "KeyType": "HASH"},
                      {"AttributeName": "version", "KeyType": "RANGE"}], [])  # fmt: skip
    recorder = StateRecorder(store, {"dynamodb": aws.dynamodb}.__getitem__, {aws.bucket}, {"Registry": table})
    key = {"model_name": {"S": "iris"}, "version": {"N": "7"}}
    item = {
        **key,
        "text": {"S": "é ✓"},
        "number": {"N": "0.819"},
        "big": {"N": "12345678901234567890"},
        "names": {"SS": ["a", "b"]},
        "numbers": {"NS": ["1", "2.5"]},
        "nested": {"M": {"inner": {"L": [{"S": "x"}, {"N": "3"}, {"BOOL": False}, {"NULL": True}]}}},
        "flag": {"BOOL": True},
        "nothing": {"NULL": True},
    }
    writes = {aws.registry_table: [{"PutRequest": {"Item": item}}]}
    aws.dynamodb.batch_write_item(RequestItems=writes)
    recorder.sync_items(recorder.dynamodb_keys_changed("BatchWriteItem", {"RequestItems": writes}))
    assert store.items(aws.registry_table) == [aws.dynamodb.get_item(TableName=aws.registry_table, Key=key)["Item"]]


def test_the_archive_pages_stored_and_live_executions_newest_first(tmp_path: Path) -> None:
    store = DurableStore(tmp_path)
    machine = "arn:aws:states:us-east-1:123456789012:stateMachine:m"
    for index in range(5):
        store.put_execution(
            {
                "executionArn": f"{machine.replace('stateMachine', 'execution')}:old-{index}",
                "stateMachineArn": machine,
                "name": f"old-{index}",
                "status": "SUCCEEDED" if index else "FAILED",
                "startDate": 1000.0 + index,
                "events": [],
            }
        )
    archive = ExecutionArchive(store, lambda _service: None, machine)
    live = [
        {"executionArn": "x:new", "stateMachineArn": machine, "name": "new", "status": "RUNNING", "startDate": 2000.0}
    ]
    first = archive.listing({"stateMachineArn": machine, "maxResults": 4}, live)
    assert [e["name"] for e in first["executions"]] == ["new", "old-4", "old-3", "old-2"]
    second = archive.listing({"stateMachineArn": machine, "maxResults": 4, "nextToken": first["nextToken"]}, live)
    assert [e["name"] for e in second["executions"]] == ["old-1", "old-0"] and "nextToken" not in second
    failed = archive.listing({"stateMachineArn": machine, "statusFilter": "FAILED"}, [])
    assert [e["name"] for e in failed["executions"]] == ["old-0"]
    # RUNNING ones left by a killed service come back ABORTED, with the reason and an ExecutionAborted event
    store.put_execution({**json.loads(json.dumps(store.execution("old-3"))), "status": "RUNNING"})
    assert archive.abort_running("killed") == ["old-3"]
    record = store.execution("old-3")
    assert record is not None and (record["status"], record["cause"]) == ("ABORTED", "killed")
    assert record["events"][-1]["type"] == "ExecutionAborted"


def test_executions_of_two_state_machines_may_share_a_name_as_on_aws(tmp_path: Path) -> None:
    """Names are unique per state machine: batch scoring's executions are kept apart from the pipeline's."""
    store = DurableStore(tmp_path)
    pipeline = "arn:aws:states:us-east-1:123456789012:stateMachine:stepml-local-PipelineStateMachine"
    batch = "arn:aws:states:us-east-1:123456789012:stateMachine:stepml-local-BatchScoringStateMachine"
    archive = ExecutionArchive(store, lambda _service: None, pipeline, other_state_machine_arns=[pipeline, batch])
    for machine in (pipeline, batch):
        arn = f"{machine.replace(':stateMachine:', ':execution:')}:same-name"
        archive.started({"stateMachineArn": machine, "input": "{}"}, {"executionArn": arn, "startDate": 1.0})
    assert archive.state_machine_arns == [pipeline, batch]
    found = {m: archive.stored_for(m, "same-name") for m in (pipeline, batch)}
    assert {m: r["stateMachineArn"] for m, r in found.items() if r} == {pipeline: pipeline, batch: batch}
    # a name alone is the pipeline's (as stored before batch scoring existed); an ARN finds its own machine's
    assert store.execution("same-name")["stateMachineArn"] == pipeline  # type: ignore[index]
    batch_arn = f"{batch.replace(':stateMachine:', ':execution:')}:same-name"
    assert archive.stored(batch_arn)["executionArn"] == batch_arn  # type: ignore[index]
    assert archive.stored_for(f"{batch}:live", "same-name") == found[batch]  # a qualified ARN names its machine
    assert [e["name"] for e in archive.listing({"stateMachineArn": batch}, [])["executions"]] == ["same-name"]
    assert sorted(archive.abort_running("stopped")) == ["same-name", "same-name"]
    assert archive.stored(batch_arn)["status"] == "ABORTED"  # type: ignore[index]


def test_a_large_content_is_streamed_in_pieces_and_an_unchanged_blob_is_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DurableStore(tmp_path)
    pieces = [bytes([n]) * 1000 for n in range(5)]
    reads: list[int] = []

    class Source:
        def read(self, size: int) -> bytes:
            reads.append(size)
            return pieces.pop(0) if pieces else b""

    stored = store.put_object_from(Source(), "b", "big", etag="e")
    assert stored.size == 5000 and all(size == CHUNK for size in reads)
    assert [(o.key, o.etag) for o in store.objects()] == [("big", "e")]
    assert list((tmp_path / "blobs").glob(".incoming.*")) == []
    opened: list[str] = []
    real_open = open

    def watched_open(*args: Any, **kwargs: Any) -> Any:
        opened.append(str(args[0]))
        return real_open(*args, **kwargs)

    monkeypatch.setattr("builtins.open", watched_open)
    assert store.checked_blob(stored) == store.blob_path(stored.sha256) and opened == []  # stat only
    # a blob changed since it was written is hashed (and left out when it no longer matches)
    blob = store.blob_path(stored.sha256)
    blob.write_bytes(b"\0" * 5000)
    assert store.checked_blob(stored) is None
    assert any("damaged" in note for note in store.notes)


def test_garbage_collection_spares_a_content_being_written_and_removes_one_a_kill_left(tmp_path: Path) -> None:
    store = DurableStore(tmp_path)
    (tmp_path / "blobs").mkdir()
    left = tmp_path / "blobs" / ".incoming.killed.tmp"
    left.write_bytes(b"half")

    class Source:
        def __init__(self) -> None:
            self.first = True

        def read(self, _size: int) -> bytes:
            if self.first:  # a collection while this content is being written
                self.first = False
                assert store.collect_garbage() == 4
                return b"data"
            return b""

    store.put_object_from(Source(), "b", "k")
    assert not left.exists() and [o.key for o in store.objects()] == ["k"]
    assert store.read_object(store.objects()[0]) == b"data"


def test_a_database_of_an_earlier_stepml_gets_the_new_columns_and_keeps_its_objects(tmp_path: Path) -> None:
    import sqlite3

    old = sqlite3.connect(tmp_path / "local.db")
    old.execute(
        "CREATE TABLE objects (bucket TEXT NOT NULL, key TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,"
        " content_type TEXT, metadata TEXT NOT NULL, last_modified REAL NOT NULL, PRIMARY KEY (bucket, key))"
    )
    old.execute("INSERT INTO objects VALUES ('b', 'k', 'ab', 1, NULL, '{}', 0)")
    old.commit()
    old.close()
    [stored] = DurableStore(tmp_path).objects()
    assert (stored.key, stored.etag) == ("k", None)


def test_garbage_collection_keeps_a_content_the_caller_still_reads(tmp_path: Path) -> None:
    store = DurableStore(tmp_path)
    old = store.put_object("b", "k", b"old version")  # moto still serves it as a noncurrent version
    store.put_object("b", "k", b"new version")
    assert store.collect_garbage(lambda: {old.sha256}) == 0 and store.blob_path(old.sha256).exists()
    assert store.collect_garbage() == len(b"old version") and not store.blob_path(old.sha256).exists()


def test_the_sweep_stores_what_moto_holds_as_ended_and_agrees_with_list_executions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep reads moto's engine in process; it finds exactly the ended executions ListExecutions reports,
    stores each once, and leaves a running one alone."""
    import boto3
    from moto import mock_aws
    from moto.core.config import default_user_config

    from stepml.embedded.executions import ended_in_moto
    from stepml.embedded.template import ACCOUNT_ID, REGION

    definition = {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "SecondsPath": "$.wait", "End": True}}}
    monkeypatch.setitem(default_user_config, "stepfunctions", {"execute_state_machine": True})
    with mock_aws():
        sfn = boto3.client("stepfunctions", region_name=REGION)
        role = f"arn:aws:iam::{ACCOUNT_ID}:role/r"
        machines = [
            sfn.create_state_machine(name=n, definition=json.dumps(definition), roleArn=role)["stateMachineArn"]
            for n in ("pipeline", "other", "unwatched")
        ]
        for machine, name, wait in [(machines[0], "quick", 0), (machines[1], "quick", 0), (machines[0], "long", 60)]:
            sfn.start_execution(stateMachineArn=machine, name=name, input=json.dumps({"wait": wait}))
        sfn.start_execution(stateMachineArn=machines[2], name="quick", input='{"wait": 0}')
        deadline = time.monotonic() + 30
        listed: set[str] = set()
        while time.monotonic() < deadline and len(listed) < 2:
            time.sleep(0.05)
            listed = {
                e["executionArn"]
                for m in machines[:2]
                for e in sfn.list_executions(stateMachineArn=m)["executions"]
                if e["status"] == "SUCCEEDED"
            }
        assert len(listed) == 2
        assert set(ended_in_moto(machines[:2])) == listed  # neither the running one nor another machine's

        store = DurableStore(tmp_path)
        archive = ExecutionArchive(
            store,
            lambda service: boto3.client(service, region_name=REGION),
            machines[0],
            other_state_machine_arns=machines[:2],
        )
        assert archive.sweep() == 2
        assert archive.sweep() == 0  # stored once
        assert {r["executionArn"] for r in store.executions()} == listed
        assert {r["status"] for r in store.executions()} == {"SUCCEEDED"}
        sfn.stop_execution(executionArn=machines[0].replace(":stateMachine:", ":execution:") + ":long")


def test_a_held_blob_is_spared_by_garbage_collection_and_released_once_nothing_reads_it(tmp_path: Path) -> None:
    # A streamed UploadPart's body is a blob no object points at: kept while the request gives it to moto's part,
    # then while the part reads it; its upload's completion or abort releases it, unless an object holds it.
    store = DurableStore(tmp_path / "state")
    with store.held_blob(iter([b"part ", b"one"])) as (path, size):
        assert (path.read_bytes(), size) == (b"part one", 8)
        store.collect_garbage()
        assert path.exists()
    store.release({path.name}, lambda: {path.name})
    assert path.exists()  # a part still reads it
    kept = store.put_object("b", "k", b"part one")
    store.release({path.name})
    assert path.exists() and store.read_object(kept) == b"part one"  # an object holds the same content
    store.delete_object("b", "k")
    store.release({path.name})
    assert not path.exists()
