"""Typed contracts between the states of ``statemachine/pipeline.asl.json``.

Each stage returns one of these models (as JSON) and the state machine stores it under a ResultPath:

    $.config       RunConfig            ValidateInput
    $.ingest       IngestResult         Ingest
    $.data         DataProfile          ValidateData (its ``resolved`` is merged into $.config by UseModelIdentity)
    $.prep         PreprocessResult     Preprocess
    $.tuning       TuningSummary        Tune (ResultSelector over DescribeHyperParameterTuningJob), if tuning
    $.training     TrainingSummary      Train, or DescribeBestTrainingJob after Tune (ResultSelector over
                                        DescribeTrainingJob)
    $.evaluation   EvaluationResult     Evaluate (replaced by $.lease.evaluation once the lease is held; with
                                        approval "manual", RequestApproval's outcome at $.evaluation.approval)
    $.lease        DeployLeaseResult    AcquireDeployLease
    $.rollout      RolloutPlan          PrepareRollout (only when the run updates its endpoint with a rollout)
    $.registration RegistrationResult   Register / RegisterRejected / RegisterRolledBack

Only S3 URIs and small summaries travel in the state (Step Functions caps a state's data at 256 KiB).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline_core.errors import ConfigurationError

ProblemType = Literal["binary_classification", "multiclass_classification", "regression"]
RequestedProblemType = Literal["classification", "regression"]
# The roles the execution input may give a column; a profile adds "target" and "excluded".
InputRole = Literal["numeric", "categorical", "boolean", "datetime", "text", "identifier", "constant"]
Role = Literal["numeric", "categorical", "boolean", "datetime", "text", "identifier", "constant", "target", "excluded"]
RareClasses = Literal["error", "drop", "merge"]
ApprovalMode = Literal["none", "manual"]
# statemachine/pipeline.asl.json's TimeoutSeconds: no execution runs longer.
EXECUTION_TIMEOUT_SECONDS = 7200
# How long a run waits for a person's decision by default (execution input approval_timeout_seconds), and at
# most: the whole execution must end within EXECUTION_TIMEOUT_SECONDS, training and deployment included.
DEFAULT_APPROVAL_TIMEOUT_SECONDS = 3600
MAX_APPROVAL_TIMEOUT_SECONDS = 5400
# at least: the wait includes RequestApproval's own invocation, which must record the request well before it ends
MIN_APPROVAL_TIMEOUT_SECONDS = 10


class Contract(BaseModel):
    """Base of the state contracts: unknown fields are ignored so a state can read a subset."""

    model_config = ConfigDict(extra="ignore", frozen=True)


BuiltinTrainer = Literal["auto", "gradient-boosting", "linear", "text"]
CUSTOM_TRAINER = "custom"


class TrainerConfig(Contract):
    """What the training job runs (``$.config.trainer``): a built-in trainer (the deployment's training/
    source, its ``algorithm`` hyperparameter set to ``name``) or a user's script-mode source tarball.

    ``overrides`` holds only what differs from the deployment's defaults, in the shape PrepareTrainingJob
    merges (``States.JsonMerge``, shallow) over them: ``image``, ``inference_image``, ``serving_program`` and
    ``script`` (the ``sagemaker_program``/``sagemaker_submit_directory`` hyperparameters, whole).
    """

    name: str = "auto"  # a built-in name, or "custom" for a user's source
    builtin: bool = True
    source: str | None = None  # s3://.../x.tar.gz of a user trainer; None: the deployment's training/
    entry_point: str | None = None
    serving_entry_point: str | None = None
    image: str | None = None
    inference_image: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)


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


RolloutStrategy = Literal["canary", "linear", "all_at_once"]


class RolloutConfig(Contract):
    """How an endpoint update shifts traffic to the new model (``$.config.rollout``): SageMaker's blue/green
    deployment guardrails, in the input's words (``pipeline_core.rollout`` turns them into a DeploymentConfig).

    ``canary``: ``step_instances`` of the new fleet take their share of the traffic for ``wait_seconds``, then
    all of it; ``linear``: ``step_instances`` more every ``wait_seconds``; ``all_at_once``: all of it at once,
    baked for ``wait_seconds``. Then ``baking_seconds`` more before the old fleet goes. An alarm on the
    endpoint's 5XX errors (more than ``max_5xx_errors`` in a minute) or on its average model latency (above
    ``max_model_latency_ms``) in ALARM during the rollout rolls it back. See docs/rollout.md.
    """

    strategy: RolloutStrategy
    instance_count: int  # the new endpoint config's InitialInstanceCount
    step_instances: int  # CanarySize / LinearStepSize (INSTANCE_COUNT); instance_count for all_at_once
    wait_seconds: int  # WaitIntervalInSeconds
    baking_seconds: int  # TerminationWaitInSeconds
    timeout_seconds: int  # MaximumExecutionTimeoutInSeconds
    max_5xx_errors: int
    max_model_latency_ms: float


class RolloutPlan(Contract):
    """What PrepareRollout made ready (``$.rollout``): the endpoint's rollback alarms (created or updated) and
    the DeploymentConfig UpdateEndpointWithRollout passes to SageMaker."""

    strategy: RolloutStrategy
    endpoint_name: str
    alarms: list[str]
    deployment_config: dict[str, Any]
    started_at: str


class RolloutRecord(Contract):
    """How a deployment's rollout ended, in the registry record and the run record (``rollout``).

    ``alarm``/``alarm_at``: the first rollback alarm found in ALARM during the rollout (None when none was:
    a rollout that completed, or one SageMaker rolled back for another reason, which ``reason`` then gives).
    ``strategy`` is None for an update without a rollout (SageMaker's default: blue/green, all at once).
    """

    strategy: RolloutStrategy | None
    outcome: Literal["completed", "rolled_back"]
    endpoint_name: str
    endpoint_config_name: str  # the configuration the rollout deployed
    serving_config_name: str | None = None  # what the endpoint serves once it ended
    alarms: list[str] = Field(default_factory=list)
    alarm: str | None = None
    alarm_at: str | None = None
    reason: str
    started_at: str | None = None
    ended_at: str


class ModelIdentity(Contract):
    """What a model is: its registry name, the column it predicts and its problem type. Versions of one model
    name share the other two, so a run is gated against, and deploys over, only the same model."""

    model_name: str
    target: str
    problem_type: ProblemType


class RunConfig(Contract):
    """The execution input after ValidateInput filled in every default (stored at ``$.config``).

    ``model_name`` and ``endpoint_name`` are None until ValidateData resolves them when the input gives no
    model_name (the default name is the file and the target, which is known once the file is read); the
    UseModelIdentity state merges them and ``identity`` in, so every state after ValidateData has them.
    """

    run_id: str
    dataset: str
    target: str | None
    problem_type: RequestedProblemType | None
    model_name: str | None
    quality_threshold: float | None
    hyperparameters: dict[str, str]
    # a default for run configs written before trainers could be chosen (stored executions)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    test_size: float
    validation_size: float
    seed: int
    endpoint_poll_seconds: int
    data_bucket: str
    training_job_name: str
    sagemaker_model_name: str
    endpoint_config_name: str
    endpoint_name: str | None
    raw_prefix: str
    processed_prefix: str
    models_prefix: str
    column_roles: dict[str, InputRole] = Field(default_factory=dict)
    exclude_columns: list[str] = Field(default_factory=list)
    rare_classes: RareClasses = "error"
    # None: no tuning, the Train state trains once (the TuneOrTrain state reads this)
    tuning: TuningConfig | None = None
    # ValidateData derives endpoint_name = <prefix>-<model_name>-ep from it
    endpoint_name_prefix: str | None = None
    # None before ValidateData (and in executions of a definition older than the identity check)
    identity: ModelIdentity | None = None
    # True: the step cache's lookups miss (every step runs); results are still stored for later runs
    no_cache: bool = False
    # the run id of the failed run this one resumes (`stepml resume`), recorded in the run record
    resume_of: str | None = None
    # what started the run (an upload, an alarm, a schedule), recorded in the run record
    trigger: str | None = None
    # None: an endpoint update deploys all at once, as SageMaker does by default (no alarms, no baking)
    rollout: RolloutConfig | None = None
    # the endpoint config's InitialInstanceCount (the rollout's instance_count; 1 without a rollout)
    endpoint_instance_count: int = 1
    # "manual": a model that passes the quality gate waits for a person's approval before it is deployed
    # (docs/approval.md); the RequestApproval state waits at most approval_timeout_seconds. The defaults serve
    # run configs written before approvals existed.
    approval: ApprovalMode = "none"
    approval_timeout_seconds: int = DEFAULT_APPROVAL_TIMEOUT_SECONDS

    def require_model_name(self) -> str:
        """``model_name``, which every state after ValidateData has (UseModelIdentity merged it in)."""
        if self.model_name is None:
            raise ConfigurationError(
                "config.model_name is not set: ValidateData resolves it and the UseModelIdentity state merges it "
                "into $.config, so a state after ValidateData must be passed that $.config"
            )
        return self.model_name


class ResolvedIdentity(Contract):
    """What ValidateData resolved (``$.data.resolved``); the UseModelIdentity Pass state merges it into
    ``$.config`` with States.JsonMerge, so these keys are RunConfig's own names."""

    model_name: str
    endpoint_name: str
    identity: ModelIdentity


class IngestResult(Contract):
    """Where the raw dataset was put and its content hash (``$.ingest``)."""

    raw_uri: str
    source_uri: str
    sha256: str
    size_bytes: int
    format: Literal["csv", "parquet"]
    # the state machine version this execution runs: "3" on AWS (through the alias), "sha256:<12 hex>" where
    # it started unversioned (pipeline_core.aws.definition_version); None outside an execution and for
    # executions stored before it was recorded
    definition_version: str | None = None
    # which path the data takes (pipeline_core.stages.data_path) and why; the ChooseValidationPath state
    # branches on it ("sharded": validation on a Distributed Map). Results stored before it was recorded
    # read as "single".
    path: Literal["single", "sharded"] = "single"
    path_reason: str | None = None


class ColumnProfile(Contract):
    """One column: how it is stored (the pandera schema's type), its role for training and why."""

    name: str
    dtype: Literal["numeric", "categorical", "boolean"]
    role: Role
    reason: str  # one short sentence: why this role
    chosen_by: Literal["inferred", "input"] = "inferred"
    format: str | None = None  # a datetime column's strptime format, the one Preprocess reads it with
    missing: int  # values read as missing (empty, "?", "null", ...; "None"/"NA" only where not a category)


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
    # columns whose role is numeric/categorical/boolean/datetime/text: what training sees, in file order
    feature_columns: list[str]
    columns: list[ColumnProfile]
    excluded_columns: dict[str, str] = Field(default_factory=dict)  # name -> why it is not a feature
    dropped_rows: dict[str, int] = Field(default_factory=dict)  # reason -> rows left out
    merged_classes: dict[str, int] = Field(default_factory=dict)  # rare label -> rows relabelled "(other)"
    # set by the ValidateData handler; None in a profile of an older definition
    resolved: ResolvedIdentity | None = None


class PreprocessResult(Contract):
    """The processed splits, one S3 prefix per SageMaker channel (``$.prep``)."""

    train_uri: str
    validation_uri: str
    test_uri: str
    n_train: int
    n_validation: int
    n_test: int
    feature_columns: list[str]
    dropped_rows: int  # total of dropped_rows_by_reason
    hyperparameters: dict[str, str]
    column_roles: dict[str, str] = Field(default_factory=dict)  # every column -> its role, in file order
    excluded_columns: dict[str, str] = Field(default_factory=dict)  # name -> why it is not a feature
    dropped_rows_by_reason: dict[str, int] = Field(default_factory=dict)
    # the train split's statistics (baseline.json, beside the splits) that monitoring compares new data with;
    # None in a result of a Preprocess older than monitoring
    baseline_uri: str | None = None


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
    # the job's HyperParameters and AlgorithmSpecification.TrainingImage (Train's ResultSelector): lineage
    hyperparameters: dict[str, str] = Field(default_factory=dict)
    image: str | None = None


class CodeLineage(Contract):
    """Which trainer code trained the model: the job's sagemaker_submit_directory, its hash and S3 version."""

    trainer: str
    code_uri: str | None = None
    code_sha256: str | None = None
    code_version_id: str | None = None


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
    # None for a result of an older Evaluate
    lineage: CodeLineage | None = None
    # what the trainer said of its model (metrics.json): which model it chose and why, and notes such as
    # "a constant model is all the data supports"; empty when a trainer says nothing
    model_choice: str | None = None
    trainer_notes: list[str] = Field(default_factory=list)
    # the champion's training job when there is one: the QualityGate Choice skips the deployment when it is
    # this run's own (a rerun that reused Train: the endpoint already serves that model)
    champion_training_job: str | None = None
    # a manual approval's outcome as the RequestApproval state left it (ResultPath $.evaluation.approval):
    # SendTaskSuccess's output (any JSON its sender gave), or its Catch's {"Error": "ModelRejected" or
    # "States.Timeout", "Cause"}; None without one. Register and RegisterRejected read it
    # (pipeline_core.stages.approval.decision).
    approval: Any = None


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


RegistryStatus = Literal["approved", "rejected", "rolled_back", "pending_approval"]


class ApprovalRecord(Contract):
    """A manual approval of one model version (registry ``approval``; docs/approval.md).

    ``status`` is ``pending`` while the run waits (the registry version is ``pending_approval``), then
    ``approved`` or ``rejected`` (``timed_out`` when nobody decided in time). ``decided_by`` is who sent the
    decision as they said it (``stepml approve`` sends the caller's identity), None for a timeout.
    """

    status: Literal["pending", "approved", "rejected"]
    requested_at: str
    timeout_seconds: int
    deadline: str  # requested_at + timeout_seconds (UTC, ISO 8601)
    decided_by: str | None = None
    decided_at: str | None = None
    reason: str | None = None
    timed_out: bool = False


class RegistrationResult(Contract):
    """The registry record written for this run (``$.registration``)."""

    model_name: str
    version: int
    status: RegistryStatus
    endpoint_name: str | None
    model_artifact: str
    # True: an earlier run registered this very model (same training job and status); no version was added
    reused_version: bool = False
    # how the deployment's rollout ended (None: no endpoint update with a rollout, or a rejected model)
    rollout: RolloutRecord | None = None
    # the registry's gate_reason: the gate's reason, or for a model a person rejected (or nobody approved in
    # time) why; None from an older Register
    gate_reason: str | None = None
    approval: ApprovalRecord | None = None


class RegistryRecord(Contract):
    """One model version in the DynamoDB model registry."""

    model_name: str
    version: int
    status: RegistryStatus
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
    # lineage: what trained it (None for versions registered before it was recorded)
    trainer: str | None = None
    code_uri: str | None = None
    code_sha256: str | None = None
    code_version_id: str | None = None
    image: str | None = None
    hyperparameters: dict[str, str] = Field(default_factory=dict)
    column_roles: dict[str, str] = Field(default_factory=dict)
    # steps this run took from the step cache: step -> {"from_run", "key"}
    reused_steps: dict[str, dict[str, str]] = Field(default_factory=dict)
    # the state machine version that ran the pipeline (IngestResult.definition_version); None for versions
    # registered before it was recorded
    definition_version: str | None = None
    # the training data's per-feature statistics (PreprocessResult.baseline_uri) that `stepml monitor` compares
    # new data with; None for versions registered before monitoring existed
    baseline_uri: str | None = None
    # how the endpoint update's rollout ended (None: no rollout, e.g. the endpoint's first deployment)
    rollout: RolloutRecord | None = None
    # the manual approval of a run with approval "manual" (None otherwise); the task token the run waits on
    # is kept apart, in the item's approval_task_token, while the version is pending_approval
    approval: ApprovalRecord | None = None


class FailureRecord(Contract):
    """What RecordFailure writes to the run record when any state fails."""

    run_id: str
    failed_state: str
    error: str
    cause: str
    execution_arn: str | None = None
    input_pointers: dict[str, Any] = Field(default_factory=dict)


CachedStep = Literal["Preprocess", "Training", "Evaluate"]


class CacheEntry(Contract):
    """One step's successful result in the step cache table, under the key of what determined it."""

    cache_key: str
    step: CachedStep
    result: dict[str, Any]  # the step's state result: PreprocessResult, TrainingSummary or EvaluationResult
    outputs: list[str]  # the S3 objects the result points at; all must still exist for a hit
    run_id: str
    execution_arn: str
    model_name: str
    created_at: str
    expires_at: int  # epoch seconds; the table's TTL attribute (DynamoDB deletes expired items within days)
    key_parts: dict[str, str] = Field(default_factory=dict)  # what was hashed, digested, for `stepml cache list`


class CacheLookup(Contract):
    """A lookup's answer (``$.cache.<step>``): a hit carries the earlier run's result for the Reuse* state."""

    step: CachedStep
    hit: bool
    key: str
    reason: str
    from_run: str | None = None
    from_execution: str | None = None
    result: dict[str, Any] | None = None
    key_parts: dict[str, str] = Field(default_factory=dict)
