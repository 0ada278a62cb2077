"""Errors the SageMaker stand-in raises, named after SageMaker's own error codes.

On a local target the stand-in is a Lambda function, so the class name becomes the Step Functions error
name of the failed task, as ``ValidationException`` would be on AWS. They are permanent (but for
TrainingJobInProgress): the same request fails the same way on another attempt (the ASL retries only
throttling and transient store errors).
"""

from __future__ import annotations

from pipeline_core.errors import PermanentError, StillRunning


class StandInError(PermanentError):
    """Base of the stand-in's API errors."""


class ValidationException(StandInError):
    """The request is malformed, names something that does not exist, or re-creates an existing name."""


class ResourceNotFound(StandInError):
    """The named resource does not exist (SageMaker's code for e.g. DescribeTrainingJob on a missing job)."""


class ResourceInUse(StandInError):
    """The name is taken by a different resource (SageMaker's code for a reused training job name)."""


class ModelError(StandInError):
    """The model could not answer a request (sagemaker-runtime's code for a failing container)."""


class TrainingJobInProgress(StillRunning):
    """The training job still runs when the stand-in's CreateTrainingJob invocation must end (a Lambda has at
    most 900 s); the Train state retries this error and the next attempt waits on the same job. SageMaker has
    no such error: on AWS the ``.sync`` integration waits for the job itself."""
