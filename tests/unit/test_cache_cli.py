"""The CLI side of the step cache: --no-cache, reused steps in the progress view and --json, `stepml cache`,
and `stepml resume`'s choices (what it refuses, the name and input of the new execution)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from stepml.cache_commands import entry_json, expired, format_entries, step_name
from stepml.cli import build_parser, main
from stepml.progress import HistoryReader, follow
from stepml.resume import EXECUTION_NAME_MAX, refusal, resume_name, resumed_input
from stepml.run_input import options_input
from stepml.session import RunOutcome, outcome_of, print_summary, reused_line

START = datetime(2026, 11, 1, tzinfo=UTC)


# -- --no-cache -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["run", "start"])
def test_no_cache_puts_no_cache_true_in_the_execution_input(command: str) -> None:
    target_option = "target" if command == "run" else "target_column"
    given = build_parser().parse_args([command, "--no-cache"])
    assert options_input(given, target_option)["no_cache"] is True
    default = build_parser().parse_args([command])
    assert "no_cache" not in options_input(default, target_option)


# -- progress and --json ----------------------------------------------------------------------------------
def _lookup(step: str, hit: bool, from_run: str | None) -> dict[str, Any]:
    return {"step": step, "hit": hit, "key": "k" * 64, "reason": "found", "from_run": from_run, "result": None}


def _history(from_run: str) -> list[dict[str, Any]]:
    cache = {"cache": {"preprocess": _lookup("Preprocess", True, from_run)}}
    with_cache = json.dumps(cache)
    rows = [
        ("TaskStateEntered", "LookupPreprocess", "{}"),
        ("LambdaFunctionScheduled", None, None),
        ("TaskStateExited", "LookupPreprocess", with_cache),
        ("ChoiceStateEntered", "PreprocessCached", with_cache),
        ("ChoiceStateExited", "PreprocessCached", with_cache),
        ("PassStateEntered", "ReusePreprocess", with_cache),
        ("PassStateExited", "ReusePreprocess", with_cache),
        ("TaskStateEntered", "Train", with_cache),
        ("LambdaFunctionScheduled", None, None),
        ("TaskStateExited", "Train", with_cache),
        ("TaskStateEntered", "RememberTraining", with_cache),
        ("LambdaFunctionScheduled", None, None),
        ("LambdaFunctionFailed", None, None),
        ("LambdaFunctionScheduled", None, None),
        ("TaskStateExited", "RememberTraining", with_cache),
    ]
    events = []
    for index, (kind, name, data) in enumerate(rows, start=1):
        event: dict[str, Any] = {"id": index, "type": kind, "timestamp": START + timedelta(seconds=index)}
        if name and kind.endswith("Entered"):
            event["stateEnteredEventDetails"] = {"name": name, "input": data}
        elif name:
            event["stateExitedEventDetails"] = {"name": name, "output": data}
        elif kind == "LambdaFunctionFailed":
            event["lambdaFunctionFailedEventDetails"] = {"error": "TransientStoreError"}
        events.append(event)
    return events


class OneShotStepFunctions:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        return {
            "executionArn": executionArn,
            "status": "SUCCEEDED",
            "startDate": START,
            "stopDate": START + timedelta(seconds=20),
            "output": json.dumps({"registration": {"model_name": "iris-species", "version": 3, "status": "approved",
                                                   "reused_version": True}}),
        }  # fmt: skip

    def get_execution_history(self, **kwargs: Any) -> dict[str, Any]:
        return {"events": list(reversed(self.events)) if kwargs.get("reverseOrder") else list(self.events)}


def test_a_reused_step_is_shown_with_its_run_and_the_cache_bookkeeping_is_left_out() -> None:
    printed = io.StringIO()
    description, reader = follow(OneShotStepFunctions(_history("iris-run-1")), "arn:x", printed, poll_seconds=0)
    text = printed.getvalue()
    assert "↺ Preprocess" in text and "reused from run iris-run-1" in text
    assert "LookupPreprocess" not in text and "PreprocessCached" not in text and "ReusePreprocess" not in text
    assert "✓ Train" in text
    # a bookkeeping state that was retried is shown: a retry is worth seeing
    assert "RememberTraining" in text

    outcome = outcome_of(description, reader)
    states = {s["name"]: s for s in outcome.to_json()["states"]}
    assert set(states) == {"LookupPreprocess", "PreprocessCached", "ReusePreprocess", "Train", "RememberTraining"}
    assert states["ReusePreprocess"]["cached"] is True
    assert states["ReusePreprocess"]["cached_from"] == "iris-run-1"
    assert states["ReusePreprocess"]["step"] == "Preprocess"
    assert all(s["cached"] is False for name, s in states.items() if name != "ReusePreprocess")
    assert outcome.reused_steps == {"Preprocess": "iris-run-1"}
    assert outcome.reused_version is True


def test_the_summary_says_which_steps_were_reused_and_that_the_version_existed() -> None:
    outcome = RunOutcome("arn:x", "SUCCEEDED", 3.0, model_name="iris-species", model_version=3)
    outcome.registry_status, outcome.reused_version = "approved", True
    outcome.reused_steps = {"Preprocess": "run-a", "Train": "run-a", "Evaluate": "run-b"}
    printed = io.StringIO()
    print_summary(outcome, printed)
    text = printed.getvalue()
    assert "Reused      Preprocess, Train from run-a; Evaluate from run-b" in text
    assert "iris-species v3 (approved, the version this training job already had)" in text
    assert reused_line({"Preprocess": "r"}) == "Preprocess from r"


def test_a_run_without_reused_steps_has_no_reused_line() -> None:
    printed = io.StringIO()
    print_summary(RunOutcome("arn:x", "FAILED", 1.0, error="E", cause="C"), printed)
    assert "Reused" not in printed.getvalue()
    reader = HistoryReader()
    assert outcome_of({"executionArn": "a", "status": "FAILED", "startDate": START}, reader).reused_steps == {}


# -- stepml cache -----------------------------------------------------------------------------------------
def _entry(step: str, expires_in: float, run: str = "run-1") -> Any:
    now = datetime.now(UTC)
    fields = {
        "cache_key": "0123456789abcdef" * 4,
        "step": step,
        "run_id": run,
        "model_name": "iris-species",
        "created_at": now.isoformat(),
        "expires_at": int(now.timestamp() + expires_in),
    }
    return SimpleNamespace(**fields, model_dump=lambda mode="json": dict(fields))


def test_cache_list_shows_a_short_key_the_step_model_run_and_whether_it_expired() -> None:
    live, old = _entry("Preprocess", 3600), _entry("Training", -60, run="run-0")
    table = format_entries([live, old])
    header, first, second = table.splitlines()
    assert header.split()[:3] == ["KEY", "STEP", "MODEL"] and "FROM RUN" in header
    assert first.startswith("0123456789ab  Preprocess") and first.split()[-2:] == ["no", "run-1"]
    assert "0123456789abcdef0" not in first  # the key is shortened
    assert second.split()[-2:] == ["yes", "run-0"]
    assert expired(old) and not expired(live)
    assert entry_json(old)["expired"] is True and entry_json(live)["run_id"] == "run-1"
    assert "empty" in format_entries([])


@pytest.mark.parametrize(
    ("given", "step"), [("train", "Training"), ("Evaluate", "Evaluate"), ("PREPROCESS", "Preprocess")]
)
def test_cache_step_names(given: str, step: str) -> None:
    assert step_name(given) == step
    assert build_parser().parse_args(["cache", "list", "--step", given]).step == step


def test_cache_clear_without_a_filter_or_all_does_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    # refused before any target is opened: this test has none
    assert main(["cache", "clear"], out=io.StringIO()) == 2
    assert "without a filter" in capsys.readouterr().err


# -- stepml resume ----------------------------------------------------------------------------------------
def test_resume_names_count_on_and_fit_80_characters() -> None:
    assert resume_name("iris-20261130T120000-abc123", 1) == "iris-20261130T120000-abc123-resume-1"
    assert resume_name("iris-20261130T120000-abc123-resume-1", 2) == "iris-20261130T120000-abc123-resume-2"
    long = "x" * 80
    assert len(resume_name(long, 12)) == EXECUTION_NAME_MAX and resume_name(long, 12).endswith("-resume-12")


def test_resume_refuses_a_succeeded_or_running_run_in_one_line() -> None:
    assert "succeeded" in (refusal("r", "SUCCEEDED") or "")
    assert "stepml watch r" in (refusal("r", "RUNNING") or "")
    for status in ("FAILED", "TIMED_OUT", "ABORTED"):
        assert refusal("r", status) is None
    assert all("\n" not in (refusal("r", s) or "") for s in ("SUCCEEDED", "RUNNING"))


def test_a_resume_has_the_failed_runs_input_with_resume_of_and_the_cache_on() -> None:
    failed = {"dataset": "s3://b/datasets/r/iris.csv", "no_cache": True, "model_name": "m"}
    assert resumed_input(failed, "r") == {**failed, "resume_of": "r", "no_cache": False}
