"""Operating the agent: the probe, admin endpoints, log lines, concurrency, scale."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from hyperv_agent import logs, probe, server
from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.answers import ReadyAnswer
from hyperv_agent.cloudstack.base import Command
from hyperv_agent.config import AgentConfig
from hyperv_agent.handlers.dispatch import Dispatch, Result
from hyperv_agent.service import build_agent
from tests.e2e.conftest import API, PRIVATE_IP, Running, client_context, start
from tests.ports import free_port


async def test_probe_passes_when_agent_is_a_drop_in(running: Running) -> None:
    report = await probe.probe(running.url, PRIVATE_IP)
    assert report.passed, report.table()
    assert [f.step for f in report.findings] == [
        "ReadyCommand", "StartupCommand", "HostVmStateReport", "PingRoutingCommand",
        "GetHostStatsCommand", "failure answers"]
    assert report.facts["UEFI guests"] == "true"
    assert report.facts["cores / sockets"] == "16 / 2"
    assert report.facts["private NIC"] == "255.255.255.0 00155D0A0B0C"


async def test_probe_names_the_rule_when_agent_breaks_one() -> None:
    async def startup(request: web.Request) -> web.Response:
        sent = json.loads(await request.read())[0]["com.cloud.agent.api.StartupRoutingCommand"]
        sent.update(guid="changed", caps="hvm", cpus=4, speed=2000, memory=1 << 34,
                    cpuSockets=1, privateNetmask="255.255.255.0", hypervisorVersion="10.0",
                    hostDetails={"rdp.server.port": 2179, "product_version": "10.0"})
        return web.json_response([{"com.cloud.agent.api.StartupRoutingCommand": sent}])

    async def other(request: web.Request) -> web.Response:
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post(API + names.STARTUP_COMMAND, startup)
    app.router.add_post(API + "{fqcn}", other)
    runner = await server.start(app, server.Listener("127.0.0.1", 0), None)
    try:
        report = await probe.probe(f"http://127.0.0.1:{runner.addresses[0][1]}", "10.0.0.5")
    finally:
        await runner.cleanup()
    assert not report.passed
    rules = {f.step: f.rule for f in report.findings if not f.ok}
    assert rules["StartupCommand"] == "identity fields are echoed"
    assert rules["ReadyCommand"] == "200 with result:false, never another status"


def test_probe_command_exits_non_zero_when_nothing_listens_within_its_timeout() -> None:
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "hyperv_agent.cli", "probe",
                          "https://127.0.0.1:9", "--timeout", "1"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 1
    assert "not a drop-in" in run.stderr
    assert "no agent answered at https://127.0.0.1:9 within 1 s" in run.stdout
    assert time.monotonic() - started < 30


async def test_probe_waits_for_an_agent_that_comes_up_after_it_started(
    agent_config: Callable[..., AgentConfig],
) -> None:
    agent = build_agent(agent_config())
    port = free_port()

    async def later() -> web.AppRunner:
        await asyncio.sleep(1.0)  # refused until then
        return await server.start(agent.app(), server.Listener("127.0.0.1", port),
                                  agent.ssl_context())

    starting = asyncio.create_task(later())
    try:
        report = await probe.probe(f"https://127.0.0.1:{port}", PRIVATE_IP, timeout_s=30)
    finally:
        await (await starting).cleanup()
        await agent.close()
    assert report.passed, report.table()


async def test_admin_endpoints_report_health_and_command_metrics(running: Running) -> None:
    await running.answer("com.cloud.agent.api.ReadyCommand", {})
    await running.answer("com.cloud.agent.api.GetHostStatsCommand", {"hostId": "bad"})
    runner = await server.start(running.agent.admin_app(), server.Listener("127.0.0.1", 0),
                                None)
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/healthz") as reply:
                assert (reply.status, await reply.text()) == (200, "ok")
            async with session.get(base + "/metrics") as reply:
                text = await reply.text()
    finally:
        await runner.cleanup()
    # The metrics name a result with the words of the command's log line.
    assert 'hyperv_agent_commands_total{command="ReadyCommand",result="ok"} 1.0' in text
    assert ('hyperv_agent_commands_total{command="GetHostStatsCommand",result="failed"} 1.0'
            in text)
    assert "hyperv_agent_command_seconds_bucket" in text
    assert "hyperv_agent_command_cim_round_trips_sum" in text


async def test_each_command_is_logged_once_with_request_id_vm_and_result(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup("INFO")
    await running.answer("com.cloud.agent.api.RebootCommand", {"vmName": "i-2-17-VM"})
    lines = [line for line in capsys.readouterr().err.splitlines() if "RebootCommand" in line]
    assert len(lines) == 1
    line = lines[0]
    assert "vm=i-2-17-VM" in line and "result=failed" in line and "duration_ms=" in line
    request_id = line.split("[", 1)[1].split("]", 1)[0]
    assert len(request_id) == 12


async def test_slow_command_never_delays_a_ping(
    agent_config: Callable[..., AgentConfig],
) -> None:
    agent = build_agent(agent_config())

    async def slow(command: Command) -> Result:
        await asyncio.sleep(2.0)
        return ReadyAnswer(result=True)

    handlers = dict(agent.dispatch.handlers)  # the agent's own table, plus one slow command
    handlers[names.READY_COMMAND] = slow
    app = server.make_app(Dispatch(handlers))
    runner, url = await start(agent, app=app)
    connector = aiohttp.TCPConnector(ssl=client_context(), force_close=True, limit=0)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            slow_call = asyncio.create_task(session.post(url + API + names.READY_COMMAND,
                                                         data=b"{}"))
            await asyncio.sleep(0.2)
            started = time.perf_counter()
            async with session.post(url + API + names.PING_ROUTING_COMMAND,
                                    data=b"{}") as reply:
                assert reply.status == 200
            assert time.perf_counter() - started < 0.5
            (await slow_call).release()
    finally:
        await runner.cleanup()
        await agent.close()


async def test_state_report_of_1000_vms_is_one_round_trip(running: Running) -> None:
    cim = running.emulator
    vsms = (await cim.query("SELECT * FROM Msvm_VirtualSystemManagementService"))[0].path
    assert vsms is not None
    template = await cim.spawn("Msvm_VirtualSystemSettingData")
    for index in range(1000):
        await cim.invoke(vsms, "DefineSystem", {
            "SystemSettings": template.updated(ElementName=f"i-2-{index}-VM")})
    await running.post("org.apache.cloudstack.HostVmStateReportCommand", {})  # warm caches
    before = cim.round_trips()
    status, report = await running.post("org.apache.cloudstack.HostVmStateReportCommand", {})
    spent = cim.round_trips() - before
    assert status == 200 and report == []  # all off and not CloudStack's: nothing reported
    assert (spent.calls, spent.waits) == (1, 0)


def test_serve_refuses_bad_configuration_with_one_line(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "hyperv_agent.cli", "serve", "--state-dir",
                          str(tmp_path), "--listen", "nowhere"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert run.stderr.startswith("error: ") and "listen" in run.stderr
