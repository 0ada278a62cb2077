"""Safe rollout on the command line: ``--rollout`` for ``stepml run`` and ``stepml start``, and ``stepml alarm set``,
which trips (or clears) an alarm on any target the way CloudWatch documents for testing one: SetAlarmState.

Setting an endpoint's rollback alarm to ALARM while a run rolls out a new model is how a rollback is made to
happen on purpose (docs/rollout.md): the SageMaker stand-in, like SageMaker, reads the alarm's state history
and rolls the endpoint back. CloudWatch's next evaluation of the alarm (every minute, on the local AWS too)
sets it back to what its metric says, which leaves the ALARM in the history all the same.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

STATES = ("ALARM", "OK", "INSUFFICIENT_DATA")


class RolloutOptionError(ValueError):
    """A --rollout value that cannot be read; the message shows the accepted forms."""


_FORMS = "STRATEGY[,KEY=VALUE...] (e.g. canary or canary,wait_seconds=60,baking_seconds=30) or a JSON object"


def add_rollout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rollout",
        metavar="STRATEGY[,KEY=VALUE...]",
        help="update the endpoint with a canary, linear or all_at_once rollout that rolls back when its error or "
        "latency alarm fires, e.g. canary,wait_seconds=60,baking_seconds=30 or a JSON object (docs/rollout.md)",
    )


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def rollout_input(spec: str | None) -> dict[str, Any]:
    """``{"rollout": ...}`` from --rollout (none given: {}); the pipeline's ValidateInput checks the settings."""
    if not spec:
        return {}
    text = spec.strip()
    if text.startswith("{"):
        try:
            return {"rollout": json.loads(text)}
        except ValueError as error:
            raise RolloutOptionError(f"--rollout {spec!r}: not JSON ({error}); expected {_FORMS}") from None
    strategy, *settings = [part.strip() for part in text.split(",")]
    value: dict[str, Any] = {"strategy": strategy}
    for setting in settings:
        key, equals, number = setting.partition("=")
        if not equals or not key.strip():
            raise RolloutOptionError(f"--rollout {spec!r}: {setting!r} is not KEY=VALUE; expected {_FORMS}")
        value[key.strip()] = _number(number.strip())
    return {"rollout": value if settings else strategy}


def rollout_cell(rollout: dict[str, Any] | None) -> str:
    """``canary completed``, ``canary rolled back (alarm X)``; ``-`` without a rollout."""
    if not rollout:
        return "-"
    strategy = rollout.get("strategy") or "all-at-once"
    if rollout.get("outcome") != "rolled_back":
        return f"{strategy} completed"
    return f"{strategy} rolled back" + (f" ({rollout['alarm']})" if rollout.get("alarm") else "")


def cmd_alarm_set(args: argparse.Namespace, out: TextIO) -> int:
    """Set a CloudWatch alarm's state (SetAlarmState), e.g. an endpoint's rollback alarm to ALARM."""
    from pipeline_core.aws.cloudwatch import CloudWatch

    from stepml.cli import _open_target
    from stepml.errors import CliError
    from stepml.project import project_layout

    with _open_target(args, project_layout()) as target:
        cloudwatch = CloudWatch(target.client("cloudwatch"))
        if args.name not in cloudwatch.alarms([args.name]):
            raise CliError(
                f"no alarm named {args.name!r} on the {target.name} target. An endpoint's rollback alarms are "
                "<endpoint>-5xx-errors and <endpoint>-model-latency, created by the first run that rolls out an "
                "update to it (`stepml local alarms` lists the local ones)"
            )
        cloudwatch.set_alarm_state(args.name, args.state, args.reason)
    print(
        f"{args.name} is {args.state} ({args.reason}). CloudWatch's next evaluation of the alarm, within a minute, "
        "sets it to what its metric says; a rollout that was watching it has seen it.",
        file=out,
    )
    return 0


def add_parser(subparsers: Any, target_options: Any) -> None:
    """Add ``stepml alarm set NAME STATE`` (``target_options`` adds --target and the stack options)."""
    alarm = subparsers.add_parser("alarm", help="set a CloudWatch alarm's state (to test a rollback)")
    commands = alarm.add_subparsers(dest="alarm_command", required=True)
    setter = commands.add_parser(
        "set", help="set an alarm's state, as CloudWatch's SetAlarmState does (e.g. a rollback alarm to ALARM)"
    )
    target_options(setter)
    setter.add_argument("name", help="the alarm, e.g. stepml-dev-iris-species-ep-5xx-errors")
    setter.add_argument("state", choices=STATES, help="ALARM, OK or INSUFFICIENT_DATA")
    setter.add_argument("--reason", default="set by stepml alarm set", help="the state reason to record")
    setter.set_defaults(func=cmd_alarm_set)
