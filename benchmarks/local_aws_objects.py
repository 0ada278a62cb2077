"""The local AWS with a large object: its memory, /tmp and state directory after each kind of write, and a restart.

Starts a real local AWS (``stepml local up --background``) on a fresh state directory, puts a generated object
(PutObject from a file), reads it, copies it, uploads it again as a multipart upload, then restarts the
service and reads each object back. Prints, after each step, the service process's resident and peak
resident memory (VmRSS, VmHWM from /proc), how much the peak grew during the step (VmHWM reset through
``/proc/<pid>/clear_refs`` before it), the bytes of deleted /tmp files it holds open (moto's spilled
buffers), the state directory's size and the CPU seconds the process spent in the step (user + system, from
/proc/<pid>/stat); and whether every read was byte-identical.
Usage: ``python -m benchmarks.local_aws_objects [--mib 200] [--state-dir DIR] [--json]`` (Linux: reads /proc).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig

from stepml.embedded.lambda_memory import status_kb

MIB = 1 << 20


class LocalAwsProcess:
    """A local AWS serving ``state_dir``, seen from outside: its S3 client, and its process from /proc."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.env = {**os.environ, "STEPML_STATE_DIR": str(state_dir), "STEPML_LOCAL_PRESTART": "0"}
        self.env.pop("AWS_ENDPOINT_URL", None)

    def info(self) -> dict[str, Any]:
        return dict(json.loads((self.state_dir / "local.json").read_text()))

    def s3(self) -> Any:
        return self.client("s3")

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.info()["endpoint_url"],
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def memory(self) -> tuple[int, int]:
        """The process's resident and peak resident memory (VmRSS, VmHWM), in bytes."""
        pid = self.info()["pid"]
        return status_kb(pid, "VmRSS") * 1024, status_kb(pid, "VmHWM") * 1024

    def cpu_seconds(self) -> float:
        """The process's CPU time so far (user + system), in seconds."""
        fields = Path(f"/proc/{self.info()['pid']}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def reset_peak(self) -> int:
        """Reset the process's peak resident memory (VmHWM) to its resident memory now (Linux's ``clear_refs``:
        writing 5 is allowed to the process's owner); the resident bytes it was reset to."""
        pid = self.info()["pid"]
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return status_kb(pid, "VmRSS") * 1024

    def temporary_bytes(self) -> int:
        """Bytes of the deleted files under /tmp the process holds open (moto's spilled object buffers)."""
        held = 0
        for fd in Path(f"/proc/{self.info()['pid']}/fd").iterdir():
            try:
                target = os.readlink(fd)
                if target.startswith(("/tmp/", "/var/tmp/")) and target.endswith("(deleted)"):
                    held += os.stat(fd).st_size
            except OSError:
                continue
        return held


class Service(LocalAwsProcess):
    def cli(self, *args: str) -> float:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "stepml.cli", *args], env=self.env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"stepml {' '.join(args)} failed:\n{done.stderr[-2000:]}")
        return time.monotonic() - started

    cpu_mark = 0.0

    def reset_peak(self) -> int:
        self.cpu_mark = self.cpu_seconds()
        return super().reset_peak()

    def sample(self, step: str, before: int = 0) -> dict[str, Any]:
        """The figures after ``step``; ``before``: the resident bytes the peak was reset to when it began."""
        resident, peak = self.memory()
        cpu = self.cpu_seconds()
        state = sum(p.stat().st_size for p in self.state_dir.rglob("*") if p.is_file())
        return {
            "step": step,
            "rss_mib": resident // MIB,
            "peak_rss_mib": peak // MIB,
            "step_peak_growth_mib": (peak - before) // MIB if before else None,
            "tmp_held_mib": self.temporary_bytes() // MIB,
            "state_dir_mib": state // MIB,
            "step_cpu_s": round(cpu - self.cpu_mark, 2) if before else None,
        }


def _generate(path: Path, mib: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        for block in range(mib):
            data = hashlib.sha512(str(block).encode()).digest() * (MIB // 64)
            digest.update(data)
            handle.write(data)
    return digest.hexdigest()


def _sha256(s3: Any, bucket: str, key: str) -> str:
    digest = hashlib.sha256()
    for chunk in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(MIB):
        digest.update(chunk)
    return digest.hexdigest()


def measure(mib: int, state_dir: Path, scratch: Path) -> dict[str, Any]:
    source = scratch / "large.bin"
    expected = _generate(source, mib)
    service = Service(state_dir)
    samples, identical = [], {}
    start_s = service.cli("local", "up", "--background")
    samples.append(service.sample("started"))
    s3 = service.s3()
    bucket = next(b["Name"] for b in s3.list_buckets()["Buckets"] if "databucket" in b["Name"])
    try:
        before = service.reset_peak()
        with open(source, "rb") as body:
            s3.put_object(Bucket=bucket, Key="large/put.bin", Body=body)
        samples.append(service.sample("PutObject", before))
        before = service.reset_peak()
        identical["get"] = _sha256(s3, bucket, "large/put.bin") == expected
        samples.append(service.sample("GetObject", before))
        before = service.reset_peak()
        ranged = s3.get_object(Bucket=bucket, Key="large/put.bin", Range=f"bytes={MIB}-")["Body"].read()
        identical["get with a range"] = ranged == source.read_bytes()[MIB:]
        del ranged
        samples.append(service.sample("GetObject, Range from 1 MiB", before))
        before = service.reset_peak()
        s3.copy_object(Bucket=bucket, Key="large/copy.bin", CopySource={"Bucket": bucket, "Key": "large/put.bin"})
        samples.append(service.sample("CopyObject", before))
        before = service.reset_peak()
        parts = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=16 * MIB, max_concurrency=2)
        s3.upload_file(str(source), bucket, "large/multipart.bin", Config=parts)
        samples.append(service.sample("multipart upload", before))
        service.cli("local", "down")
        restart_s = service.cli("local", "up", "--background")
        samples.append(service.sample("restarted"))
        s3 = service.s3()
        before = service.reset_peak()
        for key in ("large/put.bin", "large/copy.bin", "large/multipart.bin"):
            identical[f"{key} after restart"] = _sha256(s3, bucket, key) == expected
        samples.append(service.sample("GetObject of each after restart", before))
    finally:
        subprocess.run(
            [sys.executable, "-m", "stepml.cli", "local", "down"], env=service.env, capture_output=True, check=False
        )
    return {"mib": mib, "start_s": start_s, "restart_s": restart_s, "samples": samples, "identical": identical}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=200, help="the object's size in MiB (default 200)")
    parser.add_argument("--state-dir", type=Path, help="a fresh state directory (default: a temporary one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="local-aws-objects-") as scratch:
        state_dir = args.state_dir or Path(scratch) / "state"
        result = measure(args.mib, state_dir, Path(scratch))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['mib']} MiB object; start {result['start_s']:.1f} s, restart {result['restart_s']:.1f} s")
    print(f"{'after':34} {'RSS':>7} {'peak':>7} {'+step':>7} {'/tmp':>7} {'state':>7}  (MiB) {'CPU s':>6}")
    for sample in result["samples"]:
        growth = sample["step_peak_growth_mib"]
        print(
            f"{sample['step']:34} {sample['rss_mib']:7} {sample['peak_rss_mib']:7} "
            f"{'' if growth is None else growth:>7} {sample['tmp_held_mib']:7} {sample['state_dir_mib']:7}"
            f"       {'' if sample['step_cpu_s'] is None else sample['step_cpu_s']:>6}"
        )
    print("byte-identical:", ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in result["identical"].items()))
    return 0 if all(result["identical"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
