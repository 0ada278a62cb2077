"""Issue 13, point 6: `--target aws` reads the region from AWS_REGION or AWS_DEFAULT_REGION, and a missing
region or missing credentials is one line on stderr, never a traceback. Each case is the CLI in a process of
its own with a clean environment: no ~/.aws (HOME is a temporary directory, the config and credentials files
do not exist), no credentials, no instance metadata. Nothing is contacted: each ends before the first request.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, stepml_command

CLOSED_PORT = "http://127.0.0.1:9"  # --endpoint-url: never reached, the command stops before


def clean_env(home: Path, **variables: str) -> dict[str, str]:
    """The environment of a machine where AWS was never configured, plus ``variables``."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.environ.get("PYTHONPATH", f"{REPO}:{REPO / 'functions' / 'shared'}"),
        "HOME": str(home),
        "AWS_CONFIG_FILE": str(home / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance role to find (and no 1 s wait for one)
        "STEPML_STATE_DIR": str(home / "state"),
    }
    if "STEPML_PROJECT_ROOT" in os.environ:
        env["STEPML_PROJECT_ROOT"] = os.environ["STEPML_PROJECT_ROOT"]
    return {**env, **variables}


def one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stepml: "), stderr
    return lines[0]


@pytest.mark.parametrize("variable", ["AWS_REGION", "AWS_DEFAULT_REGION"])
@pytest.mark.parametrize("endpoint", [(), ("--endpoint-url", CLOSED_PORT)])
def test_either_region_variable_is_honoured_and_missing_credentials_is_one_line(
    tmp_path: Path, variable: str, endpoint: tuple[str, ...]
) -> None:
    ran = stepml_command(clean_env(tmp_path, **{variable: "eu-west-3"}), "runs", "--target", "aws", *endpoint)
    error = one_line_error(ran.stderr)
    assert ran.returncode == 2
    assert "no AWS credentials" in error and "eu-west-3" in error, error


def test_aws_region_wins_over_aws_default_region(tmp_path: Path) -> None:
    """As the AWS CLI and the SDKs have it: AWS_REGION overrides AWS_DEFAULT_REGION and the profile's region."""
    env = clean_env(tmp_path, AWS_REGION="eu-west-3", AWS_DEFAULT_REGION="us-west-2")
    error = one_line_error(stepml_command(env, "runs", "--target", "aws").stderr)
    assert "eu-west-3" in error and "us-west-2" not in error, error


@pytest.mark.parametrize("endpoint", [(), ("--endpoint-url", CLOSED_PORT)])
def test_no_region_is_one_line(tmp_path: Path, endpoint: tuple[str, ...]) -> None:
    env = clean_env(tmp_path, AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="secret")
    ran = stepml_command(env, "runs", "--target", "aws", *endpoint)
    error = one_line_error(ran.stderr)
    assert ran.returncode == 2
    assert "no AWS region" in error and "AWS_REGION" in error and "AWS_DEFAULT_REGION" in error, error
