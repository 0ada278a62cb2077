"""The embedded target's template evaluator."""

from __future__ import annotations

from pathlib import Path

import yaml

from stepml.embedded import template

ROOT = Path(__file__).parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"


def test_the_fast_loader_reads_the_template_as_the_pure_python_one_does() -> None:
    pure = yaml.load(TEMPLATE.read_text(), Loader=template._CfnLoader)
    assert template.load_template(TEMPLATE) == pure
