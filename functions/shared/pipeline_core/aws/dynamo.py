"""Plain-Python <-> DynamoDB attribute conversion (floats travel as Decimal, as DynamoDB requires)."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _to_dynamo_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)  # DynamoDB numbers cannot hold NaN or infinity
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _to_dynamo_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_dynamo_value(v) for v in value]
    return value


def _from_dynamo_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo_value(v) for v in value]
    return value


def to_item(record: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item (attribute-value form) from a JSON-like dict; None values are left out."""
    return {k: _serializer.serialize(_to_dynamo_value(v)) for k, v in record.items() if v is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    """A JSON-like dict from a DynamoDB item."""
    return {k: _from_dynamo_value(_deserializer.deserialize(v)) for k, v in item.items()}
