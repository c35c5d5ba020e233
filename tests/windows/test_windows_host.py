"""WindowsServiceHost against this Windows machine's service manager, firewall, task
scheduler and disk (run by the Windows workflow, as an administrator)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyperv_agent.winsvc.host import FirewallRule, RunState, StartType
from hyperv_agent.winsvc.windows import WindowsServiceHost

HOST = WindowsServiceHost()


def test_a_running_system_service_reads_as_running_and_automatic() -> None:
    state = HOST.service_state("EventLog")
    assert state is not None
    assert (state.run, state.start, state.account) == (RunState.RUNNING, StartType.AUTO, None)


def test_a_missing_service_is_none() -> None:
    assert HOST.service_state("hyperv-agent-no-such-service") is None


@pytest.fixture
def rule_name() -> Iterator[str]:
    name = f"hyperv-agent-test-{os.getpid()}"
    yield name
    if HOST.firewall_rule_exists(name):
        HOST.delete_firewall_rule(name)


def test_a_firewall_rule_is_added_found_and_deleted(rule_name: str) -> None:
    assert not HOST.firewall_rule_exists(rule_name)
    HOST.add_firewall_rule(FirewallRule(rule_name, 18250))
    assert HOST.firewall_rule_exists(rule_name)
    HOST.delete_firewall_rule(rule_name)
    assert not HOST.firewall_rule_exists(rule_name)


def test_scheduled_tasks_are_found_by_prefix_and_deleted() -> None:
    prefix = f"hyperv-agent-test-{os.getpid()}-"
    for suffix in ("a", "b"):
        subprocess.run(["schtasks", "/Create", "/TN", prefix + suffix, "/SC", "ONCE",
                        "/ST", "23:59", "/TR", "cmd /c exit 0", "/F"], check=True,
                       capture_output=True)
    found = HOST.scheduled_tasks(prefix)
    assert found == (f"\\{prefix}a", f"\\{prefix}b")
    for name in found:
        HOST.delete_scheduled_task(name)
    assert HOST.scheduled_tasks(prefix) == ()


def test_folders_and_files(tmp_path: Path) -> None:
    folder = str(tmp_path / "ProgramData" / "hyperv-agent" / "logs")
    HOST.make_directory(folder)
    HOST.make_directory(folder)
    config = str(tmp_path / "ProgramData" / "hyperv-agent" / "agent.toml")
    assert not HOST.file_exists(config)
    HOST.write_file(config, "[agent]\n")
    assert HOST.file_exists(config) and HOST.file_exists(folder)
