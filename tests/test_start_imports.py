"""What the agent loads to start: the code of copies, of live migration (the emulated
cluster included) and of certificate making loads with its first use."""

from __future__ import annotations

import json
import subprocess
import sys

LOADED_LATER = (
    "hyperv_agent.hostfs.transfer",
    "hyperv_agent.hostfs.download",
    "hyperv_agent.hostfs.s3",
    "hyperv_agent.hostfs.http",
    "hyperv_agent.emulator.services.migration",
    "hyperv_agent.emulator.cluster",
    "cryptography",
)


def test_serving_modules_leave_copies_migration_and_certificates_unloaded() -> None:
    probe = ("import json, sys; import hyperv_agent.service, hyperv_agent.cli; "
             "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    loaded = set(json.loads(done.stdout))
    assert "hyperv_agent.handlers.copy" in loaded  # the handlers themselves are there
    assert "hyperv_agent.emulator.services.migration_settings" in loaded
    assert loaded.isdisjoint(LOADED_LATER), loaded & set(LOADED_LATER)
