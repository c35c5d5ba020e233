"""Commands the management server sends to every host of a zone, or about a system VM,
that a Hyper-V host must answer in their own answer class (protocol §5.1): persistent L2
networks and live patching of system VMs."""

from __future__ import annotations

import copy
from typing import Any

from tests.e2e.conftest import Running

SETUP = "com.cloud.agent.api.SetupPersistentNetworkCommand"
CLEANUP = "com.cloud.agent.api.CleanupPersistentNetworkResourceCommand"
PATCH = "com.cloud.agent.api.PatchSystemVmCommand"

#: The NicTO NetworkOrchestrator.createNicTOFromNetworkAndOffering makes of a persistent L2
#: network (no VM, no address), as Gson writes it: nulls left out.
NETWORK_NIC: dict[str, Any] = {
    "deviceId": 0, "networkRateMbps": 200, "defaultNic": False, "pxeDisable": False,
    "dpdkEnabled": False, "broadcastType": "Vlan", "type": "Guest",
    "broadcastUri": "vlan://1234", "isolationUri": "vlan://1234",
    "securityGroupEnabled": False, "name": "External",
}
COMMAND_BASE: dict[str, Any] = {"contextMap": {}, "wait": 0, "bypassHostMaintenance": False}


def _setup(nic: dict[str, Any]) -> dict[str, Any]:
    return {"nic": nic, **COMMAND_BASE}


async def test_setup_persistent_network_succeeds_on_the_labelled_vswitch(
    running: Running,
) -> None:
    key, value = await running.answer(SETUP, _setup(NETWORK_NIC))
    assert (key, value["result"]) == ("com.cloud.agent.api.SetupPersistentNetworkAnswer",
                                      True), value
    assert "External" in value["details"]


async def test_setup_persistent_network_without_a_label_uses_the_external_vswitch(
    running: Running,
) -> None:
    unlabelled = {k: v for k, v in NETWORK_NIC.items() if k != "name"}
    key, value = await running.answer(SETUP, _setup(unlabelled))
    assert (key, value["result"]) == ("com.cloud.agent.api.SetupPersistentNetworkAnswer",
                                      True), value


async def test_setup_persistent_network_fails_naming_a_label_without_a_vswitch(
    running: Running,
) -> None:
    nic = copy.deepcopy(NETWORK_NIC)
    nic["name"] = "Guest-Switch"
    key, value = await running.answer(SETUP, _setup(nic))
    assert key == "com.cloud.agent.api.SetupPersistentNetworkAnswer"
    assert value["result"] is False
    assert "Guest-Switch" in value["details"] and "vlan://1234" in value["details"]


async def test_setup_persistent_network_without_a_nic_fails_in_its_answer_class(
    running: Running,
) -> None:
    key, value = await running.answer(SETUP, dict(COMMAND_BASE))
    assert (key, value["result"]) == ("com.cloud.agent.api.SetupPersistentNetworkAnswer",
                                      False)
    assert "nic" in value["details"]


async def test_cleanup_persistent_network_succeeds(running: Running) -> None:
    # The Java field is nicTO here (nic in the Setup command).
    key, value = await running.answer(CLEANUP, {"nicTO": NETWORK_NIC, **COMMAND_BASE})
    assert (key, value["result"]) == (
        "com.cloud.agent.api.CleanupPersistentNetworkResourceAnswer", True), value


async def test_patch_system_vm_fails_in_its_own_answer_class(running: Running) -> None:
    # ManagementServerImpl.patchSystemVm casts the answer to PatchSystemVmAnswer: an
    # UnsupportedAnswer (HTTP 404) there is a ClassCastException.
    body = {"forced": True,
            "accessDetails": {"router.ip": "10.1.1.5", "router.name": "r-4-VM"},
            **COMMAND_BASE}
    key, value = await running.answer(PATCH, body)
    assert (key, value["result"]) == ("com.cloud.agent.api.PatchSystemVmAnswer", False)
    assert "r-4-VM" in value["details"] and "Hyper-V" in value["details"]
