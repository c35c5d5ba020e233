"""Fixtures shared by every test: an emulated host in a fresh state directory."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.hyperv import host
from tests.s3server import s3_server  # noqa: F401 - the loopback S3 server, per session
from tests.samba import Samba, running_samba


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--contract-local", action="store_true", default=False,
                     help="run tests/contract against this Windows host's own WMI: PyMI and "
                          "WinRM on localhost (instead of the emulator and its WinRM face)")


off_windows = pytest.mark.skipif(sys.platform == "win32",
                                 reason="checks what happens on a machine that is not Windows")


def requires_tool(name: str) -> pytest.MarkDecorator:
    """Skip when a test oracle is missing, except in CI, where its absence is a failure."""
    missing = shutil.which(name) is None and os.environ.get("CI") != "true"
    return pytest.mark.skipif(missing, reason=f"{name} is not installed")


@pytest.fixture(autouse=True)
def _quick_processor_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """A session's first host CPU figure reads the hypervisor's run time twice, a second
    apart (``host.RUN_TIME_SAMPLE_S``); in-process tests wait 20 ms (the emulated
    processors are as busy over any interval; the tests of the interval set their own)."""
    monkeypatch.setattr(host, "RUN_TIME_SAMPLE_S", 0.02)


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., EmulatorConfig]:
    def make(**overrides: object) -> EmulatorConfig:
        values: dict[str, object] = {"state_dir": tmp_path / "state",
                                     "drives": {"C": tmp_path / "C"}}
        values.update(overrides)
        return EmulatorConfig(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def emulator(make_config: Callable[..., EmulatorConfig]) -> AsyncIterator[EmulatorCim]:
    cim = EmulatorCim.open(make_config())
    yield cim
    await cim.close()


@pytest.fixture
async def sync_emulator(
    make_config: Callable[..., EmulatorConfig],
) -> AsyncIterator[EmulatorCim]:
    cim = EmulatorCim.open(make_config(async_jobs=False))
    yield cim
    await cim.close()


@pytest.fixture(scope="session")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Samba]:
    """One real smbd on 127.0.0.1 for the whole run (skipped when smbd cannot run, except
    in CI, where that is a failure)."""
    with running_samba(tmp_path_factory.mktemp("samba")) as server:
        yield server


@pytest.fixture
def own_samba(tmp_path: Path) -> Iterator[Samba]:
    """A real smbd on 127.0.0.1 for one test, which may crash, restart or hang it (skipped
    when smbd cannot run, except in CI)."""
    with running_samba(tmp_path / "own-samba") as server:
        yield server


@pytest.fixture(scope="session")
def admin_share(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Samba]:
    """A real smbd on 127.0.0.1 whose share is called C$, as a Windows host's administrative
    share, and whose second share can hold an image store (skipped when smbd cannot run,
    except in CI)."""
    with running_samba(tmp_path_factory.mktemp("adminshare"), share="C$") as server:
        yield server
