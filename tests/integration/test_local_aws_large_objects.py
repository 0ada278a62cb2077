"""Large objects in the local AWS stay on disk, once: a real local AWS process, restarted, its memory read from /proc.

moto held every object's content in a SpooledTemporaryFile (memory, then a file under /tmp: a second copy
outside the state directory), and a restart put every stored object back through PutObject (each one in
memory while it went in). Now moto's objects read the stored blob, and a restart reads none of them.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from benchmarks.local_aws_objects import LocalAwsProcess
from stepml.uploads import upload_file
from tests.integration.conftest import stepml_command

pytestmark = pytest.mark.slow

SIZE = 64 << 20  # far above moto's in-memory buffer (5 MiB) and any bound below; cheap to hash
BOUND = SIZE // 2  # what the local AWS's memory may grow by; it grew by SIZE or more per object before


class Service(LocalAwsProcess):
    def cli(self, *args: str) -> None:
        done = stepml_command(self.env, *args, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    made = Service(tmp_path_factory.mktemp("large-objects") / "state")
    made.cli("local", "up", "--background")
    yield made
    stepml_command(made.env, "local", "down", timeout=120)


@pytest.fixture(scope="module")
def large_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("large-file") / "large.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        for block in range(SIZE >> 20):  # 1 MiB blocks that differ: no compression or dedup can cheat
            data = hashlib.sha512(str(block).encode()).digest() * (1 << 14)
            digest.update(data)
            handle.write(data)
    return path, digest.hexdigest()


def _data_bucket(s3: Any) -> str:
    return next(b["Name"] for b in s3.list_buckets()["Buckets"] if "databucket" in b["Name"])


def _sha256(s3: Any, bucket: str, key: str) -> str:
    digest = hashlib.sha256()
    for chunk in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def test_a_large_object_round_trips_through_put_copy_multipart_and_a_restart_stored_once_and_not_in_tmp(
    service: Service, large_file: tuple[Path, str]
) -> None:
    path, expected = large_file
    s3 = service.s3()
    bucket = _data_bucket(s3)
    with open(path, "rb") as body:
        s3.put_object(Bucket=bucket, Key="large/put.bin", Body=body)
    s3.copy_object(Bucket=bucket, Key="large/copy.bin", CopySource={"Bucket": bucket, "Key": "large/put.bin"})
    chunks = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=2)
    s3.upload_file(str(path), bucket, "large/multipart.bin", Config=chunks)
    keys = ("large/put.bin", "large/copy.bin", "large/multipart.bin")
    multipart_etag = s3.head_object(Bucket=bucket, Key="large/multipart.bin")["ETag"]
    for key in keys:
        assert _sha256(s3, bucket, key) == expected, key

    # one copy of the content in the state directory, none in moto's temporary files
    blobs = [p for p in (service.state_dir / "state" / "blobs").rglob("*") if p.is_file()]
    assert [p.stat().st_size for p in blobs if p.stat().st_size >= SIZE] == [SIZE], blobs
    assert sum(p.stat().st_size for p in blobs) < SIZE + BOUND
    assert service.temporary_bytes() < BOUND, "moto's buffers spilled the objects to /tmp"

    # a restart registers the three objects without reading them, then serves them from the one file
    service.cli("local", "down")
    service.cli("local", "up", "--background")
    resident, peak = service.memory()
    s3 = service.s3()
    assert s3.head_object(Bucket=bucket, Key="large/multipart.bin")["ETag"] == multipart_etag
    for key in keys:
        assert _sha256(s3, bucket, key) == expected, key
    # A fresh local AWS has ~260 MiB resident here, and its peak after the restart stayed there; each of the three
    # objects restored through PutObject took its size at the start (+1.6 GiB peak for 3 x 200 MiB), and moto kept
    # each in a /tmp file. (moto's GetObject reads an object whole while it answers: the RSS after the reads is
    # not asserted, it varies with what the allocator gives back.)
    assert peak - resident < BOUND, f"the restore's peak memory grew by {(peak - resident) >> 20} MiB"
    assert service.temporary_bytes() < BOUND


def test_get_copy_and_complete_multipart_of_a_large_object_do_not_hold_it_in_the_local_aws_memory(
    service: Service, large_file: tuple[Path, str]
) -> None:
    """Each operation's peak measured alone (VmHWM reset before it): moto read the whole object into memory
    for GetObject (a range too), CopyObject and CompleteMultipartUpload; the local AWS now streams them."""
    path, expected = large_file
    s3 = service.s3()
    bucket = _data_bucket(s3)
    with open(path, "rb") as body:
        s3.put_object(Bucket=bucket, Key="stream/put.bin", Body=body)
    growth: dict[str, int] = {}

    before = service.reset_peak()
    assert _sha256(s3, bucket, "stream/put.bin") == expected
    growth["GetObject"] = service.memory()[1] - before

    before = service.reset_peak()
    ranged = s3.get_object(Bucket=bucket, Key="stream/put.bin", Range="bytes=1048576-")
    digest = hashlib.sha256()
    for chunk in ranged["Body"].iter_chunks(1 << 20):
        digest.update(chunk)
    growth["GetObject with a Range"] = service.memory()[1] - before
    with open(path, "rb") as handle:
        handle.seek(1 << 20)
        assert digest.hexdigest() == hashlib.sha256(handle.read()).hexdigest()
    assert ranged["ContentRange"] == f"bytes {1 << 20}-{SIZE - 1}/{SIZE}"

    before = service.reset_peak()
    s3.copy_object(Bucket=bucket, Key="stream/copy.bin", CopySource={"Bucket": bucket, "Key": "stream/put.bin"})
    growth["CopyObject"] = service.memory()[1] - before

    # the parts one at a time (each request's body is read whole by moto's web server), then the completion alone
    upload = s3.create_multipart_upload(Bucket=bucket, Key="stream/multipart.bin")["UploadId"]
    parts: list[dict[str, Any]] = []
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            number = len(parts) + 1
            etag = s3.upload_part(Bucket=bucket, Key="stream/multipart.bin", UploadId=upload, PartNumber=number,
                                  Body=block)["ETag"]  # fmt: skip
            parts.append({"ETag": etag, "PartNumber": number})
    del block
    before = service.reset_peak()
    s3.complete_multipart_upload(
        Bucket=bucket, Key="stream/multipart.bin", UploadId=upload, MultipartUpload={"Parts": parts}
    )
    growth["CompleteMultipartUpload"] = service.memory()[1] - before

    for key in ("stream/copy.bin", "stream/multipart.bin"):
        assert _sha256(s3, bucket, key) == expected, key
    assert s3.head_object(Bucket=bucket, Key="stream/multipart.bin")["ETag"].endswith(f'-{len(parts)}"')
    # Before, each grew by the object's size or more (moto's ``FakeKey.value``, and for the completion a
    # bytearray of the parts and a copy of it); a streamed one grows by a few pieces of 1 MiB.
    assert all(grown < BOUND for grown in growth.values()), {name: grown >> 20 for name, grown in growth.items()}
    assert service.temporary_bytes() < BOUND


def test_put_object_and_upload_part_of_a_large_body_do_not_hold_it_in_the_local_aws_memory(
    service: Service, large_file: tuple[Path, str]
) -> None:
    """Each request's peak measured alone: moto's web server read the body whole (and decoded boto3's aws-chunked
    framing into a second copy, then copied it into the object): +2x the object. The local AWS now streams it."""
    path, expected = large_file
    s3 = service.s3()
    bucket = _data_bucket(s3)
    growth: dict[str, int] = {}

    before = service.reset_peak()
    with open(path, "rb") as body:  # boto3 sends it aws-chunked, with a CRC32 trailer
        put = s3.put_object(Bucket=bucket, Key="upload/put.bin", Body=body)
    growth["PutObject"] = service.memory()[1] - before

    before = service.reset_peak()
    with open(path, "rb") as body:
        md5 = hashlib.md5(body.read(), usedforsecurity=False).hexdigest()
        body.seek(0)
        checked = s3.put_object(Bucket=bucket, Key="upload/sha256.bin", Body=body, ChecksumAlgorithm="SHA256")
    growth["PutObject with a SHA256"] = service.memory()[1] - before

    upload = s3.create_multipart_upload(Bucket=bucket, Key="upload/part.bin")["UploadId"]
    before = service.reset_peak()
    with open(path, "rb") as body:  # one part the object's size (a part may be up to 5 GiB)
        part = s3.upload_part(Bucket=bucket, Key="upload/part.bin", UploadId=upload, PartNumber=1, Body=body)
    growth["UploadPart"] = service.memory()[1] - before
    s3.complete_multipart_upload(
        Bucket=bucket, Key="upload/part.bin", UploadId=upload,
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )  # fmt: skip

    assert put["ETag"] == checked["ETag"] == f'"{md5}"' and part["ETag"] == f'"{md5}"'
    head = s3.head_object(Bucket=bucket, Key="upload/sha256.bin", ChecksumMode="ENABLED")
    assert base64.b64decode(head["ChecksumSHA256"]).hex() == expected
    for key in ("upload/put.bin", "upload/sha256.bin", "upload/part.bin"):
        assert _sha256(s3, bucket, key) == expected, key
    assert all(grown < BOUND for grown in growth.values()), {name: grown >> 20 for name, grown in growth.items()}
    assert service.temporary_bytes() < BOUND


def test_a_dataset_the_cli_uploads_in_parts_reads_back_after_ingests_copy(
    service: Service, large_file: tuple[Path, str]
) -> None:
    # The CLI uploads a dataset over 16 MiB in parts (boto3 asks for a CRC32: a COMPOSITE checksum) and Ingest copies
    # it; the copy's GetObject failed botocore's checksum validation (FlexibleChecksumError) on every 1M-row run.
    path, expected = large_file
    s3 = service.s3()
    bucket = _data_bucket(s3)
    upload_file(s3, path, bucket, "datasets/parts.csv")
    s3.copy_object(Bucket=bucket, Key="raw/parts.csv", CopySource={"Bucket": bucket, "Key": "datasets/parts.csv"})
    for key in ("datasets/parts.csv", "raw/parts.csv"):
        assert _sha256(s3, bucket, key) == expected, key
