"""The identity of the code a stage runs: a sha256 over the source of its module and every pipeline_core
module it imports, directly or not.

The step cache keys a Lambda step's result by it, so editing the code a step runs makes its cached results
misses, while editing a module it does not import (Register's, say) leaves them hits. Imports are read from
the source (``ast``), not from ``sys.modules``: what a module *could* run is what counts, and a lazy import
inside a function is found too. Every Lambda function gets pipeline_core from the one shared layer, so the
StepCache function hashes the very files the Preprocess and Evaluate functions run.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = "pipeline_core"


def _package_root() -> Path:
    return Path(__file__).resolve().parent


def _module_file(module: str, root: Path) -> Path | None:
    """The source file of ``pipeline_core.…`` module ``module`` under ``root``, or None (not ours, or none)."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    parts = module.split(".")[1:]
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, module: str, root: Path) -> set[str]:
    """The pipeline_core modules ``path`` imports (``from a import b`` counts ``a.b`` when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if _module_file(name, root) is not None}


@cache
def code_sha256(module: str, root: Path | None = None) -> str:
    """sha256 over ``module``'s source and that of every pipeline_core module it imports (by name order).

    ``root``: the pipeline_core package directory (this one by default). Cached: code does not change under
    a running function.
    """
    root = root or _package_root()
    if _module_file(module, root) is None:
        raise ValueError(f"{module} is not a module of {PACKAGE}")
    seen: dict[str, Path] = {}
    pending = [module]
    while pending:
        name = pending.pop()
        path = _module_file(name, root)
        if name in seen or path is None:
            continue
        seen[name] = path
        pending.extend(_imported_modules(path, name, root) - seen.keys())
    digest = hashlib.sha256()
    for name in sorted(seen):
        digest.update(name.encode() + b"\0" + seen[name].read_bytes() + b"\0")
    return digest.hexdigest()
