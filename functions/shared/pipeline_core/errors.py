"""Exceptions raised by the pipeline's stages.

The class name is the error name a Step Functions Retry or Catch matches (Lambda reports ``errorType``
as the exception's class name), so renaming a class is a change to ``statemachine/pipeline.asl.json``.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error a stage raises on purpose."""


class PermanentError(PipelineError):
    """An error that another attempt cannot fix; the state machine does not retry it."""


class TransientError(PipelineError):
    """An error worth retrying (a throttled or briefly unavailable dependency)."""


class StillRunning(TransientError):
    """Work the invocation started goes on beyond it: not a failure, the state retries to wait again (logged
    without a traceback and not counted as the stage failing)."""


class ConfigurationError(PermanentError):
    """A required setting (environment variable, resource name) is missing or invalid."""


class InputValidationError(PermanentError):
    """The execution input is not what the pipeline accepts."""


class DataValidationError(PermanentError):
    """The dataset cannot be used for training; the message names the column, row and problem."""


class ModelIdentityError(PermanentError):
    """The model name is registered with another target or problem type: a model is (name, target, problem
    type), so this run would be gated against, or deploy over, another model. The message names both."""


class DatasetNotFoundError(PermanentError):
    """The dataset named in the input does not exist."""


class DatasetTooLargeError(PermanentError):
    """The dataset is larger than the run's data path can hold; the message names the setting to change.
    Not a DataValidationError: the file is not bad, so it is not quarantined."""


class TrainingFailedError(PermanentError):
    """The training script failed; the cause carries the script's own error."""


class TuningFailedError(PermanentError):
    """No training job of a hyperparameter tuning job produced its objective metric; the cause names why."""


class EvaluationError(PermanentError):
    """The trained model's evaluation could not be produced."""


class MonitoringError(PermanentError):
    """Drift monitoring cannot run as asked (a bad request); the message says what to do."""


class ModelNotFoundError(MonitoringError):
    """The registry has no such model, or no such version of it; the message names what it has."""


class BaselineNotFoundError(MonitoringError):
    """The model version has no training baseline (registered before monitoring) or it was deleted."""


class RegistryConflictError(TransientError):
    """Another run took the model version this run tried to register; registering again resolves it."""


class TransientStoreError(TransientError):
    """S3 or DynamoDB answered with a throttling or service error."""


class DeployLeaseBusyError(TransientError):
    """Another execution is changing this model's endpoint; the state machine waits and tries again."""


class BatchScoringError(PermanentError):
    """Base of batch scoring's own errors (a bad input file is a DataValidationError, as for training)."""


class TransformJobFailedError(BatchScoringError):
    """The batch transform job failed or ran out of time; the cause carries its FailureReason."""


class BatchOutputError(BatchScoringError):
    """The transform job's output does not line up with the input rows; no scored file is written."""


class ModelRejected(PermanentError):
    """A person rejected a model waiting for manual approval. Never raised by a stage: ``stepml reject`` (or
    ``aws stepfunctions send-task-failure --error ModelRejected``) sends it as the RequestApproval state's
    error, which that state's Catch sends to RegisterRejected. Named here so both use one spelling."""


class ApprovalStateError(PermanentError):
    """A model version is not in the state an approval step expects (e.g. no longer pending_approval)."""
