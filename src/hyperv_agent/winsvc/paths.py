"""Names and places of the Windows service: one home for every constant the plan, the
service and the install guide share."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import PureWindowsPath

SERVICE_NAME = "hyperv-agent"
DISPLAY_NAME = "CloudStack Hyper-V Agent (hyperv-agent)"
DESCRIPTION = ("Serves the CloudStack management server on port 8250 and carries out its "
               "commands through Hyper-V's WMI v2 API.")
PYTHON_CLASS = "hyperv_agent.winsvc.framework.AgentService"

# The C# agent's service: "CloudStack Hyper-V Agent" (AgentShell Program.serviceName);
# its earliest releases installed it as "CloudStack ServerResource".
CSHARP_SERVICES = ("CloudStack Hyper-V Agent", "CloudStack ServerResource")
CSHARP_HEARTBEAT_TASKS = "cloudstack-heartbeat-"  # + pool uuid: its scheduled tasks

AGENT_PORT = 8250  # the management server always connects to 8250
FIREWALL_RULE = "hyperv-agent-cloudstack-tcp-8250"
VMMS = "vmms"  # Hyper-V Virtual Machine Management


@dataclass(frozen=True)
class ServicePaths:
    """Where the service keeps its configuration and logs: ``%ProgramData%\\hyperv-agent``."""

    root: PureWindowsPath

    @classmethod
    def on_this_host(cls) -> ServicePaths:
        program_data = os.environ.get("PROGRAMDATA") or "C:\\ProgramData"
        return cls(PureWindowsPath(program_data) / SERVICE_NAME)

    @property
    def config_file(self) -> PureWindowsPath:
        return self.root / "agent.toml"

    @property
    def grants_file(self) -> PureWindowsPath:
        """What ``service install`` granted the service's account, for ``service remove``
        to take back (and nothing else)."""
        return self.root / "granted.json"

    @property
    def logs_dir(self) -> PureWindowsPath:
        return self.root / "logs"

    @property
    def log_file(self) -> PureWindowsPath:
        return self.logs_dir / "agent.log"


def on_windows() -> bool:
    return sys.platform == "win32"
