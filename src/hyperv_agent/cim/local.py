"""The CIM seam over local WMI through PyMI: ``backend = "wmi"`` on the Hyper-V host.

A thin adapter. PyMI's ``mi`` module is reached only through ``MiSession``, the few
operations used (run a query, get an instance by its key instance, fetch a class, make an
instance or a method's parameters from a class, call a method). Its one real
implementation, ``cim/pymi.py``, is the only code of this backend that runs on Windows
alone; everything here is portable and tested on any OS against a session serving an
emulated host. What is shared with the other backends is reused, not repeated:

* values arrive typed by MI (``get_element``: name, MI type, value) and become the
  seam's: integers, booleans and strings as they are, reals and char16 as text,
  datetimes and intervals as DMTF text (``values``), references as object paths,
  embedded objects as instances (out-parameters) or their CIM-XML text (properties);
* arguments go the other way, typed by the method's parameter instance: an instance for
  a string parameter is embedded as CIM-XML text (``cimxml``, as GetText_(1) writes it),
  an instance for an object parameter becomes an MI instance of its class, a path for a
  reference parameter a key instance of its class;
* failures, PyMI's ``mi.error`` carrying ``mi_result`` (the CIM status) and
  ``error_code`` (the WMI HRESULT), become the seam's typed errors (``faults``).

Limits PyMI sets, named here: it drops the UTC offset of datetimes (they read as
``+000``); it cannot pass datetime or non-integral real arguments (CimInvalidParameter); it checks
no integer's range (it truncates, so one out of its type's range is refused here);
it writes no path for an instance whose class has reference keys (an association: path
None) nor for a singleton (written here as ``Class=@``); it names no superclasses
(``is_a`` knows an instance's own class only). An instance-method call needs the target
instance itself, so the first call on a path gets it once (kept for later calls).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

from hyperv_agent.cim import cimxml, faults, values
from hyperv_agent.cim.api import (
    V2_NAMESPACE,
    Cim,
    CimInstance,
    CimProperty,
    CimScalar,
    CimValue,
    InScalar,
    InValue,
    MethodResult,
    ObjectPath,
    OutValue,
    coerce_value,
    namespace_name,
)
from hyperv_agent.cim.classdecl import OBJECT
from hyperv_agent.errors import CimError, CimInvalidParameter, CimNotFound, ConfigError

_T = TypeVar("_T")
#: How long one WMI operation may take before it fails (CimUnavailable).
OPERATION_TIMEOUT_S = 120.0
#: Instance-method targets kept (service instances, mostly), least recently used dropped.
MAX_TARGETS = 256
#: MI's type codes (mi.h ``MI_Type``) in order; ``MI_ARRAY`` marks the array types.
MI_TYPES = ("boolean", "uint8", "sint8", "uint16", "sint16", "uint32", "sint32", "uint64",
            "sint64", "real32", "real64", "char16", "datetime", "string", "reference", OBJECT)
MI_ARRAY = 16
#: PyMI's message when it cannot write the path of an instance of a keyless class.
NO_KEYS = "without key elements"
#: The values each integer type (and char16) holds. PyMI checks no range: it casts what a
#: C long, unsigned long (32 bits on Windows) or their 64-bit forms read to the element's
#: width, so a value out of range must be refused here before it reaches PyMI.
MI_RANGES = {"uint8": (0, 2**8 - 1), "sint8": (-2**7, 2**7 - 1),
             "uint16": (0, 2**16 - 1), "sint16": (-2**15, 2**15 - 1),
             "uint32": (0, 2**32 - 1), "sint32": (-2**31, 2**31 - 1),
             "uint64": (0, 2**64 - 1), "sint64": (-2**63, 2**63 - 1), "char16": (0, 2**16 - 1)}


class MiInstance(Protocol):
    """What the adapter uses of PyMI's ``mi.Instance``."""

    def __len__(self) -> int: ...
    def get_element(self, key: int | str, /) -> tuple[str, int, object]: ...
    def __setitem__(self, key: str, value: object, /) -> None: ...
    def get_class_name(self) -> str: ...
    def get_namespace(self) -> str: ...
    def get_server_name(self) -> str: ...
    def get_path(self) -> str: ...


class MiClass(Protocol):
    """What the adapter uses of PyMI's ``mi.Class``: it is handed back to the session."""

    def get_class_name(self) -> str: ...


class MiSession(Protocol):
    """The operations of one local WMI session. ``error`` is what they raise (PyMI's
    ``mi.error``: ``args[0]`` a dict with ``message`` and, from WMI, ``mi_result`` and
    ``error_code``); a value of the wrong type for an element raises TypeError."""

    @property
    def error(self) -> type[Exception]: ...

    def query(self, namespace: str, wql: str) -> list[MiInstance]: ...
    def get_instance(self, namespace: str, key: MiInstance) -> MiInstance | None: ...
    def get_class(self, namespace: str, class_name: str) -> MiClass: ...
    def new_instance(self, mi_class: MiClass) -> MiInstance: ...
    def method_params(self, mi_class: MiClass, method: str) -> MiInstance: ...
    def invoke(self, target: MiInstance | MiClass, method: str,
               params: MiInstance) -> MiInstance: ...
    def close(self) -> None: ...


def cim_type_of(mi_type: int) -> tuple[str, bool]:
    """(CIM type, is array) of an MI type code."""
    if not 0 <= mi_type < 2 * MI_ARRAY:
        raise CimError(f"unknown MI type {mi_type}")
    return MI_TYPES[mi_type % MI_ARRAY], mi_type >= MI_ARRAY


def mi_type_of(cim_type: str, is_array: bool) -> int:
    """The MI type code of a CIM type (``object`` for an embedded instance)."""
    return MI_TYPES.index(cim_type) + (MI_ARRAY if is_array else 0)


def open_local(session: MiSession | None = None,
               timeout_s: float = OPERATION_TIMEOUT_S) -> LocalCim:
    """The adapter on ``session``, by default this host's WMI through PyMI; ConfigError,
    one line, where PyMI cannot load (not Windows, or the windows extra not installed)."""
    if session is not None:
        return LocalCim(session)
    try:
        from hyperv_agent.cim.pymi import PyMiSession  # the Windows-only lines
    except ImportError as error:  # also a DLL the extension module could not load
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        raise ConfigError(f"backend 'wmi' needs PyMI on a Windows host ({reason}); "
                          'pip install "hyperv-agent[windows]" there, or use --backend '
                          "wsman or emulator") from None
    return LocalCim(PyMiSession(timeout_s))


class LocalCim(Cim):
    """The local host's CIM namespaces through one PyMI session."""

    def __init__(self, session: MiSession, max_targets: int = MAX_TARGETS) -> None:
        self.session = session
        self.max_targets = max_targets
        self._classes: dict[tuple[str, str], MiClass] = {}
        self._targets: OrderedDict[ObjectPath, MiInstance] = OrderedDict()

    async def close(self) -> None:
        await asyncio.to_thread(self.session.close)

    # --- calling the session --------------------------------------------------------------

    async def _call(self, work: Callable[..., _T], *args: object) -> _T:
        """A session operation in a worker thread (PyMI blocks), its failure typed."""
        try:
            return await asyncio.to_thread(work, *args)
        except self.session.error as failure:
            raise _error(failure) from None

    def _local(self, work: Callable[..., _T], *args: object) -> _T:
        """A session operation that makes no round trip (a new instance, parameters)."""
        try:
            return work(*args)
        except self.session.error as failure:
            raise _error(failure) from None

    async def _class(self, namespace: str, class_name: str) -> MiClass:
        key = (namespace.lower(), class_name.lower())
        if key not in self._classes:
            self._classes[key] = await self._call(self.session.get_class, namespace,
                                                  class_name)
        return self._classes[key]

    # --- reads ----------------------------------------------------------------------------

    async def query(self, wql: str, namespace: str = V2_NAMESPACE) -> list[CimInstance]:
        namespace = namespace_name(namespace)
        found = await self._call(self.session.query, namespace, wql)
        return [self._instance(item, namespace) for item in found]

    async def get(self, path: ObjectPath) -> CimInstance:
        found = await self._fetch(path)
        instance = self._instance(found, namespace_name(path.namespace))
        return instance if instance.path is not None else dataclasses.replace(instance,
                                                                               path=path)

    async def _fetch(self, path: ObjectPath) -> MiInstance:
        key = await self._key_instance(path)
        found = await self._call(self.session.get_instance, namespace_name(path.namespace), key)
        if found is None:
            raise CimNotFound(f"no instance at {path}")
        return found

    async def spawn(self, class_name: str, namespace: str = V2_NAMESPACE) -> CimInstance:
        namespace = namespace_name(namespace)
        fresh = self._local(self.session.new_instance, await self._class(namespace,
                                                                          class_name))
        return dataclasses.replace(self._instance(fresh, namespace), path=None)

    # --- methods --------------------------------------------------------------------------

    async def invoke(self, path: ObjectPath, method: str,
                     params: Mapping[str, InValue] | None = None) -> MethodResult:
        mi_class = await self._class(namespace_name(path.namespace), path.class_name)
        inbound = self._local(self.session.method_params, mi_class, method)
        declared = _elements(inbound)
        for name, value in (params or {}).items():
            found = declared.get(name.lower())
            if found is None:
                raise CimInvalidParameter(f"{method} has no in-parameter {name!r}")
            self._set(inbound, found[0], await self._argument(found[1], value, name))
        target = await self._target(path) if path.keys else mi_class
        try:
            out = await self._call(self.session.invoke, target, method, inbound)
        except CimNotFound:
            self._targets.pop(path, None)  # gone since it was read: read it again next time
            raise
        return self._result(out)

    async def _target(self, path: ObjectPath) -> MiInstance:
        """The instance a method is called on: fetched once, then kept."""
        found = self._targets.get(path)
        if found is None:
            found = self._targets[path] = await self._fetch(path)
            while len(self._targets) > self.max_targets:
                self._targets.popitem(last=False)
        self._targets.move_to_end(path)
        return found

    def _result(self, out: MiInstance) -> MethodResult:
        returned, found = 0, dict[str, OutValue]()
        for name, mi_type, value in (out.get_element(i) for i in range(len(out))):
            if name.lower() == "returnvalue":
                returned = int(value) if isinstance(value, int) else 0
            else:
                found[name] = self._out_value(mi_type, value)
        return MethodResult.build(returned, found)

    def _out_value(self, mi_type: int, value: object) -> OutValue:
        cim_type, is_array = cim_type_of(mi_type)
        if value is None or cim_type not in ("reference", OBJECT):
            return self._value(cim_type, is_array, value)
        items = [self._reference(item) if cim_type == "reference" else self._nested(item)
                 for item in _items(value)]
        return tuple(items) if is_array else items[0]  # type: ignore[return-value]

    # --- embedded instances ---------------------------------------------------------------

    def to_embedded(self, instance: CimInstance) -> str:
        return cimxml.write_instance(instance)

    def parse_embedded(self, text: str) -> CimInstance:
        class_name, props = cimxml.read_instance(text)
        return CimInstance.build(class_name, props)

    # --- from MI ---------------------------------------------------------------------------

    def _instance(self, item: MiInstance, namespace: str) -> CimInstance:
        props = [self._property(*item.get_element(i)) for i in range(len(item))]
        own = namespace_name(item.get_namespace() or namespace)
        return CimInstance.build(item.get_class_name(), props, self._path(item), own)

    def _nested(self, item: object) -> CimInstance:
        return self._instance(_mi(item), V2_NAMESPACE)

    def _path(self, item: MiInstance) -> ObjectPath | None:
        try:
            text = item.get_path()
        except self.session.error as failure:  # PyMI cannot write this class's paths
            if NO_KEYS not in _message(failure):
                return None
            namespace = namespace_name(item.get_namespace())
            return ObjectPath(item.get_class_name(), (), namespace, item.get_server_name())
        return ObjectPath.parse(text) if text else None

    def _reference(self, item: object) -> ObjectPath:
        path = self._path(_mi(item))
        if path is None:
            raise CimError(f"a reference to a {_mi(item).get_class_name()} has no path")
        return path

    def _property(self, name: str, mi_type: int, value: object) -> CimProperty:
        cim_type, is_array = cim_type_of(mi_type)
        if cim_type == OBJECT:  # an embedded object property: kept as its CIM-XML text
            texts = tuple(cimxml.write_instance(self._nested(i)) for i in _items(value))
            text: CimValue = None if value is None else texts if is_array else texts[0]
            return CimProperty(name, "string", is_array, text)
        return CimProperty(name, cim_type, is_array, self._value(cim_type, is_array, value))

    def _value(self, cim_type: str, is_array: bool, value: object) -> CimValue:
        if value is None:
            return None
        scalars = tuple(self._scalar(cim_type, item) for item in _items(value))
        return scalars if is_array else scalars[0]

    def _scalar(self, cim_type: str, value: object) -> CimScalar:
        if cim_type == "reference":
            return str(self._reference(value))
        if cim_type == "datetime":
            return values.dmtf_from_python(value)  # type: ignore[arg-type]
        if cim_type == "char16" and isinstance(value, int):
            return chr(value)
        if cim_type.startswith("real"):
            return repr(value)
        if isinstance(value, str | int):  # bool is an int
            return value
        raise CimError(f"PyMI returned {value!r} for a {cim_type}")

    # --- to MI -----------------------------------------------------------------------------

    def _set(self, item: MiInstance, name: str, value: object) -> None:
        try:
            item[name] = value
        except TypeError as error:
            raise CimInvalidParameter(f"{name}: {error}") from None
        except self.session.error as failure:
            raise CimInvalidParameter(f"{name}: {_message(failure)}") from None

    async def _argument(self, mi_type: int, value: InValue, name: str) -> object:
        cim_type, is_array = cim_type_of(mi_type)
        if value is None:
            return None
        converted = [await self._scalar_argument(cim_type, item, name)
                     for item in _scalars(value, is_array, name)]
        return tuple(converted) if is_array else converted[0]

    async def _scalar_argument(self, cim_type: str, value: InScalar, name: str) -> object:
        if cim_type == "reference":
            return await self._key_instance(_path_of(value, name))
        if cim_type == OBJECT:
            if not isinstance(value, CimInstance):
                raise CimInvalidParameter(f"{name} takes an instance of a class")
            return await self._object(value)
        if cim_type == "string":
            return self.to_embedded(value) if isinstance(value, CimInstance) else _text(value,
                                                                                       name)
        return _plain(cim_type, value, name)

    async def _key_instance(self, path: ObjectPath) -> MiInstance:
        """A new instance of the path's class holding its keys: what PyMI gets by."""
        key = self._local(self.session.new_instance, await self._class(
            namespace_name(path.namespace), path.class_name))
        declared = _elements(key)
        for name, text in path.keys:
            found = declared.get(name.lower())
            if found is None:
                raise CimNotFound(f"no instance at {path}: {path.class_name} has no {name}")
            self._set(key, found[0], await self._argument(found[1], text, name))
        return key

    async def _object(self, instance: CimInstance) -> MiInstance:
        """An MI instance of the instance's class with its non-null properties."""
        made = self._local(self.session.new_instance, await self._class(
            namespace_name(instance.namespace), instance.class_name))
        declared = _elements(made)
        for prop in instance:
            if prop.value is None:
                continue
            found = declared.get(prop.name.lower())
            if found is None:
                raise CimInvalidParameter(f"{instance.class_name} has no property {prop.name}")
            self._set(made, found[0], await self._argument(found[1], prop.value, prop.name))
        return made


# --- helpers ------------------------------------------------------------------------------


def _elements(item: MiInstance) -> dict[str, tuple[str, int]]:
    """Element names (lower-case) -> (name as spelt, MI type)."""
    found = (item.get_element(i) for i in range(len(item)))
    return {name.lower(): (name, mi_type) for name, mi_type, _ in found}


def _scalars(value: InValue, is_array: bool, name: str) -> Sequence[InScalar]:
    """The items of an argument: its elements for an array parameter, itself otherwise."""
    single = isinstance(value, str | bytes | CimInstance | ObjectPath) or not isinstance(
        value, Sequence)
    if single == is_array:
        raise CimInvalidParameter(f"{name} takes {'an array' if is_array else 'one value'}")
    return (value,) if single else value  # type: ignore[return-value]


def _items(value: object) -> tuple[object, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (value,)


def _mi(item: object) -> MiInstance:
    return item  # type: ignore[return-value]  # PyMI hands references and objects as instances


def _message(failure: BaseException) -> str:
    details = failure.args[0] if failure.args else None
    if isinstance(details, dict):
        return str(details.get("message") or "")
    return str(failure)


def _error(failure: BaseException) -> CimError:
    details = failure.args[0] if failure.args and isinstance(failure.args[0], dict) else {}
    status, code = details.get("mi_result"), details.get("error_code")
    return faults.to_error(faults.CimFault(
        _message(failure) or type(failure).__name__,
        cim_status=status if isinstance(status, int) and status else None,
        hresult=code if isinstance(code, int) and code else None), "WMI: ")


def _path_of(value: InScalar, name: str) -> ObjectPath:
    if isinstance(value, ObjectPath):
        return value
    if isinstance(value, CimInstance) and value.path is not None:
        return value.path
    if isinstance(value, str):
        return ObjectPath.parse(value)
    raise CimInvalidParameter(f"{name} takes a reference (an object path), not {value!r}")


def _text(value: InScalar, name: str) -> str:
    if isinstance(value, str | ObjectPath):
        return str(value)
    raise CimInvalidParameter(f"{name} takes a string, not {value!r}")


def _plain(cim_type: str, value: InScalar, name: str) -> int | bool:
    """An integer, boolean, char16 or (integral) real argument as PyMI takes it."""
    if cim_type == "datetime":
        raise CimInvalidParameter(f"{name}: PyMI cannot pass a datetime argument")
    if cim_type == "char16" and isinstance(value, str) and len(value) == 1:
        return _in_range(cim_type, ord(value), name)
    numeric = "sint64" if cim_type.startswith("real") else cim_type
    coerced = coerce_value(CimProperty(name, numeric, False, None), value)
    if isinstance(coerced, int):  # bool included
        return _in_range(cim_type, coerced, name) if cim_type in MI_RANGES else coerced
    raise CimInvalidParameter(f"{name} takes {cim_type}, not {value!r}"
                              + ("; PyMI passes whole numbers only" if numeric != cim_type
                                 else ""))


def _in_range(cim_type: str, value: int, name: str) -> int:
    """``value`` when ``cim_type`` holds it: PyMI would truncate it, or leave Python with a
    pending OverflowError, instead of refusing it."""
    low, high = MI_RANGES[cim_type]
    if not low <= value <= high:
        raise CimInvalidParameter(f"{name}: {value} is out of the range of {cim_type}")
    return value
