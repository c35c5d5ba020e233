"""Opening the CIM backend the configuration names (shared by the CLI and the service)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hyperv_agent.cim.api import Cim
from hyperv_agent.cim.localchoice import LocalChoice, choose_for_this_host
from hyperv_agent.config import AgentConfig
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel
from hyperv_agent.emulator.lab import open_emulator
from hyperv_agent.errors import ConfigError

if TYPE_CHECKING:
    from hyperv_agent.cim.local import MiSession
    from hyperv_agent.cim.wsman.settings import WsmanSettings
    from hyperv_agent.hostfs.api import HostFiles

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
        lab_missing_classes=frozenset(section.lab.missing_classes),
        lab_free_bytes=dict(section.lab.free_bytes),
        lab_failing_jobs=dict(section.lab.failing_jobs),
        cluster_dir=section.cluster_dir,
        private_ip=config.agent.private_ip or EmulatorConfig.private_ip,
    )


def open_backend(config: AgentConfig,
                 choose: Callable[[], LocalChoice] = choose_for_this_host,
                 mi_session: Callable[[], MiSession] | None = None) -> Cim:
    """The CIM backend the configuration names. ``auto``: this Windows host's own, as
    ``choose`` finds it: local WMI through PyMI (or the ``mi_session`` given), else
    WinRM on localhost as the account the agent runs as."""
    backend = config.agent.backend
    choice = choose() if backend == "auto" else None
    if choice is not None:
        backend = choice.backend
    if backend == "emulator":
        return open_emulator(emulator_config(config))
    if backend == "wsman":
        from hyperv_agent.cim.wsman.backend import WsmanCim  # pypsrp: loaded only when used

        if choice is not None and choice.wsman_url:
            return WsmanCim(local_wsman_settings(config, choice.wsman_url))
        return WsmanCim(wsman_settings(config))
    from hyperv_agent.cim.local import open_local

    return open_local(mi_session() if mi_session is not None else None)


def local_wsman_settings(config: AgentConfig, url: str) -> WsmanSettings:
    """This host's own WinRM listener at ``url``, as the account the agent runs as
    (Negotiate without a user name: the service account's logon); the limits of
    ``[wsman]`` still apply."""
    from hyperv_agent.cim.wsman.settings import WsmanSettings

    section = config.wsman
    return WsmanSettings(
        url=url, auth="negotiate", operation_timeout_s=section.operation_timeout_s,
        max_envelope_bytes=section.max_envelope_bytes,
        max_concurrent_requests=section.max_concurrent_requests)


def wsman_settings(config: AgentConfig) -> WsmanSettings:
    """The WinRM endpoint of ``[wsman]``; ConfigError when it names none."""
    from hyperv_agent.cim.wsman.settings import WsmanSettings

    section = config.wsman
    if not section.url:
        raise ConfigError("backend wsman needs the host's WinRM URL: [wsman] url or "
                          "--wsman-url (http(s)://host:port/wsman)")
    return WsmanSettings(
        url=section.url, username=section.username, password=section.resolved_password(),
        auth=section.auth, verify_tls=section.verify_tls, ca_file=section.ca_file,
        operation_timeout_s=section.operation_timeout_s,
        max_envelope_bytes=section.max_envelope_bytes,
        max_concurrent_requests=section.max_concurrent_requests,
        certificate_pem=section.certificate_pem,
        certificate_key_pem=section.certificate_key_pem)


def remote_files(config: AgentConfig) -> HostFiles:
    """The files of the host a wsman backend drives. With ``[emulator.drives]`` or
    ``[emulator.shares]`` (the configuration an emulator's WinRM face was started with),
    its mapped folders, reached from this process; otherwise the host's administrative
    shares (``\\\\host\\C$``) over SMB with the WinRM account, as on a real host."""
    from hyperv_agent.emulator.files import EmulatedFiles
    from hyperv_agent.emulator.paths import HostPaths

    if config.emulator.drives or config.emulator.shares:
        return EmulatedFiles(HostPaths(emulator_config(config)))
    from hyperv_agent.hostfs.adminshares import AdminShareFiles
    from hyperv_agent.hostfs.locations import Credentials
    from hyperv_agent.hostfs.smb import SmbFiles

    settings = wsman_settings(config)
    credentials = None
    if settings.username:
        domain, _, user = settings.username.rpartition("\\")
        credentials = Credentials(user, domain, settings.password or "")
    return AdminShareFiles(SmbFiles(port=config.agent.smb_port), settings.host, credentials)


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
