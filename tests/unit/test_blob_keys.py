"""moto's S3 objects backed by the durable store's content files (stepml.embedded.blob_keys)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepml.embedded.blob_keys import BlobValue, back_with_blob, current_key, is_backed, register
from stepml.embedded.durable import DurableStore
from stepml.embedded.recording import StateRecorder
from tests.conftest import FakeAws


def test_a_blob_value_reads_its_range_of_the_file_and_a_write_gives_moto_its_own_buffer(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"0123456789")
    value = BlobValue(path, 2, 5, max_buffer_size=1024)
    assert value.read() == b"23456" and value.read() == b""
    value.seek(1)
    assert value.read(2) == b"34" and value.tell() == 3
    value.seek(0)
    value.truncate()  # what moto's value setter does
    value.write(b"new")
    value.seek(0)
    assert value.read() == b"new" and path.read_bytes() == b"0123456789"
    path.write_bytes(b"01")
    with pytest.raises(OSError, match="shorter than the object"):
        BlobValue(path, 0, 10, 1024).read()


def test_the_recorder_backs_moto_s_object_with_the_stored_file_and_a_restore_reads_none(
    aws: FakeAws, tmp_path: Path
) -> None:
    store = DurableStore(tmp_path)
    recorder = StateRecorder(store, lambda _service: None, {aws.bucket}, {})
    content = b"a,b\n" + b"1,2\n" * 3_000_000  # 12 MB: moto would spill it to /tmp
    aws.s3.put_object(Bucket=aws.bucket, Key="raw/x.csv", Body=content, ContentType="text/csv", Metadata={"m": "v"})
    recorder.sync_objects([(aws.bucket, "raw/x.csv")])
    key = current_key(aws.bucket, "raw/x.csv")
    assert key is not None and is_backed(key)
    [stored] = store.objects()
    assert (stored.content_type, stored.metadata, stored.size) == ("text/csv", {"m": "v"}, len(content))
    answer = aws.s3.get_object(Bucket=aws.bucket, Key="raw/x.csv")
    assert answer["Body"].read() == content and answer["ETag"] == f'"{stored.etag}"'

    # a restore into an empty bucket: registered from the row, read from the file on GetObject
    aws.s3.delete_object(Bucket=aws.bucket, Key="raw/x.csv")
    register(stored, store.blob_path(stored.sha256))
    restored = aws.s3.get_object(Bucket=aws.bucket, Key="raw/x.csv")
    assert restored["Body"].read() == content
    assert (restored["ContentType"], restored["Metadata"], restored["ETag"]) == ("text/csv", {"m": "v"}, answer["ETag"])


def test_a_completed_multipart_upload_s_parts_read_their_ranges_of_the_file(aws: FakeAws, tmp_path: Path) -> None:
    store = DurableStore(tmp_path)
    recorder = StateRecorder(store, lambda _service: None, {aws.bucket}, {})
    parts = [bytes([65 + n]) * (5 << 20) for n in range(2)] + [b"tail"]
    upload = aws.s3.create_multipart_upload(Bucket=aws.bucket, Key="m")["UploadId"]
    etags = [
        aws.s3.upload_part(Bucket=aws.bucket, Key="m", UploadId=upload, PartNumber=n + 1, Body=part)["ETag"]
        for n, part in enumerate(parts)
    ]
    aws.s3.complete_multipart_upload(
        Bucket=aws.bucket, Key="m", UploadId=upload,
        MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n + 1} for n, e in enumerate(etags)]},
    )  # fmt: skip
    recorder.sync_objects([(aws.bucket, "m")])
    key = current_key(aws.bucket, "m")
    assert key is not None and is_backed(key)
    assert all(isinstance(part._value_buffer, BlobValue) for part in key.multipart.parts.values())
    assert [key.multipart.parts[n].value for n in (1, 2, 3)] == parts
    assert aws.s3.get_object(Bucket=aws.bucket, Key="m")["Body"].read() == b"".join(parts)
    back_with_blob(key, store.blob_path(store.objects()[0].sha256), key.size)  # again: idempotent
    assert aws.s3.get_object(Bucket=aws.bucket, Key="m")["Body"].read() == b"".join(parts)


def test_the_blobs_in_use_include_noncurrent_versions(aws: FakeAws, tmp_path: Path) -> None:
    from stepml.embedded.blob_keys import blobs_in_use

    store = DurableStore(tmp_path)
    recorder = StateRecorder(store, lambda _service: None, {aws.bucket}, {})
    aws.s3.put_bucket_versioning(Bucket=aws.bucket, VersioningConfiguration={"Status": "Enabled"})
    digests = []
    for content in (b"first", b"second"):
        aws.s3.put_object(Bucket=aws.bucket, Key="k", Body=content)
        recorder.sync_objects([(aws.bucket, "k")])
        digests.append(store.objects()[0].sha256)
    assert set(digests) <= blobs_in_use()
    store.collect_garbage(blobs_in_use)
    [noncurrent] = [v for v in aws.s3.list_object_versions(Bucket=aws.bucket)["Versions"] if not v["IsLatest"]]
    kept = aws.s3.get_object(Bucket=aws.bucket, Key="k", VersionId=noncurrent["VersionId"])
    assert kept["Body"].read() == b"first"
