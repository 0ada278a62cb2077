"""The pipeline's ML work as a plain scikit-learn script: the yardstick `benchmarks/warm_run.py` measures
`stepml run` against. Usage: ``python benchmarks/plain_script.py data/iris.csv [--target COL] [--model FILE]``.

Same work as the pipeline's defaults: target = last column; classification for a text target or one with at
most 20 integer values, else regression; train/validation/test = 60/20/20 %, stratified, seed 42;
median / most-frequent imputation and one-hot encoding before HistGradientBoosting with train.py's
default hyperparameters (early stopping from 50 training rows) on one OpenMP thread; Evaluate's metrics on
the validation and test splits; the fitted pipeline saved with joblib. It imports nothing from stepml.
"""

import argparse
import json
import os
import tempfile

import joblib
import pandas as pd
from sklearn import metrics
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits

parser = argparse.ArgumentParser()
parser.add_argument("data")
parser.add_argument("--target")
parser.add_argument("--model", default=os.path.join(tempfile.gettempdir(), "plain_script_model.joblib"))
args = parser.parse_args()

frame = pd.read_csv(args.data)
target = args.target or frame.columns[-1]
frame = frame.dropna(subset=[target])
y, x = frame[target], frame.drop(columns=[target])
integral = pd.api.types.is_numeric_dtype(y) and (y % 1 == 0).all()
regression = pd.api.types.is_numeric_dtype(y) and not (integral and y.nunique() <= 20)
if not regression:
    y = y.map(lambda v: str(int(v)) if isinstance(v, float) else str(v))

stratify = None if regression else y
x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, random_state=42, stratify=stratify)
stratify = None if regression else y_rest
# 0.25 of the remaining 80 % = 20 % of all rows
x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=0.25, random_state=42, stratify=stratify)

numeric = x.select_dtypes("number").columns.tolist()
categorical = [c for c in x.columns if c not in numeric]
encode = make_pipeline(
    SimpleImputer(strategy="most_frequent"),
    OneHotEncoder(handle_unknown="ignore", sparse_output=False, max_categories=64),
)
features = ColumnTransformer(
    [("numeric", SimpleImputer(strategy="median"), numeric), ("categorical", encode, categorical)],
    sparse_threshold=0.0,
)
estimator = (HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier)(
    learning_rate=0.1, max_iter=100, max_depth=None, max_leaf_nodes=31, min_samples_leaf=20,
    l2_regularization=0.0, random_state=42, early_stopping=len(x_train) >= 50, n_iter_no_change=10,
    validation_fraction=0.15,
)  # fmt: skip
model = make_pipeline(features, estimator)
with threadpool_limits(limits=1, user_api="openmp"):  # small data: thread start-up costs more than it saves
    model.fit(x_train, y_train)


def score(x_part: pd.DataFrame, y_true: pd.Series) -> dict[str, float]:
    with threadpool_limits(limits=1, user_api="openmp"):
        y_pred = model.predict(x_part)
    if regression:
        return {
            "r2": metrics.r2_score(y_true, y_pred),
            "rmse": metrics.mean_squared_error(y_true, y_pred) ** 0.5,
            "mae": metrics.mean_absolute_error(y_true, y_pred),
        }
    result = {"accuracy": metrics.accuracy_score(y_true, y_pred)}
    for name in ("f1", "precision", "recall"):
        scorer = getattr(metrics, f"{name}_score")
        result[f"{name}_macro"] = scorer(y_true, y_pred, average="macro", zero_division=0)
    if y.nunique() == 2:
        proba = model.predict_proba(x_part)[:, 1]
        result["roc_auc"] = metrics.roc_auc_score(y_true == model.classes_[1], proba)
    result["confusion_matrix"] = metrics.confusion_matrix(y_true, y_pred).tolist()
    return result


scores = {"validation": score(x_val, y_val), "test": score(x_test, y_test)}
joblib.dump(model, args.model)
print(json.dumps({"problem": "regression" if regression else "classification", "target": target, **scores}))
