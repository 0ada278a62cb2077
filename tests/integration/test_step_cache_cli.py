"""The step cache through the CLI on the embedded target: a run that failed in Evaluate is resumed with
Preprocess and Train reused, a succeeded run is not resumed, ``stepml cache list``/``clear`` show and remove the
entries, ``--no-cache`` runs every step again, and a run whose dataset was deleted is not resumed.

The data is iris without its last row, under a model name of its own, so that no other test's run stored
these steps (their cache keys would be the same): every entry here comes from this module's runs.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from stepml.cli import main
from tests.integration.conftest import REPO, PipelineRun, run_cli

pytestmark = pytest.mark.slow

MODEL = "cache-cli-iris"
FAILED_RUN = "cache-cli-evaluate-fails"


def _cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), out=out)
    return code, out.getvalue()


def _last_json(text: str) -> Any:
    return json.loads(text.strip().splitlines()[-1])


def _states(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {state["name"]: state for state in result["states"]}


@pytest.fixture(scope="module")
def dataset(state_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = (REPO / "data" / "iris.csv").read_text().strip().splitlines()
    path = tmp_path_factory.mktemp("cache-cli") / "cache-iris.csv"
    path.write_text("\n".join(lines[:-1]) + "\n")
    return path


@pytest.fixture(scope="module")
def failed_run(dataset: Path) -> PipelineRun:
    run = run_cli(
        "--data", str(dataset), "--model-name", MODEL, "--name", FAILED_RUN,
        "--inject-fault", "Evaluate=InjectedPermanentError",
    )  # fmt: skip
    assert run.exit_code == 1 and run.result["status"] == "FAILED", run.output
    assert run.result["failed_state"] == "Evaluate"
    return run


@pytest.fixture(scope="module")
def resumed(failed_run: PipelineRun) -> dict[str, Any]:
    code, text = _cli("resume", FAILED_RUN, "--json")
    result = _last_json(text)
    assert code == 0, text
    return dict(result)


def test_resume_reuses_the_steps_the_failed_run_finished(resumed: dict[str, Any]) -> None:
    assert resumed["status"] == "SUCCEEDED"
    assert resumed["execution_arn"].endswith(f":{FAILED_RUN}-resume-1")
    assert resumed["resume_of"] == FAILED_RUN and resumed["resumed_from_state"] == "Evaluate"
    states = _states(resumed)
    for reuse, step in (("ReusePreprocess", "Preprocess"), ("ReuseTraining", "Train")):
        assert states[reuse]["cached"] is True and states[reuse]["cached_from"] == FAILED_RUN, states[reuse]
        assert step not in states  # the step itself did not run
    assert "Evaluate" in states and states["Evaluate"]["cached"] is False  # it failed: nothing to reuse
    assert "ReuseEvaluation" not in states
    assert resumed["reused_steps"] == {"Preprocess": FAILED_RUN, "Train": FAILED_RUN}


def test_resume_refuses_a_succeeded_run_and_an_unknown_one(
    resumed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert _cli("resume", f"{FAILED_RUN}-resume-1")[0] == 2
    error = capsys.readouterr().err
    assert "succeeded: there is nothing to resume" in error and len(error.strip().splitlines()) == 1
    assert _cli("resume", "no-such-run")[0] == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err


def test_cache_list_shows_the_entries_and_clear_removes_them(
    resumed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = _cli("cache", "list", "--model", MODEL, "--json")
    assert code == 0
    entries = json.loads(text)
    assert {e["step"] for e in entries} == {"Preprocess", "Training", "Evaluate"}
    assert all(e["model_name"] == MODEL and e["expired"] is False for e in entries)
    # the failed run stored Preprocess and Training, the resume Evaluate
    assert {e["step"]: e["run_id"] for e in entries if e["step"] != "Evaluate"} == {
        "Preprocess": FAILED_RUN,
        "Training": FAILED_RUN,
    }

    code, table = _cli("cache", "list", "--model", MODEL)
    assert code == 0 and table.splitlines()[0].startswith("KEY") and FAILED_RUN in table

    assert _cli("cache", "clear")[0] == 2
    assert "without a filter" in capsys.readouterr().err

    preprocess = [e for e in entries if e["step"] == "Preprocess"]
    code, text = _cli("cache", "clear", "--model", MODEL, "--step", "preprocess", "--json")
    assert code == 0 and json.loads(text)["removed"] == len(preprocess)
    left = json.loads(_cli("cache", "list", "--model", MODEL, "--json")[1])
    assert {e["step"] for e in left} == {"Training", "Evaluate"}


def test_no_cache_runs_every_step_again(resumed: dict[str, Any], dataset: Path) -> None:
    # the cache holds this data's Train and Evaluate results (the test above removed Preprocess's)
    held = json.loads(_cli("cache", "list", "--model", MODEL, "--json")[1])
    assert {"Training", "Evaluate"} <= {e["step"] for e in held}
    run = run_cli("--data", str(dataset), "--model-name", MODEL, "--no-cache")
    assert run.exit_code == 0, run.output
    states = _states(run.result)
    assert {"Preprocess", "Train", "Evaluate"} <= set(states)
    assert not any(state["cached"] for state in states.values())
    assert run.result["reused_steps"] == {}

    code, text = _cli("cache", "clear", "--model", MODEL)
    assert code == 0 and text.startswith("Removed ")
    assert json.loads(_cli("cache", "list", "--model", MODEL, "--json")[1]) == []


def test_a_run_whose_dataset_was_deleted_is_not_resumed(
    failed_run: PipelineRun, capsys: pytest.CaptureFixture[str]
) -> None:
    from stepml.project import project_layout
    from stepml.targets import embedded_target

    target = embedded_target(project_layout())
    # a second failed run of its own, so that deleting its dataset touches no other test's run
    run = run_cli(
        "--data", str(REPO / "data" / "iris.csv"), "--name", "cache-cli-dataset-gone",
        "--inject-fault", "ValidateInput=InjectedPermanentError",
    )  # fmt: skip
    assert run.exit_code == 1, run.output
    bucket = target.outputs.data_bucket
    target.client("s3").delete_object(Bucket=bucket, Key="datasets/cache-cli-dataset-gone/iris.csv")
    capsys.readouterr()
    assert _cli("resume", "cache-cli-dataset-gone")[0] == 2
    error = capsys.readouterr().err
    assert "no longer exists" in error and "datasets/cache-cli-dataset-gone/iris.csv" in error
