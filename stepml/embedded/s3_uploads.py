"""PutObject and UploadPart of large bodies without the body in memory.

moto's web server reads a request's body whole (werkzeug's ``request.data``), decodes an ``aws-chunked`` body
into a second copy, and moto then copies it into the object's buffer and hashes it: a 200 MiB PutObject grew
the local AWS by ~400 MiB. The gateway now streams such a body from the socket into a blob file (decoding
``aws-chunked`` and its trailer as it goes, computing the MD5 and the requested checksum), and moto's own
``put_object`` / ``upload_part`` then run on an empty request whose body is a view of that blob
(:class:`~stepml.embedded.s3_objects.BlobContent`, which moto's key takes as its buffer). moto's checks,
headers, versions, conditions, metadata, tags and object lock are its own code answering; only what moto would
have read from the body is given to it: the content (the view), its MD5 (the ETag), and the checksum moto
would have echoed (from the trailer, or computed).

A request moto would answer from the raw body in a way a stream cannot reproduce keeps moto's path:
an ``aws-chunked`` body with ``x-amz-sdk-checksum-algorithm`` but neither the checksum header nor a trailer
(moto sums the encoded body), SigV4A streaming (moto does not decode it), a body without Content-Length, and
small bodies (under :data:`STREAM_MIN`), where a stream saves nothing.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from stepml.embedded.durable import CHUNK
from stepml.embedded.s3_objects import BlobContent, Checksum

# Below this a body keeps moto's path: it is small, and moto's buffer keeps it in memory anyway.
STREAM_MIN = 1 << 20
# The x-amz-content-sha256 values whose body is aws-chunked, as moto decodes them.
_SIGNED_CHUNKS = frozenset({"STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"})
_UNSIGNED_CHUNKS = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
# A chunk's header line or a trailer line is short; a longer one is not aws-chunked.
_LINE_LIMIT = 8192
# The query of a PutObject or UploadPart (presigned URLs add X-Amz-* parameters); anything else (acl, tagging,
# retention, legal-hold, ...) is another operation with a small body.
_UPLOAD_PARAMETERS = frozenset({"uploadId", "partNumber", "x-id"})

_pending = threading.local()

# Where a streamed body goes: given its decoded pieces, a context holding the blob (its path and size) while moto
# takes it, so that nothing removes it before moto's key reads it.
Keep = Callable[[Iterator[bytes]], AbstractContextManager[tuple[Path, int]]]


class IncompleteBody(Exception):
    """The body ended before its Content-Length (or aws-chunked framing) said it would (S3's IncompleteBody)."""


def streamable(environ: dict[str, Any]) -> bool:
    """Whether the request is a PutObject or UploadPart whose body can be streamed to a blob with moto's answer
    unchanged (see the module docstring for what keeps moto's path)."""
    if environ.get("REQUEST_METHOD") != "PUT" or "HTTP_X_AMZ_COPY_SOURCE" in environ:
        return False
    names = {pair.split("=", 1)[0] for pair in environ.get("QUERY_STRING", "").split("&") if pair}
    if not all(name in _UPLOAD_PARAMETERS or name.lower().startswith("x-amz-") for name in names):
        return False
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return False
    if length < STREAM_MIN:
        return False
    payload = environ.get("HTTP_X_AMZ_CONTENT_SHA256", "")
    if payload.startswith("STREAMING-") and payload not in _SIGNED_CHUNKS and payload != _UNSIGNED_CHUNKS:
        return False  # SigV4A and the like: moto keeps the framing as content
    algorithm = environ.get("HTTP_X_AMZ_SDK_CHECKSUM_ALGORITHM", "").upper()
    if payload.startswith("STREAMING-") and algorithm:
        given = f"HTTP_X_AMZ_CHECKSUM_{algorithm}" in environ
        if not given and "HTTP_X_AMZ_TRAILER" not in environ:
            return False  # moto sums the encoded body: a stream would answer another (the right) value
    return True


class _Body:
    """The decoded content of a request body read from ``stream``, in pieces of up to CHUNK bytes, with its MD5,
    the requested checksum and (aws-chunked) the trailer's headers, known once it is read to its end."""

    def __init__(self, stream: Any, length: int, payload: str, algorithm: str) -> None:
        self._stream, self._left = stream, length
        self._chunked = payload in _SIGNED_CHUNKS or payload == _UNSIGNED_CHUNKS
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.summed = Checksum(algorithm) if algorithm else None
        self.trailer: dict[str, str] = {}

    def _read(self, size: int, line: bool = False) -> bytes:
        """Up to ``size`` bytes of the body (``line``: up to and with the next line break)."""
        from werkzeug.exceptions import ClientDisconnected

        if self._left <= 0:
            return b""
        try:
            read = self._stream.readline if line else self._stream.read
            data = read(min(size, self._left))
        except ClientDisconnected as error:
            raise IncompleteBody("the request body ended before its Content-Length") from error
        self._left -= len(data)
        return bytes(data)

    def _exactly(self, size: int) -> Iterator[bytes]:
        while size > 0:
            data = self._read(min(CHUNK, size))
            if not data:
                raise IncompleteBody("the request body ended early")
            size -= len(data)
            yield data

    def _line(self) -> bytes:
        line = self._read(_LINE_LIMIT + 1, line=True)
        if len(line) > _LINE_LIMIT and not line.endswith(b"\n"):
            raise IncompleteBody("an aws-chunked line is too long")
        return line

    def _chunks(self) -> Iterator[bytes]:
        while True:
            line = self._line()
            if not line:
                return  # moto stops at the end of the body too
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (line := self._line().strip()) != b"":
                    name, _sep, value = line.decode("latin-1").partition(":")
                    self.trailer[name.strip().lower()] = value.strip()
                return
            yield from self._exactly(size)
            self._line()  # the CRLF after the chunk's data

    def __iter__(self) -> Iterator[bytes]:
        pieces = self._chunks() if self._chunked else self._exactly(self._left)
        for data in pieces:
            self.md5.update(data)
            if self.summed is not None:
                self.summed.update(data)
            yield data


@contextlib.contextmanager
def streamed(environ: dict[str, Any], keep: Keep) -> Iterator[None]:
    """Stream the request's body into a blob (``keep``) and, while the context lasts, have moto's S3 take a view
    of it as the body of this request (in this thread). The request moto sees has no body of its own."""
    from werkzeug.wsgi import LimitedStream

    length = int(environ["CONTENT_LENGTH"])
    payload = environ.get("HTTP_X_AMZ_CONTENT_SHA256", "")
    algorithm = environ.get("HTTP_X_AMZ_SDK_CHECKSUM_ALGORITHM", "").upper()
    body = _Body(LimitedStream(environ["wsgi.input"], length), length, payload, algorithm)
    with keep(iter(body)) as (path, size):
        environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(b""), "0"
        raw = b""
        if body.summed is not None and f"HTTP_X_AMZ_CHECKSUM_{algorithm}" not in environ:
            # moto echoes the checksum it finds in the raw body (a trailer) or else computes over it; it finds
            # this one, the trailer's or the one summed while streaming.
            value = next((v for k, v in body.trailer.items() if k.startswith("x-amz-checksum-")), None)
            value = value or base64.b64encode(body.summed.digest()).decode()
            raw = f"x-amz-checksum-{algorithm.lower()}:{value}\r\n".encode()
        _pending.upload = (BlobContent(path, 0, size, body.md5.hexdigest()), raw)
        try:
            yield
        finally:
            _pending.upload = None


def install() -> None:
    """Have moto's S3 responses take a streamed body (:func:`streamed`) as the request's, in this process."""
    from moto.s3.responses import S3Response

    if getattr(S3Response.setup_class, "_stepml_streamed", False):
        return
    moto_setup = S3Response.setup_class

    def setup_class(response: Any, *args: Any, **kwargs: Any) -> None:
        pending = getattr(_pending, "upload", None)
        if pending is None:
            moto_setup(response, *args, **kwargs)
            return
        # moto decodes an aws-chunked body here (into bytes of its declared length): there is none to decode.
        response._handle_v4_chunk_signatures = lambda _body, _length: b""
        response._handle_encoded_body = lambda _body: b""
        try:
            moto_setup(response, *args, **kwargs)
        finally:
            del response._handle_v4_chunk_signatures, response._handle_encoded_body
        _pending.upload = None  # one request's body
        response.body, response.raw_body = pending

    setup_class._stepml_streamed = True  # type: ignore[attr-defined]
    S3Response.setup_class = setup_class  # type: ignore[method-assign,assignment]
