"""`hyperv-agent service install|remove|start|stop --dry-run`: the full sequence of steps,
printed on any OS."""

from __future__ import annotations

import tomllib

import pytest
from click.testing import CliRunner, Result

from hyperv_agent.cli import main
from tests.conftest import off_windows

PROGRAM_DATA = "D:\\ProgramData"
ROOT = "D:\\ProgramData\\hyperv-agent"
CSHARP = "CloudStack Hyper-V Agent"
CSHARP_OLD = "CloudStack ServerResource"
RULE = "hyperv-agent-cloudstack-tcp-8250"


@pytest.fixture(autouse=True)
def _program_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROGRAMDATA", PROGRAM_DATA)


def dry_run(*args: str) -> Result:
    result = CliRunner().invoke(main, ["service", *args, "--dry-run"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def steps(result: Result) -> list[str]:
    """The numbered step lines, without their numbers."""
    return [line[4:] for line in result.output.splitlines() if line[:2].strip().isdigit()]


def commands(result: Result) -> list[str]:
    return [line.strip() for line in result.output.splitlines() if line.startswith("      ")]


PREPARE = [
    f"Create folder {ROOT}",
    f"Create folder {ROOT}\\logs",
    f"Let only SYSTEM, Administrators and LocalSystem open {ROOT} and what it holds (a "
    "protected access list, inherited; %ProgramData% lets every local user read)",
    f"Write {ROOT}\\agent.toml (backend auto, listening on 0.0.0.0:8250) unless it exists",
    "Register 'hyperv-agent' as a source of the Application event log",
    "Install service 'hyperv-agent' (\"CloudStack Hyper-V Agent (hyperv-agent)\"): "
    "pywin32's pythonservice.exe hosting hyperv_agent.winsvc.framework.AgentService, "
    "running as LocalSystem, starting auto, given 60 s to stop when the host shuts down; "
    "update it if installed",
    "Make Windows restart 'hyperv-agent' 60 s after it fails (also when it stops with an "
    "error)",
    f"Allow inbound TCP 8250 in Windows Firewall (rule \"{RULE}\", replaced if present)",
]
START = "Start service 'hyperv-agent', waiting up to 60 s"


def test_fresh_install_checks_the_csharp_agent_prepares_and_starts() -> None:
    result = dry_run("install")
    assert result.output.startswith("service install: 10 steps (dry run: nothing is changed)")
    assert steps(result) == [
        f"Check that the C# agent's service ('{CSHARP}' or '{CSHARP_OLD}') is neither "
        "running nor set to start automatically: it would hold port 8250",
        *PREPARE, START]
    assert commands(result)[-2:] == [
        f"netsh advfirewall firewall add rule name={RULE} dir=in action=allow "
        "protocol=TCP localport=8250",
        'sc.exe start "hyperv-agent"']


def test_replacement_prepares_first_then_retires_the_csharp_agent_then_starts() -> None:
    result = dry_run("install", "--replace-csharp-agent")
    assert result.output.startswith("service install --replace-csharp-agent: 14 steps")
    assert steps(result) == [
        *PREPARE,
        f"Stop service '{CSHARP}' if it is installed (the C# agent holds port 8250), "
        "waiting up to 60 s",
        f"Set service '{CSHARP}' to start type disabled, if installed",
        f"Stop service '{CSHARP_OLD}' if it is installed (the C# agent holds port 8250), "
        "waiting up to 60 s",
        f"Set service '{CSHARP_OLD}' to start type disabled, if installed",
        "Delete the scheduled tasks named cloudstack-heartbeat-* (the C# agent's heartbeat "
        "writers; this agent writes the heartbeats itself)",
        START]
    assert f'sc.exe config "{CSHARP}" start= disabled' in commands(result)
    assert ("note: to go back to the C# agent: hyperv-agent service remove "
            "--restore-csharp-agent") in result.output


def test_install_as_an_account_names_it_and_never_prints_the_password() -> None:
    result = dry_run("install", "--user", "LAB\\svc-cloudstack", "--password", "S3cr3t!x",
                     "--delayed-start")
    assert "running as LAB\\svc-cloudstack, starting delayed-auto" in result.output
    assert "S3cr3t!x" not in result.output


def test_install_as_an_account_grants_it_what_the_services_console_would() -> None:
    result = dry_run("install", "--user", "LAB\\svc-cloudstack", "--password", "S3cr3t!x")
    assert result.output.startswith("service install: 12 steps")
    listed, typed = steps(result), commands(result)
    assert listed[3] == (f"Let only SYSTEM, Administrators and LAB\\svc-cloudstack open {ROOT} "
                         "and what it holds (a protected access list, inherited; %ProgramData% "
                         "lets every local user read)")
    assert typed[3] == (f'icacls "{ROOT}" /inheritance:r /grant:r "*S-1-5-18:(OI)(CI)F" '
                        '"*S-1-5-32-544:(OI)(CI)F" "LAB\\svc-cloudstack:(OI)(CI)F"')
    assert listed[6:8] == [
        "Grant LAB\\svc-cloudstack the right to log on as a service (SeServiceLogonRight) "
        "unless it holds it or is a built-in or virtual service account; recorded in "
        f"{ROOT}\\granted.json for `service remove`",
        "Add LAB\\svc-cloudstack to the local group Hyper-V Administrators (S-1-5-32-578), "
        "which Hyper-V's WMI v2 namespace requires, unless it is a member; recorded in "
        f"{ROOT}\\granted.json for `service remove`"]
    assert "LsaAddAccountRights" in typed[6] and "r'LAB\\svc-cloudstack'" in typed[6]
    assert typed[7] == 'Add-LocalGroupMember -SID S-1-5-32-578 -Member "LAB\\svc-cloudstack"'
    assert listed[8].startswith("Install service 'hyperv-agent'")


def test_install_as_the_virtual_account_creates_the_service_before_granting_it() -> None:
    result = dry_run("install", "--user", "NT SERVICE\\hyperv-agent")
    assert result.output.startswith("service install: 13 steps")
    listed, typed = steps(result), commands(result)
    assert listed[3] == ("Let only SYSTEM, Administrators and, once service 'hyperv-agent' "
                         f"is installed, NT SERVICE\\hyperv-agent open {ROOT} and what it holds "
                         "(a protected access list, inherited; %ProgramData% lets every local "
                         "user read)")
    assert typed[3] == (f'icacls "{ROOT}" /inheritance:r /grant:r "*S-1-5-18:(OI)(CI)F" '
                        '"*S-1-5-32-544:(OI)(CI)F"')
    assert listed[6].startswith("Install service 'hyperv-agent'")
    assert typed[7].endswith('"NT SERVICE\\hyperv-agent:(OI)(CI)F"')
    assert [line.split(" ", 1)[0] for line in listed[8:10]] == ["Grant", "Add"]


@off_windows
def test_install_without_dry_run_off_windows_is_one_line_and_changes_nothing() -> None:
    result = CliRunner().invoke(main, ["service", "install", "--replace-csharp-agent"])
    assert result.exit_code == 2
    assert result.stderr == ("error: service install --replace-csharp-agent changes a "
                             "Windows host; here, add --dry-run to print its steps\n")


def test_remove_stops_deletes_and_keeps_the_data() -> None:
    result = dry_run("remove")
    assert steps(result) == [
        "Stop service 'hyperv-agent' if it is installed, waiting up to 60 s",
        "Delete service 'hyperv-agent' and its event log source, if installed",
        f"Delete the Windows Firewall rule \"{RULE}\" if present",
        "Take back from the service's account what `service install` granted and recorded "
        f"in {ROOT}\\granted.json (the right to log on as a service, membership of Hyper-V "
        "Administrators), if anything"]
    assert (f"note: kept: {ROOT} (configuration, state and logs); delete it by hand to "
            "remove everything") in result.output


def test_remove_can_bring_the_csharp_agent_back() -> None:
    result = dry_run("remove", "--restore-csharp-agent")
    assert steps(result)[4:] == [
        f"Set service '{CSHARP}' to start type auto, if installed",
        f"Start service '{CSHARP}' if it is installed, waiting up to 60 s",
        f"Set service '{CSHARP_OLD}' to start type auto, if installed",
        f"Start service '{CSHARP_OLD}' if it is installed, waiting up to 60 s"]


def test_start_and_stop_are_one_step_each() -> None:
    assert steps(dry_run("start")) == [START]
    assert commands(dry_run("stop")) == ['sc.exe stop "hyperv-agent"']


def test_the_default_configuration_is_written_by_a_command_an_administrator_can_type() -> None:
    line = next(c for c in commands(dry_run("install")) if "Set-Content" in c)
    assert line.startswith(f'if (-not (Test-Path "{ROOT}\\agent.toml")) {{ Set-Content -Path '
                           f'"{ROOT}\\agent.toml" -Value "')
    value = line.split('-Value "', 1)[1].removesuffix('" }')
    text = value.replace("`n", "\n").replace('`"', '"')
    assert tomllib.loads(text) == {"agent": {"backend": "auto", "listen": "0.0.0.0:8250"}}


@pytest.mark.parametrize("args, problem", [
    (("--password", "S3cr3t!x"),
     "error: --password is the password of the --user account: without --user the service "
     "runs as LocalSystem, which takes none\n"),
    (("--user", "svc-cloudstack"),
     "error: --user 'svc-cloudstack': name the account as DOMAIN\\USER, or .\\svc-cloudstack "
     "for a local account of this host (Windows refuses a bare user name for a service)\n"),
])
def test_install_refuses_an_account_windows_would_not_run_it_as(
        args: tuple[str, ...], problem: str) -> None:
    for dry in ((), ("--dry-run",)):
        result = CliRunner().invoke(main, ["service", "install", *args, *dry])
        assert (result.exit_code, result.stderr) == (2, problem), result.output
        assert "S3cr3t!x" not in result.output


def test_install_takes_a_local_account_and_an_account_by_its_principal_name() -> None:
    for account in (".\\cloudstack", "svc-cloudstack@lab.example"):
        result = dry_run("install", "--user", account, "--password", "S3cr3t!x")
        assert f"running as {account}," in result.output
