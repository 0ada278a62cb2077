"""The inference API's exposure on AWS, read from infra/template.yaml after the SAM transform: every route
needs credentials whatever ApiAuthentication says (API keys by default, with a usage plan), the regional
execute-api endpoint refuses what did not come through CloudFront, and the viewer TLS policy.

The embedded target does not run API Gateway (``stepml serve`` is a local stand-in on 127.0.0.1, see
docs/serving.md), so the refusal of a request without credentials is checked here on the configuration
API Gateway imports: the OpenAPI body of the RestApi, each Fn::If resolved as CloudFormation would.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_template import Evaluator, load_template, sam_transform

AUTH_MODES: dict[str, list[dict[str, list[str]]]] = {
    "API_KEY": [{"api_key": []}],
    "AWS_IAM": [{"sigv4": []}],
    "API_KEY_AND_AWS_IAM": [{"api_key": [], "sigv4": []}],
}
ROUTES = {("/predict", "post"), ("/health", "get"), ("/model", "get"), ("/openapi.json", "get")}
ORIGIN_HEADER = "x-stepml-origin-verify"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def transformed(template: dict[str, Any]) -> dict[str, Any]:
    return sam_transform(template, "aws")


def deployed(transformed: dict[str, Any], **parameters: str) -> dict[str, dict[str, Any]]:
    """The transformed stack's resources as CloudFormation would create them with these parameters: the ones
    whose Condition holds, their properties resolved."""
    evaluator = Evaluator(transformed, "aws", **parameters)
    return {
        name: {"Type": r["Type"], "Properties": evaluator.value(r.get("Properties", {}))}
        for name, r in transformed["Resources"].items()
        if "Condition" not in r or evaluator.condition(r["Condition"])
    }


def of_type(resources: dict[str, dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def api_body(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (api,) = of_type(resources, "AWS::ApiGateway::RestApi").values()
    body: dict[str, Any] = api["Properties"]["Body"]
    return body


def test_authentication_is_on_by_default_with_api_keys(template: dict[str, Any]) -> None:
    assert template["Parameters"]["ApiAuthentication"]["Default"] == "API_KEY"
    assert set(template["Parameters"]["ApiAuthentication"]["AllowedValues"]) == set(AUTH_MODES)


@pytest.mark.parametrize("mode", sorted(AUTH_MODES))
def test_every_route_requires_the_chosen_credentials(transformed: dict[str, Any], mode: str) -> None:
    body = api_body(deployed(transformed, ApiAuthentication=mode))
    routes = {(path, method) for path, methods in body["paths"].items() for method in methods}
    assert routes == ROUTES
    for path, method in sorted(routes):
        operation = body["paths"][path][method]
        assert operation["security"] == AUTH_MODES[mode], f"{method.upper()} {path}"
        assert operation["x-amazon-apigateway-integration"]["type"] == "aws_proxy"
    # what API Gateway makes of the two schemes on import: an x-api-key header, and AWS_IAM (SigV4)
    assert body["securityDefinitions"]["api_key"] == {"type": "apiKey", "name": "x-api-key", "in": "header"}
    assert body["securityDefinitions"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"


def test_the_body_check_of_predict_survives_the_move_into_the_openapi_body(transformed: dict[str, Any]) -> None:
    body = api_body(deployed(transformed))
    predict = body["paths"]["/predict"]["post"]
    assert body["x-amazon-apigateway-request-validators"][predict["x-amazon-apigateway-request-validator"]] == {
        "validateRequestBody": True,
        "validateRequestParameters": False,
    }
    (parameter,) = predict["parameters"]
    assert parameter["required"] is True
    assert parameter["schema"] == {"$ref": "#/definitions/PredictRequest"}
    assert body["definitions"]["PredictRequest"]["required"] == ["instances"]


def test_each_route_may_invoke_the_function(transformed: dict[str, Any]) -> None:
    permissions = of_type(deployed(transformed), "AWS::Lambda::Permission").values()
    allowed = {
        tuple(p["Properties"]["SourceArn"].rsplit("/", 2)[-2:])
        for p in permissions
        if p["Properties"]["FunctionName"] == "inferencefunction"
    }
    assert allowed == {(method.upper(), path.lstrip("/")) for path, method in ROUTES}


@pytest.mark.parametrize("mode", sorted(AUTH_MODES))
def test_api_keys_come_with_a_usage_plan_of_per_key_limits(transformed: dict[str, Any], mode: str) -> None:
    resources = deployed(transformed, ApiAuthentication=mode)
    plans = of_type(resources, "AWS::ApiGateway::UsagePlan")
    if mode == "AWS_IAM":
        assert not plans and not of_type(resources, "AWS::ApiGateway::ApiKey")
        return
    (plan,) = plans.values()
    properties = plan["Properties"]
    assert properties["Throttle"] == {"RateLimit": "10", "BurstLimit": "20"}
    assert properties["Quota"] == {"Limit": "100000", "Period": "DAY"}
    (stage,) = properties["ApiStages"]
    assert stage["Stage"] == "inferenceapiv1stage"  # the stage SAM generates for InferenceApi
    (plan_key,) = of_type(resources, "AWS::ApiGateway::UsagePlanKey").values()
    assert plan_key["Properties"]["KeyType"] == "API_KEY"
    assert plan_key["Properties"]["UsagePlanId"] == next(iter(plans)).lower()


def test_the_stages_own_throttle_remains_the_cap_for_all_clients(transformed: dict[str, Any]) -> None:
    (stage,) = of_type(deployed(transformed), "AWS::ApiGateway::Stage").values()
    (setting,) = stage["Properties"]["MethodSettings"]
    assert (setting["ThrottlingRateLimit"], setting["ThrottlingBurstLimit"]) == ("100", "200")


def test_a_request_without_credentials_gets_the_apis_error_shape(transformed: dict[str, Any]) -> None:
    responses = of_type(deployed(transformed), "AWS::ApiGateway::GatewayResponse")
    by_type = {r["Properties"]["ResponseType"]: r["Properties"] for r in responses.values()}
    for kind in ("UNAUTHORIZED", "MISSING_AUTHENTICATION_TOKEN", "INVALID_API_KEY", "QUOTA_EXCEEDED"):
        assert '"message"' in by_type[kind]["ResponseTemplates"]["application/json"], kind


def test_the_regional_endpoint_admits_only_requests_cloudfront_sent(transformed: dict[str, Any]) -> None:
    resources = deployed(transformed)
    (distribution,) = of_type(resources, "AWS::CloudFront::Distribution").values()
    (origin,) = distribution["Properties"]["DistributionConfig"]["Origins"]
    (header,) = origin["OriginCustomHeaders"]
    assert header["HeaderName"] == ORIGIN_HEADER
    secret = "{{resolve:secretsmanager:edgeoriginsecret}}"  # generated by Secrets Manager, never a parameter
    assert header["HeaderValue"] == secret
    assert "EdgeOriginSecret" in of_type(resources, "AWS::SecretsManager::Secret")

    acls = of_type(resources, "AWS::WAFv2::WebACL")
    regional = [a["Properties"] for a in acls.values() if a["Properties"]["Scope"] == "REGIONAL"]
    (acl,) = regional
    assert "Block" in acl["DefaultAction"]
    (rule,) = acl["Rules"]
    assert "Allow" in rule["Action"]
    match = rule["Statement"]["ByteMatchStatement"]
    assert match["FieldToMatch"] == {"SingleHeader": {"Name": ORIGIN_HEADER}}
    assert (match["PositionalConstraint"], match["SearchString"]) == ("EXACTLY", secret)

    (association,) = of_type(resources, "AWS::WAFv2::WebACLAssociation").values()
    arn = association["Properties"]["ResourceArn"]
    assert arn == "arn:aws:apigateway:us-east-1::/restapis/inferenceapi/stages/inferenceapiv1stage"
    assert association["Properties"]["WebACLArn"].endswith(":RegionalApiWebAcl.Arn")


def test_the_published_url_is_cloudfronts_on_aws_and_the_stage_locally(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert "execute-api" not in str(Evaluator(template, "aws").value(outputs["InferenceApiUrl"]["Value"]))
    assert Evaluator(template, "aws").value(outputs["InferenceApiUrl"]["Value"]) == (
        "https://arn:aws:fake:us-east-1:123456789012:InferenceDistribution.DomainName"
    )
    local = Evaluator(template, "local").value(outputs["InferenceApiUrl"]["Value"])
    assert local == "https://inferenceapi.execute-api.us-east-1.amazonaws.com/v1"
    published = [name for name, o in outputs.items() if "execute-api" in str(o.get("Value"))]
    assert published == ["InferenceApiUrl"]


def test_viewer_tls_is_1_2_or_later_whenever_cloudfront_can_enforce_it(template: dict[str, Any]) -> None:
    distribution = template["Resources"]["InferenceDistribution"]["Properties"]["DistributionConfig"]
    custom = Evaluator(
        template,
        "aws",
        ApiDomainName="api.example.com",
        ApiCertificateArn="arn:aws:acm:us-east-1:123456789012:certificate/abc",
    ).value(distribution)
    assert custom["ViewerCertificate"]["MinimumProtocolVersion"] == "TLSv1.2_2021"
    assert custom["ViewerCertificate"]["SslSupportMethod"] == "sni-only"
    assert custom["Aliases"] == ["api.example.com"]
    # CloudFront's default *.cloudfront.net certificate always negotiates from TLSv1 (no policy can be set);
    # docs/deploy.md says so and how to set a custom domain.
    assert Evaluator(template, "aws").value(distribution)["ViewerCertificate"] == {"CloudFrontDefaultCertificate": True}
    assert distribution["DefaultCacheBehavior"]["ViewerProtocolPolicy"] in {"redirect-to-https", "https-only"}
