"""moto's S3 objects backed by the durable store's content files, so that no object sits in memory.

moto keeps each object's content in a ``SpooledTemporaryFile`` (in memory up to a few MB, then a file under
/tmp: one more copy outside the state directory). Once an object's content is stored (a blob under
``state/blobs/``), the object's buffer is swapped for a :class:`BlobValue` reading that file when moto
asks; restoring a state directory registers each object this way without reading its content.

GetObject (ranges too), CopyObject and UploadPartCopy do not read a stored object whole, and
CompleteMultipartUpload does not join the parts in memory: :mod:`stepml.embedded.s3_objects` gives moto's code
a view of the blob, sent in pieces or taken as the copy's buffer, and the completed object reads its parts
until it is stored. moto still reads a whole object for ListObjectVersions (it deep-copies every version),
SelectObjectContent, a copy asked with ``x-amz-checksum-algorithm`` (the new checksum), and a GetObject of
an object the recorder does not keep (a bucket outside the stack, the service's own writes). A large PutObject's
or UploadPart's body is streamed into a blob before moto sees it (:mod:`stepml.embedded.s3_uploads`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stepml.embedded.durable import CHUNK, StoredObject
from stepml.embedded.template import ACCOUNT_ID

# The partition moto's S3 backends are keyed by (the local AWS's region is in "aws").
PARTITION = "aws"


class ValueView:
    """A read-only view of ``length`` bytes, with the file-object methods moto's FakeKey calls on its value
    buffer; a subclass says where the bytes are (:meth:`_read_at`). A write (moto replacing the value) turns
    it into moto's own kind of buffer."""

    def __init__(self, length: int, max_buffer_size: int) -> None:
        self.length = length
        self._position = 0
        self._max_buffer_size = max_buffer_size
        self._written: Any = None  # the buffer taking over after a write
        self.closed = False

    def _read_at(self, position: int, size: int) -> bytes:
        raise NotImplementedError

    def blobs(self) -> set[str]:
        """The names of the blobs the view reads (none once written)."""
        return set()

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        if self._written is not None:
            return int(self._written.seek(position, whence))
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self.length}[whence]
        self._position = max(0, base + position)
        return self._position

    def tell(self) -> int:
        return int(self._written.tell()) if self._written is not None else self._position

    def read(self, size: int = -1) -> bytes:
        if self._written is not None:
            return bytes(self._written.read(size))
        if self.closed:
            raise ValueError("read of closed file")
        left = max(0, self.length - self._position)
        size = left if size is None or size < 0 else min(size, left)
        if size == 0:
            return b""
        data = self._read_at(self._position, size)
        self._position += size
        return data

    def truncate(self, size: int | None = None) -> int:
        self._take_over()
        return int(self._written.truncate(size))

    def write(self, data: bytes) -> int:
        self._take_over()
        return int(self._written.write(data))

    def _take_over(self) -> None:
        if self._written is None:
            position = self._position
            self.seek(0)
            content = self.read()
            # moto's own kind of value buffer, kept (and closed) as the key's
            self._written = tempfile.SpooledTemporaryFile(self._max_buffer_size)  # noqa: SIM115
            self._written.write(content)
            self._written.seek(position)

    def close(self) -> None:
        self.closed = True
        if self._written is not None:
            self._written.close()


class BlobValue(ValueView):
    """A view of ``length`` bytes of a content file from ``offset``. The file is opened per read, so that
    thousands of objects hold no open files."""

    def __init__(self, path: Path, offset: int, length: int, max_buffer_size: int) -> None:
        super().__init__(length, max_buffer_size)
        self.path, self.offset = path, offset

    def blobs(self) -> set[str]:
        return {self.path.name} if self._written is None else set()

    def _read_at(self, position: int, size: int) -> bytes:
        with open(self.path, "rb") as handle:
            handle.seek(self.offset + position)
            data = handle.read(size)
        if len(data) != size:
            raise OSError(f"{self.path} is shorter than the object it holds ({self.offset + self.length} bytes)")
        return data


def s3_backend() -> Any:
    """moto's S3 backend of the local AWS's account (in this process)."""
    from moto.s3.models import s3_backends

    return s3_backends[ACCOUNT_ID][PARTITION]


def blobs_in_use() -> set[str]:
    """The names (SHA-256) of the blobs moto's objects read, noncurrent versions and the parts of uploads in
    progress (UploadPartCopy's views) included: the store keeps only current versions, and a garbage
    collection must not take the content of one moto still serves."""
    from moto.s3.models import FakeKey

    used: set[str] = set()
    for bucket in list(s3_backend().buckets.values()):
        keys = [key for _name, versions in list(bucket.keys.iterlists()) for key in versions]
        keys += [part for upload in list(bucket.multiparts.values()) for part in list(upload.parts.values())]
        for key in keys:
            buffer = getattr(key, "_value_buffer", None) if isinstance(key, FakeKey) else None
            if isinstance(buffer, ValueView):
                used |= buffer.blobs()
    return used


def upload_blobs(bucket: str, upload_id: str) -> set[str]:
    """The names of the blobs a multipart upload's parts read (parts streamed into the store, or copied)."""
    found = s3_backend().buckets.get(bucket)
    upload = found.multiparts.get(upload_id) if found is not None else None
    if upload is None:
        return set()
    buffers = [getattr(part, "_value_buffer", None) for part in list(upload.parts.values())]
    return {name for buffer in buffers if isinstance(buffer, ValueView) for name in buffer.blobs()}


def current_key(bucket: str, key: str) -> Any | None:
    """moto's current version of the object (None when there is none, or it is a delete marker)."""
    from moto.s3.models import FakeKey

    found = s3_backend().get_object(bucket, key)
    return found if isinstance(found, FakeKey) else None


def is_backed(key: Any) -> bool:
    return isinstance(key._value_buffer, BlobValue) and key._value_buffer._written is None


def whole_blob(key: Any) -> Path | None:
    """The blob file the key reads whole (from its start: a stored object, or a copy of one), or None."""
    buffer = key._value_buffer
    return buffer.path if is_backed(key) and buffer.offset == 0 else None


def content_chunks(key: Any) -> Iterator[bytes]:
    """The key's content in pieces of CHUNK bytes, read under its lock (moto's value property takes it too)."""
    with key.lock:
        key._value_buffer.seek(0)
        while chunk := key._value_buffer.read(CHUNK):
            yield chunk


class KeyReader:
    """The key's content as a file object read in pieces (what the durable store streams from)."""

    def __init__(self, key: Any) -> None:
        self._chunks = content_chunks(key)

    def read(self, _size: int = -1) -> bytes:
        return next(self._chunks, b"")


def back_with_blob(key: Any, path: Path, size: int) -> None:
    """Swap the key's buffer (and its parts', for a completed multipart upload) for views of ``path``: moto's
    in-memory or /tmp copy is released."""
    with key.lock:
        old = key._value_buffer
        key._value_buffer = BlobValue(path, 0, size, key._max_buffer_size)
        key.contentsize = size
        old.close()
    parts = getattr(key.multipart, "parts", None) or {}
    ordered = [parts[number] for number in sorted(parts)]
    if sum(part.size for part in ordered) != size:
        return  # parts left out of the completed object: they keep their own buffers
    offset = 0
    for part in ordered:
        with part.lock:
            old, length = part._value_buffer, part.size
            part._value_buffer = BlobValue(path, offset, length, part._max_buffer_size)
            old.close()
        offset += length


def register(stored: StoredObject, path: Path) -> None:
    """Put a stored object into moto as it was, its content left in ``path`` (nothing of it is read)."""
    key = s3_backend().put_object(
        stored.bucket, stored.key, b"", etag=stored.etag.strip('"') if stored.etag else None, disable_notification=True
    )
    back_with_blob(key, path, stored.size)
    if stored.content_type:
        key.set_metadata({"Content-Type": stored.content_type})
    key.set_metadata({f"x-amz-meta-{name}": value for name, value in stored.metadata.items()})
    key.last_modified = datetime.fromtimestamp(stored.last_modified, UTC).replace(tzinfo=None)
