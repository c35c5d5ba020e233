"""KVP exchange: Msvm_VirtualSystemManagementService.Add/Modify/RemoveKvpItems.

Host items live on the VM's Msvm_KvpExchangeComponentSettingData as embedded
Msvm_KvpExchangeDataItem texts: HostExchangeItems (Source 0) and HostOnlyItems (Source 4).
Add fails on an existing key, Modify and Remove on a missing one; a value longer than
the limit is refused, as Hyper-V refuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from hyperv_agent.cim import cimxml
from hyperv_agent.cim.api import CimProperty, OutValue
from hyperv_agent.emulator import codes, model
from hyperv_agent.emulator.calls import Call, Embedded, MethodError, handles, instance_of
from hyperv_agent.emulator.codes import ReturnCode
from hyperv_agent.emulator.store import Record

VSMS = "Msvm_VirtualSystemManagementService"
_LISTS = {0: "HostExchangeItems", 4: "HostOnlyItems"}
Items = dict[str, str]  # name -> data
Change = Callable[[Items, str, str], None]


def _add(items: Items, name: str, data: str) -> None:
    if name in items:
        raise MethodError(codes.KVP_KEY_EXISTS, f"the key {name!r} already exists")
    items[name] = data


def _modify(items: Items, name: str, data: str) -> None:
    if name not in items:
        raise MethodError(codes.KVP_KEY_MISSING, f"no key {name!r}")
    items[name] = data


def _remove(items: Items, name: str, data: str) -> None:
    if name not in items:
        raise MethodError(codes.KVP_KEY_MISSING, f"no key {name!r}")
    del items[name]


@handles(VSMS, "AddKvpItems")
def add_kvp_items(call: Call) -> Mapping[str, OutValue]:
    return _change(call, _add)


@handles(VSMS, "ModifyKvpItems")
def modify_kvp_items(call: Call) -> Mapping[str, OutValue]:
    return _change(call, _modify)


@handles(VSMS, "RemoveKvpItems")
def remove_kvp_items(call: Call) -> Mapping[str, OutValue]:
    return _change(call, _remove)


def _change(call: Call, change: Change) -> Mapping[str, OutValue]:
    vm = call.require(call.path("TargetSystem"), "virtual machine")
    if not model.is_vm(vm):
        raise MethodError(ReturnCode.INVALID_PARAMETER, f"{vm.path} is not a VM", immediate=True)
    items = call.embedded_list("DataItems")
    if len(items) > codes.KVP_ITEMS_PER_CALL:
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"at most {codes.KVP_ITEMS_PER_CALL} items per call", immediate=True)
    settings = _settings(call, str(vm["Name"]))
    for item in items:
        _apply(call, settings, item, change)
    return {}


def _settings(call: Call, guid: str) -> Record:
    for record in model.device_records(call.txn, guid):
        if record.class_def.name == "Msvm_KvpExchangeComponentSettingData":
            staged = call.txn.edit(record.path)
            assert staged is not None
            return staged
    raise MethodError(ReturnCode.NOT_SUPPORTED, "the VM has no KVP exchange component")


def _apply(call: Call, settings: Record, item: Embedded, change: Change) -> None:
    if item.class_def.name != "Msvm_KvpExchangeDataItem":
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"DataItems holds a {item.class_def.name}", immediate=True)
    name, data = item.text("Name") or "", item.text("Data") or ""
    source = item.integer("Source") or 0
    if source not in _LISTS or not name:
        raise MethodError(ReturnCode.INVALID_PARAMETER, f"bad KVP item {name!r} (Source {source})")
    if _utf16_units(name) > codes.KVP_NAME_MAX_CHARS or (
        _utf16_units(data) > codes.KVP_DATA_MAX_CHARS
    ):
        raise MethodError(codes.KVP_VALUE_TOO_LONG,
                          f"KVP key or value too long: key {len(name)} chars, value {len(data)} "
                          f"chars (limits {codes.KVP_NAME_MAX_CHARS}/{codes.KVP_DATA_MAX_CHARS})")
    entries = _read(settings, _LISTS[source])
    change(entries, name, data)
    settings[_LISTS[source]] = tuple(_item_text(call, n, d, source) for n, d in entries.items())


def _utf16_units(text: str) -> int:
    """The length WMI measures a string in: UTF-16 code units (a character outside the
    Basic Multilingual Plane counts twice)."""
    return len(text.encode("utf-16-le")) // 2


def _read(settings: Record, list_name: str) -> Items:
    entries: Items = {}
    texts = settings[list_name]
    for text in texts if isinstance(texts, tuple) else ():
        _, props = cimxml.read_instance(str(text))
        values = {p.name: p.value for p in props}
        entries[str(values.get("Name"))] = str(values.get("Data") or "")
    return entries


def _item_text(call: Call, name: str, data: str, source: int) -> str:
    record = call.host.new_record("Msvm_KvpExchangeDataItem", Name=name, Data=data,
                                  Source=source, Caption="", Description="", ElementName="")
    instance = instance_of(record)
    assert all(isinstance(p, CimProperty) for p in instance)
    return cimxml.write_instance(instance)
