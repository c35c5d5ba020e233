"""Waiting, with backoff and a bound, for Hyper-V to be ready before the agent serves.

At boot the service may start before the Hyper-V Virtual Machine Management service
(vmms) runs, or before ``root\\virtualization\\v2`` answers; the management server must
not find an agent that fails every command meanwhile. The wait looks again after 1, 2,
4 ... up to 30 s, ends at once when the service is asked to stop, and gives up with
:class:`~hyperv_agent.errors.HostNotReady` after ``limit_s`` (Windows then restarts
the service, as its recovery actions say).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from hyperv_agent.errors import HostNotReady
from hyperv_agent.winsvc.host import RunState, ServiceHost

log = logging.getLogger(__name__)

AsyncProbe = Callable[[], Awaitable[str | None]]
"""None when the thing is ready, else one line saying why not."""


@dataclass(frozen=True)
class Backoff:
    first_s: float = 1.0
    factor: float = 2.0
    max_s: float = 30.0
    limit_s: float = 600.0  # give up after this long

    def delays(self) -> Iterator[float]:
        """first_s, first_s * factor, ... capped at max_s, for ever."""
        delay = self.first_s
        while True:
            yield delay
            delay = min(delay * self.factor, self.max_s)


async def wait_until_ready(what: str, probe: AsyncProbe, stop: asyncio.Event,
                           backoff: Backoff,
                           clock: Callable[[], float] = time.monotonic) -> bool:
    """True once ``probe`` finds ``what`` ready; False when ``stop`` is set first.
    HostNotReady, naming the last reason, when ``backoff.limit_s`` has passed."""
    started = clock()
    delays = backoff.delays()
    while True:
        problem = await probe()
        if problem is None:
            return True
        waited_s = clock() - started
        if waited_s >= backoff.limit_s:
            raise HostNotReady(f"{what} not ready after {waited_s:.0f} s: {problem}")
        delay_s = min(next(delays), backoff.limit_s - waited_s)
        log.info("waiting for %s (%s); next look in %.1f s", what, problem, delay_s)
        if await _stopped_within(stop, delay_s):
            return False


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


def service_running(host: ServiceHost, name: str) -> AsyncProbe:
    """A probe: is the service ``name`` running on ``host`` (asked off the event loop)?"""
    def look() -> str | None:
        state = host.service_state(name)
        if state is None:
            return f"service {name} is not installed (is the Hyper-V role installed?)"
        if state.run is not RunState.RUNNING:
            return f"service {name} is {state.run.name.lower()}"
        return None

    async def probe() -> str | None:
        return await asyncio.to_thread(look)

    return probe
