"""The only place WQL text is built.

Every literal goes through ``quote``: WQL string literals treat the backslash as an
escape character, so backslashes and quotes inside values are escaped, and property and
class names are checked against the identifier grammar, so request data can never change
the shape of a query.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.errors import CimInvalidQuery

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LIKE_SPECIAL = re.compile(r"([\[%_])")


@dataclass(frozen=True)
class Condition:
    """A WHERE condition; combine with ``&`` and ``|``."""

    text: str

    def __and__(self, other: Condition) -> Condition:
        return Condition(f"({self.text} AND {other.text})")

    def __or__(self, other: Condition) -> Condition:
        return Condition(f"({self.text} OR {other.text})")


def identifier(name: str) -> str:
    """``name`` if it is a valid class or property name; CimInvalidQuery otherwise."""
    if not _IDENTIFIER.match(name):
        raise CimInvalidQuery(f"not a valid WQL identifier: {name!r}")
    return name


def quote(value: str | int | bool) -> str:
    """A WQL literal for ``value``: integers bare, booleans TRUE/FALSE, strings quoted."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def like_literal(text: str) -> str:
    """``text`` with the LIKE wildcards ``%``, ``_`` and ``[`` made literal."""
    return _LIKE_SPECIAL.sub(r"[\1]", text)


def eq(prop: str, value: str | int | bool) -> Condition:
    return Condition(f"{identifier(prop)} = {quote(value)}")


def ne(prop: str, value: str | int | bool) -> Condition:
    return Condition(f"{identifier(prop)} <> {quote(value)}")


def ge(prop: str, value: int) -> Condition:
    return Condition(f"{identifier(prop)} >= {quote(value)}")


def like(prop: str, pattern: str) -> Condition:
    """A LIKE condition with a pattern the caller built from ``like_literal`` and wildcards."""
    return Condition(f"{identifier(prop)} LIKE {quote(pattern)}")


def starts_with(prop: str, prefix: str) -> Condition:
    return like(prop, like_literal(prefix) + "%")


def ends_with(prop: str, suffix: str) -> Condition:
    return like(prop, "%" + like_literal(suffix))


def any_of(prop: str, values: Sequence[str | int]) -> Condition:
    """``prop`` equal to one of ``values`` (at least one)."""
    if not values:
        raise CimInvalidQuery(f"any_of({prop!r}) needs at least one value")
    return either(eq(prop, value) for value in values)


def either(conditions: Iterable[Condition]) -> Condition:
    """Any of ``conditions`` (at least one; CimInvalidQuery for none)."""
    result: Condition | None = None
    for condition in conditions:
        result = condition if result is None else result | condition
    if result is None:
        raise CimInvalidQuery("either() needs at least one condition")
    return result


def select(
    class_name: str, where: Condition | None = None, properties: Sequence[str] = ()
) -> str:
    """``SELECT <properties or *> FROM <class> [WHERE <condition>]``."""
    columns = ", ".join(identifier(name) for name in properties) if properties else "*"
    text = f"SELECT {columns} FROM {identifier(class_name)}"  # noqa: S608 - names checked
    return f"{text} WHERE {where.text}" if where is not None else text


def _object_reference(path: ObjectPath) -> str:
    relative = path.relative()
    if "{" in relative or "}" in relative:
        raise CimInvalidQuery(f"object path cannot be used in an association query: {path}")
    return "{" + relative + "}"


def _clauses(**names: str | None) -> str:
    parts = [f"{key} = {identifier(value)}" for key, value in names.items() if value]
    return (" WHERE " + " ".join(parts)) if parts else ""


def associators_of(
    path: ObjectPath,
    *,
    assoc_class: str | None = None,
    result_class: str | None = None,
    role: str | None = None,
    result_role: str | None = None,
) -> str:
    """``ASSOCIATORS OF {path} [WHERE AssocClass = … ResultClass = … Role = … ResultRole = …]``."""
    clauses = _clauses(
        AssocClass=assoc_class, ResultClass=result_class, Role=role, ResultRole=result_role
    )
    return f"ASSOCIATORS OF {_object_reference(path)}{clauses}"


def references_of(
    path: ObjectPath, *, result_class: str | None = None, role: str | None = None
) -> str:
    """``REFERENCES OF {path} [WHERE ResultClass = … Role = …]``."""
    return f"REFERENCES OF {_object_reference(path)}{_clauses(ResultClass=result_class, Role=role)}"
