"""A Cim that counts the round trips made on behalf of the current task.

Wraps any backend; ``count()`` opens a context in which every query, get, invoke and spawn
made by the task (and the tasks it awaits) is counted, so the server can report round
trips per command whatever the backend.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

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


class CountingCim(Cim):
    def __init__(self, inner: Cim) -> None:
        self.inner = inner

    async def query(self, wql: str, namespace: str = V2_NAMESPACE) -> list[CimInstance]:
        _add()
        return await self.inner.query(wql, namespace)

    async def get(self, path: ObjectPath) -> CimInstance:
        _add()
        return await self.inner.get(path)

    async def invoke(self, path: ObjectPath, method: str,
                     params: Mapping[str, InValue] | None = None) -> MethodResult:
        _add()
        return await self.inner.invoke(path, method, params)

    async def spawn(self, class_name: str, namespace: str = V2_NAMESPACE) -> CimInstance:
        _add()
        return await self.inner.spawn(class_name, namespace)

    async def get_class(self, class_name: str, namespace: str = V2_NAMESPACE) -> CimClass:
        return await self.inner.get_class(class_name, namespace)  # metadata: not counted

    def to_embedded(self, instance: CimInstance) -> str:
        return self.inner.to_embedded(instance)

    def parse_embedded(self, text: str) -> CimInstance:
        return self.inner.parse_embedded(text)

    async def close(self) -> None:
        await self.inner.close()
