"""What a migration carries from the VM's host to its destination: an offer.

The source builds it from the VM's records and the call's settings; the destination
(:mod:`hyperv_agent.emulator.arrival`) stages the VM from it alone, whether it lives in the
same process or in another one of the cluster, where the offer travels as JSON.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from hyperv_agent.emulator.schema import lookup
from hyperv_agent.emulator.store import Record, document, from_document

LIVE, STORAGE, STAGED, LIVE_AND_STORAGE = 32768, 32769, 32770, 32771
MIGRATION_TYPES = (LIVE, STORAGE, STAGED, LIVE_AND_STORAGE)
#: Where a VM's record keeps the hand-over that brought it to its host (absent: made there).
ARRIVAL = "arrival"


def _frozen() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Offer:
    """One VM, as it leaves its host, and what the destination needs to take it in.

    ``switch_names`` names each connected port's switch (port InstanceID, lower case);
    ``new_paths`` gives the new file of each disk that moves (SASD InstanceID, lower case)
    and ``source_files`` the local file it is copied from; ``data_roots`` are the
    NewSystemSettingData values the VM's settings take.
    """

    kind: int
    source: str
    destination: str
    guid: str
    vm_name: str
    records: tuple[Record, ...]
    running: bool = False
    memory_mb: int = 0
    listener_addresses: tuple[str, ...] = ()
    planned_id: str = ""
    retain_source_files: bool = False
    incarnation: str | None = None  # the VM's ARRIVAL on the source, if it arrived there
    switch_names: Mapping[str, str] = field(default_factory=_frozen)
    new_paths: Mapping[str, str] = field(default_factory=_frozen)
    source_files: Mapping[str, str] = field(default_factory=_frozen)
    data_roots: Mapping[str, str] = field(default_factory=_frozen)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    job: str = ""  # the path of the move's job on its source ("" without one)
    #: The move has begun (it is made as its job ends): the destination checks only what
    #: makes it impossible, not whether it takes moves (``arrival.receive``).
    begun: bool = False

    @property
    def moves_the_vm(self) -> bool:
        """Whether the VM leaves its host (a staged move leaves it where it is)."""
        return self.kind in (LIVE, LIVE_AND_STORAGE)

    def failure(self, side: str, reason: str) -> str:
        """A job error of this move at its ``side`` (source or destination)."""
        host = self.source if side == "source" else self.destination
        return failure_text(self.vm_name, side, host, reason)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            name: getattr(self, name) for name in (
                "id", "kind", "source", "destination", "guid", "vm_name", "running",
                "memory_mb", "planned_id", "retain_source_files", "incarnation", "job",
                "begun")}
        data["listener_addresses"] = list(self.listener_addresses)
        for name in ("switch_names", "new_paths", "source_files", "data_roots"):
            data[name] = dict(getattr(self, name))
        data["records"] = [record_json(record) for record in self.records]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Offer:
        """The offer ``to_json`` wrote; ValueError when ``data`` is not one."""
        try:
            return cls(
                kind=int(data["kind"]), source=str(data["source"]),
                destination=str(data["destination"]), guid=str(data["guid"]),
                vm_name=str(data["vm_name"]),
                records=tuple(record_from_json(item) for item in data["records"]),
                running=bool(data["running"]), memory_mb=int(data["memory_mb"]),
                listener_addresses=tuple(str(a) for a in data["listener_addresses"]),
                planned_id=str(data["planned_id"]),
                retain_source_files=bool(data["retain_source_files"]),
                incarnation=None if data["incarnation"] is None else str(data["incarnation"]),
                switch_names=_texts(data["switch_names"]), new_paths=_texts(data["new_paths"]),
                source_files=_texts(data["source_files"]),
                data_roots=_texts(data["data_roots"]), id=str(data["id"]),
                # an earlier version's offer has neither
                job=str(data.get("job") or ""), begun=bool(data.get("begun", False)))
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a migration offer: {error!r}") from None


def failure_text(vm_name: str, side: str, host: str, reason: str) -> str:
    """A migration job's error as Hyper-V words it."""
    return (f"Virtual machine migration operation for '{vm_name}' failed at migration {side} "
            f"'{host}'. {reason}")


def _texts(value: Any) -> Mapping[str, str]:
    return MappingProxyType({str(k): str(v) for k, v in dict(value).items()})


def record_json(record: Record) -> dict[str, Any]:
    """A record as ``record_from_json`` reads it."""
    return {"class": record.class_def.name, "namespace": record.class_def.namespace,
            **document(record)}


def record_from_json(data: Mapping[str, Any]) -> Record:
    """A record written as ``{"class", "namespace", "values", "meta"}``."""
    class_def = lookup(str(data["class"]), str(data["namespace"]))
    if class_def is None:
        raise ValueError(f"unknown class {data['class']!r}")
    return from_document(class_def, {"values": data["values"], "meta": data["meta"]})
