"""Opening the host the configuration names: the one place the agent is wired to a backend.

Every command that drives a host opens it here: ``serve`` (``service.build_agent``), the
Windows service (``winsvc.runner``), ``doctor``, the ``cim`` diagnostics and the emulator's
WinRM face. ``open_host`` returns one bundle, ``OpenedHost``: the Hyper-V session (the
backend, wrapped last in the round-trip counter), the host's files, and the emulated host
when it runs in this process, so no caller looks inside a backend to find out which it is,
and whether the host is the machine the agent runs on (``on_this_machine``).
The emulated host's settings come from ``[emulator]`` (whose defaults are the emulator's
own, ``emulator.config.EmulatorConfig``), with the default image store added here.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING

from hyperv_agent.cim.api import Cim
from hyperv_agent.cim.counting import CountingCim
from hyperv_agent.cim.localchoice import LocalChoice, choose_for_this_host
from hyperv_agent.config import AgentConfig
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import (
    EmulatorConfig,
    LatencyModel,
    MigrationSettings,
    ProcessorModel,
)
from hyperv_agent.emulator.lab import open_emulator
from hyperv_agent.errors import ConfigError
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.hyperv.session import HyperV

if TYPE_CHECKING:
    from hyperv_agent.cim.local import MiSession
    from hyperv_agent.cim.wsman.backend import WsmanCim
    from hyperv_agent.cim.wsman.settings import WsmanSettings

SECONDARY_SHARE = "secondary"
Chooser = Callable[[], LocalChoice]


@dataclass
class OpenedHost:
    """A host as the configuration names it, opened (see the module notes)."""

    hyperv: HyperV  # the session; its ``cim`` counts round trips
    files: HostFiles
    emulator: EmulatorCim | None = None  # the emulated host, when it runs in this process
    wsman: WsmanCim | None = None  # the WinRM backend, when the host is reached over WinRM
    scratch: Path | None = None  # a throwaway state directory, removed on close
    #: The host is the machine this process runs on: local WMI, the WinRM listener on
    #: localhost that ``auto`` chose, or the emulated host in this process. Such a host
    #: runs while the agent does, even when its management service does not answer
    #: (``handlers.hostcheck``); a host reached over WinRM as ``[wsman]`` names it may not.
    on_this_machine: bool = False

    @property
    def cim(self) -> Cim:
        return self.hyperv.cim

    async def close(self) -> None:
        """Close the Hyper-V session, then log off the file layer's SMB sessions (in a
        worker thread: a server that does not answer the logoff is cut off after
        ``hostfs.smb.CLOSE_GRACE_S``), so the servers do not keep them until their own
        timeout."""
        try:
            await self.hyperv.close()
        finally:
            try:
                await asyncio.to_thread(self.files.close)
            finally:
                if self.scratch is not None:
                    shutil.rmtree(self.scratch, ignore_errors=True)


def open_host(config: AgentConfig, choose: Chooser = choose_for_this_host,
              mi_session: Callable[[], MiSession] | None = None, *,
              leave_no_trace: bool = False, read_if_held: bool = False) -> OpenedHost:
    """The host ``config`` names, opened (``open_backend`` says which backend). With
    ``leave_no_trace`` (a diagnostic), an emulated host that does not exist yet is opened
    as a fresh one in a temporary folder, removed on close, instead of being created in
    the state directory. With ``read_if_held``, an emulated host another process holds
    is read as it stored it, and changed in memory only (``EmulatorConfig.read_if_held``)."""
    # The files of a host outside this process are known before it is opened: a
    # configuration that cannot reach them (``remote_files``) stops here, nothing to close.
    in_process = config.agent.backend == "emulator"
    early = None if in_process else host_files(config)
    scratch = None
    if leave_no_trace and in_process and not _emulator_exists(config):
        scratch = Path(tempfile.mkdtemp(prefix="hyperv-agent-"))
    try:
        opened = _open(config, choose, mi_session, scratch, read_if_held)
    except BaseException:
        if early is not None:
            early.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    files = early if early is not None else host_files(config, opened.emulator)
    return OpenedHost(HyperV(CountingCim(opened.backend)), files, opened.emulator,
                      opened.wsman, scratch, opened.on_this_machine)


def open_backend(config: AgentConfig, choose: Chooser = choose_for_this_host,
                 mi_session: Callable[[], MiSession] | None = None) -> Cim:
    """The CIM backend the configuration names, uncounted. ``auto``: this Windows host's
    own, as ``choose`` finds it: local WMI through PyMI (or the ``mi_session`` given), else
    WinRM on localhost as the account the agent runs as."""
    return _open(config, choose, mi_session, None).backend


@dataclass(frozen=True)
class _Opened:
    backend: Cim
    emulator: EmulatorCim | None = None
    wsman: WsmanCim | None = None
    on_this_machine: bool = True  # see OpenedHost


def _open(config: AgentConfig, choose: Chooser, mi_session: Callable[[], MiSession] | None,
          scratch: Path | None, read_if_held: bool = False) -> _Opened:
    choice = choose() if config.agent.backend == "auto" else None
    backend = _backend_name(config, choice)
    if backend == "emulator":
        host = replace(emulator_config(config), read_if_held=read_if_held)
        emulator = open_emulator(host if scratch is None else _in_scratch(host, scratch))
        return _Opened(emulator, emulator=emulator)
    if backend == "wsman":
        from hyperv_agent.cim.wsman.backend import WsmanCim  # pypsrp: loaded only when used

        url = choice.wsman_url if choice is not None else None
        winrm = WsmanCim(local_wsman_settings(config, url) if url else wsman_settings(config))
        return _Opened(winrm, wsman=winrm, on_this_machine=url is not None)
    from hyperv_agent.cim.local import open_local

    return _Opened(open_local(mi_session() if mi_session is not None else None))


def _backend_name(config: AgentConfig, choice: LocalChoice | None) -> str:
    return choice.backend if choice is not None else config.agent.backend


# --- the emulated host ----------------------------------------------------------------------


def emulator_config(config: AgentConfig) -> EmulatorConfig:
    """The emulated host's settings from the agent configuration."""
    section = config.emulator
    shares = dict(section.shares) or default_shares(config)
    return EmulatorConfig(
        state_dir=config.agent.state_dir / "emulator",
        host_name=section.host_name, cpus=section.cpus, cpu_mhz=section.cpu_mhz,
        sockets=section.sockets, memory_mb=section.memory_mb, switches=section.switches,
        switch_types=dict(section.switch_types),
        drives=dict(section.drives), shares=shares, async_jobs=section.async_jobs,
        latency=LatencyModel(call_s=section.call_latency_s, job_s=section.job_duration_s),
        guest_shutdown_s=section.guest_shutdown_s, os_version=section.os_version,
        os_caption=section.os_caption, job_retention_s=section.job_retention_s,
        lab_missing_classes=frozenset(section.lab.missing_classes),
        lab_free_bytes=dict(section.lab.free_bytes),
        lab_failing_jobs=dict(section.lab.failing_jobs),
        cluster_dir=section.cluster_dir,
        disk_counter_names=section.disk_counter_names,
        migration=MigrationSettings(
            enabled=section.migration.enabled,
            kerberos=section.migration.authentication == "Kerberos",
            simultaneous=section.migration.simultaneous, networks=section.migration.networks),
        processor=ProcessorModel(vendor=section.processor.vendor,
                                 feature_level=section.processor.feature_level),
        private_ip=config.agent.private_ip or EmulatorConfig.private_ip,
    )


def default_shares(config: AgentConfig) -> dict[str, Path]:
    """Without configured shares the emulated host offers one, ``secondary``, reachable by
    the host's name, its private address and loopback: a folder in the state directory,
    usable as a cifs image store."""
    folder = config.agent.state_dir / "emulator" / "shares" / SECONDARY_SHARE
    servers = {config.emulator.host_name, "127.0.0.1", "localhost"}
    if config.agent.private_ip:
        servers.add(config.agent.private_ip)
    return {f"\\\\{server}\\{SECONDARY_SHARE}": folder for server in sorted(servers)}


def served_emulator_config(config: AgentConfig) -> AgentConfig:
    """``config`` with the emulated host's drive C and shares written out: what an agent
    in another process needs to reach that host's files."""
    host = emulator_config(config)
    emulator = config.emulator.model_copy(update={
        "drives": {"C": host.drive_root("C"), **config.emulator.drives},
        "shares": dict(host.shares)})
    return config.model_copy(update={"emulator": emulator})


def open_emulated_host(config: AgentConfig) -> EmulatorCim:
    """The emulated host of ``config``, opened by itself (to be served to others), with
    the probe template on its default image store."""
    prepare_state(config)
    return open_emulator(emulator_config(config))


def _in_scratch(host: EmulatorConfig, scratch: Path) -> EmulatorConfig:
    """``host`` kept in ``scratch``, not persisted: its state, and its drive C unless that
    folder exists already."""
    drive_c = host.drive_root("C")
    drives = dict(host.drives)
    if not drive_c.is_dir():
        drives = {letter: folder for letter, folder in drives.items()
                  if letter.rstrip(":").upper() != "C"}
    return replace(host, state_dir=scratch, drives=drives, persist=False)


def _emulator_exists(config: AgentConfig) -> bool:
    return (config.agent.state_dir / "emulator" / "emulator.sqlite3").exists()


# --- before serving -------------------------------------------------------------------------


def prepare_state(config: AgentConfig) -> None:
    """Make sure the state directory can be written (ConfigError naming ``state_dir``
    otherwise) and the folders of ``[emulator.shares]`` can be read (``check_shares``),
    then put the probe template on the emulated host's default image store, once
    (``seed_secondary``)."""
    check_state_dir(config.agent.state_dir)
    check_shares(config)
    seed_secondary(config)


def check_state_dir(state_dir: Path) -> None:
    """Create ``state_dir`` if needed and check it takes a file; ConfigError naming the
    setting when it cannot."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=state_dir):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(f"[agent] state_dir {state_dir} cannot be used: {reason} "
                          "(set state_dir, --state-dir or HYPERV_AGENT_STATE_DIR to a "
                          "folder this account can write)") from None


def check_shares(config: AgentConfig) -> None:
    """Every folder ``[emulator.shares]`` maps a share to, when this process reaches the
    emulated host's files through them (backend emulator or wsman), is a folder that can
    be read; ConfigError naming the setting, the share and the folder otherwise. A share is
    not made when its folder is missing, as Windows shares only a folder that exists: a
    mistyped folder would be an empty image store or pool, met only at the first command
    that reads it (a template "not found")."""
    if config.agent.backend not in ("emulator", "wsman"):
        return
    for unc, folder in config.emulator.shares.items():
        try:
            with os.scandir(folder):
                pass
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise ConfigError(f"[emulator.shares] '{unc}' = {folder} cannot be used: "
                              f"{reason} (a share is a folder that exists: make it, or map "
                              "the share to the folder that holds it)") from None


def seed_secondary(config: AgentConfig) -> Path | None:
    """Put the probe template on the emulated host's default image store, once; the path
    written, or None when shares are configured (the operator's own)."""
    if config.agent.backend != "emulator" or config.emulator.shares:
        return None
    from hyperv_agent.emulator.template import make_template
    from hyperv_agent.probe_deploy import DEFAULT_TEMPLATE

    folder = next(iter(default_shares(config).values()))
    target = folder / DEFAULT_TEMPLATE
    if not target.exists():
        make_template(target)
    return target


# --- the host's files -----------------------------------------------------------------------


def host_files(config: AgentConfig, emulator: EmulatorCim | None = None) -> HostFiles:
    """File access on the host: the emulated host's mapped folders when it runs here,
    the remote host's administrative shares (backend wsman), else this host's own; shares
    on ``smb_servers`` are reached through smbprotocol on ``smb_port``."""
    base = _base_files(config, emulator)
    servers = config.agent.smb_routed_servers
    if not servers:
        return base
    from hyperv_agent.hostfs.locations import account
    from hyperv_agent.hostfs.routed import RoutedFiles  # smbprotocol: loaded only when used
    from hyperv_agent.hostfs.smb import SmbFiles

    # read as a pool's details are: a UPN or DOMAIN\user names its own domain
    accounts = {server: account(given.username, given.secret(), given.domain, server)
                for server, given in config.agent.smb_credentials.items()}
    return RoutedFiles(base, SmbFiles(port=config.agent.smb_port, configured=accounts), servers)


def _base_files(config: AgentConfig, emulator: EmulatorCim | None) -> HostFiles:
    if emulator is not None:
        from hyperv_agent.emulator.files import EmulatedFiles

        return EmulatedFiles(emulator.host)
    if config.agent.backend == "wsman":
        return remote_files(config)
    from hyperv_agent.hostfs.local import LocalFiles

    return LocalFiles()


def remote_files(config: AgentConfig) -> HostFiles:
    """The files of the host a wsman backend drives. With ``[emulator.drives]`` or
    ``[emulator.shares]`` (the configuration an emulator's WinRM face was started with),
    its mapped folders, reached from this process (``mapped_host``); otherwise the host's
    administrative shares (``\\\\host\\C$``) over SMB with the WinRM account, as on a
    real host."""
    mapped = mapped_host(config)
    if mapped is not None:
        from hyperv_agent.emulator.files import EmulatedFiles
        from hyperv_agent.emulator.paths import HostPaths

        return EmulatedFiles(HostPaths(mapped))
    from hyperv_agent.hostfs.adminshares import AdminShareFiles
    from hyperv_agent.hostfs.locations import Credentials
    from hyperv_agent.hostfs.smb import SmbFiles

    settings = wsman_settings(config)
    credentials = None
    if settings.username:
        domain, _, user = settings.username.rpartition("\\")
        credentials = Credentials(user, domain, settings.password or "")
    return AdminShareFiles(SmbFiles(port=config.agent.smb_port), settings.host, credentials)


def mapped_host(config: AgentConfig) -> EmulatorConfig | None:
    """The emulated host whose folders a wsman backend reaches from this process, as
    ``[emulator.drives]`` and ``[emulator.shares]`` map them; None when they map nothing
    (the host's administrative shares are used).

    What those tables leave out would default to folders of *this* process's state
    directory, which the emulated host (served by ``emulator wsman`` from its own) never
    sees: the agent would write volumes where the host does not look, and a command would
    fail later, misleadingly. So the tables must map every drive the agent's paths name
    (C, and those of ``local_storage_path``, ``local_secondary_storage_path`` and the config
    drive cache) and at least one share, the image store's (unless ``smb_servers`` reaches
    it over SMB);
    ConfigError names what is missing. The one exception is the configuration's own
    served host (``[emulator] winrm``, its state in this ``state_dir``): its defaults are
    the folders that host uses."""
    section = config.emulator
    if not (section.drives or section.shares):
        return None
    host = emulator_config(config)
    if section.winrm and _emulator_exists(config):
        return host
    mapped = {letter.rstrip(":").upper() for letter in section.drives}
    missing = [f"drive {letter} ([emulator.drives] {letter} = the folder the emulated "
               "host keeps it in)" for letter in _drives_named(config) if letter not in mapped]
    if not section.shares and not config.agent.smb_routed_servers:
        missing.append("the image store's share ([emulator.shares] '\\\\server\\share' = "
                       "its folder, or its server in [agent] smb_servers to reach it over SMB)")
    if missing:
        raise ConfigError(
            "backend wsman reaches the emulated host's files through the folders "
            "[emulator.drives] and [emulator.shares] map, and they map none for "
            f"{', nor for '.join(missing)}: left out, it would be a folder of this agent's "
            f"state directory ({config.agent.state_dir}), which the emulated host never "
            "sees. Map it as the configuration `emulator wsman` was started with does, or "
            "remove both tables to reach the host's administrative shares")
    return replace(host, shares=dict(section.shares))  # no default share of our own


def _drives_named(config: AgentConfig) -> list[str]:
    """The drive letters the agent's own paths name: C (the host's system drive) and
    those of the local pool, the legacy secondary folder and the config drive cache."""
    letters = ["C"]
    for path in (config.agent.local_storage_path, config.agent.local_secondary_storage_path,
                 config.agent.config_drive_cache):
        drive = PureWindowsPath(path).drive
        if len(drive) == 2 and drive[1] == ":" and drive[0].upper() not in letters:
            letters.append(drive[0].upper())
    return letters


# --- WinRM ----------------------------------------------------------------------------------


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
    settings = WsmanSettings(
        url=section.url, username=section.username, password=section.resolved_password(),
        auth=section.auth, verify_tls=section.verify_tls, ca_file=section.ca_file,
        operation_timeout_s=section.operation_timeout_s,
        max_envelope_bytes=section.max_envelope_bytes,
        max_concurrent_requests=section.max_concurrent_requests,
        certificate_pem=section.certificate_pem,
        certificate_key_pem=section.certificate_key_pem)
    _check_tls_files(settings)
    return settings


def _check_tls_files(settings: WsmanSettings) -> None:
    """The CA file and client certificate the endpoint's TLS uses load; ConfigError naming
    the setting otherwise. They are first read at the first request to the host: a file
    missing or of another kind would have let the agent start, then failed every command
    from the management server (and a diagnostic) with a traceback."""
    import ssl

    from hyperv_agent import tls

    if not settings.ssl:
        return  # over http neither is used
    if settings.ca_file is not None and settings.verify_tls:  # otherwise it is not read
        try:
            ssl.create_default_context(cafile=settings.ca_file)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"[wsman] ca_file {settings.ca_file} cannot be used: "
                              f"{tls.reason(error)} (give the PEM certificate of the CA, "
                              "or the host's own, of its WinRM listener)") from None
    if settings.auth == "certificate":
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(
                settings.certificate_pem or "", settings.certificate_key_pem,
                password=tls.refuse_passphrase)
        except (OSError, ssl.SSLError, ValueError) as error:
            raise ConfigError(f"[wsman] certificate_pem {settings.certificate_pem} and "
                              f"certificate_key_pem {settings.certificate_key_pem} cannot be "
                              f"used: {tls.reason(error)} (a PEM certificate and its "
                              "unencrypted key)") from None

