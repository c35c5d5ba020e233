"""Opening the CIM backend the configuration names (shared by the CLI and the service)."""

from __future__ import annotations

from hyperv_agent.cim.api import Cim
from hyperv_agent.config import AgentConfig
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel
from hyperv_agent.errors import ConfigError


def emulator_config(config: AgentConfig) -> EmulatorConfig:
    """The emulated host's settings from the agent configuration."""
    section = config.emulator
    return EmulatorConfig(
        state_dir=config.agent.state_dir / "emulator", host_name=section.host_name,
        cpus=section.cpus, cpu_mhz=section.cpu_mhz, sockets=section.sockets,
        memory_mb=section.memory_mb, switches=section.switches,
        drives=dict(section.drives), shares=dict(section.shares), async_jobs=section.async_jobs,
        latency=LatencyModel(call_s=section.call_latency_s, job_s=section.job_duration_s),
        guest_shutdown_s=section.guest_shutdown_s,
    )


def open_backend(config: AgentConfig) -> Cim:
    """The CIM backend the configuration names."""
    if config.agent.backend == "emulator":
        return EmulatorCim.open(emulator_config(config))
    raise ConfigError(
        f"backend {config.agent.backend!r} is not available in this build; "
        "use --backend emulator"
    )
