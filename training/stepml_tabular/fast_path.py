"""The fast prediction path of the built-in families (gradient boosting and linear).

``build_plan`` reads the fitted imputers, scaler and one-hot encoder of a gradient-boosting or linear
pipeline (numeric and categorical features only) and builds the model's input row straight from a record
instead of going through pandas and the ColumnTransformer (~10 ms per one-row call on a busy machine, most of
a request); for small batches ``Forest`` walks all of HistGradientBoosting's trees at once with NumPy
instead of scikit-learn's one call per tree. Both check themselves against scikit-learn when the model
loads and are not used (None) if they ever disagree, so predictions are the pipeline's. Any other pipeline
(datetime, boolean or text features, another estimator) gets no plan and is served by the pipeline itself.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from stepml_tabular.columns import _as_label, _as_number, serving_frame

OPENMP_KEY = "_openmp"
# Batches up to this many rows are predicted on one OpenMP thread (see threads).
SINGLE_THREAD_MAX_ROWS = 10_000
# Batches up to this many rows walk the trees with NumPy (Forest); larger ones go to scikit-learn, whose
# compiled loop overtakes the walk at 400 to 700 rows (measured on iris, breast cancer and diabetes models
# of 20 to 300 trees, depth 2 to 14; at 256 rows the walk was 1.1x to 3.5x faster).
FOREST_MAX_ROWS = 256
# Rows of thresholds, their neighbours and missing values the tree walk is checked on when a model loads.
FOREST_PROBE_ROWS = 512
_BOOSTING = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")
# The linear family's estimators (train.py's ``_linear``): they take the scaled, one-hot row the plan builds.
_LINEAR = ("LogisticRegression", "Ridge")


def openmp_controller() -> Any:
    """threadpoolctl's handle on the OpenMP runtime scikit-learn uses, or None.

    Built once per model because finding the libraries takes milliseconds; limiting through it then
    costs microseconds per request.
    """
    try:
        from threadpoolctl import ThreadpoolController  # a scikit-learn dependency, so always installed
    except ImportError:  # pragma: no cover
        return None
    return ThreadpoolController().select(user_api="openmp")


def threads(bundle: dict[str, Any], n_rows: int) -> AbstractContextManager[Any]:
    """One OpenMP thread for small batches: for a few rows HistGradientBoosting's per-tree parallel
    regions cost more than they save (a 1-row request took 30 ms instead of 1.5 ms on a busy machine)."""
    if OPENMP_KEY not in bundle:
        bundle[OPENMP_KEY] = openmp_controller()
    controller = bundle[OPENMP_KEY]
    if controller is None or n_rows > SINGLE_THREAD_MAX_ROWS:
        return nullcontext()
    limited: AbstractContextManager[Any] = controller.limit(limits=1)
    return limited


def _zip_same_length(*sequences: Sequence[Any]) -> Any:
    """zip(..., strict=True) for Python 3.9, the SageMaker image's, where zip has no strict: there it
    raised TypeError, which build_plan took for an unknown pipeline, so the container never took the fast
    path."""
    if len({len(sequence) for sequence in sequences}) > 1:
        raise ValueError(f"sequences of different lengths: {[len(sequence) for sequence in sequences]}")
    return zip(*sequences)  # noqa: B905 - lengths checked above


@dataclass(frozen=True)
class Plan:
    """How to build the estimator's input row straight from a record (see ``build_plan``)."""

    width: int
    # (column, output index, fill value for a missing value)
    numeric: tuple[tuple[str, int, float], ...]
    # (column, {category: output index}, fill category for a missing value)
    categorical: tuple[tuple[str, dict[str, int], str], ...]
    # columns the imputers dropped (all missing in training): required in a record, otherwise unused
    unused: tuple[str, ...]
    estimator: Any
    # the linear family's StandardScaler, per output column: (value - shift) / scale; None for boosting
    shift: np.ndarray | None = None
    scale: np.ndarray | None = None
    # the estimator's trees as arrays, or None to let the estimator predict (see build_forest)
    forest: Forest | None = None
    # the linear estimator's coefficients, or None to let the estimator predict (see build_linear)
    linear: Linear | None = None


def build_plan(bundle: dict[str, Any]) -> Plan | None:
    """Read the fitted imputers and encoder of train.py's pipeline; None if the pipeline looks different.

    The one-hot positions come from running the fitted encoder itself on each known category, so rare
    categories grouped by ``max_categories`` and unknown ones (all zeros) come out as the encoder does.
    """
    try:
        pipeline = bundle["pipeline"]
        preprocess = pipeline.named_steps["preprocess"]
        estimator = pipeline.named_steps["model"]
        linear = type(estimator).__name__ in _LINEAR
        if not linear and type(estimator).__name__ not in _BOOSTING:
            return None  # the plan's rows are what these estimators take; other models go the slow way
        numeric: list[tuple[str, int, float]] = []
        categorical: list[tuple[str, dict[str, int], str]] = []
        unused: list[str] = []
        scaling: list[tuple[int, float, float]] = []  # (output index, mean, scale) of scaled columns
        offset = 0
        for name, transformer, columns in preprocess.transformers_:
            if name == "remainder":
                continue
            if name == "numeric":
                imputer, scaler = _numeric_steps(transformer, linear)
                imputed = 0  # the scaler sees only the columns the imputer kept
                for column, fill in _zip_same_length(columns, imputer.statistics_):
                    if isinstance(fill, float) and math.isnan(fill):
                        unused.append(column)  # SimpleImputer drops all-missing features
                        continue
                    numeric.append((column, offset, float(fill)))
                    if scaler is not None:
                        scaling.append((offset, float(scaler.mean_[imputed]), float(scaler.scale_[imputed])))
                    imputed += 1
                    offset += 1
            elif name == "categorical":
                imputer = transformer.named_steps["impute"]
                encoder = transformer.named_steps["onehot"]
                kept = []
                for column, fill in _zip_same_length(columns, imputer.statistics_):
                    if pd.isna(fill):
                        unused.append(column)
                    else:
                        kept.append((column, str(fill)))
                positions = _one_hot_positions(encoder, len(kept))
                for (column, fill), mapping in _zip_same_length(kept, positions):
                    categorical.append((column, {k: offset + v for k, v in mapping.items()}, fill))
                offset += int(encoder.transform(np.full((1, len(kept)), np.nan, dtype=object)).shape[1])
            else:
                return None
        plan = Plan(offset, tuple(numeric), tuple(categorical), tuple(unused), estimator)
        if linear:
            shift, scale = np.zeros(offset), np.ones(offset)
            for index, mean, factor in scaling:
                shift[index], scale[index] = mean, factor
            plan = replace(plan, shift=shift, scale=scale)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError):
        return None
    if not _plan_agrees(plan, bundle):
        return None
    if linear:
        product = build_linear(estimator)
        rows = plan_rows(plan, _plan_probes(plan, bundle))
        if product is not None and product.agrees(estimator, rows):
            plan = replace(plan, linear=product)
        return plan
    forest = build_forest(estimator, plan.width)
    if forest is not None:
        probes = _probe_rows(forest, plan, bundle)
        with threads(bundle, len(probes)):
            if _forest_agrees(forest, estimator, probes):
                plan = replace(plan, forest=forest)
    return plan


def _numeric_steps(transformer: Any, linear: bool) -> tuple[Any, Any]:
    """(imputer, scaler) of the numeric transformer: a SimpleImputer for boosting, impute + scale for linear."""
    if not linear:
        return transformer, None
    if list(transformer.named_steps) != ["impute", "scale"] or not transformer.named_steps["scale"].with_mean:
        raise ValueError("not the linear family's numeric steps")
    return transformer.named_steps["impute"], transformer.named_steps["scale"]


def _dense(matrix: Any) -> np.ndarray:
    """A transformer's output as a dense array (the linear family's encoder and ColumnTransformer may be sparse)."""
    return np.asarray(matrix.toarray() if hasattr(matrix, "toarray") else matrix)


def _one_hot_positions(encoder: Any, n_columns: int) -> list[dict[str, int]]:
    """For each encoder input column, {category: output column} as the fitted encoder assigns them."""
    result = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the NaN in the other columns is "unknown", which is the point
        for index in range(n_columns):
            categories = [str(c) for c in encoder.categories_[index]]
            probe = np.full((len(categories), n_columns), np.nan, dtype=object)
            probe[:, index] = categories
            encoded = _dense(encoder.transform(probe))
            mapping = {}
            for row, category in enumerate(categories):
                hits = np.flatnonzero(encoded[row])
                if len(hits) == 1:
                    mapping[category] = int(hits[0])
            result.append(mapping)
    return result


def _plan_probes(plan: Plan, bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Records with every value missing, every known category, unknown categories and numbers."""
    features: list[str] = bundle["feature_columns"]
    probes: list[dict[str, Any]] = [dict.fromkeys(features)]  # every value missing
    longest = max((len(m) for _, m, _ in plan.categorical), default=1)
    for i in range(max(longest, 1)):
        record: dict[str, Any] = dict.fromkeys(features, None)
        for column, index, fill in plan.numeric:
            record[column] = fill + i + index
        for column, mapping, _ in plan.categorical:
            known = sorted(mapping)
            record[column] = known[i % len(known)] if known else None
        probes.append(record)
    probes.append(
        {c: "stepml-unknown-category" if k == "categorical" else 0.5 for c, k in bundle["feature_kinds"].items()}
    )
    return probes


def _plan_agrees(plan: Plan, bundle: dict[str, Any]) -> bool:
    """The fast rows equal the ColumnTransformer's output on probe records (fills, categories, unknowns);
    for the linear family the estimator also answers them as it answers the pipeline's own rows: the same
    classes, or values within 1e-9 relative (the pipeline may hand it a sparse matrix, whose products sum
    in another order)."""
    probes = _plan_probes(plan, bundle)
    fast = plan_rows(plan, probes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformed = (
            bundle["pipeline"]
            .named_steps["preprocess"]
            .transform(serving_frame(pd.DataFrame(probes), bundle["feature_columns"], bundle["feature_kinds"]))
        )
    slow = _dense(transformed)
    if fast.shape != slow.shape or not np.allclose(fast, slow, equal_nan=True):
        return False
    if plan.shift is None:
        return True  # boosting: its tree walk is checked on its own (build_forest)
    answers, expected = plan.estimator.predict(fast), plan.estimator.predict(transformed)
    if bundle["problem_type"] == "regression":
        return bool(np.allclose(answers, expected, rtol=1e-9, atol=0.0))
    return bool(np.array_equal(answers, expected))


def plan_rows(plan: Plan, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    rows = np.zeros((len(records), plan.width), dtype="float64")
    for i, record in enumerate(records):
        row = rows[i]
        for column, index, fill in plan.numeric:
            value = record[column]
            # float/int are what JSON gives; checked first because it is the common case.
            number = float(value) if type(value) in (float, int) else _as_number(value, column, i)
            row[index] = fill if number != number else number  # NaN != NaN: missing -> the median
        for column, mapping, fill_label in plan.categorical:
            label = _as_label(record[column])
            position = mapping.get(fill_label if label is np.nan else label)
            if position is not None:  # unknown category: all zeros, like handle_unknown="ignore"
                row[position] = 1.0
    if plan.shift is not None and plan.scale is not None:
        rows -= plan.shift  # StandardScaler's order (subtract, then divide): the same floats
        rows /= plan.scale
    return rows


# --- the linear family as one product -----------------------------------------------------------------


@dataclass(frozen=True)
class Linear:
    """A fitted LogisticRegression's or Ridge's ``predict`` as the one matrix product it is.

    scikit-learn's ``predict`` spends ~0.5 ms of a one-row request checking its input (finite values,
    feature names, array namespaces) before a product of microseconds; the plan's rows need none of that.
    The product and what follows are the estimator's own (``X @ coef_.T + intercept_``, then the sign or the
    argmax for a classifier), so the answers are bit for bit the same; ``agrees`` checks it when the model
    loads.
    """

    coef: np.ndarray
    intercept: np.ndarray | float
    classes: np.ndarray | None  # the classifier's classes_, None for a regressor

    def decision(self, rows: np.ndarray) -> np.ndarray:
        scores: np.ndarray = rows @ self.coef.T + self.intercept
        if self.classes is not None and scores.ndim > 1 and scores.shape[1] == 1:
            return scores.reshape(-1)  # a binary classifier: one score, the positive class's
        return scores

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """What the estimator's ``predict`` answers for ``rows``."""
        scores = self.decision(rows)
        if self.classes is None:
            return scores
        indices = (scores > 0).astype(int) if scores.ndim == 1 else np.argmax(scores, axis=1)
        return np.asarray(self.classes[indices])

    def agrees(self, estimator: Any, rows: np.ndarray) -> bool:
        """The product answers ``rows`` exactly as the estimator does."""
        try:
            return bool(np.array_equal(self.predict(rows), np.asarray(estimator.predict(rows))))
        except (ArithmeticError, IndexError, TypeError, ValueError):
            return False


def build_linear(estimator: Any) -> Linear | None:
    """The coefficients of a fitted LogisticRegression or Ridge, or None for any other estimator."""
    name = type(estimator).__name__
    if name not in _LINEAR:
        return None
    try:
        coef = np.asarray(estimator.coef_, dtype=np.float64)
        intercept = estimator.intercept_
        intercept = float(intercept) if np.ndim(intercept) == 0 else np.asarray(intercept, dtype=np.float64)
        classes = np.asarray(estimator.classes_) if name == "LogisticRegression" else None
    except (AttributeError, TypeError, ValueError):
        return None
    return Linear(coef, intercept, classes)


# --- the trees as arrays -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Forest:
    """A fitted HistGradientBoosting model's trees flattened into arrays, walked for all trees at once.

    scikit-learn predicts tree by tree, a Python-level call per tree (~4 µs each: 300 trees for a 3-class
    model of 100 iterations), which is most of a one-row request. Here one NumPy step moves every (row,
    tree) pair one level down, so a request costs ``depth`` steps whatever the number of trees.

    Node ``i`` of the flat arrays: ``feature[i]``, ``threshold[i]``, ``missing_left[i]``, and its children at
    ``children[2 * i]`` (left) and ``children[2 * i + 1]`` (right). A leaf is its own child, so walking
    ``depth`` steps leaves every pair on its leaf however deep that is. Tree ``t`` is iteration
    ``t // per_iteration`` for output ``t % per_iteration``, the order scikit-learn adds them in.
    """

    roots: np.ndarray
    children: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    value: np.ndarray
    depth: int
    per_iteration: int
    baseline: np.ndarray  # (per_iteration,): what every raw prediction starts from
    classes: np.ndarray | None  # the classifier's classes_, None for a regressor
    inverse_link: Any  # the regressor's raw prediction -> prediction (identity for squared error)

    def raw_predict(self, rows: np.ndarray) -> np.ndarray:
        """The sum of the leaf values over all trees plus the baseline, (n_rows, per_iteration), exactly
        as scikit-learn's ``_raw_predict`` computes it."""
        rows = np.ascontiguousarray(rows, dtype=np.float64)
        n, width = rows.shape
        values = rows.ravel()
        # Row r's feature j is values[r * width + j]: one take() fetches every pair's split value.
        row_start = (np.arange(n, dtype=np.intp) * width)[:, None]
        node = np.broadcast_to(self.roots, (n, self.roots.size))
        for _ in range(self.depth):
            x = values.take(row_start + self.feature.take(node))
            # scikit-learn's split: a missing value goes where training sent missing values (the side
            # with the better gain), any other value left when <= the threshold.
            go_left = np.where(np.isnan(x), self.missing_left.take(node), x <= self.threshold.take(node))
            node = self.children.take(2 * node + ~go_left)
        leaves = self.value.take(node).reshape(n, -1, self.per_iteration)
        # scikit-learn starts from zeros + baseline and adds the trees one iteration after another. A sum in
        # another order (np.sum adds pairwise) can differ in the last bit, so the same left-to-right
        # additions are made with cumsum, which accumulates in order.
        steps = np.empty((n, leaves.shape[1] + 1, self.per_iteration))
        steps[:, 0, :] = 0.0
        steps[:, 0, :] += self.baseline
        steps[:, 1:, :] = leaves
        raw: np.ndarray = np.cumsum(steps, axis=1)[:, -1, :]
        return raw

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """What the estimator's ``predict`` answers for ``rows``."""
        raw = self.raw_predict(rows)
        if self.classes is None:
            return np.asarray(self.inverse_link(raw.ravel()))
        # As HistGradientBoostingClassifier.predict: one output is the positive class's logit ("> 0", so
        # a tie is the first class), several are one per class.
        encoded = (raw.ravel() > 0).astype(int) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
        return np.asarray(self.classes[encoded])


def build_forest(estimator: Any, width: int) -> Forest | None:
    """The trees of a fitted HistGradientBoosting{Classifier,Regressor} as a Forest, or None when the
    estimator is not one or uses what the walk does not do (native categorical features, whose inputs
    scikit-learn re-encodes before the trees)."""
    try:
        if type(estimator).__name__ not in ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor"):
            return None
        categorical = getattr(estimator, "is_categorical_", None)
        if getattr(estimator, "_preprocessor", None) is not None or (categorical is not None and np.any(categorical)):
            return None
        per_iteration = int(estimator.n_trees_per_iteration_)
        trees = [predictor.nodes for iteration in estimator._predictors for predictor in iteration]
        if not trees or any(len(iteration) != per_iteration for iteration in estimator._predictors):
            return None
        sizes = np.array([len(nodes) for nodes in trees], dtype=np.intp)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        nodes = np.concatenate(trees)
        if nodes["is_categorical"].any() or (nodes["feature_idx"][~nodes["is_leaf"].astype(bool)] >= width).any():
            return None
        leaf = nodes["is_leaf"].astype(bool)
        own = np.arange(len(nodes), dtype=np.intp)
        first = np.repeat(starts, sizes)  # each node's tree's first node: left/right are per tree
        children = np.empty(2 * len(nodes), dtype=np.intp)
        children[0::2] = np.where(leaf, own, nodes["left"].astype(np.intp) + first)
        children[1::2] = np.where(leaf, own, nodes["right"].astype(np.intp) + first)
        is_classifier = type(estimator).__name__ == "HistGradientBoostingClassifier"
        return Forest(
            roots=starts,
            children=children,
            feature=np.where(leaf, 0, nodes["feature_idx"]).astype(np.intp),
            threshold=np.where(leaf, np.inf, nodes["num_threshold"]).astype(np.float64),
            missing_left=nodes["missing_go_to_left"].astype(bool),
            value=nodes["value"].astype(np.float64),
            depth=int(nodes["depth"].max()),
            per_iteration=per_iteration,
            baseline=np.asarray(estimator._baseline_prediction, dtype=np.float64).reshape(per_iteration),
            classes=np.asarray(estimator.classes_) if is_classifier else None,
            inverse_link=None if is_classifier else estimator._loss.link.inverse,
        )
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None


def _probe_rows(forest: Forest, plan: Plan, bundle: dict[str, Any]) -> np.ndarray:
    """Rows that take every split both ways and the missing way: each feature drawn from its thresholds,
    the next float above each, NaN and 0, plus the rows of the plan's probe records."""
    inner = forest.children[0::2] != np.arange(len(forest.feature))
    rng = np.random.default_rng(0)  # fixed: the same model is always checked on the same rows
    rows = np.empty((FOREST_PROBE_ROWS, plan.width))
    for column in range(plan.width):
        thresholds = np.unique(forest.threshold[inner & (forest.feature == column)])
        candidates = np.concatenate([thresholds, np.nextafter(thresholds, np.inf), [np.nan, 0.0]])
        rows[:, column] = rng.choice(candidates, size=FOREST_PROBE_ROWS)
    return np.vstack([rows, plan_rows(plan, _plan_probes(plan, bundle))])


def _forest_agrees(forest: Forest, estimator: Any, rows: np.ndarray) -> bool:
    """The walk's predictions on ``rows`` are the estimator's own, bit for bit (for a classifier also the
    raw per-class scores, which its probabilities come from)."""
    try:
        if not np.array_equal(forest.predict(rows), estimator.predict(rows)):
            return False
        if forest.classes is None:
            return True
        decision = np.asarray(estimator.decision_function(rows))
        return bool(np.array_equal(forest.raw_predict(rows).reshape(decision.shape), decision))
    except (ArithmeticError, IndexError, TypeError, ValueError):
        return False
