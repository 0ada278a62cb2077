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
from typing import Any, TypeAlias

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


Texts: TypeAlias = np.ndarray | pa.Array  # text values: an object array of str, or a pyarrow string array (no nulls)


def objects(texts: Texts) -> np.ndarray:
    """The texts as an object array of ``str`` (made only for the few values a summary keeps)."""
    if isinstance(texts, pa.Array):
        return np.array(texts.to_pylist(), dtype=object).reshape(len(texts))
    return np.asarray(texts, dtype=object)


def take(texts: Texts, mask: np.ndarray) -> Texts:
    """The texts where ``mask`` is true."""
    return texts.filter(pa.array(mask, type=pa.bool_())) if isinstance(texts, pa.Array) else texts[mask]


def text_hashes(values: Texts) -> np.ndarray:
    """64-bit hashes of non-empty text values, the same in every process: a polynomial over the UTF-8 bytes
    (mod 2**64, vectorized over pyarrow's buffers) and the length, mixed by splitmix64's finaliser. The same
    hashes for an object array and a pyarrow array of the same texts."""
    if not len(values):
        return np.zeros(0, dtype=np.uint64)
    if isinstance(values, pa.Array):  # its bytes as they are: no Python string is made
        array = values if values.type in (pa.string(), pa.large_string()) else values.cast(pa.large_string())
    else:
        array = pa.array(np.asarray(values, dtype=object), type=pa.large_string())
    width = np.int32 if array.type == pa.string() else np.int64  # read the offsets in place, not a cast copy
    offsets = np.frombuffer(array.buffers()[1], dtype=width)[array.offset : array.offset + len(array) + 1]
    offsets = offsets.astype(np.int64, copy=False)
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
            # a sort and a comparison: np.unique's hash table is several times slower on uint64 (numpy 2.4)
            joined = np.sort(np.concatenate([self.sorted, *self.pending]))
            first = np.empty(len(joined), dtype=bool)
            first[:1] = True
            np.not_equal(joined[1:], joined[:-1], out=first[1:])
            self.sorted = joined[first]
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


def _gather(parts: list[Texts], at: np.ndarray) -> np.ndarray:
    """The texts at positions ``at`` of the parts laid end to end, as an object array of ``str``: only those
    texts become Python strings."""
    result = np.empty(len(at), dtype=object)
    bounds = np.cumsum([0, *(len(p) for p in parts)])
    part_of = np.searchsorted(bounds, at, side="right") - 1
    for i, part in enumerate(parts):
        mine = np.flatnonzero(part_of == i)
        if len(mine):
            where = at[mine] - bounds[i]
            if isinstance(part, pa.Array):
                result[mine] = objects(part.take(pa.array(where, type=pa.int64())))
            else:
                result[mine] = np.asarray(part, dtype=object)[where]
    return result


@dataclass
class Sample:
    """Bottom-k value counts: the ``size`` distinct values with the smallest hashes, count and first row.

    Additions wait in ``pending`` and are merged in when they reach ``size`` values or the sample is read
    (:meth:`compact`; every reader here calls it): merging in any grouping gives the same sample."""

    size: int
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    texts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    first_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cut: bool = False  # values were left out: the sample holds ``size`` of more distinct values
    pending: list[tuple[np.ndarray, Texts, np.ndarray, np.ndarray]] = field(
        default_factory=list, repr=False, compare=False
    )
    pending_size: int = field(default=0, repr=False, compare=False)

    @property
    def truncated(self) -> bool:
        self.compact()
        return self.cut

    def add(self, hashes: np.ndarray, texts: Texts, counts: np.ndarray, first_rows: np.ndarray) -> None:
        """Add distinct values (``hashes`` distinct) with their counts and first rows. Only candidates for the
        bottom-k are made Python strings: those below the largest kept hash once the sample is full, and
        at most ``size`` of the new ones (a value with ``size`` smaller hashes beside it cannot be kept)."""
        if self.cut and len(self.hashes):  # only values below the largest kept hash can enter
            keep = hashes <= self.hashes[-1]
            if not keep.all():
                hashes, texts, counts, first_rows = hashes[keep], take(texts, keep), counts[keep], first_rows[keep]
        if len(hashes) > self.size:
            keep = np.zeros(len(hashes), dtype=bool)
            keep[np.argpartition(hashes, self.size - 1)[: self.size]] = True
            hashes, texts, counts, first_rows = hashes[keep], take(texts, keep), counts[keep], first_rows[keep]
            self.cut = True
        if not len(hashes):
            return
        self.pending.append((hashes, texts, counts, first_rows))  # strings made at compact, for the kept only
        self.pending_size += len(hashes)
        if self.pending_size >= self.size:
            self.compact()

    def compact(self) -> None:
        """Merge the pending values in: per hash the counts summed and the first row the least, the ``size``
        smallest hashes kept."""
        if not self.pending:
            return
        parts = [(self.hashes, self.texts, self.counts, self.first_rows), *self.pending]
        self.pending, self.pending_size = [], 0
        all_hashes = np.concatenate([p[0] for p in parts])
        order = np.argsort(all_hashes, kind="stable")
        all_hashes = all_hashes[order]
        starts = np.flatnonzero(np.concatenate(([True], all_hashes[1:] != all_hashes[:-1])))
        all_counts = np.concatenate([p[2] for p in parts])[order]
        all_rows = np.concatenate([p[3] for p in parts])[order]
        new_hashes = all_hashes[starts]
        new_counts = np.add.reduceat(all_counts, starts) if len(starts) else all_counts
        new_rows = np.minimum.reduceat(all_rows, starts) if len(starts) else all_rows
        if len(new_hashes) > self.size:
            self.cut = True
            new_hashes, starts = new_hashes[: self.size], starts[: self.size]
            new_counts, new_rows = new_counts[: self.size], new_rows[: self.size]
        new_texts = _gather([p[1] for p in parts], order[starts])
        self.hashes, self.texts, self.counts, self.first_rows = new_hashes, new_texts, new_counts, new_rows

    def merged(self, other: Sample, offset: int) -> Sample:
        self.compact()
        other.compact()
        result = Sample(self.size, self.hashes, self.texts, self.counts, self.first_rows, self.cut)
        result.add(other.hashes, other.texts, other.counts, other.first_rows + offset)
        result.compact()
        result.cut = result.cut or other.cut
        return result

    def value_counts(self) -> pd.Series:
        """The values' counts as ``Series.value_counts`` orders them (count, then first occurrence)."""
        self.compact()
        order = np.argsort(self.first_rows, kind="stable")
        series = pd.Series(self.counts[order], index=pd.Index(self.texts[order], dtype=object), dtype=np.int64)
        return series.sort_values(ascending=False, kind="stable")

    def to_json(self) -> dict[str, Any]:
        self.compact()
        return {
            "size": self.size,
            "hashes": _b64(self.hashes.astype("<u8")),
            "texts": [str(t) for t in self.texts],
            "counts": _b64(self.counts.astype("<i8")),
            "first_rows": _b64(self.first_rows.astype("<i8")),
            "truncated": self.cut,
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
