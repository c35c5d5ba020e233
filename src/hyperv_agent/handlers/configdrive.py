"""HandleConfigDriveIsoCommand: a VM's config drive ISO on its primary pool or in the
host's config drive cache.

CloudStack's ConfigDrive network element builds each VM's config drive (user data, SSH
key, password, metadata) into an ISO on the management server. With the zone setting
``vm.configdrive.primarypool.enabled`` it sends that ISO to the VM's host to be written
on the root volume's pool (``destStore``), and with ``vm.configdrive.force.host.cache.use``
(``preferHostCache``) into the host's own cache; the StartCommand that follows names it as
an ISO disk of path ``configdrive/<VM name>.iso`` (``diskSeq`` 4). It also sends the
command with ``create`` false to delete the ISO when the VM is expunged, and, for a VM
whose config drive is in the host's cache, to the destination of a migration before
PrepareForMigrationCommand (create) and to the host it left after it (delete).

What the agent does, as KVM's agent (LibvirtHandleConfigDriveCommandWrapper) does it, on
this host's terms:

* ``isoFile`` is a relative path below the pool's registered root or the cache's folder
  (``[agent] config_drive_cache_path``), confined there (``DataPaths.file_in``: no
  ``..``, no link out) and absolute paths refused, an ``.iso`` file;
* create: ``isoData`` is strict base64 of an ISO 9660 image (its volume descriptor at
  sector 16), refused otherwise with nothing written; the image is written aside and
  renamed over the final name, so no VM ever opens a half-written ISO, within the room
  the volume keeps free (``hostfs.room``). A second create replaces the ISO; while a
  running VM has it in a DVD drive (Windows refuses to replace a file its worker holds
  open), the answer fails naming the VM and the ISO is kept: the MS builds it again at
  the VM's next start;
* delete: the file removed; one already gone is a success, as KVM answers; one a
  running VM holds is refused naming the VM;
* the answer's ``location`` is PRIMARY or HOST, which the MS keeps as the VM's
  ``configDriveLocation`` and sends back in its StartCommand.

``useHostCacheOnUnsupportedPool`` asks for the cache where the pool cannot hold an ISO;
every pool this agent registers (a local folder, an SMB share) can, so it changes nothing
here. A pool that is not registered on this host is a failure naming its root.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.answers import HandleConfigDriveIsoAnswer
from hyperv_agent.cloudstack.commands import HandleConfigDriveIsoCommand
from hyperv_agent.cloudstack.enums import ConfigDriveLocation
from hyperv_agent.cloudstack.objects import PrimaryDataStoreTO
from hyperv_agent.errors import AgentError, HostFileError, InvalidRequest, PathNotAllowed
from hyperv_agent.handlers.datapaths import DataPaths
from hyperv_agent.handlers.dispatch import Result, Route, Routes
from hyperv_agent.handlers.files import FileHandlers
from hyperv_agent.handlers.locks import FileLocks
from hyperv_agent.hostfs import images
from hyperv_agent.hostfs.aside import AsideFiles, split
from hyperv_agent.hostfs.room import require_room
from hyperv_agent.hyperv.session import HyperV

log = logging.getLogger("hyperv_agent.handlers.configdrive")

_WHAT = "config drive"
#: ISO 9660 (ECMA-119): the volume descriptor set starts at sector 16 of 2048 bytes, each
#: descriptor a type byte, then the standard identifier CD001. Every config drive the MS
#: builds (genisoimage or mkisofs, ISO 9660 with Joliet and Rock Ridge) has one.
_DESCRIPTOR_AT = 16 * 2048 + 1
_STANDARD_ID = b"CD001"


class ConfigDriveHandlers(FileHandlers):
    """Writes and deletes config drive ISOs (see the module notes); ``aside`` names the
    files an ISO is written at before it is renamed into place."""

    def __init__(self, hv: HyperV, paths: DataPaths, file_locks: FileLocks,
                 aside: AsideFiles) -> None:
        super().__init__(hv, paths, file_locks, aside=aside)
        self.asides = aside

    def table(self) -> Routes:
        return {names.HANDLE_CONFIG_DRIVE_ISO_COMMAND: Route(HandleConfigDriveIsoCommand,
                                                             self.handle)}

    async def handle(self, command: HandleConfigDriveIsoCommand) -> Result:
        relative = _relative(command.iso_file)
        if command.prefer_host_cache:
            root, location = self.paths.host_cache_root(_WHAT), ConfigDriveLocation.HOST
        else:
            root, location = self._pool_root(command), ConfigDriveLocation.PRIMARY
        target = await self.paths.file_in(root, relative, _WHAT, images.ISO_SUFFIXES)
        async with self.file_locks.hold(target):
            if command.create:
                details = await self._create(command.iso_data, target)
                return HandleConfigDriveIsoAnswer(result=True, location=location,
                                                  details=details)
            details = await self._delete(target)
        return HandleConfigDriveIsoAnswer(result=True, details=details)

    def _pool_root(self, command: HandleConfigDriveIsoCommand) -> str:
        store = command.dest_store
        if store is None:
            raise InvalidRequest(f"{_WHAT}: destStore is missing and preferHostCache is "
                                 "false: the command names neither a primary pool nor the "
                                 "host's cache")
        if not isinstance(store, PrimaryDataStoreTO):
            raise InvalidRequest(f"{_WHAT}: destStore is not a primary pool (a config drive "
                                 "on secondary storage is written by the secondary storage "
                                 "VM, not by a host)")
        return self.paths.pool_root(store, f"{_WHAT}: destStore")

    async def _create(self, iso_data: str | None, target: str) -> str:
        image = await asyncio.to_thread(_decoded, iso_data)
        await self.refuse_if_running(target, "the ISO there was kept", iso=True)
        folder = split(target)[0].rstrip("\\")
        await require_room(self.files, target, len(image), f"the {_WHAT} {target}",
                           "nothing was written")
        await self.files.make_dirs(folder)
        await self.asides.sweep(self.files, folder, target)  # an interrupted earlier write's
        try:
            async with self.asides.replacing(self.files, target) as temp:
                await asyncio.to_thread(self._write, temp, image)
        except HostFileError as error:
            raise AgentError(f"{_WHAT} {target} was not written: {error}") from None
        log.info("config drive %s written (%d bytes)", target, len(image))
        return f"config drive written to {target} ({len(image)} bytes)"

    def _write(self, path: str, image: bytes) -> None:
        with self.files.open_binary(path, "xb") as out:
            out.write(image)

    async def _delete(self, target: str) -> str:
        await self.refuse_if_running(target, "the ISO was kept", iso=True)
        try:
            removed = await self.files.remove(target)
        except HostFileError as error:
            raise AgentError(f"{_WHAT} {target} was not deleted: {error}") from None
        if not removed:
            return f"config drive {target} was already absent"
        log.info("config drive %s deleted", target)
        return f"config drive {target} deleted"


def _relative(iso_file: str | None) -> str:
    """``isoFile``: a relative path (``configdrive/<VM name>.iso``); an absolute one, or
    one on a drive or share, is refused (the MS always sends one relative to the pool or
    the cache)."""
    if not iso_file:
        raise InvalidRequest(f"{_WHAT}: isoFile is missing: no ISO is named")
    text = iso_file.replace("/", "\\")
    if text.startswith("\\") or text[1:2] == ":":
        raise PathNotAllowed(f"{_WHAT}: isoFile {iso_file[:200]!r} is absolute; the management "
                             "server names the ISO relative to its pool or the host's cache")
    return iso_file


def _decoded(iso_data: str | None) -> bytes:
    """The ISO image ``isoData`` holds; InvalidRequest when it is missing, not base64, or
    not an ISO 9660 image. The value itself is never quoted (it holds the guest's
    password and keys)."""
    if not iso_data:
        raise InvalidRequest(f"{_WHAT}: isoData is missing: no ISO to write")
    try:
        image = base64.b64decode(iso_data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{_WHAT}: isoData is not base64 (the management server sends "
                             "the ISO it built in base64); nothing was written") from None
    if image[_DESCRIPTOR_AT:_DESCRIPTOR_AT + len(_STANDARD_ID)] != _STANDARD_ID:
        raise InvalidRequest(f"{_WHAT}: isoData ({len(image)} bytes) is not an ISO 9660 "
                             "image (no CD001 volume descriptor at sector 16); nothing "
                             "was written")
    return image
