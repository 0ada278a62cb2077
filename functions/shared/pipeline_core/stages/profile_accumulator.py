"""What ValidateData learns from a dataset, accumulated chunk by chunk: a small typed state, mergeable, JSON.

A :class:`ProfileState` is fed normalized chunks of consecutive rows (:meth:`ProfileState.feed`), two states
of consecutive parts of a file merge into the state of the whole (:meth:`ProfileState.merge`, associative:
row positions of the right part are shifted by the left part's row count), and a state round-trips through
JSON (:meth:`ProfileState.to_json`, :meth:`ProfileState.from_json`) so shards validated apart (a Step
Functions Distributed Map) can be reduced into one. :mod:`pipeline_core.stages.profile_from_state` turns the
final state into the :class:`~pipeline_core.models.DataProfile` the whole-table path gives, with the same
messages.

Per column the state holds counts (missing, "None"/"NA" tokens, present values, numbers, words), the first
value and the first rows of the values a message may name, and two sets of values:

* ``distinct``: the 64-bit hashes (``pandas.util.hash_array``) of every distinct present value: exact
  distinct counts (two values share a hash with probability ~n²/2⁶⁵), 8 bytes per distinct value;
* ``values``: the value counts of the ``SAMPLE_SIZE`` distinct values with the smallest hashes, each with
  its first row (a bottom-k sample: merging two keeps exactly the bottom-k of the union). When a column has
  at most ``SAMPLE_SIZE`` distinct values this is its whole value count, in file order, and everything
  derived from it (date formats, examples) is exactly the whole-table result; beyond that it is a uniform
  sample of the distinct values, and the date format is chosen on it (documented in docs/data-scale.md).

The target keeps every distinct value as written with its count and first three rows (``TargetState``, up to
``TARGET_VALUES`` distinct values; a regression target beyond that keeps only its numbers' summary).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pyarrow_lib
import pyarrow.compute as pc

from pipeline_core.stages.column_roles import (
    BOOLEAN_TOKENS,
    FALSE_TOKENS,
    THOUSANDS,
    TRUE_TOKENS,
    is_identifier_name,
    parse_numbers,
)
from pipeline_core.stages.csv_chunks import SOFT_MISSING_TEXTS
from pipeline_core.stages.mergeable import HashSet, Numbers, Sample, Texts, objects, take, text_hashes

SAMPLE_SIZE = 4_096
TARGET_VALUES = 100_000
MAX_EXAMPLES = 5
STATE_FORMAT = 1


Example = tuple[int, str]  # (row position from 0, the value as read)


def merge_first(a: Example | None, b: Example | None) -> Example | None:
    """The earlier of two examples (None: none)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a[0] <= b[0] else b


_BOOLEAN = pyarrow_lib.array(sorted(BOOLEAN_TOKENS), type=pyarrow_lib.string())
_TRUE_FALSE = pyarrow_lib.array(sorted(TRUE_TOKENS | FALSE_TOKENS), type=pyarrow_lib.string())


def _among(values: pyarrow_lib.Array, tokens: pyarrow_lib.Array) -> np.ndarray:
    return np.asarray(pc.is_in(values, value_set=tokens), dtype=bool)


_PLAIN_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


def _arrow(texts: Texts) -> pyarrow_lib.Array:
    """Distinct texts as a pyarrow string array (the streamed reader's dictionary already is one)."""
    if isinstance(texts, pyarrow_lib.ChunkedArray):
        return texts.combine_chunks()
    if isinstance(texts, pyarrow_lib.Array):
        return texts
    return pyarrow_lib.array(np.asarray(texts, dtype=object), type=pyarrow_lib.string())


def _plain_numbers(texts: pyarrow_lib.Array) -> tuple[np.ndarray, np.ndarray]:
    """(numbers, plain): the plain decimal numbers among distinct texts (the bulk of a numeric column) cast
    by pyarrow, NaN elsewhere; the rest are read by :meth:`ColumnState._facts`.

    pyarrow's cast reads exactly the texts ``_PLAIN_NUMBER`` matches, and "inf"/"nan" spellings besides: so
    the whole column is cast at once, and only a text read as infinite or NaN is matched against the pattern
    ("1e400" is plain and infinite; "inf" is not plain). A column with any other text is matched first."""
    try:
        numbers = np.array(pc.cast(texts, pyarrow_lib.float64()), dtype=float)
    except pyarrow_lib.ArrowInvalid:
        plain = np.asarray(pc.match_substring_regex(texts, _PLAIN_NUMBER), dtype=bool)
        numbers = np.full(len(texts), np.nan)
        if plain.any():
            numbers[plain] = np.asarray(pc.cast(take(texts, plain), pyarrow_lib.float64()))
        return numbers, plain
    plain = np.isfinite(numbers)
    if not plain.all():
        odd = ~plain
        plain[odd] = np.asarray(pc.match_substring_regex(take(texts, odd), _PLAIN_NUMBER), dtype=bool)
        numbers[~plain] = np.nan
    return numbers, plain


Facts = tuple[float, int, bool]  # a text's number (parse_numbers, NaN: none), words, whether float() reads it
FACTS_KEPT = 4_096  # texts whose facts a column remembers (a categorical column's levels recur in every piece)
_GAPS = re.compile(r"\s+")  # what pandas' str.count(r"\s+") counts on text


def first_rows_of(present_codes: np.ndarray, positions: np.ndarray, n: int) -> np.ndarray:
    """Each of ``n`` distinct values' first position among ``positions`` (the rows with a value,
    ``present_codes`` their codes)."""
    if len(present_codes):
        # codes numbered in order of first occurrence (dictionary_encode, factorize): a value first occurs
        # where the running maximum grows
        before = np.maximum.accumulate(present_codes)
        grows = np.empty(len(present_codes), dtype=bool)
        grows[0] = True
        grows[1:] = present_codes[1:] > before[:-1]
        if int(grows.sum()) == n and np.array_equal(present_codes[grows], np.arange(n)):
            return positions[grows].astype(np.int64)
    first_at = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_at, present_codes, positions)
    return first_at


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass
class ColumnState:
    """One column's accumulated profile (see the module docstring)."""

    track_numbers: bool = False
    rows: int = 0
    missing: int = 0  # NA after normalize (empty, "?", "null", ...)
    soft: dict[str, list[int]] = field(default_factory=dict)  # "None"/"NA" as written -> [count, first row]
    present: int = 0  # values that are neither missing nor "None"/"NA"
    numbers: int = 0  # of those, numbers (thousands separators allowed)
    words: int = 0  # of the non-numbers, words (whitespace-separated parts) in all
    all_boolean_tokens: bool = True  # every present value is true/false (any case)
    grouped: int = 0  # present values written with thousands separators
    first_value: Example | None = None  # first present value
    first_any: Example | None = None  # first value that is not missing (may be "None"/"NA")
    first_non_number: Example | None = None
    first_not_boolean: Example | None = None  # first present value that is not a true/false/yes/no/1/0 token
    uncoercible: int = 0  # present values a float coercion rejects (after separators are removed)
    uncoercible_examples: list[Example] = field(default_factory=list)
    infinite: int = 0
    infinite_examples: list[Example] = field(default_factory=list)
    distinct: HashSet = field(default_factory=HashSet)
    values: Sample = field(default_factory=lambda: Sample(SAMPLE_SIZE))
    grouped_values: Sample = field(default_factory=lambda: Sample(SAMPLE_SIZE))
    number_summary: Numbers = field(default_factory=Numbers)
    # not state: a cache of the facts of texts that are not plain numbers (see _facts), never serialised
    known: dict[str, Facts] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.track_numbers and self.number_summary.distinct is None:
            self.number_summary.distinct = HashSet()

    def feed(self, column: np.ndarray, row0: int) -> None:
        """Add a chunk of this column (an object array of normalized text, None for missing) whose first row
        is ``row0``."""
        codes, uniques = pd.factorize(column, sort=False, use_na_sentinel=True)
        self.feed_codes(codes, np.asarray(uniques, dtype=object), row0)

    def feed_codes(self, codes: np.ndarray, texts: Texts, row0: int, lowered: pyarrow_lib.Array | None = None) -> None:
        """Add a chunk given as each row's index into ``texts`` (-1: missing), the distinct normalized values
        in order of first occurrence (``lowered``: the same lower-cased, if the caller has them). The work is
        done once per distinct value, weighted by its count, in pyarrow and numpy kernels: a value becomes a
        Python string only where the state keeps it (an example, the bottom-k sample)."""
        texts = _arrow(texts)
        self.rows += len(codes)
        positions = np.flatnonzero(codes >= 0)
        self.missing += len(codes) - len(positions)
        if not len(texts):
            return
        present_codes = codes[positions]
        counts = np.bincount(present_codes, minlength=len(texts)).astype(np.int64)
        rows = first_rows_of(present_codes, positions, len(texts)) + row0  # first row of each distinct value
        lowered = pc.utf8_lower(texts) if lowered is None else lowered
        soft = _among(lowered, SOFT_MISSING_TEXTS)
        first = int(np.argmin(rows))
        self.first_any = merge_first(self.first_any, (int(rows[first]), texts[first].as_py()))
        keep = ~soft
        if soft.any():
            for i in np.flatnonzero(soft):
                entry = self.soft.setdefault(texts[int(i)].as_py(), [0, int(rows[i])])
                entry[0] += int(counts[i])
            if not keep.any():
                return
            texts, lowered, counts, rows = take(texts, keep), take(lowered, keep), counts[keep], rows[keep]
        self.present += int(counts.sum())
        first = int(np.argmin(rows))
        self.first_value = merge_first(self.first_value, (int(rows[first]), texts[first].as_py()))
        numbers, plain = _plain_numbers(texts)
        others = np.flatnonzero(~plain)  # texts that are not plain numbers: few, or few distinct
        facts = self._facts(objects(take(texts, ~plain))) if len(others) else []
        numbers[others] = [f[0] for f in facts]
        is_number = ~np.isnan(numbers)
        non_numbers = others[np.isnan(numbers[others])]
        facts_of_non_numbers = [f for f in facts if math.isnan(f[0])]
        self.numbers += int(counts[is_number].sum())
        if len(non_numbers):
            at = int(np.argmin(np.where(is_number, np.iinfo(np.int64).max, rows)))
            self.first_non_number = merge_first(self.first_non_number, (int(rows[at]), texts[at].as_py()))
        if self.all_boolean_tokens:
            self.all_boolean_tokens = bool(_among(lowered, _BOOLEAN).all())
        wrong = ~_among(lowered, _TRUE_FALSE) if self.first_not_boolean is None else None  # later rows come later
        if wrong is not None and wrong.any():
            at = int(np.argmin(np.where(wrong, rows, np.iinfo(np.int64).max)))
            self.first_not_boolean = merge_first(self.first_not_boolean, (int(rows[at]), texts[at].as_py()))
        if keep.all():
            row_codes = np.full(len(codes), -1, dtype=np.int64)  # per row: index into texts (-1: no value)
            row_codes[positions] = present_codes
        else:
            value_codes = np.full(len(keep), -1, dtype=np.int64)
            value_codes[keep] = np.arange(int(keep.sum()))
            row_codes = np.full(len(codes), -1, dtype=np.int64)
            row_codes[positions] = value_codes[present_codes]
        rejected = np.zeros(len(texts), dtype=bool)
        rejected[non_numbers] = [not f[2] for f in facts_of_non_numbers]
        self._feed_coercion(texts, numbers, rejected, row_codes, row0)
        if is_number.any():
            in_rows = row_codes[row_codes >= 0]
            self.number_summary.add(numbers[in_rows][is_number[in_rows]])
        hashes = text_hashes(texts)
        self.distinct.add(hashes)
        self.values.add(hashes, texts, counts, rows)
        if len(non_numbers):  # numbers are one word each
            words = np.array([f[1] for f in facts_of_non_numbers], dtype=np.int64)
            self.words += int((words * counts[non_numbers]).sum())
        self.words += int(counts[is_number].sum())
        with_comma = np.asarray(pc.match_substring(texts, ","), dtype=bool)
        if with_comma.any():
            grouped = with_comma.copy()
            grouped[with_comma] = [bool(THOUSANDS.match(t)) for t in objects(take(texts, with_comma))]
            if grouped.any():
                self.grouped += int(counts[grouped].sum())
                self.grouped_values.add(hashes[grouped], take(texts, grouped), counts[grouped], rows[grouped])

    def _facts(self, texts: Sequence[str]) -> list[Facts]:
        """The facts of distinct texts that are not plain numbers: ``parse_numbers``' number (thousands
        separators, "inf", ...), the word count (pandas' ``str.count`` of whitespace runs, + 1) and whether a float
        coercion reads it. Each is worked out once per column and remembered (up to ``FACTS_KEPT`` texts)."""
        unknown = [t for t in texts if t not in self.known]
        found: dict[str, Facts] = {}
        if unknown:
            numbers = parse_numbers(pd.Series(unknown, dtype=object)).to_numpy(dtype=float)
            found = {
                t: (float(n), len(_GAPS.findall(t)) + 1, _is_float(t)) for t, n in zip(unknown, numbers, strict=True)
            }
            if len(self.known) < FACTS_KEPT:
                self.known.update(found)
        return [self.known[t] if t in self.known else found[t] for t in texts]

    def _feed_coercion(
        self, texts: pyarrow_lib.Array, numbers: np.ndarray, rejected: np.ndarray, row_codes: np.ndarray, row0: int
    ) -> None:
        """What the pandera schema would reject if the column is numeric: values a float coercion cannot read
        (``rejected``; thousands separators removed, as read_values does) and infinite values; ``row_codes``:
        each row's index into ``texts`` (-1: not a present value)."""
        infinite = np.isinf(numbers)
        for bad, attribute in ((rejected, "uncoercible"), (infinite, "infinite")):
            if not bad.any():
                continue
            hit = np.zeros(len(row_codes), dtype=bool)
            hit[row_codes >= 0] = bad[row_codes[row_codes >= 0]]
            positions = np.flatnonzero(hit)
            setattr(self, attribute, getattr(self, attribute) + len(positions))
            examples: list[Example] = getattr(self, f"{attribute}_examples")
            room = MAX_EXAMPLES - len(examples)
            examples += [(row0 + int(p), texts[int(row_codes[p])].as_py()) for p in positions[: max(room, 0)]]

    def merged(self, other: ColumnState, offset: int) -> ColumnState:
        """This column's state followed by ``other`` (whose rows start ``offset`` rows later)."""

        def shift(example: Example | None) -> Example | None:
            return None if example is None else (example[0] + offset, example[1])

        soft = {k: list(v) for k, v in self.soft.items()}
        for value, (count, first) in other.soft.items():
            entry = soft.setdefault(value, [0, first + offset])
            entry[0] += count
        return ColumnState(
            track_numbers=self.track_numbers,
            rows=self.rows + other.rows,
            missing=self.missing + other.missing,
            soft=soft,
            present=self.present + other.present,
            numbers=self.numbers + other.numbers,
            words=self.words + other.words,
            all_boolean_tokens=self.all_boolean_tokens and other.all_boolean_tokens,
            grouped=self.grouped + other.grouped,
            first_value=merge_first(self.first_value, shift(other.first_value)),
            first_any=merge_first(self.first_any, shift(other.first_any)),
            first_non_number=merge_first(self.first_non_number, shift(other.first_non_number)),
            first_not_boolean=merge_first(self.first_not_boolean, shift(other.first_not_boolean)),
            uncoercible=self.uncoercible + other.uncoercible,
            uncoercible_examples=(self.uncoercible_examples + [(r + offset, v) for r, v in other.uncoercible_examples])[
                :MAX_EXAMPLES
            ],
            infinite=self.infinite + other.infinite,
            infinite_examples=(self.infinite_examples + [(r + offset, v) for r, v in other.infinite_examples])[
                :MAX_EXAMPLES
            ],
            distinct=self.distinct.merged(other.distinct),
            values=self.values.merged(other.values, offset),
            grouped_values=self.grouped_values.merged(other.grouped_values, offset),
            number_summary=self.number_summary.merged(other.number_summary),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "track_numbers": self.track_numbers,
            "rows": self.rows,
            "missing": self.missing,
            "soft": self.soft,
            "present": self.present,
            "numbers": self.numbers,
            "words": self.words,
            "all_boolean_tokens": self.all_boolean_tokens,
            "grouped": self.grouped,
            "first_value": self.first_value,
            "first_any": self.first_any,
            "first_non_number": self.first_non_number,
            "first_not_boolean": self.first_not_boolean,
            "uncoercible": self.uncoercible,
            "uncoercible_examples": self.uncoercible_examples,
            "infinite": self.infinite,
            "infinite_examples": self.infinite_examples,
            "distinct": self.distinct.to_json(),
            "values": self.values.to_json(),
            "grouped_values": self.grouped_values.to_json(),
            "number_summary": self.number_summary.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ColumnState:
        def example(item: Sequence[Any] | None) -> Example | None:
            return None if item is None else (int(item[0]), str(item[1]))

        return cls(
            track_numbers=data["track_numbers"],
            rows=data["rows"],
            missing=data["missing"],
            soft={str(k): [int(v[0]), int(v[1])] for k, v in data["soft"].items()},
            present=data["present"],
            numbers=data["numbers"],
            words=data["words"],
            all_boolean_tokens=data["all_boolean_tokens"],
            grouped=data["grouped"],
            first_value=example(data["first_value"]),
            first_any=example(data["first_any"]),
            first_non_number=example(data["first_non_number"]),
            first_not_boolean=example(data["first_not_boolean"]),
            uncoercible=data["uncoercible"],
            uncoercible_examples=[(int(r), str(v)) for r, v in data["uncoercible_examples"]],
            infinite=data["infinite"],
            infinite_examples=[(int(r), str(v)) for r, v in data["infinite_examples"]],
            distinct=HashSet.from_json(data["distinct"]),
            values=Sample.from_json(data["values"]),
            grouped_values=Sample.from_json(data["grouped_values"]),
            number_summary=Numbers.from_json(data["number_summary"]),
        )

    @property
    def soft_count(self) -> int:
        return sum(count for count, _ in self.soft.values())


@dataclass
class TargetState:
    """The target's distinct values as written (NA excluded): count and first three rows each."""

    values: dict[str, list[int]] = field(default_factory=dict)  # value -> [count, row, row, row]
    overflow: bool = False  # more than TARGET_VALUES distinct values: ``values`` no longer kept

    def feed_codes(self, codes: np.ndarray, uniques: Texts, row0: int) -> None:
        """Add a chunk of the target given as codes into its distinct values (-1: missing)."""
        if self.overflow:
            return
        positions = np.flatnonzero(codes >= 0)
        codes = codes[positions]
        if not len(codes):
            return
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
        for i, value in enumerate(objects(uniques).tolist()):
            members = positions[order[bounds[i] : bounds[i + 1]]]
            entry = self.values.get(value)
            if entry is None:
                if len(self.values) >= TARGET_VALUES:
                    self.values, self.overflow = {}, True
                    return
                entry = self.values[value] = [0]
            entry[0] += len(members)
            if len(entry) < 4:
                entry.extend(int(row0 + p) for p in members[: 4 - len(entry)])

    def merged(self, other: TargetState, offset: int) -> TargetState:
        if self.overflow or other.overflow:
            return TargetState({}, True)
        values = {k: list(v) for k, v in self.values.items()}
        for value, (count, *rows) in other.values.items():
            entry = values.setdefault(value, [0])
            entry[0] += count
            if len(entry) < 4:
                entry.extend(r + offset for r in rows[: 4 - len(entry)])
        if len(values) > TARGET_VALUES:
            return TargetState({}, True)
        return TargetState(values)

    def to_json(self) -> dict[str, Any]:
        return {"values": self.values, "overflow": self.overflow}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TargetState:
        return cls({str(k): [int(x) for x in v] for k, v in data["values"].items()}, bool(data["overflow"]))


@dataclass
class ProfileState:
    """A dataset's (or a consecutive part's) accumulated profile: its columns in file order and the target."""

    names: list[str]
    target: str
    rows: int = 0
    columns: dict[str, ColumnState] = field(default_factory=dict)
    target_values: TargetState = field(default_factory=TargetState)

    def __post_init__(self) -> None:
        for name in self.names:
            if name not in self.columns:
                self.columns[name] = ColumnState(track_numbers=name == self.target or is_identifier_name(name))

    def feed(self, chunk: pd.DataFrame) -> None:
        """Add the next chunk of rows (normalized text, columns as in the header)."""
        chunk = chunk.reset_index(drop=True)
        for name in self.names:
            codes, uniques = pd.factorize(chunk[name].to_numpy(dtype=object, na_value=None), use_na_sentinel=True)
            self.feed_codes(name, codes, np.asarray(uniques, dtype=object))
        self.rows += len(chunk)

    def feed_codes(self, name: str, codes: np.ndarray, texts: Texts, lowered: pyarrow_lib.Array | None = None) -> None:
        """Add column ``name`` of the next chunk as codes into its distinct values (see
        :meth:`ColumnState.feed_codes`); call for every column, then :meth:`advance`."""
        self.columns[name].feed_codes(codes, texts, self.rows, lowered)
        if name == self.target:
            self.target_values.feed_codes(codes, texts, self.rows)

    def advance(self, rows: int) -> None:
        """The chunk fed column by column had ``rows`` rows."""
        self.rows += rows

    def merge(self, other: ProfileState) -> ProfileState:
        """The state of this part followed by ``other`` (the next rows of the same file)."""
        if other.names != self.names or other.target != self.target:
            raise ValueError(f"states of different files: columns {self.names} and {other.names}")
        return ProfileState(
            names=list(self.names),
            target=self.target,
            rows=self.rows + other.rows,
            columns={n: self.columns[n].merged(other.columns[n], self.rows) for n in self.names},
            target_values=self.target_values.merged(other.target_values, self.rows),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": STATE_FORMAT,
                "names": self.names,
                "target": self.target,
                "rows": self.rows,
                "columns": {n: self.columns[n].to_json() for n in self.names},
                "target_values": self.target_values.to_json(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ProfileState:
        data = json.loads(text)
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"profile state format {data.get('format')!r}, expected {STATE_FORMAT}")
        return cls(
            names=list(data["names"]),
            target=data["target"],
            rows=data["rows"],
            columns={n: ColumnState.from_json(c) for n, c in data["columns"].items()},
            target_values=TargetState.from_json(data["target_values"]),
        )
