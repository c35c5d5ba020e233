"""The backends the contract runs against, and the helpers its tests share.

By default (any OS, every ``./dev test``): the emulator in-process, the emulator through
its WinRM face (the wsman backend, NTLM over HTTP with message encryption), and the wmi
backend's adapter on a PyMI session serving the emulator. With ``--contract-local`` (the
Windows workflow, on a Windows host): this host's own WMI through PyMI, and its WinRM
service on localhost as the account running the tests. Tests marked ``hyperv`` need
``root\\virtualization\\v2`` and are skipped on a local host without Hyper-V.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from hyperv_agent.backends import local_wsman_settings
from hyperv_agent.cim.api import V2_NAMESPACE, Cim, CimInstance, MethodResult, ObjectPath
from hyperv_agent.cim.local import LocalCim, open_local
from hyperv_agent.cim.localchoice import winrm_url
from hyperv_agent.cim.wsman.backend import WsmanCim
from hyperv_agent.config import load_config
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.errors import CimError, CimInvalidClass
from tests.cim.pymi_fake import FakeMiSession
from tests.emulator.winrm_kit import client, face

EMULATED = ("emulator", "winrm-face", "pymi-fake")
LOCAL = ("pymi", "winrm-localhost")
JOB_WAIT_S = 120.0
COMPLETED = 7


@dataclass
class Backend:
    """One backend under contract: its kind, the seam, and a folder on its host."""

    kind: str
    cim: Cim
    scratch: str  # a Windows folder on the host where a test may create files
    emulator: EmulatorCim | None = None  # the emulated host, for the emulated kinds


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        local = metafunc.config.getoption("--contract-local")
        metafunc.parametrize("backend", LOCAL if local else EMULATED, indirect=True)


@pytest.fixture
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    kind = str(request.param)
    async with _open(kind, tmp_path) as opened:
        if request.node.get_closest_marker("hyperv") and not await _has_hyperv(opened.cim):
            pytest.skip("this host has no root\\virtualization\\v2 (Hyper-V not installed)")
        yield opened


@contextlib.asynccontextmanager
async def _open(kind: str, tmp_path: Path) -> AsyncIterator[Backend]:
    if kind in LOCAL:
        if sys.platform != "win32":
            pytest.fail("--contract-local runs against this Windows host's own WMI")
        cim: Cim = open_local() if kind == "pymi" else WsmanCim(local_wsman_settings(
            load_config(None, backend="wsman"), winrm_url()))
        try:
            yield Backend(kind, cim, str(tmp_path))
        finally:
            await cim.close()
        return
    emulator = EmulatorCim.open(EmulatorConfig(state_dir=tmp_path / "state",
                                               drives={"C": tmp_path / "C"}))
    (tmp_path / "C" / "contract").mkdir()
    try:
        async with _emulated(kind, emulator, tmp_path) as cim:
            yield Backend(kind, cim, "C:\\contract", emulator)
    finally:
        await emulator.close()


@contextlib.asynccontextmanager
async def _emulated(kind: str, emulator: EmulatorCim, tmp_path: Path) -> AsyncIterator[Cim]:
    if kind == "emulator":
        yield emulator
    elif kind == "pymi-fake":
        yield LocalCim(FakeMiSession(emulator, asyncio.get_running_loop()))
    else:
        async with face(emulator, tmp_path / "face") as running:
            wsman = client(running.url)
            try:
                yield wsman
            finally:
                await wsman.close()


async def _has_hyperv(cim: Cim) -> bool:
    try:
        await cim.query("SELECT Name FROM Msvm_VirtualSystemManagementService", V2_NAMESPACE)
    except CimInvalidClass:  # also an unknown namespace
        return False
    return True


# --- helpers --------------------------------------------------------------------------------


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    """Wait until ``check`` holds (a real host takes a moment to let a process go)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "the state did not come within the bound"
        await asyncio.sleep(0.2)


async def completed(cim: Cim, result: MethodResult) -> MethodResult:
    """``result`` of a call that succeeded at once (0) or through a job (4096) that
    completed, waited for within a bound."""
    assert result.return_value in (0, 4096), result
    job_path = result.path("Job")
    if result.return_value == 0 or job_path is None:
        return result
    deadline = time.monotonic() + JOB_WAIT_S
    while True:
        job = await cim.get(job_path)
        state = job.integer("JobState")
        if state == COMPLETED:
            return result
        assert state in (2, 3, 4), (state, job["ErrorCode"], job["ErrorDescription"])
        assert time.monotonic() < deadline, f"job {job_path} still {state}"
        await asyncio.sleep(0.2)


def only(found: list[CimInstance]) -> CimInstance:
    assert len(found) == 1, found
    return found[0]


def path_of(instance: CimInstance) -> ObjectPath:
    assert instance.path is not None, instance
    return instance.path


async def quietly(work: Awaitable[object]) -> None:
    """Clean-up that must not hide the test's own failure."""
    with contextlib.suppress(CimError, AssertionError):
        await work
