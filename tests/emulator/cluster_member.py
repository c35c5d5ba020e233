"""An emulated cluster member in a process of its own, for crash tests.

``python -m tests.emulator.cluster_member SETTINGS`` opens the emulated host SETTINGS (JSON)
describes. With ``die_at_commit`` the process exits in the middle of its next write to the
state database, as a killed process would. With ``migrate`` ({"vm": GUID, "to": HOST}) it
moves that VM, waiting for the move's job to end (the move is made then; ``die_at_commit``
is that write), and exits; otherwise it prints ``ready`` and serves until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from tests.emulator.migration_kit import migrate


def config(settings: dict[str, Any]) -> EmulatorConfig:
    return EmulatorConfig(
        state_dir=Path(settings["state_dir"]), host_name=settings["host_name"],
        private_ip=settings["private_ip"], cluster_dir=Path(settings["cluster_dir"]),
        drives={k: Path(v) for k, v in settings["drives"].items()},
        shares={k: Path(v) for k, v in settings["shares"].items()})


async def main(settings: dict[str, Any]) -> None:
    cim = EmulatorCim.open(config(settings))
    move = settings.get("migrate")
    if move is not None:
        vm = ObjectPath.for_keys("Msvm_ComputerSystem", CreationClassName="Msvm_ComputerSystem",
                                 Name=move["vm"])
        job = (await migrate(cim, vm, move["to"])).path("Job")
        if settings.get("die_at_commit"):
            cim.faults.die_during_next_commit()
        while job is not None and (await cim.get(job)).integer("JobState") in (2, 3, 4):
            await asyncio.sleep(0.01)  # the move is made as its job ends
        return
    if settings.get("die_at_commit"):
        cim.faults.die_during_next_commit()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
