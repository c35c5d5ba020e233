"""What a method implementation of the emulator receives, and how it refuses.

A method implementation is a plain function ``(Call) -> out-parameters``. It reads and
changes the host only through ``call.txn``, and writes files only through ``call.files``
(work the backend does as it applies the call's changes); raising ``MethodError`` discards
every change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hyperv_agent.cim import cimxml
from hyperv_agent.cim.api import (
    CimInstance,
    CimProperty,
    CimValue,
    ObjectPath,
    OutValue,
    coerce_value,
)
from hyperv_agent.cim.classdecl import MethodDecl
from hyperv_agent.emulator.codes import ReturnCode
from hyperv_agent.emulator.schema import ClassDef, lookup
from hyperv_agent.emulator.store import Record, Transaction
from hyperv_agent.errors import CimError

if TYPE_CHECKING:
    from hyperv_agent.emulator.host import EmulatedHost
    from hyperv_agent.emulator.jobs import Queue


class MethodError(Exception):
    """A refusal with a Hyper-V return code.

    ``immediate`` refusals come back as the method's ReturnValue even when jobs are
    asynchronous (parameter checks); the others end the method's job in Exception.
    ``shows``: properties of its class the failed job shows besides its error, once it
    has ended (a Msvm_StorageJob's Child and Parent, where a chain of disks broke).
    """

    def __init__(self, code: int, description: str, *, immediate: bool = False,
                 shows: Mapping[str, CimValue] | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.immediate = immediate
        self.shows = dict(shows or {})


#: A converted method argument: text, integer, boolean, path, or an array of those.
Arg = str | int | bool | ObjectPath | tuple[str | int | bool | ObjectPath, ...] | None


@dataclass(frozen=True)
class Embedded:
    """An embedded instance argument, checked against the schema."""

    class_def: ClassDef
    values: dict[str, CimValue]  # canonical property name -> value (only those given)

    def get(self, name: str) -> CimValue:
        prop = self.class_def.prop(name)
        return self.values.get(prop.name) if prop else None

    def text(self, name: str) -> str | None:
        value = self.get(name)
        return value if isinstance(value, str) else None

    def integer(self, name: str) -> int | None:
        value = self.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.get(name)
        return tuple(v for v in value if isinstance(v, str)) if isinstance(value, tuple) else ()

    def is_a(self, class_name: str) -> bool:
        return self.class_def.is_a(class_name)


def parse_embedded(text: str, parameter: str) -> Embedded:
    """Parse and check one embedded-instance argument; 32773 for anything Hyper-V rejects."""
    try:
        class_name, props = cimxml.read_instance(text)
    except CimError as error:
        raise _invalid(f"{parameter}: {error}") from None
    class_def = lookup(class_name)
    if class_def is None:
        raise _invalid(f"{parameter}: unknown class {class_name}")
    values: dict[str, CimValue] = {}
    for prop in props:
        definition = class_def.prop(prop.name)
        if definition is None:
            raise _invalid(f"{parameter}: {class_def.name} has no property {prop.name}")
        try:
            values[definition.name] = coerce_value(prop, prop.value)
        except CimError as error:
            raise _invalid(f"{parameter}: {error}") from None
        _check_range(parameter, definition.name, definition.cim_type, values[definition.name])
    return Embedded(class_def, values)


def _check_range(parameter: str, name: str, cim_type: str, value: CimValue) -> None:
    """An integer outside its CIM type (uint16 70000, uint8 -1) is no value of it."""
    bits = cim_type.removeprefix("uint").removeprefix("sint")
    if bits == cim_type or not bits.isdecimal():
        return
    width = int(bits)
    low, high = (0, 2**width - 1) if cim_type.startswith("u") else (
        -(2 ** (width - 1)), 2 ** (width - 1) - 1)
    for item in value if isinstance(value, tuple) else (value,):
        if isinstance(item, int) and not isinstance(item, bool) and not low <= item <= high:
            raise _invalid(f"{parameter}: {name} {item} is outside {cim_type} ({low}..{high})")


def _invalid(description: str) -> MethodError:
    return MethodError(ReturnCode.INVALID_PARAMETER, description, immediate=True)


@dataclass
class Call:
    """One method invocation against the emulated host."""

    host: EmulatedHost
    txn: Transaction
    method: MethodDecl
    target: Record | None
    args: Mapping[str, Arg]  # keyed lower-case
    queue: Queue | None = None  # set by a handler whose job may wait for a free slot
    writes: str | None = None  # set by a handler whose job writes this file (held open)
    #: Set by a handler whose job writes files: the writing, done (``backend``) as the
    #: call's changes are applied, which may raise MethodError as the handler does; never
    #: for a job an injected fault fails, hangs or loses undone, so that files are as
    #: they were before the call, as its records are.
    files: Callable[[], object] | None = None

    def arg(self, name: str) -> Arg:
        return self.args.get(name.lower())

    def text(self, name: str) -> str | None:
        value = self.arg(name)
        return value if isinstance(value, str) else None

    def integer(self, name: str) -> int | None:
        value = self.arg(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def boolean(self, name: str) -> bool | None:
        value = self.arg(name)
        return value if isinstance(value, bool) else None

    def path(self, name: str) -> ObjectPath | None:
        value = self.arg(name)
        return value if isinstance(value, ObjectPath) else None

    def paths(self, name: str) -> tuple[ObjectPath, ...]:
        value = self.arg(name)
        if isinstance(value, ObjectPath):
            return (value,)
        return tuple(v for v in value if isinstance(v, ObjectPath)) if isinstance(
            value, tuple) else ()

    def integers(self, name: str) -> tuple[int, ...] | None:
        value = self.arg(name)
        if value is None:
            return None
        items = value if isinstance(value, tuple) else (value,)
        return tuple(v for v in items if isinstance(v, int) and not isinstance(v, bool))

    def embedded(self, name: str) -> Embedded:
        text = self.text(name)
        if text is None:
            raise _invalid(f"{name} is required")
        return parse_embedded(text, name)

    def embedded_list(self, name: str) -> list[Embedded]:
        value = self.arg(name)
        items = value if isinstance(value, tuple) else () if value is None else (value,)
        if not all(isinstance(item, str) for item in items):
            raise _invalid(f"{name} must be embedded instances")
        return [parse_embedded(str(item), name) for item in items]

    def require(self, path: ObjectPath | None, what: str) -> Record:
        """The record at ``path`` or a refusal naming what was missing."""
        record = self.txn.get(path) if path is not None else None
        if record is None:
            raise MethodError(
                ReturnCode.INVALID_PARAMETER, f"{what} not found: {path}", immediate=True
            )
        return record


Handler = Callable[[Call], Mapping[str, OutValue]]
#: Method implementations keyed by (class name, method name), both lower-case.
HANDLERS: dict[tuple[str, str], Handler] = {}


def handles(class_name: str, method: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        HANDLERS[(class_name.lower(), method.lower())] = handler
        return handler

    return register


def instance_of(
    record: Record, values: Mapping[str, CimValue] | None = None, host: str = "."
) -> CimInstance:
    """A CimInstance view of a record (optionally with computed values laid over it)."""
    merged = {**record.values, **(values or {})}
    props = [
        CimProperty(p.name, p.cim_type, p.is_array, merged.get(p.name))
        for p in record.class_def.properties.values()
    ]
    class_def = record.class_def
    path = dataclasses.replace(record.path, host=host)
    return CimInstance.build(class_def.name, props, path, class_def.namespace, class_def.ancestors)
