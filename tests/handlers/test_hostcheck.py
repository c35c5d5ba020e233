"""``HostCheck.bounded``: a read-only query is cut short only when the host cannot be
reached, never because it is slow on a host that answers."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.errors import CimUnreachable
from hyperv_agent.handlers.hostcheck import HostCheck, HostState, Reach
from tests.emulator.winrm_kit import client, face
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


async def test_a_host_this_machine_cannot_log_on_to_answers_with_an_error(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    """A logon that fails on the agent's side (Kerberos: no ticket, no KDC, no Kerberos
    library here) says the host answers with an error, not that the check itself broke:
    its Windows may run, and the heartbeat goes on being stamped."""
    async with face(emulator, tmp_path / "face") as served:
        cim = client(served.url, auth="kerberos")
        try:
            found = await HostCheck(hv(cim), deadline_s=5.0, fresh_s=0.0).state()
        finally:
            await cim.close()
    assert found.reach is Reach.FAULTY
    assert "kerberos authentication failed on this machine" in found.says


@pytest.mark.parametrize(("on_this_machine", "reach"), [(False, Reach.REFUSED),
                                                         (True, Reach.SILENT)])
async def test_a_refused_connection_is_a_host_that_runs(
        on_this_machine: bool, reach: Reach) -> None:
    """A connection refused comes from the host's network: the machine runs (its WinRM
    service stopped), never ``UNREACHABLE``, the one state that stops the heartbeat; on
    the machine the agent runs on, its management service is silent, as before."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cim = client(f"http://127.0.0.1:{port}/wsman")
    try:
        found = await HostCheck(hv(cim), deadline_s=5.0, fresh_s=0.0,
                                on_this_machine=on_this_machine).state()
    finally:
        await cim.close()
    assert found.reach is reach
    assert f"127.0.0.1:{port}: the WinRM service refuses connections" in found.says
