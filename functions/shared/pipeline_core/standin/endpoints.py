"""CreateModel, CreateEndpointConfig, CreateEndpoint, UpdateEndpoint, DescribeEndpoint, ListEndpoints
and DeleteEndpoint of the stand-in, with SageMaker's validation rules.

Endpoints go to ``InService`` at once: nothing is provisioned, the runtime (``runtime.py``) loads the model
on the first request. An UpdateEndpoint with a blue/green ``DeploymentConfig`` is the exception: it shifts
traffic over time and rolls back on its alarms (``rollout.py``), advanced by each DescribeEndpoint. The
create calls are idempotent for an identical request: Step Functions retries a task whose Lambda timed out
or was throttled after the first attempt had already written its record, and that retry must succeed
rather than fail with "already exists" (a different request with the same name still fails, as on
SageMaker).
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline_core.aws.cloudwatch import CloudWatch
from pipeline_core.errors import DatasetNotFoundError, TrainingFailedError
from pipeline_core.standin import rollout
from pipeline_core.standin.archives import extract_tar_gz
from pipeline_core.standin.errors import ValidationException
from pipeline_core.standin.store import RecordStore, check_name, now_iso, same_request, validate_request
from pipeline_core.trainer_contract import serving_problem


def create_model(store: RecordStore, request: dict[str, Any]) -> dict[str, Any]:
    """CreateModel: record the model (container image, artifact, environment); returns ``ModelArn``."""
    validate_request("CreateModel", request)
    name = check_name("models", request["ModelName"])
    if "PrimaryContainer" not in request:
        raise ValidationException(f"model {name}: the stand-in needs a PrimaryContainer with a ModelDataUrl")
    arn = store.arn("models", name)
    existing = store.get("models", name)
    if existing is not None:
        if same_request(existing, request):
            return {"ModelArn": existing["ModelArn"]}
        raise ValidationException(f'Cannot create already existing model "{arn}".')
    check_serving_code(store, name, request["PrimaryContainer"].get("Environment", {}))
    record = {key: value for key, value in request.items() if key != "Tags"}
    store.put("models", name, {**record, "ModelArn": arn, "CreationTime": now_iso()})
    return {"ModelArn": arn}


def check_serving_code(store: RecordStore, name: str, environment: dict[str, str]) -> None:
    """The serving code a model names can serve: SageMaker would only find out when the endpoint failed to start
    (or at the first request); the stand-in says at CreateModel what is missing."""
    source_uri = environment.get("SAGEMAKER_SUBMIT_DIRECTORY")
    if not source_uri:
        return  # a model without script-mode code: the runtime says so if it is ever invoked
    program = environment.get("SAGEMAKER_PROGRAM", "inference.py")
    try:
        data = store.objects.read_bytes(source_uri)
    except DatasetNotFoundError:
        return  # as on SageMaker, CreateModel does not look for it; the runtime names it missing when invoked
    with tempfile.TemporaryDirectory(prefix="standin-serving-") as temp:
        try:
            code_dir = extract_tar_gz(data, Path(temp), f"SAGEMAKER_SUBMIT_DIRECTORY {source_uri}")
        except TrainingFailedError as error:
            raise ValidationException(f"model {name}: {error}") from error
        problem = serving_problem(code_dir, program)
    if problem:
        raise ValidationException(f"model {name}: {problem} ({source_uri})")


def describe_model(store: RecordStore, name: str) -> dict[str, Any]:
    """DescribeModel; a missing model is a ValidationException, as on SageMaker."""
    record = store.get("models", name)
    if record is None:
        raise ValidationException(f'Could not find model "{store.arn("models", name)}".')
    return record


def create_endpoint_config(store: RecordStore, request: dict[str, Any]) -> dict[str, Any]:
    """CreateEndpointConfig: every variant must name an existing model; returns ``EndpointConfigArn``."""
    validate_request("CreateEndpointConfig", request)
    name = check_name("endpoint-configs", request["EndpointConfigName"])
    arn = store.arn("endpoint-configs", name)
    existing = store.get("endpoint-configs", name)
    if existing is not None:
        if same_request(existing, request):
            return {"EndpointConfigArn": existing["EndpointConfigArn"]}
        raise ValidationException(f'Cannot create already existing endpoint configuration "{arn}".')
    for variant in request["ProductionVariants"]:
        describe_model(store, variant["ModelName"])
    record = {key: value for key, value in request.items() if key != "Tags"}
    store.put("endpoint-configs", name, {**record, "EndpointConfigArn": arn, "CreationTime": now_iso()})
    return {"EndpointConfigArn": arn}


def describe_endpoint_config(store: RecordStore, name: str) -> dict[str, Any]:
    """DescribeEndpointConfig; a missing config is a ValidationException, as on SageMaker."""
    record = store.get("endpoint-configs", name)
    if record is None:
        raise ValidationException(f'Could not find endpoint configuration "{store.arn("endpoint-configs", name)}".')
    return record


def _variant_summaries(store: RecordStore, config: dict[str, Any], at: str) -> list[dict[str, Any]]:
    """DescribeEndpoint's ProductionVariants for ``config``, as they are once deployed."""
    summaries = []
    for variant in config["ProductionVariants"]:
        image = describe_model(store, variant["ModelName"]).get("PrimaryContainer", {}).get("Image", "")
        count = variant.get("InitialInstanceCount", 1)
        weight = variant.get("InitialVariantWeight", 1.0)
        summaries.append(
            {
                "VariantName": variant["VariantName"],
                "DeployedImages": [{"SpecifiedImage": image, "ResolvedImage": image, "ResolutionTime": at}],
                "CurrentWeight": weight,
                "DesiredWeight": weight,
                "CurrentInstanceCount": count,
                "DesiredInstanceCount": count,
            }
        )
    return summaries


def create_endpoint(store: RecordStore, request: dict[str, Any]) -> dict[str, Any]:
    """CreateEndpoint: the endpoint is InService immediately; returns ``EndpointArn``."""
    validate_request("CreateEndpoint", request)
    name = check_name("endpoints", request["EndpointName"])
    arn = store.arn("endpoints", name)
    existing = store.get("endpoints", name)
    if existing is not None:
        # Only the creating request is idempotent: once updated, the record names another config.
        if existing["EndpointConfigName"] == request["EndpointConfigName"] and not existing.get(
            "PreviousEndpointConfigNames"
        ):
            return {"EndpointArn": existing["EndpointArn"]}
        raise ValidationException(f'Cannot create already existing endpoint "{arn}".')
    config = describe_endpoint_config(store, request["EndpointConfigName"])
    at = now_iso()
    record = {
        "EndpointName": name,
        "EndpointArn": arn,
        "EndpointConfigName": config["EndpointConfigName"],
        "ProductionVariants": _variant_summaries(store, config, at),
        "EndpointStatus": "InService",
        "CreationTime": at,
        "LastModifiedTime": at,
        "PreviousEndpointConfigNames": [],
    }
    store.put("endpoints", name, record)
    return {"EndpointArn": arn}


def _endpoint_record(store: RecordStore, name: str) -> dict[str, Any]:
    record = store.get("endpoints", check_name("endpoints", name))
    if record is None:
        raise ValidationException(f'Could not find endpoint "{store.arn("endpoints", name)}".')
    return record


def current_endpoint(
    store: RecordStore, name: str, first_alarm: rollout.FirstAlarm | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """The endpoint's record as of ``now``: a blue/green deployment under way is advanced (and rolled back if
    one of its alarms was in ALARM; ``first_alarm`` asks CloudWatch unless given) and the change stored."""
    record = _endpoint_record(store, name)
    if rollout.in_progress(record) is None:
        return record
    advanced = rollout.advance(record, now or datetime.now(UTC), first_alarm or CloudWatch().first_alarm)
    if advanced != record:  # a new step, the end, or a rollback (not every poll)
        store.put("endpoints", record["EndpointName"], advanced)
    return advanced


def describe_endpoint(
    store: RecordStore, request: dict[str, Any], first_alarm: rollout.FirstAlarm | None = None
) -> dict[str, Any]:
    """DescribeEndpoint; a missing endpoint is SageMaker's ValidationException "Could not find endpoint"."""
    validate_request("DescribeEndpoint", request)
    record = current_endpoint(store, request["EndpointName"], first_alarm)
    return {key: value for key, value in record.items() if key != rollout.DEPLOYMENT}


def update_endpoint(
    store: RecordStore, request: dict[str, Any], first_alarm: rollout.FirstAlarm | None = None
) -> dict[str, Any]:
    """UpdateEndpoint: point the endpoint at another config; returns ``EndpointArn``.

    Without a DeploymentConfig the endpoint is InService on the new config at once. With a blue/green one it
    is Updating until the deployment's timeline ends or an alarm rolls it back (``rollout.py``). The replaced
    config's name is appended to ``PreviousEndpointConfigNames`` (oldest first), which is what a rollback
    needs. Updating to the config already deployed, or being deployed, changes nothing (a retried update).
    """
    validate_request("UpdateEndpoint", request)
    record = current_endpoint(store, request["EndpointName"], first_alarm)
    config = describe_endpoint_config(store, request["EndpointConfigName"])
    pending = rollout.in_progress(record)
    if config["EndpointConfigName"] in (record["EndpointConfigName"], pending):
        return {"EndpointArn": record["EndpointArn"]}
    if pending is not None:
        raise ValidationException(f'Cannot update in-progress endpoint "{record["EndpointArn"]}".')
    deployment = request.get("DeploymentConfig")
    if deployment is None and request.get("RetainDeploymentConfig"):
        deployment = record.get("LastDeploymentConfig")
    at = now_iso()
    variants = _variant_summaries(store, config, at)
    if deployment:
        rollout.check_deployment_config(
            deployment, describe_endpoint_config(store, record["EndpointConfigName"]), config
        )
        if deployment.get("BlueGreenUpdatePolicy"):
            store.put(
                "endpoints",
                record["EndpointName"],
                rollout.start(record, config["EndpointConfigName"], variants, deployment, at),
            )
            return {"EndpointArn": record["EndpointArn"]}
    updated = {
        **{key: value for key, value in record.items() if key != "FailureReason"},
        "EndpointConfigName": config["EndpointConfigName"],
        "ProductionVariants": variants,
        "EndpointStatus": "InService",
        "LastModifiedTime": at,
        "PreviousEndpointConfigNames": [
            *record.get("PreviousEndpointConfigNames", []),
            record["EndpointConfigName"],
        ],
    }
    store.put("endpoints", record["EndpointName"], updated)
    return {"EndpointArn": record["EndpointArn"]}


def delete_endpoint(store: RecordStore, request: dict[str, Any]) -> dict[str, Any]:
    """DeleteEndpoint; a missing endpoint is a ValidationException, as on SageMaker."""
    validate_request("DeleteEndpoint", request)
    record = _endpoint_record(store, request["EndpointName"])
    store.delete("endpoints", record["EndpointName"])
    return {}


def list_endpoints(store: RecordStore, request: dict[str, Any]) -> dict[str, Any]:
    """ListEndpoints with NameContains and StatusEquals, newest first by default (no paging: a local
    target holds a handful of endpoints, so MaxResults only truncates)."""
    validate_request("ListEndpoints", request)
    unsupported = sorted(set(request) - {"NameContains", "StatusEquals", "SortBy", "SortOrder", "MaxResults"})
    if unsupported:
        raise ValidationException(f"the SageMaker stand-in's ListEndpoints does not support {unsupported}")
    wanted = request.get("NameContains", "").lower()
    status = request.get("StatusEquals")
    summaries = [
        {key: record[key] for key in ("EndpointName", "EndpointArn", "CreationTime", "LastModifiedTime")}
        | {"EndpointStatus": record["EndpointStatus"]}
        for record in store.list("endpoints")
        # SageMaker endpoint names are case-insensitive, and so is this filter.
        if wanted in record["EndpointName"].lower() and (status is None or record["EndpointStatus"] == status)
    ]
    sort_by = request.get("SortBy", "CreationTime")
    sort_key = {"Name": "EndpointName", "Status": "EndpointStatus"}.get(sort_by, "CreationTime")
    summaries.sort(key=lambda s: s[sort_key], reverse=request.get("SortOrder", "Descending") == "Descending")
    if "MaxResults" in request:
        summaries = summaries[: request["MaxResults"]]
    return {"Endpoints": summaries}
