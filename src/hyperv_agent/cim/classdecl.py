"""Class declarations: what a backend knows of a class's properties, keys and methods.

Instances carry typed properties across the seam, but not every transport types its
values: WS-Management renders every property as text, so a backend that speaks it types
what it parses from the class declaration (``typed_instance``), builds a new instance
from the declared defaults (``new_instance``, SpawnInstance_), and builds an object path
from the key properties. The shapes are backend-neutral: the emulator answers them from
its schema, WS-Management from CIM-XML class metadata (DSP0227 §15), PyMI from the MI
class declaration.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from hyperv_agent.cim import values
from hyperv_agent.cim.api import (
    V2_NAMESPACE,
    CimInstance,
    CimProperty,
    CimScalar,
    CimValue,
    ObjectPath,
)
from hyperv_agent.errors import CimError, CimInvalidMethod

#: The CIM type of an instance-typed (EmbeddedObject) parameter such as
#: GetSummaryInformation's ``SummaryInformation[]``.
OBJECT = "object"


@dataclass(frozen=True)
class PropertyDecl:
    """One declared property: CIM type, array flag, key qualifier and MOF default."""

    name: str
    cim_type: str
    is_array: bool = False
    key: bool = False
    default: CimValue = None


@dataclass(frozen=True)
class ParameterDecl:
    """One method parameter; ``cim_type`` is ``object`` for an instance-typed one."""

    name: str
    cim_type: str
    is_array: bool
    direction: str  # "in" | "out"


@dataclass(frozen=True)
class MethodDecl:
    name: str
    parameters: tuple[ParameterDecl, ...]

    def parameter(self, name: str) -> ParameterDecl | None:
        wanted = name.lower()
        return next((p for p in self.parameters if p.name.lower() == wanted), None)


@dataclass(frozen=True)
class CimClass:
    """A class declaration: properties (inherited ones included) and methods, looked up
    without regard to case; ``superclasses`` nearest first."""

    name: str
    namespace: str = V2_NAMESPACE
    superclasses: tuple[str, ...] = ()
    properties: Mapping[str, PropertyDecl] = field(default_factory=dict)  # lower-case keys
    methods: Mapping[str, MethodDecl] = field(default_factory=dict)  # lower-case keys

    @classmethod
    def build(cls, name: str, namespace: str, superclasses: Sequence[str],
              properties: Sequence[PropertyDecl],
              methods: Sequence[MethodDecl] = ()) -> CimClass:
        return cls(name, namespace, tuple(superclasses),
                   {p.name.lower(): p for p in properties},
                   {m.name.lower(): m for m in methods})

    def prop(self, name: str) -> PropertyDecl | None:
        return self.properties.get(name.lower())

    def method(self, name: str) -> MethodDecl:
        found = self.methods.get(name.lower())
        if found is None:
            raise CimInvalidMethod(f"{self.name} has no method {name!r}")
        return found

    def new_instance(self) -> CimInstance:
        """A new, unsaved instance carrying the declared defaults (SpawnInstance_)."""
        props = [CimProperty(p.name, p.cim_type, p.is_array, p.default)
                 for p in self.properties.values()]
        return CimInstance.build(self.name, props, None, self.namespace, self.superclasses)

    @functools.cached_property
    def keys(self) -> tuple[PropertyDecl, ...]:
        """Key properties in the order WMI writes them in a path (alphabetical)."""
        return tuple(sorted((p for p in self.properties.values() if p.key),
                            key=lambda p: p.name.lower()))


# --- typing what a transport returned as text ---------------------------------------------

#: A value as a text transport carries it: text, a path (a reference), a nested instance,
#: or an array of those; None for a null.
RawScalar: TypeAlias = "str | ObjectPath | RawInstance"
RawValue: TypeAlias = "RawScalar | tuple[RawScalar, ...] | None"


@dataclass(frozen=True)
class RawInstance:
    """An instance whose values are still untyped; ``class_name`` None when the transport
    did not say (a projected query result)."""

    class_name: str | None
    namespace: str
    values: Mapping[str, RawValue]  # by property name as the transport spelt it
    path: ObjectPath | None = None


def typed_instance(decl: CimClass, raw: RawInstance, *, complete: bool = True,
                   nested: Mapping[str, CimClass] | None = None) -> CimInstance:
    """``raw`` typed by ``decl``. ``complete``: add every declared property the transport
    left out, as null (a full instance); otherwise only the properties given (a projection).
    Properties ``decl`` does not declare are kept as strings. ``nested``: declarations of
    classes of nested instances, by lower-case name."""
    props: dict[str, CimProperty] = dict(_nulls(decl)) if complete else {}
    for name, value in raw.values.items():
        key = name.lower()
        declared = decl.properties.get(key)
        if declared is None:
            props[key] = _untyped_property(name, value)
        elif type(value) is str and not declared.is_array:  # the common case, made quick
            props[key] = CimProperty(declared.name, declared.cim_type, False,
                                     values.parse_scalar(declared.cim_type, value, name))
        else:
            props[key] = _typed_property(declared, value, nested or {})
    path = raw.path or _path_of(decl, props)
    return CimInstance(decl.name, props, path, decl.namespace, decl.superclasses)


_NULLS: dict[int, tuple[CimClass, dict[str, CimProperty]]] = {}


def _nulls(decl: CimClass) -> dict[str, CimProperty]:
    """Every declared property of ``decl``, null (shared: properties are immutable)."""
    cached = _NULLS.get(id(decl))
    if cached is None or cached[0] is not decl:
        cached = (decl, {k: CimProperty(p.name, p.cim_type, p.is_array, None)
                         for k, p in decl.properties.items()})
        _NULLS[id(decl)] = cached
    return cached[1]


def _path_of(decl: CimClass, props: Mapping[str, CimProperty]) -> ObjectPath | None:
    keys = []
    for key in decl.keys:
        found = props.get(key.name.lower())
        if found is None or found.value is None or isinstance(found.value, tuple):
            return None
        keys.append((key.name, values.format_scalar(key.cim_type, found.value)))
    return ObjectPath(decl.name, tuple(keys), decl.namespace) if keys else None


def _typed_property(prop: PropertyDecl, value: RawValue,
                    nested: Mapping[str, CimClass]) -> CimProperty:
    typed = typed_value(prop.cim_type, prop.is_array, value, prop.name, nested)
    if isinstance(typed, CimInstance) or (
            isinstance(typed, tuple) and any(isinstance(i, CimInstance) for i in typed)):
        raise CimError(f"property {prop.name} holds an instance, not a {prop.cim_type}")
    return CimProperty(prop.name, prop.cim_type, prop.is_array, typed)  # type: ignore[arg-type]


def _untyped_property(name: str, value: RawValue) -> CimProperty:
    if isinstance(value, tuple):
        return CimProperty(name, "string", True, tuple(str(item) for item in value))
    return CimProperty(name, "string", False, None if value is None else str(value))


TypedValue: TypeAlias = "CimScalar | CimInstance | tuple[CimScalar | CimInstance, ...] | None"


def typed_value(cim_type: str, is_array: bool, value: RawValue, name: str,
                nested: Mapping[str, CimClass] | None = None) -> TypedValue:
    """One value typed as ``cim_type`` (an array when ``is_array``); CimError naming
    ``name`` when the text does not read as that type."""
    if value is None:
        return None
    if is_array:
        items = value if isinstance(value, tuple) else (value,)
        return tuple(_typed_scalar(cim_type, item, name, nested or {}) for item in items)
    if isinstance(value, tuple):
        if len(value) != 1:
            raise CimError(f"{name} is a single {cim_type}, not an array of {len(value)}")
        value = value[0]
    return _typed_scalar(cim_type, value, name, nested or {})


def _typed_scalar(cim_type: str, value: RawScalar, name: str,
                  nested: Mapping[str, CimClass]) -> CimScalar | CimInstance:
    if isinstance(value, RawInstance):
        decl = nested.get((value.class_name or "").lower())
        if decl is None:
            raise CimError(f"{name} holds an instance of an undeclared class {value.class_name}")
        return typed_instance(decl, value, nested=nested)
    if isinstance(value, ObjectPath):
        return str(value)
    return values.parse_scalar(cim_type, value, name)
