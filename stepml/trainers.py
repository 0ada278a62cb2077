"""``--trainer``, ``--entry-point`` and ``--hyperparameter`` of ``stepml run`` and ``stepml start``.

A built-in trainer is passed by name. A directory is checked against the script-mode contract (its entry point
exists, its serving entry point defines model_fn and predict_fn), packed deterministically and uploaded once to
``s3://<data bucket>/code/trainers/<sha256>.tar.gz``: the same directory is the same object on every target, and
the execution input names it as the trainer's ``source`` (docs/bring-your-model.md).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# the contract's module only (no pydantic): the parser is built at every command's start
from pipeline_core.trainer_contract import BUILTIN_TRAINERS, entry_point_problem, serving_problem

from stepml.targets import Target, TargetError

TRAINERS_PREFIX = "code/trainers/"


class TrainerError(TargetError):
    """A ``--trainer`` or ``--hyperparameter`` the command cannot use; the message says why."""


def parse_hyperparameters(pairs: list[str] | None) -> dict[str, Any]:
    """``name=value`` pairs as the execution input takes them: numbers and true/false as JSON, the rest as text."""
    parsed: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise TrainerError(f"--hyperparameter {pair!r}: expected NAME=VALUE, e.g. max_iter=200")
        if name in parsed:
            raise TrainerError(f"--hyperparameter {name} is given twice")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        parsed[name] = value if isinstance(value, bool | int | float) else text
    return parsed


def trainer_archive(directory: Path, entry_point: str, serving_entry_point: str | None) -> bytes:
    """The trainer directory as its deterministic tar.gz, once it is seen to honour the contract."""
    from pipeline_core.standin.archives import package_training_source

    problems = [
        entry_point_problem(directory, entry_point),
        serving_problem(directory, serving_entry_point or entry_point),
    ]
    found = [p for p in problems if p]
    if found:
        raise TrainerError(f"--trainer {directory}: " + "; ".join(dict.fromkeys(found)))
    return package_training_source(directory)


def upload_trainer(target: Target, archive: bytes) -> str:
    """Put ``archive`` under code/trainers/<sha256>.tar.gz of the target's data bucket unless it is there."""
    bucket = target.outputs.data_bucket
    key = f"{TRAINERS_PREFIX}{hashlib.sha256(archive).hexdigest()}.tar.gz"
    s3 = target.client("s3")
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") not in {"404", "NoSuchKey", "NotFound"}:
            raise
        s3.put_object(Bucket=bucket, Key=key, Body=archive, ContentType="application/x-gzip")
    return f"s3://{bucket}/{key}"


def trainer_input(
    target: Target, trainer: str | None, entry_point: str | None, serving_entry_point: str | None
) -> dict[str, Any]:
    """The execution input's ``trainer`` field for the command's options ({} when none is given)."""
    if trainer is None:
        if entry_point or serving_entry_point:
            raise TrainerError("--entry-point and --serving-entry-point need --trainer DIR (your trainer's directory)")
        return {}
    if trainer in BUILTIN_TRAINERS:
        if entry_point or serving_entry_point:
            raise TrainerError(f"--trainer {trainer} is built in: --entry-point is for a trainer directory")
        return {"trainer": trainer}
    directory = Path(trainer).expanduser()
    if not directory.is_dir():
        raise TrainerError(
            f"--trainer {trainer}: neither a built-in trainer ({', '.join(BUILTIN_TRAINERS)}) nor a directory"
        )
    entry = entry_point or "train.py"
    archive = trainer_archive(directory.resolve(), entry, serving_entry_point)
    chosen: dict[str, Any] = {"source": upload_trainer(target, archive), "entry_point": entry}
    if serving_entry_point:
        chosen["serving_entry_point"] = serving_entry_point
    return {"trainer": chosen}


def add_trainer_options(parser: Any) -> None:
    """The trainer options of ``run`` and ``start``."""
    parser.add_argument(
        "--trainer",
        metavar="NAME|DIR",
        help=f"a built-in trainer ({', '.join(BUILTIN_TRAINERS)}; default auto) or your trainer's directory "
        "(SageMaker script mode, see docs/bring-your-model.md): uploaded to the data bucket's code/trainers/",
    )
    parser.add_argument("--entry-point", help="the training script in --trainer DIR (default train.py)")
    parser.add_argument(
        "--serving-entry-point", help="the script defining model_fn/predict_fn (default: the entry point)"
    )
    parser.add_argument(
        "--hyperparameter",
        action="append",
        metavar="NAME=VALUE",
        help="a trainer setting, repeatable (e.g. max_iter=200, or any name for your own trainer)",
    )
    parser.add_argument(
        "--tune",
        nargs="?",
        const=True,
        type=int,
        metavar="MAX_TRIALS",
        help="tune hyperparameters: several training jobs (default 6), the best goes on (docs/tuning.md)",
    )


def tuning_input(args: Any) -> dict[str, Any]:
    """``{"tuning": ...}`` from ``--tune`` (its defaults) or ``--tune N`` (N training jobs); {} without it."""
    tune = getattr(args, "tune", None)
    if tune is None:
        return {}
    return {"tuning": True if tune is True else {"max_trials": tune}}
