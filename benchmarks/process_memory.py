"""How much memory a process tree uses while it runs (benchmarks/scale.py): the peak of the sum of PSS over a
command's processes, including the ones it starts in the background, sampled from /proc (Linux); and one
process's own peak RSS from ``wait4``."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path

SAMPLE_SECONDS = 0.5  # RSS of the run's processes
MEMBERS_SECONDS = 2.0  # which processes are the run's: looked up this often
PSS_GROWTH = 1.03  # a new high: 3 % over the RSS sum at the last PSS read
PSS_SECONDS = 5.0  # PSS at least this often, and whenever RSS reaches a new high
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _pss_kib(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:  # gone, or not ours
        return None
    match = re.search(r"^Pss:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _rss_kib(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
    except (OSError, IndexError, ValueError):
        return 0


def _role(pid: int, root: int) -> str:
    """Which part of a stepml run a process is, from its command line."""
    if pid == root:
        return "cli"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    if "runpy" in command or "train.py" in command:
        return "training"
    if "--background-child" in command:
        return "local_aws"
    if "forkserver" in command:
        return "function_workers"
    return "other"


class TreeSampler(threading.Thread):
    """Samples, every ``SAMPLE_SECONDS``, the memory of ``root``, its descendants and every process started with
    ``marker`` in its environment (``STEPML_STATE_DIR=<this run's state dir>``); keeps the peak of the sum and
    of each role's sum. PSS splits shared pages between the processes sharing them, so the sum counts the
    forkserver's pre-imported libraries once, not once per worker as RSS would."""

    def __init__(self, root: int, marker: str) -> None:
        super().__init__(daemon=True)
        self.root, self.marker = root, marker.encode()
        self.stopped = threading.Event()
        self.peak_kib = 0
        self.role_peaks_kib: dict[str, int] = {}
        self.processes_seen: set[int] = set()
        self._marked: dict[int, bool] = {}
        self._rss_high, self._pss_at = 0, 0.0
        self._members_cache: set[int] = set()
        self._members_at = -MEMBERS_SECONDS
        self.cpu_seconds = 0.0
        self.pss_samples = 0

    def _members(self) -> set[int]:
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:  # the field after "(comm)" is the state, then the parent's pid
                    parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
        members = {self.root} if self.root in parents else set()
        for pid in parents:
            if pid not in self._marked:
                try:
                    self._marked[pid] = self.marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    self._marked[pid] = False
            if self._marked[pid]:
                members.add(pid)
        grew = True
        while grew:  # descendants of what is in
            grown = {pid for pid, parent in parents.items() if parent in members} - members
            members |= grown
            grew = bool(grown)
        return members

    def sample(self, force: bool = False) -> None:
        """Reading PSS walks each process's page tables (~0.1 s of CPU for a run's ~25 processes), RSS costs
        next to nothing: PSS is read when the members' RSS sum grows ``PSS_GROWTH`` over its value at the last
        read, and every ``PSS_SECONDS``."""
        if force or time.monotonic() - self._members_at >= MEMBERS_SECONDS:  # scanning /proc costs ~10 ms
            self._members_cache, self._members_at = self._members(), time.monotonic()
        members = self._members_cache
        rss = sum(_rss_kib(pid) for pid in members)
        due = time.monotonic() - self._pss_at >= PSS_SECONDS
        if not (force or due or rss > self._rss_high * PSS_GROWTH):
            return
        self._rss_high = rss
        self._pss_at = time.monotonic()
        self.pss_samples += 1
        total, roles = 0, dict[str, int]()
        for pid in members:
            pss = _pss_kib(pid)
            if pss is None:
                continue
            self.processes_seen.add(pid)
            total += pss
            role = _role(pid, self.root)
            roles[role] = roles.get(role, 0) + pss
        self.peak_kib = max(self.peak_kib, total)
        for role, kib in roles.items():
            self.role_peaks_kib[role] = max(self.role_peaks_kib.get(role, 0), kib)

    def run(self) -> None:
        started = time.thread_time()
        while not self.stopped.wait(SAMPLE_SECONDS):
            self.sample()
        self.cpu_seconds = time.thread_time() - started

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        self.sample(force=True)  # what is left (the local AWS) once the CLI has ended


def wait_with_peak(process: subprocess.Popen[bytes], timeout: float) -> tuple[int | None, int]:
    """Wait for ``process`` (killing it after ``timeout`` s); its exit status (None if killed on time-out)
    and its own peak RSS in KiB, from ``wait4``."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage.ru_maxrss
        if time.monotonic() > deadline:
            process.kill()
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            return None, usage.ru_maxrss
        time.sleep(0.1)
