"""How much one run keeps in the data bucket: one real run on iris and one on diabetes (embedded target).

Prints, per run, each prefix its records attribute to it (``stepml.artifacts.run_footprint``: what
``stepml.gc`` would delete, plus the stand-in's records) with keys, stored versions (of those keys) and
bytes, the current objects under each, and what the bucket holds besides (shared by all runs).
Usage: ``python -m benchmarks.footprint [--json]``.
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from stepml.artifacts import run_footprint
from tests.integration.harness import REPO, Job, embedded_harness

DATASETS = {
    "footprint-iris": ("iris.csv", {"model_name": "iris"}),
    "footprint-diabetes": ("diabetes.csv", {"model_name": "diabetes", "target": "target"}),
}


def measure() -> dict[str, Any]:
    """Run each dataset once and return every run's footprint and the bucket's other objects."""
    with contextmanager(embedded_harness)() as h:
        result: dict[str, Any] = {}
        for name, (file, extra) in DATASETS.items():
            uri = h.upload(f"datasets/{name}/{file}", (REPO / "data" / file).read_bytes())
            finished = h.run(Job(name, {"dataset": uri, **extra}))
            assert finished.status == "SUCCEEDED", finished.describe()
            result[name] = [asdict(u) for u in run_footprint(h.aws, name)]
            for usage in result[name]:
                usage["objects"] = {
                    k: h.s3.head_object(Bucket=h.bucket, Key=k)["ContentLength"] for k in h.keys(usage["prefix"])
                }
        claimed = {k for usages in result.values() for u in usages for k in h.keys(u["prefix"])}
        shared = sorted(set(h.keys("")) - claimed)
        sizes = {k: h.s3.head_object(Bucket=h.bucket, Key=k)["ContentLength"] for k in shared}
        result["not per run"] = [{"prefix": k, "keys": 1, "versions": 1, "bytes": sizes[k]} for k in shared]
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    figures = measure()
    if parser.parse_args().json:
        print(json.dumps(figures, indent=1))
        return
    for run, usages in figures.items():
        total = sum(u["bytes"] for u in usages)
        print(f"{run}: {sum(u['keys'] for u in usages)} keys, {total} bytes ({total / 1024:.1f} KiB)")
        for u in usages:
            print(f"  {u['prefix']:<56} {u['keys']:>3} keys {u['versions']:>3} versions {u['bytes']:>9} bytes")
            for key, size in u.get("objects", {}).items() if u["keys"] > 1 else ():
                print(f"    {key.removeprefix(u['prefix']):<54} {size:>35} bytes")


if __name__ == "__main__":  # the embedded runtime's workers come from a forkserver: guard the entry point
    main()
