"""How long provisioning the template's functions, log groups, alarms, dashboard and rules takes.

Serves moto over HTTP in this process, as the embedded target does, and times
:func:`stepml.embedded.stack_resources.provision_stack_resources` in a fresh process (moto's services cold: the
first call to each builds it, as on every start of the local AWS) and again after a reset (warm), with the
process CPU time beside the wall time (on a busy machine the wall time mostly measures the others).
Usage: ``python -m benchmarks.stack_resources [--runs 3]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_process() -> dict[str, float]:
    """Run in a child: one cold and one warm provisioning; print the figures as JSON."""
    import logging
    import socket
    import urllib.request

    import boto3
    from moto.server import ThreadedMotoServer

    from stepml.embedded.stack_resources import provision_stack_resources

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    session = boto3.session.Session()
    clients: dict[str, object] = {}

    def client(service: str) -> object:
        if service not in clients:
            clients[service] = session.client(
                service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
            )
        return clients[service]

    figures: dict[str, float] = {}
    started = time.perf_counter()
    for service in ("logs", "iam", "lambda", "cloudwatch", "events"):
        client(service)
    figures["clients_s"] = time.perf_counter() - started
    for label in ("cold", "warm"):
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST")).close()
        wall, cpu = time.perf_counter(), time.process_time()
        provision_stack_resources(client, REPO / "infra" / "template.yaml", "stepml-local", {"Target": "local"})
        figures[f"{label}_s"] = time.perf_counter() - wall
        figures[f"{label}_cpu_s"] = time.process_time() - cpu
    server.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_process()))
        return
    for run in range(args.runs):
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.stack_resources", "--child"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        f = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"run {run + 1}: cold {f['cold_s'] * 1000:.0f} ms (CPU {f['cold_cpu_s'] * 1000:.0f} ms), "
            f"warm {f['warm_s'] * 1000:.0f} ms (CPU {f['warm_cpu_s'] * 1000:.0f} ms); "
            f"5 clients from one session {f['clients_s'] * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
