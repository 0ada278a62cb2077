"""``stepml cache list`` and ``stepml cache clear``: the step cache (the stack's StepCacheTable) on any target.

They reach the table the way ``stepml models`` reaches the registry: the target's DynamoDB client and the
stack's output that names the table (StepCacheTableName), through the wrapper the pipeline's functions use.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any, TextIO

from stepml.targets import Target, TargetError

# What --step accepts (any case), and the step name the cache records.
STEP_NAMES = {
    "preprocess": "Preprocess",
    "train": "Training",
    "training": "Training",
    "evaluate": "Evaluate",
    "evaluation": "Evaluate",
}
KEY_CHARS = 12


def step_name(value: str) -> str:
    """The cache's name of a step given as Preprocess, Train(ing) or Evaluate/Evaluation (any case)."""
    try:
        return STEP_NAMES[value.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown step {value!r}: choose Preprocess, Train or Evaluate") from None


def step_cache(target: Target) -> Any:
    """The target's step cache (pipeline_core's StepCache on the stack's StepCacheTable)."""
    from pipeline_core.aws.step_cache import StepCache

    table = target.outputs.step_cache_table
    if not table:
        raise TargetError(
            f"the stack on the {target.name} target has no StepCacheTableName output: it was deployed before "
            "the step cache; deploy it again (docs/deploy.md)"
        )
    return StepCache(table, target.client("dynamodb"))


def expired(entry: Any, now: datetime | None = None) -> bool:
    """Whether the entry is past its ``expires_at`` (DynamoDB's TTL deletes items only some time after)."""
    from pipeline_core.aws.step_cache import is_expired

    return is_expired(entry, (now or datetime.now(UTC)).timestamp())


def _when(value: Any) -> str:
    """A time as ``2026-11-30 12:00:00`` (UTC): an ISO text or epoch seconds."""
    if value is None or value == "":
        return "-"
    if isinstance(value, int | float):
        moment = datetime.fromtimestamp(float(value), UTC)
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def entry_json(entry: Any, now: datetime | None = None) -> dict[str, Any]:
    """One entry as ``cache list --json`` prints it: every field, and whether it expired."""
    return {**entry.model_dump(mode="json"), "expired": expired(entry, now)}


def format_entries(entries: list[Any], now: datetime | None = None) -> str:
    """The table ``cache list`` prints, newest first."""
    if not entries:
        return "The step cache is empty (runs store Preprocess, Train and Evaluate results as they finish)."
    rows = [
        f"{'KEY':<{KEY_CHARS}}  {'STEP':<10}  {'MODEL':<20}  {'CREATED':<19}  {'EXPIRES':<19}  {'EXPIRED':<7}  FROM RUN"
    ]
    for entry in entries:
        rows.append(
            f"{entry.cache_key[:KEY_CHARS]:<{KEY_CHARS}}  {entry.step:<10}  {entry.model_name or '-':<20}  "
            f"{_when(entry.created_at):<19}  {_when(entry.expires_at):<19}  "
            f"{'yes' if expired(entry, now) else 'no':<7}  {entry.run_id}"
        )
    return "\n".join(rows)


def _sorted(entries: list[Any]) -> list[Any]:
    return sorted(entries, key=lambda e: (str(e.created_at or ""), e.cache_key), reverse=True)


def _filters(args: argparse.Namespace) -> str:
    parts = [f"model {args.model}"] if args.model else []
    parts += [f"step {args.step}"] if args.step else []
    return ", ".join(parts) or "every entry"


def cmd_cache_list(args: argparse.Namespace, out: TextIO) -> int:
    """List the step cache's entries (optionally one model's, one step's)."""
    from stepml.cli import _open_target
    from stepml.errors import CliError
    from stepml.project import project_layout

    with _open_target(args, project_layout()) as target:
        try:
            entries = _sorted(step_cache(target).entries(step=args.step, model_name=args.model))
        except TargetError as error:
            raise CliError(str(error)) from error
    now = datetime.now(UTC)
    if args.json:
        print(json.dumps([entry_json(e, now) for e in entries]), file=out)
    else:
        print(format_entries(entries, now), file=out)
    return 0


def cmd_cache_clear(args: argparse.Namespace, out: TextIO) -> int:
    """Remove the step cache's entries of a model and/or step, or (--all) every entry."""
    from stepml.cli import _open_target
    from stepml.errors import CliError
    from stepml.project import project_layout

    if not (args.model or args.step or args.all):
        raise CliError("cache clear removes nothing without a filter: give --model M and/or --step S, or --all")
    with _open_target(args, project_layout()) as target:
        try:
            removed = int(step_cache(target).clear(model_name=args.model, step=args.step))
        except TargetError as error:
            raise CliError(str(error)) from error
    if args.json:
        print(json.dumps({"removed": removed, "model": args.model, "step": args.step}), file=out)
    else:
        print(f"Removed {removed} step cache entr{'y' if removed == 1 else 'ies'} ({_filters(args)}).", file=out)
    return 0


def add_parser(subparsers: Any, target_options: Any) -> None:
    """Add ``stepml cache list|clear`` to the CLI (``target_options`` adds --target and the stack options)."""
    cache = subparsers.add_parser("cache", help="the step cache: list or clear the results runs reuse")
    commands = cache.add_subparsers(dest="cache_command", required=True)
    listing = commands.add_parser("list", help="the cached step results: key, step, model, run, created, expiry")
    clear = commands.add_parser("clear", help="remove cached step results (a filter or --all is required)")
    for parser in (listing, clear):
        target_options(parser)
        parser.add_argument("--model", help="only this model's entries")
        parser.add_argument("--step", type=step_name, help="only this step's entries: Preprocess, Train or Evaluate")
        parser.add_argument("--json", action="store_true", help="print one JSON document")
    clear.add_argument("--all", action="store_true", help="remove every entry (when no --model or --step is given)")
    listing.set_defaults(func=cmd_cache_list)
    clear.set_defaults(func=cmd_cache_clear)
