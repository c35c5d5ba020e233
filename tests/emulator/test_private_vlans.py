"""Private VLANs on switch ports: what the emulator takes (as Set-VMNetworkAdapterVlan
documents the modes) and which adapters then reach each other (emulator/traffic.py)."""

from __future__ import annotations

from typing import Any

import pytest

from hyperv_agent.cim.api import MethodResult, ObjectPath
from hyperv_agent.emulator import traffic
from hyperv_agent.emulator.backend import EmulatorCim
from tests.emulator.kit import failure, finished, ok
from tests.emulator.portkit import Nic, add_features, modify_features, port_features
from tests.emulator.portkit import vm_with_nic as nic_of

VLAN = "Msvm_EthernetSwitchPortVlanSettingData"


def _private(mode: int, primary: int, secondary: int = 0,
             secondaries: tuple[int, ...] = ()) -> dict[str, Any]:
    return {"OperationMode": 3, "PvlanMode": mode, "PrimaryVlanId": primary,
            "SecondaryVlanId": secondary, "SecondaryVlanIdArray": list(secondaries)}


def isolated(primary: int, secondary: int) -> dict[str, Any]:
    return _private(1, primary, secondary)


def community(primary: int, secondary: int) -> dict[str, Any]:
    return _private(2, primary, secondary)


def promiscuous(primary: int, *secondaries: int) -> dict[str, Any]:
    return _private(3, primary, secondaries=secondaries)


async def _outcome(cim: EmulatorCim, result: MethodResult) -> tuple[int, str]:
    """(0, "") for a call that succeeded; else its failure code and error text."""
    job = await finished(cim, result)
    if job is None:
        return int(result.return_value), ""
    if job["JobState"] == 7:
        return 0, ""
    return await failure(cim, result), str(job["ErrorDescription"])


async def _set(cim: EmulatorCim, port: ObjectPath, values: dict[str, Any]) -> tuple[int, str]:
    setting = (await cim.spawn(VLAN)).updated(values)
    return await _outcome(cim, await add_features(cim, port, [setting]))


async def _adapter(cim: EmulatorCim, name: str, mac: str, values: dict[str, Any]) -> Nic:
    nic = await nic_of(cim, name, mac)
    assert await _set(cim, nic.port, values) == (0, "")
    return nic


@pytest.mark.parametrize(("values", "named"), [
    (_private(0, 100, 200), "PvlanMode"),
    (_private(4, 100, 200), "PvlanMode"),
    (isolated(0, 200), "PrimaryVlanId"),
    (isolated(4095, 200), "PrimaryVlanId"),
    (isolated(100, 0), "secondary VLAN 0"),
    (community(100, 4095), "secondary VLAN 4095"),
    (isolated(100, 100), "primary"),
    (promiscuous(100), "SecondaryVlanIdArray"),
    (promiscuous(100, 200, 0), "secondary VLAN 0"),
    (promiscuous(100, 100), "primary"),
])
async def test_a_private_vlan_setting_missing_what_its_mode_needs_is_refused(
    emulator: EmulatorCim, values: dict[str, Any], named: str,
) -> None:
    nic = await nic_of(emulator)
    code, text = await _set(emulator, nic.port, values)
    assert code != 0 and named in text, text
    assert await port_features(emulator, nic.port, VLAN) == []


@pytest.mark.parametrize("values", [isolated(100, 200), community(100, 300),
                                    promiscuous(100, 200, 300)])
async def test_each_private_vlan_mode_is_taken_with_what_it_needs(
    emulator: EmulatorCim, values: dict[str, Any],
) -> None:
    nic = await nic_of(emulator)
    assert await _set(emulator, nic.port, values) == (0, "")
    (stored,) = await port_features(emulator, nic.port, VLAN)
    assert (stored["OperationMode"], stored["PvlanMode"], stored["PrimaryVlanId"]) == (
        3, values["PvlanMode"], 100)


async def test_modifying_a_port_into_a_bad_private_vlan_is_refused(
    emulator: EmulatorCim,
) -> None:
    nic = await _adapter(emulator, "web", "02:00:00:00:00:01", {"OperationMode": 1,
                                                                "AccessVlanId": 100})
    (stored,) = await port_features(emulator, nic.port, VLAN)
    result = await modify_features(emulator, [stored.updated(isolated(100, 100))])
    assert (await _outcome(emulator, result))[0] != 0
    (kept,) = await port_features(emulator, nic.port, VLAN)
    assert (kept["OperationMode"], kept["AccessVlanId"]) == (1, 100)
    await ok(emulator, await modify_features(emulator, [stored.updated(isolated(100, 200))]))
    assert traffic.switch_port(emulator.host, "web", nic.mac).sends == 200


async def test_isolated_ports_reach_only_the_promiscuous_port_of_their_primary_vlan(
    emulator: EmulatorCim,
) -> None:
    host = emulator.host
    one = await _adapter(emulator, "one", "02:00:00:00:00:01", isolated(100, 200))
    two = await _adapter(emulator, "two", "02:00:00:00:00:02", isolated(100, 200))
    dhcp = await _adapter(emulator, "dhcp", "02:00:00:00:00:03", promiscuous(100, 200))
    a, b, d = (one.vm_name, one.mac), (two.vm_name, two.mac), (dhcp.vm_name, dhcp.mac)
    verdict = traffic.reaches(host, a, b)
    assert not verdict.passed and "does not take" in verdict.reason
    assert not traffic.reaches(host, b, a)
    for vm in (a, b):
        assert traffic.reaches(host, vm, d), traffic.reaches(host, vm, d).reason
        assert traffic.reaches(host, d, vm)


async def test_community_ports_reach_their_community_and_the_promiscuous_port(
    emulator: EmulatorCim,
) -> None:
    host = emulator.host
    one = await _adapter(emulator, "one", "02:00:00:00:00:01", community(100, 300))
    two = await _adapter(emulator, "two", "02:00:00:00:00:02", community(100, 300))
    other = await _adapter(emulator, "other", "02:00:00:00:00:03", community(100, 301))
    lone = await _adapter(emulator, "lone", "02:00:00:00:00:04", isolated(100, 200))
    dhcp = await _adapter(emulator, "dhcp", "02:00:00:00:00:05", promiscuous(100, 300))
    a, b, c = (one.vm_name, one.mac), (two.vm_name, two.mac), (other.vm_name, other.mac)
    i, d = (lone.vm_name, lone.mac), (dhcp.vm_name, dhcp.mac)
    assert traffic.reaches(host, a, b) and traffic.reaches(host, b, a)
    assert not traffic.reaches(host, a, c) and not traffic.reaches(host, c, a)
    assert not traffic.reaches(host, a, i) and not traffic.reaches(host, i, a)
    assert traffic.reaches(host, a, d) and traffic.reaches(host, d, a)
    # The promiscuous port lists only community 300: the others' frames never reach it.
    assert not traffic.reaches(host, c, d) and not traffic.reaches(host, i, d)
    assert traffic.reaches(host, d, c)  # its own frames go on the primary, which all take


async def test_access_and_untagged_ports_reach_their_own_vlan_only(
    emulator: EmulatorCim,
) -> None:
    host = emulator.host
    one = await _adapter(emulator, "one", "02:00:00:00:00:01", {"OperationMode": 1,
                                                                "AccessVlanId": 100})
    two = await _adapter(emulator, "two", "02:00:00:00:00:02", {"OperationMode": 1,
                                                                "AccessVlanId": 100})
    other = await _adapter(emulator, "other", "02:00:00:00:00:03", {"OperationMode": 1,
                                                                    "AccessVlanId": 101})
    plain = await nic_of(emulator, "plain", "02:00:00:00:00:04")
    plain2 = await nic_of(emulator, "plain2", "02:00:00:00:00:05", running=False)
    a, b = (one.vm_name, one.mac), (two.vm_name, two.mac)
    assert traffic.reaches(host, a, b) and traffic.reaches(host, b, a)
    assert not traffic.reaches(host, a, (other.vm_name, other.mac))
    assert not traffic.reaches(host, a, (plain.vm_name, plain.mac))
    verdict = traffic.reaches(host, (plain.vm_name, plain.mac), (plain2.vm_name, plain2.mac))
    assert not verdict.passed and "not running" in verdict.reason
