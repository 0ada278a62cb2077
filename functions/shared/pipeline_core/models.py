"""Typed contracts between the states of ``statemachine/pipeline.asl.json``.

Each stage returns one of these models (as JSON) and the state machine stores it under a ResultPath:

    $.config       RunConfig            ValidateInput
    $.ingest       IngestResult         Ingest
    $.data         DataProfile          ValidateData
    $.prep         PreprocessResult     Preprocess
    $.tuning       TuningSummary        Tune (ResultSelector over DescribeHyperParameterTuningJob), if tuning
    $.training     TrainingSummary      Train, or DescribeBestTrainingJob after Tune (ResultSelector over
                                        DescribeTrainingJob)
    $.evaluation   EvaluationResult     Evaluate (replaced by $.lease.evaluation once the lease is held)
    $.lease        DeployLeaseResult    AcquireDeployLease
    $.registration RegistrationResult   Register / RegisterRejected

Only S3 URIs and small summaries travel in the state (Step Functions caps a state's data at 256 KiB).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ProblemType = Literal["binary_classification", "multiclass_classification", "regression"]
RequestedProblemType = Literal["classification", "regression"]


class Contract(BaseModel):
    """Base of the state contracts: unknown fields are ignored so a state can read a subset."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class TuningConfig(Contract):
    """Hyperparameter tuning of a run (``$.config.tuning``), in the shape of SageMaker's
    CreateHyperParameterTuningJob request fields the Tune state fills (see ``pipeline_core.tuning``)."""

    job_name: str  # HyperParameterTuningJobName: at most 32 characters
    strategy: Literal["Bayesian", "Random"]
    max_trials: int  # ResourceLimits.MaxNumberOfTrainingJobs
    max_parallel: int  # ResourceLimits.MaxParallelTrainingJobs
    objective_metric: str  # maximised; one of metric_definitions
    metric_definitions: list[dict[str, str]]  # AlgorithmSpecification.MetricDefinitions: Name, Regex
    parameter_ranges: dict[str, list[dict[str, Any]]]  # ParameterRanges


class RunConfig(Contract):
    """The execution input after ValidateInput filled in every default (stored at ``$.config``)."""

    run_id: str
    dataset: str
    target: str | None
    problem_type: RequestedProblemType | None
    model_name: str
    quality_threshold: float | None
    hyperparameters: dict[str, str]
    test_size: float
    validation_size: float
    seed: int
    endpoint_poll_seconds: int
    data_bucket: str
    training_job_name: str
    sagemaker_model_name: str
    endpoint_config_name: str
    endpoint_name: str
    raw_prefix: str
    processed_prefix: str
    models_prefix: str
    # None: no tuning, the Train state trains once (the TuneOrTrain state reads this)
    tuning: TuningConfig | None = None


class IngestResult(Contract):
    """Where the raw dataset was put and its content hash (``$.ingest``)."""

    raw_uri: str
    source_uri: str
    sha256: str
    size_bytes: int
    format: Literal["csv", "parquet"]


class ColumnProfile(Contract):
    name: str
    dtype: Literal["numeric", "categorical", "boolean"]
    missing: int


class DataProfile(Contract):
    """What ValidateData learned about the dataset (``$.data``)."""

    n_rows: int
    n_columns: int
    target: str
    target_chosen_by: Literal["input", "last_column"]
    problem_type: ProblemType
    problem_type_chosen_by: Literal["input", "inferred"]
    problem_type_reason: str
    class_labels: list[str] = Field(default_factory=list)
    feature_columns: list[str]
    columns: list[ColumnProfile]


class PreprocessResult(Contract):
    """The processed splits, one S3 prefix per SageMaker channel (``$.prep``)."""

    train_uri: str
    validation_uri: str
    test_uri: str
    n_train: int
    n_validation: int
    n_test: int
    feature_columns: list[str]
    dropped_rows: int
    hyperparameters: dict[str, str]


class TuningSummary(Contract):
    """The part of DescribeHyperParameterTuningJob the run keeps (``$.tuning``)."""

    HyperParameterTuningJobName: str
    HyperParameterTuningJobStatus: str
    BestTrainingJobName: str
    TunedHyperParameters: dict[str, str]
    Objective: dict[str, Any]  # FinalHyperParameterTuningJobObjectiveMetric: MetricName, Value (, Type)
    TrainingJobStatusCounters: dict[str, int]


class TrainingSummary(Contract):
    """The part of DescribeTrainingJob the later states use (``$.training``)."""

    TrainingJobName: str
    TrainingJobStatus: str
    ModelArtifacts: str
    OutputDataUri: str | None = None


class EvaluationResult(Contract):
    """Metrics, report locations and the quality gate's inputs (``$.evaluation``)."""

    metrics: dict[str, float]
    primary_metric: str
    primary_value: float
    threshold: float
    champion_version: int | None
    champion_value: float
    passed: bool
    reason: str
    evaluation_uri: str
    report_uri: str


class DeployLeaseResult(Contract):
    """The model's deploy lease this execution holds until Register or RecordFailure (``$.lease``), and the
    quality gate decided again while holding it.

    ``evaluation`` is ``$.evaluation`` as decided against the champion found under the lease (Evaluate's own
    result when that champion is the one it compared with); the GateUnderLease state copies it to
    ``$.evaluation``. ``superseded``: a champion registered since Evaluate beats this model, so the lease was
    given back at once and the run registers its model as rejected (``evaluation.reason`` says why).
    ``evaluation`` is None only for an event without one (an execution of an older definition).
    """

    model_name: str
    holder: str
    acquired_at: str
    expires_at: int
    superseded: bool = False
    evaluation: EvaluationResult | None = None


class RegistrationResult(Contract):
    """The registry record written for this run (``$.registration``)."""

    model_name: str
    version: int
    status: Literal["approved", "rejected"]
    endpoint_name: str | None
    model_artifact: str


class RegistryRecord(Contract):
    """One model version in the DynamoDB model registry."""

    model_name: str
    version: int
    status: Literal["approved", "rejected", "rolled_back"]
    problem_type: ProblemType
    target: str
    feature_columns: list[str]
    class_labels: list[str] = Field(default_factory=list)
    metrics: dict[str, float]
    primary_metric: str
    model_artifact: str
    dataset_uri: str
    dataset_sha256: str
    training_job_name: str
    # None for a rejected model; the registry leaves None attributes out of the item, so it needs a default
    endpoint_name: str | None = None
    endpoint_config_name: str | None = None
    execution_arn: str
    evaluation_uri: str
    report_uri: str
    created_at: str
    # why the gate approved or rejected it (EvaluationResult.reason as the run finally decided it);
    # None for versions registered before it was recorded
    gate_reason: str | None = None


class FailureRecord(Contract):
    """What RecordFailure writes to the run record when any state fails."""

    run_id: str
    failed_state: str
    error: str
    cause: str
    execution_arn: str | None = None
    input_pointers: dict[str, Any] = Field(default_factory=dict)
