"""What `sam build` packages for AWS: each function ships only what it imports there, and nothing local-only.

`sam build` installs a function's ``requirements.txt`` (next to its CodeUri) and builds every function of the
template whatever its Condition, so the stand-in functions (Condition UseSageMakerStandIn) are built for AWS
too: their dependencies, and the local-only ones of functions that run everywhere, are in
``requirements-local.txt``, which only the local targets install (infra/localstack/ready.d/deploy.sh; the
embedded target runs in .venv). Sizes are computed from the pinned distributions installed in this
environment (the helpers of tests/unit/test_template.py), not from a real `sam build` (it needs the network
and, for some wheels, Docker).
"""

from __future__ import annotations

import ast
import functools
import json
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from tests.unit.test_template import (
    TEMPLATE,
    code_bytes,
    installed_bytes,
    load_template,
    requirement_lines,
    resources,
)

ROOT = TEMPLATE.parents[1]
FUNCTIONS = ROOT / "functions"
# What a Lambda python3.12 function can import without shipping it: the runtime's boto3 and what it needs.
LAMBDA_RUNTIME = {"boto3", "botocore", "s3transfer", "jmespath", "urllib3", "python-dateutil", "six"}
# The public layers' contents (only what the functions import of them is listed).
POWERTOOLS_LAYER = {"aws-lambda-powertools", "aws-xray-sdk", "wrapt", "jmespath", "typing-extensions"}
PANDAS_LAYER = {"pandas", "numpy", "pyarrow", "python-dateutil", "pytz", "tzdata", "six", "packaging"}
# Never in a Lambda package on AWS: training and serving run in the SageMaker container (docs/DESIGN.md).
AWS_FORBIDDEN = {"scikit-learn", "scipy", "joblib", "threadpoolctl"}
SAM_BUILD_LOCAL_ONLY_BYTES = 1 * 2**20


@functools.cache
def _template() -> dict[str, Any]:
    return load_template()


@functools.cache
def _owners() -> dict[str, list[str]]:
    return dict(metadata.packages_distributions())


@functools.cache
def _shipped_by(directory: Path) -> frozenset[str]:
    return frozenset(installed_bytes(requirement_lines(directory)))


def _functions() -> dict[str, dict[str, Any]]:
    return resources(_template(), "AWS::Serverless::Function")


def _code_dir(resource: dict[str, Any]) -> Path:
    return (TEMPLATE.parent / resource["Properties"]["CodeUri"]).resolve()


def _built_bytes(code_dir: Path) -> dict[str, int]:
    """What `sam build` puts in the function's package: its code and its requirements.txt, installed."""
    return {"code": code_bytes(code_dir), **installed_bytes(requirement_lines(code_dir))}


def test_sam_build_installs_nothing_for_the_functions_aws_never_deploys() -> None:
    local_only = {n: r for n, r in _functions().items() if r.get("Condition") == "UseSageMakerStandIn"}
    assert len(local_only) >= 10, "the stand-in functions are no longer where this test looks for them"
    built = {name: _built_bytes(_code_dir(r)) for name, r in local_only.items()}
    total = sum(sum(parts.values()) for parts in built.values())
    assert total < SAM_BUILD_LOCAL_ONLY_BYTES, {n: p for n, p in built.items() if len(p) > 1}


def test_no_function_built_for_aws_ships_the_stand_ins_libraries() -> None:
    for name, resource in _functions().items():
        shipped = _shipped_by(_code_dir(resource))
        assert not shipped & AWS_FORBIDDEN, f"{name}: `sam build` would install {sorted(shipped & AWS_FORBIDDEN)}"


def test_local_only_requirements_are_pinned_like_the_project() -> None:
    import tomllib

    pins = {
        canonicalize_name(line.split("==")[0].split("[")[0]): line.split("==")[1]
        for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        if "==" in line
    }
    files = sorted(FUNCTIONS.glob("*/requirements-local.txt"))
    assert {f.parent.name for f in files} >= {"inference", "local_sagemaker"}
    for path in files:
        for line in requirement_lines(path.parent) + _lines(path):
            name, version = line.split("==")
            assert pins.get(canonicalize_name(name)) == version, f"{path}: {line} is not pyproject.toml's pin"


def _lines(path: Path) -> list[str]:
    return [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines() if ln.split("#", 1)[0].strip()]


def test_stand_in_functions_get_scikit_learn_on_local_targets() -> None:
    hook = (ROOT / "infra" / "localstack" / "ready.d" / "deploy.sh").read_text()
    assert '"$BUILD"/functions/*/requirements-local.txt' in hook
    for name in ("inference", "local_sagemaker"):
        assert "scikit-learn==1.9.1" in _lines(FUNCTIONS / name / "requirements-local.txt")


def _module_file(name: str, roots: list[Path]) -> Path | None:
    for root in roots:
        base = root.joinpath(*name.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _module_level_imports(path: Path) -> Iterator[tuple[str, int, str | None]]:
    """(module, level, first imported name) of each import that runs when the module is imported: module level,
    outside ``if TYPE_CHECKING:`` (imports inside functions run later, on the paths that need them)."""
    body = list(ast.parse(path.read_text()).body)
    while body:
        node = body.pop(0)
        if isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                body[:0] = [*node.body, *node.orelse]
        elif isinstance(node, ast.Try):
            body[:0] = [*node.body, *node.orelse, *node.finalbody]
        elif isinstance(node, ast.Import):
            yield from ((alias.name, 0, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield from ((node.module or "", node.level, alias.name) for alias in node.names)


def imported_distributions(code_dir: Path, shared_dir: Path) -> set[str]:
    """The distributions a handler module (``app``) loads when Lambda imports it, found by following the
    module-level imports of the function's and the shared layer's own modules."""
    roots = [code_dir, shared_dir]
    owners = _owners()
    seen: set[Path] = set()
    found: set[str] = set()
    todo = [code_dir / "app.py"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module, level, name in _module_level_imports(path):
            if level:
                anchor = path.parent
                for _ in range(level - 1):
                    anchor = anchor.parent
                relative = [anchor.joinpath(*module.split(".")) if module else anchor]
                candidates = [relative[0].with_suffix(".py"), relative[0] / "__init__.py"]
                if name:
                    candidates += [relative[0] / f"{name}.py", relative[0] / name / "__init__.py"]
                todo += [c for c in candidates if c.is_file()]
                continue
            top = module.split(".")[0]
            own = _module_file(module, roots)
            if own is not None:
                todo.append(own)
                parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
                todo += [f for f in (_module_file(p, roots) for p in parents) if f is not None]
                if name:
                    todo += [f for f in [_module_file(f"{module}.{name}", roots)] if f is not None]
            elif top not in sys.stdlib_module_names and top != "__future__":
                found.update(canonicalize_name(d) for d in owners.get(top, [top]))
    return found


def _aws_functions() -> list[str]:
    return sorted(n for n, r in _functions().items() if "Condition" not in r)


@pytest.mark.parametrize("function", _aws_functions())
def test_each_aws_function_ships_what_its_handler_imports(function: str) -> None:
    """A handler module imports (when Lambda loads it) only what its package, its layers or the runtime hold."""
    template = _template()
    resource = template["Resources"][function]
    code_dir = _code_dir(resource)
    layers = json.dumps(template["Globals"]["Function"]["Layers"] + resource["Properties"].get("Layers", []))
    shared_dir = (TEMPLATE.parent / template["Resources"]["SharedLayer"]["Properties"]["ContentUri"]).resolve()
    shipped = set(_shipped_by(code_dir) | _shipped_by(shared_dir)) | LAMBDA_RUNTIME
    if "AWSLambdaPowertoolsPythonV3" in layers:
        shipped |= POWERTOOLS_LAYER
    if "PandasLayerArn" in layers:
        shipped |= PANDAS_LAYER
    imported = imported_distributions(code_dir, shared_dir)
    assert "pydantic" in imported or "aws-lambda-powertools" in imported, "the import scan found nothing"
    assert imported - shipped == set(), f"{function} imports what its AWS package lacks"
    assert not imported & AWS_FORBIDDEN


def test_the_import_scan_sees_an_import_a_package_lacks(tmp_path: Path) -> None:
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "app.py").write_text("from pipeline_core import thing\n")
    (tmp_path / "layer" / "pipeline_core").mkdir(parents=True)
    (tmp_path / "layer" / "pipeline_core" / "__init__.py").write_text("")
    (tmp_path / "layer" / "pipeline_core" / "thing.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pandas\nimport sklearn.base\n"
    )
    assert imported_distributions(tmp_path / "fn", tmp_path / "layer") == {"scikit-learn"}
