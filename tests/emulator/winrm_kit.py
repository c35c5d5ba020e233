"""A WinRM face over an emulated host, for tests: served on 127.0.0.1 on a free port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from hyperv_agent import winrm_face
from hyperv_agent.cim.wsman.backend import WsmanCim
from hyperv_agent.cim.wsman.settings import WsmanSettings
from hyperv_agent.config import load_config
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.winrm.auth import Account

USER = "operator"
PASSWORD = "Kit-Pa55word!"


@contextlib.asynccontextmanager
async def face(emulator: EmulatorCim, state_dir: Path, *, tls: bool = False,
               negotiate: bool = True, basic: bool = True
               ) -> AsyncIterator[winrm_face.RunningFace]:
    """The face; ``negotiate``, ``basic``: whether it offers that authentication."""
    config = load_config(None, state_dir=state_dir, backend="emulator")
    running = await winrm_face.start_face(config, "127.0.0.1", 0, Account(USER, PASSWORD),
                                          tls, emulator, negotiate=negotiate, basic=basic)
    try:
        yield running
    finally:
        await running.runner.cleanup()


def client(url: str, **overrides: object) -> WsmanCim:
    """The wsman backend on ``url``: NTLM over http, Basic over https, TLS unverified."""
    values: dict[str, object] = {
        "url": url, "username": USER, "password": PASSWORD,
        "auth": "basic" if url.startswith("https") else "ntlm", "verify_tls": False}
    values.update(overrides)
    return WsmanCim(WsmanSettings(**values))  # type: ignore[arg-type]
