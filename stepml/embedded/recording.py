"""Write each change the local AWS accepts through to its durable store, before the caller hears back.

The gateway in front of moto hands every successful S3 or DynamoDB write here. Rather than decode each
request's effect (UpdateItem expressions, copies, multipart uploads), the recorder reads the changed
objects and items back from moto once the write is applied and stores what is there now. Reading back
under a per-key lock keeps the disk in the order moto applied the writes: whichever sync of a key runs
last reads moto's latest value.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote
from xml.etree import ElementTree

from stepml.embedded.blob_keys import KeyReader, back_with_blob, current_key, whole_blob
from stepml.embedded.durable import DurableStore, item_key
from stepml.embedded.template import ACCOUNT_ID, REGION, TableSpec

# Query parameters of S3 PUTs and DELETEs that change something other than an object's content.
_SUBRESOURCES = ("partNumber", "uploadId", "uploads", "tagging", "acl", "retention", "legal-hold", "versioning")
# moto keeps an object's user metadata (S3's Metadata) under these names
_USER_METADATA = "x-amz-meta-"


def s3_location(environ: dict[str, Any], buckets: set[str]) -> tuple[str, str] | None:
    """The (bucket, key) a request to one of ``buckets`` addresses, by virtual-host or path style."""
    host = environ.get("HTTP_HOST", "")
    key = unquote(environ.get("PATH_INFO", "")).lstrip("/")
    bucket = next((b for b in buckets if host.startswith(f"{b}.")), None)
    if bucket is None:
        first, _, key = key.partition("/")
        bucket = first if first in buckets else None
    return (bucket, key) if bucket else None


def s3_object_written(environ: dict[str, Any]) -> bool:
    """Whether a successful request finished writing an object (PutObject, CopyObject, a completed upload)."""
    method, query = environ.get("REQUEST_METHOD"), parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if method == "PUT":
        return not any(name in query for name in _SUBRESOURCES)
    return method == "POST" and "uploadId" in query


def current_item(table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """The item ``key`` names in ``table`` as moto holds it now, in the shape a boto3 client's GetItem
    returns it (attribute values typed, binaries as bytes), or None."""
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.utilities import DynamoJsonEncoder

    item = dynamodb_backends[ACCOUNT_ID][REGION].get_item(table, key)
    if item is None:
        return None
    # moto's own answer to GetItem is this JSON (binaries base64-encoded); boto3 would decode those
    attributes: dict[str, Any] = json.loads(json.dumps(item.describe_attrs()["Item"], cls=DynamoJsonEncoder))
    return {name: _binaries_decoded(value) for name, value in attributes.items()}


def _binaries_decoded(value: dict[str, Any]) -> dict[str, Any]:
    """An attribute value with its B and BS members as bytes, as botocore parses them."""
    kind, content = next(iter(value.items()))
    if kind == "B":
        return {kind: base64.b64decode(content)}
    if kind == "BS":
        return {kind: [base64.b64decode(member) for member in content]}
    if kind == "M":
        return {kind: {name: _binaries_decoded(member) for name, member in content.items()}}
    if kind == "L":
        return {kind: [_binaries_decoded(member) for member in content]}
    return value


class StateRecorder:
    """Keeps ``store`` in step with the S3 objects and DynamoDB items of the stack's buckets and tables."""

    def __init__(
        self, store: DurableStore, client: Callable[[str], Any], buckets: set[str], tables: dict[str, TableSpec]
    ) -> None:
        self.store = store
        self._client = client
        self.buckets = buckets
        self._tables = {spec.name: spec for spec in tables.values()}
        self._locks = [threading.Lock() for _ in range(64)]

    def _lock_for(self, *parts: str) -> threading.Lock:
        return self._locks[hash(parts) % len(self._locks)]

    # -- S3 ---------------------------------------------------------------------------------------------
    def s3_keys_changed(self, environ: dict[str, Any], body: bytes) -> list[tuple[str, str]]:
        """The objects a successful S3 request may have changed (none for bucket settings, parts, tags)."""
        location = s3_location(environ, self.buckets)
        if location is None:
            return []
        bucket, key = location
        method, query = environ.get("REQUEST_METHOD"), parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if key and s3_object_written(environ):
            return [(bucket, key)]
        if key and method == "DELETE" and "uploadId" not in query and "tagging" not in query:
            return [(bucket, key)]
        if not key and method == "POST" and "delete" in query:  # DeleteObjects
            root = ElementTree.fromstring(body)
            return [(bucket, element.text or "") for element in root.iter() if element.tag.endswith("Key")]
        return []

    def sync_objects(self, changed: list[tuple[str, str]]) -> None:
        """Store each object as moto now has it (deleted when moto has none), then let moto's object read its
        content from the stored file: the state directory holds the one copy, and memory none.

        The object is read from moto's backend in this process, in pieces, rather than through GetObject,
        which would hold it in memory (twice) while it is answered.
        """
        for bucket, key in changed:
            with self._lock_for(bucket, key):
                found = current_key(bucket, key)
                if found is None:
                    self.store.delete_object(bucket, key)
                    continue
                etag = found.etag.strip('"')  # moto hashes a new object's content in pieces, once
                content_type = found.metadata.get("Content-Type")
                metadata = {
                    name[len(_USER_METADATA) :]: value
                    for name, value in found.metadata.items()
                    if name.lower().startswith(_USER_METADATA)
                }
                whole = whole_blob(found)  # a copy of a stored object reads the same blob: only a row to write
                stored = (
                    self.store.put_object_stored(whole.name, bucket, key, content_type, metadata, etag)
                    if whole is not None and whole == self.store.blob_path(whole.name)
                    else None
                )
                if stored is None:
                    stored = self.store.put_object_from(KeyReader(found), bucket, key, content_type, metadata, etag)
                back_with_blob(found, self.store.blob_path(stored.sha256), stored.size)

    # -- DynamoDB ---------------------------------------------------------------------------------------
    def dynamodb_keys_changed(self, operation: str, request: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Table name → the keys a successful write ``operation`` (PutItem, BatchWriteItem, ...) touched."""
        touched: dict[str, list[dict[str, Any]]] = {}

        def add(table: str | None, item_or_key: dict[str, Any] | None) -> None:
            spec = self._tables.get(table or "")
            if spec is None or not item_or_key:
                return  # not one of the stack's tables: the local AWS keeps only those
            names = [part["AttributeName"] for part in spec.key_schema]
            touched.setdefault(spec.name, []).append({n: item_or_key[n] for n in names if n in item_or_key})

        if operation in {"PutItem"}:
            add(request.get("TableName"), request.get("Item"))
        elif operation in {"UpdateItem", "DeleteItem"}:
            add(request.get("TableName"), request.get("Key"))
        elif operation == "BatchWriteItem":
            for table, writes in (request.get("RequestItems") or {}).items():
                for write in writes:
                    add(
                        table,
                        (write.get("PutRequest") or {}).get("Item") or (write.get("DeleteRequest") or {}).get("Key"),
                    )
        elif operation == "TransactWriteItems":
            for action in request.get("TransactItems") or []:
                for kind, field in (("Put", "Item"), ("Update", "Key"), ("Delete", "Key")):
                    if kind in action:
                        add(action[kind].get("TableName"), action[kind].get(field))
        return touched

    def sync_items(self, touched: dict[str, list[dict[str, Any]]]) -> None:
        """Store each touched item as moto now has it (deleted when moto has none).

        The items are read from moto's backend in this process, as the objects are, rather than through
        BatchGetItem: a request to itself, serialised and parsed by boto3 on one side and moto on the other,
        cost the local AWS about as much CPU per item as the write it records (the prediction log writes an
        item per request served).
        """
        for table, keys in touched.items():
            unique = {item_key(k): k for k in keys}
            spec = self._tables[table]
            self.store.put_items(
                table, [(k, current_item(table, key)) for k, key in unique.items()], spec.ttl_attribute
            )
