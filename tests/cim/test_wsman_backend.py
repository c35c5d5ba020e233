"""The wsman backend against the emulator's WinRM face: the same answers as the emulator
directly, typed errors, batching within MaxEnvelopeSize, and one-line transport errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hyperv_agent import tls
from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, ObjectPath
from hyperv_agent.cim.wsman import backend, envelope, names, transport
from hyperv_agent.cim.wsman.backend import BATCHED, Batched, WsmanCim
from hyperv_agent.cim.wsman.names import ENUMERATE, PULL, RELEASE
from hyperv_agent.cim.wsman.settings import WsmanSettings
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel
from hyperv_agent.emulator.winrm import server, soap
from hyperv_agent.errors import (
    CimAccessDenied,
    CimAuthNotOffered,
    CimError,
    CimInvalidClass,
    CimInvalidMethod,
    CimInvalidQuery,
    CimNotFound,
    CimRefused,
    CimResponseTooLarge,
    CimTimedOut,
    CimUnavailable,
    CimUnreachable,
    ConfigError,
)
from hyperv_agent.hyperv import vms
from tests.emulator.kit import define_vm, devices, service
from tests.emulator.winrm_kit import PASSWORD, client, face
from tests.sessions import hv


@pytest.fixture(params=["http", "https"])
async def remote(request: pytest.FixtureRequest, emulator: EmulatorCim, tmp_path: Path
                 ) -> AsyncIterator[WsmanCim]:
    async with face(emulator, tmp_path / "face", tls=request.param == "https") as served:
        cim = client(served.url)
        yield cim
        await cim.close()


def _values(instance: CimInstance) -> dict[str, object]:
    return {p.name: p.value for p in instance}


async def test_query_answers_as_the_emulator_does(emulator: EmulatorCim, remote: WsmanCim
                                                  ) -> None:
    await define_vm(emulator, "i-2-1-VM")
    query = wql.select("Msvm_ComputerSystem", wql.eq("ElementName", "i-2-1-VM"))
    (direct,), (over,) = await emulator.query(query), await remote.query(query)
    assert (over.class_name, over.path) == (direct.class_name, direct.path)
    assert _values(over) == {k: (v if v != () else None) for k, v in _values(direct).items()}
    assert over.superclasses == direct.superclasses


async def test_root_cimv2_and_projections_type_their_values(emulator: EmulatorCim,
                                                            remote: WsmanCim) -> None:
    query = wql.select("Win32_ComputerSystem", properties=("Name", "NumberOfLogicalProcessors"))
    (over,) = await remote.query(query, "root\\cimv2")
    assert over.integer("NumberOfLogicalProcessors") == 16
    assert over.path == (await emulator.query(query, "root\\cimv2"))[0].path  # Name is the key


async def test_get_invoke_and_spawn_answer_as_the_emulator_does(
        emulator: EmulatorCim, remote: WsmanCim) -> None:
    vm = await define_vm(remote, "i-2-2-VM")  # DefineSystem over WinRM, embedded instance
    assert _values(await remote.get(vm)) == _values(await emulator.get(vm))
    result = await remote.invoke(vm, "RequestStateChange", {"RequestedState": 2})
    assert result.return_value == 4096
    job = result.path("Job")
    assert job is not None and job.class_name == "Msvm_ConcreteJob"
    assert (await remote.get(job)).integer("JobState") in (4, 7)
    assert _values(await remote.spawn("Msvm_VirtualSystemSettingData")) == _values(
        await emulator.spawn("Msvm_VirtualSystemSettingData"))


async def test_associators_and_references_travel_as_wql(emulator: EmulatorCim,
                                                         remote: WsmanCim) -> None:
    vm = await define_vm(emulator, "i-2-3-VM")
    over = await remote.associators(vm, assoc_class="Msvm_SettingsDefineState",
                                    result_class="Msvm_VirtualSystemSettingData")
    direct = await emulator.associators(vm, assoc_class="Msvm_SettingsDefineState",
                                        result_class="Msvm_VirtualSystemSettingData")
    assert [i.path for i in over] == [i.path for i in direct] and len(over) == 1
    links = await remote.references(vm, result_class="Msvm_SettingsDefineState")
    assert links and all(ObjectPath.parse(str(link["ManagedElement"])) == vm for link in links)


async def test_embedded_instances_are_cim_xml_both_ways(emulator: EmulatorCim,
                                                       remote: WsmanCim) -> None:
    vm = await define_vm(emulator, "i-2-4-VM")
    (processor,) = await devices(remote, vm, "Msvm_ProcessorSettingData")
    result = await remote.invoke(await service(remote), "ModifyResourceSettings", {
        "ResourceSettings": [processor.updated(VirtualQuantity=4)]})
    assert result.return_value in (0, 4096)
    (changed,) = await devices(emulator, vm, "Msvm_ProcessorSettingData")
    assert changed.integer("VirtualQuantity") == 4
    text = remote.to_embedded(changed)
    assert _values(remote.parse_embedded(text)) == _values(emulator.parse_embedded(text))


async def test_provider_errors_arrive_as_the_seams_typed_errors(remote: WsmanCim) -> None:
    with pytest.raises(CimNotFound):
        await remote.get(ObjectPath.for_keys("Msvm_ComputerSystem",
                                             CreationClassName="Msvm_ComputerSystem",
                                             Name="00000000-0000-0000-0000-000000000000"))
    with pytest.raises(CimInvalidClass) as raised:
        await remote.query("SELECT * FROM Msvm_NoSuchClass")
    # a fault names the host that sent it: not the agent, not a share
    assert str(raised.value).startswith(f"{remote.transport.settings.where}: ")
    with pytest.raises(CimInvalidQuery):
        await remote.query("SELECT * FROM Msvm_ComputerSystem WHERE")
    with pytest.raises(CimInvalidMethod):
        await remote.invoke(await service(remote), "NoSuchMethod", {})


async def test_answer_over_the_envelope_limit_is_response_too_large(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    vm = await define_vm(emulator, "i-2-5-VM")
    (settings,) = await emulator.associators(vm, result_class="Msvm_VirtualSystemSettingData")
    await emulator.invoke(await service(emulator), "ModifySystemSettings", {
        "SystemSettings": settings.updated(Notes=["x" * 10_000])})
    async with face(emulator, tmp_path / "face") as served:
        cim = client(served.url, max_envelope_bytes=8192)
        with pytest.raises(CimResponseTooLarge, match="MaxEnvelopeSize"):
            await cim.associators(vm, result_class="Msvm_VirtualSystemSettingData")
        await cim.close()


async def test_vm_summaries_fall_back_to_batches_when_every_vm_overflows(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    for index in range(30):
        await define_vm(emulator, f"i-2-{index}-VM")
    direct = await vms.list_vms(hv(emulator))
    async with face(emulator, tmp_path / "face") as served:
        warm = client(served.url)
        for name in ("Msvm_VirtualSystemManagementService", "Msvm_SummaryInformation",
                     "Msvm_VirtualSystemSettingData"):
            await warm.get_class(name)  # class metadata alone exceeds 8 KiB
        await warm.close()
        cim = client(served.url, max_envelope_bytes=8192)  # ~20 summaries per answer
        cim.learn_classes(warm.known_classes())
        # the first listing overflows, then goes by query and batches
        assert sorted(await vms.list_vms(hv(cim)), key=str) == sorted(direct, key=str)
        before = served.service.requests
        assert sorted(await vms.list_vms(hv(cim)), key=str) == sorted(direct, key=str)
        spent = served.service.requests - before
        await cim.close()
    assert len(direct) == 30
    assert 2 <= spent <= 1 + 30  # one query, then summaries in batches that fit
    assert spent < 30 // 2  # ... several VMs per batch, not one request each


async def test_long_setting_data_lists_are_sent_in_batches_in_order(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    paths = [await define_vm(emulator, f"i-2-{index}-VM") for index in range(7)]
    settings = [(await emulator.associators(p, result_class="Msvm_VirtualSystemSettingData"))[0]
                for p in paths]
    async with face(emulator, tmp_path / "face") as served:
        threes = {key: Batched(b.argument, b.result, 3) for key, b in BATCHED.items()}
        cim = WsmanCim(client(served.url).settings, batched=threes)
        vsms = await service(cim)
        await cim.get_class("Msvm_VirtualSystemManagementService")
        await cim.get_class("Msvm_SummaryInformation")
        before = served.service.requests
        result = await cim.invoke(vsms, "GetSummaryInformation", {
            "SettingData": [s.path for s in settings if s.path], "RequestedInformation": [0, 1]})
        spent = served.service.requests - before
        await cim.close()
    names = [s.string("ElementName") for s in result.instances("SummaryInformation")]
    assert names == [f"i-2-{index}-VM" for index in range(7)] and spent == 3


# --- transport errors: one line, naming the host, never the password ----------------------


async def test_wrong_password_is_one_line_naming_the_host(
        emulator: EmulatorCim, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with face(emulator, tmp_path / "face") as served:
        cim = client(served.url, password="Not-The-Password-9")
        with pytest.raises(CimAccessDenied) as raised:
            await cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch")
        await cim.close()
    message = str(raised.value)
    port = served.url.split(":")[2].split("/")[0]
    assert f"127.0.0.1:{port}" in message and "\n" not in message
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in ("Not-The-Password-9", PASSWORD):
        assert secret not in message and secret not in logged


async def test_a_logon_this_machine_cannot_make_is_one_line_naming_the_host(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    """Kerberos fails on the agent's side before the host is asked (its ticket expired
    with no password to get another, no KDC, or no Kerberos library here: as on this
    test machine): the security library's own error becomes CimAccessDenied naming the
    host and the cause, never an exception of that library escaping the transport (an
    "internal error" answer; the host check, and with it the heartbeat, stopped by it)."""
    async with face(emulator, tmp_path / "face") as served:
        cim = client(served.url, auth="kerberos")
        with pytest.raises(CimAccessDenied) as raised:
            await cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch")
        await cim.close()
    message = str(raised.value)
    port = served.url.split(":")[2].split("/")[0]
    assert message.startswith(f"127.0.0.1:{port}: cannot log on to the WinRM service: "
                              "kerberos authentication failed on this machine (")
    assert "\n" not in message and PASSWORD not in message


async def test_refused_credentials_are_not_tried_again_for_a_minute(
        emulator: EmulatorCim, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def failed_logons() -> int:
        return sum("WinRM authentication from" in record.getMessage()
                   for record in caplog.records)

    caplog.set_level(logging.WARNING)
    query = "SELECT * FROM Msvm_VirtualEthernetSwitch"
    async with face(emulator, tmp_path / "face") as served:
        cim = client(served.url, password="Not-The-Password-9")
        with pytest.raises(CimAccessDenied, match="refused the credentials"):
            await cim.query(query)
        first = failed_logons()
        assert first >= 1
        for _ in range(5):  # what the management server sends meanwhile
            with pytest.raises(CimAccessDenied, match="not tried again for 60 s") as again:
                await cim.query(query)
        assert failed_logons() == first  # the host was not asked
        assert "refused the credentials" in str(again.value)
        monkeypatch.setattr(transport, "CREDENTIALS_RETRY_S", 0.2)  # as if a minute went by
        await asyncio.sleep(0.3)
        with pytest.raises(CimAccessDenied, match=r"check the user name and password$"):
            await cim.query(query)
        assert failed_logons() > first  # a minute on, it logs on again
        await cim.close()


@pytest.mark.parametrize(("auth", "offered", "said"), [
    ("ntlm", {"negotiate": False}, 'does not offer ntlm authentication (it offers Basic); '
     'set [wsman] auth = "basic", or turn Negotiate on at the host (Set-Item '
     'WSMan:\\localhost\\Service\\Auth\\Negotiate $true)'),
    ("negotiate", {"negotiate": False}, "does not offer negotiate authentication (it offers "
     'Basic); set [wsman] auth = "basic", or turn Negotiate on'),
    ("basic", {"basic": False}, "does not offer basic authentication (it offers Negotiate); "
     'set [wsman] auth = "negotiate" or "ntlm", or turn Basic on at the host (Set-Item '
     "WSMan:\\localhost\\Service\\Auth\\Basic $true)"),
])
async def test_a_method_the_host_does_not_offer_is_not_a_refusal_of_the_credentials(
        emulator: EmulatorCim, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        auth: str, offered: dict[str, bool], said: str) -> None:
    """A host whose 401 offers none of the schemes the ``auth`` setting logs on with did
    not refuse the credentials: the error names what it offers and the setting to
    change, and the next request tries again at once (nothing counts towards the
    account's lockout, and a fixed host answers without a minute's wait)."""
    caplog.set_level(logging.WARNING)
    query = "SELECT * FROM Msvm_VirtualEthernetSwitch"
    async with face(emulator, tmp_path / "face", tls=True, **offered) as served:
        cim = client(served.url, auth=auth)
        port = served.url.rsplit(":", 1)[1].split("/")[0]
        try:
            for _ in range(3):
                with pytest.raises(CimAuthNotOffered) as raised:
                    await cim.query(query)
                assert str(raised.value).startswith(f"127.0.0.1:{port}: the WinRM service "
                                                    + said), raised.value
                assert "refused the credentials" not in str(raised.value)
        finally:
            await cim.close()


@pytest.mark.parametrize(("auth", "offers", "said"), [
    ("ntlm", "Kerberos", 'does not offer ntlm authentication (it offers Kerberos); set '
     '[wsman] auth = "kerberos", or turn Negotiate on at the host (Set-Item '
     'WSMan:\\localhost\\Service\\Auth\\Negotiate $true)'),
    ("kerberos", "NTLM", 'does not offer kerberos authentication (it offers NTLM); set '
     '[wsman] auth = "ntlm", or turn Kerberos on at the host (Set-Item '
     'WSMan:\\localhost\\Service\\Auth\\Kerberos $true)'),
])
async def test_a_spnego_scheme_other_than_the_configured_one_is_not_offered_either(
        auth: str, offers: str, said: str) -> None:
    """A host whose 401 offers a SPNEGO scheme, but not one ``auth`` logs on with (only
    Kerberos with Negotiate turned off, against ``auth = "ntlm"``; or the reverse), makes
    pypsrp raise a plain ValueError ("... incompatible with the specified
    auth_provider ..."): it is CimAuthNotOffered, naming what the host offers and the
    setting to change, as when only Basic is left, never an error the agent did not
    expect (which failed the host check, and with it the heartbeat, of a running host)."""
    async def challenge(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=401, headers={"WWW-Authenticate": offers})

    app = web.Application()
    app.router.add_post("/wsman", challenge)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    cim = client(f"http://127.0.0.1:{port}/wsman", auth=auth)
    try:
        for _ in range(2):  # tried again at once: no logon was refused
            with pytest.raises(CimAuthNotOffered) as raised:
                await cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch")
            assert str(raised.value) == (f"127.0.0.1:{port}: the WinRM service {said}")
    finally:
        await cim.close()
        await runner.cleanup()


async def test_requests_waiting_for_a_slot_when_credentials_are_refused_do_not_log_on(
        emulator: EmulatorCim, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with face(emulator, tmp_path / "face") as served:
        cim = client(served.url, password="Not-The-Password-9", max_concurrent_requests=1)
        outcomes = await asyncio.gather(
            *(cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch") for _ in range(4)),
            return_exceptions=True)
        await cim.close()
    assert all(isinstance(outcome, CimAccessDenied) for outcome in outcomes), outcomes
    assert sum("not tried again" in str(outcome) for outcome in outcomes) == 3
    logons = [r for r in caplog.records if "WinRM authentication from" in r.getMessage()]
    assert len(logons) == 1, [r.getMessage() for r in logons]  # the first request's only


async def test_a_refused_connection_is_one_line_naming_the_host_and_not_unreachable(
        ) -> None:
    """A connection refused is answered by the host's network (a TCP reset): the machine
    runs, its WinRM service does not listen. ``CimRefused``, never ``CimUnreachable``,
    which tells a host that may be powered off."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cim = client(f"http://127.0.0.1:{port}/wsman")
    with pytest.raises(CimRefused) as raised:
        await cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch")
    await cim.close()
    assert not isinstance(raised.value, CimUnreachable)
    message = str(raised.value)
    assert message.startswith(f"127.0.0.1:{port}: the WinRM service refuses connections")
    assert "\n" not in message and PASSWORD not in message


async def test_a_host_that_never_accepts_the_connection_fails_at_the_connect_timeout(
        ) -> None:
    """A host that drops the connection attempt (powered off, a firewall dropping
    packets) fails after connect_timeout_s, not after the operation timeout: a
    listener whose backlog is full answers no further SYN."""
    with socket.socket() as listener, socket.socket() as held:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        held.connect(("127.0.0.1", port))  # fills the backlog; nothing is accepted
        cim = client(f"http://127.0.0.1:{port}/wsman", connect_timeout_s=1,
                     operation_timeout_s=20)
        started = time.monotonic()
        with pytest.raises(CimUnavailable) as raised:
            await cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch")
        elapsed = time.monotonic() - started
        await cim.close()
    assert elapsed < 5
    assert str(raised.value) == (f"127.0.0.1:{port}: cannot reach the WinRM service (no "
                                 "connection within 1 s)")


async def test_untrusted_certificate_is_one_line_naming_the_host(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    async with face(emulator, tmp_path / "face", tls=True) as served:
        cim = client(served.url, verify_tls=True)
        with pytest.raises(CimUnavailable) as raised:
            await cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch")
        await cim.close()
    message = str(raised.value)
    assert "127.0.0.1:" in message and "TLS certificate is not trusted" in message
    assert "\n" not in message and PASSWORD not in message


async def test_certificate_is_trusted_with_its_ca_file(emulator: EmulatorCim,
                                                       tmp_path: Path) -> None:
    async with face(emulator, tmp_path / "face", tls=True) as served:
        certificate = tmp_path / "face" / "tls" / "agent.crt"
        cim = client(served.url.replace("127.0.0.1", "localhost"), verify_tls=True,
                     ca_file=certificate)
        found = await cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch")
        await cim.close()
    assert [s["ElementName"] for s in found] == ["External"]


async def test_verify_tls_false_is_kept_when_a_ca_file_is_also_given(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    """``verify_tls = false`` (``--wsman-no-verify``) switches verification off even with a
    ``ca_file`` in the configuration, one that does not sign the host's certificate: the
    operator turns it off to reach a host whose certificate was replaced."""
    other = tls.ensure_identity(tmp_path / "other").cert_path  # signs nothing of the face's
    async with face(emulator, tmp_path / "face", tls=True) as served:
        cim = client(served.url, verify_tls=False, ca_file=other)
        try:
            found = await cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch")
        finally:
            await cim.close()
    assert [s["ElementName"] for s in found] == ["External"]


async def test_operation_over_its_timeout_is_a_timed_out_fault(
        make_config: Callable[..., EmulatorConfig], tmp_path: Path) -> None:
    slow = EmulatorCim.open(make_config(latency=LatencyModel(call_s=1.5)))
    async with face(slow, tmp_path / "face") as served:
        cim = client(served.url, operation_timeout_s=1)
        with pytest.raises(CimUnavailable,
                           match="within the time specified in OperationTimeout"):
            await cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch")
        await cim.close()
    await slow.close()


@pytest.mark.parametrize(("status", "error", "words"), [
    (500, CimUnavailable, "answered HTTP 500"),
    (403, CimAccessDenied, "denied access (HTTP 403)"),
])
async def test_http_errors_without_a_fault_are_one_line_naming_the_host(
        status: int, error: type[Exception], words: str,
        caplog: pytest.LogCaptureFixture) -> None:
    async def refuse(_: web.Request) -> web.Response:
        return web.Response(status=status, text="proxy error: <b>upstream unreachable")

    app = web.Application()
    app.router.add_post("/wsman", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    cim = client(f"http://127.0.0.1:{port}/wsman")
    try:
        with pytest.raises(error) as raised:
            await cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch")
    finally:
        await cim.close()
        await runner.cleanup()
    message = str(raised.value)
    assert message == f"127.0.0.1:{port}: the WinRM service {words}"
    # said once, by the transport: pypsrp's own ERROR line and traceback are not logged
    # (it logs one when the error page is not XML)
    assert [r for r in caplog.records if r.name.startswith("pypsrp")] == []


async def test_session_survives_the_host_dropping_its_idle_connection(
        emulator: EmulatorCim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "KEEPALIVE_S", 0.3)  # the face drops idle connections fast
    async with face(emulator, tmp_path / "face") as served:
        cim = client(served.url)  # http: every message sealed with the connection's context
        first = await cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch")
        await asyncio.sleep(0.8)
        again = await cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch")
        await cim.close()
    assert [s.path for s in again] == [s.path for s in first]


async def test_service_limits_are_read_from_the_winrm_configuration(remote: WsmanCim) -> None:
    limits = await remote.service_limits()
    assert (limits.max_envelope_kb, limits.max_timeout_ms, limits.max_batch_items) == (
        500, 60000, 32000)
    assert limits.allow_unencrypted is False
    assert limits.max_concurrent_operations_per_user == 1500


# --- a host whose answers never complete or never end --------------------------------------


async def _forwarded(url: str, request: web.Request, data: bytes,
                     edit: Callable[[bytes], bytes] | None = None) -> web.Response:
    """``request`` (its body ``data``) sent on to the face at ``url``, and its answer
    handed back (its body changed by ``edit`` when given)."""
    headers = {name: request.headers[name] for name in ("Authorization", "Content-Type")}
    async with aiohttp.ClientSession() as session, session.post(
            url, data=data, headers=headers, ssl=False) as answer:
        body = await answer.read()
    return web.Response(status=answer.status, body=edit(body) if edit else body,
                        headers={"Content-Type": answer.headers["Content-Type"]})


async def _stand_in(handler: Callable[[web.Request], Any], tls_dir: Path
                    ) -> tuple[web.AppRunner, int]:
    """A WinRM endpoint over https that answers every request with ``handler``."""
    app = web.Application()
    app.router.add_post("/wsman", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0,
                       ssl_context=tls.server_context(tls.ensure_identity(tls_dir)))
    await site.start()
    return runner, runner.addresses[0][1]


async def _unavailable(handler: Callable[[web.Request], Any], tmp_path: Path
                       ) -> tuple[int, str]:
    """The port of a stand-in answering with ``handler``, and the message of the
    CimUnavailable a query of it raises."""
    runner, port = await _stand_in(handler, tmp_path)
    cim = client(f"https://127.0.0.1:{port}/wsman")
    try:
        with pytest.raises(CimUnavailable) as raised:
            await cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch")
    finally:
        await cim.close()
        await runner.cleanup()
    return port, str(raised.value)


async def test_an_answer_that_trickles_in_fails_at_its_deadline_and_frees_its_slot(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A host that sends its answer a byte at a time, each within the socket's read
    timeout, fails the request once operation_timeout_s + ANSWER_GRACE_S have passed;
    more such requests than the transport has slots all fail by their deadlines too."""
    monkeypatch.setattr(transport, "ANSWER_GRACE_S", 1.0)

    async def trickle(request: web.Request) -> web.StreamResponse:
        await request.read()
        reply = web.StreamResponse(headers={"Content-Type": "application/soap+xml"})
        reply.content_length = 1 << 20
        await reply.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(60):
                await reply.write(b" ")
                await asyncio.sleep(0.25)
        return reply

    runner, port = await _stand_in(trickle, tmp_path)
    cim = client(f"https://127.0.0.1:{port}/wsman", operation_timeout_s=1,
                 max_concurrent_requests=2)
    started = time.monotonic()
    try:
        outcomes = await asyncio.gather(
            *(cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch") for _ in range(5)),
            return_exceptions=True)
    finally:
        elapsed = time.monotonic() - started
        await cim.close()
        await runner.cleanup()
    assert all(isinstance(o, CimUnavailable) for o in outcomes), outcomes
    assert str(outcomes[0]) == (f"127.0.0.1:{port}: the WinRM service did not complete its "
                                "answer within 2 s; the connection is dropped")
    assert elapsed < 3 * 2 + 2  # three rounds of two slots, each at its 2 s deadline


async def test_an_answer_that_is_not_well_formed_xml_is_one_line_naming_the_host(
        tmp_path: Path) -> None:
    async def truncated(_: web.Request) -> web.Response:
        return web.Response(text="<s:Envelope xmlns:s='http://www.w3.org/2003/05/soap-envel",
                            content_type="application/soap+xml")

    port, message = await _unavailable(truncated, tmp_path)
    assert message.startswith(f"127.0.0.1:{port}: the WinRM service's answer is not "
                              "well-formed XML (")
    assert "\n" not in message


@pytest.mark.parametrize(("bound", "value", "refusal"), [
    ("MAX_PULLS", 1, r"did not end after 1 pulls"),
    ("MAX_ENUMERATED", 5, r"did not end after \d+ pulls and \d+ instances"),
], ids=["pulls", "instances"])
async def test_an_enumeration_that_does_not_end_is_refused_and_its_context_released(
        emulator: EmulatorCim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bound: str,
        value: int, refusal: str) -> None:
    """Past MAX_PULLS, or once it has brought MAX_ENUMERATED instances however few Pulls
    that took (a host answering without end would otherwise fill the agent's memory), the
    enumeration is refused, naming the query, and the host's context is released rather
    than left to its timeout (here: a small envelope makes the face answer the VMs'
    settings over several pulls, and the bound is lowered)."""
    for index in range(12):
        await define_vm(emulator, f"vm-{index}")
    monkeypatch.setattr(backend, bound, value)
    async with face(emulator, tmp_path / "face") as served:
        cim = client(served.url, max_envelope_bytes=8192)
        with pytest.raises(CimError, match=refusal):
            await cim.query("SELECT * FROM Msvm_VirtualSystemSettingData")
        await cim.close()
        assert served.service.enumerations.open_count == 0


async def test_an_answer_cut_off_midway_says_so_naming_the_host(tmp_path: Path) -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        await request.read()
        reply = web.StreamResponse(headers={"Content-Type": "application/soap+xml"})
        reply.content_length = 984
        await reply.prepare(request)
        await reply.write(b"<s:Envelope xmlns:s='http://www.w3.org/2003/05/soap-envelope'>")
        assert request.transport is not None
        request.transport.close()
        return reply

    port, message = await _unavailable(cut, tmp_path)
    assert message == f"127.0.0.1:{port}: the connection broke during the WinRM service's answer"


# --- a host whose provider is slow to produce the next items ----------------------------------


TIMED_OUT = soap.Fault("w:TimedOut", "The WS-Management service cannot complete the "
                       "operation within the time specified in OperationTimeout.",
                       sender=False, code=2150858793)


@contextlib.asynccontextmanager
async def _slow_pulls(url: str, tls_dir: Path, timed_out: int,
                      fault: soap.Fault = TIMED_OUT) -> AsyncIterator[str]:
    """A stand-in in front of the face at ``url`` (https, Basic) that answers the first
    ``timed_out`` Pulls with ``fault`` (by default the w:TimedOut WinRM sends when no
    items were ready within the OperationTimeout), and forwards every other request."""
    pulls = 0

    async def forward(request: web.Request) -> web.Response:
        nonlocal pulls
        data = await request.read()
        asked = soap.read_request(data, 512000)
        if asked.action == PULL and pulls < timed_out:
            pulls += 1
            return web.Response(status=500, content_type="application/soap+xml",
                                charset="utf-8",
                                text=soap.fault_envelope(fault, asked.message_id, "HV01"))
        return await _forwarded(url, request, data)

    runner, port = await _stand_in(forward, tls_dir)
    try:
        yield f"https://127.0.0.1:{port}/wsman"
    finally:
        await runner.cleanup()


async def test_a_pull_that_timed_out_is_sent_again(emulator: EmulatorCim, tmp_path: Path
                                                   ) -> None:
    """w:TimedOut on a Pull leaves the enumeration context valid: the same Pull is sent
    again and the query answers every instance (a small envelope makes the face answer
    the VMs' settings over several pulls)."""
    for index in range(12):
        await define_vm(emulator, f"vm-{index}")
    direct = await emulator.query("SELECT * FROM Msvm_VirtualSystemSettingData")
    async with face(emulator, tmp_path / "face", tls=True) as served, \
            _slow_pulls(served.url, tmp_path / "stand-in", timed_out=2) as url:
        cim = client(url, max_envelope_bytes=8192)
        try:
            found = await cim.query("SELECT * FROM Msvm_VirtualSystemSettingData")
        finally:
            await cim.close()
        assert served.service.enumerations.open_count == 0
    assert sorted(str(i["InstanceID"]) for i in found) == sorted(
        str(i["InstanceID"]) for i in direct)
    assert len(direct) >= 12


async def test_pulls_that_keep_timing_out_fail_and_release_the_context(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    for index in range(12):
        await define_vm(emulator, f"vm-{index}")
    async with face(emulator, tmp_path / "face", tls=True) as served, \
            _slow_pulls(served.url, tmp_path / "stand-in", timed_out=100) as url:
        cim = client(url, max_envelope_bytes=8192)
        try:
            with pytest.raises(CimTimedOut, match="OperationTimeout"):
                await cim.query("SELECT * FROM Msvm_VirtualSystemSettingData")
        finally:
            await cim.close()
        assert served.service.enumerations.open_count == 0


@contextlib.asynccontextmanager
async def _held_pulls(url: str, tls_dir: Path, hold_releases: bool = False,
                      slow_releases_s: float = 0.0
                      ) -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A stand-in in front of the face at ``url`` (https, Basic) that holds every Pull
    (and Release, when ``hold_releases``: a hung host) without an answer, setting the
    event when the first Pull arrives, and forwards every other request (a Release
    ``slow_releases_s`` late)."""
    pulled = asyncio.Event()
    held = {PULL, RELEASE} if hold_releases else {PULL}

    async def forward(request: web.Request) -> web.Response:
        data = await request.read()
        action = soap.read_request(data, 512000).action
        if action in held:
            pulled.set()
            await asyncio.sleep(3600)
        if action == RELEASE:
            await asyncio.sleep(slow_releases_s)
        return await _forwarded(url, request, data)

    runner, port = await _stand_in(forward, tls_dir)
    try:
        yield f"https://127.0.0.1:{port}/wsman", pulled
    finally:
        await runner.cleanup()


async def test_a_query_cancelled_during_a_pull_releases_its_context(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    """A query given up while a Pull waits for its answer (its caller's deadline, a read
    the host check cuts short) leaves no enumeration open on the host: its context is
    released, not left holding one of the account's concurrent operations
    (MaxConcurrentOperationsPerUser) until the host drops it."""
    for index in range(12):
        await define_vm(emulator, f"vm-{index}")
    async with face(emulator, tmp_path / "face", tls=True) as served, \
            _held_pulls(served.url, tmp_path / "stand-in") as (url, pulled):
        cim = client(url, max_envelope_bytes=8192)
        try:
            await _given_up_during_a_pull(
                cim, pulled, lambda: served.service.enumerations.open_count == 1)
            for _ in range(100):
                if served.service.enumerations.open_count == 0:
                    break
                await asyncio.sleep(0.05)
            assert served.service.enumerations.open_count == 0
        finally:
            await cim.close()


async def _given_up_during_a_pull(cim: WsmanCim, pulled: asyncio.Event,
                                  while_held: Callable[[], bool] = lambda: True) -> None:
    """A query of the VMs' settings given up (cancelled) while its Pull is held (once
    ``pulled`` is set), with ``while_held`` true then."""
    query = asyncio.ensure_future(cim.query("SELECT * FROM Msvm_VirtualSystemSettingData"))
    await asyncio.wait_for(pulled.wait(), 10)
    assert while_held()
    query.cancel()
    with pytest.raises(asyncio.CancelledError):
        await query


async def test_closing_lets_a_given_up_querys_release_end_first(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    """The agent stopping just after a query was given up during a Pull: the Release of
    its context, under way in a task of its own, ends before the backend is closed, so
    the host does not keep the enumeration open against the account's quota (nor is the
    Release sent on a transport already closed)."""
    for index in range(12):
        await define_vm(emulator, f"vm-{index}")
    async with face(emulator, tmp_path / "face", tls=True) as served, \
            _held_pulls(served.url, tmp_path / "stand-in",
                        slow_releases_s=0.5) as (url, pulled):
        cim = client(url, max_envelope_bytes=8192)
        await _given_up_during_a_pull(cim, pulled)
        await cim.close()
        assert served.service.enumerations.open_count == 0


async def test_closing_gives_up_a_release_the_host_does_not_answer_within_its_grace(
        emulator: EmulatorCim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hung host answers no Release: closing waits RELEASE_GRACE_S for it, not a
    request's whole deadline, and leaves no task of it pending on the event loop."""
    monkeypatch.setattr(backend, "RELEASE_GRACE_S", 0.5)
    for index in range(12):
        await define_vm(emulator, f"vm-{index}")
    async with face(emulator, tmp_path / "face", tls=True) as served, \
            _held_pulls(served.url, tmp_path / "stand-in",
                        hold_releases=True) as (url, pulled):
        cim = client(url, max_envelope_bytes=8192)
        await _given_up_during_a_pull(cim, pulled)
        started = time.monotonic()
        await cim.close()
        waited = time.monotonic() - started
        releasing = [task for task in asyncio.all_tasks() if not task.done()
                     and getattr(task.get_coro(), "__qualname__", "") == "WsmanCim._release"]
    assert releasing == []
    assert waited < transport.ANSWER_GRACE_S  # far below a request's deadline (70 s)


async def test_a_query_past_the_accounts_operations_quota_is_unavailable_naming_it(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    """While the account's enumerations open on the host use up MaxConcurrentOperationsPerUser
    the host refuses a new query: it fails as unavailable (worth sending again once
    operations end, not a fault of the query), on one line naming the host and the quota
    to raise; once the enumeration holding it is released, the query is answered."""
    async with face(emulator, tmp_path / "face") as served:
        served.service.max_concurrent_operations_per_user = 1
        holder, cim = client(served.url), client(served.url)
        uri = names.all_classes_uri("root\\virtualization\\v2")
        try:
            opened = envelope.read_batch(await holder.transport.send(
                ENUMERATE, uri, envelope.enumerate_body(
                    "SELECT * FROM Msvm_VirtualSystemSettingData", 1)))
            assert opened.context is not None
            with pytest.raises(CimUnavailable) as raised:
                await cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch")
            await holder.transport.send(RELEASE, uri, envelope.release_body(opened.context))
            assert await cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch")
        finally:
            await holder.close()
            await cim.close()
    message = str(raised.value)
    assert message.startswith(served.url.split("//")[1].split("/")[0] + ": ")
    assert "allowed a maximum number of 1 concurrent operations" in message
    assert "MaxConcurrentOperationsPerUser" in message
    assert "\n" not in message


async def test_a_pull_answer_that_neither_ends_nor_goes_on_is_refused_not_taken_as_the_end(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    """A PullResponse with neither EndOfSequence nor an EnumerationContext (a proxy or a
    host answering out of the protocol) does not say the instances so far are all: taken
    as the end, a state report would leave out VMs that run. The query fails naming
    it, with no Pull left to send, and the context the Pull was sent with is released."""
    for index in range(12):
        await define_vm(emulator, f"vm-{index}")
    async with face(emulator, tmp_path / "face", tls=True) as served:

        async def forward(request: web.Request) -> web.Response:
            data = await request.read()
            if soap.read_request(data, 512000).action != PULL:
                return await _forwarded(served.url, request, data)
            return await _forwarded(served.url, request, data, lambda body: re.sub(
                # the context left out of every Pull's answer
                rb"<n:EnumerationContext>[^<]*</n:EnumerationContext>", b"", body))

        runner, port = await _stand_in(forward, tmp_path / "stand-in")
        cim = client(f"https://127.0.0.1:{port}/wsman", max_envelope_bytes=8192)
        try:
            with pytest.raises(CimError, match=r"neither ends the enumeration"):
                await cim.query("SELECT * FROM Msvm_VirtualSystemSettingData")
        finally:
            await cim.close()
            await runner.cleanup()
        assert served.service.enumerations.open_count == 0


async def test_a_pull_the_host_never_answers_fails_at_its_deadline_not_after_a_release(
        emulator: EmulatorCim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that stops answering during an enumeration (hung) fails the query at the
    Pull's deadline: the Release of its context, which that host will not answer
    either, is sent without the caller waiting a second deadline for it. The time is
    counted from the Pull's arrival at the host, so what came before it (the Enumerate,
    a loaded machine's slower start) does not count against the margin."""
    monkeypatch.setattr(transport, "ANSWER_GRACE_S", 1.0)
    monkeypatch.setattr(backend, "RELEASE_GRACE_S", 0.5)  # the close, after the query
    for index in range(12):
        await define_vm(emulator, f"vm-{index}")
    async with face(emulator, tmp_path / "face", tls=True) as served, \
            _held_pulls(served.url, tmp_path / "stand-in",
                        hold_releases=True) as (url, pulled):
        cim = client(url, max_envelope_bytes=8192, operation_timeout_s=1)
        try:
            query = asyncio.ensure_future(cim.query("SELECT * FROM Msvm_VirtualSystemSettingData"))
            await asyncio.wait_for(pulled.wait(), 10)
            started = time.monotonic()
            # the request's deadline and the socket's read timeout are both 2 s: either
            # may end the Pull, whichever the loaded machine runs first
            with pytest.raises(CimUnreachable, match=r"did not complete its answer within 2 s"
                               r"|no answer from the WinRM service within 1 s"):
                await query
            elapsed = time.monotonic() - started
        finally:
            await cim.close()
    assert elapsed < 2 * 2 - 0.5  # one deadline (2 s), not the Pull's and the Release's


def test_certificate_authentication_over_http_is_a_configuration_error(tmp_path: Path
                                                                       ) -> None:
    """WinRM takes client certificates over HTTPS only; over http the session would have
    to seal every message, which certificate authentication cannot."""
    with pytest.raises(ConfigError, match="certificate authentication needs https"):
        WsmanSettings(url="http://hv01.example:5985/wsman", auth="certificate",
                      certificate_pem=tmp_path / "cert.pem",
                      certificate_key_pem=tmp_path / "key.pem")


async def test_an_enumeration_the_host_forgot_is_read_again_from_its_start(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    """A Pull answered wsen:InvalidEnumerationContext (the host dropped the context 60 s
    after its last answer, or its service restarted) starts the query again, once."""
    for index in range(12):
        await define_vm(emulator, f"vm-{index}")
    direct = await emulator.query("SELECT * FROM Msvm_VirtualSystemSettingData")
    forgot = soap.Fault("n:InvalidEnumerationContext", "The enumeration context supplied "
                        "in the message is not valid.")
    async with face(emulator, tmp_path / "face", tls=True) as served, \
            _slow_pulls(served.url, tmp_path / "stand-in", 1, forgot) as url:
        cim = client(url, max_envelope_bytes=8192)
        try:
            found = await cim.query("SELECT * FROM Msvm_VirtualSystemSettingData")
        finally:
            await cim.close()
    assert sorted(str(i["InstanceID"]) for i in found) == sorted(
        str(i["InstanceID"]) for i in direct)


# --- a host restarted while a kept-alive connection to it was idle ----------------------------


class _Restarting:
    """A stand-in in front of the face (https, Basic) forwarding every request, until
    ``restart()``: from then on a request arriving on a connection opened before it is
    reset (RST) without an answer, as a host that restarted since resets every connection
    its former self had; ``pulls_reset`` Pulls are reset whatever their connection."""

    def __init__(self, pulls_reset: int = 0) -> None:
        # connections opened before the restart, and all seen: the transports themselves,
        # held, since the id of one closed and collected may be a new connection's
        self.before: set[asyncio.BaseTransport] = set()
        self.seen: set[asyncio.BaseTransport] = set()
        self.actions: list[str] = []  # what reached the host, in order
        self.resets = 0
        self.pulls_reset = pulls_reset

    def restart(self) -> None:
        self.before = set(self.seen)

    async def handle(self, request: web.Request, url: str) -> web.StreamResponse:
        data = await request.read()
        asked = soap.read_request(data, 512000)
        assert request.transport is not None
        connection = request.transport
        self.seen.add(connection)
        if connection in self.before or (asked.action == PULL and self.pulls_reset > 0):
            if asked.action == PULL:
                self.pulls_reset -= 1
            self.resets += 1
            raw = request.transport.get_extra_info("socket")
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            request.transport.abort()
            raise asyncio.CancelledError  # nothing is answered
        self.actions.append(asked.action.rsplit("/", 1)[-1])
        return await _forwarded(url, request, data)


@contextlib.asynccontextmanager
async def _restarting(url: str, tls_dir: Path, pulls_reset: int = 0
                      ) -> AsyncIterator[tuple[_Restarting, str]]:
    stand_in = _Restarting(pulls_reset)

    async def handle(request: web.Request) -> web.StreamResponse:
        return await stand_in.handle(request, url)

    runner, port = await _stand_in(handle, tls_dir)
    try:
        yield stand_in, f"https://127.0.0.1:{port}/wsman"
    finally:
        await runner.cleanup()


async def test_a_query_on_a_connection_the_restarted_host_resets_is_sent_again_once(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    """A host restarted within the idle-connection reuse time resets the kept-alive
    connection when the next request arrives: an Enumerate or a Get, which change
    nothing, is sent again on a new connection, and answers."""
    vm = await define_vm(emulator, "i-2-2-VM")
    async with face(emulator, tmp_path / "face", tls=True) as served, \
            _restarting(served.url, tmp_path / "stand-in") as (host, url):
        cim = client(url)
        try:
            first = await cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch")
            await cim.get(vm)  # its class read once
            host.restart()
            again = await cim.query("SELECT * FROM Msvm_VirtualEthernetSwitch")
            host.restart()
            del host.actions[:]
            got = await cim.get(vm)
        finally:
            await cim.close()
    assert [s.path for s in again] == [s.path for s in first]
    assert got["ElementName"] == "i-2-2-VM"
    assert host.resets == 2
    assert host.actions == ["Get"]


async def test_a_method_call_on_a_reset_connection_is_not_sent_twice(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    """A method call may have been carried out before its connection broke (sent again,
    DefineSystem makes a second VM): it fails, saying the host could not be reached."""
    vm = await define_vm(emulator, "i-2-2-VM")
    async with face(emulator, tmp_path / "face", tls=True) as served, \
            _restarting(served.url, tmp_path / "stand-in") as (host, url):
        cim = client(url)
        try:
            await cim.get(vm)
            host.restart()
            del host.actions[:]
            with pytest.raises(CimUnavailable, match="cannot reach the WinRM service"):
                await cim.invoke(vm, "RequestStateChange", {"RequestedState": 2})
        finally:
            await cim.close()
    assert host.resets == 1
    assert "RequestStateChange" not in host.actions


async def test_an_enumeration_whose_pull_is_reset_is_read_again_from_its_start(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    """A Pull is never sent twice (carried out, its batch would be lost): the query is
    read again from its start and answers every instance."""
    for index in range(12):
        await define_vm(emulator, f"vm-{index}")
    direct = await emulator.query("SELECT * FROM Msvm_VirtualSystemSettingData")
    async with face(emulator, tmp_path / "face", tls=True) as served, \
            _restarting(served.url, tmp_path / "stand-in", pulls_reset=1) as (host, url):
        cim = client(url, max_envelope_bytes=8192)
        try:
            found = await cim.query("SELECT * FROM Msvm_VirtualSystemSettingData")
        finally:
            await cim.close()
    assert sorted(str(i["InstanceID"]) for i in found) == sorted(
        str(i["InstanceID"]) for i in direct)
    assert host.resets == 1
    assert host.actions[:3] == ["Enumerate", "Release", "Enumerate"]


_ABANDON = """
import asyncio, sys
from hyperv_agent.cim.wsman.backend import WsmanCim
from hyperv_agent.cim.wsman.settings import WsmanSettings

async def main() -> None:
    cim = WsmanCim(WsmanSettings(url=sys.argv[1], username="u", password="p", auth="ntlm"))
    try:
        await asyncio.wait_for(cim.query("SELECT * FROM Msvm_ComputerSystem"), 0.5)
    except TimeoutError:
        print("given up", flush=True)
    await cim.close()

asyncio.run(main())
"""


def test_a_request_left_waiting_on_a_hung_host_does_not_hold_the_process_at_exit() -> None:
    """A hung host accepts the connection and never answers: a request its caller gave up
    on (doctor's bounded connection check, a ping's host check) waits in its thread for
    the socket's read timeout (70 s); the process still exits once its work is done."""
    with socket.create_server(("127.0.0.1", 0)) as hung:  # the kernel accepts; no answer
        port = hung.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", _ABANDON, f"http://127.0.0.1:{port}/wsman"],
            capture_output=True, text=True, timeout=15, check=False,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        took = time.monotonic() - started
    assert done.returncode == 0 and done.stdout == "given up\n", done.stderr
    assert took < 10
