"""moto's Step Functions engine loads without moto's Batch and EC2 backends (stepml/embedded/moto_imports.py).

Each check runs in a fresh interpreter: which modules an import loads depends on what the process loaded before.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_the_engine_installs_without_the_batch_and_ec2_backends() -> None:
    loaded = _run(
        "import sys\n"
        "from stepml.embedded import asl_programs\n"
        "asl_programs.install()\n"
        "import moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_batch\n"
        "print(sorted(m for m in ('moto.batch', 'moto.batch.models', 'moto.ec2.models') if m in sys.modules))\n"
    )
    assert loaded == "[]"


def test_moto_batch_imported_later_is_whole_and_shares_the_engines_modules() -> None:
    shared = _run(
        "import sys\n"
        "from stepml.embedded.moto_imports import load_batch_utils\n"
        "load_batch_utils()\n"
        "from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_batch\n"
        "import boto3\n"
        "from moto import mock_aws\n"
        "from moto.batch import batch_backends, models\n"
        "with mock_aws():\n"
        "    queues = boto3.client('batch', region_name='us-east-1').describe_job_queues()['jobQueues']\n"
        "print(queues == [], models.JobStatus is state_task_service_batch.JobStatus,\n"
        "      sys.modules['moto.batch.utils'].JobStatus is models.JobStatus)\n"
    )
    assert shared == "True True True"


def test_loading_twice_or_after_moto_batch_changes_nothing() -> None:
    same = _run(
        "import sys\n"
        "import moto.batch\n"
        "before = sys.modules['moto.batch.utils']\n"
        "from stepml.embedded.moto_imports import load_batch_utils\n"
        "load_batch_utils(); load_batch_utils()\n"
        "print(sys.modules['moto.batch.utils'] is before)\n"
    )
    assert same == "True"
