"""A local file uploaded to S3 streamed from disk: the CLI's memory does not grow with the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MIB = 1 << 20
# Above 16 MiB, a multipart upload of 16 MiB parts, 4 at a time. Each part is read from the file as it is sent
# (s3transfer's ReadFileChunk), so the CLI holds a few MiB of buffers whatever the file's size. Parts also let
# a file over S3's 5 GB PutObject limit go up (s3transfer widens the parts past 10,000 of them), retry one part
# rather than the whole file.
MULTIPART_BYTES = 16 * MIB
PART_CONCURRENCY = 4


def upload_file(s3: Any, path: Path, bucket: str, key: str) -> None:
    """Upload ``path`` to ``s3://bucket/key`` without reading it into memory.

    The managed transfer does not return PutObject's or CompleteMultipartUpload's answer: a caller that needs
    the stored object's VersionId or ETag (a multipart upload's is ``"<md5 of the parts' md5s>-<parts>"``, not
    the content's MD5) asks HeadObject after it. ``s3`` may be a plain botocore client (the embedded target's):
    the transfer is built on it.
    """
    from boto3.s3.transfer import S3Transfer, TransferConfig

    config = TransferConfig(
        multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES, max_concurrency=PART_CONCURRENCY
    )
    S3Transfer(s3, config).upload_file(str(path), bucket, key)
