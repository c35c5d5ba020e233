"""One validated configuration object: a TOML file, then environment, then flags.

File layout (names other tools rely on)::

    [agent]
    state_dir = "/var/lib/hyperv-agent"
    backend = "emulator"            # emulator | wmi | wsman | auto (a Windows host's own)
    smb_servers = ["10.1.1.2"]      # shares on these servers are reached through smbprotocol
    smb_port = 445

    [agent.smb_credentials]         # for shares whose URL carries none (cifs image stores),
                                    # and pools whose MS encrypts their passwords
    "10.1.1.2" = {username = "cloud", password_file = "/etc/hyperv-agent/smb.pw", domain = "LAB"}

    [emulator]
    cpus = 16
    cpu_mhz = 2400
    memory_mb = 65536
    switches = ["External"]         # External unless [emulator.switch_types] says
    [emulator.switch_types]         # Internal | Private
    [emulator.drives]
    C = "/srv/hv/C"
    [emulator.shares]
    "\\\\10.1.1.1\\secondary" = "/srv/secondary"

    [wsman]                         # the host's WinRM service, for backend = "wsman"
    url = "https://hv01.example:5986/wsman"
    username = "HV01\\cloudstack"
    password_file = "/etc/hyperv-agent/wsman.password"   # or password = "..."
    auth = "negotiate"              # negotiate | ntlm | kerberos | basic | certificate
    verify_tls = true
    ca_file = "/etc/hyperv-agent/hv01-ca.pem"
    operation_timeout_s = 60

Environment: ``HYPERV_AGENT_STATE_DIR``, ``HYPERV_AGENT_BACKEND``, ``HYPERV_AGENT_LISTEN``
and ``HYPERV_AGENT_ADMIN_LISTEN`` override the file, as do ``HYPERV_AGENT_SMB_SERVERS``
(comma-separated) and ``HYPERV_AGENT_SMB_PORT``; ``HYPERV_AGENT_WSMAN_PASSWORD`` gives the
WinRM password. Relative paths in the file are taken from the file's folder; those of the
environment and flags from the current folder.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hyperv_agent.emulator.config import EmulatorConfig, SwitchType, Vendor
from hyperv_agent.errors import AgentError, ConfigError
from hyperv_agent.handlers.heartbeat import DEFAULT_INTERVAL_S, DEFAULT_STALE_S
from hyperv_agent.hostfs import locations

Backend = Literal["emulator", "wmi", "wsman", "auto"]
_SMB_SERVER = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
#: An emulated host's share as Windows names it, \\server\share (a trailing \ allowed).
_UNC_SHARE = re.compile(r"\\\\[^\\/]+\\[^\\/]+\\?")


DEFAULT_LISTEN = "0.0.0.0:8250"  # the management server always uses port 8250


def local_agent_url() -> str:
    """The URL of the agent on this machine: ``HYPERV_AGENT_LISTEN``, else the default
    listener, reached over loopback. A listener on every IPv6 address takes IPv6 alone
    (asyncio binds it IPV6_V6ONLY), so it is reached at ``[::1]``, not 127.0.0.1."""
    host, _, port = (os.environ.get("HYPERV_AGENT_LISTEN") or DEFAULT_LISTEN).rpartition(":")
    if host in ("0.0.0.0", ""):  # noqa: S104 - a listener on every IPv4 address
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "[::1]"
    return f"https://{host}:{port}"


def default_state_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("PROGRAMDATA", "C:\\ProgramData")) / "hyperv-agent"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hyperv-agent"


#: Byte-order marks Windows editors and shells write (PowerShell 5.1's ``>`` and Out-File
#: write UTF-16), with the encoding they announce; a file without one is UTF-8, unless it
#: is UTF-16 saved without a mark (``_text_encoding``).
_MARKED_ENCODINGS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"),
                     (b"\xfe\xff", "utf-16"))


def _text_encoding(data: bytes) -> str:
    """The encoding of a text file's ``data``: the one its byte-order mark announces, else
    UTF-16 when it is UTF-16 saved without a mark (as some Windows tools save it: a first
    character below U+0100, ASCII or an accented Latin letter, with a NUL beside it, LE or
    BE; UTF-8 text holds no NUL), else UTF-8. As UTF-16 with a mark, such a file is read
    as UTF-16."""
    marked = next((name for mark, name in _MARKED_ENCODINGS if data.startswith(mark)), None)
    if marked is not None:
        return marked
    if len(data) >= 2 and len(data) % 2 == 0:
        first, second = data[0], data[1]
        if second == 0 and first != 0:
            return "utf-16-le"
        if first == 0 and second != 0:
            return "utf-16-be"
    return "utf-8"


def _encoding_name(encoding: str) -> str:
    """How an error names ``encoding``: UTF-8, UTF-16 (whatever its mark or byte order)."""
    return encoding.upper().removesuffix("-SIG").removesuffix("-LE").removesuffix("-BE")


def read_password_file(path: Path) -> str:
    """The first line of the password file ``path``, without its line end (LF or CRLF) or
    byte-order mark. ValueError naming the file, never its content, when it cannot be read
    or is not text."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    encoding = _text_encoding(data)
    try:
        lines = data.decode(encoding).splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not {_encoding_name(encoding)} text "
                         "(save it as UTF-8)") from None
    return lines[0] if lines else ""


def _path_given(value: object) -> object:
    """An empty string is refused: read as a path it is ".", the folder the command happens
    to run in (System32 for a Windows service, / for a systemd unit), where state,
    certificates or an emulated drive would then quietly go."""
    if isinstance(value, str) and not value.strip():
        raise ValueError("an empty path would be the folder the agent happens to run in; "
                         "give a path, or leave the setting out for its default")
    return value


#: A file or folder setting: relative paths of the file are taken from its folder
#: (``_anchor_paths``), an empty one is refused.
GivenPath = Annotated[Path, BeforeValidator(_path_given)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SmbCredential(_Section):
    """An account for the shares of one SMB server. The password is given inline, in a
    file (its first line), or in an environment variable: exactly one of the three. It
    never appears in a log line, an error or ``repr``."""

    username: str = Field(min_length=1)
    domain: str = ""
    password: SecretStr | None = None
    password_file: GivenPath | None = None
    password_env: str | None = None

    @model_validator(mode="after")
    def _one_password(self) -> SmbCredential:
        given = [self.password is not None, self.password_file is not None,
                 self.password_env is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of password, password_file and password_env")
        self.secret()  # a missing file or variable stops the agent at start
        return self

    def secret(self) -> str:
        """The password, read from where it is kept (ValueError naming the place)."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ValueError(f"environment variable {self.password_env} is not set")
            return value
        assert self.password_file is not None
        return read_password_file(self.password_file)


class AgentSection(_Section):
    state_dir: GivenPath = Field(default_factory=default_state_dir)
    # auto: on a Windows host, wmi when PyMI imports, else wsman to WinRM on localhost
    backend: Backend = "emulator" if sys.platform != "win32" else "auto"
    listen: str = DEFAULT_LISTEN
    admin_listen: str = "127.0.0.1:9250"
    private_ip: str | None = None  # the agent's address on the management network
    tls_cert: GivenPath | None = None
    tls_key: GivenPath | None = None
    tls_client_ca: GivenPath | None = None  # require client certificates signed by this CA
    allow_from: tuple[str, ...] = ()  # management-server networks; empty = loopback only
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    idle_timeout_s: float = Field(default=30.0, gt=0, le=3600)  # to deliver a whole request
    max_connections: int = Field(default=256, ge=1)  # lowered below the open-file limit
    dom0_min_memory_mb: int = Field(default=2048, ge=0)  # reserved for the parent partition
    root_device_reserved_bytes: int = Field(default=4 * 1024**3, ge=0)
    root_device_name: str = "c:\\"  # pools on this volume lose root_device_reserved_bytes
    local_storage_path: str = "C:\\Users\\Public\\Documents\\Hyper-V\\Virtual hard disks"
    local_secondary_storage_path: str = "C:\\Secondary"  # legacy nfs:// downloads
    # The host folder of config drive ISOs the MS puts in the host's cache
    # (vm.configdrive.force.host.cache.use); "" = <local_storage_path>\\configdrive-cache
    config_drive_cache_path: str = ""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    smb_servers: tuple[str, ...] = ()  # SMB servers reached through smbprotocol, not natively
    # hypervisorVersion reported at registration; the MS's hypervisor_capabilities has a
    # Hyperv row for 6.2 only. Another value needs a row added there first.
    hypervisor_version: str = Field(default="6.2", pattern=r"^[0-9]+(\.[0-9]+)*$")
    smb_port: int = Field(default=445, ge=1, le=65535)
    # Accounts for SMB servers whose share URLs carry no credentials (the MS strips them
    # from cifs image stores in CopyCommand); these servers are reached through smbprotocol.
    # An account here wins over the one of an SMB pool's details, and is the fix for a
    # management server that encrypts its database: it sends pool passwords encrypted.
    smb_credentials: dict[str, SmbCredential] = Field(default_factory=dict)
    # Agentless mode (backend wsman to another machine): the console proxy connects to this
    # agent on the RDP port, relayed to the host's VMConnect. "" turns the relay off.
    console_relay_listen: str = "0.0.0.0:2179"
    console_relay_target_port: int = Field(default=2179, ge=1, le=65535)  # host's VMConnect
    # HA (protocol §5.3): this host's heartbeat in every shared pool every interval; a
    # neighbour's older than heartbeat_stale_s is down. Production: 60 and 180 seconds.
    heartbeat_interval_s: float = Field(default=DEFAULT_INTERVAL_S, ge=0.5, le=3600)
    heartbeat_stale_s: float = Field(default=DEFAULT_STALE_S, ge=2, le=86400)
    # Start VMs with processor compatibility (LimitProcessorFeatures) unless their
    # guest.cpu.mode detail says otherwise: for clusters of processor generations of one
    # vendor, where a VM started on a newer host must move live to an older one.
    processor_compatibility: bool = False

    @field_validator("smb_servers", mode="before")
    @classmethod
    def _server_list(cls, value: object) -> object:
        if isinstance(value, str):  # from the environment: "fs1,10.1.1.2"
            return [server.strip() for server in value.split(",") if server.strip()]
        return value

    @field_validator("smb_servers")
    @classmethod
    def _server_names(cls, servers: tuple[str, ...]) -> tuple[str, ...]:
        for server in servers:
            if not _SMB_SERVER.fullmatch(server):
                raise ValueError(f"{server!r} is not a host name or IPv4 address (no port)")
        return servers

    @field_validator("local_storage_path", "local_secondary_storage_path",
                     "config_drive_cache_path")
    @classmethod
    def _storage_root(cls, root: str, info: ValidationInfo) -> str:
        """A folder the agent registers as a pool root or downloads into: an absolute drive
        or UNC path, as registration takes it (a relative path, a device-namespace one, a name
        Windows misreads would start the agent with its local pool quietly left out of the
        host's registration). An empty ``local_secondary_storage_path`` says there is none
        (legacy nfs:// downloads then fail saying so); an empty ``config_drive_cache_path``
        is the default folder (``config_drive_cache``). ``local_storage_path``, the one
        registered as a pool, may not hold a '+'."""
        if root == "" and info.field_name != "local_storage_path":
            return root
        try:
            locations.root_to_register("", root, "Filesystem")
        except AgentError as error:
            raise ValueError(str(error)) from None
        if info.field_name == "local_storage_path" and "+" in root:
            # CloudStackPrimaryDataStoreLifeCycleImpl.initialize makes every '+' of a local
            # pool's hostPath a space before storing it: the pool the MS records, and
            # creates volumes on, would be another folder.
            raise ValueError(
                f"{locations.quoted(root, 260)} has a '+': the management server records a "
                "local pool's path with every '+' read as a space, "
                f"{locations.quoted(root.replace('+', ' '), 260)}, another folder; choose "
                "a folder without '+'")
        return root

    @field_validator("smb_credentials")
    @classmethod
    def _credential_servers(cls, accounts: dict[str, SmbCredential]) -> dict[str, SmbCredential]:
        for server in accounts:
            if not _SMB_SERVER.fullmatch(server):
                raise ValueError(f"{server!r} is not a host name or IPv4 address (no port)")
        return accounts

    @model_validator(mode="after")
    def _stale_after_missed_beats(self) -> AgentSection:
        if self.heartbeat_stale_s < 2 * self.heartbeat_interval_s:
            raise ValueError(f"heartbeat_stale_s ({self.heartbeat_stale_s:g}) must be at least "
                             f"twice heartbeat_interval_s ({self.heartbeat_interval_s:g}), "
                             "or a host that is up could be called down")
        return self

    @property
    def config_drive_cache(self) -> str:
        """The host folder of config drive ISOs in the host's cache: ``config_drive_cache_path``,
        by default ``<local_storage_path>\\configdrive-cache``. A host path in every mode
        (the state directory of an agent driving a host over WinRM is not on that host, so
        Hyper-V could not open an ISO there), the same on every host of a cluster set up
        alike (a live move keeps the path in the VM's DVD drive, so the destination needs
        the ISO at the same place), and on the volume the agent already writes disks to."""
        if self.config_drive_cache_path:
            return self.config_drive_cache_path
        return self.local_storage_path.rstrip("\\/") + "\\configdrive-cache"

    @property
    def smb_routed_servers(self) -> tuple[str, ...]:
        """Every server reached through smbprotocol: ``smb_servers`` and the servers of
        ``smb_credentials``."""
        known = {server.lower() for server in self.smb_servers}
        return self.smb_servers + tuple(s for s in self.smb_credentials if s.lower() not in known)

    @field_validator("listen", "admin_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{value!r} is not HOST:PORT")
        if not 0 < int(port) < 65536:
            raise ValueError(f"{value!r}: the port must be from 1 to 65535 (the management "
                             "server is told where to connect, so no port is picked at random)")
        return value

    @field_validator("console_relay_listen")
    @classmethod
    def _relay_listen(cls, value: str) -> str:
        return cls._host_port(value) if value else value

    @field_validator("allow_from")
    @classmethod
    def _networks(cls, networks: tuple[str, ...]) -> tuple[str, ...]:
        for network in networks:
            ipaddress.ip_network(network, strict=False)  # ValueError names the bad one
        return networks

    @field_validator("private_ip")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_address(value)
        return value


class LabSection(_Section):
    """Test and lab knobs of the emulated host (``[emulator.lab]``): it falls short as a
    real host can, for ``doctor`` and for trying what an operator would see."""

    missing_classes: tuple[str, ...] = ()  # left out of the emulated schema
    free_bytes: dict[str, int] = Field(default_factory=dict)  # drive letter -> free space
    # method -> how many of its first jobs after start end in Exception
    failing_jobs: dict[str, int] = Field(default_factory=dict)

    @field_validator("failing_jobs")
    @classmethod
    def _methods(cls, failing: dict[str, int]) -> dict[str, int]:
        for method, count in failing.items():
            if not method.isidentifier() or count < 1:
                raise ValueError(f"{method!r} = {count}: a method name and a count >= 1")
        return failing

    @field_validator("free_bytes")
    @classmethod
    def _drives(cls, free: dict[str, int]) -> dict[str, int]:
        for letter, value in free.items():
            if len(letter.rstrip(":")) != 1 or not letter[0].isalpha() or value < 0:
                raise ValueError(f"{letter!r} = {value}: a drive letter and bytes >= 0")
        return free


#: The emulated host's defaults are the emulator's own.
_HOST = EmulatorConfig(state_dir=Path())


class MigrationSection(_Section):
    """The emulated host's live-migration settings (``[emulator.migration]``), as Hyper-V
    Settings > Live Migrations holds them on a real host."""

    enabled: bool = _HOST.migration.enabled
    authentication: Literal["Kerberos", "CredSSP"] = (
        "Kerberos" if _HOST.migration.kerberos else "CredSSP")
    simultaneous: int = Field(default=_HOST.migration.simultaneous, ge=1, le=1000)
    networks: tuple[str, ...] | None = None  # default: the subnet of [agent] private_ip

    @field_validator("networks")
    @classmethod
    def _subnets(cls, networks: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for subnet in networks or ():
            try:
                ipaddress.ip_network(subnet, strict=False)
            except ValueError:
                raise ValueError(f"{subnet!r} is not a subnet such as 10.1.2.0/24") from None
        return networks


class ProcessorSection(_Section):
    """The emulated host's processors as live migration sees them (``[emulator.processor]``):
    their vendor, and a feature level (a higher one has every feature of a lower one)."""

    vendor: Vendor = _HOST.processor.vendor
    feature_level: int = Field(default=_HOST.processor.feature_level, ge=1, le=1000)


class EmulatorSection(_Section):
    host_name: str = Field(default=_HOST.host_name, min_length=1, max_length=63)
    cpus: int = Field(default=_HOST.cpus, ge=1, le=1024)
    cpu_mhz: int = Field(default=_HOST.cpu_mhz, ge=100, le=10000)
    sockets: int = Field(default=_HOST.sockets, ge=1, le=64)
    memory_mb: int = Field(default=_HOST.memory_mb, ge=512)
    switches: tuple[str, ...] = _HOST.switches
    # A switch's kind by name (Hyper-V's SwitchType): "Internal" or "Private"; one not
    # named here is External (bound to a physical adapter).
    switch_types: dict[str, SwitchType] = Field(default_factory=dict)
    drives: dict[str, GivenPath] = Field(default_factory=dict)
    shares: dict[str, GivenPath] = Field(default_factory=dict)
    async_jobs: bool = _HOST.async_jobs
    call_latency_s: float = Field(default=_HOST.latency.call_s, ge=0)
    job_duration_s: float = Field(default=_HOST.latency.job_s, ge=0)
    guest_shutdown_s: float = Field(default=_HOST.guest_shutdown_s, ge=0)
    # The Windows the emulated host runs (Win32_OperatingSystem): decides, as on a real
    # host, what it offers (secure boot templates from 10.0, generation 2 VMs from 6.3).
    os_version: str = Field(default=_HOST.os_version, pattern=r"^[0-9]+(\.[0-9]+)+$")
    os_caption: str = Field(default=_HOST.os_caption, min_length=1)
    job_retention_s: float = Field(default=_HOST.job_retention_s, ge=0)  # finished jobs vanish
    # Emulated hosts of several agents naming the same folder form a cluster (migration).
    cluster_dir: GivenPath | None = _HOST.cluster_dir
    # How the host names its disk counter instances: the path with "-" for each backslash
    # ("plain", C:-pool-a.vhdx) or the same of its \\?\ form ("verbatim", --?-C:-pool-a.vhdx).
    disk_counter_names: Literal["plain", "verbatim"] = "plain"
    # Also serve this emulated host over WinRM, at [wsman] url to [wsman] username/password.
    winrm: bool = False
    lab: LabSection = Field(default_factory=LabSection)  # test and lab knobs
    migration: MigrationSection = Field(default_factory=MigrationSection)
    processor: ProcessorSection = Field(default_factory=ProcessorSection)

    @field_validator("drives")
    @classmethod
    def _drive_letters(cls, drives: dict[str, Path]) -> dict[str, Path]:
        for letter in drives:
            if len(letter.rstrip(":")) != 1 or not letter[0].isalpha():
                raise ValueError(f"drive {letter!r} is not a drive letter such as C")
        return drives

    @field_validator("shares")
    @classmethod
    def _unc_shares(cls, shares: dict[str, Path]) -> dict[str, Path]:
        """Each share is named ``\\\\server\\share``, as Windows names it: a name with a
        doubled backslash (``'\\\\\\\\server\\\\share'``, escaped for TOML's double quotes but
        written in single quotes, which keep every backslash) is no share a path can name,
        and commands on the share would fail "no such share on this host"."""
        for unc in shares:
            if not _UNC_SHARE.fullmatch(unc):
                hint = (" (between single quotes TOML keeps every backslash: write "
                        "'\\\\server\\share' there, or \"\\\\\\\\server\\\\share\" between "
                        "double quotes)") if "\\\\" in unc[1:] else ""
                raise ValueError(f"share '{unc}' is not of the form \\\\server\\share{hint}")
        return shares

    @field_validator("drives", "shares")
    @classmethod
    def _folders(cls, folders: dict[str, Path], info: ValidationInfo) -> dict[str, Path]:
        """A drive or share is a folder of this machine (a drive's is made when missing, a
        share's must exist: ``backends.check_shares`` at start); a file there is refused
        here, naming the setting, rather than failing the start with a bare "File exists"."""
        for name, folder in folders.items():
            if problem := _not_a_folder(folder):
                raise ValueError(f"{name}: {problem}; the {info.field_name} of the emulated "
                                 "host are folders")
        return folders

    @field_validator("cluster_dir")
    @classmethod
    def _cluster_folder(cls, folder: Path | None) -> Path | None:
        if folder is not None and (problem := _not_a_folder(folder)):
            raise ValueError(f"{problem}; the cluster's folder is a folder")
        return folder

    @field_validator("switches")
    @classmethod
    def _switch_names(cls, switches: tuple[str, ...]) -> tuple[str, ...]:
        if not switches or any(not name.strip() for name in switches):
            raise ValueError("at least one vSwitch, each with a name")
        return switches

    @model_validator(mode="after")
    def _typed_switches(self) -> EmulatorSection:
        unknown = sorted(set(self.switch_types) - set(self.switches))
        if unknown:
            raise ValueError(f"switch_types names switches not in switches: {unknown}")
        return self

    @model_validator(mode="after")
    def _a_core_a_socket(self) -> EmulatorSection:
        if self.sockets > self.cpus:
            raise ValueError(f"sockets ({self.sockets}) outnumber cpus ({self.cpus}): every "
                             "socket holds at least one core")
        return self


def _not_a_folder(folder: Path) -> str | None:
    """Why ``folder`` cannot be a folder of this machine, made when missing: a file at it
    or on the way to it, or a path on the way that cannot be looked at (permission
    denied); None when it is a folder or can be made. The agent's start would otherwise
    fail at it with a bare file error naming no setting."""
    for step in (folder, *folder.parents):
        try:
            found = step.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue  # not there (or below a file): the folder above decides
        except OSError as error:
            return f"{step} cannot be looked at: {error.strerror or error}"
        if stat.S_ISDIR(found.st_mode):
            return None
        return f"{step} is a file" if step == folder else \
            f"{step}, on the way to {folder}, is a file"
    return None


class WsmanSection(_Section):
    """The host's WinRM endpoint (``backend = "wsman"``). The password is never printed."""

    url: str | None = None  # http(s)://host[:port]/wsman
    username: str | None = None
    password: SecretStr | None = None
    password_file: GivenPath | None = None
    auth: Literal["negotiate", "ntlm", "kerberos", "basic", "certificate"] = "negotiate"
    verify_tls: bool = True
    ca_file: GivenPath | None = None
    certificate_pem: GivenPath | None = None  # for auth = "certificate"
    certificate_key_pem: GivenPath | None = None
    operation_timeout_s: int = Field(default=60, ge=1, le=3600)
    max_envelope_bytes: int = Field(default=512000, ge=8192)
    max_concurrent_requests: int = Field(default=4, ge=1, le=32)

    def resolved_password(self) -> str | None:
        """``password``, else the first line of ``password_file``; ConfigError when the
        file cannot be read (the message names the file, never its content)."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is None:
            return None
        try:
            return read_password_file(self.password_file)
        except ValueError as error:
            raise ConfigError(f"wsman password_file: {error}") from None


class AgentConfig(_Section):
    agent: AgentSection = Field(default_factory=AgentSection)
    emulator: EmulatorSection = Field(default_factory=EmulatorSection)
    wsman: WsmanSection = Field(default_factory=WsmanSection)

    @model_validator(mode="after")
    def _winrm_face(self) -> AgentConfig:
        if self.emulator.winrm and not (self.wsman.url and self.wsman.username and (
                self.wsman.password is not None or self.wsman.password_file is not None)):
            raise ValueError("[emulator] winrm serves the emulated host at [wsman] url to "
                             "[wsman] username and password (or password_file): set all three")
        return self


def load_config(path: Path | None = None, *, wsman: Mapping[str, Any] | None = None,
                **overrides: Any) -> AgentConfig:
    """Read ``path`` (if given), apply the environment, then ``overrides`` (``[agent]``
    settings such as ``state_dir``, ``backend``, ``listen``) and ``wsman`` (``[wsman]``
    settings); None values are ignored. ConfigError names the file and field at fault."""
    data = _read_file(path) if path is not None else {}
    for section in ("agent", "wsman"):  # merged with the environment and flags below
        if not isinstance(data.get(section, {}), dict):
            raise ConfigError(f"invalid config file {path}: {section}: a table is expected "
                              f"([{section}] on a line of its own, its settings below it), "
                              f"not a value of type {type(data[section]).__name__}")
    if path is not None:
        _anchor_paths(data, path.absolute().parent)
    agent = dict(data.get("agent", {}))
    environment = _environment()
    flags = {k: v for k, v in overrides.items() if v is not None}
    agent.update(environment)
    agent.update(flags)
    data["agent"] = agent
    # where a value not of the file came from, for an error about it
    origins = {key: f"from {_ENVIRONMENT_NAMES[key]}" for key in environment}
    for key in flags:
        if key in _FLAG_NAMES:
            origins[key] = f"from {_FLAG_NAMES[key]}"
        else:
            origins.pop(key, None)
    remote = dict(data.get("wsman", {}))
    if os.environ.get("HYPERV_AGENT_WSMAN_PASSWORD"):
        remote["password"] = os.environ["HYPERV_AGENT_WSMAN_PASSWORD"]
    remote.update({k: v for k, v in (wsman or {}).items() if v is not None})
    data["wsman"] = remote
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, path, origins)) from None


#: The settings that name files and folders: (section, key), or (section, table) for a
#: table of them (``*``), or of inline tables holding one (``smb_credentials``).
_PATH_SETTINGS = (("agent", "state_dir"), ("agent", "tls_cert"), ("agent", "tls_key"),
                  ("agent", "tls_client_ca"), ("wsman", "password_file"), ("wsman", "ca_file"),
                  ("wsman", "certificate_pem"), ("wsman", "certificate_key_pem"),
                  ("emulator", "cluster_dir"))
_PATH_TABLES = (("emulator", "drives"), ("emulator", "shares"))


def _anchor_paths(data: dict[str, Any], folder: Path) -> None:
    """Relative paths of the file taken from the file's own folder, wherever the command
    runs (a Windows service in System32, a systemd unit in /), and ``~`` expanded; those of
    the environment and flags stay relative to the current folder."""
    def anchored(value: object) -> object:
        if not isinstance(value, str) or not value.strip():
            return value  # the model refuses what is not a path, or a blank one
        named = Path(value).expanduser()
        return str(named if named.is_absolute() else folder / named)

    def section(name: str) -> dict[str, Any]:
        table = data.get(name)
        return table if isinstance(table, dict) else {}

    for name, key in _PATH_SETTINGS:
        if key in section(name):
            section(name)[key] = anchored(section(name)[key])
    for name, key in _PATH_TABLES:
        table = section(name).get(key)
        if isinstance(table, dict):
            section(name)[key] = {k: anchored(v) for k, v in table.items()}
    accounts = section("agent").get("smb_credentials")
    for account in accounts.values() if isinstance(accounts, dict) else ():
        if isinstance(account, dict) and "password_file" in account:
            account["password_file"] = anchored(account["password_file"])


def _read_file(path: Path) -> dict[str, Any]:
    """The TOML of ``path``: UTF-8, or the encoding a byte-order mark announces (Notepad's
    UTF-8 mark, PowerShell 5.1's ``>`` and Out-File, which write UTF-16), or UTF-16 saved
    without a mark, as password files are read (``_text_encoding``)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    encoding = _text_encoding(data)
    try:
        return tomllib.loads(data.decode(encoding))
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not {_encoding_name(encoding)} "
                          f"text (byte {error.start}: {error.reason}); save it as "
                          "UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None


#: The ``[agent]`` settings the environment overrides, by the variable that does.
_ENVIRONMENT_NAMES = {
    "state_dir": "HYPERV_AGENT_STATE_DIR", "backend": "HYPERV_AGENT_BACKEND",
    "listen": "HYPERV_AGENT_LISTEN", "admin_listen": "HYPERV_AGENT_ADMIN_LISTEN",
    "smb_servers": "HYPERV_AGENT_SMB_SERVERS", "smb_port": "HYPERV_AGENT_SMB_PORT"}

#: The ``[agent]`` settings the command line's flags override, by the flag that does.
_FLAG_NAMES = {"state_dir": "--state-dir", "backend": "--backend", "listen": "--listen",
               "admin_listen": "--admin-listen", "private_ip": "--private-ip"}


def _environment() -> Mapping[str, str]:
    return {key: os.environ[env] for key, env in _ENVIRONMENT_NAMES.items()
            if os.environ.get(env)}


def _describe(error: ValidationError, path: Path | None,
              origins: Mapping[str, str] | None = None) -> str:
    """One line of every problem, each named by its setting, and by the variable or flag
    that gave the value when the file did not (the file may not even hold the setting)."""
    where = f"config file {path}" if path else "configuration"

    def named(loc: tuple[int | str, ...]) -> str:
        setting = ".".join(str(p) for p in loc)
        origin = (origins or {}).get(str(loc[1])) if len(loc) > 1 and loc[0] == "agent" \
            else None
        return f"{setting} ({origin})" if origin else setting

    problems = "; ".join(f"{named(item['loc'])}: {item['msg']}" for item in error.errors())
    return f"invalid {where}: {problems}"
