"""The execution input ``stepml run`` and ``stepml start`` build from their options: the run's own fields
(target, problem type, model name, threshold, whether to use the step cache), how to read the dataset
(``stepml.data_options``), the trainer and its hyperparameters, and tuning (``stepml.trainers``), and the
endpoint update's rollout (``stepml.rollout_commands``). ValidateInput checks the result like any input."""

from __future__ import annotations

import argparse
from typing import Any

from stepml.data_options import data_options
from stepml.rollout_commands import rollout_input
from stepml.trainers import parse_hyperparameters, trainer_input, tuning_input


def options_input(args: argparse.Namespace, target_option: str) -> dict[str, Any]:
    """The input fields the options set (none for an option not given); ``target_option`` is the option that
    names the target column (``target`` for run, ``target_column`` for start, whose --target is the place).

    Raises DataOptionError, TrainerError or RolloutOptionError for a malformed option.
    """
    execution_input: dict[str, Any] = {}
    for option, key in ((target_option, "target"), ("problem_type", "problem_type"), ("model_name", "model_name")):
        if getattr(args, option, None):
            execution_input[key] = getattr(args, option)
    if getattr(args, "threshold", None) is not None:
        execution_input["quality_threshold"] = args.threshold
    hyperparameters = parse_hyperparameters(getattr(args, "hyperparameter", None))
    if hyperparameters:
        execution_input["hyperparameters"] = hyperparameters
    if getattr(args, "no_cache", False):
        execution_input["no_cache"] = True
    execution_input.update(rollout_input(getattr(args, "rollout", None)))
    if getattr(args, "approval", None):
        execution_input["approval"] = args.approval
    if getattr(args, "approval_timeout", None) is not None:
        execution_input["approval_timeout_seconds"] = args.approval_timeout
    return {**execution_input, **data_options(args), **tuning_input(args)}


def add_approval_options(parser: argparse.ArgumentParser) -> None:
    """``--approval manual`` and ``--approval-timeout SECONDS`` (docs/approval.md)."""
    parser.add_argument(
        "--approval",
        choices=["none", "manual"],
        help="manual: a model that passes the quality gate waits for `stepml approve|reject` before it is "
        "deployed (default: none)",
    )
    parser.add_argument(
        "--approval-timeout",
        type=int,
        metavar="SECONDS",
        help="with --approval manual: reject the model if nobody decides within SECONDS (default 3600; 10 to 5400)",
    )


def add_cache_option(parser: argparse.ArgumentParser) -> None:
    """``--no-cache``: run every step even when the step cache holds its result (results are still stored)."""
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="run every step, even those whose result the step cache holds (their results are still stored)",
    )


def trainer_fields(target: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``{"trainer": ...}`` from --trainer (a directory is uploaded to ``target`` first), or {}."""
    return trainer_input(target, args.trainer, args.entry_point, args.serving_entry_point)
