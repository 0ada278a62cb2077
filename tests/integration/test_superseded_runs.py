"""Champion/challenger under concurrency: two runs of one model contend for the deploy lease and the better
one gets it first. The worse one, compared by Evaluate with the same old champion, must not deploy over it.

Both runs are made to wait at AcquireDeployLease (a deployment "elsewhere" holds the model's lease until
each has been refused at least once, as in test_concurrent_runs), so both passed QualityGate against the
champion of that time (none). The lease is then handed straight to the better run, which deploys and
registers; the worse run takes the lease next, decides the gate again against the champion as it is now,
and must be superseded: registered as rejected, with the reason, and the endpoint left serving the better
model. Without the re-check it would deploy over the better model and become the champion.

The better run trains on iris, the worse one on iris with every sixth label moved to the next class, so its
f1 is clearly lower (about 0.80 against 0.93) and still above the default threshold (0.6).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pipeline_core.aws.registry import LEASE_VERSION

from stepml.session import print_summary
from tests.integration.harness import IRIS, Finished, Harness, Job, embedded_harness
from tests.integration.test_failure_paths import CREATE_PATH, SUPERSEDED_PATH

pytestmark = pytest.mark.slow

MODEL = "contended-iris"
BETTER, WORSE = "contended-better", "contended-worse"
CLASSES = ("setosa", "versicolor", "virginica")
SUPERSEDED = "superseded while waiting for the deploy lease: "


def noisy_iris(every: int = 6) -> bytes:
    """Iris with the label of every ``every``-th row moved to the next class: a worse model, still usable."""
    header, *rows = IRIS.decode().strip().splitlines()
    lines = [header]
    for index, row in enumerate(rows):
        features, label = row.rsplit(",", 1)
        if index % every == 0:
            label = CLASSES[(CLASSES.index(label) + 1) % len(CLASSES)]
        lines.append(f"{features},{label}")
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Contended:
    harness: Harness
    better: Finished
    worse: Finished


def _hand_lease_over(h: Harness, model: str, holder: str, to: str) -> None:
    """Give ``holder``'s lease to ``to`` in one conditional write: no other run can take it in between."""
    h.aws.client("dynamodb").update_item(
        TableName=h.aws.stack.tables["ModelRegistryTable"].name,
        Key={"model_name": {"S": model}, "version": {"N": str(LEASE_VERSION)}},
        UpdateExpression="SET lease_holder = :to",
        ConditionExpression="lease_holder = :holder",
        ExpressionAttributeValues={":to": {"S": to}, ":holder": {"S": holder}},
    )


def _run_contended(h: Harness) -> Contended:
    jobs = [
        Job(WORSE, {"dataset": h.upload(f"datasets/{WORSE}/iris.csv", noisy_iris()), "model_name": MODEL}),
        Job(BETTER, {"dataset": h.upload(f"datasets/{BETTER}/iris.csv", IRIS), "model_name": MODEL}),
    ]
    finished = h.run_lined_up_at_lease(
        jobs, MODEL, lambda holder: _hand_lease_over(h, MODEL, holder, h.execution_arn(BETTER))
    )
    return Contended(h, finished[BETTER], finished[WORSE])


@pytest.fixture(scope="module")
def contended(state_dir: Path) -> Iterator[Contended]:
    for h in embedded_harness():
        yield _run_contended(h)


def _output(run: Finished) -> dict[str, Any]:
    return dict(json.loads(run.description["output"]))


def _record(c: Contended, run: Finished) -> Any:
    [record] = [r for r in c.harness.model_versions(MODEL) if r.execution_arn == run.arn]
    return record


def test_both_runs_passed_evaluate_against_the_same_old_champion_and_waited(contended: Contended) -> None:
    better, worse = contended.better, contended.worse
    for run in (better, worse):
        assert run.status == "SUCCEEDED", run.describe()
        evaluated = run.output_of("Evaluate")["evaluation"]
        # compared with the champion of that time (none), both passed QualityGate
        assert evaluated["passed"] and evaluated["champion_version"] is None, evaluated
        assert run.next_after("QualityGate") == "CreateModel"
        lease = run.visit("AcquireDeployLease")
        assert lease.retries >= 1 and set(lease.errors) == {"DeployLeaseBusyError"}, run.describe()
    f1 = {run.job.name: run.output_of("Evaluate")["evaluation"]["primary_value"] for run in (better, worse)}
    # the worse model is clearly worse, and good enough to have deployed had the champion not changed
    assert 0.6 < f1[WORSE] < f1[BETTER] - 0.05, f1


def test_the_better_run_deploys_and_the_worse_is_superseded_under_the_lease(contended: Contended) -> None:
    better, worse = contended.better, contended.worse
    assert better.path == CREATE_PATH, better.describe()
    assert worse.path == SUPERSEDED_PATH, worse.describe()
    # the worse run got the lease only once the better one, registering, had given it back
    exited = worse.visit("AcquireDeployLease").exited
    assert exited is not None and exited >= better.visit("Register").entered
    lease = _output(worse)["lease"]
    assert lease["superseded"] is True and lease["holder"] == worse.arn
    assert _output(better)["lease"]["superseded"] is False


def test_the_worse_run_is_registered_rejected_with_the_reason(contended: Contended) -> None:
    h, better, worse = contended.harness, contended.better, contended.worse
    champion, record = _record(contended, better), _record(contended, worse)
    f1 = worse.output_of("Evaluate")["evaluation"]["primary_value"]
    expected = (
        f"{SUPERSEDED}f1_macro {f1:.4f} < champion v{champion.version} {champion.metrics['f1_macro']:.4f} "
        "(registered after Evaluate had compared with no comparable champion)"
    )
    assert record.status == "rejected" and record.endpoint_name is None
    assert record.gate_reason == expected  # what `stepml models` shows
    out = _output(worse)
    assert out["registration"]["status"] == "rejected" and out["registration"]["version"] == record.version
    assert out["evaluation"]["reason"] == expected and out["evaluation"]["passed"] is False
    assert out["evaluation"]["metrics"] == worse.output_of("Evaluate")["evaluation"]["metrics"]
    run_record = h.run_record(WORSE)
    assert run_record and run_record["status"] == "SUCCEEDED" and run_record["registry_status"] == "rejected"
    assert run_record["gate_reason"] == expected
    # the CLI's summary of the run (stepml run / watch) gives the same reason
    summary = io.StringIO()
    print_summary(worse.outcome, summary)
    assert f"Gate        {expected}\n" in summary.getvalue()
    assert f"Model       {MODEL} v{record.version} (rejected)" in summary.getvalue()
    # the better run's reason is Evaluate's own (the champion did not change while it waited)
    assert _record(contended, better).gate_reason == better.output_of("Evaluate")["evaluation"]["reason"]


def test_the_endpoint_still_serves_the_better_version(contended: Contended) -> None:
    h, better, worse = contended.harness, contended.better, contended.worse
    champion = h.registry.champion(MODEL)
    assert champion is not None and champion.execution_arn == better.arn and champion.status == "approved"
    endpoint = h.endpoint(h.endpoint_name(MODEL))
    assert endpoint and endpoint["EndpointStatus"] == "InService"
    assert endpoint["EndpointConfigName"] == champion.endpoint_config_name
    # never switched to the worse model, not even for a moment
    assert endpoint["PreviousEndpointConfigNames"] == []
    worse_config = _output(worse)["config"]
    assert endpoint["EndpointConfigName"] != worse_config["endpoint_config_name"]
    assert "existing" not in _output(worse) and "endpoint" not in _output(worse)
    # its SageMaker model and endpoint config, created before the lease, are kept (harmless, never served)
    for kind, name in (("models", "sagemaker_model_name"), ("endpoint-configs", "endpoint_config_name")):
        assert h.keys(f"_sagemaker/{kind}/{worse_config[name]}.json"), (kind, worse_config[name])


def test_versions_stay_unique_and_monotonic_and_the_lease_is_free(contended: Contended) -> None:
    h, better, worse = contended.harness, contended.better, contended.worse
    records = sorted(h.model_versions(MODEL), key=lambda r: r.version)
    assert [(r.version, r.execution_arn, r.status) for r in records] == [
        (1, better.arn, "approved"),
        (2, worse.arn, "rejected"),
    ]
    assert records[0].created_at <= records[1].created_at
    assert h.registry.deploy_lease(MODEL) is None, "the deploy lease was not given back"
