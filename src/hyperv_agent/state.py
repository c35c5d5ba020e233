"""The agent's own small persistent state (not the host's): registered storage pools.

Kept as a JSON file in the state directory, replaced atomically on every change, so the
registry survives a restart and is never half-written. Credentials are never stored: a
pool is remembered by its root (a local folder or a UNC path) only.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path


class PoolRegistry:
    """Pool uuid -> root path of every shared pool this host was told to use."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._pools: dict[str, str] = self._read()

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def get(self, pool_uuid: str) -> str | None:
        return self._pools.get(pool_uuid.lower())

    def roots(self) -> tuple[str, ...]:
        return tuple(self._pools.values())

    def put(self, pool_uuid: str, root: str) -> None:
        with self._lock:
            self._pools[pool_uuid.lower()] = root
            self._write()

    def remove(self, pool_uuid: str) -> None:
        with self._lock:
            if self._pools.pop(pool_uuid.lower(), None) is not None:
                self._write()

    def _write(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self._path.parent, prefix=".pools-")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(self._pools, out, indent=1, sort_keys=True)
        Path(temporary).replace(self._path)
