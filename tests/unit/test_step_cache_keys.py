"""The step cache's keys: which code and which config fields a step's result depends on."""

from __future__ import annotations

from pathlib import Path

from pipeline_core.code_identity import code_sha256
from pipeline_core.models import RunConfig
from pipeline_core.stages.step_cache import config_part, digest
from pipeline_core.stages.validate_input import build_run_config


def package(tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    root = tmp_path / name / "pipeline_core"
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


FILES = {
    "__init__.py": "",
    "stages/__init__.py": "",
    "stages/step.py": "from pipeline_core.helper import f\nfrom . import sibling\n\ndef run():\n"
    "    from pipeline_core.lazy import g  # imported only when it runs\n",
    "stages/sibling.py": "X = 1\n",
    "helper.py": "import json\nfrom pipeline_core import deep\n",
    "deep.py": "Y = 2\n",
    "lazy.py": "Z = 3\n",
    "unrelated.py": "W = 4\n",
}


def test_the_code_hash_covers_every_module_the_step_imports_and_nothing_else(tmp_path: Path) -> None:
    base = code_sha256("pipeline_core.stages.step", package(tmp_path, "base", FILES))
    for changed in ("stages/step.py", "stages/sibling.py", "helper.py", "deep.py", "lazy.py"):
        edited = package(tmp_path, changed.replace("/", "-"), {**FILES, changed: FILES[changed] + "# edited\n"})
        assert code_sha256("pipeline_core.stages.step", edited) != base, f"{changed} is imported by the step"
    other = package(tmp_path, "unrelated", {**FILES, "unrelated.py": "W = 5\n"})
    assert code_sha256("pipeline_core.stages.step", other) == base


def test_the_real_stages_hash_their_own_code() -> None:
    assert code_sha256("pipeline_core.stages.preprocess") != code_sha256("pipeline_core.stages.evaluate")


def config(execution: str, **fields: object) -> RunConfig:
    return build_run_config({"dataset": "s3://b/iris.csv", **fields}, execution, "bucket", "stepml-dev")


def test_run_specific_fields_are_not_in_any_key() -> None:
    first = config("run-one")
    # approval settings steer the execution after Evaluate: a rerun with them reuses every step
    second = config(
        "run-two-other-name", no_cache=True, resume_of="run-one", approval="manual", approval_timeout_seconds=60
    )
    assert first.training_job_name != second.training_job_name
    for step in ("Preprocess", "Training", "Evaluate"):
        assert digest(config_part(first, step)) == digest(config_part(second, step)), step


def test_each_step_keys_the_fields_it_reads() -> None:
    base = config("run")
    seed, threshold, hyper = (
        config("run", seed=7),
        config("run", quality_threshold=0.9),
        config("run", hyperparameters={"max_iter": 50}),
    )
    changed = {
        step: {
            name
            for name, other in (("seed", seed), ("threshold", threshold), ("hyperparameters", hyper))
            if digest(config_part(other, step)) != digest(config_part(base, step))
        }
        for step in ("Preprocess", "Training", "Evaluate")
    }
    # the split's seed is Preprocess's and training's; the gate's threshold is decided again on a hit;
    # hyperparameters are in training's key as the job gets them (not in the config part)
    assert changed == {"Preprocess": {"seed"}, "Training": {"seed"}, "Evaluate": {"seed"}}


def test_a_tuning_job_name_is_not_part_of_the_key() -> None:
    one, two = config("run-a", tuning=True), config("run-b", tuning=True)
    assert one.tuning is not None and two.tuning is not None and one.tuning.job_name != two.tuning.job_name
    assert digest(config_part(one, "Training")) == digest(config_part(two, "Training"))
