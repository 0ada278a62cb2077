"""Issue 13, point 2: a stack may touch only its own stage's SageMaker resources.

Every SageMaker name the pipeline makes (training and tuning jobs, models, endpoint configs, endpoints,
transform jobs) starts with ``stepml-<Stage>-`` and every SageMaker ARN in the template's IAM statements is
scoped to ``stepml-${Stage}-*``, so the ``dev`` stack's roles cannot update or delete ``stepml-prod-*``.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

import pytest
from pipeline_core.errors import ConfigurationError
from pipeline_core.stages.batch_request import transform_job_name
from pipeline_core.stages.validate_input import build_run_config

from tests.unit.test_template import load_template, statements

SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
# Every kind of SageMaker resource the pipeline names, and the longest name SageMaker takes for it.
KINDS = ("training-job", "hyper-parameter-tuning-job", "model", "endpoint-config", "endpoint", "transform-job")
LONGEST_STAGE = "abcdefghijkl"  # the template's Stage takes at most 12 characters


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def sagemaker_arns(template: dict[str, Any], stage: str) -> list[tuple[str, str, str]]:
    """(resource, Sid, ARN) of every SageMaker ARN an IAM statement of the stack names on AWS."""
    found = []
    for name, statement in statements(template, "aws", Stage=stage, MonitoredModelName="iris"):
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        found += [(name, statement.get("Sid", ""), r) for r in resources if isinstance(r, str) and ":sagemaker:" in r]
    return found


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_sagemaker_arn_in_the_template_is_scoped_to_the_stage(template: dict[str, Any], stage: str) -> None:
    arns = sagemaker_arns(template, stage)
    assert {kind for _, _, arn in arns for kind in KINDS if f":{kind}/" in arn} == set(KINDS)
    unscoped = [(n, s, arn) for n, s, arn in arns if not arn.split("/", 1)[1].startswith(f"stepml-{stage}-")]
    assert not unscoped, f"SageMaker ARNs not scoped to stepml-{stage}-*: {unscoped}"


def test_the_dev_stack_cannot_touch_a_prod_resource(template: dict[str, Any]) -> None:
    prod = [
        f"arn:aws:sagemaker:us-east-1:123456789012:{kind}/{name}"
        for kind in KINDS
        for name in ("stepml-prod-iris-ep", "stepml-prod-run-1-0a1b2c3d", "stepml-prod-batch-x-0a1b2c3d")
    ]
    reach = [(n, s, arn, p) for n, s, arn in sagemaker_arns(template, "dev") for p in prod if fnmatch.fnmatch(p, arn)]
    assert not reach, reach


def test_a_stage_is_one_name_segment_so_no_stage_prefixes_another(template: dict[str, Any]) -> None:
    """stepml-dev-* would also match stepml-dev-eu-*, the names of a stage called dev-eu: no dashes in a stage."""
    pattern = template["Parameters"]["Stage"]["AllowedPattern"]
    assert re.fullmatch(pattern, "prod") and re.fullmatch(pattern, LONGEST_STAGE)
    assert not re.fullmatch(pattern, "dev-eu") and not re.fullmatch(pattern, LONGEST_STAGE + "x")


@pytest.mark.parametrize("stage", ["dev", LONGEST_STAGE])
@pytest.mark.parametrize("execution", ["run-1", "nightly-retrain-" + "x" * 64, "___"])
def test_every_name_built_for_a_run_carries_the_stage_and_fits_sagemakers_limits(stage: str, execution: str) -> None:
    prefix = f"stepml-{stage}"
    config = build_run_config(
        {"dataset": "s3://b/iris.csv", "model_name": "iris", "tuning": True}, execution, "b", prefix
    )
    assert config.tuning is not None
    limits = {
        config.training_job_name: 63,
        config.sagemaker_model_name: 63,
        config.endpoint_config_name: 63,
        str(config.endpoint_name): 63,
        config.tuning.job_name: 32,
        # SageMaker names a tuning job's training jobs <tuning job>-NNN-<8 hex>
        f"{config.tuning.job_name}-001-0a1b2c3d": 63,
        transform_job_name(execution, prefix): 63,
    }
    for name, limit in limits.items():
        assert name.startswith(f"{prefix}-") and len(name) <= limit and SAGEMAKER_NAME.match(name), (name, limit)


def test_names_of_two_runs_differ_even_when_their_readable_part_is_cut() -> None:
    prefix = f"stepml-{LONGEST_STAGE}"
    given = {"dataset": "s3://b/iris.csv", "tuning": True}
    first = build_run_config(given, "nightly-retrain-" + "x" * 60 + "a", "b", prefix)
    other = build_run_config(given, "nightly-retrain-" + "x" * 60 + "b", "b", prefix)
    assert first.tuning is not None and other.tuning is not None
    assert first.training_job_name != other.training_job_name and first.tuning.job_name != other.tuning.job_name
    long = "batch-" + "x" * 60
    assert transform_job_name(long + "a", prefix) != transform_job_name(long + "b", prefix)


@pytest.mark.parametrize("prefix", ["stepml-a-stage-name-far-too-long", "stepml-", "stepml", "other-dev"])
def test_a_prefix_that_cannot_make_every_name_is_a_clear_configuration_error(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="ENDPOINT_NAME_PREFIX"):
        build_run_config({"dataset": "s3://b/iris.csv"}, "run-1", "b", prefix)
    with pytest.raises(ConfigurationError, match="ENDPOINT_NAME_PREFIX"):
        transform_job_name("batch-run-1", prefix)
