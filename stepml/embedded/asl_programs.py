"""Each execution's program from a parse done once per definition, not once per execution.

moto's Step Functions engine (LocalStack's interpreter) parses the definition with an ANTLR grammar in pure
Python at the start of every execution: about 1 to 2 s of CPU for the pipeline's 70 KB definition, the largest
single cost of a run in the local AWS. :func:`install` makes the engine's execution worker take a copy of a
program parsed earlier from the same definition text, and CreateStateMachine and UpdateStateMachine, which
parse the definition to check it, keep that parse for the executions. A deep copy (under 0.1 s) rather than
the parsed program itself, because an execution's components are the engine's to use: sharing one program
between concurrent executions would rely on every component keeping its state in the execution's environment,
which the engine does not promise.

Nothing differs from AWS or from moto without the cache: the same text gives an equal program; a changed
definition (UpdateStateMachine, a reload) is other text and parses anew. The cache holds the few definitions a
stack has (LRU, :data:`MAX_DEFINITIONS`).
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from typing import Any

MAX_DEFINITIONS = 16

_INSTALLED = threading.Lock()
_done = False
_lock = threading.Lock()
_programs: OrderedDict[str, Any] = OrderedDict()
parses = 0  # how many times a definition was parsed (for the tests)


def _parsed(definition: str) -> Any:
    """The program parsed from ``definition``, parsing it only the first time (moto's errors if refused)."""
    global parses
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    # One lock around the parse too: executions started together (a campaign of runs, a burst of uploads)
    # wait for the one parse rather than each making its own.
    with _lock:
        parsed = _programs.get(definition)
        if parsed is None:
            parsed, _tree = AmazonStateLanguageParser.parse(definition)
            parses += 1
            _programs[definition] = parsed
            while len(_programs) > MAX_DEFINITIONS:
                _programs.popitem(last=False)
        _programs.move_to_end(definition)
    return parsed


def program_for(definition: str) -> Any:
    """A fresh copy of the program moto's parser makes of ``definition``, parsing it only the first time."""
    return copy.deepcopy(_parsed(definition))


def install() -> None:
    """Make moto's execution worker (in this process) take its program from :func:`program_for`."""
    global _done
    with _INSTALLED:
        if _done:
            return
        from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker
        from moto.stepfunctions.parser.models import StepFunctionsParserBackend

        def _get_evaluation_entrypoint(self: Any) -> Any:
            return program_for(self._evaluation_details.state_machine_details.definition)

        moto_validate = StepFunctionsParserBackend._validate_definition

        def _validate_definition(definition: str) -> None:
            try:
                _parsed(definition)
            except Exception:  # moto's own check says what is wrong, in its error's shape
                moto_validate(definition)
                raise

        ExecutionWorker._get_evaluation_entrypoint = _get_evaluation_entrypoint  # type: ignore[method-assign]
        StepFunctionsParserBackend._validate_definition = staticmethod(_validate_definition)  # type: ignore[method-assign]
        _done = True
