"""Open enumerations of the WinRM face: rendered items handed out batch by batch.

A batch holds at most MaxElements items and as many as fit the envelope the client
accepts; when not even one item fits, the answer is the ``w:EncodingLimit`` fault
(DSP0226 §8.2.3). An enumeration left without a Pull for ``timeout_s`` is dropped
(WinRM's EnumerationTimeoutms, 60 s by default), as is one whose last item was taken.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from hyperv_agent.emulator.winrm.soap import MAX_ENVELOPE_SIZE_EXCEEDED, Fault

MAX_BATCH_ITEMS = 32000


@dataclass
class _Open:
    items: list[str]
    position: int = 0
    touched: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Batch:
    items: list[str]
    context: str | None  # None once the last item was handed out

    @property
    def ended(self) -> bool:
        return self.context is None


class Enumerations:
    def __init__(self, timeout_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self.clock = clock
        self._open: dict[str, _Open] = {}

    def start(self, items: list[str]) -> str:
        self._expire()
        context = f"uuid:{str(uuid.uuid4()).upper()}"
        self._open[context] = _Open(items, touched=self.clock())
        return context

    def take(self, context: str, max_elements: int, room_bytes: int) -> Batch:
        """The next batch; ``room_bytes`` is what the envelope leaves for the items."""
        self._expire()
        current = self._open.get(context)
        if current is None:
            raise Fault("n:InvalidEnumerationContext", "the enumeration context is not "
                        "valid: it ended, was released or expired", sender=False)
        current.touched = self.clock()
        batch = _fill(current, max(1, min(max_elements, MAX_BATCH_ITEMS)), room_bytes)
        if current.position >= len(current.items):
            del self._open[context]
            return Batch(batch, None)
        return Batch(batch, context)

    @property
    def open_count(self) -> int:
        """Enumeration contexts open now (not ended, released or expired)."""
        self._expire()
        return len(self._open)

    def release(self, context: str) -> None:
        if self._open.pop(context, None) is None:
            # s:Receiver, as wsmerror.h and DSP0226 give this subcode
            raise Fault("n:InvalidEnumerationContext", "the enumeration context is not valid",
                        sender=False)

    def _expire(self) -> None:
        now = self.clock()
        for context in [c for c, o in self._open.items() if now - o.touched > self.timeout_s]:
            del self._open[context]


def _fill(current: _Open, max_elements: int, room_bytes: int) -> list[str]:
    batch: list[str] = []
    used = 0
    while current.position < len(current.items) and len(batch) < max_elements:
        item = current.items[current.position]
        size = len(item.encode())
        if used + size > room_bytes:
            if not batch:
                raise Fault("w:EncodingLimit", "the next item does not fit the envelope "
                            "size the client accepts (MaxEnvelopeSize)", detail="MaxEnvelopeSize",
                            code=MAX_ENVELOPE_SIZE_EXCEEDED)
            break
        batch.append(item)
        used += size
        current.position += 1
    return batch
