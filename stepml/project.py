"""Where the project's own files are (the definition, the template, the functions, the training code)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class ProjectLayoutError(RuntimeError):
    """The stepml project files cannot be found."""


@dataclass(frozen=True)
class ProjectLayout:
    root: Path

    @property
    def state_machine_definition(self) -> Path:
        return self.root / "statemachine" / "pipeline.asl.json"

    @property
    def template(self) -> Path:
        return self.root / "infra" / "template.yaml"

    @property
    def training_dir(self) -> Path:
        return self.root / "training"

    @property
    def functions_dir(self) -> Path:
        return self.root / "functions"

    @property
    def sample_data_dir(self) -> Path:
        return self.root / "data"

    @property
    def state_dir(self) -> Path:
        """Where the embedded target keeps S3 objects, tables and execution records between commands."""
        override = os.environ.get("STEPML_STATE_DIR")
        return Path(override).expanduser().resolve() if override else self.root / ".stepml"


def project_layout() -> ProjectLayout:
    """The project checkout this package runs from (``STEPML_PROJECT_ROOT`` overrides)."""
    override = os.environ.get("STEPML_PROJECT_ROOT")
    root = Path(override).resolve() if override else Path(__file__).resolve().parents[1]
    layout = ProjectLayout(root)
    missing = [p for p in (layout.state_machine_definition, layout.template) if not p.exists()]
    if missing:
        raise ProjectLayoutError(
            f"stepml project files not found under {root} (missing: {', '.join(map(str, missing))}); "
            "run from a checkout or set STEPML_PROJECT_ROOT"
        )
    return layout
