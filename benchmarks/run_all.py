"""Run every benchmark (``make bench``)."""

from __future__ import annotations

import sys

from benchmarks import e2e, inference


def main() -> int:
    print("== end-to-end run on the embedded target ==")
    status = e2e.main([])
    print("\n== inference: handler in-process and HTTP ==")
    return status or inference.main([])


if __name__ == "__main__":
    sys.exit(main())
