"""Notebooks on the Step Functions Data Science SDK: attach to the deployed pipeline, start, follow, render.

Optional: the SDK (pypi ``stepfunctions``) is unmaintained since 2022 and needs ``sagemaker<3``, so it is
the ``notebook`` extra (``pip install -e ".[notebook]"``), imported only inside these functions; the core
install never needs it. See docs/notebooks.md.

    from stepml.notebook import attach
    pipeline = attach("embedded")            # a running `stepml local up`; or "localstack" / "aws"
    execution = pipeline.start("data/iris.csv", model_name="iris")
    outcome = pipeline.follow(execution)     # prints each state; returns the run's outcome
    pipeline.render(execution)               # the SDK's execution graph plus a plain table of the states
"""

from __future__ import annotations

import html
import io
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from stepml.progress import TERMINAL, HistoryReader, StateVisit
from stepml.session import RunOutcome, execution_name_for, outcome_of, print_summary
from stepml.targets import TARGETS, RemoteTarget, TargetError

INSTALL_HINT = 'pip install -e ".[notebook]"  (or `make install`, which builds .venv/notebook)'
# A standard workflow's history holds at most 25,000 events (a Step Functions quota); the SDK's
# list_events() stops at 100 unless told otherwise, which a run with retries can exceed.
MAX_EVENTS = 25_000


def _sdk() -> Any:
    """The SDK's ``stepfunctions.workflow`` module, imported without its side effects on the session."""
    root = logging.getLogger()
    root_level = root.level
    config_logger = logging.getLogger("sagemaker.config")
    quiet_config = config_logger.level == logging.NOTSET
    if quiet_config:
        # sagemaker prints where it looked for SDK defaults on import; stepml sets no SageMaker defaults.
        config_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Deliberate: the SDK needs sagemaker v2 (v3 has no sagemaker.workflow.airflow), and it imports
            # pkg_resources; both warn on every import and neither is the user's to fix.
            warnings.filterwarnings("ignore", message=r"You are using the SageMaker Python SDK v2")
            warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated")
            import stepfunctions.workflow as sdk_workflow
    except ImportError as error:
        raise ImportError(
            f"stepml.notebook needs the Step Functions Data Science SDK, which is not importable here "
            f"({error}). Install the notebook extra: {INSTALL_HINT}. It pins stepfunctions 2.3.0 with "
            "sagemaker<3 and setuptools<82 (the SDK imports pkg_resources)."
        ) from error
    finally:
        # `import stepfunctions` sets the root logger to ERROR, which would silence the notebook's own logging.
        root.setLevel(root_level)
    return sdk_workflow


def _target(target: str, endpoint_url: str | None, stack_name: str | None) -> RemoteTarget:
    from stepml.targets import remote_target, remote_target_for_endpoint

    if target not in TARGETS:
        raise TargetError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if target != "embedded":
        return remote_target(target, stack_name, endpoint_url)
    if endpoint_url is None:
        from stepml.project import project_layout
        from stepml.targets import embedded_target

        # The state directory's local AWS, started in the background when none serves it.
        return embedded_target(project_layout())
    return remote_target_for_endpoint(endpoint_url, stack_name)


def attach(
    target: str = "embedded", endpoint_url: str | None = None, stack_name: str | None = None
) -> PipelineNotebook:
    """Attach the SDK's ``Workflow`` to the deployed pipeline's state machine (from the stack's outputs).

    ``embedded`` is the state directory's local AWS (started in the background when none serves it), or
    the one at ``endpoint_url``; ``localstack`` uses localstack-client's endpoint; ``aws`` the normal
    credential chain. A missing stack or state machine is a ``TargetError`` saying what to do; a missing SDK
    an ``ImportError`` with the install line.
    """
    sdk = _sdk()
    from botocore.exceptions import ClientError

    remote = _target(target, endpoint_url, stack_name)
    sfn = remote.client("stepfunctions")
    try:
        workflow = sdk.Workflow.attach(remote.outputs.state_machine_arn, client=sfn)
    except ClientError as error:
        raise TargetError(
            f"cannot describe state machine {remote.outputs.state_machine_arn}, named by stack {stack_name!r} "
            f"on {remote.endpoint_url or remote.name}: {error.response['Error'].get('Message', error)} "
            "(redeploy the stack if the state machine is gone; check the caller's permissions otherwise)"
        ) from error
    return PipelineNotebook(remote, workflow)


@dataclass
class Rendering:
    """An execution (or the state machine) as HTML for Jupyter and as plain text for everywhere else.

    ``html`` is the SDK's graph widget. It needs classic Jupyter Notebook (RequireJS) and loads its script
    from AWS's CDN, so ``_repr_html_`` adds a plain table of the states that renders in JupyterLab too.
    """

    html: str = field(repr=False)
    text: str
    states: list[StateVisit] = field(default_factory=list, repr=False)

    def table_html(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(v.name)}</td><td>{html.escape(v.kind)}</td>"
            f"<td>{'' if v.seconds is None else f'{v.seconds:.2f} s'}</td><td>{v.retries or ''}</td>"
            f"<td>{html.escape(', '.join(v.errors))}</td></tr>"
            for v in self.states
        )
        head = "<tr><th>state</th><th>type</th><th>duration</th><th>retries</th><th>errors</th></tr>"
        return f'<table class="stepml-states">{head}{rows}</table>' if rows else ""

    def _repr_html_(self) -> str:
        return f"{self.html}{self.table_html()}<pre>{html.escape(self.text)}</pre>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # IPython in a terminal (or a front end that shows no HTML): the summary, not 100 kB of markup.
        printer.text(self.text)

    def __str__(self) -> str:
        return self.text


@dataclass
class PipelineNotebook:
    """The deployed pipeline seen through the SDK: start, follow and render its executions."""

    target: RemoteTarget
    workflow: Any  # stepfunctions.workflow.Workflow (untyped, optional dependency)

    @property
    def state_machine_arn(self) -> str:
        return self.target.outputs.state_machine_arn

    def start(self, dataset: str | Path | None = None, *, name: str | None = None, **execution_input: Any) -> Any:
        """Start a run: ``dataset`` is an ``s3://`` URI or a local file (uploaded to the stack's bucket first).

        Without a dataset it uses the bundled ``data/iris.csv``. Other keyword arguments go into the execution
        input as they are (``target``, ``problem_type``, ``model_name``, ``quality_threshold``; see
        docs/architecture.md). Returns the SDK's ``Execution``.
        """
        from stepml.remote import stage_dataset

        if dataset is None:
            from stepml.project import project_layout

            dataset = project_layout().sample_data_dir / "iris.csv"
        name = name or execution_name_for(dataset)
        uri = stage_dataset(self.target, str(dataset), name)
        execution = self.workflow.execute(name=name, inputs={**execution_input, "dataset": uri})
        execution.name = name  # the SDK leaves it None: StartExecution's answer has no name
        return execution

    def execution(self, name_or_arn: str) -> Any:
        """The SDK's ``Execution`` for an existing run of this state machine, by name or ARN."""
        from stepml.remote import execution_arn

        sdk = _sdk()
        sfn = self.target.client("stepfunctions")
        arn = execution_arn(self.target, name_or_arn)
        try:
            described = sfn.describe_execution(executionArn=arn)
        except sfn.exceptions.ExecutionDoesNotExist as error:
            raise TargetError(f"no execution {name_or_arn!r} of {self.state_machine_arn}") from error
        return sdk.Execution(
            workflow=self.workflow,
            execution_arn=arn,
            start_date=described["startDate"],
            status=sdk.ExecutionStatus(described["status"]),
            client=sfn,
            name=described["name"],
            stop_date=described.get("stopDate"),
        )

    def follow(
        self,
        execution: Any,
        *,
        poll_seconds: float = 1.0,
        timeout_seconds: float = 7200,
        out: TextIO | None = sys.stdout,
    ) -> RunOutcome:
        """Poll the execution until it ends, printing each state as it finishes; return the run's outcome.

        The outcome has the status, the failed state with its error and cause, the model version and metrics —
        what ``stepml run --json`` reports. ``TimeoutError`` if it is still running after ``timeout_seconds``.
        """
        reader = HistoryReader()
        deadline = time.monotonic() + timeout_seconds
        while True:
            description = execution.describe()
            for change, visit in reader.feed(list(execution.list_events(max_items=MAX_EVENTS))):
                if out is None:
                    continue
                if change == "retry":
                    print(f"  ↻ {visit.name} retrying after {', '.join(visit.errors) or 'an error'}", file=out)
                elif change == "exited":
                    print(_state_line(visit), file=out, flush=True)
            if description["status"] in TERMINAL:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{execution.execution_arn} still {description['status']} after {timeout_seconds} s")
            time.sleep(poll_seconds)
        execution.status = _sdk().ExecutionStatus(description["status"])
        outcome = outcome_of(description, reader)
        if out is not None:
            print_summary(outcome, out)
        return outcome

    def render(self, execution: Any, *, portrait: bool = True) -> Rendering:
        """The execution's progress: the SDK's graph HTML (``render_progress``) and a plain-text summary."""
        reader = HistoryReader()
        reader.feed(list(execution.list_events(max_items=MAX_EVENTS)))
        description = execution.describe()
        text = io.StringIO()
        for visit in reader.visits:
            print(_state_line(visit), file=text)
        if description["status"] in TERMINAL:
            print_summary(outcome_of(description, reader), text)
        else:
            print(f"\nExecution   {description['status']}\n            {execution.execution_arn}", file=text)
        widget = execution.render_progress(portrait=portrait, max_events=MAX_EVENTS)
        return Rendering(_html_of(widget), text.getvalue(), reader.visits)

    def graph(self, *, portrait: bool = True) -> Rendering:
        """The state machine's graph (``Workflow.render_graph``) and its states as text."""
        definition = json.loads(self.workflow.definition.to_json())
        text = f"{self.state_machine_arn}\nstarts at {definition['StartAt']}; states: {', '.join(definition['States'])}"
        return Rendering(_html_of(self.workflow.render_graph(portrait=portrait)), text)


def _html_of(widget: Any) -> str:
    # The SDK returns IPython's HTML object, or "" (after logging an error) when IPython is missing.
    return str(getattr(widget, "data", widget) or "")


def _state_line(visit: StateVisit) -> str:
    seconds = f"{visit.seconds:6.2f} s" if visit.seconds is not None else "   —    "
    mark = "✗" if visit.name.endswith("Failed") or visit.name == "RecordFailure" else "✓"
    retries = f"  {visit.retries} retr{'y' if visit.retries == 1 else 'ies'}" if visit.retries else ""
    errors = f"  errors: {', '.join(visit.errors)}" if visit.errors else ""
    return f"  {mark} {visit.name:<28} {visit.kind:<8} {seconds}{retries}{errors}"
