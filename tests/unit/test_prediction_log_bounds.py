"""The prediction log's background writer is bounded: a table slower than the requests drops and counts
items instead of growing without end, and a stopping process gives the backlog a deadline, not forever."""

from __future__ import annotations

import threading
import time
from typing import Any

from pipeline_core.aws import prediction_log
from pipeline_core.aws.prediction_log import MAX_QUEUED, PredictionLog, PredictionRecord, close_background_writers


class StuckTable:
    """A DynamoDB client whose BatchWriteItem does not answer until released (a table far slower than the
    requests, or a local AWS that is gone)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def batch_write_item(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        self.release.wait(30)
        return {}


def record(number: int) -> PredictionRecord:
    return PredictionRecord(f"r-{number}", "iris", 1, 1.0, 0.5, 1, "0" * 64, rows=[{"x": number}])


def test_a_full_queue_drops_and_counts_and_a_close_gives_the_backlog_a_deadline() -> None:
    table = StuckTable()
    log = PredictionLog("log", dynamodb_client=table, mode="background")
    try:
        # a full queue never fails the request: the drop is counted, not returned
        assert all(log.record(record(n)) is None for n in range(MAX_QUEUED + 500))
        writer = log._writer
        assert writer is not None
        refused = writer.dropped
        # the writer holds one batch in its stuck call; the queue holds at most MAX_QUEUED more
        assert 500 - prediction_log.BATCH_SIZE <= refused <= 500
        # reported once, with the count: not a warning per dropped item (a log line per request when the
        # server is overloaded); more drops soon after wait for the next report
        reports = log.take_failures()
        assert len(reports) == 1 and f"{refused} prediction log item(s) dropped" in reports[0]
        log.record(record(-2))
        assert log.take_failures() == []
        refused += 1

        started = time.monotonic()
        given_up = close_background_writers(0.5)
        assert time.monotonic() - started < 10  # a deadline, not the backlog's length (no timing goal here)
        # every item is written (the stuck batch counts as written), refused, or given up, and counted once
        assert given_up + refused + table.calls * prediction_log.BATCH_SIZE == MAX_QUEUED + 501
        assert writer.dropped == refused + given_up
        assert log.record(record(-1)) is not None  # a closed writer takes nothing more
        assert close_background_writers(0.5) == 0  # nothing is counted twice
    finally:
        table.release.set()
