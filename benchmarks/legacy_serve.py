"""The server ``stepml serve`` had before gunicorn (the standard library's ThreadingHTTPServer: a thread per
connection, no cap, no timeout), kept for ``benchmarks/inference.py`` alone, to measure the new server
against it in one run. Not a user command: ``python -m benchmarks.legacy_serve --port P [--workers N]``
(several workers share the port with SO_REUSEPORT, as ``stepml serve --workers`` did).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from stepml.serve import LocalApi, proxy_event
from stepml.serve_http import Invoke, http_response


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _LegacyServer

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        event = proxy_event(self.command, self.path, list(self.headers.items()), body, self.client_address[0])
        status, headers, data = http_response(self.server.invoke(event))
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _LegacyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, port: int, invoke: Invoke) -> None:
        self.invoke = invoke
        super().__init__(("127.0.0.1", port), _RequestHandler)

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.legacy_serve")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-sample-rate", type=float)
    args = parser.parse_args(argv)
    api = LocalApi(log_sample_rate=args.log_sample_rate)
    api.prepare()
    children: list[int] = []
    for _ in range(args.workers - 1):
        pid = os.fork()
        if pid == 0:
            children = []
            break
        children.append(pid)
    server = _LegacyServer(args.port, api.invoker())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"legacy server on 127.0.0.1:{args.port}", flush=True)
    stop.wait()
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    server.shutdown()
    from pipeline_core.aws.prediction_log import close_background_writers

    close_background_writers(5.0)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
