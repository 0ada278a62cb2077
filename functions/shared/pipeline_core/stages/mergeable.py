"""Mergeable summaries of a column's values, the building blocks of
:class:`~pipeline_core.stages.profile_accumulator.ProfileState`: each is fed in file order, merges with the
summary of the rows that follow it (associative: merging in any grouping gives the one-pass summary) and
round-trips through JSON.

* :class:`HashSet`: the exact set of distinct values, as 64-bit hashes (8 bytes a distinct value);
* :class:`Sample`: a bottom-k sample of the distinct values with their counts and first rows (the whole
  value count while a column has at most ``size`` distinct values);
* :class:`Numbers`: a column's numbers in file order: count, whole or not, minimum, first, last, consecutive.
"""

from __future__ import annotations

import base64
import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

_MULTIPLIER = np.uint64(0x100000001B3)  # FNV-1's 64-bit prime: the polynomial's base
_powers = np.ones(1, dtype=np.uint64)


def _powers_up_to(n: int) -> np.ndarray:
    global _powers
    if len(_powers) < n:
        with np.errstate(over="ignore"):  # powers mod 2**64: uint64 products wrap
            size = max(n, 2 * len(_powers))
            _powers = np.concatenate(([np.uint64(1)], np.cumprod(np.full(size - 1, _MULTIPLIER, dtype=np.uint64))))
    return _powers


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def text_hashes(values: np.ndarray) -> np.ndarray:
    """64-bit hashes of non-empty text values, the same in every process: a polynomial over the UTF-8 bytes
    (mod 2**64, vectorized over pyarrow's buffers) and the length, mixed by splitmix64's finaliser."""
    if not len(values):
        return np.zeros(0, dtype=np.uint64)
    array = pa.array(np.asarray(values, dtype=object), type=pa.large_string())
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    if (lengths == 0).any():
        raise ValueError("text_hashes: empty values are missing values, never hashed")
    spans = data[int(offsets[0]) : int(offsets[-1])].astype(np.uint64)
    position = np.arange(len(spans), dtype=np.int64) - np.repeat(starts - offsets[0], lengths)
    with np.errstate(over="ignore"):
        terms = (spans + np.uint64(1)) * _powers_up_to(int(lengths.max()))[position]
        sums = np.add.reduceat(terms, (starts - offsets[0]).astype(np.intp))
        return _mix(sums ^ (lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)))


def _array(data: str, dtype: type) -> np.ndarray:
    return np.frombuffer(base64.b64decode(data), dtype=dtype).copy()


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


@dataclass
class HashSet:
    """Sorted distinct uint64 hashes; additions are buffered and merged when the buffer grows."""

    sorted: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    pending: list[np.ndarray] = field(default_factory=list)
    pending_size: int = 0

    def add(self, hashes: np.ndarray) -> None:
        self.pending.append(hashes)
        self.pending_size += len(hashes)
        if self.pending_size > max(65_536, len(self.sorted)):
            self.compact()

    def compact(self) -> np.ndarray:
        if self.pending:
            self.sorted = np.unique(np.concatenate([self.sorted, *self.pending]))
            self.pending, self.pending_size = [], 0
        return self.sorted

    def __len__(self) -> int:
        return len(self.compact())

    def merged(self, other: HashSet) -> HashSet:
        return HashSet(np.union1d(self.compact(), other.compact()).astype(np.uint64))

    def to_json(self) -> str:
        return _b64(self.compact().astype("<u8"))

    @classmethod
    def from_json(cls, data: str) -> HashSet:
        return cls(_array(data, np.dtype("<u8").type).astype(np.uint64))


@dataclass
class Sample:
    """Bottom-k value counts: the ``size`` distinct values with the smallest hashes, count and first row."""

    size: int
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    texts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    first_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    truncated: bool = False

    def add(self, hashes: np.ndarray, texts: np.ndarray, counts: np.ndarray, first_rows: np.ndarray) -> None:
        if self.truncated and len(self.hashes):  # only values below the largest kept hash can enter
            keep = hashes <= self.hashes[-1]
            hashes, texts, counts, first_rows = hashes[keep], texts[keep], counts[keep], first_rows[keep]
        if not len(hashes):
            return
        all_hashes = np.concatenate([self.hashes, hashes])
        order = np.argsort(all_hashes, kind="stable")
        all_hashes = all_hashes[order]
        starts = np.flatnonzero(np.concatenate(([True], all_hashes[1:] != all_hashes[:-1])))
        all_counts = np.concatenate([self.counts, counts])[order]
        all_rows = np.concatenate([self.first_rows, first_rows])[order]
        all_texts = np.concatenate([self.texts, texts])[order]
        new_hashes = all_hashes[starts]
        new_counts = np.add.reduceat(all_counts, starts) if len(starts) else all_counts
        new_rows = np.minimum.reduceat(all_rows, starts) if len(starts) else all_rows
        new_texts = all_texts[starts]
        if len(new_hashes) > self.size:
            self.truncated = True
            new_hashes, new_texts = new_hashes[: self.size], new_texts[: self.size]
            new_counts, new_rows = new_counts[: self.size], new_rows[: self.size]
        self.hashes, self.texts, self.counts, self.first_rows = new_hashes, new_texts, new_counts, new_rows

    def merged(self, other: Sample, offset: int) -> Sample:
        result = Sample(self.size, self.hashes, self.texts, self.counts, self.first_rows, self.truncated)
        result.add(other.hashes, other.texts, other.counts, other.first_rows + offset)
        result.truncated = result.truncated or other.truncated
        return result

    def value_counts(self) -> pd.Series:
        """The values' counts as ``Series.value_counts`` orders them (count, then first occurrence)."""
        order = np.argsort(self.first_rows, kind="stable")
        series = pd.Series(self.counts[order], index=pd.Index(self.texts[order], dtype=object), dtype=np.int64)
        return series.sort_values(ascending=False, kind="stable")

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "hashes": _b64(self.hashes.astype("<u8")),
            "texts": [str(t) for t in self.texts],
            "counts": _b64(self.counts.astype("<i8")),
            "first_rows": _b64(self.first_rows.astype("<i8")),
            "truncated": self.truncated,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sample:
        return cls(
            int(data["size"]),
            _array(data["hashes"], np.dtype("<u8").type).astype(np.uint64),
            np.array(data["texts"], dtype=object),
            _array(data["counts"], np.dtype("<i8").type).astype(np.int64),
            _array(data["first_rows"], np.dtype("<i8").type).astype(np.int64),
            bool(data["truncated"]),
        )


@dataclass
class Numbers:
    """A column's values read as numbers (``parse_numbers``), in file order: for identifier and target checks."""

    count: int = 0
    whole: bool = True
    minimum: float = math.inf
    first: float | None = None
    last: float | None = None
    consecutive: bool = True  # every number is the previous one + 1
    distinct: HashSet | None = None  # only where needed (identifier-named columns, the target)

    def add(self, numbers: np.ndarray) -> None:
        if not len(numbers):
            return
        self.whole = self.whole and bool((numbers == np.floor(numbers)).all())
        self.minimum = min(self.minimum, float(numbers.min()))
        steps_ok = bool((np.diff(numbers) == 1).all())
        joined = self.last is None or float(numbers[0]) - self.last == 1
        self.consecutive = self.consecutive and steps_ok and joined
        if self.first is None:
            self.first = float(numbers[0])
        self.last = float(numbers[-1])
        self.count += len(numbers)
        if self.distinct is not None:
            self.distinct.add(np.unique(pd.util.hash_array(numbers + 0.0)).astype(np.uint64))

    def merged(self, other: Numbers) -> Numbers:
        if not other.count:
            return copy.deepcopy(self)
        if not self.count:
            return copy.deepcopy(other)
        distinct = self.distinct.merged(other.distinct) if self.distinct and other.distinct else None
        return Numbers(
            count=self.count + other.count,
            whole=self.whole and other.whole,
            minimum=min(self.minimum, other.minimum),
            first=self.first,
            last=other.last,
            consecutive=self.consecutive
            and other.consecutive
            and self.last is not None
            and other.first is not None
            and other.first - self.last == 1,
            distinct=distinct,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "whole": self.whole,
            "minimum": None if math.isinf(self.minimum) else self.minimum,
            "first": self.first,
            "last": self.last,
            "consecutive": self.consecutive,
            "distinct": self.distinct.to_json() if self.distinct is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Numbers:
        return cls(
            count=data["count"],
            whole=data["whole"],
            minimum=math.inf if data["minimum"] is None else data["minimum"],
            first=data["first"],
            last=data["last"],
            consecutive=data["consecutive"],
            distinct=HashSet.from_json(data["distinct"]) if data["distinct"] is not None else None,
        )
