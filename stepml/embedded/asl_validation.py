"""Step Functions' ValidateStateMachineDefinition for the embedded target (moto 5.2.5 answers it with HTTP 500).

The answer has AWS's shape: ``{"result": "OK"|"FAIL", "diagnostics": [...], "truncated": bool}``, each diagnostic
``{"severity", "code", "message", "location"?}``. The checks run in layers, in the order AWS reports them:

1. JSON: ``INVALID_JSON_DESCRIPTION``; a blank definition or ``null`` is ``MISSING_DESCRIPTION``.
2. Structure: the Amazon States Language JSON schema that cfn-lint bundles (rule E3601), through cfn-lint's own
   validator (it knows the schema's ``requiredXor`` keyword). A Task ``Resource`` that is no ARN is
   ``INVALID_RESOURCE``, a state name longer than 80 characters ``INVALID_STATE_NAME``, the rest
   ``SCHEMA_VALIDATION_FAILED``.
3. The graph, which no schema can express, per ``States`` scope (the top level, each Parallel branch, each Map's
   ItemProcessor/Iterator): ``DUPLICATE_STATE_NAME`` (names are unique across the whole machine),
   ``MISSING_TRANSITION_TARGET`` (a StartAt/Next/Default/Choices/Catch target not in the scope, or a state no
   transition names) and ``MISSING_END_STATE``.
4. Retriers and catchers: AWS's limits the schema leaves out (IntervalSeconds >= 1, BackoffRate >= 1.0, ...) and
   States.ALL alone and last.
5. Warnings: ``NO_DOLLAR`` and ``PASS_RESULT_IS_STATIC``.
6. The embedded engine's own parser (moto's port of LocalStack's ASL grammar), when 1-5 found no error: AWS says
   ``OK`` means the definition can be created, and on this target that is moto's CreateStateMachine. It also holds
   the EXPRESS rules (no .sync, .waitForTaskToken or activities).

Known differences from AWS (which itself warns that codes, order, count and wording may change):

- Messages: where AWS's wording was seen it is used ("Missing 'Next' target: X", 'State "X" is not reachable.',
  "Workflow has no terminal state", "Field 'X' is not supported", "These fields are required: [X]",
  "Duplicate State name: X", "States.ALL must appear alone and at end of list", "The QueryLanguage is set to
  'JSONPath', but field 'Output' is only supported for the 'JSONata' QueryLanguage"); elsewhere the wording is
  cfn-lint's or moto's.
- Locations use AWS's notation, a slash path with array indexes in brackets (``/States/C/Choices[0]/Next``), not
  a strict JSON pointer. A problem with the top-level object itself is located at ``/``. AWS gives the
  top-level MISSING_END_STATE no location; one inside a branch is located at the branch here.
- A state is "not reachable" when no transition in its scope names it (nor StartAt), which is what AWS reports
  (a chain of states after an unreachable one is not reported again); like AWS it is an ERROR, not a WARNING,
  and a scope with no terminal state reports MISSING_END_STATE instead.
- Layer 6 reports moto's first refusal only, without a location, and may refuse what AWS accepts but moto
  cannot create (then the embedded target cannot run it either).
- The schema is cfn-lint's: a Task Resource must be an ``arn:aws:`` ARN (other partitions are refused), and in
  a JSONata machine a ``{% ... %}`` value is taken as valid for any field. ``NO_PATH`` is not reported.
- ``TOO_DEEPLY_NESTED`` is reported only for JSON nested beyond Python's recursion limit (about a thousand
  levels); AWS's own limit is lower and not known here.
"""

from __future__ import annotations

import functools
import json
import math
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeGuard

TARGET = "AWSStepFunctions.ValidateStateMachineDefinition"

# The API's limits (botocore's stepfunctions model): definition 1..1048576 characters, maxResults 0..100.
MAX_DEFINITION_LENGTH = 1_048_576
MAX_RESULTS = 100
SEVERITIES = ("ERROR", "WARNING")
TYPES = ("STANDARD", "EXPRESS")

# Retrier limits AWS documents (and moto enforces); the bundled schema only says >= 0.
MAX_INTERVAL_SECONDS = 99_999_999
MAX_ATTEMPTS = 99_999_999
MAX_DELAY_SECONDS = 31_622_400
JITTER_STRATEGIES = ("FULL", "NONE")

# Fields holding payload templates, where a key must end in ".$" for its value to be read as a path.
PAYLOAD_TEMPLATES = ("Parameters", "ResultSelector", "ItemSelector")
# Fields a state may have under one query language only (AWS's wording for them was seen, so it is reused).
JSONATA_ONLY_FIELDS = ("Arguments", "Output")
_PATH_LIKE = re.compile(r"^(\$\$?(\.|\[|$)|States\.[A-Za-z]+\()")
_JSONATA_EXPRESSION = re.compile(r"^\{%.*%\}$", re.DOTALL)


class RequestError(Exception):
    """The request itself is refused (HTTP 400), before any definition is validated."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


@dataclass(frozen=True)
class Diagnostic:
    severity: str
    code: str
    message: str
    location: str | None = None

    def as_dict(self) -> dict[str, str]:
        # AWS leaves location out entirely when it has none (e.g. MISSING_END_STATE).
        body = {"severity": self.severity, "code": self.code, "message": self.message}
        if self.location is not None:
            body["location"] = self.location
        return body


def _error(code: str, message: str, location: str | None = None) -> Diagnostic:
    return Diagnostic("ERROR", code, message, location)


def location(path: Iterable[str | int]) -> str:
    """AWS's notation for a place in the definition: ``/States/C/Choices[0]/Next``."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f"/{part}" for part in path)
    return text or "/"


# ------------------------------------------------------------------ the request


def handles(target_header: str) -> bool:
    """Whether a JSON 1.0 request with this X-Amz-Target is ValidateStateMachineDefinition."""
    return target_header.strip() == TARGET


def validate_state_machine_definition(request: dict[str, Any]) -> dict[str, Any]:
    """Validate ``request["definition"]`` and answer as ValidateStateMachineDefinition does.

    Raises RequestError for a request AWS refuses outright (a missing definition, a value out of range).
    """
    definition, machine_type, severity, max_results = _read_request(request)
    try:
        diagnostics = list(_diagnose(definition, machine_type))
    except RecursionError:
        # Only a definition nested thousands of levels deep gets here; AWS refuses far shallower ones.
        diagnostics = [_error("TOO_DEEPLY_NESTED", "The states are too deeply nested")]
    failed = any(d.severity == "ERROR" for d in diagnostics)
    # severity=ERROR (the default) returns errors only; WARNING returns warnings and errors.
    shown = [d for d in diagnostics if severity == "WARNING" or d.severity == "ERROR"]
    return {
        "result": "FAIL" if failed else "OK",
        "diagnostics": [d.as_dict() for d in shown[:max_results]],
        "truncated": len(shown) > max_results,
    }


def _read_request(request: dict[str, Any]) -> tuple[str, str, str, int]:
    # Coral's wording for constraint violations; a value of the wrong JSON type fails to deserialize instead.
    def invalid(field: str, value: object, constraint: str) -> RequestError:
        shown = "null" if value is None else f"'{value}'"
        return RequestError(
            "ValidationException",
            f"1 validation error detected: Value {shown} at '{field}' failed to satisfy constraint: {constraint}",
        )

    definition = request.get("definition")
    if definition is None:
        raise invalid("definition", None, "Member must not be null")
    if not isinstance(definition, str):
        raise RequestError("SerializationException", "definition must be a string")
    if not 1 <= len(definition) <= MAX_DEFINITION_LENGTH:
        # The definition is a sensitive member: AWS does not echo it.
        raise RequestError(
            "ValidationException",
            "1 validation error detected: Value at 'definition' failed to satisfy constraint: "
            f"Member must have length between 1 and {MAX_DEFINITION_LENGTH}",
        )
    values: dict[str, str] = {}
    for field, allowed, default in (("type", TYPES, "STANDARD"), ("severity", SEVERITIES, "ERROR")):
        value = request.get(field, default)
        if not isinstance(value, str):
            raise RequestError("SerializationException", f"{field} must be a string")
        if value not in allowed:
            raise invalid(field, value, f"Member must satisfy enum value set: [{', '.join(allowed)}]")
        values[field] = value
    max_results = request.get("maxResults", 0)
    if isinstance(max_results, bool) or not isinstance(max_results, int):
        raise RequestError("SerializationException", "maxResults must be an integer")
    if max_results < 0:
        raise invalid("maxResults", max_results, "Member must have value greater than or equal to 0")
    if max_results > MAX_RESULTS:
        raise invalid("maxResults", max_results, f"Member must have value less than or equal to {MAX_RESULTS}")
    # 0 means the default, which is also the maximum.
    return definition, values["type"], values["severity"], max_results or MAX_RESULTS


# ------------------------------------------------------------------ the definition


class _JsonObject(dict[str, Any]):
    """A JSON object that remembers keys it had more than once (json.loads keeps only the last)."""

    duplicates: tuple[str, ...] = ()


def _object_pairs(pairs: list[tuple[str, Any]]) -> _JsonObject:
    obj = _JsonObject(pairs)
    if len(obj) != len(pairs):
        keys = [key for key, _ in pairs]
        obj.duplicates = tuple(key for index, key in enumerate(keys) if key in keys[:index])
    return obj


def _refuse_constant(name: str) -> Any:
    # Python reads NaN and Infinity; JSON (and AWS) does not.
    raise ValueError(f"{name} is not valid JSON")


def _diagnose(definition: str, machine_type: str) -> Iterator[Diagnostic]:
    if not definition.strip():
        yield _error("MISSING_DESCRIPTION", "Received a null or empty workflow input")
        return
    try:
        document = json.loads(definition, object_pairs_hook=_object_pairs, parse_constant=_refuse_constant)
    except ValueError as exc:
        yield _error("INVALID_JSON_DESCRIPTION", str(exc))
        return
    if document is None:
        yield _error("MISSING_DESCRIPTION", "Received a null or empty workflow input")
        return
    found = [*_schema_diagnostics(document), *_graph_diagnostics(document), *_retry_catch_diagnostics(document)]
    yield from _unique(found)
    yield from _unique(_warnings(document))
    if not any(d.severity == "ERROR" for d in found):
        yield from _engine_diagnostics(definition, machine_type)


def _unique(diagnostics: Iterable[Diagnostic]) -> Iterator[Diagnostic]:
    # Several schema branches can report the same fault (a state that is not an object fails every Type).
    seen: set[Diagnostic] = set()
    for diagnostic in diagnostics:
        if diagnostic not in seen:
            seen.add(diagnostic)
            yield diagnostic


# ------------------------------------------------------------------ 2. the schema


@functools.cache
def _schema_validator() -> Any:
    """cfn-lint's validator over its bundled ASL schema (imported on first use: cfn-lint takes seconds to load)."""
    from importlib.resources import files

    import cfnlint.data.schemas.other.step_functions as schemas
    from cfnlint.jsonschema import StandardValidator

    schema = json.loads(files(schemas).joinpath("statemachine.json").read_text())
    return StandardValidator(schema=schema)


def _uses_jsonata(node: Any) -> bool:
    if isinstance(node, dict):
        return node.get("QueryLanguage") == "JSONata" or any(_uses_jsonata(v) for v in node.values())
    if isinstance(node, list):
        return any(_uses_jsonata(v) for v in node)
    return False


def _schema_diagnostics(document: Any) -> Iterator[Diagnostic]:
    jsonata = _uses_jsonata(document)
    for err in _schema_validator().iter_errors(_with_inherited_query_language(document)):
        path = list(err.path)
        # JSONata lets any field be an expression evaluated at run time; the schema only knows literal values.
        if jsonata and isinstance(err.instance, str) and _JSONATA_EXPRESSION.match(err.instance.strip()):
            continue
        keyword = "false" if err.schema is False else err.validator
        yield _schema_diagnostic(keyword, err.validator_value, err.message, path, err.instance)


def _schema_diagnostic(keyword: str, value: Any, message: str, path: list[str | int], instance: Any) -> Diagnostic:
    parent = path[:-1]
    if keyword == "false" and path:
        # The schema forbids a field only for one query language (JSONPath's Parameters, JSONata's Output, ...).
        field = str(path[-1])
        language, other = ("JSONPath", "JSONata") if field in JSONATA_ONLY_FIELDS else ("JSONata", "JSONPath")
        return _error(
            "SCHEMA_VALIDATION_FAILED",
            f"The QueryLanguage is set to '{language}', but field '{field}' is only supported for the "
            f"'{other}' QueryLanguage",
            location(parent),
        )
    if keyword == "additionalProperties" and path and parent[-1:] == ["States"]:
        # The only rule the schema puts on a state's name is its length (80 at the top level, as AWS's quota says).
        problem = "is too long" if path[-1] else "must not be empty"
        return _error("INVALID_STATE_NAME", f"State name {path[-1]!r} {problem}", location(path))
    if keyword == "additionalProperties" and path:
        # AWS locates an unsupported field at the object that has it (seen: /States/M for a Map's TimeoutSeconds).
        return _error("SCHEMA_VALIDATION_FAILED", f"Field {path[-1]!r} is not supported", location(parent))
    if keyword == "pattern" and path[-1:] == ["Resource"] and path[-3:-2] == ["States"]:
        return _error("INVALID_RESOURCE", f"Value is not a valid resource ARN: {instance!r}", location(path))
    if keyword == "required":
        missing = re.findall(r"'([^']+)' is a required property", message)
        return _error("SCHEMA_VALIDATION_FAILED", f"These fields are required: [{', '.join(missing)}]", location(path))
    if keyword == "requiredXor":
        names = " or ".join(repr(name) for name in value)
        if path and path[-1] in value:  # both present: one report for the object, not one per field
            return _error("SCHEMA_VALIDATION_FAILED", f"Only one of {names} is allowed", location(parent))
        return _error("SCHEMA_VALIDATION_FAILED", f"One of {names} is required", location(path))
    return _error("SCHEMA_VALIDATION_FAILED", message, location(path))


def _with_inherited_query_language(document: Any) -> Any:
    """The document with a top-level ``QueryLanguage: JSONata`` written on each state that does not say its own.

    States inherit the machine's query language, but the schema decides per state; cfn-lint's rule rewrites its
    schema for this case instead, in code that is not public.
    """
    if not isinstance(document, dict) or document.get("QueryLanguage") != "JSONata":
        return document

    def fill(scope: Any) -> Any:
        if not isinstance(scope, dict) or not isinstance(scope.get("States"), dict):
            return scope
        states = {}
        for name, state in scope["States"].items():
            if isinstance(state, dict):
                state = dict(state)
                if state.get("Type") != "Succeed":  # the schema allows no QueryLanguage on Succeed
                    state.setdefault("QueryLanguage", "JSONata")
                if isinstance(state.get("Branches"), list):
                    state["Branches"] = [fill(branch) for branch in state["Branches"]]
                for key in ("ItemProcessor", "Iterator"):
                    if key in state:
                        state[key] = fill(state[key])
            states[name] = state
        return {**scope, "States": states}

    return fill(document)


# ------------------------------------------------------------------ 3. the graph


@dataclass(frozen=True)
class _Scope:
    """One ``States`` object: transitions may only name states of the same scope."""

    path: tuple[str | int, ...]
    start_at: Any
    states: dict[str, Any]


def _scopes(container: Any, path: tuple[str | int, ...] = ()) -> Iterator[_Scope]:
    if not isinstance(container, dict) or not isinstance(container.get("States"), dict):
        return
    states: dict[str, Any] = container["States"]
    yield _Scope(path, container.get("StartAt"), states)
    for name, state in states.items():
        if not isinstance(state, dict):
            continue
        state_path = (*path, "States", name)
        branches = state.get("Branches") if state.get("Type") == "Parallel" else None
        for index, branch in enumerate(branches if isinstance(branches, list) else []):
            yield from _scopes(branch, (*state_path, "Branches", index))
        if state.get("Type") == "Map":
            for key in ("ItemProcessor", "Iterator"):
                yield from _scopes(state.get(key), (*state_path, key))


def _transitions(state: dict[str, Any], state_path: tuple[str | int, ...]) -> Iterator[tuple[str, str]]:
    """(target, location) of every transition out of ``state``."""
    if isinstance(state.get("Next"), str):
        yield state["Next"], location((*state_path, "Next"))
    if state.get("Type") == "Choice":
        if isinstance(state.get("Default"), str):
            yield state["Default"], location((*state_path, "Default"))
        for index, rule in enumerate(_dicts(state.get("Choices"))):
            if isinstance(rule.get("Next"), str):
                yield rule["Next"], location((*state_path, "Choices", index, "Next"))
    for index, catcher in enumerate(_dicts(state.get("Catch"))):
        if isinstance(catcher.get("Next"), str):
            yield catcher["Next"], location((*state_path, "Catch", index, "Next"))


def _dicts(value: Any) -> list[dict[str, Any]]:
    # Keeps list positions (locations count them) while skipping malformed items the schema already reports.
    return [item if isinstance(item, dict) else {} for item in value] if isinstance(value, list) else []


def _is_terminal(state: Any) -> bool:
    return isinstance(state, dict) and (state.get("End") is True or state.get("Type") in ("Succeed", "Fail"))


def _graph_diagnostics(document: Any) -> Iterator[Diagnostic]:
    seen_names: set[str] = set()
    for scope in _scopes(document):
        for name in [*getattr(scope.states, "duplicates", ()), *scope.states]:
            if name in seen_names:
                yield _error(
                    "DUPLICATE_STATE_NAME", f"Duplicate State name: {name}", location((*scope.path, "States", name))
                )
            seen_names.add(name)
        yield from _scope_transitions(scope)


def _scope_transitions(scope: _Scope) -> Iterator[Diagnostic]:
    named: set[str] = set()
    if isinstance(scope.start_at, str):
        named.add(scope.start_at)
        if scope.start_at not in scope.states:
            yield _error(
                "MISSING_TRANSITION_TARGET",
                f"Missing 'Next' target: {scope.start_at}",
                location((*scope.path, "StartAt")),
            )
    for name, state in scope.states.items():
        if not isinstance(state, dict):
            continue
        for target, where in _transitions(state, (*scope.path, "States", name)):
            named.add(target)
            # AWS says 'Next' whichever field names the target (Default, Choices[i].Next, Catch[i].Next).
            if target not in scope.states:
                yield _error("MISSING_TRANSITION_TARGET", f"Missing 'Next' target: {target}", where)
    if not any(_is_terminal(state) for state in scope.states.values()):
        # AWS then skips the reachability walk: with no way out, every state is suspect.
        yield _error(
            "MISSING_END_STATE", "Workflow has no terminal state", location(scope.path) if scope.path else None
        )
        return
    if not isinstance(scope.start_at, str):
        return  # the schema reports the missing StartAt; every state would look unreachable
    for name in scope.states:
        if name not in named:
            yield _error(
                "MISSING_TRANSITION_TARGET",
                f'State "{name}" is not reachable.',
                location((*scope.path, "States", name)),
            )


# ------------------------------------------------------------------ 4. retriers and catchers


def _retry_catch_diagnostics(document: Any) -> Iterator[Diagnostic]:
    for scope in _scopes(document):
        for name, state in scope.states.items():
            if not isinstance(state, dict):
                continue
            state_path = (*scope.path, "States", name)
            for field in ("Retry", "Catch"):
                handlers = _dicts(state.get(field))
                for index, handler in enumerate(handlers):
                    handler_path = (*state_path, field, index)
                    yield from _states_all_rules(handler, handler_path, last=index == len(handlers) - 1)
                    if field == "Retry":
                        yield from _retrier_limits(handler, handler_path)


def _states_all_rules(handler: dict[str, Any], path: tuple[str | int, ...], *, last: bool) -> Iterator[Diagnostic]:
    errors = handler.get("ErrorEquals")
    if not isinstance(errors, list):
        return
    for index, error in enumerate(errors):
        # The wildcard would make any later retrier or catcher, and any name beside it, dead code.
        if error == "States.ALL" and (len(errors) > 1 or not last):
            yield _error(
                "SCHEMA_VALIDATION_FAILED",
                "States.ALL must appear alone and at end of list",
                location((*path, "ErrorEquals", index)),
            )


def _retrier_limits(retrier: dict[str, Any], path: tuple[str | int, ...]) -> Iterator[Diagnostic]:
    def integer_in(field: str, low: int, high: int) -> Iterator[Diagnostic]:
        value = retrier.get(field)
        if field in retrier and not (_is_int(value) and low <= value <= high):
            yield _error(
                "SCHEMA_VALIDATION_FAILED",
                f"{field} must be an integer from {low} to {high}, got {value!r}",
                location((*path, field)),
            )

    yield from integer_in("IntervalSeconds", 1, MAX_INTERVAL_SECONDS)
    yield from integer_in("MaxAttempts", 0, MAX_ATTEMPTS)
    yield from integer_in("MaxDelaySeconds", 1, MAX_DELAY_SECONDS)
    backoff = retrier.get("BackoffRate")
    if "BackoffRate" in retrier and not (_is_number(backoff) and backoff >= 1.0):
        yield _error(
            "SCHEMA_VALIDATION_FAILED",
            f"BackoffRate must be a number of at least 1.0, got {backoff!r}",
            location((*path, "BackoffRate")),
        )
    if "JitterStrategy" in retrier and retrier["JitterStrategy"] not in JITTER_STRATEGIES:
        yield _error(
            "SCHEMA_VALIDATION_FAILED",
            f"JitterStrategy must be one of {', '.join(JITTER_STRATEGIES)}, got {retrier['JitterStrategy']!r}",
            location((*path, "JitterStrategy")),
        )


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------ 5. warnings


def _warnings(document: Any) -> Iterator[Diagnostic]:
    for scope in _scopes(document):
        for name, state in scope.states.items():
            if not isinstance(state, dict):
                continue
            state_path = (*scope.path, "States", name)
            for field in PAYLOAD_TEMPLATES:
                yield from _no_dollar(state.get(field), (*state_path, field))
            if state.get("Type") == "Pass" and _has_path_key(state.get("Result")):
                yield Diagnostic(
                    "WARNING",
                    "PASS_RESULT_IS_STATIC",
                    "Result is static: a Pass state's Result does not read paths ('.$' fields); use Parameters",
                    location((*state_path, "Result")),
                )


def _no_dollar(template: Any, path: tuple[str | int, ...]) -> Iterator[Diagnostic]:
    if isinstance(template, dict):
        for key, value in template.items():
            if isinstance(value, str) and not key.endswith(".$") and _PATH_LIKE.match(value):
                yield Diagnostic(
                    "WARNING",
                    "NO_DOLLAR",
                    f"The value of field {key!r} looks like a path or intrinsic function, "
                    f"but the field name does not end with '.$': it is passed as the literal {value!r}",
                    location((*path, key)),
                )
            else:
                yield from _no_dollar(value, (*path, key))
    elif isinstance(template, list):
        for index, item in enumerate(template):
            yield from _no_dollar(item, (*path, index))


def _has_path_key(node: Any) -> bool:
    if isinstance(node, dict):
        return any(k.endswith(".$") or _has_path_key(v) for k, v in node.items())
    if isinstance(node, list):
        return any(_has_path_key(v) for v in node)
    return False


# ------------------------------------------------------------------ 6. the embedded engine


def _engine_diagnostics(definition: str, machine_type: str) -> Iterator[Diagnostic]:
    """What moto's ASL parser refuses (CreateStateMachine on the embedded target refuses the same)."""
    # moto's Step Functions parser (an ANTLR grammar) takes seconds to import: only when it is needed.
    from moto.stepfunctions.parser.asl.static_analyser.express_static_analyser import ExpressStaticAnalyser
    from moto.stepfunctions.parser.asl.static_analyser.static_analyser import StaticAnalyser

    # The base analyser has no rule of its own: parsing is the check. The EXPRESS one adds that type's rules.
    analyser = ExpressStaticAnalyser() if machine_type == "EXPRESS" else StaticAnalyser()
    try:
        analyser.analyse(definition)
    except Exception as exc:  # moto raises ASLParserException, ValueError and others: all mean "refused"
        yield _error("SCHEMA_VALIDATION_FAILED", _engine_message(exc))


def _engine_message(exc: Exception) -> str:
    message = str(exc) or repr(exc)
    # moto's EXPRESS checks wrap their text the way CreateStateMachine's error does; keep the text only.
    match = re.match(r"Invalid State Machine Definition: '[A-Z_]+: (.*?)'?$", message, re.DOTALL)
    return match.group(1) if match else message


# ------------------------------------------------------------------ HTTP (Step Functions' JSON 1.0 protocol)

CONTENT_TYPE = "application/x-amz-json-1.0"


def http_response(body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) answering a ValidateStateMachineDefinition request body, as AWS's JSON 1.0 does."""
    try:
        request = json.loads(body or b"{}")
        if not isinstance(request, dict):
            raise ValueError("the request body is not a JSON object")
    except ValueError as exc:
        # AWS's JSON protocol refuses a body it cannot read before looking at any member.
        return _http_error(RequestError("SerializationException", f"Could not parse the request body: {exc}"))
    try:
        answer = validate_state_machine_definition(request)
    except RequestError as exc:
        return _http_error(exc)
    return _http(200, answer)


def _http_error(error: RequestError) -> tuple[int, list[tuple[str, str]], bytes]:
    return _http(400, {"__type": error.error_type, "message": error.message})


def _http(status: int, payload: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    data = json.dumps(payload).encode()
    headers = [
        ("Content-Type", CONTENT_TYPE),
        ("Content-Length", str(len(data))),
        ("x-amzn-RequestId", str(uuid.uuid4())),
    ]
    return status, headers, data
