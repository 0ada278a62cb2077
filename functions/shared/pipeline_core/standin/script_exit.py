"""How the stand-in's training script ended: its exit status and peak memory, and why a signal ended it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# SageMaker's FailureReason for a job whose algorithm ran out of memory (its process killed by the kernel's
# out-of-memory killer: SIGKILL, exit code 137 in the container), as AWS reports it. The stand-in differs: it
# adds the signal, the process's peak memory and what to do on each target (AWS gives the sentence alone, and
# the algorithm's log in CloudWatch).
SAGEMAKER_OUT_OF_MEMORY = (
    "ClientError: Please use an instance type with more memory, or reduce the size of job data processed on an "
    "instance."
)


def wait_with_peak(
    process: subprocess.Popen[bytes], timeout: float, should_stop: Callable[[], bool] | None = None
) -> tuple[int, int | None]:
    """Wait for ``process`` (TimeoutExpired after ``timeout``, or as soon as ``should_stop`` says True): its
    exit status and its peak resident memory in bytes (None where unknown: not Linux).

    The kernel's count for the reaped process (``wait4``'s ``ru_maxrss``) is exact, and known for a process the
    out-of-memory killer ended, but at ``exec`` it also takes the peak of the memory the process was forked
    from (this one's). So it is the peak only when it exceeds this process's own peak; otherwise the peak is
    the highest of the process's ``VmHWM`` read while it ran (every poll, as ``Popen.wait`` polls).
    """
    if sys.platform != "linux":  # should_stop is not asked there (the stand-in runs its jobs detached on Linux)
        return process.wait(timeout=timeout), None
    deadline, delay, sampled = time.monotonic() + timeout, 0.001, 0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
            counted = usage.ru_maxrss * 1024
            return process.returncode, (counted if counted > _status_bytes("self", "VmHWM") else sampled) or None
        sampled = max(sampled, _status_bytes(process.pid, "VmHWM"))
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (should_stop is not None and should_stop()):
            raise subprocess.TimeoutExpired(process.args, timeout)
        delay = min(delay * 2, remaining, 0.05)
        time.sleep(delay)


def _status_bytes(pid: int | str, field: str) -> int:
    """A ``/proc/<pid>/status`` memory figure in bytes (0 where /proc does not say)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) * 1024 for line in lines if line.startswith(field + ":")), 0)


def signal_reason(program: str, signum: int, peak_bytes: int | None, instance_type: str | None) -> str:
    """Why a training process a signal ended failed, and for SIGKILL what to do: nothing in the process sends
    SIGKILL to itself (the stand-in's own time limit is reported apart), so it is most likely the kernel's
    out-of-memory killer, which gives the process no chance to say anything."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = "unknown"
    peak = f" (peak resident memory {peak_bytes / (1 << 20):,.0f} MiB)" if peak_bytes else ""
    killed = f"{program} was killed by signal {signum} ({name}){peak}"
    if signum != signal.SIGKILL:
        return killed
    instance = f" than {instance_type}" if instance_type else ""
    return (
        f"{SAGEMAKER_OUT_OF_MEMORY} {killed}, most likely by the kernel's out-of-memory killer. On AWS, deploy with "
        f"a larger TrainingInstanceType{instance} (docs/data-scale.md gives one per dataset size); on the embedded "
        "target, free memory on this machine or train on a sample of the data"
    )
