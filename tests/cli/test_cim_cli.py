"""`hyperv-agent cim query|invoke`, run as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hyperv_agent.backends import emulator_config
from hyperv_agent.config import load_config
from hyperv_agent.emulator.backend import EmulatorCim


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hyperv_agent.cli", *args],
                          capture_output=True, text=True, timeout=60)


VSMS = ('Msvm_VirtualSystemManagementService.CreationClassName='
        '"Msvm_VirtualSystemManagementService",Name="vmms",'
        'SystemCreationClassName="Msvm_ComputerSystem",SystemName="HYPERV-EMU"')


def test_query_prints_instances_as_json_with_class_and_path(tmp_path: Path) -> None:
    run = _cli("cim", "query", "--backend", "emulator", "--state-dir", str(tmp_path),
               "SELECT Name, ElementName FROM Msvm_VirtualEthernetSwitch")
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert len(found) == 1
    assert found[0]["__CLASS"] == "Msvm_VirtualEthernetSwitch"
    assert found[0]["__PATH"].startswith("\\\\HYPERV-EMU\\root\\virtualization\\v2:")
    assert found[0]["ElementName"] == "External"


@pytest.mark.parametrize("namespace", ["root\\cimv2", "root/cimv2", "ROOT/CIMV2"])
def test_query_reads_root_cimv2_when_namespace_given(tmp_path: Path, namespace: str) -> None:
    """WMI takes either separator in a namespace, and so does every backend."""
    run = _cli("cim", "query", "--state-dir", str(tmp_path), "--namespace", namespace,
               "SELECT NumberOfLogicalProcessors FROM Win32_ComputerSystem")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)[0]["NumberOfLogicalProcessors"] == 16


def test_config_file_shapes_the_emulated_host(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[agent]
state_dir = "{tmp_path / 'state'}"
backend = "emulator"
[emulator]
cpus = 4
memory_mb = 8192
switches = ["Public", "Storage"]
[emulator.drives]
C = "{tmp_path / 'C'}"
[emulator.shares]
'\\\\10.1.1.1\\secondary' = "{tmp_path / 'secondary'}"
""")
    run = _cli("cim", "query", "--config", str(config),
               "SELECT ElementName FROM Msvm_VirtualEthernetSwitch")
    assert run.returncode == 0, run.stderr
    assert sorted(i["ElementName"] for i in json.loads(run.stdout)) == ["Public", "Storage"]


def test_bad_query_and_unknown_class_exit_non_zero_with_one_line(tmp_path: Path) -> None:
    for wql in ("SELEC * FROM Msvm_ComputerSystem", "SELECT * FROM Msvm_Nothing"):
        run = _cli("cim", "query", "--state-dir", str(tmp_path), wql)
        assert run.returncode != 0
        assert run.stdout == ""
        assert len(run.stderr.strip().splitlines()) == 1
        assert run.stderr.startswith("error: ")


def test_bad_config_is_reported_with_the_field(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[emulator]\ncpus = 0\n")
    run = _cli("cim", "query", "--config", str(config), "SELECT * FROM Msvm_ComputerSystem")
    assert run.returncode != 0
    assert "emulator.cpus" in run.stderr


def test_invoke_calls_method_and_prints_out_parameters(tmp_path: Path) -> None:
    run = _cli("cim", "invoke", "--state-dir", str(tmp_path), VSMS, "GetSummaryInformation",
               "RequestedInformation=[0,1,100]")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out == {"ReturnValue": 0, "SummaryInformation": []}
    bad = _cli("cim", "invoke", "--state-dir", str(tmp_path), VSMS, "NoSuchMethod")
    assert bad.returncode != 0 and "NoSuchMethod" in bad.stderr


def test_backend_choices_are_the_backends_the_configuration_knows() -> None:
    from typing import get_args

    from hyperv_agent import cli
    from hyperv_agent.config import Backend

    assert sorted(cli.BACKENDS) == sorted(get_args(Backend))


async def test_a_held_emulated_host_is_read_with_a_note_and_not_changed(tmp_path: Path) -> None:
    """While a running agent holds the emulated host, ``cim query`` reads what it stored
    (one note on stderr says so) and ``cim invoke`` is refused: its change would be lost."""
    config = emulator_config(load_config(None, state_dir=tmp_path, backend="emulator"))
    holder = EmulatorCim.open(config)
    try:
        run = _cli("cim", "query", "--state-dir", str(tmp_path),
                   "SELECT ElementName FROM Msvm_VirtualEthernetSwitch")
        assert run.returncode == 0, run.stderr
        assert [i["ElementName"] for i in json.loads(run.stdout)] == ["External"]
        assert run.stderr == (f"note: the emulated host's state directory {config.state_dir} "
                              f"is in use by another process (PID {os.getpid()}): read as "
                              "that process has stored it\n")
        run = _cli("cim", "invoke", "--state-dir", str(tmp_path), VSMS, "DefineSystem")
        assert run.returncode == 2
        assert run.stderr.startswith(f"error: the emulated host's state directory "
                                     f"{config.state_dir} is in use by another process "
                                     f"(PID {os.getpid()})")
        assert run.stdout == ""
    finally:
        await holder.close()
