"""Opening the CIM backend the configuration names (shared by the CLI and the service)."""

from __future__ import annotations

from pathlib import Path

from hyperv_agent.cim.api import Cim
from hyperv_agent.cim.localchoice import choose_for_this_host
from hyperv_agent.config import AgentConfig
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel
from hyperv_agent.errors import ConfigError

SECONDARY_SHARE = "secondary"
PROBE_TEMPLATE = "template/tmpl/1/1/hyperv-agent-probe.vhdx"


def default_shares(config: AgentConfig) -> dict[str, Path]:
    """Without configured shares the emulated host offers one, ``secondary``, reachable by
    the host's name, its private address and loopback: a folder in the state directory,
    usable as a cifs image store."""
    folder = config.agent.state_dir / "emulator" / "shares" / SECONDARY_SHARE
    servers = {config.emulator.host_name, "127.0.0.1", "localhost"}
    if config.agent.private_ip:
        servers.add(config.agent.private_ip)
    return {f"\\\\{server}\\{SECONDARY_SHARE}": folder for server in sorted(servers)}


def emulator_config(config: AgentConfig) -> EmulatorConfig:
    """The emulated host's settings from the agent configuration."""
    section = config.emulator
    shares = dict(section.shares) or default_shares(config)
    return EmulatorConfig(
        state_dir=config.agent.state_dir / "emulator", host_name=section.host_name,
        cpus=section.cpus, cpu_mhz=section.cpu_mhz, sockets=section.sockets,
        memory_mb=section.memory_mb, switches=section.switches,
        drives=dict(section.drives), shares=shares, async_jobs=section.async_jobs,
        latency=LatencyModel(call_s=section.call_latency_s, job_s=section.job_duration_s),
        guest_shutdown_s=section.guest_shutdown_s, os_version=section.os_version,
        os_caption=section.os_caption, job_retention_s=section.job_retention_s,
    )


def open_backend(config: AgentConfig) -> Cim:
    """The CIM backend the configuration names (``auto``: this Windows host's own)."""
    backend = config.agent.backend
    if backend == "auto":
        backend = choose_for_this_host().backend
    if backend == "emulator":
        return EmulatorCim.open(emulator_config(config))
    raise ConfigError(
        f"backend {backend!r} is not available in this build; use --backend emulator"
    )


def seed_secondary(config: AgentConfig) -> Path | None:
    """Put the probe template on the emulated host's default image store, once; the path
    written, or None when shares are configured (the operator's own)."""
    if config.agent.backend != "emulator" or config.emulator.shares:
        return None
    from hyperv_agent.emulator.template import make_template

    folder = next(iter(default_shares(config).values()))
    target = folder / PROBE_TEMPLATE
    if not target.exists():
        make_template(target)
    return target
