"""moto's Step Functions engine without importing moto's Batch and EC2 backends on the way.

The engine's Batch task integration imports one enum from ``moto.batch.utils``; importing that module first
runs ``moto/batch/__init__.py``, which imports the Batch backend and with it the EC2, ECS and IAM backends:
about 1.2 s of CPU (of ~1.5 s for the whole engine) that `stepml local up` spent before it could answer, for a
service the pipeline never calls. :func:`load_batch_utils` loads ``moto.batch.utils`` (and the exceptions it
imports) as the modules they are, without the package's ``__init__``; a later ``import moto.batch`` (a Batch
request, moto's reset) runs it as usual and its backend then uses those same modules. Nothing a client sees
changes.
"""

from __future__ import annotations

import importlib.util
import sys
import threading

_LOCK = threading.Lock()
_SUBMODULES = ("exceptions", "utils")  # in import order: utils imports .exceptions


def load_batch_utils() -> None:
    """Have ``moto.batch.utils`` imported without ``moto.batch``'s ``__init__`` (no-op once either is)."""
    with _LOCK:
        if "moto.batch" in sys.modules or "moto.batch.utils" in sys.modules:
            return
        package = importlib.util.find_spec("moto.batch")
        if package is None or not package.submodule_search_locations:
            return  # another moto layout: the engine's import then loads the package as usual
        folder = next(iter(package.submodule_search_locations))
        loaded = []
        try:
            for name in _SUBMODULES:
                spec = importlib.util.spec_from_file_location(f"moto.batch.{name}", f"{folder}/{name}.py")
                if spec is None or spec.loader is None:
                    raise ImportError(f"moto.batch.{name} not found in {folder}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                loaded.append(spec.name)
                spec.loader.exec_module(module)
        except Exception:
            for name in loaded:  # leave nothing half-made: the usual import runs instead
                sys.modules.pop(name, None)
            raise
