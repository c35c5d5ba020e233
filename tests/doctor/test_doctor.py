"""``doctor`` against the emulator's WinRM face: a healthy host passes every check; a host
that falls short (a missing vSwitch, a class the agent needs, a full disk, a skewed clock)
fails the check that names it, with its fix; ``--deploy`` leaves nothing behind, also when
a step fails."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import SecretStr

from hyperv_agent import winrm_face
from hyperv_agent.cim import wql
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.doctor import checks
from hyperv_agent.doctor.checks import Options, shares_fix
from hyperv_agent.doctor.deploy import VM_PREFIX
from hyperv_agent.doctor.report import Report, Status
from hyperv_agent.doctor.run import diagnose
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.winrm.auth import Account

ACCOUNT = Account("doctor", "Doc-Pa55word!")
#: Any free space passes but none (the test machine's disk may hold less than the default).
ROOMY = Options(min_free_bytes=1024 * 1024)
CHECKS = ["connection", "winrm limits", "namespace", "services", "schema", "vswitches",
          "vhd path", "host files", "smb pools", "state files", "clock", "live migration",
          "migration networks", "console relay"]
DEPLOY = ["deploy define", "deploy disk", "deploy attach", "deploy start", "deploy stop",
          "deploy destroy", "deploy delete disk", "deploy cleanup"]


@contextlib.asynccontextmanager
async def faced(tmp_path: Path, lab: str = "") -> AsyncIterator[
        tuple[AgentConfig, EmulatorCim]]:
    """An emulated host (with ``lab`` knobs) behind its WinRM face over HTTP and NTLM, and
    the configuration of an agent driving it."""
    async with serving(tmp_path, lab) as (config, face):
        yield config, face.emulator


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, lab: str = "") -> AsyncIterator[
        tuple[AgentConfig, winrm_face.RunningFace]]:
    """``faced``, with the WinRM face itself (its service's settings can be changed)."""
    config_file = tmp_path / "host.toml"
    config_file.write_text(f"[emulator.lab]\n{lab}\n")
    host = load_config(config_file, state_dir=tmp_path / "host", backend="emulator")
    face = await winrm_face.start_face(host, "127.0.0.1", 0, ACCOUNT, use_tls=False)
    try:
        yield winrm_face.agent_config(host, face.url, ACCOUNT, "ntlm"), face
    finally:
        await face.close()


def _check(report: Report, name: str) -> tuple[Status, str]:
    line = next(c for c in report.checks if c.name == name)
    return line.status, line.line()


async def _nothing_left(emulator: EmulatorCim, config: AgentConfig) -> None:
    systems = await emulator.query(wql.select("Msvm_ComputerSystem",
                                              properties=("ElementName",)))
    assert not [s for s in systems if (s.string("ElementName") or "").startswith(VM_PREFIX)]
    pool = emulator.host.paths.local(config.agent.local_storage_path)
    leftovers = [p.name for p in pool.iterdir()] if pool.is_dir() else []
    assert leftovers == []


async def test_every_check_passes_and_a_vm_lives_and_goes_on_a_healthy_host(
        tmp_path: Path) -> None:
    async with faced(tmp_path) as (config, emulator):
        # A label names its switch without regard to case, as on Hyper-V.
        report = await diagnose(config, replace(ROOMY, vswitches=("External", "external")),
                                play_deploy=True)
        await _nothing_left(emulator, config)
    assert [c.name for c in report.checks] == CHECKS + DEPLOY
    assert report.passed and all(c.status is Status.OK for c in report.checks), report.text()
    assert "WinRM at 127.0.0.1" in report.checks[0].detail
    assert "MaxEnvelopeSizekb 500" in report.checks[1].detail
    assert len(report.text().splitlines()) == len(CHECKS + DEPLOY)


@pytest.mark.parametrize(("lab", "options", "failing", "named", "fix"), [
    ("", replace(ROOMY, vswitches=("Guest",)), "vswitches", "no vSwitch named Guest",
     "New-VMSwitch"),
    ('missing_classes = ["Msvm_MetricService"]', ROOMY, "schema",
     "missing on this host: Msvm_MetricService", "Windows Server 2016 or later"),
    ('missing_classes = ["Win32_PerfRawData_HvStats_HyperVHypervisorLogicalProcessor"]',
     ROOMY, "schema",
     "missing on this host: Win32_PerfRawData_HvStats_HyperVHypervisorLogicalProcessor",
     "lodctr /R, then winmgmt /resyncperf"),
    ("free_bytes = {C = 0}", ROOMY, "vhd path", "0.0 GiB free", "local_storage_path"),
    ("[emulator.migration]\nenabled = false", ROOMY, "live migration",
     "live migration is disabled", "Enable-VMMigration"),
], ids=["missing vSwitch", "missing class", "missing counters", "full disk",
        "migration disabled"])
async def test_the_failing_check_is_named_with_its_fix_when_the_host_falls_short(
        tmp_path: Path, lab: str, options: Options, failing: str, named: str,
        fix: str) -> None:
    async with faced(tmp_path, lab) as (config, emulator):
        report = await diagnose(config, options, play_deploy=True)
        await _nothing_left(emulator, config)
    assert not report.passed
    status, line = _check(report, failing)
    found, _, remedy = line.partition(" -> fix: ")
    assert status is Status.FAIL and named in found and fix in remedy
    assert report.checks[-1].name == "deploy" and report.checks[-1].status is Status.SKIP
    assert _check(report, "connection")[0] is Status.OK


async def test_missing_vm_counter_sets_warn_with_what_they_cost_and_how_to_rebuild_them(
        tmp_path: Path) -> None:
    lab = ('missing_classes = ["Win32_PerfRawData_Counters_HyperVVirtualStorageDevice", '
           '"Win32_PerfRawData_NvspNicStats_HyperVVirtualNetworkAdapter"]')
    async with faced(tmp_path, lab) as (config, _):
        report = await diagnose(config, ROOMY)
    assert report.passed, report.text()  # the agent works on: doctor still exits 0
    status, line = _check(report, "schema")
    assert status is Status.WARN, line
    assert "HyperVVirtualStorageDevice (VM disk statistics read 0)" in line
    assert "HyperVVirtualNetworkAdapter (VM network statistics read 0)" in line
    assert "lodctr /R" in line and "Windows Server 2016" not in line


async def test_credssp_and_a_missing_migration_network_warn_with_their_fixes(
        tmp_path: Path) -> None:
    lab = '[emulator.migration]\nauthentication = "CredSSP"\nnetworks = []'
    async with faced(tmp_path, lab) as (config, _):
        report = await diagnose(config, ROOMY)
    assert report.passed, report.text()  # warnings: doctor still exits 0
    status, line = _check(report, "live migration")
    assert status is Status.WARN and "CredSSP" in line and "0x8009030E" in line
    assert "Kerberos" in line and "Microsoft Virtual System Migration Service" in line
    status, line = _check(report, "migration networks")
    assert status is Status.WARN and "Add-VMMigrationNetwork" in line and "6600" in line


async def test_migration_networks_warn_when_none_holds_the_private_address(
        tmp_path: Path) -> None:
    async with faced(tmp_path, '[emulator.migration]\nnetworks = ["10.9.0.0/16"]') as (
            config, _):
        agent = config.agent.model_copy(update={"private_ip": "192.168.100.10"})
        report = await diagnose(config.model_copy(update={"agent": agent}), ROOMY)
    status, line = _check(report, "migration networks")
    assert status is Status.WARN and "none holds the private address 192.168.100.10" in line


async def test_a_skewed_clock_fails_the_clock_check(tmp_path: Path) -> None:
    async with faced(tmp_path) as (config, _):
        report = await diagnose(config, ROOMY, clock=lambda: time.time() - 600)
    status, line = _check(report, "clock")
    assert status is Status.FAIL and "NTP" in line
    assert re.search(r"clock is (599|600)\.\d s ahead of this machine's", line), line
    assert "Kerberos" in line


async def test_a_skew_heartbeats_cannot_absorb_fails_below_kerberos_five_minutes(
        tmp_path: Path) -> None:
    """Stamps are read up to 60 s after they are written and are stale after 180 s: a
    writer 150 s behind makes a live host look dead to its neighbours."""
    async with faced(tmp_path) as (config, _):
        report = await diagnose(config, ROOMY, clock=lambda: time.time() + 150)
    status, line = _check(report, "clock")
    assert status is Status.FAIL and "beyond 120 s HA heartbeats" in line, line
    assert "marks it Down" in line and "restarts" not in line, line
    assert "Kerberos" not in line
    assert "behind this machine's" in line and "w32tm /resync" in line


async def test_a_wrong_password_fails_the_connection_and_skips_the_rest(tmp_path: Path) -> None:
    async with faced(tmp_path) as (config, _):
        wrong = config.wsman.model_copy(update={"password": SecretStr("not-it")})
        report = await diagnose(config.model_copy(update={"wsman": wrong}), ROOMY)
    status, line = _check(report, "connection")
    assert status is Status.FAIL and "refused the credentials" in line
    assert "Remote Management Users" in line and "not-it" not in report.text()
    assert [c.status for c in report.checks[1:]] == [Status.SKIP] * (len(CHECKS) - 1)


@pytest.mark.parametrize(("method", "step"), [
    ("CreateVirtualHardDisk", "deploy disk"),
    ("AddResourceSettings", "deploy attach"),
    ("RequestStateChange", "deploy start"),
    ("DestroySystem", "deploy destroy"),
])
async def test_deploy_leaves_nothing_behind_when_a_step_fails(
        tmp_path: Path, method: str, step: str) -> None:
    async with faced(tmp_path) as (config, emulator):
        emulator.faults.fail_next_job(method, 32768, f"{method} failed (injected)")
        report = await diagnose(config, ROOMY, play_deploy=True)
        await _nothing_left(emulator, config)
    failed = [c.name for c in report.checks if c.status is Status.FAIL]
    assert failed == [step], report.text()
    assert "(injected)" in _check(report, step)[1]
    assert _check(report, "deploy cleanup")[0] is Status.OK


async def test_deploy_names_what_is_left_when_even_the_cleanup_fails(tmp_path: Path) -> None:
    async with faced(tmp_path) as (config, emulator):
        for _ in range(2):  # the step, then the cleanup's second try
            emulator.faults.fail_next_job("DestroySystem")
        report = await diagnose(config, ROOMY, play_deploy=True)
    status, line = _check(report, "deploy cleanup")
    assert status is Status.FAIL and "left behind: VM hyperv-agent-doctor-" in line
    assert "-> fix: remove by hand: Remove-VM -Name hyperv-agent-doctor-" in line


async def test_winrm_limits_below_the_agents_settings_warn_with_both_fixes(
        tmp_path: Path) -> None:
    async with faced(tmp_path) as (config, _):
        wanting = config.wsman.model_copy(update={"max_envelope_bytes": 1024000,
                                                  "operation_timeout_s": 120})
        report = await diagnose(config.model_copy(update={"wsman": wanting}), ROOMY)
    status, line = _check(report, "winrm limits")
    assert status is Status.WARN and report.passed
    assert "[wsman] max_envelope_bytes = 512000" in line
    assert "[wsman] operation_timeout_s = 60" in line


async def test_credssp_passes_when_the_agent_starts_moves_on_the_host_itself(
        tmp_path: Path) -> None:
    config_file = tmp_path / "host.toml"
    config_file.write_text('[emulator.migration]\nauthentication = "CredSSP"\n')
    config = load_config(config_file, state_dir=tmp_path / "host", backend="emulator")
    report = await diagnose(config, ROOMY)
    status, line = _check(report, "live migration")
    assert status is Status.OK and "CredSSP (moves are started on the source host" in line


async def test_a_winrm_quota_below_the_agents_concurrent_requests_warns_with_its_fix(
        tmp_path: Path) -> None:
    async with serving(tmp_path) as (config, face):
        face.service.max_concurrent_operations_per_user = 2
        report = await diagnose(config, ROOMY)
    status, line = _check(report, "winrm limits")
    assert status is Status.WARN, line
    # the host holds the doctor to the quota too (as Windows does): a check whose queries
    # ran side by side past it fails, naming it, and none fails otherwise
    failed = [check for check in report.checks if check.status is Status.FAIL]
    assert all("MaxConcurrentOperationsPerUser" in check.detail for check in failed), failed
    assert "MaxConcurrentOperationsPerUser 2" in line
    assert "[wsman] max_concurrent_requests = 2" in line
    assert "MaxConcurrentOperationsPerUser=\"1500\"" in line


async def test_an_account_that_may_not_read_winrms_configuration_is_no_administrator(
        tmp_path: Path) -> None:
    async with serving(tmp_path) as (config, face):
        face.service.administrator = False
        report = await diagnose(config, ROOMY)
    status, line = _check(report, "winrm limits")
    assert status is Status.WARN, line
    assert "no administrator of the host" in line and "(C$)" in line
    assert "add the account to the host's Administrators group" in line


def _relaying_to(config: AgentConfig, port: int) -> AgentConfig:
    """``config`` with its console relay passing connections to ``port`` of the WinRM
    face's address (listening elsewhere, so it does not relay to itself)."""
    agent = config.agent.model_copy(update={"console_relay_listen": "127.0.0.1:1",
                                            "console_relay_target_port": port})
    return config.model_copy(update={"agent": agent})


async def test_the_console_relay_reaches_vmconnect_on_the_host(tmp_path: Path) -> None:
    vmconnect = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = vmconnect.sockets[0].getsockname()[1]
    try:
        async with faced(tmp_path) as (config, _):
            report = await diagnose(_relaying_to(config, port), ROOMY)
    finally:
        vmconnect.close()
        await vmconnect.wait_closed()
    status, line = _check(report, "console relay")
    assert status is Status.OK and f"VMConnect at 127.0.0.1:{port} accepts" in line, line


async def test_an_unreachable_vmconnect_fails_the_console_relay_with_its_fix(
        tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    async with faced(tmp_path) as (config, _):
        report = await diagnose(_relaying_to(config, port), ROOMY)
    assert not report.passed
    status, line = _check(report, "console relay")
    assert status is Status.FAIL and f"VMConnect at 127.0.0.1:{port} cannot be reached" in line
    assert f"allow TCP {port} from this machine" in line


@pytest.mark.parametrize(("username", "named", "not_named"), [
    ("svc-cloud", "LocalAccountTokenFilterPolicy -Value 1", "Add-LocalGroupMember"),
    (".\\svc-cloud", "LocalAccountTokenFilterPolicy -Value 1", "Add-LocalGroupMember"),
    ("HV01\\svc-cloud", "LocalAccountTokenFilterPolicy -Value 1", "Add-LocalGroupMember"),
    ("Administrator", "not filtered by remote UAC", "LocalAccountTokenFilterPolicy"),
    ("LAB\\svc-cloud", "Add-LocalGroupMember -Group Administrators -Member LAB\\svc-cloud",
     "LocalAccountTokenFilterPolicy"),
    ("svc-cloud@lab.example", "-Member svc-cloud@lab.example", "LocalAccountTokenFilterPolicy"),
], ids=["local", "dot local", "host local", "built-in administrator", "domain", "upn"])
def test_the_admin_shares_fix_names_remote_uac_for_local_accounts_only(
        username: str, named: str, not_named: str) -> None:
    fix = shares_fix(username, "hv01.lab.example")
    assert named in fix and not_named not in fix and "TCP 445" in fix


def test_an_account_of_a_host_named_by_address_gets_both_fixes() -> None:
    fix = shares_fix("HV01\\svc-cloud", "10.1.1.11")
    assert "Administrators" in fix and "LocalAccountTokenFilterPolicy" in fix


async def test_a_host_not_offering_the_configured_logon_is_told_to_change_auth(
        tmp_path: Path) -> None:
    """Negotiate turned off at the host, only Basic offered: the connection check names
    what the host offers and the ``auth`` setting, never the account's password."""
    host = load_config(None, state_dir=tmp_path / "host", backend="emulator")
    face = await winrm_face.start_face(host, "127.0.0.1", 0, ACCOUNT, use_tls=True,
                                       negotiate=False)
    try:
        config = winrm_face.agent_config(host, face.url, ACCOUNT, "ntlm")
        report = await diagnose(config, ROOMY)
    finally:
        await face.close()
    status, line = _check(report, "connection")
    assert status is Status.FAIL, line
    assert "does not offer ntlm authentication (it offers Basic)" in line
    assert checks.AUTH_FIX in line and "username and password" not in line


async def test_a_stopped_host_fails_the_connection_at_once_and_skips_the_rest(
        tmp_path: Path) -> None:
    async with serving(tmp_path) as (config, face):
        port = face.url.rsplit(":", 1)[1].split("/")[0]
        await face.runner.cleanup()  # its WinRM service stopped: the connection is refused
        started = time.monotonic()
        report = await diagnose(config, ROOMY)
        took = time.monotonic() - started
    status, line = _check(report, "connection")
    assert status is Status.FAIL, line
    assert f"127.0.0.1:{port}: the WinRM service refuses connections" in line
    assert "winrm quickconfig" in line  # the listener's fix
    assert [c.status for c in report.checks[1:]] == [Status.SKIP] * (len(CHECKS) - 1)
    assert took < 5


async def test_a_hung_host_fails_the_connection_within_its_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection accepted and never answered (a frozen host): the check fails at
    ANSWER_WITHIN_S, not at the WinRM deadline, saying so and how to recover."""
    monkeypatch.setattr(checks, "ANSWER_WITHIN_S", 0.5)
    async with serving(tmp_path) as (config, face):
        port = int(face.url.rsplit(":", 1)[1].split("/")[0])
        await face.runner.cleanup()
        listener = socket.create_server(("127.0.0.1", port))
        accepted: list[socket.socket] = []

        async def accept() -> None:
            listener.setblocking(False)
            while True:
                accepted.append((await asyncio.get_running_loop().sock_accept(listener))[0])

        accepting = asyncio.create_task(accept())
        try:
            started = time.monotonic()
            async with asyncio.timeout(5):
                report = await diagnose(config, ROOMY)
            took = time.monotonic() - started
        finally:
            accepting.cancel()
            for connection in accepted:
                connection.close()
            listener.close()
    status, line = _check(report, "connection")
    assert status is Status.FAIL, line
    assert f"127.0.0.1:{port}" in line and "did not answer within 0.5 s" in line
    assert "Restart-Service WinRM" in line
    assert [c.status for c in report.checks[1:]] == [Status.SKIP] * (len(CHECKS) - 1)
    assert took < 2.5
