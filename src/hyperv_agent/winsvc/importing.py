"""``service import-config``: the C# agent's settings written as a valid ``agent.toml``,
its SMB pools put in the agent's pool registry.

The file is checked with the agent's own :func:`load_config` before it replaces anything;
an existing ``agent.toml`` is replaced only when asked, and kept as ``agent.toml.bak``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hyperv_agent import state
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.errors import ConfigError
from hyperv_agent.state import PoolRegistry, RegisteredPool
from hyperv_agent.winsvc import csharp, tomltext

POOLS_FILE = "pools.json"


@dataclass(frozen=True)
class Imported:
    """What an import wrote: the configuration file (None: printed only), its text, the
    validated configuration, and the pool registry the pools went to (None: no pools)."""

    config_file: Path | None
    text: str
    config: AgentConfig
    pools_file: Path | None
    translation: csharp.Translation


def render(translation: csharp.Translation, source: str, state_dir: str | None) -> str:
    """The agent.toml text: carried settings with their C# names as comments, then the
    pools and every setting left behind, as comments."""
    lines = [tomltext.comment(f"hyperv-agent settings carried over from the C# agent's "
                              f"{source} by `hyperv-agent service import-config`."),
             "", "[agent]"]
    if state_dir:
        lines.append(tomltext.line("state_dir", state_dir))
    lines += [tomltext.line(c.key, c.value, f"from {c.source}") for c in translation.agent]
    if translation.pools:
        lines += ["", tomltext.comment(f"SMB pools, kept in the state directory's {POOLS_FILE}:")]
        lines += [tomltext.comment(f"{pool_uuid} = {root}")
                  for pool_uuid, root in translation.pools]
    if translation.dropped:
        lines += ["", tomltext.comment("Settings of the C# agent not carried over:")]
        lines += [tomltext.comment(f"{d.setting}: {d.reason}") for d in translation.dropped]
    return "\n".join(lines) + "\n"


def import_config(source: Path, output: Path | None, state_dir: str | None = None,
                  force: bool = False) -> Imported:
    """Read ``source``, write ``output`` (None: only render and validate) and register the
    pools in the configured state directory. ConfigError, one line, when the source is
    unreadable, ``output`` exists without ``force``, or the result does not validate;
    nothing is written then."""
    translation = csharp.translate(csharp.read(source))
    text = render(translation, str(source), state_dir)
    if output is not None and output.exists() and not force:
        raise ConfigError(f"{output} exists; add --force to replace it (the old file is "
                          f"kept as {output.name}.bak)")
    config = _validated(text, output.parent if output else None, source)
    if output is None:
        return Imported(None, text, config, None, translation)
    # a running agent writes pools.json from what it holds in memory: the pools would be
    # lost at its next change, so the state directory is held first, or nothing is written
    lock = state.hold(config.agent.state_dir, "stop the agent (hyperv-agent service stop) "
                      "and import again") if translation.pools else None
    try:
        _replace(output, text)
        pools_file = _register_pools(config, translation) if translation.pools else None
    finally:
        if lock is not None:
            lock.release()
    return Imported(output, text, config, pools_file, translation)


def _validated(text: str, folder: Path | None, source: Path) -> AgentConfig:
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=folder, prefix=".agent-", suffix=".toml")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        return load_config(Path(name))
    except ConfigError as error:
        problem = str(error).replace(f"config file {name}", "configuration")
        raise ConfigError(f"the settings carried over from {source} do not validate: "
                          f"{problem}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            Path(name).unlink()


def _replace(output: Path, text: str) -> None:
    handle, name = tempfile.mkstemp(dir=output.parent, prefix=".agent-", suffix=".toml")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    if output.exists():
        shutil.copy2(output, output.with_name(output.name + ".bak"))
    Path(name).replace(output)


def _register_pools(config: AgentConfig, translation: csharp.Translation) -> Path:
    path = config.agent.state_dir / POOLS_FILE
    registry = PoolRegistry(path)
    for pool_uuid, root in translation.pools:
        registry.put(pool_uuid, RegisteredPool.from_root(root))
    return path
