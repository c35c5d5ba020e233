"""Msvm_VirtualSystemMigrationService.ModifyServiceSettings: the host's migration settings
(Msvm_VirtualSystemMigrationServiceSettingData), what Enable-VMMigration,
Disable-VMMigration and Set-VMHost change: whether the host takes part in live migrations
(an incoming move to a host that does not is refused, ``arrival.check_enabled``), how many
run at once, and how they authenticate.

Microsoft's page names the parameter an embedded Msvm_VirtualSystemManagementServiceSettingData;
the settings class's page says its properties change through this method, and that class
is what is taken here (anything else: 32773, at once, as for every parameter
Hyper-V checks before it starts a job). Properties left out keep their values;
AuthenticationType must be 0 (CredSSP) or 1 (Kerberos).
"""

from __future__ import annotations

from collections.abc import Mapping

from hyperv_agent.cim.api import OutValue
from hyperv_agent.emulator.calls import Call, MethodError, handles
from hyperv_agent.emulator.codes import ReturnCode

SERVICE = "Msvm_VirtualSystemMigrationService"
SETTINGS = "Msvm_VirtualSystemMigrationServiceSettingData"
EDITABLE = ("EnableVirtualSystemMigration", "MaximumActiveVirtualSystemMigration",
            "MaximumActiveStorageMigration", "AuthenticationType", "EnableCompression",
            "EnableSmbTransport")
AUTHENTICATION_TYPES = (0, 1)


@handles(SERVICE, "ModifyServiceSettings")
def modify_service_settings(call: Call) -> Mapping[str, OutValue]:
    given = call.embedded("ServiceSettingData")
    if not given.is_a(SETTINGS):
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"ServiceSettingData is a {given.class_def.name}, not a {SETTINGS}",
                          immediate=True)
    authentication = given.get("AuthenticationType")
    if authentication is not None and authentication not in AUTHENTICATION_TYPES:
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"AuthenticationType {authentication} is not 0 (CredSSP) or 1 "
                          "(Kerberos)", immediate=True)
    for record in list(call.host.records(SETTINGS, call.txn)):
        staged = call.txn.edit(record.path)
        assert staged is not None
        for name in EDITABLE:
            value = given.get(name)
            if value is not None:
                staged[name] = value
    return {}
