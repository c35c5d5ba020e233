"""A Cim that counts the round trips made on behalf of the current task, and lets them be
observed.

Wraps any backend; ``count()`` opens a context in which every query, get, invoke and spawn
made by the task (and the tasks it awaits) is counted, so the server can report round
trips per command whatever the backend. ``CountingCim.observe()`` records every round trip
made through the backend while it is open, by any task, in order: what a benchmark or a
test reads to attribute round trips to the steps of an operation.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from hyperv_agent.cim.api import V2_NAMESPACE, Cim, CimInstance, InValue, MethodResult, ObjectPath
from hyperv_agent.cim.classdecl import CimClass

_counter: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "cim_round_trips", default=None)


@contextmanager
def count() -> Iterator[list[int]]:
    """Yields a one-element list holding the round trips made inside the block."""
    cell = [0]
    token = _counter.set(cell)
    try:
        yield cell
    finally:
        _counter.reset(token)


def _add() -> None:
    cell = _counter.get()
    if cell is not None:
        cell[0] += 1


@dataclass(frozen=True)
class RoundTrip:
    """One round trip, as the agent made it."""

    primitive: str  # query, get, invoke or spawn
    target: str  # the WQL text, or the class got, invoked on or spawned
    method: str = ""  # invoke: the method called
    params: Mapping[str, InValue] = field(default_factory=dict)  # invoke: what it was given
    return_value: int | None = None  # invoke: what it returned (None: it raised)


class CountingCim(Cim):
    def __init__(self, inner: Cim) -> None:
        self.inner = inner
        self._observers: list[list[RoundTrip]] = []

    @contextmanager
    def observe(self) -> Iterator[list[RoundTrip]]:
        """Yields a list that holds every round trip made through this backend while the
        block runs (by any task), in the order they were answered."""
        seen: list[RoundTrip] = []
        self._observers.append(seen)
        try:
            yield seen
        finally:
            self._observers.remove(seen)

    def _seen(self, trip: RoundTrip) -> None:
        for seen in self._observers:
            seen.append(trip)

    async def query(self, wql: str, namespace: str = V2_NAMESPACE) -> list[CimInstance]:
        _add()
        try:
            return await self.inner.query(wql, namespace)
        finally:
            self._seen(RoundTrip("query", wql))

    async def get(self, path: ObjectPath) -> CimInstance:
        _add()
        try:
            return await self.inner.get(path)
        finally:
            self._seen(RoundTrip("get", path.class_name))

    async def invoke(self, path: ObjectPath, method: str,
                     params: Mapping[str, InValue] | None = None) -> MethodResult:
        _add()
        code = None
        try:
            result = await self.inner.invoke(path, method, params)
            code = result.return_value
            return result
        finally:
            self._seen(RoundTrip("invoke", path.class_name, method, dict(params or {}), code))

    async def spawn(self, class_name: str, namespace: str = V2_NAMESPACE) -> CimInstance:
        _add()
        try:
            return await self.inner.spawn(class_name, namespace)
        finally:
            self._seen(RoundTrip("spawn", class_name))

    async def get_class(self, class_name: str, namespace: str = V2_NAMESPACE) -> CimClass:
        return await self.inner.get_class(class_name, namespace)  # metadata: not counted

    def to_embedded(self, instance: CimInstance) -> str:
        return self.inner.to_embedded(instance)

    def parse_embedded(self, text: str) -> CimInstance:
        return self.inner.parse_embedded(text)

    async def close(self) -> None:
        await self.inner.close()
