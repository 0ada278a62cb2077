"""The names of the SageMaker resources the pipeline makes, every one under its stage's prefix.

The prefix is ``stepml-<Stage>`` (the stack's ENDPOINT_NAME_PREFIX); every name is ``<prefix>-...``, so the
stack's IAM statements name ``stepml-${Stage}-*`` and one stage's roles cannot touch another stage's jobs,
models or endpoints in the same account. A stage is a single name segment (no dash): otherwise
``stepml-dev-*`` would also match the names of a stage called ``dev-eu``.

==========================  ==============================================  =============
resource                    name                                            SageMaker max
==========================  ==============================================  =============
training job, model and     ``<prefix>-<run token>``                        63
endpoint config of a run
hyperparameter tuning job   ``<prefix>-<short run token>``                  32
(its training jobs)         ``<tuning job>-NNN-<8 hex>`` (SageMaker's)      63
endpoint of a model         ``<prefix>-<model name>-ep``                    63
batch transform job         ``<prefix>-batch-<run token>``                  63
==========================  ==============================================  =============

A run token is the execution name slugged and cut to what the limit leaves, then ``-`` and 8 hex of the
execution name's sha256, so two executions get two names even when their readable parts are cut alike.
The tuning job's 32 characters leave the least room: a prefix longer than :data:`PREFIX_MAX` (a stage of
more than 16 characters) cannot name one and is refused with a :class:`ConfigurationError`.
"""

from __future__ import annotations

import hashlib
import re

from pipeline_core.errors import ConfigurationError

RESERVED_PREFIX = "stepml-"
SAGEMAKER_NAME_MAX = 63
TUNING_JOB_NAME_MAX = 32
TOKEN_SLUG_MAX = 30
_DIGEST_CHARS = 8
# The prefix + "-" + the 8-hex digest alone must fit a tuning job's 32 characters.
PREFIX_MAX = TUNING_JOB_NAME_MAX - 1 - _DIGEST_CHARS
_PREFIX = re.compile(r"^stepml-[a-z0-9]+$")
ENDPOINT_SUFFIX = "-ep"
_BATCH = "batch"


def slugify(text: str) -> str:
    """Lowercase, every run of characters outside [a-z0-9] becomes one '-', no leading/trailing '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def run_token(execution_name: str, slug_max: int = TOKEN_SLUG_MAX, readable: str | None = None) -> str:
    """First ``slug_max`` chars of the slugged execution name (or of ``readable``, a part of it) + '-' + 8 hex of
    the whole name's sha256: unique and short."""
    digest = hashlib.sha256(execution_name.encode("utf-8")).hexdigest()[:_DIGEST_CHARS]
    prefix = slugify(execution_name if readable is None else readable)[: max(0, slug_max)].rstrip("-")
    # A name with no letters or digits (or no room for them) is the hash alone: still valid and unique.
    return f"{prefix}-{digest}" if prefix else digest


def check_prefix(prefix: str) -> str:
    """``prefix`` if every name above can be made with it; else a ConfigurationError saying why."""
    if not _PREFIX.match(prefix):
        raise ConfigurationError(
            f"ENDPOINT_NAME_PREFIX {prefix!r} must be stepml-<stage>, the stage lowercase letters and digits only "
            "(no dash: the stack's IAM allows stepml-<stage>-*, which would also match a stage <stage>-<more>)"
        )
    if len(prefix) > PREFIX_MAX:
        raise ConfigurationError(
            f"ENDPOINT_NAME_PREFIX {prefix!r} is {len(prefix)} characters; SageMaker's hyperparameter tuning job "
            f"names allow at most {TUNING_JOB_NAME_MAX}, which leaves {PREFIX_MAX} for the prefix: use a stage of "
            f"at most {PREFIX_MAX - len(RESERVED_PREFIX)} characters"
        )
    return prefix


def _named(prefix: str, middle: str, execution_name: str, limit: int, readable: str | None = None) -> str:
    head = f"{check_prefix(prefix)}-{middle}"
    room = limit - len(head) - 1 - _DIGEST_CHARS  # the token is <slug>-<8 hex>
    return f"{head}{run_token(execution_name, min(TOKEN_SLUG_MAX, room), readable)}"


def job_name(prefix: str, execution_name: str) -> str:
    """The run's training job, and its SageMaker model and endpoint config (at most 63 characters)."""
    return _named(prefix, "", execution_name, SAGEMAKER_NAME_MAX)


def tuning_job_name(prefix: str, execution_name: str) -> str:
    """The run's hyperparameter tuning job (at most 32 characters; SageMaker names its training jobs
    ``<this>-NNN-<8 hex>``, at most 45)."""
    return _named(prefix, "", execution_name, TUNING_JOB_NAME_MAX)


def transform_job_name(prefix: str, execution_name: str, drop: str = "") -> str:
    """A batch scoring execution's transform job (at most 63 characters); ``drop`` is a prefix of the execution
    name left out of the readable part (``batch-``, which the name already says)."""
    return _named(prefix, f"{_BATCH}-", execution_name, SAGEMAKER_NAME_MAX, execution_name.removeprefix(drop))


def endpoint_room(prefix: str) -> int:
    """The longest model name whose endpoint ``<prefix>-<model>-ep`` fits SageMaker's 63 characters."""
    return SAGEMAKER_NAME_MAX - len(check_prefix(prefix)) - 1 - len(ENDPOINT_SUFFIX)


def endpoint_name(prefix: str, model_name: str) -> str:
    """The endpoint that serves ``model_name`` (its length is checked by the caller with :func:`endpoint_room`)."""
    return f"{check_prefix(prefix)}-{model_name}{ENDPOINT_SUFFIX}"
