"""The emulated host's object store: every instance in memory, written through to SQLite.

Changes are made inside a ``Transaction`` and become visible, in memory and on disk, only
when it commits; a method that fails part-way (or a process killed mid-call) leaves the
store as it was. SQLite runs in WAL mode, so a commit survives the process being killed.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperv_agent.cim.api import CimValue, ObjectPath
from hyperv_agent.emulator.schema import ClassDef, lookup

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    path TEXT PRIMARY KEY,
    class TEXT NOT NULL,
    namespace TEXT NOT NULL,
    doc TEXT NOT NULL
)
"""


@dataclass
class Record:
    """One stored instance: its class, property values and the emulator's hidden state."""

    class_def: ClassDef
    values: dict[str, CimValue]  # canonical property name -> value
    meta: dict[str, Any] = field(default_factory=dict)  # not visible through CIM

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

    def __setitem__(self, name: str, value: CimValue) -> None:
        self.values[name] = value


def _encode(record: Record) -> str:
    return json.dumps({"values": record.values, "meta": record.meta}, separators=(",", ":"))


def _decode(class_def: ClassDef, doc: str) -> Record:
    data = json.loads(doc)
    values = {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in data["values"].items()
    }
    return Record(class_def, values, data["meta"])


class Store:
    """All instances of one emulated host, indexed by normalised path and by class."""

    def __init__(
        self, db_path: Path | None, before_commit: Callable[[], None] | None = None
    ) -> None:
        self._before_commit = before_commit or (lambda: None)
        self._by_path: dict[str, Record] = {}
        self._by_class: dict[str, dict[str, Record]] = {}
        self._db: sqlite3.Connection | None = None
        if db_path is not None:
            self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            self._load()

    def _load(self) -> None:
        assert self._db is not None
        for class_name, namespace, doc in self._db.execute(
            "SELECT class, namespace, doc FROM instances"
        ):
            class_def = lookup(class_name, namespace)
            if class_def is not None:
                self._index(_decode(class_def, doc))

    def _index(self, record: Record) -> None:
        key = record.path.normalized
        self._by_path[key] = record
        self._by_class.setdefault(record.class_def.name.lower(), {})[key] = record

    def _unindex(self, key: str) -> None:
        record = self._by_path.pop(key, None)
        if record is not None:
            self._by_class.get(record.class_def.name.lower(), {}).pop(key, None)

    @property
    def empty(self) -> bool:
        return not self._by_path

    def get(self, path: ObjectPath) -> Record | None:
        return self._by_path.get(path.normalized)

    def instances_of(self, classes: Iterable[ClassDef]) -> Iterator[Record]:
        for class_def in classes:
            yield from self._by_class.get(class_def.name.lower(), {}).values()

    def transaction(self) -> Transaction:
        return Transaction(self)

    def _commit(self, puts: dict[str, Record], deletes: set[str]) -> None:
        if self._db is not None:
            self._write(puts, deletes)
        for key in deletes:
            self._unindex(key)
        for record in puts.values():
            self._index(record)

    def _write(self, puts: dict[str, Record], deletes: set[str]) -> None:
        assert self._db is not None
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("DELETE FROM instances WHERE path = ?", [(k,) for k in deletes])
            self._db.executemany(
                "INSERT OR REPLACE INTO instances VALUES (?, ?, ?, ?)",
                [(k, r.class_def.name, r.class_def.namespace, _encode(r)) for k, r in puts.items()],
            )
            self._before_commit()
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class Transaction:
    """Staged changes over a store; reads see the staged state. Commit applies all or none."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._puts: dict[str, Record] = {}
        self._deletes: set[str] = set()

    def get(self, path: ObjectPath) -> Record | None:
        key = path.normalized
        if key in self._deletes:
            return None
        return self._puts.get(key) or self._store.get(path)

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
        key = path.normalized
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
        for record in self._store.instances_of(classes):
            key = record.path.normalized
            if key not in self._puts and key not in self._deletes:
                yield record

    def commit(self) -> None:
        self._store._commit(self._puts, self._deletes)
        self._puts, self._deletes = {}, set()
