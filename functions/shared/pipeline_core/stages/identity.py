"""A model's identity: (model name, target, problem type).

Versions of one model name are compared by the quality gate and served by one endpoint, so they must
predict the same column the same way. The default model name is therefore the dataset's file name *and*
the target (``penguins-species``, ``penguins-sex``): two targets of one file are two models. A name given in
the input that the registry already holds with another target or problem type is refused
(:class:`ModelIdentityError`) by ValidateData before training, and again by Evaluate (before it gates) and
AcquireDeployLease (before it deploys), since another run may have registered the name in between.

This module imports neither pandas nor numpy: the Register function (AcquireDeployLease) uses it.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.s3 import S3Uri
from pipeline_core.errors import ConfigurationError, ModelIdentityError
from pipeline_core.models import DataProfile, ModelIdentity, RegistryRecord, ResolvedIdentity, RunConfig
from pipeline_core.sagemaker_names import RESERVED_PREFIX, endpoint_name, endpoint_room, slugify
from pipeline_core.stages.validate_input import MODEL_NAME_MAX


def default_model_name(dataset_uri: str, target: str, max_length: int = MODEL_NAME_MAX) -> str:
    """The slug of ``<file stem>-<target>``, at most ``max_length`` characters ('model' if nothing is left)."""
    stem = PurePosixPath(S3Uri.parse(dataset_uri).key).stem
    slug = slugify(f"{stem}-{target}").replace(RESERVED_PREFIX, "")
    slug = re.sub(r"-+", "-", slug).strip("-")[: max(1, min(max_length, MODEL_NAME_MAX))].rstrip("-")
    return slug or "model"


def resolve_identity(config: RunConfig, data: DataProfile) -> ResolvedIdentity:
    """The run's model name, endpoint name and identity, now that ValidateData knows the target and problem type.

    A model name given in the input is kept (ValidateInput checked that its endpoint name fits).
    """
    if config.model_name is not None and config.endpoint_name is not None:
        model_name, endpoint = config.model_name, config.endpoint_name
    else:
        prefix = config.endpoint_name_prefix
        if not prefix:
            raise ConfigurationError(
                "config has neither model_name nor endpoint_name_prefix: ValidateInput sets one of them"
            )
        model_name = config.model_name or default_model_name(config.dataset, data.target, endpoint_room(prefix))
        endpoint = endpoint_name(prefix, model_name)
    identity = ModelIdentity(model_name=model_name, target=data.target, problem_type=data.problem_type)
    return ResolvedIdentity(model_name=model_name, endpoint_name=endpoint, identity=identity)


def describe(identity: ModelIdentity | RegistryRecord) -> str:
    return f"target {identity.target!r}, {identity.problem_type}"


def conflicting_version(versions: list[RegistryRecord], identity: ModelIdentity) -> RegistryRecord | None:
    """The newest version of the name with another target or problem type, if any (every status counts:
    a rejected version's record also says what the name means)."""
    return next(
        (v for v in versions if (v.target, v.problem_type) != (identity.target, identity.problem_type)),
        None,
    )


def another_name(identity: ModelIdentity, dataset: str | None) -> str:
    """A model name to suggest: the default one for this file and target if that is not the taken name, else
    the taken name with the problem type's kind appended."""
    if dataset:
        default = default_model_name(dataset, identity.target)
        if default != identity.model_name:
            return default
    kind = {"binary_classification": "binary", "multiclass_classification": "classes"}.get(
        identity.problem_type, identity.problem_type
    )
    return f"{identity.model_name[: MODEL_NAME_MAX - len(kind) - 1].rstrip('-')}-{kind}"


def identity_error(identity: ModelIdentity, other: RegistryRecord, dataset: str | None = None) -> ModelIdentityError:
    return ModelIdentityError(
        f"model name {identity.model_name!r} is already a model of another kind: {other.model_name} v{other.version} "
        f"({other.status}) predicts {describe(other)}, and this run predicts {describe(identity)}. A model is "
        "(model name, target, problem type), so this run cannot be compared with it nor replace it on its "
        f"endpoint. Give this run another model_name (e.g. {another_name(identity, dataset)!r})"
    )


def check_identity(
    registry: ModelRegistry, identity: ModelIdentity, *, consistent: bool = False, dataset: str | None = None
) -> None:
    """Raise ModelIdentityError if the registry holds ``identity.model_name`` with another target or
    problem type (``consistent``: a strongly consistent read, for a decision taken under the deploy lease;
    ``dataset``: the run's dataset URI, to suggest the default name for its file and target)."""
    other = conflicting_version(registry.versions(identity.model_name, consistent=consistent), identity)
    if other is not None:
        raise identity_error(identity, other, dataset)
