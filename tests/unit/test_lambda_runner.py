"""The embedded target's Lambda runner: what Lambda guarantees a handler, kept by the local workers.

Each test writes tiny handler modules into a temporary code directory and runs them through
:class:`LambdaRunner` in real worker processes (no AWS, no moto).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stepml.embedded.lambda_runner import LambdaRunner
from stepml.embedded.template import ACCOUNT_ID, REGION, FunctionSpec
from stepml.errors import CliError

HANDLERS = {
    "env_echo": """
        import os
        def handler(event, context):
            return {name: os.environ.get(name) for name in event["names"]} | {"pid": os.getpid()}
    """,
    "sleepy": """
        import os, time
        def handler(event, context):
            time.sleep(event.get("seconds", 0))
            return {"pid": os.getpid(), "remaining_ms": context.get_remaining_time_in_millis()}
    """,
    "failing": """
        class DataValidationError(Exception):
            pass
        def handler(event, context):
            print("about to fail")
            raise DataValidationError("column 'age' has 'abc' in row 3")
    """,
    "hungry": """
        import time
        def handler(event, context):
            # bytes written, not just reserved, so they are resident as they would be on Lambda
            held = b"x" * (event["mb"] * 1024 * 1024)
            time.sleep(event.get("hold_seconds", 0))
            return {"held_mb": len(held) // (1024 * 1024)}
    """,
    "crashing": """
        import os
        def handler(event, context):
            os._exit(3)
    """,
    "unimportable": """
        import a_module_that_does_not_exist
        def handler(event, context):
            return {}
    """,
    "not_json": """
        import datetime
        def handler(event, context):
            return {"at": datetime.datetime(2026, 1, 1)}
    """,
    "decimals": """
        from decimal import Decimal
        def handler(event, context):
            return {"version": Decimal("3"), "score": Decimal("0.25")}
    """,
}


def _spec(
    code_dir: Path, module: str, env: dict[str, str] | None = None, timeout: int = 30, memory: int = 512
) -> FunctionSpec:
    name = f"test-{module}"
    return FunctionSpec(
        logical_id=module,
        name=name,
        arn=f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}",
        code_dir=code_dir,
        handler=f"{module}.handler",
        timeout_seconds=timeout,
        # a worker starts with ~150 MB resident (the preloaded pandas, numpy, boto3), as a Lambda function
        # importing them would: 128 MB, Lambda's smallest, is too little for it here as there
        memory_mb=memory,
        environment=env or {},
    )


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    for module, source in HANDLERS.items():
        (code / f"{module}.py").write_text(textwrap.dedent(source))
    return code


def _runner(tmp_path: Path, specs: list[FunctionSpec]) -> LambdaRunner:
    return LambdaRunner({s.logical_id: s for s in specs}, {"SHARED": "base"}, tmp_path / "logs")


@pytest.fixture
def runner(tmp_path: Path, code_dir: Path) -> Iterator[LambdaRunner]:
    specs = [
        _spec(code_dir, "env_echo", {"TABLE_NAME": "runs-a"}),
        _spec(code_dir, "sleepy", timeout=1),
        _spec(code_dir, "hungry", memory=320),
        *(_spec(code_dir, m) for m in ("failing", "crashing", "unimportable", "not_json", "decimals")),
    ]
    runner = _runner(tmp_path, specs)
    yield runner
    runner.close()


def test_each_function_sees_its_own_environment_and_not_the_callers(tmp_path: Path, code_dir: Path) -> None:
    os.environ["STEPML_TEST_LEAK"] = "from the caller"
    try:
        a = _spec(code_dir, "env_echo", {"TABLE_NAME": "runs-a"})
        b = FunctionSpec(
            **{**a.__dict__, "logical_id": "b", "name": "test-b", "arn": a.arn.replace(a.name, "test-b")}
            | {"environment": {"TABLE_NAME": "runs-b"}}
        )
        runner = _runner(tmp_path, [a, b])
        try:
            names = ["TABLE_NAME", "SHARED", "AWS_LAMBDA_FUNCTION_NAME", "AWS_REGION", "STEPML_TEST_LEAK"]
            first = runner.invoke(a.name, {"names": names}).payload
            second = runner.invoke(b.arn, {"names": names}).payload
        finally:
            runner.close()
    finally:
        del os.environ["STEPML_TEST_LEAK"]
    assert (first["TABLE_NAME"], second["TABLE_NAME"]) == ("runs-a", "runs-b")
    assert first["SHARED"] == second["SHARED"] == "base"
    assert (first["AWS_LAMBDA_FUNCTION_NAME"], second["AWS_LAMBDA_FUNCTION_NAME"]) == ("test-env_echo", "test-b")
    assert first["AWS_REGION"] == REGION
    assert first["STEPML_TEST_LEAK"] is None and second["STEPML_TEST_LEAK"] is None
    assert first["pid"] != second["pid"] != os.getpid()


def test_a_warm_worker_is_reused_and_concurrent_invocations_get_their_own(runner: LambdaRunner) -> None:
    first = runner.invoke("test-sleepy", {}).payload["pid"]
    assert runner.invoke("test-sleepy", {}).payload["pid"] == first  # warm: the same execution environment
    with ThreadPoolExecutor(max_workers=3) as pool:
        pids = [r.payload["pid"] for r in pool.map(lambda _: runner.invoke("test-sleepy", {"seconds": 0.3}), range(3))]
    assert len(set(pids)) == 3, "concurrent invocations must never share a process"


def test_a_handler_error_is_reported_with_its_class_name_and_logged(runner: LambdaRunner, tmp_path: Path) -> None:
    result = runner.invoke("test-failing", {})
    assert result.failed and result.error_type == "DataValidationError"
    assert result.payload["errorMessage"] == "column 'age' has 'abc' in row 3"
    assert result.payload["errorType"] == "DataValidationError"
    assert any("raise DataValidationError" in line for line in result.payload["stackTrace"])
    log = (tmp_path / "logs" / "test-failing.log").read_text()
    assert "about to fail" in log and "DataValidationError" in log
    assert not runner.invoke("test-env_echo", {"names": []}).failed  # other functions unaffected


def test_past_its_timeout_the_worker_is_killed_and_a_new_one_serves_next(runner: LambdaRunner) -> None:
    slow = runner.invoke("test-sleepy", {"seconds": 5})
    assert slow.error_type == "Sandbox.Timedout" and "timed out after" in slow.payload["errorMessage"]
    assert slow.duration_ms < 4000
    fine = runner.invoke("test-sleepy", {})
    assert not fine.failed and 0 < fine.payload["remaining_ms"] <= 1000


def test_a_crashed_worker_is_an_exit_error_and_is_replaced(runner: LambdaRunner) -> None:
    crashed = runner.invoke("test-crashing", {})
    assert crashed.error_type == "Runtime.ExitError" and "exit code 3" in crashed.payload["errorMessage"]
    assert runner.invoke("test-crashing", {}).error_type == "Runtime.ExitError"  # a fresh worker, same fate


def test_an_unimportable_handler_fails_every_invocation_as_lambda_does(runner: LambdaRunner) -> None:
    for _ in range(2):
        result = runner.invoke("test-unimportable", {})
        assert result.error_type == "Runtime.ImportModuleError"
        assert "Unable to import module 'unimportable'" in result.payload["errorMessage"]
        assert "a_module_that_does_not_exist" in result.payload["errorMessage"]


def test_a_result_that_is_not_json_is_a_marshal_error_but_decimals_are_numbers(runner: LambdaRunner) -> None:
    result = runner.invoke("test-not_json", {})
    assert result.error_type == "Runtime.MarshalError"
    assert (
        result.payload["errorMessage"] == "Unable to marshal response: Object of type datetime is not JSON serializable"
    )
    decimals = runner.invoke("test-decimals", {})
    assert not decimals.failed and decimals.payload == {"version": 3, "score": 0.25}


def test_unknown_function_is_a_key_error(runner: LambdaRunner) -> None:
    with pytest.raises(KeyError, match="no function 'nope'"):
        runner.invoke("nope", {})


def test_prestarted_workers_serve_the_first_invocation(runner: LambdaRunner) -> None:
    before = {p.pid for p in multiprocessing.active_children()}
    runner.prestart(["test-env_echo", "arn:aws:lambda:us-east-1:123456789012:function:test-sleepy", "elsewhere"])
    prestarted = {p.pid for p in multiprocessing.active_children()} - before
    assert len(prestarted) == 2  # one per known function; a name of another stack is skipped
    served = {
        runner.invoke("test-env_echo", {"names": []}).payload["pid"],
        runner.invoke("test-sleepy", {}).payload["pid"],
    }
    assert served == prestarted


def test_prestart_after_close_leaves_no_worker_behind(runner: LambdaRunner) -> None:
    runner.close()
    before = {p.pid for p in multiprocessing.active_children()}
    runner.prestart(["test-env_echo"])
    assert {p.pid for p in multiprocessing.active_children() if p.is_alive()} <= before


def test_each_invocation_is_framed_by_lambdas_start_end_and_report_lines(runner: LambdaRunner, tmp_path: Path) -> None:
    first = runner.invoke("test-failing", {})
    second = runner.invoke("test-failing", {})
    lines = (tmp_path / "logs" / "test-failing.log").read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("START RequestId:")]
    assert [lines[i] for i in starts] == [f"START RequestId: {r.request_id} Version: $LATEST" for r in (first, second)]
    assert lines[starts[0] + 1] == "about to fail"  # the handler's output comes after START
    reports = [line for line in lines if line.startswith("REPORT RequestId:")]
    assert [f"END RequestId: {r.request_id}" for r in (first, second)] == [x for x in lines if x.startswith("END ")]
    pattern = (
        r"REPORT RequestId: (\S+)\tDuration: (\d+\.\d\d) ms\tBilled Duration: (\d+) ms\t"
        r"Memory Size: 512 MB\tMax Memory Used: (\d+) MB\t(Init Duration: \d+\.\d\d ms\t)?$"
    )
    matches = [re.match(pattern, line) for line in reports]
    assert all(matches), reports
    assert [m.group(1) for m in matches if m] == [first.request_id, second.request_id]
    assert [bool(m.group(5)) for m in matches if m] == [True, False]  # Init Duration on the cold start only
    for m in matches:
        assert m is not None and int(m.group(3)) >= float(m.group(2)) and int(m.group(4)) > 0


def test_json_log_format_writes_platform_records(tmp_path: Path, code_dir: Path) -> None:
    spec = FunctionSpec(**{**_spec(code_dir, "env_echo").__dict__, "log_format": "JSON", "log_group": "/stepml/x"})
    runner = _runner(tmp_path, [spec])
    try:
        result = runner.invoke(spec.name, {"names": ["AWS_LAMBDA_LOG_FORMAT", "AWS_LAMBDA_LOG_GROUP_NAME"]})
    finally:
        runner.close()
    assert result.payload["AWS_LAMBDA_LOG_FORMAT"] == "JSON"
    assert result.payload["AWS_LAMBDA_LOG_GROUP_NAME"] == "/stepml/x"
    records = [json.loads(line) for line in (tmp_path / "logs" / f"{spec.name}.log").read_text().splitlines()]
    assert [r["type"] for r in records] == ["platform.start", "platform.report"]
    assert records[0]["record"] == {"requestId": result.request_id, "version": "$LATEST"}
    report = records[1]["record"]
    assert (report["requestId"], report["status"], report["metrics"]["memorySizeMB"]) == (
        result.request_id,
        "success",
        512,
    )
    assert {"durationMs", "billedDurationMs", "maxMemoryUsedMB", "initDurationMs"} <= set(report["metrics"])


def test_a_timeout_is_logged_as_lambda_logs_it(runner: LambdaRunner, tmp_path: Path) -> None:
    slow = runner.invoke("test-sleepy", {"seconds": 5})
    log = (tmp_path / "logs" / "test-sleepy.log").read_text()
    assert f"{slow.request_id} Task timed out after " in log
    assert f"END RequestId: {slow.request_id}\nREPORT RequestId: {slow.request_id}\t" in log
    assert log.rstrip("\n").endswith("Status: timeout")


def test_a_crash_is_logged_with_its_exit_status(runner: LambdaRunner, tmp_path: Path) -> None:
    crashed = runner.invoke("test-crashing", {})
    log = (tmp_path / "logs" / "test-crashing.log").read_text()
    exited = f"RequestId: {crashed.request_id} Error: Runtime exited with error: exit status 3\nRuntime.ExitError\n"
    assert exited in log
    assert log.rstrip("\n").endswith("Status: error\tError Type: Runtime.ExitError")


def test_over_its_memory_size_the_worker_is_killed_with_lambdas_out_of_memory_error(
    runner: LambdaRunner, tmp_path: Path
) -> None:
    hungry = runner.invoke("test-hungry", {"mb": 400, "hold_seconds": 20})
    assert hungry.error_type == "Runtime.OutOfMemory"
    message = hungry.payload["errorMessage"]
    assert message.startswith(f"RequestId: {hungry.request_id} Error: Runtime exited with error: signal: killed")
    assert "test-hungry" in message and "MemorySize of 320 MB" in message and "DataStageMemorySize" in message
    assert hungry.duration_ms < 10_000  # killed when it went over, not at its timeout
    log = (tmp_path / "logs" / "test-hungry.log").read_text()
    killed = f"RequestId: {hungry.request_id} Error: Runtime exited with error: signal: killed\nRuntime.OutOfMemory"
    assert killed in log
    report = log.rstrip("\n").rsplit("\n", 1)[-1]
    assert report.endswith("Status: error\tError Type: Runtime.OutOfMemory") and "Memory Size: 320 MB" in report
    used = int(re.search(r"Max Memory Used: (\d+) MB", report).group(1))  # type: ignore[union-attr]
    assert used > 320
    # under the limit, a fresh worker serves the next invocation
    assert runner.invoke("test-hungry", {"mb": 20}).payload == {"held_mb": 20}


def test_the_memory_limit_can_be_switched_off_for_the_embedded_target(
    tmp_path: Path, code_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPML_LAMBDA_MEMORY_LIMIT", "off")
    runner = _runner(tmp_path, [_spec(code_dir, "hungry", memory=320)])
    try:
        assert runner.invoke("test-hungry", {"mb": 400, "hold_seconds": 0.3}).payload == {"held_mb": 400}
    finally:
        runner.close()


def test_a_wrong_memory_limit_switch_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPML_LAMBDA_MEMORY_LIMIT", "no")
    with pytest.raises(CliError, match="STEPML_LAMBDA_MEMORY_LIMIT must be 'on' or 'off', got 'no'"):
        _runner(tmp_path, [])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def _running(tmp_path: Path, specs: list[FunctionSpec]) -> Iterator[LambdaRunner]:
    runner = _runner(tmp_path, specs)
    try:
        yield runner
    finally:
        runner.close()


def _concurrent_pids(runner: LambdaRunner, count: int) -> set[int]:
    """The workers' pids of ``count`` invocations of test-sleepy run at once (each gets its own worker)."""
    with ThreadPoolExecutor(max_workers=count) as pool:
        return {
            r.payload["pid"] for r in pool.map(lambda _: runner.invoke("test-sleepy", {"seconds": 0.3}), range(count))
        }


def test_idle_workers_beyond_one_per_function_are_reclaimed_as_lambda_reclaims_idle_environments(
    tmp_path: Path, code_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Distributed Map fans a function out over ten workers; kept for ever, they held 5.7 GB after a 10M-row
    # run's map had ended (docs/data-scale.md). One stays warm for the next invocation.
    monkeypatch.setenv("STEPML_LAMBDA_IDLE_SECONDS", "0.5")
    with _running(tmp_path, [_spec(code_dir, "sleepy", timeout=5)]) as runner:
        pids = _concurrent_pids(runner, 3)
        assert len(pids) == 3
        deadline = time.monotonic() + 30  # a wait for a condition, generous for a loaded machine
        while sum(map(_alive, pids)) > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sum(map(_alive, pids)) == 1, "the idle workers beyond one were not reclaimed"
        assert runner.invoke("test-sleepy", {}).payload["pid"] in pids  # the one kept is still warm


def test_workers_stay_warm_while_inside_the_idle_time(tmp_path: Path, code_dir: Path) -> None:
    with _running(tmp_path, [_spec(code_dir, "sleepy", timeout=5)]) as runner:
        pids = _concurrent_pids(runner, 2)
        assert len(pids) == 2 and all(map(_alive, pids))  # the default idle time is a minute


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_wrong_idle_time_is_a_clear_error(
    tmp_path: Path, code_dir: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("STEPML_LAMBDA_IDLE_SECONDS", value)
    with pytest.raises(CliError, match="STEPML_LAMBDA_IDLE_SECONDS"):
        _runner(tmp_path, [_spec(code_dir, "sleepy")])


def test_the_init_phase_is_not_part_of_the_functions_timeout(tmp_path: Path, code_dir: Path) -> None:
    # Lambda runs the handler's import (init, up to 10 s) before the invocation's timeout starts; the embedded
    # target counted it, so a 1 s function whose import took 2 s (or a cold start on a loaded machine) timed out.
    (code_dir / "slow_import.py").write_text(
        "import time\ntime.sleep(2)\ndef handler(event, context):\n    return 'ok'\n"
    )
    with _running(tmp_path, [_spec(code_dir, "slow_import", timeout=1)]) as runner:
        result = runner.invoke("test-slow_import", {})
    assert (result.error_type, result.payload) == (None, "ok")
