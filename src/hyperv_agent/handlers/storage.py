"""Storage pools: Modify/Create/DeleteStoragePoolCommand and GetStorageStatsCommand (§5.3).

A Filesystem pool is a folder on the host: ``localPath`` of the command, as the C# agent
takes it. An SMB (or NetworkFilesystem) pool is a share: ``\\<pool.host>`` + ``pool.path``
without its ``?user=..&password=..&domain=..`` query, never ``localPath``, which the
management server always sends as the Linux mount point ``/mnt//<uuid>``. The credentials
of the query are handed to the host's file access (in memory) before the share is
touched. Registering a shared pool records it in the ``PoolRegistry``, where statistics,
heartbeats, HA checks and template eviction find it later.
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
from hyperv_agent.cloudstack.storage_objects import StorageFilerTO, StoragePoolInfo
from hyperv_agent.errors import AgentError, InvalidRequest
from hyperv_agent.handlers.dispatch import Handler, Result, expect
from hyperv_agent.hostfs import locations
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.state import SHARED_TYPES, PoolRegistry, RegisteredPool, without_query

log = logging.getLogger("hyperv_agent.handlers.storage")


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
        """``add``: reach the pool, measure it and register a shared one; otherwise forget
        it (without touching it). Safe to repeat; the pool's files are never touched. A
        pool that cannot be reached: a failed answer naming it, nothing registered."""
        asked = expect(command, ModifyStoragePoolCommand)
        pool = asked.pool
        try:
            location = self._location(pool, asked.local_path)
            total, free = await self._measure(location.root) if asked.add else (0, 0)
        except AgentError as error:
            raise AgentError(f"Failed to add storage pool {pool.uuid}, please verify your "
                             f"pool details: {error}") from error
        self._remember(pool, location.root, asked.add)
        info = StoragePoolInfo(host=pool.host, host_path=without_query(pool.path),
                               local_path=location.root, pool_type=pool.type or None,
                               capacity_bytes=total, available_bytes=free)
        return ModifyStoragePoolAnswer(result=True, pool_info=info)

    def _location(self, pool: StorageFilerTO, local_path: str | None) -> locations.PoolLocation:
        """Where the pool is; a share's credentials are handed over before it is touched."""
        pool_type = str(pool.type or "")
        if pool_type in SHARED_TYPES:
            location = locations.from_primary_store(pool.host or "", pool.path or "", "SMB")
        elif pool_type == "Filesystem":
            location = locations.from_primary_store("", local_path or pool.path or "",
                                                    "Filesystem")
        else:
            raise InvalidRequest(f"pool type {pool_type or 'none'} is not supported on Hyper-V")
        if isinstance(location, locations.ShareLocation):
            self.files.use_credentials(location)
        return location

    async def _measure(self, root: str) -> tuple[int, int]:
        if not await self.files.exists(root):
            raise InvalidRequest(f"{root} cannot be reached from this host")
        return await pool_usage(self.files, root, self.reservation)

    def _remember(self, pool: StorageFilerTO, root: str, add: bool) -> None:
        pool_type = str(pool.type or "")
        if not pool.uuid or pool_type not in SHARED_TYPES:
            return
        if add:
            self.registry.put(pool.uuid, RegisteredPool(
                root=root, pool_type=pool_type, host=pool.host or "",
                path=without_query(pool.path)))
        else:
            self.registry.remove(pool.uuid)

    async def create_pool(self, command: Command) -> Result:
        return Answer(result=True, details="success - NOP")

    async def delete_pool(self, command: Command) -> Result:
        """Forgets the pool ``_pool``: statistics, heartbeats and HA checks no longer use
        it. Its files are never deleted. An unknown pool is fine (a repeat is safe)."""
        asked = expect(command, DeleteStoragePoolCommand)
        pool_uuid = asked.pool.uuid if asked.pool is not None else None
        if not pool_uuid:
            raise InvalidRequest("_pool.uuid is missing: no pool to forget")
        if self.registry.remove(pool_uuid):
            return Answer(result=True, details=f"storage pool {pool_uuid} forgotten; its files "
                                               "are kept")
        return Answer(result=True, details=f"storage pool {pool_uuid} was not registered on "
                                           "this host; nothing to forget")

    async def storage_stats(self, command: Command) -> Result:
        """Capacity and use of a pool: a Filesystem pool by its path, a shared pool by the
        root recorded when it was registered. Read-only."""
        asked = expect(command, GetStorageStatsCommand)
        pool_type = str(asked.pool_type or "")
        root = self._stats_root(pool_type, asked)
        if root is None:
            raise InvalidRequest(f"pool {asked.pool_uuid} ({pool_type or 'no type'}) is not "
                                 "registered on this host; ModifyStoragePoolCommand "
                                 "registers it")
        total, free = await pool_usage(self.files, root, self.reservation)
        return GetStorageStatsAnswer(result=True, capacity_bytes=total, used_bytes=total - free)

    def _stats_root(self, pool_type: str, command: GetStorageStatsCommand) -> str | None:
        if pool_type == "Filesystem" and command.local_path:
            return locations.from_primary_store("", command.local_path, "Filesystem").root
        registered = self.registry.get(command.pool_uuid) if command.pool_uuid else None
        return registered.root if registered is not None else None
