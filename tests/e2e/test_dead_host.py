"""Agentless, the agent outlives the Hyper-V host it drives over WinRM: what the management
server and an operator see while the host is powered off, hung, or answering errors, and
that the agent finds it again by itself when it is back.

The host is the emulator's WinRM face on 127.0.0.1; it is stopped (its WinRM service
stopped: connections refused), replaced on its port by a listener whose connection
attempts are never answered (powered off, cut off), by a socket that accepts and never
answers (hung), or by a server answering HTTP 503 or a SOAP fault with HTTP 500, and then
served again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hyperv_agent import server, winrm_face
from hyperv_agent.cim.wsman import transport
from hyperv_agent.cim.wsman.backend import WsmanCim
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.emulator.config import LatencyModel
from hyperv_agent.emulator.winrm.auth import Account
from hyperv_agent.handlers import hostcheck
from tests.e2e.conftest import WSMAN_PASSWORD, WSMAN_USER, Running, serving

PING = "com.cloud.agent.api.PingRoutingCommand"
CHECK_HEALTH = "com.cloud.agent.api.CheckHealthCommand"
STATE_REPORT = "org.apache.cloudstack.HostVmStateReportCommand"
HOST_STATS = "com.cloud.agent.api.GetHostStatsCommand"
CHECK_ON_HOST = "com.cloud.agent.api.CheckOnHostCommand"
MODIFY = "com.cloud.agent.api.ModifyStoragePoolCommand"
MAINTAIN = "com.cloud.agent.api.MaintainCommand"
PRIVATE_IP = "192.168.100.10"
DEADLINE_S = 0.5
CONNECT_S = 1.0
OLD_STAMP = "2024-5-7@3:4:9"


def _checked_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  emulator: str = "") -> AgentConfig:
    """An agent on the emulated host with a shared SMB pool on the host's share, its host
    checks bounded by DEADLINE_S and never reused; ``emulator``: lines of the host's
    ``[emulator]`` table."""
    monkeypatch.setattr(hostcheck, "DEADLINE_S", DEADLINE_S)
    monkeypatch.setattr(hostcheck, "FRESH_S", 0.0)
    share = tmp_path / "smb-share"
    (share / "primary").mkdir(parents=True)
    config_file = tmp_path / "agent.toml"
    config_file.write_text(f"""
[agent]
state_dir = "{tmp_path / 'state'}"
backend = "emulator"
private_ip = "{PRIVATE_IP}"
[emulator]
{emulator}
[emulator.shares]
'\\\\10.1.1.2\\SMB-Share' = "{share}"
""")
    return load_config(config_file)


@pytest.fixture
async def agentless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    """An agent driving the emulated host over WinRM (HTTP, NTLM), with a shared SMB pool
    on the host's share, its host checks bounded by DEADLINE_S and never reused, and its
    WinRM connect timeout CONNECT_S."""
    async with serving(_checked_host(tmp_path, monkeypatch),
                       backend="wsman-http-ntlm") as running:
        cim = running.agent.opened.wsman
        assert isinstance(cim, WsmanCim)
        cim.transport.settings = dataclasses.replace(cim.transport.settings,
                                                     connect_timeout_s=CONNECT_S)
        yield running


def _port(running: Running) -> int:
    assert running.face is not None
    return int(running.face.url.rsplit(":", 1)[1].split("/")[0])


async def _stop_winrm(running: Running) -> None:
    """The host's WinRM service stopped: its port refuses connections (a TCP reset)."""
    assert running.face is not None
    await running.face.runner.cleanup()


@contextlib.contextmanager
def _powered_off(port: int) -> Iterator[None]:
    """``port`` as a host that is powered off or cut off leaves it: a connection attempt
    is never answered, and ends at the WinRM connect timeout. A listener whose backlog is
    full drops every further SYN; its one place is taken by a connection never accepted."""
    with socket.create_server(("127.0.0.1", port), backlog=0), \
            socket.create_connection(("127.0.0.1", port)):
        yield


@contextlib.asynccontextmanager
async def _powered_on(running: Running, port: int, *, use_tls: bool = False,
                      negotiate: bool = True) -> AsyncIterator[None]:
    """The same emulated host served again on its port, as after a restart; with
    ``negotiate`` false, its WinRM offers Basic only."""
    assert running.face is not None
    face = await winrm_face.start_face(running.emulator_config, "127.0.0.1", port,
                                       Account(WSMAN_USER, WSMAN_PASSWORD), use_tls=use_tls,
                                       emulator=running.face.emulator, negotiate=negotiate)
    try:
        yield
    finally:
        await face.runner.cleanup()


@contextlib.asynccontextmanager
async def _hung(port: int) -> AsyncIterator[list[socket.socket]]:
    """A listener on ``port`` that accepts connections and never answers; the accepted
    connections are closed when the block ends."""
    listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
    listener.setblocking(False)
    accepted: list[socket.socket] = []

    async def accept() -> None:
        loop = asyncio.get_running_loop()
        while True:
            connection, _ = await loop.sock_accept(listener)
            accepted.append(connection)

    accepting = asyncio.create_task(accept())
    try:
        yield accepted
    finally:
        accepting.cancel()
        for connection in accepted:
            connection.close()
        listener.close()


@contextlib.asynccontextmanager
async def _answering(port: int, status: int, body: str = "",
                     content_type: str = "text/plain", *,
                     challenge: str | None = None) -> AsyncIterator[None]:
    """A server on ``port`` answering every WinRM request with ``status`` and ``body``
    (and ``challenge`` as its WWW-Authenticate)."""
    headers = {"WWW-Authenticate": challenge} if challenge is not None else None

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, text=body, content_type=content_type,
                            headers=headers)

    app = web.Application()
    app.router.add_post("/wsman", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


async def _timed(running: Running, fqcn: str, body: dict[str, Any]
                 ) -> tuple[str, dict[str, Any], float]:
    started = time.monotonic()
    key, value = await running.answer(fqcn, body)
    return key, value, time.monotonic() - started


async def _register_pool(running: Running, tmp_path: Path) -> Path:
    _, value = await running.answer(MODIFY, {"add": True, "pool": {
        "type": "SMB", "host": "10.1.1.2", "port": 445,
        "path": "/SMB-Share/primary?user=admin&password=s3cret%40pw&domain=LAB",
        "uuid": "3c2e0b0a-5f1e-4c6b-9a52-0d9b8f6f2b11"}})
    assert value["result"] is True, value
    return tmp_path / "smb-share" / "primary"


async def _neighbour_says(running: Running) -> dict[str, Any]:
    """What this agent answers, as a neighbour, when the MS asks about PRIVATE_IP."""
    _, value = await running.answer(CHECK_ON_HOST, {
        "host": {"guid": "suspect", "privateNetwork": {"ip": PRIVATE_IP}}, "contextMap": {}})
    return value


def _refuses(port: int) -> str:
    """What a command says of the host at ``port`` whose WinRM service is stopped."""
    return (f"127.0.0.1:{port}: the WinRM service refuses connections (connection "
            "refused: the host's network answers, but nothing listens on the port: the "
            "WinRM service is stopped, or a firewall rejects the connection)")


async def test_a_host_whose_winrm_stopped_fails_pings_and_health_at_once_and_is_found_again(
        agentless: Running) -> None:
    """A connection refused fails the pings at once, saying the host refuses it (the MS
    investigates the host, its operator learns what to start), and the agent finds the
    host again, unrestarted, once its WinRM service answers."""
    port = _port(agentless)
    _, ping, _ = await _timed(agentless, PING, {"contextMap": {}})
    assert ping["result"] is True
    await _stop_winrm(agentless)
    for fqcn, answer_class in ((PING, "com.cloud.agent.api.Answer"),
                               (CHECK_HEALTH, "com.cloud.agent.api.CheckHealthAnswer")):
        key, value, took = await _timed(agentless, fqcn, {"hostId": 5, "contextMap": {}})
        assert key == answer_class and value["result"] is False, value
        short = fqcn.rsplit(".", 1)[-1]
        assert value["details"] == (f"{short} failed: the Hyper-V host refuses the "
                                    f"connection: {_refuses(port)}"), value
        assert took < 2
    key, value, took = await _timed(agentless, HOST_STATS, {"hostId": 5, "contextMap": {}})
    assert key == "com.cloud.agent.api.GetHostStatsAnswer" and value["result"] is False
    assert _refuses(port) in value["details"] and took < 2
    status, report = await agentless.post(STATE_REPORT, {})
    assert status == 200 and report[0]["com.cloud.agent.api.Answer"]["result"] is False
    async with _powered_on(agentless, port):  # the agent is not restarted
        _, ping, _ = await _timed(agentless, PING, {"contextMap": {}})
        assert (ping["result"], ping["details"]) == (True, "success - NOP for PingRoutingCommand")
        _, health, _ = await _timed(agentless, CHECK_HEALTH, {"contextMap": {}})
        assert health["result"] is True
        status, report = await agentless.post(STATE_REPORT, {})
        assert status == 200 and isinstance(report, list)


async def test_maintenance_of_a_host_that_cannot_be_reached_fails_saying_so(
        agentless: Running) -> None:
    """On a MaintainAnswer with result true the MS puts the host in PrepareForMaintenance
    and schedules moving its VMs off with MigrateCommands, which a powered-off or hung host
    never makes; failed, it refuses the maintenance request and the host keeps its state."""
    port = _port(agentless)
    _, maintained, _ = await _timed(agentless, MAINTAIN, {"contextMap": {}, "wait": 0})
    assert (maintained["result"], maintained["willMigrate"]) == (True, True), maintained
    await _stop_winrm(agentless)
    key, value, took = await _timed(agentless, MAINTAIN, {"contextMap": {}, "wait": 0})
    assert (key, value["result"]) == ("com.cloud.agent.api.MaintainAnswer", False), value
    assert value["details"] == (
        f"MaintainCommand failed: the Hyper-V host refuses the connection: {_refuses(port)}")
    assert took < 2
    async with _hung(port):
        key, value, took = await _timed(agentless, MAINTAIN, {"contextMap": {}, "wait": 0})
        assert (key, value["result"]) == ("com.cloud.agent.api.MaintainAnswer", False), value
        assert value["details"] == (
            "MaintainCommand failed: the Hyper-V host cannot be reached: the host did not "
            f"answer a query of its virtual switches within {DEADLINE_S:g} s")
        assert took < DEADLINE_S + 1.5
    async with _powered_on(agentless, port):
        for _ in range(20):  # the hung query ends when its connection closes
            _, maintained, _ = await _timed(agentless, MAINTAIN, {"contextMap": {}})
            if maintained["result"]:
                break
            await asyncio.sleep(0.1)
        assert maintained["result"] is True, maintained


async def test_a_hung_host_fails_pings_within_the_deadline_with_one_query_in_flight(
        agentless: Running) -> None:
    """TCP accepted, no HTTP answer: each ping fails at the check's deadline, and while
    the first query waits, no other is sent (no thread or connection per ping); once the
    host answers again, so does the ping."""
    port = _port(agentless)
    await _stop_winrm(agentless)
    async with _hung(port) as accepted:
        for _ in range(3):
            _, ping, took = await _timed(agentless, PING, {"contextMap": {}})
            assert ping["result"] is False
            assert ping["details"] == (
                "PingRoutingCommand failed: the Hyper-V host cannot be reached: the host did "
                f"not answer a query of its virtual switches within {DEADLINE_S:g} s")
            assert DEADLINE_S <= took < DEADLINE_S + 1.5
        assert len(accepted) == 1  # the one query, still waiting
        admin = await server.start(agentless.agent.admin_app(),
                                   server.Listener("127.0.0.1", 0), None)
        try:
            url = f"http://127.0.0.1:{admin.addresses[0][1]}/healthz"
            async with aiohttp.ClientSession() as session, session.get(url) as reply:
                status, text = reply.status, await reply.text()
        finally:
            await admin.cleanup()
        assert status == 503
        assert text.startswith("the Hyper-V host cannot be reached: the host did not answer")
    async with _powered_on(agentless, port):
        for _ in range(20):  # the hung query ends when its connection closes
            _, ping, _ = await _timed(agentless, PING, {"contextMap": {}})
            if ping["result"]:
                break
            await asyncio.sleep(0.1)
        assert ping["result"] is True, ping


async def test_a_hung_host_fails_the_state_report_and_host_stats_within_the_check_bound(
        agentless: Running) -> None:
    """The MS asks for the state report right before each ping (getCurrentStatus): on a
    hung host it fails once a host check finds the host unreachable, not at the WinRM
    deadline (70 s by default), and so do the host statistics; once the host is known
    unreachable, neither sends a query more (the check's one query still waits)."""
    port = _port(agentless)
    _, ping, _ = await _timed(agentless, PING, {"contextMap": {}})
    assert ping["result"] is True
    await _stop_winrm(agentless)
    said = ("the Hyper-V host cannot be reached: the host did not answer a query of its "
            f"virtual switches within {DEADLINE_S:g} s")
    async with _hung(port) as accepted:
        started = time.monotonic()
        async with asyncio.timeout(5):
            status, report = await agentless.post(STATE_REPORT, {})
        took = time.monotonic() - started
        assert status == 200
        failed = report[0]["com.cloud.agent.api.Answer"]
        assert failed["result"] is False and said in failed["details"], failed
        assert 2 * DEADLINE_S <= took < 2 * DEADLINE_S + 1.5  # the listing, then a check
        assert len(accepted) == 2  # the listing, cut short, and the check's query
        for fqcn, answer_class in ((HOST_STATS, "com.cloud.agent.api.GetHostStatsAnswer"),
                                   (STATE_REPORT, "com.cloud.agent.api.Answer")):
            async with asyncio.timeout(5):
                key, value, took = await _timed(agentless, fqcn, {"hostId": 5,
                                                                  "contextMap": {}})
            assert key == answer_class and value["result"] is False, value
            assert said in value["details"]
            assert took < DEADLINE_S + 1.5
        assert len(accepted) == 2
    async with _powered_on(agentless, port):
        for _ in range(20):  # the check's hung query ends when its connection closes
            status, report = await agentless.post(STATE_REPORT, {})
            if status == 200 and isinstance(report, list) and not report:
                break
            await asyncio.sleep(0.1)
        assert report == [], report
        key, stats, _ = await _timed(agentless, HOST_STATS, {"hostId": 5, "contextMap": {}})
        assert stats["result"] is True, stats


async def test_a_dead_host_stops_its_heartbeat_so_a_neighbour_calls_it_down(
        agentless: Running, tmp_path: Path) -> None:
    """The stamp says the host runs: while it cannot be reached (powered off: its
    connection attempts go unanswered), pings fail within the check's deadline and no
    stamp is written (the periodic one gives the connection up at the connect timeout),
    so the neighbours the MS asks (CheckOnHost) call it down once the stamps are stale,
    and the MS marks it Down; back, it is stamped again and called alive."""
    share = await _register_pool(agentless, tmp_path)
    beat = share / f"hb-{PRIVATE_IP}"
    assert beat.read_text().count("@") == 1  # stamped at registration
    port = _port(agentless)
    await _stop_winrm(agentless)
    beat.write_text(OLD_STAMP)  # the last stamp, minutes ago by the file server's clock
    os.utime(beat, (time.time() - 600, time.time() - 600))
    with _powered_off(port):
        _, ping, took = await _timed(agentless, PING, {"contextMap": {}})
        assert ping["details"] == (
            "PingRoutingCommand failed: the Hyper-V host cannot be reached: the host did "
            f"not answer a query of its virtual switches within {DEADLINE_S:g} s"), ping
        assert took < DEADLINE_S + 1.5
        async with asyncio.timeout(CONNECT_S + 3):
            await agentless.agent.host.write_heartbeats()
        assert beat.read_text() == OLD_STAMP
        down = await _neighbour_says(agentless)
        assert (down["result"], down["details"]) == (True, "host is not alive")
    async with _powered_on(agentless, port):
        await agentless.agent.host.write_heartbeats()
        assert beat.read_text() != OLD_STAMP
        alive = await _neighbour_says(agentless)
        assert (alive["result"], alive["alive"]) == (False, True)


async def test_a_host_whose_winrm_stopped_keeps_its_heartbeat_while_its_pings_fail(
        agentless: Running, tmp_path: Path) -> None:
    """A connection refused comes from a running machine's network (its WinRM service
    stopped, or a firewall rejecting): its VMs may well run, so it keeps being stamped
    and a neighbour calls it alive (it is not called Down while they run), while its
    pings fail, saying the host refuses the connection."""
    share = await _register_pool(agentless, tmp_path)
    beat = share / f"hb-{PRIVATE_IP}"
    port = _port(agentless)
    await _stop_winrm(agentless)
    beat.write_text(OLD_STAMP)
    os.utime(beat, (time.time() - 600, time.time() - 600))
    async with asyncio.timeout(5):
        await agentless.agent.host.write_heartbeats()
    assert beat.read_text() != OLD_STAMP
    alive = await _neighbour_says(agentless)
    assert (alive["result"], alive["alive"]) == (False, True), alive
    _, ping, took = await _timed(agentless, PING, {"contextMap": {}})
    assert ping["details"] == ("PingRoutingCommand failed: the Hyper-V host refuses the "
                               f"connection: {_refuses(port)}"), ping
    assert took < 2


async def test_a_host_that_does_not_offer_the_configured_logon_says_what_it_offers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host whose WinRM stops offering Negotiate (only Basic left on): the pings fail
    naming what it offers and the ``auth`` setting to change, not "refused the
    credentials", and each ping asks the host again (no minute's wait as after a
    refused logon, which would count towards the account's lockout); the host answered,
    so it runs and keeps being stamped."""
    async with serving(_checked_host(tmp_path, monkeypatch),
                       backend="wsman-https-ntlm") as running:
        share = await _register_pool(running, tmp_path)
        beat = share / f"hb-{PRIVATE_IP}"
        port = _port(running)
        await _stop_winrm(running)
        beat.write_text(OLD_STAMP)
        async with _powered_on(running, port, use_tls=True, negotiate=False):
            for _ in range(2):
                _, ping, took = await _timed(running, PING, {"contextMap": {}})
                assert ping["details"] == (
                    "PingRoutingCommand failed: the Hyper-V host answers with an error: "
                    f"127.0.0.1:{port}: the WinRM service does not offer ntlm authentication "
                    '(it offers Basic); set [wsman] auth = "basic", or turn Negotiate on at '
                    "the host (Set-Item WSMan:\\localhost\\Service\\Auth\\Negotiate "
                    "$true)"), ping
                assert took < 2
            await running.agent.host.write_heartbeats()
        assert beat.read_text() != OLD_STAMP


async def test_a_host_answering_late_keeps_its_heartbeat_while_its_pings_fail(
        agentless: Running, tmp_path: Path) -> None:
    """A host whose WMI answers, but later than the host check waits (a host under load,
    a Hyper-V busy with thousands of VMs), runs, and so may its VMs: its pings fail past
    the deadline, so the MS investigates it, and the neighbours it asks must still find
    its stamps fresh, or call it Down while its VMs run. The
    stamp waits for the host's answer (the backend's own bound ends a query nothing
    answers); the pings do not."""
    share = await _register_pool(agentless, tmp_path)
    beat = share / f"hb-{PRIVATE_IP}"
    assert agentless.face is not None
    host = agentless.face.emulator.host
    host.config = dataclasses.replace(host.config, latency=LatencyModel(call_s=3 * DEADLINE_S))
    _, ping, took = await _timed(agentless, PING, {"contextMap": {}})
    assert ping["result"] is False and took < DEADLINE_S + 1.5, ping
    beat.write_text(OLD_STAMP)
    os.utime(beat, (time.time() - 600, time.time() - 600))
    await agentless.agent.host.write_heartbeats()
    assert beat.read_text() != OLD_STAMP
    alive = await _neighbour_says(agentless)
    assert (alive["result"], alive["alive"]) == (False, True), alive


async def test_a_hung_host_is_not_stamped_once_its_query_is_given_up(
        agentless: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stamp waits for a late answer, not for ever: a host that never answers is
    found gone when the backend's own bound ends the query (over WinRM, its operation
    timeout and answer grace, here 4 deadlines), and no stamp is written."""
    share = await _register_pool(agentless, tmp_path)
    beat = share / f"hb-{PRIVATE_IP}"
    port = _port(agentless)
    cim = agentless.agent.opened.wsman
    assert isinstance(cim, WsmanCim)
    monkeypatch.setattr(transport, "ANSWER_GRACE_S", 0.0)
    cim.transport.settings = dataclasses.replace(
        cim.transport.settings, operation_timeout_s=int(4 * DEADLINE_S))
    await _stop_winrm(agentless)
    beat.write_text(OLD_STAMP)
    async with _hung(port):
        stamping = asyncio.create_task(agentless.agent.host.write_heartbeats())
        await asyncio.sleep(3 * DEADLINE_S)
        assert not stamping.done()  # the host may still answer
        async with asyncio.timeout(5):
            await stamping
    assert beat.read_text() == OLD_STAMP


@pytest.mark.parametrize(("status", "body", "content_type", "said"), [
    (503, "Service Unavailable", "text/plain", "the WinRM service answered HTTP 503"),
    (500, """<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"
 xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Body><s:Fault>
<s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:InternalError</s:Value>
</s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">The WS-Management service cannot
process the request.</s:Text></s:Reason></s:Fault></s:Body></s:Envelope>""",
     "application/soap+xml", "cannot process the request"),
])
async def test_a_host_answering_errors_fails_pings_but_keeps_its_heartbeat(
        agentless: Running, tmp_path: Path, status: int, body: str, content_type: str,
        said: str) -> None:
    """An HTTP error or a WS-Man fault is an answer: the host's Windows runs and its VMs
    may too, so it keeps being stamped (a neighbour calls it alive, not Down), while its
    pings fail, saying what the host answered."""
    share = await _register_pool(agentless, tmp_path)
    beat = share / f"hb-{PRIVATE_IP}"
    port = _port(agentless)
    await _stop_winrm(agentless)
    async with _answering(port, status, body, content_type):
        _, ping, took = await _timed(agentless, PING, {"contextMap": {}})
        assert ping["result"] is False and took < 2
        assert ping["details"].startswith(
            "PingRoutingCommand failed: the Hyper-V host answers with an error: ")
        assert said in ping["details"]
        beat.write_text(OLD_STAMP)
        await agentless.agent.host.write_heartbeats()
    assert beat.read_text() != OLD_STAMP
    alive = await _neighbour_says(agentless)
    assert (alive["result"], alive["alive"]) == (False, True)


async def test_a_host_offering_only_kerberos_to_an_ntlm_agent_says_so_and_is_stamped(
        agentless: Running, tmp_path: Path) -> None:
    """A host whose WinRM offers Kerberos alone (Negotiate turned off) to an agent set to
    ``auth = "ntlm"``: its pings fail naming what it offers and the setting to change, and
    it keeps being stamped (it answered: it runs). pypsrp's ValueError for it once failed
    the host check as an error nobody expected, and with it the heartbeat of a running
    host, whose neighbours then called it down."""
    share = await _register_pool(agentless, tmp_path)
    beat = share / f"hb-{PRIVATE_IP}"
    port = _port(agentless)
    await _stop_winrm(agentless)
    async with _answering(port, 401, challenge="Kerberos"):
        _, ping, took = await _timed(agentless, PING, {"contextMap": {}})
        assert ping["details"] == (
            "PingRoutingCommand failed: the Hyper-V host answers with an error: "
            f"127.0.0.1:{port}: the WinRM service does not offer ntlm authentication (it "
            'offers Kerberos); set [wsman] auth = "kerberos", or turn Negotiate on at the '
            "host (Set-Item WSMan:\\localhost\\Service\\Auth\\Negotiate $true)"), ping
        assert took < 2
        beat.write_text(OLD_STAMP)
        await agentless.agent.host.write_heartbeats()
    assert beat.read_text() != OLD_STAMP


@pytest.fixture
async def slow_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    """An agent on the host it drives (the emulated host in its own process, as local WMI
    is), whose every WMI call takes longer than the host check waits: a WMI service that
    hangs. Its shared SMB pool is on the host's share."""
    async with serving(_checked_host(tmp_path, monkeypatch,
                                     f"call_latency_s = {4 * DEADLINE_S}"),
                       backend="emulator") as running:
        yield running


async def test_the_host_the_agent_runs_on_keeps_its_heartbeat_while_its_wmi_hangs(
        slow_here: Running, tmp_path: Path) -> None:
    """The agent runs on the host, so the host runs, and its VMs may: a WMI that does not
    answer in time fails the pings, saying so, but never stops the stamps (a neighbour
    then calls the host alive, not Down while its VMs run)."""
    assert slow_here.agent.opened.on_this_machine
    share = await _register_pool(slow_here, tmp_path)
    beat = share / f"hb-{PRIVATE_IP}"
    assert beat.read_text().count("@") == 1  # stamped at registration
    _, ping, took = await _timed(slow_here, PING, {"contextMap": {}})
    assert ping["result"] is False
    assert ping["details"] == (
        "PingRoutingCommand failed: Hyper-V's management service on this host does not "
        "answer: the host did not answer a query of its virtual switches within "
        f"{DEADLINE_S:g} s")
    assert took < DEADLINE_S + 1.5
    beat.write_text(OLD_STAMP)
    await slow_here.agent.host.write_heartbeats()
    assert beat.read_text() != OLD_STAMP
    alive = await _neighbour_says(slow_here)
    assert (alive["result"], alive["alive"]) == (False, True)


async def test_the_host_the_agent_runs_on_fails_the_state_report_when_its_wmi_hangs(
        slow_here: Running) -> None:
    """A WMI service that stops answering on the host the agent runs on fails the state
    report and the host statistics once a host check finds it silent, as a hung host
    over WinRM does, instead of leaving the MS's ping cycle (which asks for the report
    right before each ping) waiting on a query nothing answers; once it is known silent,
    neither sends a query more; its WMI answering again, both answer."""
    host = slow_here.emulator.host
    sent_before = host.counters.snapshot()
    # each call waits 8 deadlines: hung, as far as the checks can tell
    host.config = dataclasses.replace(host.config, latency=LatencyModel(call_s=8 * DEADLINE_S))
    said = ("Hyper-V's management service on this host does not answer: the host did not "
            f"answer a query of its virtual switches within {DEADLINE_S:g} s")
    async with asyncio.timeout(10):
        key, report, took = await _timed(slow_here, STATE_REPORT, {})
    assert key == "com.cloud.agent.api.Answer" and report["result"] is False, report
    assert said in report["details"]
    assert 2 * DEADLINE_S <= took < 2 * DEADLINE_S + 1.5  # the listing, then a check
    asked = host.counters.snapshot()
    for fqcn, answer_class in ((HOST_STATS, "com.cloud.agent.api.GetHostStatsAnswer"),
                               (STATE_REPORT, "com.cloud.agent.api.Answer")):
        async with asyncio.timeout(10):
            key, value, took = await _timed(slow_here, fqcn, {"hostId": 5, "contextMap": {}})
        assert key == answer_class and value["result"] is False, value
        assert said in value["details"]
        assert took < DEADLINE_S + 1.5
    assert host.counters.snapshot() == asked  # only the check's one query, still waiting
    assert asked != sent_before
    host.config = dataclasses.replace(host.config, latency=LatencyModel())
    for _ in range(80):  # the check's waiting query ends; a new one finds WMI answering
        status, listed = await slow_here.post(STATE_REPORT, {})
        if status == 200 and isinstance(listed, list) and not listed:
            break
        await asyncio.sleep(0.1)
    assert listed == [], listed


async def test_maintenance_of_the_host_the_agent_runs_on_fails_while_its_wmi_hangs(
        slow_here: Running) -> None:
    """On the host the agent runs on, a WMI service that does not answer fails the
    MaintainCommand saying so, as an unreachable host over WinRM does: a MaintainAnswer
    with result true would have the MS put the host in PrepareForMaintenance and send
    MigrateCommands that a silent WMI never makes, its VMs left where they are."""
    key, value, took = await _timed(slow_here, MAINTAIN, {"contextMap": {}, "wait": 0})
    assert (key, value["result"]) == ("com.cloud.agent.api.MaintainAnswer", False), value
    assert value["details"] == (
        "MaintainCommand failed: Hyper-V's management service on this host does not "
        "answer: the host did not answer a query of its virtual switches within "
        f"{DEADLINE_S:g} s"), value
    assert took < DEADLINE_S + 1.5
