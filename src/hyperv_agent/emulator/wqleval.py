"""WHERE evaluation for the emulator's WQL, as WMI evaluates it.

Evaluation follows WMI, in two-valued logic:

* strings compare without regard to case (a per-character simple case fold, the same
  one LIKE uses, so ``=`` and ``LIKE`` always agree);
* the literal is converted to the property's type: a numeric string literal compares
  numerically with an integer property, ``'true'``/``'false'`` (and 1/0) with a boolean
  one, an integer or boolean literal as text with a string one; a literal that cannot be
  converted matches nothing;
* a NULL property makes every comparison false; only ``IS NULL`` is true (``NOT`` simply
  negates, so ``NOT (p = 1)`` is true for a NULL ``p``);
* an array property matches when any element matches (lenient: WMI itself refuses most
  conditions on arrays). This holds for ``<>`` too: true when any element differs;
* LIKE matches the whole value: ``%`` any run, ``_`` one character, ``[abc]``, ``[a-z]``
  and ``[^abc]`` sets (a ``]`` right after ``[`` or ``[^`` is a member). Non-string values
  are matched through their text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import assert_never

from hyperv_agent.cim.api import CimScalar, CimValue
from hyperv_agent.emulator.wqlast import And, Comparison, Expr, IsNull, Not, Or, WqlLiteral
from hyperv_agent.errors import CimInvalidQuery

# --- evaluation ---------------------------------------------------------------------------

_SIGN_TESTS: Mapping[str, Callable[[int], bool]] = {
    "=": lambda sign: sign == 0,
    "<>": lambda sign: sign != 0,
    "<": lambda sign: sign < 0,
    ">": lambda sign: sign > 0,
    "<=": lambda sign: sign <= 0,
    ">=": lambda sign: sign >= 0,
}
_INTEGER_TEXT = re.compile(r"\s*[+-]?\d+\s*")


def evaluate(expr: Expr, lookup: Callable[[str], CimValue]) -> bool:
    """Whether the instance behind ``lookup`` satisfies ``expr`` (see the module notes).

    ``lookup`` returns a property's value; its ``CimInvalidProperty`` for an unknown name
    propagates. AND and OR short-circuit, so check ``referenced_properties`` first to
    reject unknown names regardless of the data.
    """
    match expr:
        case And(left, right):
            return evaluate(left, lookup) and evaluate(right, lookup)
        case Or(left, right):
            return evaluate(left, lookup) or evaluate(right, lookup)
        case Not(inner):
            return not evaluate(inner, lookup)
        case IsNull(prop, negated):
            return (lookup(prop) is None) != negated
        case Comparison(prop, _, _):
            return _matches(expr, lookup(prop))
        case _:
            assert_never(expr)


def referenced_properties(expr: Expr) -> set[str]:
    """The property names ``expr`` mentions, as written."""
    match expr:
        case And(left, right) | Or(left, right):
            return referenced_properties(left) | referenced_properties(right)
        case Not(inner):
            return referenced_properties(inner)
        case IsNull(prop, _) | Comparison(prop, _, _):
            return {prop}
        case _:
            assert_never(expr)


def like_match(pattern: str, value: str) -> bool:
    """Whether ``value`` matches the WQL LIKE ``pattern`` (whole string, ignoring case)."""
    return like_regex(pattern).fullmatch(_fold(value)) is not None


def _matches(comparison: Comparison, value: CimValue) -> bool:
    if value is None:
        return False
    if isinstance(value, tuple):
        return any(_matches_scalar(comparison, item) for item in value)
    return _matches_scalar(comparison, value)


def _matches_scalar(comparison: Comparison, value: CimScalar) -> bool:
    if comparison.op == "LIKE":
        return like_match(_as_text(comparison.literal), _as_text(value))
    sign = _compare(value, _convert(value, comparison.literal))
    return sign is not None and _SIGN_TESTS[comparison.op](sign)


def _compare(value: CimScalar, literal: CimScalar | None) -> int | None:
    """-1, 0 or 1 comparing ``value`` with ``literal`` of the same kind; None otherwise."""
    if isinstance(value, str) and isinstance(literal, str):
        left, right = _fold(value), _fold(literal)
        return (left > right) - (left < right)
    if isinstance(value, int) and isinstance(literal, int):
        return (value > literal) - (value < literal)
    return None


def _convert(value: CimScalar, literal: WqlLiteral) -> CimScalar | None:
    """``literal`` converted to the type of ``value``; None when it cannot be."""
    if isinstance(value, bool):
        return _to_bool(literal)
    if isinstance(value, int):
        return _to_int(literal)
    return _as_text(literal)


def _to_bool(literal: WqlLiteral) -> bool | None:
    if isinstance(literal, bool):
        return literal
    if isinstance(literal, int):
        return bool(literal) if literal in (0, 1) else None
    return {"true": True, "false": False}.get(literal.strip().lower())


def _to_int(literal: WqlLiteral) -> int | None:
    if isinstance(literal, bool):
        return None
    if isinstance(literal, int):
        return literal
    return int(literal) if _INTEGER_TEXT.fullmatch(literal) else None


def _as_text(value: CimScalar) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return str(value)


# --- index keys: what an index must file a value under for ``=`` and LIKE to find it ---

#: A value as ``=`` compares it: its kind and, for text, its case fold.
ValueKey = tuple[str, str | int | bool]


def value_keys(value: CimValue) -> set[ValueKey]:
    """The keys under which ``value`` (each element of an array) can equal a literal."""
    items = value if isinstance(value, tuple) else (value,)
    return {key for item in items if item is not None for key in _scalar_key(item)}


def _scalar_key(value: CimScalar) -> tuple[ValueKey, ...]:
    if isinstance(value, bool):
        return (("b", value),)
    if isinstance(value, int):
        return (("i", value),)
    return (("s", _fold(value)),) if isinstance(value, str) else ()


def literal_keys(literal: WqlLiteral) -> tuple[ValueKey, ...]:
    """Every key a value equal to ``literal`` is filed under, whatever the value's type
    (``literal`` is converted to it, see the module notes)."""
    keys: list[ValueKey] = [("s", _fold(_as_text(literal)))]
    as_int, as_bool = _to_int(literal), _to_bool(literal)
    if as_int is not None:
        keys.append(("i", as_int))
    if as_bool is not None:
        keys.append(("b", as_bool))
    return tuple(keys)


def head_keys(value: CimValue) -> set[str]:
    """The folded text of ``value`` (each element) up to its first backslash."""
    items = value if isinstance(value, tuple) else (value,)
    return {_fold(_as_text(item)).partition("\\")[0] for item in items if item is not None}


def like_head(pattern: str) -> str | None:
    """The head (``head_keys``) every value matching ``pattern`` has; None when the
    pattern's literal beginning holds no backslash."""
    prefix = like_prefix(pattern)
    return None if prefix is None else prefix.partition("\\")[0]


def like_prefix(pattern: str) -> str | None:
    """The folded text every value matching ``pattern`` begins with, up to and with its
    last backslash (``microsoft:guestnetwork\\<guid>\\``); None when the pattern's
    literal beginning holds no backslash."""
    literal = re.split(r"[%_\[]", _fold(pattern), maxsplit=1)[0]
    head, backslash, _ = literal.rpartition("\\")
    return head + backslash if backslash else None


# --- case folding and LIKE patterns -------------------------------------------------------


@lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    """A one-character simple case fold (``ß`` and ``İ`` stay as they are)."""
    upper = char.upper()
    if len(upper) != 1:
        upper = char
    lower = upper.lower()
    return lower if len(lower) == 1 else upper


def _fold(text: str) -> str:
    if text.isascii():
        return text.lower()
    return "".join(map(_fold_char, text))


_WILDCARDS = {"%": ".*", "_": "."}


@lru_cache(maxsize=512)
def like_regex(pattern: str) -> re.Pattern[str]:
    """The compiled regex of a LIKE pattern, to be matched against folded text."""
    try:
        return re.compile(_translate_like(_fold(pattern)), re.DOTALL)
    except ValueError as exc:
        raise CimInvalidQuery(f"invalid WQL: LIKE pattern {pattern!r} {exc}") from None


def _translate_like(pattern: str) -> str:
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "[":
            part, index = _translate_set(pattern, index)
        else:
            part, index = _WILDCARDS.get(char) or re.escape(char), index + 1
        parts.append(part)
    return "".join(parts)


def _translate_set(pattern: str, start: int) -> tuple[str, int]:
    body_start = start + 1
    negated = pattern.startswith("^", body_start)
    if negated:
        body_start += 1
    end = pattern.find("]", body_start + 1)
    if end < 0:
        raise ValueError(f"has an unterminated '[' at position {start + 1}")
    members = _set_members(pattern[body_start:end])
    return "[" + ("^" if negated else "") + members + "]", end + 1


def _set_members(body: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(body):
        if index + 2 < len(body) and body[index + 1] == "-":
            low, high = body[index], body[index + 2]
            if low > high:
                raise ValueError(f"has a reversed range {low}-{high}")
            out.append(f"{re.escape(low)}-{re.escape(high)}")
            index += 3
        else:
            out.append(re.escape(body[index]))
            index += 1
    return "".join(out)
