"""AcquireDeployLease: one execution at a time changes a model's endpoint and registers what it deployed.

Runs of one model share its endpoint (``<prefix>-<model>-ep``). Unserialised, two runs can both find no
endpoint and both create it (the second fails), SageMaker refuses to update an endpoint that is still
updating, and a run that deploys first may register last, so the newest approved version (what the
registry calls the champion, and what the inference API reports) would not be the model the endpoint
serves. With the lease, FindEndpoint → Create/UpdateEndpoint → DescribeEndpoint → Register (or the
rollback in RecordFailure) run for one execution of a model at a time: versions are registered in the
order the models were deployed, and the endpoint serves the newest approved one.

A run that finds the lease taken fails with DeployLeaseBusyError, which the state machine retries with
backoff; Register and RecordFailure give the lease back. It expires after the state machine's own
timeout, so a lease left by an execution that was stopped (and never reached RecordFailure) cannot block
the model for longer than that execution could have run.
"""

from __future__ import annotations

from pydantic import BaseModel

from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.models import DeployLeaseResult, RunConfig

# statemachine/pipeline.asl.json's TimeoutSeconds: no execution, so no lease holder, lives longer.
LEASE_SECONDS = 7200
ACTION = "acquire_deploy_lease"


class DeployLeaseEvent(BaseModel):
    """What the AcquireDeployLease state passes (see its Parameters in the ASL)."""

    action: str
    config: RunConfig
    execution_arn: str


def acquire_deploy_lease(
    config: RunConfig, execution_arn: str, registry: ModelRegistry, lease_seconds: int = LEASE_SECONDS
) -> DeployLeaseResult:
    """Take the deploy lease of ``config.model_name`` for this execution (again, if it already has it)."""
    lease = registry.acquire_deploy_lease(config.model_name, execution_arn, lease_seconds)
    return DeployLeaseResult(
        model_name=lease.model_name, holder=lease.holder, acquired_at=lease.acquired_at, expires_at=lease.expires_at
    )
