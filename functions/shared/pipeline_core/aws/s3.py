"""S3 as the pipeline's object store: URIs in, bytes and files out."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from botocore.exceptions import ClientError

from pipeline_core.aws.clients import client, transient_errors_as
from pipeline_core.errors import DatasetNotFoundError, InputValidationError

MIB = 1024 * 1024
# CopyObject copies at most 5 GB in one request; larger objects are copied part by part (UploadPartCopy),
# each part at most 5 GB and, but for the last, at least 5 MiB, and at most 10,000 parts.
MAX_COPY_OBJECT_BYTES = 5 * 1024**3
COPY_PART_BYTES = 512 * MIB
HASH_CHUNK_BYTES = 8 * MIB


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        """Split ``s3://bucket/key``; anything else is an InputValidationError naming the value."""
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise InputValidationError(f"expected an S3 URI like s3://bucket/key, got {uri!r}")
        return cls(parsed.netloc, parsed.path.lstrip("/"))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def child(self, *parts: str) -> S3Uri:
        key = "/".join([self.key.rstrip("/"), *(p.strip("/") for p in parts)]).lstrip("/")
        return S3Uri(self.bucket, key)


class ObjectStore:
    """Domain verbs over S3; the client is injected (tests pass a moto-backed one)."""

    def __init__(self, s3_client: Any | None = None) -> None:
        self._s3 = s3_client or client("s3")

    def read_bytes(self, uri: str) -> bytes:
        location = S3Uri.parse(uri)
        with transient_errors_as(f"reading {uri}"):
            try:
                body: bytes = self._s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
            except ClientError as error:
                if error.response["Error"]["Code"] in {"NoSuchKey", "NoSuchBucket", "404"}:
                    raise DatasetNotFoundError(f"no object at {uri}") from error
                raise
        return body

    def read_versioned(self, uri: str) -> tuple[bytes, str | None]:
        """The object's bytes and its S3 VersionId (None on a bucket that does not keep versions)."""
        location = S3Uri.parse(uri)
        with transient_errors_as(f"reading {uri}"):
            try:
                answer = self._s3.get_object(Bucket=location.bucket, Key=location.key)
            except ClientError as error:
                if error.response["Error"]["Code"] in {"NoSuchKey", "NoSuchBucket", "404"}:
                    raise DatasetNotFoundError(f"no object at {uri}") from error
                raise
            body: bytes = answer["Body"].read()
        version = answer.get("VersionId")
        return body, version if isinstance(version, str) and version != "null" else None

    def write_bytes(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        location = S3Uri.parse(uri)
        with transient_errors_as(f"writing {uri}"):
            self._s3.put_object(Bucket=location.bucket, Key=location.key, Body=data, ContentType=content_type)
        return uri

    def put_if_changed(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """Write ``data`` at ``uri`` unless that object already holds exactly these bytes; True if written.

        A stage retried after its writes went through (its response lost, a timeout after the writes)
        writes the same bytes again; on a versioned bucket that would stack identical versions. The first
        write is S3's conditional put (``If-None-Match: *``), so the usual case costs one request.
        """
        location = S3Uri.parse(uri)
        with transient_errors_as(f"writing {uri}"):
            if self._put_if_absent(location, data, content_type):
                return True
        if self.read_bytes(uri) == data:
            return False
        # Different bytes under the same key: the state continues with this attempt's result, so the
        # object must hold what this attempt produced.
        self.write_bytes(uri, data, content_type)
        return True

    def put_file_if_changed(self, uri: str, path: Path, content_type: str = "application/octet-stream") -> bool:
        """:meth:`put_if_changed` for a local file, streamed both ways: the file and the object already
        there are compared chunk by chunk, never held whole in memory; True if written."""
        location = S3Uri.parse(uri)
        with transient_errors_as(f"writing {uri}"), path.open("rb") as handle:
            if self._put_if_absent(location, handle, content_type):
                return True
            if self._same_bytes(location, path):
                return False
            self.write_stream(uri, handle, content_type)
        return True

    def _put_if_absent(self, location: S3Uri, body: Any, content_type: str) -> bool:
        """S3's conditional put (``If-None-Match: *``): True if written, False if the key holds an object."""
        try:
            self._s3.put_object(
                Bucket=location.bucket, Key=location.key, Body=body, ContentType=content_type, IfNoneMatch="*"
            )
        except ClientError as error:
            if error.response["Error"]["Code"] not in {"PreconditionFailed", "412"}:
                raise
            return False
        return True

    def _same_bytes(self, location: S3Uri, path: Path, chunk_bytes: int = 8 * 1024 * 1024) -> bool:
        if self._s3.head_object(Bucket=location.bucket, Key=location.key)["ContentLength"] != path.stat().st_size:
            return False
        body = self._s3.get_object(Bucket=location.bucket, Key=location.key)["Body"]
        with path.open("rb") as handle:
            for chunk in body.iter_chunks(chunk_bytes):
                if handle.read(len(chunk)) != chunk:
                    return False
            return handle.read(1) == b""

    def write_stream(self, uri: str, handle: BinaryIO, content_type: str = "application/octet-stream") -> str:
        """Write what ``handle`` (a seekable file) holds from its start, streamed: a large file is never read
        into memory (one PutObject, so at most S3's 5 GB)."""
        location = S3Uri.parse(uri)
        handle.seek(0)
        with transient_errors_as(f"writing {uri}"):
            self._s3.put_object(Bucket=location.bucket, Key=location.key, Body=handle, ContentType=content_type)
        return uri

    def download_stream(self, uri: str, path: Path, chunk_bytes: int = 8 * 1024 * 1024) -> int:
        """Copy the object to ``path`` chunk by chunk (never whole in memory); its size in bytes."""
        path.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        with transient_errors_as(f"reading {uri}"), path.open("wb") as out:
            for chunk in self._chunks(uri, chunk_bytes):
                out.write(chunk)
                size += len(chunk)
        return size

    def delete(self, uri: str) -> None:
        """Delete the object (its current version on a versioned bucket); a missing object is no error."""
        location = S3Uri.parse(uri)
        with transient_errors_as(f"deleting {uri}"):
            self._s3.delete_object(Bucket=location.bucket, Key=location.key)

    def sha256_and_size(self, uri: str, chunk_bytes: int = HASH_CHUNK_BYTES) -> tuple[str, int]:
        """The object's SHA-256 (hex) and size, read as a stream: memory stays at one chunk, whatever the size."""
        digest = hashlib.sha256()
        size = 0
        with transient_errors_as(f"reading {uri}"):
            for chunk in self._chunks(uri, chunk_bytes):
                digest.update(chunk)
                size += len(chunk)
        return digest.hexdigest(), size

    def reader(self, uri: str) -> BinaryIO:
        """The object as a stream (``read(n)``), never whole in memory; DatasetNotFoundError when there is
        no object."""
        location = S3Uri.parse(uri)
        try:
            body: BinaryIO = self._s3.get_object(Bucket=location.bucket, Key=location.key)["Body"]
        except ClientError as error:
            if error.response["Error"]["Code"] in {"NoSuchKey", "NoSuchBucket", "404"}:
                raise DatasetNotFoundError(f"no object at {uri}") from error
            raise
        return body

    def _chunks(self, uri: str, chunk_bytes: int) -> Iterator[bytes]:
        """The object's bytes, ``chunk_bytes`` at a time; DatasetNotFoundError when there is no object."""
        body: Any = self.reader(uri)
        yield from body.iter_chunks(chunk_bytes)

    def copy(
        self,
        source_uri: str,
        destination_uri: str,
        size: int | None = None,
        max_single_copy_bytes: int = MAX_COPY_OBJECT_BYTES,
        part_bytes: int = COPY_PART_BYTES,
    ) -> str:
        """Server-side copy (no bytes pass through this process); an object over ``max_single_copy_bytes``
        (``size``, when the caller knows it) is copied part by part, as CopyObject stops at 5 GB."""
        if size is not None and size > max_single_copy_bytes:
            return self._copy_in_parts(source_uri, destination_uri, size, part_bytes)
        source, destination = S3Uri.parse(source_uri), S3Uri.parse(destination_uri)
        with transient_errors_as(f"copying {source_uri} to {destination_uri}"):
            try:
                self._s3.copy_object(
                    Bucket=destination.bucket,
                    Key=destination.key,
                    CopySource={"Bucket": source.bucket, "Key": source.key},
                )
            except ClientError as error:
                if error.response["Error"]["Code"] in {"NoSuchKey", "NoSuchBucket", "404"}:
                    raise DatasetNotFoundError(f"no object at {source_uri}") from error
                raise
        return destination_uri

    def _copy_in_parts(self, source_uri: str, destination_uri: str, size: int, part_bytes: int) -> str:
        source, destination = S3Uri.parse(source_uri), S3Uri.parse(destination_uri)
        # S3 allows 10,000 parts: a part size that keeps under it (5 TB objects need parts near 525 MiB)
        part_bytes = max(part_bytes, -(-size // 10_000))
        with transient_errors_as(f"copying {source_uri} to {destination_uri}"):
            upload_id = self._s3.create_multipart_upload(Bucket=destination.bucket, Key=destination.key)["UploadId"]
            try:
                parts = []
                for number, start in enumerate(range(0, size, part_bytes), start=1):
                    end = min(start + part_bytes, size) - 1
                    answer = self._s3.upload_part_copy(
                        Bucket=destination.bucket,
                        Key=destination.key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource={"Bucket": source.bucket, "Key": source.key},
                        CopySourceRange=f"bytes={start}-{end}",
                    )
                    parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
                self._s3.complete_multipart_upload(
                    Bucket=destination.bucket,
                    Key=destination.key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            except BaseException:
                # an unfinished upload keeps its parts (and their storage cost) until it is aborted
                self._s3.abort_multipart_upload(Bucket=destination.bucket, Key=destination.key, UploadId=upload_id)
                raise
        return destination_uri

    def size(self, uri: str) -> int:
        """The object's size in bytes; a missing object is DatasetNotFoundError."""
        location = S3Uri.parse(uri)
        with transient_errors_as(f"checking {uri}"):
            try:
                head = self._s3.head_object(Bucket=location.bucket, Key=location.key)
            except ClientError as error:
                if error.response["Error"]["Code"] in {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}:
                    raise DatasetNotFoundError(f"no object at {uri}") from error
                raise
        return int(head["ContentLength"])

    def exists(self, uri: str) -> bool:
        location = S3Uri.parse(uri)
        with transient_errors_as(f"checking {uri}"):
            try:
                self._s3.head_object(Bucket=location.bucket, Key=location.key)
            except ClientError as error:
                if error.response["Error"]["Code"] in {"404", "NoSuchKey", "NotFound"}:
                    return False
                raise
        return True

    def list_uris(self, prefix_uri: str) -> list[str]:
        location = S3Uri.parse(prefix_uri)
        uris: list[str] = []
        with transient_errors_as(f"listing {prefix_uri}"):
            paginator = self._s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=location.bucket, Prefix=location.key):
                uris.extend(f"s3://{location.bucket}/{item['Key']}" for item in page.get("Contents", []))
        return uris

    def download_prefix(self, prefix_uri: str, directory: Path) -> list[Path]:
        """Download every object under ``prefix_uri`` into ``directory`` (what a SageMaker channel does), each
        streamed to its file: a channel of any size costs the stand-in one chunk of memory."""
        prefix = S3Uri.parse(prefix_uri).key
        paths = []
        for uri in self.list_uris(prefix_uri):
            relative = S3Uri.parse(uri).key[len(prefix) :].lstrip("/") or Path(uri).name
            path = directory / relative
            self.download_stream(uri, path)
            paths.append(path)
        return paths


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
