"""The command line: reads configuration, picks the backend, runs the agent or a diagnostic.

``hyperv-agent cim query`` and ``hyperv-agent cim invoke`` are diagnostics that work
against any backend, the way Get-CimInstance and Invoke-CimMethod do on a host.

Each command imports what it uses when it runs, so ``--help`` and a diagnostic do not
pay for the server stack, the backends or the configuration models.
"""

from __future__ import annotations

import gc
import ipaddress
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from hyperv_agent.cim.api import V2_NAMESPACE
from hyperv_agent.doctor.command import doctor_command
from hyperv_agent.errors import AgentError, ConfigError, system_said
from hyperv_agent.winsvc.commands import service_group

if TYPE_CHECKING:
    from hyperv_agent.cim.api import Cim, CimInstance, InValue, OutValue
    from hyperv_agent.config import AgentConfig

_T = TypeVar("_T")
SWITCH_INTERVAL_S = 0.0005


# --- click plumbing -----------------------------------------------------------------------


def _run(work: Callable[[Cim], Awaitable[_T]], config: AgentConfig, *,
         reads_only: bool = False) -> _T:
    """``work`` on the configured host. ``reads_only``: an emulated host another process
    holds (a running agent) is read as that process stored it, and a note says so."""
    import asyncio

    from hyperv_agent.backends import open_host

    async def main() -> _T:
        # a diagnostic creates nothing
        opened = open_host(config, leave_no_trace=True, read_if_held=reads_only)
        held = opened.emulator.host.held_elsewhere if opened.emulator is not None else None
        if held is not None:
            click.echo(f"note: {held}: read as that process has stored it", err=True)
        try:
            return await work(opened.cim)
        finally:
            await opened.close()

    return asyncio.run(main())


def _fail(error: AgentError) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(2)


@click.group()
@click.version_option(package_name="hyperv-agent")
def main() -> None:
    """CloudStack agent for Microsoft Hyper-V."""


main.add_command(service_group)


@main.group()
def cim() -> None:
    """Diagnostics against the CIM backend (like Get-CimInstance / Invoke-CimMethod)."""


_config_option = click.option("--config", "config_file", type=click.Path(path_type=Path),
                              help="TOML configuration file.")
#: The backends ``[agent] backend`` names (config.Backend), without importing the models.
BACKENDS = ("auto", "emulator", "wmi", "wsman")
_backend_option = click.option("--backend", type=click.Choice(BACKENDS),
                               help="CIM backend (default: from the configuration).")


class _FolderPath(click.Path):
    """A folder named on the command line; an empty one (``--state-dir "$UNSET"``) is
    refused rather than read as the folder the command happens to run in."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path would be the folder the command happens to run in; "
                      "give a folder, or leave the option out for the configured one",
                      param, ctx)
        return super().convert(value, param, ctx)


_state_option = click.option("--state-dir", type=_FolderPath(path_type=Path),
                             help="State directory (default: from the configuration).")

_WSMAN_OPTIONS = (
    click.option("--wsman-url", help="The host's WinRM endpoint, http(s)://host:port/wsman "
                 "(backend wsman; default: [wsman] url)."),
    click.option("--wsman-user", help="WinRM account, e.g. HOST\\user."),
    click.option("--wsman-password", help="WinRM password (better: HYPERV_AGENT_WSMAN_PASSWORD "
                 "or [wsman] password_file)."),
    click.option("--wsman-auth", type=click.Choice(
        ["negotiate", "ntlm", "kerberos", "basic", "certificate"]),
        help="WinRM authentication (default negotiate)."),
    click.option("--wsman-no-verify", is_flag=True, default=None,
                 help="Do not verify the host's TLS certificate."),
)


def _wsman_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_WSMAN_OPTIONS):
        command = option(command)
    return command


def _wsman(wsman_url: str | None = None, wsman_user: str | None = None,
           wsman_password: str | None = None, wsman_auth: str | None = None,
           wsman_no_verify: bool | None = None) -> dict[str, Any]:
    """The ``[wsman]`` settings the command line gives (None: from the configuration)."""
    return {"url": wsman_url, "username": wsman_user, "password": wsman_password,
            "auth": wsman_auth, "verify_tls": False if wsman_no_verify else None}


def _load(config_file: Path | None, backend: str | None, state_dir: Path | None,
          wsman: dict[str, Any] | None = None) -> AgentConfig:
    from hyperv_agent.config import load_config

    try:
        return load_config(config_file, backend=backend, state_dir=state_dir, wsman=wsman)
    except ConfigError as error:
        _fail(error)
        raise  # unreachable: _fail exits


@cim.command("query")
@_config_option
@_backend_option
@_state_option
@_wsman_options
@click.option("--namespace", default=V2_NAMESPACE, show_default=True)
@click.argument("wql")
def cim_query(config_file: Path | None, backend: str | None, state_dir: Path | None,
              namespace: str, wql: str, **wsman: Any) -> None:
    """Print the instances WQL selects as a JSON array."""
    config = _load(config_file, backend, state_dir, _wsman(**wsman))
    try:
        instances = _run(lambda c: c.query(wql, namespace), config, reads_only=True)
    except AgentError as error:
        _fail(error)
        return
    click.echo(json.dumps([instance_json(i) for i in instances], indent=2))


@cim.command("invoke")
@_config_option
@_backend_option
@_state_option
@_wsman_options
@click.argument("path")
@click.argument("method")
@click.argument("params", nargs=-1)
def cim_invoke(config_file: Path | None, backend: str | None, state_dir: Path | None,
               path: str, method: str, params: tuple[str, ...], **wsman: Any) -> None:
    """Call METHOD on the instance at PATH with Name=Value parameters; print out-parameters."""
    from hyperv_agent.cim.api import ObjectPath

    config = _load(config_file, backend, state_dir, _wsman(**wsman))
    try:
        target = ObjectPath.parse(path)
        arguments = dict(parse_parameter(text) for text in params)
        result = _run(lambda c: c.invoke(target, method, arguments), config)
    except AgentError as error:
        _fail(error)
        return
    out: dict[str, Any] = {"ReturnValue": result.return_value}
    out.update({name: _out_json(value) for name, value in sorted(result.out.items())})
    click.echo(json.dumps(out, indent=2))


def parse_parameter(text: str) -> tuple[str, InValue]:
    """``Name=Value``: integers, TRUE/FALSE, JSON arrays, otherwise text."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"parameter {text!r} is not Name=Value")
    return name.strip(), _value(raw)


def _value(raw: str) -> InValue:
    if raw.upper() in ("TRUE", "FALSE"):
        return raw.upper() == "TRUE"
    if raw.lstrip("-").isdigit():
        return int(raw)
    if raw.startswith("["):
        try:
            items = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ConfigError(f"array value {raw!r} is not a JSON array: {error}") from None
        if not isinstance(items, list):
            raise ConfigError(f"array value {raw!r} is not a JSON array")
        return [item if isinstance(item, str | int | bool) else str(item) for item in items]
    return raw


def instance_json(instance: CimInstance) -> dict[str, Any]:
    data: dict[str, Any] = {
        "__CLASS": instance.class_name,
        "__PATH": str(instance.path) if instance.path else None,
    }
    data.update({p.name: list(p.value) if isinstance(p.value, tuple) else p.value
                 for p in instance})
    return data


def _out_json(value: OutValue) -> Any:
    from hyperv_agent.cim.api import CimInstance, ObjectPath

    if isinstance(value, ObjectPath):
        return str(value)
    if isinstance(value, CimInstance):
        return instance_json(value)
    if isinstance(value, tuple):
        return [_out_json(item) for item in value]
    return value


@main.command("serve")
@_config_option
@_backend_option
@_state_option
@click.option("--listen", help="HOST:PORT for the CloudStack endpoint (default 0.0.0.0:8250, "
              "or HYPERV_AGENT_LISTEN).")
@click.option("--admin-listen", help="HOST:PORT for /healthz and /metrics (default "
              "127.0.0.1:9250).")
@click.option("--private-ip", help="This host's address on the management network.")
@_wsman_options
def serve(config_file: Path | None, backend: str | None, state_dir: Path | None,
          listen: str | None, admin_listen: str | None, private_ip: str | None,
          **wsman: Any) -> None:
    """Serve CloudStack's management server over HTTPS."""
    # Start-up builds what lives as long as the process (modules, the emulated host's
    # records): the cyclic collector has nothing to find there, so it is held off until the
    # agent is built, and what start-up built is kept out of its later passes.
    gc.disable()
    # The emulator and the reading of large reports run on threads beside the event loop;
    # when the loop needs the interpreter, such a thread yields it within this interval
    # (Python's default is 5 ms), so a ping is not held up behind a report.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    import asyncio

    from hyperv_agent import logs, service  # the server stack: loaded only to serve
    from hyperv_agent.backends import prepare_state
    from hyperv_agent.config import load_config

    config = None
    try:
        config = load_config(config_file, backend=backend, state_dir=state_dir, listen=listen,
                             admin_listen=admin_listen, private_ip=private_ip,
                             wsman=_wsman(**wsman))
        logs.setup(config.agent.log_level)
        prepare_state(config)
        agent = service.build_agent(config)
    except AgentError as error:
        _fail(error)
        return
    except OSError as error:  # a file of the state directory or a TLS file
        _fail(service.cannot_start(error, config.agent.state_dir if config is not None
                                   else None))
        return
    finally:
        gc.freeze()
        gc.enable()
    from hyperv_agent.connections import CannotListen

    try:
        asyncio.run(service.serve_until_signalled(agent))
    except CannotListen as error:
        _fail(ConfigError(f"cannot listen on {error.strerror or error}"))
    except OSError as error:  # not a listener's: a file, say, written as the agent serves
        _fail(ConfigError(f"stopped on an error: {system_said(error)}"))


main.add_command(doctor_command((_config_option, _backend_option, _state_option, _wsman_options),
                                lambda f, b, s, w: _load(f, b, s, _wsman(**w))))


@main.group("template")
def template_group() -> None:
    """Template disks for trying deployments."""


@template_group.command("make")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--size-mb", type=click.IntRange(1, 1024 * 1024), default=64, show_default=True,
              help="Virtual size of the disk.")
def template_make(path: Path, size_mb: int) -> None:
    """Write a small dynamic template disk at PATH (.vhd or .vhdx) with a labelled first
    sector, for `probe --deploy` and for trying copies by hand."""
    from hyperv_agent.emulator import vhd
    from hyperv_agent.emulator.template import make_template

    if path.exists():
        _fail(ConfigError(f"{path} exists; choose a new file name"))
        return
    try:
        info = make_template(path, size_mb * 1024 * 1024)
    except (vhd.VhdError, OSError) as error:
        _fail(ConfigError(f"cannot write {path}: {error}"))
        return
    click.echo(json.dumps({"path": str(path), "format": info.format.name,
                           "virtual_size_bytes": info.virtual_size_bytes,
                           "file_size_bytes": path.stat().st_size}))


def _addresses(context: click.Context, parameter: click.Parameter,
               values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an IP address") from None
    return values


@main.command("probe")
@click.argument("url", required=False)
@click.option("--private-ip", default="127.0.0.1", show_default=True,
              help="The address to register the host under (must be one of its NICs).")
@click.option("--deploy", is_flag=True,
              help="Play a whole deployment: copy a template, make a root volume, start, "
                   "report, stop and delete, one timed line per step.")
@click.option("--security-groups", is_flag=True,
              help="With --deploy: start the VM on a security-group network and program "
                   "its rules (applied, re-sent, a malformed one refused).")
@click.option("--secondary", metavar="URL",
              help="cifs:// image store holding the template (default: the share "
                   "'secondary' on the host's own name, as `serve` on the emulator offers).")
@click.option("--template", "template_path", metavar="PATH",
              help="The template's path on the image store (default: the one `serve` "
                   "puts on the emulated host's image store; `hyperv-agent template make` "
                   "writes one).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1, 3600), default=60.0,
              show_default=True, help="Seconds the whole run may take.")
@click.option("--hypervisor-version", "versions", multiple=True, default=("6.2",),
              show_default=True, help="A Hyperv row of the management server's "
              "hypervisor_capabilities table (repeat for several).")
@click.option("--ha-pool", metavar="URL",
              help="Register this shared primary pool (cifs://server/share?user=..&password=..)"
                   " as the management server does on every host of a cluster; the agent "
                   "stamps its HA heartbeat there.")
@click.option("--check-on-host", "suspects", metavar="IP", multiple=True,
              callback=_addresses,
              help="Ask the agent, as CloudStack's HA investigator does, whether the "
                   "neighbour at this private address is Up or Down (repeat for several).")
def probe_command(url: str | None, private_ip: str, deploy: bool, security_groups: bool,
                  secondary: str | None, template_path: str | None, timeout_s: float,
                  versions: tuple[str, ...], ha_pool: str | None,
                  suspects: tuple[str, ...]) -> None:
    """Play the management server against the agent at URL (default: the agent on this
    machine, https://127.0.0.1:8250 or HYPERV_AGENT_LISTEN) and check it is a drop-in.
    An agent still starting is waited for, within --timeout."""
    import asyncio

    from hyperv_agent import probe
    from hyperv_agent.config import local_agent_url
    from hyperv_agent.probe_deploy import DEFAULT_TEMPLATE, DeployPlan
    from hyperv_agent.probe_ha import HaPlan

    if security_groups and not deploy:
        _fail(ConfigError("--security-groups is a step of --deploy: give both"))
        return
    if deploy and (ha_pool or suspects):
        raise click.UsageError("--deploy and --ha-pool/--check-on-host are separate runs")
    plan = DeployPlan(secondary, template_path or DEFAULT_TEMPLATE,
                      security_groups=security_groups) if deploy else None
    ha = HaPlan(ha_pool, suspects) if ha_pool or suspects else None
    report = asyncio.run(probe.probe(url or local_agent_url(), private_ip, timeout_s, plan,
                                     versions, ha))
    click.echo(report.table())
    if not report.passed:
        broken = [f.rule for f in report.findings if not f.ok]
        click.echo(f"not a drop-in: broke {'; '.join(broken)}", err=True)
        sys.exit(1)


@main.group("emulator")
def emulator_group() -> None:
    """The embedded emulator, served to other programs."""


@emulator_group.command("wsman")
@click.option("--listen", required=True, help="HOST:PORT to serve WinRM on (port 0: any).")
@click.option("--state-dir", type=_FolderPath(path_type=Path), required=True,
              help="The emulated host's state directory.")
@_config_option
@click.option("--user", required=True, help="The account clients authenticate as.")
@click.option("--password", required=True, envvar="HYPERV_AGENT_EMULATOR_PASSWORD",
              help="Its password (or HYPERV_AGENT_EMULATOR_PASSWORD).")
@click.option("--tls", "use_tls", is_flag=True,
              help="HTTPS with the state directory's certificate (Negotiate and Basic); "
                   "without it, HTTP with Negotiate and message encryption.")
def emulator_wsman(listen: str, state_dir: Path, config_file: Path | None, user: str,
                   password: str, use_tls: bool) -> None:
    """Serve the emulated Hyper-V host over WS-Management, as a Windows host serves WinRM."""
    import asyncio

    from hyperv_agent import logs, winrm_face
    from hyperv_agent.config import load_config
    from hyperv_agent.emulator.winrm.auth import Account

    async def run() -> None:
        config = load_config(config_file, backend="emulator", state_dir=state_dir)
        logs.setup(config.agent.log_level)
        face = await winrm_face.start_face(config, host, int(port), Account(user, password),
                                           use_tls, setting="--listen")
        click.echo(json.dumps({"url": face.url, "host": config.emulator.host_name,
                               "certificate_sha256": face.fingerprint}))
        await winrm_face.serve_until_signalled(face)

    from hyperv_agent.connections import CannotListen

    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        _fail(ConfigError(f"--listen {listen!r} is not HOST:PORT"))
        return
    if int(port) > 65535:
        _fail(ConfigError(f"--listen {listen!r}: the port must be from 0 (any) to 65535"))
        return
    try:
        asyncio.run(run())
    except AgentError as error:
        _fail(error)
    except CannotListen as error:
        _fail(ConfigError(f"cannot listen on {error.strerror or error}"))
    except OSError as error:  # not the listener's: a file of the state directory, say
        _fail(ConfigError(f"stopped on an error: {system_said(error)}"))


if __name__ == "__main__":  # pragma: no cover
    main()
