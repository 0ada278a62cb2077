"""The local AWS as an API: safe by default, and answering what moto alone does not."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from stepml.embedded.runtime import EmbeddedAws
from stepml.embedded.template import substitute_definition
from stepml.project import project_layout

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def aws() -> Iterator[EmbeddedAws]:
    with EmbeddedAws(project_layout(), persist=False) as started:
        yield started


def _raw(aws: EmbeddedAws, path: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"{aws.endpoint_url}{path}", method=method, headers=headers, data=b"" if method == "POST" else None
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_it_listens_on_the_loopback_address_only(aws: EmbeddedAws) -> None:
    assert aws._server is not None and aws._server.server_address[0] == "127.0.0.1"


def test_no_wildcard_cors_and_other_origins_are_refused(aws: EmbeddedAws) -> None:
    status, headers, _ = _raw(aws, f"/{aws.stack.data_bucket}?list-type=2")
    assert status == 200 and not [h for h in headers if h.lower().startswith("access-control-")]
    status, headers, body = _raw(aws, f"/{aws.stack.data_bucket}?list-type=2", Origin="https://evil.example")
    assert status == 403 and b"cross-origin" in body
    assert "Access-Control-Allow-Origin" not in headers
    status, _, _ = _raw(aws, "/", "OPTIONS", Origin="https://evil.example", **{"Access-Control-Request-Method": "POST"})
    assert status == 403


def test_moto_admin_routes_are_not_served_and_a_reset_changes_nothing(aws: EmbeddedAws) -> None:
    s3 = aws.client("s3")
    s3.put_object(Bucket=aws.stack.data_bucket, Key="keep/me.txt", Body=b"kept")
    for path in ("/moto-api/reset", "/moto-api/seed?a=42", "/moto-api/reset-auth"):
        status, _, _ = _raw(aws, path, "POST", Origin="https://evil.example")
        assert status == 403
        status, _, _ = _raw(aws, path, "POST")
        assert status == 404
    assert s3.get_object(Bucket=aws.stack.data_bucket, Key="keep/me.txt")["Body"].read() == b"kept"


def test_control_routes_need_the_token(aws: EmbeddedAws) -> None:
    status, _, _ = _raw(aws, "/_stepml/health")
    assert status == 404  # an in-process EmbeddedAws has none; the service's need its token (test_local_service)
    status, _, _ = _raw(aws, "/_stepml/health", **{"X-Stepml-Token": "guess"})
    assert status == 404


def test_validate_state_machine_definition_gives_real_diagnostics(aws: EmbeddedAws) -> None:
    sfn = aws.client("stepfunctions")
    assert aws.stack.state_machine_definition is not None
    definition = substitute_definition(aws.stack.state_machine_definition.read_text(), aws.stack.substitutions)
    answer = sfn.validate_state_machine_definition(definition=definition, type="STANDARD")
    assert (answer["result"], answer["diagnostics"]) == ("OK", [])
    broken = json.loads(definition)
    after_ingest = broken["States"]["Ingest"]["Next"]
    broken["States"]["Ingest"]["Next"] = "NoSuchState"
    answer = sfn.validate_state_machine_definition(definition=json.dumps(broken))
    assert answer["result"] == "FAIL"
    found = {(d["code"], d.get("location")): d for d in answer["diagnostics"]}
    missing = found[("MISSING_TRANSITION_TARGET", "/States/Ingest/Next")]
    assert missing["severity"] == "ERROR" and "NoSuchState" in missing["message"]
    # the state Ingest led to is now unreachable, which AWS reports too
    assert "not reachable" in found[("MISSING_TRANSITION_TARGET", f"/States/{after_ingest}")]["message"]
    answer = sfn.validate_state_machine_definition(definition="{not json")
    assert answer["result"] == "FAIL" and answer["diagnostics"][0]["code"] == "INVALID_JSON_DESCRIPTION"
