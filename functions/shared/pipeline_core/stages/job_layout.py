"""Where a training job's files live under SageMaker's S3OutputPath: ``…/<job>/output/model.tar.gz``, the
trainer's output data beside it, and the evaluation files beside ``output/``.

No pandas here: the StepCache function checks these files exist, and its package has no pandas.
"""

from __future__ import annotations

from pipeline_core.errors import EvaluationError
from pipeline_core.models import TrainingSummary

_MODEL_SUFFIX = "/output/model.tar.gz"


def output_data_uri(training: TrainingSummary) -> str:
    """Where SageMaker put SM_OUTPUT_DATA_DIR: ``…/<job>/output/output.tar.gz`` beside the model."""
    if training.OutputDataUri:
        return training.OutputDataUri
    return _job_prefix(training.ModelArtifacts) + "/output/output.tar.gz"


def evaluation_prefix(training: TrainingSummary) -> str:
    """``…/<job>/evaluation/``: the evaluation files live beside the job's ``output/``."""
    return _job_prefix(training.ModelArtifacts) + "/evaluation/"


def _job_prefix(model_artifacts: str) -> str:
    if not model_artifacts.startswith("s3://") or not model_artifacts.endswith(_MODEL_SUFFIX):
        raise EvaluationError(
            f"training.ModelArtifacts is {model_artifacts!r}; expected s3://…/<job>{_MODEL_SUFFIX}, "
            "the layout SageMaker uses under S3OutputPath"
        )
    return model_artifacts[: -len(_MODEL_SUFFIX)]
