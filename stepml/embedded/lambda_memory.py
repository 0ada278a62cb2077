"""Lambda's memory limit on the embedded target: a function's worker over its MemorySize is killed.

See the comment above MEMORY_POLL_SECONDS for how, why so, and where it differs from AWS.
"""

from __future__ import annotations

import os
from pathlib import Path

from stepml.errors import CliError


def status_kb(pid: int | None, field_name: str) -> int:
    """A ``/proc/<pid>/status`` figure in kB (0 where /proc does not say: the process is gone, not Linux)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith(field_name + ":")), 0)


def peak_memory_mb(pid: int | None) -> int:
    """A live worker's peak memory, read before it is killed (0 where /proc does not say)."""
    return status_kb(pid, "VmHWM") // 1024


# How Lambda's memory limit is kept here. Lambda runs each execution environment in a cgroup with the
# function's MemorySize as its hard limit; a handler that goes over it is killed at once and the invocation
# fails with Runtime.OutOfMemory. The embedded target polls the worker's resident set (VmRSS in
# /proc/<pid>/status) every MEMORY_POLL_SECONDS while it runs and kills it once it is over MemorySize:
# - not RLIMIT_AS: it limits address space, not memory, and numpy/BLAS, glibc's per-thread arenas and
#   pyarrow's allocator reserve far more virtual memory than they touch (a worker that has only imported
#   the preloaded libraries already maps ~470 MB), so it would fail small functions that Lambda runs fine,
#   and it fails with MemoryError inside the handler instead of a kill;
# - not a cgroup: cgroup v2 delegation is rarely writable for an unprivileged user or inside a container
#   (it is not on the development and CI machines), and a worker's children would be charged too, while
#   the SageMaker stand-ins run training in a child process whose memory is SageMaker's, not Lambda's;
# - RSS is also what REPORT's Max Memory Used is read from (ru_maxrss / VmHWM), so the limit and the
#   figure a user sees are one measure.
# Differences from AWS (docs/data-scale.md): an allocation faster than the polling interval may overshoot
# MemorySize by what it allocates in that interval before the kill, and the preloaded libraries (pandas,
# numpy, boto3, Powertools: ~150 MB resident) count for every function, including ones that would not
# import them on AWS. STEPML_LAMBDA_MEMORY_LIMIT=off turns the limit off for the whole embedded target, for
# measuring what a stage would need (benchmarks/); the REPORT lines still say how much each one used.
MEMORY_POLL_SECONDS = 0.05
MEMORY_LIMIT_SWITCH = "STEPML_LAMBDA_MEMORY_LIMIT"


def memory_limit_enabled(environ: dict[str, str] | None = None) -> bool:
    """Whether the embedded target kills a worker over its function's MemorySize (on unless switched off)."""
    value = (os.environ if environ is None else environ).get(MEMORY_LIMIT_SWITCH, "on").strip().lower()
    if value not in {"on", "off"}:
        raise CliError(f"{MEMORY_LIMIT_SWITCH} must be 'on' or 'off', got {value!r}")
    return value == "on"


def out_of_memory_message(request_id: str, function_name: str, memory_mb: int, used_mb: int) -> str:
    """Lambda's errorMessage for Runtime.OutOfMemory, and what the embedded target adds to it (which
    function, its MemorySize and what to do; on AWS only the first sentence is in the error, the REPORT
    line of the function's log says the rest)."""
    return (
        f"RequestId: {request_id} Error: Runtime exited with error: signal: killed. "
        f"Function {function_name} ran out of memory: it used {used_mb} MB of its MemorySize of {memory_mb} MB "
        "and was killed, as Lambda kills it. Raise the function's MemorySize in infra/template.yaml (for "
        "ValidateData and Preprocess: the DataStageMemorySize parameter), or give it less data: a dataset "
        "over LargeDatasetThresholdBytes takes the large-data path (docs/data-scale.md)."
    )
