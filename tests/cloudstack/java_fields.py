"""The fields CloudStack's Java classes serialise (``java_fields.json``, written by
``make_java_fields.py`` from CloudStack 4.22), and which model stands for which class."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.answers import ANSWER_TYPES
from hyperv_agent.cloudstack.commands import COMMAND_TYPES
from hyperv_agent.cloudstack.objects import (
    S3TO,
    DiskProfile,
    DiskTO,
    HostStatsEntry,
    HostTO,
    HostVmStateReportEntry,
    IpPortAndProto,
    NetworkTO,
    NfsTO,
    NicDetails,
    NicTO,
    PhysicalNetworkSetupInfo,
    PrimaryDataStoreTO,
    StorageFilerTO,
    StoragePoolInfo,
    SwiftTO,
    TemplateObjectTO,
    VirtualMachineTO,
    VmDiskStatsEntry,
    VmNetworkStatsEntry,
    VmStatsEntry,
    VolumeFilerPair,
    VolumeObjectTO,
    VolumeStatsEntry,
    VolumeTO,
)

FIXTURE = Path(__file__).parent / "java_fields.json"

_TO = "com.cloud.agent.api.to."
TRANSFER_OBJECTS: dict[type[BaseModel], str] = {
    VirtualMachineTO: _TO + "VirtualMachineTO",
    DiskTO: _TO + "DiskTO",
    NicTO: _TO + "NicTO",
    NetworkTO: _TO + "NetworkTO",
    HostTO: _TO + "HostTO",
    StorageFilerTO: _TO + "StorageFilerTO",
    VolumeTO: _TO + "VolumeTO",
    NfsTO: names.NFS_TO,
    S3TO: names.S3_TO,
    SwiftTO: names.SWIFT_TO,
    PrimaryDataStoreTO: names.PRIMARY_DATA_STORE_TO,
    VolumeObjectTO: names.VOLUME_OBJECT_TO,
    TemplateObjectTO: names.TEMPLATE_OBJECT_TO,
    DiskProfile: "com.cloud.vm.DiskProfile",
    StoragePoolInfo: "com.cloud.agent.api.StoragePoolInfo",
    HostStatsEntry: "com.cloud.agent.api.HostStatsEntry",
    VmStatsEntry: "com.cloud.agent.api.VmStatsEntry",
    VmDiskStatsEntry: "com.cloud.agent.api.VmDiskStatsEntry",
    VmNetworkStatsEntry: "com.cloud.agent.api.VmNetworkStatsEntry",
    VolumeStatsEntry: "com.cloud.agent.api.VolumeStatsEntry",
    HostVmStateReportEntry: "com.cloud.agent.api.HostVmStateReportEntry",
    NicDetails: "com.cloud.agent.api.GetVmConfigAnswer$NicDetails",
    VolumeFilerPair: "com.cloud.utils.Pair",
    PhysicalNetworkSetupInfo: "com.cloud.network.PhysicalNetworkSetupInfo",
    IpPortAndProto: "com.cloud.agent.api.SecurityGroupRulesCmd$IpPortAndProto",
}

#: Every model that stands for a Java class, by that class (the state report's pseudo
#: command has no Java class).
MODELS: dict[str, type[BaseModel]] = {
    **{fqcn: cls for fqcn, cls in COMMAND_TYPES.items()
       if fqcn != names.HOST_VM_STATE_REPORT_COMMAND},
    **ANSWER_TYPES,
    **{fqcn: cls for cls, fqcn in TRANSFER_OBJECTS.items()},
}


@cache
def _classes() -> dict[str, Any]:
    classes: dict[str, Any] = json.loads(FIXTURE.read_text())["classes"]
    return classes


def java_fields(fqcn: str) -> dict[str, str]:
    """Every field Gson serialises for ``fqcn``, superclasses included: name -> JSON kind
    (integer, number, boolean, string, enum, object, array, wrapped, any)."""
    fields: dict[str, str] = {}
    current: str | None = fqcn
    while current is not None and current in _classes():
        declared = _classes()[current]
        fields |= {name: field["kind"] for name, field in declared["fields"].items()}
        current = declared["extends"]
    return fields


def java_types(fqcn: str) -> dict[str, str]:
    """Every field Gson serialises for ``fqcn``, superclasses included: name -> Java type
    (``int``, ``Long``, ``String``, ...)."""
    types: dict[str, str] = {}
    current: str | None = fqcn
    while current is not None and current in _classes():
        declared = _classes()[current]
        types |= {name: field["type"] for name, field in declared["fields"].items()}
        current = declared["extends"]
    return types


def model_names(model: type[BaseModel]) -> set[str]:
    """The JSON names a model reads and writes: its fields' aliases, and the extra names
    its serialiser writes (``LEGACY_NAMES``)."""
    declared = {info.alias or name for name, info in model.model_fields.items()}
    return declared | set(getattr(model, "LEGACY_NAMES", ()))
