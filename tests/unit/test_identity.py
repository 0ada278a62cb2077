"""A model is (model name, target, problem type): a run never gates against, nor deploys over, another.

Issue 10: the default model name was the file name, so training ``sex`` after ``species`` on penguins.csv
gated the sex classifier against the species champion, a regressor replaced a classifier on the same
endpoint, and an ID-column target became a new version of the real model.
"""

from __future__ import annotations

from typing import Any

import pytest
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.errors import ModelIdentityError
from pipeline_core.models import DataProfile, ModelIdentity, RunConfig
from pipeline_core.stages import deploy_lease
from pipeline_core.stages.identity import check_identity, default_model_name, resolve_identity
from pipeline_core.stages.validate_input import build_run_config

from tests.conftest import FakeAws
from tests.unit.test_evaluate import champion_record, run_evaluate, state_for, trained
from tests.unit.test_register import ARN, evaluated_state, run_register


def registry(aws: FakeAws) -> ModelRegistry:
    return ModelRegistry(aws.registry_table, aws.dynamodb)


def _record(model_name: str, target: str, problem_type: str, **changes: Any) -> dict[str, Any]:
    return {**champion_record(model_name, "f1_macro", 0.5), "target": target, "problem_type": problem_type, **changes}


def _profile(target: str, problem_type: str, chosen_by: str = "input") -> DataProfile:
    return DataProfile.model_validate(
        {
            "n_rows": 100,
            "n_columns": 3,
            "target": target,
            "target_chosen_by": chosen_by,
            "problem_type": problem_type,
            "problem_type_chosen_by": "inferred",
            "problem_type_reason": "test",
            "class_labels": [],
            "feature_columns": ["a", "b"],
            "columns": [],
        }
    )


# ------------------------------------------------------------------------------------- default model name


@pytest.mark.parametrize(
    ("dataset", "target", "expected"),
    [
        ("s3://b/incoming/penguins.csv", "species", "penguins-species"),
        ("s3://b/incoming/penguins.csv", "sex", "penguins-sex"),
        ("s3://b/x/Cars Data.parquet", "MPG", "cars-data-mpg"),
        ("s3://b/x/stepml-data.csv", "y", "data-y"),
        ("s3://b/x/___.csv", "__", "model"),
        ("s3://b/x/" + "a" * 60 + ".csv", "target", "a" * 40),
    ],
)
def test_the_default_model_name_is_the_file_and_the_target(dataset: str, target: str, expected: str) -> None:
    name = default_model_name(dataset, target)
    assert name == expected and len(name) <= 40


def test_validate_input_keeps_a_given_model_name_and_leaves_the_default_to_validate_data() -> None:
    given = build_run_config({"dataset": "s3://b/p.csv", "model_name": "mine"}, "run-1", "bucket", "stepml-dev")
    assert (given.model_name, given.endpoint_name) == ("mine", "stepml-dev-mine-ep")
    default = build_run_config({"dataset": "s3://b/p.csv"}, "run-1", "bucket", "stepml-dev")
    # the target (default: the last column) is known only once ValidateData has read the file
    assert default.model_name is None and default.endpoint_name is None
    assert default.endpoint_name_prefix == "stepml-dev"


def test_validate_data_resolves_the_default_name_from_the_target_it_chose() -> None:
    config = build_run_config({"dataset": "s3://b/incoming/penguins.csv"}, "run-1", "bucket", "stepml-dev")
    resolved = resolve_identity(config, _profile("sex", "binary_classification", "last_column"))
    assert resolved.model_name == "penguins-sex"
    assert resolved.endpoint_name == "stepml-dev-penguins-sex-ep"
    assert resolved.identity == ModelIdentity(
        model_name="penguins-sex", target="sex", problem_type="binary_classification"
    )


def test_a_long_default_name_still_fits_sagemakers_63_characters() -> None:
    prefix = "stepml-" + "p" * 16  # the longest prefix sagemaker_names takes
    config = build_run_config({"dataset": "s3://b/" + "d" * 50 + ".csv"}, "run-1", "bucket", prefix)
    resolved = resolve_identity(config, _profile("t" * 30, "regression"))
    assert len(resolved.endpoint_name) <= 63 and resolved.endpoint_name.endswith("-ep")


# ------------------------------------------------------------------------------------------- the registry


@pytest.mark.parametrize(
    ("target", "problem_type", "conflict"),
    [
        ("species", "multiclass_classification", False),
        ("sex", "binary_classification", True),  # another column of the same file
        ("species", "regression", True),  # a regressor over a classifier
    ],
)
def test_check_identity_refuses_a_name_registered_with_another_target_or_problem_type(
    aws: FakeAws, target: str, problem_type: str, conflict: bool
) -> None:
    registry(aws).register_model(_record("penguins", "species", "multiclass_classification"))
    identity = ModelIdentity.model_validate({"model_name": "penguins", "target": target, "problem_type": problem_type})
    if not conflict:
        check_identity(registry(aws), identity)
        return
    with pytest.raises(ModelIdentityError) as raised:
        check_identity(registry(aws), identity)
    message = str(raised.value)
    # both identities, and what to do about it
    assert "penguins v1" in message and "'species'" in message and "multiclass_classification" in message
    assert f"'{target}'" in message and problem_type in message and "model_name" in message


def test_the_error_suggests_the_default_name_for_the_file_and_target(aws: FakeAws) -> None:
    registry(aws).register_model(_record("penguins-species", "species", "multiclass_classification"))
    clash = ModelIdentity(model_name="penguins-species", target="sex", problem_type="binary_classification")
    with pytest.raises(ModelIdentityError, match=r"another model_name \(e\.g\. 'penguins-sex'\)"):
        check_identity(registry(aws), clash, dataset="s3://b/incoming/penguins.csv")
    # the default name itself taken by another problem type (the data changed): another name still
    changed = ModelIdentity(model_name="penguins-species", target="species", problem_type="binary_classification")
    with pytest.raises(ModelIdentityError, match=r"e\.g\. 'penguins-species-binary'"):
        check_identity(registry(aws), changed, dataset="s3://b/incoming/penguins.csv")


def test_a_rejected_version_claims_the_name_too(aws: FakeAws) -> None:
    registry(aws).register_model(_record("penguins", "id", "multiclass_classification", status="rejected"))
    with pytest.raises(ModelIdentityError):
        check_identity(registry(aws), ModelIdentity(model_name="penguins", target="species",
                                                    problem_type="multiclass_classification"))  # fmt: skip


def test_a_new_name_has_no_identity_to_conflict_with(aws: FakeAws) -> None:
    registry(aws).register_model(_record("penguins-species", "species", "multiclass_classification"))
    check_identity(registry(aws), ModelIdentity(model_name="penguins-sex", target="sex",
                                                problem_type="binary_classification"))  # fmt: skip


def test_model_identity_error_is_permanent() -> None:
    from pipeline_core.errors import PermanentError

    assert issubclass(ModelIdentityError, PermanentError)


# -------------------------------------------------------------------------------- Evaluate and the lease


def test_evaluate_does_not_gate_against_a_champion_of_another_target(aws: FakeAws) -> None:
    """The penguins case: the species model is the champion of the name the sex run was given."""
    registry(aws).register_model(_record("iris", "sex", "binary_classification"))
    state = state_for(aws, trained("iris"), model_name="iris")
    with pytest.raises(ModelIdentityError, match="'sex'"):
        run_evaluate(aws, state)


def test_evaluate_does_not_gate_a_regressor_against_a_classifier(aws: FakeAws) -> None:
    registry(aws).register_model(_record("diabetes", "progression", "multiclass_classification"))
    state = state_for(aws, trained("diabetes"), model_name="diabetes")
    with pytest.raises(ModelIdentityError, match="regression"):
        run_evaluate(aws, state)


def _with_identity(config: dict[str, Any], target: str, problem_type: str) -> RunConfig:
    identity = {"model_name": config["model_name"], "target": target, "problem_type": problem_type}
    return RunConfig.model_validate({**config, "identity": identity})


def test_the_deploy_lease_refuses_a_run_of_another_identity_and_leaves_the_lease_free(aws: FakeAws) -> None:
    """A classifier registered under the name after this run's Evaluate (the regressor/classifier case)."""
    state = evaluated_state(aws)
    evaluation = run_evaluate(aws, state)
    registry(aws).register_model(_record("iris", "species", "regression", execution="other"))
    config = _with_identity(state["config"], "species", "multiclass_classification")
    with pytest.raises(ModelIdentityError):
        deploy_lease.acquire_deploy_lease(config, ARN.format("run-1"), registry(aws), evaluation)
    assert registry(aws).deploy_lease("iris") is None


def test_the_deploy_lease_lets_a_run_of_the_same_identity_through(aws: FakeAws) -> None:
    state = evaluated_state(aws)
    evaluation = run_evaluate(aws, state)
    config = _with_identity(state["config"], "species", "multiclass_classification")
    answer = deploy_lease.acquire_deploy_lease(config, ARN.format("run-1"), registry(aws), evaluation)
    assert answer.holder == ARN.format("run-1")


def test_register_refuses_to_add_a_version_of_another_identity(aws: FakeAws) -> None:
    state = evaluated_state(aws)
    identity = {"model_name": "iris", "target": "species", "problem_type": "multiclass_classification"}
    state["config"] = {**state["config"], "identity": identity}
    registry(aws).register_model(_record("iris", "petal_id", "multiclass_classification", execution="other"))
    with pytest.raises(ModelIdentityError):
        run_register(aws, state, "run-1", status="rejected")
    assert [v.version for v in registry(aws).versions("iris")] == [1]


@pytest.mark.parametrize("model_name", [None, "penguins-sex"], ids=["before-validate-data", "after"])
def test_a_failed_run_is_recorded_with_its_model_name_once_known(aws: FakeAws, model_name: str | None) -> None:
    from pipeline_core.aws.runs import RunLog
    from pipeline_core.stages.record_failure import record_failure

    config = build_run_config({"dataset": "s3://b/incoming/penguins.csv"}, "run-7", "bucket", "stepml-test")
    config = config.model_copy(update={"model_name": model_name})
    event = {
        "failure": {"state": "Train", "error": "TrainingFailedError", "cause": "boom"},
        "state": {"config": config.model_dump(mode="json")},
        "execution_arn": ARN.format("run-7"),
        "execution_name": "run-7",
    }
    runs = RunLog(aws.runs_table, aws.dynamodb)
    record_failure(event, runs=runs, registry=lambda: registry(aws), endpoints=lambda: None)
    record = runs.get_run("run-7")
    assert record is not None and record.get("model_name") == model_name
