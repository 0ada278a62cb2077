"""The seeded train/validation/test split of Preprocess: positions of the kept rows, per class when it can.

The split is a seeded permutation with numpy (scikit-learn is too large for this Lambda), per class when
the problem is classification and every class has :func:`~pipeline_core.classes.min_rows_per_class` rows.
It needs only the row count and each row's class, never the table, so the streaming Preprocess
(:mod:`pipeline_core.stages.preprocess_stream`) gets the very split the whole-table one gets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline_core.classes import min_rows_per_class, split_sizes

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Split:
    """Row positions of each split and how they were chosen."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    stratified: bool
    reason: str


def split_rows(
    n_rows: int, test_size: float, validation_size: float, seed: int, labels: pd.Series | None = None
) -> Split:
    """Seeded train/validation/test positions for ``n_rows`` rows; stratified by ``labels`` when every class
    has :func:`min_rows_per_class` rows (>= 1 in test, >= 2 in train+validation), as ValidateData checked."""
    if labels is None:
        return split_coded(n_rows, test_size, validation_size, seed)
    codes, names = pd.factorize(labels, use_na_sentinel=True)
    return split_coded(n_rows, test_size, validation_size, seed, codes, [str(n) for n in names])


def split_coded(
    n_rows: int,
    test_size: float,
    validation_size: float,
    seed: int,
    codes: np.ndarray | None = None,
    names: list[str] | None = None,
) -> Split:
    """:func:`split_rows` on labels given as integer ``codes`` into ``names`` (one small integer per row
    instead of a string: the streaming Preprocess holds only this, never the table)."""
    rng = np.random.default_rng(seed)
    if codes is not None and names is not None:
        counts = np.bincount(codes[codes >= 0], minlength=len(names))
        present = [code for code in range(len(names)) if counts[code]]
        minimum = min_rows_per_class(test_size, validation_size)
        too_small = sorted(names[code] for code in present if counts[code] < minimum)
        if not too_small:
            positions = np.arange(len(codes))
            parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
            for code in sorted(present, key=lambda c: names[c]):  # a fixed class order keeps it reproducible
                members = rng.permutation(positions[codes == code])
                _, n_validation, n_test = split_sizes(int(counts[code]), test_size, validation_size)
                parts["test"].append(members[:n_test])
                parts["validation"].append(members[n_test : n_test + n_validation])
                parts["train"].append(members[n_test + n_validation :])
            chosen = {name: rng.permutation(np.concatenate(arrays)) for name, arrays in parts.items()}
            return Split(**chosen, stratified=True, reason=f"stratified over {len(present)} classes")
        reason = f"plain (not stratified): classes {', '.join(too_small[:5])} have fewer than {minimum} rows"
    else:
        reason = "plain: regression target"
    order = rng.permutation(n_rows)
    _, n_validation, n_test = split_sizes(n_rows, test_size, validation_size)
    return Split(
        train=order[n_test + n_validation :],
        validation=order[n_test : n_test + n_validation],
        test=order[:n_test],
        stratified=False,
        reason=reason,
    )
