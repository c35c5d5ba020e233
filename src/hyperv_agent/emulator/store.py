"""The emulated host's object store: every instance in memory, written through to SQLite.

Changes are made inside a ``Transaction`` and become visible, in memory and on disk, only
when it commits; a method that fails part-way (or a process killed mid-call) leaves the
store as it was. SQLite runs in WAL mode, so a commit survives the process being killed.
It never waits for the disk (``synchronous=OFF``): a commit is handed to the operating
system and kept when the process dies, and a call's cost does not depend on how much
other data the machine is writing back (a checkpoint's fsync waits behind all of it). A
crash of the machine itself may lose the latest changes of the emulated host, which is a
model for tests and labs, not a host whose VMs live on.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import sqlite3
import sys
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hyperv_agent.cim.api import CimValue, ObjectPath
from hyperv_agent.emulator.indexes import ClassIndexes, Index, IndexSpec, TallySpec
from hyperv_agent.emulator.schema import ClassDef, lookup

#: One row a record, numbered in the order the records were first stored: a VM's records,
#: made together, sit together, so a call that changes a VM writes a few neighbouring
#: pages however large the host has grown, and new records go at the end. (Keyed by path,
#: a VM's records would be spread over the whole file and the pages a call writes would
#: leave SQLite's cache ever more often as the host grows.) The path is only read back:
#: every lookup is answered from memory.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    class TEXT NOT NULL,
    namespace TEXT NOT NULL,
    doc TEXT NOT NULL
)
"""


@dataclass(slots=True)
class Record:
    """One stored instance: its class, property values and the emulator's hidden state."""

    class_def: ClassDef
    values: dict[str, CimValue]  # canonical property name -> value; absent: null
    meta: dict[str, Any] = field(default_factory=dict)  # not visible through CIM
    #: Where the record stands in the order records were first stored (its row in the
    #: database), set as it is stored; kept with the record, so putting found records in
    #: order reads them and not a table of every record's position.
    position: int = field(default=-1, compare=False)

    @property
    def path(self) -> ObjectPath:
        keys = tuple((p.name, str(self.values.get(p.name) or "")) for p in self.class_def.keys)
        return ObjectPath(self.class_def.name, keys, self.class_def.namespace)

    def __getitem__(self, name: str) -> CimValue:
        return self.values.get(name)

    def integer(self, name: str) -> int:
        """An integer property's value, 0 when null."""
        value = self.values.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    def update(self, values: Mapping[str, CimValue]) -> None:
        for name, value in values.items():
            self[name] = value

    def __setitem__(self, name: str, value: CimValue) -> None:
        if value is None:  # held as absent: most of a class's properties are null
            self.values.pop(name, None)
        else:
            self.values[name] = value


#: One index probe: the records an index files under one key.
Probe = tuple[IndexSpec, Hashable]


def document(record: Record) -> dict[str, Any]:
    """A record's values and hidden state as JSON-ready data (``from_document`` reads it)."""
    return {"values": record.values, "meta": record.meta}


def from_document(class_def: ClassDef, data: dict[str, Any]) -> Record:
    """The record of ``class_def`` that ``document`` wrote. Names and strings are
    interned: each row is decoded on its own, and would otherwise give every record
    copies of its own of the property names and of the values thousands of records
    share (a class name, a resource type), which a record made in this process shares
    with the others (the schema's names, the code's texts). Opening the state dir of a
    host of 1000 VMs takes 9 MB less."""
    values = {sys.intern(name): sys.intern(value) if type(value) is str else value
              for name, value in data["values"].items() if value is not None}
    for name in class_def.array_names:  # JSON arrays come back as lists
        value = values.get(name)
        if isinstance(value, list):
            values[name] = tuple(value)
    return Record(class_def, values, {sys.intern(name): value
                                      for name, value in data["meta"].items()})


def _plain(values: dict[str, CimValue]) -> None:
    """Enum members among ``values`` (an IntEnum state, say) stored as the numbers they
    stand for, as a reload from the database gives them back: a record of numbers and
    strings is one the cyclic garbage collector does not walk."""
    for name, value in values.items():
        if isinstance(value, Enum):
            values[name] = value.value


def _encode(record: Record) -> str:
    return json.dumps(document(record), separators=(",", ":"))


def _decode(class_def: ClassDef, doc: str) -> Record:
    return from_document(class_def, json.loads(doc))


class Store:
    """All instances of one emulated host, indexed by normalised path, by class and by the
    secondary indexes asked of it (``lookup``, ``tally``).

    Lookups list records class by class (in the order the classes are given), each class
    in the order its records were first stored, as a walk over every instance does.
    """

    def __init__(
        self, db_path: Path | None, before_commit: Callable[[], None] | None = None,
        read_only: bool = False,
    ) -> None:
        """The records of ``db_path`` (none: in memory only). ``read_only``: read what
        the database holds, then keep every change in memory only."""
        self._before_commit = before_commit or (lambda: None)
        self._by_path: dict[str, Record] = {}
        self._by_class: dict[str, dict[str, Record]] = {}
        self._counter = itertools.count()
        #: How many commits have changed the store: equal revisions, equal contents.
        self.revision = 0
        #: How many index tables lookups and counts have probed (one a key and class, or a
        #: key of an index across classes), the cost that grows with the host's size.
        self.probes = 0
        self._indexes: dict[str, ClassIndexes] = {}  # lower-case class name -> its indexes
        self._across = ClassIndexes()  # the indexes across classes (IndexSpec.across)
        self._db: sqlite3.Connection | None = None
        if db_path is not None and read_only:
            self._db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                self._load()
            finally:
                self._db.close()
                self._db = None
        elif db_path is not None:
            self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.execute(_SCHEMA)
            self._move_old_table()
            self._load()

    def _move_old_table(self) -> None:
        """Rows of the table earlier versions kept, ``instances`` (keyed by path), moved
        into ``records`` in the order that table holds them, in one transaction."""
        assert self._db is not None
        if self._db.execute("SELECT 1 FROM sqlite_master "
                            "WHERE type = 'table' AND name = 'instances'").fetchone() is None:
            return
        with self._writing() as db:
            db.execute("INSERT INTO records (path, class, namespace, doc) "
                       "SELECT path, class, namespace, doc FROM instances ORDER BY rowid")
            db.execute("DROP TABLE instances")

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """The database inside one write transaction: committed when the block ends,
        rolled back when it raises."""
        assert self._db is not None
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _load(self) -> None:
        assert self._db is not None
        last = -1
        for row_id, key, class_name, namespace, doc in self._db.execute(
            "SELECT id, path, class, namespace, doc FROM records ORDER BY id"
        ):
            last = row_id
            class_def = lookup(class_name, namespace)
            if class_def is not None:  # the path column is the normalised path
                record = _decode(class_def, doc)
                record.position = row_id
                self._index(key, record)
        self._counter = itertools.count(last + 1)

    def _index(self, key: str, record: Record) -> None:
        name = record.class_def.name.lower()
        old = self._by_path.get(key)
        self._by_path[key] = record
        self._by_class.setdefault(name, {})[key] = record
        for indexes in (self._indexes.get(name), self._across):
            if indexes is None:
                continue
            if old is None:
                indexes.add(key, record)
            else:  # a path is always of one class: the old record has the same indexes
                indexes.replace(key, old, record)

    def _unindex(self, key: str) -> None:
        record = self._by_path.pop(key, None)
        if record is None:
            return
        name = record.class_def.name.lower()
        self._by_class.get(name, {}).pop(key, None)
        indexes = self._indexes.get(name)
        if indexes is not None:
            indexes.remove(key, record)
        self._across.remove(key, record)

    def _class_indexes(self, class_def: ClassDef) -> tuple[ClassIndexes, dict[str, Record]]:
        name = class_def.name.lower()
        indexes = self._indexes.get(name)
        if indexes is None:
            indexes = self._indexes[name] = ClassIndexes()
        return indexes, self._by_class.get(name, {})

    @property
    def empty(self) -> bool:
        return not self._by_path

    def get(self, path: ObjectPath) -> Record | None:
        return self._by_path.get(path.normalized)

    def get_key(self, key: str) -> Record | None:
        """The record at a normalised path."""
        return self._by_path.get(key)

    def instances_of(self, classes: Iterable[ClassDef]) -> Iterator[Record]:
        for class_def in classes:
            yield from self._by_class.get(class_def.name.lower(), {}).values()

    def keyed_instances_of(self, classes: Iterable[ClassDef]) -> Iterator[tuple[str, Record]]:
        """``instances_of`` with each record's normalised path, as stored (not worked out
        again from its key properties)."""
        for class_def in classes:
            yield from self._by_class.get(class_def.name.lower(), {}).items()

    def lookup(self, classes: Sequence[ClassDef],
               probes: Sequence[Probe]) -> list[tuple[str, Record]]:
        """(path key, record) of the records of ``classes`` filed under any of ``probes``."""
        across, own = _split(probes)
        pooled = self._pooled(classes, across)
        found: list[tuple[str, Record]] = []
        for class_def in classes:
            name = class_def.name.lower()
            hits = pooled.get(name, {})
            if own:
                indexes, records = self._class_indexes(class_def)
                self.probes += len(own)
                for spec, key in own:
                    hits.update((path_key, records[path_key])
                                for path_key in indexes.index(spec, records).get(key))
            found.extend(sorted(hits.items(), key=self._position))
        return found

    def _pooled(self, classes: Sequence[ClassDef],
                probes: Sequence[Probe]) -> dict[str, dict[str, Record]]:
        """The records of ``classes`` filed under any of ``probes`` (indexes across
        classes), by lower-case class name."""
        if not probes:
            return {}
        wanted = {class_def.name.lower() for class_def in classes}
        pooled: dict[str, dict[str, Record]] = {}
        self.probes += len(probes)
        for spec, key in probes:
            for path_key in self._across_index(spec).get(key):
                record = self._by_path[path_key]
                name = record.class_def.name.lower()
                if name in wanted:
                    pooled.setdefault(name, {})[path_key] = record
        return pooled

    def _across_index(self, spec: IndexSpec) -> Index:
        return self._across.index(spec, self._by_path)

    def count(self, classes: Sequence[ClassDef], probes: Sequence[Probe]) -> int:
        """How many records ``lookup`` would go through (at most; without building a list).
        An index across classes counts what it files of every class."""
        across, own = _split(probes)
        self.probes += len(across) + len(own) * len(classes)
        total = sum(len(self._across_index(spec).get(key)) for spec, key in across)
        if own:
            for class_def in classes:
                indexes, records = self._class_indexes(class_def)
                total += sum(len(indexes.index(spec, records).get(key)) for spec, key in own)
        return total

    @staticmethod
    def _position(item: tuple[str, Record]) -> int:
        return item[1].position

    def tally(self, classes: Sequence[ClassDef], spec: TallySpec) -> int:
        """The sum ``spec`` keeps over the records of ``classes``."""
        total = 0
        for class_def in classes:
            indexes, records = self._class_indexes(class_def)
            total += indexes.tally(spec, records).total
        return total

    def transaction(self) -> Transaction:
        return Transaction(self)

    def _commit(self, puts: dict[str, Record], deletes: set[str]) -> None:
        if not puts and not deletes:  # a read-only call: nothing to write
            return
        self.revision += 1
        for record in puts.values():
            _plain(record.values)
        for key, record in puts.items():  # a changed record keeps its place
            old = self._by_path.get(key)
            record.position = next(self._counter) if old is None else old.position
        if self._db is not None:
            self._write(puts, deletes)
        for key in deletes:
            self._unindex(key)
        for key, record in puts.items():
            self._index(key, record)

    def _write(self, puts: dict[str, Record], deletes: set[str]) -> None:
        with self._writing() as db:
            db.executemany("DELETE FROM records WHERE id = ?",
                           [(record.position,) for record in map(self._by_path.get, deletes)
                            if record is not None])
            db.executemany(
                "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?)",
                [(r.position, k, r.class_def.name, r.class_def.namespace, _encode(r))
                 for k, r in puts.items()],
            )
            self._before_commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _split(probes: Sequence[Probe]) -> tuple[list[Probe], list[Probe]]:
    """``probes`` of indexes across classes, and those of each class's own indexes."""
    across = [probe for probe in probes if probe[0].across]
    return across, [probe for probe in probes if not probe[0].across]


class Transaction:
    """Staged changes over a store; reads see the staged state. Commit applies all or none."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._puts: dict[str, Record] = {}
        self._deletes: set[str] = set()

    def get(self, path: ObjectPath) -> Record | None:
        return self.get_key(path.normalized)

    def get_key(self, key: str) -> Record | None:
        """The record at a normalised path, as staged."""
        if key in self._deletes:
            return None
        return self._puts.get(key) or self._store.get_key(key)

    def edit(self, path: ObjectPath) -> Record | None:
        """A staged, writable copy of the record at ``path`` (None if absent)."""
        key = path.normalized
        if key in self._puts:
            return self._puts[key]
        record = self.get(path)
        if record is None:
            return None
        staged = Record(record.class_def, dict(record.values), copy.deepcopy(record.meta))
        self._puts[key] = staged
        return staged

    def put(self, record: Record) -> None:
        key = record.path.normalized
        self._deletes.discard(key)
        self._puts[key] = record

    def delete(self, path: ObjectPath) -> None:
        self.delete_key(path.normalized)

    def delete_key(self, key: str) -> None:
        """Stage the deletion of the record at a normalised path."""
        self._puts.pop(key, None)
        self._deletes.add(key)

    def instances_of(self, classes: Iterable[ClassDef]) -> Iterator[Record]:
        if not self._puts and not self._deletes:  # nothing staged: read the store directly
            yield from self._store.instances_of(classes)
            return
        wanted = {c.name.lower() for c in classes}
        for record in self._puts.values():
            if record.class_def.name.lower() in wanted:
                yield record
        for key, record in self._store.keyed_instances_of(classes):
            if key not in self._puts and key not in self._deletes:
                yield record

    def lookup(self, classes: Sequence[ClassDef], spec: IndexSpec,
               key: Hashable) -> list[Record]:
        """The records of ``classes`` filed under ``key`` by ``spec``, staged ones first."""
        return self.lookup_any(classes, ((spec, key),))

    def lookup_any(self, classes: Sequence[ClassDef], probes: Sequence[Probe]) -> list[Record]:
        """The records of ``classes`` filed under any of ``probes``: staged ones first, then
        the stored ones in ``instances_of``'s order."""
        found = self._store.lookup(classes, probes)
        if not self._puts and not self._deletes:
            return [record for _, record in found]
        wanted = {c.name.lower() for c in classes}
        staged = [r for r in self._puts.values() if r.class_def.name.lower() in wanted
                  and any(k == key for spec, key in probes for k in spec.keys(r))]
        return staged + [r for k, r in found if k not in self._puts and k not in self._deletes]

    def count(self, classes: Sequence[ClassDef], probes: Sequence[Probe]) -> int:
        """At most how many records ``lookup_any`` would return."""
        return self._store.count(classes, probes) + len(self._puts)

    def tally(self, classes: Sequence[ClassDef], spec: TallySpec) -> int:
        """The sum ``spec`` keeps over the records of ``classes``, staged changes included."""
        total = self._store.tally(classes, spec)
        wanted = {c.name.lower() for c in classes}
        for key in [*self._puts, *self._deletes]:
            old = self._store.get_key(key)
            if old is not None and old.class_def.name.lower() in wanted:
                total -= spec.value(old)
        for record in self._puts.values():
            if record.class_def.name.lower() in wanted:
                total += spec.value(record)
        return total

    @property
    def staged(self) -> bool:
        """Whether anything is staged (reads then differ from the store's)."""
        return bool(self._puts or self._deletes)

    def changes(self) -> tuple[list[Record], list[str]]:
        """What is staged: the records to store, and the normalised paths to delete."""
        return list(self._puts.values()), sorted(self._deletes)

    def commit(self) -> None:
        self._store._commit(self._puts, self._deletes)
        self._puts, self._deletes = {}, set()
