"""The script-mode contract a trainer honours, checked where a breach can be named (docs/bring-your-model.md).

Training: the entry point exists in the source; the script writes something to ``SM_MODEL_DIR`` and
``test_predictions.csv`` (``y_true``, ``y_pred`` columns) to ``SM_OUTPUT_DATA_DIR``. Serving: the serving entry
point defines ``model_fn`` and ``predict_fn``. The serving check reads the code without running it (``ast``), so
the CLI can check a trainer directory before it is uploaded and the stand-in's CreateModel before an endpoint
would fail to start.
"""

from __future__ import annotations

import ast
import csv
import io
from pathlib import Path

# the built-in trainers (training/train.py's `algorithm`); models.BuiltinTrainer is the same list as a type
# (tests/unit/test_user_trainer.py checks they agree)
BUILTIN_TRAINERS = ("auto", "gradient-boosting", "linear", "text")
PREDICTIONS_FILE = "test_predictions.csv"
PREDICTION_COLUMNS = ("y_true", "y_pred")
# predict_records is the built-in trainer's fast path; either it or predict_fn serves requests
SERVING_FUNCTIONS = ("model_fn", "predict_fn")


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def files_listing(code_dir: Path, limit: int = 12) -> str:
    """The first ``limit`` files of a trainer's directory, for a message that says what is there instead."""
    found = sorted(p.relative_to(code_dir).as_posix() for p in code_dir.rglob("*") if p.is_file())
    if not found:
        return "no files"
    return ", ".join(found[:limit]) + (f" and {len(found) - limit} more" if len(found) > limit else "")


def entry_point_problem(code_dir: Path, program: str, what: str = "entry point") -> str | None:
    """Why ``program`` cannot be run from ``code_dir`` (None when it can)."""
    if not (code_dir / program).is_file():
        return f"the trainer's {what} {program} is not in its directory (it holds {files_listing(code_dir)})"
    return None


def serving_problem(code_dir: Path, program: str) -> str | None:
    """Why ``program`` cannot serve (it is missing, does not parse, or lacks model_fn/predict_fn); None if it can."""
    missing_file = entry_point_problem(code_dir, program, "serving entry point")
    if missing_file:
        return missing_file
    try:
        tree = ast.parse((code_dir / program).read_bytes(), filename=program)
    except (SyntaxError, ValueError) as error:
        return f"the trainer's serving entry point {program} does not parse: {error}"
    names = _top_level_names(tree)
    missing = [name for name in SERVING_FUNCTIONS if name not in names]
    if missing == ["predict_fn"] and "predict_records" in names:
        missing = []
    if missing:
        return (
            f"the trainer's serving entry point {program} defines no {' and no '.join(missing)}: SageMaker's "
            "serving contract needs model_fn(model_dir) to load the model and predict_fn(data, model) to predict"
        )
    return None


def predictions_problem(output_data_dir: Path, program: str) -> str | None:
    """Why ``SM_OUTPUT_DATA_DIR`` lacks usable test predictions (None when ``test_predictions.csv`` is there)."""
    path = output_data_dir / PREDICTIONS_FILE
    if not path.is_file():
        return (
            f"{program} wrote no {PREDICTIONS_FILE} to SM_OUTPUT_DATA_DIR: a trainer writes its predictions for the "
            f"test channel there (columns {', '.join(PREDICTION_COLUMNS)}[, proba_<label>...]); Evaluate and the "
            "quality gate score them"
        )
    with path.open("r", encoding="utf-8", errors="replace", newline="") as handle:
        header = next(csv.reader(io.StringIO(handle.readline())), [])
    missing = [column for column in PREDICTION_COLUMNS if column not in header]
    if missing:
        return f"{PREDICTIONS_FILE} from {program} has no column {', '.join(missing)} (its header: {header})"
    return None


def empty_model_problem(program: str) -> str:
    """The message for a trainer that wrote nothing to ``SM_MODEL_DIR``."""
    return (
        f"{program} exited successfully but wrote nothing to SM_MODEL_DIR: a trainer saves its model there "
        "(SageMaker packs that directory as model.tar.gz for the serving entry point's model_fn)"
    )
