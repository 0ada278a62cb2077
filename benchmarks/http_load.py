"""Load for an HTTP server on loopback: client processes on raw keep-alive sockets, timing every request.

Used by ``benchmarks/inference.py``. The clients share the machine's cores with the server they measure, so
they are processes (not threads held back by one GIL) and cost as little CPU per request as a request can:
raw sockets and a request built once (see ``_client``).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import statistics
import time
from typing import Any


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        raise SystemExit("no request completed: is the server up? (see serve-*.out in the state directory)")
    return {
        "p50_ms": round(percentile(seconds, 0.50) * 1000, 3),
        "p99_ms": round(percentile(seconds, 0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(seconds) * 1000, 3),
    }


def load_1m() -> float:
    """The 1-minute load average: the machine is shared, so every figure says how busy it was."""
    return round(os.getloadavg()[0], 2)


def request_bytes(port: int, payload: bytes) -> bytes:
    """One POST /predict, as bytes on the wire (built once: every request of a run is the same)."""
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def read_response(connection: socket.socket, pending: bytes) -> tuple[int, bytes]:
    """(status, the bytes after this response) of the next response on a keep-alive connection: the head,
    then ``Content-Length`` bytes of body (the server sends no chunked responses)."""
    while (end := pending.find(b"\r\n\r\n")) < 0:
        pending += _received(connection)
    head = pending[:end].decode("latin-1").split("\r\n")
    fields = (line.partition(":") for line in head[1:])
    length = next((int(value) for name, _, value in fields if name.strip().lower() == "content-length"), 0)
    total = end + 4 + length
    while len(pending) < total:
        pending += _received(connection)
    return int(head[0].split()[1]), pending[total:]


def _received(connection: socket.socket) -> bytes:
    data = connection.recv(65536)
    if not data:
        raise ConnectionError("the server closed the connection")
    return data


def _client(
    port: int, payload: bytes, connections: int, duration: float, max_requests: int, ready: Any, go: Any, out: Any
) -> None:
    """``connections`` keep-alive connections: a request sent on each, then each answer read, in turn.

    Raw sockets and a request built once, not http.client: the client shares the machine's cores with the
    server, and http.client's own work per request (building the request, parsing headers into a message
    object) cost more CPU than gunicorn's (against a trivial WSGI app, 2 cores: ~950 req/s with http.client,
    ~2,100-3,100 with this client, side by side at load 12).
    """
    opened = [socket.create_connection(("127.0.0.1", port), timeout=120) for _ in range(connections)]
    for connection in opened:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = request_bytes(port, payload)
    pending = [b""] * connections
    ready.put(True)
    # Every client starts when all are connected: a process takes a second or more to start on a busy
    # machine, and a deadline set before the start-up could pass before a client sent anything.
    go.wait()
    latencies: list[float] = []
    errors = 0
    first = time.perf_counter()
    deadline = first + duration
    while time.perf_counter() < deadline and len(latencies) < max_requests:
        started = []
        for connection in opened:
            started.append(time.perf_counter())
            connection.sendall(request)
        for index, (connection, at) in enumerate(zip(opened, started, strict=True)):
            status, pending[index] = read_response(connection, pending[index])
            latencies.append(time.perf_counter() - at)
            errors += status != 200
    for connection in opened:
        connection.close()
    out.put((latencies, errors, first, time.perf_counter()))


# Client processes at most: past this, each process holds several connections (200 processes would load
# the 2 cores the server needs more than the connections do).
MAX_CLIENT_PROCESSES = 8


def python_load(port: int, payload: bytes, concurrency: int, duration: float, max_requests: int) -> dict[str, Any]:
    """Client processes (not threads: the GIL would make the client the bottleneck), ``concurrency``
    keep-alive connections in all."""
    context = multiprocessing.get_context("spawn")
    queue, ready, go = context.Queue(), context.Queue(), context.Event()
    count = min(concurrency, MAX_CLIENT_PROCESSES)
    shares = [concurrency // count + (index < concurrency % count) for index in range(count)]
    processes = [
        context.Process(target=_client, args=(port, payload, share, duration, max_requests // count, ready, go, queue))
        for share in shares
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=120)
    go.set()
    outcomes = [queue.get(timeout=duration + 180) for _ in processes]
    for process in processes:
        process.join()
    latencies = [value for values, *_ in outcomes for value in values]
    return {
        "tool": "python",
        "requests": len(latencies),
        "errors": sum(errors for _, errors, _, _ in outcomes),
        # each client's own rate, summed: not biased by clients starting or stopping at different times
        "rps": round(sum(len(values) / (end - first) for values, _, first, end in outcomes if end > first), 1),
        **summary_ms(latencies),
        "load_1m": load_1m(),
    }
