"""Two targets of one file are two models (issue 10): the real definition on the embedded target.

Before, the default model name was the file name: training ``sex`` after ``species`` on penguins.csv made the
sex classifier version 2 of "penguins", gated against the species champion and deployed on its endpoint. Now
the default name is the file and the target, and a name the registry holds for another target is refused
before training.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.harness import Finished, Harness, Job, embedded_harness

pytestmark = pytest.mark.slow

SPECIES = ("adelie", "chinstrap", "gentoo")


def penguins(rows: int = 150, seed: int = 3) -> bytes:
    """A penguins-like table: species follows the bill and flipper, sex the body mass; species is last."""
    rng = random.Random(seed)
    lines = ["bill_length_mm,flipper_length_mm,body_mass_g,island,sex,species"]
    for index in range(rows):
        species = SPECIES[index % 3]
        sex = "female" if rng.random() < 0.5 else "male"
        bill = 38 + 6 * SPECIES.index(species) + rng.gauss(0, 1.5)
        flipper = 190 + 12 * SPECIES.index(species) + rng.gauss(0, 3)
        mass = (3500 if sex == "female" else 4300) + 400 * SPECIES.index(species) + rng.gauss(0, 150)
        island = ("biscoe", "dream", "torgersen")[rng.randrange(3)]
        lines.append(f"{bill:.1f},{flipper:.0f},{mass:.0f},{island},{sex},{species}")
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Runs:
    harness: Harness
    species: Finished
    sex: Finished
    clash: Finished


@pytest.fixture(scope="module")
def runs(state_dir: Path) -> Iterator[Runs]:
    for h in embedded_harness():
        data = penguins()
        # the same file, uploaded as a user would for each run; species by default (the last column)
        species = Job("penguins-species-run", {"dataset": h.upload("datasets/a/penguins.csv", data)})
        sex = Job("penguins-sex-run", {"dataset": h.upload("datasets/b/penguins.csv", data), "target": "sex"})
        finished = h.run_all([species, sex])
        # sex under the species model's name: refused before training
        clash = h.run(
            Job(
                "penguins-clash-run",
                {
                    "dataset": h.upload("datasets/c/penguins.csv", data),
                    "target": "sex",
                    "model_name": "penguins-species",
                },
            )
        )
        yield Runs(h, finished[species.name], finished[sex.name], clash)


def test_two_targets_of_one_file_are_two_models_with_their_own_endpoints(runs: Runs) -> None:
    h = runs.harness
    for run in (runs.species, runs.sex):
        assert run.status == "SUCCEEDED", run.describe()
    expected = {
        "penguins-species": ("species", "multiclass_classification"),
        "penguins-sex": ("sex", "binary_classification"),
    }
    for name, (target, problem_type) in expected.items():
        [record] = h.model_versions(name)
        assert (record.version, record.target, record.problem_type) == (1, target, problem_type)
        assert record.endpoint_name == h.endpoint_name(name)
    sex_evaluation = runs.sex.output_of("Evaluate")["evaluation"]
    # gated on its own: no champion of another target to compare with
    assert sex_evaluation["champion_version"] is None, sex_evaluation
    assert h.model_versions("penguins") == []


def test_every_state_after_validate_data_sees_the_resolved_name(runs: Runs) -> None:
    config = runs.sex.output_of("UseModelIdentity")["config"]
    assert config["model_name"] == "penguins-sex"
    assert config["endpoint_name"] == runs.harness.endpoint_name("penguins-sex")
    assert config["identity"] == {
        "model_name": "penguins-sex",
        "target": "sex",
        "problem_type": "binary_classification",
    }
    assert runs.sex.outcome.model_name == "penguins-sex"


def test_a_name_registered_for_another_target_is_refused_before_training(runs: Runs) -> None:
    clash = runs.clash
    assert clash.status == "FAILED"
    assert clash.outcome.failed_state == "ValidateData" and clash.outcome.error == "ModelIdentityError"
    cause = str(clash.outcome.cause)
    assert "'species'" in cause and "'sex'" in cause and "model_name" in cause, cause
    assert "Train" not in clash.path
    assert [r.version for r in runs.harness.model_versions("penguins-species")] == [1]


def test_the_registry_records_the_lineage(runs: Runs) -> None:
    [record] = runs.harness.model_versions("penguins-species")
    assert record.code_uri and record.code_uri.startswith("s3://") and record.code_uri.endswith(".tar.gz")
    assert record.code_sha256 and re.fullmatch(r"[0-9a-f]{64}", record.code_sha256)
    assert record.code_version_id  # the data bucket keeps versions
    assert record.trainer and record.image
    assert record.hyperparameters.get("sagemaker_program")
    assert list(record.column_roles) == record.feature_columns
    document = json.loads(runs.harness.read(record.evaluation_uri))
    assert document["identity"]["target"] == "species"
    assert document["lineage"]["code_sha256"] == record.code_sha256
    assert {c["name"]: c["role"] for c in document["columns"]}["species"] == "target"
