"""The execution input's ``trainer`` and ``hyperparameters``: which trainer the training job runs and what
settings it takes.

A built-in trainer (``auto``, ``gradient-boosting``, ``linear``, ``text``) is the deployment's training/ code run
with the hyperparameter ``algorithm``; it takes only its algorithm's settings (:data:`ALGORITHM_HYPERPARAMETERS`),
checked here so a typo fails the run at once, not after preprocessing. A user trainer is a script-mode source
tarball; its hyperparameters are free names with string, number or boolean values, passed on as strings.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from pipeline_core.aws.s3 import S3Uri
from pipeline_core.errors import InputValidationError
from pipeline_core.models import CUSTOM_TRAINER, BuiltinTrainer, DataProfile, RunConfig, TrainerConfig
from pipeline_core.trainer_contract import BUILTIN_TRAINERS

_GRADIENT_BOOSTING = (
    "learning_rate",
    "max_iter",
    "max_depth",
    "max_leaf_nodes",
    "min_samples_leaf",
    "l2_regularization",
)
_LINEAR = ("C", "alpha")
# The settings each built-in algorithm takes; `auto` chooses between gradient boosting and linear, so it takes both.
ALGORITHM_HYPERPARAMETERS: dict[str, tuple[str, ...]] = {
    "auto": _GRADIENT_BOOSTING + _LINEAR,
    "gradient-boosting": _GRADIENT_BOOSTING,
    "linear": _LINEAR,
    "text": _LINEAR,
}
# Preprocess sets these for every trainer (and `algorithm` for the built-ins): the input cannot.
RESERVED_HYPERPARAMETERS = ("target", "problem_type", "seed", "algorithm")
_HYPERPARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,255}$")
# SageMaker's limit on one hyperparameter value.
MAX_HYPERPARAMETER_VALUE = 2500
_ENTRY_POINT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*\.py$")
# The discriminator's tags; they are left out of error locations ("trainer.source", not "trainer.object.source").
TRAINER_TAGS = ("name", "object")


class Hyperparameters(BaseModel):
    """Settings of the built-in trainers, all optional (which algorithm takes which: ALGORITHM_HYPERPARAMETERS)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="BuiltinHyperparameters")

    learning_rate: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="shrinkage, > 0")
    max_iter: int | None = Field(default=None, ge=1, le=10000, description="boosting iterations, 1..10000")
    max_depth: int | None = Field(default=None, ge=1, description="maximum tree depth, >= 1")
    max_leaf_nodes: int | None = Field(default=None, ge=2, description="maximum leaves per tree, >= 2")
    min_samples_leaf: int | None = Field(default=None, ge=1, description="minimum samples per leaf, >= 1")
    l2_regularization: float | None = Field(default=None, ge=0, allow_inf_nan=False, description=">= 0")
    C: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="inverse regularisation, > 0")
    alpha: float | None = Field(default=None, ge=0, allow_inf_nan=False, description="regularisation, >= 0")


class UserTrainer(BaseModel):
    """A user's trainer: a tar.gz of a directory that follows SageMaker's script mode (docs/bring-your-model.md)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="UserTrainer")

    source: str = Field(description="S3 URI of the trainer's tar.gz (its files at the archive's root)")
    entry_point: str = Field(default="train.py", description="the training script, relative to the archive root")
    serving_entry_point: str | None = Field(
        default=None, description="the script defining model_fn and predict_fn; default: entry_point"
    )
    image: str | None = Field(default=None, description="training image; default: the deployment's")
    inference_image: str | None = Field(
        default=None, description="serving image; default: image if given, else the deployment's"
    )

    @field_validator("source")
    @classmethod
    def _source_is_a_tarball(cls, value: str) -> str:
        try:
            location = S3Uri.parse(value)
        except InputValidationError as error:
            raise ValueError(str(error)) from None
        if not value.startswith("s3://") or not location.key.endswith(".tar.gz"):
            raise ValueError("must be the S3 URI of a .tar.gz (s3://bucket/code/trainers/<sha256>.tar.gz)")
        return value

    @field_validator("entry_point", "serving_entry_point")
    @classmethod
    def _entry_point_is_a_relative_script(cls, value: str | None) -> str | None:
        if value is not None and (not _ENTRY_POINT.match(value) or ".." in value.split("/")):
            raise ValueError("must be a .py file relative to the trainer's directory, e.g. 'train.py'")
        return value

    @field_validator("image", "inference_image")
    @classmethod
    def _image_is_a_uri(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c.isspace() for c in value) or "/" not in value):
            raise ValueError("must be a container image URI, e.g. <account>.dkr.ecr.<region>.amazonaws.com/name:tag")
        return value


def _trainer_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "name"
    if isinstance(value, dict | UserTrainer):
        return "object"
    return None


TrainerInput = Annotated[
    Annotated[BuiltinTrainer, Tag("name")] | Annotated[UserTrainer, Tag("object")],
    Discriminator(
        _trainer_kind,
        custom_error_type="trainer_type",
        custom_error_message="must be a built-in trainer name or an object with a source",
    ),
]


def _scalar(value: Any) -> str | int | float | bool:
    if isinstance(value, str) and len(value) > MAX_HYPERPARAMETER_VALUE:
        raise ValueError(f"must be at most {MAX_HYPERPARAMETER_VALUE} characters (SageMaker's limit)")
    if not isinstance(value, str | int | float | bool):
        raise ValueError("must be a string, number or boolean")
    return value


# One check, one message per bad value (a plain union would report each of its four branches).
HyperparameterValue = Annotated[
    str | int | float | bool,
    PlainValidator(_scalar),
    WithJsonSchema({"type": ["string", "number", "boolean"]}),
]


def _did_you_mean(name: str, choices: tuple[str, ...]) -> str:
    by_lower = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
    return f"; did you mean {by_lower[close[0]]!r}?" if close else ""


def _problem(name: str, message: str, value: Any) -> dict[str, Any]:
    """One problem in the shape of a pydantic error (ValidateInput formats both alike)."""
    return {"loc": ("hyperparameters", name), "type": "value_error", "msg": message, "input": value}


def hyperparameter_problems(trainer: str | UserTrainer, raw: dict[str, Any]) -> list[dict[str, Any]]:
    """What is wrong with ``raw`` for ``trainer``, as pydantic-shaped errors (empty when nothing is)."""
    problems = []
    if isinstance(trainer, UserTrainer):
        for name, value in raw.items():
            if not _HYPERPARAMETER_NAME.match(name):
                problems.append(_problem(name, "a name is letters, digits, '_', '.' or '-' (up to 256)", value))
            elif name in RESERVED_HYPERPARAMETERS or name.startswith("sagemaker_"):
                problems.append(_problem(name, "is set by the pipeline; choose another name", value))
            elif isinstance(value, float) and not math.isfinite(value):
                problems.append(_problem(name, "must be a finite number", value))
        return problems
    allowed = ALGORITHM_HYPERPARAMETERS[trainer]
    for name, value in raw.items():
        if name not in allowed:
            takes = f"which takes {', '.join(allowed)}{_did_you_mean(name, allowed)}"
            problems.append(_problem(name, f"not a setting of the built-in trainer {trainer!r}, {takes}", value))
    try:
        Hyperparameters.model_validate({k: v for k, v in raw.items() if k in allowed})
    except ValidationError as error:
        problems += [{**e, "loc": ("hyperparameters", *e["loc"])} for e in error.errors()]
    return problems


def hyperparameter_strings(raw: dict[str, Any]) -> dict[str, str]:
    """The hyperparameters as SageMaker takes them: strings (booleans as ``true``/``false``, like JSON)."""
    return {name: json.dumps(value) if isinstance(value, bool) else str(value) for name, value in raw.items()}


def builtin_hyperparameter_strings(raw: dict[str, Any]) -> dict[str, str]:
    """A built-in trainer's checked settings as strings, numbers normalised by their type (0 -> "0.0" for a float)."""
    return hyperparameter_strings(Hyperparameters.model_validate(raw).model_dump(exclude_none=True))


def trainer_config(trainer: str | UserTrainer) -> TrainerConfig:
    """The run's :class:`TrainerConfig`, with the overrides PrepareTrainingJob merges over the defaults."""
    if isinstance(trainer, str):
        return TrainerConfig(name=trainer, builtin=True)
    serving = trainer.serving_entry_point or trainer.entry_point
    inference_image = trainer.inference_image or trainer.image
    overrides: dict[str, Any] = {
        "script": {
            "sagemaker_program": trainer.entry_point,
            "sagemaker_submit_directory": trainer.source,
            "sagemaker_container_log_level": "20",
        },
        "serving_program": serving,
    }
    if trainer.image:
        overrides["image"] = trainer.image
    if inference_image:
        overrides["inference_image"] = inference_image
    return TrainerConfig(
        name=CUSTOM_TRAINER,
        builtin=False,
        source=trainer.source,
        entry_point=trainer.entry_point,
        serving_entry_point=serving,
        image=trainer.image,
        inference_image=inference_image,
        overrides=overrides,
    )


def add_hyperparameter_rules(schema: dict[str, Any]) -> None:
    """Make the input's JSON schema say what ``hyperparameters`` takes per trainer (as the code checks)."""
    definitions = schema.setdefault("$defs", {})
    definitions["BuiltinHyperparameters"] = Hyperparameters.model_json_schema()
    builtin = {"$ref": "#/$defs/BuiltinHyperparameters"}
    rules: list[dict[str, Any]] = [
        {
            "if": {"properties": {"trainer": {"type": "object"}}, "required": ["trainer"]},
            "else": {"properties": {"hyperparameters": builtin}},
        }
    ]
    for name in BUILTIN_TRAINERS:
        if name == "auto":
            continue  # takes every built-in setting: the rule above says it
        rules.append(
            {
                "if": {"properties": {"trainer": {"const": name}}, "required": ["trainer"]},
                "then": {
                    "properties": {
                        "hyperparameters": {"propertyNames": {"enum": list(ALGORITHM_HYPERPARAMETERS[name])}}
                    }
                },
            }
        )
    schema["allOf"] = rules


def training_hyperparameters(config: RunConfig, profile: DataProfile) -> dict[str, str]:
    """The hyperparameters every training job of the run gets (Preprocess's ``hyperparameters``): what the
    data is, the seed, the built-in algorithm, then the input's own.

    A function of the config and the profile only, so a Preprocess result reused from the step cache gets
    this run's values (a run that changes only a hyperparameter reuses Preprocess, not Train).
    """
    trainer = config.trainer
    return {
        "target": profile.target,
        "problem_type": profile.problem_type,
        "seed": str(config.seed),
        # a built-in trainer is training/train.py run with the algorithm it is named for; auto is its default,
        # left out so that a training source from before `algorithm` existed still takes the default run
        **({"algorithm": trainer.name} if trainer.builtin and trainer.name != "auto" else {}),
        **config.hyperparameters,
    }
