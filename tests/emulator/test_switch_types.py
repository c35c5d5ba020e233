"""The emulated host's vSwitch kinds (``[emulator] switch_types``), as Hyper-V shows them:
each switch's own ports are Msvm_EthernetPortAllocationSettingData associated with its
Msvm_VirtualEthernetSwitchSettingData (Msvm_VirtualSystemSettingDataComponent), whose
HostResource is what the port connects the switch to. An External switch has a port to
an Msvm_ExternalEthernetPort and one to the management OS (the host's
Msvm_ComputerSystem), an Internal switch only the latter, a Private switch none."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperv_agent.backends import open_backend
from hyperv_agent.cim import wql
from hyperv_agent.cim.api import Cim, ObjectPath
from hyperv_agent.config import load_config
from hyperv_agent.errors import ConfigError

SWITCHES = 'switches = ["Host only", "Isolated", "Uplink"]\n'
TYPES = '[emulator.switch_types]\n"Host only" = "Internal"\nIsolated = "Private"\n'


def _open(tmp_path: Path) -> Cim:
    path = tmp_path / "host.toml"
    path.write_text("[emulator]\n" + SWITCHES + TYPES)
    return open_backend(load_config(path, state_dir=tmp_path / "state", backend="emulator"))


async def _connects(cim: Cim) -> dict[str, list[str]]:
    """Each switch's ports, as the classes of what they connect it to."""
    found: dict[str, list[str]] = {}
    for switch in await cim.query(wql.select("Msvm_VirtualEthernetSwitch")):
        settings = ObjectPath.for_keys("Msvm_VirtualEthernetSwitchSettingData",
                                       InstanceID=f"Microsoft:{switch['Name']}")
        ports = await cim.associators(
            settings, assoc_class="Msvm_VirtualSystemSettingDataComponent",
            result_class="Msvm_EthernetPortAllocationSettingData")
        found[str(switch["ElementName"])] = sorted(
            ObjectPath.parse(resource).class_name
            for port in ports for resource in port.strings("HostResource"))
    return found


async def test_switches_have_the_ports_of_their_kind(tmp_path: Path) -> None:
    cim = _open(tmp_path)
    try:
        connects = await _connects(cim)
        adapters = await cim.query(wql.select("Msvm_ExternalEthernetPort"))
    finally:
        await cim.close()
    assert connects == {"Host only": ["Msvm_ComputerSystem"], "Isolated": [],
                        "Uplink": ["Msvm_ComputerSystem", "Msvm_ExternalEthernetPort"]}
    assert [a["ElementName"] for a in adapters] == ["Emulated Ethernet Adapter #1"]


def test_switch_types_naming_an_unknown_switch_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    path.write_text('[emulator]\nswitches = ["Uplink"]\n[emulator.switch_types]\n'
                    'Nowhere = "Internal"\n')
    with pytest.raises(ConfigError, match="Nowhere"):
        load_config(path)


def test_switch_types_of_an_unknown_kind_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    path.write_text('[emulator]\nswitches = ["Uplink"]\n[emulator.switch_types]\n'
                    'Uplink = "Bridged"\n')
    with pytest.raises(ConfigError, match="Uplink"):
        load_config(path)
