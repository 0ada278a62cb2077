"""Classes and problem type, in one place: ValidateData checks with these rules and Preprocess applies them.

* :func:`split_sizes` is the split's rounding (per class when stratified, over all rows otherwise);
* :func:`min_rows_per_class` is the one rule for "too few rows for a class": the stratified split must put
  at least 1 row of the class in test and at least 2 in train+validation (cross-validation needs 2);
* :func:`apply_rare_classes` applies the input's ``rare_classes`` choice (``error``, ``drop``, ``merge``);
* :func:`infer_problem_type` decides classification or regression and says which rule decided.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from pipeline_core.errors import DataValidationError
from pipeline_core.models import ProblemType, RareClasses

MERGED_LABEL = "(other)"
# Non-negative integer targets with more distinct values than this are counts or ordinal scales: regression.
MAX_COUNT_CLASSES = 10
# Integer targets of any sign with more distinct values than this are regression too (a 25-class
# "classification" of temperatures in whole degrees helps nobody).
MAX_INTEGER_CLASSES = 20
MIN_TEST_ROWS_PER_CLASS = 1
MIN_FIT_ROWS_PER_CLASS = 2  # train + validation: cross-validation needs 2 rows of each class
MAX_EXAMPLES = 5


def split_sizes(n_rows: int, test_size: float, validation_size: float) -> tuple[int, int, int]:
    """(train, validation, test) row counts for ``n_rows`` rows; the same rounding Preprocess uses."""
    n_test = round(n_rows * test_size)
    n_validation = round(n_rows * validation_size)
    return n_rows - n_test - n_validation, n_validation, n_test


def min_rows_per_class(test_size: float, validation_size: float) -> int:
    """The fewest rows a class needs so that its stratified split has >= 1 test row and >= 2 other rows."""
    n = MIN_TEST_ROWS_PER_CLASS + MIN_FIT_ROWS_PER_CLASS
    while True:
        train, validation, test = split_sizes(n, test_size, validation_size)
        if test >= MIN_TEST_ROWS_PER_CLASS and train + validation >= MIN_FIT_ROWS_PER_CLASS:
            return n
        n += 1


def is_integer_valued(values: pd.Series) -> bool:
    """True when every (non-missing) number is a whole number."""
    return bool(((values - np.floor(values)) == 0).all())


def target_labels(target: pd.Series, dtype: str) -> pd.Series:
    """The target as class-label strings (NA kept): integers without '.0', booleans as 'true'/'false'."""
    if dtype == "numeric":
        numbers = pd.to_numeric(target, errors="coerce")
        present = numbers.dropna()
        if is_integer_valued(present):
            return numbers.map(lambda v: str(int(v)) if pd.notna(v) else None).astype(object)
        return numbers.map(lambda v: repr(float(v)) if pd.notna(v) else None).astype(object)
    if pd.api.types.is_bool_dtype(target):
        return target.map(lambda v: "true" if v else "false").astype(object)
    if dtype == "boolean":
        return target.map(lambda v: str(v).lower() if pd.notna(v) else None).astype(object)
    return target.astype(object).where(target.notna(), None)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def sorted_labels(labels: Sequence[str]) -> list[str]:
    """Class labels in order: by value when all are numbers (a classifier's classes_ order), else by text."""
    unique = set(labels)
    if all(_is_number(label) for label in unique):
        return sorted(unique, key=float)
    return sorted(unique)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


@dataclass(frozen=True)
class RareClassOutcome:
    """The target's labels after the ``rare_classes`` choice, and what it changed."""

    labels: pd.Series  # NA where a row was dropped (or had no target)
    dropped: dict[str, int] = field(default_factory=dict)  # rare label -> rows dropped
    merged: dict[str, int] = field(default_factory=dict)  # rare label -> rows relabelled MERGED_LABEL


def rare_class_counts(labels: pd.Series, minimum: int) -> pd.Series:
    """Row count of each class with fewer than ``minimum`` rows (largest first, then by label)."""
    return _small_classes(labels.dropna().value_counts(), minimum)


def _small_classes(counts: pd.Series, minimum: int) -> pd.Series:
    small = counts[counts < minimum]
    return small.sort_index().sort_values(ascending=False, kind="stable")


def apply_rare_classes(
    labels: pd.Series,
    choice: RareClasses,
    test_size: float,
    validation_size: float,
    where: object = None,
    target: str = "target",
) -> RareClassOutcome:
    """Check the class sizes against :func:`min_rows_per_class` and apply ``choice`` to the rare ones.

    ``where`` maps a row position to its location text (for the error); DataValidationError when a class
    is too small and ``choice`` is ``error``, or when drop/merge still leaves too little to learn from.
    """

    def rows_of(label: str) -> list[str]:
        return [str(where(int(i))) for i in labels.index[labels == label][:3]] if callable(where) else []

    counts = labels.dropna().value_counts()
    dropped, merged = rare_class_choice(
        counts, choice, test_size, validation_size, rows_of if callable(where) else None, target
    )
    if dropped:
        return RareClassOutcome(labels.where(~labels.isin(list(dropped)), None), dropped=dropped)
    if merged:
        return RareClassOutcome(labels.where(~labels.isin(list(merged)), MERGED_LABEL), merged=merged)
    return RareClassOutcome(labels)


def rare_class_choice(
    counts: pd.Series,
    choice: RareClasses,
    test_size: float,
    validation_size: float,
    rows_of: Callable[[str], list[str]] | None = None,
    target: str = "target",
) -> tuple[dict[str, int], dict[str, int]]:
    """:func:`apply_rare_classes` on the classes' row counts (``value_counts`` order) alone: the rare
    labels dropped and the rare labels merged, each with its row count (the streaming ValidateData has the
    counts, not the rows); ``rows_of`` gives a label's first rows' locations for the error."""
    minimum = min_rows_per_class(test_size, validation_size)
    small = _small_classes(counts, minimum)
    rule = (
        f"the split (test_size {test_size:g}, validation_size {validation_size:g}) needs at least {minimum} "
        f"rows of a class to put {MIN_TEST_ROWS_PER_CLASS} in the test split and {MIN_FIT_ROWS_PER_CLASS} in "
        "training"
    )
    if small.empty:
        return {}, {}
    if choice == "error":
        details = []
        for label, count in list(small.items())[:MAX_EXAMPLES]:
            text = f"{label!r} ({_plural(int(count), 'row')}"
            if rows_of is not None:
                text += ": " + ", ".join(rows_of(str(label)))
            details.append(text + ")")
        more = f" and {len(small) - MAX_EXAMPLES} more" if len(small) > MAX_EXAMPLES else ""
        raise DataValidationError(
            f"target {target!r}: {len(small)} of {len(counts)} classes have fewer than {minimum} rows: "
            f'{", ".join(details)}{more}; {rule}. Set rare_classes to "drop" (leave those rows out) or '
            f'"merge" (join them into one class {MERGED_LABEL!r}) in the input, or remove or merge those '
            "classes in the data (or is the target column the right one?)"
        )
    sizes = {str(k): int(v) for k, v in small.items()}
    if choice == "drop":
        kept = counts.drop(small.index)
        if len(kept) < 2:
            raise DataValidationError(
                f'target {target!r}: rare_classes "drop" would leave {len(kept)} class'
                f"{'es' if len(kept) != 1 else ''} ({_plural(len(small), 'class')} with fewer than {minimum} "
                "rows dropped); classification needs at least 2"
            )
        return sizes, {}
    merged_rows = int(small.sum()) + int(counts.get(MERGED_LABEL, 0) if MERGED_LABEL not in small.index else 0)
    if merged_rows < minimum:
        raise DataValidationError(
            f'target {target!r}: rare_classes "merge" joins {", ".join(repr(k) for k in sizes)} into '
            f"{MERGED_LABEL!r}, which still has only {_plural(merged_rows, 'row')}; {rule}. Use rare_classes "
            '"drop" instead'
        )
    return {}, sizes


@dataclass(frozen=True)
class ProblemTypeChoice:
    problem_type: ProblemType
    chosen_by: Literal["input", "inferred"]
    reason: str


def _kind(n_distinct: int) -> ProblemType:
    return "binary_classification" if n_distinct == 2 else "multiclass_classification"


def infer_problem_type(
    target: str, dtype: str, labels: pd.Series, requested: Literal["classification", "regression"] | None
) -> ProblemTypeChoice:
    """Classification or regression for the target (``labels`` from :func:`target_labels`), and why.

    Regression needs a numeric target (the caller checks and names a value). Inferred: non-numeric →
    classification; non-integer numbers → regression; 2 distinct integers → binary; non-negative integers
    with more than 10 distinct values (counts, ordinal scales) → regression; integers with more than 20
    distinct values → regression; otherwise classification.
    """
    present = labels.dropna()
    n_distinct = int(present.nunique())
    if requested == "regression":
        return ProblemTypeChoice("regression", "input", "problem_type 'regression' given in the input")
    if requested == "classification":
        return ProblemTypeChoice(
            _kind(n_distinct),
            "input",
            f"problem_type 'classification' given in the input; target has {n_distinct} classes",
        )
    if dtype != "numeric":
        example = repr(str(present.iloc[0]))
        return ProblemTypeChoice(
            _kind(n_distinct),
            "inferred",
            f"target {target!r} is {dtype}, not numeric (e.g. {example}), so it is classification",
        )
    numbers = pd.to_numeric(present)
    if not is_integer_valued(numbers):
        return ProblemTypeChoice(
            "regression", "inferred", f"target {target!r} is numeric with non-integer values, so it is regression"
        )
    if n_distinct == 2:
        return ProblemTypeChoice(
            "binary_classification",
            "inferred",
            f"target {target!r} is integer-valued with 2 distinct values, so it is binary classification",
        )
    if numbers.min() >= 0 and n_distinct > MAX_COUNT_CLASSES:
        return ProblemTypeChoice(
            "regression",
            "inferred",
            f"target {target!r} holds non-negative integers with {n_distinct} distinct values (more than "
            f"{MAX_COUNT_CLASSES}: counts or an ordinal scale), so it is regression",
        )
    if n_distinct > MAX_INTEGER_CLASSES:
        return ProblemTypeChoice(
            "regression",
            "inferred",
            f"target {target!r} is integer-valued with {n_distinct} distinct values (more than "
            f"{MAX_INTEGER_CLASSES}), so it is regression",
        )
    return ProblemTypeChoice(
        _kind(n_distinct),
        "inferred",
        f"target {target!r} is integer-valued with {n_distinct} distinct values (at most "
        f"{MAX_COUNT_CLASSES}, or negative values), so it is classification",
    )
