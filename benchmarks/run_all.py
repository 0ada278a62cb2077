"""Run every benchmark (``make bench``)."""

from __future__ import annotations

import sys

from benchmarks import e2e


def main() -> int:
    print("== end-to-end run on the embedded target ==")
    return e2e.main([])


if __name__ == "__main__":
    sys.exit(main())
