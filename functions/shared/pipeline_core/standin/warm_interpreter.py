"""A training container kept warm: a Python that has imported the image's libraries, waiting for one script.

SageMaker starts a container per training job, and its Python imports pandas and scikit-learn before
train.py's first line does anything (1-4 s on 2 cores, more than iris takes to train). On the local targets
the stand-in keeps one such interpreter started ahead per Python executable: a job takes it and hands it the
script, its arguments, working directory and environment; the process then runs the script as
``python script args`` would (as ``__main__``, with ``sys.argv``, the script's folder first on ``sys.path``,
its environment in place of the one it started with, stdout and stderr to the job's files) and exits with the
script's status. One process per job, as one container per job; the next one starts when a job ends, so a
warm stand-in (the local AWS keeps its workers) trains every job after its first without the imports.

``STANDIN_WARM_TRAINING=0`` turns it off (every job then starts a fresh interpreter). The libraries are
imported before the job's environment is applied: a library that reads an environment variable at import
time sees the stand-in's (neither the pipeline nor SageMaker's contract sets such a variable).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

# What train.py and the common trainers import; a module an interpreter lacks is skipped.
PRELOAD = ("numpy", "pandas", "sklearn.ensemble", "sklearn.model_selection", "sklearn.metrics", "joblib")

# Runs in the waiting interpreter; plain enough for the SageMaker image's Python 3.9.
_BOOT = r"""
import importlib, json, os, runpy, sys
for _name in sys.argv[1:]:
    try:
        importlib.import_module(_name)
    except Exception:
        pass
sys.stdout.write("ready\n")
sys.stdout.flush()
_job = json.loads(sys.stdin.readline() or "null")
if _job is None:
    sys.exit(0)
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
for _fd, _path in ((1, _job["stdout"]), (2, _job["stderr"])):
    _out = os.open(_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(_out, _fd)
    os.close(_out)
os.chdir(_job["cwd"])
os.environ.clear()
os.environ.update(_job["env"])
sys.argv = list(_job["argv"])
sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
del _name, _job, _null, _fd, _path, _out
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def enabled(env: Mapping[str, str]) -> bool:
    return env.get("STANDIN_WARM_TRAINING", "1") not in {"0", "false", "no"}


def script_boot(python: str) -> list[str]:
    """The command of an interpreter that imports :data:`PRELOAD`, says "ready" and runs one script."""
    return [python, "-c", _BOOT, *PRELOAD]


class WarmInterpreters:
    """One waiting interpreter per Python executable; :meth:`start_job` takes it (or starts a cold one).

    ``boot`` gives the command of a waiting process for a Python executable: by default one that runs a
    training script; ``training_runner`` keeps processes that run a whole training job the same way.
    """

    def __init__(self, boot: Callable[[str], list[str]] = script_boot) -> None:
        self._boot = boot
        self._waiting: dict[str, subprocess.Popen[bytes]] = {}
        self._ready: set[int] = set()  # pids of waiting interpreters that said "ready"
        self._lock = threading.Lock()

    def _spawn(self, python: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self._boot(python),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(env),
            # Its own session, so a timeout kills whatever the script started too (joblib workers).
            start_new_session=os.name == "posix",
        )

    def prepare(self, python: str, env: Mapping[str, str]) -> None:
        """Have an interpreter for ``python`` importing now, for the next job."""
        with self._lock:
            waiting = self._waiting.get(python)
            if waiting is None or waiting.poll() is not None:
                self._waiting[python] = self._spawn(python, env)

    def start_job(
        self, command: list[str], cwd: Path, env: Mapping[str, str], stdout: Path, stderr: Path
    ) -> subprocess.Popen[bytes] | None:
        """Run ``command`` (``[python, script, *args]``) in the interpreter waiting for ``python``; None when
        none waits (the caller starts the script itself: a cold job must not pay for imports it may not use)."""
        python, *argv = command
        job = {"argv": argv, "cwd": str(cwd), "env": dict(env), "stdout": str(stdout), "stderr": str(stderr)}
        return self.hand(python, job)

    def hand(self, python: str, job: Mapping[str, object]) -> subprocess.Popen[bytes] | None:
        """Give ``job`` (one JSON line) to the interpreter waiting for ``python``; None when none waits ready."""
        with self._lock:
            # Only one that has finished its imports: a job's time limit must not pay for them.
            if not self._is_ready(python):
                return None
            process = self._waiting.pop(python)
        assert process.stdin is not None
        process.stdin.write(json.dumps(job).encode() + b"\n")
        process.stdin.close()
        return process

    def is_ready(self, python: str) -> bool:
        """Whether an interpreter for ``python`` waits with its imports done."""
        with self._lock:
            return self._is_ready(python)

    def _is_ready(self, python: str) -> bool:
        process = self._waiting.get(python)
        if process is None or process.poll() is not None:
            return False
        if process.pid not in self._ready:
            assert process.stdout is not None
            readable, _, _ = select.select([process.stdout], [], [], 0)
            if readable and process.stdout.readline() == b"ready\n":
                self._ready.add(process.pid)
        return process.pid in self._ready

    def close(self) -> None:
        with self._lock:
            waiting, self._waiting = list(self._waiting.values()), {}
        for process in waiting:
            process.kill()
            process.wait()


interpreters = WarmInterpreters()
