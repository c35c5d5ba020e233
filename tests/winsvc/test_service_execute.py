"""Carrying the service plans out against a host's service manager (kept in memory):
the state a host is left in, repeats, refusals and bounded waits."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path, PureWindowsPath

import pytest
from click.testing import CliRunner

from hyperv_agent.cli import main
from hyperv_agent.config import load_config
from hyperv_agent.errors import ServiceSetupError
from hyperv_agent.winsvc import commands, plan
from hyperv_agent.winsvc.host import RunState, StartType, takes_no_password
from hyperv_agent.winsvc.paths import FIREWALL_RULE, SERVICE_NAME, ServicePaths
from tests.winsvc.memoryhost import TRANSITION_LOOKS, MemoryHost, StepClock, service_sid

WHERE = ServicePaths(PureWindowsPath("C:\\ProgramData\\hyperv-agent"))
CSHARP = "CloudStack Hyper-V Agent"
TASKS = {"cloudstack-heartbeat-9c2f3e55-0b1a-3d6e-a0f4-6d2b8e71c4a9",
         "cloudstack-heartbeat-4b8d1c20-7e63-3f0a-9d45-1a2b3c4d5e6f"}


def run(chosen: plan.Plan, host: MemoryHost) -> list[str]:
    lines: list[str] = []
    plan.execute(chosen, host, StepClock(), lines.append)
    return lines


def install(host: MemoryHost, **options: object) -> list[str]:
    return run(plan.install_plan(WHERE, plan.InstallOptions(**options)),  # type: ignore[arg-type]
               host)


def csharp_host(run_state: RunState = RunState.RUNNING,
                start: StartType = StartType.AUTO) -> MemoryHost:
    host = MemoryHost()
    host.add_service(CSHARP, run_state, start, "LAB\\svc-cloudstack")
    host.tasks |= TASKS | {"GoogleUpdateTaskMachineCore"}
    return host


def running(host: MemoryHost, name: str) -> bool:
    state = host.service_state(name)
    return state is not None and state.run is RunState.RUNNING


def test_fresh_install_leaves_the_agent_running_behind_an_open_port(tmp_path: Path) -> None:
    host = MemoryHost()
    lines = install(host)
    assert running(host, SERVICE_NAME)
    service = host.services[SERVICE_NAME]
    assert service.spec is not None
    assert service.spec.python_class == "hyperv_agent.winsvc.framework.AgentService"
    assert service.state.start is StartType.AUTO and service.state.account is None
    assert host.firewall[FIREWALL_RULE].port == 8250
    assert host.event_sources == {SERVICE_NAME}
    assert host.restart_delays_s == {SERVICE_NAME: 60}
    assert host.file_exists("C:\\ProgramData\\hyperv-agent\\logs")
    assert host.restricted == {"c:\\programdata\\hyperv-agent": "S-1-5-18"}  # LocalSystem
    assert lines[3].endswith("inherited; %ProgramData% lets every local user read): restricted")
    assert lines[-1] == "[10/10] Start service 'hyperv-agent', waiting up to 60 s: running"
    written = tmp_path / "agent.toml"
    written.write_text(host.files["c:\\programdata\\hyperv-agent\\agent.toml"])
    agent = load_config(written).agent
    assert (agent.backend, agent.listen) == ("auto", "0.0.0.0:8250")


def test_a_second_install_updates_in_place_and_keeps_the_configuration() -> None:
    host = MemoryHost()
    install(host)
    host.files["c:\\programdata\\hyperv-agent\\agent.toml"] = "[agent]\nlisten = '10.0.0.5:8250'\n"
    lines = install(host, account="LAB\\svc", password="pw")
    assert "configuration updated" in lines[8] and "kept the existing file" in lines[4]
    assert lines[-1].endswith("already running")
    assert host.files["c:\\programdata\\hyperv-agent\\agent.toml"].startswith("[agent]\nlisten")
    assert host.services[SERVICE_NAME].state.account == "LAB\\svc"
    assert host.services[SERVICE_NAME].password == "pw"
    assert len(host.firewall) == 1


@pytest.mark.parametrize(("run_state", "start", "how"), [
    (RunState.RUNNING, StartType.AUTO, "running"),
    (RunState.STOPPED, StartType.DELAYED_AUTO, "set to start"),
])
def test_fresh_install_refuses_while_the_csharp_agent_would_hold_the_port_and_changes_nothing(
    run_state: RunState, start: StartType, how: str,
) -> None:
    host = csharp_host(run_state, start)
    before = host.snapshot()
    with pytest.raises(ServiceSetupError) as caught:
        install(host)
    assert str(caught.value) == (
        "step 1/10 (Check that the C# agent's service ('CloudStack Hyper-V Agent' or "
        "'CloudStack ServerResource') is neither running nor set to start automatically: it "
        f"would hold port 8250) failed: the C# agent's service '{CSHARP}' is {how}: it "
        "holds port 8250; add --replace-csharp-agent to stop and disable it")
    assert host.snapshot() == before


def test_fresh_install_goes_ahead_beside_a_disabled_csharp_agent() -> None:
    host = csharp_host(RunState.STOPPED, StartType.DISABLED)
    install(host)
    assert running(host, SERVICE_NAME)


def test_replacement_stops_and_disables_the_csharp_agent_and_its_heartbeat_tasks() -> None:
    host = csharp_host()
    lines = install(host, replace_csharp_agent=True)
    csharp = host.services[CSHARP].state
    assert (csharp.run, csharp.start) == (RunState.STOPPED, StartType.DISABLED)
    assert host.tasks == {"GoogleUpdateTaskMachineCore"}
    assert running(host, SERVICE_NAME)
    assert lines[8].endswith("(the C# agent holds port 8250), waiting up to 60 s: stopped")
    assert lines[10].endswith(": not installed")  # CloudStack ServerResource
    assert lines[12].endswith(f"deleted 2: {', '.join(sorted(TASKS))}")


def test_replacement_on_a_host_without_the_csharp_agent_is_a_fresh_install() -> None:
    host = MemoryHost()
    install(host, replace_csharp_agent=True)
    assert running(host, SERVICE_NAME) and set(host.services) == {SERVICE_NAME}


def test_a_csharp_agent_that_does_not_stop_leaves_this_agent_unstarted() -> None:
    host = csharp_host()
    host.services[CSHARP].hangs_on_stop = True
    with pytest.raises(ServiceSetupError, match=(
            f"step 9/14 .* failed: service '{CSHARP}' did not stop within 60 s")):
        install(host, replace_csharp_agent=True)
    assert host.services[SERVICE_NAME].state.run is RunState.STOPPED
    assert host.services[CSHARP].state.start is StartType.AUTO


def test_an_agent_that_dies_at_start_points_to_the_event_log_and_log_file() -> None:
    host = MemoryHost()
    install(host)
    run(plan.stop_plan(), host)
    host.services[SERVICE_NAME].dies_on_start = True
    with pytest.raises(ServiceSetupError) as caught:
        run(plan.start_plan(WHERE), host)
    assert str(caught.value).endswith(
        "failed: service 'hyperv-agent' stopped right after starting; see the Application "
        "event log (source hyperv-agent) and C:\\ProgramData\\hyperv-agent\\logs\\agent.log")


def test_stop_then_start_round_trip() -> None:
    host = MemoryHost()
    install(host)
    assert run(plan.stop_plan(), host)[0].endswith(": stopped")
    assert run(plan.stop_plan(), host)[0].endswith(": already stopped")
    assert run(plan.start_plan(WHERE), host)[0].endswith(": running")


def test_start_of_a_missing_service_says_to_install_it() -> None:
    with pytest.raises(ServiceSetupError, match="is not installed; run `hyperv-agent "
                                                "service install`"):
        run(plan.start_plan(WHERE), MemoryHost())


def test_remove_with_restore_brings_the_csharp_agent_back() -> None:
    host = csharp_host()
    install(host, replace_csharp_agent=True)
    run(plan.remove_plan(WHERE, restore_csharp_agent=True), host)
    assert SERVICE_NAME not in host.services and not host.firewall
    assert host.event_sources == set()
    assert running(host, CSHARP) and host.services[CSHARP].state.start is StartType.AUTO


def test_remove_twice_is_safe() -> None:
    host = MemoryHost()
    install(host)
    run(plan.remove_plan(WHERE), host)
    assert run(plan.remove_plan(WHERE), host) == [
        "[1/4] Stop service 'hyperv-agent' if it is installed, waiting up to 60 s: "
        "not installed",
        "[2/4] Delete service 'hyperv-agent' and its event log source, if installed: "
        "not installed",
        f"[3/4] Delete the Windows Firewall rule \"{FIREWALL_RULE}\" if present: not present",
        "[4/4] Take back from the service's account what `service install` granted and "
        f"recorded in {WHERE.grants_file} (the right to log on as a service, membership of "
        "Hyper-V Administrators), if anything: nothing recorded"]


SVC_SID = "S-1-5-21-7-8-9-1106"  # LAB\\svc-cloudstack in MemoryHost
GRANTS = "c:\\programdata\\hyperv-agent\\granted.json"


def test_an_account_gets_the_logon_right_and_group_it_lacks_and_remove_takes_them_back(
) -> None:
    host = MemoryHost()
    host.rights[SVC_SID] = {"SeBatchLogonRight"}
    lines = install(host, account="LAB\\svc-cloudstack", password="pw")
    assert lines[3].endswith(": restricted")
    assert host.restricted == {"c:\\programdata\\hyperv-agent": SVC_SID}
    assert lines[6].endswith("for `service remove`: granted")
    assert lines[7].endswith("for `service remove`: added")
    assert host.rights[SVC_SID] == {"SeBatchLogonRight", "SeServiceLogonRight"}
    assert host.groups["S-1-5-32-578"] == {SVC_SID}
    again = install(host, account="LAB\\svc-cloudstack", password="pw")
    assert again[6].endswith(": already held") and again[7].endswith(": already a member")
    assert json.loads(host.files[GRANTS]) == {"granted": [
        {"account": "LAB\\svc-cloudstack", "sid": SVC_SID, "right": "SeServiceLogonRight"},
        {"account": "LAB\\svc-cloudstack", "sid": SVC_SID, "group": "S-1-5-32-578"}]}
    removed = run(plan.remove_plan(WHERE), host)
    assert removed[-1].endswith("if anything: took back SeServiceLogonRight of "
                                "LAB\\svc-cloudstack, LAB\\svc-cloudstack from group "
                                "S-1-5-32-578")
    assert host.rights[SVC_SID] == {"SeBatchLogonRight"}  # its other rights stay
    assert host.groups["S-1-5-32-578"] == set() and GRANTS not in host.files


def test_what_the_account_had_before_the_install_stays_after_remove() -> None:
    host = csharp_host()  # the C# agent's account: given the right by the Services console
    host.rights[SVC_SID] = {"SeServiceLogonRight"}
    host.groups["S-1-5-32-578"].add(SVC_SID)
    lines = install(host, replace_csharp_agent=True, account="LAB\\svc-cloudstack",
                    password="pw")
    assert lines[5].endswith(": already held") and lines[6].endswith(": already a member")
    assert GRANTS not in host.files
    assert run(plan.remove_plan(WHERE, restore_csharp_agent=True), host)[3].endswith(
        ": nothing recorded")
    assert host.rights[SVC_SID] == {"SeServiceLogonRight"}
    assert host.groups["S-1-5-32-578"] == {SVC_SID}


def test_a_virtual_account_is_given_its_folder_and_group_once_its_service_exists() -> None:
    """Windows knows ``NT SERVICE\\hyperv-agent`` only once the service is installed
    (LookupAccountName: 1332 before): a fresh install creates the service first, then lets
    its account into the folder and Hyper-V Administrators; it needs no logon right."""
    host = MemoryHost()
    lines = install(host, account="NT SERVICE\\hyperv-agent")
    sid = service_sid(SERVICE_NAME)
    assert lines[3].endswith("restricted; NT SERVICE\\hyperv-agent is let in once the service "
                             "is installed")
    assert lines[6].startswith("[7/13] Install service 'hyperv-agent'")
    assert lines[6].endswith(": installed")
    assert lines[7].startswith("[8/13] Let only SYSTEM, Administrators and NT SERVICE")
    assert lines[7].endswith(": restricted")
    assert lines[8].endswith(": not needed: a built-in or virtual service account")
    assert lines[9].endswith("for `service remove`: added")
    assert host.restricted == {"c:\\programdata\\hyperv-agent": sid}
    assert host.groups["S-1-5-32-578"] == {sid} and host.rights == {}
    assert running(host, SERVICE_NAME)
    again = install(host, account="NT SERVICE\\hyperv-agent")  # the account keeps its folder
    assert again[3].endswith(": restricted") and again[9].endswith(": already a member")
    run(plan.remove_plan(WHERE), host)
    assert host.groups["S-1-5-32-578"] == set() and SERVICE_NAME not in host.services
    with pytest.raises(ServiceSetupError, match="1332"):  # gone with its service
        host.account_sid("NT SERVICE\\hyperv-agent")


def test_an_unknown_account_stops_the_install_before_the_service_is_created() -> None:
    host = MemoryHost()
    with pytest.raises(ServiceSetupError, match=r"^step 4/12 \(Let only SYSTEM, Administrators "
                       r"and LAB\\nobody open .*\) failed: no account 'LAB\\\\nobody': No "
                       r"mapping"):
        install(host, account="LAB\\nobody", password="pw")
    assert SERVICE_NAME not in host.services and host.rights == {}


def pending(host: MemoryHost, name: str, run: RunState, then: RunState) -> None:
    """Put the service in a start or stop under way, which ends in ``then``."""
    service = host.services[name]
    service.state = replace(service.state, run=run)
    service.target, service.pending_looks = then, TRANSITION_LOOKS


def test_stop_waits_for_a_stop_under_way_instead_of_asking_again() -> None:
    host = MemoryHost()
    install(host)
    pending(host, SERVICE_NAME, RunState.STOP_PENDING, RunState.STOPPED)
    assert run(plan.stop_plan(), host)[0].endswith(": stopped")
    assert host.services[SERVICE_NAME].state.run is RunState.STOPPED


def test_a_csharp_agent_still_starting_is_let_start_then_stopped() -> None:
    host = csharp_host(RunState.STOPPED)
    pending(host, CSHARP, RunState.START_PENDING, RunState.RUNNING)
    install(host, replace_csharp_agent=True)
    assert host.services[CSHARP].state.run is RunState.STOPPED
    assert running(host, SERVICE_NAME)


def test_start_waits_for_a_stop_under_way_then_starts() -> None:
    host = MemoryHost()
    install(host)
    pending(host, SERVICE_NAME, RunState.STOP_PENDING, RunState.STOPPED)
    assert run(plan.start_plan(WHERE), host)[0].endswith(": running")
    assert running(host, SERVICE_NAME)


def test_start_waits_for_a_start_under_way() -> None:
    host = MemoryHost()
    install(host)
    run(plan.stop_plan(), host)
    pending(host, SERVICE_NAME, RunState.START_PENDING, RunState.RUNNING)
    assert run(plan.start_plan(WHERE), host)[0].endswith(": running")


def test_a_service_stuck_stopping_is_neither_asked_again_nor_started() -> None:
    host = MemoryHost()
    install(host)
    host.services[SERVICE_NAME].hangs_on_stop = True
    pending(host, SERVICE_NAME, RunState.STOP_PENDING, RunState.STOP_PENDING)
    with pytest.raises(ServiceSetupError, match="service 'hyperv-agent' did not stop within "
                                                "60 s"):
        run(plan.stop_plan(), host)
    with pytest.raises(ServiceSetupError, match="service 'hyperv-agent' is still stopping "
                                                "after 60 s: it cannot be started before it "
                                                "has stopped"):
        run(plan.start_plan(WHERE), host)


@pytest.fixture
def cli_host(monkeypatch: pytest.MonkeyPatch) -> MemoryHost:
    """`hyperv-agent service ...` carried out against an in-memory Windows host."""
    host = MemoryHost()
    monkeypatch.setattr(commands, "on_windows", lambda: True)
    monkeypatch.setattr(commands, "windows_host", lambda: host)
    monkeypatch.setenv("PROGRAMDATA", "C:\\ProgramData")
    return host


@pytest.mark.parametrize("account", ["LAB\\gmsa-cloudstack$", "NT SERVICE\\hyperv-agent"])
def test_install_as_a_managed_or_virtual_account_asks_no_password_and_gives_none(
        cli_host: MemoryHost, account: str) -> None:
    result = CliRunner().invoke(main, ["service", "install", "--user", account], input="")
    assert result.exit_code == 0, result.output
    assert "password" not in result.output
    service = cli_host.services[SERVICE_NAME]
    assert (service.state.account, service.password) == (account, None)
    assert running(cli_host, SERVICE_NAME)


def test_install_refuses_the_virtual_account_of_another_service(cli_host: MemoryHost) -> None:
    result = CliRunner().invoke(main, ["service", "install", "--user", "NT SERVICE\\vmms"])
    assert (result.exit_code, result.stderr) == (2, (
        "error: --user NT SERVICE\\vmms: a virtual account runs only the service it is named "
        "after; for this one give NT SERVICE\\hyperv-agent\n"))
    assert cli_host.services == {}


def test_install_as_a_managed_service_account_refuses_a_password(cli_host: MemoryHost) -> None:
    result = CliRunner().invoke(main, ["service", "install", "--user", "LAB\\gmsa-cloudstack$",
                                       "--password", "S3cr3t!x"])
    assert (result.exit_code, result.stderr) == (2, (
        "error: --password: LAB\\gmsa-cloudstack$ is a managed service account, a virtual "
        "account or a built-in service account, which Windows runs a service as without a "
        "password; leave --password out\n"))
    assert cli_host.services == {}


def test_install_as_a_user_account_still_asks_its_password(cli_host: MemoryHost) -> None:
    result = CliRunner().invoke(main, ["service", "install", "--user", "LAB\\svc-cloudstack"],
                                input="S3cr3t!x\n")
    assert result.exit_code == 0, result.output
    assert cli_host.services[SERVICE_NAME].password == "S3cr3t!x"


@pytest.mark.parametrize("account, none", [
    ("LAB\\gmsa$", True), ("gmsa$@lab.example", True), ("nt service\\hyperv-agent", True),
    ("NT AUTHORITY\\NetworkService", True), ("LAB\\svc-cloudstack", False),
    (".\\cloudstack", False), ("svc@lab.example", False)])
def test_which_accounts_take_no_password(account: str, none: bool) -> None:
    assert takes_no_password(account) is none
