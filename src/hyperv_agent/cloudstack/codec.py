"""JSON bytes <-> typed commands and answers: the only place that knows Gson's envelopes.

Requests (protocol §2.3): every command is POSTed as the bare command object, except
StartupCommand, which arrives as a ``Command[]`` envelope holding one
StartupRoutingCommand, and the state report, whose body is ``{}``. A one-element envelope
``[{"<FQCN>": {...}}]`` (or a bare ``{"<FQCN>": {...}}``) is accepted for any command.

Replies (protocol §2.8, §4.3, §4.5): answers go out as ``[{"<answer FQCN>": {...}}]`` with null
fields left out (Gson's default); the startup reply is a ``Command[]``; the state report
a bare array of ``{"<vm name>": "<PowerState>"}``.

Every malformed request becomes a :class:`CodecError` whose ``field_path`` says where,
in the body's own terms: ``vm.cpus``, ``vm.disks[0].data``,
``srcTO["org.apache.cloudstack.storage.to.TemplateObjectTO"].imageDataStore``.
Error messages never quote the offending value (it may be a password); they name its
JSON type.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring_ascii as _json_string
from typing import Any, Final, TypeAlias, TypeVar

from pydantic import ValidationError
from pydantic_core import ErrorDetails, from_json, to_json

from hyperv_agent import logs
from hyperv_agent.cloudstack import bounds, names
from hyperv_agent.cloudstack.answers import ANSWER_TYPES, Answer
from hyperv_agent.cloudstack.base import Command, WireModel
from hyperv_agent.cloudstack.commands import (
    COMMAND_TYPES,
    StartupRoutingCommand,
    StartupStorageCommand,
)
from hyperv_agent.cloudstack.enums import PowerState
from hyperv_agent.errors import AgentError

Loc: TypeAlias = tuple[str | int, ...]
_M = TypeVar("_M", bound=WireModel)

# Classes that may stand in an envelope posted to an action other than their own.
_ENVELOPE_CLASSES: Final[Mapping[str, tuple[str, ...]]] = {
    names.STARTUP_COMMAND: (names.STARTUP_ROUTING_COMMAND,),
}
_ENVELOPE_ONLY: Final = frozenset({names.STARTUP_ROUTING_COMMAND, names.STARTUP_STORAGE_COMMAND})
_IDENTIFIER: Final = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_WRAPPER_HINT: Final = 'expected a one-key object {"<Java class name>": {...}}'
_MAX_QUOTED: Final = 120
#: A string with none of these holds no password= and no user:password@ (a template's
#: origUrl on an authenticated web server, which CopyCmdAnswer's newData echoes).
_SECRET_HINTS: Final = ("pass", "secret", "@")


class CodecError(AgentError):
    """A body that is not the JSON of the command it claims to be.

    ``field_path`` is where in the body ("" for the body as a whole), ``message`` what is
    wrong there.
    """

    def __init__(self, field_path: str, message: str) -> None:
        self.field_path = field_path
        self.message = message
        #: What the body was read as, when it was (``raw_command`` then need not read it
        #: again); None when it was not.
        self.document: object = None
        self.read = False
        super().__init__(f"{field_path or 'body'}: {message}")


class UnknownCommand(CodecError):
    """The action names no command this agent knows (the server answers HTTP 404)."""

    def __init__(self, fqcn: str) -> None:
        super().__init__("", f"no command class {_quote(fqcn)} is known to this agent")
        self.fqcn = fqcn


# --- requests -----------------------------------------------------------------------------


def is_known(fqcn: str) -> bool:
    """Whether a body POSTed to the action ``fqcn`` can be decoded."""
    return fqcn in COMMAND_TYPES and fqcn not in _ENVELOPE_ONLY


def decode_command(fqcn: str, body: bytes) -> Command:
    """The typed command in ``body``, POSTed to the action ``fqcn``.

    Raises :class:`UnknownCommand` for an action :func:`is_known` rejects and
    :class:`CodecError` for any body that is not that command.
    For ``StartupCommand`` the result is the StartupRoutingCommand of the envelope.
    """
    if not is_known(fqcn):
        raise UnknownCommand(fqcn)
    if bounds.too_many_members(body):
        raise CodecError("", f"more than {bounds.MAX_MEMBERS} array elements and object "
                         "members; a command holds no more")
    document = _parse_json(body)
    try:
        oversized = bounds.first_oversized(document, len(body))
        if oversized is not None:
            raise CodecError(format_path(oversized.loc), oversized.message)
        cls, payload, prefix = _open_envelope(fqcn, document)
        return _validate(cls, payload, prefix)
    except CodecError as error:  # read whole: the failed answer echoes from it
        error.document, error.read = document, True
        raise


def encode_command(command: Command) -> bytes:
    """The bare command object, as the management server POSTs it."""
    return _dump(command)


def _open_envelope(fqcn: str, document: object) -> tuple[type[Command], object, Loc]:
    if isinstance(document, list):
        return _from_array(fqcn, document)
    if fqcn in _ENVELOPE_CLASSES:
        expected = " or ".join(_ENVELOPE_CLASSES[fqcn])
        raise CodecError("", f'expected the Command[] envelope [{{"{expected}": {{...}}}}]')
    if not isinstance(document, dict):
        raise CodecError("", f"expected a JSON object (the command), got {_kind(document)}")
    if list(document) == [fqcn]:
        return COMMAND_TYPES[fqcn], document[fqcn], (fqcn,)
    return COMMAND_TYPES[fqcn], document, ()


def _from_array(fqcn: str, items: list[Any]) -> tuple[type[Command], object, Loc]:
    if len(items) != 1:
        raise CodecError("", f"a command envelope holds exactly one command, not {len(items)}")
    element = items[0]
    if not (isinstance(element, dict) and len(element) == 1):
        raise CodecError("[0]", f"{_WRAPPER_HINT}, got {_kind(element)}")
    ((key, payload),) = element.items()
    allowed = _ENVELOPE_CLASSES.get(fqcn, (fqcn,))
    if key not in allowed:
        raise CodecError("[0]", f"class {_quote(key)} is not allowed here; expected {allowed[0]}")
    return COMMAND_TYPES[key], payload, (0, key)


# --- answers and other replies ------------------------------------------------------------


def answer_class(fqcn: str) -> type[Answer]:
    """The answer class the management server casts the answer to the command ``fqcn``
    to. Commands without an answer class of their own (and unknown ones) get the generic
    ``com.cloud.agent.api.Answer``; so do StartupCommand and the state report, whose
    replies are not Answer[] (the MS reads an Answer there as "no reply": the host is
    not added, the ping carries no report)."""
    return ANSWER_TYPES[names.ANSWER_FOR.get(fqcn, names.ANSWER)]


def failed_answer(fqcn: str, details: str,
                  source: Command | Mapping[str, Any] | None = None,
                  fields: Mapping[str, Any] | None = None) -> Answer:
    """The answer class of the command ``fqcn`` with ``result`` false and ``details``,
    carrying what that class echoes from ``source`` (the decoded command, or the fields
    of a body that did not decode, see :func:`raw_command`) and the ``fields`` the
    failure names (``Answer.failed``)."""
    return answer_class(fqcn).failed(details, source, fields)


def raw_command(fqcn: str, body: bytes, failed: CodecError | None = None
                ) -> Mapping[str, Any] | None:
    """The command object of a body that may not decode, as plain JSON: the bare object,
    or the one command inside an envelope; None when there is no such object, or when the
    body holds more members than a command may (it is not parsed). ``failed``: the error
    ``decode_command`` raised for the body, whose reading of it is taken rather than
    reading a body of megabytes twice."""
    if failed is not None and failed.read:
        document = failed.document
    elif bounds.too_many_members(body):
        return None
    else:
        try:
            document = _parse_json(body)
        except CodecError:
            return None
    if isinstance(document, list) and len(document) == 1 and isinstance(document[0], dict):
        document = next(iter(document[0].values()), None) if len(document[0]) == 1 else None
    elif isinstance(document, dict) and list(document) == [fqcn]:
        document = document[fqcn]
    return document if isinstance(document, dict) else None


def encode_answers(answers: Sequence[Answer]) -> bytes:
    """``[{"<answer FQCN>": {...}}, ...]``, null fields left out, and every password
    that an echoed storage URL or pool path carried replaced by ``*****``."""
    return _dump(_without_passwords([_wrapped_json(answer) for answer in answers]))


def decode_answers(body: bytes) -> list[Answer]:
    """The answers of an ``Answer[]`` reply (what the management server reads)."""
    document = _parse_json(body)
    if not isinstance(document, list):
        raise CodecError("", f"expected the Answer[] array, got {_kind(document)}")
    return [_decode_answer(index, element) for index, element in enumerate(document)]


def encode_startup_reply(
    routing: StartupRoutingCommand, storage: StartupStorageCommand | None = None
) -> bytes:
    """The StartupCommand reply: ``[{"...StartupRoutingCommand": {...}}, {"...Storage...}]``."""
    commands: list[Command] = [routing] if storage is None else [routing, storage]
    return _dump([_wrapped(command) for command in commands])


def encode_state_report(states: Mapping[str, PowerState]) -> bytes:
    """The state report reply: a bare array ``[{"i-2-17-VM": "PowerOn"}, ...]`` (protocol §4.5).

    Written as text: a report of thousands of VMs builds no object per VM for the
    collector to trace (names are escaped as JSON strings, ASCII only, as ``_dump`` does)."""
    members = ['{%s:"%s"}' % (_json_string(vm_name), _POWER_STATES[state])  # noqa: UP031
               for vm_name, state in states.items()]
    return f"[{','.join(members)}]".encode("ascii")


#: Each power state's name on the wire, by the state (or its name).
_POWER_STATES: Final = {state: state.value for state in PowerState}


def _decode_answer(index: int, element: object) -> Answer:
    if not (isinstance(element, dict) and len(element) == 1):
        raise CodecError(f"[{index}]", f"{_WRAPPER_HINT}, got {_kind(element)}")
    ((key, payload),) = element.items()
    answer_class = ANSWER_TYPES.get(key)
    if answer_class is None:
        raise CodecError(f"[{index}]", f"no answer class {_quote(key)} is known")
    return _validate(answer_class, payload, (index, key))


# --- JSON and models ----------------------------------------------------------------------


def _parse_json(body: bytes) -> object:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("latin-1")  # what Java's StringEntity sends (protocol §2.3)
    try:
        document = from_json(text.removeprefix("\ufeff"), allow_inf_nan=False)
    except ValueError as error:  # also lone surrogates, numbers too long, nesting too deep
        raise CodecError("", f"not JSON: {error}") from None
    if not _all_finite(document):
        raise CodecError("", "not JSON: a number is out of range")
    return document


def _all_finite(value: object) -> bool:
    """No number in the document overflowed to infinity (``1e999``)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_all_finite(item) for item in value)
    if isinstance(value, dict):
        return all(_all_finite(item) for item in value.values())
    return True


def _validate(cls: type[_M], payload: object, prefix: Loc) -> _M:
    try:
        return cls.model_validate(payload)
    except ValidationError as error:
        raise _codec_error(error, prefix) from None


def _codec_error(error: ValidationError, prefix: Loc) -> CodecError:
    problems = error.errors(include_url=False)
    first = problems[0]
    message = _describe(first)
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return CodecError(format_path((*prefix, *first["loc"])), message)


def _describe(problem: ErrorDetails) -> str:
    kind = problem["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid":
        return _describe_tag(problem.get("ctx", {}))
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a JSON object, got {_kind(problem['input'])}"
    if kind == "list_type":
        return f"expected a JSON array, got {_kind(problem['input'])}"
    reason = problem["msg"].removeprefix("Value error, ")
    return f"{reason} (got {_kind(problem['input'])})"


def _describe_tag(context: Mapping[str, Any]) -> str:
    tag, expected = str(context.get("tag", "")), context.get("expected_tags", "")
    if not tag:
        return f"{_WRAPPER_HINT} naming one of: {expected}"
    return f"unknown class {_quote(tag)}; expected one of: {expected}"


def format_path(loc: Loc) -> str:
    """``("vm", "disks", 0, "data")`` -> ``vm.disks[0].data``; odd keys as ``["a.b"]``."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif _IDENTIFIER.fullmatch(item):
            parts.append(f".{item}" if parts else item)
        else:
            parts.append(f"[{json.dumps(item[:_MAX_QUOTED])}]")
    return "".join(parts)


def _kind(value: object) -> str:
    """The JSON type of a value, for messages that must not quote it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _quote(text: str) -> str:
    return repr(text if len(text) <= _MAX_QUOTED else text[:_MAX_QUOTED] + "...")


def _wrapped(model: Command | Answer) -> dict[str, WireModel]:
    return {type(model).FQCN: model}


def _wrapped_json(answer: Answer) -> dict[str, Any]:
    return {type(answer).FQCN: answer.model_dump(mode="json", by_alias=True, exclude_none=True)}


def _without_passwords(value: Any) -> Any:
    """Every string in a JSON document with its ``password=`` values and the passwords of
    its ``user:password@`` URLs redacted."""
    if isinstance(value, str):
        lowered = value.lower()
        return logs.redact(value) if any(h in lowered for h in _SECRET_HINTS) else value
    if isinstance(value, list):
        return [_without_passwords(item) for item in value]
    if isinstance(value, dict):
        return {key: _without_passwords(item) for key, item in value.items()}
    return value


def _dump(document: object) -> bytes:
    """Compact JSON; null fields left out; a NaN or infinite number written as null."""
    return to_json(document, by_alias=True, exclude_none=True, inf_nan_mode="null",
                   ensure_ascii=True)
