"""Composition root: reads configuration, picks the backend, wires and runs.

``hyperv-agent cim query`` and ``hyperv-agent cim invoke`` are diagnostics that work
against any backend, the way Get-CimInstance and Invoke-CimMethod do on a host.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from aiohttp import web

from hyperv_agent import logs, probe, server, tls
from hyperv_agent.cim import counting
from hyperv_agent.cim.api import V2_NAMESPACE, Cim, CimInstance, InValue, ObjectPath, OutValue
from hyperv_agent.cim.counting import CountingCim
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel
from hyperv_agent.emulator.files import EmulatedFiles
from hyperv_agent.errors import AgentError, ConfigError
from hyperv_agent.handlers.dispatch import Dispatch
from hyperv_agent.handlers.host import HostHandlers, HostSettings
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.hostfs.local import LocalFiles
from hyperv_agent.hyperv import host as hyperv_host
from hyperv_agent.metrics import Metrics

_T = TypeVar("_T")
log = logging.getLogger("hyperv_agent")


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


def open_files(config: AgentConfig, cim: Cim) -> HostFiles:
    """File access on the host the backend drives."""
    if isinstance(cim, EmulatorCim):
        return EmulatedFiles(cim.host)
    return LocalFiles()


@dataclass
class Agent:
    """A wired agent: backend, dispatcher, metrics and TLS identity."""

    config: AgentConfig
    cim: Cim
    dispatch: Dispatch
    metrics: Metrics
    identity: tls.Identity

    def app(self) -> web.Application:
        allow = [ipaddress.ip_network(n, strict=False) for n in self.config.agent.allow_from]
        return server.make_app(self.dispatch, allow_from=allow,
                               max_body_bytes=self.config.agent.max_request_bytes)

    def admin_app(self) -> web.Application:
        async def healthy() -> bool:
            try:
                await hyperv_host.switch_names(self.cim)
            except AgentError:
                return False
            return True

        return server.make_admin_app(self.metrics, healthy)

    def ssl_context(self) -> ssl.SSLContext:
        return tls.server_context(self.identity, self.config.agent.tls_client_ca)


def build_agent(config: AgentConfig) -> Agent:
    """Everything ``serve`` runs, wired from the configuration."""
    agent = config.agent
    cim = CountingCim(open_backend(config))
    settings = HostSettings(private_ip=agent.private_ip,
                            dom0_min_memory_mb=agent.dom0_min_memory_mb,
                            root_device_reserved_bytes=agent.root_device_reserved_bytes,
                            root_device=agent.root_device_name,
                            local_pool_path=agent.local_storage_path)
    handlers = HostHandlers(cim, open_files(config, cim.inner), settings).table()
    metrics = Metrics()
    identity = tls.ensure_identity(agent.state_dir, agent.tls_cert, agent.tls_key)
    return Agent(config, cim, Dispatch(handlers, metrics, counting.count), metrics, identity)


async def run_agent(agent: Agent, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set."""
    runners = [
        await server.start(agent.app(), server.Listener.parse(agent.config.agent.listen),
                           agent.ssl_context()),
        await server.start(agent.admin_app(),
                           server.Listener.parse(agent.config.agent.admin_listen), None),
    ]
    log.info("serving CloudStack on https://%s, admin on http://%s, certificate SHA-256 %s",
             agent.config.agent.listen, agent.config.agent.admin_listen,
             agent.identity.sha256_fingerprint)
    try:
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()
        await agent.cim.close()


# --- click plumbing -----------------------------------------------------------------------


def _run(work: Callable[[Cim], Awaitable[_T]], config: AgentConfig) -> _T:
    async def main() -> _T:
        cim = open_backend(config)
        try:
            return await work(cim)
        finally:
            await cim.close()

    return asyncio.run(main())


def _fail(error: AgentError) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(2)


@click.group()
@click.version_option(package_name="hyperv-agent")
def main() -> None:
    """CloudStack agent for Microsoft Hyper-V."""


@main.group()
def cim() -> None:
    """Diagnostics against the CIM backend (like Get-CimInstance / Invoke-CimMethod)."""


_config_option = click.option("--config", "config_file", type=click.Path(path_type=Path),
                              help="TOML configuration file.")
_backend_option = click.option("--backend", type=click.Choice(["emulator", "wmi", "wsman"]),
                               help="CIM backend (default: from the configuration).")
_state_option = click.option("--state-dir", type=click.Path(path_type=Path),
                             help="State directory (default: from the configuration).")


def _load(config_file: Path | None, backend: str | None, state_dir: Path | None) -> AgentConfig:
    try:
        return load_config(config_file, backend=backend, state_dir=state_dir)
    except ConfigError as error:
        _fail(error)
        raise  # unreachable: _fail exits


@cim.command("query")
@_config_option
@_backend_option
@_state_option
@click.option("--namespace", default=V2_NAMESPACE, show_default=True)
@click.argument("wql")
def cim_query(config_file: Path | None, backend: str | None, state_dir: Path | None,
              namespace: str, wql: str) -> None:
    """Print the instances WQL selects as a JSON array."""
    config = _load(config_file, backend, state_dir)
    try:
        instances = _run(lambda c: c.query(wql, namespace), config)
    except AgentError as error:
        _fail(error)
        return
    click.echo(json.dumps([instance_json(i) for i in instances], indent=2))


@cim.command("invoke")
@_config_option
@_backend_option
@_state_option
@click.argument("path")
@click.argument("method")
@click.argument("params", nargs=-1)
def cim_invoke(config_file: Path | None, backend: str | None, state_dir: Path | None,
               path: str, method: str, params: tuple[str, ...]) -> None:
    """Call METHOD on the instance at PATH with Name=Value parameters; print out-parameters."""
    config = _load(config_file, backend, state_dir)
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
@click.option("--listen", help="HOST:PORT for the CloudStack endpoint (default 0.0.0.0:8250).")
@click.option("--admin-listen", help="HOST:PORT for /healthz and /metrics (default "
              "127.0.0.1:9250).")
@click.option("--private-ip", help="This host's address on the management network.")
def serve(config_file: Path | None, backend: str | None, state_dir: Path | None,
          listen: str | None, admin_listen: str | None, private_ip: str | None) -> None:
    """Serve CloudStack's management server over HTTPS."""
    try:
        config = load_config(config_file, backend=backend, state_dir=state_dir, listen=listen,
                             admin_listen=admin_listen, private_ip=private_ip)
        logs.setup(config.agent.log_level)
        agent = build_agent(config)
    except AgentError as error:
        _fail(error)
        return
    try:
        asyncio.run(_serve_until_signalled(agent))
    except OSError as error:
        _fail(ConfigError(f"cannot listen: {error.strerror or error}"))


async def _serve_until_signalled(agent: Agent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for name in ("SIGINT", "SIGTERM"):
        if hasattr(signal, name):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(getattr(signal, name), stop.set)
    await run_agent(agent, stop)


@main.command("probe")
@click.argument("url")
@click.option("--private-ip", default="127.0.0.1", show_default=True,
              help="The address to register the host under (must be one of its NICs).")
def probe_command(url: str, private_ip: str) -> None:
    """Play the management server against the agent at URL and check it is a drop-in."""
    report = asyncio.run(probe.probe(url, private_ip))
    click.echo(report.table())
    if not report.passed:
        broken = [f.rule for f in report.findings if not f.ok]
        click.echo(f"not a drop-in: broke {'; '.join(broken)}", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
