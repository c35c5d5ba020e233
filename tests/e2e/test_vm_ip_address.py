"""GetVmIpAddressCommand over real HTTPS: the address a guest on an L2 or service-less
shared network got from an external DHCP server, as the guest's data exchange service
reports it to Hyper-V (Msvm_GuestNetworkAdapterConfiguration).

The management server (``UserVmManagerImpl.VmIpAddrFetchThread``) records ``details`` as
the NIC's address on ``result:true``, clears the NIC's address on ``result:true`` without
details, and only logs ``result:false`` and asks again at its next interval."""

from __future__ import annotations

from typing import Any

from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from tests.e2e.conftest import Running, every_backend
from tests.emulator.kit import add, define_vm, ok, request_state, template

GET_IP = "com.cloud.agent.api.GetVmIpAddressCommand"
ANSWER = "com.cloud.agent.api.Answer"
MAC = "02:00:4c:5f:00:08"
OTHER_MAC = "02:00:4c:5f:00:09"

backend_kind = every_backend  # on the emulator and over WinRM


def _asked(vm: str, cidr: str | None = "10.1.1.0/24", mac: str | None = MAC,
           windows: bool = False) -> dict[str, Any]:
    """The command as Gson writes it: null fields (a network without a CIDR, an L2
    network's) left out, ``executeInSequence`` a method, not a field."""
    body: dict[str, Any] = {"vmName": vm, "windows": windows, "contextMap": {}, "wait": 0,
                            "bypassHostMaintenance": False}
    if cidr is not None:
        body["vmNetworkCidr"] = cidr
    if mac is not None:
        body["macAddress"] = mac
    return body


async def _vm(cim: EmulatorCim, name: str, *macs: str, start: bool = True) -> ObjectPath:
    vm = await define_vm(cim, name)
    for index, mac in enumerate(macs or (MAC,)):
        nic = (await template(cim, "Msvm_SyntheticEthernetPortSettingData")).updated(
            ElementName=f"eth{index}", Address=mac, StaticMacAddress=True)
        await ok(cim, await add(cim, vm, [nic]))
    if start:
        await ok(cim, await request_state(cim, vm, 2))
    return vm


async def _ip(running: Running, body: dict[str, Any]) -> dict[str, Any]:
    key, answer = await running.answer(GET_IP, body)
    assert key == ANSWER, (key, answer)
    return answer


async def test_answers_the_guests_ipv4_address_in_the_cidr_on_the_nic_of_the_mac(
        running: Running) -> None:
    cim = running.emulator
    await _vm(cim, "i-2-40-VM", MAC, OTHER_MAC)
    cim.faults.guest_addresses("i-2-40-VM", OTHER_MAC, "10.1.1.77/24")
    cim.faults.guest_addresses("i-2-40-VM", MAC, "fe80::5/64", "192.168.9.4/24",
                               "10.1.1.23/24")
    before = cim.round_trips()
    answer = await _ip(running, _asked("i-2-40-VM", windows=True))
    assert (answer["result"], answer["details"]) == (True, "10.1.1.23"), answer
    # the VM, then its NICs and their guest configurations at once
    assert (cim.round_trips() - before).calls == 3
    # no CIDR (an L2 network): the NIC's first IPv4 address
    answer = await _ip(running, _asked("i-2-40-VM", cidr=None))
    assert (answer["result"], answer["details"]) == (True, "192.168.9.4"), answer
    # no MAC: the address of any NIC in the CIDR
    answer = await _ip(running, _asked("i-2-40-VM", cidr="10.1.1.64/26", mac=None))
    assert (answer["result"], answer["details"]) == (True, "10.1.1.77"), answer


async def test_fails_without_clearing_while_the_guest_has_reported_no_address(
        running: Running) -> None:
    cim = running.emulator
    await _vm(cim, "i-2-41-VM")
    answer = await _ip(running, _asked("i-2-41-VM"))
    # never result:true without an address: the MS would clear the NIC's address
    assert answer["result"] is False and answer.get("details"), answer
    assert "reported no IPv4 address in 10.1.1.0/24 on the NIC with MAC " + MAC in \
        answer["details"]
    cim.faults.guest_addresses("i-2-41-VM", MAC, "10.9.9.9/24", "fe80::5/64")
    answer = await _ip(running, _asked("i-2-41-VM"))  # an address, not in the network
    assert answer["result"] is False and "no IPv4 address in 10.1.1.0/24" in answer["details"]
    # a Windows guest's own link-local address (no DHCP server answered) is no lease
    cim.faults.guest_addresses("i-2-41-VM", MAC, "169.254.10.20/16")
    answer = await _ip(running, _asked("i-2-41-VM", cidr=None))
    assert answer["result"] is False and "no IPv4 address on the NIC" in answer["details"]
    cim.faults.guest_addresses("i-2-41-VM", MAC, "10.1.1.30/24")
    answer = await _ip(running, _asked("i-2-41-VM"))
    assert (answer["result"], answer["details"]) == (True, "10.1.1.30"), answer


async def test_fails_naming_the_service_when_the_guest_lacks_integration_services(
        running: Running) -> None:
    cim = running.emulator
    cim.faults.lack_integration_services("i-2-42-VM")
    cim.faults.guest_addresses("i-2-42-VM", MAC, "10.1.1.23/24")  # the guest has one
    await _vm(cim, "i-2-42-VM")
    answer = await _ip(running, _asked("i-2-42-VM"))
    assert answer["result"] is False, answer
    assert "data exchange (KVP) integration service" in answer["details"]


async def test_fails_naming_an_unknown_or_stopped_vm_a_foreign_mac_or_a_bad_cidr(
        running: Running) -> None:
    cim = running.emulator
    await _vm(cim, "i-2-43-VM")
    await _vm(cim, "i-2-44-VM", start=False)
    cases = [
        (_asked("i-2-99-VM"), "unknown VM 'i-2-99-VM'"),
        (_asked("i-2-44-VM"), "VM i-2-44-VM is stopped on this host"),
        (_asked("i-2-43-VM", mac=OTHER_MAC), f"VM i-2-43-VM has no NIC with MAC {OTHER_MAC}"),
        (_asked("i-2-43-VM", cidr="10.1.1/33"), "vmNetworkCidr '10.1.1/33' is not an IPv4"),
        (_asked("i-2-43-VM", mac="02:00:zz"), "02:00:zz"),
        (_asked("i-2-43-VM", cidr=None, mac=None), "names neither a NIC (macAddress) nor"),
    ]
    for body, details in cases:
        answer = await _ip(running, body)
        assert answer["result"] is False and details in answer["details"], (body, answer)


async def test_a_huge_field_is_not_echoed_whole(running: Running) -> None:
    """A value the MS never sends (megabytes of a CIDR, a MAC padded with separators) is
    named in a bounded ``details``, not copied into it."""
    cim = running.emulator
    await _vm(cim, "i-2-45-VM")
    for body in (_asked("i-2-45-VM", cidr="1" * 200_000),
                 _asked("i-2-45-VM", mac=":" * 200_000 + "02004c5f0009")):
        answer = await _ip(running, body)
        assert answer["result"] is False, answer
        assert len(answer["details"]) < 1000, len(answer["details"])
