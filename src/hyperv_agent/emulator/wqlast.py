"""The syntax tree of the emulator's WQL: queries and WHERE expressions, as frozen data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

WqlLiteral: TypeAlias = str | int | bool
CompareOp: TypeAlias = Literal["=", "<>", "<", ">", "<=", ">=", "LIKE"]


# --- the syntax tree ----------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """``prop op literal`` (a ``literal op prop`` text is stored with the operator flipped)."""

    prop: str
    op: CompareOp
    literal: WqlLiteral


@dataclass(frozen=True)
class IsNull:
    """``prop IS NULL``, or ``prop IS NOT NULL`` when ``negated``."""

    prop: str
    negated: bool = False


@dataclass(frozen=True)
class Not:
    expr: Expr


@dataclass(frozen=True)
class And:
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Or:
    left: Expr
    right: Expr


Expr: TypeAlias = Comparison | IsNull | Not | And | Or


@dataclass(frozen=True)
class SelectQuery:
    """``SELECT properties FROM class_name [WHERE where]``; ``properties == ()`` means ``*``."""

    class_name: str
    properties: tuple[str, ...]
    where: Expr | None


@dataclass(frozen=True)
class AssociatorsQuery:
    """``ASSOCIATORS OF {path_text} [WHERE ...]``; ``path_text`` is the text inside the braces."""

    path_text: str
    assoc_class: str | None = None
    result_class: str | None = None
    role: str | None = None
    result_role: str | None = None


@dataclass(frozen=True)
class ReferencesQuery:
    """``REFERENCES OF {path_text} [WHERE ...]``."""

    path_text: str
    result_class: str | None = None
    role: str | None = None


Query: TypeAlias = SelectQuery | AssociatorsQuery | ReferencesQuery
