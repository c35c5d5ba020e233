"""Composition root: reads configuration, picks the backend, wires and runs.

``hyperv-agent cim query`` and ``hyperv-agent cim invoke`` are diagnostics that work
against any backend, the way Get-CimInstance and Invoke-CimMethod do on a host.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from hyperv_agent.cim.api import V2_NAMESPACE, Cim, CimInstance, InValue, ObjectPath, OutValue
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel
from hyperv_agent.errors import AgentError, ConfigError

_T = TypeVar("_T")


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


if __name__ == "__main__":  # pragma: no cover
    main()
