"""hyperv.inventory: the one table of what the operation layer uses of Hyper-V's WMI.

The table cannot drift from the code: every class constant, every name-like string and
every upper-case keyword argument in ``hyperv/`` (the property, method and parameter names
the modules read, write, query and call) must be in it, and every name in it must exist on
the emulated host, whose schema is written independently from Microsoft's documentation.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.hyperv import inventory, schema
from hyperv_agent.hyperv.inventory import USED, ClassUse
from tests.sessions import hv

PACKAGE = Path(inventory.__file__).parent
#: Modules that define names rather than use them.
DEFINING = {"schema.py", "inventory.py"}
_NAME = re.compile(r"[A-Z][A-Za-z0-9_]*")
#: Name-like strings of hyperv/ that are not WMI names, and why.
NOT_NAMES = {
    "T": "a TypeVar",
    "Backend": "__all__ of hyperv/backend.py",
    "MicrosoftWindows": "a secure boot template's ElementName (a value)",
    "MicrosoftUEFICertificateAuthority": "a secure boot template's ElementName (a value)",
    "TCP": "a value of an extended ACL's Protocol",
    "UDP": "a value of an extended ACL's Protocol",
    "MaximumStorageMigrations": "a parameter of Set-VMHost named in a failure's advice",
    "MaximumVirtualMachineMigrations": "a parameter of Set-VMHost named in a failure's advice",
}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant):
            found.add(id(body[0].value))
    return found


def used_names(source: str) -> Iterator[tuple[str, str]]:
    """(kind, name) of every WMI name ``source`` uses: ``class`` for a ``Class.X``
    constant (its value), ``name`` for a name-like string or upper-case keyword."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == "Class":
            yield "class", getattr(schema.Class, node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings and _NAME.fullmatch(node.value):
            yield "name", node.value
        elif isinstance(node, ast.keyword) and node.arg and _NAME.fullmatch(node.arg):
            yield "name", node.arg


def _known(used: tuple[ClassUse, ...]) -> tuple[set[str], set[str]]:
    classes = {use.name for use in used}
    names = set(classes)
    for use in used:
        names |= set(use.properties) | set(use.optional) | set(use.methods)
        names |= set(use.optional_methods)
        names |= {p for methods in (use.methods, use.optional_methods)
                  for parameters in methods.values() for p in parameters}
    return classes, names


def uncovered(source: str, used: tuple[ClassUse, ...] = USED) -> set[str]:
    classes, names = _known(used)
    return {name for kind, name in used_names(source)
            if (name not in classes if kind == "class" else
                name not in names and name not in NOT_NAMES)}


MODULES = sorted(p for p in PACKAGE.glob("*.py") if p.name not in DEFINING)


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_every_name_the_module_uses_is_in_the_table(module: Path) -> None:
    assert uncovered(module.read_text()) == set()


def test_the_scan_finds_a_name_the_table_lacks_when_code_uses_one() -> None:
    source = '''
async def f(cim, vm):
    """Reads ElementName (a docstring, not a use)."""
    x = vm.string("ThermalZone")
    y = vm.updated(ElementName="a", CoolingMode=3)
    return cim.query(wql.select(Class.SWITCH_SERVICE))
'''
    assert uncovered(source) == {"ThermalZone", "CoolingMode",
                                 schema.Class.SWITCH_SERVICE}


def test_the_scan_reads_every_module_of_the_package() -> None:
    scanned = {p.name for p in MODULES}
    assert {"vms.py", "build.py", "host.py", "jobs.py", "disks.py"} <= scanned
    assert sum(1 for m in MODULES for _ in used_names(m.read_text())) > 200


async def test_the_emulated_host_has_every_name_in_the_table(emulator: EmulatorCim) -> None:
    shortfall = await inventory.missing_on(hv(emulator))
    assert shortfall.missing == () and shortfall.absent_optional == () and shortfall.spared == ()
    assert not shortfall.counters_only()
    assert shortfall.classes_checked == len(USED)
    assert shortfall.names_checked > 200


async def test_missing_names_are_listed_by_class_property_method_and_parameter(
        emulator: EmulatorCim) -> None:
    wanted = (
        ClassUse("Msvm_NoSuchThing"),
        ClassUse(schema.Class.VSSD, properties=("ElementName", "NoSuchProperty"),
                 optional=("NoSuchOption",)),
        ClassUse(schema.Class.VSMS, methods=inventory._methods(
            DefineSystem=("SystemSettings", "NoSuchParameter"), NoSuchMethod=())),
    )
    shortfall = await inventory.missing_on(hv(emulator), wanted)
    assert shortfall.missing == (
        "Msvm_NoSuchThing", "Msvm_VirtualSystemSettingData.NoSuchProperty",
        "Msvm_VirtualSystemManagementService.DefineSystem(NoSuchParameter)",
        "Msvm_VirtualSystemManagementService.NoSuchMethod()")
    assert shortfall.absent_optional == ("Msvm_VirtualSystemSettingData.NoSuchOption",)


async def test_a_method_only_newer_hosts_have_is_reported_absent_when_host_is_2012_r2(
        make_config: Callable[..., EmulatorConfig]) -> None:
    # Msvm_ShutdownComponent.InitiateReboot is new in Windows Server 2016: an older host
    # lacks it, and the agent resets the VM instead, so doctor does not fail for it.
    cim = EmulatorCim.open(make_config(os_version="6.3.9600"))
    try:
        shortfall = await inventory.missing_on(hv(cim))
    finally:
        await cim.close()
    assert shortfall.missing == ()
    assert shortfall.absent_optional == ("Msvm_ShutdownComponent.InitiateReboot()",)


async def test_a_missing_class_the_agent_goes_without_is_listed_with_what_it_costs(
        emulator: EmulatorCim) -> None:
    wanted = (ClassUse("Win32_PerfRawData_NoSuchCounters", "root\\cimv2", counters=True,
                       spared="some statistic reads 0"),
              ClassUse(schema.Class.VSSD, properties=("ElementName",)))
    shortfall = await inventory.missing_on(hv(emulator), wanted)
    assert shortfall.missing == ()
    assert shortfall.spared == (("Win32_PerfRawData_NoSuchCounters", "some statistic reads 0"),)


def test_the_performance_counter_sets_are_the_win32_perf_classes_the_agent_reads() -> None:
    perf = {use.name for use in USED if use.name.startswith("Win32_Perf")}
    assert len(perf) == 4 and perf == inventory.COUNTER_SETS
    # the agent goes without the network and disk counter sets, not the processor's
    assert {use.name for use in USED if use.spared} == {
        schema.Class.NIC_PERF, schema.Class.DISK_PERF, schema.Class.VNIC_PERF}
    counters = inventory.Shortfall(1, 1, (f"{schema.Class.NIC_PERF}.BytesSentPersec",), (),
                                   ((schema.Class.DISK_PERF, "VM disk statistics read 0"),))
    assert counters.counters_only()
    mixed = inventory.Shortfall(1, 1, (schema.Class.VSSD,), (),
                                ((schema.Class.DISK_PERF, "VM disk statistics read 0"),))
    assert not mixed.counters_only()
