"""StartCommand and PlugNic over real HTTPS: which vSwitch a NIC lands on (protocol §9.5).

A NIC without a traffic label (NicTO ``name`` null) goes to the host's External switch,
never to an Internal or Private one that WMI happens to list first; a named switch is
taken whatever its kind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.hyperv import build, nics
from hyperv_agent.hyperv.build import VmSpec
from tests.e2e.conftest import LOCAL_POOL, PRIVATE_IP, Running, every_backend, serving
from tests.e2e.test_start_command import START, START_ANSWER, _body, _nics, _started
from tests.e2e.test_vm_config_commands import MODIFY, MODIFY_ANSWER, PLUG, PLUG_ANSWER, _plug
from tests.emulator.kit import vm_names
from tests.sessions import hv

backend_kind = every_backend  # on the emulator and over WinRM


def _host(tmp_path: Path, switches: list[str], types: dict[str, str]) -> AgentConfig:
    """An emulated host with ``switches`` in that order, of the kinds ``types`` says."""
    lines = ["[emulator]", "switches = [" + ", ".join(f'"{s}"' for s in switches) + "]",
             "[emulator.switch_types]", *(f'"{name}" = "{kind}"' for name, kind in types.items())]
    config_file = tmp_path / "agent.toml"
    config_file.write_text("\n".join(lines) + "\n")
    return load_config(config_file, state_dir=tmp_path / "state", backend="emulator",
                       private_ip=PRIVATE_IP, local_storage_path=LOCAL_POOL)


@pytest.fixture
async def internal_first(tmp_path: Path) -> AsyncIterator[Running]:
    """A host whose first switches are Internal and Private, then two External ones."""
    config = _host(tmp_path, ["Host only", "Isolated", "Uplink", "Uplink 2"],
                   {"Host only": "Internal", "Isolated": "Private"})
    async with serving(config) as running:
        yield running


@pytest.fixture
async def no_external(tmp_path: Path) -> AsyncIterator[Running]:
    config = _host(tmp_path, ["Host only", "Isolated"],
                   {"Host only": "Internal", "Isolated": "Private"})
    async with serving(config) as running:
        yield running


def _unlabelled(body: dict[str, Any]) -> dict[str, Any]:
    body["vm"]["nics"][0]["name"] = None
    return body


async def test_start_puts_unlabelled_nic_on_first_external_switch_when_internal_is_first(
    internal_first: Running,
) -> None:
    running = internal_first
    path = await _started(running, _unlabelled(_body(running)))
    assert await _nics(running.emulator, path) == [("0200512C000E", "Uplink", 261)]


async def test_start_puts_labelled_nic_on_its_switch_when_that_switch_is_internal(
    internal_first: Running,
) -> None:
    running = internal_first
    body = _body(running)
    body["vm"]["nics"][0]["name"] = "Host only"
    path = await _started(running, body)
    assert await _nics(running.emulator, path) == [("0200512C000E", "Host only", 261)]


async def test_start_fails_naming_switches_and_creates_nothing_when_no_switch_is_external(
    no_external: Running,
) -> None:
    running = no_external
    cim = running.emulator
    before = cim.round_trips()
    key, answer = await running.answer(START, _unlabelled(_body(running)))
    spent = cim.round_trips() - before
    assert (key, answer["result"]) == (START_ANSWER, False), answer
    details = answer["details"]
    assert details.startswith("StartCommand failed: "), details
    assert "no External virtual switch" in details, details
    assert "'Host only'" in details and "'Isolated'" in details, details
    assert spent["invoke:DefineSystem"] == 0
    assert await vm_names(cim) == set()


async def test_plug_nic_puts_unlabelled_nic_on_first_external_switch_when_internal_is_first(
    internal_first: Running,
) -> None:
    running = internal_first
    vm = await build.define_vm(hv(running.emulator), VmSpec(
        name="i-2-62-VM", notes=(), generation=1, cpus=1, memory_mb=512))
    key, answer = await running.answer(PLUG, _plug("i-2-62-VM", name=None))
    assert (key, answer["result"]) == (PLUG_ANSWER, True), answer
    assert await _nics(running.emulator, vm.path) == [("02004A8E0021", "Uplink", 305)]


async def test_start_puts_nic_on_its_switch_when_its_traffic_label_differs_in_case(
    internal_first: Running,
) -> None:
    # Hyper-V matches switch names without regard to case (WQL's ``=``, Get-VMSwitch
    # -Name), and so did the C# agent: a label typed "uplink 2" is the switch "Uplink 2".
    running = internal_first
    body = _body(running)
    body["vm"]["nics"][0]["name"] = "uplink 2"
    path = await _started(running, body)
    assert await _nics(running.emulator, path) == [("0200512C000E", "Uplink 2", 261)]


async def test_modify_vm_nic_config_puts_plugged_nic_on_first_external_switch_when_unlabelled(
    internal_first: Running,
) -> None:
    # A router's spare NICs are made on the public network's switch ("Uplink 2"). PlugNic
    # of a network without a traffic label wires a spare by index with no switchLableName:
    # the NIC goes where StartCommand puts that network's NICs, the first External switch.
    running = internal_first
    cim = running.emulator
    vm = await build.define_vm(hv(cim), VmSpec(name="r-7-VM", notes=(), generation=1,
                                               cpus=1, memory_mb=512))
    await nics.add_nic(hv(cim), vm, mac="0E0004000016", switch_name="Uplink", vlan=None,
                       rate_mbps=None, name="control")
    await nics.add_nic(hv(cim), vm, mac="06A2C8000019", switch_name="Uplink 2", vlan=None,
                       rate_mbps=None, name="spare", connected=False)
    key, answer = await running.answer(MODIFY, {
        "vmName": "r-7-VM", "vlan": "300", "index": 1, "enable": True, "contextMap": {},
        "wait": 0})
    assert (key, answer["result"]) == (MODIFY_ANSWER, True), answer
    assert await _nics(cim, vm.path) == [("0E0004000016", "Uplink", None),
                                         ("06A2C8000019", "Uplink", 300)]
