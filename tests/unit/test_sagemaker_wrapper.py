"""pipeline_core.aws.sagemaker: the same endpoint verbs over the stand-in and over SageMaker."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from pipeline_core.aws.sagemaker import (
    SageMakerEndpoints,
    StandInEndpoints,
    endpoint_control,
    endpoint_runtime,
)
from pipeline_core.errors import ConfigurationError
from pipeline_core.standin import endpoints as standin
from pipeline_core.standin.errors import ModelError, ValidationException
from pipeline_core.standin.runtime import reset_model_cache
from pipeline_core.standin.store import RecordStore

from tests.conftest import REGION, FakeAws

ROLE = "arn:aws:iam::123456789012:role/stepml-sagemaker"


def stand_in_endpoint(store: RecordStore, *configs: str) -> None:
    """Model, config and (for the first config) the endpoint ``stepml-test-iris-ep`` in the stand-in."""
    for config in configs:
        standin.create_model(
            store,
            {
                "ModelName": config,
                "ExecutionRoleArn": ROLE,
                "PrimaryContainer": {"Image": "sklearn", "ModelDataUrl": f"s3://{store.bucket}/models/{config}.tar.gz"},
            },
        )
        standin.create_endpoint_config(
            store,
            {
                "EndpointConfigName": config,
                "ProductionVariants": [
                    {"VariantName": "AllTraffic", "ModelName": config, "InitialInstanceCount": 1,
                     "InstanceType": "ml.t2.medium"}
                ],
            },
        )  # fmt: skip
    standin.create_endpoint(store, {"EndpointName": "stepml-test-iris-ep", "EndpointConfigName": configs[0]})


def test_standin_backend_describes_updates_and_deletes(aws: FakeAws) -> None:
    control = endpoint_control()  # SAGEMAKER_BACKEND=standin and DATA_BUCKET from the aws fixture
    assert isinstance(control, StandInEndpoints)
    assert control.describe_endpoint("stepml-test-iris-ep") is None
    stand_in_endpoint(RecordStore(aws.bucket, aws.s3), "stepml-run-a", "stepml-run-b")

    described = control.describe_endpoint("stepml-test-iris-ep")
    assert described is not None
    assert (described["EndpointConfigName"], described["EndpointStatus"]) == ("stepml-run-a", "InService")

    control.update_endpoint("stepml-test-iris-ep", "stepml-run-b")
    updated = control.describe_endpoint("stepml-test-iris-ep")
    assert updated is not None and updated["EndpointConfigName"] == "stepml-run-b"
    # the rollback direction: back to the config it replaced
    control.update_endpoint("stepml-test-iris-ep", updated["PreviousEndpointConfigNames"][-1])
    rolled_back = control.describe_endpoint("stepml-test-iris-ep")
    assert rolled_back is not None and rolled_back["EndpointConfigName"] == "stepml-run-a"

    with pytest.raises(ValidationException, match="Could not find endpoint configuration"):
        control.update_endpoint("stepml-test-iris-ep", "stepml-run-zz")
    with pytest.raises(ValidationException, match="Could not find endpoint"):
        control.update_endpoint("stepml-test-other-ep", "stepml-run-a")

    control.delete_endpoint("stepml-test-iris-ep")
    assert control.describe_endpoint("stepml-test-iris-ep") is None
    control.delete_endpoint("stepml-test-iris-ep")  # already gone: nothing to do


def test_standin_runtime_reports_a_missing_endpoint(aws: FakeAws) -> None:
    reset_model_cache()
    runtime = endpoint_runtime({"SAGEMAKER_BACKEND": "standin", "DATA_BUCKET": aws.bucket})
    with pytest.raises(ValidationException, match="Could not find endpoint"):
        runtime.predict("stepml-test-iris-ep", [{"x": 1}])


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "SAGEMAKER_BACKEND"),
        ({"SAGEMAKER_BACKEND": "  "}, "SAGEMAKER_BACKEND"),
        ({"SAGEMAKER_BACKEND": "local"}, "must be one of sagemaker, standin, got 'local'"),
        ({"SAGEMAKER_BACKEND": "standin"}, "DATA_BUCKET"),
    ],
)
def test_a_missing_or_unknown_backend_is_a_configuration_error(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        endpoint_control(environ)
    with pytest.raises(ConfigurationError, match=message):
        endpoint_runtime(environ)


def test_sagemaker_backend_is_chosen_without_building_clients() -> None:
    # no AWS environment needed until a call is made
    assert isinstance(endpoint_control({"SAGEMAKER_BACKEND": "sagemaker"}), SageMakerEndpoints)


def test_sagemaker_backend_describe_and_delete_on_moto(aws: FakeAws) -> None:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    control = SageMakerEndpoints(sagemaker_client=sagemaker)
    assert control.describe_endpoint("stepml-test-iris-ep") is None
    control.delete_endpoint("stepml-test-iris-ep")  # missing: nothing to do

    sagemaker.create_model(
        ModelName="m", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "sklearn", "ModelDataUrl": "s3://b/m"}
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName="c",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "m", "InitialInstanceCount": 1, "InstanceType": "ml.t2.medium"}
        ],
    )
    sagemaker.create_endpoint(EndpointName="stepml-test-iris-ep", EndpointConfigName="c")
    described = control.describe_endpoint("stepml-test-iris-ep")
    assert described is not None
    assert described["EndpointConfigName"] == "c"
    assert isinstance(described["CreationTime"], str)  # JSON-ready like the stand-in's records
    assert "ResponseMetadata" not in described
    json.dumps(described)

    control.delete_endpoint("stepml-test-iris-ep")
    assert control.describe_endpoint("stepml-test-iris-ep") is None


def _stubbed(service: str) -> tuple[Any, Stubber]:
    client = boto3.client(service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    return client, Stubber(client)


def test_sagemaker_backend_update_endpoint_sends_update_and_maps_validation_errors() -> None:
    # moto does not implement UpdateEndpoint: check the request against botocore's model with a stub
    client, stub = _stubbed("sagemaker")
    stub.add_response(
        "update_endpoint",
        {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e"},
        {"EndpointName": "e", "EndpointConfigName": "c2"},
    )
    stub.add_client_error("update_endpoint", "ValidationException", 'Could not find endpoint configuration "c3".', 400)
    with stub:
        control = SageMakerEndpoints(sagemaker_client=client)
        control.update_endpoint("e", "c2")
        with pytest.raises(ValidationException, match="Could not find endpoint configuration"):
            control.update_endpoint("e", "c3")
    stub.assert_no_pending_responses()


def test_sagemaker_backend_describe_keeps_other_errors() -> None:
    client, stub = _stubbed("sagemaker")
    stub.add_client_error("describe_endpoint", "AccessDeniedException", "not allowed", 400)
    with stub, pytest.raises(Exception, match="AccessDeniedException"):
        SageMakerEndpoints(sagemaker_client=client).describe_endpoint("e")


def _body(payload: Any) -> StreamingBody:
    raw = json.dumps(payload).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


def test_sagemaker_backend_predict_speaks_the_containers_json() -> None:
    client, stub = _stubbed("sagemaker-runtime")
    records = [{"sepal length (cm)": 5.1, "petal width (cm)": 0.2}, {"sepal length (cm)": 6.7, "petal width (cm)": 2.1}]
    stub.add_response(
        "invoke_endpoint",
        {"Body": _body({"predictions": ["setosa", "virginica"]}), "ContentType": "application/json"},
        {
            "EndpointName": "e",
            "ContentType": "application/json",
            "Accept": "application/json",
            "Body": json.dumps({"instances": records}).encode(),
        },
    )
    stub.add_response("invoke_endpoint", {"Body": _body({"oops": 1})})
    stub.add_client_error("invoke_endpoint", "ModelError", "Received client error (400) from model", 424)
    with stub:
        runtime = SageMakerEndpoints(runtime_client=client)
        assert runtime.predict("e", records) == ["setosa", "virginica"]
        with pytest.raises(ModelError, match="without predictions"):
            runtime.predict("e", records)
        with pytest.raises(ModelError, match="Received client error"):
            runtime.predict("e", records)


def test_json_ready_turns_datetimes_into_iso_strings() -> None:
    client, stub = _stubbed("sagemaker")
    at = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    stub.add_response(
        "describe_endpoint",
        {
            "EndpointName": "e",
            "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e",
            "EndpointConfigName": "c",
            "EndpointStatus": "InService",
            "CreationTime": at,
            "LastModifiedTime": at,
            "ProductionVariants": [{"VariantName": "AllTraffic", "DeployedImages": [{"ResolutionTime": at}]}],
        },
    )
    with stub:
        described = SageMakerEndpoints(sagemaker_client=client).describe_endpoint("e")
    assert described is not None
    assert described["CreationTime"] == "2026-11-01T12:00:00+00:00"
    assert described["ProductionVariants"][0]["DeployedImages"][0]["ResolutionTime"] == "2026-11-01T12:00:00+00:00"
