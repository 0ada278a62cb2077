"""The algorithm families, their hyperparameters, and how one is chosen and refit on all the data.

Families: ``gradient-boosting`` (HistGradientBoosting), ``linear`` (LogisticRegression / Ridge on scaled
numbers, one-hot categories and word TF-IDF), ``text`` (the linear model with word and character n-gram
TF-IDF: suits free text). ``auto`` scores gradient boosting against the linear family (``text`` when the
data has text columns) and keeps the better.

Selection (``select``) never sees the test split: on train+validation with fewer than ``CV_MAX_ROWS`` rows
it cross-validates (stratified k-fold, k = min(5, the smallest class's rows)), otherwise it fits on train
and scores on validation. It chooses the boosting iterations (the validation loss after each iteration,
averaged over folds) and the linear model's C or alpha (a grid, by the primary metric). ``refit`` then fits
the chosen settings on train+validation, except on large data (more than ``REFIT_MAX_ROWS`` train+validation
rows): there boosting stops early on the validation loss and the model fitted on the train split is kept.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from stepml_tabular.columns import build_preprocessor
from stepml_tabular.errors import HyperparameterError, TrainingDataError
from stepml_tabular.lean import fit_transform_dense, predict_blocks, rows, transform_dense
from stepml_tabular.metrics import PRIMARY_METRIC, compute_metrics

FAMILIES = ("gradient-boosting", "linear", "text")
ALGORITHMS = ("auto", *FAMILIES)
DEFAULT_ALGORITHM = "auto"
# HistGradientBoosting's own defaults, spelled out so metadata.json records what was used; max_iter is the
# budget the iterations are chosen within.
BOOSTING_DEFAULTS: dict[str, Any] = {
    "learning_rate": 0.1,
    "max_iter": 100,
    "max_depth": None,
    "max_leaf_nodes": 31,
    "min_samples_leaf": 20,
    "l2_regularization": 0.0,
}
# name: (type, minimum, None allowed)
_BOOSTING_SPECS: dict[str, tuple[type, float, bool]] = {
    "learning_rate": (float, 0.0, False),
    "max_iter": (int, 1, False),
    "max_depth": (int, 1, True),
    "max_leaf_nodes": (int, 2, True),
    "min_samples_leaf": (int, 1, False),
    "l2_regularization": (float, 0.0, False),
}
# C (LogisticRegression, classification) and alpha (Ridge, regression): given, or chosen from the grid,
# strongest regularisation first so a tie keeps the simpler model.
_LINEAR_SPECS: dict[str, tuple[type, float, bool]] = {"C": (float, 0.0, False), "alpha": (float, 0.0, False)}
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
ALPHA_GRID = (100.0, 10.0, 1.0, 0.1, 0.01)
PARAMETER_NAMES = (*_BOOSTING_SPECS, *_LINEAR_SPECS)
# Below this many train+validation rows selection cross-validates; above, the validation split suffices.
CV_MAX_ROWS = 1000
# Above this many train+validation rows the model selection fitted on the train split is the model: no refit.
# A refit then costs a second fit on a third more rows (at 1M rows of 23 features, 100 iterations: about as
# long as the first fit, most of the training job) and, with hundreds of thousands of rows already learnt from,
# changes the model little; below it the validation rows are a large share of what there is to learn from.
REFIT_MAX_ROWS = 200_000
# Boosting kept without a refit stops when the validation loss has not improved for this many iterations
# (scikit-learn's n_iter_no_change default; the kept model has those last iterations too).
EARLY_STOPPING_ROUNDS = 10
CV_FOLDS = 5
LINEAR_MAX_ITER = 2000


# --- hyperparameters ---------------------------------------------------------------------------------


def parse_number(name: str, raw: Any, kind: type, *, minimum: float, nullable: bool = False) -> Any:
    """A hyperparameter's string (or number) as ``kind``, at least ``minimum``; None where allowed."""
    text = str(raw).strip() if raw is not None else "none"
    if nullable and text.lower() in ("none", "null", ""):
        return None
    number: float | int
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if kind is int and math.isfinite(number):
        # "100" and "100.0" (a JSON number that went through a float) are both accepted; "2.5" is not.
        number = int(number) if float(number).is_integer() else math.nan
    if math.isnan(number):
        allowed = " or None" if nullable else ""
        raise HyperparameterError(f"hyperparameter {name}={raw!r} is not a valid {kind.__name__}{allowed}")
    if not math.isfinite(number) or number < minimum:
        raise HyperparameterError(f"hyperparameter {name}={raw!r} must be a finite number >= {minimum}")
    return number


def check_params(algorithm: str, problem_type: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Validated estimator parameters (HistGradientBoosting defaults filled in; C/alpha only if given)."""
    if algorithm not in ALGORITHMS:
        raise HyperparameterError(f"hyperparameter algorithm={algorithm!r} must be one of {', '.join(ALGORITHMS)}")
    unknown = sorted(set(raw) - set(PARAMETER_NAMES))
    if unknown:
        raise HyperparameterError(f"unknown estimator parameter(s) {unknown}; allowed: {list(PARAMETER_NAMES)}")
    for name in raw:
        if algorithm == "gradient-boosting" and name in _LINEAR_SPECS:
            raise HyperparameterError(
                f"hyperparameter {name} is for the linear and text algorithms, not algorithm=gradient-boosting"
            )
        if algorithm in ("linear", "text") and name in _BOOSTING_SPECS:
            raise HyperparameterError(f"hyperparameter {name} is for gradient-boosting, not algorithm={algorithm}")
    regression = problem_type == "regression"
    if "C" in raw and regression:
        raise HyperparameterError("hyperparameter C is LogisticRegression's (classification); for regression use alpha")
    if "alpha" in raw and not regression:
        raise HyperparameterError("hyperparameter alpha is Ridge's (regression); for classification use C")
    params = dict(BOOSTING_DEFAULTS)
    for name, value in raw.items():
        kind, minimum, nullable = {**_BOOSTING_SPECS, **_LINEAR_SPECS}[name]
        params[name] = parse_number(name, value, kind, minimum=minimum, nullable=nullable)
    for name in ("learning_rate", "C", "alpha"):
        if name in params and params[name] <= 0:
            raise HyperparameterError(f"hyperparameter {name}={raw[name]!r} must be > 0")
    return params


# --- estimators --------------------------------------------------------------------------------------


def _boosting(problem_type: str, params: dict[str, Any], seed: int, max_iter: int, *, stops_early: bool = False) -> Any:
    chosen = {k: params[k] for k in BOOSTING_DEFAULTS}
    chosen["max_iter"] = max_iter
    kind = HistGradientBoostingRegressor if problem_type == "regression" else HistGradientBoostingClassifier
    if stops_early:  # on the X_val/y_val given to fit (the validation split), never on rows held out of train
        return kind(random_state=seed, early_stopping=True, scoring="loss", n_iter_no_change=EARLY_STOPPING_ROUNDS,
                    **chosen)  # fmt: skip
    # early_stopping=False: the iterations are chosen on validation data here ("auto" would hold out 10 %
    # of the rows again above 10 000 of them).
    return kind(random_state=seed, early_stopping=False, **chosen)


def _linear(problem_type: str, strength: float, seed: int) -> Any:
    if problem_type == "regression":
        return Ridge(alpha=strength)
    return LogisticRegression(C=strength, max_iter=LINEAR_MAX_ITER, random_state=seed)


def build_pipeline(
    kinds: dict[str, str], family: str, problem_type: str, seed: int, settings: dict[str, Any], n_rows: int
) -> Pipeline:
    """The family's preprocessing + estimator with the chosen settings (``max_iter`` or ``C``/``alpha``)."""
    if family == "gradient-boosting":
        estimator = _boosting(problem_type, {**BOOSTING_DEFAULTS, **settings}, seed, int(settings["max_iter"]))
    else:
        estimator = _linear(problem_type, float(settings["alpha" if problem_type == "regression" else "C"]), seed)
    return Pipeline([("preprocess", build_preprocessor(kinds, family, n_rows)), ("model", estimator)])


# --- selection ---------------------------------------------------------------------------------------


@dataclass
class Folds:
    """Where selection fits and scores: (fit rows, scored rows) index pairs into train+validation."""

    splits: list[tuple[np.ndarray, np.ndarray]]
    method: str
    keeps_fit: bool = False  # large data: the model fitted on the train split is kept, not refit

    @property
    def scored(self) -> np.ndarray:
        return np.concatenate([scored for _, scored in self.splits])

    @property
    def fitted_rows(self) -> float:
        return float(np.mean([len(fit) for fit, _ in self.splits]))


@dataclass
class Scored:
    """A candidate's chosen settings and its predictions for ``Folds.scored`` rows."""

    family: str
    settings: dict[str, Any]
    score: float
    predictions: np.ndarray = field(repr=False)
    proba: np.ndarray | None = field(repr=False)
    detail: str
    fitted: Pipeline | None = field(default=None, repr=False)  # the model itself, where it is kept (keeps_fit)


def check_classes(y: np.ndarray, target: str) -> None:
    """Every class needs 2 rows in train+validation (cross-validation puts one on each side)."""
    labels, counts = np.unique(y, return_counts=True)
    rare = {str(label): int(count) for label, count in zip(labels, counts) if count < 2}  # noqa: B905
    if rare:
        listed = ", ".join(f"{label!r} ({count} row)" for label, count in rare.items())
        raise TrainingDataError(
            f"target {target!r}: class(es) {listed} have fewer than 2 rows in train+validation, too few to "
            "learn and validate; drop or merge them (the rare_classes option) or add rows"
        )


def make_folds(y: np.ndarray, n_train: int, problem_type: str, seed: int) -> Folds:
    """k-fold on train+validation when it is small, else the given validation split."""
    n = len(y)
    if n >= CV_MAX_ROWS:
        keeps_fit = n > REFIT_MAX_ROWS
        kept = f"; kept without a refit (more than {REFIT_MAX_ROWS} train+validation rows)" if keeps_fit else ""
        return Folds(
            [(np.arange(n_train), np.arange(n_train, n))],
            f"fitted on the train split ({n_train} rows), scored on the validation split ({n - n_train} rows)" + kept,
            keeps_fit,
        )
    if problem_type == "regression":
        k = min(CV_FOLDS, n)
        splitter: Any = KFold(n_splits=k, shuffle=True, random_state=seed)
        kind = "k-fold"
    else:
        k = min(CV_FOLDS, int(np.unique(y, return_counts=True)[1].min()))
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        kind = "stratified k-fold"
    splits = [(fit, scored) for fit, scored in splitter.split(np.zeros(n), y)]
    return Folds(splits, f"{k}-fold cross-validation ({kind}) on train+validation ({n} rows)")


def _score(problem_type: str, y: np.ndarray, predictions: np.ndarray, proba: Any, classes: list[str]) -> float:
    return compute_metrics(problem_type, y, predictions, proba, classes)[PRIMARY_METRIC[problem_type]]


def _classes_of(proba: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return np.asarray(classes)[np.argmax(proba, axis=1)]


def _log_loss_curve(y: np.ndarray, classes: np.ndarray, staged: Any) -> list[float]:
    """The mean log loss after each iteration (scikit-learn's log_loss checks its input each call, which
    cost more than the boosting itself at a few hundred iterations)."""
    index = np.minimum(np.searchsorted(classes, y), len(classes) - 1)  # classes_ is sorted
    known = np.asarray(classes)[index] == y  # a label the fit never saw has probability 0
    rows = np.arange(len(y))
    return [float(-np.mean(np.log(np.clip(np.where(known, p[rows, index], 0.0), 1e-15, 1.0)))) for p in staged]


def _score_boosting(
    x: pd.DataFrame,
    y: np.ndarray,
    folds: Folds,
    kinds: dict[str, str],
    problem_type: str,
    params: dict[str, Any],
    seed: int,
) -> Scored:
    """Fit the whole ``max_iter`` budget per fold, choose the iteration with the least mean validation loss."""
    budget = int(params["max_iter"])
    if folds.keeps_fit:  # large data: one fit on the train split, stopped early on validation, and kept
        ((fit, scored),) = folds.splits
        preprocess = build_preprocessor(kinds, "gradient-boosting", len(fit))
        x_fit = fit_transform_dense(preprocess, rows(x, fit), y[fit], kinds)
        x_scored = transform_dense(preprocess, rows(x, scored))
        model = _boosting(problem_type, params, seed, budget, stops_early=True)
        model.fit(x_fit, y[fit], X_val=x_scored, y_val=y[scored])
        del x_fit
        pipeline = Pipeline([("preprocess", preprocess), ("model", model)])
        return _kept_boosting(pipeline, x_scored, y[scored], problem_type, budget)
    regression = problem_type == "regression"
    fitted: list[tuple[Any, np.ndarray]] = []
    curves: list[list[float]] = []
    for fit, scored in folds.splits:
        preprocess = build_preprocessor(kinds, "gradient-boosting", len(fit))
        x_fit = fit_transform_dense(preprocess, rows(x, fit), y[fit], kinds)
        model = _boosting(problem_type, params, seed, budget).fit(x_fit, y[fit])
        del x_fit  # before the scored rows' matrix is made: not both at once
        x_scored = transform_dense(preprocess, rows(x, scored))
        if regression:
            curve = [mean_squared_error(y[scored], p) for p in model.staged_predict(x_scored)]
        else:
            curve = _log_loss_curve(y[scored], model.classes_, model.staged_predict_proba(x_scored))
        fitted.append((model, x_scored))
        curves.append(curve)
    length = min(len(c) for c in curves)
    best = int(np.argmin(np.mean([c[:length] for c in curves], axis=0))) + 1
    predictions: list[np.ndarray] = []
    probas: list[np.ndarray] = []
    for model, x_scored in fitted:
        staged = model.staged_predict(x_scored) if regression else model.staged_predict_proba(x_scored)
        stage = next(itertools.islice(staged, best - 1, None))  # the predictions after iteration ``best``
        if regression:
            predictions.append(stage)
        else:
            probas.append(stage)
            predictions.append(_classes_of(stage, model.classes_))
    y_scored = y[folds.scored]
    proba = None if regression else np.vstack(probas)
    pred = np.concatenate(predictions)
    classes = [] if regression else [str(c) for c in fitted[0][0].classes_]
    # More rows to learn from take more iterations to fit: scale the chosen count by the refit's rows
    # (within the budget).
    refit_iterations = min(budget, max(1, round(best * len(y) / folds.fitted_rows)))
    return Scored(
        "gradient-boosting",
        {"max_iter": refit_iterations},
        _score(problem_type, y_scored, pred, proba, classes),
        pred,
        proba,
        f"best validation loss after {best} of {budget} iterations; refit with {refit_iterations}",
    )


def _kept_boosting(
    pipeline: Pipeline, x_scored: np.ndarray, y_scored: np.ndarray, problem_type: str, budget: int
) -> Scored:
    """The candidate of a boosting fit stopped early on the validation rows (``x_scored``), kept as it is."""
    model = pipeline.named_steps["model"]
    if problem_type == "regression":
        proba = None
        predictions = model.predict(x_scored)
        classes: list[str] = []
    else:
        proba = model.predict_proba(x_scored)
        predictions = _classes_of(proba, model.classes_)  # predict's own choice: the most probable class
        classes = [str(c) for c in model.classes_]
    # validation_score_[i]: the validation score (the negated loss) after i iterations
    best = int(np.argmax(model.validation_score_))
    stopped = f"stopped early after {model.n_iter_}" if model.n_iter_ < budget else f"all {budget}"
    return Scored(
        "gradient-boosting",
        {"max_iter": int(model.n_iter_)},
        _score(problem_type, y_scored, predictions, proba, classes),
        predictions,
        proba,
        f"{stopped} of {budget} iterations (least validation loss after {best}); the train split's fit is kept",
        pipeline,
    )


def _score_linear(
    x: pd.DataFrame,
    y: np.ndarray,
    folds: Folds,
    kinds: dict[str, str],
    problem_type: str,
    family: str,
    params: dict[str, Any],
    seed: int,
) -> Scored:
    """The C (or alpha) of the grid, or the given one, with the best primary metric."""
    regression = problem_type == "regression"
    name = "alpha" if regression else "C"
    grid = [float(params[name])] if name in params else list(ALPHA_GRID if regression else C_GRID)
    predictions: dict[float, list[np.ndarray]] = {value: [] for value in grid}
    probas: dict[float, list[np.ndarray]] = {value: [] for value in grid}
    fitted: dict[float, Pipeline] = {}  # folds.keeps_fit: each value's model, the one chosen is kept
    classes: list[str] = []
    for fit, scored in folds.splits:
        preprocess = build_preprocessor(kinds, family, len(fit))
        x_fit = preprocess.fit_transform(rows(x, fit), y[fit])
        x_scored = preprocess.transform(rows(x, scored))
        for value in grid:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = _linear(problem_type, value, seed).fit(x_fit, y[fit])
            if folds.keeps_fit:
                fitted[value] = Pipeline([("preprocess", preprocess), ("model", model)])
            predictions[value].append(model.predict(x_scored))
            if not regression:
                probas[value].append(model.predict_proba(x_scored))
                classes = [str(c) for c in model.classes_]
    y_scored = y[folds.scored]
    scores = {}
    for value in grid:
        proba = None if regression else np.vstack(probas[value])
        scores[value] = _score(problem_type, y_scored, np.concatenate(predictions[value]), proba, classes)
    best = max(grid, key=lambda v: scores[v])  # the first of equal scores: the strongest regularisation
    chosen_proba = None if regression else np.vstack(probas[best])
    tried = ", ".join(f"{v:g}: {s:.4f}" for v, s in scores.items())
    return Scored(
        family,
        {name: best},
        scores[best],
        np.concatenate(predictions[best]),
        chosen_proba,
        f"{name}={best:g} ({PRIMARY_METRIC[problem_type]} by {name}: {tried})",
        fitted.get(best),
    )


def _score_constant(y: np.ndarray, folds: Folds, problem_type: str) -> float:
    """The primary metric of always answering the training rows' majority class (or mean)."""
    regression = problem_type == "regression"
    predictions = []
    probas = []
    classes: list[str] = []
    for fit, scored in folds.splits:
        model = (DummyRegressor() if regression else DummyClassifier(strategy="prior")).fit(
            np.zeros((len(fit), 1)), y[fit]
        )
        predictions.append(model.predict(np.zeros((len(scored), 1))))
        if not regression:
            probas.append(model.predict_proba(np.zeros((len(scored), 1))))
            classes = [str(c) for c in model.classes_]
    proba = None if regression else np.vstack(probas)
    return _score(problem_type, y[folds.scored], np.concatenate(predictions), proba, classes)


@dataclass
class Selection:
    """What selection chose, why, and its validation predictions (for the reported validation metrics)."""

    chosen: Scored
    candidates: list[Scored]
    constant_score: float
    folds: Folds
    reason: str
    notes: list[str]

    def report(self, problem_type: str) -> dict[str, Any]:
        return {
            "method": self.folds.method,
            "primary_metric": PRIMARY_METRIC[problem_type],
            "scores": {c.family: c.score for c in self.candidates},
            "constant_model_score": self.constant_score,
            "chosen": self.chosen.family,
            "params": self.chosen.settings,
            "details": {c.family: c.detail for c in self.candidates},
            "reason": self.reason,
        }


def candidates_for(algorithm: str, kinds: dict[str, str]) -> list[str]:
    """``auto``: gradient boosting and the linear family (``text`` when there is a text column)."""
    if algorithm != "auto":
        return [algorithm]
    return ["gradient-boosting", "text" if "text" in kinds.values() else "linear"]


def select(
    x: pd.DataFrame,
    y: np.ndarray,
    n_train: int,
    kinds: dict[str, str],
    problem_type: str,
    algorithm: str,
    params: dict[str, Any],
    seed: int,
) -> Selection:
    """Score each candidate family on the same folds; keep the best (the first of equal scores)."""
    folds = make_folds(y, n_train, problem_type, seed)
    scored = []
    for family in candidates_for(algorithm, kinds):
        if family == "gradient-boosting":
            scored.append(_score_boosting(x, y, folds, kinds, problem_type, params, seed))
        else:
            scored.append(_score_linear(x, y, folds, kinds, problem_type, family, params, seed))
    chosen = max(scored, key=lambda c: c.score)
    constant = _score_constant(y, folds, problem_type)
    metric = PRIMARY_METRIC[problem_type]
    if len(scored) == 1:
        reason = f"algorithm={algorithm} was asked for; {metric}={chosen.score:.4f} by {folds.method}"
    else:
        others = ", ".join(f"{c.family} {c.score:.4f}" for c in scored if c is not chosen)
        reason = f"{chosen.family} scored {metric}={chosen.score:.4f} vs {others} by {folds.method}"
    notes = []
    if chosen.score <= constant:
        notes.append(
            f"a constant model is all the data supports: {chosen.family} scored {metric}={chosen.score:.4f}, "
            f"always answering the {'mean' if problem_type == 'regression' else 'most frequent class'} "
            f"{constant:.4f} ({folds.method})"
        )
    return Selection(chosen, scored, constant, folds, reason, notes)


# A model refit on all rows scores its own training rows about as well as held-out ones, or better. Far below
# means the fit went wrong: HistGradientBoosting on 54 classes (scikit-learn 1.9) was seen to diverge after ~20
# iterations, its training accuracy falling from 0.91 to 0.23, while the same settings had scored 0.88 in
# selection. Such a refit is not kept; the next candidate is refit instead.
REFIT_TOLERANCE = 0.1


def refit_checked(
    x: pd.DataFrame, y: np.ndarray, kinds: dict[str, str], problem_type: str, selection: Selection,
    params: dict[str, Any], seed: int,
) -> Pipeline:  # fmt: skip
    """``refit`` the chosen candidate, checked on its own training rows; if it scores far below what selection
    measured, the next best candidate instead (``selection`` then names the kept one and says why)."""
    if selection.chosen.fitted is not None:  # large data: the model scored on validation is the one kept
        return selection.chosen.fitted
    metric = PRIMARY_METRIC[problem_type]
    others = sorted((c for c in selection.candidates if c is not selection.chosen), key=lambda c: -c.score)
    ranked = [selection.chosen, *others]
    first: Pipeline | None = None
    for candidate in ranked:
        pipeline = refit(x, y, kinds, problem_type, candidate, params, seed)
        first = first or pipeline
        classes = [] if problem_type == "regression" else [str(c) for c in pipeline.named_steps["model"].classes_]
        proba = predict_blocks(pipeline.predict_proba, x) if classes else None
        fitted = _score(problem_type, y, predict_blocks(pipeline.predict, x), proba, classes)
        if fitted >= candidate.score - REFIT_TOLERANCE:
            if candidate is not selection.chosen:
                selection.chosen = candidate
                selection.reason += f"; {candidate.family} kept instead (see notes)"
            return pipeline
        selection.notes.append(
            f"{candidate.family} refit on all train+validation rows scored {metric}={fitted:.4f} on those very "
            f"rows, far below the {candidate.score:.4f} it scored held out: the fit went wrong, so it was not kept"
        )
    assert first is not None  # selection always has a candidate
    selection.notes.append("every candidate's refit went wrong; the first choice is kept")
    return first


def refit(
    x: pd.DataFrame,
    y: np.ndarray,
    kinds: dict[str, str],
    problem_type: str,
    chosen: Scored,
    params: dict[str, Any],
    seed: int,
) -> Pipeline:
    """The chosen family and settings fitted on every train+validation row."""
    settings = {**BOOSTING_DEFAULTS, **{k: v for k, v in params.items() if k in BOOSTING_DEFAULTS}, **chosen.settings}
    if chosen.family != "gradient-boosting":
        settings = dict(chosen.settings)
    pipeline = build_pipeline(kinds, chosen.family, problem_type, seed, settings, len(y))
    if chosen.family == "gradient-boosting":
        # What pipeline.fit does (its steps fitted in place, in turn), without the transformed matrix twice.
        x_model = fit_transform_dense(pipeline.named_steps["preprocess"], x, y, kinds)
        pipeline.named_steps["model"].fit(x_model, y)
        return pipeline
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipeline.fit(x, y)
    return pipeline
