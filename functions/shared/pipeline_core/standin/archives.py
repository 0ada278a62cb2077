"""The tar.gz archives SageMaker's contract speaks in: ``sagemaker_submit_directory`` (a training source,
packed deterministically), ``model.tar.gz`` and ``output.tar.gz`` (packed from a job's directories), and
their safe extraction."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path

from pipeline_core.errors import TrainingFailedError

# 1980-01-01: a fixed mtime so the same training/ folder always packs to the same bytes (zip-safe too).
_FIXED_MTIME = 315532800
_SKIPPED_DIRS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".ipynb_checkpoints"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


def tar_gz(files: Iterable[tuple[str, Path]]) -> bytes:
    """A tar.gz of ``(name in archive, file)`` pairs with normalised metadata and no gzip timestamp."""
    buffer = io.BytesIO()
    with (
        # mtime=0 and no file name keep the gzip header, and so the bytes, reproducible
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, path in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mtime = _FIXED_MTIME
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


def files_under(directory: Path) -> list[tuple[str, Path]]:
    """Every regular file under ``directory`` as ``(relative posix name, path)``, skipping caches."""
    found = []
    for path in directory.rglob("*"):
        relative = path.relative_to(directory)
        if any(part in _SKIPPED_DIRS for part in relative.parts) or path.suffix in _SKIPPED_SUFFIXES:
            continue
        if path.is_file():
            found.append((relative.as_posix(), path))
    return found


def package_training_source(training_dir: Path) -> bytes:
    """``training_dir`` as the deterministic tar.gz SageMaker takes as ``sagemaker_submit_directory``:
    files at the archive's root, sorted, fixed mtimes and owners, without ``__pycache__``."""
    if not training_dir.is_dir():
        raise FileNotFoundError(f"no training source folder at {training_dir}")
    return tar_gz(files_under(training_dir))


def extract_tar_gz(data: bytes, directory: Path, what: str) -> Path:
    """Extract ``data`` into ``directory``; the "data" filter refuses absolute paths and ``..`` entries."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(directory, filter="data")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise TrainingFailedError(f"{what} is not a readable tar.gz: {error}") from error
    return directory
