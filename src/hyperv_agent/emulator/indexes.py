"""Secondary indexes of the emulated host's store, so a lookup costs what it finds.

An ``IndexSpec`` says under which keys a record is filed (a record may be filed under
several keys, or none); a ``TallySpec`` keeps a running sum of one number per record.
The store builds an index of a class the first time it is asked for and keeps it up to
date on every commit; records in the store are never changed in place (a transaction
stages copies), so a record's keys are the same when it is filed and when it leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hyperv_agent.emulator.store import Record


@dataclass(frozen=True, eq=False)
class IndexSpec:
    """Records filed under the keys ``keys`` gives them; ``name`` identifies the index.
    An index ``across`` classes is one for the whole store rather than one per class: a
    lookup over many classes (every resource setting of a VM) then probes one table, not
    one per class, each as large as the host."""

    name: str
    keys: Callable[[Record], Iterable[Hashable]]
    across: bool = False


@dataclass(frozen=True, eq=False)
class TallySpec:
    """A running sum of ``value`` over the records of a class."""

    name: str
    value: Callable[[Record], int]


class Index:
    """One class's records by key: key -> the path keys of the records filed under it
    (insertion-ordered, as a dict of path key -> None). Buckets hold path keys rather
    than records: a dict of strings is not walked by the cyclic garbage collector, and a
    full host has a bucket or more per VM and index."""

    def __init__(self, spec: IndexSpec) -> None:
        self.spec = spec
        self.buckets: dict[Hashable, dict[str, None]] = {}

    def add(self, path_key: str, record: Record) -> None:
        for key in self.spec.keys(record):
            self.buckets.setdefault(key, {})[path_key] = None

    def replace(self, path_key: str, old: Record, new: Record) -> None:
        """File the record at ``path_key`` as ``new`` where it was filed as ``old``: left
        where it is when its keys are the same (most changes leave them so), which
        touches none of the index's buckets."""
        old_keys, new_keys = list(self.spec.keys(old)), list(self.spec.keys(new))
        if old_keys != new_keys:
            self.remove(path_key, old)
            self.add(path_key, new)

    def remove(self, path_key: str, record: Record) -> None:
        for key in self.spec.keys(record):
            bucket = self.buckets.get(key)
            if bucket is not None:
                bucket.pop(path_key, None)
                if not bucket:
                    del self.buckets[key]

    def get(self, key: Hashable) -> dict[str, None]:
        """The path keys of the records filed under ``key``."""
        return self.buckets.get(key, {})


class Tally:
    """One class's running sum."""

    def __init__(self, spec: TallySpec) -> None:
        self.spec = spec
        self.total = 0

    def add(self, path_key: str, record: Record) -> None:
        self.total += self.spec.value(record)

    def replace(self, path_key: str, old: Record, new: Record) -> None:
        self.total += self.spec.value(new) - self.spec.value(old)

    def remove(self, path_key: str, record: Record) -> None:
        self.total -= self.spec.value(record)


class ClassIndexes:
    """Every index and tally kept for one class."""

    def __init__(self) -> None:
        self.indexes: dict[str, Index] = {}
        self.tallies: dict[str, Tally] = {}

    def add(self, path_key: str, record: Record) -> None:
        for index in self.indexes.values():
            index.add(path_key, record)
        for tally in self.tallies.values():
            tally.add(path_key, record)

    def remove(self, path_key: str, record: Record) -> None:
        for index in self.indexes.values():
            index.remove(path_key, record)
        for tally in self.tallies.values():
            tally.remove(path_key, record)

    def replace(self, path_key: str, old: Record, new: Record) -> None:
        for index in self.indexes.values():
            index.replace(path_key, old, new)
        for tally in self.tallies.values():
            tally.replace(path_key, old, new)

    def index(self, spec: IndexSpec, records: dict[str, Record]) -> Index:
        """The index ``spec`` of this class, built from ``records`` the first time."""
        index = self.indexes.get(spec.name)
        if index is None:
            index = self.indexes[spec.name] = Index(spec)
            for path_key, record in records.items():
                index.add(path_key, record)
        return index

    def tally(self, spec: TallySpec, records: dict[str, Record]) -> Tally:
        """The tally ``spec`` of this class, summed over ``records`` the first time."""
        tally = self.tallies.get(spec.name)
        if tally is None:
            tally = self.tallies[spec.name] = Tally(spec)
            for path_key, record in records.items():
                tally.add(path_key, record)
        return tally
