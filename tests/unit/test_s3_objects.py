"""Large objects read, copied and joined without their content in memory (stepml.embedded.s3_objects): the
answers are moto's own, byte for byte and header for header."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from stepml.embedded import s3_objects
from stepml.embedded.blob_keys import BlobValue, back_with_blob, current_key
from stepml.embedded.s3_objects import BlobContent, PartsValue, complete, install, lazy_read, reads_one_object
from tests.conftest import FakeAws

install()

CONTENT = bytes(range(256)) * 12_289  # 3 MiB and a bit: not a multiple of the 1 MiB pieces
SIZE = len(CONTENT)


@pytest.fixture
def server() -> Client:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    return Client(DomainDispatcherApplication(create_backend_app))


def _answer(server: Client, path: str, headers: dict[str, str], lazy: bool) -> tuple[int, dict[str, str], bytes]:
    with lazy_read() if lazy else contextlib.nullcontext():
        response = server.get(path, headers=headers)
        if lazy:  # the one read was taken as a view of the blob (or there was no read: 304, 412, 416)
            assert not getattr(s3_objects._pending, "lazy", False) or response.status_code >= 300
    kept = {name: value for name, value in response.headers.items() if name.lower() != "x-amzn-requestid"}
    return response.status_code, kept, response.get_data()


def _stored(aws: FakeAws, tmp_path: Path, key: str, content: bytes = CONTENT, **extra: Any) -> Any:
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=content, **extra)
    blob = tmp_path / hashlib.sha256(content).hexdigest()
    blob.write_bytes(content)
    found = current_key(aws.bucket, key)
    assert found is not None
    found.etag  # noqa: B018 - moto's ETag, computed while moto still holds the bytes
    return found, blob


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Range": "bytes=0-9"},
        {"Range": "bytes=1048570-"},
        {"Range": "bytes=-100"},
        {"Range": f"bytes=-{SIZE + 5}"},
        {"Range": "bytes=10-99999999"},
        {"Range": "bytes=5-2"},  # S3 treats it as no range
        {"Range": "bytes=0-0,5-9"},  # several ranges: the whole object, as moto answers
        {"Range": "bytes=abc"},
        {"Range": "bytes=-0"},  # unsatisfiable: 416 InvalidRange
        {"Range": f"bytes={SIZE}-"},
        {"x-amz-checksum-mode": "ENABLED"},
        {"x-amz-checksum-mode": "ENABLED", "Range": "bytes=3-30"},
        {"If-None-Match": "ETAG"},
        {"If-Match": '"nope"'},
    ],
)
def test_a_get_of_a_stored_object_is_moto_s_answer_with_the_body_read_from_the_blob(
    aws: FakeAws, tmp_path: Path, server: Client, headers: dict[str, str]
) -> None:
    key, blob = _stored(
        aws, tmp_path, "big.bin", ContentType="text/csv", Metadata={"m": "v"}, ChecksumAlgorithm="SHA256"
    )
    headers = {name: value.replace("ETAG", key.etag) for name, value in headers.items()}
    path = f"/{aws.bucket}/big.bin"
    expected = _answer(server, path, headers, lazy=False)  # moto's own, from its buffer
    back_with_blob(key, blob, SIZE)
    assert _answer(server, path, headers, lazy=True) == expected
    if "Range" in headers and expected[0] == 206:
        assert len(expected[2]) < SIZE


@pytest.mark.parametrize(
    "query", ["?versionId=VERSION", "?partNumber=1", "?response-content-type=x%2Fy&response-cache-control=no-cache"]
)
def test_a_get_with_a_version_part_number_or_header_overrides_is_moto_s_answer(
    aws: FakeAws, tmp_path: Path, server: Client, query: str
) -> None:
    aws.s3.put_bucket_versioning(Bucket=aws.bucket, VersioningConfiguration={"Status": "Enabled"})
    key, blob = _stored(aws, tmp_path, "v.bin")
    path = f"/{aws.bucket}/v.bin{query.replace('VERSION', key.version_id)}"
    expected = _answer(server, path, {}, lazy=False)
    back_with_blob(key, blob, SIZE)
    assert _answer(server, path, {}, lazy=True) == expected


def test_the_view_is_taken_once_and_only_of_a_blob_backed_object(aws: FakeAws, tmp_path: Path) -> None:
    key, blob = _stored(aws, tmp_path, "k")
    with lazy_read():
        assert key.value == CONTENT  # moto's buffer: bytes, as before
    back_with_blob(key, blob, SIZE)
    with lazy_read():
        view = key.value
        assert isinstance(view, BlobContent) and key.value == CONTENT  # one view, then bytes again
    assert b"".join(view) == CONTENT and b"".join(view[1_048_570:2_097_200]) == CONTENT[1_048_570:2_097_200]
    assert len(view[-10:]) == 10 and not view[SIZE:]
    assert key.value == CONTENT


def test_a_copy_of_a_stored_object_is_a_view_of_the_same_blob_with_moto_s_metadata_and_etag(
    aws: FakeAws, tmp_path: Path
) -> None:
    key, blob = _stored(aws, tmp_path, "src", ContentType="text/csv", Metadata={"m": "v"})
    etag = key.etag
    back_with_blob(key, blob, SIZE)
    source = {"Bucket": aws.bucket, "Key": "src"}
    with lazy_read():
        copied = aws.s3.copy_object(Bucket=aws.bucket, Key="copy", CopySource=source)
    with lazy_read():
        aws.s3.copy_object(
            Bucket=aws.bucket, Key="replaced", CopySource=source, MetadataDirective="REPLACE",
            Metadata={"n": "w"}, ContentType="a/b", ChecksumAlgorithm="SHA256",
        )  # fmt: skip
    assert copied["CopyObjectResult"]["ETag"] == etag
    for name, metadata, content_type in (("copy", {"m": "v"}, "text/csv"), ("replaced", {"n": "w"}, "a/b")):
        made = current_key(aws.bucket, name)
        assert made is not None and isinstance(made._value_buffer, BlobValue) and made._value_buffer.path == blob
        answer = aws.s3.get_object(Bucket=aws.bucket, Key=name)
        assert (answer["Body"].read(), answer["ETag"], answer["Metadata"]) == (CONTENT, etag, metadata)
        assert answer["ContentType"] == content_type
    checked = aws.s3.head_object(Bucket=aws.bucket, Key="replaced", ChecksumMode="ENABLED")
    put = aws.s3.put_object(Bucket=aws.bucket, Key="again", Body=CONTENT, ChecksumAlgorithm="SHA256")
    assert checked["ChecksumSHA256"] == put["ChecksumSHA256"]


def test_an_upload_part_copy_of_a_stored_object_is_a_view_and_completes_to_the_same_bytes(
    aws: FakeAws, tmp_path: Path
) -> None:
    key, blob = _stored(aws, tmp_path, "src", CONTENT * 2)
    back_with_blob(key, blob, 2 * SIZE)
    upload = aws.s3.create_multipart_upload(Bucket=aws.bucket, Key="joined")["UploadId"]
    etags = []
    for number, (start, end) in enumerate([(0, (5 << 20) - 1), (0, 99)], start=1):
        with lazy_read():
            etags.append(aws.s3.upload_part_copy(
                Bucket=aws.bucket, Key="joined", UploadId=upload, PartNumber=number,
                CopySource={"Bucket": aws.bucket, "Key": "src"}, CopySourceRange=f"bytes={start}-{end}",
            )["CopyPartResult"]["ETag"])  # fmt: skip
    aws.s3.complete_multipart_upload(
        Bucket=aws.bucket, Key="joined", UploadId=upload,
        MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, start=1)]},
    )  # fmt: skip
    expected = (CONTENT * 2)[: 5 << 20] + CONTENT[:100]
    assert aws.s3.get_object(Bucket=aws.bucket, Key="joined")["Body"].read() == expected
    joined = current_key(aws.bucket, "joined")
    assert joined is not None and isinstance(joined._value_buffer, PartsValue)
    assert all(isinstance(buffer, BlobValue) for buffer, _size in joined._value_buffer._buffers)


def _multipart(metadata: dict[str, str], parts: list[bytes]) -> Any:
    from moto.s3.models import FakeMultipart

    upload = FakeMultipart("m", metadata, "123456789012", "us-east-1")  # type: ignore[arg-type]
    for number, data in enumerate(parts, start=1):
        upload.set_part(number, data)
    return upload


@pytest.mark.parametrize(
    "algorithm,kind",
    [(None, None), ("CRC32", None), ("CRC32C", None), ("SHA1", None), ("SHA256", "COMPOSITE"),
     ("SHA256", "FULL_OBJECT"), ("CRC32", "FULL_OBJECT"), ("CRC64NVME", None)],
)  # fmt: skip
def test_the_streamed_completion_has_moto_s_etag_and_checksum(algorithm: str | None, kind: str | None) -> None:
    from moto.s3.models import MultipartChecksumBuilder
    from moto.utilities.utils import md5_hash

    metadata = {"x-amz-checksum-algorithm": algorithm, "x-amz-checksum-type": kind}
    parts = [bytes([n]) * ((5 << 20) + 3 * n) for n in range(1, 3)] + [b"tail"]
    upload = _multipart({name: value for name, value in metadata.items() if value}, parts)
    etags = [upload.parts[n].etag for n in (1, 2, 3)]
    content, etag, summed = complete(upload, iter([(n, etags[n - 1]) for n in (1, 2, 3)]))

    builder = MultipartChecksumBuilder(algorithm, kind)
    md5s = md5_hash()
    for data, part_etag in zip(parts, etags, strict=True):
        builder.addPart(data)
        md5s.update(bytes.fromhex(part_etag.strip('"')))
    assert (etag, summed) == (f"{md5s.hexdigest()}-3", builder.build())
    assert isinstance(content.value, PartsValue) and content.value.read() == b"".join(parts)
    upload.dispose()  # what moto does once the upload is completed: the value keeps the parts' buffers
    content.value.seek(0)
    assert content.value.read() == b"".join(parts)


def test_the_streamed_completion_refuses_what_moto_refuses() -> None:
    from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML

    upload = _multipart({}, [b"small", b"x" * (5 << 20)])
    with pytest.raises(InvalidPart):
        complete(upload, iter([(1, '"0"')]))
    with pytest.raises(InvalidPart):
        complete(upload, iter([(7, upload.parts[1].etag)]))
    with pytest.raises(EntityTooSmall):
        complete(upload, iter([(1, upload.parts[1].etag), (2, upload.parts[2].etag)]))
    with pytest.raises(MalformedXML):
        complete(upload, iter([]))


def test_only_gets_of_an_object_and_copies_take_a_view() -> None:
    def environ(method: str, query: str = "", **headers: str) -> dict[str, Any]:
        return {"REQUEST_METHOD": method, "QUERY_STRING": query, **headers}

    assert reads_one_object(environ("GET"))
    assert reads_one_object(environ("GET", "versionId=1&x-id=GetObject&response-content-type=a"))
    assert reads_one_object(environ("GET", "X-Amz-Signature=s&X-Amz-Date=d"))
    assert reads_one_object(environ("PUT", HTTP_X_AMZ_COPY_SOURCE="b/k"))
    assert not reads_one_object(environ("GET", "versions"))  # ListObjectVersions copies every version
    assert not reads_one_object(environ("GET", "tagging"))
    assert not reads_one_object(environ("PUT"))
    assert not reads_one_object(environ("POST", "select&select-type=2"))


def test_the_recorder_stores_a_copy_of_a_stored_object_as_a_row_for_the_same_blob_reading_nothing(
    aws: FakeAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stepml.embedded.durable import DurableStore
    from stepml.embedded.recording import StateRecorder

    store = DurableStore(tmp_path / "state")
    recorder = StateRecorder(store, lambda _service: None, {aws.bucket}, {})
    aws.s3.put_object(Bucket=aws.bucket, Key="src", Body=CONTENT, Metadata={"m": "v"})
    recorder.sync_objects([(aws.bucket, "src")])
    with lazy_read():
        aws.s3.copy_object(Bucket=aws.bucket, Key="copy", CopySource={"Bucket": aws.bucket, "Key": "src"})

    def refused(*_: Any) -> None:
        raise AssertionError("the copy's content was read again")

    monkeypatch.setattr(store, "put_object_from", refused)
    recorder.sync_objects([(aws.bucket, "copy")])
    source, copy = sorted(store.objects(), key=lambda stored: stored.key)[::-1]
    assert (copy.key, copy.sha256, copy.size, copy.etag, copy.metadata) == (
        "copy", source.sha256, SIZE, source.etag, {"m": "v"},
    )  # fmt: skip
    assert store.read_object(copy) == CONTENT


def test_the_blobs_in_use_include_a_copied_part_of_an_upload_in_progress(aws: FakeAws, tmp_path: Path) -> None:
    from stepml.embedded.blob_keys import blobs_in_use

    key, blob = _stored(aws, tmp_path, "src")
    back_with_blob(key, blob, SIZE)
    upload = aws.s3.create_multipart_upload(Bucket=aws.bucket, Key="joined")["UploadId"]
    with lazy_read():
        aws.s3.upload_part_copy(
            Bucket=aws.bucket, Key="joined", UploadId=upload, PartNumber=1,
            CopySource={"Bucket": aws.bucket, "Key": "src"},
        )  # fmt: skip
    aws.s3.delete_object(Bucket=aws.bucket, Key="src")  # the bucket is not versioned: no version reads it
    assert blob.name in blobs_in_use()
    aws.s3.abort_multipart_upload(Bucket=aws.bucket, Key="joined", UploadId=upload)
    assert blob.name not in blobs_in_use()


def test_a_copy_of_a_multipart_upload_with_a_composite_checksum_reads_back_through_botocores_validation(
    aws: FakeAws,
) -> None:
    # `stepml run --data` uploads a large CSV in parts (boto3 asks for CRC32, a COMPOSITE checksum) and Ingest copies
    # it: moto's copy kept the checksum's value but not its type, so the copy's GetObject sent the composite value as
    # a whole-object CRC32 and botocore refused the body (FlexibleChecksumError on a 1M-row run).
    part = bytes(range(256)) * (5 * 4096 + 1)  # just over S3's 5 MiB minimum part size
    upload = aws.s3.create_multipart_upload(Bucket=aws.bucket, Key="big.csv", ChecksumAlgorithm="CRC32")["UploadId"]
    etags = [
        aws.s3.upload_part(
            Bucket=aws.bucket, Key="big.csv", UploadId=upload, PartNumber=n, Body=part, ChecksumAlgorithm="CRC32"
        )
        for n in (1, 2)
    ]
    aws.s3.complete_multipart_upload(
        Bucket=aws.bucket,
        Key="big.csv",
        UploadId=upload,
        MultipartUpload={
            "Parts": [
                {"PartNumber": n, "ETag": e["ETag"], "ChecksumCRC32": e["ChecksumCRC32"]}
                for n, e in ((1, etags[0]), (2, etags[1]))
            ]
        },
    )
    aws.s3.copy_object(Bucket=aws.bucket, Key="copy.csv", CopySource={"Bucket": aws.bucket, "Key": "big.csv"})
    for key in ("big.csv", "copy.csv"):
        assert aws.s3.get_object(Bucket=aws.bucket, Key=key, ChecksumMode="ENABLED")["Body"].read() == part * 2, key
