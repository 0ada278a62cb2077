"""The step cache: a step's result is reused by a later run whose inputs would make it again.

Each cached step (Preprocess, Training, Evaluate) has a key: the sha256 of what determines its result.

- Preprocess: the dataset's sha256, ValidateData's profile, the config fields it reads, and its code.
- Training (one training job, or a tuning job and its best job): Preprocess's key, the hyperparameters
  the job gets, the image, the training source's sha256 and the tuning settings.
- Evaluate: Training's key, the training job it evaluates, the model's identity and its code.

Chaining the previous step's key makes a change upstream a miss downstream. Run-specific fields (run id,
job and prefix names) are left out; every other config field counts unless a step is known not to read it,
so a field added later makes a miss, never a stale hit.

A Lookup state before each step answers a hit only for an unexpired entry whose outputs all still exist in
S3 (a result whose files were deleted is a miss); a Remember state after the step stores its result.
Hits are written into the run record (``reused_steps``). Two results reused with care:

- Preprocess's ``hyperparameters`` are rebuilt from this run's config (they are input, not data);
- Evaluate's gate is decided again, against this run's threshold and today's champion.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Literal

from pydantic import BaseModel

from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.runs import RunLog, utc_now
from pipeline_core.aws.s3 import ObjectStore, sha256_hex
from pipeline_core.aws.step_cache import StepCache, is_expired
from pipeline_core.code_identity import code_sha256
from pipeline_core.errors import ConfigurationError, DatasetNotFoundError
from pipeline_core.models import (
    CachedStep,
    CacheEntry,
    CacheLookup,
    DataProfile,
    EvaluationResult,
    IngestResult,
    PreprocessResult,
    RunConfig,
    TrainingSummary,
)
from pipeline_core.stages.gate import decide_gate, gate_threshold
from pipeline_core.stages.identity import check_identity
from pipeline_core.stages.job_layout import output_data_uri
from pipeline_core.stages.lineage import submit_directory
from pipeline_core.stages.trainer_input import training_hyperparameters

# What the step cache's entries live for when the deployment sets nothing (STEP_CACHE_TTL_DAYS).
DEFAULT_TTL_DAYS = 30

# Config fields that name this run's own things (its id, jobs, prefixes) or only steer the execution: no
# step's result depends on them.
RUN_FIELDS = frozenset(
    {
        "run_id",
        "dataset",  # the URI; the bytes are in the key as the dataset's sha256
        "endpoint_poll_seconds",
        "data_bucket",
        "training_job_name",
        "sagemaker_model_name",
        "endpoint_config_name",
        "endpoint_name",
        "endpoint_name_prefix",
        "raw_prefix",
        "processed_prefix",
        "models_prefix",
        "no_cache",
        "resume_of",
        "trigger",
        "rollout",  # how the endpoint is updated: after every cached step
        "endpoint_instance_count",
        # whether a person approves the model before it is deployed, and how long they have: after Evaluate
        "approval",
        "approval_timeout_seconds",
    }
)
# Fields a step does not read, beyond RUN_FIELDS (its key is the previous step's plus these exceptions).
NOT_READ_BY: dict[CachedStep, frozenset[str]] = {
    # Preprocess's hyperparameters are rebuilt on a hit (see reuse_result): they and the trainer are Train's
    "Preprocess": frozenset({"quality_threshold", "model_name", "identity", "hyperparameters", "trainer", "tuning"}),
    # the job's hyperparameters, image and source are in Training's key as the job gets them
    "Training": frozenset({"quality_threshold", "model_name", "identity", "hyperparameters", "trainer"}),
    # the gate (threshold, champion) is decided again on a hit
    "Evaluate": frozenset({"quality_threshold", "hyperparameters", "trainer", "tuning"}),
}
STAGE_MODULE = {"Preprocess": "pipeline_core.stages.preprocess", "Evaluate": "pipeline_core.stages.evaluate"}


class StepCacheEvent(BaseModel):
    """What a Lookup*/Remember* state passes (see their Parameters in the ASL)."""

    action: Literal["lookup", "store"]
    step: CachedStep
    config: RunConfig
    execution_arn: str
    ingest: IngestResult | None = None
    data: DataProfile | None = None
    previous: str | None = None  # the previous cached step's key (Training: Preprocess's; Evaluate: Training's)
    hyperparameters: dict[str, str] | None = None  # Training: the job's HyperParameters, as Train passes them
    trainer: dict[str, Any] | None = None  # Training: $.trainer.resolved (image, script)
    training: TrainingSummary | None = None  # Evaluate: the job whose model it evaluates
    lookup: CacheLookup | None = None  # store: this step's lookup (its key)
    result: dict[str, Any] | None = None  # store: the step's result


def digest(value: Any) -> str:
    """sha256 of ``value`` as canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def config_part(config: RunConfig, step: CachedStep) -> dict[str, Any]:
    """The config fields ``step``'s result depends on."""
    left_out = RUN_FIELDS | NOT_READ_BY[step]
    fields = {name: value for name, value in config.model_dump(mode="json").items() if name not in left_out}
    if fields.get("tuning"):
        fields["tuning"] = {k: v for k, v in fields["tuning"].items() if k != "job_name"}  # named for the run
    return fields


def _require(value: Any, what: str, step: str) -> Any:
    if value is None:
        raise ConfigurationError(f"the state machine must pass {what} to the {step} step cache state")
    return value


def key_parts(event: StepCacheEvent, store: ObjectStore) -> dict[str, str]:
    """What ``event.step``'s result depends on, each part a string (digested when long)."""
    step = event.step
    parts: dict[str, str] = {"step": step, "config": digest(config_part(event.config, step))}
    if step == "Preprocess":
        ingest = _require(event.ingest, "ingest", step)
        data = _require(event.data, "data", step)
        parts["dataset_sha256"] = ingest.sha256
        parts["profile"] = digest(data.model_dump(mode="json"))
        parts["code"] = code_sha256(STAGE_MODULE[step])
    elif step == "Training":
        hyperparameters = _require(event.hyperparameters, "hyperparameters", step)
        trainer = _require(event.trainer, "trainer", step)
        parts["previous"] = _require(event.previous, "previous", step)
        parts["hyperparameters"] = digest(hyperparameters)
        parts["image"] = str(trainer.get("image"))
        parts["training_source_sha256"] = _source_sha256(submit_directory(hyperparameters), store)
    else:
        parts["previous"] = _require(event.previous, "previous", step)
        # the job itself, not only Training's key: a job trained again (its artifact was deleted) has a new
        # name, and evaluation.json and the report describe one job
        training = _require(event.training, "training", step)
        parts["training_job"] = f"{training.TrainingJobName} {training.ModelArtifacts}"
        parts["identity"] = digest(event.config.identity.model_dump(mode="json") if event.config.identity else None)
        parts["code"] = code_sha256(STAGE_MODULE[step])
    return parts


def _source_sha256(uri: str | None, store: ObjectStore) -> str:
    """The training source's sha256 (the image's own code when the job names none)."""
    if not uri:
        return "none"
    try:
        return sha256_hex(store.read_bytes(uri))
    except DatasetNotFoundError:
        # the job would fail to find it too; a key that matches nothing stored makes it a miss
        return f"missing:{uri}"


def cache_key(parts: dict[str, str]) -> str:
    return digest(parts)


def _missing_outputs(entry: CacheEntry, store: ObjectStore) -> list[str]:
    return [uri for uri in entry.outputs if not store.exists(uri)]


def lookup(
    event: StepCacheEvent, *, cache: StepCache, store: ObjectStore, runs: RunLog, registry: ModelRegistry
) -> CacheLookup:
    """The Lookup state: this step's key, and an earlier run's result under it if one can be reused."""
    parts = key_parts(event, store)
    key = cache_key(parts)

    def miss(reason: str) -> CacheLookup:
        return CacheLookup(step=event.step, hit=False, key=key, reason=reason, key_parts=parts)

    if event.config.no_cache:
        return miss("the cache is off for this run (no_cache)")
    entry = cache.get(key)
    if entry is None:
        return miss("no earlier run made this result")
    if is_expired(entry):
        return miss(f"the result of run {entry.run_id} expired at {_iso(entry.expires_at)}")
    outdated = outdated_result(entry)
    if outdated:
        return miss(outdated)
    missing = _missing_outputs(entry, store)
    if missing:
        return miss(f"the result of run {entry.run_id} lost {len(missing)} of its files, e.g. {missing[0]}")
    result = reuse_result(event, entry, registry)
    _record_reuse(runs, event.config.run_id, event.step, entry, key)
    return CacheLookup(
        step=event.step,
        hit=True,
        key=key,
        reason=f"reused from run {entry.run_id} ({entry.created_at})",
        from_run=entry.run_id,
        from_execution=entry.execution_arn,
        result=result,
        key_parts=parts,
    )


def outdated_result(entry: CacheEntry) -> str | None:
    """Why an entry's result lacks what this code's step produces (None: it has it all).

    A Preprocess result without ``baseline_uri`` was made before monitoring; reusing it would register a model
    that cannot be monitored. (Its key is a miss anyway, as the code hash changed with monitoring; this keeps
    an entry stored by an older deployment under a colliding key from ever being reused.)
    """
    if entry.step == "Preprocess" and not entry.result.get("baseline_uri"):
        return f"the result of run {entry.run_id} has no baseline (made before monitoring)"
    return None


def reuse_result(event: StepCacheEvent, entry: CacheEntry, registry: ModelRegistry) -> dict[str, Any]:
    """The entry's result as this run uses it: Preprocess's hyperparameters and Evaluate's gate are this run's."""
    if entry.step == "Preprocess":
        prep = PreprocessResult.model_validate(entry.result)
        data = _require(event.data, "data", "Preprocess")
        return prep.model_copy(update={"hyperparameters": training_hyperparameters(event.config, data)}).model_dump(
            mode="json"
        )
    if entry.step == "Evaluate":
        return regate(EvaluationResult.model_validate(entry.result), event.config, registry).model_dump(mode="json")
    TrainingSummary.model_validate(entry.result)  # checked, and given back exactly as the job's state left it
    return entry.result


def regate(evaluation: EvaluationResult, config: RunConfig, registry: ModelRegistry) -> EvaluationResult:
    """A reused evaluation's gate decided again: this run's threshold, the champion as it is now."""
    identity = config.identity
    if identity is not None:
        check_identity(registry, identity, dataset=config.dataset)
    model_name = config.require_model_name()
    champion = registry.champion(model_name)
    threshold = gate_threshold(config.quality_threshold, identity.problem_type if identity else "classification")
    gate = decide_gate(evaluation.primary_metric, evaluation.primary_value, threshold, champion)
    return evaluation.model_copy(
        update={
            **gate.result_fields(),
            "champion_training_job": champion.training_job_name if champion else None,
        }
    )


def _record_reuse(runs: RunLog, run_id: str, step: CachedStep, entry: CacheEntry, key: str) -> None:
    """Add the hit to the run record's ``reused_steps`` (one run's lookups never overlap: no lost update)."""
    record = runs.get_run(run_id) or {}
    reused = dict(record.get("reused_steps") or {})
    reused[step] = {"from_run": entry.run_id, "key": key}
    runs.update_run(run_id, reused_steps=reused)


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def outputs_of(step: CachedStep, result: dict[str, Any], store: ObjectStore) -> list[str]:
    """The S3 objects ``result`` points at, which a later hit needs to exist."""
    if step == "Preprocess":
        prep = PreprocessResult.model_validate(result)
        splits = [
            uri for prefix in (prep.train_uri, prep.validation_uri, prep.test_uri) for uri in store.list_uris(prefix)
        ]
        return [*splits, *([prep.baseline_uri] if prep.baseline_uri else [])]
    if step == "Training":
        training = TrainingSummary.model_validate(result)
        output_data = output_data_uri(training)
        # Evaluate reads the trainer's output data beside the model; a trainer may have written none
        return [training.ModelArtifacts, *([output_data] if store.exists(output_data) else [])]
    evaluation = EvaluationResult.model_validate(result)
    return [evaluation.evaluation_uri, evaluation.report_uri]


def remember(event: StepCacheEvent, *, cache: StepCache, store: ObjectStore, ttl_days: int) -> CacheEntry:
    """The Remember state: store the step's result under the key its lookup computed."""
    lookup_answer = _require(event.lookup, "lookup", event.step)
    result = _require(event.result, "result", event.step)
    entry = CacheEntry(
        cache_key=lookup_answer.key,
        step=event.step,
        result=result,
        outputs=outputs_of(event.step, result, store),
        run_id=event.config.run_id,
        execution_arn=event.execution_arn,
        model_name=event.config.model_name or "?",
        created_at=utc_now(),
        expires_at=int(time.time()) + ttl_days * 86400,
        key_parts=lookup_answer.key_parts,
    )
    cache.put(entry)
    return entry
