"""The embedded target's warm Lambda workers, one pool per function, and their reclaim when idle.

Lambda keeps an execution environment for a while after an invocation and reclaims it when it stays idle
(AWS gives no fixed time). The embedded target keeps the most recently used worker of each function warm
for as long as it runs (the next invocation finds it ready, as a prestarted one) and stops the others once
they have been idle for ``STEPML_LAMBDA_IDLE_SECONDS`` (60 by default): a Distributed Map fans a function
out over as many workers as items run at once, and a 10M-row run's ten map workers held 5.7 GB after the
map had ended (docs/data-scale.md). That one worker is kept for ever is where the embedded target differs.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from stepml.errors import CliError

IDLE_SWITCH = "STEPML_LAMBDA_IDLE_SECONDS"
DEFAULT_IDLE_SECONDS = 60.0


class Stoppable(Protocol):
    """A worker as the pool sees it."""

    def alive(self) -> bool: ...

    def stop(self) -> None: ...


def idle_seconds(environ: dict[str, str] | None = None) -> float:
    """How long a worker beyond one per function may stay idle before it is stopped."""
    value = (os.environ if environ is None else environ).get(IDLE_SWITCH)
    if value is None:
        return DEFAULT_IDLE_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise CliError(f"{IDLE_SWITCH} must be a number of seconds (0 or more), got {value!r}")
    return seconds


W = TypeVar("W", bound=Stoppable)


@dataclass
class _Idle(Generic[W]):
    worker: W
    since: float


class WorkerPools(Generic[W]):
    """Idle workers by function name. ``checkout`` takes the most recently used live one; ``checkin`` gives
    one back; a background thread, started with the first checkin, stops the extra ones idle too long."""

    def __init__(self, names: list[str], idle_for: float) -> None:
        self._idle: dict[str, list[_Idle[W]]] = {name: [] for name in names}
        self._idle_for = idle_for
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reaper: threading.Thread | None = None

    def checkout(self, name: str) -> W | None:
        with self._lock:
            pool = self._idle[name]
            while pool:
                worker = pool.pop().worker
                if worker.alive():
                    return worker
        return None

    def checkin(self, name: str, worker: W) -> bool:
        """Keep ``worker`` idle for the next invocation; False (and nothing kept) once the pools are closed."""
        with self._lock:
            if self._closed.is_set():
                return False
            self._idle[name].append(_Idle(worker, time.monotonic()))
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap_while_open, name="lambda-idle-reaper", daemon=True)
                self._reaper.start()
        return True

    def _reap_while_open(self) -> None:
        # checked a few times per idle period, at most once a second: a worker lives at most ~1.25x that long
        while not self._closed.wait(min(max(self._idle_for / 4, 0.05), 1.0)):
            self.reap(time.monotonic())

    def reap(self, now: float) -> int:
        """Stop each function's idle workers but its most recent one that have been idle ``idle_for`` or more."""
        expired: list[W] = []
        with self._lock:
            for pool in self._idle.values():
                for entry in pool[:-1]:  # a copy; the most recent one (the last) stays warm
                    if now - entry.since >= self._idle_for:
                        pool.remove(entry)
                        expired.append(entry.worker)
        for worker in expired:  # outside the lock: a stop waits for the process to end
            worker.stop()
        return len(expired)

    def close(self) -> list[W]:
        """Close the pools and hand back every idle worker, for the caller to stop."""
        with self._lock:
            self._closed.set()
            workers = [entry.worker for pool in self._idle.values() for entry in pool]
            for pool in self._idle.values():
                pool.clear()
        return workers
