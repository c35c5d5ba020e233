"""Storage pools: Modify/Create/DeleteStoragePoolCommand and GetStorageStatsCommand (§5.3).

A Filesystem pool is a folder on the host; an SMB pool a share, reached by its UNC path.
Registering a shared pool records its root so statistics can find it later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.answers import Answer, GetStorageStatsAnswer, ModifyStoragePoolAnswer
from hyperv_agent.cloudstack.base import Command
from hyperv_agent.cloudstack.commands_storage import (
    DeleteStoragePoolCommand,
    GetStorageStatsCommand,
    ModifyStoragePoolCommand,
)
from hyperv_agent.cloudstack.storage_objects import StoragePoolInfo
from hyperv_agent.errors import AgentError
from hyperv_agent.handlers.dispatch import Handler, Result
from hyperv_agent.hostfs import locations
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.state import PoolRegistry

log = logging.getLogger("hyperv_agent.handlers.storage")
SHARED_TYPES = frozenset({"SMB", "NetworkFilesystem"})


@dataclass(frozen=True)
class Reservation:
    """Space held back on the host's root volume (the C# agent's RootDevice settings)."""

    root_device: str = "c:\\"
    reserved_bytes: int = 4 * 1024**3


async def pool_usage(files: HostFiles, path: str, reservation: Reservation) -> tuple[int, int]:
    """Capacity and free bytes of the volume holding ``path``, less the reservation when it
    is the root volume."""
    usage = await files.usage(path)
    reserve = reservation.reserved_bytes if path.lower().startswith(
        reservation.root_device.lower()) else 0
    return max(0, usage.total_bytes - reserve), max(0, usage.free_bytes - reserve)


class StorageHandlers:
    def __init__(self, files: HostFiles, registry: PoolRegistry, reservation: Reservation) -> None:
        self.files = files
        self.registry = registry
        self.reservation = reservation

    def table(self) -> dict[str, Handler]:
        return {
            names.MODIFY_STORAGE_POOL_COMMAND: self.modify_pool,
            names.CREATE_STORAGE_POOL_COMMAND: self.create_pool,
            names.DELETE_STORAGE_POOL_COMMAND: self.delete_pool,
            names.GET_STORAGE_STATS_COMMAND: self.storage_stats,
        }

    async def modify_pool(self, command: Command) -> Result:
        """``add``: check the pool is reachable, measure it and remember a shared one;
        otherwise forget it. Safe to repeat; the pool's files are never touched."""
        assert isinstance(command, ModifyStoragePoolCommand)
        pool = command.pool
        pool_type = str(pool.type or "")
        try:
            root = self._root(pool_type, pool.host or "", command.local_path or pool.path or "")
            total, free = await self._measure(root)
        except AgentError as error:
            return Answer(result=False, details=(
                f"Failed to add storage pool {pool.uuid}, please verify your pool details: "
                f"{error}"))
        self._remember(pool.uuid, pool_type, root, command.add)
        info = StoragePoolInfo(host=pool.host, host_path=_without_query(pool.path),
                               local_path=root, pool_type=pool_type or None,
                               capacity_bytes=total, available_bytes=free)
        return ModifyStoragePoolAnswer(result=True, local_path=root, pool_info=info)

    def _root(self, pool_type: str, host: str, path: str) -> str:
        """The pool's root; a share's credentials are registered before it is touched."""
        if pool_type in SHARED_TYPES:
            location = locations.from_primary_store(host, path, "SMB")
        elif pool_type == "Filesystem":
            location = locations.from_primary_store(host, path, "Filesystem")
        else:
            raise AgentError(f"pool type {pool_type or 'none'} is not supported on Hyper-V")
        if isinstance(location, locations.ShareLocation):
            self.files.use_credentials(location)
        return location.root

    async def _measure(self, root: str) -> tuple[int, int]:
        if not await self.files.exists(root):
            raise AgentError(f"{root} cannot be reached from this host")
        return await pool_usage(self.files, root, self.reservation)

    def _remember(self, pool_uuid: str | None, pool_type: str, root: str, add: bool) -> None:
        if not pool_uuid or pool_type not in SHARED_TYPES:
            return
        if add:
            self.registry.put(pool_uuid, root)
        else:
            self.registry.remove(pool_uuid)

    async def create_pool(self, command: Command) -> Result:
        return Answer(result=True, details="success - NOP")

    async def delete_pool(self, command: Command) -> Result:
        """Forgets a shared pool; its files are never deleted. An unknown pool is fine."""
        assert isinstance(command, DeleteStoragePoolCommand)
        if command.pool is not None and command.pool.uuid:
            self.registry.remove(command.pool.uuid)
        return Answer(result=True, details="storage pool forgotten; its files are kept")

    async def storage_stats(self, command: Command) -> Result:
        """Capacity and use of a pool: a Filesystem pool by its path, a shared pool by the
        root recorded when it was registered. Read-only."""
        assert isinstance(command, GetStorageStatsCommand)
        pool_type = str(command.pool_type or "")
        root = self._stats_root(pool_type, command)
        if root is None:
            return GetStorageStatsAnswer(result=False, details=(
                f"pool {command.pool_uuid} ({pool_type or 'no type'}) is not registered on "
                "this host; send ModifyStoragePoolCommand first"))
        total, free = await pool_usage(self.files, root, self.reservation)
        return GetStorageStatsAnswer(result=True, capacity_bytes=total, used_bytes=total - free)

    def _stats_root(self, pool_type: str, command: GetStorageStatsCommand) -> str | None:
        if pool_type == "Filesystem" and command.local_path:
            return locations.from_primary_store("", command.local_path, "Filesystem").root
        if pool_type in SHARED_TYPES and command.pool_uuid:
            return self.registry.get(command.pool_uuid)
        return None


def _without_query(path: str | None) -> str | None:
    """The pool path without its ``?user=..&password=..`` query."""
    return path.split("?", 1)[0] if path else path
