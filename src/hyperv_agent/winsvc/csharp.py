"""The C# agent's settings (``AgentShell.exe.config``) carried over to ``agent.toml``.

The C# agent keeps its settings in the .NET configuration file next to AgentShell.exe:
``<applicationSettings>`` and ``<userSettings>`` hold the section
``CloudStack.Plugin.AgentShell.AgentSettings`` (``<setting name=...><value>``), and it
writes ``<appSettings><add key="primary_storage_<pool uuid>" value="\\\\server\\share"/>``
for every SMB pool the management server registered. Of its settings it uses at run time
only the listen address and port, ``dom0MinMemory``, the root-device reservation
(``RootDeviceName``, ``RootDeviceReservedSpaceBytes``) and ``local_secondary_storage_path``;
those, and the pools, carry over. Every other setting is named, with the reason, never
with its value (some hold passwords). Works on any OS: the file is only read (defusedxml).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeXml
from defusedxml import DefusedXmlException

from hyperv_agent import state
from hyperv_agent.errors import ConfigError

SETTINGS_GROUPS = ("applicationSettings", "userSettings")
POOL_PREFIX = "primary_storage_"
DEFAULT_PORT = 8250
MAX_CONFIG_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class CSharpConfig:
    """The settings found in one AgentShell.exe.config."""

    settings: Mapping[str, str]  # applicationSettings, then userSettings, by name
    app_settings: Mapping[str, str]  # <appSettings> key -> value


@dataclass(frozen=True)
class Carried:
    """One ``[agent]`` setting of agent.toml and the C# settings it comes from."""

    key: str
    value: str | int
    source: str


@dataclass(frozen=True)
class Dropped:
    """A C# setting that does not carry over, and why."""

    setting: str
    reason: str


@dataclass(frozen=True)
class Translation:
    """What the C# agent's settings become: ``[agent]`` settings, the SMB pools (uuid ->
    UNC root) for the pool registry, and what was left behind."""

    agent: tuple[Carried, ...]
    pools: tuple[tuple[str, str], ...]
    dropped: tuple[Dropped, ...]


# --- reading ------------------------------------------------------------------------------


def read(path: Path) -> CSharpConfig:
    """The settings of the .NET configuration file at ``path``; ConfigError (one line)
    when it cannot be read or is not a configuration file."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes; not a "
                          "configuration file")
    return parse(data, str(path))


def parse(data: bytes, source: str) -> CSharpConfig:
    try:
        root = SafeXml.fromstring(data)
    except (ParseError, DefusedXmlException) as error:
        raise ConfigError(f"{source} is not a readable XML file: {error}") from None
    if _local(root.tag) != "configuration":
        raise ConfigError(f"{source} is not a .NET configuration file (its root element is "
                          f"<{_local(root.tag)}>, not <configuration>)")
    settings: dict[str, str] = {}
    for group in SETTINGS_GROUPS:  # user-scoped settings come last and win
        settings.update(_settings(root, group))
    return CSharpConfig(settings, dict(_app_settings(root)))


def _settings(root: Element, group: str) -> Iterator[tuple[str, str]]:
    for section in _named(root, group):
        for section_child in section:
            for setting in _named(section_child, "setting"):
                name = setting.get("name")
                if name:
                    value = next(_named(setting, "value"), None)
                    yield name, "" if value is None else "".join(value.itertext()).strip()


def _app_settings(root: Element) -> Iterator[tuple[str, str]]:
    for section in _named(root, "appSettings"):
        for entry in _named(section, "add"):
            key = entry.get("key")
            if key:
                yield key, entry.get("value", "")


def _named(parent: Element, name: str) -> Iterator[Element]:
    return (child for child in parent if _local(child.tag) == name)


def _local(tag: object) -> str:
    return str(tag).rpartition("}")[2]


# --- translating --------------------------------------------------------------------------

_DISCOVERED = "discovered from the host itself at registration"
_FROM_MS = "sent by the management server at registration"
_UNUSED = "not used by the C# agent at run time"
IGNORED: Mapping[str, str] = {
    "cpus": _DISCOVERED, "Settingcpuspeed": _DISCOVERED, "memory": _DISCOVERED,
    "private_ip_netmask": _DISCOVERED, "private_mac_address": _DISCOVERED,
    "gateway_ip_address": _DISCOVERED,
    "host": _FROM_MS, "pod": _FROM_MS, "cluster": _FROM_MS, "zone": _FROM_MS,
    "guid": _FROM_MS,
    "local_storage_uuid": "the local pool's uuid is the host guid the management server "
                          "sends at registration",
    "type": "always Routing", "capabilities": "always hvm",
    "workers": "commands are served concurrently, without a worker count",
    "hyperv_plugin_root": "a path of the C# build tree",
    "local_storage_path": _UNUSED + " (its local pool was Hyper-V's default virtual hard "
                          "disk folder, (Get-VMHost).VirtualHardDiskPath); set "
                          "local_storage_path to that folder if it is not "
                          "C:\\Users\\Public\\Documents\\Hyper-V\\Virtual hard disks",
}
_INTEGERS = {"dom0MinMemory": "dom0_min_memory_mb",
             "RootDeviceReservedSpaceBytes": "root_device_reserved_bytes"}
_TEXTS = {"RootDeviceName": "root_device_name",
          "local_secondary_storage_path": "local_secondary_storage_path"}
_LISTEN_PARTS = ("private_ip_address", "port")


def translate(config: CSharpConfig) -> Translation:
    """The agent.toml settings and pools equivalent to ``config``; every setting that is
    not carried over is in ``dropped`` with its reason."""
    agent: list[Carried] = []
    dropped: list[Dropped] = []
    listen = _listen(config.settings, dropped)
    if listen is not None:
        agent.append(listen)
    for name, text in config.settings.items():
        _translate_setting(name, text, agent, dropped)
    pools = tuple(_pools(config.app_settings, dropped))
    return Translation(tuple(agent), pools, tuple(dropped))


def _translate_setting(name: str, text: str, agent: list[Carried],
                       dropped: list[Dropped]) -> None:
    if name in _LISTEN_PARTS:
        return
    if name in _TEXTS:
        if text:
            agent.append(Carried(_TEXTS[name], text, name))
        else:
            dropped.append(Dropped(name, "empty; the agent's default is kept"))
    elif name in _INTEGERS:
        _integer(name, text, agent, dropped)
    else:
        dropped.append(Dropped(name, _ignored_reason(name)))


def _integer(name: str, text: str, agent: list[Carried], dropped: list[Dropped]) -> None:
    try:
        number = int(text)
    except ValueError:
        dropped.append(Dropped(name, f"{text!r} is not a whole number; the agent's "
                                     "default is kept"))
        return
    if number < 0:
        dropped.append(Dropped(name, "negative; the agent's default is kept"))
        return
    agent.append(Carried(_INTEGERS[name], number, name))


def _ignored_reason(name: str) -> str:
    if name in IGNORED:
        return IGNORED[name]
    if name.startswith("test"):
        return "used only by the C# agent's unit tests"
    return "not a setting of the C# agent this agent knows"


def _listen(settings: Mapping[str, str], dropped: list[Dropped]) -> Carried | None:
    if not any(part in settings for part in _LISTEN_PARTS):
        return None
    address = settings.get("private_ip_address", "").strip() or "0.0.0.0"  # noqa: S104
    port_text = settings.get("port", "").strip() or str(DEFAULT_PORT)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        dropped.append(Dropped("port", f"{port_text!r} is not a TCP port; {DEFAULT_PORT} "
                                       "(the port the management server uses) is kept"))
        port_text = str(DEFAULT_PORT)
    host = f"[{address}]" if ":" in address else address
    return Carried("listen", f"{host}:{port_text}", "private_ip_address, port")


def _pools(app_settings: Mapping[str, str],
           dropped: list[Dropped]) -> Iterator[tuple[str, str]]:
    for key, value in app_settings.items():
        if not key.startswith(POOL_PREFIX):
            dropped.append(Dropped(f"appSettings {key}", "not written by the C# agent"))
            continue
        problem = _pool_problem(key[len(POOL_PREFIX):], value)
        if problem:
            dropped.append(Dropped(f"appSettings {key}", problem))
        else:
            yield key[len(POOL_PREFIX):].lower(), value


def _pool_problem(pool_uuid: str, root: str) -> str | None:
    checks: tuple[tuple[Callable[[], bool], str], ...] = (
        (lambda: _is_uuid(pool_uuid), "the key does not end in a pool uuid"),
        (lambda: PureWindowsPath(root).is_absolute(),
         f"{root!r} is not a UNC path or an absolute Windows path"),
    )
    problem = next((problem for ok, problem in checks if not ok()), None)
    return problem or state.root_problem(root)  # what the agent would drop when reading it


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
