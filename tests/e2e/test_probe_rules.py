"""The probe's CloudStack 4.22 rules: each names what an agent answering as this one did
before (and as the C# agent does) breaks, and none fires against the agent as it is."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from hyperv_agent import probe, server
from hyperv_agent.cloudstack import names
from hyperv_agent.probe_deploy import DeployPlan
from tests.e2e.conftest import API, PRIVATE_IP, Running


def _answer(fqcn: str, **fields: Any) -> web.Response:
    return web.json_response([{fqcn: {"contextMap": {}, **fields}}])


async def _yesterday(request: web.Request) -> web.Response:
    """An agent that answers the probe as this one did before CloudStack 4.22's rules."""
    action = request.match_info["fqcn"]
    if action == names.STARTUP_COMMAND:
        sent = json.loads(await request.read())[0][names.STARTUP_ROUTING_COMMAND]
        sent.update(caps="hvm", cpus=16, speed=2400, memory=1 << 36, cpuSockets=2,
                    privateNetmask="255.255.255.0", hypervisorVersion="10.0",
                    hostDetails={"rdp.server.port": "2179", "product_version": "10.0"})
        return web.json_response([{names.STARTUP_ROUTING_COMMAND: sent}])
    if action == names.HOST_VM_STATE_REPORT_COMMAND:
        return web.json_response([])
    replies: dict[str, tuple[str, dict[str, Any]]] = {
        names.READY_COMMAND: (names.READY_ANSWER, {"result": True}),
        names.PING_ROUTING_COMMAND: (names.ANSWER, {"result": True}),
        names.GET_HOST_STATS_COMMAND: (names.GET_HOST_STATS_ANSWER, {"result": True, "hostStats": {
            "cpuUtilization": 1.0, "totalMemoryKBs": 2.0, "freeMemoryKBs": 1.0}}),
        names.MODIFY_STORAGE_POOL_COMMAND: (names.ANSWER, {"result": False, "details": "no"}),
        names.GET_VM_CONFIG_COMMAND: (names.GET_VM_CONFIG_ANSWER, {"result": False,
                                                                   "nics": []}),
    }
    fqcn, fields = replies[action]
    return _answer(fqcn, **fields)


@pytest.fixture
async def yesterday() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post(API + "{fqcn}", _yesterday)
    runner = await server.start(app, server.Listener("127.0.0.1", 0), None)
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_probe_names_the_422_rules_when_the_agent_answers_as_before(
    yesterday: str,
) -> None:
    report = await probe.probe(yesterday, "10.0.0.5")
    rules = {f.step: f.rule for f in report.findings if not f.ok}
    assert rules == {
        "ReadyCommand": "ReadyAnswer.detailsMap says host.uefi.enable",
        "StartupCommand": "hypervisorVersion has a hypervisor_capabilities row",
        "failure answers": "real Java answer class",
    }, report.table()


async def test_probe_accepts_the_versions_the_operator_added_rows_for(yesterday: str) -> None:
    report = await probe.probe(yesterday, "10.0.0.5", hypervisor_versions=("6.2", "10.0"))
    assert [f.step for f in report.findings if not f.ok] == ["ReadyCommand", "failure answers"]


async def test_probe_deploy_checks_the_empty_iso_disk_the_secret_and_stat_names(
    running: Running,
) -> None:
    from hyperv_agent import backends

    backends.seed_secondary(running.agent.config)
    report = await probe.probe(running.url, PRIVATE_IP, deploy=DeployPlan())
    assert report.passed, report.table()
    start = next(f for f in report.findings if f.step == "start VM")
    assert start.ok and "started" in start.detail
