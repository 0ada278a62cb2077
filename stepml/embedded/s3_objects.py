"""GetObject, CopyObject and CompleteMultipartUpload of large objects without their content in memory.

moto answers GetObject with ``FakeKey.value`` (the whole content as bytes, sliced for a Range), copies an
object with ``value=src_key.value``, and joins a multipart upload's parts in a bytearray (a second one for
the whole-object checksum). :func:`install` changes two things in moto's S3 (in this process), and nothing
a client sees:

* ``FakeKey.value`` (a property): while :func:`lazy_read` is on, the next whole read of an object backed by
  a blob (:class:`~stepml.embedded.blob_keys.BlobValue`) gives a :class:`BlobContent`, a view of the blob
  that moto's code measures and slices like bytes and the web server sends in pieces; and a key given such
  a view (or a :class:`PartsContent`) as its value takes the view as its buffer instead of copying bytes.
  The gateway turns :func:`lazy_read` on around GetObject and around CopyObject and UploadPartCopy, so a
  copy of a stored object is a view of the same blob (the state directory holds one copy of both).
* ``FakeMultipart.complete``: the same checks, ETag and checksum as moto's, with the parts read in pieces;
  the object's content is a :class:`PartsValue` reading the parts, which the recorder streams into the
  store, then backs by the blob.

And one fix of moto's CopyObject: the copy of a multipart upload keeps its COMPOSITE checksum's type with its
value (moto kept the value alone, which botocore then refused as a whole-object checksum).

Everything else (headers, errors, conditions, versions, ranges) is moto's own code answering.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import hashlib
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from stepml.embedded.blob_keys import BlobValue, ValueView, content_chunks
from stepml.embedded.durable import CHUNK

_INSTALLED = threading.Lock()
_done = False
_pending = threading.local()

# GetObject's query parameters: anything else (acl, tagging, attributes, versions, uploadId, ...) is another
# operation, which never gets a view.
_OBJECT_GET_PARAMETERS = frozenset({"versionId", "partNumber", "x-id"})


@contextlib.contextmanager
def lazy_read() -> Iterator[None]:
    """In this thread, the next whole read of a blob-backed object's value gives a :class:`BlobContent`.

    One read only: the one moto answers GetObject with, or copies. A later read in the same request (moto's
    checksum of a copy asked with ``x-amz-checksum-algorithm``) gets bytes as before."""
    _pending.lazy = True
    try:
        yield
    finally:
        _pending.lazy = False


def reads_one_object(environ: dict[str, Any]) -> bool:
    """Whether an S3 request reads one object's content that a view can stand for: GetObject, CopyObject or
    UploadPartCopy (not ListObjectVersions, SelectObjectContent, or the like)."""
    method = environ.get("REQUEST_METHOD")
    if method == "PUT":
        return "HTTP_X_AMZ_COPY_SOURCE" in environ
    if method != "GET":
        return False
    names = {pair.split("=", 1)[0] for pair in environ.get("QUERY_STRING", "").split("&") if pair}
    return all(n in _OBJECT_GET_PARAMETERS or n.lower().startswith(("response-", "x-amz-")) for n in names)


class BlobContent:
    """``length`` bytes of a blob from ``offset``, standing for an object's content in moto's code: it has a
    length, slices (a Range) into another view, and iterates in pieces (the web server's response body).

    The file is opened when the sending starts, right after moto's answer: a blob a garbage collection removes
    later (the object was overwritten) is still sent whole, as S3 finishes sending a replaced object. ``md5``
    is the content's MD5 when known (a copy's ETag, without reading the content again)."""

    def __init__(self, path: Path, offset: int, length: int, md5: str | None = None) -> None:
        self.path, self.offset, self.length, self.md5 = path, offset, length, md5

    def __len__(self) -> int:
        return self.length

    def __bool__(self) -> bool:
        return self.length > 0

    def __getitem__(self, index: slice) -> BlobContent:
        if not isinstance(index, slice):
            raise TypeError("a blob's content is sliced, not indexed")
        start, stop, step = index.indices(self.length)
        if step != 1:
            raise ValueError("a blob's content is sliced with step 1")
        return BlobContent(self.path, self.offset + start, max(0, stop - start))

    def __copy__(self) -> BlobContent:
        return self

    def __iter__(self) -> Iterator[bytes]:
        position, end = self.offset, self.offset + self.length
        with open(self.path, "rb") as handle:
            while position < end:
                data = os.pread(handle.fileno(), min(CHUNK, end - position), position)
                if not data:
                    raise OSError(f"{self.path} is shorter than the object it holds ({end} bytes)")
                position += len(data)
                yield data

    def install(self, key: Any) -> None:
        """Make ``key`` (a new moto object) read this content from the blob."""
        old, key._value_buffer = key._value_buffer, BlobValue(self.path, self.offset, self.length, key._max_buffer_size)
        key.contentsize = self.length
        if key._etag is None and self.md5:
            key._etag = self.md5
        old.close()


class PartsValue(ValueView):
    """A completed multipart upload's content: the buffers its parts had (moto's, or views of a blob), read
    in turn. moto disposes of an upload's parts once it is completed, so the value takes their buffers, and
    each part reads its range of the value instead (:class:`_Range`)."""

    def __init__(self, buffers: list[tuple[Any, int]], max_buffer_size: int) -> None:
        super().__init__(sum(size for _buffer, size in buffers), max_buffer_size)
        self._buffers = buffers
        self._lock = threading.Lock()  # the key's and its parts' reads share the buffers

    def _read_at(self, position: int, size: int) -> bytes:
        pieces, start = [], 0
        with self._lock:
            for buffer, length in self._buffers:
                end = start + length
                if end > position and start < position + size:
                    begin = max(position, start) - start
                    buffer.seek(begin)
                    pieces.append(buffer.read(min(end, position + size) - start - begin))
                start = end
        return b"".join(pieces)

    def blobs(self) -> set[str]:
        if self._written is not None:
            return set()
        return {name for buffer, _length in self._buffers if isinstance(buffer, ValueView) for name in buffer.blobs()}

    def close(self) -> None:
        super().close()
        for buffer, _length in self._buffers:
            buffer.close()  # moto's /tmp files of the parts are released with the object


class _Range(ValueView):
    """A part's bytes, read from the completed object's value."""

    def __init__(self, value: PartsValue, offset: int, length: int, max_buffer_size: int) -> None:
        super().__init__(length, max_buffer_size)
        self._value, self._offset = value, offset

    def _read_at(self, position: int, size: int) -> bytes:
        return self._value._read_at(self._offset + position, size)


class PartsContent:
    """The value :func:`complete` gives moto for a completed upload: the parts' buffers, taken over."""

    def __init__(self, parts: list[Any]) -> None:
        buffers, offset = [], 0
        offsets: dict[int, tuple[Any, int]] = {}
        for part in parts:
            with part.lock:
                buffers.append((part._value_buffer, part.size))
            offsets.setdefault(id(part), (part, offset))
            offset += part.size
        self.value = PartsValue(buffers, parts[0]._max_buffer_size)
        for part, start in offsets.values():
            with part.lock:
                part._value_buffer = _Range(self.value, start, part.size, part._max_buffer_size)

    def install(self, key: Any) -> None:
        old, key._value_buffer = key._value_buffer, self.value
        key.contentsize = self.value.length
        old.close()


class Checksum:
    """moto's ``compute_checksum`` of content given in pieces: the same algorithms, the same fallbacks when
    the optional libraries are missing (CRC32 for CRC32C without ``crc32c``, for CRC64NVME without awscrt)."""

    def __init__(self, algorithm: str) -> None:
        from moto.core.compat import HAS_CRT

        self._hash: Any = None
        self._crc, self._width, self._update = 0, 4, binascii.crc32
        if algorithm == "SHA1":
            self._hash = hashlib.sha1(usedforsecurity=False)
        elif algorithm == "CRC32C":
            with contextlib.suppress(ImportError):
                import crc32c

                self._update = crc32c.crc32c
        elif algorithm == "CRC64NVME":
            if HAS_CRT:
                from awscrt import checksums

                self._update, self._width = checksums.crc64nvme, 8
        elif algorithm != "CRC32":
            self._hash = hashlib.sha256(usedforsecurity=False)

    def update(self, data: bytes) -> None:
        if self._hash is not None:
            self._hash.update(data)
        else:
            self._crc = self._update(data, self._crc)

    def digest(self) -> bytes:
        return bytes(self._hash.digest()) if self._hash is not None else self._crc.to_bytes(self._width, "big")


def _checksum(pieces: Iterable[bytes], algorithm: str) -> bytes:
    summed = Checksum(algorithm)
    for piece in pieces:
        summed.update(piece)
    return summed.digest()


def complete(multipart: Any, body: Iterable[tuple[int, str]]) -> tuple[Any, str, tuple[str, str, int] | None]:
    """``FakeMultipart.complete`` with the parts read in pieces: moto's checks (InvalidPart, EntityTooSmall,
    MalformedXML), ETag (the MD5 of the parts' MD5s, ``-<count>``) and checksum (``MultipartChecksumBuilder``:
    COMPOSITE sums each part's checksum, FULL_OBJECT the whole content; CRC64NVME by default), and the content
    as a :class:`PartsContent`."""
    from moto.s3 import models
    from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML

    algorithm = multipart.metadata.get("x-amz-checksum-algorithm") or "CRC64NVME"
    kind = multipart.metadata.get("x-amz-checksum-type") or ("FULL_OBJECT" if algorithm == "CRC64NVME" else "COMPOSITE")
    whole, sums = Checksum(algorithm), bytearray()
    decode_hex = codecs.getdecoder("hex_codec")
    md5s, parts, last = bytearray(), [], None
    for number, etag in body:
        part = multipart.parts.get(number)
        part_etag = None
        if part is not None:
            part_etag, etag = part.etag.replace('"', ""), etag.replace('"', "")
        if part is None or part_etag != etag:
            raise InvalidPart()
        if last is not None and last.contentsize < models.S3_UPLOAD_PART_MIN_SIZE:
            raise EntityTooSmall()
        md5s.extend(decode_hex(part_etag)[0])  # type: ignore[arg-type]
        if kind == "COMPOSITE":
            sums.extend(_checksum(content_chunks(part), algorithm))
        else:
            for data in content_chunks(part):
                whole.update(data)
        parts.append(part)
        last = part
    if not parts:
        raise MalformedXML
    if kind == "COMPOSITE":
        summed = (kind, base64.b64encode(_checksum([bytes(sums)], algorithm)).decode(), len(parts))
    else:
        summed = (kind, base64.b64encode(whole.digest()).decode(), 1)
    return PartsContent(parts), f"{hashlib.md5(bytes(md5s), usedforsecurity=False).hexdigest()}-{len(parts)}", summed


def _plain_md5(key: Any) -> str | None:
    """The key's ETag when it is its content's MD5 (not a multipart upload's ``<md5>-<parts>``)."""
    etag = key._etag
    return etag if isinstance(etag, str) and len(etag) == 32 and "-" not in etag else None


def install() -> None:
    """Give moto's ``FakeKey.value`` and ``FakeMultipart.complete`` (in this process) the behaviour above."""
    global _done
    with _INSTALLED:
        if _done:
            return
        from moto.s3.models import FakeKey, FakeMultipart, S3Backend

        moto_value: property = FakeKey.value  # type: ignore[assignment]

        def get_value(key: Any) -> Any:
            if getattr(_pending, "lazy", False):
                with key.lock:
                    buffer = key._value_buffer
                    if isinstance(buffer, BlobValue) and buffer._written is None and not buffer.closed:
                        _pending.lazy = False
                        return BlobContent(buffer.path, buffer.offset, buffer.length, _plain_md5(key))
            return moto_value.fget(key)  # type: ignore[misc]

        def set_value(key: Any, value: Any) -> None:
            if isinstance(value, BlobContent | PartsContent):
                value.install(key)
            else:
                moto_value.fset(key, value)  # type: ignore[misc]

        FakeKey.value = property(get_value, set_value)  # type: ignore[method-assign,assignment]
        FakeMultipart.complete = complete  # type: ignore[method-assign,assignment]
        moto_copy = S3Backend.copy_object

        def copy_object(
            backend: Any, src_key: Any, dest_bucket_name: str, dest_key_name: str, *args: Any, **kwargs: Any
        ) -> None:
            moto_copy(backend, src_key, dest_bucket_name, dest_key_name, *args, **kwargs)
            copied = backend.get_object(dest_bucket_name, dest_key_name)
            if copied is not None and src_key.checksum_value and src_key.checksum_type == "COMPOSITE":
                # moto copies a checksum's value without its type: a multipart upload's COMPOSITE sum then went out
                # as the copy's whole-object checksum, which botocore refuses. S3 computes the copy a checksum of
                # its own; the local AWS keeps the composite one (GetObject sends it as "<sum>-<parts>", which
                # botocore does not check), and reads no content for it.
                copied.checksum_type, copied.checksum_parts = src_key.checksum_type, src_key.checksum_parts

        S3Backend.copy_object = copy_object  # type: ignore[method-assign,assignment]
        _done = True
