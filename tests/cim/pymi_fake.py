"""A PyMI session serving an emulated host: what ``cim/local.py`` is tested against.

Not a mock: it implements ``MiSession`` with the data model PyMI hands to Python and
answers every operation from a real ``EmulatorCim``, as local WMI answers from the host.
Instances are elements of (name, MI type, value); references and embedded objects are
instances; datetimes are ``datetime`` without their UTC offset and intervals
``timedelta``; char16 is an int, a real a float. What follows PyMI's source
(cloudbase/PyMI, ``Utils.cpp`` Py2MI/MI2Py and ``MI++.cpp`` Instance::GetPath):

* a path is written only for an instance with a server name; a keyless class has none
  ("Cannot get path of an instance without key elements"), nor a class with reference
  keys ("Unsupported key type in path generation");
* a Python value is converted for an element by the element's type: ints for integer,
  real, char16 and string elements, strings for string and integer elements, instances
  for reference and instance elements, tuples or lists for arrays; anything else (a
  datetime, a float) is a TypeError, as PyMI cannot pass it;
* an int is read as Windows' C reads it, through a long or unsigned long (32 bits) or
  their 64-bit forms, and cast to the element's width with no range check: a value too
  wide for the element wraps (70000 for a uint16 is 4464); one the read itself cannot
  hold leaves Python's OverflowError pending, which surfaces as a SystemError;
* failures are ``FakeMiError({"mi_result", "error_code", "message"})``, the codes those
  WMI reports for the emulator's error (``faults.describe``).
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hyperv_agent.cim import faults, values
from hyperv_agent.cim.api import (
    CimInstance,
    CimProperty,
    CimValue,
    InValue,
    MethodResult,
    ObjectPath,
    OutValue,
)
from hyperv_agent.cim.classdecl import OBJECT, CimClass
from hyperv_agent.cim.local import MI_ARRAY, MiClass, MiInstance, cim_type_of, mi_type_of
from hyperv_agent.emulator import classes
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.errors import CimError

_T = TypeVar("_T")
_INTEGERS = {mi_type_of(t, False) for t in ("uint8", "sint8", "uint16", "sint16", "uint32",
                                             "sint32", "uint64", "sint64")}
_REALS = {mi_type_of("real32", False), mi_type_of("real64", False)}
_STRING, _BOOLEAN = mi_type_of("string", False), mi_type_of("boolean", False)
_CHAR16, _REFERENCE = mi_type_of("char16", False), mi_type_of("reference", False)
_INSTANCE = mi_type_of(OBJECT, False)
NO_SUCH_PROPERTY = 12  # MI_RESULT_NO_SUCH_PROPERTY


class FakeMiError(Exception):
    """PyMI's ``mi.error``: ``args[0]`` is a dict."""


def _failure(error: CimError) -> FakeMiError:
    status, hresult = faults.describe(error)
    return FakeMiError({"mi_result": status, "error_code": hresult, "message": str(error)})


@dataclass
class Element:
    name: str
    mi_type: int
    value: object


class FakeInstance:
    """PyMI's ``mi.Instance``: elements, class, namespace (with slashes, as MI gives it)
    and server; ``keys`` are the class's key names, which MI knows from the class."""

    def __init__(self, class_name: str, namespace: str, server: str,
                 elements: list[Element], keys: Sequence[str] = ()) -> None:
        self.class_name, self.server, self.elements = class_name, server, elements
        self.namespace = namespace.replace("\\", "/")
        self.keys = tuple(keys)

    def __len__(self) -> int:
        return len(self.elements)

    def element(self, name: str) -> Element:
        found = next((e for e in self.elements if e.name.lower() == name.lower()), None)
        if found is None:
            raise FakeMiError({"mi_result": NO_SUCH_PROPERTY, "error_code": 0,
                               "message": "MI_RESULT_NO_SUCH_PROPERTY"})
        return found

    def get_element(self, key: int | str, /) -> tuple[str, int, object]:
        found = self.elements[key] if isinstance(key, int) else self.element(key)
        return found.name, found.mi_type, found.value

    def __setitem__(self, key: str, value: object, /) -> None:
        found = self.element(key)
        found.value = _converted(found.mi_type, value)

    def get_class_name(self) -> str:
        return self.class_name

    def get_namespace(self) -> str:
        return self.namespace

    def get_server_name(self) -> str:
        return self.server

    def get_path(self) -> str:
        if not self.server:
            return ""
        if not self.keys:
            raise FakeMiError({"message": "Cannot get path of an instance without key elements"})
        keys = ",".join(f"{name}={_key_text(self.element(name))}" for name in self.keys)
        namespace = self.namespace.replace("/", "\\")
        return f"\\\\{self.server}\\{namespace}:{self.class_name}.{keys}"

    def object_path(self) -> ObjectPath:
        """The path its key elements name (what WMI reads from a key or reference)."""
        keys = tuple((name, str(self.element(name).value)) for name in self.keys
                     if self.element(name).value is not None)
        return ObjectPath(self.class_name, keys, self.namespace.replace("/", "\\"),
                          self.server or ".")


def _key_text(element: Element) -> str:
    if element.mi_type == _STRING:
        text = str(element.value or "").replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if element.mi_type in _INTEGERS:
        return str(element.value)
    raise FakeMiError({"message": "Unsupported key type in path generation"})


def _converted(mi_type: int, value: object) -> object:
    """``value`` as PyMI converts it for an element of ``mi_type``; TypeError otherwise."""
    if value is None:
        return None
    if mi_type >= MI_ARRAY:
        if not isinstance(value, tuple | list):
            raise TypeError("an array element takes a tuple or a list")
        return tuple(_converted(mi_type - MI_ARRAY, item) for item in value)
    if isinstance(value, bool):
        if mi_type != _BOOLEAN:
            raise TypeError("a boolean for another type")
        return value
    if isinstance(value, int):
        return _from_int(mi_type, value)
    if isinstance(value, str):
        return _from_str(mi_type, value)
    if isinstance(value, FakeInstance) and mi_type in (_REFERENCE, _INSTANCE):
        return value
    raise TypeError(f"PyMI cannot convert {type(value).__name__} to MI type {mi_type}")


#: How Py2MI reads an int for each type: (the C read's bounds, the element's bits, signed).
_LONG, _ULONG = (-2**31, 2**31 - 1), (0, 2**32 - 1)
_C_READS = {
    mi_type_of(name, False): (read, bits, signed) for name, read, bits, signed in (
        ("boolean", _LONG, 0, False), ("char16", _LONG, 16, False),
        ("uint8", _ULONG, 8, False), ("sint8", _LONG, 8, True),
        ("uint16", _ULONG, 16, False), ("sint16", _LONG, 16, True),
        ("uint32", _ULONG, 32, False), ("sint32", _LONG, 32, True),
        ("uint64", (0, 2**64 - 1), 64, False), ("sint64", (-2**63, 2**63 - 1), 64, True))}


def _from_int(mi_type: int, value: int) -> object:
    if mi_type in _C_READS:
        (low, high), bits, signed = _C_READS[mi_type]
        if not low <= value <= high:
            raise SystemError(f"PyMI left an OverflowError pending: {value} for MI type "
                              f"{mi_type}")
        if mi_type == _BOOLEAN:
            return value != 0
        wrapped = value % 2**bits
        return wrapped - 2**bits if signed and wrapped >= 2**(bits - 1) else wrapped
    if mi_type in _REALS:
        return float(value)
    if mi_type == _STRING:
        return str(value)
    raise TypeError(f"an int for MI type {mi_type}")


def _from_str(mi_type: int, value: str) -> object:
    if mi_type == _STRING:
        return value
    if mi_type in _INTEGERS or mi_type in _REALS:
        try:
            number = int(value)
        except ValueError:
            raise TypeError(f"{value!r} is not an integer") from None
        return _from_int(mi_type, number)  # PyMI reads the text as an int, then as one
    raise TypeError(f"a string for MI type {mi_type}")


@dataclass(frozen=True)
class FakeClass:
    """PyMI's ``mi.Class``: here, the emulated host's declaration of it."""

    decl: CimClass
    server: str

    def get_class_name(self) -> str:
        return self.decl.name


class FakeMiSession:
    """``MiSession`` answered by ``emulator``; its operations are called from worker
    threads (as the adapter calls PyMI) and run on ``loop``, where the emulator lives."""

    error = FakeMiError

    def __init__(self, emulator: EmulatorCim, loop: asyncio.AbstractEventLoop) -> None:
        self.emulator, self.loop = emulator, loop
        self.server = emulator.host.name
        self.closed = False
        self.classes_fetched: list[str] = []  # get_class calls (round trips on a host)

    def _run(self, work: Coroutine[Any, Any, _T]) -> _T:
        try:
            return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=60)
        except CimError as error:
            raise _failure(error) from None

    # --- MiSession --------------------------------------------------------------------------

    def query(self, namespace: str, wql: str) -> list[MiInstance]:
        found = self._run(self.emulator.query(wql, namespace))
        return [self._instance(item) for item in found]

    def get_instance(self, namespace: str, key: MiInstance) -> MiInstance | None:
        assert isinstance(key, FakeInstance)
        path = ObjectPath(key.class_name, key.object_path().keys, namespace)
        return self._instance(self._run(self.emulator.get(path)))

    def get_class(self, namespace: str, class_name: str) -> MiClass:
        self.classes_fetched.append(class_name)
        return FakeClass(self._run(self.emulator.get_class(class_name, namespace)), self.server)

    def new_instance(self, mi_class: MiClass) -> MiInstance:
        assert isinstance(mi_class, FakeClass)
        return self._instance(mi_class.decl.new_instance(), server="")

    def method_params(self, mi_class: MiClass, method: str) -> MiInstance:
        assert isinstance(mi_class, FakeClass)
        try:
            declared = mi_class.decl.method(method)
        except CimError as error:
            raise _failure(error) from None
        elements = [Element(p.name, mi_type_of(p.cim_type, p.is_array), None)
                    for p in declared.parameters if p.direction == "in"]
        return FakeInstance("__PARAMETERS", mi_class.decl.namespace, "", elements)

    def invoke(self, target: MiInstance | MiClass, method: str,
               params: MiInstance) -> MiInstance:
        assert isinstance(params, FakeInstance)
        if isinstance(target, FakeClass):
            path = ObjectPath(target.decl.name, (), target.decl.namespace)
            decl = target.decl
        else:
            assert isinstance(target, FakeInstance)
            path = target.object_path()
            decl = self._run(self.emulator.get_class(path.class_name, path.namespace))
        arguments = {e.name: _argument(e) for e in params.elements if e.value is not None}
        result = self._run(self.emulator.invoke(path, method, arguments))
        return self._out(decl, method, result)

    def close(self) -> None:
        self.closed = True

    # --- from the emulator's instances to PyMI's ---------------------------------------------

    def _instance(self, instance: CimInstance, server: str | None = None) -> FakeInstance:
        host = server if server is not None else instance.path.host if instance.path else ""
        elements = [Element(p.name, mi_type_of(p.cim_type, p.is_array), self._value(p))
                    for p in instance]
        return FakeInstance(instance.class_name, instance.namespace, host, elements,
                            _keys(instance.class_name, instance.namespace))

    def _value(self, prop: CimProperty) -> object:
        value = prop.value
        if value is None:
            return None
        items = value if isinstance(value, tuple) else (value,)
        converted = tuple(self._scalar(prop.cim_type, item) for item in items)
        return converted if prop.is_array else converted[0]

    def _scalar(self, cim_type: str, value: object) -> object:
        if cim_type == "datetime" and isinstance(value, str):
            return values.python_from_dmtf(value)
        if cim_type == "reference":
            return self._reference(ObjectPath.parse(str(value)))
        if cim_type == "char16" and isinstance(value, str):
            return ord(value[0])
        if cim_type.startswith("real") and isinstance(value, str):
            return float(value)
        return value

    def _reference(self, path: ObjectPath) -> FakeInstance:
        """A reference as MI hands it: an instance holding the keys of the path."""
        elements = [Element(name, _STRING, value) for name, value in path.keys]
        server = self.server if path.host == "." else path.host
        return FakeInstance(path.class_name, path.namespace, server, elements,
                            [name for name, _ in path.keys])

    def _out(self, decl: CimClass, method: str, result: MethodResult) -> FakeInstance:
        elements = [Element("ReturnValue", mi_type_of("uint32", False),
                            int(result.return_value))]
        for param in decl.method(method).parameters:
            if param.direction == "out":
                mi_type = mi_type_of(param.cim_type, param.is_array)
                elements.append(Element(param.name, mi_type, self._out_value(
                    param.cim_type, result[param.name])))
        return FakeInstance("__PARAMETERS", decl.namespace, "", elements)

    def _out_value(self, cim_type: str, value: OutValue) -> object:
        if value is None:
            return None
        items = value if isinstance(value, tuple) else (value,)
        converted = tuple(self._out_item(cim_type, item) for item in items)
        return converted if isinstance(value, tuple) else converted[0]

    def _out_item(self, cim_type: str, item: object) -> object:
        if isinstance(item, ObjectPath):
            return self._reference(item)
        if isinstance(item, CimInstance):
            return self._instance(item, server="")
        return self._scalar(cim_type, item)


def _keys(class_name: str, namespace: str) -> tuple[str, ...]:
    try:
        return tuple(key.name for key in classes.declaration(class_name, namespace).keys)
    except CimError:
        return ()


# --- from PyMI's values to the emulator's arguments ---------------------------------------


def _argument(element: Element) -> InValue:
    cim_type, is_array = cim_type_of(element.mi_type)
    items = element.value if is_array else (element.value,)
    assert isinstance(items, tuple)
    converted = [_seam(cim_type, item) for item in items]
    return converted if is_array else converted[0]


def _seam(cim_type: str, value: object) -> Any:
    if isinstance(value, FakeInstance):
        return value.object_path() if cim_type == "reference" else _cim_instance(value)
    if isinstance(value, datetime.datetime | datetime.timedelta):
        return values.dmtf_from_python(value)
    if cim_type == "char16" and isinstance(value, int):
        return chr(value)
    if isinstance(value, float):
        return repr(value)
    return value


def _cim_instance(item: FakeInstance) -> CimInstance:
    props = []
    for element in item.elements:
        cim_type, is_array = cim_type_of(element.mi_type)
        value: CimValue = None
        if element.value is not None:
            items = element.value if is_array else (element.value,)
            assert isinstance(items, tuple)
            converted = tuple(_property_value(cim_type, i) for i in items)
            value = converted if is_array else converted[0]
        props.append(CimProperty(element.name, cim_type, is_array, value))
    return CimInstance.build(item.class_name, props, None, item.namespace.replace("/", "\\"))


def _property_value(cim_type: str, value: object) -> Any:
    converted = _seam(cim_type, value)
    return str(converted) if isinstance(converted, ObjectPath) else converted
