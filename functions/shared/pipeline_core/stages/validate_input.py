"""ValidateInput: check the execution input, fill in every default and derive the run's resource names.

What a console user pastes is checked by :class:`PipelineInput` (unknown fields rejected). Every problem is
reported at once in one :class:`InputValidationError`, followed by the list of accepted fields, because the
error's message is all a console user sees of a failed execution.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline_core.aws.s3 import S3Uri
from pipeline_core.errors import InputValidationError
from pipeline_core.models import (
    DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    MAX_APPROVAL_TIMEOUT_SECONDS,
    MIN_APPROVAL_TIMEOUT_SECONDS,
    ApprovalMode,
    InputRole,
    RareClasses,
    RunConfig,
)
from pipeline_core.rollout import RolloutInput, parse_rollout, rollout_config, rollout_input_schema
from pipeline_core.sagemaker_names import (
    RESERVED_PREFIX,
    SAGEMAKER_NAME_MAX,
    check_prefix,
    endpoint_name,
    endpoint_room,
    job_name,
    slugify,
    tuning_job_name,
)
from pipeline_core.settings import require_env
from pipeline_core.stages.trainer_input import (
    TRAINER_TAGS,
    Hyperparameters,
    HyperparameterValue,
    TrainerInput,
    add_hyperparameter_rules,
    builtin_hyperparameter_strings,
    hyperparameter_problems,
    hyperparameter_strings,
    trainer_config,
)

__all__ = ["Hyperparameters", "PipelineInput", "build_run_config", "parse_input", "validate_input"]
from pipeline_core.tuning import TuningInput, tuning_config

MODEL_NAME_PATTERN = r"^[a-z0-9](-?[a-z0-9])*$"
MODEL_NAME_MAX = 40


def _tuning_accepts_a_boolean(schema: dict[str, Any]) -> None:
    # The before-validator of PipelineInput.tuning turns true/false into settings; say so in the schema.
    schema["anyOf"].insert(-1, {"type": "boolean"})


class PipelineInput(BaseModel):
    """The execution input a user gives the state machine; only ``dataset`` is required."""

    # strict: "42" is not silently taken for 42, so a typo in a console paste is reported, not guessed.
    model_config = ConfigDict(extra="forbid", strict=True, title="stepml execution input")

    dataset: str = Field(description="S3 URI of a .csv or .parquet file: s3://bucket/key")
    target: str | None = Field(default=None, min_length=1, description="target column; default: the last column")
    problem_type: Literal["classification", "regression"] | None = Field(
        default=None, description="default: inferred from the target column"
    )
    model_name: str | None = Field(
        default=None,
        max_length=MODEL_NAME_MAX,
        json_schema_extra={"pattern": MODEL_NAME_PATTERN},
        description="registry name: lowercase letters, digits and single dashes, no 'stepml-'; "
        "default: the dataset's file name and the target (e.g. penguins-species)",
    )
    quality_threshold: float | None = Field(
        default=None,
        le=1.0,
        allow_inf_nan=False,
        description="minimum primary metric to deploy; default 0.6 (f1_macro) or 0.3 (r2)",
    )
    trainer: TrainerInput = Field(
        default="auto",
        description="a built-in trainer (auto, gradient-boosting, linear, text) or your own: "
        '{"source": "s3://.../trainer.tar.gz", "entry_point": "train.py"} (docs/bring-your-model.md)',
    )
    hyperparameters: dict[str, HyperparameterValue] = Field(
        default_factory=dict,
        description="trainer settings; built-ins take gradient-boosting: learning_rate, max_iter, max_depth, "
        "max_leaf_nodes, min_samples_leaf, l2_regularization; linear, text: C, alpha; auto: all of them. "
        "Your own trainer takes any names with string, number or boolean values",
    )
    test_size: float = Field(default=0.2, ge=0.05, le=0.4, description="share of rows for the test split")
    validation_size: float = Field(default=0.2, ge=0.05, le=0.4, description="share of rows for the validation split")
    seed: int = Field(default=42, ge=0, le=2**32 - 1, description="random seed of the split and the estimator")
    endpoint_poll_seconds: int = Field(default=30, ge=1, le=600, description="wait between endpoint status checks")
    column_roles: dict[str, InputRole] = Field(
        default_factory=dict,
        description="column name -> role (numeric, categorical, boolean, datetime, text, identifier, constant), "
        "overriding the inferred one; identifier and constant columns are left out of training",
    )
    exclude_columns: list[str] = Field(default_factory=list, description="columns to leave out of training")
    rare_classes: RareClasses = Field(
        default="error",
        description="classes with too few rows for the split: error (stop and name them), drop (leave their rows "
        "out) or merge (join them into one class '(other)')",
    )
    tuning: TuningInput | None = Field(
        default=None,
        description="hyperparameter tuning: true for the defaults, or its settings; default off",
        json_schema_extra=_tuning_accepts_a_boolean,
    )
    no_cache: bool = Field(
        default=False,
        description="true: run every step even where an earlier run's result could be reused (the step cache); "
        "the results are still kept for later runs",
    )
    resume_of: str | None = Field(
        default=None,
        min_length=1,
        max_length=80,
        pattern="^[A-Za-z0-9_-]+$",
        description="the run id of the failed run this run resumes (set by `stepml resume`); recorded in the run",
    )
    trigger: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="what started this run, recorded in the run (set by StartPipeline: an upload, or the alarm "
        "that started a retraining; a schedule's input may set it too)",
    )
    rollout: RolloutInput | None = Field(
        default=None,
        description="how an update of the endpoint shifts traffic to the new model, rolled back when the "
        "endpoint's error or latency alarm fires: canary, linear or all_at_once, or its settings "
        "(docs/rollout.md); default: all at once, without alarms",
        json_schema_extra=rollout_input_schema,
    )
    approval: ApprovalMode = Field(
        default="none",
        description="manual: a model that passes the quality gate is registered as pending_approval and waits "
        "for `stepml approve` or `stepml reject` (or SendTaskSuccess/SendTaskFailure) before it is deployed; "
        "none: it is deployed at once (docs/approval.md)",
    )
    approval_timeout_seconds: int = Field(
        default=DEFAULT_APPROVAL_TIMEOUT_SECONDS,
        # checked by the validator below, whose message says why; the schema shows the bounds too
        json_schema_extra={"minimum": MIN_APPROVAL_TIMEOUT_SECONDS, "maximum": MAX_APPROVAL_TIMEOUT_SECONDS},
        description="with approval manual: how long the run waits for a decision before the model is rejected "
        f"({MIN_APPROVAL_TIMEOUT_SECONDS} to {MAX_APPROVAL_TIMEOUT_SECONDS}: the whole run must end within the state "
        "machine's 2-hour timeout, deployment included)",
    )

    @field_validator("dataset")
    @classmethod
    def _dataset_is_s3_object(cls, value: str) -> str:
        if not value.startswith("s3://"):
            raise ValueError("must be an S3 URI like s3://bucket/incoming/data.csv")
        try:
            location = S3Uri.parse(value)
        except InputValidationError as error:
            raise ValueError(str(error)) from None
        if not location.key or location.key.endswith("/"):
            raise ValueError("must name an object (s3://bucket/key), not a bucket or a folder")
        return value

    @field_validator("tuning", mode="before")
    @classmethod
    def _tuning_true_means_the_defaults(cls, value: Any) -> Any:
        # One field turns tuning on: true is every default, false the same as leaving it out.
        if value is True:
            return {}
        return None if value is False else value

    @field_validator("rollout", mode="before")
    @classmethod
    def _a_strategy_alone_takes_its_defaults(cls, value: Any) -> Any:
        return parse_rollout(value)

    @field_validator("model_name")
    @classmethod
    def _model_name_is_a_slug(cls, value: str | None) -> str | None:
        if value is not None and not re.match(MODEL_NAME_PATTERN, value):
            raise ValueError(
                "must be lowercase letters and digits, optionally separated by single dashes "
                f"(e.g. {slugify(value) or 'my-model'!r})"
            )
        if value is not None and RESERVED_PREFIX in value:
            raise ValueError(f"must not contain {RESERVED_PREFIX!r} (reserved for the pipeline's own names)")
        return value

    @field_validator("approval_timeout_seconds")
    @classmethod
    def _approval_fits_in_the_execution(cls, value: int) -> int:
        if value < MIN_APPROVAL_TIMEOUT_SECONDS:
            raise ValueError(
                f"must be at least {MIN_APPROVAL_TIMEOUT_SECONDS} seconds: the wait includes the invocation that "
                "registers the model and says how to approve it"
            )
        if value > MAX_APPROVAL_TIMEOUT_SECONDS:
            raise ValueError(
                f"must be at most {MAX_APPROVAL_TIMEOUT_SECONDS} seconds: the whole run (training, the wait for "
                "approval and deployment) must end within the state machine's 2-hour timeout (TimeoutSeconds 7200)"
            )
        return value

    @model_validator(mode="after")
    def _splits_leave_enough_for_training(self) -> PipelineInput:
        if self.test_size + self.validation_size > 0.6 + 1e-9:
            raise ValueError(
                f"test_size + validation_size is {self.test_size + self.validation_size:g}; "
                "it must be at most 0.6 so at least 40% of the rows are left for training"
            )
        return self


class ValidateInputResult(BaseModel):
    """ValidateInput's result; the ASL stores it at ``$`` so the state becomes ``{"config": ...}``."""

    config: RunConfig


class ValidateInputEvent(BaseModel):
    """What the ValidateInput state passes (see its Parameters in the ASL)."""

    input: Any
    execution_name: str = Field(min_length=1)
    execution_arn: str = ""
    start_time: str | None = None


def input_json_schema() -> dict[str, Any]:
    """The JSON schema of the execution input (used to document what a console user may paste)."""
    schema = PipelineInput.model_json_schema()
    add_hyperparameter_rules(schema)  # which hyperparameters a trainer takes, as parse_input checks them
    return schema


def _describe_schema(schema: dict[str, Any], definitions: dict[str, Any]) -> str:
    if "$ref" in schema:
        return _describe_schema(definitions[schema["$ref"].split("/")[-1]], definitions)
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return " or ".join(_describe_schema(option, definitions) for option in options)
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    kind = {"number": "number", "integer": "integer", "string": "string", "null": "null"}.get(kind, kind)
    if kind == "object" and "properties" in schema:
        required = set(schema.get("required", []))
        keys = ", ".join(
            f"{k} ({_describe_schema(v, definitions)}{'; required' if k in required else ''})"
            for k, v in schema["properties"].items()
        )
        return f"object with keys {keys}" if required else f"object with optional keys {keys}"
    bounds = []
    for key, symbol in (("exclusiveMinimum", ">"), ("minimum", ">="), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in schema:
            bounds.append(f"{symbol} {schema[key]}")
    if "maxLength" in schema:
        bounds.append(f"at most {schema['maxLength']} characters")
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def allowed_fields_text() -> str:
    """One line per accepted field: name, type and default (appended to every input error)."""
    schema = input_json_schema()
    definitions = schema.get("$defs", {})
    required = set(schema.get("required", []))
    lines = []
    for name, prop in schema["properties"].items():
        options = [p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
        kind = " or ".join(_describe_schema(p, definitions) for p in options)
        if prop.get("anyOf") and len(options) < len(prop["anyOf"]):
            kind += " or null"
        if name in required:
            default = "required"
        elif "default" in prop and prop["default"] is not None:
            default = f"default {json.dumps(prop['default'])}"
        else:
            default = "optional"
        lines.append(f"  {name}: {kind}; {default} - {prop.get('description', '')}")
    return "\n".join(lines)


def _value_text(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problem_text(error: dict[str, Any]) -> str:
    loc = list(error["loc"])
    if loc[:1] == ["trainer"] and len(loc) > 1 and loc[1] in TRAINER_TAGS:
        del loc[1]  # the union's tag: "trainer.source", not "trainer.object.source"
    where = ".".join(str(part) for part in loc) or "input"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{where}: unknown field (value {_value_text(error['input'])})"
    if kind == "missing":
        return f"{where}: required field is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["loc"]:
        return f"{where}: {message} (got {_value_text(error['input'])})"
    return f"{where}: {message}"


def parse_input(raw: Any) -> PipelineInput:
    """The execution input as a :class:`PipelineInput`; every problem reported in one error."""
    if not isinstance(raw, dict):
        problems = [f"input: must be a JSON object, got {type(raw).__name__} {_value_text(raw)}"]
    else:
        try:
            request = PipelineInput.model_validate(raw)
        except ValidationError as error:
            problems = [_problem_text(dict(e)) for e in error.errors()]
        else:
            # which names and values are right depends on the trainer, known only now
            found = hyperparameter_problems(request.trainer, request.hyperparameters)
            if not found:
                return request
            problems = [_problem_text(e) for e in found]
    raise InputValidationError(
        f"the execution input is not valid ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n"
        + "\n".join(f"- {p}" for p in problems)
        + "\nAllowed fields (only dataset is required; unknown fields are rejected):\n"
        + allowed_fields_text()
    )


def build_run_config(raw_input: Any, execution_name: str, data_bucket: str, endpoint_name_prefix: str) -> RunConfig:
    """Validate ``raw_input`` and return the complete run configuration with derived names and prefixes."""
    request = parse_input(raw_input)
    # Every SageMaker name of the run starts with the stage's prefix (see pipeline_core/sagemaker_names.py).
    check_prefix(endpoint_name_prefix)
    room = endpoint_room(endpoint_name_prefix)
    # Without a model_name in the input, ValidateData derives it from the file and the target (the last
    # column by default, known only once the file is read): see stages/identity.py.
    model_name = request.model_name
    if model_name is not None and len(model_name) > room:
        raise InputValidationError(
            f"model_name {model_name!r} is {len(model_name)} characters; with the endpoint prefix "
            f"{endpoint_name_prefix!r} the endpoint name allows at most {room} (SageMaker's limit is "
            f"{SAGEMAKER_NAME_MAX})"
        )

    run_job_name = job_name(endpoint_name_prefix, execution_name)
    if isinstance(request.trainer, str):
        hyperparameters = builtin_hyperparameter_strings(request.hyperparameters)
    else:
        hyperparameters = hyperparameter_strings(request.hyperparameters)
    run_id = execution_name
    rollout = None if request.rollout is None else rollout_config(request.rollout)
    return RunConfig(
        run_id=run_id,
        dataset=request.dataset,
        target=request.target,
        problem_type=request.problem_type,
        model_name=model_name,
        quality_threshold=request.quality_threshold,
        hyperparameters=hyperparameters,
        trainer=trainer_config(request.trainer),
        test_size=request.test_size,
        validation_size=request.validation_size,
        seed=request.seed,
        endpoint_poll_seconds=request.endpoint_poll_seconds,
        data_bucket=data_bucket,
        training_job_name=run_job_name,
        sagemaker_model_name=run_job_name,
        endpoint_config_name=run_job_name,
        endpoint_name=endpoint_name(endpoint_name_prefix, model_name) if model_name else None,
        endpoint_name_prefix=endpoint_name_prefix,
        raw_prefix=f"s3://{data_bucket}/raw/{run_id}/",
        processed_prefix=f"s3://{data_bucket}/processed/{run_id}/",
        # No trailing slash: this is SageMaker's S3OutputPath; it appends /<job>/output/model.tar.gz.
        models_prefix=f"s3://{data_bucket}/models",
        column_roles=request.column_roles,
        exclude_columns=request.exclude_columns,
        rare_classes=request.rare_classes,
        no_cache=request.no_cache,
        resume_of=request.resume_of,
        trigger=request.trigger,
        rollout=rollout,
        endpoint_instance_count=rollout.instance_count if rollout else 1,
        approval=request.approval,
        approval_timeout_seconds=request.approval_timeout_seconds,
        tuning=None
        if request.tuning is None
        else tuning_config(
            request.tuning,
            job_name=tuning_job_name(endpoint_name_prefix, execution_name),
            fixed=set(request.hyperparameters),
            problem_type=request.problem_type,
            algorithm=request.trainer if isinstance(request.trainer, str) else "custom",
        ),
    )


def validate_input(event: dict[str, Any], environ: dict[str, str] | None = None) -> ValidateInputResult:
    """The ValidateInput state: ``{"config": RunConfig}`` from the state's event."""
    parsed = ValidateInputEvent.model_validate(event)
    config = build_run_config(
        parsed.input,
        parsed.execution_name,
        data_bucket=require_env("DATA_BUCKET", environ),
        endpoint_name_prefix=require_env("ENDPOINT_NAME_PREFIX", environ),
    )
    return ValidateInputResult(config=config)
