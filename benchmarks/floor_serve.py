"""``stepml serve``'s HTTP servers with a function that does nothing: the floor under the served API's speed.

The same server configuration (granian's, :mod:`stepml.serve_granian`, or gunicorn's,
:mod:`stepml.serve_http`), application and API Gateway proxy events as ``stepml serve``, with the handler
replaced by one that returns a fixed prediction. Whatever the served API does beyond these figures is the
function's (validation, the model, the prediction log). Not a user command:
``python -m benchmarks.floor_serve --port P [--workers N] [--server granian|gunicorn]``, for
``benchmarks/inference.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from stepml.serve_http import GunicornServer, Invoke, listening_socket

ANSWER = {
    "statusCode": 200,
    "multiValueHeaders": {"Content-Type": ["application/json"]},
    "body": json.dumps({"predictions": ["setosa"], "model_version": 1, "model_name": "iris-species"}),
    "isBase64Encoded": False,
}


def fixed_answer(_event: dict[str, Any]) -> dict[str, Any]:
    return ANSWER


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor_serve")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--server", choices=["granian", "gunicorn"], default="gunicorn")
    parser.add_argument("--log-sample-rate", help="accepted for the benchmark's sake; nothing is logged")
    args = parser.parse_args(argv)
    if args.server == "granian":
        from stepml.serve_granian import GranianServer, RsgiApp

        GranianServer(listening_socket(args.port), RsgiApp(fixed_answer), args.workers).run()
        return 0

    def load() -> Invoke:
        return fixed_answer

    server = GunicornServer(listening_socket(args.port), load, args.workers)
    server.ready()
    try:
        server.run()
    except SystemExit as stopped:
        return stopped.code if isinstance(stopped.code, int) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
