"""Run every benchmark (``make bench``)."""

from __future__ import annotations

import sys

from benchmarks import batch_scoring, e2e, inference, warm_run


def main() -> int:
    print("== end-to-end run on the embedded target ==")
    status = e2e.main([])
    print("\n== warm `stepml run` against a plain scikit-learn script ==")
    status = warm_run.main([]) or status
    print("\n== inference: handler in-process and HTTP ==")
    status = inference.main([]) or status
    print("\n== batch scoring: stepml predict on 100,000 rows ==")
    return batch_scoring.main([]) or status


if __name__ == "__main__":
    sys.exit(main())
