"""PutObject and UploadPart bodies streamed to a blob (stepml.embedded.s3_uploads): moto's own answer, header for
header, and the same object afterwards, for each way a client sends a body."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import uuid
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from stepml.embedded import s3_objects, s3_uploads
from stepml.embedded.blob_keys import BlobValue, current_key
from stepml.embedded.s3_objects import Checksum
from stepml.embedded.s3_uploads import STREAM_MIN, IncompleteBody, streamable, streamed
from tests.conftest import FakeAws

s3_objects.install()
s3_uploads.install()

CONTENT = bytes(range(256)) * (STREAM_MIN // 256 * 3 + 7)  # 3 MiB and a bit: above STREAM_MIN, odd pieces
# Headers moto's answers differ in from one request to the next.
_VARYING = {"x-amzn-requestid", "x-amz-version-id", "last-modified", "date", "x-amz-id-2"}


def _keep(tmp_path: Path) -> Any:
    @contextlib.contextmanager
    def keep(pieces: Iterator[bytes]) -> Iterator[tuple[Path, int]]:
        path = tmp_path / uuid.uuid4().hex
        with open(path, "wb") as handle:
            for piece in pieces:
                handle.write(piece)
        yield path, path.stat().st_size

    return keep


@pytest.fixture
def server(tmp_path: Path) -> Client:
    """moto's web server with the gateway's streaming in front of it (for the bodies it streams)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    moto_app = DomainDispatcherApplication(create_backend_app)
    keep = _keep(tmp_path)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("HTTP_X_STREAM") and streamable(environ):
            with streamed(environ, keep):
                return list(moto_app(environ, start_response))
        return moto_app(environ, start_response)

    return Client(app)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _summed(algorithm: str, content: bytes = CONTENT) -> str:
    checksum = Checksum(algorithm)
    checksum.update(content)
    return _b64(checksum.digest())


def _chunked(content: bytes, signed: bool, trailer: str | None, size: int = 65_536) -> bytes:
    """An aws-chunked body as botocore frames it (signatures are not checked by moto or the stream)."""
    signature = ";chunk-signature=" + "0" * 64 if signed else ""
    framed = bytearray()
    for start in range(0, len(content), size):
        piece = content[start : start + size]
        framed += f"{len(piece):x}{signature}\r\n".encode() + piece + b"\r\n"
    framed += f"0{signature}\r\n".encode()
    if trailer:
        framed += trailer.encode() + b"\r\n"
        if signed:
            framed += b"x-amz-trailer-signature:" + b"0" * 64 + b"\r\n"
    return bytes(framed + b"\r\n")


def _crc32_trailer(content: bytes = CONTENT) -> str:
    return f"x-amz-checksum-crc32:{_b64(zlib.crc32(content).to_bytes(4, 'big'))}"


def _chunked_headers(content: bytes, payload: str, trailer: bool) -> dict[str, str]:
    headers = {
        "x-amz-content-sha256": payload,
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(content)),
    }
    if trailer:
        headers |= {"x-amz-trailer": "x-amz-checksum-crc32", "x-amz-sdk-checksum-algorithm": "CRC32"}
    return headers


def _cases() -> list[tuple[str, dict[str, str], bytes]]:
    md5 = _b64(hashlib.md5(CONTENT, usedforsecurity=False).digest())
    cases: list[tuple[str, dict[str, str], bytes]] = [
        ("plain", {}, CONTENT),
        ("metadata", {"Content-Type": "text/csv", "x-amz-meta-m": "v", "x-amz-tagging": "a=b",
                      "x-amz-server-side-encryption": "AES256", "Cache-Control": "no-cache"}, CONTENT),
        ("content-md5", {"Content-MD5": md5}, CONTENT),
        ("content-md5-bad", {"Content-MD5": _b64(b"0" * 16)}, CONTENT),
        ("unsigned-payload", {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, CONTENT),
    ]  # fmt: skip
    for algorithm in ("CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"):
        asked = {"x-amz-sdk-checksum-algorithm": algorithm}
        cases.append((f"{algorithm}-computed", asked, CONTENT))
        header = f"x-amz-checksum-{algorithm.lower()}"
        cases.append((f"{algorithm}-good", asked | {header: _summed(algorithm)}, CONTENT))
        cases.append((f"{algorithm}-bad", asked | {header: _summed(algorithm, b"other")}, CONTENT))
    for payload, signed in (("STREAMING-UNSIGNED-PAYLOAD-TRAILER", False),
                            ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", True)):  # fmt: skip
        headers = _chunked_headers(CONTENT, payload, trailer=True)
        cases.append((payload, headers, _chunked(CONTENT, signed, _crc32_trailer())))
        cases.append((f"{payload}-bad", headers, _chunked(CONTENT, signed, _crc32_trailer(b"other"))))
    signed_plain = _chunked_headers(CONTENT, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", trailer=False)
    cases.append(("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", signed_plain, _chunked(CONTENT, True, None)))
    return cases


def _answer(server: Client, path: str, headers: dict[str, str], body: bytes, stream: bool) -> tuple[int, dict, bytes]:
    response = server.put(path, data=body, headers=headers | ({"x-stream": "1"} if stream else {}))
    kept = {name.lower(): value for name, value in response.headers.items() if name.lower() not in _VARYING}
    return response.status_code, kept, response.get_data()


def _read_back(server: Client, path: str) -> tuple[int, dict, bytes]:
    response = server.get(path, headers={"x-amz-checksum-mode": "ENABLED"})
    kept = {name.lower(): value for name, value in response.headers.items() if name.lower() not in _VARYING}
    return response.status_code, kept, response.get_data()


@pytest.mark.parametrize("versioned", [False, True])
@pytest.mark.parametrize("case", _cases(), ids=lambda case: case[0])
def test_a_streamed_put_is_moto_s_answer_and_object(
    aws: FakeAws, server: Client, case: tuple[str, dict[str, str], bytes], versioned: bool
) -> None:
    _name, headers, body = case
    if versioned:
        aws.s3.put_bucket_versioning(Bucket=aws.bucket, VersioningConfiguration={"Status": "Enabled"})
    expected = _answer(server, f"/{aws.bucket}/moto.bin", headers, body, stream=False)
    assert _answer(server, f"/{aws.bucket}/streamed.bin", headers, body, stream=True) == expected
    if expected[0] != 200:
        return
    streamed_key = current_key(aws.bucket, "streamed.bin")
    assert streamed_key is not None and isinstance(streamed_key._value_buffer, BlobValue)  # it was streamed
    assert _read_back(server, f"/{aws.bucket}/streamed.bin") == _read_back(server, f"/{aws.bucket}/moto.bin")
    assert (streamed_key.version_id != "null") is versioned


@pytest.mark.parametrize("case", _cases()[:1] + _cases()[5:7] + _cases()[-5:-4], ids=lambda case: case[0])
def test_a_streamed_upload_part_is_moto_s_answer_and_completes_to_the_same_object(
    aws: FakeAws, server: Client, case: tuple[str, dict[str, str], bytes]
) -> None:
    _name, headers, body = case
    answers, etags = [], []
    for key, stream in (("moto.bin", False), ("streamed.bin", True)):
        upload = aws.s3.create_multipart_upload(Bucket=aws.bucket, Key=key)["UploadId"]
        path = f"/{aws.bucket}/{key}?uploadId={upload}&partNumber=1"
        answers.append(_answer(server, path, headers, body, stream))
        etags.append(answers[-1][1].get("etag"))
        parts = {"Parts": [{"ETag": etags[-1], "PartNumber": 1}]}
        aws.s3.complete_multipart_upload(Bucket=aws.bucket, Key=key, UploadId=upload, MultipartUpload=parts)
    assert answers[1] == answers[0] and answers[0][0] == 200
    moto_object, streamed_object = (aws.s3.get_object(Bucket=aws.bucket, Key=k) for k in ("moto.bin", "streamed.bin"))
    assert streamed_object["Body"].read() == moto_object["Body"].read() == CONTENT
    assert streamed_object["ETag"] == moto_object["ETag"]


def test_small_bodies_copies_and_other_operations_keep_moto_s_path() -> None:
    def environ(query: str = "", length: int = STREAM_MIN, **headers: str) -> dict[str, Any]:
        return {"REQUEST_METHOD": "PUT", "QUERY_STRING": query, "CONTENT_LENGTH": str(length), **headers}

    signed = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"

    assert streamable(environ())
    assert streamable(environ("uploadId=u&partNumber=2&x-id=UploadPart"))
    assert streamable(environ("X-Amz-Signature=s&X-Amz-Date=d"))
    assert not streamable(environ(length=STREAM_MIN - 1))
    assert not streamable(environ(HTTP_X_AMZ_COPY_SOURCE="b/k"))
    assert not streamable(environ("tagging"))
    assert not streamable({"REQUEST_METHOD": "PUT", "QUERY_STRING": ""})  # no Content-Length
    assert not streamable(environ(HTTP_X_AMZ_CONTENT_SHA256="STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"))
    # moto sums an aws-chunked body without a trailer as it came (the framing included): its path answers that
    chunked = environ(HTTP_X_AMZ_CONTENT_SHA256=signed, HTTP_X_AMZ_SDK_CHECKSUM_ALGORITHM="CRC32")
    assert not streamable(chunked)
    assert streamable(chunked | {"HTTP_X_AMZ_TRAILER": "x-amz-checksum-crc32"})
    assert streamable(chunked | {"HTTP_X_AMZ_CHECKSUM_CRC32": "AAAAAA=="})


def test_a_body_cut_short_is_refused_and_leaves_no_pending_body(tmp_path: Path) -> None:
    import io

    for body, headers in (
        (CONTENT[:-10], {}),
        (_chunked(CONTENT, True, None)[:-100], _chunked_headers(CONTENT, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", False)),
    ):
        environ = {"REQUEST_METHOD": "PUT", "QUERY_STRING": "", "CONTENT_LENGTH": str(len(body) + 10),
                   "wsgi.input": io.BytesIO(body)}  # fmt: skip
        environ |= {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
        with pytest.raises(IncompleteBody), streamed(environ, _keep(tmp_path)):
            pass
        assert getattr(s3_uploads._pending, "upload", None) is None


@pytest.mark.parametrize("condition", [{"If-None-Match": "*"}, {"If-Match": '"nope"'}])
def test_a_streamed_conditional_put_on_an_existing_key_is_moto_s_refusal(
    aws: FakeAws, server: Client, condition: dict[str, str]
) -> None:
    aws.s3.put_object(Bucket=aws.bucket, Key="there.bin", Body=b"old")
    expected = _answer(server, f"/{aws.bucket}/there.bin", condition, CONTENT, stream=False)
    assert _answer(server, f"/{aws.bucket}/there.bin", condition, CONTENT, stream=True) == expected
    assert expected[0] >= 400  # moto's web server answers 403 without a body here, where S3 answers 412
    assert aws.s3.get_object(Bucket=aws.bucket, Key="there.bin")["Body"].read() == b"old"
