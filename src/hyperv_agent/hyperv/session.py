"""One Hyper-V host as the operation layer holds it: the backend, and what has been learnt
of the host while the agent runs.

As os-win keeps its WMI connection on its utils objects, every operation of ``hyperv/``
takes the host's ``HyperV`` session: one per backend, built where the agent is wired
(``wiring.open_host``) and handed to the handlers. It owns

- ``cim``, the backend (round trips counted there, whatever the backend);
- the paths of the host's singleton services (the Virtual System Management Service, the
  Image Management Service, the Metric Service), looked up once each;
- what each operation module keeps between calls (``kept``): device templates and
  spawned settings (``settings``), the GUIDs of VM names (``vms``), the secure boot
  templates (``firmware``), the disk metric definitions (``diskstats``), ...

Nothing in ``hyperv/`` keeps state of its own, so two sessions (two hosts, or a host
opened again) never share what they learnt, and what a session learnt goes with it.
A module's kept state is a class of that module with a constructor taking no argument;
``kept`` makes it on first use.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias, TypeVar

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import Cim, CimInstance, InValue, MethodResult, ObjectPath
from hyperv_agent.errors import CimNotFound, HyperVError
from hyperv_agent.hyperv import jobs
from hyperv_agent.hyperv.schema import NAMESPACE

_K = TypeVar("_K")
_V = TypeVar("_V")
#: What a module read from an instance, by instance: an entry goes with its instance, so a
#: backend that hands out the same (immutable) instance again is not read twice, and
#: instances no longer held are not kept alive. Make one with ``InstanceMemo()``.
InstanceMemo: TypeAlias = weakref.WeakKeyDictionary[CimInstance, _V]
_SERVICE_KEYS = ("CreationClassName", "Name", "SystemCreationClassName", "SystemName")


class HyperV:
    """The session of one Hyper-V host (see the module notes)."""

    def __init__(self, cim: Cim) -> None:
        self.cim = cim
        self._services: dict[str, ObjectPath] = {}
        self._kept: dict[Callable[[], Any], Any] = {}

    def kept(self, kind: Callable[[], _K]) -> _K:
        """What a module keeps between calls on this host: the one instance of ``kind``,
        made (with no argument) on first use. No round trip."""
        found = self._kept.get(kind)
        if found is None:
            found = self._kept[kind] = kind()
        return found

    def forget(self, kind: Callable[[], object]) -> None:
        """Drop what ``kind`` kept; the next ``kept(kind)`` starts afresh."""
        self._kept.pop(kind, None)

    async def service_path(self, class_name: str, missing: str) -> ObjectPath:
        """The path of the host's singleton service ``class_name``: 1 query on the first
        call, then kept (0 round trips). HyperVError naming the service and ``missing``
        (what its absence means) when the host has none."""
        if class_name not in self._services:
            query = wql.select(class_name, properties=_SERVICE_KEYS)
            found = await self.cim.query(query, NAMESPACE)
            if not found or found[0].path is None:
                raise HyperVError(f"the host has no {class_name}; {missing}")
            self._services[class_name] = found[0].path
        return self._services[class_name]

    def forget_service(self, class_name: str) -> None:
        """Drop a kept service path that turned out stale; the next lookup queries again."""
        self._services.pop(class_name, None)

    async def call_service(
        self, class_name: str, missing: str, method: str, params: Mapping[str, InValue],
        policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY, grace: jobs.WaitPolicy | None = None,
        started: Callable[[MethodResult], None] | None = None,
    ) -> MethodResult:
        """``jobs.call`` of ``method`` on the service ``class_name``; a stale kept path is
        looked up again, once."""
        try:
            return await jobs.call(self.cim, await self.service_path(class_name, missing),
                                   method, params, policy=policy, grace=grace,
                                   started=started)
        except CimNotFound:
            self.forget_service(class_name)
        return await jobs.call(self.cim, await self.service_path(class_name, missing),
                               method, params, policy=policy, grace=grace, started=started)

    async def close(self) -> None:
        """Close the backend; the session is not used afterwards."""
        await self.cim.close()
