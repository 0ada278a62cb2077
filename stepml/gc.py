"""Garbage collection of old runs' artifacts.

Every run writes under its own prefixes (``datasets/<run>/`` when the CLI staged its file, ``raw/<run>/``,
``processed/<run>/``, ``models/<job>/``) and nothing ever removes them. :func:`collect` finds the runs whose
artifacts are no longer needed and deletes them through the S3 API; the registry and runs records stay
(the history), marked with ``artifacts_collected_at``.

What is collected: each model's rejected (and rolled back) versions beyond the newest ``keep_rejected``;
approved versions beyond the newest ``keep_approved``, only when that is given; runs that failed longer
than ``failed_older_than`` ago. What never is: the champion, the approved version before it (what a
rollback returns to), any artifact an endpoint's current or previous endpoint config serves, and anything
not attributable to a run from its records.

Which objects are a run's is found from its records (see ``stepml.artifacts``); a key that a kept run
or an endpoint also claims is spared.

Plan first, delete on request: :func:`collect` plans unless ``delete=True``, and ``stepml local gc`` is
meant to print the plan and delete only with ``--yes``. Deletion here is permanent: the data bucket is
versioned, a plain DeleteObject would only hide the bytes behind a delete marker (no lifecycle rule expires
noncurrent versions under raw/, processed/ or models/), so every version of each key is deleted. A
permanent deletion decided by policies should be seen before it is done (``terraform plan``/``apply``,
``git clean -n``/``-f``); the records that decide it stay, so making the plan again costs nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.runs import RunLog
from pipeline_core.models import RegistryRecord

from stepml.artifacts import (
    ResourceRecords,
    StackTarget,
    StoredObject,
    resource_records,
    run_id_of,
    run_prefixes,
    served_artifacts,
    stored_objects,
)

COLLECTED_AT = "artifacts_collected_at"
COLLECTED_BYTES = "artifacts_collected_bytes"
# DeleteObjects takes at most 1,000 keys per request.
DELETE_BATCH = 1000


@dataclass(frozen=True)
class GcPolicy:
    """What to collect. ``keep_approved`` counts approved versions newest first, the champion included;
    None keeps every approved version. ``failed_older_than`` None keeps every failed run."""

    keep_rejected: int = 3
    keep_approved: int | None = None
    failed_older_than: timedelta | None = timedelta(days=7)
    model_name: str | None = None


@dataclass
class RunArtifacts:
    """One run: what it is, why it is collected or kept, its prefixes and (if collected) its objects."""

    run_id: str
    model_name: str | None
    version: int | None
    status: str
    reason: str
    prefixes: list[str]
    objects: list[StoredObject] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return sorted({o.key for o in self.objects})

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def label(self) -> str:
        model = f"{self.model_name} v{self.version}" if self.version is not None else self.model_name or "-"
        return f"{model} ({self.run_id})"


@dataclass
class GcReport:
    """A plan (``dry_run``) or what was deleted: runs collected and kept, keys spared and why."""

    bucket: str
    dry_run: bool
    collected: list[RunArtifacts]
    kept: list[RunArtifacts]
    spared: dict[str, str] = field(default_factory=dict)

    @property
    def objects(self) -> int:
        return sum(len(u.objects) for u in self.collected)

    @property
    def bytes(self) -> int:
        return sum(u.bytes for u in self.collected)

    def to_json(self) -> dict[str, Any]:
        def unit(u: RunArtifacts, listed: bool) -> dict[str, Any]:
            fields = {k: getattr(u, k) for k in ("run_id", "model_name", "version", "status", "reason", "prefixes")}
            return fields | (
                {"keys": u.keys, "objects": len(u.objects), "bytes": u.bytes, "errors": u.errors} if listed else {}
            )

        return {
            "bucket": self.bucket,
            "dry_run": self.dry_run,
            "objects": self.objects,
            "bytes": self.bytes,
            "collected": [unit(u, True) for u in self.collected],
            "kept": [unit(u, False) for u in self.kept],
            "spared": self.spared,
        }


def _version_decision(
    version: RegistryRecord, ranks: Mapping[int, int], policy: GcPolicy, served: str | None
) -> tuple[bool, str]:
    """(collect?, why) for one registered version; ``ranks``: its place among its kind, newest first."""
    rank = ranks[version.version]
    if version.status == "approved" and rank < 2:
        return False, "champion" if rank == 0 else "previous approved version (what a rollback returns to)"
    if served:
        return False, served
    if version.status == "pending_approval":
        return False, "waiting for approval: if approved, its run deploys this model"
    if version.status == "approved":
        if policy.keep_approved is None:
            return False, "approved (approved versions are kept)"
        if rank < policy.keep_approved:
            return False, f"one of the newest {policy.keep_approved} approved versions"
        return True, f"approved, older than the newest {policy.keep_approved} approved versions"
    if rank < policy.keep_rejected:
        return False, f"one of the newest {policy.keep_rejected} versions not approved"
    why = f": {version.gate_reason}" if version.gate_reason else ""
    return True, f"{version.status}{why}; older than the newest {policy.keep_rejected} versions not approved"


def _parse_time(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _run_decision(run: Mapping[str, Any], policy: GcPolicy, now: datetime) -> tuple[bool, str]:
    """(collect?, why) for a run that registered no version."""
    status = run.get("status")
    if status != "FAILED":
        return False, f"{status or 'no status'}, no version registered"
    if policy.failed_older_than is None:
        return False, "failed (failed runs are kept)"
    ended = _parse_time(run.get("finished_at") or run.get("failed_at") or run.get("updated_at"))
    if ended is None:
        return False, "failed at an unknown time"
    if now - ended < policy.failed_older_than:
        return False, f"failed {ended.isoformat(timespec='seconds')}, less than {policy.failed_older_than} ago"
    failure = f"{run.get('failed_state', '?')}: {run.get('error', '?')}"
    return True, f"failed in {failure} at {ended.isoformat(timespec='seconds')}"


def plan(
    target: StackTarget,
    policy: GcPolicy | None = None,
    *,
    now: datetime | None = None,
    records: ResourceRecords | None = None,
) -> GcReport:
    """What :func:`collect` would delete, and what it keeps and why; nothing is changed.

    Raises UnknownServingError (nothing planned) when what an endpoint serves cannot be read.
    """
    policy = policy or GcPolicy()
    now = now or datetime.now(UTC)
    bucket, s3, ddb = target.outputs.data_bucket, target.client("s3"), target.client("dynamodb")
    records = records or resource_records(target)
    # strongly consistent: a version registered a moment ago may be the new champion
    versions = ModelRegistry(target.outputs.registry_table, ddb).versions(consistent=True)
    runs = {str(r["run_id"]): r for r in RunLog(target.outputs.runs_table, ddb).runs() if "run_id" in r}
    # every model's endpoints, even when collecting for one model: they share the bucket
    served = served_artifacts(records, {v.endpoint_name for v in versions if v.endpoint_name})

    # (collect?, in scope?, run): runs of other models are not reported, but what they keep is spared
    units: list[tuple[bool, bool, RunArtifacts]] = []
    by_model: dict[str, list[RegistryRecord]] = defaultdict(list)
    for version in versions:
        by_model[version.model_name].append(version)  # newest first, as versions() sorts them
    for model_name, model_versions in by_model.items():
        ranks: dict[int, int] = {}
        for approved in (True, False):
            kind = [v for v in model_versions if (v.status == "approved") == approved]
            ranks |= {v.version: rank for rank, v in enumerate(kind)}
        for version in model_versions:
            run_id = run_id_of(version)
            run = runs.pop(run_id, None)
            if run is not None and run.get("execution_arn") not in (None, version.execution_arn):
                run = None  # another execution's record under the same name: not this version's
            prefixes = run_prefixes(bucket, run_id, version, run, records)
            serving = next((why for uri, why in served.items() if _under(uri, bucket, prefixes)), None)
            doomed, why = _version_decision(version, ranks, policy, serving)
            unit = RunArtifacts(run_id, model_name, version.version, version.status, why, prefixes)
            units.append((doomed, policy.model_name in (None, model_name), unit))
    for run_id, run in runs.items():
        doomed, why = _run_decision(run, policy, now)
        model_name = run.get("model_name")
        prefixes = run_prefixes(bucket, run_id, None, run, records)
        unit = RunArtifacts(run_id, model_name, None, str(run.get("status", "?")), why, prefixes)
        units.append((doomed, policy.model_name in (None, model_name), unit))

    kept_prefixes = [p for doomed, scope, u in units if not (doomed and scope) for p in u.prefixes]
    served_keys = {uri.removeprefix(f"s3://{bucket}/"): why for uri, why in served.items()}
    # A kept version's training baseline (what `stepml monitor` compares with) may sit under another run's
    # processed/ prefix, when this version's run reused that run's Preprocess from the step cache.
    baselines = {(v.model_name, v.version): v.baseline_uri for v in versions if v.baseline_uri}
    kept_baselines = {
        str(baselines[(u.model_name, u.version)]).removeprefix(f"s3://{bucket}/"): (
            f"the training baseline of {u.model_name} v{u.version}, which is kept"
        )
        for doomed, scope, u in units
        if not (doomed and scope) and (u.model_name, u.version) in baselines
    }
    collected = [u for doomed, scope, u in units if doomed and scope]
    report = GcReport(bucket, True, collected, [u for doomed, scope, u in units if scope and not doomed])
    seen: set[tuple[str, str | None]] = set()
    for unit in report.collected:
        for prefix in unit.prefixes:
            for found in stored_objects(s3, bucket, prefix):
                # a key another run (kept) or an endpoint also claims is spared, whatever this run's fate
                claim = (
                    served_keys.get(found.key)
                    or kept_baselines.get(found.key)
                    or next((f"also under {p}, which is kept" for p in kept_prefixes if found.key.startswith(p)), None)
                )
                if claim:
                    report.spared[found.key] = claim
                elif (found.key, found.version_id) not in seen:
                    seen.add((found.key, found.version_id))
                    unit.objects.append(found)
    report.collected = [u for u in report.collected if u.objects]  # collected before: nothing left
    return report


def _under(uri: str, bucket: str, prefixes: Iterable[str]) -> bool:
    return any(uri.startswith(f"s3://{bucket}/{p}") for p in prefixes)


def collect(
    target: StackTarget,
    policy: GcPolicy | None = None,
    *,
    delete: bool = False,
    now: datetime | None = None,
    records: ResourceRecords | None = None,
) -> GcReport:
    """Plan (``delete=False``, the default) or delete the artifacts of runs ``policy`` lets go.

    Each collected run's objects go (every version), then its registry item and run record get
    ``artifacts_collected_at``/``artifacts_collected_bytes``; a run whose deletes partly failed is not
    marked and lists the failures in ``errors``. The records themselves are never deleted.
    """
    report = plan(target, policy, now=now, records=records)
    if not delete:
        return report
    s3, ddb, outputs = target.client("s3"), target.client("dynamodb"), target.outputs
    at = datetime.now(UTC).isoformat(timespec="seconds")
    for unit in report.collected:
        unit.errors = delete_objects(s3, report.bucket, unit.objects)
        if unit.errors:
            continue
        if unit.version is not None and unit.model_name:
            key = {"model_name": {"S": unit.model_name}, "version": {"N": str(unit.version)}}
            _mark(ddb, outputs.registry_table, key, "version", at, unit.bytes)
        _mark(ddb, outputs.runs_table, {"run_id": {"S": unit.run_id}}, "run_id", at, unit.bytes)
    report.dry_run = False
    return report


def delete_objects(s3: Any, bucket: str, objects: list[StoredObject]) -> list[str]:
    """Delete these versions for good; the keys S3 refused, with its reason."""
    errors = []
    for start in range(0, len(objects), DELETE_BATCH):
        batch = [
            {"Key": o.key, **({"VersionId": o.version_id} if o.version_id else {})}
            for o in objects[start : start + DELETE_BATCH]
        ]
        answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        errors += [f"{e.get('Key')}: {e.get('Code')} {e.get('Message', '')}".strip() for e in answer.get("Errors", [])]
    return errors


def _mark(ddb: Any, table: str, key: dict[str, Any], key_attribute: str, at: str, size: int) -> None:
    """Note on an existing record that its artifacts were collected (never creates one).

    RegistryRecord ignores unknown attributes, so ``stepml models`` reads a marked item as before.
    """
    try:
        ddb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET #at = :at, #bytes = :bytes",
            ConditionExpression=f"attribute_exists({key_attribute})",
            ExpressionAttributeNames={"#at": COLLECTED_AT, "#bytes": COLLECTED_BYTES},
            ExpressionAttributeValues={":at": {"S": at}, ":bytes": {"N": str(size)}},
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise


def format_report(report: GcReport) -> str:
    """The report as the CLI prints it: one line per collected run, then the kept runs and why."""
    verb = "would delete" if report.dry_run else "deleted"
    refused = sum(len(u.errors) for u in report.collected)
    lines = [f"{verb} {report.objects - refused} objects, {_size(report.bytes)} from s3://{report.bucket}"]
    if refused:
        lines[0] += f" ({refused} refused by S3: listed below, their runs not marked)"
    lines += [f"  collect {u.label}: {len(u.objects)} objects, {_size(u.bytes)} — {u.reason}" for u in report.collected]
    lines += [f"    failed: {error}" for u in report.collected for error in u.errors]
    lines += [f"  keep    {u.label}: {u.reason}" for u in report.kept]
    lines += [f"  spared  {key}: {why}" for key, why in sorted(report.spared.items())]
    if report.dry_run and report.collected:
        lines.append("nothing was deleted (a plan); --yes deletes")
    return "\n".join(lines)


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    scaled = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        scaled /= 1024
        if scaled < 1024 or unit == "GiB":
            break
    return f"{scaled:.1f} {unit}"
