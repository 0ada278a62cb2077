"""Preprocess: clean the validated dataset and write seeded train/validation/test splits for SageMaker.

Cleaning: text values are stripped and the missing-value tokens become empty cells (the same reading
ValidateData used, via :func:`~pipeline_core.stages.data_validation.load_table`); numeric columns are
coerced to floats by the profile's pandera schema; rows with an empty target are dropped (counted in
``dropped_rows``). Exact duplicate rows are kept: they are genuine repeated observations in many datasets
(iris has some), dropping them would silently change class balance, and keeping them means the row counts
ValidateData checked are the rows split here.

The split is a seeded permutation with numpy (scikit-learn is too large for this Lambda), per class when
the problem is classification and every class can have at least 2 rows in each split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel

from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.errors import DataValidationError
from pipeline_core.models import DataProfile, IngestResult, PreprocessResult, RunConfig
from pipeline_core.observability import logger
from pipeline_core.stages.data_validation import Limits, apply_schema, load_table, split_sizes, target_labels

SPLITS = ("train", "validation", "test")
MIN_STRATIFIED_ROWS_PER_CLASS = 2


class PreprocessEvent(BaseModel):
    """What the Preprocess state passes (see its Parameters in the ASL)."""

    config: RunConfig
    ingest: IngestResult
    data: DataProfile


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
    """Seeded train/validation/test positions for ``n_rows`` rows; stratified by ``labels`` when possible."""
    rng = np.random.default_rng(seed)
    if labels is not None:
        counts = labels.value_counts()
        per_class = {label: split_sizes(int(count), test_size, validation_size) for label, count in counts.items()}
        minimum = MIN_STRATIFIED_ROWS_PER_CLASS
        too_small = sorted(str(label) for label, sizes in per_class.items() if min(sizes) < minimum)
        if not too_small:
            positions = np.arange(len(labels))
            values = labels.to_numpy()
            parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
            for label in sorted(per_class, key=str):  # a fixed class order keeps the split reproducible
                members = rng.permutation(positions[values == label])
                _, n_validation, n_test = per_class[label]
                parts["test"].append(members[:n_test])
                parts["validation"].append(members[n_test : n_test + n_validation])
                parts["train"].append(members[n_test + n_validation :])
            chosen = {name: rng.permutation(np.concatenate(arrays)) for name, arrays in parts.items()}
            return Split(**chosen, stratified=True, reason=f"stratified over {len(counts)} classes")
        reason = (
            f"plain (not stratified): classes {', '.join(too_small[:5])} cannot have "
            f"{MIN_STRATIFIED_ROWS_PER_CLASS} rows in each split"
        )
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


def clean(data: bytes, ingest: IngestResult, profile: DataProfile, limits: Limits) -> tuple[pd.DataFrame, int]:
    """The cleaned frame (rows with a target only, target as class labels or floats) and rows dropped."""
    table = load_table(data, ingest.format, limits)
    missing = {*profile.feature_columns, profile.target} - set(table.frame.columns)
    if missing:
        raise DataValidationError(
            f"{ingest.raw_uri} no longer has the profiled columns {sorted(missing)}; "
            "was it replaced after ValidateData?"
        )
    frame = apply_schema(table, profile.columns)
    has_target = frame[profile.target].notna()
    frame = frame[has_target].reset_index(drop=True)
    if profile.problem_type != "regression":
        dtype = next(c.dtype for c in profile.columns if c.name == profile.target)
        frame[profile.target] = target_labels(frame[profile.target], dtype)
    for column in profile.columns:
        if column.dtype == "boolean" and not pd.api.types.is_bool_dtype(frame[column.name]):
            frame[column.name] = frame[column.name].str.lower()  # "TRUE"/"True" -> "true", read back as bool
    return frame, int((~has_target).sum())


def preprocess(
    config: RunConfig, ingest: IngestResult, profile: DataProfile, store: ObjectStore, limits: Limits
) -> PreprocessResult:
    """The Preprocess state: write the three splits under ``config.processed_prefix`` and describe them."""
    frame, dropped = clean(store.read_bytes(ingest.raw_uri), ingest, profile, limits)
    labels = frame[profile.target] if profile.problem_type != "regression" else None
    split = split_rows(len(frame), config.test_size, config.validation_size, config.seed, labels)
    logger.info(
        "split",
        extra={
            "split": split.reason,
            "stratified": split.stratified,
            "rows": {name: len(getattr(split, name)) for name in SPLITS},
            "dropped_empty_target": dropped,
            "duplicate_rows_kept": int(frame.duplicated().sum()),
        },
    )
    columns = [c.name for c in profile.columns]
    uris = {}
    for name in SPLITS:
        prefix = f"{config.processed_prefix}{name}/"
        part = frame.iloc[getattr(split, name)][columns]
        body = part.to_csv(index=False, lineterminator="\n").encode("utf-8")
        # The split is seeded, so a retried Preprocess produces the same bytes and writes nothing new.
        store.put_if_changed(f"{prefix}{name}.csv", body, content_type="text/csv")
        uris[name] = prefix  # SageMaker channels take the prefix (S3DataType S3Prefix)
    hyperparameters = {
        "target": profile.target,
        "problem_type": profile.problem_type,
        "seed": str(config.seed),
        # a built-in trainer is training/train.py run with the algorithm it is named for; auto is its default,
        # left out so that a training source from before `algorithm` existed still takes the default run
        **({"algorithm": config.trainer.name} if config.trainer.builtin and config.trainer.name != "auto" else {}),
        **config.hyperparameters,
    }
    return PreprocessResult(
        train_uri=uris["train"],
        validation_uri=uris["validation"],
        test_uri=uris["test"],
        n_train=len(split.train),
        n_validation=len(split.validation),
        n_test=len(split.test),
        feature_columns=profile.feature_columns,
        dropped_rows=dropped,
        hyperparameters=hyperparameters,
    )
