"""The emulator's schema uses only names, types and signatures Microsoft documents.

Every class, property, method and parameter the emulator defines is checked against
:mod:`tests.emulator.documented_names`, a table written from Microsoft's reference pages.
The emulator may define a subset of what is documented; it must not invent or misspell.
Each check is its own test case, with an id naming the culprit (``Class``,
``Class.Property``, ``Class.Method`` or ``Class.Method.Parameter``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

import pytest

from hyperv_agent.emulator.schema import CLASSES

if TYPE_CHECKING:
    from tests.emulator import documented_names as doc
else:
    try:
        from tests.emulator import documented_names as doc
    except ModuleNotFoundError:  # tests/ is no package: pytest put this folder on sys.path
        import documented_names as doc


class _Param(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def cim_type(self) -> str: ...
    @property
    def is_array(self) -> bool: ...
    @property
    def direction(self) -> str: ...


class _Prop(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def cim_type(self) -> str: ...
    @property
    def is_array(self) -> bool: ...


class _Method(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def parameters(self) -> tuple[_Param, ...]: ...


class _Class(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def superclass(self) -> str | None: ...
    @property
    def properties(self) -> Mapping[str, _Prop]: ...
    @property
    def methods(self) -> Mapping[str, _Method]: ...


_EMULATED: list[tuple[str, _Class]] = sorted(CLASSES.items())
_CLASS_CASES = [pytest.param(key, cls, id=key) for key, cls in _EMULATED]
_PROPERTY_CASES = [
    pytest.param(cls, prop, id=f"{cls.name}.{prop.name}")
    for _, cls in _EMULATED
    for prop in cls.properties.values()
]
_METHOD_CASES = [
    pytest.param(cls, method, id=f"{cls.name}.{method.name}")
    for _, cls in _EMULATED
    for method in cls.methods.values()
]
_PARAM_CASES = [
    pytest.param(cls, method, param, id=f"{cls.name}.{method.name}.{param.name}")
    for _, cls in _EMULATED
    for method in cls.methods.values()
    for param in method.parameters
]
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _hint(name: str, documented: Iterable[str]) -> str:
    """A 'did you mean' for a misspelled name, or an empty string."""
    names = list(documented)
    same_but_case = [d for d in names if d.lower() == name.lower()]
    close = same_but_case or difflib.get_close_matches(name, names, n=1, cutoff=0.75)
    return f"; documented spelling: {close[0]!r}" if close else ""


def _documented_class(cls: _Class) -> doc.DocClass:
    documented = doc.DOCUMENTED.get(cls.name)
    if documented is None:
        pytest.skip(f"{cls.name} is not documented; its own test case fails")
    return documented


def _documented_method(cls: _Class, method: _Method) -> doc.DocMethod:
    documented = _documented_class(cls).method(method.name)
    if documented is None:
        pytest.skip(f"{cls.name}.{method.name} is not documented; its own test case fails")
    return documented


def test_schema_defines_classes_when_imported() -> None:
    assert CLASSES, "hyperv_agent.emulator.schema.CLASSES is empty: nothing would be checked"


@pytest.mark.parametrize(("key", "cls"), _CLASS_CASES)
def test_class_is_documented_when_emulator_defines_it(key: str, cls: _Class) -> None:
    assert key == cls.name, f"CLASSES key {key!r} differs from the class name {cls.name!r}"
    documented = doc.DOCUMENTED.get(cls.name)
    assert documented is not None, (
        f"{cls.name} is not a documented class{_hint(cls.name, doc.DOCUMENTED)}"
    )
    assert cls.namespace == documented.namespace, (
        f"{cls.name} lives in {documented.namespace!r}, not {cls.namespace!r}"
    )


@pytest.mark.parametrize(("key", "cls"), _CLASS_CASES)
def test_superclass_matches_documentation_when_both_name_one(key: str, cls: _Class) -> None:
    documented = _documented_class(cls)
    if documented.superclass is None:
        pytest.skip(f"{key}: the documentation names no superclass")
    assert cls.superclass == documented.superclass, (
        f"{cls.name} derives from {documented.superclass!r}, not {cls.superclass!r}"
    )


@pytest.mark.parametrize(("cls", "prop"), _PROPERTY_CASES)
def test_property_matches_documentation_when_emulator_defines_it(cls: _Class, prop: _Prop) -> None:
    documented_class = _documented_class(cls)
    documented = documented_class.prop(prop.name)
    assert documented is not None, (
        f"{cls.name}.{prop.name} is not a documented property"
        f"{_hint(prop.name, (p.name for p in documented_class.properties))}"
    )
    assert (prop.cim_type, prop.is_array) == (documented.cim_type, documented.is_array), (
        f"{cls.name}.{prop.name} is documented as {_shape(documented)}, not {_shape(prop)}"
    )


@pytest.mark.parametrize(("cls", "method"), _METHOD_CASES)
def test_method_is_documented_when_emulator_defines_it(cls: _Class, method: _Method) -> None:
    documented_class = _documented_class(cls)
    assert documented_class.method(method.name) is not None, (
        f"{cls.name}.{method.name} is not a documented (and tabulated) method"
        f"{_hint(method.name, (m.name for m in documented_class.methods))}"
    )


@pytest.mark.parametrize(("cls", "method", "param"), _PARAM_CASES)
def test_parameter_matches_documentation_when_emulator_defines_it(
    cls: _Class, method: _Method, param: _Param
) -> None:
    documented_method = _documented_method(cls, method)
    documented = documented_method.param(param.name)
    where = f"{cls.name}.{method.name}({param.name})"
    assert documented is not None, (
        f"{where} is not a documented parameter"
        f"{_hint(param.name, (p.name for p in documented_method.params))}"
    )
    assert param.direction == documented.direction, (
        f"{where} is documented as [{documented.direction}], not [{param.direction}]"
    )
    assert (param.cim_type, param.is_array) == (documented.cim_type, documented.is_array), (
        f"{where} is documented as {_shape(documented)}, not {_shape(param)}"
    )


def test_table_is_consistent_when_loaded() -> None:
    problems = [
        *_duplicates("class", (cls.name for cls in doc.ALL_CLASSES)),
        *(f"{key}: keyed under another name" for key, c in doc.DOCUMENTED.items() if key != c.name),
    ]
    for cls in doc.ALL_CLASSES:
        problems.extend(_class_problems(cls))
    assert not problems, "\n".join(problems)


def _class_problems(cls: doc.DocClass) -> list[str]:
    problems = []
    if cls.namespace not in doc.NAMESPACES:
        problems.append(f"{cls.name}: unknown namespace {cls.namespace!r}")
    problems += _duplicates(f"{cls.name} property", (p.name for p in cls.properties))
    problems += _duplicates(f"{cls.name} method", (m.name for m in cls.methods))
    problems += _member_problems(cls.name, cls.properties)
    for method in cls.methods:
        where = f"{cls.name}.{method.name}"
        problems += _duplicates(f"{where} parameter", (p.name for p in method.params))
        problems += _member_problems(where, method.params)
    return problems


def _member_problems(where: str, members: Iterable[doc.DocProperty | doc.DocParam]) -> list[str]:
    problems = []
    for member in members:
        name = f"{where}.{member.name}"
        if not _IDENTIFIER.match(member.name) or member.name == "ReturnValue":
            problems.append(f"{name}: not a property or parameter name")
        if member.cim_type not in doc.CIM_TYPES:
            problems.append(f"{name}: unknown type {member.cim_type!r}")
        if isinstance(member, doc.DocParam) and member.direction not in doc.DIRECTIONS:
            problems.append(f"{name}: unknown direction {member.direction!r}")
    return problems


def _duplicates(what: str, names: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    repeated = []
    for name in names:
        if name.lower() in seen:
            repeated.append(f"duplicate {what} {name!r}")
        seen.add(name.lower())
    return repeated


def _shape(member: _Prop | doc.DocProperty | doc.DocParam) -> str:
    return f"{member.cim_type}{'[]' if member.is_array else ''}"
