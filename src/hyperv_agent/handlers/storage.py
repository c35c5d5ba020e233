"""Storage pools: Modify/Create/DeleteStoragePoolCommand and GetStorageStatsCommand (protocol §5.3).

A Filesystem pool is a folder on the host: ``localPath`` of the command, as the C# agent
takes it. An SMB (or NetworkFilesystem) pool is a share: ``\\<pool.host>`` + ``pool.path``
without its ``?user=..&password=..&domain=..`` query, never ``localPath``, which the
management server always sends as the Linux mount point ``/mnt//<uuid>``. The credentials
are handed to the host's file access before the share is touched: those of the path's
query (bodies of older management servers), else the ``user``, ``password`` and ``domain``
of the command's ``details``, which is where a CloudStack 4.22 management server sends
them (``StoragePoolVO.getPath`` strips the query of any path holding a password), unless
``[agent.smb_credentials]`` names an account for the server: the operator's choice wins.
A management server that encrypts its database sends that password encrypted, and the
file server refuses it: the failed answer says so and names the setting to use instead.
Registering a pool records it in the ``PoolRegistry``, where every later command finds its
root (``handlers.datapaths`` serves paths below registered roots only), and statistics,
heartbeats, HA checks and template eviction find shared ones. Where the file access uses
a share's credentials (smbprotocol, off Windows), the registry keeps them too, in a file of
their own in the state directory (``state.CREDENTIALS_FILE``), and they are handed to the
file access again when the agent starts: the management server sends them only when the
host connects, not to an agent restarted between two of its pings. An account configured
for the server since (``[agent.smb_credentials]``) wins over them, as over the details.

A root is registered as its path names it: a path with a ``.`` or ``..`` segment is refused,
not resolved (``locations.root_to_register``), and so is a path that names a file, not a
folder. The local pool (``local_storage_path``) is the configuration's: under its uuid (the
one the startup reply reports) no other root is registered. Any other folder or share the
management server names is its to register.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.answers import Answer, GetStorageStatsAnswer, ModifyStoragePoolAnswer
from hyperv_agent.cloudstack.commands_storage import (
    CreateStoragePoolCommand,
    DeleteStoragePoolCommand,
    GetStorageStatsCommand,
    ModifyStoragePoolCommand,
)
from hyperv_agent.cloudstack.storage_objects import StorageFilerTO, StoragePoolInfo
from hyperv_agent.errors import AgentError, HostFileError, InvalidRequest, LogonRefused
from hyperv_agent.handlers.datapaths import REREGISTER_HINT
from hyperv_agent.handlers.dispatch import Result, Route, Routes
from hyperv_agent.handlers.heartbeat import Heartbeats
from hyperv_agent.handlers.locks import NamedLocks
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
    is the root volume. When it cannot be measured and ``path`` is not seen either: a
    HostFileError saying the folder does not exist or cannot be reached, not the OS's
    text (Windows reports a share whose server is down, or that was taken away, as a path
    not found). 1 call (+ 1 when it cannot be measured)."""
    try:
        usage = await files.usage(path)
    except LogonRefused:
        raise
    except HostFileError:
        if not await files.exists(path):
            raise HostFileError(f"the folder {path} does not exist or cannot be reached from "
                                "this host, so it cannot be measured") from None
        raise
    reserve = reservation.reserved_bytes if path.lower().startswith(
        reservation.root_device.lower()) else 0
    return max(0, usage.total_bytes - reserve), max(0, usage.free_bytes - reserve)


class StorageHandlers:
    def __init__(self, files: HostFiles, registry: PoolRegistry, reservation: Reservation,
                 heartbeats: Heartbeats | None = None) -> None:
        self.files = files
        self.registry = registry
        self.reservation = reservation
        self.heartbeats = heartbeats  # a shared pool is stamped as soon as it is registered
        # commands on one pool (by uuid) run in the order they came: an add still reaching
        # its share is never overtaken by a later remove, which it would then undo
        self.pool_locks = NamedLocks()
        # before anything reaches a share (the first heartbeat, the sweep of aside files)
        for share in registry.kept_shares():
            files.use_kept_credentials(share)
        files.on_password_accepted(self._follow_logon)  # what is kept follows logons

    def _follow_logon(self, server: str, account: locations.Credentials) -> None:
        """A logon to ``server`` took ``account``'s password: kept for every pool of that
        user there, and handed to the file access for those whose kept one changed (a
        pool whose older password was refused after a restart has no account of its own
        left; reached only through a session of its user left open, it would be lost
        with the next reconnect once the pool it shares the account with is removed)."""
        for share in self.registry.follow_logon(server, account):
            self.files.use_kept_credentials(share)

    def table(self) -> Routes:
        return {
            names.MODIFY_STORAGE_POOL_COMMAND: Route(ModifyStoragePoolCommand, self.modify_pool),
            names.CREATE_STORAGE_POOL_COMMAND: Route(CreateStoragePoolCommand, self.create_pool),
            names.DELETE_STORAGE_POOL_COMMAND: Route(DeleteStoragePoolCommand, self.delete_pool),
            names.GET_STORAGE_STATS_COMMAND: Route(GetStorageStatsCommand, self.storage_stats),
        }

    async def modify_pool(self, asked: ModifyStoragePoolCommand) -> Result:
        """``add``: reach the pool, measure it and register it; otherwise forget it by its
        uuid (``_forget``). Safe to repeat; the pool's files are never touched. A pool
        that cannot be reached: a failed answer naming it, nothing registered."""
        pool = asked.pool
        if not asked.add:
            return await self._forget_on_remove(pool)
        root, total, free = await self._modify(asked, pool)
        info = StoragePoolInfo(host=pool.host, host_path=without_query(pool.path),
                               local_path=root, pool_type=pool.type or None,
                               capacity_bytes=total, available_bytes=free)
        return ModifyStoragePoolAnswer(result=True, pool_info=info)

    async def _forget_on_remove(self, pool: StorageFilerTO) -> Result:
        """ModifyStoragePoolCommand without ``add``, which the management server sends to
        every host of a pool's cluster when the pool goes into maintenance (the local
        pools of other hosts included, and pools a host could not register). Only the
        uuid is read: the pool's host and path are not parsed, its share not reached and
        its credentials not offered, so a pool this agent never took (a Filesystem pool
        named by the ``/mnt//<uuid>`` mount point, a type it cannot use) is forgotten as
        an unknown one, not refused as a failed registration."""
        if not pool.uuid:
            raise InvalidRequest("pool.uuid is missing: no pool to forget")
        forgotten = await self._forget(pool.uuid)
        info = StoragePoolInfo(host=pool.host, host_path=without_query(pool.path),
                               local_path=forgotten, pool_type=pool.type or None)
        return ModifyStoragePoolAnswer(result=True, pool_info=info,
                                       details=self._forgotten_details(pool.uuid, forgotten))

    async def _forget(self, pool_uuid: str) -> str | None:
        """Forget the pool ``pool_uuid`` (in order with other commands on it): the root it
        had, None when it was not registered. Its files are never touched."""
        async with self.pool_locks.hold(pool_uuid):
            registered = self.registry.get(pool_uuid)
            forgotten = self.registry.remove(pool_uuid)
            if not forgotten or registered is None:
                return None
            self._forget_account(registered.root)
        return registered.root

    def _forget_account(self, root: str) -> None:
        """The file access forgets the account of a forgotten pool's share folder (or of
        the folder a pool registered again elsewhere left), unless another registered pool
        (under another uuid) has that folder too: a removed pool's account must not go on
        reaching its folder, nor count among the accounts of an image store beside it."""
        if self.registry.by_root(root) is not None:
            return
        location = locations.from_primary_store("", root, "Filesystem")
        if isinstance(location, locations.ShareLocation):
            self.files.forget_credentials(location)

    def _forgotten_details(self, pool_uuid: str, forgotten: str | None) -> str:
        if forgotten is not None:
            return f"storage pool {pool_uuid} forgotten; its files are kept"
        if self.registry.is_local(pool_uuid):
            return (f"storage pool {pool_uuid} is this host's local pool (local_storage_path "
                    "in the agent's configuration); it stays in use")
        return f"storage pool {pool_uuid} was not registered on this host; nothing to forget"

    async def _modify(self, asked: ModifyStoragePoolCommand, pool: StorageFilerTO
                      ) -> tuple[str, int, int]:
        """Register the pool: its root, capacity and free bytes. Every later command finds
        it by its uuid: a pool without one is refused, not measured and left unregistered."""
        if not pool.uuid:
            raise InvalidRequest("pool.uuid is missing: a pool is registered under its uuid")
        async with self.pool_locks.hold(pool.uuid):
            return await self._modify_held(asked, pool, pool.uuid)

    async def _modify_held(self, asked: ModifyStoragePoolCommand, pool: StorageFilerTO,
                           pool_uuid: str) -> tuple[str, int, int]:
        from_details: locations.ShareLocation | None = None  # a share given its account
        try:
            location = self._location(pool, asked.local_path, asked.details)
            if isinstance(location, locations.ShareLocation) and location.from_details:
                from_details = location
            self._refuse_moving_the_local_pool(pool_uuid, location.root)
            total, free = await self._measure(location.root)
        except AgentError as error:
            raise AgentError(f"Failed to add storage pool {pool.uuid}, please verify your "
                             f"pool details: {error}"
                             f"{_encrypted_hint(error, from_details)}") from error
        earlier = self.registry.get(pool_uuid)
        self._remember(pool_uuid, pool, location)
        if earlier is not None and not locations.same_folder(earlier.root, location.root):
            self._forget_account(earlier.root)  # the pool moved: its old folder is left
        if self.heartbeats is not None and str(pool.type or "") in SHARED_TYPES:
            await self.heartbeats.stamp(location.root)
        return location.root, total, free

    def _location(self, pool: StorageFilerTO, local_path: str | None,
                  details: dict[str, str] | None) -> locations.PoolLocation:
        """Where the pool is; a share's credentials are handed over before it is touched."""
        pool_type = str(pool.type or "")
        if pool_type in SHARED_TYPES:
            location = locations.root_to_register(pool.host or "", pool.path or "", "SMB")
            if isinstance(location, locations.ShareLocation):
                location = self._with_details_account(location, details)
        elif pool_type == "Filesystem":
            location = locations.root_to_register("", local_path or pool.path or "",
                                                  "Filesystem")
        else:
            raise InvalidRequest(f"pool type {pool_type or 'none'} is not supported on Hyper-V")
        if isinstance(location, locations.ShareLocation):
            self.files.use_credentials(location)
        return location

    def _with_details_account(self, share: locations.ShareLocation,
                              details: dict[str, str] | None) -> locations.ShareLocation:
        """``share`` with the account of the command's ``details`` when its path carries
        none, the file access reaches its server with accounts (smbprotocol) and
        ``[agent.smb_credentials]`` names none for that server."""
        if share.credentials is not None or not self.files.takes_pool_accounts(share.server):
            return share
        account = locations.details_credentials(details, share.server)
        return share if account is None else replace(share, credentials=account,
                                                     from_details=True)

    def _refuse_moving_the_local_pool(self, pool_uuid: str, root: str) -> None:
        """The local pool's uuid names the configured folder only."""
        refusal = self.registry.local_refusal(pool_uuid, root)
        if refusal is not None:
            raise InvalidRequest(refusal)

    async def _measure(self, root: str) -> tuple[int, int]:
        found = await self.files.stat(root)
        if found is None:
            raise InvalidRequest(f"{root} cannot be reached from this host")
        if not found.is_dir:
            raise InvalidRequest(f"{root} is a file, not a folder: a pool's root is a folder")
        return await pool_usage(self.files, root, self.reservation)

    def _remember(self, pool_uuid: str, pool: StorageFilerTO,
                  location: locations.PoolLocation) -> None:
        pool_type = str(pool.type or "")
        self.registry.put(pool_uuid, RegisteredPool(
            root=location.root, pool_type=pool_type, host=pool.host or "",
            path=without_query(pool.path)), self._credentials_to_keep(location))

    def _credentials_to_keep(self, location: locations.PoolLocation
                             ) -> locations.Credentials | None:
        """The credentials of a share the file access reaches with them (smbprotocol); None
        for one it reaches natively, as the host's own identity (a Windows host, the
        emulator's mapped folders): those are never kept."""
        if not isinstance(location, locations.ShareLocation):
            return None
        if self.files.smb_for(location.server) is None:
            return None
        return location.credentials

    async def create_pool(self, asked: CreateStoragePoolCommand) -> Result:
        """With a pool to add, registered as ModifyStoragePoolCommand registers it; one that
        cannot be registered is left to ModifyStoragePoolCommand, which the management server
        sends to every host of the pool, and the answer is the C# agent's success ("NOP"),
        which the management server needs to keep the pool."""
        if asked.pool is None or not asked.add:
            return Answer(result=True, details="success - NOP")
        try:
            root, _, _ = await self._modify(asked, asked.pool)
        except AgentError as error:
            return Answer(result=True, details=f"success - NOP; not registered here: {error}")
        return Answer(result=True, details=f"success - storage pool {asked.pool.uuid} "
                                           f"registered at {root}")

    async def delete_pool(self, asked: DeleteStoragePoolCommand) -> Result:
        """Forgets the pool ``_pool``: statistics, heartbeats and HA checks no longer use
        it. Its files are never deleted. An unknown pool is fine (a repeat is safe)."""
        pool_uuid = asked.pool.uuid if asked.pool is not None else None
        if not pool_uuid:
            raise InvalidRequest("_pool.uuid is missing: no pool to forget")
        forgotten = await self._forget(pool_uuid)
        return Answer(result=True, details=self._forgotten_details(pool_uuid, forgotten))

    async def storage_stats(self, asked: GetStorageStatsCommand) -> Result:
        """Capacity and use of a registered pool: a Filesystem pool by its path (the local
        pool's or a registered one's), a shared pool by the root recorded when it was
        registered. A root that cannot be measured: a failed answer naming the pool and
        what the host met (``pool_usage``: a root that is not seen cannot be reached).
        Read-only."""
        pool_type = str(asked.pool_type or "")
        root = self._stats_root(pool_type, asked)
        if root is None:
            raise InvalidRequest(f"pool {asked.pool_uuid} ({pool_type or 'no type'}) is not "
                                 "registered on this host; ModifyStoragePoolCommand "
                                 f"registers it; {REREGISTER_HINT}")
        try:
            total, free = await pool_usage(self.files, root, self.reservation)
        except HostFileError as error:
            raise HostFileError(f"pool {asked.pool_uuid} ({pool_type or 'no type'}): "
                                f"{error}") from error
        return GetStorageStatsAnswer(result=True, capacity_bytes=total, used_bytes=total - free)

    def _stats_root(self, pool_type: str, command: GetStorageStatsCommand) -> str | None:
        if pool_type == "Filesystem" and command.local_path:
            root = locations.from_primary_store("", command.local_path, "Filesystem").root
            found = self.registry.by_root(root)
            return found.root if found is not None else None
        registered = self.registry.get(command.pool_uuid) if command.pool_uuid else None
        return registered.root if registered is not None else None


def _encrypted_hint(error: AgentError, location: locations.ShareLocation | None) -> str:
    """Advice for a file server refusing the account the command's ``details`` gave a
    share: the likely cause is the password as an encrypting management server sends it."""
    if not isinstance(error, LogonRefused) or location is None \
            or location.credentials is None:
        return ""
    return (f"; the file server refused the account {location.credentials.qualified_user} "
            "from the pool's details: a management server that encrypts its database "
            "sends the password encrypted, which no file server takes; set "
            f'[agent.smb_credentials] for "{location.server}" in the agent\'s configuration')
