"""``HostCheck.bounded``: a read-only query is cut short only when the host cannot be
reached, never because it is slow on a host that answers."""

from __future__ import annotations

import asyncio
import time

import pytest

from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.errors import CimUnreachable
from hyperv_agent.handlers.hostcheck import HostCheck, HostState, Reach
from tests.sessions import hv

DEADLINE_S = 0.2


async def _slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "listed"


async def test_a_slow_query_of_a_host_that_answers_runs_to_its_end(
        emulator: EmulatorCim) -> None:
    """Thousands of VMs may take longer to list than the check's deadline: the host
    answers the check, so the listing is not cut short."""
    check = HostCheck(hv(emulator), deadline_s=DEADLINE_S, fresh_s=0.0)
    started = time.monotonic()
    assert await check.bounded(lambda: _slow(3 * DEADLINE_S)) == "listed"
    assert time.monotonic() - started >= 3 * DEADLINE_S


async def test_a_host_known_unreachable_is_asked_again_before_the_query_is_sent(
        emulator: EmulatorCim) -> None:
    check = HostCheck(hv(emulator), deadline_s=DEADLINE_S, fresh_s=60.0)
    check._note(HostState(Reach.UNREACHABLE, "no route to host"))
    sent: list[str] = []

    async def query() -> str:
        sent.append("query")
        return "listed"

    with pytest.raises(CimUnreachable, match="cannot be reached: no route to host"):
        await check.bounded(query)
    assert sent == []
    check._note(HostState(Reach.ANSWERS))  # it answers again
    assert await check.bounded(query) == "listed"
