"""The CIM seam: the one interface every Hyper-V operation is written against.

Three backends implement it: local WMI through PyMI (``cim/local.py``), CIM over
WS-Management (``cim/wsman/``) and the embedded emulator (``emulator/``). The shapes
here are chosen so that each can implement them without guessing:

* instances carry typed properties (CIM type + array flag), so an embedded-instance
  text can be written without a class fetch;
* object paths compare without regard to case, as WMI does;
* method results are out-parameters by name, never positional tuples;
* every failure is an ``errors.CimError`` subclass.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from hyperv_agent.errors import CimError, CimInvalidParameter, CimInvalidProperty

if TYPE_CHECKING:
    from hyperv_agent.cim.classdecl import CimClass

V2_NAMESPACE = "root\\virtualization\\v2"
CIMV2_NAMESPACE = "root\\cimv2"


def namespace_name(namespace: str) -> str:
    """A namespace as WMI spells it: WMI takes ``/`` or ``\\`` between the parts
    (``root/cimv2`` is ``root\\cimv2``); the backends write backslashes."""
    return namespace.replace("/", "\\")

CimScalar: TypeAlias = str | int | bool
CimValue: TypeAlias = CimScalar | tuple[CimScalar, ...] | None

#: CIM intrinsic types understood across the seam (DSP0004). "reference" carries a path string.
CIM_TYPES = frozenset(
    {
        "string", "boolean", "datetime", "char16", "reference", "real32", "real64",
        "uint8", "uint16", "uint32", "uint64", "sint8", "sint16", "sint32", "sint64",
    }
)
_T = TypeVar("_T")

INTEGER_TYPES = frozenset(
    {"uint8", "uint16", "uint32", "uint64", "sint8", "sint16", "sint32", "sint64"}
)


# --- object paths -------------------------------------------------------------------------

_PATH_HEAD = re.compile(r"^(?:[\\/]{2}(?P<host>[^\\/]+)[\\/])?(?:(?P<ns>[^:.=\"']+):)?")
_CLASS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY = re.compile(r"\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*")


@dataclass(frozen=True, eq=False)
class ObjectPath:
    """A WMI object path: ``\\\\HOST\\namespace:Class.Key="value",Key2="value"``.

    Equality and hashing ignore case (class, namespace, key names and key values) and the
    host part, as WMI compares paths that differ only in case ("ROOT" against "root").
    """

    class_name: str
    keys: tuple[tuple[str, str], ...]
    namespace: str = V2_NAMESPACE
    host: str = "."

    @classmethod
    def for_keys(
        cls, class_name: str, namespace: str = V2_NAMESPACE, host: str = ".", **keys: str
    ) -> ObjectPath:
        return cls(class_name, tuple(keys.items()), namespace, host)

    @classmethod
    def parse(cls, text: str) -> ObjectPath:
        """Parse a path text; raises ``CimInvalidParameter`` on anything malformed."""
        head = _PATH_HEAD.match(text)
        assert head is not None  # the pattern matches the empty prefix
        host = head.group("host") or "."
        namespace = (head.group("ns") or V2_NAMESPACE).replace("/", "\\")
        rest = text[head.end():]
        klass = _CLASS.match(rest)
        if klass is None:
            raise CimInvalidParameter(f"not an object path: {text!r}")
        keys = _parse_keys(text, rest[klass.end():])
        return cls(klass.group(0), keys, namespace, host)

    def key(self, name: str) -> str:
        for key_name, value in self.keys:
            if key_name.lower() == name.lower():
                return value
        raise CimInvalidParameter(f"object path {self} has no key {name!r}")

    @property
    def normalized(self) -> str:
        keys = ",".join(f"{k.lower()}={v.lower()}" for k, v in sorted(self.keys))
        return f"{self.namespace.lower()}:{self.class_name.lower()}.{keys}"

    def relative(self) -> str:
        """The path without host and namespace: ``Class.Key="value"``."""
        if not self.keys:
            return f"{self.class_name}=@"
        keys = ",".join(f'{name}="{_escape_key(value)}"' for name, value in self.keys)
        return f"{self.class_name}.{keys}"

    def __str__(self) -> str:
        return f"\\\\{self.host}\\{self.namespace}:{self.relative()}"

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and self.normalized == other.normalized

    def __hash__(self) -> int:
        return hash(self.normalized)


def _escape_key(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _parse_keys(text: str, rest: str) -> tuple[tuple[str, str], ...]:
    if rest in ("=@", ""):
        return ()
    if not rest.startswith("."):
        raise CimInvalidParameter(f"not an object path: {text!r}")
    keys: list[tuple[str, str]] = []
    position = 1
    while True:
        key = _KEY.match(rest, position)
        if key is None:
            raise CimInvalidParameter(f"malformed key in object path: {text!r}")
        value, position = _read_key_value(text, rest, key.end())
        keys.append((key.group("name"), value))
        if position == len(rest):
            return tuple(keys)
        if rest[position] != ",":
            raise CimInvalidParameter(f"malformed key list in object path: {text!r}")
        position += 1


def _read_key_value(text: str, rest: str, start: int) -> tuple[str, int]:
    if start < len(rest) and rest[start] in "\"'":
        quote = rest[start]
        out: list[str] = []
        index = start + 1
        while index < len(rest):
            char = rest[index]
            if char == "\\" and index + 1 < len(rest):
                out.append(rest[index + 1])
                index += 2
            elif char == quote:
                return "".join(out), index + 1
            else:
                out.append(char)
                index += 1
        raise CimInvalidParameter(f"unterminated key value in object path: {text!r}")
    end = start
    while end < len(rest) and rest[end] not in ",":
        end += 1
    if end == start:
        raise CimInvalidParameter(f"empty key value in object path: {text!r}")
    return rest[start:end].strip(), end


# --- instances ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CimProperty:
    """One property of an instance: its CIM type, whether it is an array, and its value."""

    name: str
    cim_type: str
    is_array: bool
    value: CimValue


def coerce_value(prop: CimProperty, value: object) -> CimValue:
    """Check and normalise a Python value for ``prop`` (lists become tuples)."""
    if value is None:
        return None
    if prop.is_array:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise CimInvalidParameter(f"{prop.name} is an array of {prop.cim_type}")
        return tuple(_coerce_scalar(prop, item) for item in value)
    return _coerce_scalar(prop, value)


def _coerce_scalar(prop: CimProperty, value: object) -> CimScalar:
    if prop.cim_type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif prop.cim_type in INTEGER_TYPES:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
    elif isinstance(value, str):
        return value
    elif isinstance(value, ObjectPath) and prop.cim_type == "reference":
        return str(value)
    raise CimInvalidParameter(f"{prop.name} takes {prop.cim_type}, not {value!r}")


@dataclass(frozen=True, eq=False)
class CimInstance:
    """An instance of a CIM class: typed properties looked up without regard to case.

    Instances are immutable; ``updated`` returns a changed copy, which is how a template
    instance becomes the embedded argument of a method call.
    """

    class_name: str
    properties: Mapping[str, CimProperty]  # keyed by lower-case property name
    path: ObjectPath | None = None
    namespace: str = V2_NAMESPACE
    superclasses: tuple[str, ...] = field(default=())

    @classmethod
    def build(
        cls,
        class_name: str,
        properties: Sequence[CimProperty],
        path: ObjectPath | None = None,
        namespace: str = V2_NAMESPACE,
        superclasses: tuple[str, ...] = (),
    ) -> CimInstance:
        return cls(class_name, {p.name.lower(): p for p in properties}, path, namespace,
                   superclasses)

    def is_a(self, class_name: str) -> bool:
        wanted = class_name.lower()
        return self.class_name.lower() == wanted or any(
            base.lower() == wanted for base in self.superclasses
        )

    def prop(self, name: str) -> CimProperty:
        try:
            return self.properties[name.lower()]
        except KeyError:
            raise CimInvalidProperty(f"{self.class_name} has no property {name!r}") from None

    def __getitem__(self, name: str) -> CimValue:
        return self.prop(name).value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self.properties

    def __iter__(self) -> Iterator[CimProperty]:
        return iter(self.properties.values())

    def updated(self, values: Mapping[str, object] | None = None, **more: object) -> CimInstance:
        """A copy with the given properties changed; unknown names raise CimInvalidProperty."""
        changed = dict(self.properties)
        for name, value in {**(values or {}), **more}.items():
            current = self.prop(name)
            changed[name.lower()] = CimProperty(
                current.name, current.cim_type, current.is_array, coerce_value(current, value)
            )
        return CimInstance(self.class_name, changed, self.path, self.namespace, self.superclasses)

    # typed readers: they raise CimError when the provider returned another type

    def string(self, name: str) -> str | None:
        return _typed(self, name, str)

    def integer(self, name: str) -> int | None:
        return _typed(self, name, int)

    def boolean(self, name: str) -> bool | None:
        return _typed(self, name, bool)

    def strings(self, name: str) -> tuple[str, ...]:
        return _typed_array(self, name, str)

    def integers(self, name: str) -> tuple[int, ...]:
        return _typed_array(self, name, int)


def _typed(instance: CimInstance, name: str, kind: type[_T]) -> _T | None:
    prop = instance.properties.get(name.lower())
    value = prop.value if prop is not None else instance[name]  # raises for an unknown name
    if value is None or type(value) is kind:
        return value
    if isinstance(value, kind) and (kind is bool) == isinstance(value, bool):
        return value
    raise CimError(f"{instance.class_name}.{name} is {value!r}, not a {kind.__name__}")


def _typed_array(instance: CimInstance, name: str, kind: type[_T]) -> tuple[_T, ...]:
    value = instance[name]
    if value is None:
        return ()
    if isinstance(value, tuple) and all(isinstance(item, kind) for item in value):
        return value  # type: ignore[return-value]
    raise CimError(f"{instance.class_name}.{name} is {value!r}, not an array of {kind.__name__}")


# --- method calls -------------------------------------------------------------------------

InScalar: TypeAlias = CimScalar | ObjectPath | CimInstance
#: A method argument: scalars, object paths (REF parameters), instances (embedded-instance
#: string parameters; the backend writes their CIM-XML text), arrays of those, or None.
InValue: TypeAlias = InScalar | Sequence[InScalar] | None
OutValue: TypeAlias = (
    CimValue | ObjectPath | CimInstance | tuple[ObjectPath, ...] | tuple[CimInstance, ...]
)


@dataclass(frozen=True)
class MethodResult:
    """What a method call returned: ReturnValue and the out-parameters by name."""

    return_value: int
    out: Mapping[str, OutValue]  # by parameter name as the provider spells it

    @classmethod
    def build(cls, return_value: int, out: Mapping[str, OutValue]) -> MethodResult:
        return cls(return_value, dict(out))

    def __getitem__(self, name: str) -> OutValue:
        """The out-parameter ``name`` (any case); None when the method did not set it."""
        wanted = name.lower()
        return next((v for k, v in self.out.items() if k.lower() == wanted), None)

    def path(self, name: str) -> ObjectPath | None:
        value = self[name]
        if value is None or isinstance(value, ObjectPath):
            return value
        if isinstance(value, str):
            return ObjectPath.parse(value)
        raise CimError(f"out-parameter {name} is not a reference: {value!r}")

    def paths(self, name: str) -> tuple[ObjectPath, ...]:
        value = self[name]
        if value is None:
            return ()
        if isinstance(value, tuple):
            return tuple(
                item if isinstance(item, ObjectPath) else ObjectPath.parse(str(item))
                for item in value
            )
        raise CimError(f"out-parameter {name} is not an array of references: {value!r}")

    def text(self, name: str) -> str | None:
        value = self[name]
        if value is None or isinstance(value, str):
            return value
        raise CimError(f"out-parameter {name} is not a string: {value!r}")

    def texts(self, name: str) -> tuple[str, ...]:
        value = self[name]
        if value is None:
            return ()
        if isinstance(value, tuple) and all(isinstance(item, str) for item in value):
            return value  # type: ignore[return-value]
        raise CimError(f"out-parameter {name} is not an array of strings: {value!r}")

    def instances(self, name: str) -> tuple[CimInstance, ...]:
        value = self[name]
        if value is None:
            return ()
        if isinstance(value, tuple) and all(isinstance(item, CimInstance) for item in value):
            return value  # type: ignore[return-value]
        raise CimError(f"out-parameter {name} is not an array of instances: {value!r}")


# --- the seam -----------------------------------------------------------------------------


class Cim(abc.ABC):
    """A connection to one host's CIM namespaces. All I/O methods are coroutines.

    Errors: ``CimNotFound`` for an unknown path, ``CimInvalidQuery`` for bad WQL,
    ``CimInvalidClass`` / ``CimInvalidProperty`` / ``CimInvalidMethod`` for names the
    namespace does not define, ``CimInvalidParameter`` for a bad argument,
    ``CimAccessDenied`` and ``CimUnavailable`` from the transport.
    """

    @abc.abstractmethod
    async def query(self, wql: str, namespace: str = V2_NAMESPACE) -> list[CimInstance]:
        """Run a WQL SELECT, ASSOCIATORS OF or REFERENCES OF query (text from ``cim.wql``)."""

    @abc.abstractmethod
    async def get(self, path: ObjectPath) -> CimInstance:
        """Fetch one instance by path; ``CimNotFound`` if it does not exist."""

    @abc.abstractmethod
    async def invoke(
        self, path: ObjectPath, method: str, params: Mapping[str, InValue] | None = None
    ) -> MethodResult:
        """Call ``method`` on the instance (or class, for a keyless path) at ``path``."""

    @abc.abstractmethod
    async def spawn(self, class_name: str, namespace: str = V2_NAMESPACE) -> CimInstance:
        """A new, unsaved instance carrying the class defaults (SpawnInstance_)."""

    @abc.abstractmethod
    def to_embedded(self, instance: CimInstance) -> str:
        """The CIM-XML (DTD 2.0) ``INSTANCE`` text of an instance, as GetText_(1) writes it."""

    @abc.abstractmethod
    def parse_embedded(self, text: str) -> CimInstance:
        """An instance from CIM-XML ``INSTANCE`` text (an embedded out-parameter)."""

    async def get_class(self, class_name: str, namespace: str = V2_NAMESPACE) -> CimClass:
        """The declaration of ``class_name``: properties with types, keys and defaults,
        methods with their parameters. Metadata, not a round trip of an operation;
        ``CimInvalidClass`` when the namespace has no such class."""
        raise CimError(f"{type(self).__name__} does not describe classes")

    async def associators(
        self,
        path: ObjectPath,
        *,
        assoc_class: str | None = None,
        result_class: str | None = None,
        role: str | None = None,
        result_role: str | None = None,
    ) -> list[CimInstance]:
        """Instances associated with ``path`` (``ASSOCIATORS OF``)."""
        from hyperv_agent.cim import wql

        text = wql.associators_of(
            path, assoc_class=assoc_class, result_class=result_class, role=role,
            result_role=result_role,
        )
        return await self.query(text, path.namespace)

    async def references(
        self, path: ObjectPath, *, result_class: str | None = None, role: str | None = None
    ) -> list[CimInstance]:
        """Association instances that refer to ``path`` (``REFERENCES OF``)."""
        from hyperv_agent.cim import wql

        text = wql.references_of(path, result_class=result_class, role=role)
        return await self.query(text, path.namespace)

    async def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release connections; the default backend holds none."""
