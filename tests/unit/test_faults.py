"""Fault plans for the embedded target: the spec and fault-config syntaxes, and which attempts fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepml.embedded.faults import FaultPlan, FaultSpecError, Throw


def _only(plan: FaultPlan, state: str) -> Throw:
    [throw] = plan.throws[state]
    return throw


def test_the_existing_syntax_still_fails_before_the_code_runs() -> None:
    plan = FaultPlan.from_specs(["Preprocess=TransientStoreError:2", "Train=InjectedPermanentError"])
    preprocess, train = _only(plan, "Preprocess"), _only(plan, "Train")
    assert (preprocess.error, preprocess.first_attempt, preprocess.last_attempt) == ("TransientStoreError", 0, 1)
    assert (train.error, train.first_attempt, train.last_attempt) == ("InjectedPermanentError", 0, 0)
    assert preprocess.when == train.when == "before"


@pytest.mark.parametrize(
    ("spec", "last_attempt", "when"),
    [
        ("Register=TransientStoreError:1:after", 0, "after"),
        ("Register=TransientStoreError:after", 0, "after"),
        ("Register=TransientStoreError:3:after", 2, "after"),
        ("Register=TransientStoreError:2:before", 1, "before"),
    ],
)
def test_when_says_whether_the_code_runs_first(spec: str, last_attempt: int, when: str) -> None:
    throw = _only(FaultPlan.from_specs([spec]), "Register")
    assert (throw.error, throw.last_attempt, throw.when) == ("TransientStoreError", last_attempt, when)
    assert spec in throw.cause


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("Register=TransientStoreError:1:afterwards", "WHEN must be 'before'"),
        ("Register=TransientStoreError:1:", "WHEN must be 'before'"),
        ("Register=TransientStoreError:0", "COUNT must be at least 1"),
        ("Register=TransientStoreError:0:after", "COUNT must be at least 1"),
        ("Register", "expected STATE=ERROR[:COUNT][:WHEN]"),
        ("Register=TransientStoreError:1:after:2", "expected STATE=ERROR[:COUNT][:WHEN]"),
        ("Register=TransientStoreError:after:1", "expected STATE=ERROR[:COUNT][:WHEN]"),
    ],
)
def test_a_bad_spec_says_what_is_accepted(spec: str, message: str) -> None:
    with pytest.raises(FaultSpecError) as raised:
        FaultPlan.from_specs([spec])
    assert message in str(raised.value) and spec in str(raised.value)
    assert "Register=TransientStoreError:1:after" in str(raised.value)


def _config(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "faults.json"
    path.write_text(json.dumps(document))
    return path


def test_fault_config_when_field(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        {
            "Preprocess": {"0-1": {"Throw": {"Error": "TransientStoreError", "Cause": "slow"}}},
            "Register": {"0": {"Throw": {"Error": "TransientStoreError", "When": "after"}}},
            "Ingest": {"1": {"Throw": {"Error": "TransientStoreError", "When": "before"}}},
        },
    )
    plan = FaultPlan.from_file(path)
    assert _only(plan, "Preprocess") == Throw("TransientStoreError", "slow", 0, 1, None, "before")
    assert _only(plan, "Register").when == "after" and _only(plan, "Register").last_attempt == 0
    assert _only(plan, "Ingest").when == "before" and _only(plan, "Ingest").first_attempt == 1


@pytest.mark.parametrize(
    ("throw", "message"),
    [
        ({"Error": "TransientStoreError", "When": "later"}, '"When" must be "before"'),
        ({"Error": "TransientStoreError", "When": True}, '"When" must be "before"'),
        ({"Error": "TransientStoreError", "when": "after"}, "unknown Throw field(s) ['when']"),
        ({"Cause": "no error"}, "mapping to"),
    ],
)
def test_a_bad_fault_config_names_the_state_and_the_problem(tmp_path: Path, throw: object, message: str) -> None:
    path = _config(tmp_path, {"Register": {"0": {"Throw": throw}}})
    with pytest.raises(FaultSpecError) as raised:
        FaultPlan.from_file(path)
    assert message in str(raised.value) and "Register" in str(raised.value)


def test_attempts_are_counted_per_execution_and_injections_kept() -> None:
    plan = FaultPlan.from_specs(["Register=TransientStoreError:1:after"], execution="run-a")
    plan.merge(FaultPlan.from_specs(["Register=InjectedPermanentError"], execution="run-b"))

    first_a, second_a = plan.next_fault("run-a", "Register"), plan.next_fault("run-a", "Register")
    first_b = plan.next_fault("run-b", "Register")

    assert first_a is not None and first_a.attempt == 0 and first_a.throw.when == "after"
    assert second_a is None  # the retry runs the real code
    assert first_b is not None and first_b.throw.error == "InjectedPermanentError" and first_b.throw.when == "before"
    assert plan.next_fault("run-c", "Register") is None
    assert plan.next_fault("run-a", "Ingest") is None
    assert [(i.execution, i.state, i.attempt) for i in plan.injections] == [
        ("run-a", "Register", 0),
        ("run-b", "Register", 0),
    ]
    assert not any(i.ran for i in plan.injections)  # only the runtime runs code; nothing has yet
