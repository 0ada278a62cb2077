"""Preprocess: clean the validated dataset and write seeded train/validation/test splits for SageMaker.

Cleaning: values are read with each column's role as ValidateData profiled it (the same
:func:`~pipeline_core.stages.data_validation.load_table` and
:func:`~pipeline_core.stages.column_roles.read_values`): numbers without separators, booleans as
``true``/``false``, dates as ISO 8601 text, text stripped, missing values as empty cells. Columns that are
not features (identifier, constant, excluded) are not written. Rows with an empty target are dropped, and
rare classes dropped or merged as the input's ``rare_classes`` says (:mod:`pipeline_core.classes`, the rule
ValidateData checked); every dropped row is counted by reason in ``dropped_rows_by_reason``. Exact duplicate
rows are kept: they are genuine repeated observations in many datasets (iris has some), dropping them would
silently change class balance, and keeping them means the row counts ValidateData checked are the rows
split here.

Each split prefix holds ``<split>.csv`` (features in profile order, target last) and ``columns.json`` (the
roles, problem type and class labels: the data contract with trainers). Beside the splits, outside the
SageMaker channels, ``baseline.json`` holds the train split's per-feature statistics that the Monitor function
compares new data with (:mod:`pipeline_core.stages.baseline`).

The split is a seeded permutation with numpy (scikit-learn is too large for this Lambda), per class when
the problem is classification and every class has :func:`~pipeline_core.classes.min_rows_per_class` rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel

from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.classes import apply_rare_classes, min_rows_per_class, split_sizes, target_labels
from pipeline_core.errors import DataValidationError
from pipeline_core.models import DataProfile, IngestResult, PreprocessResult, RunConfig
from pipeline_core.observability import logger
from pipeline_core.stages.baseline import BASELINE_NAME, baseline_document, build_baseline
from pipeline_core.stages.data_validation import EMPTY_TARGET, RARE_DROPPED, Limits, apply_schema, load_table
from pipeline_core.stages.trainer_input import training_hyperparameters

COLUMNS_FORMAT = 1
SPLITS = ("train", "validation", "test")


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
    """Seeded train/validation/test positions for ``n_rows`` rows; stratified by ``labels`` when every class
    has :func:`min_rows_per_class` rows (>= 1 in test, >= 2 in train+validation), as ValidateData checked."""
    rng = np.random.default_rng(seed)
    if labels is not None:
        counts = labels.value_counts()
        per_class = {label: split_sizes(int(count), test_size, validation_size) for label, count in counts.items()}
        minimum = min_rows_per_class(test_size, validation_size)
        too_small = sorted(str(label) for label, count in counts.items() if count < minimum)
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


@dataclass(frozen=True)
class Cleaned:
    """The rows to split (feature columns in profile order, then the target) and what was left out."""

    frame: pd.DataFrame
    dropped: dict[str, int]  # reason -> rows


def clean(data: bytes, ingest: IngestResult, profile: DataProfile, config: RunConfig, limits: Limits) -> Cleaned:
    """The cleaned frame (rows with a target only, target as class labels or floats) and rows dropped."""
    table = load_table(data, ingest.format, limits)
    missing = {c.name for c in profile.columns} - set(table.frame.columns)
    if missing:
        raise DataValidationError(
            f"{ingest.raw_uri} no longer has the profiled columns {sorted(missing)}; "
            "was it replaced after ValidateData?"
        )
    frame = apply_schema(table, profile.columns)
    target = profile.target
    has_target = frame[target].notna()
    dropped = {EMPTY_TARGET: int((~has_target).sum())}
    frame = frame[has_target].reset_index(drop=True)
    if profile.problem_type != "regression":
        dtype = next(c.dtype for c in profile.columns if c.name == target)
        outcome = apply_rare_classes(
            target_labels(frame[target], dtype), config.rare_classes, config.test_size, config.validation_size
        )
        dropped[RARE_DROPPED] = sum(outcome.dropped.values())
        keep = outcome.labels.notna()
        frame = frame.assign(**{target: outcome.labels})[keep].reset_index(drop=True)
    columns = [*profile.feature_columns, target]
    return Cleaned(frame[columns], {reason: n for reason, n in dropped.items() if n})


def columns_document(profile: DataProfile) -> bytes:
    """``columns.json``: the target, problem type, class labels and each feature's role, in column order."""
    roles = {c.name: c.role for c in profile.columns if c.name in profile.feature_columns}
    document = {
        "format": COLUMNS_FORMAT,
        "target": profile.target,
        "problem_type": profile.problem_type,
        "roles": roles,
        "class_labels": profile.class_labels,
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def preprocess(
    config: RunConfig, ingest: IngestResult, profile: DataProfile, store: ObjectStore, limits: Limits
) -> PreprocessResult:
    """The Preprocess state: write the three splits under ``config.processed_prefix`` and describe them."""
    cleaned = clean(store.read_bytes(ingest.raw_uri), ingest, profile, config, limits)
    frame = cleaned.frame
    labels = frame[profile.target] if profile.problem_type != "regression" else None
    split = split_rows(len(frame), config.test_size, config.validation_size, config.seed, labels)
    logger.info(
        "split",
        extra={
            "split": split.reason,
            "stratified": split.stratified,
            "rows": {name: len(getattr(split, name)) for name in SPLITS},
            "dropped_rows": cleaned.dropped,
            "duplicate_rows_kept": int(frame.duplicated().sum()),
        },
    )
    document = columns_document(profile)
    uris = {}
    for name in SPLITS:
        prefix = f"{config.processed_prefix}{name}/"
        part = frame.iloc[getattr(split, name)]
        body = part.to_csv(index=False, lineterminator="\n").encode("utf-8")
        # The split is seeded, so a retried Preprocess produces the same bytes and writes nothing new.
        store.put_if_changed(f"{prefix}{name}.csv", body, content_type="text/csv")
        store.put_if_changed(f"{prefix}columns.json", document, content_type="application/json")
        uris[name] = prefix  # SageMaker channels take the prefix (S3DataType S3Prefix)
    # Outside the channels: the training job downloads every object under a channel's prefix.
    baseline_uri = f"{config.processed_prefix}{BASELINE_NAME}"
    baseline = build_baseline(frame.iloc[split.train], profile, ingest.sha256)
    store.put_if_changed(baseline_uri, baseline_document(baseline), content_type="application/json")
    return PreprocessResult(
        train_uri=uris["train"],
        validation_uri=uris["validation"],
        test_uri=uris["test"],
        n_train=len(split.train),
        n_validation=len(split.validation),
        n_test=len(split.test),
        feature_columns=profile.feature_columns,
        dropped_rows=sum(cleaned.dropped.values()),
        hyperparameters=training_hyperparameters(config, profile),
        column_roles={c.name: c.role for c in profile.columns},
        excluded_columns=profile.excluded_columns,
        dropped_rows_by_reason=cleaned.dropped,
        baseline_uri=baseline_uri,
    )
