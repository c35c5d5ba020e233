"""`service status`: what the host's service manager and the configuration say."""

from __future__ import annotations

from pathlib import Path, PureWindowsPath

from click.testing import CliRunner

from hyperv_agent.cli import main
from hyperv_agent.winsvc import plan
from hyperv_agent.winsvc.host import RunState, StartType
from hyperv_agent.winsvc.paths import ServicePaths
from hyperv_agent.winsvc.status import status
from tests.conftest import off_windows
from tests.winsvc.memoryhost import MemoryHost, StepClock


def test_a_replaced_host_shows_the_agent_running_and_the_csharp_agent_disabled(
    tmp_path: Path,
) -> None:
    host = MemoryHost()
    host.add_service("CloudStack Hyper-V Agent", RunState.RUNNING, StartType.AUTO, "LAB\\svc")
    where = ServicePaths(PureWindowsPath("C:\\ProgramData\\hyperv-agent"))
    options = plan.InstallOptions(replace_csharp_agent=True)
    plan.execute(plan.install_plan(where, options), host, StepClock(), lambda line: None)
    config = tmp_path / "agent.toml"
    config.write_text(f"[agent]\nbackend = 'emulator'\nstate_dir = '{tmp_path}'\n")
    found = status(host, config)
    assert found.running
    assert found.lines == (
        "service hyperv-agent: running (start auto)",
        "C# agent service CloudStack Hyper-V Agent: stopped (start disabled, as LAB\\svc)",
        "C# agent service CloudStack ServerResource: not installed",
        'firewall rule "hyperv-agent-cloudstack-tcp-8250": present',
        f"configuration {config}: valid; listen 0.0.0.0:8250, state {tmp_path}",
        "backend: emulator",
    )


@off_windows
def test_without_a_service_manager_the_configuration_is_still_checked(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[agent]\nlisten = 'nowhere'\n")
    result = CliRunner().invoke(main, ["service", "status", "--config", str(config)])
    assert result.exit_code == 3
    lines = result.output.splitlines()
    assert lines[0] == "service manager: only on the Windows host"
    assert lines[1].startswith(f"configuration {config}: invalid config file {config}: "
                               "agent.listen: Value error, 'nowhere' is not HOST:PORT")


@off_windows
def test_auto_backend_off_windows_says_why_it_cannot_choose(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[agent]\nbackend = 'auto'\n")
    found = status(None, config)
    assert not found.running
    assert found.lines[-1] == (
        "backend: auto: backend 'auto' chooses the local backend of a Windows Hyper-V host; "
        "on this machine name one: --backend emulator or wsman")
