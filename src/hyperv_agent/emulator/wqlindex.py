"""The records a WHERE clause can match, found through the store's indexes.

``candidates`` returns a superset of the matching records, never missing one, in the
order a walk over every instance would meet them; the caller still evaluates the whole
clause on each. A comparison ``prop = literal`` is looked up in an index of ``prop``'s
values (``wqleval.value_keys``), ``prop LIKE 'text\\...'`` in an index of the values'
heads up to their first backslash (the InstanceID prefixes Hyper-V's identities use), or
among the records of the one owner the pattern's beginning names (the caller's ``Owned``:
the VM of ``Microsoft:<VM GUID>\\`` or ``Microsoft:GuestNetwork\\<VM GUID>\\``, a head
every VM's guest adapters share), which are few whatever the host's size and are taken
first; AND takes an owner's side, else the smaller of its sides, OR the union of both.
Anything else (NOT, IS NULL, <, >, pseudo-properties, properties the emulator computes
at read time) walks the class.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from hyperv_agent.cim.api import CimValue
from hyperv_agent.emulator import wqleval
from hyperv_agent.emulator.indexes import IndexSpec
from hyperv_agent.emulator.schema import ClassDef
from hyperv_agent.emulator.store import Probe, Record, Transaction
from hyperv_agent.emulator.wqlast import And, Comparison, Expr, Or, WqlLiteral

#: Whether an index of stored values answers for a class's property (see model).
Indexable = Callable[[ClassDef, str], bool]
#: The probe of the records of the one owner every value of a class's property beginning
#: with a prefix (folded, ending with a backslash) belongs to, when the prefix names it
#: (see model).
Owned = Callable[[ClassDef, str, str], Probe | None]


def _nobody(class_def: ClassDef, prop: str, prefix: str) -> Probe | None:
    return None


def candidates(txn: Transaction, classes: Sequence[ClassDef], where: Expr | None,
               indexable: Indexable, owned: Owned = _nobody) -> Iterable[Record]:
    """The records of ``classes`` that may satisfy ``where``, in walk order."""
    plan = _plan(txn, classes, where, _Ask(indexable, owned)) if where is not None else None
    if plan is None:
        return txn.instances_of(classes)
    return txn.lookup_any(classes, plan.probes)


@dataclass(frozen=True)
class _Ask:
    indexable: Indexable
    owned: Owned


@dataclass(frozen=True)
class _Plan:
    """The probes a clause's candidates are found by; ``owned``: all of one owner's
    records (few, whatever the host's size), taken without counting the alternatives,
    which would build and keep indexes no query then reads."""

    probes: list[Probe]
    owned: bool = False


def _plan(txn: Transaction, classes: Sequence[ClassDef], expr: Expr,
          ask: _Ask) -> _Plan | None:
    match expr:
        case And(left, right):
            sides = [p for p in (_plan(txn, classes, left, ask),
                                 _plan(txn, classes, right, ask)) if p is not None]
            return _smallest(txn, classes, sides)
        case Or(left, right):
            either = _plan(txn, classes, left, ask)
            other = _plan(txn, classes, right, ask) if either is not None else None
            if either is None or other is None:
                return None
            return _Plan(either.probes + other.probes, either.owned and other.owned)
        case Comparison(prop, op, literal):
            if not all(_indexable(c, prop, ask.indexable) for c in classes):
                return None
            owner = _owner(classes, prop, op, literal, ask.owned)
            comparison = _comparison(prop, op, literal)
            return _smallest(txn, classes, [
                *([] if owner is None else [_Plan(owner, owned=True)]),
                *([] if comparison is None else [_Plan(comparison)])])
        case _:
            return None


def _smallest(txn: Transaction, classes: Sequence[ClassDef],
              plans: Sequence[_Plan]) -> _Plan | None:
    """An owner's plan if there is one, else the plan of the fewest records."""
    for plan in plans:
        if plan.owned:
            return plan
    if len(plans) < 2:
        return plans[0] if plans else None
    return min(plans, key=lambda plan: txn.count(classes, plan.probes))


def _comparison(prop: str, op: str, literal: WqlLiteral) -> list[Probe] | None:
    name = prop.lower()
    if op == "=":
        spec = value_index(name)
        return [(spec, key) for key in wqleval.literal_keys(literal)]
    if op == "LIKE" and isinstance(literal, str):
        head = wqleval.like_head(literal)
        return None if head is None else [(head_index(name), head)]
    return None


def _owner(classes: Sequence[ClassDef], prop: str, op: str, literal: WqlLiteral,
           owned: Owned) -> list[Probe] | None:
    """The probe of the owner every value ``prop LIKE literal`` matches names, when each
    class has it and it is the same."""
    prefix = wqleval.like_prefix(literal) if op == "LIKE" and isinstance(literal, str) \
        else None
    if prefix is None:
        return None
    found = [owned(class_def, prop, prefix) for class_def in classes]
    first = found[0] if found else None
    return [first] if first is not None and all(p == first for p in found) else None


def _indexable(class_def: ClassDef, prop: str, indexable: Indexable) -> bool:
    return class_def.prop(prop) is not None and indexable(class_def, prop)


@functools.cache
def value_index(name: str) -> IndexSpec:
    """Records by the values of property ``name`` (lower case), as ``=`` compares them."""
    return IndexSpec(f"value:{name}", lambda record: wqleval.value_keys(_value(record, name)))


@functools.cache
def head_index(name: str) -> IndexSpec:
    """Records by the heads of property ``name``'s values (up to the first backslash)."""
    return IndexSpec(f"head:{name}", lambda record: wqleval.head_keys(_value(record, name)))


def _value(record: Record, name: str) -> CimValue:
    prop = record.class_def.prop(name)
    return record.values.get(prop.name) if prop is not None else None
