"""backend = "auto" on a Windows machine with the windows extra installed: it opens the
PyMI adapter, whose MI type codes are PyMI's own."""

from __future__ import annotations

from pathlib import Path

import mi

from hyperv_agent.backends import open_backend
from hyperv_agent.cim.api import CIMV2_NAMESPACE
from hyperv_agent.cim.local import MI_TYPES, LocalCim, mi_type_of
from hyperv_agent.cim.localchoice import choose_for_this_host, pymi_problem
from hyperv_agent.cim.pymi import PyMiSession
from hyperv_agent.config import load_config

MI_NAMES = ("BOOLEAN", "UINT8", "SINT8", "UINT16", "SINT16", "UINT32", "SINT32", "UINT64",
            "SINT64", "REAL32", "REAL64", "CHAR16", "DATETIME", "STRING", "REFERENCE",
            "INSTANCE")


def test_pymi_imports_with_the_windows_extra() -> None:
    assert pymi_problem() is None


def test_auto_chooses_local_wmi() -> None:
    choice = choose_for_this_host()
    assert (choice.backend, choice.wsman_url) == ("wmi", None)


def test_the_adapters_mi_type_codes_are_pymis() -> None:
    for name, cim_type in zip(MI_NAMES, MI_TYPES, strict=True):
        assert getattr(mi, f"MI_{name}") == mi_type_of(cim_type, False), name
        assert getattr(mi, f"MI_{name}A") == mi_type_of(cim_type, True), name


async def test_auto_opens_the_pymi_adapter_on_this_hosts_wmi(tmp_path: Path) -> None:
    cim = open_backend(load_config(None, backend="auto", state_dir=tmp_path / "state"))
    try:
        assert isinstance(cim, LocalCim) and isinstance(cim.session, PyMiSession)
        found = await cim.query("SELECT Caption, Version FROM Win32_OperatingSystem",
                                CIMV2_NAMESPACE)
        assert len(found) == 1 and (found[0].string("Caption") or "").startswith("Microsoft")
    finally:
        await cim.close()
